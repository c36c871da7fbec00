"""The cython backend's kernels against the NumPy reference, one kernel call at a time.

Every kernel of the contract (``fastrnn.reference``) on both dtypes, across
cell type x lengths x bias x LSTM projection x batch 0/1/several x step_norms,
plus the float32 activation approximation (error bound, saturation, NaN/inf),
on every build of the kernels this machine can use (baseline, AVX2, AVX-512), and the
choice between the builds (``FASTRNN_CYTHON_ISA``).

The module skips when the extension is not built, unless
FASTRNN_REQUIRE_BACKENDS names ``cython``: then it fails.
"""

import json
import os
import subprocess
import sys
import sysconfig

import numpy as np
import pytest

import fastrnn
from fastrnn import reference as ref

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
    """The kernel module of one build (the tests below run on each)."""
    return _cython.load(request.param)


DTYPES = [np.float32, np.float64]
#: outputs: atol; gradients: rtol (with a small atol for values near zero)
OUT_ATOL = {np.float32: 2e-5, np.float64: 1e-9}
GRAD_RTOL = {np.float32: 1e-4, np.float64: 1e-7}
GRAD_ATOL = {np.float32: 2e-5, np.float64: 1e-9}
#: case -> (kernel cell name, forward options, gates, projection size)
CASES = {
    "rnn_tanh": ("rnn", {"nonlinearity": "tanh"}, 1, 0),
    "rnn_relu": ("rnn", {"nonlinearity": "relu"}, 1, 0),
    "lstm": ("lstm", {}, 4, 0),
    "lstm_proj": ("lstm", {}, 4, 3),
    "gru": ("gru", {}, 3, 0),
}
I, H = 5, 6


def kernels(module, cell):
    return tuple(getattr(module, f"{cell}_{k}") for k in ("forward", "backward", "step_forward",
                                                             "step_backward"))


def make_weights(case, dtype, bias, rng, in_size=I, hidden=H):
    cell, _, gates, proj = CASES[case]
    P = proj or hidden
    u = lambda *shape: rng.uniform(-0.6, 0.6, shape).astype(dtype)  # noqa: E731
    b_ih = u(gates * hidden) if bias in ("both", "ih") else None
    b_hh = u(gates * hidden) if bias in ("both", "hh") else None
    weights = [u(gates * hidden, in_size), u(gates * hidden, P), b_ih, b_hh]
    if cell == "lstm":
        weights.append(u(P, hidden) if proj else None)
    return tuple(weights), P


def make_states(case, B, P, dtype, rng, hidden=H):
    cell = CASES[case][0]
    h = rng.standard_normal((B, P)).astype(dtype) * 0.5
    if cell == "lstm":
        return (h, rng.standard_normal((B, hidden)).astype(dtype) * 0.5)
    return (h,)


def make_lengths(kind, B, T, rng):
    if kind is None:
        return None
    if kind == "full":
        return np.full(B, T, dtype=np.int64)
    lens = rng.integers(1, T + 1, size=B).astype(np.int64)
    if B >= 2:
        lens[0], lens[1] = T, 1
    return lens


def close_out(a, b, dtype, what):
    np.testing.assert_allclose(a, b, rtol=0, atol=OUT_ATOL[dtype], err_msg=what)


def close_grad(a, b, dtype, what):
    np.testing.assert_allclose(a, b, rtol=GRAD_RTOL[dtype], atol=GRAD_ATOL[dtype], err_msg=what)


def check_grads(got, want, dtype):
    dx, dhx, dw = got
    rdx, rdhx, rdw = want
    assert dx.dtype == dtype and dx.shape == rdx.shape
    close_grad(dx, rdx, dtype, "dx")
    assert len(dhx) == len(rdhx)
    for k, (a, b) in enumerate(zip(dhx, rdhx)):
        assert a.dtype == dtype and a.shape == b.shape
        close_grad(a, b, dtype, f"dhx[{k}]")
    assert len(dw) == len(rdw)
    for k, (a, b) in enumerate(zip(dw, rdw)):
        if b is None:
            assert a is None, f"dweights[{k}] must be None like its weight"
        else:
            assert a.dtype == dtype and a.shape == b.shape
            close_grad(a, b, dtype, f"dweights[{k}]")


