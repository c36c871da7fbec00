"""The benchmark of the checkout (``python -m bench``): its engines, its workers, its report.

Every engine of the one table (``bench.engines.ENGINES``) is checked against
the numpy reference on every row it supports, at the rows' reduced sizes: a
peer that computed something else would make every ratio meaningless.  The
workers and the report run at tiny sizes; the tests assert structure and
method (fresh processes, alternating order, ratios against the best peer),
never speed.

An engine that is not installed skips, unless the variable that requires it
is set (as in CI): ``FASTRNN_REQUIRE_BACKENDS`` (numba, cython),
``FASTRNN_REQUIRE_TORCH=1`` (torch), ``FASTRNN_REQUIRE_INTEROP=1``
(onnxruntime) and ``FASTRNN_REQUIRE_BENCH=1`` (jax, the ``bench`` extra).
"""

import dataclasses
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from helpers import REQUIRED as REQUIRED_BACKENDS, required

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)        # the benchmark lives in the checkout, not in the package

from bench import cases, engines, report  # noqa: E402
from bench.cases import Row, Shape  # noqa: E402
from bench.engines import ENGINES, PEERS  # noqa: E402
from bench.report import Measurement, Report, Settings  # noqa: E402

AVAILABILITY = engines.availability()
REQUIRED = set(REQUIRED_BACKENDS)     # the backends FASTRNN_REQUIRE_BACKENDS names, and:
if required("FASTRNN_REQUIRE_TORCH"):
    REQUIRED.add("torch")
if required("FASTRNN_REQUIRE_INTEROP"):
    REQUIRED.add("onnxruntime")
if required("FASTRNN_REQUIRE_BENCH"):
    REQUIRED.add("jax")

TINY = Settings(rounds=2, samples=3, budget=0.01, min_sample_time=0.001, gemm_n=64,
                gemm_samples=2, timeout=300, profile_budget=0.01)


def need(engine):
    """Skip (or fail, when the environment requires it) a test of an engine that cannot run."""
    reason = AVAILABILITY[engine]
    if reason:
        if engine in REQUIRED:
            pytest.fail(f"{engine} is required here but cannot run: {reason}")
        pytest.skip(f"{engine} cannot run: {reason}")


PAIRS = [(row, name) for row in cases.all_rows() for name, e in ENGINES.items()
         if e.supports(row) and name != engines.REFERENCE]


# -- the engines -----------------------------------------------------------------------------
@pytest.mark.parametrize("row,engine", PAIRS, ids=[f"{r.id}-{e}" for r, e in PAIRS])
def test_engine_matches_the_reference(row, engine):
    need(engine)
    engines.check(row.reduced(), engine)     # raises CheckError past its bound


def test_every_kind_of_row_has_fastrnn_and_a_peer():
    for row in cases.all_rows():
        names = [n for n, e in ENGINES.items() if e.supports(row)]
        assert {"numba", "cython"} <= set(names), row.id
        assert any(ENGINES[n].peer for n in names), row.id
    assert [r.id for r in cases.loop_rows()] == ["lstm-train-loop-H128", "lstm-train-loop-H256"]
    assert ENGINES["onnxruntime"].infer_only and not ENGINES["torch"].infer_only
    variants = cases.variant_rows()
    assert [r.id for r in variants] == ["gru-infer-medium-reset_before",
                                        "lstm-infer-medium-peepholes",
                                        "lstm-infer-medium-input_forget",
                                        "lstm-infer-medium-clip",
                                        "gru-infer-medium-hard_sigmoid",
                                        "lstm-infer-medium-relu"]
    for row in variants:   # PyTorch and JAX have none of these cells
        assert [n for n in PEERS if ENGINES[n].supports(row)] == ["onnxruntime"], row.id


def test_check_catches_a_wrong_engine(monkeypatch):
    """A check that cannot fail is no check: an engine whose weights are off is caught."""
    row = cases.kernel_rows(["gru"], ["train"], ["small"])[0]
    build = engines.build

    def wrong(r, name, threads=1):
        work = build(r, name, threads)
        work.module.parameters()["weight_hh_l0"][0, 0] += 0.5
        return work
    monkeypatch.setattr(engines, "build", wrong)
    with pytest.raises(engines.CheckError, match="numba differs from the numpy reference"):
        engines.check(row, "numba")


@pytest.mark.parametrize("engine", ["cython", "torch"])
def test_the_loop_check_sees_the_clipping(engine, monkeypatch):
    """The loop rows compare each chunk's gradient norm, and with a bound the gradients pass
    (the rows' own bound is above them), an engine that skipped clipping would be caught."""
    need(engine)
    monkeypatch.setattr(engines, "LOOP_CLIP", 0.01)
    row = cases.loop_rows()[0].reduced()
    reference = engines.FastrnnWorkload(row, engines.REFERENCE).results()
    assert len(reference["norm"]) == 2 and min(reference["norm"]) > 0.01
    engines.check(row, engine)
    if engine == "torch":
        import torch
        monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_",
                            lambda params, bound: torch.linalg.vector_norm(
                                torch.stack([p.grad.norm() for p in params])))
        with pytest.raises(engines.CheckError, match="w."):
            engines.check(row, engine)


