"""fastrnn.onnx.export / load: run the exported files with onnxruntime, load them back exactly."""

import io
import os
import re
import warnings

import numpy as np
import pytest

from helpers import required

if required("FASTRNN_REQUIRE_INTEROP"):
    import onnx  # CI installs them: missing libraries are failures there, not skips
    import onnxruntime
else:
    onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install onnx); set "
                               "FASTRNN_REQUIRE_INTEROP=1 to make this a failure")
    onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip "
                                      "install onnxruntime); set FASTRNN_REQUIRE_INTEROP=1 to "
                                      "make this a failure")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import fastrnn  # noqa: E402
import fastrnn.onnx as fonnx  # noqa: E402

MAX_ERR = {"onnxruntime float32": 0.0, "onnx reference float64": 0.0, "torch.onnx float32": 0.0}
T, B, I, H = 6, 4, 3, 5


def session(model):
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(model.SerializeToString(), opts,
                                        providers=["CPUExecutionProvider"])


def assert_close(got, want, key, atol):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    MAX_ERR[key] = max(MAX_ERR[key], float(np.max(np.abs(got - want))))
    np.testing.assert_allclose(got, want, atol=atol, rtol=atol)


def assert_same_weights(a, b):
    assert type(a) is type(b) and a.get_config() == b.get_config()
    for name, p in a.parameters().items():
        q = b.parameters()[name]
        assert q.dtype == p.dtype and np.array_equal(q, p), name


#: the "_act" kinds' activations: every ONNX function once or more
ACTIVATIONS = {
    "RNN": [("scaled_tanh", 1.3, 0.7)],
    "LSTM": [("hard_sigmoid", 0.2, 0.5), ("leaky_relu", 0.1), "softsign"],
    "GRU": [("hard_sigmoid", 1 / 6, 0.5), ("elu", 0.8)],
    "GRU_rb": ["softsign", ("affine", 0.5, 0.2)],
    "RNNCell": ["softplus"],
    "LSTMCell": ["sigmoid", "relu", ("thresholded_relu", 0.1)],
    "GRUCell": ["tanh", "relu"],
}


def make(kind, dtype=np.float32, **kw):
    """A layer or cell of a kind: "tanh", "relu", a class name, "GRU_rb" / "GRUCell_rb" for
    a GRU resetting before the product (ONNX's linear_before_reset=0), "LSTM_ph" /
    "LSTMCell_ph" for an LSTM with peepholes (ONNX's P), "LSTM_if" / "LSTMCell_if" for one
    with coupled input and forget gates (ONNX's input_forget=1; the cell with peepholes too);
    a "_clip" suffix adds ONNX's cell clip (at 0.7: most of these pre-activations cross it), an
    "_act" suffix other activations (:data:`ACTIVATIONS`)."""
    if kind.endswith("_clip"):
        return make(kind[:-5], dtype, clip=0.7, **kw)
    if kind.endswith("_act"):
        return make(kind[:-4], dtype, activations=ACTIVATIONS[kind[:-4]], **kw)
    if kind in ("tanh", "relu"):
        return fastrnn.RNN(I, H, nonlinearity=kind, dtype=dtype, **kw)
    if kind.endswith("_rb"):
        return getattr(fastrnn, kind[:-3])(I, H, dtype=dtype, reset_after=False, **kw)
    if kind.endswith("_ph"):
        return getattr(fastrnn, kind[:-3])(I, H, dtype=dtype, peepholes=True, **kw)
    if kind.endswith("_if"):
        extra = {"peepholes": True} if kind.startswith("LSTMCell") else {}
        return getattr(fastrnn, kind[:-3])(I, H, dtype=dtype, input_forget=True, **extra, **kw)
    return getattr(fastrnn, kind)(I, H, dtype=dtype, **kw)


