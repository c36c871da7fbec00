"""fastrnn.interop.from_keras / to_keras against Keras 3's own forward (torch backend).

Random Keras layers are imported and run by fastrnn and compared with
Keras's output; then exported back and compared again, weights exactly.
"""

import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported: it runs on the installed torch

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from helpers import required  # noqa: E402

if required("FASTRNN_REQUIRE_INTEROP"):
    import keras  # CI installs it: a missing keras is a failure there, not a skip
else:
    pytest.importorskip("torch", reason="these tests run Keras on its torch backend, and PyTorch "
                        "is not installed (pip install torch)")
    keras = pytest.importorskip("keras", reason="Keras 3 is not installed (pip install keras); "
                                "set FASTRNN_REQUIRE_INTEROP=1 to make this a failure")
if keras.backend.backend() != "torch":
    pytest.skip(f"keras was imported with the {keras.backend.backend()!r} backend before this "
                f"module set KERAS_BACKEND=torch", allow_module_level=True)

import fastrnn  # noqa: E402
from fastrnn.interop import from_keras, keras_weights, to_keras  # noqa: E402

# Keras's own variables trip a NumPy 2 deprecation inside get_weights(); not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

MAX_ERR = {"float32": 0.0, "float64": 0.0}
TOL = {"float32": dict(atol=1e-5, rtol=1e-5), "float64": dict(atol=1e-12, rtol=1e-12)}
B, T, I, H = 3, 6, 4, 5


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def numpy_of(value):
    return keras.ops.convert_to_numpy(value)