def test_compare_names_what_is_wrong():
    ref = {"out": np.ones((2, 3)), "grad.w": np.ones(4)}
    assert engines.compare({"out": np.ones((2, 3)), "grad.w": np.ones(4)}, ref) == 0.0
    with pytest.raises(engines.CheckError, match="grad.w: missing"):
        engines.compare({"out": np.ones((2, 3))}, ref)
    with pytest.raises(engines.CheckError, match="out: shape"):
        engines.compare({"out": np.ones((3, 2)), "grad.w": np.ones(4)}, ref)
    with pytest.raises(engines.CheckError, match="out: not finite"):
        engines.compare({"out": np.full((2, 3), np.nan), "grad.w": np.ones(4)}, ref)
    with pytest.raises(engines.CheckError, match="grad.w: max error 0.01"):
        engines.compare({"out": np.ones((2, 3)), "grad.w": np.array([1, 1, 1, 1.01])}, ref)


def test_rows_and_their_reduced_sizes():
    for row in cases.all_rows():
        small = row.reduced()
        assert (small.kind, small.cell, small.pass_, small.variant) == \
            (row.kind, row.cell, row.pass_, row.variant)
        assert np.prod(small.shape[1:]) <= np.prod(row.shape[1:])
        assert cases.row_from_json(cases.row_to_json(row)) == row
    ragged = cases.ragged_rows()[0]
    lengths = cases.ragged_lengths(ragged.shape, engines.SEED)
    assert len(lengths) == 2048 == ragged.units[0]
    assert lengths.min() >= 10 and lengths.max() <= 200
    lstm = cases.kernel_rows(["lstm"], ["infer"], ["medium"])[0]
    assert lstm.flops() == 2 * 100 * 32 * 4 * 256 * (128 + 256)
    assert lstm._replace(pass_="train").flops() == 3 * lstm.flops()
    assert cases.loop_rows()[0].units == (64 * 32, "characters")
    assert cases.parse_shape("8x2x4x5") == Shape("8x2x4x5", 8, 2, 4, 5)
    with pytest.raises(ValueError, match="unknown shape"):
        cases.parse_shape("8x2x4")


# -- the worker: one engine in a process of its own ------------------------------------------
def test_worker_times_and_checks_in_a_fresh_process():
    row = Row("kernel", "lstm", "train", Shape("tiny", 4, 3, 5, 6))
    spec = {"mode": "time", "row": cases.row_to_json(row), "threads": 1, "budget": 0.01,
            "samples": 3, "min_sample_time": 0.001, "check": True}
    got = report.run_worker(dict(spec, engine="numpy"), timeout=120)
    assert got.get("error") is None, got
    assert got["pid"] != os.getpid()
    assert len(got["samples"]) == 3 and min(got["samples"]) > 0
    assert got["check_error"] == 0.0
    assert got["import"] > 0 and got["first"] > 0


def test_the_worker_checks_the_engine_it_timed():
    """A compiled engine's float32 results are a few roundings off the reference's: 0 would be
    the reference checked against itself."""
    need("cython")
    row = Row("kernel", "lstm", "train", Shape("tiny", 4, 3, 5, 6))
    spec = {"mode": "time", "row": cases.row_to_json(row), "threads": 1, "budget": 0.01,
            "samples": 3, "min_sample_time": 0.001, "check": True, "engine": "cython"}
    got = report.run_worker(spec, timeout=120)
    assert got.get("error") is None, got
    assert 0 < got["check_error"] < engines.CHECK_RTOL


def test_worker_reports_errors_instead_of_numbers():
    row = Row("kernel", "lstm", "infer", Shape("tiny", 4, 3, 5, 6))
    spec = {"mode": "time", "row": cases.row_to_json(row), "threads": 1, "budget": 0.01,
            "samples": 3, "min_sample_time": 0.001, "engine": "no-such-engine"}
    got = report.run_worker(spec, timeout=120)
    assert "no-such-engine" in got["error"]
    assert "samples" not in got


def test_worker_profiles_the_cython_engine_in_a_fresh_process():
    """``profile``: the cython engine's calls on its kernels' phase clock, per call: the time
    with and without the clock, in the driver, in each phase (and by its threads), in the
    products; another engine gets an error."""
    need("cython")
    row = Row("kernel", "lstm", "train", Shape("tiny", 20, 8, 16, 32))
    spec = {"mode": "profile", "row": cases.row_to_json(row), "threads": 2, "budget": 0.05}
    got = report.run_worker(dict(spec, engine="cython"), timeout=120)
    assert got.get("error") is None, got
    prof = got["profile"]
    assert prof["calls"] >= 3 and prof["threads"] == 2
    assert prof["wall"] > 0 and prof["wall_unclocked"] > 0
    phases, busy = prof["phases"], prof["thread_time"]
    assert phases["forward loop"] > 0 and phases["backward loop"] > 0
    assert phases["dx and weight gradients"] > 0
    assert 0 < sum(phases.values()) <= prof["driver"] <= prof["wall"]
    assert 0 < prof["products"] <= sum(busy.values()) <= 2 * sum(phases.values()) * (1 + 1e-9)
    got = report.run_worker(dict(spec, engine="numpy"), timeout=120)
    assert "needs the cython engine" in got["error"]


