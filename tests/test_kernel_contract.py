"""The kernel contract of :mod:`fastrnn.reference`, on every implementation of it.

One table of implementations (:data:`helpers.KERNELS`: the reference, numba and each build
of the cython extension this machine runs), one table of cases (:data:`helpers.KERNEL_CASES`: every cell
type of :mod:`fastrnn.celltypes`, RNN with both nonlinearities, LSTM with a projection) and
one of tolerances (:data:`OUT_ATOL`, :data:`GRAD_RTOL`, :data:`GRAD_ATOL`, per dtype).

Checked, per implementation: outputs, final states, step norms, dx, dhx and the weight
gradients against the reference (batch 0, 1, several, and 70 rows, which split into the
micro-kernel's tiles); the gradients *added* into the caller's buffers; a saved record
taken once by the compiled backends (and refused when it comes from another kernel);
the gradient buffers checked (shape, dtype, layout) before anything is written; eval mode
keeping nothing; the step kernels; NaN propagation; results that do not depend on the
thread count, bit for bit.  What is specific to one backend (disk cache, instruction-set
choice, activation error bounds, memory) stays in that backend's test module.
"""

import zlib

import numpy as np
import pytest

import fastrnn
from fastrnn import reference as ref
from fastrnn.celltypes import CELL_TYPES

from helpers import (
    KERNEL_CASES as CASES, KERNELS, I, load_kernels, make_lengths, make_states, make_weights,
)

DTYPES = [np.float32, np.float64]
#: outputs: atol; gradients: rtol, with an atol for values near zero
OUT_ATOL = {np.float32: 2e-5, np.float64: 1e-9}
GRAD_RTOL = {np.float32: 1e-4, np.float64: 1e-7}
GRAD_ATOL = {np.float32: 2e-5, np.float64: 1e-9}
@pytest.fixture(scope="module", params=KERNELS)
def impl(request):
    """One implementation of the kernel contract (a module with the twelve kernels)."""
    return load_kernels(request.param)


@pytest.fixture(scope="module", params=[k for k in KERNELS if k != "numpy"])
def compiled(request):
    """One compiled implementation (the reference is the oracle of the parity tests)."""
    return load_kernels(request.param)


def kernels(module, case):
    cell = CASES[case][0]
    return tuple(getattr(module, f"{cell}_{k}") for k in ("forward", "backward", "step_forward",
                                                             "step_backward"))


def zero_grads(weights):
    return tuple(None if w is None else np.zeros_like(w) for w in weights)


def random_grads(weights, rng):
    """Gradient buffers that already hold something: the backward must add to it."""
    return tuple(None if w is None else rng.standard_normal(w.shape).astype(w.dtype)
                 for w in weights)


def close_out(a, b, dtype, what):
    assert a.dtype == dtype and a.shape == b.shape, what
    np.testing.assert_allclose(a, b, rtol=0, atol=OUT_ATOL[dtype], err_msg=what)


def close_grad(a, b, dtype, what):
    assert a.dtype == dtype and a.shape == b.shape, what
    np.testing.assert_allclose(a, b, rtol=GRAD_RTOL[dtype], atol=GRAD_ATOL[dtype], err_msg=what)


def check_grads(got, want, dtype, dweights, want_dweights, start=None):
    """dx, dhx and the gradient buffers against the reference's; ``start``: what the buffers held
    before the backward added into them (the tolerance then scales with it and the gradient,
    as the sum rounds at their size)."""
    (dx, dhx), (rdx, rdhx) = got, want
    if rdx is None:
        assert dx is None
    else:
        close_grad(dx, rdx, dtype, "dx")
    assert len(dhx) == len(rdhx)
    for k, (a, b) in enumerate(zip(dhx, rdhx)):
        close_grad(a, b, dtype, f"dhx[{k}]")
    for k, (a, b) in enumerate(zip(dweights, want_dweights)):
        assert (a is None) == (b is None), k
        if a is None:
            continue
        if start is None:
            close_grad(a, b, dtype, f"dweights[{k}]")
        else:
            assert a.dtype == dtype and a.shape == b.shape
            excess = np.abs(a - (start[k] + b)) - GRAD_ATOL[dtype] \
                - GRAD_RTOL[dtype] * (np.abs(start[k]) + np.abs(b))
            assert excess.max(initial=0) <= 0, (f"dweights[{k}]: the buffer is not what it held "
                                                f"plus the gradient (worst excess {excess.max()})")