def feeds_and_reference(layer, rng, dtype, state=True, lengths=None):
    """ONNX feeds and fastrnn's own outputs for one random batch."""
    lead = (B, T) if layer.batch_first else (T, B)
    x = rng.standard_normal(lead + (I,)).astype(dtype)
    feeds = {"input": x}
    LD = layer.num_layers * layer.num_directions
    hx = None
    if state:
        nstates = 2 if isinstance(layer, fastrnn.LSTM) else 1
        hx = [rng.standard_normal((LD, B, H)).astype(dtype) for _ in range(nstates)]
        feeds.update(zip(("h0", "c0"), hx))
        hx = tuple(hx) if len(hx) == 2 else hx[0]
    if lengths is not None:
        feeds["lengths"] = np.asarray(lengths, np.int32)
    out, states = layer.eval()(x, hx, lengths=lengths)
    return feeds, [out, *(states if isinstance(states, tuple) else (states,))]


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("direction", ["forward", "bidirectional", "reverse"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("kind", ["tanh", "relu", "LSTM", "LSTM_ph", "LSTM_if", "GRU", "GRU_rb",
                                  "tanh_clip", "LSTM_clip", "GRU_clip", "GRU_rb_clip", "RNN_act",
                                  "LSTM_act", "GRU_act", "GRU_rb_act"])
def test_onnxruntime_matches_and_weights_come_back_exactly(kind, num_layers, direction, bias,
                                                           batch_first, tmp_path):
    rng = np.random.default_rng(0)
    layer = make(kind, num_layers=num_layers, bidirectional=direction == "bidirectional",
                 reverse=direction == "reverse", bias=bias, batch_first=batch_first, seed=1)
    path = tmp_path / "model.onnx"
    model = fonnx.export(layer, path, initial_state=True, lengths=True)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count({"tanh": "RNN", "relu": "RNN"}.get(kind.split("_")[0],
                                                         kind.split("_")[0])) == num_layers
    sess = session(model)
    for lengths in ([T, 3, 1, 5], [T] * B):
        feeds, want = feeds_and_reference(layer, rng, np.float32, lengths=lengths)
        got = sess.run(None, feeds)
        assert [o.name for o in sess.get_outputs()] == (
            ["output", "h_n", "c_n"] if kind.startswith("LSTM") else ["output", "h_n"])
        for g, w in zip(got, want):
            assert_close(g, w, "onnxruntime float32", 2e-6)
    assert np.any(want[0] != 0)
    assert [a.s.decode() for n in model.graph.node for a in n.attribute
            if a.name == "direction"] == [direction] * num_layers
    back = fonnx.load(path)
    assert_same_weights(layer, back)
    assert back.reverse == (direction == "reverse")


@pytest.mark.parametrize("kind", ["tanh", "LSTM", "LSTM_ph", "LSTM_if", "GRU", "GRU_rb",
                                  "GRU_clip"])
def test_default_inputs_zero_state_no_lengths(kind):
    rng = np.random.default_rng(1)
    layer = make(kind, num_layers=2, bidirectional=True, batch_first=True, seed=2)
    buf = io.BytesIO()
    model = fonnx.export(layer, buf)
    assert [i.name for i in model.graph.input] == ["input"]
    feeds, want = feeds_and_reference(layer, rng, np.float32, state=False)
    for g, w in zip(session(model).run(None, feeds), want):
        assert_close(g, w, "onnxruntime float32", 2e-6)
    buf.seek(0)
    assert_same_weights(layer, fonnx.load(buf))


@pytest.mark.parametrize("opset", [o for o in (14, fonnx.OPSET, 18, 21, 23)
                                   if o <= onnx.defs.onnx_opset_version()])
def test_each_opset_is_written_with_the_ir_version_the_specification_pairs_with_it(opset):
    """The IR version is the one ONNX pairs with the opset (at least opset 17's 8), so the
    model passes the full check; it runs in onnxruntime and loads back exactly."""
    layer = make("GRU", seed=2)
    buf = io.BytesIO()
    model = fonnx.export(layer, buf, opset=opset)
    assert model.opset_import[0].version == opset
    assert model.ir_version == max(fonnx.IR_VERSION,
                                   helper.find_min_ir_version_for(list(model.opset_import)))
    onnx.checker.check_model(model, full_check=True)
    feeds, want = feeds_and_reference(layer, np.random.default_rng(1), np.float32, state=False)
    for g, w in zip(session(model).run(None, feeds), want):
        assert_close(g, w, "onnxruntime float32", 2e-6)
    buf.seek(0)
    assert_same_weights(layer, fonnx.load(buf))


@pytest.mark.parametrize("kind", ["RNNCell", "LSTMCell", "LSTMCell_ph", "LSTMCell_if",
                                  "GRUCell", "GRUCell_rb", "LSTMCell_clip", "RNNCell_act",
                                  "LSTMCell_act", "GRUCell_act"])
def test_cells(kind):
    rng = np.random.default_rng(2)
    cell = make(kind, seed=3)
    model = fonnx.export(cell, io.BytesIO())
    x = rng.standard_normal((B, I)).astype(np.float32)
    nstates = 2 if kind.startswith("LSTMCell") else 1
    states = [rng.standard_normal((B, H)).astype(np.float32) for _ in range(nstates)]
    want = cell(x, tuple(states)) if nstates == 2 else (cell(x, states[0]),)
    got = session(model).run(None, dict(zip(("input", "h", "c"), [x, *states])))
    for g, w in zip(got, want):
        assert_close(g, w, "onnxruntime float32", 2e-6)
    assert_same_weights(cell, fonnx.load(model))


# (not LSTM_if: onnx's reference implementation of LSTM ignores input_forget; onnxruntime
# runs it, in the tests above)
@pytest.mark.parametrize("kind", ["tanh", "LSTM", "LSTM_ph", "GRU", "GRU_rb"])
def test_float64_and_layout_attribute_with_the_onnx_reference_runtime(kind):
    """onnxruntime runs neither float64 nor layout=1; onnx's reference evaluator runs both."""
    rng = np.random.default_rng(3)
    layer = make(kind, dtype=np.float64, num_layers=2, bidirectional=True, batch_first=True, seed=4)
    for use_layout in (False, True):
        model = fonnx.export(layer, io.BytesIO(), initial_state=True,
                             use_layout_attribute=use_layout)
        recurrent = [n for n in model.graph.node if n.op_type in ("RNN", "LSTM", "GRU")]
        assert all(any(a.name == "layout" and a.i == 1 for a in n.attribute) == use_layout
                   for n in recurrent)
        feeds, want = feeds_and_reference(layer, rng, np.float64)
        for g, w in zip(ReferenceEvaluator(model).run(None, feeds), want):
            assert_close(g, w, "onnx reference float64", 1e-12)
        assert_same_weights(layer, fonnx.load(model))
        # without fastrnn's metadata (a model another exporter wrote) the graph says
        # batch_first: the layout attribute, or the transposes around time-major nodes; a
        # model fastrnn wrote must keep its metadata
        del model.metadata_props[:]
        with pytest.raises(fonnx.UnsupportedOnnxError, match="lacks the metadata.*truncated"):
            fonnx.load(model)
        model.producer_name = "another exporter"
        assert fonnx.load(model).batch_first


@pytest.mark.parametrize("kind,acts", [
    ("GRU", ["sigmoid", "tanh", ("hard_sigmoid", 0.3, 0.4), "softsign"]),
    ("LSTM", [("hard_sigmoid", 0.2, 0.5), "tanh", "tanh", "sigmoid", "relu", ("elu", 0.5)]),
    ("RNN", ["relu", ("scaled_tanh", 0.9, 1.1)])])
def test_activations_per_direction(kind, acts):
    """A bidirectional layer's two directions with activations of their own: ONNX's list of
    both, alpha and beta read in order by the functions that take them."""
    rng = np.random.default_rng(4)
    layer = getattr(fastrnn, kind)(I, H, bidirectional=True, activations=acts, seed=5)
    model = fonnx.export(layer, io.BytesIO(), initial_state=True)
    feeds, want = feeds_and_reference(layer, rng, np.float32)
    for g, w in zip(session(model).run(None, feeds), want):
        assert_close(g, w, "onnxruntime float32", 2e-6)
    back = fonnx.load(model)
    assert back.activations == layer.activations and len(back.activations) == len(acts)
    assert_same_weights(layer, back)


def test_activation_parameters_come_back_exactly():
    """ONNX keeps alpha and beta as float32; fastrnn's metadata keeps them exact, and a node
    whose float32 values disagree with it wins."""
    layer = fastrnn.GRU(I, H, activations=[("hard_sigmoid", 1 / 6, 0.5), ("elu", 0.1)])
    model = fonnx.export(layer, io.BytesIO())
    assert fonnx.load(model).activations == layer.activations   # 1/6 and 0.1 exactly
    node = next(n for n in model.graph.node if n.op_type == "GRU")
    alpha = next(a for a in node.attribute if a.name == "activation_alpha")
    assert list(alpha.floats) == pytest.approx([1 / 6, 0.1])
    alpha.floats[1] = 0.25
    with pytest.raises(fonnx.UnsupportedOnnxError, match="metadata .*activations"):
        fonnx.load(model)


@pytest.mark.parametrize("make", [
    lambda: fastrnn.RNN(I, H, activations=["relu"], seed=5),
    lambda: fastrnn.RNNCell(I, H, activations=["relu"], seed=5),
    lambda: fastrnn.RNN(I, H, num_layers=2, bidirectional=True, activations=["relu", "relu"], seed=5),
    lambda: fastrnn.RNN(I, H, nonlinearity="relu", seed=5)])
def test_an_rnn_of_relu_comes_back_as_it_was_written(make):
    """``activations=["relu"]`` and ``nonlinearity="relu"`` make the same nodes; the metadata
    says which of the two the layer was, and the load agrees with it."""
    layer = make()
    back = fonnx.load(fonnx.export(layer, io.BytesIO()))
    assert repr(back) == repr(layer) and back.get_config() == layer.get_config()
    assert_same_weights(layer, back)


def test_a_clip_float32_cannot_hold_is_refused_on_export():
    """ONNX keeps the clip as a float32 attribute: a clip that would become 0 or inf there (and
    that load would then refuse) is refused when exporting, naming it (a float64 layer holds
    both; a float32 one refuses 1e-50 itself)."""
    for clip, becomes in ((1e-50, "0.0"), (1e300, "inf")):
        with pytest.raises(fonnx.UnsupportedOnnxError,
                           match=re.escape(f"clip={clip} cannot be exported") + f".*would be {becomes}"):
            fonnx.export(fastrnn.GRU(I, H, clip=clip, dtype=np.float64), io.BytesIO())
    assert fonnx.load(fonnx.export(fastrnn.GRU(I, H, clip=0.1), io.BytesIO())).clip == 0.1


def test_activation_parameters_float32_cannot_hold_are_refused_on_export():
    """As the clip: an alpha or beta that ONNX's float32 attribute would turn into inf, or a
    nonzero one into 0, is refused when exporting, naming it."""
    for acts, named in (([("leaky_relu", 1e300)], "LeakyRelu with alpha=1e+300"),
                        ([("leaky_relu", 1e-50)], "LeakyRelu with alpha=1e-50"),
                        ([("hard_sigmoid", 0.2, 1e300)], "HardSigmoid with beta=1e+300")):
        layer = fastrnn.RNN(I, H, activations=acts, dtype=np.float64)
        with pytest.raises(fonnx.UnsupportedOnnxError,
                           match=re.escape(f"activation {named} cannot be exported")):
            fonnx.export(layer, io.BytesIO())
    layer = fastrnn.RNN(I, H, activations=[("leaky_relu", 0.0)])
    assert fonnx.load(fonnx.export(layer, io.BytesIO())).get_config() == layer.get_config()


def test_float64_layer_exported_as_float32_for_onnxruntime():
    layer = fastrnn.GRU(I, H, dtype=np.float64, seed=5)
    model = fonnx.export(layer, io.BytesIO(), dtype=np.float32)
    x = np.random.default_rng(4).standard_normal((T, B, I))
    got = session(model).run(None, {"input": x.astype(np.float32)})
    np.testing.assert_allclose(got[0], layer(x)[0], atol=1e-5)
    loaded = fonnx.load(model)
    assert loaded.dtype == np.float32
    for name, p in layer.parameters().items():
        assert np.array_equal(loaded.parameters()[name], p.astype(np.float32))


def test_models_written_by_torch_onnx_export():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    torch.manual_seed(0)
    for module in (torch.nn.LSTM(I, H, num_layers=2, bidirectional=True),
                   torch.nn.GRU(I, H, num_layers=2), torch.nn.RNN(I, H, nonlinearity="relu"),
                   torch.nn.GRU(I, H, batch_first=True)):
        # (batch_first: the export transposes around a time-major node, and the loaded layer
        # reads batch first as the graph does; it loaded time-major, silently wrong at B = T)
        x = torch.randn(B, B, I) if module.batch_first else torch.randn(T, B, I)
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (x,), buf, dynamo=False)
        layer = fonnx.load(io.BytesIO(buf.getvalue()))
        assert layer.num_layers == module.num_layers and layer.bidirectional == module.bidirectional
        assert layer.batch_first == module.batch_first
        for name, p in module.named_parameters():
            assert np.array_equal(layer.parameters()[name], p.detach().numpy()), name
        assert_close(layer(x.numpy())[0], module(x)[0].detach().numpy(), "torch.onnx float32", 1e-6)


def test_weights_torch_computes_in_the_graph_are_named_with_the_remedy(torch):
    """torch.onnx at opset 7 slices and joins an LSTM's weights in the graph: the refusal says
    so and how to export instead, not that the model computes around its recurrent part."""
    import warnings
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        state = (torch.randn(1, B, H), torch.randn(1, B, H))
        torch.onnx.export(torch.nn.LSTM(I, H).eval(), (torch.randn(T, B, I), state), buf,
                          dynamo=False, opset_version=7)
    with pytest.raises(fonnx.UnsupportedOnnxError, match="its W input .* is computed in the graph "
                                                         ".*export with a newer opset"):
        fonnx.load(io.BytesIO(buf.getvalue()))


def test_torch_models_that_compute_around_the_recurrent_layer_are_refused():
    """An embedding's Gather of its table, torch.flip's Slice of step -1: ops fastrnn reads
    past as data movement elsewhere, which compute here; loading the LSTM alone would drop
    them.  (The states a stacked torch export slices out of its inputs still load.)"""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    torch.manual_seed(0)

    class Embedded(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.lstm = torch.nn.Embedding(10, I), torch.nn.LSTM(I, H)

        def forward(self, ids):
            return self.lstm(self.emb(ids))[0]

    class Flipped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = torch.nn.GRU(I, H)

        def forward(self, x):
            return self.gru(torch.flip(x, [0]))[0]

    def exported(module, args):
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), args, buf, dynamo=False)
        return io.BytesIO(buf.getvalue())

    with pytest.raises(fonnx.UnsupportedOnnxError, match="Gather.*reads the stored numbers"):
        fonnx.load(exported(Embedded(), (torch.randint(0, 10, (T, B)),)))
    with pytest.raises(fonnx.UnsupportedOnnxError, match="Slice.*steps other than 1"):
        fonnx.load(exported(Flipped(), (torch.randn(T, B, I),)))

    class Around(torch.nn.Module):
        """x indexed, cropped or its features permuted on the way in, or one step taken of
        the output: Gather and Slice of step 1, which move data elsewhere"""
        def __init__(self, how):
            super().__init__()
            self.lstm, self.how = torch.nn.LSTM(I, H), how

        def forward(self, x):
            if self.how == "reversed":
                return self.lstm(x[torch.arange(T - 1, -1, -1)])[0]
            if self.how == "cropped":
                return self.lstm(x[2:])[0]
            if self.how == "permuted":
                return self.lstm(x[:, :, torch.arange(I - 1, -1, -1)])[0]
            return self.lstm(x)[0][-1]

    for how, op in (("reversed", "Gather"), ("cropped", "Slice"), ("permuted", "Gather"),
                    ("last step", "Gather")):
        with pytest.raises(fonnx.UnsupportedOnnxError, match=f"{op}.*(selects|slices) .*data"):
            fonnx.load(exported(Around(how), (torch.randn(T, B, I),)))

    class Padded(torch.nn.Module):
        """zero steps put in front of x: a Concat whose data is its second input"""
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(I, H)

        def forward(self, x):
            return self.lstm(torch.cat([torch.zeros(2, B, I), x]))[0]

    with pytest.raises(fonnx.UnsupportedOnnxError, match="Concat.*joins values on the way"):
        fonnx.load(exported(Padded(), (torch.randn(T, B, I),)))
    stacked = torch.nn.LSTM(I, H, num_layers=2)
    x, h0, c0 = torch.randn(T, B, I), torch.randn(2, B, H), torch.randn(2, B, H)
    for opset in (None, 9):      # (before opset 10, a Slice's starts and ends are attributes)
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(stacked.eval(), (x, (h0, c0)), buf, dynamo=False,
                              **({"opset_version": opset} if opset else {}))
        layer = fonnx.load(io.BytesIO(buf.getvalue()))
        assert_close(layer(x.numpy(), (h0.numpy(), c0.numpy()))[0],
                     stacked(x, (h0, c0))[0].detach().numpy(), "torch.onnx float32", 1e-6)