@pytest.mark.parametrize("engine", list(ENGINES))
def test_worker_gives_each_engine_the_thread_count(engine):
    """Each engine runs on the benchmark's thread count, as the engine itself reports it:
    fastrnn's pool, NumPy's BLAS (the numpy engine's products), torch's intra-op threads,
    onnxruntime's session, the cores JAX may run on.  One thread, below the machine's two:
    an engine left at its default would report more."""
    need(engine)
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one usable core: every engine's default is one thread")
    row = Row("kernel", "rnn", "infer", Shape("tiny", 4, 3, 5, 6))
    spec = {"mode": "time", "row": cases.row_to_json(row), "threads": 1, "budget": 0.01,
            "samples": 3, "min_sample_time": 0.001, "check": False, "engine": engine}
    got = report.run_worker(spec, timeout=120,
                            extra_env=report.PEER_ENV if ENGINES[engine].peer else None)
    assert got.get("error") is None, got
    assert got["threads"] == 1, got


# -- the report ------------------------------------------------------------------------------
def test_rounds_alternate_their_order(monkeypatch):
    started = []

    def fake(spec, timeout, extra_env=None):
        started.append(spec["engine"])
        return {"samples": [0.001 * (1 + "abc".index(spec["engine"]))], "check_error": 0.0}
    monkeypatch.setattr(report, "run_worker", fake)
    row = cases.kernel_rows(["rnn"], ["infer"], ["stream"])[0]
    got = report.time_row(row, ["a", "b", "c"], Settings(rounds=3), threads=2)
    assert started == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]
    assert got["a"].seconds == 0.001 and got["c"].seconds == 0.003


def test_a_noisy_row_gets_extra_rounds_and_a_quiet_one_does_not(monkeypatch):
    """When an engine's processes spread over NOISY_SPREAD after the rounds, every engine of
    the row runs extra_rounds more, the order still alternating; the report's method line
    says so."""
    times = {}

    def fake(spec, timeout, extra_env=None):
        e = spec["engine"]
        times.setdefault(e, []).append(e)
        noisy = e == "b" and len(times[e]) == 2          # b's second process: twice as slow
        return {"samples": [0.002 if noisy else 0.001]}
    monkeypatch.setattr(report, "run_worker", fake)
    row = cases.kernel_rows(["rnn"], ["infer"], ["stream"])[0]
    got = report.time_row(row, ["a", "b"], Settings(rounds=3, extra_rounds=2), threads=2)
    assert [len(m.runs) for m in got.values()] == [5, 5]
    assert got["b"].spread > report.NOISY_SPREAD and got["b"].seconds == 0.001
    started = []

    def quiet(spec, timeout, extra_env=None):
        started.append(spec["engine"])
        return {"samples": [0.001]}
    monkeypatch.setattr(report, "run_worker", quiet)
    got = report.time_row(row, ["a", "b"], Settings(rounds=3, extra_rounds=2), threads=2)
    assert started == ["a", "b", "b", "a", "a", "b"]
    times.clear()
    monkeypatch.setattr(report, "run_worker", fake)
    got = report.time_row(row, ["a", "b"], Settings(rounds=3, extra_rounds=0), threads=2)
    assert [len(m.runs) for m in got.values()] == [3, 3]
    rep = Report(engines=["a"], unavailable={}, machine=[], settings=Settings(rounds=3,
                 extra_rounds=2), threads=2)
    assert "3 rounds in alternating order (5 for a row where an engine's processes spread " \
           "over 25%)" in rep.markdown()


def test_peers_run_with_glibcs_allocator_and_fastrnn_with_its_own(monkeypatch):
    """A peer's worker imports fastrnn only for the reference weights: FASTRNN_MALLOC=0 keeps
    glibc's allocator, and FASTRNN_BLAS_POOL=0 NumPy's BLAS threads, as the peer's users have
    them; fastrnn's engines run as imported."""
    envs = {}

    def fake(spec, timeout, extra_env=None):
        envs[spec["engine"]] = extra_env
        return {"samples": [0.001]}
    monkeypatch.setattr(report, "run_worker", fake)
    row = cases.kernel_rows(["lstm"], ["infer"], ["stream"])[0]
    report.time_row(row, ["cython", "numba", "torch", "onnxruntime", "jax"], Settings(rounds=1),
                    threads=2)
    assert all(envs[e] == report.PEER_ENV for e in ("torch", "onnxruntime", "jax"))
    assert envs["cython"] is None and envs["numba"] is None
    from fastrnn import _runtime
    code = ("import fastrnn; fastrnn.RNN(2, 3); print(fastrnn._runtime.malloc_tuned(), "
            "bool(fastrnn._runtime.blas_pool_libraries()))")
    glibcs = _runtime.GLIBC_MALLOC_VARIABLES + ("GLIBC_TUNABLES", _runtime.MALLOC_ENV)
    env = {k: v for k, v in os.environ.items() if k not in glibcs}   # (dask's nanny leaves some)
    got = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=dict(env, **extra)).stdout.split()
           for extra in ({}, report.PEER_ENV)]
    glibc = hasattr(os, "confstr") and "glibc" in (os.confstr("CS_GNU_LIBC_VERSION") or "")
    pool = not AVAILABILITY["cython"]      # (NumPy's wheels carry OpenBLAS)
    assert got == [[str(glibc), str(pool)], ["False", "False"]], got


