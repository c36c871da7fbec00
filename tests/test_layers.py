"""Behaviour of the public layers and cells that needs no peer library:
lengths, dropout, dtypes and layouts, NaN and large values, determinism,
modes, gradients accumulation, state dicts, backend selection."""

import re
import warnings

import numpy as np
import pytest

import fastrnn
from helpers import CELLS, MODES, is_lstm, make_cell, make_layer, random_problem

T, B, I, H = 6, 4, 3, 5


def run(layer, x, hx=None, lengths=None):
    out, hy = layer(x, hx, lengths=lengths)
    return out, (hy if is_lstm(layer) else (hy,))


# -- lengths -----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_lengths_equal_running_each_sequence_alone(backend, mode, bidirectional):
    """Steps past a length give zeros and leave the state alone; the reverse
    direction starts at each sequence's own last step."""
    rng = np.random.default_rng(0)
    layer = make_layer(mode, backend, input_size=I, hidden_size=H, num_layers=2,
                       bidirectional=bidirectional)
    x = rng.standard_normal((T, B, I))
    lengths = np.array([3, T, 1, 4])
    out, hy = run(layer, x, lengths=lengths)
    for b, n in enumerate(lengths):
        out_b, hy_b = run(layer, x[:n, b:b + 1])
        np.testing.assert_allclose(out[:n, b], out_b[:, 0], atol=1e-12)
        assert np.all(out[n:, b] == 0)
        for h, h_b in zip(hy, hy_b):
            np.testing.assert_allclose(h[:, b], h_b[:, 0], atol=1e-12)


@pytest.mark.parametrize("mode", list(MODES))
def test_reverse_is_the_forward_layer_on_each_sequence_flipped(backend, mode):
    """reverse=True: each sequence read from its last valid step to its first, out[t] aligned
    with x[t]; h_n the state after step 0; the same as the reverse half of a bidirectional
    layer with the same weights."""
    rng = np.random.default_rng(5)
    rev = make_layer(mode, backend, input_size=I, hidden_size=H, reverse=True, seed=2)
    fwd = make_layer(mode, backend, input_size=I, hidden_size=H, seed=2)
    fwd.load_state_dict(rev.state_dict())
    x = rng.standard_normal((T, B, I))
    lengths = np.array([3, T, 1, 4])
    out, hy = run(rev, x, lengths=lengths)
    for b, n in enumerate(lengths):
        out_b, hy_b = run(fwd, x[:n, b:b + 1][::-1])
        np.testing.assert_allclose(out[:n, b], out_b[::-1, 0], rtol=0, atol=1e-12)
        assert np.all(out[n:, b] == 0)
        for h, h_b in zip(hy, hy_b):
            np.testing.assert_allclose(h[:, b], h_b[:, 0], rtol=0, atol=1e-12)
    bi = make_layer(mode, backend, input_size=I, hidden_size=H, bidirectional=True, seed=2)
    bi.load_state_dict({k + "_reverse": v for k, v in rev.state_dict().items()}, strict=False)
    out_bi, hy_bi = run(bi, x, lengths=lengths)
    np.testing.assert_array_equal(out_bi[:, :, -out.shape[2]:], out)
    for h, h_bi in zip(hy, hy_bi):
        np.testing.assert_array_equal(h_bi[1], h[0])
    assert "reverse=True" in repr(rev) and rev.get_config()["reverse"] is True
    assert "reverse" not in fwd.get_config()


def test_reverse_survives_save_load_and_pickle(tmp_path):
    import pickle
    layer = fastrnn.GRU(3, 4, num_layers=2, reverse=True, seed=1)
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    layer.eval()
    want, _ = layer(x)
    layer.save(tmp_path / "m.npz")
    for back in (fastrnn.load(tmp_path / "m.npz"), pickle.loads(pickle.dumps(layer))):
        assert back.reverse and back.get_config() == layer.get_config()
        np.testing.assert_array_equal(back.eval()(x)[0], want)


def test_reverse_refuses_bidirectional_and_non_booleans():
    with pytest.raises(ValueError, match="reverse=True.*bidirectional=True"):
        fastrnn.LSTM(3, 4, bidirectional=True, reverse=True)
    with pytest.raises(TypeError, match="reverse"):
        fastrnn.GRU(3, 4, reverse="yes")