def assert_close(got, want, dtype="float32", what=""):
    got, want = np.asarray(got), numpy_of(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    MAX_ERR[dtype] = max(MAX_ERR[dtype], float(np.max(np.abs(got - want))))
    np.testing.assert_allclose(got, want, err_msg=what, **TOL[dtype])


def randomize(layer, rng, scale=0.5):
    """Random weights (biases too) instead of Keras's zeros/orthogonal initialisation."""
    layer.set_weights([(rng.standard_normal(w.shape) * scale).astype(w.dtype)
                       for w in layer.get_weights()])
    return layer


def keras_rnn(kind, units=H, **kw):
    name, extra = {"tanh": ("SimpleRNN", {}), "relu": ("SimpleRNN", {"activation": "relu"}),
                   "LSTM": ("LSTM", {}), "GRU": ("GRU", {"reset_after": True}),
                   "GRU_rb": ("GRU", {"reset_after": False})}[kind]
    return getattr(keras.layers, name)(units, **extra, **kw)


def fastrnn_class(kind):
    return {"tanh": fastrnn.RNN, "relu": fastrnn.RNN, "GRU_rb": fastrnn.GRU}.get(
        kind) or getattr(fastrnn, kind)


#: "GRU_rb": GRU(reset_after=False), the reset gate before the recurrent product
KINDS = ["tanh", "relu", "LSTM", "GRU", "GRU_rb"]


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_import_matches_keras_then_export_back(kind, use_bias, bidirectional):
    rng = np.random.default_rng(0)
    layer = keras_rnn(kind, use_bias=use_bias, return_sequences=True)
    if bidirectional:
        layer = keras.layers.Bidirectional(layer)
    layer.build((None, None, I))
    randomize(layer, rng)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    want = layer(x)

    ours = from_keras(layer)
    expected_cls = fastrnn_class(kind)
    assert type(ours) is expected_cls
    if expected_cls is fastrnn.GRU:
        assert ours.reset_after == (kind == "GRU")
    assert ours.batch_first and ours.bidirectional == bidirectional and ours.bias == use_bias
    assert ours.dtype == np.float32
    if expected_cls is fastrnn.RNN:
        assert ours.nonlinearity == kind
    out, states = ours(x)
    assert_close(out, want, what="output")
    h_n = states[0] if kind == "LSTM" else states
    if bidirectional:  # return_sequences=False gives the two final states side by side
        layer.return_sequences = False
        layer.forward_layer.return_sequences = layer.backward_layer.return_sequences = False
        assert_close(np.concatenate([h_n[0], h_n[1]], axis=-1), layer(x), what="last states")
    else:
        assert_close(h_n[0], want[:, -1], what="final state")

    back = to_keras(ours)
    assert type(back) is type(layer)
    for a, b in zip(back.get_weights(), layer.get_weights()):
        assert a.dtype == b.dtype and np.array_equal(a, b)  # bit-for-bit
    assert_close(numpy_of(back(x)), want, what="exported output")


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_export_of_native_layers_matches(kind, bidirectional):
    rng = np.random.default_rng(1)
    cls = fastrnn_class(kind)
    extra = {"nonlinearity": kind} if cls is fastrnn.RNN else {}
    if kind == "GRU_rb":
        extra = {"reset_after": False}
    ours = cls(I, H, num_layers=2, bidirectional=bidirectional, batch_first=True, seed=3, **extra)
    # two distinct biases, so the export must add them (LSTM, SimpleRNN) or stack them (GRU)
    ours.parameters()["bias_hh_l0"][...] = rng.standard_normal(ours.parameters()["bias_hh_l0"].shape)
    stack = to_keras(ours)
    assert isinstance(stack, list) and len(stack) == 2
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    y = x
    for layer in stack:
        y = layer(y)
    assert_close(ours(x)[0], y, what="two-layer output")
    # the list of Keras layers comes back as one two-layer fastrnn layer
    again = from_keras(stack)
    assert again.num_layers == 2 and again.bidirectional == bidirectional
    assert again.get_config() == ours.get_config() | {"seed": None}
    assert_close(again(x)[0], y, what="re-imported output")
    if kind == "GRU":  # nothing was summed: the round trip is exact
        for name, p in ours.parameters().items():
            assert np.array_equal(again.parameters()[name], p), name


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_weights_are_widened_to_float32(dtype):
    """Exactly, as from_torch does (float16 layers were refused with a message about a dtype
    argument the caller had not given; bfloat16 ones failed inside the gate reordering)."""
    for layer, shape in ((keras.layers.GRU(H, dtype=dtype, recurrent_initializer="glorot_uniform"),
                          (None, None, I)),
                         (keras.layers.LSTMCell(H, dtype=dtype,
                                                recurrent_initializer="glorot_uniform"), (None, I))):
        layer.build(shape)
        built_layer = layer
        ours = from_keras(built_layer)
        assert ours.dtype == np.float32
        want = [np.asarray(w).astype(np.float32) for w in built_layer.get_weights()]
        for got, w in zip(keras_weights(ours)[0], want):
            assert np.array_equal(got, w)
        assert from_keras(built_layer, dtype=np.float64).dtype == np.float64


@pytest.mark.parametrize("kind,extra", [("SimpleRNNCell", {}), ("LSTMCell", {}), ("GRUCell", {}),
                                        ("GRUCell", {"reset_after": False})])
def test_cells(kind, extra):
    rng = np.random.default_rng(2)
    cell = getattr(keras.layers, kind)(H, **extra)
    cell.build((None, I))
    randomize(cell, rng)
    x = rng.standard_normal((B, I)).astype(np.float32)
    nstates = 2 if kind == "LSTMCell" else 1
    states = [rng.standard_normal((B, H)).astype(np.float32) for _ in range(nstates)]
    _, new = cell(x, states)
    ours = from_keras(cell)
    assert type(ours) is getattr(fastrnn, kind.replace("SimpleRNN", "RNN"))
    assert getattr(ours, "reset_after", True) == extra.get("reset_after", True)
    got = ours(x, tuple(states)) if kind == "LSTMCell" else (ours(x, states[0]),)
    for g, w in zip(got, new):
        assert_close(g, w, what=kind)
    back = to_keras(ours)
    assert all(np.array_equal(a, b) for a, b in zip(back.get_weights(), cell.get_weights()))


def test_rnn_over_stacked_cells_and_sequential_stacks():
    rng = np.random.default_rng(3)
    rnn = keras.layers.RNN([keras.layers.GRUCell(H), keras.layers.GRUCell(H)], return_sequences=True)
    rnn.build((None, None, I))
    randomize(rnn, rng)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    ours = from_keras(rnn)
    assert isinstance(ours, fastrnn.GRU) and ours.num_layers == 2
    assert_close(ours(x)[0], rnn(x), what="StackedRNNCells")

    first = keras.layers.Bidirectional(keras.layers.LSTM(H, return_sequences=True))
    second = keras.layers.Bidirectional(keras.layers.LSTM(H, return_sequences=True))
    first.build((None, None, I))
    second.build((None, None, 2 * H))
    randomize(first, rng), randomize(second, rng)
    ours = from_keras([first, second])
    assert ours.num_layers == 2 and ours.bidirectional
    assert_close(ours(x)[0], second(first(x)), what="stack of Bidirectional")


def test_float64_layers_stay_float64():
    rng = np.random.default_rng(4)
    layer = keras.layers.GRU(H, return_sequences=True, dtype="float64")
    layer.build((None, None, I))
    randomize(layer, rng)
    x = rng.standard_normal((B, T, I))
    ours = from_keras(layer)
    assert ours.dtype == np.float64
    assert_close(ours(x)[0], layer(x), "float64", what="float64 GRU")
    back = to_keras(ours)
    assert back.get_weights()[0].dtype == np.float64
    assert_close(numpy_of(back(x)), layer(x), "float64", what="float64 export")


def test_float64_bidirectional_layers_stay_float64():
    """The Bidirectional wrapper too (it took Keras's float32 policy: outputs off by 3e-8)."""
    ours = fastrnn.LSTM(I, H, dtype=np.float64, batch_first=True, bidirectional=True, seed=0)
    back = to_keras(ours)
    x = np.random.default_rng(5).standard_normal((B, T, I))
    got = numpy_of(back(x))
    assert got.dtype == np.float64
    assert_close(got, ours(x)[0], "float64", what="float64 bidirectional export")


def test_keras_weights_is_the_get_weights_layout():
    ours = fastrnn.LSTM(I, H, bidirectional=True, seed=0)
    (weights,) = keras_weights(ours)
    assert [w.shape for w in weights] == [(I, 4 * H), (H, 4 * H), (4 * H,)] * 2
    gru = fastrnn.GRU(I, H, seed=0)
    (weights,) = keras_weights(gru)
    assert [w.shape for w in weights] == [(I, 3 * H), (H, 3 * H), (2, 3 * H)]
    # Keras's z block is fastrnn's second block (r, z, n)
    p = gru.parameters()
    assert np.array_equal(weights[0][:, :H], p["weight_ih_l0"][H:2 * H].T)
    assert np.array_equal(weights[2][1, 2 * H:], p["bias_hh_l0"][2 * H:])


@pytest.mark.parametrize("stacked", ["one", "list", "cells"])
@pytest.mark.parametrize("kind", KINDS)
def test_go_backwards_is_a_reverse_layer(kind, stacked):
    """Keras go_backwards=True reads x from the end and returns its sequence flipped: a
    reverse=True layer, whose aligned output Keras's is, flipped; and back."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((B, T, I)).astype("float32")
    if stacked == "one":
        k = randomize(keras_rnn(kind, go_backwards=True, return_sequences=True), rng)
        k.build((None, None, I))
    elif stacked == "list":    # the next layer reads the flipped sequence forwards
        k = [keras_rnn(kind, go_backwards=True, return_sequences=True),
             keras_rnn(kind, return_sequences=True)]
        k[0].build((None, None, I))
        k[1].build((None, None, H))
        for layer in k:
            randomize(layer, rng)
    else:                      # one RNN over stacked cells, run backwards
        cell = {"tanh": keras.layers.SimpleRNNCell, "relu": keras.layers.SimpleRNNCell,
                "LSTM": keras.layers.LSTMCell, "GRU": keras.layers.GRUCell,
                "GRU_rb": keras.layers.GRUCell}[kind]
        extra = {"relu": {"activation": "relu"}, "GRU": {"reset_after": True},
                 "GRU_rb": {"reset_after": False}}.get(kind, {})
        k = keras.layers.RNN(keras.layers.StackedRNNCells([cell(H, **extra), cell(H, **extra)]),
                             go_backwards=True, return_sequences=True)
        k.build((None, None, I))
        randomize(k, rng)
    want = x
    for layer in (k if isinstance(k, list) else [k]):
        want = layer(want)
    layer = from_keras(k)
    assert layer.reverse and layer.num_layers == (1 if stacked == "one" else 2)
    out, _ = layer(x)
    assert_close(out[:, ::-1], want, what="fastrnn reverse=True, flipped")
    back = to_keras(layer)
    got = x
    for klayer in (back if isinstance(back, list) else [back]):
        got = klayer(got)
    assert_close(out[:, ::-1], got, what="exported back")
    firsts = back if isinstance(back, list) else [back]
    assert [bool(kl.go_backwards) for kl in firsts] == [True] + [False] * (len(firsts) - 1)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("kind,activation,recurrent", [
    ("SimpleRNN", "elu", None), ("SimpleRNN", "linear", None), ("SimpleRNN", "softplus", None),
    ("LSTM", "relu", "hard_sigmoid"), ("LSTM", "softsign", "sigmoid"),
    ("LSTM", "leaky_relu", "softsign"),
    ("GRU", "tanh", "hard_sigmoid"), ("GRU_rb", "tanh", "hard_sigmoid"),
    ("GRU", "elu", "softsign"), ("GRU_rb", "softplus", "relu")])
def test_activations_import_and_export(kind, activation, recurrent, bidirectional):
    """Keras's activation and recurrent_activation, Keras 3's hard_sigmoid (relu6(x + 3) / 6)
    among them, become fastrnn's activations: outputs match Keras's, and the layer exported
    back is the same Keras layer."""
    rng = np.random.default_rng(11)
    kw = {"activation": activation, "return_sequences": True}
    if recurrent:
        kw["recurrent_activation"] = recurrent
    if kind == "GRU_rb":
        kind, kw["reset_after"] = "GRU", False
    layer = getattr(keras.layers, kind)(H, **kw)
    if bidirectional:
        layer = keras.layers.Bidirectional(layer)
    layer.build((None, None, I))
    randomize(layer, rng)
    x = rng.standard_normal((B, T, I)).astype("float32")
    want = layer(x)
    ours = from_keras(layer)
    assert ours.activations is not None
    assert_close(ours(x)[0], want, what=f"{kind} import")
    back = to_keras(ours)
    inner = back.forward_layer if bidirectional else back
    assert inner.activation.__name__ == activation
    if recurrent:
        assert inner.recurrent_activation.__name__ == recurrent
    assert_close(numpy_of(back(x)), want, what=f"{kind} export")


def test_hard_sigmoid_of_keras_3_and_keras_2():
    """Keras 3's hard_sigmoid is relu6(x + 3) / 6 (checked here on the real function); Keras 2's
    (tf_keras), clip(0.2 x + 0.5, 0, 1), is told apart by the function's module (Keras 2 is
    not installed here: a stand-in with its module name)."""
    from fastrnn import activations as acts
    from fastrnn.interop.keras import _keras_activation

    x = np.linspace(-4, 4, 81).astype("float32")
    k3 = _keras_activation(keras.activations.hard_sigmoid, "activation")
    assert k3 == ("hard_sigmoid", 1 / 6, 0.5)
    np.testing.assert_allclose(acts.forward(k3, x),
                               numpy_of(keras.activations.hard_sigmoid(x)), atol=1e-7)

    def hard_sigmoid(v):
        return np.clip(0.2 * v + 0.5, 0, 1)

    hard_sigmoid.__module__ = "tf_keras.src.activations"
    k2 = _keras_activation(hard_sigmoid, "activation")
    assert k2 == ("hard_sigmoid", 0.2, 0.5)
    np.testing.assert_allclose(acts.forward(k2, x), hard_sigmoid(x), atol=1e-7)


def test_gru_reset_forms_do_not_mix():
    """Keras GRUs of both reset forms convert, and neither reads the other's bias or stacks
    with it."""
    def built(layer, shape=(None, None, I)):
        layer.build(shape)
        return layer

    with pytest.raises(ValueError, match="has reset_after=False but layer 0 has reset_after=True"):
        from_keras([built(keras.layers.GRU(H, return_sequences=True)),
                    built(keras.layers.GRU(H, reset_after=False), (None, None, H))])
    from fastrnn.interop.keras import from_keras_arrays
    after = built(keras.layers.GRU(H)).get_weights()
    before = built(keras.layers.GRU(H, reset_after=False)).get_weights()
    assert before[2].shape == (3 * H,) and after[2].shape == (2, 3 * H)
    with pytest.raises(ValueError, match=r"reset_after=True\) must have shape \(2, 15\)"):
        from_keras_arrays("GRU", before, H, True)
    with pytest.raises(ValueError, match=r"bias must have shape \(15,\)"):
        from_keras_arrays("GRU", after, H, True, reset_after=False)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_stateful_layers_both_ways(bidirectional):
    """Keras's stateful=True carries the state from one call to the next: its import warns
    that fastrnn's layers keep none (the state is the caller's to pass on, and then the
    outputs are Keras's); its export needs the batch size the layer is built for."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 2 * T, I)).astype(np.float32)
    keras_layer = keras.layers.LSTM(H, stateful=True, return_sequences=True)
    if bidirectional:
        keras_layer = keras.layers.Bidirectional(keras_layer)
    keras_layer.build((2, None, I))
    randomize(keras_layer, rng)
    with pytest.warns(UserWarning, match="stateful=True carries the last state"):
        ours = from_keras(keras_layer)
    out1, state = ours(x[:, :T])
    out2, _ = ours(x[:, T:], state)
    assert_close(numpy_of(keras_layer(x[:, :T])), out1)
    if not bidirectional:         # (a reverse direction reads each call's chunk backwards)
        assert_close(numpy_of(keras_layer(x[:, T:])), out2)
    with pytest.raises(ValueError, match="stateful=True needs batch_size"):
        to_keras(ours, stateful=True)
    for kwargs in ({"batch_size": 2}, {"stateful": True}, {"stateful": True, "batch_size": 2}):
        with pytest.raises(ValueError, match="are options of a Keras recurrent layer"):
            to_keras(fastrnn.LSTMCell(I, H), **kwargs)
    back = to_keras(ours, stateful=True, batch_size=2)
    assert_close(numpy_of(back(x[:, :T])), out1)
    if not bidirectional:
        assert_close(numpy_of(back(x[:, T:])), out2)


