"""Parity with PyTorch: outputs, final states and every gradient, across
cell type x bias x bidirectional x num_layers x batch_first x proj_size x
lengths x unbatched, in float64 (atol 1e-9) and float32 (atol 1e-5, rtol 1e-4).

Weights are copied into torch with ``load_state_dict``; ``lengths`` map to
``pack_padded_sequence(..., enforce_sorted=False)`` / ``pad_packed_sequence``.
"""

import itertools

import numpy as np
import pytest

from helpers import ATOL, RTOL, TORCH_MODES, is_lstm, make_cell, make_layer, random_problem, torch_cell_twin, torch_twin

T, B, I, H, P = 5, 3, 4, 6, 3


def _grid():
    for mode, bias, bidirectional, num_layers, proj in itertools.product(
            ["rnn_tanh", "rnn_relu", "lstm", "gru"], [True, False], [False, True], [1, 2], [0, P]):
        if proj and mode != "lstm":
            continue
        for unbatched, batch_first, with_lengths in itertools.product([False, True], [False, True],
                                                                       [False, True]):
            if unbatched and batch_first:
                continue
            yield pytest.param(mode, bias, bidirectional, num_layers, proj, unbatched, batch_first,
                               with_lengths,
                               id=f"{mode}-bias{int(bias)}-bi{int(bidirectional)}-L{num_layers}"
                                  f"-proj{proj}-{'unbatched' if unbatched else 'batched'}"
                                  f"-bf{int(batch_first)}-len{int(with_lengths)}")


def assert_close(ours, theirs, dtype, what):
    np.testing.assert_allclose(ours, theirs.detach().numpy(), atol=ATOL[dtype], rtol=RTOL[dtype],
                               err_msg=what)


def torch_forward(torch, module, x, hx, lengths, batch_first, unbatched):
    """Run the torch module, packing by ``lengths`` when given."""
    if lengths is None:
        return module(x, hx)
    if unbatched:   # torch packs only batched input: add the batch axis and take it off again
        hx1 = tuple(h.unsqueeze(1) for h in hx) if isinstance(hx, tuple) else hx.unsqueeze(1)
        out, hy = torch_forward(torch, module, x.unsqueeze(1 if not batch_first else 0), hx1,
                                lengths.reshape(1), batch_first, False)
        out = out.squeeze(1 if not batch_first else 0)
        hy = tuple(h.squeeze(1) for h in hy) if isinstance(hy, tuple) else hy.squeeze(1)
        return out, hy
    pack = torch.nn.utils.rnn.pack_padded_sequence(x, torch.as_tensor(lengths), batch_first=batch_first,
                                                   enforce_sorted=False)
    out, hy = module(pack, hx)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first,
                                                    total_length=x.shape[1 if batch_first else 0])
    return out, hy


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("mode,bias,bidirectional,num_layers,proj,unbatched,batch_first,with_lengths",
                         list(_grid()))
