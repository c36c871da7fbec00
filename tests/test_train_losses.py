"""Losses: values and fused gradients against finite differences and torch.

The `torch` fixture (tests/conftest.py) skips without torch, or fails under FASTRNN_REQUIRE_TORCH=1.
"""

import numpy as np
import pytest

from fastrnn.train import cross_entropy, log_softmax, mse_loss, softmax
from helpers import numerical_gradient


def ce_case(shape, C, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal(shape + (C,)) * 3
    targets = rng.integers(0, C, size=shape)
    return logits, targets


def test_cross_entropy_hand_computed():
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
def test_cross_entropy_finite_differences(shape, reduction, masking):
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


def test_cross_entropy_stable_for_huge_logits():
    logits = np.array([[1000.0, -1000.0, 0.0], [-1e30, 1e30, 5.0]], dtype=np.float32)
    loss, grad = cross_entropy(logits, np.array([0, 0]))
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert loss == pytest.approx(2e30 / 2, rel=1e-6)
    np.testing.assert_allclose(grad, [[0, 0, 0], [-0.5, 0.5, 0]], atol=1e-7)
    assert grad.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_rows_far_from_their_mean_match_float64(dtype):
    """Rows are shifted by their mean, and by their maximum where that would overflow
    (fastrnn.train.losses._SUM_LIMIT): rows on both sides of the limit, -inf logits and a
    NaN row, in one call, against a float64 log-softmax shifted by the maximum."""
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


def test_cross_entropy_all_ignored_is_zero():
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
        cross_entropy(logits, targets, reduction="none")
    with pytest.raises(ValueError, match="broadcast"):
        cross_entropy(logits, targets, mask=np.ones(3, bool))
    with pytest.raises(ValueError, match="non-negative"):
        cross_entropy(logits, targets, mask=-np.ones(4))


@pytest.mark.parametrize("shape", [(7,), (5, 3)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_matches_torch(shape, reduction, torch):
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


def test_log_softmax_and_softmax(torch):
    x = np.random.default_rng(0).standard_normal((3, 4)) * 50
    np.testing.assert_allclose(log_softmax(x), torch.log_softmax(torch.tensor(x), -1).numpy(),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(softmax(x, temperature=2.0),
                               torch.softmax(torch.tensor(x) / 2, -1).numpy(), rtol=1e-12)


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