def test_an_engine_that_fails_is_not_started_again(monkeypatch):
    started = []

    def fake(spec, timeout, extra_env=None):
        started.append(spec["engine"])
        return {"error": "CheckError: wrong"} if spec["engine"] == "b" else {"samples": [1.0]}
    monkeypatch.setattr(report, "run_worker", fake)
    row = cases.kernel_rows(["rnn"], ["infer"], ["stream"])[0]
    got = report.time_row(row, ["a", "b"], Settings(rounds=3), threads=2)
    assert started.count("b") == 1 and started.count("a") == 3
    assert got["b"].seconds is None and got["b"].error == "CheckError: wrong"


@pytest.mark.parametrize("engine", PEERS)
def test_a_peers_build_takes_nothing_from_fastrnn_once_prepared(engine, monkeypatch):
    """The worker makes a peer's weights and ONNX model (fastrnn's reference layer) before it
    times the build: the build then runs the peer's own code alone, as its users would."""
    need(engine)
    rows = {(r.kind, r.variant, r.cell): r.reduced() for r in cases.all_rows()
            if ENGINES[engine].supports(r)}
    for row in rows.values():
        engines.prepare(row, engine)

    def refuse(*args, **kwargs):
        raise AssertionError("fastrnn's reference layer made in a peer's build")
    monkeypatch.setattr(engines, "_make", refuse)
    monkeypatch.setattr(engines, "_head", refuse)
    for row in rows.values():
        engines.build(row, engine)


def _measured(**seconds):
    return {e: Measurement(runs=[{"samples": [s]}]) for e, s in seconds.items()}


def _table_rows(text, heading):
    part = text.split(heading, 1)[1].split("###", 1)[0]
    rows = [line for line in part.splitlines() if line.startswith("|") and not line.startswith("|---")]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows]


def test_ratios_are_against_the_best_peer_and_each_peer():
    rep = Report(engines=["numpy", "numba", "cython", "torch", "onnxruntime", "jax"],
                 unavailable={}, machine=[("CPU", "test")], settings=Settings(), threads=2,
                 gemm=[{"gflops": 100.0, "n": 64}],
                 peak=[{"gflops": 200.0, "isa": "avx2"}, {"gflops": 250.0, "isa": "avx2"}])
    row = cases.kernel_rows(["lstm"], ["infer"], ["medium"])[0]
    rep.rows.append((row, _measured(numpy=0.1, numba=0.03, cython=0.02, torch=0.012,
                                    onnxruntime=0.01, jax=0.04)))
    loop = cases.loop_rows()[0]
    rep.rows.append((loop, _measured(numba=0.1, cython=0.2, torch=0.05)))
    text = rep.markdown()
    head, line = _table_rows(text, "### Layers on whole sequences")
    cells = dict(zip(head, line))
    assert cells["fastrnn"] == "cython" and cells["best peer"] == "onnxruntime"
    assert cells["best peer / fastrnn"] == "**0.50x**"
    assert cells["torch / fastrnn"] == "0.60x" and cells["jax / fastrnn"] == "2.00x"
    gflops = row.flops() / 0.02 / 1e9            # its shares of the GEMM ceiling and the peak
    assert cells["GFLOP/s fastrnn (% GEMM, % peak)"] == (
        f"{gflops:.1f} ({gflops / 100:.0%}, {gflops / 250:.0%})")
    head, line = _table_rows(text, "### The README's training loop")
    cells = dict(zip(head, line))
    assert cells["numba"] == f"{64 * 32 / 0.1:,.0f}"        # characters/s
    assert cells["fastrnn"] == "numba" and cells["best peer / fastrnn"] == "**0.50x**"
    assert "float32 GEMM ceiling: 100.0 GFLOP/s" in text
    assert ("float32 multiply-add peak: 250.0 GFLOP/s (avx2 vectors on 2 threads at once"
            in text)                             # the better of the start and the end


