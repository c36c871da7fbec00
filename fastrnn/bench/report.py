"""The benchmark report: ``python -m fastrnn.bench``.

Runs every selected case on every selected backend in one process (checked
against the numpy reference first, warmed up, then timed round-robin; see
:mod:`fastrnn.bench.timing`), measures peak memory and first-call latency in
fresh processes (:mod:`fastrnn.bench.probes`), and prints the machine
description and ONE markdown table:

* one row per (cell, pass, shape) with the median time per backend, the
  ratio torch/fastrnn for every compiled fastrnn backend, GFLOP/s with the
  fraction of the machine's float32 GEMM throughput (``np.matmul`` of
  2048 x 2048 matrices timed in the same run) and the issue's target;
* the cell-step rows (one ``LSTMCell``/``GRUCell`` call from Python);
* per cell, the peak memory of forward+backward (at the large shape) per
  backend next to the theoretical store;
* per cell, the first-call latency in a fresh process with a cold and a warm
  compile cache, and the time of the jit backend's ``warmup()``.
"""

import argparse
import importlib
import sys
import time
from dataclasses import dataclass, field

from ..backends import MODULES
from . import probes
from .cases import (
    CELLS, CYTHON_VS_NUMBA, JIT_BACKENDS, MEMORY_FLAG_RATIO, PASSES, PEER, REFERENCE, SEQUENCE_SHAPES, SHAPES, Case,
    auto_backend, backend_status, cython_target, gemm_flops, make_cases, parse_shape, target,
    theoretical_memory,
)
from .machine import cpu_counters, describe, load_average, others_cpu, usable_cores
from .timing import estimate_call_time, gemm_throughput, time_interleaved
from .workloads import CheckError, Checker, Workload


#: a timing whose samples spread more than this fraction of the median is flagged as noisy
NOISY_SPREAD = 0.5
#: a run is flagged as made on a busy machine when other processes used more than this many
#: cores on average during it ...
BUSY_OTHERS = 0.25
#: ... or, where that cannot be measured (no /proc/stat), when the load average at the start
#: is above this many per usable core
BUSY_LOAD = 0.5


@dataclass(frozen=True)
class Settings:
    """How hard the report measures.

    Attributes
    ----------
    repeat : int
        Samples per backend and row (round-robin rounds).
    min_samples : int
        A slow backend stops after this many samples once it used ``max_seconds``.
    max_seconds : float
        Time budget per backend and row.
    min_sample_time : float
        Calls are batched so one sample lasts at least this long.
    gemm_n : int
        Size of the square ``np.matmul`` that measures the GEMM ceiling.
    gemm_repeat : int
        Samples of the GEMM ceiling (at the start and again at the end).
    gemm_sample_time : float
        Each GEMM sample lasts at least this long.
    settle : float
        Sleep before a sample of a backend that follows another one's, so that the
        previous backend's idle threads stop spinning (see :mod:`fastrnn.bench.timing`).
    """

    repeat: int = 7
    min_samples: int = 3
    max_seconds: float = 5.0
    min_sample_time: float = 0.05
    gemm_n: int = 2048
    gemm_repeat: int = 5
    gemm_sample_time: float = 0.2
    settle: float = 0.15

    @classmethod
    def quick(cls, repeat=None, gemm_n=2048):
        """Fewer, shorter samples: a run of minutes instead of tens of minutes."""
        return cls(repeat=repeat or 3, min_samples=1, max_seconds=1.0, min_sample_time=0.01,
                   gemm_n=gemm_n, gemm_repeat=3, gemm_sample_time=0.05, settle=0.05)


