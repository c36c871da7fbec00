"""Smoke tests of the benchmark report (``python -m fastrnn.bench``) on tiny shapes.

They exercise every code path of the report (checks, interleaved timing,
fresh-process memory and first-call probes, the markdown table, the command
line) in seconds; they assert structure and consistency, never speed.
"""

import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from fastrnn.bench import cases, report, timing, workloads
from fastrnn.bench.cases import CASES, CELLS, PASSES, Case, Shape, parse_shape
from fastrnn.bench.report import Report, Settings, run_report

TINY = Shape("tiny", 3, 2, 4, 5)
FAST = Settings(repeat=2, min_samples=1, max_seconds=0.05, min_sample_time=0.001, gemm_n=64,
                gemm_repeat=2, gemm_sample_time=0.001)


def _has_torch():
    return cases.backend_status()[cases.PEER]["available"]


#: tests of the torch peer: skipped without torch, unless FASTRNN_REQUIRE_TORCH=1 (then they fail)
needs_torch = pytest.mark.skipif(not _has_torch() and os.environ.get("FASTRNN_REQUIRE_TORCH") != "1",
                                 reason="torch not installed")


def _table_rows(text):
    """The rows of the markdown table as lists of cells (header first, separator dropped)."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in row.strip("|").split("|")] for row in rows if not row.startswith("|---")]


# -- the table of cases -------------------------------------------------------------
def test_case_table_covers_cells_passes_shapes_and_steps():
    seq = {(c.cell, c.pass_, c.shape.name) for c in CASES if not c.shape.step}
    assert seq == {(c, p, s) for c in CELLS for p in PASSES for s in cases.SEQUENCE_SHAPES}
    steps = {(c.cell, c.pass_) for c in CASES if c.shape.step}
    assert steps == {(c, p) for c in cases.STEP_CELLS for p in PASSES}
    assert len({c.group for c in CASES}) == len(CASES)
    assert cases.SHAPES["large"][1:5] == (50, 64, 512, 512)
    assert cases.BACKENDS[-1] == cases.PEER and cases.REFERENCE in cases.BACKENDS


def test_parse_shape():
    assert parse_shape("small") is cases.SHAPES["small"]
    s = parse_shape("8x2x4x5")
    assert (s.T, s.B, s.I, s.H, s.step) == (8, 2, 4, 5, False)
    for bad in ("huge", "8x2x4", "0x2x4x5"):
        with pytest.raises(ValueError, match="unknown shape"):
            parse_shape(bad)


def test_flops_and_theoretical_memory_follow_the_formulas():
    T, B, I, H = TINY[1:5]
    assert cases.gemm_flops(Case("lstm", TINY, "infer")) == 2 * T * B * 4 * H * (I + H)
    assert cases.gemm_flops(Case("gru", TINY, "train")) == 3 * 2 * T * B * 3 * H * (I + H)
    mem = cases.theoretical_memory("lstm", TINY)
    assert mem["store"] == T * B * (4 * H + H + H) * 4
    assert mem["weights"] == (4 * H * (I + H) + 2 * 4 * H) * 4
    assert mem["outputs"] == (T * B * H + T * B * I) * 4
    assert mem["total"] == mem["store"] + mem["weights"] + mem["outputs"]
    assert cases.theoretical_memory("rnn", TINY)["store"] < cases.theoretical_memory("gru", TINY)["store"]


def test_targets():
    assert cases.target(Case("lstm", cases.SHAPES["stream"], "train")) == ("speedup", 3.0)
    assert cases.target(Case("lstm", cases.SHAPES["small"], "train")) == ("speedup", 1.1)
    assert cases.target(Case("gru", cases.SHAPES["medium"], "infer")) == ("speedup", 1.0)
    assert cases.target(Case("lstm", cases.SHAPES["step"], "infer")) == ("seconds", 5e-6)
    assert cases.target(Case("lstm", TINY, "train")) is None
    assert cases.cython_target(Case("gru", cases.SHAPES["medium"], "train")) == ("relative", 1.1)
    assert cases.cython_target(Case("lstm", cases.SHAPES["step"], "infer")) == ("seconds", 2e-6)
    assert cases.cython_target(Case("gru", cases.SHAPES["step"], "train")) is None


# -- checks --------------------------------------------------------------------------
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("pass_", PASSES)
def test_reference_results_are_complete(cell, pass_):
    res = workloads.Workload(Case(cell, TINY, pass_), "numpy").results()
    assert res["out"].shape == (TINY.T, TINY.B, TINY.H)
    if pass_ == "train":
        assert res["dx"].shape == (TINY.T, TINY.B, TINY.I)
        assert any(k.startswith("grad.") for k in res)
    assert workloads.compare(res, res) == 0.0


def test_compare_catches_wrong_results():
    ref = workloads.Workload(Case("gru", TINY, "train"), "numpy").results()
    bad = dict(ref, out=ref["out"] * 1.01)
    with pytest.raises(workloads.CheckError, match="out: max error"):
        workloads.compare(bad, ref)
    with pytest.raises(workloads.CheckError, match="not finite"):
        workloads.compare(dict(ref, dx=ref["dx"] * np.nan), ref)
    with pytest.raises(workloads.CheckError, match="shape"):
        workloads.compare(dict(ref, out=ref["out"][:1]), ref)
    with pytest.raises(workloads.CheckError, match="lack"):
        workloads.compare({k: v for k, v in ref.items() if k != "dx"}, ref)


def test_steps_cut_only_the_sequence_length():
    case = Case("lstm", cases.SHAPES["small"], "train")
    w = workloads.Workload(case, "numpy", steps=2)
    assert w.shape[1:5] == (2, 16, 64, 128)
    assert cases.SHAPES["step"].with_steps(2) is cases.SHAPES["step"]


@needs_torch
@pytest.mark.parametrize("case", [Case("lstm", TINY, "train"), Case("gru", TINY, "infer"),
                                  Case("lstm", Shape("cellstep", 1, 2, 4, 5, step=True), "train")],
                         ids=lambda c: c.group)
def test_torch_peer_matches_the_reference(case):
    assert workloads.Checker().check(case, "torch") < workloads.CHECK_RTOL


# -- timing --------------------------------------------------------------------------
def test_plan_rounds():
    assert timing.plan_rounds(10.0, 1.0, 2, 100, 0.005) == (2, 1)      # slow: min rounds
    rounds, iterations = timing.plan_rounds(1e-6, 1.0, 2, 100, 0.005)  # fast: batched
    assert rounds == 100 and iterations == 5000


def test_time_interleaved_respects_budget_and_min_samples():
    calls = {"fast": 0, "slow": 0}

    def fast():
        calls["fast"] += 1

    def slow():
        calls["slow"] += 1
        sum(range(20000))

    out = timing.time_interleaved({"fast": fast, "slow": slow}, repeat=5, min_samples=2,
                                  max_seconds=0.0, min_sample_time=0.0)
    assert len(out["slow"].samples) == 2 and len(out["fast"].samples) == 2
    assert all(t.median > 0 and math.isfinite(t.median) for t in out.values())


def test_time_interleaved_settles_between_backends(monkeypatch):
    """A sleep before each sample of another callable than the last one, never before the
    first sample nor between samples of the same callable."""
    sleeps = []
    monkeypatch.setattr(timing.time, "sleep", sleeps.append)
    out = timing.time_interleaved({"a": lambda: None, "b": lambda: None}, repeat=3,
                                  estimates={"a": 1e-6, "b": 1e-6}, min_sample_time=0.0,
                                  settle=0.125)
    # order a b | b a | a b: switches before samples 2, 4 and 6
    assert sleeps == [0.125] * 3
    assert len(out["a"].samples) == len(out["b"].samples) == 3


# -- the whole report ------------------------------------------------------------------
def test_report_with_numpy_only(tmp_path):
    """numpy alone: every section runs, ratio columns say n/a, probes in fresh processes."""
    rep = run_report(cells=["lstm"], shapes=[TINY], passes=PASSES, backends=["numpy"],
                     settings=FAST, memory_shape=TINY, first_call_shape=TINY)
    text = rep.markdown()
    rows = _table_rows(text)
    head = rows[0]
    assert head[:4] == ["cell", "measure", "shape", "numpy"]
    assert "torch/numpy" in head
    body = {(r[0], r[1]): dict(zip(head, r)) for r in rows[1:]}
    for pass_ in PASSES:
        row = body[("lstm", pass_)]
        assert row["numpy"].endswith(("µs", "ms", " s"))
        assert row["torch/numpy"] == "n/a"
        assert re.fullmatch(r"[\d.]+ \(\d+%\)", row["GFLOP/s numpy (% GEMM)"])
    mem = body[("lstm", "peak memory, train")]
    assert "MiB" in mem["numpy"] and "theory" in mem["notes"]
    for cache in ("cold", "warm"):
        first = body[("lstm", f"first call, {cache} cache")]
        assert first["numpy"].endswith(("ms", " s")), first
    assert "GEMM ceiling" in text and "CPU:" in text and "BLAS" in text


@needs_torch
def test_report_with_torch_has_ratios():
    rep = run_report(cells=["gru"], shapes=[TINY], passes=["train"], backends=["numpy", "torch"],
                     settings=FAST, memory=False, first_call=False)
    rows = _table_rows(rep.markdown())
    row = dict(zip(rows[0], rows[1]))
    assert row["torch/numpy"].endswith("x") and row["torch"] != "n/a"


def test_cython_is_judged_against_numba():
    """With both compiled backends the table gets the cython backend's own target column."""
    status = cases.backend_status()
    if cases.auto_backend(status) != "numba":
        pytest.skip("the numba backend is not the default here")
    near, far = Case("gru", cases.SHAPES["medium"], "train"), Case("lstm", cases.SHAPES["small"], "infer")
    step = Case("lstm", cases.SHAPES["step"], "infer")
    t = lambda s: timing.Timing(s, [s], 1)   # noqa: E731
    rep = Report(backends=["numba", "cython"], status=status, machine=[("CPU", "x")],
                 settings=FAST, torch_threads=1,
                 timings=[(near, {"numba": t(10e-3), "cython": t(10.5e-3)}),
                          (far, {"numba": t(10e-3), "cython": t(12e-3)}),
                          (step, {"numba": t(30e-6), "cython": t(3e-6)})],
                 gemm=[{"gflops": 10.0, "samples": [10.0], "n": 64}])
    rows = _table_rows(rep.markdown())
    got = [dict(zip(rows[0], r))["target (cython)"] for r in rows[1:]]
    assert got == ["≤1.1x numba's time: met (1.05x)", "≤1.1x numba's time: missed (1.20x)",
                   "≤2 µs: missed, 1.5x over"]
    assert dict(zip(rows[0], rows[1]))["target (numba)"].startswith("≥1.5x vs torch")