def test_the_report_states_what_numba_costs_against_cython():
    """numba's time over cython's, per table, on the rows both ran (median, lowest and highest,
    each named); no such section when they share no row."""
    rep = Report(engines=["numba", "cython", "torch"], unavailable={}, machine=[],
                 settings=Settings(), threads=2)
    k1, k2, k3 = cases.kernel_rows(["lstm"], ["infer"], ["small", "medium", "large"])
    loop = cases.loop_rows()[0]
    rep.rows.append((k1, _measured(numba=0.03, cython=0.02, torch=0.05)))
    rep.rows.append((k2, _measured(numba=0.08, cython=0.02, torch=0.05)))
    rep.rows.append((k3, _measured(numba=0.02, cython=0.02, torch=0.05)))
    rep.rows.append((loop, _measured(cython=0.2, torch=0.05)))      # no numba: not counted
    head, *lines = _table_rows(rep.markdown(), "### numba against cython")
    assert head == ["rows", "count", "numba / cython (median)", "lowest", "highest"]
    assert lines == [["Layers on whole sequences", "3", "1.50x", f"1.00x ({k3.id})",
                      f"4.00x ({k2.id})"]]
    rep.rows = [(loop, _measured(cython=0.2, torch=0.05))]
    assert "numba against cython" not in rep.markdown()


def _tables(text, heading):
    """The markdown tables under ``heading``, each a list of rows of cells (header first)."""
    part = text.split(heading, 1)[1].split("###", 1)[0]
    tables, table = [], []
    for line in part.splitlines() + [""]:
        if line.startswith("|"):
            if not line.startswith("|---"):
                table.append([c.strip() for c in line.strip("|").split("|")])
        elif table:
            tables.append(table)
            table = []
    return tables


def test_the_report_says_which_targets_this_cpu_met_and_profiles_the_misses():
    """The kernel issue's targets, each on its rows: best peer, PyTorch in training, the share
    of the GEMM ceiling at the large shape, the README loop, the LSTMCell step where a core's
    L2 holds its weights (not judged where it does not); the rows that miss one are profiled,
    their time split in shares of the threads' time that add up to the whole."""
    rep = Report(engines=["cython", "torch", "onnxruntime"], unavailable={}, machine=[],
                 settings=Settings(), threads=2, gemm=[{"gflops": 400.0, "n": 64}],
                 peak=[{"gflops": 1000.0, "isa": "avx512"}], l2=2 << 20)
    infer_large, train_large = (cases.kernel_rows(["lstm"], [p], ["large"])[0]
                                for p in ("infer", "train"))
    train_small = cases.kernel_rows(["lstm"], ["train"], ["small"])[0]
    loop128, loop256 = cases.loop_rows()
    step = cases.step_rows(["lstm"], ["infer"], [""])[0]
    rep.rows += [(infer_large, _measured(cython=0.05, torch=0.06, onnxruntime=0.045)),
                 (train_large, _measured(cython=0.1, torch=0.115)),
                 (train_small, _measured(cython=0.01, torch=0.02)),
                 (loop128, _measured(cython=0.1, torch=0.14)),
                 (loop256, _measured(cython=0.1, torch=0.12)),
                 (step, _measured(cython=4e-6, torch=6e-5))]
    flops = train_large.flops()
    rep.profiles[train_large.id] = {
        "wall": 0.1, "wall_unclocked": 0.099, "threads": 2, "driver": 0.098, "products": 0.16,
        "phases": {"forward loop": 0.03, "backward loop": 0.02, "dx and weight gradients": 0.04,
                   "weights packed": 0.002},
        "thread_time": {"forward loop": 0.06, "backward loop": 0.04,
                        "dx and weight gradients": 0.08, "weights packed": 0.004}}
    rep.profiles[loop256.id] = {"error": "ValueError: no"}
    share = infer_large.flops() / 0.05 / 1e9 / 400
    # a missed ratio's share of the multiply-add peak (1000 GFLOP/s) at the target
    at_peer = f"(1.0x: {infer_large.flops() / 0.045 / 1e9 / 1000:.0%} of the peak)"
    at_torch = f"(1.2x: {flops / (0.115 / 1.2) / 1e9 / 1000:.0%} of the peak)"
    (targets,) = _tables(rep.markdown(), "### Targets on this CPU")
    (profiles,) = _tables(rep.markdown(), "### Where the time goes")
    assert targets[0] == ["target", "rows", "met", "missed"]
    assert [line[1:] for line in targets[1:]] == [
        ["3", "2", f"{infer_large.id} 0.90x {at_peer}"],
        ["2", "1", f"{train_large.id} 1.15x {at_torch}"],
        ["2", "1", f"{infer_large.id} {share:.0%}"],
        ["2", "1", f"{loop256.id} 1.20x"],
        ["1", "1", "—"]]
    assert "at least 1.2x PyTorch" in targets[2][0] and "5 µs" in targets[5][0]
    assert rep.missed_rows() == [infer_large, train_large, loop256]
    head, *lines = profiles
    assert head[:3] == ["row", "time per call", "products (rate, % peak)"]
    assert len(lines) == 2                          # infer_large was not profiled
    cells = dict(zip(head, lines[0]))
    assert cells["row"] == f"{train_large.id} (missed)"
    assert cells["time per call"] == "100 ms (99 ms)"
    rate = flops / 0.16 / 1e9
    assert cells["products (rate, % peak)"] == f"80% ({rate:.0f} GFLOP/s a thread, {rate / 500:.0%})"
    assert [cells[k] for k in ("packing", "element-wise and waits", "idle threads", "driver",
                               "outside the kernels")] == ["2%", "10%", "0%", "6%", "2%"]
    assert cells["floor"] == f"{flops / 1e12 * 1e3:.3g} ms ({flops / 1e12 / 0.1:.0%})"
    assert lines[1][:2] == [f"{loop256.id} (missed)", "error: ValueError: no"]
    # the step target where a core's L2 cannot hold LSTMCell(128, 128)'s 516 KiB
    rep.l2 = 512 << 10
    (targets,) = _tables(rep.markdown(), "### Targets on this CPU")
    assert targets[5][1:3] == ["0", "0"]
    assert "does not apply: 516 KiB of weights and biases, a core's L2 512 KiB" in targets[5][3]
    rep.rows[-1] = (step, _measured(cython=6e-6, torch=6e-5))
    rep.l2 = 1 << 20
    (targets,) = _tables(rep.markdown(), "### Targets on this CPU")
    assert targets[5][1:] == ["1", "0", f"{step.id} 6 µs"]
    assert step in rep.missed_rows()
    # a figure whose engines' processes spread over NOISY_SPREAD says so (still a miss)
    rep.rows[0] = (infer_large, {
        "cython": Measurement(runs=[{"samples": [s]} for s in (0.05, 0.07, 0.05)]),
        "torch": Measurement(runs=[{"samples": [0.06]}]),
        "onnxruntime": Measurement(runs=[{"samples": [s]} for s in (0.045, 0.03, 0.045)])})
    (targets,) = _tables(rep.markdown(), "### Targets on this CPU")
    assert targets[1][1:] == ["3", "2", f"{infer_large.id} 0.90x {at_peer} (noisy: cython "
                                        f"40%, onnxruntime 33%)"]
    assert targets[3][3] == f"{infer_large.id} {share:.0%} (noisy: cython 40%)"
    assert infer_large in rep.missed_rows()


