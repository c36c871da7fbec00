"""Builders shared by the test modules: layers, random inputs, losses, torch twins."""

import os

import numpy as np

import fastrnn
from fastrnn._runtime import _switch
from fastrnn.celltypes import CELL_TYPES


def required(name):
    """Whether the switch ``name`` (FASTRNN_REQUIRE_TORCH, ...) asks for a failure instead of a
    skip: the library's reading of its switches (1/true/yes/on; unset is off), and an error for
    any other value, which would otherwise skip silently."""
    return _switch(name, default=False)

AVAILABLE = [name for name, status in fastrnn.backends().items() if status["available"]]
REQUIRED = [b.strip() for b in os.environ.get("FASTRNN_REQUIRE_BACKENDS", "").split(",") if b.strip()]
BACKENDS = AVAILABLE + [b for b in REQUIRED if b not in AVAILABLE]

#: the implementations of the kernel contract under test: the reference, numba, and each build
#: of the cython extension this machine runs (and, when cython is required, each build setup.py
#: makes here for this CPU, so that a missing one fails instead of being left out)
KERNELS = ["numpy"] + [b for b in BACKENDS if b == "numba"]
if "cython" in BACKENDS:
    if fastrnn.backends()["cython"]["available"]:
        from fastrnn import _cython
        KERNELS += [f"cython-{isa}" for isa in _cython.ISAS if isa in _cython.available_isas()
                    or ("cython" in REQUIRED and isa in _cython.expected_isas())]
    else:
        KERNELS.append("cython")   # required but missing: its tests fail, saying why


def load_kernels(name):
    """The module implementing the kernel contract for a name of :data:`KERNELS`."""
    if name.startswith("cython-"):
        from fastrnn import _cython
        return _cython.load(name.split("-", 1)[1])
    from fastrnn.backends import resolve
    return resolve(name).module


#: the cases of the kernel tests: case -> (cell type, forward options, projection size)
KERNEL_CASES = {
    "rnn_tanh": ("rnn", {"nonlinearity": "tanh"}, 0),
    "rnn_relu": ("rnn", {"nonlinearity": "relu"}, 0),
    "lstm": ("lstm", {}, 0),
    "lstm_proj": ("lstm", {}, 3),
    "lstm_peepholes": ("lstm", {}, 0),       # peepholes: the case's name says so
    "lstm_proj_peepholes": ("lstm", {}, 3),
    "lstm_input_forget": ("lstm", {"input_forget": True}, 0),
    "lstm_input_forget_peepholes": ("lstm", {"input_forget": True}, 0),
    "gru": ("gru", {}, 0),
    "gru_reset_before": ("gru", {"reset_after": False}, 0),
    # ONNX's cell clip, at a bound most pre-activations of these weights cross
    "rnn_tanh_clip": ("rnn", {"nonlinearity": "tanh", "clip": 0.7}, 0),
    "rnn_relu_clip": ("rnn", {"nonlinearity": "relu", "clip": 0.7}, 0),
    "lstm_proj_peepholes_clip": ("lstm", {"clip": 0.7}, 3),
    "lstm_input_forget_clip": ("lstm", {"input_forget": True, "clip": 0.7}, 0),
    "gru_clip": ("gru", {"clip": 0.7}, 0),
    "gru_reset_before_clip": ("gru", {"reset_after": False, "clip": 0.7}, 0),
    # ONNX's activations (fastrnn.activations), every function at least once, with the variants;
    # each set keeps the states bounded over long sequences (the contract compares at T = 300,
    # where a state that grows would make the reference's rounding exceed the tolerances)
    "rnn_scaled_tanh": ("rnn", {"activations": [("scaled_tanh", 1.3, 0.7)]}, 0),
    "rnn_affine_clip": ("rnn", {"activations": [("affine", 0.9, 0.1)], "clip": 0.7}, 0),
    "lstm_relu": ("lstm", {"activations": ["sigmoid", "relu", "tanh"]}, 0),
    "lstm_acts": ("lstm", {"activations": [("hard_sigmoid", 0.2, 0.5), ("elu", 0.8),
                                           "softsign"]}, 0),
    "lstm_proj_peepholes_acts_clip": ("lstm", {"activations": ["softsign", ("leaky_relu", 0.1),
                                                               "softplus"], "clip": 0.7}, 3),
    "lstm_input_forget_acts": ("lstm", {"input_forget": True, "activations": [
        ("hard_sigmoid", 1 / 6, 0.5), ("thresholded_relu", 0.1), ("scaled_tanh", 1.5, 0.8)]}, 0),
    "gru_acts": ("gru", {"activations": [("hard_sigmoid", 0.2, 0.5), "softsign"]}, 0),
    "gru_reset_before_acts": ("gru", {"reset_after": False,
                                      "activations": [("affine", 0.1, 0.5), "softsign"]}, 0),
    "gru_reset_before_acts_clip": ("gru", {"reset_after": False, "clip": 0.7, "activations": [
        "softsign", ("leaky_relu", 0.2)]}, 0),
}
I, H = 5, 6



