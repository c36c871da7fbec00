"""fastrnn.train.Linear: shapes, PyTorch's init and names, finite differences, torch parity,
through NumPy's products and the compiled ones; the compiled products against NumPy's."""

import numpy as np
import pytest

import fastrnn
from fastrnn.train import Linear, _compiled, heads
from helpers import KERNELS, load_kernels, numerical_gradient, unaligned

#: the builds of the compiled kernels this machine runs (a required one that is missing fails)
COMPILED = [k for k in KERNELS if k.startswith("cython")]
#: relative tolerance of a compiled product against NumPy's, per dtype (another order of sums)
RTOL = {np.float32: 2e-5, np.float64: 1e-12}


@pytest.fixture(params=["numpy", "compiled"])
def products(request, monkeypatch):
    """Linear's products through NumPy's BLAS, or through the compiled tiles at every size (the
    extension is then required: without it this fails)."""
    compiled = request.param == "compiled"
    if compiled:
        assert _compiled.kernels() is not None, "the cython extension is not built"
    for name in ("COMPILED_MIN_ROWS", "LARGE_WEIGHT_ROWS", "COMPILED_MIN_ROWS_BACKWARD"):
        monkeypatch.setattr(heads, name, 1 if compiled else 2 ** 62)
    return request.param


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
def test_forward_any_leading_dims(lead, products):
    head = Linear(6, 4, dtype=np.float64, seed=2)
    x = np.random.default_rng(0).standard_normal(lead + (6,))
    y = head(x)
    assert y.shape == lead + (4,)
    W, b = head.parameters()["weight"], head.parameters()["bias"]
    np.testing.assert_allclose(y, x @ W.T + b, rtol=1e-12)
    dx = head.backward(np.ones_like(y))
    assert dx.shape == x.shape


@pytest.mark.parametrize("bias", [True, False])
def test_finite_differences(bias, products):
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


def test_backward_accumulates_and_zero_grad(products):
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