@pytest.mark.parametrize("fill", ["Expand", "ConstantOfShape"])
def test_a_nonzero_initial_state_made_in_the_graph_is_refused(fill):
    """A stored state broadcast over the batch, or a tensor filled with a nonzero value, is a
    state a fastrnn layer does not start from (it starts from zeros or from the one passed)."""
    rng = np.random.default_rng(0)
    shape = [helper.make_node("Shape", ["X"], ["xs"]),
             helper.make_node("Gather", ["xs", "one"], ["b"], axis=0),
             helper.make_node("Concat", ["one", "b", "h"], ["shape"], axis=0)]
    if fill == "Expand":
        shape.append(helper.make_node("Expand", ["h0", "shape"], ["init_h"]))
    else:
        shape.append(helper.make_node("ConstantOfShape", ["shape"], ["init_h"],
                                      value=numpy_helper.from_array(np.array([0.7], np.float32))))
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (rng.standard_normal((1, 3 * H, I)).astype(np.float32), "W"),
        (rng.standard_normal((1, 3 * H, H)).astype(np.float32), "R"),
        (np.full((1, 1, H), 0.7, np.float32), "h0"), (np.array([1], np.int64), "one"),
        (np.array([H], np.int64), "h"))]
    graph = helper.make_graph(
        shape + [helper.make_node("GRU", ["X", "W", "R", "", "", "init_h"], ["Y", "Y_h"],
                                  hidden_size=H, linear_before_reset=1)], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", I])],
        [helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, "B", H])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    with pytest.raises(fonnx.UnsupportedOnnxError, match=f"{fill}.*(stored numbers|nonzero)"):
        fonnx.load(model)


