/* A thread pool for OpenBLAS's parallel jobs, whose idle threads sleep, and for the kernels'
 * split phases and teams of threads (fr_split_run, fr_team_run and fr_barrier_wait, at the
 * end), with the watch of SIGINT during a long kernel call (fr_watch_begin, at the very end).
 *
 * Part of the Cython kernels (kernels/_kernels.pyx).  OpenBLAS runs a multi-threaded call
 * on threads of its own that, once the call is done, keep spinning for about 2^28 cycles
 * (~0.1 s) waiting for the next one.  In a user's training loop a NumPy product (a dense
 * head) runs between two recurrent kernels, and its spinning thread then competes with the
 * kernel's threads for the cores for the whole of the kernel: an LSTM forward of 13 ms took
 * 25 ms that way on two cores.  OpenBLAS lets a program run those jobs on threads of its own
 * instead (openblas_set_threads_callback_function): fr_openblas_threads below is such a
 * callback.  Its workers spin FR_SPIN_NS after a job (back-to-back products find them
 * awake) and then sleep on a condition variable, so they are off the cores by the time a
 * recurrent kernel that follows a product is under way.
 *
 * Contract of the callback (OpenBLAS's): run dojob(i, jobdata + i * elsize, dojob_data) for
 * i = 0 .. numjobs - 1 and return when all are done.  The jobs of a level-3 call wait for each
 * other's packed panels, so all of them must be running at the same time: the caller runs
 * job 0 and every other job gets a thread of its own, the pool growing when fewer are free.
 * In a child made by fork() the pool starts empty (fr_pool_after_fork, registered with
 * pthread_atfork).
 *
 * Two things OpenBLAS's pthreads server does for its own threads and not on this path (as of
 * 0.3.28-0.3.31, driver/others/blas_server.c), done here instead:
 * - Job i works in the buffer OpenBLAS keeps for "thread i" (blas_thread_buffer[i]): two
 *   calls running at once from two threads would share those buffers and compute garbage.
 *   So one call runs at a time (fr_call_lock); each is still spread over all its threads.
 * - A library built with CONSISTENT_FPCSR (NumPy's and SciPy's are) loads each job's
 *   floating-point control word (MXCSR and x87 control on x86-64, FPCR on arm64) from its
 *   blas_queue_t, where its own server stores the caller's first; here those fields would be
 *   whatever the caller's stack held: stale exception flags showed up as NumPy's "invalid
 *   value encountered in matmul" on finite products, and a stale rounding mode or mask would
 *   be worse.  fr_fill_fpcsr stores the caller's control words into every job's entry, at
 *   the offsets of OpenBLAS's blas_queue_t, recognised by its size (elsize); when the size is
 *   not one this file knows, each thread saves its own control words around its job.
 */
#ifndef FASTRNN_POOL_H
#define FASTRNN_POOL_H

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* nanoseconds an idle worker (and a caller waiting for its jobs) spins before sleeping */
#define FR_SPIN_NS 50000L

typedef void (*fr_dojob_fn)(int thread_num, void *jobdata, int dojob_data);

/* OpenBLAS's blas_queue_t (common_thread.h) on POSIX systems, with CONSISTENT_FPCSR */
typedef struct {
    void *routine;
    long position, assigned;
    void *args, *range_m, *range_n, *sa, *sb, *next;
    pthread_mutex_t lock;
    pthread_cond_t finished;
    int mode, status;
    unsigned int sse_mode, x87_mode;
} fr_blas_queue;

#if defined(__x86_64__) || defined(__i386__)
typedef struct { unsigned int mxcsr; unsigned short x87; } fr_fpcsr;
static inline void fr_get_fpcsr(fr_fpcsr *f)
{
    __asm__ __volatile__("stmxcsr %0" : "=m"(f->mxcsr));
    __asm__ __volatile__("fnstcw %0" : "=m"(f->x87));
}
static inline void fr_set_fpcsr(const fr_fpcsr *f)
{
    __asm__ __volatile__("ldmxcsr %0" : : "m"(f->mxcsr));
    __asm__ __volatile__("fldcw %0" : : "m"(f->x87));
}
#define FR_HAVE_FPCSR 1
#elif defined(__aarch64__)
typedef struct { unsigned long fpcr; } fr_fpcsr;
static inline void fr_get_fpcsr(fr_fpcsr *f) { __asm__ __volatile__("mrs %0, fpcr" : "=r"(f->fpcr)); }
static inline void fr_set_fpcsr(const fr_fpcsr *f) { __asm__ __volatile__("msr fpcr, %0" : : "r"(f->fpcr)); }
#define FR_HAVE_FPCSR 1
#else
#define FR_HAVE_FPCSR 0
#endif

typedef struct fr_task {
    fr_dojob_fn fn;
    void *data;
    int index, arg, guard;
    const void *fp;                /* the caller's control words to run under (fr_fpcsr), or NULL */
    volatile int *remaining;       /* jobs of the call not finished yet */
    struct fr_task *next;
} fr_task;

static pthread_mutex_t fr_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fr_wake = PTHREAD_COND_INITIALIZER;   /* a task was queued, or a
                                                             * worker nudged (fr_nudged) */