# ---------------------------------------------------------------------------------------
# whole-sequence kernels
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(CASES))
# the per-step products: 3 rows, fewer than a block of 4; 9, blocks of 4 and one row left;
# 70, 35 rows per thread on 2 threads: tiles of 6 and 5 rows (fastrnn_mm.h)
@pytest.mark.parametrize("B", [0, 1, 3, 9, 70])
@pytest.mark.parametrize("lengths", [None, "full", "ragged"])
@pytest.mark.parametrize("bias", ["both", "none", "ih", "hh"])
def test_sequence_parity(cy, case, dtype, B, lengths, bias):
    rng = np.random.default_rng(hash((case, B, str(lengths), bias)) % 2**32)
    cell, opts, _, _ = CASES[case]
    T = 7
    weights, P = make_weights(case, dtype, bias, rng)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    hx = make_states(case, B, P, dtype, rng)
    lens = make_lengths(lengths, B, T, rng)
    if bias in ("ih", "hh"):
        # the reference adds biases only when b_ih is given: compare against the explicit sum
        full = list(weights)
        full[2] = weights[2] if weights[2] is not None else np.zeros_like(weights[3])
        full[3] = weights[3] if weights[3] is not None else np.zeros_like(weights[2])
        ref_weights = tuple(full)
    else:
        ref_weights = weights
    rf, rb, _, _ = kernels(ref, cell)
    cf, cb, _, _ = kernels(cy, cell)
    hx_before = [h.copy() for h in hx]

    y, hy, cache = cf(x, hx, weights, lens, True, **opts)
    ry, rhy, rcache = rf(x, hx, ref_weights, lens, True, **opts)
    assert y.dtype == dtype and y.shape == ry.shape
    close_out(y, ry, dtype, "y")
    assert len(hy) == len(rhy)
    for a, b in zip(hy, rhy):
        assert a.dtype == dtype and a.shape == b.shape
        close_out(a, b, dtype, "hy")
    for h, h0 in zip(hx, hx_before):
        np.testing.assert_array_equal(h, h0)   # the kernels do not write their inputs

    dy = rng.standard_normal(y.shape).astype(dtype)
    dhy = tuple(rng.standard_normal(h.shape).astype(dtype) for h in hy)
    dhy_before = [d.copy() for d in dhy]
    norms = np.full((T, B), -1.0, dtype=dtype)
    rnorms = np.zeros((T, B), dtype=dtype)
    got = cb(dy, dhy, cache, norms)
    want = rb(dy, dhy, rcache, rnorms)
    if bias in ("ih", "hh"):
        want = (want[0], want[1], [None if w is None else g for g, w in zip(want[2], weights)])
    check_grads(got, want, dtype)
    close_grad(norms, rnorms, dtype, "step_norms")
    for d, d0 in zip(dhy, dhy_before):
        np.testing.assert_array_equal(d, d0)
    # the backward used up its cache (it overwrote the saved gates with their gradients)
    with pytest.raises(RuntimeError, match="already used"):
        cb(dy, dhy, cache)
    # without step_norms, from a new forward: the same result
    _, _, cache = cf(x, hx, weights, lens, True, **opts)
    again = cb(dy, dhy, cache)
    check_grads(again, got, dtype)

    # eval mode: same outputs, no cache
    ye, hye, ce = cf(x, hx, weights, lens, False, **opts)
    assert ce is None
    np.testing.assert_allclose(ye, y, rtol=0, atol=OUT_ATOL[dtype] / 10)
    for a, b in zip(hye, hy):
        np.testing.assert_allclose(a, b, rtol=0, atol=OUT_ATOL[dtype] / 10)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("lengths", [None, "ragged"])
def test_eval_forward_in_chunks(cy, case, lengths):
    """Eval mode projects the input a bounded chunk of steps at a time: same result as training."""
    rng = np.random.default_rng(7)
    cell, opts, gates, _ = CASES[case]
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