def test_stacked_nodes_joined_by_another_transpose_are_refused():
    """Between two nodes of a stack, Y (T, D, B, H) may only become (T, B, D*H): a transpose
    that swaps time and batch feeds the next node something a stack does not."""
    model = fonnx.export(fastrnn.GRU(I, H, num_layers=2, seed=0), io.BytesIO())
    del model.metadata_props[:]
    model.producer_name = "other"
    nodes = list(model.graph.node)
    k = next(i for i, n in enumerate(nodes) if n.op_type == "GRU" and n.input[0] == "out_l0")
    nodes[k].input[0] = "out_l0_swapped"
    nodes.insert(k, helper.make_node("Transpose", ["out_l0"], ["out_l0_swapped"], perm=[1, 0, 2]))
    assert_not_one_stack(model, nodes)


def assert_not_one_stack(model, nodes):
    """``model`` with the graph's nodes replaced by ``nodes`` (a valid ONNX model) is refused:
    its recurrent nodes do not form one stack."""
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    with pytest.raises(fonnx.UnsupportedOnnxError, match="do not form one stack"):
        fonnx.load(model)


def test_stacked_bidirectional_nodes_joined_by_a_reshape_alone_are_refused():
    """Y (T, 2, B, H) reshaped to (T, B, 2H) without its transpose mixes the directions and
    the batch; with layout 1, Y (B, T, 2, H) needs none, and loads."""
    for layout in (False, True):
        layer = fastrnn.GRU(I, H, num_layers=2, bidirectional=True, seed=0)
        model = fonnx.export(layer, io.BytesIO(), use_layout_attribute=layout)
        assert_same_weights(layer, fonnx.load(model))
        if layout:
            continue
        nodes = [n for n in model.graph.node
                 if not (n.op_type == "Transpose" and n.input[0] == "Y_l0")]
        reshape = next(n for n in nodes if n.op_type == "Reshape" and n.output[0] == "out_l0")
        reshape.input[0] = "Y_l0"
        assert_not_one_stack(model, nodes)


