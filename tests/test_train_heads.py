"""fastrnn.train.Linear: shapes, PyTorch's init and names, finite differences, torch parity."""

import numpy as np
import pytest

from fastrnn.train import Linear
from helpers import numerical_gradient


def test_shapes_names_init_and_config():
    head = Linear(7, 3, seed=0)
    assert list(head.parameters()) == ["weight", "bias"]
    assert head.parameters()["weight"].shape == (3, 7)
    assert head.parameters()["bias"].shape == (3,)
    assert head.dtype == np.float32
    bound = 1 / np.sqrt(7)
    for p in head.parameters().values():
        assert np.all(np.abs(p) <= bound)
    big = Linear(100, 400, seed=1)
    w = big.parameters()["weight"]
    assert abs(w.max() - 0.1) < 0.01 and abs(w.min() + 0.1) < 0.01   # fills U(-1/sqrt(in), ..)
    config = head.get_config()
    assert config == dict(in_features=7, out_features=3, bias=True, dtype="float32", seed=0)
    again = Linear(**config)
    for name in ("weight", "bias"):
        np.testing.assert_array_equal(again.parameters()[name], head.parameters()[name])
    assert list(Linear(4, 2, bias=False).parameters()) == ["weight"]
    assert "in_features=7" in repr(head)


@pytest.mark.parametrize("lead", [(), (5,), (4, 3), (2, 3, 2)])
def test_forward_any_leading_dims(lead):
    head = Linear(6, 4, dtype=np.float64, seed=2)
    x = np.random.default_rng(0).standard_normal(lead + (6,))
    y = head(x)
    assert y.shape == lead + (4,)
    W, b = head.parameters()["weight"], head.parameters()["bias"]
    np.testing.assert_allclose(y, x @ W.T + b, rtol=1e-12)
    dx = head.backward(np.ones_like(y))
    assert dx.shape == x.shape


@pytest.mark.parametrize("bias", [True, False])
def test_finite_differences(bias):
    rng = np.random.default_rng(3)
    head = Linear(5, 4, bias=bias, dtype=np.float64, seed=4)
    x = rng.standard_normal((3, 2, 5))
    G = rng.standard_normal((3, 2, 4))

    def loss():
        return float(np.sum(G * np.tanh(head(x))))

    y = head(x)
    dx = head.backward(G * (1 - np.tanh(y) ** 2))
    head.train()
    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)
    for name, p in head.parameters().items():
        np.testing.assert_allclose(head.grads[name], numerical_gradient(loss, p), rtol=1e-6, atol=1e-8)


def test_backward_accumulates_and_zero_grad():
    head = Linear(3, 2, dtype=np.float64, seed=0)
    x = np.ones((4, 3))
    head(x)
    head.backward(np.ones((4, 2)))
    first = head.grads["weight"].copy()
    head(x)
    head.backward(np.ones((4, 2)))
    np.testing.assert_allclose(head.grads["weight"], 2 * first)
    head.zero_grad()
    assert not head.grads["weight"].any() and not head.grads["bias"].any()


def test_errors():
    head = Linear(3, 2)
    with pytest.raises(ValueError, match="in_features=3"):
        head(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError):
        head(np.zeros((2, 3), np.int64))
    with pytest.raises(RuntimeError, match="forward"):
        head.backward(np.zeros((2, 2), np.float32))
    head(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="dy"):
        head.backward(np.zeros((2, 3), np.float32))
    head.backward(np.zeros((2, 2), np.float32))          # the bad call did not consume the forward
    head.eval()
    head(np.zeros((2, 3), np.float32))
    with pytest.raises(RuntimeError):
        head.backward(np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError):
        Linear(0, 2)
    with pytest.raises(TypeError):
        Linear(2.5, 2)


def test_matches_torch_linear(torch):
    rng = np.random.default_rng(5)
    head = Linear(6, 3, dtype=np.float64, seed=1)
    ref = torch.nn.Linear(6, 3).double()
    ref.load_state_dict({k: torch.tensor(v) for k, v in head.state_dict().items()})
    x = rng.standard_normal((4, 2, 6))
    G = rng.standard_normal((4, 2, 3))
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    (yt * torch.tensor(G)).sum().backward()
    y = head(x)
    dx = head.backward(G)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(head.grads["weight"], ref.weight.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(head.grads["bias"], ref.bias.grad.numpy(), rtol=1e-12, atol=1e-12)
