"""No silent wrong answer: in-place edits between a forward and its backward, non-finite
values, and the memory of an eval-mode forward, on every backend."""

import tracemalloc

import numpy as np
import pytest

import fastrnn
from fastrnn.train import Linear

from helpers import BACKENDS, CELLS, MODES, TORCH_MODES, is_lstm, make_cell, make_layer, random_problem


def _layer_run(layer, x, hx, lengths, G, GH, edit=None):
    """Forward, an optional edit of the caller's arrays, backward: dx, dhx and the gradients."""
    layer.zero_grad()
    layer(x, hx, lengths=lengths)
    if edit is not None:
        edit()
    dx, dhx = layer.backward(G, GH)
    dhx = dhx if is_lstm(layer) else (dhx,)
    return [dx, *dhx, *(layer.grads[k].copy() for k in sorted(layer.grads))]


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("what", ["input", "lengths", "parameters", "state"])
def test_layer_edits_after_the_forward_do_not_change_the_gradients(backend, mode, what):
    """PyTorch raises at the backward when a saved tensor was edited in place; a fastrnn layer
    keeps its own copies of what the backward reads (the input, the lengths, the weights), so
    the gradients are those of the forward that ran."""
    layer = make_layer(mode, backend, input_size=3, hidden_size=5, num_layers=2,
                       bidirectional=True, seed=2)
    x, hx, lengths, G, GH = random_problem(layer, 6, 4, np.random.default_rng(1), with_lengths=True)
    want = _layer_run(layer, x, hx, lengths, G, GH)
    originals = {k: v.copy() for k, v in layer.parameters().items()}
    states = hx if is_lstm(layer) else (hx,)

    def edit():
        if what == "input":
            x[...] *= 3
        elif what == "lengths":
            lengths[:] = 1
        elif what == "state":
            for h in states:
                h += 1
        else:
            for p in layer.parameters().values():
                p *= 2

    got = _layer_run(layer, x, hx, lengths, G, GH, edit)
    for k, (a, b) in enumerate(zip(got, want)):
        np.testing.assert_array_equal(a, b, err_msg=f"result {k} after an edit of the {what}")
    if what == "parameters":   # the edit itself went through: the parameters are live
        for k, p in layer.parameters().items():
            np.testing.assert_array_equal(p, 2 * originals[k])


@pytest.mark.parametrize("mode", list(CELLS))
def test_cell_edits_after_the_forward_do_not_change_the_gradients(backend, mode):
    """The input, the state passed in, the state returned and the parameters, edited in place
    between a step and its backward (numba's LSTMCell with peepholes read the returned c' for
    weight_peephole's gradient)."""
    rng = np.random.default_rng(3)
    cell = make_cell(mode, backend, input_size=3, hidden_size=4, seed=1)
    x = rng.standard_normal((2, 3))
    n = 2 if is_lstm(cell) else 1
    hx = [rng.standard_normal((2, 4)) for _ in range(n)]
    grads = [rng.standard_normal((2, 4)) for _ in range(n)]
    results = []
    for edit in (False, True):
        cell.zero_grad()
        out = cell(x, tuple(hx) if n == 2 else hx[0])
        if edit:
            x *= 3
            for a in (*hx, *(out if n == 2 else (out,))):
                a += 100
            for p in cell.parameters().values():
                p *= 2
        dx, dh = cell.backward(*grads)
        dh = dh if is_lstm(cell) else (dh,)
        results.append([dx, *dh, *(cell.grads[k].copy() for k in sorted(cell.grads))])
        if edit:
            x /= 3
            for a in hx:
                a -= 100
            for p in cell.parameters().values():
                p /= 2
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_linear_edits_after_the_forward_do_not_change_the_gradients():
    rng = np.random.default_rng(4)
    head = Linear(3, 2, dtype=np.float64, seed=0)
    x, dy = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    results = []
    for edit in (False, True):
        head.zero_grad()
        head(x)
        if edit:
            x *= 3
            head.weight[...] *= 2
        dx = head.backward(dy)
        results.append([dx, head.grads["weight"].copy(), head.grads["bias"].copy()])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------