def test_initial_states_sliced_for_other_nodes_are_refused():
    """Each node of a stack reads rows [l*D, (l+1)*D) of h0: a graph that gives node 0 the
    rows of node 1 computes something else than the layer."""
    layer = fastrnn.LSTM(I, H, num_layers=2, seed=0)
    model = fonnx.export(layer, io.BytesIO(), initial_state=True)
    assert_same_weights(layer, fonnx.load(model))
    for node in model.graph.node:
        if node.op_type == "Slice" and node.output[0] == "h0_l0":
            node.input[1], node.input[2] = "start_l1", "end_l1"
    with pytest.raises(fonnx.UnsupportedOnnxError, match="Slice.*other than the rows of the "
                                                         "initial states"):
        fonnx.load(model)


def exported_stack(**export_args):
    """A 2-layer LSTM's model as another exporter would write it (no fastrnn metadata)."""
    model = fonnx.export(fastrnn.LSTM(I, H, num_layers=2, seed=0), io.BytesIO(), **export_args)
    del model.metadata_props[:]
    model.producer_name = "other"
    return model, [n for n in model.graph.node if n.op_type == "LSTM"]


def test_an_initial_state_made_from_another_nodes_state_is_refused():
    """Node 1 of a stack starting from node 0's final state (Keras's initial_state=[h, c]
    between two layers) is a valid model onnxruntime runs, and not a fastrnn layer."""
    model, (_, upper) = exported_stack(initial_state=True)
    upper.input[5], upper.input[6] = "Y_h_l0", "Y_c_l0"
    nodes = [n for n in model.graph.node if n.output[0] not in ("h0_l1", "c0_l1")]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    with pytest.raises(fonnx.UnsupportedOnnxError,
                       match=r"node \d+ \(LSTM '\w+'\): its initial_h input 'Y_h_l0' is computed "
                             r"from the output of node \d+ \(LSTM '\w+'\)"):
        fonnx.load(model)