# ---------------------------------------------------------------------------------------
# whole sequences
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(CASES))
# the per-step products: 3 rows, fewer than a tile; 9, tiles and a row left; 70, 35 rows per
# thread on 2 threads: tiles of 6 and 5 rows
@pytest.mark.parametrize("B", [0, 1, 3, 9, 70])
@pytest.mark.parametrize("lengths", [None, "full", "ragged"])
@pytest.mark.parametrize("bias", ["both", "none", "ih", "hh"])
def test_sequence_parity(compiled, case, dtype, B, lengths, bias):
    rng = np.random.default_rng(zlib.crc32(repr((case, B, lengths, bias)).encode()))
    opts = CASES[case][1]
    T = 7
    weights, P = make_weights(case, dtype, bias, rng)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    hx = make_states(case, B, P, dtype, rng)
    lens = make_lengths(lengths, B, T, rng)
    rf, rb, _, _ = kernels(ref, case)
    cf, cb, _, _ = kernels(compiled, case)
    hx_before = [h.copy() for h in hx]

    y, hy, saved = cf(x, hx, weights, lens, True, **opts)
    ry, rhy, rsaved = rf(x, hx, weights, lens, True, **opts)
    close_out(y, ry, dtype, "y")
    assert len(hy) == len(rhy)
    for a, b in zip(hy, rhy):
        close_out(a, b, dtype, "hy")
    for h, h0 in zip(hx, hx_before):
        np.testing.assert_array_equal(h, h0)   # the kernels do not write their inputs

    dy = rng.standard_normal(y.shape).astype(dtype)
    dhy = tuple(rng.standard_normal(h.shape).astype(dtype) for h in hy)
    dhy_before = [d.copy() for d in dhy]
    norms = np.full((T, B), -1.0, dtype=dtype)
    rnorms = np.zeros((T, B), dtype=dtype)
    start = random_grads(weights, rng)
    dweights = tuple(None if g is None else g.copy() for g in start)
    got = cb(dy, dhy, saved, dweights, norms)
    rdw = zero_grads(weights)
    want = rb(dy, dhy, rsaved, rdw, rnorms)
    # the backward added into the buffers it was given
    check_grads(got, want, dtype, dweights, rdw, start)
    close_grad(norms, rnorms, dtype, "step_norms")
    for d, d0 in zip(dhy, dhy_before):
        np.testing.assert_array_equal(d, d0)

    # without step_norms and from zero, a new forward: the same gradients
    _, _, saved = cf(x, hx, weights, lens, True, **opts)
    dw0 = zero_grads(weights)
    again = cb(dy, dhy, saved, dw0)
    check_grads(again, want, dtype, dw0, rdw)

    # eval mode: the same outputs, nothing saved
    ye, hye, none = cf(x, hx, weights, lens, False, **opts)
    assert none is None
    np.testing.assert_allclose(ye, y, rtol=0, atol=OUT_ATOL[dtype] / 10)
    for a, b in zip(hye, hy):
        np.testing.assert_allclose(a, b, rtol=0, atol=OUT_ATOL[dtype] / 10)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", ["rnn_relu", "lstm", "lstm_proj_peepholes", "gru",
                                  "gru_reset_before"])
def test_sequence_parity_past_one_panel_of_the_weights(compiled, case, dtype):
    """I = 150 and H = 200 (up to 800 gate rows): the products span several packed panels of
    the weights and several blocks of their inner dimension, which the small sizes of the
    other tests fit in one (a panel written over the one before went unseen there)."""
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    opts, T, B, In, Hd = CASES[case][1], 5, 7, 150, 200
    weights, P = make_weights(case, dtype, "both", rng, in_size=In, hidden=Hd)
    weights = tuple(None if w is None else (w * 0.1).astype(dtype) for w in weights)
    x = rng.standard_normal((T, B, In)).astype(dtype)
    hx = make_states(case, B, P, dtype, rng, hidden=Hd)
    lens = make_lengths("ragged", B, T, rng)
    rf, rb, _, _ = kernels(ref, case)
    cf, cb, _, _ = kernels(compiled, case)
    for training in (False, True):
        y, hy, saved = cf(x, hx, weights, lens, training, **opts)
        ry, rhy, rsaved = rf(x, hx, weights, lens, training, **opts)
        close_out(y, ry, dtype, "y")
        for a, b in zip(hy, rhy):
            close_out(a, b, dtype, "hy")
    # (neither vanishing nor saturated: the gradients mean something)
    assert np.std(ry) > 0.02 and np.mean(np.abs(ry) > 0.99) < 0.1
    dy = rng.standard_normal(y.shape).astype(dtype)
    dhy = tuple(rng.standard_normal(h.shape).astype(dtype) for h in hy)
    start = random_grads(weights, rng)
    dweights = tuple(None if g is None else g.copy() for g in start)
    got = cb(dy, dhy, saved, dweights)
    rdw = zero_grads(weights)
    check_grads(got, rb(dy, dhy, rsaved, rdw), dtype, dweights, rdw, start)


