"""Truncated BPTT: equivalences with full BPTT and with one uninterrupted forward.

The `backend` fixture (tests/conftest.py) runs the equivalences on every available backend.
"""

import numpy as np
import pytest

import fastrnn
from fastrnn.train import TBPTT, Linear, cross_entropy, split_streams, windows

T, B, I, H, C = 23, 3, 4, 5, 6


def make(kind, backend, **kw):
    cls = {"RNN": fastrnn.RNN, "LSTM": fastrnn.LSTM, "GRU": fastrnn.GRU}[kind]
    return cls(I, H, dtype=np.float64, backend=backend, seed=7, **kw)


def data(batch_first=False):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I))
    y = rng.integers(0, C, size=(T, B))
    return (x.transpose(1, 0, 2).copy() if batch_first else x), y


def loss_fn(head, y, batch_first=False):
    def loss_and_grad(out, t0, t1):
        target = y[t0:t1].T if batch_first else y[t0:t1]
        loss, dlogits = cross_entropy(head(out), target, reduction="sum")
        return loss, head.backward(dlogits)
    return loss_and_grad


def state_list(state):
    return list(state) if isinstance(state, tuple) else [state]


LAYERS = [("RNN", {}), ("GRU", {}), ("LSTM", {}), ("LSTM", dict(num_layers=2, proj_size=3)),
          ("GRU", dict(num_layers=2))]


@pytest.mark.parametrize("kind,kw", LAYERS)
@pytest.mark.parametrize("batch_first", [False, True])
def test_one_chunk_equals_full_bptt_exactly(backend, kind, kw, batch_first):
    x, y = data(batch_first)
    rnn, head = make(kind, backend, batch_first=batch_first, **kw), Linear(H if "proj_size" not in kw else 3, C, dtype=np.float64, seed=1)
    ref, ref_head = make(kind, backend, batch_first=batch_first, **kw), Linear(head.in_features, C, dtype=np.float64, seed=1)
    out, _ = ref(x)
    ref_loss, dl = cross_entropy(ref_head(out), y.T if batch_first else y, reduction="sum")
    ref.backward(ref_head.backward(dl))
    for k in (T, T + 10):                      # a chunk as long as (or longer than) the sequence
        rnn.zero_grad(), head.zero_grad()
        tb = TBPTT(rnn, k)
        losses = tb.run(x, loss_fn(head, y, batch_first))
        assert losses == [ref_loss]
        for name in ref.grads:
            np.testing.assert_array_equal(rnn.grads[name], ref.grads[name], err_msg=name)
        for name in ref_head.grads:
            np.testing.assert_array_equal(head.grads[name], ref_head.grads[name])


