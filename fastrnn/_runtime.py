"""Threads and BLAS of the compiled backends, owned in one place.

Both compiled backends (numba, :mod:`fastrnn.jit`; cython, :mod:`fastrnn._cython`)
split a kernel call over as many threads as this module says:

Thread count
    :func:`get_num_threads`: ``$FASTRNN_NUM_THREADS``, by default the CPUs this
    process may run on; :func:`set_num_threads` (``fastrnn.set_num_threads``)
    changes it at run time for both backends.

The pools
    The numba backend: :func:`run_threads` runs one task on the calling thread
    and the others on a pool of Python threads (the kernels release the GIL),
    and waits for all of them.  The pool belongs to the process that made it:
    a child made by ``fork`` makes its own at its first call (the parent's
    threads do not exist there).  An exception or a ``KeyboardInterrupt`` in
    the caller is raised only once every task of the call has returned, so no
    thread is still writing into arrays that the unwinding frees.
    The cython backend computes a share of every call on the calling thread
    and hands the others to the C pool of ``kernels/fastrnn_pool.h``, which
    also runs its teams and OpenBLAS's parallel jobs (below): one set of
    threads, awake from one phase or product to the next.  A Python thread
    woken on a core that had been idle for 1-5 ms started 75-110 µs late on a
    2-core virtual machine, and the README's loop at H=256 took 21-24 ms a
    chunk with the cython kernels on Python threads (its long calls on two of
    them while the caller waited for a Ctrl-C), 18-20 ms on this pool.

BLAS's idle threads
    OpenBLAS runs a multi-threaded call on threads of its own that keep
    spinning for ~0.1 s after it.  A NumPy product between two kernel calls (a
    dense head in a training loop) left such a thread competing with the
    kernel's threads for the cores, which made an LSTM forward at T=100, B=32,
    H=256 twice as slow (13 -> 25 ms on two cores).  Where the cython
    extension is built, :func:`install_blas_pool` hands the parallel jobs of
    every loaded OpenBLAS (NumPy's and SciPy's) to a pool whose threads spin
    50 µs after a job and then sleep (``kernels/fastrnn_pool.h``), through
    OpenBLAS's own ``openblas_set_threads_callback_function``: the same
    products, as many threads, no spinning left behind.  That path of OpenBLAS
    leaves two things to the callback, which the pool does (see its header):
    one call at a time (two at once shared OpenBLAS's per-thread buffers and
    computed garbage), and the caller's floating-point control words in every
    job (stale ones raised NumPy's "invalid value encountered in matmul").
    ``FASTRNN_BLAS_POOL=0`` leaves OpenBLAS's threads as they are.

The C library's allocator
    glibc gives an array above its mmap threshold (128 KiB at first, raised as
    large blocks are freed) fresh pages from the operating system, and hands the
    top of its heap back beyond its trim threshold; a training loop's arrays of
    0.1-10 MB (a layer's output, the logits, their gradients) can then come
    back page-faulted and zeroed at every step: the README's loop at H=128, in
    a fresh process, took 870 page faults a chunk for 800 chunks (glibc raises
    its thresholds only when it frees a larger block, so the count depends on
    the process's past: the benchmark's worker had ~35).  :func:`tune_malloc`,
    when fastrnn is imported, fixes the two thresholds at the ceilings glibc's
    own adjustment may reach (32 MiB, and 64 MiB to trim), so that such arrays
    stay on the heap whatever came before: no fault after the first chunk, and
    that loop 1.1-1.3x as fast.  Up to 64 MiB of freed memory then stays with
    the process.  ``FASTRNN_MALLOC=0`` leaves the allocator as it
    is, and so does a process whose environment sets glibc's own
    ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or malloc tunables.
"""

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from . import _checks

THREADS_ENV = "FASTRNN_NUM_THREADS"
BLAS_POOL_ENV = "FASTRNN_BLAS_POOL"
MALLOC_ENV = "FASTRNN_MALLOC"