def make_weights(case, dtype, bias, rng, in_size=I, hidden=H):
    cell, _, proj = KERNEL_CASES[case]
    gates, P = CELL_TYPES[cell].gates, proj or hidden
    u = lambda *shape: rng.uniform(-0.6, 0.6, shape).astype(dtype)  # noqa: E731
    b_ih = u(gates * hidden) if bias in ("both", "ih") else None
    b_hh = u(gates * hidden) if bias in ("both", "hh") else None
    weights = [u(gates * hidden, in_size), u(gates * hidden, P), b_ih, b_hh]
    if cell == "lstm":
        weights += [u(P, hidden) if proj else None, u(3, hidden) if "peepholes" in case else None]
    return tuple(weights), P


def make_states(case, B, P, dtype, rng, hidden=H):
    sizes = {"h": P, "c": hidden}
    return tuple(rng.standard_normal((B, sizes[s])).astype(dtype) * 0.5
                 for s in CELL_TYPES[KERNEL_CASES[case][0]].states)


def make_lengths(kind, B, T, rng):
    if kind is None:
        return None
    if kind == "full":
        return np.full(B, T, dtype=np.int64)
    lens = rng.integers(1, T + 1, size=B).astype(np.int64)
    if B >= 2:
        lens[0], lens[1] = T, 1
    return lens


#: tolerances of a backend against PyTorch or against the reference, by dtype
ATOL = {np.float32: 1e-5, np.float64: 1e-9}
RTOL = {np.float32: 1e-4, np.float64: 1e-7}


#: mode -> (fastrnn class, extra constructor arguments)
MODES = {
    "rnn_tanh": (fastrnn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (fastrnn.RNN, {"nonlinearity": "relu"}),
    "lstm": (fastrnn.LSTM, {}),
    "gru": (fastrnn.GRU, {}),
    "gru_rb": (fastrnn.GRU, {"reset_after": False}),   # the reset gate before the product of n
    "lstm_ph": (fastrnn.LSTM, {"peepholes": True}),
    "lstm_if": (fastrnn.LSTM, {"input_forget": True, "peepholes": True}),   # the two interact
    # the cell clip, at a bound these weights' pre-activations cross, with the variants it meets
    "rnn_clip": (fastrnn.RNN, {"clip": 0.3}),
    "lstm_clip": (fastrnn.LSTM, {"clip": 0.3, "peepholes": True}),
    "gru_clip": (fastrnn.GRU, {"clip": 0.3, "reset_after": False}),
    # ONNX's activations (smooth where the finite differences sample them), with the variants
    "rnn_act": (fastrnn.RNN, {"activations": [("scaled_tanh", 1.3, 0.7)]}),
    "lstm_act": (fastrnn.LSTM, {"activations": [("hard_sigmoid", 0.2, 0.5), "softsign",
                                                ("elu", 0.8)], "peepholes": True}),
    "gru_act": (fastrnn.GRU, {"activations": [("hard_sigmoid", 1 / 6, 0.5), "softsign"],
                              "reset_after": False, "clip": 0.3}),
}
CELLS = {
    "rnn_tanh": (fastrnn.RNNCell, {"nonlinearity": "tanh"}),
    "rnn_relu": (fastrnn.RNNCell, {"nonlinearity": "relu"}),
    "lstm": (fastrnn.LSTMCell, {}),
    "gru": (fastrnn.GRUCell, {}),
    "gru_rb": (fastrnn.GRUCell, {"reset_after": False}),
    "lstm_ph": (fastrnn.LSTMCell, {"peepholes": True}),
    "lstm_if": (fastrnn.LSTMCell, {"input_forget": True, "peepholes": True}),
    "rnn_clip": (fastrnn.RNNCell, {"clip": 0.3}),
    "lstm_clip": (fastrnn.LSTMCell, {"clip": 0.3, "peepholes": True}),
    "gru_clip": (fastrnn.GRUCell, {"clip": 0.3, "reset_after": False}),
    "rnn_act": (fastrnn.RNNCell, MODES["rnn_act"][1]),
    "lstm_act": (fastrnn.LSTMCell, MODES["lstm_act"][1]),
    "gru_act": (fastrnn.GRUCell, MODES["gru_act"][1]),
}
#: the modes PyTorch has (the others have no torch twin)
TORCH_MODES = ["rnn_tanh", "rnn_relu", "lstm", "gru"]


def make_layer(mode, backend, dtype=np.float64, proj_size=0, seed=0, **kwargs):
    cls, extra = MODES[mode]
    if proj_size:
        extra = dict(extra, proj_size=proj_size)
    return cls(dtype=dtype, backend=backend, seed=seed, **extra, **kwargs)


def make_cell(mode, backend, dtype=np.float64, seed=0, **kwargs):
    cls, extra = CELLS[mode]
    return cls(dtype=dtype, backend=backend, seed=seed, **extra, **kwargs)


def is_lstm(layer):
    return isinstance(layer, (fastrnn.LSTM, fastrnn.LSTMCell))


def state_shapes(layer, batch, unbatched):
    """Shapes of (h, [c]) for a layer in the user's layout."""
    LD = layer.num_layers * layer.num_directions
    sizes = [layer.proj_size or layer.hidden_size] + ([layer.hidden_size] if is_lstm(layer) else [])
    return [(LD, s) if unbatched else (LD, batch, s) for s in sizes]


def random_problem(layer, T, B, rng, unbatched=False, with_lengths=False):
    """Random input, initial state, lengths and loss weights for a layer.

    Returns x, hx (as the layer takes it), lengths (or None), G (weights of
    out in the loss), GH (weights of the final states, as backward's dhx takes it).
    The loss is J = sum(out * G) + sum(h_n * GH[0]) (+ sum(c_n * GH[1])).
    """
    dtype = layer.dtype
    I = layer.input_size
    if unbatched:
        x = rng.standard_normal((T, I))
    elif layer.batch_first:
        x = rng.standard_normal((B, T, I))
    else:
        x = rng.standard_normal((T, B, I))
    states = [rng.standard_normal(s).astype(dtype) for s in state_shapes(layer, B, unbatched)]
    grads = [rng.standard_normal(s).astype(dtype) for s in state_shapes(layer, B, unbatched)]
    lengths = None
    if with_lengths and unbatched:
        lengths = np.array(max(1, T - 1))
    elif with_lengths:
        lengths = rng.integers(1, T + 1, size=B)
        if B > 1:
            lengths[0], lengths[-1] = T, 1   # the longest and the shortest always appear
    D = layer.num_directions
    out_size = D * (layer.proj_size or layer.hidden_size)
    out_shape = x.shape[:-1] + (out_size,)
    G = rng.standard_normal(out_shape).astype(dtype)
    hx = tuple(states) if is_lstm(layer) else states[0]
    GH = tuple(grads) if is_lstm(layer) else grads[0]
    return x.astype(dtype), hx, lengths, G, GH


def loss(layer, x, hx, lengths, G, GH):
    """J = sum(out * G) + sum(final states * GH), in float64."""
    out, hy = layer(x, hx, lengths=lengths)
    hy, GH = (hy, GH) if is_lstm(layer) else ((hy,), (GH,))
    return float(np.sum(out * G) + sum(np.sum(h * g) for h, g in zip(hy, GH)))


def torch_twin(torch, layer):
    """The torch module with the same configuration and weights as a fastrnn layer."""
    tdtype = torch.float64 if layer.dtype == np.float64 else torch.float32
    kw = dict(num_layers=layer.num_layers, bias=layer.bias, batch_first=layer.batch_first,
              bidirectional=layer.bidirectional, dtype=tdtype)
    if isinstance(layer, fastrnn.LSTM):
        module = torch.nn.LSTM(layer.input_size, layer.hidden_size, proj_size=layer.proj_size, **kw)
    elif isinstance(layer, fastrnn.GRU):
        module = torch.nn.GRU(layer.input_size, layer.hidden_size, **kw)
    else:
        module = torch.nn.RNN(layer.input_size, layer.hidden_size,
                              nonlinearity=layer.nonlinearity, **kw)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    return module


def torch_cell_twin(torch, cell):
    tdtype = torch.float64 if cell.dtype == np.float64 else torch.float32
    cls = {fastrnn.LSTMCell: torch.nn.LSTMCell, fastrnn.GRUCell: torch.nn.GRUCell,
           fastrnn.RNNCell: torch.nn.RNNCell}[type(cell)]
    kw = {"nonlinearity": cell.nonlinearity} if isinstance(cell, fastrnn.RNNCell) else {}
    module = cls(cell.input_size, cell.hidden_size, bias=cell.bias, dtype=tdtype, **kw)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in cell.state_dict().items()})
    return module


