"""Finite-difference gradient checks (float64, central differences) of every
parameter element, the input and the initial states, for every cell type on every backend,
across bias x proj_size x lengths (and, for the four base cells, unbatched input).

Stacking, both directions, ``batch_first``, ``reverse`` and dropout are the functional
layer's (:mod:`fastrnn.functional`): the same Python for every backend, around the same
kernel calls.  Their grid (bidirectional x num_layers x batch_first, reverse, dropout) runs
in full on one backend, the fastest this installation has (:data:`STRUCTURE_BACKEND`), and on
the others as one stacked, bidirectional case per cell.  What each backend's kernels compute
beyond that is checked against the reference's elsewhere (tests/test_kernel_contract.py: the
same kernels, every build, gradients within per-dtype tolerances of the reference's); the
reference's own gradients are the ones these finite differences prove.
"""

import itertools

import numpy as np
import pytest

from helpers import (
    BACKENDS, CELLS, is_lstm, loss, make_cell, make_layer, numerical_gradient, random_problem,
)

T, B, I, H, P = 3, 2, 2, 3, 2

#: the backend that runs the functional layer's whole grid: the fastest one under test (the
#: finite differences of the numpy reference at every point of it took 40% of the suite)
STRUCTURE_BACKEND = next(b for b in ("cython", "numba", "numpy") if b in BACKENDS)

#: the base cells, checked in every input layout
BASE_MODES = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
#: the variants (peepholes, coupled gates, reset-before, clip, activations): the same structural
#: grid, on time-major batched input only. batch_first and unbatched input are transposes and
#: reshapes the layer makes before and after the kernels, the same code for every cell; the
#: base cells check them (the variants in every layout took 55% of the suite's time).
VARIANT_MODES = ["lstm_ph", "lstm_if", "gru_rb", "rnn_clip", "lstm_clip", "gru_clip", "rnn_act",
                 "lstm_act", "gru_act"]


def _structural(bidirectional, num_layers, batch_first):
    return bidirectional or num_layers > 1 or batch_first


def _grid():
    for backend, mode, bias, bidirectional, num_layers, proj in itertools.product(
            BACKENDS, BASE_MODES + VARIANT_MODES, [True, False], [False, True], [1, 2], [0, P]):
        if proj and not mode.startswith("lstm"):
            continue
        layouts = [False, True] if mode in BASE_MODES else [False]
        for unbatched, batch_first, with_lengths in itertools.product(layouts, layouts,
                                                                       [False, True]):
            if unbatched and batch_first:
                continue   # batch_first has no meaning for unbatched input
            if backend != STRUCTURE_BACKEND and _structural(bidirectional, num_layers, batch_first):
                # one stacked, bidirectional case per cell: the kernels under a layer's loops
                if not (bias and bidirectional and num_layers == 2 and not proj and not unbatched
                        and not batch_first and with_lengths):
                    continue
            yield pytest.param(backend, mode, bias, bidirectional, num_layers, proj, unbatched,
                               batch_first, with_lengths,
                               id=f"{backend}-{mode}-bias{int(bias)}-bi{int(bidirectional)}"
                                  f"-L{num_layers}-proj{proj}"
                                  f"-{'unbatched' if unbatched else 'batched'}"
                                  f"-bf{int(batch_first)}-len{int(with_lengths)}")


def _reverse_grid():
    for backend, mode in itertools.product(BACKENDS, BASE_MODES + VARIANT_MODES):
        for num_layers, proj in [(1, 0), (2, 0), (2, P)]:
            if proj and not mode.startswith("lstm"):
                continue
            for batch_first, with_lengths in [(False, False), (False, True), (True, True)]:
                if backend != STRUCTURE_BACKEND and (num_layers, batch_first, with_lengths) != (
                        1, False, True):
                    continue
                yield pytest.param(backend, mode, num_layers, proj, batch_first, with_lengths,
                                   id=f"{backend}-{mode}-L{num_layers}-proj{proj}"
                                      f"-bf{int(batch_first)}-len{int(with_lengths)}")


def check(numeric, analytic, what):
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7, err_msg=what)