def _default_threads():
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:   # (the bounds of set_num_threads; the length first: int() refuses 4,300 digits)
        if (not (env.isascii() and env.isdigit()) or len(env.lstrip("0")) > 10
                or not 1 <= int(env) <= _checks.MAX_SIZE):
            raise ValueError(f"{THREADS_ENV} must be a positive integer of at most "
                             f"{_checks.MAX_SIZE}, but got {_checks.short(env)}")
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_threads = _default_threads()
_listeners = []         # callables told of a new thread count (the cython extension's)


def get_num_threads():
    """Threads a kernel call of the compiled backends may use."""
    return _threads


def set_num_threads(n):
    """Set the threads kernel calls of the compiled backends use.

    Parameters
    ----------
    n : int
        At least 1.  ``$FASTRNN_NUM_THREADS`` sets the value a process starts with.
    """
    global _threads
    try:   # at most a C int: the compiled backends take it as one
        n = _checks.check_int("n (the number of threads)", n, minimum=1)
    except TypeError as exc:   # a ValueError for every bad n, as before
        raise ValueError(str(exc)) from None
    _threads = n
    for tell in _listeners:
        tell(n)


def follow_num_threads(tell):
    """Call ``tell(n)`` now and whenever the thread count changes."""
    _listeners.append(tell)
    tell(_threads)


# -- the pool ----------------------------------------------------------------------------------
_pool = {"pid": None, "workers": 0, "executor": None}
_pool_lock = threading.Lock()
#: name -> warm(barrier), run on the caller and every worker of a new pool (see pool())
_warmers = {}


def on_new_pool(name, warm):
    """Register ``warm(barrier)`` under ``name`` (once per name): run on the caller and every
    worker of each new pool at the same time (the backends warm their BLAS buffers that way)."""
    _warmers.setdefault(name, warm)


#: callables run in a child made by fork (the cython extension's count of calls in flight,
#: the locks of the modules that hold one)
_after_fork = []


def after_fork(forget):
    """Call ``forget()`` in a child made by fork, where only the forking thread exists: a lock
    another thread held at the fork stays held there forever, so each module makes its locks
    (and what they guard) anew in ``forget``."""
    _after_fork.append(forget)


def _reset_after_fork():
    global _pool_lock
    _pool_lock = threading.Lock()
    _pool.update(pid=None, workers=0, executor=None)
    for forget in _after_fork:
        forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def pool(workers):
    """The process's pool with at least ``workers`` threads (made, or made larger, here; at
    least :func:`get_num_threads` of them)."""
    with _pool_lock:
        if _pool["pid"] != os.getpid() or _pool["workers"] < workers:
            workers = max(workers, _threads)
            executor = ThreadPoolExecutor(workers, thread_name_prefix="fastrnn")
            if _warmers:
                from threadpoolctl import threadpool_limits
                with threadpool_limits(1, user_api="blas"):    # one buffer per thread
                    for warm in _warmers.values():
                        barrier = threading.Barrier(workers + 1, timeout=30)
                        futures = [executor.submit(warm, barrier) for _ in range(workers)]
                        warm(barrier)
                        wait_all(futures)
            _pool.update(pid=os.getpid(), workers=workers, executor=executor)
        return _pool["executor"]


def run_threads(kernel, args, tails):
    """Run ``kernel(*args, *tail)`` for every tail of ``tails``, one per thread, and wait.

    The first runs on the calling thread, the others on :func:`pool`.  The
    first exception of any of them is raised, after all have returned.
    """
    if len(tails) == 1:
        return [kernel(*args, *tails[0])]
    executor = pool(len(tails) - 1)
    futures = []
    try:
        for tail in tails[1:]:
            futures.append(executor.submit(kernel, *args, *tail))
        first = kernel(*args, *tails[0])
    finally:
        wait_all(futures)
    return [first] + [f.result() for f in futures]