@pytest.mark.parametrize("mode", list(MODES))
def test_lengths_gradients_equal_running_each_sequence_alone(backend, mode):
    rng = np.random.default_rng(1)
    layer = make_layer(mode, backend, input_size=I, hidden_size=H, bidirectional=True)
    x = rng.standard_normal((T, B, I))
    lengths = np.array([2, T, 5, 1])
    out, hy = run(layer, x, lengths=lengths)
    G = rng.standard_normal(out.shape)
    dx, _ = layer.backward(G)
    total = {k: g.copy() for k, g in layer.grads.items()}
    layer.zero_grad()
    for b, n in enumerate(lengths):
        run(layer, x[:n, b:b + 1])
        dx_b, _ = layer.backward(G[:n, b:b + 1])
        np.testing.assert_allclose(dx[:n, b], dx_b[:, 0], atol=1e-12)
        assert np.all(dx[n:, b] == 0)
    for k in total:
        np.testing.assert_allclose(total[k], layer.grads[k], atol=1e-12)


def test_lengths_accept_any_integer_array_like(backend):
    layer = make_layer("gru", backend, input_size=I, hidden_size=H)
    x = np.random.default_rng(0).standard_normal((T, B, I))
    ref, _ = layer(x, lengths=np.array([1, 2, 3, 4]))
    for lengths in ([1, 2, 3, 4], (1, 2, 3, 4), np.array([1, 2, 3, 4], dtype=np.uint8)):
        np.testing.assert_array_equal(layer(x, lengths=lengths)[0], ref)
    np.testing.assert_array_equal(layer(x, lengths=[T] * B)[0], layer(x)[0])