# ---------------------------------------------------------------------------------------
# step kernels
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", ["rnn_tanh", "rnn_relu", "lstm", "lstm_proj", "gru"])
@pytest.mark.parametrize("B", [0, 1, 3, 9])
@pytest.mark.parametrize("bias", ["both", "none"])
def test_step_parity(cy, case, dtype, B, bias):
    rng = np.random.default_rng(hash((case, B, bias, "step")) % 2**32)
    cell, opts, _, _ = CASES[case]
    weights, P = make_weights(case, dtype, bias, rng)
    x = rng.standard_normal((B, I)).astype(dtype)
    hx = make_states(case, B, P, dtype, rng)
    _, _, rsf, rsb = kernels(ref, cell)
    _, _, csf, csb = kernels(cy, cell)
    hy, cache = csf(x, hx, weights, True, **opts)
    rhy, rcache = rsf(x, hx, weights, True, **opts)
    for a, b in zip(hy, rhy):
        assert a.dtype == dtype and a.shape == b.shape
        close_out(a, b, dtype, "hy")
    dhy = tuple(rng.standard_normal(h.shape).astype(dtype) for h in hy)
    got = csb(dhy, cache)
    want = rsb(dhy, rcache)
    assert got[0].shape == (B, I)
    check_grads(got, want, dtype)
    hy_eval, none = csf(x, hx, weights, False, **opts)
    assert none is None
    for a, b in zip(hy_eval, hy):
        np.testing.assert_array_equal(a, b)


def test_step_is_one_step_of_the_sequence(cy):
    rng = np.random.default_rng(3)
    weights, P = make_weights("lstm_proj", np.float64, "both", rng)
    x = rng.standard_normal((1, 2, I))
    hx = make_states("lstm_proj", 2, P, np.float64, rng)
    _, hy_seq, _ = cy.lstm_forward(x, hx, weights)
    hy_step, _ = cy.lstm_step_forward(x[0], hx, weights)
    for a, b in zip(hy_seq, hy_step):
        np.testing.assert_array_equal(a, b)


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
    _, _, cache = cy.gru_forward(x, hx, weights)
    norms = np.zeros((3, 4)).T
    cy.gru_backward(np.ones_like(y1), (np.zeros((3, H)),), cache, norms)
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
        y, hy, cache = cy.lstm_forward(x, tuple(hx), tuple(weights))
        with pytest.raises(ValueError):
            cy.lstm_backward(y[:, :1], hy, cache)
        return
    with pytest.raises((ValueError, TypeError)):
        cy.lstm_forward(x, tuple(hx), tuple(weights), lens)


@pytest.mark.parametrize("case", list(CASES))
def test_backward_consumes_its_cache(cy, case):
    """One backward per training forward: a second one raises instead of reading gradients as gates;
    a call with bad arguments leaves the cache usable; a cache of another kernel is refused."""
    rng = np.random.default_rng(2)
    cell, opts, _, _ = CASES[case]
    T, B = 4, 3
    weights, P = make_weights(case, np.float64, "both", rng)
    x = rng.standard_normal((T, B, I))
    hx = make_states(case, B, P, np.float64, rng)
    cf, cb, csf, csb = kernels(cy, cell)
    y, hy, cache = cf(x, hx, weights, None, True, **opts)
    with pytest.raises(ValueError, match="dy"):
        cb(y[:, :1], hy, cache)
    with pytest.raises(ValueError, match="step_norms"):
        cb(y, hy, cache, np.zeros((B, T)))
    with pytest.raises(ValueError, match="step_forward"):
        csb(hy, cache)                       # a sequence cache in a step backward
    other = "gru" if cell != "gru" else "rnn"
    with pytest.raises(ValueError, match=f"{cell}_forward"):
        getattr(cy, f"{other}_backward")(y, hy, cache)
    got = cb(y, hy, cache)                   # the refused calls did not use it up
    want = getattr(ref, f"{cell}_backward")(
        y, hy, getattr(ref, f"{cell}_forward")(x, hx, weights, None, True, **opts)[2])
    check_grads(got, want, np.float64)
    with pytest.raises(RuntimeError, match="already used"):
        cb(y, hy, cache)
    with pytest.raises(ValueError, match="cache"):
        cb(y, hy, None)
    with pytest.raises(ValueError, match="cache"):
        cb(y, hy, tuple(range(17)))
    # step kernels alike
    hy1, scache = csf(x[0], hx, weights, True, **opts)
    with pytest.raises(ValueError, match=f"{cell}_forward"):
        cb(y[:1], hy1, scache)               # a step cache in a sequence backward
    csb(hy1, scache)
    with pytest.raises(RuntimeError, match="already used"):
        csb(hy1, scache)