def wait_all(futures):
    """Wait for every future, even through a KeyboardInterrupt, which is raised afterwards.

    The futures' done-callbacks count them and release one plain lock when the last is done;
    this thread sleeps on that lock only (its timed acquire a Ctrl-C interrupts cleanly) until
    the count is complete.
    ``concurrent.futures.wait`` is not used: it takes the futures' locks one by one in a
    Python loop, and a Ctrl-C between two of them left a lock held by this thread, on which
    the worker finishing that future then waited forever (a hang seen in a CI run).  A
    callback registered twice (a Ctrl-C right after one) does no harm: futures are counted
    by identity, and the gate is released once all are.
    """
    interrupted = None
    gate = threading.Lock()
    gate.acquire()
    done, done_lock = set(), threading.Lock()

    def one_done(future):
        # idempotent, so that a call cut short by a Ctrl-C (on this thread, when the future was
        # done as its callback was added) is made whole by the next: all releases of the gate
        # happen under done_lock, so a locked gate here is one nobody else will release
        with done_lock:
            done.add(id(future))
            if len(done) == len(futures) and gate.locked():
                gate.release()

    registered = 0
    while futures:
        try:
            while registered < len(futures):
                futures[registered].add_done_callback(one_done)
                registered += 1
            # done, not the acquire's result, says when to stop: a Ctrl-C just after an acquire
            # succeeded would lose its True (and a second acquire would wait forever); the
            # timeout: a SIGINT that the kernel delivers to another thread does not wake this
            # one, which sees Python's pending signal only once it wakes
            while len(done) < len(futures):
                gate.acquire(timeout=0.01)
            break
        except BaseException as exc:  # noqa: BLE001 - Ctrl-C: finish waiting, then raise it
            interrupted = interrupted or exc
    if interrupted is not None:
        raise interrupted


# -- BLAS thread counts ------------------------------------------------------------------------
def _openblas_symbol(lib, name):
    """OpenBLAS's function ``openblas_<name>`` in ``lib`` under whichever affixes its build
    uses (``scipy_`` for the wheels' builds, ``64_`` for 64-bit integers), or None."""
    for prefix in ("scipy_", ""):
        for suffix in ("64_", ""):
            fn = getattr(lib, f"{prefix}openblas_{name}{suffix}", None)
            if fn is not None:
                return fn
    return None


class _OpenBLASThreads:
    """``openblas_get/set_num_threads`` of one OpenBLAS library, called directly.

    threadpoolctl (3.x) lets only the first thread that sets an OpenBLAS limit change it
    (other threads "silently do nothing"), so a kernel called from a thread pool held
    nothing: NumPy's products inside it ran on two threads, results depended on the
    calling thread in the last bits, and concurrent callers oversubscribed the cores.
    The thread count of a pthreads OpenBLAS is process-wide, and any thread may set it."""

    def __init__(self, filepath, get, set_):
        self.filepath, self._get, self._set = filepath, get, set_

    def get_num_threads(self):
        return self._get()

    def set_num_threads(self, n):
        self._set(int(n))


def blas_thread_controls():
    """Controls of every BLAS loaded now: each with ``filepath``, ``get_num_threads()`` and
    ``set_num_threads(n)``; OpenBLAS (pthreads) called directly, others through threadpoolctl."""
    try:
        from threadpoolctl import ThreadpoolController
        controllers = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    except Exception:   # threadpoolctl missing or failing: leave BLAS threads alone
        return []
    out = []
    for c in controllers:
        direct = None
        if c.internal_api == "openblas" and getattr(c, "threading_layer", "") != "openmp":
            lib = ctypes.CDLL(c.filepath)
            get, set_ = _openblas_symbol(lib, "get_num_threads"), _openblas_symbol(lib, "set_num_threads")
            if get is not None and set_ is not None:
                get.restype, set_.argtypes = ctypes.c_int, [ctypes.c_int]
                direct = _OpenBLASThreads(c.filepath, get, set_)
        out.append(direct or c)
    return out


