"""What is specific to the cython backend's kernels (the contract they share with the other
backends is tested in test_kernel_contract.py, on each build): eval-mode input projection in
chunks, argument checks and layouts, the memory of a backward, the float32 activation
approximation (error bound, saturation, NaN/inf), BLAS's thread count, on every build of the
kernels this machine can use (baseline, AVX2, AVX-512), and the choice between the builds
(``FASTRNN_CYTHON_ISA``).

The module skips when the extension is not built, unless
FASTRNN_REQUIRE_BACKENDS names ``cython``: then it fails.
"""

import concurrent.futures
import json
import os
import platform
import subprocess
import sys
import sysconfig
import time

import numpy as np
import pytest

import fastrnn
from fastrnn import reference as ref
from fastrnn.celltypes import CELL_TYPES

from helpers import KERNEL_CASES as CASES, H, I, make_lengths, make_states, make_weights

_REQUIRED = "cython" in [b.strip() for b in os.environ.get("FASTRNN_REQUIRE_BACKENDS", "").split(",")]
_status = fastrnn.backends()["cython"]
if not _status["available"]:
    if _REQUIRED:
        raise ImportError(f"the cython backend is required (FASTRNN_REQUIRE_BACKENDS) but "
                          f"unavailable: {_status['reason']}")
    pytest.skip(f"cython backend not built: {_status['reason']}", allow_module_level=True)

from fastrnn import _cython  # noqa: E402

#: the builds of the kernels under test: every one this machine can use, and, when the
#: backend is required, every one setup.py makes here that the CPU runs (then a missing
#: one fails, through load(), instead of leaving its tests out)
ISAS = [isa for isa in _cython.ISAS if isa in _cython.available_isas()
        or (_REQUIRED and isa in _cython.expected_isas())]


@pytest.fixture(scope="module", params=ISAS)
def cy(request):
    """The kernel module of one build (the tests below run on each), with the size of the L2
    cache unknown to it, so that the small batches of the team tests run on a team whatever
    the machine's cache (test_weights_in_l2_split_the_batch_instead_of_the_units)."""
    module = _cython.load(request.param)
    before = module.l2_cache_bytes(0)
    yield module
    module.l2_cache_bytes(before)


DTYPES = [np.float32, np.float64]


def kernels(module, cell):
    return tuple(getattr(module, f"{cell}_{k}") for k in ("forward", "backward", "step_forward",
                                                             "step_backward"))


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("lengths", [None, "ragged"])
def test_eval_forward_in_chunks(cy, case, lengths):
    """Eval mode projects the input a bounded chunk of steps at a time: same result as training."""
    rng = np.random.default_rng(7)
    cell, opts, _ = CASES[case]
    T, B, hidden = 300, 64, 16                       # T*B*G over the chunk size (2**20)
    weights, P = make_weights(case, np.float64, "both", rng, hidden=hidden)
    x = rng.standard_normal((T, B, I))
    hx = make_states(case, B, P, np.float64, rng, hidden=hidden)
    lens = make_lengths(lengths, B, T, rng)
    cf = getattr(cy, f"{cell}_forward")
    y, hy, _ = cf(x, hx, weights, lens, True, **opts)
    before = fastrnn.get_num_threads()
    try:
        fastrnn.set_num_threads(1)     # (a batch split over threads projects all steps at once)
        ye, hye, _ = cf(x, hx, weights, lens, False, **opts)
    finally:
        fastrnn.set_num_threads(before)
    np.testing.assert_allclose(ye, y, rtol=0, atol=1e-12)
    for a, b in zip(hye, hy):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    ry, rhy, _ = getattr(ref, f"{cell}_forward")(x, hx, weights, lens, False, **opts)
    np.testing.assert_allclose(y, ry, rtol=0, atol=1e-9)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("B", [1, 16])     # 16: the input weights are packed (and cached) too
def test_eval_forward_sees_weights_edited_in_place(cy, case, B):
    """Eval-mode forwards reuse the packed weights of the last call while the weights are unchanged
    byte for byte: one element edited in place, in any weight, gives the new result, bit for bit
    what fresh arrays of the same values give."""
    rng = np.random.default_rng(11)
    cell, opts, _ = CASES[case]
    weights, P = make_weights(case, np.float32, "both", rng)
    x = rng.standard_normal((12, B, I)).astype(np.float32)
    hx = make_states(case, B, P, np.float32, rng)
    forward = getattr(cy, f"{cell}_forward")
    for w in weights:
        if w is None:
            continue
        y1, _, _ = forward(x, hx, weights, None, False, **opts)
        y2, _, _ = forward(x, hx, weights, None, False, **opts)
        np.testing.assert_array_equal(y2, y1)
        for _ in range(20):   # an element whose edit shows in the output (ReLU may hide one)
            w[np.unravel_index(rng.integers(w.size), w.shape)] += np.float32(0.25)
            y3, _, _ = forward(x, hx, weights, None, False, **opts)
            fresh = tuple(None if v is None else v.copy() for v in weights)
            y4, _, _ = forward(x, hx, fresh, None, False, **opts)
            np.testing.assert_array_equal(y3, y4)
            if not np.array_equal(y4, y1):
                break
        assert not np.array_equal(y3, y1)


def test_packed_weights_cache_from_several_threads(cy):
    """Threads calling eval forwards on weights of the same shape, some edited in between, each
    get the result of their own weights (entries are replaced, never changed in place)."""
    from concurrent.futures import ThreadPoolExecutor
    rng = np.random.default_rng(9)
    x = rng.standard_normal((6, 1, I)).astype(np.float32)
    hx = (np.zeros((1, H), np.float32), np.zeros((1, H), np.float32))
    weights = [make_weights("lstm", np.float32, "both", rng)[0] for _ in range(4)]

    def work(k):
        w = weights[k]
        for i in range(40):
            if k % 2 and i % 10 == 0:              # this thread's weights change now and then
                w[1][0, 0] += np.float32(0.125)
            y, _, _ = cy.lstm_forward(x, hx, w, None, False)
            fresh = tuple(None if v is None else v.copy() for v in w)
            want, _, _ = cy.lstm_forward(x, hx, fresh, None, False)
            np.testing.assert_array_equal(y, want)
        return True

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(work, range(4)))


def test_packed_weights_cache_is_bounded(cy):
    """Every new weight array gets an entry (a copy and the packed form); the oldest go first
    once they take more than 64 MB."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 1, 8)).astype(np.float32)
    hx = (np.zeros((1, 512), np.float32), np.zeros((1, 512), np.float32))
    cy._forget_packs()
    for k in range(12):     # each: W_hh 4 MB, its copy 4 MB, packed 4 MB
        w = (rng.standard_normal((2048, 8)).astype(np.float32),
             rng.standard_normal((2048, 512)).astype(np.float32), None, None, None, None)
        cy.lstm_forward(x, hx, w, None, False)
        if k == 0:   # the packed weights are whole (a misaligned buffer once gave an empty view)
            assert cy._packs_size() == (2, 2 * (w[0].nbytes + w[1].nbytes))   # W_ih and W_hh
    entries, size = cy._packs_size()
    assert 2 < entries < 24 and size <= 64 << 20
    cy._forget_packs()
    assert cy._packs_size() == (0, 0)


# ---------------------------------------------------------------------------------------
# small batches: the hidden units split over a team of threads
# ---------------------------------------------------------------------------------------
#: whole panels of the micro-kernel on every build and dtype (4 to 32 columns), an odd
#: number of them where they are 32 wide (5: the members get 2 and 3)
TEAM_HIDDEN = 160


def team_expected(case):
    """Whether the team runs the case's eval forwards (not with the LSTM projection, nor the
    GRU with the reset gate before its product, which needs all of r before that product)."""
    cell, opts, proj = CASES[case]
    return not proj and opts.get("reset_after", True)


def team_inputs(case, dtype, T, B, rng):
    """(cell, opts, weights, P, x, hx) of a case at TEAM_HIDDEN units, W_hh scaled so that the
    states stay bounded for 400 steps."""
    cell, opts, _ = CASES[case]
    weights, P = make_weights(case, dtype, "both", rng, hidden=TEAM_HIDDEN)
    weights[1][...] *= dtype(2 / np.sqrt(P))
    x = rng.standard_normal((T, B, I)).astype(dtype)
    hx = make_states(case, B, P, dtype, rng, hidden=TEAM_HIDDEN)
    return cell, opts, weights, P, x, hx


def assert_same_forward(got, want):
    """A forward's (y, hy) bit for bit those of another."""
    for a, b in zip([want[0], *want[1]], [got[0], *got[1]]):
        np.testing.assert_array_equal(b, a)


def on_one_thread_and_on(cy, threads, call):
    """``call()`` on one thread, then on ``threads``: (its result on one, its result on
    ``threads``, whether a team ran the second); the thread count is restored."""
    before = fastrnn.get_num_threads()
    try:
        fastrnn.set_num_threads(1)
        want = call()
        fastrnn.set_num_threads(threads)
        teams = cy.team_stats()
        got = call()
        return want, got, cy.team_stats() > teams
    finally:
        fastrnn.set_num_threads(before)


def on_each_chunk_size_and_thread_count(cy, sizes, call):
    """``call()`` with the products' chunks of each of ``sizes`` bytes (block_bytes), on one
    thread and on two: the list of its results; the chunk size and thread count are restored."""
    results = []
    before, block = fastrnn.get_num_threads(), cy.block_bytes()
    try:
        for nbytes in sizes:
            cy.block_bytes(nbytes)
            assert cy.block_bytes() == nbytes
            for threads in (1, 2):
                fastrnn.set_num_threads(threads)
                results.append(call())
    finally:
        fastrnn.set_num_threads(before)
        cy.block_bytes(block)
    return results


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B, T, lengths", [(1, 30, None), (3, 30, "ragged"),
                                           (5, 400, None),    # 5 x 640 x 400 > 2**18: in chunks
                                           (16, 40, "ragged"), (64, 12, None)])
