"""fastrnn.onnx.load on corrupt files: each loads exactly as written or raises the documented error.

The corpus is made here from real exported models: byte flips, truncations,
and targeted edits (empty weight inputs, tensor data types, attribute
values, node domains, metadata).  A file that is not ONNX raises ValueError
("not an ONNX model", naming the source); one that is ONNX but malformed or
outside what fastrnn reads raises UnsupportedOnnxError naming what is wrong.
A file that loads must give the model it describes: the weights its
recurrent nodes read, the configuration its metadata states.
"""

import json
import os
import re

import numpy as np
import pytest

from helpers import required

if required("FASTRNN_REQUIRE_INTEROP"):
    import onnx  # CI installs it: a missing library is a failure there, not a skip
else:
    onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install onnx); set "
                               "FASTRNN_REQUIRE_INTEROP=1 to make this a failure")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import fastrnn  # noqa: E402
import fastrnn.onnx as fonnx  # noqa: E402

I, H = 3, 5
RECURRENT = ("RNN", "LSTM", "GRU")
#: gate order of each operator in ONNX and in fastrnn (PyTorch), from the two specifications
GATES = {"RNN": ("h", "h"), "LSTM": ("iofg", "ifgo"), "GRU": ("zrn", "rzn")}
#: the exported models the corpus is made from: name -> (layer, export options)
MODELS = {
    "lstm": (lambda: fastrnn.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=True,
                                  seed=1), {}),
    "gru": (lambda: fastrnn.GRU(I, H, seed=2), {"initial_state": True, "lengths": True}),
    "rnn": (lambda: fastrnn.RNN(I, H, nonlinearity="relu", bias=False, seed=3), {}),
    "lstm_cell": (lambda: fastrnn.LSTMCell(I, H, seed=4), {}),
    "gru_layout": (lambda: fastrnn.GRU(I, H, num_layers=2, batch_first=True, dropout=0.25,
                                       dtype=np.float64, seed=5),
                   {"initial_state": True, "use_layout_attribute": True}),
}
FLIPS_PER_MODEL = 30  # 150 files: 20 flips in each model's structure, 10 in its weight bytes


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> (layer, serialized model) for every entry of :data:`MODELS`."""
    out, folder = {}, tmp_path_factory.mktemp("exported")
    for name, (make, options) in MODELS.items():
        layer = make()
        fonnx.export(layer, folder / f"{name}.onnx", **options)
        out[name] = layer, (folder / f"{name}.onnx").read_bytes()
    return out


def kind_of(layer):
    return next(k for k in RECURRENT if type(layer).__name__.startswith(k))


def as_written(model, layer):
    """The state_dict a model describes: what its recurrent nodes read, in fastrnn's gate order.

    Independent of fastrnn.onnx: the initializers each node names, split into
    gate blocks and restacked by the gate orders of the two specifications;
    a node without B has zero biases (ONNX's default) when another has B.
    """
    kind, cell = kind_of(layer), "Cell" in type(layer).__name__
    tensors = {t.name: t for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type in RECURRENT]
    biased = any(len(n.input) > 3 and n.input[3] for n in nodes)
    src, dst = GATES[kind]

    def restack(array):
        blocks = dict(zip(src, np.split(array, len(src))))
        return np.concatenate([blocks[g] for g in dst])

    state = {}
    for l, node in enumerate(nodes):
        W, R = (numpy_helper.to_array(tensors[node.input[k]]) for k in (1, 2))
        B = (numpy_helper.to_array(tensors[node.input[3]])
             if len(node.input) > 3 and node.input[3] else None)
        if B is None and biased:
            B = np.zeros((W.shape[0], 2 * W.shape[1]), W.dtype)
        for d in range(W.shape[0]):
            sfx = "" if cell else f"_l{l}" + ("_reverse" if d else "")
            state["weight_ih" + sfx], state["weight_hh" + sfx] = restack(W[d]), restack(R[d])
            if B is not None:
                gh = W.shape[1]
                state["bias_ih" + sfx] = restack(B[d, :gh])
                state["bias_hh" + sfx] = restack(B[d, gh:])
    return state


def same_state(a, b):
    return a.keys() == b.keys() and all(a[n].dtype == b[n].dtype and a[n].shape == b[n].shape
                                        and a[n].tobytes() == b[n].tobytes() for n in a)


def metadata_config(model):
    return json.loads({p.key: p.value for p in model.metadata_props}[fonnx.META_CONFIG])


def top_level_ends(data):
    """Offsets where each top-level field of a serialized ModelProto ends."""
    def varint(pos):
        value = shift = 0
        while True:
            byte = data[pos]
            value, shift, pos = value | (byte & 0x7F) << shift, shift + 7, pos + 1
            if byte < 0x80:
                return value, pos

    pos, ends = 0, []
    while pos < len(data):
        tag, pos = varint(pos)
        assert tag & 7 in (0, 2), f"wire type {tag & 7} at offset {pos}"
        size, pos = varint(pos)
        pos += size if tag & 7 == 2 else 0
        ends.append(pos)
    return ends


def payload_spans(data, model):
    """(start, end) of the raw bytes of each weight initializer in the serialized model."""
    spans = []
    for t in model.graph.initializer:
        if len(t.raw_data) >= 16:
            start = data.find(t.raw_data)
            assert start >= 0 and data.find(t.raw_data, start + 1) < 0, t.name
            spans.append((start, start + len(t.raw_data)))
    return spans


def load_outcome(path):
    """``("loaded", obj)``, ``("not onnx", message)`` or ``("unsupported", message)``.

    Any other exception, or a ValueError that is neither the not-an-ONNX
    error nor UnsupportedOnnxError, propagates.
    """
    try:
        return "loaded", fonnx.load(path, backend="numpy")
    except fonnx.UnsupportedOnnxError as exc:
        assert str(path) in str(exc), f"the message does not name the source: {exc}"
        return "unsupported", str(exc)
    except ValueError as exc:
        if type(exc) is not ValueError or "not an ONNX model" not in str(exc):
            raise
        assert str(path) in str(exc), f"the message does not name the source: {exc}"
        return "not onnx", str(exc)


def test_the_intact_files_load_exactly(exported, tmp_path):
    for name, (layer, data) in exported.items():
        (tmp_path / "m.onnx").write_bytes(data)
        loaded = fonnx.load(tmp_path / "m.onnx", backend="numpy")
        assert type(loaded) is type(layer) and loaded.get_config() == layer.get_config(), name
        assert same_state(loaded.state_dict(), layer.state_dict()), name
        assert same_state(as_written(onnx.load_from_string(data), layer), layer.state_dict())


def test_byte_flips_load_as_written_or_raise(exported, tmp_path):
    """150 files with one byte changed: a documented error, or exactly the model the file describes.

    A flip inside a weight's bytes gives a valid file with another weight, and
    it loads as written; a flip elsewhere gives an error or a file that still
    describes the original (a changed node name, doc string, ...).
    """
    outcomes, failures = {}, []
    for m, (name, (layer, data)) in enumerate(exported.items()):
        rng = np.random.default_rng(100 + m)
        original = onnx.load_from_string(data)
        payload = np.zeros(len(data), bool)
        for start, end in payload_spans(data, original):
            payload[start:end] = True
        where = [np.flatnonzero(~payload)] * 20 + [np.flatnonzero(payload)] * 10
        assert len(where) == FLIPS_PER_MODEL
        for k, candidates in enumerate(where):
            offset = int(rng.choice(candidates))
            flipped = bytearray(data)
            flipped[offset] ^= int(rng.integers(1, 256))
            path = tmp_path / f"{name}_{k}_at_{offset}.onnx"
            path.write_bytes(bytes(flipped))
            try:
                outcome, result = load_outcome(path)
            except Exception as exc:  # noqa: BLE001 - every other error is a failure to report
                failures.append(f"{path.name}: {type(exc).__name__}: {exc}")
                continue
            if outcome == "loaded":
                model = onnx.load_from_string(bytes(flipped))
                config, written = result.get_config(), metadata_config(model)
                changed = {key for key in config if config[key] != layer.get_config()[key]}
                if not (type(result) is type(layer) and config == written
                        and changed <= {"seed", "dropout"}
                        and same_state(result.state_dict(), as_written(model, layer))):
                    failures.append(f"{path.name}: loaded {result!r} with config {config}, which "
                                    f"is not the model the file describes")
                    continue
                same = same_state(result.state_dict(), layer.state_dict()) and not changed
                outcome = "loaded, identical" if same else "loaded, as written"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert not failures, "\n".join(failures)
    assert sum(outcomes.values()) == FLIPS_PER_MODEL * len(MODELS)
    # the corpus exercises every outcome
    assert set(outcomes) == {"not onnx", "unsupported", "loaded, identical",
                             "loaded, as written"}, outcomes


def test_truncated_files_raise(exported, tmp_path):
    """Cut at every top-level field boundary (where protobuf still decodes) and at random places."""
    rng = np.random.default_rng(7)
    count = 0
    for name, (layer, data) in exported.items():
        ends = top_level_ends(data)
        assert ends[-1] == len(data) and len(ends) >= 8
        cuts = sorted(set([0, 1, len(data) - 1] + ends[:-1]
                          + [int(c) for c in rng.integers(1, len(data), 10)]))
        for cut in cuts:
            path = tmp_path / f"{name}_cut_{cut}.onnx"
            path.write_bytes(data[:cut])
            outcome, message = load_outcome(path)
            assert outcome != "loaded", f"{path.name} loaded as {message!r}"
            if cut in ends:  # decodes: what is missing is named
                assert re.search("not an ONNX model|imports no opset|metadata", message), message
            count += 1
    assert count >= 60


# -- targeted corruptions ----------------------------------------------------------------------
NO_ONNX_DOMAIN = "no ONNX domain"


def recurrent(model, k=0):
    return [n for n in model.graph.node if n.op_type in RECURRENT][k]


def set_attribute(node, name, value):
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(kept + [helper.make_attribute(name, value)])


def initializer(model, name):
    return next(t for t in model.graph.initializer if t.name == name)


def set_config(**changes):
    def edit(model):
        prop = next(p for p in model.metadata_props if p.key == fonnx.META_CONFIG)
        prop.value = json.dumps(dict(json.loads(prop.value), **changes))
    return edit


def set_metadata(key, value):
    def edit(model):
        props = {p.key: p.value for p in model.metadata_props}
        if value is None:
            props.pop(key)
        else:
            props[key] = value
        del model.metadata_props[:]
        helper.set_model_props(model, props)
    return edit


def not_utf8(setter):
    """The edit ``setter``, its text marker '\u00a7' turned into the bytes 0xff 0xfe (not UTF-8)."""
    def edit(model):
        setter(model)
        data = model.SerializeToString()
        assert data.count("\u00a7".encode()) == 1
        return data.replace("\u00a7".encode(), b"\xff\xfe")
    return edit


def with_constant(label, position, value):
    """The GRU's node given a stored constant as input ``position`` (initial_h, sequence_lens)."""
    def edit(model):
        node = recurrent(model)
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), label))
        while len(node.input) <= position:
            node.input.append("")
        node.input[position] = label
    return edit