# -- batch size 0, NaN, large values ----------------------------------------------------------------
@pytest.mark.parametrize("mode", list(MODES))
def test_batch_size_zero(backend, mode):
    layer = make_layer(mode, backend, input_size=I, hidden_size=H, num_layers=2, bidirectional=True)
    out, hy = run(layer, np.zeros((T, 0, I)), lengths=np.zeros(0, dtype=int))
    assert out.shape == (T, 0, 2 * H) and all(h.shape == (4, 0, H) for h in hy)
    dx, dh = layer.backward(out)
    assert dx.shape == (T, 0, I)
    assert all(np.all(g == 0) for g in layer.grads.values())


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_propagates_only_where_it_should(backend, mode, dtype):
    layer = make_layer(mode, backend, dtype=dtype, input_size=I, hidden_size=H)
    x = np.random.default_rng(0).standard_normal((T, B, I))
    x[2, 1, 0] = np.nan
    out, hy = run(layer, x)
    assert np.all(np.isfinite(out[:2])) and np.all(np.isfinite(out[:, [0, 2, 3]]))
    if mode == "rnn_relu":   # relu can clamp a NaN sum to... never: max(NaN, 0) is NaN
        assert np.isnan(out[2, 1]).any()
    else:
        assert np.all(np.isnan(out[2:, 1]))
        assert np.all(np.isnan(hy[0][:, 1]))


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_large_inputs_saturate_without_warnings(backend, mode, dtype, scale):
    layer = make_layer(mode, backend, dtype=dtype, input_size=I, hidden_size=H, num_layers=2)
    x = scale * np.sign(np.random.default_rng(0).standard_normal((T, B, I)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out, hy = run(layer, x)
        dx, _ = layer.backward(np.ones_like(out))
    assert np.all(np.isfinite(out)) and all(np.all(np.isfinite(h)) for h in hy)
    assert np.all(np.isfinite(dx))
    # relu and lstm_act's elu output are unbounded; rnn_act's scaled tanh is 1.3 tanh
    bound = {"rnn_relu": np.inf, "lstm_act": np.inf, "rnn_act": 1.3}.get(mode, 1)
    assert np.all(np.abs(out) <= bound)


# -- dtypes and layouts -----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inputs_are_converted_to_the_layer_dtype(backend, dtype):
    layer = make_layer("lstm", backend, dtype=dtype, input_size=I, hidden_size=H)
    x = np.random.default_rng(0).standard_normal((T, B, I))
    ref, _ = layer(x.astype(dtype))
    for variant in (x.astype(np.float16).astype(np.float64), x.astype(np.float16), x.tolist(),
                    np.asfortranarray(x), np.concatenate([x, x], axis=2)[:, :, ::2] * 0 + x):
        out, (h, c) = layer(variant)
        assert out.dtype == h.dtype == c.dtype == dtype
    out, _ = layer(x.tolist())
    np.testing.assert_array_equal(out, ref)
    np.testing.assert_array_equal(layer(np.asfortranarray(x))[0], ref)
    wide = np.zeros((T, B, 2 * I))
    wide[:, :, ::2] = x
    np.testing.assert_array_equal(layer(wide[:, :, ::2])[0], ref)   # non-contiguous view
    dx, (dh, dc) = layer.backward(np.ones((T, B, H), dtype=np.float16))
    assert dx.dtype == dh.dtype == dc.dtype == dtype
    assert all(g.dtype == dtype for g in layer.grads.values())


@pytest.mark.parametrize("mode", list(MODES))
def test_batch_first_is_a_transpose(backend, mode):
    rng = np.random.default_rng(3)
    a = make_layer(mode, backend, input_size=I, hidden_size=H, num_layers=2, bidirectional=True)
    b = make_layer(mode, backend, input_size=I, hidden_size=H, num_layers=2, bidirectional=True,
                   batch_first=True)
    x = rng.standard_normal((T, B, I))
    lengths = [T, 2, 3, 1]
    out_a, hy_a = run(a, x, lengths=lengths)
    out_b, hy_b = run(b, x.transpose(1, 0, 2), lengths=lengths)
    np.testing.assert_array_equal(out_b, out_a.transpose(1, 0, 2))
    for h, g in zip(hy_a, hy_b):   # states stay (L*D, B, H) as in PyTorch
        np.testing.assert_array_equal(h, g)
    G = rng.standard_normal(out_a.shape)
    dx_a, _ = a.backward(G)
    dx_b, _ = b.backward(G.transpose(1, 0, 2))
    np.testing.assert_array_equal(dx_b, dx_a.transpose(1, 0, 2))


@pytest.mark.parametrize("mode", list(MODES))
def test_unbatched_input_equals_a_batch_of_one(backend, mode):
    rng = np.random.default_rng(4)
    layer = make_layer(mode, backend, input_size=I, hidden_size=H, num_layers=2)
    x, hx, _, G, GH = random_problem(layer, T, 1, rng)
    out1, hy1 = layer(x[:, 0], tuple(h[:, 0] for h in hx) if is_lstm(layer) else hx[:, 0])
    assert out1.ndim == 2
    dx1, dh1 = layer.backward(G[:, 0])
    out, hy = layer(x, hx)
    dx, dh = layer.backward(G)
    np.testing.assert_allclose(out1, out[:, 0], atol=1e-13)
    np.testing.assert_allclose(dx1, dx[:, 0], atol=1e-13)
    if not is_lstm(layer):
        hy1, hy, dh1, dh = (hy1,), (hy,), (dh1,), (dh,)
    for a, b in zip(hy1, hy):
        np.testing.assert_allclose(a, b[:, 0], atol=1e-13)
    for a, b in zip(dh1, dh):
        assert a.shape == b[:, 0].shape


def test_unbatched_single_layer_takes_a_1d_state(backend):
    layer = make_layer("gru", backend, input_size=I, hidden_size=H)
    x = np.random.default_rng(0).standard_normal((T, I))
    h0 = np.full(H, 0.3)
    out, h_n = layer(x, h0)
    assert h_n.shape == (1, H)
    dx, dh0 = layer.backward(np.ones_like(out))
    assert dh0.shape == (H,)            # shaped like the hx that was passed
    out2, _ = layer(x, h0[None])
    np.testing.assert_array_equal(out, out2)
    assert layer.backward(np.ones_like(out))[1].shape == (1, H)


# -- modes, determinism, gradients ----------------------------------------------------------------
@pytest.mark.parametrize("mode", list(MODES))
def test_eval_mode_keeps_nothing(backend, mode):
    layer = make_layer(mode, backend, input_size=I, hidden_size=H).eval()
    layer(np.zeros((T, B, I)))
    assert layer._cache is None
    with pytest.raises(RuntimeError, match="training mode"):
        layer.backward(np.zeros((T, B, H)))
    assert layer.train() is layer and layer.training


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", list(MODES))
def test_parameters_and_gradients_start_on_a_cache_line(mode, dtype):
    """Every parameter and gradient array starts at a multiple of 64 bytes (as PyTorch's
    tensors do), so a step's vectors over a weight row never straddle two cache lines; the
    values are those of an unaligned construction (the seeded generator's draws, cast), and a
    loaded state dict is written into the same arrays."""
    cell_mode = mode if mode in CELLS else "rnn_tanh"
    modules = [make_layer(mode, "numpy", dtype=dtype, input_size=3, hidden_size=5,
                          num_layers=2, bidirectional=True, seed=1),
               make_cell(cell_mode, "numpy", dtype=dtype, input_size=3, hidden_size=5, seed=1)]
    for m in modules:
        arrays = list(m.parameters().values()) + list(m.grads.values())
        assert [a.ctypes.data % 64 for a in arrays] == [0] * len(arrays)
        assert all(a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable for a in arrays)
        rng = np.random.default_rng(1)
        bound = 1 / np.sqrt(5)
        for name, p in m.parameters().items():   # PyTorch's order: the generator's order
            np.testing.assert_array_equal(p, rng.uniform(-bound, bound, p.shape).astype(dtype))
        before = m.parameters()
        m.load_state_dict({k: v + 1 for k, v in m.state_dict().items()})
        assert all(m.parameters()[k] is before[k] for k in before)


@pytest.mark.parametrize("mode", list(MODES))
def test_same_call_twice_is_bit_identical(backend, mode):
    results = []
    for _ in range(2):
        layer = make_layer(mode, backend, dtype=np.float32, input_size=I, hidden_size=H,
                           num_layers=3, dropout=0.3, bidirectional=True, seed=42)
        x, hx, lengths, G, GH = random_problem(layer, T, B, np.random.default_rng(5), with_lengths=True)
        out, hy = run(layer, x, hx, lengths)
        dx, dhx = layer.backward(G, GH)
        results.append([out, *hy, dx, *(dhx if is_lstm(layer) else (dhx,)), *layer.grads.values()])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_gradients_accumulate_until_zero_grad(backend):
    layer = make_layer("lstm", backend, input_size=I, hidden_size=H)
    x = np.random.default_rng(0).standard_normal((T, B, I))
    out, _ = layer(x)
    layer.backward(np.ones_like(out))
    once = {k: g.copy() for k, g in layer.grads.items()}
    layer(x)
    layer.backward(np.ones_like(out))
    for k, g in layer.grads.items():
        np.testing.assert_allclose(g, 2 * once[k], rtol=1e-12)
    layer.zero_grad()
    assert all(np.all(g == 0) for g in layer.grads.values())


# -- dropout ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "gru"])
def test_dropout_is_seeded_and_off_in_eval(backend, mode):
    x = np.random.default_rng(0).standard_normal((T, B, I))
    kw = dict(input_size=I, hidden_size=H, num_layers=2)
    plain = make_layer(mode, backend, seed=1, **kw)
    d1, d2 = (make_layer(mode, backend, seed=1, dropout=0.5, **kw) for _ in range(2))
    ref = plain(x)[0]
    first = d1(x)[0]
    np.testing.assert_array_equal(first, d2(x)[0])         # same seed, same masks
    assert not np.allclose(first, ref)                       # dropout acts in training
    assert not np.array_equal(first, d1(x)[0])               # a fresh mask every forward
    np.testing.assert_array_equal(d1.eval()(x)[0], ref)      # and not at all in eval


def test_dropout_one_zeroes_the_inputs_of_upper_layers(backend):
    x = np.random.default_rng(0).standard_normal((T, B, I))
    layer = make_layer("gru", backend, input_size=I, hidden_size=H, num_layers=2, dropout=1.0)
    out, _ = layer(x)
    top = make_layer("gru", backend, input_size=H, hidden_size=H)
    top.load_state_dict({k[:-1] + "0": v for k, v in layer.state_dict().items() if k.endswith("l1")})
    np.testing.assert_allclose(out, top(np.zeros((T, B, H)))[0], atol=1e-14)


def test_dropout_rate(backend):
    layer = make_layer("rnn_relu", backend, input_size=I, hidden_size=400, num_layers=2,
                       dropout=0.25, bias=False)
    x = np.abs(np.random.default_rng(0).standard_normal((1, 50, I)))
    layer.load_state_dict({k: np.abs(v) if k.endswith("l0") else np.eye(400)
                           for k, v in layer.state_dict().items()})
    out, _ = layer(x)   # relu of positive weights: the top layer passes the dropped inputs through
    zeros = np.mean(out == 0)
    assert 0.22 < zeros < 0.28
    kept = out[out != 0]
    ref = make_layer("rnn_relu", backend, input_size=I, hidden_size=400, bias=False)
    ref.load_state_dict({k[:-1] + "0": v for k, v in layer.state_dict().items() if k.endswith("l0")})
    np.testing.assert_allclose(np.sort(kept), np.sort((ref(x)[0] / 0.75)[out != 0]), rtol=1e-12)


def test_dropout_with_one_layer_warns():
    with pytest.warns(UserWarning, match="num_layers=1"):
        fastrnn.LSTM(3, 4, dropout=0.5)


# -- parameters, state dicts, seeds --------------------------------------------------------------
def test_parameters_are_live_and_state_dict_is_a_copy(backend):
    layer = make_layer("lstm", backend, input_size=I, hidden_size=H, proj_size=2)
    assert list(layer.parameters()) == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
                                        "weight_hr_l0"]
    x = np.ones((T, B, I))
    before = layer(x)[0]
    snapshot = layer.state_dict()
    snapshot["weight_ih_l0"][...] = 0
    np.testing.assert_array_equal(layer(x)[0], before)
    layer.parameters()["weight_ih_l0"][...] = 0
    assert not np.array_equal(layer(x)[0], before)
    layer.load_state_dict(layer.state_dict())


def test_seed_fixes_the_initialisation():
    a, b, c = fastrnn.GRU(3, 4, seed=7), fastrnn.GRU(3, 4, seed=7), fastrnn.GRU(3, 4, seed=8)
    for name in a.parameters():
        np.testing.assert_array_equal(a.parameters()[name], b.parameters()[name])
        assert not np.array_equal(a.parameters()[name], c.parameters()[name])


def test_bias_false_has_no_bias_parameters(backend):
    layer = make_layer("gru", backend, input_size=I, hidden_size=H, bias=False, bidirectional=True)
    assert list(layer.parameters()) == ["weight_ih_l0", "weight_hh_l0",
                                        "weight_ih_l0_reverse", "weight_hh_l0_reverse"]


def test_repr():
    assert repr(fastrnn.LSTM(10, 20, num_layers=2, proj_size=5)) == "LSTM(10, 20, num_layers=2, proj_size=5)"
    assert repr(fastrnn.RNN(3, 4, nonlinearity="relu")) == "RNN(3, 4, nonlinearity='relu')"
    assert repr(fastrnn.GRUCell(3, 4, dtype=np.float64)) == "GRUCell(3, 4, dtype=float64)"


# -- cells ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", list(CELLS))
def test_cell_step_equals_a_one_step_layer(backend, mode):
    rng = np.random.default_rng(6)
    cell = make_cell(mode, backend, input_size=I, hidden_size=H)
    layer = make_layer(mode, backend, input_size=I, hidden_size=H)
    layer.load_state_dict({k + "_l0": v for k, v in cell.state_dict().items()})
    x = rng.standard_normal((B, I))
    h = rng.standard_normal((B, H))
    hx = (h, h + 1) if is_lstm(cell) else h
    hy = cell(x, hx)
    out, hy_layer = layer(x[None], tuple(s[None] for s in hx) if is_lstm(cell) else h[None])
    hy = hy if is_lstm(cell) else (hy,)
    hy_layer = hy_layer if is_lstm(cell) else (hy_layer,)
    for a, b in zip(hy, hy_layer):
        np.testing.assert_allclose(a, b[0], atol=1e-14)
    unbatched = cell(x[0], tuple(s[0] for s in hx) if is_lstm(cell) else h[0])
    unbatched = unbatched if is_lstm(cell) else (unbatched,)
    for a, b in zip(unbatched, hy):
        assert a.shape == (H,)
        np.testing.assert_allclose(a, b[0], atol=1e-14)
    dx, dh = cell.backward(*([np.ones(H)] * len(hy)))
    assert dx.shape == (I,)


def test_cell_default_state_is_zero_and_eval_keeps_nothing(backend):
    cell = fastrnn.LSTMCell(I, H, backend=backend, dtype=np.float64, seed=0)
    x = np.ones((B, I))
    h, c = cell(x)
    h0, c0 = cell(x, (np.zeros((B, H)), np.zeros((B, H))))
    np.testing.assert_array_equal(h, h0)
    dx, (dh, dc) = cell.backward(np.ones((B, H)))
    assert dh.shape == dc.shape == (B, H)
    cell(x)
    for got, want in zip((dx, dh, dc), (lambda r: (r[0], *r[1]))(
            cell.backward(np.ones((B, H)), np.zeros((B, H))))):   # dc1 left out: zeros
        np.testing.assert_array_equal(got, want)
    cell.eval()
    cell(x)
    with pytest.raises(RuntimeError, match="training mode"):
        cell.backward(np.ones((B, H)))


@pytest.mark.parametrize("mode", list(CELLS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_eval_steps_take_the_backends_prepared_step_with_the_checked_paths_results(
        backend, mode, dtype):
    """In eval mode a cell calls its backend's prepared step (the cython backend has one) on
    arrays it can take as they are: bit for bit the checked path's results, which converts
    the rest (lists, other dtypes, states in a list, no state); the plan is made again after a
    pickle, a copy, and a change of backend."""
    import copy
    import pickle
    rng = np.random.default_rng(7)
    cell = make_cell(mode, backend, dtype=dtype, input_size=I, hidden_size=H).eval()
    x = rng.standard_normal((B, I)).astype(dtype)
    states = [rng.standard_normal((B, H)).astype(dtype) for _ in range(2 if is_lstm(cell) else 1)]
    hx = tuple(states) if is_lstm(cell) else states[0]
    as_tuple = (lambda hy: hy) if is_lstm(cell) else (lambda hy: (hy,))
    checked = as_tuple(cell(x.tolist(), [s.tolist() for s in states] if is_lstm(cell)
                            else states[0].tolist()))
    for _ in range(2):          # (the first call prepares the plan)
        for a, b in zip(checked, as_tuple(cell(x, hx))):
            assert b.dtype == dtype and b.shape == (B, H)
            np.testing.assert_array_equal(b, a)
    one = as_tuple(cell(x[:1], tuple(s[:1] for s in states) if is_lstm(cell) else states[0][:1]))
    for a, b in zip(one, as_tuple(cell(x[0], tuple(s[0] for s in states) if is_lstm(cell)
                                       else states[0][0]))):
        assert b.shape == (H,)
        np.testing.assert_array_equal(b, a[0])
    zero = as_tuple(cell(x))
    for a, b in zip(zero, as_tuple(cell(x, tuple(np.zeros_like(s) for s in states)
                                        if is_lstm(cell) else np.zeros_like(states[0])))):
        np.testing.assert_array_equal(b, a)

    class CheckedPath(Exception):
        pass

    def checked_path(*args):
        raise CheckedPath
    cell._step = checked_path      # arrays as they are: the plan takes them, where there is one
    try:
        cell(x, hx)
        planned = True
    except CheckedPath:
        planned = False
    finally:
        del cell._step
    assert planned == (backend == "cython")
    for other in (pickle.loads(pickle.dumps(cell)), copy.deepcopy(cell)):
        for a, b in zip(checked, as_tuple(other(x, hx))):
            np.testing.assert_array_equal(b, a)
    cell.backend = "numpy"
    for a, b in zip(checked, as_tuple(cell(x, hx))):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert cell._plan[0].name == "numpy"


def test_eval_steps_of_one_cell_from_several_threads():
    """Threads sharing one cell in eval mode (the prepared step keeps nothing between calls)
    get what one thread gets, bit for bit, at a size whose step runs on a team of threads.
    (An exception in a thread reaches the test through its future's result.)"""
    from concurrent.futures import ThreadPoolExecutor
    cell = fastrnn.LSTMCell(64, 320, seed=3).eval()
    rng = np.random.default_rng(8)
    inputs = [(rng.standard_normal((1, 64)).astype(np.float32),
               tuple(rng.standard_normal((1, 320)).astype(np.float32) for _ in range(2)))
              for _ in range(6)]
    want = [cell(x, hx) for x, hx in inputs]
    failures = []

    def work(k):
        for r in range(200):
            x, hx = inputs[(k + r) % len(inputs)]
            got = cell(x, hx)
            if not all(np.array_equal(a, b) for a, b in zip(got, want[(k + r) % len(inputs)])):
                failures.append((k, r))
        return k
    with ThreadPoolExecutor(4) as pool:
        assert [f.result(timeout=300) for f in [pool.submit(work, k) for k in range(4)]] == \
            [0, 1, 2, 3]
    assert not failures


# -- backends ----------------------------------------------------------------------------------
def test_backends_lists_every_backend_with_a_reason():
    status = fastrnn.backends()
    assert set(status) >= {"numpy", "numba", "cython"}
    assert status["numpy"] == {"available": True, "reason": ""}
    for name, s in status.items():
        assert s["available"] or s["reason"], name


def test_backend_environment_variable(monkeypatch):
    monkeypatch.setenv("FASTRNN_BACKEND", "numpy")
    assert fastrnn.LSTM(3, 4).backend == "numpy"
    assert fastrnn.LSTMCell(3, 4).backend == "numpy"
    monkeypatch.setenv("FASTRNN_BACKEND", " NumPy ")       # as the other switches: any case
    assert fastrnn.LSTM(3, 4).backend == "numpy"
    monkeypatch.delenv("FASTRNN_BACKEND")
    assert fastrnn.LSTM(3, 4, backend="numpy").backend == "numpy"


def test_required_backends_are_available():
    """CI names the backends it built in FASTRNN_REQUIRE_BACKENDS: they must import."""
    from helpers import REQUIRED
    status = fastrnn.backends()
    missing = {b: status.get(b, {}).get("reason", "unknown backend")
               for b in REQUIRED if not status.get(b, {}).get("available")}
    assert not missing, f"required backends are not available: {missing}"


@pytest.mark.parametrize("make", [lambda: fastrnn.LSTM(3, 4, num_layers=2, bidirectional=True),
                                  lambda: fastrnn.GRUCell(3, 4)])
def test_parameters_as_attributes_and_named_parameters(make):
    """As on a PyTorch module: m.weight_ih_l0 is the live array, named_parameters() yields
    (name, array) in order, and assigning to the name writes into the live array (checked,
    the error naming it), never an attribute that would hide it from the kernels."""
    m = make()
    params = m.parameters()
    assert [n for n, _ in m.named_parameters()] == list(params)
    for name, p in m.named_parameters():
        assert getattr(m, name) is p is params[name]
    name, p = next(m.named_parameters())
    setattr(m, name, np.full(p.shape, 0.5))
    assert getattr(m, name) is p and np.all(p == 0.5) and name not in vars(m)
    with pytest.raises(ValueError, match=re.escape(f"{name} must have shape {p.shape}, but got (1, 1)")):
        setattr(m, name, np.zeros((1, 1)))
    with pytest.raises(AttributeError, match="has no attribute 'weight_xx'"):
        m.weight_xx
    m.note = "mine"                  # other attributes are plain ones
    assert m.note == "mine"
    assert [n for n, _ in m.named_parameters(prefix="rnn")] == [f"rnn.{n}" for n in params]
    if isinstance(m, fastrnn.LSTM):  # PyTorch's all_weights: the live arrays, layer by layer
        assert [[id(p) for p in w] for w in m.all_weights] == [
            [id(params[f"{k}_l{layer}{sfx}"]) for k in ("weight_ih", "weight_hh", "bias_ih",
                                                          "bias_hh")]
            for layer in range(2) for sfx in ("", "_reverse")]


def test_an_attribute_error_inside_a_property_is_not_hidden():
    class Broken(fastrnn.GRU):
        @property
        def odd(self):
            return self.missing_thing.size

    with pytest.raises(AttributeError, match="'missing_thing'"):
        Broken(3, 4).odd


def test_linear_bias_is_the_live_array_as_in_pytorch():
    """Linear.bias is PyTorch's: the live (C,) array, None without one; assigning an array
    writes into it (the flag stays the constructor's, in get_config and the repr)."""
    from fastrnn.train import Linear
    head = Linear(3, 2, seed=0)
    assert head.bias is head.parameters()["bias"] and head.bias.shape == (2,)
    x = np.ones((1, 3), np.float32)
    np.testing.assert_allclose(head(x), x @ head.weight.T + head.bias, rtol=1e-6)
    head.bias = np.zeros(2)
    assert head.bias is head.parameters()["bias"]
    np.testing.assert_array_equal(head(np.zeros((1, 3), np.float32)), 0)
    assert head.get_config()["bias"] is True and "bias=True" in repr(head)
    plain = Linear(3, 2, bias=False)
    assert plain.bias is None and plain.get_config()["bias"] is False
    with pytest.raises(AttributeError, match="built with bias=False and has no bias"):
        plain.bias = np.zeros(2)


#: one maker of each public module, taking the constructor's keyword arguments
MODULES = {
    "RNN": lambda **kw: fastrnn.RNN(3, 4, **kw), "LSTM": lambda **kw: fastrnn.LSTM(3, 4, **kw),
    "GRU": lambda **kw: fastrnn.GRU(3, 4, **kw), "RNNCell": lambda **kw: fastrnn.RNNCell(3, 4, **kw),
    "LSTMCell": lambda **kw: fastrnn.LSTMCell(3, 4, **kw),
    "GRUCell": lambda **kw: fastrnn.GRUCell(3, 4, **kw),
    "Linear": lambda **kw: fastrnn.train.Linear(3, 4, **kw),
    "Embedding": lambda **kw: fastrnn.train.Embedding(5, 3, **kw),
}


@pytest.mark.parametrize("name", list(MODULES))
def test_modules_take_the_cpu_as_their_device(name):
    """PyTorch's code passes ``device``: None, "cpu" and "cpu:0" build the module, any other
    device is refused and named; ``to()`` returns the module itself for the CPU and its own
    dtype and refuses another dtype or device; ``cpu()`` returns the module."""
    make = MODULES[name]
    for device in (None, "cpu", "cpu:0"):
        assert make(device=device).dtype == np.float32
    for device in ("cuda", "cuda:0", "meta", "mps", "CPU", "cpu:x", 0, 1.0):
        with pytest.raises(ValueError, match=r"^device must be None or 'cpu' \(fastrnn runs on "
                                             r"the CPU\), but got " + repr(device)):
            make(device=device)
    m = make(dtype=np.float64)
    assert m.to("cpu") is m and m.to(device="cpu:0") is m and m.cpu() is m
    assert m.to(np.float64) is m and m.to("cpu", "float64", True) is m and m.to(dtype=None) is m
    with pytest.raises(ValueError, match=rf"^dtype: {name} keeps the dtype it was built with "
                                         r"\(float64\), but got <class 'numpy.float32'>: build "
                                         r"one with dtype=float32 and load"):
        m.to(np.float32)
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        m.to(dtype="int32")
    with pytest.raises(ValueError, match="^device must be None or 'cpu'"):
        m.to("cuda:1")
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['devices'\]"):
        m.to(devices="cpu")
    with pytest.raises(TypeError, match="non_blocking must be"):
        m.to("cpu", non_blocking="yes")


def test_a_dtype_where_the_device_goes_is_named_as_one():
    """PyTorch's positional order is ..., device, dtype: a dtype given where the device goes
    (fastrnn's order before it took PyTorch's) is refused with the remedy."""
    for make in (lambda: fastrnn.LSTMCell(3, 4, True, np.float64),
                 lambda: fastrnn.GRU(3, 4, 1, True, False, 0.0, False, 0, "float64")):
        with pytest.raises(ValueError, match=r"device must be None or 'cpu' .* a dtype .*"
                                             r"give dtype= by keyword"):
            make()
    for make in (lambda: fastrnn.GRU(3, 4, 1, True, False, 0.0, False, np.float64),
                 lambda: fastrnn.RNN(3, 4, 1, "tanh", True, False, 0.0, False, "float64")):
        with pytest.raises(ValueError, match=r"proj_size must be 0 for (GRU|RNN), but got .*"
                                             r"a dtype .*give dtype= by keyword"):
            make()
    with pytest.raises(ValueError, match=r"proj_size must be an int >= 0, but got .*"
                                         r"a dtype .*give dtype= by keyword"):
        fastrnn.LSTM(3, 4, 1, True, False, 0.0, False, np.float64)


def test_pytorchs_keyword_arguments_of_the_parameter_methods():
    """state_dict(prefix=, destination=, keep_vars=), load_state_dict(assign=),
    named_parameters(remove_duplicate=) and parameters(recurse=), as PyTorch's code calls them."""
    lstm = fastrnn.LSTM(3, 4, seed=0, backend="numpy")
    plain = lstm.state_dict()
    got = lstm.state_dict(prefix="rnn.")
    assert list(got) == ["rnn." + k for k in plain]
    assert all(np.array_equal(got["rnn." + k], v) for k, v in plain.items())
    dest = {"other": 1}
    assert lstm.state_dict(destination=dest) is dest and list(dest)[1:] == list(plain)
    live = lstm.state_dict(keep_vars=True)
    assert live["weight_hh_l0"] is lstm.weight_hh_l0          # the live array, not a copy
    assert plain["weight_hh_l0"] is not lstm.weight_hh_l0
    other = fastrnn.LSTM(3, 4, seed=1, backend="numpy")
    kept = other.weight_ih_l0
    assert other.load_state_dict(plain, assign=True) == ([], [])
    assert other.weight_ih_l0 is kept and np.array_equal(kept, plain["weight_ih_l0"])
    assert [n for n, _ in lstm.named_parameters(remove_duplicate=False)] == list(plain)
    assert list(lstm.parameters(recurse=True)) == list(plain)
    for call, name in ((lambda: lstm.state_dict(prefix=1), "prefix"),
                       (lambda: lstm.state_dict(keep_vars="yes"), "keep_vars"),
                       (lambda: lstm.state_dict(destination=[]), "destination"),
                       (lambda: lstm.load_state_dict(plain, assign="no"), "assign"),
                       (lambda: lstm.named_parameters(remove_duplicate=2), "remove_duplicate"),
                       (lambda: lstm.parameters(recurse=None), "recurse")):
        with pytest.raises(TypeError, match=name):
            call()


@pytest.mark.parametrize("cls", [fastrnn.RNN, fastrnn.LSTM, fastrnn.GRU, fastrnn.RNNCell,
                                 fastrnn.LSTMCell, fastrnn.GRUCell])
def test_help_describes_every_constructor_argument(cls):
    """help(fastrnn.LSTM) shows a numpydoc Parameters section with each argument of the
    constructor, in its order, each with a description."""
    import inspect
    import re
    doc = inspect.getdoc(cls)
    section = doc.split("Parameters\n----------\n", 1)[1]
    documented = re.findall(r"^(\w+) : .+\n    \S", section, flags=re.M)
    assert documented == [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
    assert "{" not in section.replace("{'", "")        # every field filled


def test_unbatched_step_norms_and_a_forward_dropped_by_eval():
    """An unbatched call's step norms are (L*D, T); eval() drops a pending training forward, so
    a backward after train() again has nothing to run on."""
    layer = fastrnn.GRU(3, 4, num_layers=2)
    out, _ = layer(np.ones((5, 3), np.float32))
    assert layer.backward(np.ones_like(out), return_step_norms=True)[2].shape == (2, 5)
    out, _ = layer(np.ones((5, 2, 3), np.float32))
    layer.eval()
    with pytest.raises(RuntimeError, match="training mode"):
        layer.train().backward(np.ones_like(out))

