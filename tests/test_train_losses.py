"""Losses: values and fused gradients against finite differences and torch; cross_entropy
through its NumPy code and through its compiled passes.

The `torch` fixture (tests/conftest.py) skips without torch, or fails under FASTRNN_REQUIRE_TORCH=1.
"""

import numpy as np
import pytest

from fastrnn.train import _compiled, cross_entropy, log_softmax, losses, mse_loss, softmax
from helpers import KERNELS, load_kernels, numerical_gradient, unaligned

#: the builds of the compiled kernels this machine runs (a required one that is missing fails)
COMPILED = [k for k in KERNELS if k.startswith("cython")]


@pytest.fixture(params=["numpy", "compiled"])
def path(request, monkeypatch):
    """cross_entropy through its NumPy code, or through the compiled passes at every size (the
    extension is then required: without it this fails)."""
    if request.param == "compiled":
        assert _compiled.kernels() is not None, "the cython extension is not built"
        monkeypatch.setattr(losses, "COMPILED_MIN_SIZE", 1)
    else:
        monkeypatch.setattr(losses, "COMPILED_MIN_SIZE", 2 ** 62)
    return request.param


def ce_case(shape, C, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal(shape + (C,)) * 3
    targets = rng.integers(0, C, size=shape)
    return logits, targets


def test_cross_entropy_hand_computed(path):
    logits = np.array([[0.0, 0.0], [2.0, 0.0]])
    targets = np.array([0, 1])
    loss, grad = cross_entropy(logits, targets, reduction="sum")
    expected = np.log(2) + np.log(1 + np.exp(2.0))
    assert loss == pytest.approx(expected, rel=1e-12)
    p = np.exp(2) / (1 + np.exp(2))
    np.testing.assert_allclose(grad, [[-0.5, 0.5], [p, -p]], rtol=1e-12)
    mean, gmean = cross_entropy(logits, targets)
    assert mean == pytest.approx(expected / 2)
    np.testing.assert_allclose(gmean, grad / 2)


@pytest.mark.parametrize("shape", [(5,), (4, 3)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("masking", ["none", "ignore", "mask", "weights"])
def test_cross_entropy_finite_differences(shape, reduction, masking, path):
    logits, targets = ce_case(shape, 6, seed=1)
    rng = np.random.default_rng(2)
    mask = None
    if masking == "ignore":
        targets = np.where(rng.random(shape) < 0.3, -100, targets)
        targets.flat[0] = 1
    elif masking == "mask":
        mask = rng.random(shape) < 0.7
        mask.flat[0] = True
    elif masking == "weights":
        mask = rng.random(shape)
    loss, grad = cross_entropy(logits, targets, mask=mask, reduction=reduction)
    assert grad.shape == logits.shape and grad.dtype == logits.dtype
    num = numerical_gradient(lambda: cross_entropy(logits, targets, mask=mask, reduction=reduction)[0], logits)
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)


def test_cross_entropy_stable_for_huge_logits(path):
    logits = np.array([[1000.0, -1000.0, 0.0], [-1e30, 1e30, 5.0]], dtype=np.float32)
    loss, grad = cross_entropy(logits, np.array([0, 0]))
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert loss == pytest.approx(2e30 / 2, rel=1e-6)
    np.testing.assert_allclose(grad, [[0, 0, 0], [-0.5, 0.5, 0]], atol=1e-7)
    assert grad.dtype == np.float32


@pytest.mark.parametrize("dtype, offsets", [(np.float32, [2.0 ** 64, 1e30, 3e38]),
                                            (np.float64, [2.0 ** 40, 1e12, 1e16, 1e300])])
def test_cross_entropy_does_not_change_with_a_common_offset(dtype, offsets, path):
    """Logits sharing a large offset give the loss and gradient of the same logits without it
    (a row's log-sum-exp of ~log C was lost next to an offset of 1e16: (log s + shift) - z_t);
    rows of equal logits, and rows of steps of 0.5 where the offset leaves them exact."""
    C = 8
    equal = np.zeros((3, C))
    steps = np.tile(np.arange(C) * 0.5, (3, 1))
    targets = np.array([0, 3, 7])
    for base in (equal, steps) if dtype == np.float64 else (equal,):
        want_loss, want_grad = cross_entropy(base.astype(dtype), targets)
        for offset in offsets:
            if base is steps and offset > 2.0 ** 40:
                continue
            loss, grad = cross_entropy((base + offset).astype(dtype), targets)
            assert loss == pytest.approx(want_loss, rel=1e-6), offset
            np.testing.assert_allclose(grad, want_grad, rtol=1e-5, atol=1e-7, err_msg=str(offset))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_rows_far_from_their_mean_match_float64(dtype, path):
    """NumPy's code shifts rows by their mean, and by their maximum where that would overflow
    (fastrnn.train.losses._SUM_LIMIT); the compiled passes by their maximum: rows on both sides
    of the limit, -inf logits and a NaN row, in one call, against a float64 log-softmax
    shifted by the maximum."""
    rng = np.random.default_rng(3)
    C = 96
    logits = rng.standard_normal((12, C)) * 3
    for row, spread in enumerate([20, 40, 43, 45, 50, 88, 200, 1e4]):
        logits[row, row] = logits[row].mean() + spread * C / (C - 1)   # max - mean = spread
    logits[8, :40] = -np.inf
    logits[9, :] = -1e30
    logits[9, 3] = 0.0
    logits = logits.astype(dtype)
    logits[10] = -logits[10]
    targets = rng.integers(0, C, size=12)
    targets[:8] = np.arange(8) + 1       # not the largest logit: the gradient's two terms
    targets[8] = 50
    nan_row = logits.copy()
    nan_row[11, 7] = np.nan
    z = logits.astype(np.float64)
    logp = z - z.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    # a small weight on the row of spread 88: float32's 1 / sum(exp(z - mean)) * weight would
    # be subnormal there (so the limit); errors are bounded relative to each row's scale
    mask = np.ones(12)
    mask[5] = 1e-4
    scale = (mask / mask.sum())[:, None]
    want_grad = scale * (np.exp(logp) - np.eye(C)[targets])
    loss, grad = cross_entropy(logits, targets, mask=mask)
    assert grad.dtype == dtype
    eps = float(np.finfo(dtype).eps)
    assert loss == pytest.approx(-(scale[:, 0] * logp[np.arange(12), targets]).sum(), rel=16 * eps)
    err = np.abs(grad - want_grad) / (64 * eps * np.abs(want_grad) + 8 * eps * scale)
    assert err.max() <= 1, f"row {np.unravel_index(err.argmax(), err.shape)[0]}: {err.max():.3g}x the bound"
    loss, grad = cross_entropy(nan_row, targets, mask=mask)
    assert np.isnan(loss) and np.isnan(grad[11]).all()
    err = np.abs(grad - want_grad)[:11] / (64 * eps * np.abs(want_grad) + 8 * eps * scale)[:11]
    assert err.max() <= 1, f"{err.max():.3g}x the bound"


def test_cross_entropy_all_ignored_is_zero(path):
    logits, targets = ce_case((3,), 4)
    loss, grad = cross_entropy(logits, np.full(3, -100))
    assert loss == 0.0 and not grad.any()
    loss, grad = cross_entropy(logits, targets, mask=np.zeros(3, bool))
    assert loss == 0.0 and not grad.any()


def test_cross_entropy_errors():
    logits, targets = ce_case((4,), 3)
    with pytest.raises(ValueError, match=r"targets must be in \[0, 3\)"):
        cross_entropy(logits, np.array([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="targets must have shape"):
        cross_entropy(logits, np.zeros((4, 1), int))
    with pytest.raises(TypeError, match="integer"):
        cross_entropy(logits, targets.astype(float))
    with pytest.raises(TypeError, match="floating"):
        cross_entropy(targets, targets)
    with pytest.raises(ValueError, match="reduction"):
        cross_entropy(logits, targets, reduction="max")
    with pytest.raises(ValueError, match=r"weight must have one entry per class, shape \(3,\)"):
        cross_entropy(logits, targets, weight=np.ones(4))
    with pytest.raises(ValueError, match="weight must hold finite non-negative"):
        cross_entropy(logits, targets, weight=[1.0, -1.0, 1.0])
    with pytest.raises(TypeError, match="weight must be an array"):
        cross_entropy(logits, targets, weight=np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match=r"label_smoothing must be a real number >= 0.0 and "
                                         r"<= 1.0, but got 1.5"):
        cross_entropy(logits, targets, label_smoothing=1.5)
    with pytest.raises(TypeError, match="label_smoothing must be a real number"):
        cross_entropy(logits, targets, label_smoothing="0.1")
    with pytest.raises(ValueError, match="broadcast"):
        cross_entropy(logits, targets, mask=np.ones(3, bool))
    with pytest.raises(ValueError, match="non-negative"):
        cross_entropy(logits, targets, mask=-np.ones(4))


def test_cross_entropy_ignore_index_takes_any_int64(path):
    """As torch: an ignore_index past int32's range (targets are int64) marks its positions;
    past int64's it is refused by name."""
    logits, targets = ce_case((6,), 5)
    kept = np.arange(6) % 2 == 1
    loss, grad = cross_entropy(logits, np.where(kept, targets, 2 ** 40), ignore_index=2 ** 40)
    want_loss, want_grad = cross_entropy(logits, targets, mask=kept)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="ignore_index"):
        cross_entropy(logits, targets, ignore_index=2 ** 63)


@pytest.mark.parametrize("shape", [(7,), (5, 3)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_matches_torch(shape, reduction, torch, path):
    F = torch.nn.functional
    logits, targets = ce_case(shape, 5, seed=3)
    targets = np.where(np.random.default_rng(4).random(shape) < 0.25, 2, targets)
    for ignore in (-100, 2):
        lt = torch.tensor(logits, requires_grad=True)
        ref = F.cross_entropy(lt.reshape(-1, 5), torch.tensor(targets).reshape(-1),
                              ignore_index=ignore, reduction=reduction)
        ref.backward()
        loss, grad = cross_entropy(logits, targets, ignore_index=ignore, reduction=reduction)
        assert loss == pytest.approx(ref.item(), rel=1e-12)
        np.testing.assert_allclose(grad, lt.grad.numpy(), rtol=1e-10, atol=1e-14)
    # a float32 run agrees at float32 precision
    l32, g32 = cross_entropy(logits.astype(np.float32), targets, reduction=reduction)
    lt = torch.tensor(logits.astype(np.float32), requires_grad=True)
    ref = F.cross_entropy(lt.reshape(-1, 5), torch.tensor(targets).reshape(-1), reduction=reduction)
    ref.backward()
    assert l32 == pytest.approx(ref.item(), rel=1e-5)
    np.testing.assert_allclose(g32, lt.grad.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "class-weights"])
def test_cross_entropy_weight_label_smoothing_and_none_match_torch(reduction, label_smoothing,
                                                                   weighted, torch, path):
    """PyTorch's ``weight`` and ``label_smoothing``, and ``reduction="none"`` (each position's
    loss, the gradient of their sum), with ignored targets: values and gradients in float64
    and float32."""
    F = torch.nn.functional
    logits, targets = ce_case((6, 4), 7, seed=8)
    targets = np.where(np.random.default_rng(9).random((6, 4)) < 0.25, -100, targets)
    weight = np.random.default_rng(10).random(7) + 0.1 if weighted else None
    for dtype, rtol, atol in ((np.float64, 1e-12, 1e-14), (np.float32, 1e-5, 1e-6)):
        lt = torch.tensor(logits.astype(dtype), requires_grad=True)
        ref = F.cross_entropy(lt.reshape(-1, 7), torch.tensor(targets).reshape(-1),
                              weight=None if weight is None else torch.tensor(weight.astype(dtype)),
                              reduction=reduction, label_smoothing=label_smoothing)
        ref.sum().backward()
        loss, grad = cross_entropy(logits.astype(dtype), targets, reduction=reduction,
                                   weight=weight, label_smoothing=label_smoothing)
        assert grad.dtype == dtype
        if reduction == "none":
            assert loss.shape == targets.shape and loss.dtype == dtype
            np.testing.assert_allclose(loss, ref.detach().numpy().reshape(6, 4), rtol=rtol,
                                       atol=atol)
            assert np.all(loss[targets == -100] == 0)
        else:
            assert loss == pytest.approx(ref.item(), rel=rtol)
        np.testing.assert_allclose(grad, lt.grad.numpy().reshape(grad.shape), rtol=rtol * 10,
                                   atol=atol)


def test_cross_entropy_smoothing_of_infinite_logits_as_torch(torch, path):
    """A -inf logit on the target: an infinite loss, as in torch (the smoothing's term read
    inf + -inf as NaN); +inf and NaN logits give NaN, as in torch."""
    logits = np.array([[-np.inf, 0.0, 0.0], [1.0, 2.0, 3.0], [np.inf, 0.0, 0.0],
                       [np.nan, 0.0, 0.0]])
    targets = np.array([0, 1, 0, 1])
    loss, _ = cross_entropy(logits, targets, reduction="none", label_smoothing=0.1)
    want = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(targets),
                                             reduction="none", label_smoothing=0.1).numpy()
    np.testing.assert_allclose(loss, want, rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_smoothing_weights_and_mask_finite_differences(reduction, path):
    """Class weights, label smoothing and a mask of float weights at once: the gradient is the
    loss's (with "none", that of the positions' sum)."""
    logits, targets = ce_case((5, 3), 6, seed=11)
    rng = np.random.default_rng(12)
    mask, weight = rng.random((5, 3)), rng.random(6) + 0.2
    targets[0, 0] = -100

    def f():
        loss, _ = cross_entropy(logits, targets, mask=mask, reduction=reduction, weight=weight,
                                label_smoothing=0.3)
        return np.sum(loss)
    _, grad = cross_entropy(logits, targets, mask=mask, reduction=reduction, weight=weight,
                            label_smoothing=0.3)
    np.testing.assert_allclose(grad, numerical_gradient(f, logits), rtol=1e-6, atol=1e-8)
    assert np.all(grad[0, 0] == 0)


def test_log_softmax_and_softmax(torch):
    x = np.random.default_rng(0).standard_normal((3, 4)) * 50
    np.testing.assert_allclose(log_softmax(x), torch.log_softmax(torch.tensor(x), -1).numpy(),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(softmax(x, temperature=2.0),
                               torch.softmax(torch.tensor(x) / 2, -1).numpy(), rtol=1e-12)


@pytest.mark.parametrize("logits, temperature, want", [
    ([2.0, 1.0, 0.0], 1e-310, [1.0, 0.0, 0.0]),   # (logits / temperature was inf - inf)
    ([1e308, 0.0], 0.5, [1.0, 0.0]),
    (np.array([3e38, -3e38, 1.0], np.float32), 1e-3, [1.0, 0.0, 0.0]),
    ([1.0, 1.0, -np.inf], 1e-300, [0.5, 0.5, 0.0]),
])
def test_softmax_at_extreme_temperatures_is_the_limit(logits, temperature, want):
    """A tiny temperature (or huge logits) gives the argmax's one-hot, not NaN."""
    np.testing.assert_array_equal(softmax(logits, temperature=temperature), want)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
def test_mse_finite_differences(reduction, weighted):
    rng = np.random.default_rng(5)
    pred, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    mask = rng.random((4, 1)) if weighted else None
    loss, grad = mse_loss(pred, target, mask=mask, reduction=reduction)
    num = numerical_gradient(lambda: mse_loss(pred, target, mask=mask, reduction=reduction)[0], pred)
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)
    if not weighted:
        expected = np.sum((pred - target) ** 2) / (pred.size if reduction == "mean" else 1)
        assert loss == pytest.approx(expected, rel=1e-12)


def test_mse_reduction_none_matches_torch(torch):
    rng = np.random.default_rng(7)
    pred, target = rng.standard_normal((5, 2)), rng.standard_normal((5, 2))
    pt = torch.tensor(pred, requires_grad=True)
    ref = torch.nn.functional.mse_loss(pt, torch.tensor(target), reduction="none")
    ref.sum().backward()
    loss, grad = mse_loss(pred, target, reduction="none")
    assert loss.shape == pred.shape
    np.testing.assert_allclose(loss, ref.detach().numpy(), rtol=1e-14)
    np.testing.assert_allclose(grad, pt.grad.numpy(), rtol=1e-14)
    mask = rng.random((5, 1)) < 0.5
    target[~mask[:, 0], 0] = np.nan                    # skipped, even where the target is NaN
    loss, grad = mse_loss(pred, target, mask=mask, reduction="none")
    assert np.all(loss[~mask[:, 0]] == 0) and np.all(grad[~mask[:, 0]] == 0)
    np.testing.assert_allclose(loss[mask[:, 0]], (pred - target)[mask[:, 0]] ** 2, rtol=1e-14)


def test_mse_matches_torch_and_errors(torch):
    rng = np.random.default_rng(6)
    pred, target = rng.standard_normal((5, 2)), rng.standard_normal((5, 2))
    pt = torch.tensor(pred, requires_grad=True)
    ref = torch.nn.functional.mse_loss(pt, torch.tensor(target))
    ref.backward()
    loss, grad = mse_loss(pred, target)
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(grad, pt.grad.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        mse_loss(pred, target[:4])
    with pytest.raises(TypeError):
        mse_loss(pred, target.astype(int))


def test_large_calls_take_the_compiled_passes(monkeypatch):
    """From COMPILED_MIN_SIZE logits on, cross_entropy's results are the compiled passes' bits
    (the extension built); below, NumPy's code's (not the same bits: it shifts by the mean)."""
    fused = _compiled.kernels()
    rng = np.random.default_rng(6)
    C = 96
    for n in (losses.COMPILED_MIN_SIZE // C, -(-losses.COMPILED_MIN_SIZE // C), 500):
        logits = (rng.standard_normal((n, C)) * 4).astype(np.float32)
        targets = rng.integers(0, C, n)
        loss, grad = cross_entropy(logits, targets)
        with monkeypatch.context() as m:
            m.setattr(losses, "COMPILED_MIN_SIZE", 2 ** 62)
            numpy_loss, numpy_grad = cross_entropy(logits, targets)
        if fused is None or logits.size < losses.COMPILED_MIN_SIZE:
            np.testing.assert_array_equal(grad, numpy_grad)
            assert loss == numpy_loss
            continue
        want, nll = np.empty_like(logits), np.empty(n)
        assert fused.cross_entropy_rows(logits, targets.astype(np.intp), np.full(n, 1.0 / n), want,
                                        nll)
        np.testing.assert_array_equal(grad, want)
        assert loss == float(np.dot(nll, np.full(n, 1.0))) / n
        assert not np.array_equal(grad, numpy_grad)     # the two paths are told apart here


@pytest.mark.parametrize("order", [">", "<"], ids=["big-endian", "little-endian"])
def test_cross_entropy_of_logits_in_either_byte_order(order, path):
    """Logits stored big-endian (as np.load or HDF5 may give them) score as native ones do."""
    logits, targets = ce_case((40, 30), 7, seed=8)       # 8,400 logits: compiled when it can
    got = cross_entropy(logits.astype(order + "f8"), targets)
    want = cross_entropy(logits, targets)
    assert got[0] == pytest.approx(want[0], rel=1e-15)
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("kernels", COMPILED)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("C", [1, 5, 16, 96, 1000])
def test_compiled_cross_entropy_rows_against_float64(kernels, dtype, C):
    """Every build's passes (vectors of its width, and the rows' remainders) against a float64
    log-softmax: the loss per row, the gradient, rows of scale 0."""
    mod = load_kernels(kernels)
    rng = np.random.default_rng(C)
    n = 37
    z = (rng.standard_normal((n, C)) * 5).astype(dtype)
    t = rng.integers(0, C, n).astype(np.intp)
    scale = rng.random(n)
    scale[[3, 9]] = 0.0
    grad, nll = np.full((n, C), np.nan, dtype), np.full(n, np.nan)
    assert mod.cross_entropy_rows(z, t, scale, grad, nll) is True
    z64 = z.astype(np.float64)
    logp = z64 - z64.max(axis=1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
    eps = float(np.finfo(dtype).eps)
    np.testing.assert_allclose(nll, -logp[np.arange(n), t], rtol=16 * eps, atol=16 * eps)
    want = scale[:, None] * (np.exp(logp) - np.eye(C)[t])
    assert np.all(np.abs(grad - want) <= 64 * eps * np.abs(want) + 8 * eps * scale[:, None])
    assert not grad[[3, 9]].any()


@pytest.mark.parametrize("kernels", COMPILED)
def test_compiled_cross_entropy_rows_nan_and_inf(kernels):
    """A NaN anywhere in a row makes its loss and its whole gradient NaN; +inf and a row of
    -inf too (as torch's log-softmax); the other rows are untouched."""
    mod = load_kernels(kernels)
    rng = np.random.default_rng(1)
    z = rng.standard_normal((6, 40)).astype(np.float32)
    z[0, 0], z[1, 39], z[2, 17], z[3, :] = np.nan, np.nan, np.inf, -np.inf
    t = np.full(6, 5, np.intp)
    grad, nll = np.empty_like(z), np.empty(6)
    with np.errstate(invalid="ignore"):
        assert mod.cross_entropy_rows(z, t, np.full(6, 0.5), grad, nll)
    assert np.isnan(nll[:4]).all() and np.isnan(grad[:4]).all()
    assert np.isfinite(nll[4:]).all() and np.isfinite(grad[4:]).all()


@pytest.mark.parametrize("kernels", COMPILED)
def test_compiled_cross_entropy_rows_declines_what_it_does_not_take(kernels):
    mod = load_kernels(kernels)
    z = np.zeros((8, 5), np.float32)
    t, scale = np.zeros(8, np.intp), np.ones(8)
    grad, nll = np.zeros((8, 5), np.float32), np.zeros(8)
    for args in [(z.astype(np.float16), t, scale, grad.astype(np.float16), nll),
                 (z, t.astype(np.int32), scale, grad, nll),           # targets not intp
                 (z, t, scale.astype(np.float32), grad, nll),         # scale not float64
                 (z, t, scale, grad.astype(np.float64), nll),         # grad of another dtype
                 (z, t, scale, grad, nll.astype(np.float32)),
                 (z[:, ::2], t, scale, grad[:, :3], nll),             # strided
                 (z, t[:7], scale, grad, nll),                        # sizes that disagree
                 (z, t, scale, grad[:7], nll),
                 (z[:0], t[:0], scale[:0], grad[:0], nll[:0]),        # no rows
                 (z, t, scale, z, nll),                               # grad over the logits
                 (z.astype(">f4"), t, scale, grad, nll),              # big-endian
                 (z, t, scale.astype(">f8"), grad, nll),
                 (unaligned(z), t, scale, grad, nll)]:                # not aligned
        assert mod.cross_entropy_rows(*args) is False
    assert not grad.any() and not nll.any()
    for bad in (-1, 5):
        t[3] = bad
        with pytest.raises(ValueError, match=r"t must hold class indices in \[0, 5\)"):
            mod.cross_entropy_rows(z, t, scale, grad, nll)
    assert not grad.any() and not nll.any()


def test_a_confident_float32_row_has_a_loss_of_at_least_0_close_to_float64():
    """NumPy's float32 path shifts a row by its mean: the target's shifted logit (~28) was
    rounded by 2e-6 in float32 inside exp but not in the loss, which came out -9.5e-7."""
    z = np.array([[30.6, -12.0, -15.0, 7.1]], np.float32)
    loss, _ = cross_entropy(z, np.array([0]))
    assert 0.0 <= loss < 1e-7
    rng = np.random.default_rng(7)
    for _ in range(50):
        z = (rng.standard_normal((8, 10)) * rng.uniform(1, 20)).astype(np.float32)
        t = rng.integers(0, 10, 8)
        z64 = z.astype(np.float64)
        logp = z64 - z64.max(axis=1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(axis=1, keepdims=True))
        for row in range(8):
            loss, _ = cross_entropy(z[row:row + 1], t[row:row + 1])
            want = -logp[row, t[row]]     # float32's rounding of a logit of that size, or 1e-7
            assert loss >= 0.0 and abs(loss - want) < 1e-7 + 4 * np.finfo(np.float32).eps * want


def test_mse_skips_masked_positions_that_hold_nan():
    """Missing targets stored as NaN and masked out: the loss and the gradient are those of the
    rest (0 * NaN made both NaN)."""
    pred, target = np.array([1.0, 0.0, 2.0]), np.array([0.0, np.nan, np.inf])
    loss, grad = mse_loss(pred, target, mask=np.isfinite(target))
    assert loss == 1.0 and np.array_equal(grad, [2.0, 0.0, 0.0])
    loss, grad = mse_loss(pred, target, mask=[1.0, 0.0, 0.0], reduction="sum")
    assert loss == 1.0 and np.array_equal(grad, [2.0, 0.0, 0.0])