def empty_input(position):
    def edit(model):
        recurrent(model).input[position] = ""
    return edit


def retype(name, data_type):
    def edit(model):
        initializer(model, name).data_type = data_type
    return edit


def as_float64(name):
    def edit(model):
        t = initializer(model, name)
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), name))
    return edit


def attribute_edit(name, value, k=0):
    def edit(model):
        set_attribute(recurrent(model, k), name, value)
    return edit


def raw_attribute(name, field, value, k=0):
    """Attribute ``name`` of recurrent node ``k`` with ``field`` (s, strings) set to raw bytes."""
    def edit(model):
        a = next(a for a in recurrent(model, k).attribute if a.name == name)
        if field == "strings":
            del a.strings[:]
            a.strings.extend(value)
        else:
            setattr(a, field, value)
    return edit


def duplicate_attribute(name):
    def edit(model):
        node = recurrent(model)
        node.attribute.append(next(a for a in node.attribute if a.name == name))
    return edit


def domain(value, op=None):
    def edit(model):
        node = (recurrent(model, 1) if op is None
                else next(n for n in model.graph.node if n.op_type == op))
        node.domain = value
        model.opset_import.append(helper.make_opsetid(value, 1))
    return edit


def append_head(model):
    """A MatMul on the output, as a model with a linear head has."""
    out = model.graph.output[0]
    weight = numpy_helper.from_array(np.ones((2 * H, 2), np.float32), "head_weight")
    model.graph.initializer.append(weight)
    model.graph.node.append(helper.make_node("MatMul", [out.name, "head_weight"], ["logits"],
                                             name="head"))
    model.graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, None))