def check_layer_gradients(layer, rng, unbatched, with_lengths):
    """The layer's backward on a random problem against central differences of every
    parameter element, the input and the initial states; returns (dx, lengths)."""
    x, hx, lengths, G, GH = random_problem(layer, T, B, rng, unbatched, with_lengths)
    layer.train()
    layer(x, hx, lengths=lengths)
    dx, dhx = layer.backward(G, GH)
    layer.eval()   # the finite differences need no cache
    f = lambda: loss(layer, x, hx, lengths, G, GH)  # noqa: E731  (reads the arrays perturbed in place)
    for name, param in layer.parameters().items():
        check(numerical_gradient(f, param), layer.grads[name], name)
    check(numerical_gradient(f, x), dx, "input")
    states, dstates = (hx, dhx) if is_lstm(layer) else ((hx,), (dhx,))
    for k, (state, dstate) in enumerate(zip(states, dstates)):
        check(numerical_gradient(f, state), dstate, f"hx[{k}]")
    return dx, lengths


@pytest.mark.parametrize(
    "backend,mode,bias,bidirectional,num_layers,proj,unbatched,batch_first,with_lengths",
    list(_grid()))
def test_layer_gradients_match_finite_differences(backend, mode, bias, bidirectional, num_layers,
                                                  proj, unbatched, batch_first, with_lengths):
    rng = np.random.default_rng(7)
    layer = make_layer(mode, backend, input_size=I, hidden_size=H, num_layers=num_layers,
                       bias=bias, bidirectional=bidirectional, batch_first=batch_first,
                       proj_size=proj, seed=3)
    dx, lengths = check_layer_gradients(layer, rng, unbatched, with_lengths)
    if with_lengths and not unbatched:
        # padded steps have no influence at all
        steps = np.arange(T)[:, None] >= lengths[None, :]
        pad = steps.T if batch_first else steps
        assert np.all(dx[pad] == 0)


@pytest.mark.parametrize("backend,mode,num_layers,proj,batch_first,with_lengths",
                         list(_reverse_grid()))
def test_reverse_layer_gradients_match_finite_differences(backend, mode, num_layers, proj,
                                                          batch_first, with_lengths):
    """A layer run from each sequence's last valid step to its first (reverse=True)."""
    rng = np.random.default_rng(8)
    layer = make_layer(mode, backend, input_size=I, hidden_size=H, num_layers=num_layers,
                       batch_first=batch_first, proj_size=proj, seed=4, reverse=True)
    check_layer_gradients(layer, rng, False, with_lengths)


@pytest.mark.parametrize("mode", list(CELLS))
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("unbatched", [False, True])
def test_cell_gradients_match_finite_differences(backend, mode, bias, unbatched):
    rng = np.random.default_rng(11)
    cell = make_cell(mode, backend, input_size=I, hidden_size=H, bias=bias)
    shape = (H,) if unbatched else (B, H)
    x = rng.standard_normal((I,) if unbatched else (B, I))
    states = [rng.standard_normal(shape) for _ in range(2 if is_lstm(cell) else 1)]
    grads = [rng.standard_normal(shape) for _ in states]
    hx = tuple(states) if is_lstm(cell) else states[0]

    def f():
        hy = cell(x, hx)
        hy = hy if is_lstm(cell) else (hy,)
        return float(sum(np.sum(h * g) for h, g in zip(hy, grads)))

    cell.train()
    cell(x, hx)
    dx, dh = cell.backward(*grads)
    dh = dh if is_lstm(cell) else (dh,)
    cell.eval()
    for name, param in cell.parameters().items():
        check(numerical_gradient(f, param), cell.grads[name], name)
    check(numerical_gradient(f, x), dx, "input")
    for k, state in enumerate(states):
        check(numerical_gradient(f, state), dh[k], f"hx[{k}]")


@pytest.mark.parametrize("mode", ["rnn_tanh", "lstm", "gru"])
def test_dropout_gradients_match_finite_differences(mode):
    """With the dropout masks held fixed (same seed for every forward)."""
    rng = np.random.default_rng(5)
    layer = make_layer(mode, STRUCTURE_BACKEND, input_size=I, hidden_size=H, num_layers=3,
                       dropout=0.4, bidirectional=True)
    x, hx, lengths, G, GH = random_problem(layer, T, B, rng, with_lengths=True)

    def f():
        layer._rng = np.random.default_rng(99)
        return loss(layer, x, hx, lengths, G, GH)

    layer.train()
    f()
    dx, _ = layer.backward(G, GH)
    for name, param in layer.parameters().items():
        check(numerical_gradient(f, param), layer.grads[name], name)
    check(numerical_gradient(f, x), dx, "input")
