"""Compile flags, on-disk cache and threads of the numba backend: the one place they are set.

Every kernel of :mod:`fastrnn.jit` is compiled through :func:`jit` (entry
points, called from Python, and the row passes of the ``activations`` option,
which kernels call rather than inline) or :func:`helper` (called from kernels
only), so the flags below apply to all of them.

Compile flags
-------------
``nopython``, ``nogil``
    Kernels never touch Python objects and release the GIL, which is how they
    run on several threads at once (see *Threads*).
``error_model="numpy"``
    Division by zero gives inf/NaN instead of raising; without it numba guards
    every division with a branch and the element-wise loops do not vectorise.
``fastmath`` = :data:`FASTMATH`
    ``contract`` (fused multiply-add), ``nsz`` and ``arcp`` only.  ``nnan`` and
    ``ninf`` are left out on purpose: the activations must saturate at +-inf
    and propagate NaN.  ``reassoc`` is left out too, so every sum is evaluated
    in the order it is written: a result does not depend on how the batch is
    split over threads.  Only the one-step kernels' dot products, which run on
    one thread, use :data:`REDUCE_FASTMATH` (with ``reassoc``) to vectorise.

On-disk cache
-------------
Compiled kernels are cached in :data:`CACHE_DIR`, which is

* ``$FASTRNN_CACHE_DIR`` when that environment variable is set (an empty
  value disables the disk cache), else
* the per-user cache directory: ``$XDG_CACHE_HOME/fastrnn`` (default
  ``~/.cache/fastrnn``), ``~/Library/Caches/fastrnn`` on macOS,
  ``%LOCALAPPDATA%\\fastrnn\\cache`` on Windows,

with a sub-directory per numba version and per content of the backend's
source files (numba itself only notices edits to the file that defines a
cached function, not to the helpers it calls).  When that directory cannot be
created or written to, kernels are compiled in memory in every new process,
quietly.  :func:`fastrnn.jit.warmup` compiles (or loads) everything up front.

Threads
-------
A sequence kernel splits the batch into contiguous slices, one per thread,
and each thread runs the whole time loop on its slice (as onnxruntime does).
The products over all T*B rows (the input projection before the loop; dx
and the weight gradients after it) are BLAS calls on up to
:data:`BLAS_BLOCKS` blocks of output rows, shared among the same threads.  The threads
are the calling thread plus the pool of :mod:`fastrnn._runtime`, shared with
the cython backend (the kernels and NumPy's BLAS release the GIL), and so is
their count, :func:`get_num_threads` (``$FASTRNN_NUM_THREADS``, default the
CPUs this process may use; :func:`set_num_threads`).  BLAS's own thread count
is held at one during these calls (:func:`one_blas_thread`).  Calls smaller than
:data:`PARALLEL_MIN_FLOPS` run on the calling thread alone.  Every element of
a result is computed by the same sequence of floating-point operations
whatever the thread count (the BLAS blocks do not depend on it either), so
results do not depend on it (bit for bit).
"""

import functools
import hashlib
import os
import sys
import tempfile
import threading

import numba
import numpy as np
from numba.extending import register_jitable

from .. import _runtime

#: fast-math flags of every kernel (no nnan/ninf: inf and NaN keep their meaning)
FASTMATH = frozenset({"contract", "nsz", "arcp"})
#: fast-math flags of loops that reduce a vector to a number, which only
#: vectorise with reassociation: the dot products of the one-step kernels,
#: which run on a single thread (so thread counts do not change their order)
REDUCE_FASTMATH = FASTMATH | {"reassoc"}
#: below this many floating-point operations a kernel call runs on a single thread
PARALLEL_MIN_FLOPS = 2_000_000
#: a product over all T*B rows is split into at most this many BLAS calls (blocks of its
#: output rows, shared among the threads) ...
BLAS_BLOCKS = 8
#: ... of at least this many rows each
BLAS_MIN_ROWS = 64
#: products over all rows smaller than this (floating-point operations) are a numba loop
#: instead: a BLAS call from Python costs ~100 us at the least
BLAS_MIN_FLOPS = 1_000_000
#: products over all rows smaller than this run on one thread: handing blocks to another
#: thread costs more than it saves below ~300 us of work (T=100, B=1: LSTM and GRU
#: forward+backward 9-13% faster than with threads from PARALLEL_MIN_FLOPS on)
BLAS_PARALLEL_MIN_FLOPS = 10_000_000
#: bytes of gates whose input projection an eval-mode forward computes at once (at least
#: one time step): its workspace, whatever the sequence length.  8 MiB measured 4-8% faster
#: than a fixed 1024 rows on RNN, GRU and LSTM layers of H = 128..256 (fewer, larger BLAS
#: calls and thread hand-offs), and is the same 1024 rows for an LSTM of H = 512
EVAL_BYTES = 8 << 20
#: an input of which at most 1/SPARSE_DENSITY is not zero (one-hot characters, say) is
#: multiplied over its entries alone (see :func:`fastrnn.jit._common.sparse_input`); 0: never
SPARSE_DENSITY = 8
#: environment variable naming the cache directory ("" disables the cache)
CACHE_ENV = "FASTRNN_CACHE_DIR"


