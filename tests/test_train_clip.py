"""Gradient clipping against torch.nn.utils.clip_grad_norm_ / clip_grad_value_."""

import math

import numpy as np
import pytest

from fastrnn.train import Linear, _compiled, clip_grad_norm, clip_grad_value, grad_norm


def grads_case(scale, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {"a": (rng.standard_normal((4, 3)) * scale).astype(dtype),
            "b": (rng.standard_normal(7) * scale).astype(dtype)}


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("scale", [0.01, 10.0])
def test_clip_grad_norm_matches_torch(norm_type, scale, torch):
    grads = grads_case(scale)
    tps = []
    for g in grads.values():
        t = torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
        t.grad = torch.tensor(g.copy())
        tps.append(t)
    ref = torch.nn.utils.clip_grad_norm_(tps, max_norm=1.0, norm_type=norm_type)
    total = clip_grad_norm(grads, 1.0, norm_type=norm_type)
    assert total == pytest.approx(ref.item(), rel=1e-12)
    for g, t in zip(grads.values(), tps):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12, atol=1e-15)
    if scale == 10.0:
        assert grad_norm(grads, norm_type) == pytest.approx(1.0, rel=1e-5)   # the 1e-6 epsilon


def test_returns_norm_before_clipping_and_float64_accumulation():
    grads = {"a": np.full(4, 3e20, dtype=np.float32)}   # squares overflow float32
    total = clip_grad_norm(grads, 5.0)
    assert total == pytest.approx(6e20, rel=1e-6)
    assert grads["a"].dtype == np.float32
    np.testing.assert_allclose(grads["a"], 2.5, rtol=1e-5)
    small = {"a": np.array([0.3, 0.4])}
    assert clip_grad_norm(small, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(small["a"], [0.3, 0.4])   # under the limit: untouched


def test_nonfinite(torch):
    grads = {"a": np.array([1.0, np.nan])}
    with pytest.raises(RuntimeError, match="non-finite"):
        clip_grad_norm(grads, 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(grads["a"], [1.0, np.nan])    # left alone
    t = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    t.grad = torch.tensor([1.0, np.inf], dtype=torch.float64)
    ref = torch.nn.utils.clip_grad_norm_([t], 1.0)
    g = {"a": np.array([1.0, np.inf])}
    total = clip_grad_norm(g, 1.0)
    assert math.isinf(total) and math.isinf(ref.item())
    np.testing.assert_array_equal(g["a"], t.grad.numpy())        # [0, nan] like torch
    assert math.isnan(clip_grad_norm({"a": np.array([1.0, np.nan])}, 1.0))


def test_module_and_list_forms_and_errors():
    head = Linear(3, 2, seed=0)
    head.grads["weight"][...] = 10
    total = clip_grad_norm(head, 1.0)
    assert total == pytest.approx(math.sqrt(6 * 100))
    assert grad_norm([head]) == pytest.approx(1.0, rel=1e-5)
    assert clip_grad_norm({}, 1.0) == 0.0
    # a module (or an array) given twice counts once, and is clipped once
    assert grad_norm([head, head]) == grad_norm(head)
    g = head.grads["weight"]
    assert grad_norm({"a": g, "b": g}) == grad_norm({"a": g})
    g[...] = 10
    assert clip_grad_value([head, head], 1.0) is None
    np.testing.assert_array_equal(g, 1.0)
    g[...] = 10
    clip_grad_norm({"enc": head, "dec": head}, 1.0)
    assert grad_norm(head) == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(TypeError):
        clip_grad_norm({"a": [1.0, 2.0]}, 1.0)
    with pytest.raises(ValueError):
        grad_norm({"a": np.ones(2)}, norm_type=0)
    with pytest.raises(TypeError):
        clip_grad_norm({"a": np.ones(2)}, "1")


def test_clip_grad_value_matches_torch(torch):
    grads = grads_case(2.0, seed=1)
    tps = []
    for g in grads.values():
        t = torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
        t.grad = torch.tensor(g.copy())
        tps.append(t)
    torch.nn.utils.clip_grad_value_(tps, 0.5)
    arrays = list(grads.values())
    assert clip_grad_value(grads, 0.5) is None
    for g, a, t in zip(grads.values(), arrays, tps):
        assert g is a
        np.testing.assert_array_equal(g, t.grad.numpy())
    with pytest.raises(ValueError):
        clip_grad_value(grads, -1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_norm_compiled_and_numpy_paths_agree(dtype, monkeypatch):
    """The 2-norm takes one compiled pass per contiguous array where the extension is built
    (kernels/fastrnn_optim.h), NumPy's float64 dot otherwise: equal within double rounding."""
    rng = np.random.default_rng(5)
    grads = [(rng.standard_normal(s) * 1e3).astype(dtype) for s in [(300, 200), (200,), (33, 7)]]
    grads.append(np.asfortranarray(rng.standard_normal((9, 5))).astype(dtype))   # NumPy's turn
    grads.append(np.full(4, 3e20, dtype))      # squares that overflow float32
    fused = grad_norm(grads)
    monkeypatch.setattr(_compiled, "kernels", lambda: None)
    assert fused == pytest.approx(grad_norm(grads), rel=1e-13, abs=0)