@dataclass
class Report:
    """Everything one run measured; :meth:`markdown` formats it.

    Attributes
    ----------
    backends : list of str
        The backends that were run, in :data:`fastrnn.bench.cases.BACKENDS` order.
    status : dict
        :func:`fastrnn.bench.cases.backend_status`.
    machine : list of (str, str)
    settings : Settings
    timings : list of (Case, dict)
        Per case, backend -> :class:`fastrnn.bench.timing.Timing`, or a str
        saying why that backend has no timing (check failed, error).
    memory : list of (Case, dict)
        Per case (train, memory shape), backend -> probe result.
    first_calls : list of (Case, dict)
        Per case, backend -> :func:`fastrnn.bench.probes.measure_first_call` result.
    warmups : dict
        backend -> :func:`~fastrnn.bench.probes.measure_first_call` result
        of the backend's ``warmup()``.
    gemm : list of dict
        :func:`fastrnn.bench.timing.gemm_throughput` at the start and at the end.
    """

    backends: list
    status: dict
    machine: list
    settings: Settings
    torch_threads: int
    timings: list = field(default_factory=list)
    memory: list = field(default_factory=list)
    first_calls: list = field(default_factory=list)
    warmups: dict = field(default_factory=dict)
    gemm: list = field(default_factory=list)
    seconds: float = 0.0
    load_start: object = None
    load_end: object = None
    #: cores other processes used on average during the run (None where unknown)
    others: object = None
    cores: int = 1

    # -- derived -----------------------------------------------------------------------
    @property
    def ceiling(self):
        """GFLOP/s of the GEMM ceiling: the better of the start and end measurements."""
        return max((g["gflops"] for g in self.gemm), default=None)

    @property
    def fastrnn_backends(self):
        """The fastrnn backends that were run."""
        return [b for b in self.backends if b != PEER]

    @property
    def compared(self):
        """fastrnn backends that get ratio and GFLOP/s columns: the compiled ones, else numpy."""
        compiled = [b for b in self.fastrnn_backends if b != REFERENCE]
        return compiled or [b for b in self.fastrnn_backends if b == REFERENCE]

    @property
    def auto(self):
        """The backend the targets apply to (what ``backend="auto"`` picks), if it was run."""
        name = auto_backend(self.status)
        return name if name in self.backends else None

    # -- formatting --------------------------------------------------------------------
    def markdown(self):
        """The machine description, the settings and THE table, as markdown text."""
        lines = ["## fastrnn benchmark", ""]
        lines += [f"- {label}: {value}" for label, value in self.machine]
        if self.load_end is not None:
            lines.append(f"- load average (1 min) at end: {self.load_end:.2f}")
        if self.others is not None:
            lines.append(f"- other processes (and the hypervisor's steal time) used {self.others:.2f} "
                         f"of the {self.cores} cores on average during the run")
        # what other processes used during the run, where it was measured (the load average
        # lags by a minute and counts this run's own threads); else the load at the start
        busy = []
        if self.others is not None:
            if self.others > BUSY_OTHERS:
                busy.append(f"other processes used {self.others:.2f} cores during the run")
        elif self.load_start is not None and self.load_start > BUSY_LOAD * self.cores:
            busy.append(f"load average {self.load_start:.1f} at the start")
        if busy:
            lines.append(f"- ⚠ busy machine ({'; '.join(busy)}, on {self.cores} cores): other "
                         f"processes competed for the cores, so times are inflated and "
                         f"multi-threaded peers (torch's OpenMP barriers) can slow down by "
                         f"orders of magnitude: do not read targets or ratios off this run")
        if self.gemm:
            samples = ", ".join(f"{g['gflops']:.1f}" for g in self.gemm)
            lines.append(f"- float32 GEMM ceiling: {self.ceiling:.1f} GFLOP/s "
                         f"(np.matmul {self.gemm[0]['n']}x{self.gemm[0]['n']}, median per "
                         f"measurement at start and end: {samples})")
        s = self.settings
        lines.append(f"- timing: medians of up to {s.repeat} round-robin samples per backend "
                     f"(at least {s.min_samples}, {s.max_seconds:g} s budget per backend and row, "
                     f"samples of at least {s.min_sample_time * 1e3:g} ms, "
                     f"{s.settle * 1e3:g} ms idle before a sample of another backend); float32; "
                     f"run took {self.seconds:.0f} s")
        missing = [f"{b} ({self.status[b]['reason']})" for b in self.status
                   if not self.status[b]["available"]]
        if missing:
            lines.append("- not available: " + "; ".join(missing))
        lines += ["", *self._table(), "", *self._legend()]
        return "\n".join(lines) + "\n"

    def _columns(self):
        head = ["cell", "measure", "shape"] + list(self.backends)
        head += [f"{PEER}/{b}" for b in self.compared]
        head += [f"GFLOP/s {b} (% GEMM)" for b in self.compared + ([PEER] if PEER in self.backends else [])]
        head += [self._target_name]
        if self._judges_cython:
            head.append("target (cython)")
        return head + ["notes"]

    @property
    def _judges_cython(self):
        """Whether the table gets a column of the cython backend's own targets (issue 4)."""
        return "cython" in self.backends and "numba" in self.backends and self.auto != "cython"

    def _table(self):
        head = self._columns()
        rows = [self._timing_row(c, t) for c, t in self.timings]
        rows += [self._memory_row(c, m) for c, m in self.memory]
        for case, results in self.first_calls:
            rows += self._first_call_rows(case, results)
        for cache in ("cold", "warm"):
            if self.warmups:
                rows.append(self._warmup_row(cache))
        out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        for row in rows:
            assert len(row) == len(head), (row, head)
            out.append("| " + " | ".join(str(v).replace("|", "/") for v in row) + " |")
        return out

    def _blank_row(self, cell, measure, shape):
        return [cell, measure, shape] + ["—"] * (len(self._columns()) - 3)

    def _index(self, column):
        return self._columns().index(column)

    @property
    def _target_name(self):
        """The column of the targets of the backend ``backend="auto"`` picks."""
        return f"target ({self.auto})" if self.auto else "target"

    def _target_column(self):
        return self._index(self._target_name)

    def _timing_row(self, case, timings):
        row = self._blank_row(case.cell, case.pass_ + (" step" if case.shape.step else ""),
                              case.shape.label)
        notes = []
        for b in self.backends:
            t = timings.get(b)
            row[self._index(b)] = _time(t.median) if hasattr(t, "median") else "n/a"
            if isinstance(t, str):
                notes.append(f"{b}: {t}")
            elif t is not None and t.spread > NOISY_SPREAD:
                notes.append(f"{b} noisy (spread {t.spread:.0%} over {len(t.samples)} samples)")
        peer = timings.get(PEER)
        flops = gemm_flops(case)
        for b in self.compared:
            t = timings.get(b)
            ok = hasattr(t, "median") and hasattr(peer, "median")
            row[self._index(f"{PEER}/{b}")] = f"{peer.median / t.median:.2f}x" if ok else "n/a"
        for b in self.compared + ([PEER] if PEER in self.backends else []):
            t = timings.get(b)
            cell = "n/a"
            if hasattr(t, "median"):
                gflops = flops / t.median / 1e9
                cell = f"{gflops:.1f}"
                if self.ceiling:
                    cell += f" ({gflops / self.ceiling:.0%})"
            row[self._index(f"GFLOP/s {b} (% GEMM)")] = cell
        row[self._target_column()] = self._target(case, timings)
        if self._judges_cython:
            row[self._index("target (cython)")] = self._cython_target(case, timings)
        row[-1] = "; ".join(notes) or ""
        return row

    def _cython_target(self, case, timings):
        goal = cython_target(case)
        if goal is None:
            return ""
        kind, value = goal
        t = timings.get("cython")
        if kind == "seconds":
            return _judge_seconds(t, value)
        want = f"≤{value:g}x numba's time"
        numba = timings.get("numba")
        if not (hasattr(t, "median") and hasattr(numba, "median")):
            return f"{want}: n/a"
        ratio = t.median / numba.median
        return f"{want}: {'met' if ratio <= value else 'missed'} ({ratio:.2f}x)"

    def _target(self, case, timings):
        goal = target(case)
        if goal is None:
            return ""
        kind, value = goal
        t = timings.get(self.auto) if self.auto else None
        if kind == "seconds":
            return _judge_seconds(t, value)
        want = f"≥{value:g}x vs {PEER}"
        if not hasattr(t, "median"):
            return f"{want}: n/a"
        peer = timings.get(PEER)
        if not hasattr(peer, "median"):
            return f"{want}: n/a (no {PEER})"
        ratio = peer.median / t.median
        if ratio >= value:
            return f"{want}: met ({ratio:.2f}x)"
        return f"{want}: missed ({ratio:.2f}x, needs {value / ratio:.2f}x faster)"

    def _memory_row(self, case, results):
        theory = theoretical_memory(case.cell, case.shape)
        row = self._blank_row(case.cell, "peak memory, train", case.shape.label)
        notes = [f"theory {_mib(theory['total'])} = store {_mib(theory['store'])} + weights "
                 f"{_mib(theory['weights'])} + outputs {_mib(theory['outputs'])}"]
        over, methods = [], set()
        for b in self.backends:
            r = results.get(b) or {}
            if r.get("rss_peak") is None:
                row[self._index(b)] = "n/a"
                notes.append(f"{b}: {r.get('error') or r.get('method', 'not measured')}")
                continue
            ratio = r["rss_peak"] / theory["total"]
            row[self._index(b)] = f"{_mib(r['rss_peak'])} ({ratio:.2f}x)"
            methods.add(r["method"])
            if b != PEER and r.get("traced_peak"):
                notes.append(f"{b} tracemalloc {_mib(r['traced_peak'])}")
            if ratio > MEMORY_FLAG_RATIO and b != PEER:
                over.append(b)
        for b in self.compared:
            mine, peer = results.get(b) or {}, results.get(PEER) or {}
            ok = mine.get("rss_peak") and peer.get("rss_peak")
            row[self._index(f"{PEER}/{b}")] = f"{peer['rss_peak'] / mine['rss_peak']:.2f}x" if ok else "n/a"
        if over:
            notes.insert(0, f"⚠ over {MEMORY_FLAG_RATIO:g}x theory: {', '.join(over)}")
        if methods:
            notes.append("peak RSS by " + ", ".join(sorted(methods)))
        row[self._target_column()] = f"≤{MEMORY_FLAG_RATIO:g}x theory"
        row[-1] = "; ".join(notes)
        return row

    def _first_call_rows(self, case, results):
        rows = []
        for cache in ("cold", "warm"):
            row = self._blank_row(case.cell, f"first call, {cache} cache", case.shape.label)
            notes = []
            for b in self.backends:
                r = (results.get(b) or {}).get(cache) or {}
                if "total" not in r:
                    row[self._index(b)] = "n/a"
                    notes.append(f"{b}: {r.get('error', 'not measured')}")
                    continue
                row[self._index(b)] = _time(r["total"])
                if b in self.compared or b == self.auto:
                    notes.append(f"{b}: import {_time(r['import'])} + load {_time(r['load'])} + "
                                 f"first call {_time(r['first'])}; next call {_time(r['second'])}")
                if b in JIT_BACKENDS:
                    notes.append(_cache_note(b, cache, results[b]))
            row[-1] = "; ".join(notes)
            rows.append(row)
        return rows

    def _warmup_row(self, cache):
        row = self._blank_row("all", f"warmup(), {cache} cache", "—")
        notes = []
        for b, res in self.warmups.items():
            r = res.get(cache) or {}
            if "total" not in r:
                row[self._index(b)] = "n/a"
                notes.append(f"{b}: {r.get('error', 'not measured')}")
                continue
            row[self._index(b)] = _time(r["total"])
            notes.append(f"{b}: {r['function']} {_time(r['warmup'])} after import "
                         f"{_time(r['import'])} + load {_time(r['load'])}")
            notes.append(_cache_note(b, cache, res))
        row[-1] = "; ".join(notes)
        return row

    def _legend(self):
        return [
            "Times are medians per call (per step for the `step` rows, one call from Python). "
            "`infer`: forward in eval mode; `train`: forward in train mode + backward. "
            f"`{PEER}/X` > 1 means X is faster (for memory rows: uses less). "
            "GFLOP/s counts the GEMMs: forward 2·T·B·G·H·(I+H) (G gates), backward 2x the forward. "
            "Every backend was checked against the numpy reference on the same weights and "
            "inputs before it was timed. "
            f"`target (cython)`: the cython backend's own bounds (its time at most "
            f"{CYTHON_VS_NUMBA:g}x numba's on every sequence row, 2 µs for the LSTMCell step).",
            "",
            "Peak memory: resident-set peak of forward+backward in a fresh process above what "
            "existed before the call (weights, inputs, output gradient), kernels compiled "
            "beforehand at 2 steps. Theory: the training store "
            "(per layer and direction T·B·(4H gates + H cell states + H outputs) for LSTM, "
            "T·B·(3H gates + H for W_hn·h + H outputs) for GRU, T·B·(H activations + H outputs) "
            f"for RNN) + one copy of the weights (their gradients) + outputs (y and dx); "
            f"flagged ⚠ over {MEMORY_FLAG_RATIO:g}x. "
            "First call: fresh process, `import fastrnn` + loading the backend + building the "
            "layer and its first forward+backward, with a new empty compile cache (cold) and "
            "then with the cache the cold run filled (warm).",
        ]