@pytest.mark.parametrize("case", list(CASES))
def test_backward_without_the_input_gradient(impl, case):
    """``input_grad=False``: dx is None, and every other gradient is what it is with dx."""
    rng = np.random.default_rng(9)
    opts = CASES[case][1]
    weights, P = make_weights(case, np.float64, "both", rng)
    x = rng.standard_normal((5, 4, I))
    hx = make_states(case, 4, P, np.float64, rng)
    f, b, _, _ = kernels(impl, case)
    results = []
    for input_grad in (True, False):
        y, hy, saved = f(x, hx, weights, None, True, **opts)
        dw = zero_grads(weights)
        dx, dhx = b(np.ones_like(y), hy, saved, dw, None, input_grad)
        assert (dx is None) == (not input_grad)
        results.append([*dhx, *(g for g in dw if g is not None)])
    for a, c in zip(*results):
        np.testing.assert_array_equal(a, c)


# ---------------------------------------------------------------------------------------
# one step
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("B", [0, 1, 3, 9])
@pytest.mark.parametrize("bias", ["both", "none"])
def test_step_parity(compiled, case, dtype, B, bias):
    rng = np.random.default_rng(zlib.crc32(repr((case, B, bias, "step")).encode()))
    opts = CASES[case][1]
    weights, P = make_weights(case, dtype, bias, rng)
    x = rng.standard_normal((B, I)).astype(dtype)
    hx = make_states(case, B, P, dtype, rng)
    _, _, rsf, rsb = kernels(ref, case)
    _, _, csf, csb = kernels(compiled, case)
    hy, saved = csf(x, hx, weights, True, **opts)
    rhy, rsaved = rsf(x, hx, weights, True, **opts)
    for a, b in zip(hy, rhy):
        close_out(a, b, dtype, "hy")
    dhy = tuple(rng.standard_normal(h.shape).astype(dtype) for h in hy)
    start = random_grads(weights, rng)
    dweights = tuple(None if g is None else g.copy() for g in start)
    got = csb(dhy, saved, dweights)
    rdw = zero_grads(weights)
    want = rsb(dhy, rsaved, rdw)
    assert got[0].shape == (B, I)
    check_grads(got, want, dtype, dweights, rdw, start)
    hy_eval, none = csf(x, hx, weights, False, **opts)
    assert none is None
    for a, b in zip(hy_eval, hy):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", list(CASES))
def test_a_step_is_one_step_of_the_sequence(impl, case):
    rng = np.random.default_rng(3)
    opts = CASES[case][1]
    weights, P = make_weights(case, np.float64, "both", rng)
    x = rng.standard_normal((1, 2, I))
    hx = make_states(case, 2, P, np.float64, rng)
    f, _, sf, _ = kernels(impl, case)
    _, hy_seq, _ = f(x, hx, weights, None, False, **opts)
    hy_step, _ = sf(x[0], hx, weights, False, **opts)
    for a, b in zip(hy_seq, hy_step):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-15)