def rename_op(model):
    recurrent(model, 1).op_type = "LSTN"


def dangling_input(model):
    recurrent(model, 1).input[0] = "nowhere"


def duplicate_name(model):
    initializer(model, "R_l1").name = "R_l0"


def dangling_output(model):
    model.graph.output[1].name = "h_n_lost"


def opset(domain_name, *versions):
    def edit(model):
        del model.opset_import[:]
        model.opset_import.extend(helper.make_opsetid(domain_name, v) for v in versions)
    return edit


def peephole(values):
    def edit(model):
        node = recurrent(model)
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(values, np.float32), "P"))
        while len(node.input) < 8:
            node.input.append("")
        node.input[7] = "P"
    return edit


def unknown_field(model):
    """A field NodeProto does not have (number 127), as a corrupt tag or a newer ONNX leaves."""
    recurrent(model).MergeFromString(b"\xf8\x07\x01")


def raw_config(text):
    def edit(model):
        next(p for p in model.metadata_props if p.key == fonnx.META_CONFIG).value = text
    return edit


def drop_metadata(model):
    del model.metadata_props[:]


def renamed_node(model):
    recurrent(model).name = "GRU\u00a7"


def config_marker(model):
    prop = next(p for p in model.metadata_props if p.key == fonnx.META_CONFIG)
    prop.value = prop.value.replace('"float32"', '"float\u00a7"')