# -- OpenBLAS's parallel jobs on a pool that does not spin -------------------------------------
_blas_pool = {"installed": [], "checked": set()}


def _switch(name, default=True):
    """The on/off environment switch ``name``: 0/1, false/true, no/yes or off/on (any case),
    ``default`` when unset or empty (as every FASTRNN_* variable is its default when empty);
    anything else is refused, never read as off."""
    value = os.environ.get(name, "").strip().lower() or ("1" if default else "0")
    if value not in ("0", "1", "false", "true", "no", "yes", "off", "on"):
        raise ValueError(f"{name} must be 0 or 1 (or false/true, no/yes, off/on), but got "
                         f"{os.environ.get(name)!r}")
    return value in ("1", "true", "yes", "on")


def blas_pool_enabled():
    return _switch(BLAS_POOL_ENV)


def install_blas_pool():
    """Hand the parallel jobs of every OpenBLAS loaded now to fastrnn's pool (see above).

    Does nothing under ``FASTRNN_BLAS_POOL=0`` (it is on by default, see above), without
    the cython extension (the pool is C code in it), or for a BLAS other than OpenBLAS.  Each library
    is set once; a library loaded later is set by a later call.

    Returns
    -------
    list of str
        Paths of the libraries that use the pool.
    """
    if not blas_pool_enabled():
        return []
    try:
        # the chosen build's pool, the one its kernels' split phases and teams run on: one set
        # of workers in the process (each build has a pool of its own)
        from fastrnn._cython import kernels
        address = kernels.blas_pool_callback()
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    with _pool_lock:
        for info in threadpool_info():
            path = info.get("filepath")
            if info.get("internal_api") != "openblas" or not path or path in _blas_pool["checked"]:
                continue
            _blas_pool["checked"].add(path)
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            setter = _openblas_symbol(lib, "set_threads_callback_function")
            if setter is not None:
                setter.argtypes, setter.restype = [ctypes.c_void_p], None
                setter(address)
                _blas_pool["installed"].append(path)
        return list(_blas_pool["installed"])


def blas_pool_libraries():
    """Paths of the OpenBLAS libraries whose parallel jobs run on fastrnn's pool."""
    return list(_blas_pool["installed"])


# -- the C library's allocator (see above) -----------------------------------------------------
#: glibc's thresholds as tune_malloc sets them: DEFAULT_MMAP_THRESHOLD_MAX of 64-bit glibc, the
#: highest its dynamic threshold reaches, and twice that to trim (the ratio glibc keeps)
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3     # mallopt's parameters (malloc.h)
#: glibc's environment variables of the same settings (and GLIBC_TUNABLES' glibc.malloc.*)
GLIBC_MALLOC_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                          "MALLOC_MMAP_MAX_")
_malloc = {"tuned": False}


def _glibc_malloc_set_by_user():
    """Whether the environment already sets glibc's allocator (its variables or tunables)."""
    return (any(name in os.environ for name in GLIBC_MALLOC_VARIABLES)
            or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""))


def tune_malloc():
    """Fix glibc's mmap and trim thresholds at MMAP_THRESHOLD and TRIM_THRESHOLD (see above).

    Does nothing under ``FASTRNN_MALLOC=0``, when the environment sets glibc's allocator
    itself, or with another C library.  Called once when fastrnn is imported.

    Returns
    -------
    bool
        Whether the thresholds are fastrnn's (now or from an earlier call).
    """
    if _malloc["tuned"]:
        return True
    try:
        glibc = bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (AttributeError, ValueError, OSError):   # not a glibc system
        glibc = False
    if not (_switch(MALLOC_ENV) and glibc) or _glibc_malloc_set_by_user():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _malloc["tuned"] = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                            and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _malloc["tuned"]


def malloc_tuned():
    """Whether :func:`tune_malloc` set the allocator's thresholds in this process."""
    return _malloc["tuned"]


tune_malloc()
blas_pool_enabled()   # a bad FASTRNN_BLAS_POOL fails the import, as the other switches do