def test_small_batches_split_the_hidden_units_over_a_team(cy, case, dtype, B, T, lengths):
    """Eval forwards of a batch too small to split by rows, or of up to TEAM_MAX_ROWS (32)
    sequences a member, run on a team of two threads that split the hidden units: bit for bit
    the results of one thread (which multiplies the input step by step from B = 8), and the
    reference's."""
    rng = np.random.default_rng(21)
    cell, opts, weights, P, x, hx = team_inputs(case, dtype, T, B, rng)
    lens = make_lengths(lengths, B, T, rng)
    forward = getattr(cy, f"{cell}_forward")
    want, got, team_ran = on_one_thread_and_on(
        cy, 2, lambda: forward(x, hx, weights, lens, False, **opts))
    assert team_ran == team_expected(case)
    assert_same_forward(got, want)
    ry, rhy, _ = getattr(ref, f"{cell}_forward")(x, hx, weights, lens, False, **opts)
    tol = dict(rtol=1e-5, atol=2e-4) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got[0], ry, **tol)
    for a, b in zip(got[1], rhy):      # (the LSTM's c grows past 50 with the projection)
        np.testing.assert_allclose(a, b, **tol)


def _l2_from_sysfs():
    """One core's L2 cache in bytes as Linux's sysfs gives it, or None."""
    import glob
    for d in sorted(glob.glob("/sys/devices/system/cpu/cpu0/cache/index*")):
        try:
            with open(f"{d}/level") as f:
                level = f.read().strip()
            with open(f"{d}/type") as f:
                kind = f.read().strip()
            with open(f"{d}/size") as f:
                size = f.read().strip()
        except OSError:
            continue
        if level == "2" and kind in ("Unified", "Data"):
            units = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}
            return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
    return None


@pytest.mark.parametrize("case", ["lstm", "gru", "rnn_tanh"])
def test_weights_in_l2_split_the_batch_instead_of_the_units(cy, case):
    """An eval forward of a batch that splits over the threads runs split by batch, not on a
    team, when all its weights fit in one core's L2 cache with room to spare (each thread then
    reads them from its own cache anyway): bit for bit the team's results and one thread's.  A
    batch of 1 (it cannot be split), weights too large, or an unknown cache keep the team."""
    rng = np.random.default_rng(8)
    cell, opts, weights, P, x, hx = team_inputs(case, np.float32, 20, 16, rng)
    forward = getattr(cy, f"{cell}_forward")
    size = sum(w.nbytes for w in weights[:2])         # 105 to 422 KB at TEAM_HIDDEN units
    before = cy.l2_cache_bytes()

    def run(l2, batch):
        cy.l2_cache_bytes(l2)
        return on_one_thread_and_on(cy, 2, lambda: forward(
            x[:, :batch], tuple(h[:batch] for h in hx), weights, None, False, **opts))

    try:
        for l2, batch, team in [(0, 16, True), (size + (384 << 10), 16, False),
                                (size + (384 << 10) - 1, 16, True),
                                (size + (384 << 10), 1, True), (64 << 20, 16, False)]:
            want, got, team_ran = run(l2, batch)
            assert team_ran == team, (l2, batch)
            assert_same_forward(got, want)
            if l2 == 0 and batch == 16:
                first = got
            elif batch == 16:
                assert_same_forward(got, first)
    finally:
        cy.l2_cache_bytes(before)
    with pytest.raises(ValueError, match="n must be at least 0, but got -1"):
        cy.l2_cache_bytes(-1)


def test_the_l2_cache_is_the_one_the_system_names():
    """The kernels know the machine's L2 cache from the C library, which agrees with Linux's
    sysfs where both give it (0 only where the library gives nothing)."""
    kernels = _cython.load(ISAS[0])
    got, sysfs = kernels.l2_cache_bytes(), _l2_from_sysfs()
    if sys.platform.startswith("linux") and sysfs is not None:
        assert got in (0, sysfs)
        assert got == sysfs or platform.machine() not in ("x86_64", "AMD64")
    assert got >= 0


