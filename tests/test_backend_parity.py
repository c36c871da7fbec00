"""Parity of every compiled backend with the NumPy reference, on shapes and
options drawn by hypothesis: outputs, final states, step norms and every
gradient (float64 atol 1e-9; float32 atol 2e-5 on outputs, rtol 1e-4 on gradients)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from helpers import BACKENDS, CELLS, MODES, is_lstm, make_cell, make_layer, random_problem

COMPILED = [b for b in BACKENDS if b != "numpy"]
OUT_ATOL = {np.float32: 2e-5, np.float64: 1e-9}
GRAD_RTOL = {np.float32: 1e-4, np.float64: 1e-9}
GRAD_ATOL = {np.float32: 2e-5, np.float64: 1e-9}

pytestmark = pytest.mark.skipif(not COMPILED, reason="no compiled backend is available")


def close(a, b, dtype, what, grad=False):
    if grad:
        np.testing.assert_allclose(a, b, rtol=GRAD_RTOL[dtype], atol=GRAD_ATOL[dtype], err_msg=what)
    else:
        np.testing.assert_allclose(a, b, rtol=0, atol=OUT_ATOL[dtype], err_msg=what)


def forward_backward(layer, x, hx, lengths, G, GH):
    out, hy = layer(x, hx, lengths=lengths)
    dx, dhx, norms = layer.backward(G, GH, return_step_norms=True)
    hy, dhx = (hy, dhx) if is_lstm(layer) else ((hy,), (dhx,))
    return [out, *hy], [dx, *dhx, norms, *(layer.grads[k] for k in sorted(layer.grads))]


@pytest.mark.parametrize("backend", COMPILED or ["none"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mode=st.sampled_from(list(MODES)), dtype=st.sampled_from([np.float32, np.float64]),
       T=st.integers(1, 7), B=st.integers(0, 9), I=st.integers(1, 9), H=st.integers(1, 17),
       num_layers=st.integers(1, 2), bidirectional=st.booleans(), bias=st.booleans(),
       batch_first=st.booleans(), with_lengths=st.booleans(), proj=st.integers(0, 3),
       seed=st.integers(0, 2 ** 16))
def test_layer_matches_reference(backend, mode, dtype, T, B, I, H, num_layers, bidirectional, bias,
                                 batch_first, with_lengths, proj, seed):
    proj = proj if mode == "lstm" and proj < H else 0
    kw = dict(dtype=dtype, input_size=I, hidden_size=H, num_layers=num_layers,
              bidirectional=bidirectional, bias=bias, batch_first=batch_first, proj_size=proj,
              seed=seed)
    ours, ref = make_layer(mode, backend, **kw), make_layer(mode, "numpy", **kw)
    problem = random_problem(ref, T, B, np.random.default_rng(seed), with_lengths=with_lengths and B > 0)
    outs, grads = forward_backward(ours, *problem)
    ref_outs, ref_grads = forward_backward(ref, *problem)
    for k, (a, b) in enumerate(zip(outs, ref_outs)):
        assert a.dtype == b.dtype == dtype
        close(a, b, dtype, f"output {k}")
    for k, (a, b) in enumerate(zip(grads, ref_grads)):
        close(a, b, dtype, f"gradient {k}", grad=True)


@pytest.mark.parametrize("backend", COMPILED or ["none"])
@pytest.mark.parametrize("mode", list(CELLS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("B", [0, 1, 5])
def test_cell_matches_reference(backend, mode, dtype, B):
    rng = np.random.default_rng(B)
    ours = make_cell(mode, backend, dtype=dtype, input_size=7, hidden_size=9, seed=1)
    ref = make_cell(mode, "numpy", dtype=dtype, input_size=7, hidden_size=9, seed=1)
    x = rng.standard_normal((B, 7)).astype(dtype)
    states = [rng.standard_normal((B, 9)).astype(dtype) for _ in range(2 if is_lstm(ref) else 1)]
    grads = [rng.standard_normal((B, 9)).astype(dtype) for _ in states]
    hx = tuple(states) if is_lstm(ref) else states[0]
    results = []
    for cell in (ours, ref):
        for _ in range(3):   # several steps: the cache belongs to the last one
            hy = cell(x, hx)
        dx, dh = cell.backward(*grads)
        hy, dh = (hy, dh) if is_lstm(ref) else ((hy,), (dh,))
        results.append([*hy, dx, *dh, *(cell.grads[k] for k in sorted(cell.grads))])
    n = len(states)
    for k, (a, b) in enumerate(zip(*results)):
        close(a, b, dtype, f"result {k}", grad=k >= n)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("layers_dirs", [(1, False), (2, True)])
def test_backward_without_the_input_gradient_gives_the_same_weight_and_state_gradients(
        backend, mode, layers_dirs):
    """``backward(..., input_grad=False)`` returns dx None and every other gradient exactly as
    with it (the first layer's dx is not computed; inner layers still need theirs)."""
    num_layers, bidirectional = layers_dirs
    kw = dict(dtype=np.float32, input_size=5, hidden_size=7, num_layers=num_layers,
              bidirectional=bidirectional, seed=3)
    results = []
    for input_grad in (True, False):
        layer = make_layer(mode, backend, **kw)
        x, hx, lengths, G, GH = random_problem(layer, 6, 9, np.random.default_rng(4),
                                               with_lengths=True)
        layer(x, hx, lengths=lengths)
        dx, dhx, norms = layer.backward(G, GH, return_step_norms=True, input_grad=input_grad)
        assert (dx is None) == (not input_grad)
        dhx = dhx if is_lstm(layer) else (dhx,)
        results.append([*dhx, norms, *(layer.grads[k] for k in sorted(layer.grads))])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scale", [1e-25, 1e20])
def test_float32_step_norms_neither_underflow_nor_overflow(backend, scale):
    """||dJ/dh_t|| of float32 gradients of 1e-25 or 1e20 is a float32 number though the squares
    are not (1e-50, 1e40): every backend sums them in float64."""
    layer = make_layer("gru", backend, dtype=np.float32, input_size=4, hidden_size=8, seed=0)
    x = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(np.float32)
    layer(x)
    dout = np.full((3, 2, 8), scale, np.float32)
    _, _, norms = layer.backward(dout, return_step_norms=True)
    assert norms.dtype == np.float32
    np.testing.assert_allclose(norms[0, -1], np.sqrt(8) * scale, rtol=1e-6)   # the last step's
    assert np.all(np.isfinite(norms)) and np.all(norms > 0)