def test_a_row_whose_peer_failed_is_not_judged():
    """A peer whose process failed may have been the fastest: the row's ratio targets are not
    judged against the others."""
    rep = Report(engines=["cython", "torch", "jax"], unavailable={}, machine=[],
                 settings=Settings(), threads=2, gemm=[{"gflops": 400.0, "n": 64}],
                 peak=[{"gflops": 1000.0, "isa": "avx512"}])
    row = cases.kernel_rows(["lstm"], ["train"], ["large"])[0]
    measured = _measured(cython=0.19, jax=0.265)
    measured["torch"] = Measurement(runs=[{"error": "CheckError: wrong"}])
    rep.rows.append((row, measured))
    judged = [checked for text, checked in rep.targets() if "best peer" in text or "PyTorch" in text]
    assert len(judged) == 2
    for checked in judged:
        assert checked == [(row, "— (torch: error)", None)]


def test_step_rows_state_their_weights_floor():
    """A step row's floor is its weight traffic over the read bandwidth measured at the size
    of each thread's share of the weights: an inference step reads the weights once, a
    training step moves 3x that at the least."""
    infer, train = cases.step_rows(["lstm"], batches=[""])
    assert (infer.pass_, train.pass_) == ("infer", "train")
    weights = 4 * 4 * 128 * (128 + 128)                     # float32 W_ih and W_hh
    assert infer.weight_bytes() == train.weight_bytes() == weights
    assert (infer.weight_traffic(), train.weight_traffic()) == (weights, 3 * weights)
    kernel = cases.kernel_rows(["lstm"], ["infer"], ["medium"])[0]
    assert kernel.weight_bytes() is None and kernel.weight_traffic() is None
    rep = Report(engines=["cython", "torch"], unavailable={}, machine=[], settings=Settings(),
                 threads=2, gemm=[{"gflops": 100.0, "n": 64}])
    assert rep.core_bytes(infer) == weights // 2 and rep.weights_floor(infer) is None
    rep.bandwidth = [{"gbps": {str(weights // 2): 40.0}}, {"gbps": {str(weights // 2): 50.0}}]
    floor = weights / 2 / 50e9                              # the better of the two readings
    assert rep.weights_floor(infer) == pytest.approx(floor)
    assert rep.weights_floor(train) == pytest.approx(3 * floor)
    assert rep.core_bytes(kernel) is None and rep.weights_floor(kernel) is None
    rep.rows.append((infer, _measured(cython=2 * floor, torch=10 * floor)))
    rep.rows.append((train, _measured(cython=6 * floor, torch=12 * floor)))
    text = rep.markdown()
    assert "%g KiB: 40.0, 50.0 GB/s" % (weights / 2 / 1024) in text
    (head, *lines) = _table_rows(text, "### One cell step")
    cells = [dict(zip(head, line)) for line in lines]
    column = "weights floor (fastrnn, best peer at it)"
    assert cells[0][column] == "%.3g µs (50%%, 10%%)" % (floor * 1e6)
    assert cells[1][column] == "%.3g µs (50%%, 25%%)" % (3 * floor * 1e6)


def test_read_bandwidth_in_a_process_of_its_own():
    got = report.measure_bandwidth(TINY, 1, {4096, 262144})
    assert got.get("error") is None, got
    assert set(got["gbps"]) == {"4096", "262144"}
    # GB/s; at 4 KiB the call's fixed cost outweighs the read, and is taken off no further
    # than 4x the rate of the whole call (no division by a difference of noise)
    assert all(0 < v < 1e4 for v in got["gbps"].values())


def test_busy_machine_is_flagged():
    rep = Report(engines=["numpy"], unavailable={}, machine=[], settings=Settings(), threads=2,
                 cores=2)
    rep.others = 0.1
    assert "busy machine" not in rep.markdown()
    rep.others = 0.6
    text = rep.markdown()
    assert "⚠ busy machine" in text
    assert "used 0.60 of the 2 cores" in text


def test_others_cpu_subtracts_this_process():
    from bench.machine import cpu_counters, others_cpu
    assert others_cpu((100.0, 10.0), (103.0, 12.0), 2.0) == 0.5
    assert others_cpu((100.0, 10.0), (101.0, 12.0), 2.0) == 0.0     # clock granularity
    assert others_cpu((None, 10.0), (None, 12.0), 2.0) is None
    start = cpu_counters()
    sum(i * i for i in range(2_000_000))
    assert cpu_counters()[1] > start[1]


def test_machine_names_the_cpu_and_its_instruction_sets():
    from bench.machine import describe, instruction_sets
    info = dict(describe(2, ["numba", "cython"]))
    assert info["CPU"] and "every engine runs 2 threads" in info["cores"]
    assert info["instruction sets"] == instruction_sets()
    if sys.platform == "linux" and os.uname().machine == "x86_64":
        assert "sse4_2" in info["instruction sets"]
    if not AVAILABILITY["cython"]:
        assert re.match(r"(avx512|avx2|baseline) build", info["cython kernels"])
        l2 = [v for k, v in info.items() if k.startswith("L2 cache of a core")]
        assert len(l2) == 1 and re.fullmatch(r"\d+ KiB|unknown \(teams\)", l2[0])


def test_report_end_to_end_in_fresh_processes(tmp_path):
    """Every kind of row on the reference and one compiled backend, tiny, through the command."""
    need("numba")
    out = tmp_path / "report.md"
    cmd = [sys.executable, "-m", "bench", "--quick", "--rounds", "2", "--engines", "numpy,numba",
           "--cells", "gru", "--passes", "infer", "--shapes", "6x2x3x4", "--kinds", "kernel",
           "--threads", "1", "--no-memory", "-q", "--markdown", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert text in done.stdout
    assert "every engine runs 1 threads" in text and "2 rounds in alternating order" in text
    head, line = _table_rows(text, "### Layers on whole sequences")
    cells = dict(zip(head, line))
    assert cells["row"] == "gru-infer-6x2x3x4" and cells["fastrnn"] == "numba"
    assert re.match(r"[\d.]+ (µs|ms)", cells["numba"])
    assert "float32 GEMM ceiling" in text and "instruction sets" in text
    assert "results were checked against the numpy reference, at the size timed" in text
    need("cython")
    peak = re.search(r"float32 multiply-add peak: ([\d.]+) GFLOP/s \((\w+) vectors on 1 threads",
                     text)
    assert peak and float(peak.group(1)) > 1 and peak.group(2) in ("baseline", "avx2", "avx512")


def test_the_legend_says_whether_the_results_were_checked():
    for checked, words in ((True, "were checked against the numpy reference, at the size timed"),
                           (False, "were not checked against the numpy reference (--no-check)")):
        rep = Report(engines=["numpy"], unavailable={}, machine=[], settings=TINY, threads=1,
                     checked=checked)
        assert words in " ".join(rep._legend())


def test_the_gemm_ceiling_runs_on_the_engines_thread_count():
    """The ceiling is BLAS's on the threads the engines get, not on every core."""
    got = report.measure_gemm(dataclasses.replace(TINY, gemm_n=256), threads=1)
    assert got.get("error") is None and got["gflops"] > 0 and got["blas_threads"] == 1, got


def test_a_run_profiles_the_rows_that_miss_a_target(monkeypatch):
    """run_report profiles each missed row the cython engine ran, in a process of its own, or
    every row (``--profile all``), or none (``--profile none``); the report shows each profile,
    a missed row marked."""
    need("cython")
    row, other = (Row("kernel", "gru", "train", Shape(name, 6, 4, 3, 8)) for name in ("a", "b"))
    monkeypatch.setattr(Report, "missed_rows", lambda self: [row])
    parse = report.build_parser().parse_args
    assert report.settings_from(parse([])).profile == "missed"
    for choice, want in (("missed", {row.id}), ("none", set()), ("all", {row.id, other.id})):
        assert report.settings_from(parse(["--quick", "--profile", choice])).profile == choice
        rep = report.run_report([row, other], ["cython"],
                                dataclasses.replace(TINY, profile=choice), threads=2)
        assert set(rep.profiles) == want
        assert all(p["products"] > 0 for p in rep.profiles.values()), rep.profiles
    (head, *lines), = _tables(rep.markdown(), "### Where the time goes")
    assert head[0] == "row" and [line[0] for line in lines] == [f"{row.id} (missed)", other.id]
    assert all(re.match(r"\d+% \(", line[2]) for line in lines)
    with pytest.raises(ValueError, match="profile must be one of"):
        Settings(profile="some")


def test_report_memory_rows(monkeypatch):
    row = Row("kernel", "rnn", "train", Shape("tiny", 4, 3, 5, 6))
    got = report.measure_memory(row, ["numpy"], threads=1, timeout=120)
    assert got["numpy"].get("error") is None, got
    assert got["numpy"]["rss_peak"] >= 0


def test_command_line_errors():
    for args, what in ((["--engines", "nope"], "--engines"), (["--kinds", "x"], "--kinds"),
                       (["--shapes", "1x2"], "--shapes"), (["--threads", "0"], "--threads"),
                       (["--extra-rounds", "-1"], "--extra-rounds"),
                       (["--profile", "some"], "--profile"),
                       (["--kinds", "loop", "--cells", "gru"], "no row has --kinds loop"),
                       (["--kinds", "step", "--cells", "rnn"], "no row has --kinds step")):
        done = subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True,
                              text=True, cwd=ROOT, timeout=60)
        assert done.returncode == 2 and what in done.stderr, (args, done.stderr)


def test_help_names_every_option():
    """``--help`` prints every option with its help text (argparse %-formats help strings, so a
    stray percent sign in one breaks ``--help`` alone)."""
    parser = report.build_parser()
    text = parser.format_help()
    for action in parser._actions:
        assert any(opt in text for opt in action.option_strings), action
    assert f"{report.NOISY_SPREAD * 100:.0f}% of their median" in text


# -- the scale-out rows (dask) --------------------------------------------------------------------
def need_dask():
    reason = scaleout_available()
    if reason:
        if required("FASTRNN_REQUIRE_DASK"):
            pytest.fail(f"dask is required here (FASTRNN_REQUIRE_DASK=1) but cannot run: {reason}")
        pytest.skip(f"dask cannot run: {reason}")


def scaleout_available():
    from bench import scaleout
    return scaleout.available()


def test_scaleout_rows_in_fresh_processes(monkeypatch):
    """Both scale-out rows at a tiny size: one process and 1- and 2-worker LocalClusters, each
    in a process of its own, every figure there and the report's section built from them."""
    need_dask()
    from bench import scaleout
    monkeypatch.setattr(scaleout, "INFER_CHUNK", 50)
    infer = Row("dask", "lstm", "infer", Shape("dask", 3, 200, 4, 8))
    train = Row("dask", "lstm", "train", Shape("dask", 3, 32, 4, 8))
    got = [(r, scaleout.measure(r, threads=1, rounds=1, repeats=1, timeout=300))
           for r in (infer, train)]
    (_, mi), (_, mt) = got
    assert set(mi) == set(mt) == {"process", "cluster1", "cluster2"}
    for m in (mi, mt):
        assert not [v["error"] for v in m.values() if "error" in v], m
    assert {"seconds", "round_trip", "per_task"} <= set(mi["cluster2"])
    assert set(mt["cluster2"]) == {"step", "worker", "driver"}
    assert 0 < mt["cluster2"]["worker"] < mt["cluster2"]["step"]
    text = "\n".join(scaleout.markdown(got, 1))
    assert "Batch inference" in text and "Data-parallel training step" in text
    assert "t(n) = C/n + D + a + b·n" in text


def test_scaleout_model_fits_one_and_two_workers():
    """t(n) = C/n + D + a + b n through the 2-worker step, with b the growth of communication."""
    from bench import scaleout
    m = {"process": {"step": 0.050},
         "cluster1": {"step": 0.100, "worker": 0.060, "driver": 0.010},     # comm 30 ms
         "cluster2": {"step": 0.080, "worker": 0.030, "driver": 0.010}}     # comm 40 ms
    fit = scaleout.model(m)
    assert fit["b"] == pytest.approx(0.010) and fit["a"] == pytest.approx(0.020)
    assert fit["C"] == pytest.approx(0.060) and fit["D"] == pytest.approx(0.010)
    assert fit["predicted"][2] == pytest.approx(0.080)
    assert fit["predicted"][4] == pytest.approx(0.015 + 0.010 + 0.020 + 0.040)
    assert scaleout.model({"process": {"step": 1.0}, "cluster1": {"error": "x"}}) is None


def test_dask_is_a_kind_of_the_command_line():
    args = report.build_parser().parse_args([])
    assert "dask" in args.kinds
    rows = report.select_rows(["dask"], ["lstm"], ["train"], [])
    assert rows and all(r.kind == "dask" and r.pass_ == "train" for r in rows)