@pytest.mark.parametrize("case", ["rnn_tanh", "lstm", "lstm_proj_peepholes_clip", "gru",
                                  "gru_reset_before", "lstm_acts"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training, B", [(False, 3), (False, 12), (True, 12)])
def test_a_ragged_batch_gives_each_sequence_the_bits_it_has_alone(cy, case, dtype, training, B):
    """With lengths, a step multiplies only the rows of the sequences still running (gathered
    into a block of their own, live_mm), and so do the input projection of all steps and dx
    (live_rows_mm): each sequence of a ragged batch gets the outputs, final states and
    (training) input and initial-state gradients it gets alone in a batch of one, bit for bit,
    zeros past its length; on two threads (eval: B = 3 on a team that splits the hidden units,
    12 split by rows; training split by rows, the parts sharing the running rows), lengths T,
    1 and 2 in the batch's first rows."""
    rng = np.random.default_rng(5)
    cell, opts, weights, P, x, hx = team_inputs(case, dtype, 30, B, rng)
    lens = make_lengths("ragged", B, 30, rng)
    lens[2] = 2
    forward, backward = getattr(cy, f"{cell}_forward"), getattr(cy, f"{cell}_backward")
    dy = rng.standard_normal(x.shape[:2] + (P,)).astype(dtype)
    dhy = tuple(rng.standard_normal(h.shape).astype(dtype) for h in hx)

    def run(x, hx, lens, dy, dhy):
        y, hy, saved = forward(x, hx, weights, lens, training, **opts)
        if not training:
            return (y,) + tuple(hy)
        dweights = tuple(None if w is None else np.zeros_like(w) for w in weights)
        dx, dh0 = backward(dy, dhy, saved, dweights)
        return (y,) + tuple(hy) + (dx,) + tuple(dh0)

    before = fastrnn.get_num_threads()
    try:
        fastrnn.set_num_threads(2)
        batch = run(x, hx, lens, dy, dhy)
        for b in range(B):
            one = lambda v: v[b:b + 1]                     # noqa: E731
            alone = run(x[:, b:b + 1], tuple(map(one, hx)), lens[b:b + 1], dy[:, b:b + 1],
                        tuple(map(one, dhy)))
            for k, (got, want) in enumerate(zip(batch, alone)):
                # outputs and input gradients are (T, B, ...), states and their gradients (B, ...)
                part = got[:, b:b + 1] if got.ndim == 3 else got[b:b + 1]
                np.testing.assert_array_equal(part, want, err_msg=f"sequence {b}, result {k}")
        for b in range(B):
            np.testing.assert_array_equal(batch[0][lens[b]:, b], 0)
            if training:
                np.testing.assert_array_equal(batch[len(hx) + 1][lens[b]:, b], 0)   # dx
    finally:
        fastrnn.set_num_threads(before)


def sparse_x(dtype, T, B, in_size, rng):
    """A one-hot input of ``in_size`` features (1/8 or less of it not zero): values 1 and 2.5,
    an all-zero row (padding) and a row of two entries."""
    x = np.zeros((T * B, in_size), dtype)
    x[np.arange(T * B), rng.integers(0, in_size, T * B)] = rng.choice([1, 2.5], T * B)
    x[5] = 0
    x[7, :2] = (-1.5, 0.5)
    return x.reshape(T, B, in_size)


@pytest.mark.parametrize("case", ["rnn_tanh", "lstm", "lstm_proj_peepholes_clip", "gru",
                                  "gru_reset_before", "lstm_acts"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training, B, threads, lengths", [
    (False, 3, 1, "ragged"),     # the input projected for all steps at once
    (False, 12, 2, "ragged"),    # a team: its members project their units' columns
    (False, 66, 2, "ragged"),    # split by rows, the input multiplied step by step
    (True, 3, 2, "ragged"),      # all steps at once, in parts (of the running rows)
    (True, 12, 2, None)])        # step by step; the weight gradients split by gates, in
                                 # blocks of 256 rows
def test_a_sparse_input_gives_the_bits_of_the_dense_products(cy, case, dtype, training, B,
                                                             threads, lengths):
    """An input with at most 1/8 of it not zero (one-hot characters) is multiplied over its
    entries alone, forward (x @ W_ih^T) and backward (dW_ih += dA^T x): outputs, states and every
    gradient bit for bit those of the dense products.  Inputs with a full first row, or more
    than 1/8 not zero, take the dense products; so does a W_ih with a NaN (which then reaches
    every output, as it does there)."""
    rng = np.random.default_rng(8)
    in_size, T = 24, 30
    cell, opts, _ = CASES[case]
    weights, P = make_weights(case, dtype, "both", rng, in_size=in_size, hidden=TEAM_HIDDEN)
    weights[1][...] *= dtype(2 / np.sqrt(P))
    x = sparse_x(dtype, T, B, in_size, rng)
    hx = make_states(case, B, P, dtype, rng, hidden=TEAM_HIDDEN)
    lens = make_lengths(lengths, B, T, rng)
    forward, backward = getattr(cy, f"{cell}_forward"), getattr(cy, f"{cell}_backward")
    dy = rng.standard_normal((T, B, P)).astype(dtype)
    dhy = tuple(rng.standard_normal(h.shape).astype(dtype) for h in hx)

    def run(weights, sparse):
        was = cy._use_sparse_inputs(sparse)
        calls = cy.sparse_stats()
        try:
            y, hy, saved = forward(x, hx, weights, lens, training, **opts)
            results = (y,) + tuple(hy)
            if training:
                dweights = tuple(None if w is None else np.zeros_like(w) for w in weights)
                dx, dh0 = backward(dy, dhy, saved, dweights)
                results += (dx,) + tuple(dh0) + tuple(d for d in dweights if d is not None)
            return results, cy.sparse_stats() - calls
        finally:
            cy._use_sparse_inputs(was)

    before = fastrnn.get_num_threads()
    try:
        fastrnn.set_num_threads(threads)
        got, sparse_calls = run(weights, True)
        want, dense_calls = run(weights, False)
        assert (sparse_calls, dense_calls) == (1, 0)
        for k, (g, w) in enumerate(zip(got, want)):
            np.testing.assert_array_equal(g, w, err_msg=f"result {k}")
        # dense inputs, the products as stored: the first row full, or 1/6 of the rest
        first_full, crowded = x.copy(), x.copy()
        first_full[0, 0] = 1
        crowded.reshape(-1, in_size)[1::2, :6] = 0.5
        for dense in (first_full, crowded):
            calls = cy.sparse_stats()
            forward(dense, hx, weights, lens, training, **opts)
            assert cy.sparse_stats() == calls
        nan_weights = tuple(None if w is None else w.copy() for w in weights)
        nan_weights[0][0, 3] = np.nan
        got, sparse_calls = run(nan_weights, True)
        assert sparse_calls == 0
        running = slice(None) if lens is None else lens > 1
        assert np.isnan(got[0][1, running]).all()       # (W_ih's NaN, then W_hh's product)
    finally:
        fastrnn.set_num_threads(before)


@pytest.mark.parametrize("case", ["lstm", "gru", "rnn_tanh"])
def test_a_team_that_cannot_start_leaves_the_call_on_one_thread(cy, case):
    """A call of 16 sequences that chose a team but finds it cannot run (no thread could be
    had, or another call started first) runs on one thread, with the team's chunked input
    projection (in chunks here: 16 x 4H x 400 steps > 2**18): bit for bit the results of one
    thread.  So do four Python threads calling at once."""
    rng = np.random.default_rng(5)
    cell, opts, weights, P, x, hx = team_inputs(case, np.float32, 400, 16, rng)
    forward = getattr(cy, f"{cell}_forward")
    before = fastrnn.get_num_threads()
    try:
        cy._refuse_teams(1)         # (a call on one thread chooses no team: the second takes it)
        want, refused, team_ran = on_one_thread_and_on(
            cy, 2, lambda: forward(x, hx, weights, None, False, **opts))
        assert not team_ran
        fastrnn.set_num_threads(2)

        def calls(_):
            return [forward(x[:40], hx, weights, None, False, **opts) for _ in range(10)]

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            concurrent_calls = [r for rs in pool.map(calls, range(4)) for r in rs]
        fastrnn.set_num_threads(1)
        want_40 = forward(x[:40], hx, weights, None, False, **opts)
    finally:
        cy._refuse_teams(0)
        fastrnn.set_num_threads(before)
    assert_same_forward(refused, want)
    for got in concurrent_calls:
        assert_same_forward(got, want_40)


@pytest.mark.parametrize("case", ["rnn_relu", "lstm_input_forget_peepholes", "gru_acts"])
@pytest.mark.parametrize("threads", [3, 64])
def test_teams_of_more_members_and_of_more_threads_than_panels(cy, case, threads):
    """Three members (uneven shares of panels), and a member per panel when there are more
    threads than panels (more members than cores: the barrier yields the core): the results of
    one thread, bit for bit."""
    rng = np.random.default_rng(8)
    cell, opts, weights, P, x, hx = team_inputs(case, np.float32, 30, 3, rng)
    lens = make_lengths("ragged", 3, 30, rng)
    forward = getattr(cy, f"{cell}_forward")
    want, got, team_ran = on_one_thread_and_on(
        cy, threads, lambda: forward(x, hx, weights, lens, False, **opts))
    assert team_ran
    assert_same_forward(got, want)


@pytest.mark.parametrize("case", [c for c in CASES if team_expected(c)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sparse", [False, True])
def test_a_member_that_lags_has_its_input_projected_by_the_other(cy, case, dtype, sparse):
    """While a member waits at the barrier after a step, it projects the next chunk's input
    onto the other's units: with the last member lagging at every step, the other makes some
    of its pieces, and the results stay bit for bit those of one thread (ragged lengths; 16 x
    160 x 600 > 5 * 2**18: 5 chunks or more for every cell; a one-hot x too, over its
    entries alone)."""
    rng = np.random.default_rng(5)
    cell, opts, weights, P, x, hx = team_inputs(case, dtype, 600, 16, rng)
    if sparse:   # 16 one-hot columns (a sparse x has at least SPARSE_DENSITY)
        w_ih = make_weights(case, dtype, "both", rng, in_size=16, hidden=TEAM_HIDDEN)[0][0]
        weights = (w_ih,) + tuple(weights[1:])
        x = np.eye(16, dtype=dtype)[rng.integers(0, 16, x.shape[:2])]
    lens = make_lengths("ragged", 16, 600, rng)
    forward = getattr(cy, f"{cell}_forward")
    sparse_calls = cy.sparse_stats()
    cy._lag_teams(100)
    try:
        for _ in range(3):   # (the threads' timing is the host's: up to 3 calls to see a steal)
            steals = cy.team_steals()
            want, got, team_ran = on_one_thread_and_on(
                cy, 2, lambda: forward(x, hx, weights, lens, False, **opts))
            assert team_ran
            assert_same_forward(got, want)
            if cy.team_steals() > steals:
                break
    finally:
        cy._lag_teams(0)
    assert cy.team_steals() > steals
    assert (cy.sparse_stats() > sparse_calls) == sparse


@pytest.mark.parametrize("case", ["rnn_tanh", "lstm_peepholes", "gru"])
def test_a_team_sees_weights_edited_in_place(cy, case):
    """A team takes its packed weights from the cache and its members compare their rows with
    the copies they were packed from: an element edited in place, in either weight and in
    either member's rows, gives the new result, bit for bit what fresh arrays give."""
    rng = np.random.default_rng(4)
    cell, opts, weights, P, x, hx = team_inputs(case, np.float32, 30, 1, rng)
    forward = getattr(cy, f"{cell}_forward")
    before = fastrnn.get_num_threads()
    try:
        fastrnn.set_num_threads(2)
        teams = cy.team_stats()
        y0 = forward(x, hx, weights, None, False, **opts)[0]
        for w in weights[:2]:
            for row in (0, w.shape[0] - 1):         # the first member's rows, the last one's
                w[row, -1] += np.float32(0.5)
                y = forward(x, hx, weights, None, False, **opts)[0]
                fresh = tuple(None if v is None else v.copy() for v in weights)
                np.testing.assert_array_equal(y, forward(x, hx, fresh, None, False, **opts)[0])
                assert not np.array_equal(y, y0)
                y0 = y
        assert cy.team_stats() > teams
    finally:
        fastrnn.set_num_threads(before)


#: hidden sizes whose one step is well over the smallest a team takes (TEAM_ONE_STEP_FLOPS:
#: 60 kFLOP), with several panels of units for each member
STEP_HIDDEN = {"rnn": 512, "lstm": 320, "gru": 320}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", [1, 3])
def test_one_step_splits_its_products_over_a_team(cy, case, dtype, B):
    """An eval step of a batch of at most 4 (a cell's step, or a sequence of one step) makes its
    two products on a team that splits their rows: bit for bit the results of one thread (and
    of the one-step sequence), and the reference's."""
    rng = np.random.default_rng(13)
    cell, opts, _ = CASES[case]
    hidden = STEP_HIDDEN[cell]
    weights, P = make_weights(case, dtype, "both", rng, hidden=hidden)
    weights[1][...] *= dtype(2 / np.sqrt(P))
    x = rng.standard_normal((B, I)).astype(dtype)
    hx = make_states(case, B, P, dtype, rng, hidden=hidden)
    step = getattr(cy, f"{cell}_step_forward")
    before = fastrnn.get_num_threads()
    try:
        fastrnn.set_num_threads(1)
        want, _ = step(x, hx, weights, False, **opts)
        fastrnn.set_num_threads(2)
        teams = cy.team_stats()
        got, _ = step(x, hx, weights, False, **opts)
        _, seq, _ = getattr(cy, f"{cell}_forward")(x[None], hx, weights, None, False, **opts)
        assert (cy.team_stats() >= teams + 2) == team_expected(case)
    finally:
        fastrnn.set_num_threads(before)
    for a, b, c in zip(want, got, seq):
        np.testing.assert_array_equal(b, a)
        np.testing.assert_array_equal(c, a)
    ref_hy, _ = getattr(ref, f"{cell}_step_forward")(x, hx, weights, False, **opts)
    tol = dict(rtol=1e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for a, b in zip(got, ref_hy):
        np.testing.assert_allclose(a, b, **tol)


# ---------------------------------------------------------------------------------------
# prepared eval steps (<cell>_step_plan): the cells' eval-mode steps call them first
# ---------------------------------------------------------------------------------------
def plan_inputs(case, dtype, B, rng, hidden=H):
    """(cell, opts, weights, x (B, I), hx) of a case."""
    cell, opts, _ = CASES[case]
    weights, P = make_weights(case, dtype, "both", rng, hidden=hidden)
    return cell, opts, weights, rng.standard_normal((B, I)).astype(dtype), \
        make_states(case, B, P, dtype, rng, hidden=hidden)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hidden, B", [(H, 1), (H, 6), (STEP_HIDDEN["lstm"], 1),
                                       (STEP_HIDDEN["lstm"], 3)])
def test_a_step_plan_is_the_eval_step_kernel_bit_for_bit(cy, case, dtype, hidden, B):
    """plan(x, hx) gives what <cell>_step_forward gives in eval mode, bit for bit, on one
    thread and on two (the larger hidden size runs on a team), batched and unbatched."""
    rng = np.random.default_rng(31)
    cell, opts, weights, x, hx = plan_inputs(case, dtype, B, rng, hidden)
    plan = getattr(cy, f"{cell}_step_plan")(weights, **opts)
    step = getattr(cy, f"{cell}_step_forward")
    before = fastrnn.get_num_threads()
    try:
        for threads in (1, 2):
            fastrnn.set_num_threads(threads)
            want, _ = step(x, hx, weights, False, **opts)
            got = plan(x, hx)
            assert type(got) is tuple and len(got) == len(want)
            for a, b in zip(want, got):
                assert b.dtype == dtype and b.shape == a.shape and b.flags.c_contiguous
                np.testing.assert_array_equal(b, a)
            if B == 1:
                flat = plan(x[0], tuple(h[0] for h in hx))
                for a, b in zip(want, flat):
                    assert b.shape == a.shape[1:]
                    np.testing.assert_array_equal(b, a[0])
    finally:
        fastrnn.set_num_threads(before)


def test_a_step_plan_declines_what_it_does_not_take_as_it_is(cy):
    """Anything but C-contiguous arrays of the weights' dtype and of matching shapes, in a tuple
    of the cell's states, gets None (the caller's checked path then converts or raises): it
    never raises, converts, or reads past what it was given."""
    rng = np.random.default_rng(32)
    _, _, weights, x, (h, c) = plan_inputs("lstm_peepholes", np.float32, 3, rng)
    plan = cy.lstm_step_plan(weights)
    assert plan(x, (h, c)) is not None

    class Sub(np.ndarray):
        pass

    declined = {
        "x a list": (x.tolist(), (h, c)),
        "x float64": (x.astype(np.float64), (h, c)),
        "x big-endian": (x.astype(">f4"), (h, c)),
        "c big-endian": (x, (h, c.astype(">f4"))),
        "x a subclass": (x.view(Sub), (h, c)),
        "x not contiguous": (np.asfortranarray(x), (h, c)),
        "x of another input size": (x[:, :-1].copy(), (h, c)),
        "x 3-D": (x[None], (h, c)),
        "x 0-D": (np.float32(1.0), (h, c)),
        "x of no rows": (x[:0], (h[:0], c[:0])),
        "hx a list": (x, [h, c]),
        "hx of one state": (x, (h,)),
        "hx of three states": (x, (h, c, c)),
        "h None": (x, (None, c)),
        "c of another batch": (x, (h, c[:2].copy())),
        "h of another width": (x, (h[:, :-1].copy(), c)),
        "h float64": (x, (h.astype(np.float64), c)),
        "h a strided view": (x, (np.repeat(h, 2, axis=1)[:, ::2], c)),
        "h 1-D with batched x": (x, (h[0], c[0])),
        "x 1-D with batched states": (x[0], (h[:1], c[:1])),
        "hx None": (x, None),
    }
    for what, (xa, hx) in declined.items():
        assert plan(xa, hx) is None, what
    x.flags.writeable = False                       # read-only arrays are taken as they are
    np.testing.assert_array_equal(plan(x, (h, c))[0], cy.lstm_step_forward(x, (h, c), weights,
                                                                           False)[0][0])


def test_a_step_plan_reads_the_weights_at_every_call(cy):
    """A plan keeps the caller's arrays, not copies: an edit in place is in the next call."""
    rng = np.random.default_rng(33)
    cell, opts, weights, x, hx = plan_inputs("gru", np.float32, 2, rng)
    plan = cy.gru_step_plan(weights, **opts)
    y0 = plan(x, hx)[0]
    for w in weights:
        w[-1] += np.float32(0.25)
        y = plan(x, hx)[0]
        fresh = tuple(v.copy() for v in weights)
        np.testing.assert_array_equal(y, cy.gru_step_forward(x, hx, fresh, False)[0][0])
        assert not np.array_equal(y, y0)
        y0 = y


def test_no_step_plan_over_copies_of_the_weights(cy):
    """Weights that are not all C-contiguous arrays of one float dtype (a copy would be what
    the plan reads) get no plan; bad options raise as the step kernel's do."""
    rng = np.random.default_rng(34)
    _, _, weights, _, _ = plan_inputs("lstm", np.float32, 1, rng)
    assert cy.lstm_step_plan(weights) is not None
    assert cy.lstm_step_plan(list(weights)) is not None
    assert cy.lstm_step_plan((np.asfortranarray(weights[0]),) + weights[1:]) is None
    assert cy.lstm_step_plan((weights[0].tolist(),) + weights[1:]) is None
    assert cy.lstm_step_plan((weights[0].astype(np.int32),) + weights[1:]) is None
    assert cy.lstm_step_plan(weights[:2] + (weights[2].astype(np.float64),) + weights[3:]) is None
    assert cy.lstm_step_plan(()) is None
    with pytest.raises(ValueError, match="weights must be a tuple of 6"):
        cy.lstm_step_plan(weights[:4])
    with pytest.raises(TypeError, match="input_forget"):
        cy.lstm_step_plan(weights, input_forget="yes")
    with pytest.raises(ValueError, match="clip"):
        cy.lstm_step_plan(weights, clip=-1.0)
    with pytest.raises(ValueError, match="nonlinearity"):
        cy.rnn_step_plan(make_weights("rnn_tanh", np.float32, "both", rng)[0],
                         nonlinearity="sigmoid")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", [1, 3, 5, 64, 65])
def test_step_products_cover_every_remainder_of_rows_and_inputs(cy, dtype, B):
    """A step's products at a batch of at most 64 are dot products of each weight row with
    each sequence's input and state (fastrnn_mm.h's fr_dots_cols: 4 rows by 3 or 2 sequences
    at a time, or for one sequence a vector's width of rows where the compiler has shuffles,
    then 4, then one; vectors over the inputs, then the inputs left over), above 64 BLAS's
    GEMM: every count of rows (H) and of inputs (I) around those widths matches the
    reference, in eval and training forwards, on one thread and on two."""
    rng = np.random.default_rng(11)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    before = fastrnn.get_num_threads()
    try:
        for H in (1, 2, 3, 5, 7, 9, 17, 33, 64):
            for I in (1, 7, 8, 15, 16, 17, 33):
                weights = [rng.uniform(-0.5, 0.5, s).astype(dtype)
                           for s in ((H, I), (H, H), (H,), (H,))]
                x = rng.standard_normal((B, I)).astype(dtype)
                hx = (rng.standard_normal((B, H)).astype(dtype),)
                want, _ = ref.rnn_step_forward(x, hx, weights, False)
                for threads, training in ((1, False), (2, False), (2, True)):
                    fastrnn.set_num_threads(threads)
                    got, _ = cy.rnn_step_forward(x, hx, weights, training)
                    np.testing.assert_allclose(got[0], want[0], **tol, err_msg=f"H={H} I={I}")
    finally:
        fastrnn.set_num_threads(before)


@pytest.mark.parametrize("dtype", DTYPES)
def test_step_product_of_a_row_has_the_same_bits_in_any_group_of_rows(cy, dtype):
    """fr_dots sums a row's products the same way whether the row goes in a vector's width of
    rows (their sums reduced together, FR_TREE), in 4 or alone: with a zero state (so W_hh
    adds exact zeros), unit j of an RNN step over H units has the bits of the same unit
    computed as a layer of one unit, for every j of every H around those group sizes."""
    rng = np.random.default_rng(12)
    for I in (16, 35, 128):
        x = rng.standard_normal((1, I)).astype(dtype)
        for H in (4, 8, 13, 16, 24, 37):
            w_ih = rng.uniform(-0.5, 0.5, (H, I)).astype(dtype)
            b = rng.uniform(-0.5, 0.5, (H,)).astype(dtype)
            weights = (w_ih, np.zeros((H, H), dtype), b, np.zeros(H, dtype))
            got, _ = cy.rnn_step_forward(x, (np.zeros((1, H), dtype),), weights, False)
            for j in range(H):
                one = (w_ih[j:j + 1].copy(), np.zeros((1, 1), dtype), b[j:j + 1].copy(),
                       np.zeros(1, dtype))
                alone, _ = cy.rnn_step_forward(x, (np.zeros((1, 1), dtype),), one, False)
                assert got[0][0, j].tobytes() == alone[0][0, 0].tobytes(), (I, H, j)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", [2, 3, 4, 5, 8])
def test_step_of_a_sequence_has_the_same_bits_in_any_batch(cy, dtype, B):
    """fr_dots_cols takes the sequences of a batch 3 or 2 at a time and the last one alone,
    each sum the same way: sequence b of an LSTM step over a batch of B (up to 64; eval, on
    a team of two, and training, on one thread) has the bits of the same sequence stepped
    alone, whichever group it falls in."""
    rng = np.random.default_rng(13)
    _, _, weights, _, _ = plan_inputs("lstm", dtype, 1, rng, hidden=STEP_HIDDEN["lstm"])
    I, H = weights[0].shape[1], weights[1].shape[1]
    x = rng.standard_normal((B, I)).astype(dtype)
    hx = tuple(rng.standard_normal((B, H)).astype(dtype) for _ in range(2))
    before, runs = fastrnn.get_num_threads(), cy.team_stats()
    try:
        fastrnn.set_num_threads(2)
        for training in (False, True):
            (h, c), _ = cy.lstm_step_forward(x, hx, weights, training)
            for b in range(B):
                (h1, c1), _ = cy.lstm_step_forward(x[b:b + 1], tuple(v[b:b + 1] for v in hx),
                                                   weights, training)
                assert (h[b].tobytes() == h1[0].tobytes()
                        and c[b].tobytes() == c1[0].tobytes()), (training, b)
    finally:
        fastrnn.set_num_threads(before)
    assert cy.team_stats() > runs        # the eval steps ran on a team


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["rnn_tanh", "lstm_proj", "gru_reset_before"])
def test_gradients_after_the_loop_cover_every_remainder_of_rows_columns_and_steps(cy, dtype, case):
    """The products after the time loop: the weight and bias gradients (fastrnn_mm.h's
    fr_wgrad2: W += D^T B over the T*B rows, and db += D's column sums as D is packed; tiles
    of 12 or 6 rows of W, then 4, then 1, over panels of 2 vectors of B's columns, then the
    partial panel; blocks of 256 rows of D and B, packed, and of 60-126 rows of W, here
    crossed by the rows of one thread at H = 29 and 45) and dx = D W_ih (fr_mm from w_ih
    packed, over more than one step): every count of rows (the gates: H), of columns (I, and H
    for W_hh) and of rows T*B around those sizes matches the reference, and two threads (which
    split the rows of W, and of dx) give the bits of one (dx on BLAS, split by rows, did not at
    I = 161 and 257)."""
    rng = np.random.default_rng(17)
    cell, opts, proj = CASES[case]
    tol = dict(rtol=2e-4, atol=2e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-11)
    before = fastrnn.get_num_threads()
    # one thread for these small products; the larger ones (6*T*B*G*I from 1e7 FLOPs, the
    # kernels' PARALLEL_MIN_FLOPS) go to two, each with its share of the rows of W
    shapes = [(H_, I_, 1, 2) for H_ in (1, 3, 5, 13) for I_ in (1, 9, 33)]
    shapes += [(H_, I_, T, B) for H_, I_ in ((29, 257), (45, 161))
               for T, B in ((255, 1), (257, 1), (43, 12))]
    try:
        for hidden, in_size, T, B in shapes:
            weights, P = make_weights(case, dtype, "both", rng, in_size=in_size, hidden=hidden)
            weights = tuple(None if w is None else w * dtype(0.5) for w in weights)
            x = rng.standard_normal((T, B, in_size)).astype(dtype)
            hx = make_states(case, B, P, dtype, rng, hidden=hidden)
            dy = rng.standard_normal((T, B, P)).astype(dtype)
            dhy = tuple(np.zeros_like(h) for h in hx)
            results = []
            for threads in (1, 2):
                fastrnn.set_num_threads(threads)
                _, _, saved = getattr(cy, f"{cell}_forward")(x, hx, weights, None, True, **opts)
                dweights = tuple(None if w is None else np.zeros_like(w) for w in weights)
                dx, _ = getattr(cy, f"{cell}_backward")(dy, dhy, saved, dweights)
                results.append((dx,) + dweights)
            _, _, rsaved = getattr(ref, f"{cell}_forward")(x, hx, weights, None, True, **opts)
            want = tuple(None if w is None else np.zeros_like(w) for w in weights)
            dx, _ = getattr(ref, f"{cell}_backward")(dy, dhy, rsaved, want)
            for k, (a, b, w) in enumerate(zip(*results, (dx,) + want)):
                if w is None:
                    continue
                name = "dx" if k == 0 else f"weight {k - 1}"
                where = f"{name}, H={hidden} I={in_size} T={T} B={B}"
                np.testing.assert_array_equal(b, a, err_msg=where)
                np.testing.assert_allclose(a, w, **tol, err_msg=where)
    finally:
        fastrnn.set_num_threads(before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_a_training_call_packs_its_weights_on_its_threads(cy, dtype, case):
    """A training forward and backward pack their copies of the weights (w_hh, w_ih, w_hr, the
    GRU's w_hn; transposed for the forward) in a phase of their own, each matrix's panels split
    between the threads: here over more than PARALLEL_MIN_FLOPS (10 MFLOP), so on both, with
    panels that do not divide evenly and a last panel that is partial (37 hidden units, 45
    inputs).  Two threads give one thread's bits, and in float64 the reference's results (in
    float32 a pre-activation at a kink of hard_sigmoid, one bit apart, moves a gradient by
    0.01 over these 100 steps)."""
    rng = np.random.default_rng(29)
    cell, opts, _ = CASES[case]
    T, B, in_size, hidden = 100, 32, 45, 37    # the RNN: 2*T*B*H*I = 10.7 MFLOP
    weights, P = make_weights(case, dtype, "both", rng, in_size=in_size, hidden=hidden)
    weights = tuple(None if w is None else w * dtype(0.5) for w in weights)
    x = rng.standard_normal((T, B, in_size)).astype(dtype)
    hx = make_states(case, B, P, dtype, rng, hidden=hidden)
    dy = rng.standard_normal((T, B, P)).astype(dtype)
    dhy = tuple(rng.standard_normal(h.shape).astype(dtype) for h in hx)

    def train():
        y, hy, saved = getattr(cy, f"{cell}_forward")(x, hx, weights, None, True, **opts)
        dweights = tuple(None if w is None else np.zeros_like(w) for w in weights)
        dx, dhx = getattr(cy, f"{cell}_backward")(dy, dhy, saved, dweights)
        return (y, *hy, dx, *dhx) + dweights

    one, two, _ = on_one_thread_and_on(cy, 2, train)
    y, hy, rsaved = getattr(ref, f"{cell}_forward")(x, hx, weights, None, True, **opts)
    want = tuple(None if w is None else np.zeros_like(w) for w in weights)
    dx, dhx = getattr(ref, f"{cell}_backward")(dy, dhy, rsaved, want)
    for k, (a, b, w) in enumerate(zip(one, two, (y, *hy, dx, *dhx) + want)):
        if w is not None:
            np.testing.assert_array_equal(b, a, err_msg=f"result {k}")
            if dtype == np.float64:
                np.testing.assert_allclose(a, w, rtol=1e-9, atol=1e-10, err_msg=f"result {k}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_a_training_forward_projects_the_input_of_a_few_steps_at_once(cy, dtype, case):
    """A training forward of a batch of 8 or more without lengths multiplies its rows of the
    input of INPUT_GROUP (4) steps at a time (rowmm_groups), the last group shorter when T is
    not a multiple of 4: the outputs and states are bit for bit those of an eval forward (one
    step at a time), and the reference's; the gradients are the reference's."""
    rng = np.random.default_rng(37)
    cell, opts, _ = CASES[case]
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    B = 9
    weights, P = make_weights(case, dtype, "both", rng)
    weights = tuple(None if w is None else w * dtype(0.5) for w in weights)
    forward = getattr(cy, f"{cell}_forward")
    for T in (1, 3, 4, 6, 9):
        x = rng.standard_normal((T, B, I)).astype(dtype)
        hx = make_states(case, B, P, dtype, rng)
        dy = rng.standard_normal((T, B, P)).astype(dtype)
        dhy = tuple(rng.standard_normal(h.shape).astype(dtype) for h in hx)
        y, hy, saved = forward(x, hx, weights, None, True, **opts)
        ye, hye, _ = forward(x, hx, weights, None, False, **opts)
        dweights = tuple(None if w is None else np.zeros_like(w) for w in weights)
        dx, dhx = getattr(cy, f"{cell}_backward")(dy, dhy, saved, dweights)
        ry, rhy, rsaved = getattr(ref, f"{cell}_forward")(x, hx, weights, None, True, **opts)
        want = tuple(None if w is None else np.zeros_like(w) for w in weights)
        rdx, rdhx = getattr(ref, f"{cell}_backward")(dy, dhy, rsaved, want)
        for k, (a, b) in enumerate(zip((y, *hy), (ye, *hye))):
            np.testing.assert_array_equal(a, b, err_msg=f"T={T}, result {k}")
        for k, (a, w) in enumerate(zip((y, *hy, dx, *dhx) + dweights,
                                       (ry, *rhy, rdx, *rdhx) + want)):
            if w is not None:
                np.testing.assert_allclose(a, w, **tol, err_msg=f"T={T}, result {k}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(CASES))
def test_the_batch_of_a_time_loop_follows_the_pace_of_its_threads(cy, dtype, case):
    """The two slices of a training call's time loops split the batch by their measured pace
    (loop_split): with slice 1 made to lag, the next calls (within 16) give it fewer rows,
    forward and backward, at most 1/8 of an equal share fewer, and the results are bit for bit
    those of equal shares; with lengths the shares stay equal.  While no pace is known (here,
    forgotten) the shares are equal."""
    rng = np.random.default_rng(31)
    cell, opts, _ = CASES[case]
    B, in_size, hidden = 40, 24, 64
    weights, P = make_weights(case, dtype, "both", rng, in_size=in_size, hidden=hidden)
    T = 40 if P == hidden else 150      # loops of over 10 MFLOP: the RNN's 2*T*B*H*H = 13
    weights = tuple(None if w is None else w * dtype(0.5) for w in weights)
    x = rng.standard_normal((T, B, in_size)).astype(dtype)
    hx = make_states(case, B, P, dtype, rng, hidden=hidden)
    dy = rng.standard_normal((T, B, P)).astype(dtype)
    dhy = tuple(rng.standard_normal(h.shape).astype(dtype) for h in hx)
    lens = make_lengths("ragged", B, T, rng)

    def train(lengths=None):
        y, hy, saved = getattr(cy, f"{cell}_forward")(x, hx, weights, lengths, True, **opts)
        dweights = tuple(None if w is None else np.zeros_like(w) for w in weights)
        dx, dhx = getattr(cy, f"{cell}_backward")(dy, dhy, saved, dweights)
        return [v for v in (y, *hy, dx, *dhx) + dweights if v is not None]

    before = fastrnn.get_num_threads()
    try:
        fastrnn.set_num_threads(2)
        cy.loop_pace(True, forget=True)
        start = time.perf_counter()
        even = train()
        spent = time.perf_counter() - start
        even_lens = train(lens)
        assert cy.loop_pace() == ([20, 20], [20, 20])
        cy.loop_pace(True, forget=True)
        # slice 1 lags at least 200 us a row (4 ms a loop), and at least as long as a row of
        # both loops took (a slow build's loops: it is then twice as slow, well past the cap;
        # a fixed lag left the float64 baseline build's slowest case at 21 rows on a busy host)
        cy._lag_loops(max(200000, int(spent / 20 * 1e9)))
        seen = []
        for _ in range(16):       # (a call whose other slice also lags, as on a busy machine,
            got = train()         # moves the running means less: the next calls catch up)
            seen.append(cy.loop_pace())
            for k, (a, b) in enumerate(zip(even, got)):
                np.testing.assert_array_equal(b, a, err_msg=f"result {k}, {seen[-1]}")
            if seen[-1] == ([22, 18], [22, 18]):
                break
        assert seen[-1] == ([22, 18], [22, 18]), seen
        got = train(lens)
        assert cy.loop_pace() == ([20, 20], [20, 20])
        for k, (a, b) in enumerate(zip(even_lens, got)):
            np.testing.assert_array_equal(b, a, err_msg=f"result {k} with lengths")
    finally:
        cy._lag_loops(0)
        cy.loop_pace(True, forget=True)
        fastrnn.set_num_threads(before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case, hidden", [("lstm", 300), ("gru", 400), ("gru", 1400)])
def test_products_over_many_gates_go_in_blocks_of_rows_of_the_weights(cy, dtype, case, hidden):
    """The backward's dh = D W_hh and dx = D W_ih multiply over the G = 3H or 4H gate columns
    of D: past fr_block_bytes / (bytes of a panel row of the widest tile's panels) gates, with
    the 256 KB of a small L2 cache 1024 with AVX-512, 4096 with AVX2, 8192 with the baseline's
    SSE (here 1200, and 4200 for the GRU at H = 1400), fastrnn_mm.h's fr_mm takes the rows of
    the packed weights in blocks, each tile adding block after block; with the 1 MB of a 2 MB
    cache, 4 times as many rows and as many columns in a chunk: the reference's gradients, and
    the same bits on one thread and two, with either."""
    rng = np.random.default_rng(23)
    cell, opts, _ = CASES[case]
    tol = dict(rtol=2e-4, atol=2e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-11)
    T, B = 3, 13                                 # tiles of 5, 4 and 4 rows
    weights, P = make_weights(case, dtype, "both", rng, hidden=hidden)
    weights = tuple(None if w is None else w * dtype(0.5) for w in weights)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    hx = make_states(case, B, P, dtype, rng, hidden=hidden)
    dy = rng.standard_normal((T, B, P)).astype(dtype)
    dhy = tuple(rng.standard_normal(h.shape).astype(dtype) for h in hx)

    def gradients():
        _, _, saved = getattr(cy, f"{cell}_forward")(x, hx, weights, None, True, **opts)
        dweights = tuple(None if w is None else np.zeros_like(w) for w in weights)
        dx, dhx = getattr(cy, f"{cell}_backward")(dy, dhy, saved, dweights)
        return (dx, *dhx) + dweights

    results = on_each_chunk_size_and_thread_count(cy, (256 << 10, 1 << 20), gradients)
    _, _, rsaved = getattr(ref, f"{cell}_forward")(x, hx, weights, None, True, **opts)
    want = tuple(None if w is None else np.zeros_like(w) for w in weights)
    dx, dhx = getattr(ref, f"{cell}_backward")(dy, dhy, rsaved, want)
    for k, (*got, w) in enumerate(zip(*results, (dx, *dhx) + want)):
        if w is not None:
            for n, b in enumerate(got[1:]):
                np.testing.assert_array_equal(b, got[0], err_msg=f"result {k}, run {n + 1}")
            np.testing.assert_allclose(got[0], w, **tol, err_msg=f"result {k}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("training", [False, True])
def test_the_chunks_of_the_weights_a_product_keeps_in_l2_leave_the_bits_unchanged(
        cy, dtype, case, training):
    """fastrnn_mm.h's products take the packed weights in chunks of fr_block_bytes (half of a
    core's L2 cache, 256 KB to 1 MB), each chunk going over all the tiles of rows, and a product
    of a few rows by weights larger than that, in smaller chunks, each tile asking for the next
    chunk (fr_ahead: here with 512 KB and 1 MB, W_ih^T and W_hh^T 1.1 to 1.5 MB), and more rows
    than fill half of L2 by weights of more than two chunks in blocks of rows (with 256 KB and
    512 KB, and 1 MB in float64: the input's products and dx over 240 or 120 rows at K = 300 to
    1200, blocks of 27 to 218 rows, or of whole steps of a slice): a forward (the input's
    products over all T*B rows, or 4 steps at a time, and each step's) and a backward give the
    same bits with chunks of each size, on one thread and on two."""
    rng = np.random.default_rng(41)
    cell, opts, _ = CASES[case]
    T, B, hidden = 6, 40, 300          # W_ih^T and W_hh^T of 300 rows by 300 to 1200 columns
    weights, P = make_weights(case, dtype, "both", rng, in_size=300, hidden=hidden)
    weights = tuple(None if w is None else w * dtype(0.5) for w in weights)
    x = rng.standard_normal((T, B, 300)).astype(dtype)
    hx = make_states(case, B, P, dtype, rng, hidden=hidden)
    dy = rng.standard_normal((T, B, P)).astype(dtype)
    dhy = tuple(rng.standard_normal(h.shape).astype(dtype) for h in hx)

    def call():
        y, hy, saved = getattr(cy, f"{cell}_forward")(x, hx, weights, None, training, **opts)
        got = [y, *hy]
        if training:
            dweights = tuple(None if w is None else np.zeros_like(w) for w in weights)
            dx, dhx = getattr(cy, f"{cell}_backward")(dy, dhy, saved, dweights)
            got += [dx, *dhx] + [w for w in dweights if w is not None]
        return got

    block = cy.block_bytes()
    runs = on_each_chunk_size_and_thread_count(cy, (256 << 10, 512 << 10, 1 << 20), call)
    for n, got in enumerate(runs[1:]):
        for k, (a, b) in enumerate(zip(runs[0], got)):
            np.testing.assert_array_equal(a, b, err_msg=f"result {k}, run {n + 1}")
    ry, rhy, _ = getattr(ref, f"{cell}_forward")(x, hx, weights, None, False, **opts)
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    for k, (a, w) in enumerate(zip(runs[0], (ry, *rhy))):
        np.testing.assert_allclose(a, w, **tol, err_msg=f"result {k}")
    for bad in (0, (256 << 10) - 1, (1 << 20) + 1):
        with pytest.raises(ValueError, match=f"n must be from 262144 to 1048576 bytes, but "
                                             f"got {bad}"):
            cy.block_bytes(bad)
    assert cy.block_bytes() == block


@pytest.mark.parametrize("isa", ISAS)
def test_the_chunks_of_the_weights_are_half_the_l2_cache(isa):
    """As a process starts, each build keeps chunks of half of the L2 cache it knows, from
    256 KB (also where it knows none) to 1 MB."""
    code = ("from fastrnn import _cython; k = _cython.load(%r); "
            "print(k.l2_cache_bytes(), k.block_bytes())" % isa)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    l2, block = int(out[0]), int(out[1])
    assert block == min(max(l2 // 2, 256 << 10), 1 << 20)


def test_a_team_is_left_out_where_it_would_cost_more_than_it_saves(cy):
    """No team for a small product per step (RNN(64, 64)) or a small step alone (16 kFLOP),
    units that are not whole panels, one thread, a training forward, or a batch of more than
    TEAM_MAX_ROWS (32) sequences a member."""
    rng = np.random.default_rng(2)
    before = fastrnn.get_num_threads()

    def teams_for(cell, hidden, threads=2, training=False, T=100, B=1):
        fastrnn.set_num_threads(threads)
        case = cell if cell != "rnn" else "rnn_tanh"
        weights, P = make_weights(case, np.float32, "both", rng, in_size=64, hidden=hidden)
        x = rng.standard_normal((T, B, 64)).astype(np.float32)
        hx = make_states(case, B, P, np.float32, rng, hidden=hidden)
        start = cy.team_stats()
        getattr(cy, f"{cell}_forward")(x, hx, weights, None, training)
        # (whether a team ran: one that finds the cache's pack of an earlier, freed array at the
        # same address stale runs again)
        return int(cy.team_stats() > start)

    try:
        assert teams_for("lstm", 128) == 1
        assert teams_for("rnn", 64) == 0
        assert teams_for("lstm", 130) == 0
        assert teams_for("lstm", 128, threads=1) == 0
        assert teams_for("lstm", 128, training=True) == 0
        assert teams_for("lstm", 128, T=2) == 0            # 0.3 MFLOP in all
        assert teams_for("rnn", 64, T=1) == 0              # one step of 16 kFLOP
        assert teams_for("lstm", 128, T=1) == 1            # one step of 0.2 MFLOP
        assert teams_for("lstm", 512, T=1) == 1            # one step of 2.6 MFLOP
        assert teams_for("lstm", 128, T=10, B=64) == 1     # 32 sequences a thread
        assert teams_for("lstm", 128, T=10, B=65) == 0     # more: the batch is split
        assert teams_for("lstm", 128, T=10, B=96, threads=3) == 1
        assert teams_for("lstm", 128, T=10, B=64, training=True) == 0
    finally:
        fastrnn.set_num_threads(before)


# ---------------------------------------------------------------------------------------
# argument handling
# ---------------------------------------------------------------------------------------
def test_non_contiguous_and_mixed_layouts(cy):
    rng = np.random.default_rng(5)
    weights, P = make_weights("gru", np.float64, "both", rng)
    x = rng.standard_normal((4, 3, I))
    hx = make_states("gru", 3, P, np.float64, rng)
    fortran = tuple(np.asfortranarray(w) for w in weights)
    strided_x = np.repeat(x, 2, axis=2)[:, :, ::2]
    y1, _, _ = cy.gru_forward(x, hx, weights)
    y2, _, _ = cy.gru_forward(strided_x, hx, fortran)
    np.testing.assert_array_equal(y1, y2)
    # a step_norms buffer that is not C-contiguous is filled too
    _, _, saved = cy.gru_forward(x, hx, weights)
    norms = np.zeros((3, 4)).T
    cy.gru_backward(np.ones_like(y1), (np.zeros((3, H)),), saved,
                    tuple(np.zeros_like(w) for w in weights), norms)
    assert np.all(norms > 0)


@pytest.mark.parametrize("bad", ["x_rank", "w_ih_cols", "h0_shape", "c0_shape", "lengths_shape",
                                 "w_hr_shape", "dy_shape", "dtype"])
def test_bad_arguments_raise_instead_of_crashing(cy, bad):
    rng = np.random.default_rng(0)
    weights, P = make_weights("lstm_proj", np.float64, "both", rng)
    x = rng.standard_normal((4, 2, I))
    hx = list(make_states("lstm_proj", 2, P, np.float64, rng))
    weights = list(weights)
    lens = None
    if bad == "x_rank":
        x = x[0]
    elif bad == "w_ih_cols":
        weights[0] = weights[0][:, :-1]
    elif bad == "h0_shape":
        hx[0] = hx[0][:, :-1]
    elif bad == "c0_shape":
        hx[1] = hx[1][:1]
    elif bad == "lengths_shape":
        lens = np.array([4, 4, 4])
    elif bad == "w_hr_shape":
        weights[4] = weights[4].T
    elif bad == "dtype":
        x = x.astype(np.int64)
    if bad == "dy_shape":
        y, hy, saved = cy.lstm_forward(x, tuple(hx), tuple(weights))
        dweights = tuple(None if w is None else np.zeros_like(w) for w in weights)
        with pytest.raises(ValueError, match="dy"):
            cy.lstm_backward(y[:, :1], hy, saved, dweights)
        with pytest.raises(ValueError, match="step_norms"):
            cy.lstm_backward(y, hy, saved, dweights, np.zeros((2, 4)))
        cy.lstm_backward(y, hy, saved, dweights)   # the refused calls did not use the record up
        return
    with pytest.raises((ValueError, TypeError)):
        cy.lstm_forward(x, tuple(hx), tuple(weights), lens)


@pytest.mark.parametrize("case", list(CASES))
def test_backward_allocates_no_gate_sized_buffer(cy, case):
    """The backward writes the gate gradients over the forward's gate store and adds the weight
    gradients into the caller's buffers: beyond dx and dhx (with a projection, the dh_t rows
    for dW_hr) it allocates no T*B*gates buffer, nor any weight-sized one."""
    import tracemalloc
    rng = np.random.default_rng(4)
    cell, opts, proj = CASES[case]
    gates = CELL_TYPES[cell].gates
    T, B, hidden = 50, 16, 32
    weights, P = make_weights(case, np.float64, "both", rng, hidden=hidden)
    x = rng.standard_normal((T, B, I))
    hx = make_states(case, B, P, np.float64, rng, hidden=hidden)
    cf, cb, _, _ = kernels(cy, cell)
    y, hy, saved = cf(x, hx, weights, None, True, **opts)
    dhy = tuple(np.ones_like(h) for h in hy)
    dweights = tuple(None if w is None else np.zeros_like(w) for w in weights)
    results = 8 * (T * B * I + sum(h.size for h in hy) + (T * B * P if proj else 0))
    gate_buffer = 8 * T * B * gates * hidden
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        got = cb(y, dhy, saved, dweights)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert got[0].shape == x.shape
    assert peak < results + gate_buffer // 2, (peak, results, gate_buffer)


# ---------------------------------------------------------------------------------------
# the float32 activations
# ---------------------------------------------------------------------------------------
def test_approx_activations_error_bound(cy):
    """Max |approx - exact| over a dense grid (every float32 in [-1, 1] at a stride, and beyond)."""
    grid = np.concatenate([
        np.linspace(-12, 12, 2_000_001, dtype=np.float32),
        np.linspace(-1, 1, 2_000_001, dtype=np.float32),
        np.float32(1e-3) * np.linspace(-1, 1, 100_001, dtype=np.float32),
    ])
    exact = np.tanh(grid.astype(np.float64))
    err_tanh = np.max(np.abs(cy.activation("tanh", grid).astype(np.float64) - exact))
    sig_exact = 1 / (1 + np.exp(-grid.astype(np.float64)))
    err_sig = np.max(np.abs(cy.activation("sigmoid", grid).astype(np.float64) - sig_exact))
    print(f"float32 approximation: max abs error tanh {err_tanh:.3g}, sigmoid {err_sig:.3g}")
    assert err_tanh <= cy.APPROX_MAX_ABS_ERR
    assert err_sig <= cy.APPROX_MAX_ABS_ERR / 2 + 1e-7
    # at least as good as the float32 rounding scale, and far inside the parity tolerance
    assert err_tanh < 2e-5


def test_approx_activations_saturate_and_propagate_nan(cy):
    big = np.array([8, 10, 100, 1e4, 3.4e38, np.inf], dtype=np.float32)
    t = cy.activation("tanh", np.concatenate([big, -big]))
    np.testing.assert_allclose(t, np.r_[np.ones(6), -np.ones(6)], rtol=0, atol=cy.APPROX_MAX_ABS_ERR)
    np.testing.assert_array_equal(t[2:6], 1)     # |x| > 9.02: exactly +-1
    np.testing.assert_array_equal(t[8:], -1)
    assert np.all(np.abs(t) <= 1)
    s = cy.activation("sigmoid", np.array([20, 1e4, np.inf, -20, -1e4, -np.inf], dtype=np.float32))
    np.testing.assert_array_equal(s, [1, 1, 1, 0, 0, 0])
    assert np.all((s >= 0) & (s <= 1))
    for name in ("tanh", "sigmoid", "relu"):
        for dtype in DTYPES:
            out = cy.activation(name, np.array([np.nan, 0.5], dtype=dtype))
            assert np.isnan(out[0]) and not np.isnan(out[1]), (name, dtype)
    # odd symmetry and (up to rounding) monotonicity of the approximation
    x = np.linspace(-9, 9, 200_001, dtype=np.float32)
    t = cy.activation("tanh", x)
    np.testing.assert_array_equal(t, -t[::-1])
    assert np.all(np.diff(t) >= -cy.APPROX_MAX_ABS_ERR)   # monotonic up to the error bound


def test_float64_activations_are_exact(cy):
    x = np.linspace(-30, 30, 10_001)
    np.testing.assert_allclose(cy.activation("tanh", x), np.tanh(x), rtol=1e-15, atol=1e-16)
    sig = ref._common.sigmoid(x)
    np.testing.assert_allclose(cy.activation("sigmoid", x), sig, rtol=1e-15, atol=1e-300)


@pytest.mark.parametrize("spec", [
    *(name for name in ("sigmoid", "tanh", "relu", "affine", "leaky_relu", "thresholded_relu",
                        "scaled_tanh", "hard_sigmoid", "elu", "softsign", "softplus")),
    ("affine", -0.5, 0.25), ("leaky_relu", 0.0), ("thresholded_relu", -0.5),
    ("scaled_tanh", 0.0, 2.0), ("scaled_tanh", -1.5, 0.8), ("hard_sigmoid", 1 / 6, 0.5),
    ("elu", 0.0), ("elu", 2.5)])
def test_activation_rows_follow_the_table(cy, spec):
    """The generic rows of the activations option, one function at a time, against
    fastrnn.activations: the forward (float64 to rounding, float32 within the approximations'
    bound), NaN and +-inf as the table gives them, and the derivative taken from the row's own
    output by the table's rule, its conventions at the corners included."""
    from fastrnn import activations as acts
    act = acts.activation(spec)
    a, b = act.alpha, act.beta
    special = [0.0, -0.0, 1.0, -1.0, a, -a, np.inf, -np.inf, np.nan, 1e4, -1e4, 30.0, -30.0]
    if act.name == "hard_sigmoid":
        special += [-b / a, (1 - b) / a]              # its corners, where y is exactly 0 and 1
    x = np.concatenate([np.linspace(-12, 12, 20_001), special])
    rng = np.random.default_rng(5)
    for dtype in DTYPES:
        xd = x.astype(dtype)
        dy = rng.standard_normal(x.size).astype(dtype)
        y, dx = cy._activation_rows(spec, xd, dy)
        assert y.dtype == dtype and dx.dtype == dtype
        want = acts.forward(act, xd)
        np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
        if dtype == np.float64:
            np.testing.assert_allclose(y, want, rtol=1e-14, atol=1e-15)
        else:
            bound = 2 * cy.APPROX_MAX_ABS_ERR * max(1.0, abs(a))
            np.testing.assert_allclose(y, want, rtol=1e-6, atol=bound)
        with np.errstate(invalid="ignore", over="ignore"):
            want_dx = dy * acts.derivative(act, y)
        tol = dict(rtol=1e-14, atol=1e-15) if dtype == np.float64 else dict(rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(dx, want_dx, **tol)


# ---------------------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------------------
def test_blas_is_left_at_its_thread_count(cy):
    """The kernels hold SciPy's OpenBLAS at one thread while they run, and restore it."""
    if not cy.BLAS_LIBRARIES:
        pytest.skip("no OpenBLAS thread control found (another BLAS): nothing to restore")
    import ctypes
    lib = ctypes.CDLL(cy.BLAS_LIBRARIES[0])
    get = next(getattr(lib, n) for n in ("scipy_openblas_get_num_threads", "openblas_get_num_threads",
                                         "scipy_openblas_get_num_threads64_",
                                         "openblas_get_num_threads64_") if hasattr(lib, n))
    before = get()
    rng = np.random.default_rng(0)
    weights, P = make_weights("lstm", np.float32, "both", rng, hidden=64)
    y, hy, saved = cy.lstm_forward(rng.standard_normal((20, 32, I)).astype(np.float32),
                                   make_states("lstm", 32, P, np.float32, rng, hidden=64), weights)
    cy.lstm_backward(y, hy, saved, tuple(None if w is None else np.zeros_like(w) for w in weights))
    assert get() == before


# ---------------------------------------------------------------------------------------
# the choice of build
# ---------------------------------------------------------------------------------------
def _isa_in_subprocess(value):
    """(ISA in use or None, the backend's reason when unavailable) under FASTRNN_CYTHON_ISA=value."""
    env = dict(os.environ)
    env.pop(_cython.ISA_ENV, None)
    if value is not None:
        env[_cython.ISA_ENV] = value
    code = ("import fastrnn, json; s = fastrnn.backends()['cython']\n"
            "isa = None\n"
            "if s['available']:\n"
            "    from fastrnn import _cython as c\n"
            "    isa = [c.ISA, c.kernels.ISA, c.lstm_forward is c.kernels.lstm_forward]\n"
            "print(json.dumps([isa, s['reason']]))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _cpu_flags():
    """The instruction-set flags of this CPU as Linux reports them (its own reading of CPUID
    and of the vector state the kernel saves), or None elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def test_the_widest_build_the_cpu_runs_is_chosen_unless_the_environment_says_otherwise():
    best = _cython.available_isas()[0]
    flags = _cpu_flags()
    if flags is not None and sysconfig.get_platform().endswith("x86_64"):
        widest = ("avx512" if {"avx512f", "avx512vl", "avx512bw", "avx512dq"} <= flags
                  else "avx2" if {"avx2", "fma"} <= flags else "baseline")
        assert _cython.expected_isas()[0] == widest
        if _REQUIRED:
            assert best == widest
    assert _isa_in_subprocess(None) == [[best, best, True], ""]
    assert _isa_in_subprocess(" Auto ") == [[best, best, True], ""]
    for isa in _cython.available_isas():
        assert _isa_in_subprocess(isa.upper()) == [[isa, isa, True], ""]
    isa, reason = _isa_in_subprocess("sse9")
    assert isa is None
    assert "FASTRNN_CYTHON_ISA='sse9'" in reason and "'avx512', 'avx2', 'baseline'" in reason, reason
    # the remedy is the setting's, not a rebuild of the extension, which would not help
    assert "unset FASTRNN_CYTHON_ISA" in reason and "from source" not in reason, reason


def test_auto_warns_when_a_wrong_setting_of_the_build_passes_the_cython_backend_over():
    env = dict(os.environ, **{_cython.ISA_ENV: "avx-2"})
    env.pop("FASTRNN_BACKEND", None)
    code = ("import warnings, fastrnn\n"
            "with warnings.catch_warnings(record=True) as w:\n"
            "    warnings.simplefilter('always')\n"
            "    names = [fastrnn.LSTM(2, 3)._backend.name, fastrnn.GRUCell(2, 3)._backend.name]\n"
            "print(names, len(w), w[0].category.__name__, w[0].filename == '<string>')\n"
            "print(w[0].message)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.splitlines()
    assert out[0] == "['numba', 'numba'] 1 RuntimeWarning True", out     # once, at the user's line
    assert "not using 'cython'" in out[1] and "FASTRNN_CYTHON_ISA='avx-2'" in out[1], out


def test_a_build_this_machine_cannot_use_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="isa must be one of"):
        _cython.load("sse9")
    for isa in set(_cython.ISAS) - set(_cython.available_isas()):
        with pytest.raises(ImportError, match=f"{isa} build of the cython kernels cannot be used"):
            _cython.load(isa)
        got, reason = _isa_in_subprocess(isa)
        assert got is None and "cannot be used" in reason, reason


def test_the_multiply_add_peak_grows_with_the_width_of_each_build():
    """multiply_add_peak (the benchmark's physical floor) runs at each build's vector width:
    4 floats without FMA (two instructions per multiply-add), 8 with AVX2 and FMA, 16 with
    AVX-512 (up to 2x AVX2's rate a core: the Xeons seen here; as fast as AVX2 where a core
    splits a 512-bit multiply-add in two, as Zen 4 does); bad arguments are refused by name."""
    rates = dict.fromkeys(_cython.available_isas(), 0.0)
    for _ in range(5):      # the best of 5 rounds, alternating: a peak, on a shared machine
        for isa in rates:
            rates[isa] = max(rates[isa], _cython.load(isa).multiply_add_peak(1, 0.03, repeat=1))
    assert all(r > 0.5 for r in rates.values()), rates          # GFLOP/s of one core
    # (the margins are wide: another process on the core slows a sample, and a build that lost
    # its vectors would run at a quarter or less of these rates)
    if "avx2" in rates and "baseline" in rates:
        assert rates["avx2"] > 1.5 * rates["baseline"], rates   # 4x: twice the lanes, fused
    if "avx512" in rates and "avx2" in rates:
        assert rates["avx512"] > 0.7 * rates["avx2"], rates     # 225 against 125 on the Xeon
    module = _cython.load(_cython.available_isas()[0])
    with pytest.raises(ValueError, match="threads must be from 1 to 1024, but got 0"):
        module.multiply_add_peak(0)
    with pytest.raises(ValueError, match="seconds must be above 0"):
        module.multiply_add_peak(1, seconds=0)


@pytest.mark.parametrize("case", ["lstm", "gru"])
def test_the_phase_clock_says_where_a_calls_time_goes_and_changes_no_bit(cy, case):
    """phase_clock: while on, a training call (forward and backward on two threads: the
    weights' packing, the input projection, both loops, dx and the weight gradients) and an
    eval call of a small batch (a team) add their time in the driver, in each phase they ran
    (on the caller, and by their threads) and in the products; the results are the bits of a
    call without it.  Off, nothing is added; starting it again starts from zero."""
    rng = np.random.default_rng(31)
    cell, opts, _ = CASES[case]
    T, B = 40, 32
    weights, P = make_weights(case, np.float32, "both", rng)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    hx = make_states(case, B, P, np.float32, rng)
    dy = rng.standard_normal((T, B, P)).astype(np.float32)
    forward, backward = getattr(cy, f"{cell}_forward"), getattr(cy, f"{cell}_backward")

    def train():
        y, hy, saved = forward(x, hx, weights, None, True, **opts)
        dweights = tuple(None if w is None else np.zeros_like(w) for w in weights)
        dx, dhx = backward(dy, tuple(np.ones_like(h) for h in hy), saved, dweights)
        return (y, *hy, dx, *dhx) + dweights

    def infer():
        y, hy, _ = forward(x[:, :1], tuple(h[:1] for h in hx), weights, None, False, **opts)
        return (y, *hy)

    before = fastrnn.get_num_threads()
    try:
        fastrnn.set_num_threads(2)
        want = train(), infer()
        cy.phase_clock(True)
        teams = cy.team_stats()
        got = train(), infer()
        teamed = cy.team_stats() > teams
        reading = cy.phase_clock(False)
        again = train(), infer()
        after = cy.phase_clock_read()
    finally:
        fastrnn.set_num_threads(before)
    for a, b, c in zip(sum(want, ()), sum(got, ()), sum(again, ())):
        if a is not None:
            np.testing.assert_array_equal(b, a)
            np.testing.assert_array_equal(c, a)
    assert after == reading                    # nothing added while it was off
    assert set(reading["phases"]) == set(reading["thread_time"]) == set(cy.PHASE_NAMES)
    phases, threads = reading["phases"], reading["thread_time"]
    ran = {"weights packed", "input projection", "forward loop", "backward loop",
           "dx and weight gradients"}
    ran.add("forward loop of a team" if teamed else "forward loop")
    assert {name for name, t in phases.items() if t > 0} == ran
    assert reading["threads"] == 2
    for name in ran:                           # the time of a phase by the threads it kept busy
        assert phases[name] <= threads[name] <= 2 * phases[name] * (1 + 1e-9)
    assert 0 < sum(phases.values()) <= reading["calls"]
    assert 0 < reading["products"] <= sum(threads.values())
    assert cy.phase_clock(True) == reading     # (what it read since it was last started)
    assert cy.phase_clock(False)["calls"] == 0