static pthread_cond_t fr_done = PTHREAD_COND_INITIALIZER;   /* a call's last job finished */
static fr_task *fr_head = NULL, *fr_tail = NULL;
static int fr_free = 0;            /* workers not running a task of the queue (atomic; one running
                                    * a task handed to its slot counts too: fr_free_locked) */
static int fr_queued = 0;          /* tasks queued, not yet taken */
static int fr_sleeping = 0;        /* workers waiting on fr_wake */
static int fr_nudged = 0;          /* sleeping workers asked to spin again, not yet up (a short
                                    * call found too few spinning: see fr_pool_run) */
static int fr_waiting = 0;         /* callers waiting on fr_done (atomic) */
static long fr_started = 0;        /* workers ever started (for tests) */
static long fr_calls = 0;          /* calls that used the pool (for tests) */
static long fr_handed = 0;         /* jobs handed to a worker's slot (for tests) */
static long fr_taken_back = 0;     /* of those, jobs their caller ran itself (for tests) */
static long fr_pickup_lag_ns = 0;  /* for the tests: a worker waits this long before it takes
                                    * a job handed to its slot, as one whose core was taken */
static long fr_unknown_layout = 0; /* calls whose job entries had a size not known here */
/* one call at a time: its jobs use OpenBLAS's per-thread buffers of job 0 .. numjobs-1 */
static pthread_mutex_t fr_call_lock = PTHREAD_MUTEX_INITIALIZER;

/* A worker's mailbox, in a cache line of its own.  A spinning worker opens it; a caller (under
 * fr_lock) claims an open one, writes a task into it and hands it over: the worker, spinning
 * on this line alone, finds the task where it looks, and the caller writes nothing the worker
 * touched (the queue, the lock).  Through the queue, a hand-off and the completion moved
 * about eight cache lines between the cores: ~1.2 us a call on an Intel Xeon, where the
 * step of an LSTMCell(128, 128) takes 4.5 us (the slots: see fr_pool_run).  A worker past
 * its spin shuts its slot and takes the queue's path (or sleeps).
 *
 * A slot handed over holds FR_SLOT_HANDED plus 4 times the count of its hand-offs (mod 2^28):
 * a caller that takes its job back (fr_pool_run) expects the very value it stored, never that
 * of a later hand-off of the same slot by another caller (after the worker ran its job). */
enum { FR_SLOT_SHUT = 0, FR_SLOT_OPEN = 1, FR_SLOT_CLAIMED = 2, FR_SLOT_RUNNING = 3,
       FR_SLOT_HANDED = 4 };
#define FR_SLOTS 32
typedef struct {
    int state;                     /* FR_SLOT_* (atomic); FR_SLOT_HANDED and above: handed */
    unsigned hands;                /* hand-offs of this slot (under fr_lock) */
    int index, arg, guard, has_fp;
    fr_dojob_fn fn;
    void *data;
    volatile int *remaining;
#if FR_HAVE_FPCSR
    fr_fpcsr fp;                   /* the caller's control words, when has_fp */
#endif
} __attribute__((aligned(64))) fr_slot;
static fr_slot fr_slots[FR_SLOTS];
static int fr_nslots = 0;          /* slots given to workers (under fr_lock) */

/* Store the caller's control words into the job entries as OpenBLAS's own server does;
 * returns 0 if the entries' layout is not one known here (then the jobs run guarded). */
static int fr_fill_fpcsr(void *jobdata, size_t elsize, int numjobs)
{
#if FR_HAVE_FPCSR
    int i;
    fr_fpcsr f;
    if (elsize == offsetof(fr_blas_queue, sse_mode))
        return 1;                       /* built without CONSISTENT_FPCSR: nothing to fill */
    if (elsize != sizeof(fr_blas_queue))
        return 0;
    fr_get_fpcsr(&f);
    for (i = 0; i < numjobs; i++) {
        fr_blas_queue *q = (fr_blas_queue *)((char *)jobdata + (size_t)i * elsize);
#if defined(__aarch64__)
        q->sse_mode = (unsigned int)f.fpcr;
#else
        q->sse_mode = f.mxcsr;
        q->x87_mode = f.x87;
#endif
    }
    return 1;
#else
    (void)jobdata; (void)elsize; (void)numjobs;
    return 0;
#endif
}

/* dojob(index, data, arg), under the control words at `fp` (an fr_fpcsr) if not NULL, and
 * restoring this thread's own after it when `guard` or `fp` */
static inline void fr_run_job(fr_dojob_fn fn, int index, void *data, int arg, int guard,
                              const void *fp)
{
#if FR_HAVE_FPCSR
    fr_fpcsr saved;
    if (guard || fp != NULL)
        fr_get_fpcsr(&saved);
    if (fp != NULL)
        fr_set_fpcsr((const fr_fpcsr *)fp);
    fn(index, data, arg);
    if (guard || fp != NULL)
        fr_set_fpcsr(&saved);
#else
    (void)guard;
    (void)fp;
    fn(index, data, arg);
#endif
}
static int fr_atfork_done = 0;