def numerical_gradient(f, array, eps=1e-6):
    """Central differences of the scalar f() with respect to every element of ``array`` (a
    C-contiguous array, perturbed in place and restored)."""
    grad = np.zeros_like(array)
    flat, gflat = array.reshape(-1), grad.reshape(-1)
    assert np.shares_memory(flat, array)
    for k in range(flat.size):
        old = flat[k]
        flat[k] = old + eps
        plus = f()
        flat[k] = old - eps
        minus = f()
        flat[k] = old
        gflat[k] = (plus - minus) / (2 * eps)
    return grad


def unaligned(a):
    """A copy of array ``a`` whose data starts one byte past its elements' alignment."""
    buf = np.zeros(a.nbytes + 1, np.uint8)
    out = np.frombuffer(buf.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned
    return out


#: a child script's start for the fork tests: ``fork_while_held(hold, child)`` forks while
#: another thread is inside ``hold(held, release)`` (between its ``held.set()`` and
#: ``release.wait()``), and exits with the child's status: 0 when ``child()`` is true.  A child
#: that hangs ends itself after 60 s (the parent's time-out would leave it running).
FORK_WHILE_HELD = """
    import os, signal, sys, threading

    def fork_while_held(hold, child):
        held, release = threading.Event(), threading.Event()
        thread = threading.Thread(target=hold, args=(held, release))
        thread.start()
        held.wait()
        pid = os.fork()
        if pid == 0:
            signal.alarm(60)
            os._exit(0 if child() else 3)
        release.set()
        thread.join()
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
"""