def test_failed_check_is_reported_not_timed(monkeypatch, capsys):
    case = Case("rnn", TINY, "infer")
    failed = "CHECK FAILED, not timed: torch differs from the numpy reference"
    rep = Report(backends=["numpy", "torch"], status=cases.backend_status(), machine=[("CPU", "x")],
                 settings=FAST, torch_threads=1,
                 timings=[(case, {"numpy": timing.Timing(1e-3, [1e-3], 1), "torch": failed})],
                 gemm=[{"gflops": 10.0, "samples": [10.0], "n": 64}])
    rows = _table_rows(rep.markdown())
    row = dict(zip(rows[0], rows[1]))
    assert row["torch"] == "n/a" and row["torch/numpy"] == "n/a" and failed in row["notes"]
    monkeypatch.setattr(report, "run_report", lambda **kwargs: rep)
    assert report.main(["--quick", "-q", "--no-memory", "--no-first-call"]) == 1
    assert "CHECK FAILED" in capsys.readouterr().out


def test_cli_options(tmp_path):
    with pytest.raises(SystemExit) as exc:
        report.main(["--shapes", "huge"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        report.main(["--cells", "transformer"])
    assert exc.value.code == 2
    out = tmp_path / "report.md"
    proc = subprocess.run(
        [sys.executable, "-m", "fastrnn.bench", "--cells", "rnn", "--shapes", "2x2x3x4",
         "--passes", "train", "--backends", "numpy", "--repeat", "1", "--quick", "-q",
         "--no-first-call", "--gemm-size", "64", "--markdown", str(out)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == out.read_text(encoding="utf-8")
    assert "| rnn | train | 2x2x3x4" in proc.stdout
    assert "| rnn | peak memory, train | 2x2x3x4" in proc.stdout


def test_cache_env_vars_include_fastrnn_and_numba():
    from fastrnn.bench.probes import cache_env_vars
    names = cache_env_vars()
    assert "FASTRNN_CACHE_DIR" in names and "NUMBA_CACHE_DIR" in names


def test_cli_without_torch(tmp_path):
    """A process where ``import torch`` fails: the report still runs, the peer's columns say n/a."""
    blocker = tmp_path / "block" / "torch"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch blocked by the test')\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(blocker.parent) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", "fastrnn.bench", "--cells", "gru", "--shapes", "3x2x3x4",
         "--passes", "infer", "--backends", "numpy,torch", "--repeat", "1", "--quick", "-q",
         "--no-first-call", "--gemm-size", "64"],
        capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    rows = _table_rows(proc.stdout)
    assert "torch" not in rows[0][:4]
    row = dict(zip(rows[0], rows[1]))
    assert row["torch/numpy"] == "n/a" and row["numpy"] != "n/a"
    assert "torch blocked by the test" in proc.stdout  # the reason is in the header


@needs_torch
def test_report_leaves_torch_threads_alone():
    import torch
    before = torch.get_num_threads()
    run_report(cells=["rnn"], shapes=[TINY], passes=["infer"], backends=["torch"], settings=FAST,
               memory=False, first_call=False, torch_threads=before + 1)
    assert torch.get_num_threads() == before


def test_busy_machine_is_flagged():
    rep = Report(backends=["numpy"], status=cases.backend_status(peer=False), machine=[], settings=FAST,
                 torch_threads=1, load_start=0.1, load_end=0.2, cores=2)
    assert "busy machine" not in rep.markdown()
    rep.load_end = 5.0    # the end counts the run's own threads: not a sign of others
    assert "busy machine" not in rep.markdown()
    rep.load_start = 1.5
    assert "⚠ busy machine (load average 1.5 at the start, on 2 cores)" in rep.markdown()
    rep.others = 0.1      # measured: what others used during the run decides, not the load
    assert "busy machine" not in rep.markdown()
    rep.others = 0.6
    text = rep.markdown()
    assert "⚠ busy machine (other processes used 0.60 cores during the run, on 2 cores)" in text
    assert "other processes (and the hypervisor's steal time) used 0.60 of the 2 cores" in text


def test_others_cpu_subtracts_this_process():
    """What the machine spent beyond this process's own CPU time, per second of the run."""
    from fastrnn.bench.machine import cpu_counters, others_cpu
    assert others_cpu((100.0, 10.0), (103.0, 12.0), 2.0) == 0.5
    assert others_cpu((100.0, 10.0), (101.0, 12.0), 2.0) == 0.0     # clock granularity
    assert others_cpu((None, 10.0), (None, 12.0), 2.0) is None
    start = cpu_counters()
    sum(i * i for i in range(2_000_000))   # busy on this process only
    end = cpu_counters()
    assert end[1] > start[1]
    if start[0] is not None:
        assert end[0] >= start[0]