# non-finite values: every backend as PyTorch
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", TORCH_MODES)
@pytest.mark.parametrize("where", ["input", "dout"])
def test_non_finite_values_propagate_as_in_pytorch(backend, torch, mode, where):
    """NaN and inf in the input or in the output gradient give NaN and inf where PyTorch gives
    them (e.g. the ReLU backward passes inf where the unit is active and 0 where it is not,
    rather than inf * 0 = NaN), and finite values elsewhere that match PyTorch's."""
    from helpers import torch_twin
    layer = make_layer(mode, backend, dtype=np.float64, input_size=3, hidden_size=4, seed=5)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 2, 3))
    G = rng.standard_normal((4, 2, 4))
    if where == "input":
        x[1, 0, 0], x[2, 1, 2] = np.nan, np.inf
    else:
        G[3, 0, 1], G[2, 1, 0], G[1, 1, 3] = np.inf, -np.inf, np.nan
    with np.errstate(invalid="ignore", over="ignore"):   # NaN and inf are the point here
        out, _ = layer(x)
        dx, _ = layer.backward(G)
    twin = torch_twin(torch, layer)
    tx = torch.tensor(x, requires_grad=True)
    tout, _ = twin(tx)
    tout.backward(torch.tensor(G))
    ours = {"out": out, "dx": dx, **{k: layer.grads[k] for k in layer.grads}}
    theirs = {"out": tout.detach().numpy(), "dx": tx.grad.numpy(),
              **{k: p.grad.numpy() for k, p in twin.named_parameters()}}
    for name, a in ours.items():
        b = theirs[name]
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{name}: NaN where")
        np.testing.assert_array_equal(np.isposinf(a), np.isposinf(b), err_msg=f"{name}: +inf where")
        np.testing.assert_array_equal(np.isneginf(a), np.isneginf(b), err_msg=f"{name}: -inf where")
        finite = np.isfinite(b)
        np.testing.assert_allclose(a[finite], b[finite], rtol=1e-7, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fill", [np.nan, np.inf])
def test_the_padding_past_each_length_is_never_read(backend, mode, dtype, fill):
    """With ``lengths``, whatever lies in x past a sequence's end (NaN or inf, a common way to
    pad) changes nothing: the outputs, states, dx and every gradient are those of zero padding,
    bit for bit, and dx is 0 there, as with PyTorch's packed sequences (two layers, both
    directions)."""
    layer = make_layer(mode, backend, dtype=dtype, input_size=3, hidden_size=4, seed=5,
                       num_layers=2, bidirectional=True)
    rng = np.random.default_rng(7)
    lengths = np.array([5, 2, 3, 1])
    x = rng.standard_normal((5, 4, 3)).astype(dtype)
    G = rng.standard_normal((5, 4, 8)).astype(dtype)
    padding = np.arange(5)[:, None] >= lengths[None, :]
    x[padding] = 0
    runs = []
    for pad in (0, fill):
        xp = x.copy()
        xp[padding] = pad
        layer.zero_grad()
        out, hy = layer(xp, lengths=lengths)
        dx, dhx = layer.backward(G)
        hy, dhx = (hy, dhx) if is_lstm(layer) else ((hy,), (dhx,))
        runs.append([out, *hy, dx, *dhx, *(layer.grads[k].copy() for k in sorted(layer.grads))])
    assert not np.any(runs[0][len(hy) + 1][padding])
    for zero, filled in zip(*runs):
        np.testing.assert_array_equal(filled, zero)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("where", ["weight_ih", "weight_hh", "bias_hh", "state"])
def test_a_non_finite_weight_or_state_reaches_no_step_past_a_length(backend, mode, where):
    """With ``lengths``, a NaN or inf in a weight, or in the initial state of a short sequence,
    gives what running each sequence alone over its own steps gives (PyTorch's packed
    sequences, which never compute a step past a length): dx 0 past each end, and NaN and inf
    in the gradients only where some sequence's own steps put them, not from 0 * inf at the
    steps past its end."""
    layer = make_layer(mode, backend, dtype=np.float64, input_size=3, hidden_size=4, seed=5)
    rng = np.random.default_rng(8)
    lengths = np.array([4, 1, 2])
    x = rng.standard_normal((4, 3, 3))
    G = rng.standard_normal((4, 3, 4))
    hx = [rng.standard_normal((1, 3, 4)) for _ in range(2 if is_lstm(layer) else 1)]
    if where == "state":
        hx[-1][0, 1, 2] = np.inf      # (LSTM: the cell state) of a sequence of one step
    else:
        weight = layer.parameters()[f"{where}_l0"]
        weight[(1, 2)[:weight.ndim]] = np.nan

    def run(x, hx, G, lengths):
        layer.zero_grad()
        with np.errstate(invalid="ignore", over="ignore"):
            layer(x, tuple(hx) if is_lstm(layer) else hx[0], lengths=lengths)
            dx, _ = layer.backward(G)
        return dx, {k: layer.grads[k].copy() for k in layer.grads}

    def same(a, b, name):    # NaN and inf at the same places, the finite values close
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=f"{name}: NaN where")
        np.testing.assert_array_equal(np.isinf(a), np.isinf(b), err_msg=f"{name}: inf where")
        finite = np.isfinite(b)
        np.testing.assert_allclose(a[finite], b[finite], rtol=1e-10, atol=1e-12, err_msg=name)

    dx, grads = run(x, hx, G, lengths)
    alone = {k: np.zeros_like(v) for k, v in grads.items()}
    for b, n in enumerate(lengths):
        dxb, gb = run(x[:n, b:b + 1], [h[:, b:b + 1] for h in hx], G[:n, b:b + 1], None)
        with np.errstate(invalid="ignore"):
            for k in alone:
                alone[k] += gb[k]
        same(dx[:n, b], dxb[:, 0], f"dx of sequence {b}")
        assert not np.any(dx[n:, b]), f"dx past the end of sequence {b}: {dx[n:, b]}"
    for k, a in grads.items():
        same(a, alone[k], k)