@pytest.mark.parametrize("kind,kw", LAYERS)
def test_carried_state_equals_uninterrupted_forward(backend, kind, kw):
    x, y = data()
    rnn = make(kind, backend, **kw)
    head = Linear(kw.get("proj_size") or H, C, dtype=np.float64, seed=1)
    outs = []

    def loss_and_grad(out, t0, t1):
        outs.append(out.copy())
        return loss_fn(head, y)(out, t0, t1)

    tb = TBPTT(rnn, 7)
    losses = tb.run(x, loss_and_grad)
    assert len(losses) == 4                    # 7 + 7 + 7 + 2
    rnn.eval()
    full_out, full_state = rnn(x)
    exact = backend == "numpy"
    check = np.testing.assert_array_equal if exact else (
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13))
    check(np.concatenate(outs), full_out)
    for s, f in zip(state_list(tb.state), state_list(full_state)):
        check(s, f)
    # and the next run continues from there as if the sequence went on
    x2 = np.random.default_rng(1).standard_normal((5, B, I))
    tb.run(x2, lambda out, t0, t1: (outs.append(out.copy()), (0.0, np.zeros_like(out)))[1])
    rnn.eval()
    out_long, _ = rnn(np.concatenate([x, x2]))
    check(outs[-1], out_long[T:])


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("k1,k2", [(5, 5), (5, 8), (4, 12), (6, 30)])
def test_gradients_are_truncated(kind, k1, k2):
    """Gradients equal the sum over windows of a backward that starts at the window."""
    x, y = data()
    rnn, head = make(kind, "numpy"), Linear(H, C, dtype=np.float64, seed=1)
    tb = TBPTT(rnn, k1, k2)
    seen = []
    losses = tb.run(x, loss_fn(head, y), after_backward=lambda c: seen.append(c[:4]))
    assert seen == [(i,) + w for i, w in enumerate(windows(T, k1, k2))]

    ref, ref_head = make(kind, "numpy"), Linear(H, C, dtype=np.float64, seed=1)
    ref_losses = []
    for w0, t0, t1 in windows(T, k1, k2):
        ref.eval()
        hx = None if w0 == 0 else ref(x[:w0])[1]          # true state at the window's start
        ref.train()
        out, _ = ref(x[w0:t1], hx)
        loss, dl = cross_entropy(ref_head(out[t0 - w0:]), y[t0:t1], reduction="sum")
        dout = np.zeros_like(out)
        dout[t0 - w0:] = ref_head.backward(dl)
        ref.backward(dout)
        ref_losses.append(loss)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-12)
    for name in ref.grads:
        np.testing.assert_allclose(rnn.grads[name], ref.grads[name], rtol=1e-10, atol=1e-12)
    # truncation really drops something: full BPTT over the whole sequence differs
    if k2 < T:
        full, full_head = make(kind, "numpy"), Linear(H, C, dtype=np.float64, seed=1)
        out, _ = full(x)
        _, dl = cross_entropy(full_head(out), y, reduction="sum")
        full.backward(full_head.backward(dl))
        assert not np.allclose(full.grads["weight_hh_l0"], rnn.grads["weight_hh_l0"])


def test_training_with_updates_lowers_the_loss_and_can_stop():
    ids = np.tile(np.arange(C), 200)                        # 0 1 2 3 4 5 0 1 ...: predictable
    streams = split_streams(ids, 4)                          # (300, 4)
    x = np.eye(C)[streams[:-1]]
    y = streams[1:]
    rnn, head = fastrnn.GRU(C, 16, dtype=np.float64, seed=0), Linear(16, C, dtype=np.float64, seed=1)
    opt = fastrnn.train.Adam({"rnn": rnn, "head": head}, lr=0.05)
    tb = TBPTT(rnn, 20)

    def update(chunk):
        opt.step()
        opt.zero_grad()

    def lg(out, t0, t1):
        loss, dl = cross_entropy(head(out), y[t0:t1])
        return loss, head.backward(dl)

    losses = tb.run(x, lg, update)
    assert losses[-1] < 0.1 * losses[0]
    tb.reset()
    assert tb.state is None
    assert len(tb.run(x, lg, lambda chunk: chunk.index == 2)) == 3


@pytest.mark.parametrize("k1, k2, how", [(5, 5, "all"), (5, 5, "streams"), (5, 5, "state"),
                                         (5, 8, "all"), (5, 8, "state")])
