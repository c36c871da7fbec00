/* A thread pool for OpenBLAS's parallel jobs, whose idle threads sleep.
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
 * job 0 and every other job gets a thread of its own, the pool growing when fewer are free
 * (several threads may call BLAS at once).  In a child made by fork() the pool starts empty
 * (fr_pool_after_fork, registered with pthread_atfork).
 */
#ifndef FASTRNN_POOL_H
#define FASTRNN_POOL_H

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <time.h>

/* nanoseconds an idle worker (and a caller waiting for its jobs) spins before sleeping */
#define FR_SPIN_NS 50000L

typedef void (*fr_dojob_fn)(int thread_num, void *jobdata, int dojob_data);

typedef struct fr_task {
    fr_dojob_fn fn;
    void *data;
    int index, arg;
    volatile int *remaining;       /* jobs of the call not finished yet (under fr_lock) */
    struct fr_task *next;
} fr_task;

static pthread_mutex_t fr_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t fr_wake = PTHREAD_COND_INITIALIZER;   /* a task was queued */
static pthread_cond_t fr_done = PTHREAD_COND_INITIALIZER;   /* a call's last job finished */
static fr_task *fr_head = NULL, *fr_tail = NULL;
static int fr_free = 0;            /* workers not running a task (spinning or asleep) */
static int fr_queued = 0;          /* tasks queued, not yet taken */
static int fr_sleeping = 0;        /* workers waiting on fr_wake */
static long fr_started = 0;        /* workers ever started (for tests) */
static long fr_calls = 0;          /* calls that used the pool (for tests) */
static int fr_atfork_done = 0;

static long fr_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* One turn of a spin: give the core to any other runnable thread.  (A pause instruction
 * instead made concurrent callers collapse: two Python threads serving small requests, each
 * with pool workers and callers spinning at once on two cores, served 10x fewer.) */
static inline void fr_relax(void)
{
    sched_yield();
}

static fr_task *fr_pop_locked(void)
{
    fr_task *t = fr_head;
    if (t != NULL) {
        fr_head = t->next;
        if (fr_head == NULL)
            fr_tail = NULL;
        fr_queued--;
        fr_free--;
    }
    return t;
}

static void *fr_worker(void *unused)
{
    (void)unused;
    for (;;) {
        fr_task *t;
        long until = fr_now_ns() + FR_SPIN_NS;
        /* spin a little: a product that follows right away finds this thread awake */
        while (__atomic_load_n(&fr_queued, __ATOMIC_ACQUIRE) == 0 && fr_now_ns() < until)
            fr_relax();
        pthread_mutex_lock(&fr_lock);
        while ((t = fr_pop_locked()) == NULL) {
            fr_sleeping++;
            pthread_cond_wait(&fr_wake, &fr_lock);
            fr_sleeping--;
        }
        pthread_mutex_unlock(&fr_lock);
        t->fn(t->index, t->data, t->arg);
        pthread_mutex_lock(&fr_lock);
        fr_free++;
        if (--*t->remaining == 0)
            pthread_cond_broadcast(&fr_done);
        pthread_mutex_unlock(&fr_lock);
    }
    return NULL;
}

static void fr_pool_after_fork(void)
{
    /* only the forking thread exists in the child: no workers, nothing queued */
    pthread_mutex_init(&fr_lock, NULL);
    pthread_cond_init(&fr_wake, NULL);
    pthread_cond_init(&fr_done, NULL);
    fr_head = fr_tail = NULL;
    fr_free = fr_queued = fr_sleeping = 0;
}

/* Make sure `need` free workers exist (call with fr_lock held); 0, or -1 if none could start. */
static int fr_ensure_workers_locked(int need)
{
    pthread_attr_t attr;
    if (!fr_atfork_done) {
        pthread_atfork(NULL, NULL, fr_pool_after_fork);
        fr_atfork_done = 1;
    }
    if (fr_free >= need)
        return 0;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    while (fr_free < need) {
        pthread_t tid;
        if (pthread_create(&tid, &attr, fr_worker, NULL) != 0) {
            pthread_attr_destroy(&attr);
            return -1;
        }
        fr_free++;
        fr_started++;
    }
    pthread_attr_destroy(&attr);
    return 0;
}

/* The callback handed to OpenBLAS (see the top of this file). */
static void fr_openblas_threads(int sync, fr_dojob_fn dojob, int numjobs, size_t elsize,
                                void *jobdata, int dojob_data)
{
    fr_task local[8];
    fr_task *tasks = local;
    volatile int remaining;
    int i;
    long until;
    (void)sync;
    if (numjobs <= 1) {
        if (numjobs == 1)
            dojob(0, jobdata, dojob_data);
        return;
    }
    if (numjobs - 1 > 8) {
        tasks = (fr_task *)malloc((size_t)(numjobs - 1) * sizeof(fr_task));
        if (tasks == NULL)
            abort();      /* OpenBLAS gives the callback no way to fail */
    }
    remaining = numjobs - 1;
    pthread_mutex_lock(&fr_lock);
    if (fr_ensure_workers_locked(fr_queued + numjobs - 1) != 0)
        abort();
    fr_calls++;
    for (i = 1; i < numjobs; i++) {
        fr_task *t = &tasks[i - 1];
        t->fn = dojob;
        t->data = (char *)jobdata + (size_t)i * elsize;
        t->index = i;
        t->arg = dojob_data;
        t->remaining = &remaining;
        t->next = NULL;
        if (fr_tail != NULL)
            fr_tail->next = t;
        else
            fr_head = t;
        fr_tail = t;
    }
    __atomic_store_n(&fr_queued, fr_queued + numjobs - 1, __ATOMIC_RELEASE);
    if (fr_sleeping > 0)
        pthread_cond_broadcast(&fr_wake);
    pthread_mutex_unlock(&fr_lock);
    dojob(0, jobdata, dojob_data);
    until = fr_now_ns() + FR_SPIN_NS;
    while (__atomic_load_n(&remaining, __ATOMIC_ACQUIRE) != 0 && fr_now_ns() < until)
        fr_relax();
    pthread_mutex_lock(&fr_lock);
    while (remaining != 0)
        pthread_cond_wait(&fr_done, &fr_lock);
    pthread_mutex_unlock(&fr_lock);
    if (tasks != local)
        free(tasks);
}

#endif
