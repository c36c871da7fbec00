"""The benchmark report: ``python -m bench`` from a checkout (``--help`` for the options).

Every engine (:data:`bench.engines.ENGINES`: fastrnn's backends, PyTorch,
onnxruntime, JAX) is timed on every row it supports (:mod:`bench.cases`) in
a fresh process of its own (:mod:`bench.worker`); this process only starts
them and reads their results.  A row is measured in rounds whose order
alternates (A B C, then C B A, ...), so a drift of the machine's speed hits
every engine alike; an engine's time is the median over its processes of
each process's median sample.  Ratios are ``peer time / fastrnn time`` (above
1 means fastrnn is faster), with fastrnn's fastest compiled backend on the
row, against each peer and against the best (fastest) peer.

The report also names the CPU and its instruction sets, the BLAS libraries
and thread counts, the cython build in use, the measured float32 GEMM ceiling
(``np.matmul`` in a process of its own, at the start and at the end), the
float32 multiply-add peak of all the threads at once (the physical floor: no
product runs faster; the cython build's ``multiply_add_peak``, likewise) and,
for the step rows, one thread's read bandwidth at the size of its share of
the weights (the step rows' floor: weights over bandwidth), the
peak memory of one call at the large shape per engine, the cost of a
fresh process (imports, first call), and numba's time over cython's.

It checks the kernel issue's targets on the rows it ran (:meth:`Report.targets`) and
profiles each row that misses one (or every row, ``--profile all``): the cython engine's
calls on its kernels' phase clock, in a process of its own, their time split into
products, packing, element-wise work and waits, idle threads, the driver and what lies
outside the kernels.
"""

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field, replace

from . import cases, scaleout
from .engines import ENGINES, FASTRNN, PEERS, REFERENCE, availability
from .machine import cpu_counters, describe, others_cpu, usable_cores
from .worker import run_module

#: the report's tables: (kind of row, title)
SECTIONS = (("kernel", "Layers on whole sequences (time per call)"),
            ("step", "One cell step from Python, B=1 and B=8 (time per call)"),
            ("loop", "The README's training loop (characters/s)"),
            ("stream", "Streaming inference, B=1, 10,000 steps (steps/s)"),
            ("ragged", "Batch inference of ragged sequences (sequences/s)"),
            ("variant", "Cell variants PyTorch lacks, on whole sequences (time per call; "
                        "onnxruntime runs them forward only)"))
#: the kernel issue's targets, each checked on the rows it names (see Report.targets)
TARGET_BEST_PEER = 1.0      # every layer row: best peer / fastrnn
TARGET_TRAIN_TORCH = 1.2    # every layer row's training: torch / fastrnn
TARGET_CEILING = 0.75       # the large layer rows: fastrnn's share of the GEMM ceiling
TARGET_LOOP_TORCH = 1.3     # the README's loop: torch / fastrnn (characters/s)
TARGET_STEP = 5e-6          # LSTMCell(128, 128) at B=1, where a core's L2 holds its weights
#: which rows a run profiles (Settings.profile)
PROFILES = ("missed", "all", "none")
#: an engine's process medians spreading over more than this fraction of their median are
#: flagged as noisy
NOISY_SPREAD = 0.25
#: other processes using more than this many cores on average make the run untrustworthy
BUSY_OTHERS = 0.25
#: glibc: a fixed mmap threshold, so freed large arrays go back to the OS and the
#: resident set tracks the live arrays (memory rows only)
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
#: a peer's process: every worker loads the reference weights through fastrnn, whose import
#: sets glibc's allocator thresholds and puts NumPy's BLAS on fastrnn's threads
#: (fastrnn._runtime); a peer's user has glibc's own allocator and NumPy's own BLAS threads
PEER_ENV = {"FASTRNN_MALLOC": "0", "FASTRNN_BLAS_POOL": "0"}


@dataclass(frozen=True)
class Settings:
    """How hard the report measures.

    Attributes
    ----------
    rounds : int
        Processes per engine and row (the order alternates every round).
    profile : str
        The rows whose cython calls are profiled on the kernels' phase clock, each in a
        process of its own: ``"missed"`` (those that miss a target), ``"all"`` or ``"none"``.
    profile_budget : float
        Seconds of calls a profile times (and as many without the clock).
    extra_rounds : int
        Rounds more for a row where an engine's processes spread over
        :data:`NOISY_SPREAD` (all of the row's engines, the order still alternating):
        a shared host's bursts of slowness then weigh less in the medians.
    samples : int
        Timed samples per process (its median is the process's figure).
    budget : float
        Seconds of timed calls per process, once it has 3 samples.
    min_sample_time : float
        A sample repeats the call until it lasts this long.
    gemm_n, gemm_samples : int
        Size and samples of the ``np.matmul`` that measures the GEMM ceiling.
    timeout : float
        Seconds a process may take before it is reported as timed out.
    """

    rounds: int = 3
    extra_rounds: int = 2
    samples: int = 5
    budget: float = 2.0
    min_sample_time: float = 0.1
    gemm_n: int = 2048
    gemm_samples: int = 5
    timeout: float = 600.0
    profile: str = "missed"
    profile_budget: float = 2.0

    def __post_init__(self):
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {list(PROFILES)}, but got {self.profile!r}")

    @classmethod
    def quick(cls):
        """Fewer, shorter samples: minutes instead of the better part of an hour."""
        return cls(rounds=2, extra_rounds=0, samples=3, budget=0.5, min_sample_time=0.03,
                   gemm_n=1024, gemm_samples=3, profile_budget=0.5)