# ---------------------------------------------------------------------------------------
# the saved record and the gradient buffers
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
def test_the_saved_record(impl, case):
    """One named record; the compiled backends' backward takes it once (it writes the gradients
    over the saved gates), the reference's serves any number; a record of another kernel, or
    no record, is refused; calls with bad arguments leave it usable."""
    rng = np.random.default_rng(2)
    cell, opts, _ = CASES[case]
    T, B = 4, 3
    weights, P = make_weights(case, np.float64, "both", rng)
    x = rng.standard_normal((T, B, I))
    hx = make_states(case, B, P, np.float64, rng)
    f, b, sf, sb = kernels(impl, case)
    y, hy, saved = f(x, hx, weights, None, True, **opts)
    assert type(saved).__name__ == "Saved" and saved.cell == cell and not saved.step
    assert "x" in saved.fields and not saved.used
    dw = zero_grads(weights)
    with pytest.raises(ValueError, match="step_forward"):
        sb(hy, saved, dw)                                    # a sequence record in a step backward
    other = "gru" if cell != "gru" else "rnn"
    with pytest.raises(ValueError, match=f"{cell}_forward"):
        getattr(impl, f"{other}_backward")(y, hy, saved, zero_grads(weights[:4]))
    with pytest.raises(TypeError, match=f"{cell}_forward"):
        b(y, hy, None, dw)
    with pytest.raises(TypeError, match=f"{cell}_forward"):
        b(y, hy, list(range(17)), dw)
    bad = list(dw)
    bad[1] = np.zeros((weights[1].shape[0] + 1, weights[1].shape[1]))
    with pytest.raises(ValueError, match=r"dweights\[1\].*shape"):
        b(y, hy, saved, tuple(bad))
    bad[1] = np.zeros_like(weights[1], dtype=np.float32)
    with pytest.raises(ValueError, match=r"dweights\[1\].*float64"):
        b(y, hy, saved, tuple(bad))
    bad[1] = np.zeros((weights[1].shape[1], weights[1].shape[0])).T   # right shape, F order
    with pytest.raises(ValueError, match=r"dweights\[1\].*C-contiguous"):
        b(y, hy, saved, tuple(bad))
    bad[1] = np.zeros_like(weights[1])
    bad[1].flags.writeable = False
    with pytest.raises(ValueError, match=r"dweights\[1\].*read-only"):
        b(y, hy, saved, tuple(bad))
    bad[1] = dw[1]
    for k in [k for k, w in enumerate(weights) if w is None][:1]:   # a buffer for no weight
        bad[k] = np.zeros((2, 2))
        with pytest.raises(ValueError, match=rf"dweights\[{k}\] must be None"):
            b(y, hy, saved, tuple(bad))
        bad[k] = None
    with pytest.raises(TypeError, match="dweights"):
        b(y, hy, saved, dw[:2])
    assert all(np.all(g == 0) for g in dw if g is not None)   # nothing written by refused calls
    b(y, hy, saved, dw)                                      # the refused calls did not use it up
    rdw = zero_grads(weights)
    ref.__dict__[f"{cell}_backward"](y, hy, ref.__dict__[f"{cell}_forward"](
        x, hx, weights, None, True, **opts)[2], rdw)
    for g, r in zip(dw, rdw):
        if r is not None:
            np.testing.assert_allclose(g, r, rtol=1e-7, atol=1e-9)
    if impl is ref:
        b(y, hy, saved, dw)                                  # the reference keeps its record
    else:
        assert saved.used and saved.fields == ()
        with pytest.raises(RuntimeError, match="already used"):
            b(y, hy, saved, dw)
    # step kernels alike; a step's record also serves a sequence backward (a sequence of one)
    for backward in (sb, lambda dhy, saved, dw: b(np.zeros((1,) + hy[0].shape), dhy, saved, dw)):
        hy1, ssaved = sf(x[0], hx, weights, True, **opts)
        assert ssaved.step
        backward(hy1, ssaved, dw)
        if impl is not ref:
            with pytest.raises(RuntimeError, match="already used"):
                backward(hy1, ssaved, dw)


@pytest.mark.parametrize("case", list(CASES))
def test_nan_in_the_input_propagates_to_the_output(impl, case):
    rng = np.random.default_rng(1)
    opts = CASES[case][1]
    for dtype in DTYPES:
        weights, P = make_weights(case, dtype, "both", rng)
        x = rng.standard_normal((3, 2, I)).astype(dtype)
        x[1, 0, 0] = np.nan
        y, hy, _ = kernels(impl, case)[0](x, make_states(case, 2, P, dtype, rng), weights,
                                          None, False, **opts)
        if case == "rnn_relu":    # relu(NaN) is NaN, but a row of relu outputs may be 0 after it
            assert np.isnan(y[1, 0]).any()
        else:
            assert np.isnan(y[1, 0]).all() and np.isnan(y[2, 0]).all()
        assert np.isfinite(y[:, 1]).all() and np.isfinite(y[0]).all()