def test_layer_matches_torch(torch, backend, dtype, mode, bias, bidirectional, num_layers, proj,
                             unbatched, batch_first, with_lengths):
    rng = np.random.default_rng(1)
    layer = make_layer(mode, backend, dtype=dtype, input_size=I, hidden_size=H,
                       num_layers=num_layers, bias=bias, bidirectional=bidirectional,
                       batch_first=batch_first, proj_size=proj, seed=2)
    module = torch_twin(torch, layer)
    x, hx, lengths, G, GH = random_problem(layer, T, B, rng, unbatched, with_lengths)

    out, hy = layer(x, hx, lengths=lengths)
    dx, dhx = layer.backward(G, GH)

    xt = torch.tensor(x, requires_grad=True)
    states = hx if is_lstm(layer) else (hx,)
    tstates = tuple(torch.tensor(s, requires_grad=True) for s in states)
    out_t, hy_t = torch_forward(torch, module, xt, tstates if is_lstm(layer) else tstates[0],
                                lengths, batch_first, unbatched)
    hy_t = hy_t if is_lstm(layer) else (hy_t,)
    gstates = GH if is_lstm(layer) else (GH,)
    J = (out_t * torch.tensor(G)).sum() + sum((h * torch.tensor(g)).sum() for h, g in zip(hy_t, gstates))
    J.backward()

    assert out.dtype == dtype and out.shape == tuple(out_t.shape)
    assert_close(out, out_t, dtype, "output")
    for k, (h, h_t) in enumerate(zip(hy if is_lstm(layer) else (hy,), hy_t)):
        assert h.shape == tuple(h_t.shape)
        assert_close(h, h_t, dtype, f"final state {k}")
    assert_close(dx, xt.grad, dtype, "d input")
    for k, (d, s) in enumerate(zip(dhx if is_lstm(layer) else (dhx,), tstates)):
        assert_close(d, s.grad, dtype, f"d initial state {k}")
    for name, p in module.named_parameters():
        assert_close(layer.grads[name], p.grad, dtype, f"d {name}")


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("mode", TORCH_MODES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("unbatched", [False, True])
def test_cell_matches_torch(torch, backend, dtype, mode, bias, unbatched):
    rng = np.random.default_rng(4)
    cell = make_cell(mode, backend, dtype=dtype, input_size=I, hidden_size=H, bias=bias)
    module = torch_cell_twin(torch, cell)
    shape = (H,) if unbatched else (B, H)
    x = rng.standard_normal((I,) if unbatched else (B, I)).astype(dtype)
    states = [rng.standard_normal(shape).astype(dtype) for _ in range(2 if is_lstm(cell) else 1)]
    grads = [rng.standard_normal(shape).astype(dtype) for _ in states]

    hy = cell(x, tuple(states) if is_lstm(cell) else states[0])
    dx, dh = cell.backward(*grads)

    xt = torch.tensor(x, requires_grad=True)
    ts = [torch.tensor(s, requires_grad=True) for s in states]
    hy_t = module(xt, tuple(ts) if is_lstm(cell) else ts[0])
    hy, dh, hy_t = (hy, dh, hy_t) if is_lstm(cell) else ((hy,), (dh,), (hy_t,))
    sum((h * torch.tensor(g)).sum() for h, g in zip(hy_t, grads)).backward()

    for k in range(len(states)):
        assert hy[k].shape == tuple(hy_t[k].shape)
        assert_close(hy[k], hy_t[k], dtype, f"state {k}")
        assert_close(dh[k], ts[k].grad, dtype, f"d state {k}")
    assert_close(dx, xt.grad, dtype, "d input")
    for name, p in module.named_parameters():
        assert_close(cell.grads[name], p.grad, dtype, f"d {name}")


@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "gru"])
def test_parameter_names_shapes_and_init_match_torch(torch, backend, mode):
    layer = make_layer(mode, backend, dtype=np.float32, input_size=5, hidden_size=8, num_layers=2,
                       bidirectional=True, proj_size=3 if mode == "lstm" else 0)
    module = torch_twin(torch, layer)
    ours = {k: v.shape for k, v in layer.parameters().items()}
    theirs = {k: tuple(v.shape) for k, v in module.named_parameters()}
    assert list(ours.items()) == list(theirs.items())
    bound = 1 / np.sqrt(8)
    for name, p in layer.parameters().items():
        assert np.abs(p).max() <= bound, name
        assert np.abs(p).max() > 0.5 * bound, name   # spread over the whole interval


def test_load_state_dict_takes_torch_tensors(torch, backend):
    module = torch.nn.GRU(3, 4, num_layers=2)
    layer = make_layer("gru", backend, dtype=np.float32, input_size=3, hidden_size=4, num_layers=2)
    layer.load_state_dict(module.state_dict())
    for name, value in module.state_dict().items():
        np.testing.assert_array_equal(layer.parameters()[name], value.numpy())
    layer.load_state_dict(dict(module.named_parameters()))   # tensors that require grad work too


def test_a_packed_sequence_is_refused_with_the_way_to_unpack_it(torch, backend):
    """torch's layers take a PackedSequence; fastrnn's take the padded batch and ``lengths``,
    and say so (np.asarray of the namedtuple failed with a message about ragged arrays)."""
    x = torch.randn(5, 2, 3)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor([5, 3]),
                                                     enforce_sorted=False)
    layer = make_layer("lstm", backend, dtype=np.float32, input_size=3, hidden_size=4)
    with pytest.raises(TypeError, match="PackedSequence.*pad_packed_sequence.*lengths=lengths"):
        layer(packed)
    padded, lengths = torch.nn.utils.rnn.pad_packed_sequence(packed)
    out, _ = layer(padded, lengths=lengths)        # the remedy, as written, works
    assert out.shape == (5, 2, 4)