def test_an_initial_state_sliced_from_the_input_is_refused():
    """h0 = X[0:1] has the rows a stack's state slice has, but it is the data, not a state."""
    model = single_node_model("GRU", {"linear_before_reset": 1})
    node = model.graph.node[0]
    model.graph.initializer.extend([numpy_helper.from_array(np.array([v], np.int64), n)
                                    for v, n in ((0, "s0"), (1, "s1"), (0, "ax0"))])
    model.graph.node.insert(0, helper.make_node("Slice", ["X", "s0", "s1", "ax0"], ["h0"]))
    node.input.extend(["", "h0"])
    with pytest.raises(fonnx.UnsupportedOnnxError,
                       match="its initial_h input 'h0' is computed from the model's input 'X'"):
        fonnx.load(model)


def test_lengths_read_by_some_nodes_of_a_stack_only_are_refused():
    """A fastrnn layer applies its lengths to every layer: a stack whose upper node reads no
    sequence_lens (or other ones) computes something else; the exported stack loads."""
    model, (lower, upper) = exported_stack(lengths=True)
    assert fonnx.load(model).num_layers == 2
    upper.input[4] = ""
    with pytest.raises(fonnx.UnsupportedOnnxError,
                       match=r"node \d+ \(LSTM '\w+'\) reads no sequence_lens but node \d+ "
                             r"\(LSTM '\w+'\) reads sequence_lens 'lengths'; a fastrnn layer "
                             r"applies one set"):
        fonnx.load(model)