def _user_cache_root():
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~")
        return os.path.join(base, "fastrnn", "cache")
    if sys.platform == "darwin":
        return os.path.expanduser("~/Library/Caches/fastrnn")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "fastrnn")


def _source_digest():
    """Hash of this package's source files, so that any edit starts a fresh cache."""
    digest = hashlib.sha256(numba.__version__.encode())
    here = os.path.dirname(os.path.abspath(__file__))
    for name in sorted(os.listdir(here)):
        if name.endswith(".py"):
            with open(os.path.join(here, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()[:16]


def _writable_dir(path):
    """``path`` when it exists (or can be created) and accepts files, else None."""
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return None
    return path


def _cache_dir():
    root = os.environ.get(CACHE_ENV)
    if root is None:
        root = _user_cache_root()
    if not root:
        return None
    return _writable_dir(os.path.join(root, f"numba-{numba.__version__}-{_source_digest()}"))


#: where compiled kernels are cached, or None when the disk cache is off
CACHE_DIR = _cache_dir()


def _forgiving(dispatcher):
    """``dispatcher`` whose disk cache costs a compile, never a failed call: numba lets a
    damaged entry (an empty or truncated index or data file: EOFError, UnpicklingError) fail
    every call of every process, and a full disk fail the call that compiled.  A damaged
    entry's index is removed, so that the compile writes a whole one; a write that fails
    leaves the kernel compiled in memory."""
    cache = getattr(dispatcher, "_cache", None)
    load, save = getattr(cache, "load_overload", None), getattr(cache, "save_overload", None)
    if load is None or save is None:
        return dispatcher

    def load_overload(*args, **kwargs):
        try:
            return load(*args, **kwargs)
        except Exception:  # noqa: BLE001 - whatever a damaged file raises: compiled again
            index = getattr(getattr(cache, "_cache_file", None), "_index_path", None)
            if index:
                try:
                    os.unlink(index)
                except OSError:
                    pass
            return None

    def save_overload(*args, **kwargs):
        try:
            save(*args, **kwargs)
        except OSError:      # a full disk, a file in the way: the kernel runs from memory
            pass

    cache.load_overload, cache.save_overload = load_overload, save_overload
    return dispatcher


def jit(fn):
    """Decorator compiling a kernel entry point with the backend's flags and disk cache."""
    options = dict(nogil=True, error_model="numpy", fastmath=set(FASTMATH), boundscheck=False)
    if CACHE_DIR is None:
        return numba.njit(cache=False, **options)(fn)
    saved = numba.config.CACHE_DIR
    numba.config.CACHE_DIR = CACHE_DIR  # read once, when the cache locator is made
    try:
        return _forgiving(numba.njit(cache=True, **options)(fn))
    finally:
        numba.config.CACHE_DIR = saved


def helper(fastmath=FASTMATH):
    """Decorator for a function called only from kernels, compiled with the same flags.

    A helper is a numba overload (``register_jitable``), not a dispatcher: it
    is typed with plain ``int64`` for constant arguments instead of being
    compiled again for every distinct literal value a call site passes, and it
    is compiled into (and cached with) the kernels that call it.
    """
    options = dict(error_model="numpy", fastmath=set(fastmath), boundscheck=False)

    def decorate(fn):
        return register_jitable(**options)(fn)

    return decorate


get_num_threads = _runtime.get_num_threads
set_num_threads = _runtime.set_num_threads
run_threads = _runtime.run_threads


def threads_for(flops, min_flops=None):
    """Threads for work of about ``flops`` operations: all of them, or 1 below ``min_flops``
    (default :data:`PARALLEL_MIN_FLOPS`, a kernel call; :data:`BLAS_PARALLEL_MIN_FLOPS` for
    the BLAS products shared by the threads)."""
    if flops < (PARALLEL_MIN_FLOPS if min_flops is None else min_flops):
        return 1
    return _runtime.get_num_threads()


def batch_slices(batch, threads):
    """Boundaries of contiguous batch slices, one per thread: int64 ``[0, ..., batch]``.

    ``min(threads, batch)`` slices (at least one) whose sizes differ by at most one.
    """
    n = max(1, min(threads, batch))
    return np.array([batch * k // n for k in range(n + 1)], dtype=np.int64)


_blas_lock = threading.Lock()
_blas = {"libs": None, "depth": 0, "saved": None}


def _forget_after_fork():
    """In a child made by fork: the lock anew, no kernel call in flight, and BLAS's thread
    counts as they were before a call on another thread (gone in the child) set them to one."""
    global _blas_lock
    _blas_lock = threading.Lock()
    _blas["depth"] = 0
    _restore_blas()


def _restore_blas():
    """BLAS's thread counts set back to those :func:`hold_blas_at_one_thread` saved, if any."""
    saved, _blas["saved"] = _blas["saved"], None
    for lib, n in saved or ():
        if n != 1:
            lib.set_num_threads(n)


_runtime.after_fork(_forget_after_fork)


def _blas_libraries():
    """Thread controls of NumPy's BLAS (the one the kernels call), found once: the BLAS
    library shipped inside NumPy's wheel, else every BLAS library loaded
    (:func:`fastrnn._runtime.blas_thread_controls`)."""
    if _blas["libs"] is None:
        home = os.path.dirname(os.path.realpath(np.__file__))
        libs = _runtime.blas_thread_controls()
        own = [lib for lib in libs if os.path.realpath(lib.filepath).startswith(
            (home + os.sep, home + ".libs" + os.sep))]
        _blas["libs"] = own or libs
        _warm_blas_here()
    return _blas["libs"]


def _warm_blas_here(barrier=None):
    """Run one 384 x 384 float32 product in NumPy's BLAS on the calling thread (once all
    parties of ``barrier`` are there, when one is given).

    OpenBLAS gives each call in flight a work buffer from a table (the first one free)
    and maps its pages only when first written.  Its GEMM kernel prefetches some way past
    the panels it packs, and a prefetch into a page never written costs a page-table walk
    every time (slow in a virtual machine) instead of a TLB hit: a buffer that only small
    products have used stays slow (100x64 @ 64x256 in 270 us instead of 100 us; an RNN
    forward's input projection at T=100, B=32, I=512, H=256 as slow on two threads as on
    one).  A 384^3 product writes deep enough.  The first thread to call BLAS through the
    kernels runs it, and every thread of the pool, all at the same time, when the pool
    starts (registered with :func:`fastrnn._runtime.on_new_pool`): concurrent calls use as
    many OpenBLAS buffers, and each gets written.  (Warming each pool thread alone, as it
    started, left the second buffer cold whenever the calling thread was not in a BLAS
    call at that moment.)"""
    if barrier is not None:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:   # a party did not come: warm alone (speed only)
            pass
    square = np.ones((384, 384), dtype=np.float32)
    square @ square


def one_blas_thread(fn):
    """Decorator for a kernel wrapper: the BLAS calls made inside it (through
    :func:`hold_blas_at_one_thread`) run with BLAS on one thread, held from the
    first of them until the outermost decorated call returns, which restores the
    previous thread counts.  Re-entrant and thread-safe; costs nothing more than a
    lock when no BLAS call is made (the one-step kernels)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _blas_lock:
            _blas["depth"] += 1
        try:
            return fn(*args, **kwargs)
        finally:
            with _blas_lock:
                _blas["depth"] -= 1
                if _blas["depth"] == 0:
                    _restore_blas()
    return wrapper


def hold_blas_at_one_thread():
    """Set BLAS to one thread until the enclosing :func:`one_blas_thread` call returns
    (nothing outside one).  Setting it back and forth around each call instead woke
    BLAS's threads every time, which then spun and slowed the kernels down."""
    with _blas_lock:
        if _blas["depth"] > 0 and _blas["saved"] is None:
            _blas["saved"] = [(lib, lib.get_num_threads()) for lib in _blas_libraries()]
            for lib, n in _blas["saved"]:
                if n != 1:
                    lib.set_num_threads(1)


_runtime.on_new_pool("numpy-blas", _warm_blas_here)    # the BLAS these kernels call
