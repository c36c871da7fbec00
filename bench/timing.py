"""Timing primitives of the worker processes: calls per sample, the GEMM ceiling, the cache's
read bandwidth.

A sample times enough back-to-back calls to last at least ``min_sample_time``
so that microsecond calls are not dominated by the timer.
"""

import gc
import math
import statistics
import time

import numpy as np


def time_calls(fn, number=1):
    """Seconds per call of ``fn()`` over ``number`` back-to-back calls, garbage collector off.

    Parameters
    ----------
    fn : callable
    number : int

    Returns
    -------
    float
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - start) / number
    finally:
        if enabled:
            gc.enable()


def estimate_call_time(fn, budget):
    """Seconds per call of a warmed-up ``fn``, for planning how to time it.

    A call that takes a sizeable part of the budget (``>= budget / 4``) is
    timed once more and the faster of the two counts: a single call can land
    on a hiccup of a busy machine.  A faster call is timed as the mean of a
    batch lasting about ``budget / 10``: robust to hiccups, and to calls whose
    time switches between a fast and a slow mode (thread pools on a busy
    machine), which a single call or the minimum would underestimate.

    Parameters
    ----------
    fn : callable
    budget : float
        Seconds the whole timing may take.

    Returns
    -------
    float
    """
    first = time_calls(fn)
    if first >= budget / 4:
        return min(first, time_calls(fn))
    return time_calls(fn, calls_per_sample(first, budget / 10))


def calls_per_sample(seconds_per_call, min_sample_time):
    """How many calls make one sample last at least ``min_sample_time``.

    Parameters
    ----------
    seconds_per_call : float
        An estimate (e.g. from a warm-up call).
    min_sample_time : float

    Returns
    -------
    int
        At least 1.
    """
    if seconds_per_call <= 0:
        return 1
    return max(1, math.ceil(min_sample_time / seconds_per_call))


def gemm_throughput(n=2048, repeat=5, dtype=np.float32, min_sample_time=0.2):
    """The machine's measured GEMM throughput: ``np.matmul`` of two n x n matrices.

    Parameters
    ----------
    n : int
    repeat : int
        Samples; the median is used.
    dtype : numpy dtype
    min_sample_time : float

    Returns
    -------
    dict
        ``gflops`` (median GFLOP/s, counting ``2*n**3`` per product),
        ``samples`` (GFLOP/s of every sample) and ``n``.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n)).astype(dtype)
    b = rng.standard_normal((n, n)).astype(dtype)
    out = np.empty((n, n), dtype=dtype)
    fn = lambda: np.matmul(a, b, out=out)  # noqa: E731
    fn()
    t = time_calls(fn)
    number = calls_per_sample(t, min_sample_time)
    flops = 2.0 * n ** 3
    samples = [flops / time_calls(fn, number) / 1e9 for _ in range(repeat)]
    return {"gflops": statistics.median(samples), "samples": samples, "n": n}


def read_bandwidth(nbytes, repeat=7, min_sample_time=0.05):
    """GB/s at which one thread reads float32 data of ``nbytes`` from its caches.

    The best rate of the public kernels that read a buffer once: BLAS's dot
    product of it with itself, its matrix-vector products with the buffer as a
    (nbytes / 512, 128) matrix and as a (128, nbytes / 512) one (BLAS held at one
    thread), and NumPy's maximum over it; each less the time of the same call
    on a tiny operand (the fixed cost of a call from Python, taken off up to
    3/4 of the time: a buffer read in less than that is not measured); the best of
    ``repeat`` samples of each (a floor is what the machine can do: on Zen 3 at
    256 KiB these read 46, 50, 76 and 74 GB/s).

    Parameters
    ----------
    nbytes : int
    repeat : int
    min_sample_time : float

    Returns
    -------
    float
    """
    from threadpoolctl import threadpool_limits
    n = max(128, nbytes // 512 * 128)
    a = np.ones(n, dtype=np.float32)
    rows, cols = a.reshape(-1, 128), a.reshape(128, -1)
    v, tiny = np.ones(128, dtype=np.float32), np.ones(128, dtype=np.float32)
    kernels = [(lambda: np.dot(a, a), lambda: np.dot(tiny, tiny)),
               (lambda: rows @ v, lambda: tiny[None, :] @ v),
               (lambda: v @ cols, lambda: v @ tiny[:, None]),
               (lambda: np.maximum.reduce(a), lambda: np.maximum.reduce(tiny))]
    best = 0.0
    with threadpool_limits(1, user_api="blas"):
        for fn, small in kernels:
            times = []
            for f in (small, fn):
                f()
                number = calls_per_sample(time_calls(f), min_sample_time)
                times.append([time_calls(f, number) for _ in range(repeat)])
            call = statistics.median(times[0])
            best = max(best, max(4 * n / max(t - call, t / 4) for t in times[1]))
    return best / 1e9