@dataclass
class Measurement:
    """An engine's processes on one row.

    Attributes
    ----------
    runs : list of dict
        What each process returned (:func:`bench.worker.main`).
    """

    runs: list = field(default_factory=list)

    @property
    def error(self):
        for r in self.runs:
            if r.get("error"):
                return r["error"]
        return None

    @property
    def medians(self):
        """Seconds per call, one per process."""
        return [statistics.median(r["samples"]) for r in self.runs if r.get("samples")]

    @property
    def seconds(self):
        """Median over processes of each process's median seconds per call (None on error)."""
        m = self.medians
        return statistics.median(m) if m and not self.error else None

    @property
    def spread(self):
        """(max - min) / median of the process medians."""
        m = self.medians
        return (max(m) - min(m)) / statistics.median(m) if len(m) > 1 else 0.0

    @property
    def noisy(self):
        """Whether the process medians spread over :data:`NOISY_SPREAD`."""
        return self.spread > NOISY_SPREAD

    @property
    def check_error(self):
        errs = [r["check_error"] for r in self.runs if "check_error" in r]
        return max(errs) if errs else None


@dataclass
class Report:
    """Everything one run measured; :meth:`markdown` formats it."""

    engines: list
    unavailable: dict
    machine: list
    settings: Settings
    threads: int
    rows: list = field(default_factory=list)       # (Row, {engine: Measurement})
    memory: list = field(default_factory=list)     # (Row, {engine: dict})
    gemm: list = field(default_factory=list)
    peak: list = field(default_factory=list)        # multiply_add_peak at the start and the end
    bandwidth: list = field(default_factory=list)   # read_bandwidth at the start and the end
    scaleout: list = field(default_factory=list)   # (Row, scaleout.measure(row)) of dask rows
    scaleout_missing: str = ""                    # why the dask rows were not run
    seconds: float = 0.0
    others: object = None
    cores: int = 1
    l2: int = 0                                   # bytes of a core's L2 cache (0: unknown)
    profiles: dict = field(default_factory=dict)  # row id -> the cython engine's profile
    checked: bool = True                          # every engine checked against the reference

    @property
    def ceiling(self):
        """GFLOP/s of the GEMM ceiling: the better of the start and end measurements."""
        return max((g["gflops"] for g in self.gemm if "gflops" in g), default=None)

    @property
    def peak_rate(self):
        """GFLOP/s of the multiply-add peak: the better of the start and end measurements."""
        return max((p["gflops"] for p in self.peak if "gflops" in p), default=None)

    def read_rate(self, nbytes):
        """GB/s at which one thread read weights of ``nbytes`` (the better of the start and
        end measurements), or None."""
        return max((b["gbps"][str(nbytes)] for b in self.bandwidth
                    if str(nbytes) in b.get("gbps", {})), default=None)

    def core_bytes(self, row):
        """Bytes of a step row's weights each of the run's threads holds (its share), or
        None for another row."""
        w = row.weight_bytes()
        return None if w is None else -(-w // max(1, self.threads))

    def weights_floor(self, row):
        """Seconds a step row's weight traffic takes at the measured read bandwidth, each
        thread reading its share at the rate one thread read it alone, or None."""
        if row.weight_traffic() is None:
            return None
        rate = self.read_rate(self.core_bytes(row))
        if not rate:
            return None
        return row.weight_traffic() / max(1, self.threads) / (rate * 1e9)

    # -- per-row figures -------------------------------------------------------------------
    @staticmethod
    def best(measured, names):
        """(name, seconds) of the fastest of ``names`` with a time on the row, or (None, None)."""
        timed = [(m.seconds, n) for n, m in measured.items() if n in names and m.seconds]
        if not timed:
            return None, None
        seconds, name = min(timed)
        return name, seconds

    def fastrnn_best(self, measured):
        """fastrnn's fastest compiled backend on the row (the reference when none ran)."""
        compiled = [n for n in FASTRNN if n != REFERENCE]
        name, seconds = self.best(measured, compiled)
        return (name, seconds) if name else self.best(measured, (REFERENCE,))

    # -- the targets -------------------------------------------------------------------------
    def targets(self):
        """The kernel issue's targets, checked on this run's rows.

        Returns
        -------
        list of (str, list)
            Per target, what it asks and its rows as ``(row, figure, met)``: ``figure`` the
            text of what was measured, ``met`` True, False, or None where the target does not
            apply on this machine (the step target on a CPU whose L2 cannot hold the
            weights) or the row has no figure.
        """
        out = []
        layers = [(r, m) for r, m in self.rows if r.kind == "kernel"]

        def noise(measured, *names):
            """The figure's engines whose processes spread over NOISY_SPREAD, as a suffix."""
            noisy = [f"{n} {measured[n].spread:.0%}" for n in names
                     if n in measured and measured[n].noisy]
            return f" (noisy: {', '.join(noisy)})" if noisy else ""

        def ratio_target(text, rows, peers, goal, floor=False):
            """``floor``: a layer's miss also says what share of the multiply-add peak its
            products would run at, at the goal (a target above the physical floor shows)."""
            checked = []
            for row, measured in rows:
                name, mine = self.fastrnn_best(measured)
                peer, theirs = self.best(measured, peers)
                failed = [n for n in peers if n in measured and measured[n].error]
                if failed:      # a failed peer may have been the best: the row is not judged
                    checked.append((row, "— (" + ", ".join(f"{n}: error" for n in failed) + ")",
                                    None))
                elif mine and theirs:
                    figure = f"{theirs / mine:.2f}x"
                    need = self.gflops(row, theirs / goal) if floor else None
                    if theirs / mine < goal and need and self.peak_rate:
                        figure += f" ({goal:.1f}x: {need / self.peak_rate:.0%} of the peak)"
                    checked.append((row, figure + noise(measured, name, peer),
                                    theirs / mine >= goal))
                else:
                    checked.append((row, "—", None))
            if checked:
                out.append((text, checked))

        ratio_target(f"every layer (LSTM, GRU, RNN; stream to large; inference and training): "
                     f"at least {TARGET_BEST_PEER:.1f}x the best peer",
                     layers, PEERS, TARGET_BEST_PEER, floor=True)
        ratio_target(f"training: at least {TARGET_TRAIN_TORCH:.1f}x PyTorch",
                     [(r, m) for r, m in layers if r.pass_ == "train"], ("torch",),
                     TARGET_TRAIN_TORCH, floor=True)
        checked = []
        for row, measured in layers:
            if row.shape.name != "large":
                continue
            name, mine = self.fastrnn_best(measured)
            if mine and self.ceiling:
                share = self.gflops(row, mine) / self.ceiling
                checked.append((row, f"{share:.0%}" + noise(measured, name),
                                share >= TARGET_CEILING))
            else:
                checked.append((row, "—", None))
        if checked:
            out.append((f"the large layers, inference and training: at least "
                        f"{TARGET_CEILING:.0%} of the GEMM ceiling", checked))
        ratio_target(f"the README's training loop: at least {TARGET_LOOP_TORCH:.1f}x PyTorch's "
                     f"characters/s", [(r, m) for r, m in self.rows if r.kind == "loop"],
                     ("torch",), TARGET_LOOP_TORCH)
        checked = []
        for row, measured in self.rows:
            if row.kind != "step" or row.cell != "lstm" or row.pass_ != "infer" or row.variant:
                continue
            name, mine = self.fastrnn_best(measured)
            held = row.weight_bytes() + row.bias_bytes()
            figure = _time(mine) + noise(measured, name) if mine else "—"
            if not self.l2:
                checked.append((row, figure + " (a core's L2 unknown)", None))
            elif held > self.l2:
                checked.append((row, f"{figure} (does not apply: {held / 1024:g} KiB of weights "
                                     f"and biases, a core's L2 {self.l2 >> 10} KiB)", None))
            else:
                checked.append((row, figure, mine <= TARGET_STEP if mine else None))
        if checked:
            out.append((f"LSTMCell(128, 128) step at B=1, from Python: at most "
                        f"{TARGET_STEP * 1e6:g} µs where a core's L2 holds its weights",
                        checked))
        return out

    def missed_rows(self):
        """The rows of this run that miss a target, in the report's order."""
        missed = {row.id for _, checked in self.targets() for row, _, met in checked
                  if met is False}
        return [row for row, _ in self.rows if row.id in missed]

    # -- formatting --------------------------------------------------------------------------
    def markdown(self):
        lines = ["## fastrnn benchmark", ""]
        lines += [f"- {label}: {value}" for label, value in self.machine]
        if self.gemm:
            got = [g for g in self.gemm if "gflops" in g]
            if got:
                lines.append(f"- float32 GEMM ceiling: {self.ceiling:.1f} GFLOP/s (np.matmul "
                             f"{got[0]['n']}x{got[0]['n']} in a process of its own, at the "
                             f"start and the end: {', '.join('%.1f' % g['gflops'] for g in got)})")
            for g in self.gemm:
                if "error" in g:
                    lines.append(f"- GEMM ceiling not measured: {g['error']}")
        got = [p for p in self.peak if "gflops" in p]
        if got:
            lines.append(f"- float32 multiply-add peak: {self.peak_rate:.1f} GFLOP/s "
                         f"({got[0]['isa']} vectors on {self.threads} threads at once, sums in "
                         f"registers: the rate no product can beat; in a process of its own, at "
                         f"the start and the end: {', '.join('%.1f' % p['gflops'] for p in got)})")
        for p in self.peak:
            if "error" in p:
                lines.append(f"- multiply-add peak not measured: {p['error']}")
        got = [b["gbps"] for b in self.bandwidth if "gbps" in b]
        if got:
            sizes = sorted({int(n) for b in got for n in b})
            rates = ["%g KiB: %s GB/s" % (n / 1024, ", ".join("%.1f" % b[str(n)] for b in got
                                                               if str(n) in b)) for n in sizes]
            lines.append("- read bandwidth of one thread (the best of BLAS's dot and "
                         "matrix-vector products and NumPy's maximum over float32 data, BLAS on "
                         "one thread, less a call's fixed cost; in a process of its own, at the "
                         "start and the end): " + "; ".join(rates))
        for b in self.bandwidth:
            if "error" in b:
                lines.append(f"- read bandwidth not measured: {b['error']}")
        if self.others is not None:
            lines.append(f"- other processes (and the hypervisor's steal time) used "
                         f"{self.others:.2f} of the {self.cores} cores on average during the run")
            if self.others > BUSY_OTHERS:
                lines.append("- ⚠ busy machine: other processes competed for the cores; do not "
                             "read ratios off this run")
        s = self.settings
        lines.append(f"- method: every engine in a fresh process of its own per row and round, "
                     f"{s.rounds} rounds in alternating order ({s.rounds + s.extra_rounds} "
                     f"for a row where an engine's processes spread over "
                     f"{NOISY_SPREAD:.0%}), {self.threads} threads each; a "
                     f"process's figure is the median of {s.samples} samples (at least 3, "
                     f"{s.budget:g} s budget, samples of at least {s.min_sample_time * 1e3:g} ms), "
                     f"an engine's the median over its processes; float32; run took "
                     f"{self.seconds / 60:.1f} min")
        for name, reason in self.unavailable.items():
            lines.append(f"- {name}: not run ({reason})")
        lines += ["", "Ratios are peer time / fastrnn time: above 1 fastrnn is faster. "
                      "fastrnn is its fastest compiled backend on the row; the best peer is "
                      "the fastest of the others.", ""]
        for kind, title in SECTIONS:
            rows = [(r, m) for r, m in self.rows if r.kind == kind]
            if rows:
                lines += [f"### {title}", "", *self._table(rows), ""]
        targets = self._targets_section()
        if targets:
            lines += ["### Targets on this CPU", "", *targets, ""]
        profiled = [(row, self.profiles[row.id]) for row, _ in self.rows
                    if row.id in self.profiles]
        if profiled:
            lines += ["### Where the time goes (the cython kernels' phase clock)", "",
                      *self._profile_table(profiled), ""]
        gap = self._numba_gap()
        if gap:
            lines += ["### numba against cython", "", *gap, ""]
        if self.scaleout or self.scaleout_missing:
            lines += ["### Scale-out on dask (fastrnn against itself in one process)", ""]
            lines += ([f"Not run: {self.scaleout_missing}", ""] if self.scaleout_missing
                      else scaleout.markdown(self.scaleout, self.threads))
        if self.memory:
            lines += ["### Peak memory of one call (fresh process)", "", *self._memory_table(), ""]
        first = self._first_call_table()
        if first:
            lines += ["### A fresh process: imports and first call", "", *first, ""]
        lines += self._legend()
        return "\n".join(lines) + "\n"

    def _targets_section(self):
        """Which targets this run met: per target its rows, those met and those missed."""
        targets = self.targets()
        if not targets:
            return []
        out = ["The kernel issue's targets on this machine's CPU (met: rows at the target; "
               "a target that does not apply here is not counted; a figure marked noisy names "
               f"the engines whose processes spread over {NOISY_SPREAD:.0%} of their median "
               "on that row: rerun it before trusting a miss; a layer that misses a ratio says "
               "in brackets the share of the multiply-add peak its products would run at, at "
               "the target: near 100%, the target is beyond this CPU).", "",
               "| target | rows | met | missed |", "|---|---|---|---|"]
        for text, checked in targets:
            judged = [c for c in checked if c[2] is not None]
            missed = [f"{row.id} {figure}" for row, figure, met in checked if met is False]
            unjudged = [f"{row.id} {figure}" for row, figure, met in checked if met is None]
            cell = ", ".join(missed) or "—"
            if unjudged:
                cell += "; not judged: " + ", ".join(unjudged)
            out.append(f"| {text} | {len(judged)} | {sum(1 for c in judged if c[2])} | "
                       f"{cell} |")
        return out

    def _profile_table(self, profiled):
        """Where the time of each profiled row's calls goes, in the cython engine (its kernels'
        phase clock, in a process of its own): shares of the threads' time (time per call by
        threads); a row that missed a target is marked."""
        missed = {row.id for row in self.missed_rows()}
        out = [
            "The cython engine's calls on its kernels' phase clock, each row in a process of its "
            "own, rows that missed a target marked (a clock read around each phase and each "
            "product; time per call as profiled, and in brackets without the clock, whose reads "
            "add to rows of short steps). Shares of the threads' time (time per call by threads): "
            "products (the micro-kernels, weight gradients and BLAS, with their rate as a share "
            "of one thread's multiply-add peak), the weights' packing, the rest of the kernels' "
            "phases (element-wise passes, loop control, waits between threads), threads idle "
            "while a phase ran on fewer, the driver around its phases, and everything outside the "
            "kernels (Python, checks, arrays; in the loop, the head, loss and optimizer). The "
            "floor: the products' FLOPs at the multiply-add peak (a step row: its weights at the "
            "read bandwidth), as a share of the time.",
            "",
            "| row | time per call | products (rate, % peak) | packing | element-wise and "
            "waits | idle threads | driver | outside the kernels | floor |",
            "|---|---|---|---|---|---|---|---|---|"]
        for row, prof in profiled:
            name = row.id + (" (missed)" if row.id in missed else "")
            if "error" in prof:
                out.append(f"| {name} | error: {prof['error']} |" + " |" * 7)
                continue
            wall, n = prof["wall"], prof["threads"]
            capacity = wall * n
            phases = sum(prof["phases"].values())
            busy = sum(prof["thread_time"].values())
            packing = prof["thread_time"]["weights packed"]
            parts = [prof["products"], packing, busy - packing - prof["products"],
                     phases * n - busy, (prof["driver"] - phases) * n,
                     (wall - prof["driver"]) * n]
            shares = [f"{max(p, 0.0) / capacity:.0%}" for p in parts]
            rate = ""
            if row.flops() and prof["products"] > 0:
                per_thread = row.flops() / prof["products"] / 1e9
                rate = (f" ({per_thread:.0f} GFLOP/s a thread, "
                        f"{per_thread / (self.peak_rate / self.threads):.0%})"
                        if self.peak_rate else f" ({per_thread:.0f} GFLOP/s a thread)")
            floor = None
            if row.kind == "step":
                floor = self.weights_floor(row)
            elif row.flops() and self.peak_rate:
                floor = row.flops() / (self.peak_rate * 1e9)
            floor_text = f"{_time(floor)} ({floor / wall:.0%})" if floor else "—"
            unclocked = prof.get("wall_unclocked")
            timing = _time(wall) + (f" ({_time(unclocked)})" if unclocked else "")
            out.append(f"| {name} | {timing} | {shares[0]}{rate} | "
                       + " | ".join(shares[1:]) + f" | {floor_text} |")
        return out

    def _numba_gap(self):
        """What the numba backend's products cost against the cython backend's tiles: numba's
        time over cython's on the rows both ran, per table (median, lowest and highest)."""
        out = []
        for kind, title in SECTIONS:
            ratios = sorted((measured["numba"].seconds / measured["cython"].seconds, row.id)
                            for row, measured in self.rows
                            if row.kind == kind and all(e in measured and measured[e].seconds
                                                        for e in ("numba", "cython")))
            if ratios:
                median = statistics.median(r for r, _ in ratios)
                (low, low_id), (high, high_id) = ratios[0], ratios[-1]
                out.append(f"| {title.split(' (')[0]} | {len(ratios)} | {median:.2f}x | "
                           f"{low:.2f}x ({low_id}) | {high:.2f}x ({high_id}) |")
        if not out:
            return []
        return [
            "The numba backend runs the cython backend's phases (weights packed once per call, "
            "the products over all T·B rows, one fused element-wise pass per step and row) but "
            "not its register-blocked tiles, which Numba cannot express: it has no vector "
            "types, a tile written as scalar sums stays scalar (Numba turns LLVM's SLP "
            "vectorizer off), and a tile's sums in a local array live in memory.  Its per-step "
            "products keep 4 rows of C in the L1 cache instead of the registers, loading and "
            "storing them every 4 steps of k (`fastrnn/jit/gemm.py`).  At the small shapes "
            "other differences add to it: the cython backend splits a small batch's hidden "
            "units over a team of threads that meet after every step, which Numba's threads "
            "(Python threads, no atomics) cannot do at that rate, and its calls cost less "
            "before the kernels start.  Numba's time over cython's on the rows both ran:",
            "",
            "| rows | count | numba / cython (median) | lowest | highest |",
            "|---|---|---|---|---|",
            *out,
        ]

    def _engines_in(self, rows):
        return [e for e in self.engines if any(e in m for _, m in rows)]

    def _table(self, rows):
        engines = self._engines_in(rows)
        peers = [e for e in engines if e in PEERS]
        kind = rows[0][0].kind
        head = ["row", "shape"] + engines + ["fastrnn", "best peer", "best peer / fastrnn"]
        head += [f"{p} / fastrnn" for p in peers]
        if kind in ("kernel", "step", "variant"):
            head += ["GFLOP/s fastrnn (% GEMM, % peak)", "GFLOP/s best peer (% GEMM, % peak)"]
        if kind == "step":
            head += ["weights floor (fastrnn, best peer at it)"]
        head += ["notes"]
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row, measured in rows:
            cells = [row.id, _shape_label(row)]
            notes = []
            for e in engines:
                m = measured.get(e)
                if m is None:
                    cells.append("—")
                elif m.seconds is None:
                    cells.append("error")
                    notes.append(f"{e}: {m.error}")
                else:
                    cells.append(_figure(row, m.seconds))
                    if m.noisy:
                        notes.append(f"{e} noisy ({m.spread:.0%} over {len(m.medians)} processes)")
            name, mine = self.fastrnn_best(measured)
            peer, theirs = self.best(measured, peers)
            cells += [name or "—", peer or "—",
                      _ratio(theirs, mine, bold=True)]
            cells += [_ratio(measured[p].seconds if p in measured else None, mine) for p in peers]
            if kind in ("kernel", "step", "variant"):
                cells += [self._gflops(row, mine), self._gflops(row, theirs)]
            if kind == "step":
                cells.append(self._floor(row, mine, theirs))
            cells.append("; ".join(notes))
            out.append("| " + " | ".join(cells) + " |")
        return out

    def _floor(self, row, mine, theirs):
        floor = self.weights_floor(row)
        if floor is None:
            return "—"
        shares = ", ".join(f"{floor / t:.0%}" if t else "—" for t in (mine, theirs))
        return f"{_time(floor)} ({shares})"

    @staticmethod
    def gflops(row, seconds):
        """GFLOP/s of the row's products at ``seconds`` a call (None without either)."""
        return row.flops() / seconds / 1e9 if seconds and row.flops() else None

    def _gflops(self, row, seconds):
        g = self.gflops(row, seconds)
        if g is None:
            return "—"
        shares = [f"{g / r:.0%}" if r else "—" for r in (self.ceiling, self.peak_rate)]
        return f"{g:.1f} ({', '.join(shares)})"

    def _memory_table(self):
        engines = [e for e in self.engines if any(e in m for _, m in self.memory)]
        head = ["row", "shape", "theory"] + engines + ["notes"]
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row, results in self.memory:
            theory = cases.theoretical_memory(row)
            cells = [row.id, _shape_label(row), _mib(theory["total"])]
            notes = []
            for e in engines:
                r = results.get(e)
                if r is None:
                    cells.append("—")
                elif r.get("rss_peak") is None:
                    cells.append("error")
                    notes.append(f"{e}: {r.get('error')}")
                else:
                    cells.append(f"{_mib(r['rss_peak'])} ({r['rss_peak'] / theory['total']:.2f}x)")
            parts = [f"{k} {_mib(v)}" for k, v in theory.items() if k != "total"]
            notes.insert(0, "theory = " + " + ".join(parts))
            cells.append("; ".join(notes))
            out.append("| " + " | ".join(cells) + " |")
        return out

    def _first_call_table(self):
        """Per engine and pass, from the last process of its first kernel row: import, build,
        first call (by then numba's compile cache holds that row's kernels)."""
        picks = {}
        for row, measured in self.rows:
            if row.kind != "kernel":
                continue
            for e, m in measured.items():
                run = m.runs[-1] if m.runs else {}
                if "first" in run and (e, row.pass_) not in picks:
                    picks[(e, row.pass_)] = (row, run, m.seconds)
        if not picks:
            return []
        out = ["| engine | row | import | build | first call | later calls (median) |",
               "|---|---|---|---|---|---|"]
        for (e, _), (row, run, seconds) in sorted(picks.items(), key=lambda kv: (
                self.engines.index(kv[0][0]), kv[0][1])):
            out.append(f"| {e} | {row.id} | {_time(run['import'])} | {_time(run['build'])} | "
                       f"{_time(run['first'])} | {_time(seconds) if seconds else '—'} |")
        return out

    def _legend(self):
        return [
            "Engines: numpy, numba and cython are fastrnn's backends (numpy is the reference); "
            "torch runs inference under `torch.inference_mode()` and training with autograd as "
            "its tutorials write it; onnxruntime runs the model `fastrnn.onnx.export` writes, "
            "with `intra_op_num_threads` set to the thread count; jax runs `jit` over `lax.scan` "
            "(input product hoisted) and `grad` of `sum(out * dout)`.",
            "",
            "Rows: `infer` is a forward in eval mode; `train` a forward and the backward of a "
            "given output gradient. The training loop is the README's (LSTM, Linear head, "
            "cross-entropy, backward, clip_grad_norm, Adam; one-hot characters, V=96, B=32, "
            "64-step chunks, state carried) against the same loop in PyTorch (nn.LSTM, "
            "nn.Linear, F.cross_entropy, clip_grad_norm_, torch.optim.Adam, state detached). "
            "Streaming: LSTM(128, 128) on one sequence, step by step through the cell API or "
            "through the layer on chunks of 1 or 16 steps. Ragged: LSTM(64, 128) on 2,048 "
            "sequences of lengths 10-200 in batches of 256 through `lengths` (PyTorch: "
            "`pack_padded_sequence`; onnxruntime: `sequence_lens`). Variants: `GRU(reset_after="
            "False)` (onnxruntime: `linear_before_reset=0`), `LSTM(peepholes=True)` (`P`), "
            "`LSTM(input_forget=True)` (`input_forget=1`), `LSTM(clip=1.0)` (`clip`), "
            "Keras 2's GRU `GRU(reset_after=False, activations=[(\"hard_sigmoid\", 0.2, 0.5), "
            "\"tanh\"])` and `LSTM(activations=[\"sigmoid\", \"relu\", \"relu\"])` "
            "(`activations`, `activation_alpha`, `activation_beta`), "
            "inference only: PyTorch and JAX have "
            "none of them and onnxruntime trains none.",
            "",
            "GFLOP/s count the products only (forward 2·T·B·G·H·(I+H), training 3x that); % GEMM "
            "is the share of the float32 GEMM ceiling above, % peak that of the multiply-add "
            "peak (the physical floor of the products: their FLOPs at that rate). A step's "
            "weights floor is the time "
            "its weight traffic takes at the read bandwidth above, each thread reading its share "
            "(G·H·(I+H) floats / threads) as fast as one thread read that much alone: an "
            "inference step reads the weights once, a training step moves 3x that at the least "
            "(the forward, dx and dh, and the gradients written); in brackets, the floor as a "
            "share of fastrnn's and the best peer's time. At B=1 it is the binding floor; at "
            "B=8 the multiply-adds (the GFLOP/s column) may bind instead. "
            + ("Every engine's results were checked against the numpy reference, at the size "
               "timed, in the same process after timing." if self.checked else
               "The results were not checked against the numpy reference (--no-check)."),
        ]


def _shape_label(row):
    s = row.shape
    if row.kind == "loop":
        return f"V={s.I}, H={s.H}, B={s.B}, {s.T}-step chunks"
    if row.kind == "stream":
        return f"I={s.I}, H={s.H}, {s.T} steps"
    if row.kind == "ragged":
        return f"I={s.I}, H={s.H}, {row.units[0]} sequences ≤{s.T}, batches of {s.B}"
    if row.kind == "step":
        return f"B={s.B}, I={s.I}, H={s.H}"
    return s.label


def _figure(row, seconds):
    units, name = row.units
    if name == "calls":
        return _time(seconds)
    return f"{units / seconds:,.0f}"


def _ratio(theirs, mine, bold=False):
    if not theirs or not mine:
        return "—"
    text = f"{theirs / mine:.2f}x"
    return f"**{text}**" if bold else text


def _time(seconds):
    if seconds >= 1:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def _mib(nbytes):
    return f"{nbytes / 2 ** 20:.1f} MiB"


# -- running ---------------------------------------------------------------------------------
def run_worker(spec, timeout, extra_env=None):
    """Run :mod:`bench.worker` on ``spec`` in a fresh process; its result, or ``{"error": ...}``.
    (``FASTRNN_BACKEND`` is left out: each worker runs the engine it is given.)"""
    return run_module("bench.worker", spec, timeout, extra_env, drop_env=("FASTRNN_BACKEND",))


def time_row(row, engines, settings, threads, log=None, check=True):
    """Time ``row`` on ``engines``, one fresh process per engine and round.

    Returns
    -------
    dict
        engine -> :class:`Measurement`.  An engine whose process failed is
        not started again for this row.
    """
    out = {e: Measurement() for e in engines}
    spec = {"mode": "time", "row": cases.row_to_json(row), "threads": threads,
            "budget": settings.budget, "samples": settings.samples,
            "min_sample_time": settings.min_sample_time}
    rounds = settings.rounds
    r = 0
    while r < rounds:
        order = engines if r % 2 == 0 else engines[::-1]
        for e in order:
            if out[e].error:
                continue
            out[e].runs.append(run_worker(dict(spec, engine=e, check=check and r == 0),
                                          settings.timeout, PEER_ENV if e in PEERS else None))
        if log:
            log(f"{row.id} round {r + 1}/{rounds}: " + ", ".join(
                f"{e} {_time(out[e].medians[-1]) if out[e].medians and not out[e].error else 'error'}"
                for e in engines))
        r += 1
        if r == settings.rounds and any(m.noisy for m in out.values() if not m.error):
            rounds += settings.extra_rounds     # a noisy row: more processes for its medians
    for e, m in out.items():
        if m.error and log:
            log(f"  {e}: {m.error}")
    return out


def measure_memory(row, engines, threads, timeout):
    """Peak memory of one call of ``row`` per engine, each in a fresh process."""
    spec = {"mode": "memory", "row": cases.row_to_json(row), "threads": threads}
    return {e: run_worker(dict(spec, engine=e), timeout, MALLOC_ENV) for e in engines}


def measure_profile(row, settings, threads):
    """The cython engine's calls of ``row`` on its kernels' phase clock, in a fresh process:
    the worker's ``profile`` (per call), or ``{"error": ...}``."""
    spec = {"mode": "profile", "engine": "cython", "row": cases.row_to_json(row),
            "threads": threads, "budget": settings.profile_budget}
    result = run_worker(spec, settings.timeout)
    return result.get("profile") or {"error": result.get("error", "no profile")}


def measure_gemm(settings, threads):
    spec = {"mode": "gemm", "threads": threads, "n": settings.gemm_n,
            "samples": settings.gemm_samples, "min_sample_time": 0.2}
    return run_worker(spec, settings.timeout)


def measure_peak(settings, threads):
    """The float32 multiply-add peak of ``threads`` threads at once, in a process of its own."""
    spec = {"mode": "peak", "threads": threads, "samples": settings.gemm_samples,
            "seconds": 0.2}
    return run_worker(spec, settings.timeout)


def measure_bandwidth(settings, threads, sizes):
    """One thread's read bandwidth at each of ``sizes`` bytes, in a process of its own."""
    spec = {"mode": "bandwidth", "threads": threads, "sizes": sorted(sizes),
            "samples": 7, "min_sample_time": min(0.05, settings.min_sample_time * 5)}
    return run_worker(spec, settings.timeout)


def run_report(rows, engines=None, settings=None, threads=None, memory_rows=(), check=True,
               log=None):
    """Measure ``rows`` (and the peak memory of ``memory_rows``) on ``engines``.

    Parameters
    ----------
    rows : list of bench.cases.Row
    engines : sequence of str, optional
        Default: every available engine of :data:`bench.engines.ENGINES`.
    settings : Settings, optional
    threads : int, optional
        Threads of every engine; default: the usable cores.
    memory_rows : list of Row
    check : bool
        Check every engine against the numpy reference (in its first process of a row).
    log : callable, optional
        Receives progress lines.

    Returns
    -------
    Report
    """
    begin = time.perf_counter()
    settings = settings or Settings()
    threads = threads or usable_cores()
    status = availability()
    unknown = [e for e in engines or () if e not in ENGINES]
    if unknown:
        raise ValueError(f"unknown engines {unknown}: choose from {list(ENGINES)}")
    wanted = list(ENGINES) if engines is None else [e for e in ENGINES if e in engines]
    unavailable = {e: status[e] for e in wanted if status[e]}
    engines = [e for e in wanted if not status[e]]
    report = Report(engines=engines, unavailable=unavailable, settings=settings, threads=threads,
                    machine=describe(threads, engines), cores=usable_cores(), checked=check)
    if "cython" in engines:
        from fastrnn._cython import kernels
        report.l2 = kernels.l2_cache_bytes()
    counters, since = cpu_counters(), time.perf_counter()
    report.gemm.append(measure_gemm(settings, threads))
    report.peak.append(measure_peak(settings, threads))
    sizes = {report.core_bytes(r) for r in rows if r.weight_bytes() is not None}
    if sizes:
        report.bandwidth.append(measure_bandwidth(settings, threads, sizes))
    for row in rows:
        if row.kind == "dask":
            continue
        runs_on = [e for e in engines if ENGINES[e].supports(row)]
        if runs_on:
            report.rows.append((row, time_row(row, runs_on, settings, threads, log, check)))
    dask_rows = [r for r in rows if r.kind == "dask"]
    if dask_rows:
        report.scaleout_missing = scaleout.available()
        for row in dask_rows if not report.scaleout_missing else ():
            report.scaleout.append((row, scaleout.measure(
                row, threads, rounds=settings.rounds, timeout=settings.timeout, log=log)))
    for row in memory_rows:
        runs_on = [e for e in engines if ENGINES[e].supports(row)]
        report.memory.append((row, measure_memory(row, runs_on, threads, settings.timeout)))
    if settings.profile != "none" and "cython" in engines:
        missed = {row.id for row in report.missed_rows()}
        for row, measured in report.rows:
            if "cython" in measured and (settings.profile == "all" or row.id in missed):
                if log:
                    log(f"{row.id}: the cython engine's profile"
                        + (" (missed a target)" if row.id in missed else ""))
                report.profiles[row.id] = measure_profile(row, settings, threads)
    report.gemm.append(measure_gemm(settings, threads))
    report.peak.append(measure_peak(settings, threads))
    if sizes:
        report.bandwidth.append(measure_bandwidth(settings, threads, sizes))
    report.others = others_cpu(counters, cpu_counters(), time.perf_counter() - since)
    report.seconds = time.perf_counter() - begin
    return report


# -- command line ----------------------------------------------------------------------------
def _csv(value, allowed, what):
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"{what} must be a comma-separated list of "
                                         f"{list(allowed)}, but got {value!r}")
    return items