def test_bfloat16_tensors_are_taken_as_float32(torch, backend):
    """A bfloat16 tensor (a float tensor NumPy has no type for) is read as float32, which holds
    each of its values exactly: as input, states, parameters, a cell's input; bfloat16 lengths
    are refused as non-integers, naming lengths."""
    module = torch.nn.LSTM(3, 4).to(torch.bfloat16)
    layer = make_layer("lstm", backend, dtype=np.float32, input_size=3, hidden_size=4)
    layer.load_state_dict(module.state_dict())
    for name, value in module.state_dict().items():
        np.testing.assert_array_equal(layer.parameters()[name], value.float().numpy())
    x = torch.randn(5, 2, 3).to(torch.bfloat16)
    hx = tuple(torch.randn(1, 2, 4).to(torch.bfloat16) for _ in range(2))
    got, want = layer(x, hx), layer(x.float().numpy(), tuple(h.float().numpy() for h in hx))
    for a, b in zip((got[0], *got[1]), (want[0], *want[1])):
        np.testing.assert_array_equal(a, b)
    cell = make_cell("gru", backend, dtype=np.float32, input_size=3, hidden_size=4)
    np.testing.assert_array_equal(cell(x[0]), cell(x[0].float().numpy()))
    with pytest.raises(TypeError, match="lengths must be integers"):
        layer(x, lengths=torch.tensor([5, 3]).to(torch.bfloat16))


@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_step_norms_are_the_gradients_of_every_hidden_state(torch, backend, mode, bidirectional):
    """``backward(..., return_step_norms=True)`` gives ||dJ/dh_t||, checked against torch
    unrolled step by step with a retained gradient on every h_t."""
    rng = np.random.default_rng(8)
    layer = make_layer(mode, backend, input_size=I, hidden_size=H, num_layers=2,
                       bidirectional=bidirectional)
    x, hx, lengths, G, GH = random_problem(layer, T, B, rng, with_lengths=True)
    layer(x, hx, lengths=lengths)
    _, _, norms = layer.backward(G, GH, return_step_norms=True)
    D = layer.num_directions
    assert norms.shape == (2 * D, T, B)

    cell_cls = {"rnn_tanh": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[mode]
    params = layer.parameters()
    states = hx if is_lstm(layer) else (hx,)
    gstates = GH if is_lstm(layer) else (GH,)
    layer_in = torch.tensor(x)
    J, retained = 0, {}
    for l in range(2):
        outs = []
        for d in range(D):
            k, sfx = l * D + d, f"_l{l}" + ("_reverse" if d else "")
            cell = cell_cls(layer_in.shape[2], H, dtype=torch.float64)
            cell.load_state_dict({n: torch.tensor(params[n + sfx]) for n in
                                  ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
            out = torch.zeros(T, B, H, dtype=torch.float64)
            for b in range(B):
                n = int(lengths[b])
                steps = range(n) if d == 0 else range(n - 1, -1, -1)
                s = tuple(torch.tensor(st[k, b:b + 1]) for st in states)
                for t in steps:
                    s = cell(layer_in[t, b:b + 1], s if is_lstm(layer) else s[0])
                    s = s if is_lstm(layer) else (s,)
                    s[0].retain_grad()
                    retained[k, t, b] = s[0]
                    out[t, b] = s[0][0]
                J = J + sum((si[0] * torch.tensor(g[k, b])).sum() for si, g in zip(s, gstates))
            outs.append(out)
        layer_in = torch.cat(outs, dim=2)
    J = J + (layer_in * torch.tensor(G)).sum()
    J.backward()
    expected = np.zeros_like(norms)
    for (k, t, b), h in retained.items():
        expected[k, t, b] = np.linalg.norm(h.grad.numpy())
    np.testing.assert_allclose(norms, expected, rtol=1e-10, atol=1e-12)