# ---------------------------------------------------------------------------------------
# eval-mode memory
# ---------------------------------------------------------------------------------------
#: workspace an eval-mode forward may take beyond its output, whatever T: the compiled
#: backends project the input a bounded block of steps at a time (8 MiB of gates: numba's
#: fastrnn.jit.config.EVAL_BYTES)
EVAL_WORKSPACE_BOUND = 12 << 20


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("backend, threads", [(b, n) for b in BACKENDS
                                              for n in ((1,) if b == "numpy" else (1, 2))])
def test_eval_forward_memory_does_not_grow_with_the_sequence(backend, mode, threads):
    """T=2000, B=64: keeping the gates of every step would take 131 MB (LSTM); an eval forward
    takes its output (33 MB) and a bounded workspace, with the batch on one thread or split
    (the reference runs on one)."""
    T, B, I, H = 2000, 64, 8, 64
    layer = make_layer(mode, backend, dtype=np.float32, input_size=I, hidden_size=H, seed=0).eval()
    x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
    output = T * B * H * 4
    before = fastrnn.get_num_threads()
    fastrnn.set_num_threads(threads)
    try:
        # compile, and start the threads' pool (and its BLAS warm-up), outside the
        # measurement: on as many threads, with enough steps to split
        layer(x[:200])
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        out, _ = layer(x)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
        fastrnn.set_num_threads(before)
    assert out.shape == (T, B, H)
    assert peak - output < EVAL_WORKSPACE_BOUND, (
        f"an eval forward took {(peak - output) / 2**20:.1f} MiB beyond its "
        f"{output / 2**20:.1f} MiB output")