@pytest.mark.parametrize("case", list(CASES))
def test_backward_allocates_no_gate_sized_buffer(cy, case):
    """The backward writes the gate gradients over the forward's gate store: beyond its
    results (dx, dhx, the weight gradients; with a projection the dh_t rows for dW_hr) it
    allocates no T*B*gates buffer."""
    import tracemalloc
    rng = np.random.default_rng(4)
    cell, opts, gates, proj = CASES[case]
    T, B, hidden = 50, 16, 32
    weights, P = make_weights(case, np.float64, "both", rng, hidden=hidden)
    x = rng.standard_normal((T, B, I))
    hx = make_states(case, B, P, np.float64, rng, hidden=hidden)
    cf, cb, _, _ = kernels(cy, cell)
    y, hy, cache = cf(x, hx, weights, None, True, **opts)
    dhy = tuple(np.ones_like(h) for h in hy)
    results = 8 * (T * B * I + sum(h.size for h in hy) + sum(w.size for w in weights if w is not None)
                   + (T * B * P if proj else 0))
    gate_buffer = 8 * T * B * gates * hidden
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        got = cb(y, dhy, cache)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert got[0].shape == x.shape
    assert peak < results + gate_buffer // 2, (peak, results, gate_buffer)


def test_nan_in_the_input_propagates_to_the_output(cy):
    rng = np.random.default_rng(1)
    for dtype in DTYPES:
        weights, P = make_weights("lstm", dtype, "both", rng)
        x = rng.standard_normal((3, 2, I)).astype(dtype)
        x[1, 0, 0] = np.nan
        y, hy, _ = cy.lstm_forward(x, make_states("lstm", 2, P, dtype, rng), weights)
        assert np.isnan(y[1, 0]).all() and np.isnan(y[2, 0]).all()
        assert np.isfinite(y[:, 1]).all() and np.isfinite(y[0]).all()


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


# ---------------------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("lengths", [None, "ragged"])
def test_results_do_not_depend_on_the_thread_count(cy, case, lengths):
    """Big enough to split the batch over threads: 1, 2 and 3 threads agree with the reference."""
    rng = np.random.default_rng(11)
    cell, opts, _, _ = CASES[case]
    T, B, hidden = 40, 24, 32
    weights, P = make_weights(case, np.float64, "both", rng, hidden=hidden)
    x = rng.standard_normal((T, B, I))
    hx = make_states(case, B, P, np.float64, rng, hidden=hidden)
    lens = make_lengths(lengths, B, T, rng)
    cf, cb = getattr(cy, f"{cell}_forward"), getattr(cy, f"{cell}_backward")
    dy = rng.standard_normal((T, B, P))
    ry, rhy, rcache = getattr(ref, f"{cell}_forward")(x, hx, weights, lens, True, **opts)
    rnorms = np.zeros((T, B))
    want = getattr(ref, f"{cell}_backward")(dy, rhy, rcache, rnorms)
    before = fastrnn.get_num_threads()
    try:
        for n in (1, 2, 3):
            fastrnn.set_num_threads(n)
            for training in (False, True):   # the training forward's cache is used below
                y, hy, cache = cf(x, hx, weights, lens, training, **opts)
                np.testing.assert_allclose(y, ry, rtol=0, atol=1e-9)
            norms = np.zeros((T, B))
            check_grads(cb(dy, hy, cache, norms), want, np.float64)
            np.testing.assert_allclose(norms, rnorms, rtol=1e-7, atol=1e-9)
    finally:
        fastrnn.set_num_threads(before)
    with pytest.raises(ValueError):
        fastrnn.set_num_threads(0)


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
    y, hy, cache = cy.lstm_forward(rng.standard_normal((20, 32, I)).astype(np.float32),
                                   make_states("lstm", 32, P, np.float32, rng, hidden=64), weights)
    cy.lstm_backward(y, hy, cache)
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


def test_a_build_this_machine_cannot_use_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="isa must be one of"):
        _cython.load("sse9")
    for isa in set(_cython.ISAS) - set(_cython.available_isas()):
        with pytest.raises(ImportError, match=f"{isa} build of the cython kernels cannot be used"):
            _cython.load(isa)
        got, reason = _isa_in_subprocess(isa)
        assert got is None and "cannot be used" in reason, reason