def _judge_seconds(timing, bound):
    """A target cell for a time bound: ``≤bound: met``, ``missed, Nx over`` or ``n/a``."""
    want = f"≤{_time(bound)}"
    if not hasattr(timing, "median"):
        return f"{want}: n/a"
    if timing.median <= bound:
        return f"{want}: met"
    return f"{want}: missed, {timing.median / bound:.1f}x over"


def _cache_note(backend, cache, result):
    """What the compile cache did in a cold or warm first-call probe of a jit backend."""
    cold, warm = result.get("cache_files", 0), result.get("cache_files_warm", 0)
    if cache == "cold":
        if not cold:
            return (f"{backend}: ⚠ nothing written to the fresh cache dir: the cache ignored the "
                    f"redirection (cold run may have been warm) or is off")
        return f"{backend}: {cold} files written to the fresh cache dir"
    if warm > cold:
        return (f"{backend}: ⚠ the warm run added {warm - cold} cache files: it missed the cache "
                f"and compiled again (kernel sources edited between the runs?)")
    return f"{backend}: no new cache files (all loaded from the cache)"


def _time(seconds):
    """Seconds as text with a unit: µs, ms or s, three significant digits."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3g} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def _mib(nbytes):
    return f"{nbytes / 2 ** 20:.1f} MiB"


def _time_case(case, backends, checker, settings, log):
    """Check, warm up and time one case on every backend; backend -> Timing or reason."""
    out, fns, estimates = {}, {}, {}
    for b in backends:
        try:
            if b == REFERENCE:
                start = time.perf_counter()
                checker.reference(case)
                estimates[b] = time.perf_counter() - start
                fns[b] = Workload(case, b)
            else:
                w = Workload(case, b)
                err = checker.check(case, b, workload=w)  # also the first (compiling) call
                estimates[b] = estimate_call_time(w, settings.max_seconds)
                fns[b] = w
                if log:
                    log(f"  {b}: checked, max scaled error {err:.2g}")
        except CheckError as exc:
            out[b] = f"CHECK FAILED, not timed: {exc}"
        except Exception as exc:  # a backend that crashes must not stop the report
            out[b] = f"error, not timed: {type(exc).__name__}: {exc}"
    out.update(time_interleaved(fns, settings.repeat, estimates=estimates,
                                min_samples=settings.min_samples, max_seconds=settings.max_seconds,
                                min_sample_time=settings.min_sample_time,
                                settle=settings.settle))
    return {b: out[b] for b in backends}


def _gemm(settings):
    return gemm_throughput(settings.gemm_n, settings.gemm_repeat,
                           min_sample_time=settings.gemm_sample_time)


def _warmup_backends(backends):
    """The fastrnn backends among ``backends`` whose module offers ``warmup()``."""
    out = []
    for b in backends:
        if b in (PEER, REFERENCE) or b not in MODULES:
            continue
        try:
            module = importlib.import_module(MODULES[b])
        except Exception:
            continue
        if callable(getattr(module, "warmup", None)):
            out.append(b)
    return out


def run_report(cells=CELLS, shapes=(*SEQUENCE_SHAPES, "step"), passes=PASSES, backends=None,
               settings=None, memory_shape="large", memory=True, first_call=True,
               first_call_shape=None, torch_threads=None, timeout=probes.DEFAULT_TIMEOUT,
               log=None):
    """Measure everything the report shows.

    Parameters
    ----------
    cells : sequence of str
    shapes : sequence of str or Shape
        Names of :data:`fastrnn.bench.cases.SHAPES` (``"step"`` selects the
        cell-step rows), ``"TxBxIxH"`` strings, or Shape objects.
    passes : sequence of str
    backends : sequence of str, optional
        Default: every available backend of :data:`fastrnn.bench.cases.BACKENDS`.
    settings : Settings, optional
    memory_shape : str or Shape or None
        Shape of the peak-memory rows (train pass); None skips them.
    memory, first_call : bool
        Whether to run the fresh-process probes.
    first_call_shape : str or Shape, optional
        Shape of the first-call rows; default: the smallest selected sequence shape.
    torch_threads : int, optional
        Threads of the torch peer; default: the usable cores.
    timeout : float
        Seconds per fresh-process probe.
    log : callable, optional
        Receives progress lines.

    Returns
    -------
    Report
    """
    begin = time.perf_counter()
    settings = settings or Settings()
    say = log or (lambda msg: None)
    status = backend_status(peer=backends is None or PEER in backends)
    if backends is None:
        backends = [b for b in status if status[b]["available"]]
    else:
        unknown = [b for b in backends if b not in status]
        if unknown:
            raise ValueError(f"unknown backends {unknown}: choose from {list(status)}")
        backends = [b for b in status if b in backends and status[b]["available"]]
    torch_threads = torch_threads or usable_cores()
    previous_threads = None
    if PEER in backends:
        import torch
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(torch_threads)
    try:
        report = Report(backends=backends, status=status,
                        machine=describe(torch_threads if PEER in backends else None),
                        settings=settings, torch_threads=torch_threads,
                        load_start=load_average(), cores=usable_cores())
        counters, measured_from = cpu_counters(), time.perf_counter()
        shape_objs = [s if not isinstance(s, str) else parse_shape(s) for s in shapes]
        _measure(report, cells, shape_objs, passes, memory_shape if memory else None,
                 first_call_shape, first_call, timeout, say)
    finally:
        if previous_threads is not None:
            torch.set_num_threads(previous_threads)  # leave the caller's torch as it was
    report.seconds = time.perf_counter() - begin
    report.load_end = load_average()
    report.others = others_cpu(counters, cpu_counters(), time.perf_counter() - measured_from)
    return report


def _measure(report, cells, shapes, passes, memory_shape, first_call_shape, first_call, timeout,
             say):
    """Fill ``report``: GEMM ceiling, timed cases, memory and first-call probes, ceiling again."""
    settings, backends, threads = report.settings, report.backends, report.torch_threads
    say(f"GEMM ceiling ({settings.gemm_n}x{settings.gemm_n} float32 np.matmul) ...")
    report.gemm.append(_gemm(settings))
    say(f"  {report.gemm[-1]['gflops']:.1f} GFLOP/s")
    checker = Checker()
    cases = make_cases(cells, shapes, passes)
    for i, case in enumerate(cases, 1):
        say(f"[{i}/{len(cases)}] {case.group} ({case.shape.label}) on {', '.join(backends)}")
        timings = _time_case(case, backends, checker, settings, say)
        report.timings.append((case, timings))
        say("  " + ", ".join(f"{b} {_time(t.median)}" if hasattr(t, "median") else f"{b} {t}"
                             for b, t in timings.items()))
    if memory_shape is not None:
        mshape = parse_shape(memory_shape) if isinstance(memory_shape, str) else memory_shape
        for cell in cells:
            case = Case(cell, mshape, "train")
            say(f"peak memory: {case.group} in fresh processes ...")
            res = {b: probes.measure_memory(case, b, threads, timeout) for b in backends}
            report.memory.append((case, res))
    seq_shapes = [s for s in shapes if not s.step]
    if first_call and (seq_shapes or first_call_shape is not None):
        if first_call_shape is None:
            fshape = min(seq_shapes, key=lambda s: gemm_flops(Case("lstm", s, "train")))
        elif isinstance(first_call_shape, str):
            fshape = parse_shape(first_call_shape)
        else:
            fshape = first_call_shape
        for cell in cells:
            case = Case(cell, fshape, "train")
            say(f"first call: {case.group} in fresh processes, cold and warm cache ...")
            res = {b: probes.measure_first_call(case, b, threads, timeout) for b in backends}
            report.first_calls.append((case, res))
        for b in _warmup_backends(backends):
            say(f"warmup(): {b} in fresh processes, cold and warm cache ...")
            report.warmups[b] = probes.measure_first_call(Case(cells[0], fshape, "train"), b,
                                                          threads, timeout, warmup=True)
    say("GEMM ceiling again ...")
    report.gemm.append(_gemm(settings))


def _csv(value, allowed=None, what="value"):
    items = [v.strip() for v in value.split(",") if v.strip()]
    if allowed is not None:
        bad = [v for v in items if v not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {what} {bad}: choose from {list(allowed)}")
    if not items:
        raise argparse.ArgumentTypeError(f"no {what} given")
    return items


def build_parser(prog="python -m fastrnn.bench"):
    """The command-line interface of the report (reusable by a ``fastrnn bench`` command)."""
    p = argparse.ArgumentParser(
        prog=prog, description="Time fastrnn's backends against PyTorch and print one markdown table.")
    p.add_argument("--cells", type=lambda v: _csv(v, CELLS, "cells"), default=list(CELLS),
                   help=f"comma-separated cell types (default: {','.join(CELLS)})")
    p.add_argument("--shapes", type=lambda v: _csv(v, None, "shapes"), default=None,
                   help=f"comma-separated shapes: names ({','.join(SHAPES)}; 'step' = the "
                        f"cell-step rows) or TxBxIxH (default: all; with --quick: stream,small,step)")
    p.add_argument("--passes", type=lambda v: _csv(v, PASSES, "passes"), default=list(PASSES),
                   help="comma-separated passes: infer (forward, eval mode), train "
                        "(forward + backward) (default: both)")
    p.add_argument("--backends", type=lambda v: _csv(v, None, "backends"), default=None,
                   help="comma-separated backends (default: every available one, torch included)")
    p.add_argument("--repeat", type=int, default=None,
                   help="samples per backend and row (default 7, with --quick 3)")
    p.add_argument("--quick", action="store_true",
                   help="fewer and shorter samples, small shapes by default, memory at the "
                        "largest selected shape")
    p.add_argument("--memory-shape", default=None,
                   help="shape of the peak-memory rows (default: large; with --quick the "
                        "largest selected sequence shape)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    p.add_argument("--no-first-call", action="store_true",
                   help="skip the first-call (compile time) probes")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="threads of the torch peer (default: the usable cores)")
    p.add_argument("--gemm-size", type=int, default=2048, metavar="N",
                   help="the GEMM ceiling multiplies two N x N float32 matrices (default 2048)")
    p.add_argument("--timeout", type=float, default=probes.DEFAULT_TIMEOUT,
                   help="seconds allowed per fresh-process probe")
    p.add_argument("--markdown", metavar="FILE", default=None,
                   help="also write the report to FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    return p


def main(argv=None, prog="python -m fastrnn.bench"):
    """Run the report from the command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).
    prog : str
        Program name for the help text.

    Returns
    -------
    int
        Exit status: 0, or 1 when a backend failed its check (the table is
        printed either way).
    """
    args = build_parser(prog).parse_args(argv)
    try:
        shapes = [parse_shape(s) for s in (args.shapes or (
            ["stream", "small", "step"] if args.quick else [*SEQUENCE_SHAPES, "step"]))]
        memory_shape = args.memory_shape
        if memory_shape is None:
            seq = [s for s in shapes if not s.step]
            memory_shape = (max(seq, key=lambda s: s.T * s.B * (s.I + s.H)) if seq else None) \
                if args.quick else "large"
        if isinstance(memory_shape, str):
            memory_shape = parse_shape(memory_shape)
    except ValueError as exc:
        build_parser(prog).error(str(exc))
    if args.repeat is not None and args.repeat < 1:
        build_parser(prog).error("--repeat must be at least 1")
    if args.gemm_size < 1:
        build_parser(prog).error("--gemm-size must be at least 1")
    if args.quick:
        settings = Settings.quick(args.repeat, args.gemm_size)
    else:
        settings = Settings(repeat=args.repeat or Settings.repeat, gemm_n=args.gemm_size)
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        report = run_report(cells=args.cells, shapes=shapes, passes=args.passes,
                            backends=args.backends, settings=settings, memory_shape=memory_shape,
                            memory=not args.no_memory, first_call=not args.no_first_call,
                            torch_threads=args.torch_threads, timeout=args.timeout, log=log)
    except ValueError as exc:
        build_parser(prog).error(str(exc))
    text = report.markdown()
    sys.stdout.write(text)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(text)
    failed = any(isinstance(t, str) and t.startswith("CHECK FAILED")
                 for _, ts in report.timings for t in ts.values())
    return 1 if failed else 0