U = fonnx.UnsupportedOnnxError
NODE = r"node \d+ \({op} '{op}_\d+'\)"
CASES = {
    # a required weight input left empty
    **{f"empty_{label}_{name}": (name, empty_input(position), U,
                                 NODE.format(op=op) + f": its required input {label} \\(input "
                                 f"{position}\\) is missing or empty")
       for name, op in (("lstm", "LSTM"), ("gru", "GRU"), ("rnn", "RNN"))
       for label, position in (("W", 1), ("R", 2))},
    # tensor data types
    "data_type_68": ("lstm", retype("W_l0", 68), U,
                     r"its W tensor 'W_l0' has data type 68, which is no ONNX tensor data type"),
    "data_type_int32": ("gru", retype("R_l0", TensorProto.INT32), U,
                        r"its R tensor 'R_l0' has data type INT32 \(6\); fastrnn reads weights "
                        r"of type FLOAT, DOUBLE or FLOAT16"),
    "data_type_undefined": ("rnn", retype("W_l0", 0), U, r"'W_l0' has data type UNDEFINED \(0\)"),
    "data_type_double_of_float_bytes": ("gru", retype("B_l0", TensorProto.DOUBLE), U,
                                        r"its B tensor 'B_l0' \(DOUBLE \(11\), dims \[1, 30\]\) "
                                        r"cannot be decoded"),
    "dims_beyond_the_data": ("rnn", lambda m: initializer(m, "W_l0").dims.__setitem__(2, 4), U,
                             r"'W_l0' \(FLOAT \(1\), dims \[1, 5, 4\]\) cannot be decoded"),
    "mixed_dtypes": ("gru", as_float64("R_l0"), U, r"W is float32 but R is float64"),
    # attributes
    "direction_not_utf8": ("gru", raw_attribute("direction", "s", b"forw\xffard"), U,
                           NODE.format(op="GRU") + r": attribute 'direction' is not UTF-8 text"),
    "activations_not_utf8": ("rnn", raw_attribute("activations", "strings", [b"Re\xfflu"]), U,
                             r"attribute 'activations' is not UTF-8 text: b'Re\\xfflu'"),
    "layout_7": ("lstm", attribute_edit("layout", 7), U,
                 r"layout=7 is not a value ONNX defines for LSTM; expected 0 \(time-major X\) "
                 r"or 1 \(batch-major X\)"),
    "layout_float": ("lstm", attribute_edit("layout", 1.0), U,
                     r"attribute 'layout' has type FLOAT \(1\), but LSTM defines it as INT"),
    "layout_at_opset_13": ("gru_layout", opset("", 13), U,
                           r"'layout' is not an attribute of GRU at opset 13"),
    "direction_sideways": ("gru", attribute_edit("direction", "sideways"), U,
                           r"direction='sideways' is not a value ONNX defines for GRU; expected "
                           r"'forward', 'reverse' or 'bidirectional'"),
    "direction_reverse": ("rnn", attribute_edit("direction", "reverse"), U,
                          r"describes a layer that runs forwards, but the graph's nodes have "
                          r"direction='reverse'"),
    "gru_linear_before_reset_0": ("gru", attribute_edit("linear_before_reset", 0), U,
                                  r"metadata 'fastrnn.config' describes a GRU that resets after "
                                  r"the recurrent product, but the graph's nodes have "
                                  r"linear_before_reset=0"),
    "gru_linear_before_reset_2": ("gru_layout", attribute_edit("linear_before_reset", 2), U,
                                  r"linear_before_reset=2 is not a value ONNX defines for GRU"),
    "lstm_input_forget_1": ("lstm", attribute_edit("input_forget", 1), U,   # one node of two
                            r"has input_forget=False but node \d+ \(LSTM 'LSTM_\d+'\) has True; "
                            r"fastrnn reads a stack of equal recurrent nodes"),
    "lstm_cell_input_forget_1": ("lstm_cell", attribute_edit("input_forget", 1), U,
                                 r"metadata 'fastrnn.config' describes an LSTM with separate "
                                 r"input and forget gates, but the graph's nodes have "
                                 r"input_forget=1"),
    "lstm_input_forget_3": ("lstm_cell", attribute_edit("input_forget", 3), U,
                            r"input_forget=3 is not a value ONNX defines for LSTM"),
    "hidden_size_0": ("rnn", attribute_edit("hidden_size", 0), U,
                      r"hidden_size=0 is not a value ONNX defines for RNN; expected a positive"),
    "hidden_size_not_R": ("gru", attribute_edit("hidden_size", H + 1), U,
                          r"R \(1, 15, 5\) and hidden_size=6 do not fit a GRU with 3 gates"),
    "clip": ("lstm", attribute_edit("clip", 3.0), U,   # one node of the stack
             r"has clip=None but node \d+ \(LSTM 'LSTM_\d+'\) has 3.0; fastrnn reads a stack"),
    "clip_cell": ("lstm_cell", attribute_edit("clip", 3.0), U,
                  r"metadata 'fastrnn.config' describes a layer without a cell clip, but the "
                  r"graph's nodes have clip=3.0"),
    "peepholes_meta_on_a_gru": ("gru", set_config(peepholes=True), U,
                                r"has peepholes=True, but a GRU has no peepholes"),
    "peepholes_meta_without_p": ("lstm", set_config(peepholes=True), U,
                                 r"describes an LSTM with peepholes, but node \d+ \(LSTM "
                                 r"'LSTM_\d+'\)(, node \d+ \(LSTM 'LSTM_\d+'\))* has no P input"),
    "clip_meta_without_nodes": ("gru", set_config(clip=0.5), U,
                                r"has clip=0.5, but the graph's nodes make clip=None"),
    "clip_meta_beyond_a_float": ("gru", set_config(clip=10 ** 400), U,
                                 r"has clip=1000\d+; expected a positive JSON number"),
    "clip_negative": ("lstm_cell", attribute_edit("clip", -3.0), U,
                      r"clip=-3.0 is not a value ONNX defines for LSTM; expected a positive number"),
    "activation_alpha": ("rnn", attribute_edit("activation_alpha", [0.5]), U,
                         r"activation_alpha=\[0.5\] has 1 value\(s\) more than its "
                         r"activations \['Relu'\] read"),
    "activations_count": ("lstm", attribute_edit("activations", ["Sigmoid", "Tanh"]), U,
                          r"activations \['Sigmoid', 'Tanh'\] has 2 entries; a LSTM with "
                          r"direction='bidirectional' takes 6"),
    "unknown_attribute": ("lstm", attribute_edit("layuot", 1), U,
                          r"'layuot' is not an attribute of LSTM at opset 17 \(LSTM-14"),
    "attribute_twice": ("gru", duplicate_attribute("hidden_size"), U,
                        r"attribute 'hidden_size' is given twice"),
    # nodes and names
    "lstm_in_custom_domain": ("lstm", domain("com.example"), U,
                              r"node \d+ \(LSTM 'LSTM_\d+'\) is in domain "
                              r"'com.example', not the default ONNX domain"),
    "layout_op_in_custom_domain": ("lstm", domain("com.example", op="Transpose"), U,
                                   r"\(Transpose 'Transpose_\d+', domain 'com.example'\) is "
                                   r"neither a recurrent node nor one of the data-movement ops"),
    "unknown_op": ("lstm", rename_op, U, r"\(LSTN 'LSTM_\d+'\) is neither a recurrent node"),
    "linear_head": ("lstm", append_head, U,
                    r"\(MatMul 'head'\) is neither a recurrent node.*would drop what it computes"),
    "dangling_input": ("lstm", dangling_input, U,
                       r"input 0 of node \d+ \(LSTM 'LSTM_\d+'\), 'nowhere', is defined by no "
                       r"initializer, graph input or node"),
    "name_defined_twice": ("lstm", duplicate_name, U,
                           r"an initializer defines 'R_l0', which an initializer already defines"),
    "graph_output_defined_nowhere": ("lstm", dangling_output, U,
                                     r"the graph output 'h_n_lost' is computed by no node"),
    "unknown_field": ("gru", unknown_field, U,
                      r"node \d+ \(GRU 'GRU_\d+'\) has fields the installed onnx \S+ does not "
                      r"know \(numbers \[127\]\): the file is corrupt, or written for a newer"),
    "no_default_opset": ("gru", opset("com.example", 17), U,
                         r"imports no opset of the default ONNX domain"),
    "two_default_opsets": ("gru", opset("", 16, 17), U,
                           r"imports the default ONNX domain at opsets \[16, 17\]; expected one"),
    "node_name_not_utf8": ("gru", not_utf8(renamed_node), U,
                           r"the name of node \d+ is not UTF-8 text: b'GRU\\xff\\xfe'"),
    "nonzero_initial_h": ("gru", with_constant("h_const", 5, np.ones((1, 1, H), np.float32)), U,
                          r"its initial_h input 'h_const' is a stored nonzero constant"),
    "constant_sequence_lens": ("gru", with_constant("lens", 4, np.ones(2, np.int32)), U,
                               r"its sequence_lens input 'lens' is a stored constant"),
    "peepholes": ("lstm_cell", peephole(np.ones((1, 3 * H))), U,
                  r"metadata 'fastrnn.config' describes an LSTM without peepholes, but the "
                  r"graph's nodes have nonzero P"),
    "peephole_shape": ("lstm_cell", peephole(np.zeros((1, 2 * H))), U,
                       r"P must have shape \(1, 15\), but has \(1, 10\)"),
    # metadata
    "batch_first_yes": ("lstm", set_config(batch_first="yes"), U,
                        r"metadata 'fastrnn.config' has batch_first='yes'; expected a JSON "
                        r"boolean \(true or false\)"),
    "batch_first_string_true": ("lstm", set_config(batch_first="true"), U,
                                r"has batch_first='true'; expected a JSON boolean"),
    "bidirectional_1": ("lstm", set_config(bidirectional=1), U,
                        r"has bidirectional=1; expected a JSON boolean"),
    "bias_string": ("rnn", set_config(bias="false"), U,
                    r"has bias='false'; expected a JSON boolean"),
    "config_not_json": ("gru", raw_config('{"input_size": 3,'), U,
                        r"metadata 'fastrnn.config' is not valid JSON"),
    "config_not_object": ("gru", raw_config("[3, 5]"), U,
                          r"metadata 'fastrnn.config' must be a JSON object, but is '\[3, 5\]'"),
    "config_key_twice": ("gru", raw_config('{"seed": 2, "seed": 3}'), U,
                         r"is not valid JSON \(key 'seed' given twice\)"),
    "config_unknown_key": ("gru", set_config(hiden_size=5), U,
                           r"has the unknown key 'hiden_size'"),
    "config_disagrees": ("gru", set_config(hidden_size=H + 1), U,
                         r"has hidden_size=6, but the graph's nodes make hidden_size=5"),
    "config_num_layers": ("lstm", set_config(num_layers=1), U,
                          r"has num_layers=1, but the graph's nodes make num_layers=2"),
    "config_dtype": ("gru", set_config(dtype="float64"), U,
                     r"has dtype='float64', but the graph's nodes make dtype='float32'"),
    "config_key_of_a_layer_in_a_cell": ("lstm_cell", set_config(num_layers=1), U,
                                        r"has num_layers=1, but a LSTMCell has no num_layers"),
    "dropout_2": ("gru_layout", set_config(dropout=2.0), U,
                  r"has dropout=2.0; expected a JSON number in \[0, 1\]"),
    "seed_negative": ("gru", set_config(seed=-1), U,
                      r"has seed=-1; expected a JSON integer >= 0 or null"),
    "seed_string": ("gru", set_config(seed="2"), U, r"has seed='2'; expected a JSON integer"),
    "config_not_utf8": ("gru", not_utf8(config_marker), U,
                        r"metadata 'fastrnn.config' is not UTF-8 text"),
    "class_of_another_kind": ("lstm", set_metadata(fonnx.META_CLASS, "GRU"), U,
                              r"metadata 'fastrnn.class' is 'GRU', but the graph's recurrent "
                              r"nodes are LSTM; expected 'LSTM' or 'LSTMCell'"),
    "cell_class_for_a_stack": ("lstm", set_metadata(fonnx.META_CLASS, "LSTMCell"), U,
                               r"is 'LSTMCell', but the graph has 2 recurrent node\(s\) with 2 "
                               r"direction\(s\); a cell is one forward node"),
    "format_version_2": ("gru", set_metadata(fonnx.META_VERSION, "2"), U,
                         r"metadata 'fastrnn.onnx_version' is '2'; this fastrnn reads format '1'"),
    "config_missing": ("lstm_cell", set_metadata(fonnx.META_CONFIG, None), U,
                       r"has the metadata \['fastrnn.class', 'fastrnn.onnx_version'\] but not "
                       r"\['fastrnn.config'\]"),
    "metadata_missing": ("lstm_cell", drop_metadata, U,
                         r"written by fastrnn.onnx.export \(producer_name 'fastrnn'\) but lacks "
                         r"the metadata"),
    # not ONNX at all
    "empty_file": ("gru", lambda m: b"", ValueError, r"not an ONNX model \(it holds no graph\)"),
    "garbage": ("gru", lambda m: b"\xff\x00 definitely not protobuf \x13\x37" * 3, ValueError,
                r"not an ONNX model \(DecodeError"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_targeted_corruption_raises_the_documented_error(case, exported, tmp_path):
    name, edit, error, pattern = CASES[case]
    layer, data = exported[name]
    model = onnx.load_from_string(data)
    edited = edit(model)
    path = tmp_path / f"{case}.onnx"
    path.write_bytes(model.SerializeToString() if edited is None else edited)
    with pytest.raises(error, match=pattern) as info:
        fonnx.load(path, backend="numpy")
    assert type(info.value) is error
    assert str(info.value).startswith(f"{path}: "), str(info.value)


def test_the_controls_of_the_edits_load(exported, tmp_path):
    """Edits that keep the model what it was load, so the refusals above are the edits' doing."""
    controls = {
        "gru": [set_config(reset_after=True, reverse=False),   # defaults written out
                with_constant("h_const", 5, np.zeros((1, 1, H), np.float32)),
                attribute_edit("linear_before_reset", 1), attribute_edit("direction", "forward"),
                set_config(batch_first=False), lambda m: setattr(recurrent(m), "name", "renamed")],
        "lstm": [attribute_edit("layout", 0), attribute_edit("hidden_size", H),
                 attribute_edit("activations", ["Sigmoid", "Tanh", "Tanh"] * 2),
                 set_config(batch_first=True)],
        "lstm_cell": [peephole(np.zeros((1, 3 * H))), attribute_edit("input_forget", 0)],
        "rnn": [opset("", 14), attribute_edit("activations", ["Relu"])],
        "gru_layout": [opset("ai.onnx", 21), set_config(dropout=0.25)],
    }
    for name, edits in controls.items():
        layer, data = exported[name]
        for k, edit in enumerate(edits):
            model = onnx.load_from_string(data)
            edit(model)
            path = tmp_path / f"{name}_{k}.onnx"
            path.write_bytes(model.SerializeToString())
            loaded = fonnx.load(path, backend="numpy")
            assert type(loaded) is type(layer) and loaded.get_config() == layer.get_config()
            assert same_state(loaded.state_dict(), layer.state_dict()), (name, k)


def test_metadata_written_by_another_exporter_is_not_required(exported):
    """A model without fastrnn metadata and from another producer loads by its nodes alone."""
    layer, data = exported["lstm"]
    model = onnx.load_from_string(data)
    del model.metadata_props[:]
    model.producer_name = "pytorch"
    loaded = fonnx.load(model, backend="numpy")
    assert same_state(loaded.state_dict(), layer.state_dict())
    # without metadata the graph says how it reads its input: here, batch first through the
    # transposes around time-major nodes (the layout attribute alone said time-major)
    assert layer.batch_first and loaded.batch_first