def test_a_reset_from_after_backward_restarts_the_streams_at_the_chunks_end(k1, k2, how):
    """A reset of every stream (reset(), reset(streams=all), or state set to None) from the
    callback after the chunk ending at t = 10 gives what a run over x[:10], then reset(), then
    a run over x[10:] gives: the same outputs, losses, gradients and final state (with k2 > k1
    no window reaches back before t = 10)."""
    x, y = data()
    runs = []
    for split in (False, True):
        rnn, head = make("LSTM", "numpy"), Linear(H, C, dtype=np.float64, seed=1)
        tb, seen = TBPTT(rnn, k1, k2), []
        lg = loss_fn(head, y)

        def record(out, t0, t1, lg=lg, seen=seen, shift=0):
            seen.append(out.copy())
            return lg(out, t0 + shift, t1 + shift)

        def callback(chunk, tb=tb):
            if chunk.t1 == 10:
                if how == "all":
                    tb.reset()
                elif how == "streams":
                    tb.reset(streams=slice(None))
                else:
                    tb.state = None
        if split:
            losses = tb.run(x[:10], record)
            tb.reset()
            losses += tb.run(x[10:], lambda out, t0, t1: record(out, t0, t1, shift=10))
        else:
            losses = tb.run(x, record, callback)
        runs.append((seen, losses, [rnn.grads[k] for k in sorted(rnn.grads)],
                     state_list(tb.state)))
    (seen, losses, grads, state), (want_seen, want_losses, want_grads, want_state) = runs
    assert losses == pytest.approx(want_losses, rel=1e-12)
    for a, b in zip(seen + grads + state, want_seen + want_grads + want_state):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_a_reset_of_some_streams_from_after_backward():
    """With k2 == k1, the streams reset restart from zeros at the chunk's end and the others
    go on; with k2 > k1 it is refused by name (the next window starts inside the chunk)."""
    x, y = data()
    rnn, head = make("GRU", "numpy"), Linear(H, C, dtype=np.float64, seed=1)
    tb, seen = TBPTT(rnn, 5), {}

    def record(out, t0, t1):
        seen[t0] = out.copy()
        return loss_fn(head, y)(out, t0, t1)
    tb.run(x, record, lambda chunk: chunk.t1 == 10 and tb.reset(streams=[1]))
    rnn.eval()
    fresh, _ = rnn(x[10:15, 1:2])
    np.testing.assert_allclose(seen[10][:, 1:2], fresh, rtol=1e-12, atol=1e-14)
    carried, _ = rnn(x[:15, ::2])
    np.testing.assert_allclose(seen[10][:, ::2], carried[10:], rtol=1e-12, atol=1e-14)
    tb = TBPTT(make("GRU", "numpy"), 5, 8)
    with pytest.raises(ValueError, match=r"reset\(streams=\.\.\.\) from after_backward needs "
                                         r"k2 == k1 \(here k1 = 5, k2 = 8\)"):
        tb.run(x, loss_fn(head, y), lambda chunk: tb.reset(streams=[1]))


    def reset_and_stop(chunk):       # ending the run there is what the message asks for
        tb.reset(streams=[1])
        return True
    assert len(tb.run(x, loss_fn(head, y), reset_and_stop)) == 1
    assert not tb.state[:, 1].any() and tb.state[:, 0].any()


def test_a_state_of_another_batch_is_named():
    x, y = data()
    tb = TBPTT(make("GRU", "numpy"), 5)
    tb.run(x[:, :2], loss_fn(Linear(H, C, dtype=np.float64, seed=1), y[:, :2]))
    with pytest.raises(ValueError, match="batch of 3 sequences, but the state carried from "
                                         "the last run has 2: call reset"):
        tb.run(x, loss_fn(Linear(H, C, dtype=np.float64, seed=1), y))


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_a_state_set_by_hand_is_checked(kind):
    """``state`` may be set (the docs say so): a wrong structure or shape is named as the state,
    not as a batch size or an AttributeError."""
    x, y = data()
    B = x.shape[1]
    tb = TBPTT(make(kind, "numpy"), 5)
    h = np.zeros((1, B, H))
    lstm = kind == "LSTM"
    for state, error, words in [
            (h if lstm else (h,), TypeError, "state must be None or the layer's " +
             (r"\(h, c\) for LSTM" if lstm else "h, ") + ".* but got " +
             ("ndarray" if lstm else "tuple of length 1")),
            ((h[0], h[0]) if lstm else h[0], ValueError, r"but got shape\(s\) \["),
            ((h, h[:, :, :2]) if lstm else h[:, :, :2], ValueError, r"state\S* \((h|c)_0\) "
                                                                     r"must have shape")]:
        tb.state = state
        with pytest.raises(error, match=words):
            tb.run(x, loss_fn(Linear(H, C, dtype=np.float64, seed=1), y))