def select_rows(kinds, cells, passes, shapes):
    """The rows of the report for a selection (kernel and step rows filtered by cell and pass)."""
    rows = []
    for kind in kinds:
        if kind == "kernel":
            rows += cases.kernel_rows(cells, passes, shapes)
        elif kind == "step":
            rows += cases.step_rows([c for c in cells if c != "rnn"], passes)
        elif kind == "loop" and "lstm" in cells and "train" in passes:
            rows += cases.loop_rows()
        elif kind == "stream" and "lstm" in cells and "infer" in passes:
            rows += cases.stream_rows()
        elif kind == "ragged" and "lstm" in cells and "infer" in passes:
            rows += cases.ragged_rows()
        elif kind == "variant":
            rows += cases.variant_rows(cells, passes)
        elif kind == "dask" and "lstm" in cells:
            rows += [r for r in scaleout.rows() if r.pass_ in passes]
    return rows


def build_parser(prog="python -m bench"):
    p = argparse.ArgumentParser(
        prog=prog, description="Time fastrnn's backends against PyTorch, onnxruntime and JAX, "
                               "each engine in a fresh process of its own, and print one "
                               "markdown report.")
    p.add_argument("--quick", action="store_true",
                   help="fewer rounds and shorter samples (minutes instead of about 45 on 2 cores)")
    p.add_argument("--kinds", default=",".join(cases.KINDS + ("dask",)),
                   type=lambda v: _csv(v, cases.KINDS + ("dask",), "--kinds"),
                   help="row kinds (default: all): " + ", ".join(cases.KINDS) + ", dask "
                        "(fastrnn on a dask LocalCluster against one process, bench/scaleout.py; "
                        "needs the dask extra)")
    p.add_argument("--cells", default=",".join(cases.CELLS),
                   type=lambda v: _csv(v, cases.CELLS, "--cells"),
                   help="cells, comma-separated (default: all): " + ", ".join(cases.CELLS))
    p.add_argument("--passes", default=",".join(cases.PASSES),
                   type=lambda v: _csv(v, cases.PASSES, "--passes"),
                   help="passes (default: both): infer (a forward in eval mode), train (a "
                        "forward and its backward)")
    p.add_argument("--shapes", default=",".join(cases.SHAPES),
                   help="kernel shapes: names of " + ", ".join(cases.SHAPES) + " or TxBxIxH")
    p.add_argument("--engines", default=None,
                   type=lambda v: _csv(v, tuple(ENGINES), "--engines"),
                   help="engines to run (default: every available one): " + ", ".join(ENGINES))
    p.add_argument("--threads", type=int, default=None,
                   help="threads of every engine (default: the usable cores)")
    p.add_argument("--rounds", type=int, default=None, help="processes per engine and row")
    p.add_argument("--extra-rounds", type=int, default=None,
                   help="rounds more for a row whose processes of an engine spread over "
                        f"{NOISY_SPREAD * 100:.0f}%% of their median "   # %%: argparse %-formats
                        f"(default: {Settings.extra_rounds}, 0 with --quick)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory rows")
    p.add_argument("--profile", choices=PROFILES, default=Settings.profile,
                   help="the rows whose cython calls are profiled on the kernels' phase clock, "
                        "each in a process of its own: those that miss a target (default), all "
                        "or none")
    p.add_argument("--no-check", action="store_true",
                   help="do not check the engines against the numpy reference")
    p.add_argument("--markdown", metavar="FILE", help="also write the report to FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    return p


def settings_from(args):
    """The :class:`Settings` of parsed command-line arguments."""
    settings = Settings.quick() if args.quick else Settings()
    if args.rounds:
        settings = replace(settings, rounds=args.rounds)
    if args.extra_rounds is not None:
        settings = replace(settings, extra_rounds=args.extra_rounds)
    return replace(settings, profile=args.profile)


def main(argv=None, prog="python -m bench"):
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        shapes = [cases.parse_shape(s) for s in args.shapes.split(",") if s.strip()]
    except ValueError as exc:
        parser.error(f"--shapes: {exc}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be a positive integer, but got {args.threads}")
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be a positive integer, but got {args.rounds}")
    if args.extra_rounds is not None and args.extra_rounds < 0:
        parser.error(f"--extra-rounds must be 0 or more, but got {args.extra_rounds}")
    settings = settings_from(args)
    rows = select_rows(args.kinds, args.cells, args.passes, shapes)
    memory_rows = [] if args.no_memory or "kernel" not in args.kinds else [
        cases.Row("kernel", c, p, cases.SHAPES["large"]) for c in args.cells for p in args.passes]
    if not rows and not memory_rows:
        parser.error(f"no row has --kinds {','.join(args.kinds)}, --cells "
                     f"{','.join(args.cells)} and --passes {','.join(args.passes)} (the step and "
                     f"variant rows are LSTM's and GRU's, the loop, stream and ragged rows "
                     f"LSTM's; the loop rows train, the stream, ragged and variant rows infer)")
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    report = run_report(rows, args.engines, settings, args.threads, memory_rows,
                        check=not args.no_check, log=log)
    text = report.markdown()
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    failed = [f"{r.id}/{e}" for r, ms in report.rows for e, m in ms.items()
              if m.error and "CheckError" in m.error]
    return 1 if failed else 0