@pytest.mark.parametrize("shape", [(4, 2, 6, 3), (20, 8, 37, 21)], ids=["small", "160-rows"])
def test_matches_torch_linear(torch, products, shape):
    T, B, I, C = shape
    rng = np.random.default_rng(5)
    head = Linear(I, C, dtype=np.float64, seed=1)
    ref = torch.nn.Linear(I, C).double()
    ref.load_state_dict({k: torch.tensor(v) for k, v in head.state_dict().items()})
    x = rng.standard_normal((T, B, I))
    G = rng.standard_normal((T, B, C))
    xt = torch.tensor(x, requires_grad=True)
    yt = ref(xt)
    (yt * torch.tensor(G)).sum().backward()
    y = head(x)
    dx = head.backward(G)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(head.grads["weight"], ref.weight.grad.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(head.grads["bias"], ref.bias.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("C", [30, 3000], ids=["small-weight", "large-weight"])
def test_calls_with_the_rows_take_the_compiled_products(C):
    """A forward of COMPILED_MIN_ROWS rows or more (LARGE_WEIGHT_ROWS for a weight of more than
    SMALL_WEIGHT_BYTES), and every backward, gives the compiled products' bits; a forward of
    fewer, NumPy's (the extension built or not: without it, NumPy's always)."""
    fused = _compiled.kernels()
    rng = np.random.default_rng(0)
    head = Linear(50, C, seed=0)
    W, b = head.parameters()["weight"], head.parameters()["bias"]
    small = W.nbytes <= heads.SMALL_WEIGHT_BYTES
    assert small == (C == 30)
    rows = heads.COMPILED_MIN_ROWS if small else heads.LARGE_WEIGHT_ROWS
    for n in (1, rows - 1, rows, 300):
        x = rng.standard_normal((n, 50)).astype(np.float32)
        dy = rng.standard_normal((n, C)).astype(np.float32)
        if fused is not None and n >= rows:
            want = np.empty((n, C), np.float32)
            assert fused.dense_forward(x, W, b, want)
        else:
            want = x @ W.T + b
        if fused is not None:
            gw, gb, dx = np.zeros_like(W), np.zeros_like(b), np.empty_like(x)
            assert fused.dense_backward(dy, x, W, dx, gw, gb)
        else:
            gw, gb, dx = dy.T @ x, dy.sum(axis=0), dy @ W
        head.zero_grad()
        np.testing.assert_array_equal(head(x), want)
        np.testing.assert_array_equal(head.backward(dy), dx)
        np.testing.assert_array_equal(head.grads["weight"], gw)
        np.testing.assert_array_equal(head.grads["bias"], gb)


# -- the compiled products against NumPy's ----------------------------------------------------
#: (n, H, C): one row and one column; tiles of every height and a partial panel; a call split
#: over the threads (at least DENSE_SPLIT_MACS multiply-adds); the README loop's head
DENSE_SHAPES = [(1, 1, 1), (7, 3, 5), (37, 19, 97), (300, 130, 70), (2048, 128, 96)]


def dense_arrays(n, H, C, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x, w, b, dy, gw, gb = (rng.standard_normal(s).astype(dtype)
                           for s in [(n, H), (C, H), (C,), (n, C), (C, H), (C,)])
    return x, w, b, dy, gw, gb


@pytest.mark.parametrize("kernels", COMPILED)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=["x".join(map(str, s)) for s in DENSE_SHAPES])
@pytest.mark.parametrize("bias", [True, False])
def test_compiled_dense_matches_numpy(kernels, dtype, shape, bias):
    mod = load_kernels(kernels)
    n, H, C = shape
    x, w, b, dy, gw, gb = dense_arrays(n, H, C, dtype)
    b, gb = (b, gb) if bias else (None, None)
    y = np.full((n, C), np.nan, dtype)
    assert mod.dense_forward(x, w, b, y) is True
    want = x @ w.T + (b if bias else 0)
    scale = np.abs(x) @ np.abs(w.T)            # the sums' own size: cancellation is no error
    assert np.all(np.abs(y - want) <= RTOL[dtype] * (scale + 1)), "y"
    dx = np.full((n, H), np.nan, dtype)
    gw0, gb0 = gw.copy(), None if gb is None else gb.copy()
    assert mod.dense_backward(dy, x, w, dx, gw, gb) is True
    assert np.all(np.abs(dx - dy @ w) <= RTOL[dtype] * (np.abs(dy) @ np.abs(w) + 1)), "dx"
    assert np.all(np.abs(gw - (gw0 + dy.T @ x))
                  <= RTOL[dtype] * (np.abs(gw0) + np.abs(dy.T) @ np.abs(x) + 1)), "gweight"
    if bias:
        np.testing.assert_allclose(gb, gb0 + dy.sum(axis=0), rtol=RTOL[dtype],
                                   atol=RTOL[dtype] * n)
    gw1 = gw0.copy()
    assert mod.dense_backward(dy, x, w, None, gw1, None) is True    # no dx, no bias gradient
    np.testing.assert_array_equal(gw1, gw)


@pytest.mark.parametrize("kernels", COMPILED)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_dense_same_bits_on_any_thread_count(kernels, dtype):
    mod = load_kernels(kernels)
    x, w, b, dy, gw, gb = dense_arrays(517, 200, 75, dtype, seed=1)   # split on 2 threads and 3
    results = []
    before = fastrnn.get_num_threads()
    try:
        for threads in (1, 2, 3):
            fastrnn.set_num_threads(threads)
            y, dx, gw1, gb1 = np.empty((517, 75), dtype), np.empty_like(x), gw.copy(), gb.copy()
            assert mod.dense_forward(x, w, b, y) and mod.dense_backward(dy, x, w, dx, gw1, gb1)
            results.append((y, dx, gw1, gb1))
    finally:
        fastrnn.set_num_threads(before)
    for got in results[1:]:
        for a, want in zip(got, results[0]):
            np.testing.assert_array_equal(a, want)


@pytest.mark.parametrize("kernels", COMPILED)
def test_compiled_dense_propagates_nan_and_inf(kernels):
    mod = load_kernels(kernels)
    x, w, b, dy, gw, gb = dense_arrays(64, 40, 33, np.float32, seed=2)
    x[3, 5], x[7, 0], w[2, 9], w[5, 1], b[4] = np.nan, np.inf, np.inf, np.nan, np.nan
    y, dx, gw0 = np.empty((64, 33), np.float32), np.empty_like(x), gw.copy()
    assert mod.dense_forward(x, w, b, y)
    assert mod.dense_backward(dy, x, w, dx, gw, gb)
    with np.errstate(invalid="ignore"):
        wants = {"y": (y, x @ w.T + b), "dx": (dx, dy @ w), "gweight": (gw, gw0 + dy.T @ x)}
    for name, (got, want) in wants.items():
        assert np.isnan(want).any() and np.isinf(want).any(), name    # the case tests both
        for kind in (np.isnan, np.isposinf, np.isneginf):
            np.testing.assert_array_equal(kind(got), kind(want), err_msg=f"{name} {kind.__name__}")


@pytest.mark.parametrize("kernels", COMPILED)
def test_compiled_dense_declines_what_it_does_not_take(kernels):
    """False, having written nothing, for arrays it does not take (Linear then uses NumPy)."""
    mod = load_kernels(kernels)
    x, w, b, dy, gw, gb = dense_arrays(40, 6, 4, np.float32)
    y, dx = np.zeros((40, 4), np.float32), np.zeros((40, 6), np.float32)
    readonly = y.copy()
    readonly.flags.writeable = False
    gw_before, gb_before = gw.copy(), gb.copy()
    shared = np.zeros(400, np.float32)                             # an input and the output
    for args in [(x.astype(np.float64), w, b, y),                 # mixed dtypes
                 (x.astype(np.float16), w, b, y.astype(np.float16)),   # neither float32 nor 64
                 (np.asfortranarray(x), w, b, y),                  # not C-contiguous
                 (x[:, :5], w[:, :5], b, y),                       # a strided view
                 (x, w[:3], b, y),                                 # shapes that disagree
                 (x, w, b[:3], y),
                 (x, w, b, y[:39]),
                 (x, w, b, np.zeros((40, 5), np.float32)),
                 (x, w, b, readonly),                              # read-only output
                 (x.tolist(), w, b, y),                            # not an array
                 (x[:0], w, b, y[:0]),                             # no rows
                 (shared[:240].reshape(40, 6), w, b, shared[200:360].reshape(40, 4)),
                 (x.astype(">f4"), w.astype(">f4"), b.astype(">f4"), y),    # big-endian
                 (x, w, b, np.zeros((40, 4), ">f4")),
                 (unaligned(x), w, b, y)]:                         # not aligned
        assert mod.dense_forward(*args) is False
    assert not y.any() and not shared.any()
    for args in [(dy.astype(np.float64), x, w, dx, gw, gb),        # mixed dtypes
                 (dy, x[:39], w, dx, gw, gb),                      # rows that disagree
                 (dy, x, w, dx[:, :5], gw, gb),                    # a strided output
                 (dy, x, w, dx, gw.T.copy(), gb),                  # gradient of another shape
                 (dy, x, w, dx, gw, gb[:3]),
                 (dy, x, w, dx, gw, readonly.reshape(-1)[:4]),     # read-only gradient
                 (dy, x, w, x, gw, gb),                            # dx over the input
                 (dy, x, gw, dx, gw, gb),                          # the weight is the gradient
                 (dy.astype(">f4"), x, w, dx, gw, gb),             # big-endian
                 (dy, x, w, dx, gw, unaligned(gb))]:               # not aligned
        assert mod.dense_backward(*args) is False
    assert not dx.any()
    np.testing.assert_array_equal(gw, gw_before)
    np.testing.assert_array_equal(gb, gb_before)


@pytest.mark.parametrize("order", [">", "<"], ids=["big-endian", "little-endian"])
def test_linear_takes_input_in_either_byte_order(order, products):
    head = Linear(20, 7, seed=3)
    x = np.random.default_rng(4).standard_normal((50, 20))
    np.testing.assert_array_equal(head(x.astype(order + "f4")), head(x.astype(np.float32)))