def test_nested_lists_run_as_the_layers_take_them():
    x, y = data()
    runs = []
    for given in (x, x.tolist()):
        tb = TBPTT(make("GRU", "numpy"), 5)
        runs.append(tb.run(given, loss_fn(Linear(H, C, dtype=np.float64, seed=1), y)))
    assert runs[0] == runs[1]


def test_step_norms_reset_and_helpers():
    x, y = data()
    rnn, head = make("LSTM", "numpy"), Linear(H, C, dtype=np.float64, seed=1)
    tb = TBPTT(rnn, 10, 15)
    norms = []
    tb.run(x, loss_fn(head, y), lambda c: norms.append(c.step_norms), return_step_norms=True)
    assert [n.shape for n in norms] == [(1, 10, B), (1, 15, B), (1, 8, B)]
    h, c = tb.state
    tb.reset(streams=[1])
    assert not h[:, 1].any() and not c[:, 1].any() and h[:, 0].any()
    out = split_streams(np.arange(10), 3)
    np.testing.assert_array_equal(out, [[0, 3, 6], [1, 4, 7], [2, 5, 8]])
    assert windows(10, 4) == [(0, 0, 4), (4, 4, 8), (8, 8, 10)]
    assert windows(10, 4, 6) == [(0, 0, 4), (2, 4, 8), (6, 8, 10)]
    with pytest.raises(ValueError, match="k2"):
        windows(10, 4, 3)
    with pytest.raises(ValueError, match="unidirectional"):
        TBPTT(fastrnn.GRU(2, 3, bidirectional=True), 5)
    with pytest.raises(ValueError, match="reverse=True layer starts each sequence at its end"):
        TBPTT(fastrnn.GRU(2, 3, reverse=True), 5)
    with pytest.raises(TypeError):
        TBPTT(Linear(2, 3), 5)
    with pytest.raises(ValueError, match="3-D"):
        tb.run(np.zeros((4, 3)), loss_fn(head, y))
    with pytest.raises(ValueError, match="streams"):
        split_streams(np.arange(2), 3)


def test_a_second_run_whose_windows_reach_back_to_its_start_starts_from_the_carried_state():
    """k2 > k1: the windows of a second run that reach back to its step 0 start from the state
    the first run carried, not from zeros (a first run cannot tell the two apart)."""
    rng = np.random.default_rng(0)
    rnn = fastrnn.GRU(3, 4, dtype=np.float64, seed=0, backend="numpy")
    x1, x2 = rng.standard_normal((6, 2, 3)), rng.standard_normal((10, 2, 3))
    tb = TBPTT(rnn, 3, 20)

    def zero(out, t0, t1):
        return 0.0, np.zeros_like(out)
    tb.run(x1, zero)
    carried, seen = tb.state.copy(), {}
    tb.run(x2, lambda out, t0, t1: (seen.__setitem__(t0, out.copy()), zero(out, t0, t1))[1])
    want = rnn.eval()(x2, carried)[0]
    assert len(seen) > 1
    for t0, out in seen.items():
        np.testing.assert_allclose(out, want[t0:t0 + len(out)], rtol=1e-12, atol=1e-14,
                                   err_msg=f"the chunk at {t0}")


def test_a_callback_may_use_the_layer_in_eval_mode():
    """after_backward sampling from the model in eval mode between chunks: the next chunk
    trains again."""
    rnn = fastrnn.GRU(3, 4, seed=0)
    x = np.random.default_rng(0).standard_normal((9, 2, 3)).astype(np.float32)

    def sample(chunk):
        rnn.eval()
        rnn(x[:1])
    losses = TBPTT(rnn, 3).run(x, lambda out, t0, t1: (0.0, np.zeros_like(out)), sample)
    assert len(losses) == 3          # every chunk after the first trained after an eval call


@pytest.mark.parametrize("module", ["fastrnn.train.tbptt", "fastrnn.train.heads",
                                    "fastrnn.train.embedding"])
def test_docstring_examples_run(module):
    """The training toolkit's Examples sections run as written."""
    import doctest
    import importlib
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 2 and result.failed == 0, result