@pytest.mark.parametrize("batch_first", [False, True])
def test_batch_first_metadata_must_agree_with_the_graph(batch_first):
    import json
    model = fonnx.export(fastrnn.LSTM(I, H, batch_first=batch_first), io.BytesIO())
    entry = next(p for p in model.metadata_props if p.key == fonnx.META_CONFIG)
    config = json.loads(entry.value)
    assert config.get("batch_first", False) is batch_first
    config["batch_first"] = not batch_first
    entry.value = json.dumps(config)
    first = "batch" if batch_first else "time"
    with pytest.raises(fonnx.UnsupportedOnnxError,
                       match=f"batch_first={not batch_first}, but the graph reads its input "
                             f"{first} first"):
        fonnx.load(model)
    # the caller's batch_first overrides the layout, the metadata's included
    assert fonnx.load(model, batch_first=batch_first).batch_first is batch_first


def test_proj_size_and_cell_lengths_are_refused():
    with pytest.raises(fonnx.UnsupportedOnnxError, match="proj_size=2.*no projection"):
        fonnx.export(fastrnn.LSTM(I, H, proj_size=2), io.BytesIO())
    with pytest.raises(fonnx.UnsupportedOnnxError, match="cell runs one step"):
        fonnx.export(fastrnn.GRUCell(I, H), io.BytesIO(), lengths=True)


def single_node_model(op, attrs=(), G=3, D=1, bias=True):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((D, G * H, I)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal((D, G * H, H)).astype(np.float32), "R")]
    if bias:
        inits.append(numpy_helper.from_array(np.zeros((D, 2 * G * H), np.float32), "B"))
    node = helper.make_node(op, ["X", "W", "R"] + (["B"] if bias else []), ["Y"], hidden_size=H,
                            **dict(attrs))
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_node_options_become_layer_options():
    assert fonnx.load(single_node_model("GRU", {"linear_before_reset": 1})).reset_after is True
    assert fonnx.load(single_node_model("GRU")).reset_after is False   # ONNX's default: 0
    assert fonnx.load(single_node_model("LSTM", {"input_forget": 1}, G=4)).input_forget is True
    assert fonnx.load(single_node_model("RNN", {"clip": 3.0}, G=1)).clip == 3.0
    # activations: alpha and beta read in order by the functions that take them
    lstm = fonnx.load(single_node_model("LSTM", {"activations": ["HardSigmoid", "Relu", "Affine"],
                                                 "activation_alpha": [0.25, 2.0],
                                                 "activation_beta": [0.5, -1.0]}, G=4))
    assert lstm.activations == (("hard_sigmoid", 0.25, 0.5), ("relu", 0.0, 0.0),
                                ("affine", 2.0, -1.0))
    assert fonnx.load(single_node_model("RNN", {"activations": ["Sigmoid"]}, G=1)).activations \
        == (("sigmoid", 0.0, 0.0),)
    rnn = fonnx.load(single_node_model("RNN", {"activations": ["Relu"]}, G=1))
    assert rnn.nonlinearity == "relu" and rnn.activations is None
    # omitted alpha: the ONNX operators' defaults where onnxruntime agrees
    gru = fonnx.load(single_node_model("GRU", {"activations": ["HardSigmoid", "LeakyRelu"]}))
    assert gru.activations == (("hard_sigmoid", 0.2, 0.5), ("leaky_relu", 0.01, 0.0))
    # names in another case, which onnxruntime runs for an LSTM or a GRU
    lower = fonnx.load(single_node_model("LSTM", {"activations": ["sigmoid", "tanh", "relu"]},
                                         G=4))
    assert lower.activations == (("sigmoid", 0.0, 0.0), ("tanh", 0.0, 0.0), ("relu", 0.0, 0.0))


def test_nodes_without_a_fastrnn_equivalent_are_refused():
    cases = [
        (single_node_model("RNN", {"clip": -1.0}, G=1), "clip=-1.0 is not a value ONNX defines"),
        (single_node_model("RNN", {"activations": ["Gelu"]}, G=1),
         r"activations\[0\]='Gelu' is not one of ONNX's Sigmoid, Tanh, Relu"),
        (single_node_model("RNN", {"activations": ["Affine"]}, G=1),
         "'Affine' has no value in activation_alpha: the ONNX standard then takes the Affine "
         "operator's default, onnxruntime 0"),
        (single_node_model("RNN", {"activations": ["Tanh"], "activation_alpha": [1.0]}, G=1),
         r"activation_alpha=\[1.0\] has 1 value\(s\) more than its activations \['Tanh'\] read"),
        (single_node_model("GRU", {"activations": ["Sigmoid", "Elu"], "activation_alpha": [-1.0]}),
         "'elu' needs alpha >= 0"),
        # a bidirectional node lists both directions' (onnxruntime refuses one list too)
        (single_node_model("RNN", {"activations": ["Relu"], "direction": "bidirectional"}, G=1,
                           D=2), "has 1 entries; a RNN with direction='bidirectional' takes 2"),
    ]
    for model, message in cases:
        with pytest.raises(fonnx.UnsupportedOnnxError, match=message):
            fonnx.load(model)
    computed = single_node_model("RNN", G=1)
    computed.graph.initializer.pop(1)  # R becomes a graph input, not a constant
    computed.graph.input.append(helper.make_tensor_value_info("R", TensorProto.FLOAT, None))
    with pytest.raises(fonnx.UnsupportedOnnxError, match="'R' is computed in the graph"):
        fonnx.load(computed)
    relu = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"])], "g",
                             [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2])],
                             [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2])])
    with pytest.raises(fonnx.UnsupportedOnnxError, match="no RNN, LSTM or GRU node"):
        fonnx.load(helper.make_model(relu))