@pytest.mark.parametrize("case", ["rnn_tanh", "lstm_peepholes", "gru"])
def test_arguments_that_do_not_fit_together_are_named(impl, case):
    """Shapes that disagree with each other are refused before any kernel runs (the numba
    kernels, which index without bounds checks, wrote outside the arrays: a heap corruption)."""
    rng = np.random.default_rng(3)
    opts = CASES[case][1]
    forward, backward, step_forward, step_backward = kernels(impl, case)
    weights, P = make_weights(case, np.float32, "both", rng)
    x = rng.standard_normal((5, 3, I)).astype(np.float32)
    hx = make_states(case, 3, P, np.float32, rng)
    one = make_states(case, 1, P, np.float32, rng)
    lstm = case.startswith("lstm")
    for args, words in [
            ((x, one, weights), r"h0 must have shape \(3, \d+\), but got \(1, \d+\)"),
            ((x[:, :, :-1], hx, weights), rf"w_ih must have shape \(\d+, {I - 1}\) for inputs "
                                          rf"of size {I - 1}"),
            ((x, hx, weights, np.array([5, 5])), r"lengths must have shape \(3,\), but got \(2,\)"),
            ((x, hx, weights, np.array([9, 5, 5])), r"lengths must be between 0 and T = 5, but "
                                                    r"got 5..9"),
            ((x, hx, weights, np.array([-1, 5, 5])), r"lengths must be between 0 and T = 5"),
            ((x, hx[:1] if lstm else hx * 2, weights), r"hx must be a tuple \(h0, c0\) for LSTM, "
                                                       r"\(h0,\) otherwise")]:
        with pytest.raises(ValueError, match=words):
            forward(*args, training=True, **opts)
    with pytest.raises(TypeError, match="float32 or float64 array.*int64"):
        forward(x.astype(np.int64), hx, weights, training=True, **dict(opts, clip=0.5))
    # every array of x's dtype, in the machine's byte order (the reference returned float64
    # states for float64 h0, numba failed to compile a big-endian x, cython converted both)
    with pytest.raises(TypeError, match=r"byte order, but got dtype >f4"):
        forward(x.astype(">f4"), hx, weights, training=True, **opts)
    with pytest.raises(TypeError, match=r"h0 must have x's dtype float32, but got float64"):
        forward(x, (hx[0].astype(np.float64),) + hx[1:], weights, training=True, **opts)
    for k, name in enumerate(("w_ih", "w_hh", "b_ih", "b_hh")):
        wrong = list(weights)
        wrong[k] = wrong[k].astype(np.float64)
        with pytest.raises(TypeError, match=rf"{name} must have x's dtype float32, but got "
                                             rf"float64"):
            forward(x, hx, tuple(wrong), training=True, **opts)
    wrong = list(weights)
    wrong[2] = wrong[2][:-1]
    with pytest.raises(ValueError, match=r"b_ih must have shape \(\d+,\), but got"):
        forward(x, hx, tuple(wrong), training=True, **opts)
    for lengths in (np.array([2.5, 1.0, 3.0]), np.array([True, True, False])):
        with pytest.raises(TypeError, match=r"lengths must be an integer array, but got dtype"):
            forward(x, hx, weights, lengths, True, **opts)
    np.testing.assert_array_equal(forward(x, hx, weights, [5, 2, 1], False, **opts)[0],
                                  forward(x, hx, weights, np.array([5, 2, 1]), False, **opts)[0])
    if not lstm:        # RNN and GRU have no projection: w_hh (G, H) and h0 (B, H)
        wrong = list(weights)
        wrong[1] = wrong[1][:, :-1].copy()
        with pytest.raises(ValueError, match=r"w_hh must have shape \(\d+, \d+\), but got"):
            forward(x, (hx[0][:, :-1].copy(),), tuple(wrong), training=True, **opts)
    with pytest.raises(ValueError, match=r"x must be \(B, I\) for a step kernel, but got shape "
                                         r"\(5, 3, \d+\)"):
        step_forward(x, hx, weights, True, **opts)
    if lstm:
        with pytest.raises(ValueError, match=r"c0 must have shape \(3, \d+\)"):
            forward(x, (hx[0], one[1]), weights, training=True, **opts)
        with pytest.raises(TypeError, match=r"c0 must have x's dtype float32"):
            forward(x, (hx[0], hx[1].astype(np.float64)), weights, training=True, **opts)
        with pytest.raises(ValueError, match=r"w_ph must have shape \(3, \d+\)"):
            forward(x, hx, weights[:5] + (weights[5][:, :-1],), training=True, **opts)
    with pytest.raises(ValueError, match=r"h0 must have shape \(1, \d+\), but got \(3, \d+\)"):
        step_forward(x[0, :1], hx, weights, True, **opts)
    y, hy, saved = forward(x, hx, weights, None, True, **opts)
    dweights = zero_grads(weights)
    for dy, dhy, words in [(y[:, :2], hy, r"dy must have shape \(5, 3, \d+\)"),
                           (y, tuple(h[:2] for h in hy), r"dh_n must have shape \(3, \d+\)"),
                           (y, hy[:1] if lstm else hy * 2, r"dhy must be a tuple"),
                           (y, (hy[0], hy[1][:1]) if lstm else tuple(h[:2] for h in hy),
                            r"dc_n must have shape \(3, \d+\)" if lstm else r"dh_n must have"),
                           (y, None, r"dhy must be a tuple"),
                           (None, hy, r"dy must be an array of shape \(5, 3, \d+\), but got None")]:
        with pytest.raises(ValueError, match=words):
            backward(dy, dhy, saved, dweights)
    # step_norms: written without bounds checks by numba (a wrong shape crashed the process),
    # refused before any gradient is added
    read_only = np.zeros((5, 3), np.float32)
    read_only.flags.writeable = False
    for norms, words in [(np.zeros((1, 1), np.float32), r"step_norms must have shape \(5, 3\), "
                                                        r"but got \(1, 1\)"),
                         (np.zeros((3, 5), np.float32), r"step_norms must have shape \(5, 3\)"),
                         (read_only, r"step_norms must be a writable array of shape \(5, 3\) "
                                     r".*but got a read-only array"),
                         ([[0.0] * 3] * 5, r"step_norms must be a writable array.*but got list")]:
        with pytest.raises(ValueError, match=words):
            backward(y, hy, saved, dweights, norms)
    assert not any(np.any(d) for d in dweights if d is not None)
    backward(y, hy, saved, dweights)                    # the refused calls left the record
    shy, ssaved = step_forward(x[0], hx, weights, True, **opts)
    with pytest.raises(ValueError, match=r"dh_n must have shape \(3, \d+\)"):
        step_backward(tuple(h[:1] for h in shy), ssaved, zero_grads(weights))
    with pytest.raises(ValueError, match=r"dhy must be a tuple"):
        step_backward(None, ssaved, zero_grads(weights))