def test_a_subclass_that_overrides_call_is_imported_with_a_warning():
    """A subclass of a Keras cell or layer with a call() of its own computes something the
    import cannot see: it is imported as the Keras class, and says so."""
    class Scaled(keras.layers.LSTMCell):
        def call(self, inputs, states, training=False):
            h, state = super().call(inputs, states, training)
            return 2 * h, state

    class Logged(keras.layers.GRU):
        def call(self, *args, **kwargs):
            return super().call(*args, **kwargs)

    layer = keras.layers.RNN(Scaled(H), return_sequences=True)
    layer.build((None, None, I))
    with pytest.warns(UserWarning, match="Scaled overrides call\\(\\) of Keras's LSTMCell"):
        from_keras(layer)
    layer = Logged(H)
    layer.build((None, None, I))
    with pytest.warns(UserWarning, match="Logged overrides call\\(\\) of Keras's GRU"):
        from_keras(layer)


def test_unsupported_keras_objects_are_named():
    def built(layer, shape=(None, None, I)):
        layer.build(shape)
        return layer

    with pytest.raises(ValueError, match="merge_mode='sum'"):
        from_keras(built(keras.layers.Bidirectional(keras.layers.LSTM(H), merge_mode="sum")))
    with pytest.raises(ValueError, match="run backwards, forwards in the time of the input"):
        from_keras([built(keras.layers.LSTM(H, go_backwards=True, return_sequences=True)),
                    built(keras.layers.LSTM(H, go_backwards=True), (None, None, H))])
    with pytest.raises(ValueError, match="build it first"):
        from_keras(keras.layers.LSTM(H))
    with pytest.raises(ValueError, match="LSTM.cell: activation='gelu' is not supported"):
        from_keras(built(keras.layers.LSTM(H, activation="gelu")))
    with pytest.raises(ValueError, match="recurrent_activation='selu' is not supported"):
        from_keras(built(keras.layers.GRU(H, recurrent_activation="selu")))
    with pytest.raises(ValueError, match="has the activations .* but layer 0 has"):
        from_keras([built(keras.layers.GRU(H, return_sequences=True)),
                    built(keras.layers.GRU(H, activation="relu"), (None, None, H))])
    with pytest.raises(ValueError, match=r"\('hard_sigmoid', 0.2, 0.5\) has no equal among "
                                         r"Keras 3's activations"):
        to_keras(fastrnn.GRU(I, H, activations=[("hard_sigmoid", 0.2, 0.5), "tanh"]))
    with pytest.raises(ValueError, match="uses its one activation for the candidate"):
        to_keras(fastrnn.LSTMCell(I, H, activations=["sigmoid", "relu", "tanh"]))
    with pytest.raises(ValueError, match="its two directions differ"):
        to_keras(fastrnn.RNN(I, H, bidirectional=True, activations=["relu", "elu"]))
    with pytest.raises(ValueError, match="takes 7 input features, but the layer below gives 5"):
        from_keras([built(keras.layers.GRU(H, return_sequences=True)),
                    built(keras.layers.GRU(H), (None, None, 7))])
    with pytest.raises(ValueError, match="mix of Bidirectional and unidirectional"):
        from_keras([built(keras.layers.Bidirectional(keras.layers.GRU(H, return_sequences=True))),
                    built(keras.layers.GRU(H), (None, None, 2 * H))])
    # a lower layer that gives its last step alone: Keras itself cannot stack them
    for lower in (keras.layers.LSTM(H), keras.layers.Bidirectional(keras.layers.LSTM(H // 2))):
        with pytest.raises(ValueError, match=r"layers\[0\] .*return_sequences=False"):
            from_keras([built(lower), built(keras.layers.LSTM(H), (None, None, H))])
    # the two directions of one Bidirectional differ: said so, not as a stack's layers
    with pytest.raises(ValueError, match="backward_layer has kind='LSTM' but its forward_layer "
                                         "has kind='GRU'"):
        from_keras(built(keras.layers.Bidirectional(
            keras.layers.GRU(H, return_sequences=True),
            backward_layer=keras.layers.LSTM(H, return_sequences=True, go_backwards=True))))
    # to_keras's own options may be added; one that changes what the layer computes may not
    for kwargs in ({"activation": "relu"}, {"recurrent_activation": "tanh"},
                   {"go_backwards": True}, {"use_bias": False}, {"units": 3}):
        for obj in (fastrnn.LSTM(I, H), fastrnn.RNN(I, H), fastrnn.GRU(I, H, reverse=True)):
            with pytest.raises(ValueError, match=f"{next(iter(kwargs))} would change what"):
                to_keras(obj, **kwargs)
    assert to_keras(fastrnn.LSTM(I, H), return_state=True).return_state
    # a stack's last layer gives the outputs: the others feed their sequences on, so that the
    # list chains, and each layer has a name of its own
    ours = fastrnn.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True, seed=0)
    stack = to_keras(ours, return_state=True, return_sequences=False, name="enc")
    assert [layer.name for layer in stack] == ["enc_l0", "enc_l1"]
    x = np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)
    model = keras.Sequential([keras.Input((T, I))] + stack)
    got = [keras.ops.convert_to_numpy(v) for v in model(x)]
    out, (h_n, c_n) = ours(x)
    assert len(got) == 5     # the last output, then h and c of each direction
    assert_close(got[0], np.concatenate([out[:, -1, :H], out[:, 0, H:]], axis=1),
                 what="the last step of each direction")
    assert_close(got[1], h_n[2], what="forward h")
    assert_close(got[3], h_n[3], what="backward h")
    assert_close(got[4], c_n[3], what="backward c")
    # a cell's own options reach the Keras cell; a layer's options and changes are refused
    for obj in (fastrnn.LSTMCell(I, H), fastrnn.GRUCell(I, H), fastrnn.RNNCell(I, H)):
        cell = to_keras(obj, name="exported", dropout=0.25)
        assert (cell.name, cell.dropout) == ("exported", 0.25)
        with pytest.raises(ValueError, match="activation would change what"):
            to_keras(obj, activation="relu")
        with pytest.raises(ValueError, match="return_sequences are options of a Keras recurrent "
                                             "layer"):
            to_keras(obj, return_sequences=False)
    with pytest.raises(TypeError, match="expected a Keras SimpleRNN"):
        from_keras(keras.layers.Dense(3))
    with pytest.raises(TypeError, match=r"^LSTM: expected a Keras .*but got the class keras\..*"
                                        r"LSTM \(pass an instance\)"):
        from_keras(keras.layers.LSTM)
    with pytest.raises(TypeError, match=r"fastrnn layer .*but got keras\..*\.LSTM$"):
        to_keras(keras.layers.LSTM(H))
    with pytest.raises(ValueError, match="no projection"):
        to_keras(fastrnn.LSTM(I, H, proj_size=2))
    for obj in (fastrnn.LSTM(I, H, peepholes=True), fastrnn.LSTMCell(I, H, peepholes=True)):
        with pytest.raises(ValueError, match="peepholes=True.*no peephole connections"):
            to_keras(obj)
    for obj in (fastrnn.GRU(I, H, clip=2.0), fastrnn.RNNCell(I, H, clip=2.0)):
        with pytest.raises(ValueError, match=r"clip=2.0\) cannot be exported to Keras"):
            to_keras(obj)
    for obj in (fastrnn.LSTM(I, H, input_forget=True), fastrnn.LSTMCell(I, H, input_forget=True)):
        with pytest.raises(ValueError, match="input_forget=True.*no coupled input and forget"):
            to_keras(obj)
    with pytest.warns(UserWarning, match="recurrent_dropout"):
        from_keras(built(keras.layers.LSTM(H, dropout=0.1, recurrent_dropout=0.2)))


def test_to_keras_names_a_missing_backend_not_keras():
    """Keras installed without the backend KERAS_BACKEND names (the interop extra gives no
    backend): the error says so, not that Keras is missing."""
    import subprocess
    import sys
    code = ("import sys; sys.modules['tensorflow'] = None\n"
            "import fastrnn\n"
            "try:\n"
            "    fastrnn.to_keras(fastrnn.LSTM(3, 4))\n"
            "except ImportError as exc:\n"
            "    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, KERAS_BACKEND="tensorflow"))
    assert "Keras is installed, but not its backend 'tensorflow'" in done.stdout, done.stderr
    # a missing dependency of Keras's own is not its backend
    done = subprocess.run([sys.executable, "-c", code.replace("'tensorflow'", "'optree'")],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, KERAS_BACKEND="torch"))
    assert "Keras is installed but cannot be imported: its dependency 'optree' is missing" in \
        done.stdout, done.stdout + done.stderr

