"""Timing primitives: calls per sample, interleaved medians, the GEMM ceiling.

The report times all backends of a row in one process, round-robin (the
order rotates every round), so slow drifts of the machine's load hit every
backend alike; the value reported is the median of the samples.  A sample
times enough back-to-back calls to last at least ``min_sample_time`` so that
microsecond calls are not dominated by the timer.  A slow backend (the numpy
reference at the large shape) stops taking samples once it has spent its
time budget and has ``min_samples`` of them.

Before a sample of one backend that follows a sample of another, the
process sleeps ``settle`` seconds: thread pools spin for a while after their
last task (OpenBLAS's idle threads for about 2^28 cycles, ~0.1 s), and a
backend sampled during the spinning of the previous backend's threads ran up
to 1.6x slower on this 2-core machine (numba right after the numpy
reference, whose BLAS runs on 2 threads).
"""

import gc
import math
import statistics
import time
from typing import NamedTuple

import numpy as np


class Timing(NamedTuple):
    """Samples of one callable.

    Attributes
    ----------
    median : float
        Median seconds per call.
    samples : list of float
        Seconds per call of every sample.
    number : int
        Calls per sample.
    """

    median: float
    samples: list
    number: int

    @property
    def spread(self):
        """(max - min) / median of the samples: how noisy the measurement was."""
        if len(self.samples) < 2 or self.median <= 0:
            return 0.0
        return (max(self.samples) - min(self.samples)) / self.median


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


def plan_rounds(seconds_per_call, budget, min_rounds, max_rounds, min_round_time):
    """Rounds and iterations for ``benchmark.pedantic`` from a per-call estimate.

    Parameters
    ----------
    seconds_per_call : float
        Estimate from a warm-up call.
    budget : float
        Seconds the timing may take (pytest-benchmark's ``max_time``).
    min_rounds, max_rounds : int
        Bounds on the rounds: a slow call (the numpy reference at the large
        shape) gets ``min_rounds``.
    min_round_time : float
        A round repeats the call until it lasts about this long.

    Returns
    -------
    rounds, iterations : int
    """
    iterations = calls_per_sample(seconds_per_call, min_round_time)
    per_round = max(seconds_per_call * iterations, 1e-9)
    rounds = int(min(max_rounds, max(min_rounds, math.floor(budget / per_round))))
    return rounds, iterations


def time_interleaved(fns, repeat, *, estimates=None, min_samples=3, max_seconds=5.0,
                     min_sample_time=0.02, settle=0.0, log=None):
    """Median seconds per call of several callables, sampled round-robin.

    Parameters
    ----------
    fns : dict
        name -> zero-argument callable, already warmed up.
    repeat : int
        Samples per callable (rounds of the round-robin).
    estimates : dict, optional
        name -> seconds per call from the warm-up; measured here when missing.
    min_samples : int
        A callable whose samples exceed ``max_seconds`` in total keeps being
        sampled until it has this many, then drops out of the rounds.
    max_seconds : float
        Time budget per callable.
    min_sample_time : float
        Each sample lasts at least about this long (calls are batched).
    settle : float
        Seconds to sleep before a sample whose callable differs from the last one sampled.
    log : callable, optional
        Receives progress strings.

    Returns
    -------
    dict
        name -> :class:`Timing`.
    """
    names = list(fns)
    estimates = dict(estimates or {})
    for name in names:
        if name not in estimates:
            estimates[name] = estimate_call_time(fns[name], max_seconds)
    number = {n: calls_per_sample(estimates[n], min_sample_time) for n in names}
    samples = {n: [] for n in names}
    spent = {n: 0.0 for n in names}
    last = None
    for r in range(repeat):
        order = names[r % len(names):] + names[:r % len(names)] if names else []
        for name in order:
            if len(samples[name]) >= min_samples and spent[name] >= max_seconds:
                continue
            if settle > 0 and last is not None and last != name:
                time.sleep(settle)
            last = name
            t = time_calls(fns[name], number[name])
            samples[name].append(t)
            spent[name] += t * number[name]
        if log:
            log(f"  round {r + 1}/{repeat}: " + ", ".join(
                f"{n} {statistics.median(samples[n]) * 1e3:.3g} ms" for n in names))
    return {n: Timing(statistics.median(samples[n]), samples[n], number[n]) for n in names}


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