static long fr_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* The phase clock: where a kernel call's time goes (kernels.phase_clock; the benchmark's
 * profile of a row).  While it is on, the driver adds the time of every call (FR_CLK_RUN), of
 * every phase on the caller's thread (FR_CLK_PHASE + phase) and that time by the threads the
 * phase keeps busy (FR_CLK_THREADS + phase), and each thread the time of its products
 * (FR_CLK_PRODUCTS: the micro-kernels, the weight gradients, BLAS).  Off, a clock costs a
 * load and a branch. */
#define FR_CLK_PHASES 8
enum { FR_CLK_RUN = 0, FR_CLK_PRODUCTS = 1, FR_CLK_PHASE = 2,
       FR_CLK_THREADS = FR_CLK_PHASE + FR_CLK_PHASES, FR_CLK_N = FR_CLK_THREADS + FR_CLK_PHASES };
static int fr_clock_on = 0;
static long fr_clock_ns[FR_CLK_N];

/* the time now when the clock is on, else 0 */
static inline long fr_clock_start(void)
{
    return __atomic_load_n(&fr_clock_on, __ATOMIC_RELAXED) ? fr_now_ns() : 0;
}

/* the clocks on from zero (1), or off (0: they keep what they read) */
static void fr_clock_set(int on)
{
    if (on)
        for (int k = 0; k < FR_CLK_N; k++)
            __atomic_store_n(&fr_clock_ns[k], 0, __ATOMIC_RELAXED);
    __atomic_store_n(&fr_clock_on, on, __ATOMIC_RELAXED);
}

/* nanoseconds on clock `which` */
static long fr_clock_read(int which)
{
    return __atomic_load_n(&fr_clock_ns[which], __ATOMIC_RELAXED);
}

/* add (now - t0) * times to clock `which`, if t0 came from a clock that was on */
static inline void fr_clock_stop(int which, long t0, long times)
{
    if (t0 != 0)
        __atomic_add_fetch(&fr_clock_ns[which], (fr_now_ns() - t0) * times, __ATOMIC_RELAXED);
}

static inline void fr_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* One turn of a spin (`turn` counts them): the first `pauses` a pause instruction, then each
 * gives the core to any other runnable thread.  The pool's spins pause FR_PAUSE_TURNS turns,
 * a few microseconds in all: a step of a cell hands its work to a worker and waits for it
 * within a few microseconds, where a yield (a system call) made each hand-off and each wait
 * ~0.5 us longer; a pause for the whole spin instead made concurrent callers collapse (two
 * Python threads serving small requests, each with pool workers and callers spinning at once
 * on two cores, served 10x fewer). */
#define FR_PAUSE_TURNS 64
static inline void fr_relax(int *turn, int pauses)
{
    if (*turn < pauses) {
        (*turn)++;
        fr_pause();
    } else {
        sched_yield();
    }
}

/* Spin for `ns` nanoseconds (for the tests: a member, or a worker, that lags) */
static void fr_spin_ns(long ns)
{
    long end = fr_now_ns() + ns;
    while (fr_now_ns() < end)
        fr_pause();
}

static fr_task *fr_pop_locked(void)
{
    fr_task *t = fr_head;
    if (t != NULL) {
        fr_head = t->next;
        if (fr_head == NULL)
            fr_tail = NULL;
        fr_queued--;
        __atomic_sub_fetch(&fr_free, 1, __ATOMIC_RELAXED);
    }
    return t;
}

/* A job of a call is done: count it (after which the caller may return: nothing of the call
 * is touched after the decrement), and wake the caller if it sleeps.  The caller counts
 * itself waiting (fr_waiting) before it reads `remaining` a last time and sleeps, so one of
 * the two sees the other's write (both are sequentially consistent). */
static void fr_job_done(volatile int *remaining)
{
    if (__atomic_sub_fetch(remaining, 1, __ATOMIC_SEQ_CST) == 0
            && __atomic_load_n(&fr_waiting, __ATOMIC_SEQ_CST) > 0) {
        pthread_mutex_lock(&fr_lock);
        pthread_cond_broadcast(&fr_done);
        pthread_mutex_unlock(&fr_lock);
    }
}

/* Run the task handed to slot s (taken: FR_SLOT_RUNNING), then shut the slot. */
static void fr_run_slot(fr_slot *s)
{
    const void *fp = NULL;
#if FR_HAVE_FPCSR
    if (s->has_fp)
        fp = &s->fp;
#endif
    fr_run_job(s->fn, s->index, s->data, s->arg, s->guard, fp);
    __atomic_store_n(&s->state, FR_SLOT_SHUT, __ATOMIC_RELAXED);
    fr_job_done(s->remaining);
}