@pytest.mark.parametrize("case", ["rnn_tanh", "lstm", "gru"])
def test_activation_parameters_the_dtype_cannot_hold_are_refused(impl, case):
    """scaled_tanh's alpha 1e-50 is 0 in float32: its derivative was NaN on every backend."""
    rng = np.random.default_rng(4)
    cell = CASES[case][0]
    slots = {"rnn": 1, "gru": 2, "lstm": 3}[cell]
    opts = dict(CASES[case][1], activations=[("scaled_tanh", 1e-50, 1.0)] + ["tanh"] * (slots - 1))
    opts.pop("nonlinearity", None)
    for dtype in DTYPES:
        weights, P = make_weights(case, dtype, "both", rng)
        x = rng.standard_normal((3, 2, I)).astype(dtype)
        hx = make_states(case, 2, P, dtype, rng)
        forward, _, step_forward, _ = kernels(impl, case)
        if dtype == np.float32:
            with pytest.raises(ValueError, match="scaled_tanh's alpha must be a finite number "
                                                 "that float32 represents"):
                forward(x, hx, weights, None, True, **opts)
            with pytest.raises(ValueError, match="scaled_tanh's alpha"):
                step_forward(x[0], hx, weights, True, **opts)
        else:
            forward(x, hx, weights, None, True, **opts)


@pytest.mark.parametrize("case", ["rnn_tanh_clip", "lstm_input_forget_clip", "gru_clip"])
@pytest.mark.parametrize("step", [False, True])
def test_a_clip_the_dtype_rounds_to_zero_is_refused(impl, case, step):
    """A clip of 1e-50 is 0 in float32: refused, not run as no clip (the cython LSTM and GRU
    rows did, and their backward read a mask never written); float64 runs it."""
    rng = np.random.default_rng(2)
    opts = dict(CASES[case][1], clip=1e-50)
    for dtype in DTYPES:
        weights, P = make_weights(case, dtype, "both", rng)
        x = rng.standard_normal((2, I) if step else (3, 2, I)).astype(dtype)
        hx = make_states(case, 2, P, dtype, rng)
        forward = kernels(impl, case)[2 if step else 0]
        args = (x, hx, weights, True) if step else (x, hx, weights, None, True)
        if dtype == np.float32:
            with pytest.raises(ValueError, match=r"clip must be None or a positive number that "
                                                 r"float32 holds, neither rounded to 0 nor "
                                                 r"infinite .*, but got 1e-50"):
                forward(*args, **opts)
        else:
            y, *_ = forward(*args, **opts)
            want, *_ = kernels(ref, case)[2 if step else 0](*args, **opts)
            np.testing.assert_allclose(y, want, rtol=0, atol=OUT_ATOL[dtype])