def test_not_an_onnx_file(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"\xff\x00 definitely not protobuf \x13\x37" * 3)
    with pytest.raises(ValueError, match="not an ONNX model"):
        fonnx.load(tmp_path / "x.onnx")
    with pytest.raises(FileNotFoundError):
        fonnx.load(tmp_path / "missing.onnx")


def test_weights_in_external_data(tmp_path):
    """A model whose tensors live in an external file loads from its path, where onnx finds them."""
    layer = fastrnn.LSTM(I, H, num_layers=2, seed=6)
    model = fonnx.export(layer, io.BytesIO())
    onnx.save_model(model, tmp_path / "external.onnx", save_as_external_data=True,
                    all_tensors_to_one_file=True, location="external.data", size_threshold=0)
    assert (tmp_path / "external.data").exists()
    assert_same_weights(layer, fonnx.load(tmp_path / "external.onnx"))
    with open(tmp_path / "external.onnx", "rb") as f:
        assert_same_weights(layer, fonnx.load(f))
    buf = io.BytesIO((tmp_path / "external.onnx").read_bytes())
    with pytest.raises(fonnx.UnsupportedOnnxError, match="external files, which only a model "
                                                         "read from its path can find"):
        fonnx.load(buf)
    (tmp_path / "external.data").unlink()
    with pytest.raises(fonnx.UnsupportedOnnxError, match="external data of its tensors cannot "
                                                         "be read"):
        fonnx.load(tmp_path / "external.onnx")


# -- the ONNX project's own test cases of its recurrent operators --------------------------------
def _onnx_node_cases():
    """The RNN, LSTM and GRU node test cases shipped in the onnx package (its backend tests)."""
    import contextlib
    from onnx.backend.test.case import node as node_cases
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")     # other operators' cases divide by zero on purpose
        cases = node_cases.collect_testcases(None)
    return {c.name: c for c in cases
            if c.model.graph.node and c.model.graph.node[0].op_type in ("RNN", "LSTM", "GRU")}


ONNX_NODE_CASES = _onnx_node_cases()
#: cases of options fastrnn does not have yet, each with what it lacks (strict: a pass fails)
def test_the_onnx_package_ships_18_recurrent_node_cases():
    assert len(ONNX_NODE_CASES) == 18, sorted(ONNX_NODE_CASES)


@pytest.mark.parametrize("name", sorted(ONNX_NODE_CASES))
def test_onnx_node_cases_load_and_run(name):
    """Each case's weights (graph inputs there) folded into initializers, the model read by
    fastrnn.onnx.load and run on the case's X (and initial states): its expected outputs."""
    case = ONNX_NODE_CASES[name]
    graph = case.model.graph
    (inputs, expected), = case.data_sets[:1]
    feeds = dict(zip([i.name for i in graph.input], inputs))
    weights = {k: v for k, v in feeds.items() if k in ("W", "R", "B", "P")}
    model = helper.make_model(helper.make_graph(
        list(graph.node), graph.name,
        [i for i in graph.input if i.name not in weights], list(graph.output),
        [numpy_helper.from_array(v, k) for k, v in weights.items()]),
        opset_imports=case.model.opset_import)
    layer = fonnx.load(model)
    node = graph.node[0]
    layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
    D = layer.num_directions
    hx = tuple(feeds[k] for k in ("initial_h", "initial_c") if k in feeds) or None
    out, hy = layer(feeds["X"], hx if hx is None or len(hx) > 1 else hx[0])
    hy = hy if isinstance(hy, tuple) else (hy,)
    T_, B_ = (out.shape[1], out.shape[0]) if layout else out.shape[:2]
    Y = out.reshape(out.shape[:2] + (D, -1))
    got = {"Y": Y.transpose(0, 1, 2, 3) if layout else Y.transpose(0, 2, 1, 3),
           "Y_h": hy[0].transpose(1, 0, 2) if layout else hy[0]}
    if len(hy) > 1:
        got["Y_c"] = hy[1].transpose(1, 0, 2) if layout else hy[1]
    names = [o for o in node.output]
    for out_name, want in zip([o.name for o in graph.output], expected):
        slot = names.index(out_name)
        key = ("Y", "Y_h", "Y_c")[slot]
        np.testing.assert_allclose(got[key], want, rtol=1e-5, atol=1e-6, err_msg=f"{name}: {key}")