static void *fr_worker(void *slot)
{
    fr_slot *s = (fr_slot *)slot;          /* NULL: this worker has none (FR_SLOTS taken) */
    for (;;) {
        fr_task *t;
        long until = fr_now_ns() + FR_SPIN_NS;
        int turn = 0, state = FR_SLOT_OPEN;
        /* spin a little, the slot open: a product that follows right away finds this thread
         * awake, and a caller hands it its task through the slot */
        if (s != NULL)
            __atomic_store_n(&s->state, FR_SLOT_OPEN, __ATOMIC_RELEASE);
        while (__atomic_load_n(&fr_queued, __ATOMIC_ACQUIRE) == 0 && fr_now_ns() < until
               && (s == NULL || __atomic_load_n(&s->state, __ATOMIC_ACQUIRE) == FR_SLOT_OPEN))
            fr_relax(&turn, FR_PAUSE_TURNS);
        if (s != NULL && !__atomic_compare_exchange_n(&s->state, &state, FR_SLOT_SHUT, 0,
                                                      __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            /* claimed: the caller is writing the task, or has handed it, or (when it could
             * not start the workers for the rest of its jobs) shuts the slot.  A task handed
             * is taken (FR_SLOT_RUNNING) unless its caller took it back first (a short call:
             * see fr_pool_run), which shuts the slot too.  Only this thread opens its slot
             * (at the top of the loop): were a caller to, a second caller could claim it and
             * hand it a task before this thread came round and opened it over that task. */
            while ((state = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE)) == FR_SLOT_CLAIMED)
                fr_pause();
            if (state >= FR_SLOT_HANDED && __atomic_load_n(&fr_pickup_lag_ns, __ATOMIC_RELAXED))
                fr_spin_ns(__atomic_load_n(&fr_pickup_lag_ns, __ATOMIC_RELAXED));
            if (state >= FR_SLOT_HANDED
                    && __atomic_compare_exchange_n(&s->state, &state, FR_SLOT_RUNNING, 0,
                                                   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
                fr_run_slot(s);
            continue;
        }
        /* sleep until a task is queued, or until nudged to spin again (t NULL: a short call
         * found fewer workers spinning than it had jobs) */
        pthread_mutex_lock(&fr_lock);
        while ((t = fr_pop_locked()) == NULL && fr_nudged == 0) {
            fr_sleeping++;
            pthread_cond_wait(&fr_wake, &fr_lock);
            fr_sleeping--;
        }
        if (t == NULL)
            fr_nudged--;
        pthread_mutex_unlock(&fr_lock);
        if (t == NULL)
            continue;
        fr_run_job(t->fn, t->index, t->data, t->arg, t->guard, t->fp);
        __atomic_add_fetch(&fr_free, 1, __ATOMIC_SEQ_CST);
        fr_job_done(t->remaining);
    }
    return NULL;
}

static void fr_pool_after_fork(void)
{
    /* only the forking thread exists in the child: no workers, nothing queued */
    int k;
    pthread_mutex_init(&fr_lock, NULL);
    pthread_mutex_init(&fr_call_lock, NULL);
    pthread_cond_init(&fr_wake, NULL);
    pthread_cond_init(&fr_done, NULL);
    fr_head = fr_tail = NULL;
    fr_free = fr_queued = fr_sleeping = fr_nudged = fr_waiting = 0;
    for (k = 0; k < fr_nslots; k++)
        fr_slots[k].state = FR_SLOT_SHUT;
    fr_nslots = 0;
}

/* Workers free for the queue's tasks (call with fr_lock held): not running a task of the
 * queue (fr_free) nor one handed to their slot (claimed, handed or running; a worker shuts its
 * slot when its task is done, and leaves fr_free as it was). */
static int fr_free_locked(void)
{
    int k, n = __atomic_load_n(&fr_free, __ATOMIC_SEQ_CST);
    for (k = 0; k < fr_nslots; k++)
        if (__atomic_load_n(&fr_slots[k].state, __ATOMIC_ACQUIRE) >= FR_SLOT_CLAIMED)
            n--;
    return n;
}

/* Make sure `need` free workers exist (call with fr_lock held); 0, or -1 if none could start. */
static int fr_ensure_workers_locked(int need)
{
    pthread_attr_t attr;
    int free_now;
    if (!fr_atfork_done) {
        pthread_atfork(NULL, NULL, fr_pool_after_fork);
        fr_atfork_done = 1;
    }
    free_now = fr_free_locked();
    if (free_now >= need)
        return 0;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (; free_now < need; free_now++) {
        pthread_t tid;
        fr_slot *s = fr_nslots < FR_SLOTS ? &fr_slots[fr_nslots] : NULL;
        if (pthread_create(&tid, &attr, fr_worker, s) != 0) {
            pthread_attr_destroy(&attr);
            return -1;
        }
        if (s != NULL)
            fr_nslots++;
        __atomic_add_fetch(&fr_free, 1, __ATOMIC_SEQ_CST);
        fr_started++;
    }
    pthread_attr_destroy(&attr);
    return 0;
}

/* Write job i into claimed slot s and hand it over (call with fr_lock held); returns the
 * slot's state as handed. */
static int fr_hand_locked(fr_slot *s, fr_dojob_fn dojob, int i, void *data, int dojob_data,
                           int guard, const void *fp, volatile int *remaining)
{
    int state;
    s->fn = dojob;
    s->index = i;
    s->data = data;
    s->arg = dojob_data;
    s->guard = guard;
    s->remaining = remaining;
    s->has_fp = fp != NULL;
#if FR_HAVE_FPCSR
    if (fp != NULL)
        s->fp = *(const fr_fpcsr *)fp;
#endif
    state = FR_SLOT_HANDED + 4 * (int)(++s->hands & 0xfffffff);
    __atomic_store_n(&s->state, state, __ATOMIC_RELEASE);
    return state;
}

/* The jobs 1 .. n of a short call that were handed to slots claimed[0 .. n-1] as handed[0 ..
 * n-1] and that no worker has taken: run here, their slots shut (their workers open them
 * again) */
static void fr_take_back(fr_dojob_fn dojob, void *jobdata, size_t elsize, int dojob_data,
                         int guard, int n, const int *claimed, int *handed,
                         volatile int *remaining)
{
    int k;
    for (k = 0; k < n; k++)
        if (__atomic_compare_exchange_n(&fr_slots[claimed[k]].state, &handed[k], FR_SLOT_SHUT,
                                        0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            fr_run_job(dojob, 1 + k, (char *)jobdata + (size_t)(1 + k) * elsize, dojob_data,
                       guard, NULL);
            __atomic_sub_fetch(remaining, 1, __ATOMIC_SEQ_CST);
            __atomic_add_fetch(&fr_taken_back, 1, __ATOMIC_RELAXED);
        }
}

/* Run dojob(i, jobdata + i * elsize, dojob_data) for i = 0 .. numjobs - 1, job 0 on the
 * calling thread and (but for a short call: below) every other on a worker of its own, all
 * at the same time, and return when all are done; 0, or -1 (nothing run) if no memory or
 * thread could be had.  Jobs go to open slots (spinning workers) first, the rest to the
 * queue, with as many workers as it needs (started when fewer are free).  While tasks are
 * queued, no slot is claimed: the workers counted free for them (fr_ensure_workers_locked)
 * are theirs.
 *
 * A `short` call (independent jobs of a few microseconds each: a cell's step) waits for no
 * worker that has not started: the jobs no open slot took run on this thread after job 0
 * (and as many sleeping workers are nudged to spin, for the next call), and so do those
 * handed that no worker has taken by twice the time this thread took for its jobs, or by the
 * end of its spin (fr_take_back).  A worker on time takes its job well within the time of
 * job 0; one whose core was taken (by another thread, or by the host of a virtual machine)
 * took tens of microseconds, and one asleep more, the caller waiting all of it.
 * LSTMCell(128, 128)'s steps at B = 1 from Python, 200,000 timed one by one, medians of 8
 * processes each way alternating (AMD EPYC Zen 5, a VM): mean 5.17 -> 4.81 us, 99th
 * percentile 14.0 -> 9.4 us, 99.9th 84 -> 46 us, the time in steps over 10 us 12% -> 6%; a
 * step after 1 ms idle 55 -> 41 us (one thread alone: 13-27 us). */
static int fr_pool_run(fr_dojob_fn dojob, int numjobs, size_t elsize, void *jobdata,
                       int dojob_data, int guard, const void *fp, int short_)
{
    fr_task local[8];
    fr_task *tasks = local;
    volatile int remaining;
    int claimed[FR_SLOTS], handed[FR_SLOTS];
    int i, k, turn, first, nclaimed = 0;
    long until, start, now, take_back = 0;
    if (numjobs <= 0)
        return 0;
    if (numjobs == 1) {
        fr_run_job(dojob, 0, jobdata, dojob_data, guard, NULL);
        return 0;
    }
    if (numjobs - 1 > 8 && !short_) {     /* (a short call queues nothing) */
        tasks = (fr_task *)malloc((size_t)(numjobs - 1) * sizeof(fr_task));
        if (tasks == NULL)
            return -1;
    }
    remaining = numjobs - 1;
    pthread_mutex_lock(&fr_lock);
    for (k = 0; k < fr_nslots && fr_queued == 0 && nclaimed < numjobs - 1; k++) {
        int open = FR_SLOT_OPEN;
        if (__atomic_load_n(&fr_slots[k].state, __ATOMIC_RELAXED) == FR_SLOT_OPEN
                && __atomic_compare_exchange_n(&fr_slots[k].state, &open, FR_SLOT_CLAIMED, 0,
                                               __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            claimed[nclaimed++] = k;
    }
    first = 1 + nclaimed;
    if (first < numjobs && short_) {
        /* run here below; enough workers for the next call, spinning (none: all run here) */
        remaining = nclaimed;
        if (fr_ensure_workers_locked(fr_queued + numjobs - first) == 0)
            for (k = first; k < numjobs && fr_nudged < fr_sleeping; k++) {
                fr_nudged++;
                pthread_cond_signal(&fr_wake);
            }
    } else if (first < numjobs) {
        if (fr_ensure_workers_locked(fr_queued + numjobs - first) != 0) {
            for (k = 0; k < nclaimed; k++)     /* nothing handed: its worker opens it again */
                __atomic_store_n(&fr_slots[claimed[k]].state, FR_SLOT_SHUT, __ATOMIC_RELEASE);
            pthread_mutex_unlock(&fr_lock);
            if (tasks != local)
                free(tasks);
            return -1;
        }
        for (i = first; i < numjobs; i++) {
            fr_task *t = &tasks[i - first];
            t->fn = dojob;
            t->data = (char *)jobdata + (size_t)i * elsize;
            t->index = i;
            t->arg = dojob_data;
            t->guard = guard;
            t->fp = fp;
            t->remaining = &remaining;
            t->next = NULL;
            if (fr_tail != NULL)
                fr_tail->next = t;
            else
                fr_head = t;
            fr_tail = t;
        }
        __atomic_store_n(&fr_queued, fr_queued + numjobs - first, __ATOMIC_RELEASE);
        if (fr_sleeping > 0)
            pthread_cond_broadcast(&fr_wake);
    }
    if (nclaimed > 0)
        __atomic_add_fetch(&fr_handed, nclaimed, __ATOMIC_RELAXED);
    for (k = 0; k < nclaimed; k++)
        handed[k] = fr_hand_locked(&fr_slots[claimed[k]], dojob, 1 + k,
                                   (char *)jobdata + (size_t)(1 + k) * elsize, dojob_data,
                                   guard, fp, &remaining);
    pthread_mutex_unlock(&fr_lock);
    start = short_ ? fr_now_ns() : 0;
    fr_run_job(dojob, 0, jobdata, dojob_data, guard, NULL);
    if (short_) {
        for (i = first; i < numjobs; i++)
            fr_run_job(dojob, i, (char *)jobdata + (size_t)i * elsize, dojob_data, guard, NULL);
        /* the handed jobs not taken by twice the time of this thread's jobs come back (until
         * then this thread leaves their slots to their workers) */
        now = fr_now_ns();
        take_back = now + (now - start);
    }
    until = fr_now_ns() + FR_SPIN_NS;
    turn = 0;
    while (__atomic_load_n(&remaining, __ATOMIC_ACQUIRE) != 0 && (now = fr_now_ns()) < until) {
        if (short_ && now >= take_back) {
            short_ = 0;
            fr_take_back(dojob, jobdata, elsize, dojob_data, guard, nclaimed, claimed, handed,
                         &remaining);
            continue;
        }
        fr_relax(&turn, FR_PAUSE_TURNS);
    }
    if (short_ && __atomic_load_n(&remaining, __ATOMIC_ACQUIRE) != 0)   /* job 0 took long */
        fr_take_back(dojob, jobdata, elsize, dojob_data, guard, nclaimed, claimed, handed,
                     &remaining);
    if (__atomic_load_n(&remaining, __ATOMIC_ACQUIRE) != 0) {
        pthread_mutex_lock(&fr_lock);
        __atomic_add_fetch(&fr_waiting, 1, __ATOMIC_SEQ_CST);
        while (__atomic_load_n(&remaining, __ATOMIC_SEQ_CST) != 0)
            pthread_cond_wait(&fr_done, &fr_lock);
        __atomic_sub_fetch(&fr_waiting, 1, __ATOMIC_SEQ_CST);
        pthread_mutex_unlock(&fr_lock);
    }
    if (tasks != local)
        free(tasks);
    return 0;
}

/* The callback handed to OpenBLAS (see the top of this file). */
static void fr_openblas_threads(int sync, fr_dojob_fn dojob, int numjobs, size_t elsize,
                                void *jobdata, int dojob_data)
{
    int guard;
    (void)sync;
    if (numjobs <= 0)
        return;
    pthread_mutex_lock(&fr_call_lock);
    guard = !fr_fill_fpcsr(jobdata, elsize, numjobs);
    if (guard)
        __atomic_add_fetch(&fr_unknown_layout, 1, __ATOMIC_RELAXED);
    if (numjobs > 1)
        __atomic_add_fetch(&fr_calls, 1, __ATOMIC_RELAXED);
    if (fr_pool_run(dojob, numjobs, elsize, jobdata, dojob_data, guard, NULL, 0) != 0)
        abort();      /* OpenBLAS gives the callback no way to fail */
    pthread_mutex_unlock(&fr_call_lock);
}

/* The kernels' teams (kernels/_kernels.pyx): a recurrent layer at batch 1 splits its hidden
 * units over threads that meet at a barrier after every time step.  The team's jobs run on
 * the workers above (fr_pool_run gives every job a thread of its own, so all members run
 * at once and a barrier cannot wait on a job that has not started).
 *
 * The barrier: each member counts the rounds it has reached in a cache line of its own and
 * waits until every other member's count is as high, spinning (pause) FR_BARRIER_SPINS turns,
 * then yielding the core.  A step takes a microsecond or less: sleeping and waking would cost
 * more than the step, and a count shared by all members (one atomic add each) moved its
 * cache line between the cores more often than these writes of one's own line do.
 *
 * Member 0 also makes one decision for the whole team each round: whether *stop (Ctrl-C) is
 * set, written with its count (bit 0), so that every member leaves its loop at the same step
 * (one that left alone would leave the others waiting for it).  A member that finds member
 * 0 a round ahead knows that member 0 went on, so the decision of its round was "go on". */
#define FR_BARRIER_SPINS 256
#define FR_LINE 64

typedef struct {
    long value;                        /* 2 * rounds reached + the stop decision (member 0) */
    char pad[FR_LINE - sizeof(long)];
} fr_count;

typedef struct {
    int parties;
    fr_count *counts;                  /* one per member, each in a cache line of its own */
    void *mem;
} fr_barrier;

/* 0, or -1 if out of memory */
static int fr_barrier_init(fr_barrier *b, int parties)
{
    b->parties = parties;
    b->mem = calloc((size_t)parties + 1, FR_LINE);
    if (b->mem == NULL)
        return -1;
    b->counts = (fr_count *)(((size_t)b->mem + FR_LINE - 1) & ~(size_t)(FR_LINE - 1));
    return 0;
}

static void fr_barrier_free(fr_barrier *b)
{
    free(b->mem);
    b->mem = NULL;
}

/* A barrier in two halves, so that a member may work while it waits: fr_barrier_arrive
 * (member `me` has arrived at its next round, which it returns), then fr_barrier_ready until
 * every member has arrived at that round, then fr_barrier_decision (the team's stop decision
 * of that round). */
static long fr_barrier_arrive(fr_barrier *b, int me, volatile int *stop)
{
    long round = (__atomic_load_n(&b->counts[me].value, __ATOMIC_RELAXED) >> 1) + 1;
    __atomic_store_n(&b->counts[me].value,
                     (round << 1) | (me == 0 && stop != NULL && *stop ? 1 : 0), __ATOMIC_RELEASE);
    return round;
}

static int fr_barrier_ready(fr_barrier *b, int me, long round)
{
    int j;
    for (j = 0; j < b->parties; j++)
        if (j != me && (__atomic_load_n(&b->counts[j].value, __ATOMIC_ACQUIRE) >> 1) < round)
            return 0;
    return 1;
}

static int fr_barrier_decision(fr_barrier *b, long round)
{
    long first = __atomic_load_n(&b->counts[0].value, __ATOMIC_ACQUIRE);
    return (first >> 1) == round ? (int)(first & 1) : 0;
}

/* Member `me` waits until every member has called this as many times; returns the team's
 * stop decision for this round. */
static int fr_barrier_wait(fr_barrier *b, int me, volatile int *stop)
{
    long round;
    int spins = 0;
    if (b->parties <= 1)
        return stop != NULL && *stop;
    round = fr_barrier_arrive(b, me, stop);
    while (!fr_barrier_ready(b, me, round))
        fr_relax(&spins, FR_BARRIER_SPINS);
    return fr_barrier_decision(b, round);
}

/* A flag any member may raise, read after a barrier (the barrier orders the two). */
static inline void fr_flag_raise(int *flag)
{
    __atomic_store_n(flag, 1, __ATOMIC_RELAXED);
}

static inline int fr_flag_read(int *flag)
{
    return __atomic_load_n(flag, __ATOMIC_RELAXED);
}

/* Counters of a team's shared work (see fwd_units in _kernels.pyx): fr_ticket_take returns a
 * counter's value and adds 1 (each value goes to one taker); fr_done_add counts work done
 * (release: what it wrote is seen by whoever reads the count, fr_done_read, acquire). */
static inline int fr_ticket_take(int *counter)
{
    return __atomic_fetch_add(counter, 1, __ATOMIC_ACQ_REL);
}

/* Take every ticket left: the counter's value, which it leaves at `spent` (no ticket) */
static inline int fr_tickets_take_rest(int *counter, int spent)
{
    return __atomic_exchange_n(counter, spent, __ATOMIC_ACQ_REL);
}

static inline void fr_done_add(int *counter, int n)
{
    __atomic_fetch_add(counter, n, __ATOMIC_RELEASE);
}

static inline int fr_done_read(int *counter)
{
    return __atomic_load_n(counter, __ATOMIC_ACQUIRE);
}

/* Set a ticket counter and its count of work done back to 0 (the count first: a taker that
 * sees the new tickets sees the new count) */
static inline void fr_tickets_reset(int *tickets, int *done)
{
    __atomic_store_n(done, 0, __ATOMIC_RELAXED);
    __atomic_store_n(tickets, 0, __ATOMIC_RELEASE);
}

/* Bytes of one core's L2 cache, as the C library tells (glibc: from cpuid on x86), or 0 where
 * it does not. */
static ptrdiff_t fr_l2_cache_bytes(void)
{
#if defined(_SC_LEVEL2_CACHE_SIZE)
    long v = sysconf(_SC_LEVEL2_CACHE_SIZE);
    return v > 0 ? (ptrdiff_t)v : 0;
#else
    return 0;
#endif
}

static long fr_team_runs = 0;      /* teams run (for tests) */
static long fr_team_steals = 0;    /* pieces of work a member made for another (for tests) */

static inline void fr_stat_add(long *stat, long n)
{
    __atomic_add_fetch(stat, n, __ATOMIC_RELAXED);
}

/* Run dojob(i, jobdata + i * elsize, 0) for i = 0 .. numjobs - 1 at the same time (fr_pool_run),
 * every one under the caller's floating-point control words (so that a result does not depend
 * on the thread that computed it), without the call lock (no job uses OpenBLAS's buffers of its
 * parallel jobs): the kernels' split phases and teams.  0, or -1 (nothing run) if no memory or
 * thread could be had. */
static int fr_split_run(fr_dojob_fn dojob, int numjobs, size_t elsize, void *jobdata,
                        int short_)
{
#if FR_HAVE_FPCSR
    fr_fpcsr f;
    fr_get_fpcsr(&f);
    return fr_pool_run(dojob, numjobs, elsize, jobdata, 0, 0, &f, short_);
#else
    return fr_pool_run(dojob, numjobs, elsize, jobdata, 0, 0, NULL, short_);
#endif
}

/* Run dojob's numjobs jobs with fr_split_run, or, where no thread could be had, every one on
 * the caller, one after another: for jobs that do not wait for each other (the split
 * phases and products). */
static void fr_split_run_all(fr_dojob_fn dojob, int numjobs, size_t elsize, void *jobdata)
{
    int i;
    if (fr_split_run(dojob, numjobs, elsize, jobdata, 0) != 0)
        for (i = 0; i < numjobs; i++)
            dojob(i, (char *)jobdata + (size_t)i * elsize, 0);
}

/* Run a team (see above) with fr_split_run. */
static int fr_team_run(fr_dojob_fn dojob, int numjobs, size_t elsize, void *jobdata,
                       int short_)
{
    __atomic_add_fetch(&fr_team_runs, 1, __ATOMIC_RELAXED);
    return fr_split_run(dojob, numjobs, elsize, jobdata, short_);
}

/* Ctrl-C during a long kernel call.  The caller computes a share of every call, inside C, so
 * Python's handler of SIGINT (which only marks the signal, for the main thread to act on when
 * it next runs Python) would be acted on only once the whole call is done.  For a long call
 * made on the main thread, fr_watch_begin puts fr_on_sigint in front of the handler in place
 * (Python's): it notes the signal for the caller's thread and calls that handler as before.
 * The caller's share of a time loop looks at fr_watch_seen() at every step (stopped() in
 * _kernels.pyx) and, when it is set, runs Python's handlers at once: when they raise (a
 * KeyboardInterrupt), every share stops at its next step and the call raises that.
 * fr_watch_end puts the handler back.  Nothing is installed where SIGINT is ignored or kills
 * the process (SIG_IGN, SIG_DFL). */
static volatile sig_atomic_t fr_sigint_seen = 0;
static struct sigaction fr_sigint_prev;
static pthread_t fr_sigint_owner;

static void fr_on_sigint(int sig, siginfo_t *info, void *context)
{
    fr_sigint_seen = 1;
    if (fr_sigint_prev.sa_flags & SA_SIGINFO)
        fr_sigint_prev.sa_sigaction(sig, info, context);
    else if (fr_sigint_prev.sa_handler != SIG_DFL && fr_sigint_prev.sa_handler != SIG_IGN)
        fr_sigint_prev.sa_handler(sig);
}

/* 1 if fr_on_sigint now fronts the handler of SIGINT for the calling thread (then call
 * fr_watch_end after the call), 0 if nothing was installed. */
static int fr_watch_begin(void)
{
    struct sigaction now, ours;
    if (sigaction(SIGINT, NULL, &now) != 0)
        return 0;
    if (!(now.sa_flags & SA_SIGINFO) && (now.sa_handler == SIG_DFL || now.sa_handler == SIG_IGN))
        return 0;
    if ((now.sa_flags & SA_SIGINFO) && now.sa_sigaction == fr_on_sigint)
        return 0;                  /* already watched (not expected: one watched call at a time) */
    fr_sigint_prev = now;
    fr_sigint_owner = pthread_self();
    fr_sigint_seen = 0;
    ours = now;
    ours.sa_sigaction = fr_on_sigint;
    ours.sa_flags = (now.sa_flags | SA_SIGINFO) & ~SA_RESETHAND;
    return sigaction(SIGINT, &ours, NULL) == 0;
}

static void fr_watch_end(void)
{
    struct sigaction now;
    if (sigaction(SIGINT, NULL, &now) == 0 && (now.sa_flags & SA_SIGINFO)
            && now.sa_sigaction == fr_on_sigint)
        sigaction(SIGINT, &fr_sigint_prev, NULL);
}

/* In a child made by fork() while a call of the parent was watched (on a thread the child does
 * not have): the handler it put in front goes, so that the child's own long calls are watched
 * (fr_watch_begin took it for a watch in progress, and a Ctrl-C waited for the call's end). */
static void fr_watch_after_fork(void)
{
    fr_watch_end();
    fr_sigint_seen = 0;
}

/* A SIGINT came since fr_watch_begin, and this is the thread that called it. */
static inline int fr_watch_seen(void)
{
    return fr_sigint_seen && pthread_equal(pthread_self(), fr_sigint_owner);
}

static inline void fr_watch_clear(void)
{
    fr_sigint_seen = 0;
}

#endif