# ---------------------------------------------------------------------------------------
# threads
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("lengths", [None, "ragged"])
def test_results_do_not_depend_on_the_thread_count(compiled, case, lengths):
    """Big enough to split the batch and the products over threads: 1, 2 and 3 threads give the
    same results bit for bit, and agree with the reference."""
    rng = np.random.default_rng(11)
    cell, opts, _ = CASES[case]
    T, B, hidden = 40, 24, 32
    weights, P = make_weights(case, np.float64, "both", rng, hidden=hidden)
    x = rng.standard_normal((T, B, I))
    hx = make_states(case, B, P, np.float64, rng, hidden=hidden)
    lens = make_lengths(lengths, B, T, rng)
    f, b, _, _ = kernels(compiled, case)
    dy = rng.standard_normal((T, B, P))
    ry, rhy, rsaved = kernels(ref, case)[0](x, hx, weights, lens, True, **opts)
    rnorms, rdw = np.zeros((T, B)), zero_grads(weights)
    want = kernels(ref, case)[1](dy, rhy, rsaved, rdw, rnorms)
    before = fastrnn.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            fastrnn.set_num_threads(n)
            ye, _, _ = f(x, hx, weights, lens, False, **opts)
            y, hy, saved = f(x, hx, weights, lens, True, **opts)
            np.testing.assert_allclose(y, ry, rtol=0, atol=1e-9)
            norms, dw = np.zeros((T, B)), zero_grads(weights)
            got = b(dy, hy, saved, dw, norms)
            check_grads(got, want, np.float64, dw, rdw)
            np.testing.assert_allclose(norms, rnorms, rtol=1e-7, atol=1e-9)
            results.append([ye, y, *hy, got[0], *got[1], norms, *(g for g in dw if g is not None)])
    finally:
        fastrnn.set_num_threads(before)
    for other in results[1:]:
        for a, c in zip(results[0], other):
            np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_a_pre_activation_at_the_clip_passes_its_gradient(impl, cell):
    """At the bounds themselves the gradient passes (PyTorch's clamp): every gate's
    pre-activation exactly +-clip (x = +-0.5, W_ih ones, W_hh zeros) gives the results and
    gradients of an unclipped call."""
    x = np.array([[[0.5]], [[-0.5]]])
    gates = CELL_TYPES[cell].gates
    weights = (np.ones((gates, 1)), np.zeros((gates, 1)), None, None) + \
        ((None, None) if cell == "lstm" else ())
    hx = tuple(np.zeros((1, 1)) for _ in CELL_TYPES[cell].states)
    got = []
    for clip in (0.5, None):
        y, hy, saved = getattr(impl, f"{cell}_forward")(x, hx, weights, None, True, clip=clip)
        dw = zero_grads(weights)
        dx, _ = getattr(impl, f"{cell}_backward")(np.ones_like(y), tuple(np.zeros_like(h)
                                                                         for h in hy), saved, dw)
        got.append((y, dx, dw[0]))
    assert np.all(got[1][1] != 0)
    for clipped, unclipped in zip(*got):
        np.testing.assert_array_equal(clipped, unclipped)


def test_the_rnns_activation_is_given_once_at_the_kernel_too(impl):
    """nonlinearity='relu' with activations=['tanh'] ran tanh (the default's entries check to
    None): refused, as the layers refuse it."""
    rng = np.random.default_rng(0)
    weights, P = make_weights("rnn_relu", np.float64, "both", rng)
    x = rng.standard_normal((3, 2, I))
    for acts in (["tanh"], ["relu"]):
        with pytest.raises(ValueError, match="nonlinearity='relu' or activations, not both"):
            impl.rnn_forward(x, make_states("rnn_relu", 2, P, np.float64, rng), weights, None,
                             False, nonlinearity="relu", activations=acts)

