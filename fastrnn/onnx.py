"""ONNX export and import with the standard ``RNN``, ``LSTM`` and ``GRU`` operators.

:func:`export` writes a fastrnn layer or cell as an ONNX model that any ONNX
runtime can run; :func:`load` reads the recurrent nodes of an ONNX model
(written by :func:`export` or by another exporter, e.g. ``torch.onnx.export``)
back into a fastrnn object.  onnx is imported inside the functions only
(``pip install onnx``, and ``onnxruntime`` to run the models).

The conversion of the weights, per layer and direction:

==========  =======================  ==========================================
ONNX        shape                    fastrnn (PyTorch)
==========  =======================  ==========================================
``W``       (D, G*H, I)              ``weight_ih_l{k}[_reverse]``
``R``       (D, G*H, H)              ``weight_hh_l{k}[_reverse]``
``B``       (D, 2*G*H)               ``[bias_ih; bias_hh]``
==========  =======================  ==========================================

with the gates restacked: LSTM i, o, f, c in ONNX for i, f, g, o; GRU
z, r, h in ONNX for r, z, n, always with ``linear_before_reset=1`` (the
GRU of PyTorch and fastrnn; ``linear_before_reset=0`` is a different
function and is refused).  A stack of ``num_layers`` is a chain of nodes:
each node's ``Y`` (T, D, B, H) is reshaped to (T, B, D*H) for the next.
``lengths`` become the ``sequence_lens`` input.  An LSTM with
``proj_size > 0`` has no ONNX equivalent and is refused.

Inputs and outputs of an exported layer (names fixed): ``input`` (T, B, I)
or (B, T, I) with ``batch_first``; optional ``h0`` (and ``c0``), (L*D, B,
H); optional ``lengths`` (B,) int32; outputs ``output`` (T, B, D*H) (or
batch-first), ``h_n`` (and ``c_n``) as fastrnn returns them.  An exported
cell takes ``input`` (B, I), ``h`` (and ``c``) (B, H), and returns ``h_1``
(and ``c_1``).
"""

import json
import numbers

import numpy as np

from .celltypes import by_kind
from .interop import _common

#: opset of the exported models (RNN/LSTM/GRU-14 with ``layout``, Squeeze/Unsqueeze-13)
OPSET = 17
#: IR version of the exported models (opset 17's, read by every current runtime)
IR_VERSION = 8
#: metadata keys that let :func:`load` rebuild exactly the exported class and options
META_CLASS, META_CONFIG, META_VERSION = "fastrnn.class", "fastrnn.config", "fastrnn.onnx_version"
_META_FORMAT = 1
_RNN_OPS = ("RNN", "LSTM", "GRU")
_DEFAULT_ACTIVATIONS = {"LSTM": ["sigmoid", "tanh", "tanh"], "GRU": ["sigmoid", "tanh"]}
_NO_GRU_LBR0 = (
    "GRU with linear_before_reset=0 cannot be loaded: it computes "
    "tanh(W_h x + R_h (r * h) + b), resetting the state before the recurrent matrix product, "
    "while fastrnn's GRU (like torch.nn.GRU) computes tanh(W_n x + b_in + r * (R_n h + b_hn)), "
    "which is linear_before_reset=1; no choice of weights makes them agree")


class UnsupportedOnnxError(ValueError):
    """An ONNX model, node or attribute with no fastrnn equivalent, or a layer ONNX cannot express."""


def _import_onnx():
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(f"ONNX export/import needs the onnx package ({exc}); install it with "
                          f"pip install onnx (and onnxruntime to run the models)") from None
    return onnx


# -- export -----------------------------------------------------------------------------------
class _Graph:
    """Nodes and initializers of the graph being written, with unique names."""

    def __init__(self, onnx):
        self.onnx, self.nodes, self.initializers = onnx, [], []

    def const(self, name, array):
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(self, op, inputs, outputs, **attrs):
        while inputs and inputs[-1] == "":
            inputs = inputs[:-1]
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), list(outputs),
                                                     name=f"{op}_{len(self.nodes)}", **attrs))
        return outputs[0] if len(outputs) == 1 else outputs


def _onnx_weights(obj, names, kind, dtype):
    """W, R and B (or None) of one node from the fastrnn parameters of its directions."""
    p = obj.parameters()
    src, dst = _common.GATE_ORDERS["fastrnn"][kind], _common.GATE_ORDERS["onnx"][kind]
    W = np.stack([_common.reorder_gates(p[n["w_ih"]], src, dst) for n in names]).astype(dtype)
    R = np.stack([_common.reorder_gates(p[n["w_hh"]], src, dst) for n in names]).astype(dtype)
    B = None
    if obj.bias:
        B = np.stack([np.concatenate([_common.reorder_gates(p[n["b_ih"]], src, dst),
                                      _common.reorder_gates(p[n["b_hh"]], src, dst)])
                      for n in names]).astype(dtype)
    return W, R, B


def export(obj, path, *, initial_state=None, lengths=False, dtype=None,
           use_layout_attribute=False, opset=OPSET):
    """Write a fastrnn layer or cell as an ONNX model.

    Parameters
    ----------
    obj : fastrnn.RNN, LSTM, GRU, RNNCell, LSTMCell or GRUCell
        Any configuration except an LSTM with ``proj_size > 0``.  Dropout is
        not exported (the model is for inference).
    path : str, os.PathLike or writable binary file object
    initial_state : bool, optional
        Give the model the inputs ``h0`` (and ``c0``) for a layer, ``h``
        (and ``c``) for a cell.  Default: False for a layer (zeros), True for
        a cell.
    lengths : bool
        Give a layer the input ``lengths`` ((B,) int32, the ``sequence_lens``
        of every node): steps past a sequence's length give zeros and the
        final states are taken at each sequence's last valid step.
    dtype : float32 or float64, optional
        The dtype of the model (default: the layer's).  onnxruntime runs
        these operators in float32 only.
    use_layout_attribute : bool
        For a ``batch_first`` layer, set the operators' ``layout=1`` attribute
        instead of transposing the input and output around time-major nodes.
        The default (False) gives models onnxruntime can run: it rejects
        ``layout=1``.
    opset : int
        Opset of the default domain, at least 14.

    Returns
    -------
    onnx.ModelProto
        The model written, checked with ``onnx.checker.check_model``.

    Raises
    ------
    UnsupportedOnnxError
        An LSTM with ``proj_size > 0``, or ``lengths`` for a cell.
    """
    onnx = _import_onnx()
    from onnx import TensorProto, helper

    from . import __version__

    kind = _common.kind_of(obj)
    cell = _common.is_cell(obj)
    if getattr(obj, "proj_size", 0):
        raise UnsupportedOnnxError(
            f"an LSTM with proj_size={obj.proj_size} cannot be exported to ONNX: the ONNX LSTM "
            f"operator has no projection (its hidden state and output have hidden_size "
            f"features)")
    if cell and lengths:
        raise UnsupportedOnnxError("lengths apply to sequence layers; a cell runs one step")
    if opset < 14:
        raise ValueError(f"opset must be at least 14 (RNN/LSTM/GRU with layout), but got {opset}")
    dtype = _common.float_dtype(obj.dtype if dtype is None else dtype, "dtype")
    elem = helper.np_dtype_to_tensor_dtype(dtype)
    initial_state = cell if initial_state is None else bool(initial_state)
    H, L = obj.hidden_size, 1 if cell else obj.num_layers
    D = 1 if cell else obj.num_directions
    batch_first = False if cell else obj.batch_first
    layout = 1 if batch_first and use_layout_attribute else 0
    states = ("h", "c") if kind == "LSTM" else ("h",)
    g = _Graph(onnx)
    inputs, outputs = [], []
    if cell or (initial_state and L > 1):
        g.const("axes_0", np.array([0], np.int64))

    def value(name, elem_type, shape):
        return helper.make_tensor_value_info(name, elem_type, shape)

    # inputs
    if cell:
        inputs.append(value("input", elem, ["batch", obj.input_size]))
        x = g.node("Unsqueeze", ["input", "axes_0"], ["x_seq"])
    else:
        dims = ["batch", "seq_len"] if batch_first else ["seq_len", "batch"]
        inputs.append(value("input", elem, dims + [obj.input_size]))
        x = "input"
        if batch_first and not layout:
            x = g.node("Transpose", [x], ["x_time_major"], perm=[1, 0, 2])
    state_inputs = {}
    if initial_state:
        for s in states:
            name = s if cell else s + "0"
            if cell:
                inputs.append(value(name, elem, ["batch", H]))
                state_inputs[s] = g.node("Unsqueeze", [name, "axes_0"], [name + "_dir"])
            else:
                inputs.append(value(name, elem, [L * D, "batch", H]))
                state_inputs[s] = name
    seq = ""
    if lengths:
        inputs.append(value("lengths", TensorProto.INT32, ["batch"]))
        seq = "lengths"

    # one node per layer
    names = _common.direction_weights(obj)
    attrs = dict(hidden_size=H, direction="bidirectional" if D == 2 else "forward")
    if layout:
        attrs["layout"] = 1
    if kind == "GRU":
        attrs["linear_before_reset"] = 1
    if kind == "RNN":
        attrs["activations"] = [obj.nonlinearity.capitalize()] * D
    finals = {s: [] for s in states}
    if not cell and D == 1:  # to bring each node's Y to fastrnn's layout
        squeeze = g.const("axes_direction", np.array([2 if layout else 1], np.int64))
    if not cell and D == 2:
        flat = g.const("shape_flat", np.array([0, 0, -1], np.int64))
    for l in range(L):
        W, R, B = _onnx_weights(obj, names[l * D:(l + 1) * D], kind, dtype)
        node_in = [x, g.const(f"W_l{l}", W), g.const(f"R_l{l}", R),
                   g.const(f"B_l{l}", B) if B is not None else "", seq]
        if initial_state and L > 1:  # rows l*D .. (l+1)*D of h0 / c0
            bounds = [g.const(f"start_l{l}", np.array([l * D], np.int64)),
                      g.const(f"end_l{l}", np.array([(l + 1) * D], np.int64)), "axes_0"]
        for s in states:
            init = state_inputs.get(s, "")
            if init and L > 1:
                init = g.node("Slice", [init, *bounds], [f"{s}0_l{l}"])
            if init and layout:
                init = g.node("Transpose", [init], [f"{s}0_l{l}_batch_major"], perm=[1, 0, 2])
            node_in.append(init)
        node_out = ["" if cell else f"Y_l{l}"] + [f"Y_{s}_l{l}" for s in states]
        g.node(kind, node_in, node_out, **attrs)
        # Y: (T, D, B, H), or (B, T, D, H) with layout=1  ->  (T, B, D*H) / (B, T, D*H);
        # a cell has no Y, it returns its states only
        if not cell and D == 1:
            x = g.node("Squeeze", [node_out[0], squeeze], [f"out_l{l}"])
        elif not cell and layout:
            x = g.node("Reshape", [node_out[0], flat], [f"out_l{l}"])
        elif not cell:
            t = g.node("Transpose", [node_out[0]], [f"Y_l{l}_time_batch"], perm=[0, 2, 1, 3])
            x = g.node("Reshape", [t, flat], [f"out_l{l}"])
        for s, y in zip(states, node_out[1:]):
            if layout:  # Y_h is (B, D, H) with layout=1
                y = g.node("Transpose", [y], [f"Y_{s}_l{l}_dir_major"], perm=[1, 0, 2])
            finals[s].append(y)

    # outputs
    if cell:
        for s in states:
            name = s + "_1"
            g.node("Squeeze", [finals[s][0], "axes_0"], [name])
            outputs.append(value(name, elem, ["batch", H]))
    else:
        if batch_first and not layout:
            g.node("Transpose", [x], ["output"], perm=[1, 0, 2])
        else:
            g.node("Identity", [x], ["output"])
        dims = ["batch", "seq_len"] if batch_first else ["seq_len", "batch"]
        outputs.append(value("output", elem, dims + [D * H]))
        for s in states:
            name = s + "_n"
            if L == 1:
                g.node("Identity", finals[s], [name])
            else:
                g.node("Concat", finals[s], [name], axis=0)
            outputs.append(value(name, elem, [L * D, "batch", H]))

    graph = helper.make_graph(g.nodes, f"fastrnn_{type(obj).__name__}", inputs, outputs,
                              initializer=g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=IR_VERSION, producer_name="fastrnn",
                              producer_version=__version__,
                              doc_string=f"fastrnn {obj!r} exported with the standard {kind} "
                                         f"operator")
    config = dict(obj.get_config(), dtype=dtype.name)
    seed = config.get("seed")
    config["seed"] = int(seed) if isinstance(seed, numbers.Integral) and not isinstance(
        seed, bool) else None  # a Generator or SeedSequence seed is not storable
    helper.set_model_props(model, {META_CLASS: type(obj).__name__,
                                   META_CONFIG: json.dumps(config),
                                   META_VERSION: str(_META_FORMAT)})
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, path)
    return model


# -- load ---------------------------------------------------------------------------------------
def _constants(graph, numpy_helper):
    """name -> ndarray for the initializers and Constant nodes (through Identity) of a graph."""
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(a.t)
        elif node.op_type == "Identity" and node.input and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    return values


def _attributes(node, helper):
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        elif isinstance(v, list):
            v = [x.decode("utf-8") if isinstance(x, bytes) else x for x in v]
        out[a.name] = v
    return out


def _parse_node(node, index, consts, helper):
    """The structure and fastrnn-layout weights of one RNN/LSTM/GRU node."""
    kind, where = node.op_type, f"node {index} ({node.op_type} {node.name!r})"
    attrs = _attributes(node, helper)
    direction = attrs.get("direction", "forward")
    if direction not in ("forward", "bidirectional"):
        raise UnsupportedOnnxError(f"{where}: direction={direction!r} (a layer that only runs "
                                   f"backwards) has no fastrnn counterpart")
    D = 2 if direction == "bidirectional" else 1
    if "clip" in attrs:
        raise UnsupportedOnnxError(f"{where}: clip={attrs['clip']} (cell clipping) has no "
                                   f"fastrnn counterpart")
    if kind == "LSTM" and attrs.get("input_forget", 0):
        raise UnsupportedOnnxError(f"{where}: input_forget=1 (coupled input and forget gates) "
                                   f"has no fastrnn counterpart")
    if kind == "GRU" and not attrs.get("linear_before_reset", 0):
        raise UnsupportedOnnxError(f"{where}: {_NO_GRU_LBR0}")
    acts = [a.lower() for a in attrs.get("activations", [])]
    nonlinearity = None
    if kind == "RNN":
        acts = acts or ["tanh"]
        if len(set(acts)) != 1 or acts[0] not in ("tanh", "relu"):
            raise UnsupportedOnnxError(f"{where}: activations {attrs.get('activations')} are not "
                                       f"supported; fastrnn's RNN uses Tanh or Relu in both "
                                       f"directions")
        nonlinearity = acts[0]
    elif acts:
        default = _DEFAULT_ACTIVATIONS[kind]
        if acts not in (default, default * D):
            raise UnsupportedOnnxError(f"{where}: activations {attrs['activations']} are not "
                                       f"supported; fastrnn's {kind} uses the defaults "
                                       f"{[a.capitalize() for a in default]}")

    def tensor(position, label):
        name = node.input[position] if len(node.input) > position else ""
        if not name:
            return None
        if name not in consts:
            raise UnsupportedOnnxError(f"{where}: its {label} input {name!r} is computed in the "
                                       f"graph rather than stored as a constant (an initializer "
                                       f"or Constant node); fold constants when exporting (e.g. "
                                       f"do_constant_folding=True)")
        return consts[name]

    W, R, B = tensor(1, "W"), tensor(2, "R"), tensor(3, "B")
    P = tensor(7, "P") if kind == "LSTM" else None
    if P is not None and np.any(P):
        raise UnsupportedOnnxError(f"{where}: peephole weights P have no fastrnn counterpart")
    G = by_kind(kind).gates
    if W.ndim != 3 or R.ndim != 3 or W.shape[0] != D or R.shape[0] != D:
        raise UnsupportedOnnxError(f"{where}: W {W.shape} and R {R.shape} must be 3-D with "
                                   f"{D} direction(s) first")
    H = R.shape[2]
    if attrs.get("hidden_size", H) != H or W.shape[1] != G * H or R.shape[1] != G * H:
        raise UnsupportedOnnxError(f"{where}: W {W.shape}, R {R.shape} and hidden_size="
                                   f"{attrs.get('hidden_size')} do not fit a {kind} with {G} gates")
    if B is not None and B.shape != (D, 2 * G * H):
        raise UnsupportedOnnxError(f"{where}: B must have shape {(D, 2 * G * H)}, but has {B.shape}")
    src, dst = _common.GATE_ORDERS["onnx"][kind], _common.GATE_ORDERS["fastrnn"][kind]
    directions = []
    for d in range(D):
        w = {"w_ih": _common.reorder_gates(W[d], src, dst),
             "w_hh": _common.reorder_gates(R[d], src, dst), "b_ih": None, "b_hh": None}
        if B is not None:
            w["b_ih"] = _common.reorder_gates(B[d, :G * H], src, dst)
            w["b_hh"] = _common.reorder_gates(B[d, G * H:], src, dst)
        directions.append(w)
    return dict(kind=kind, D=D, H=H, input_size=W.shape[2], bias=B is not None,
                nonlinearity=nonlinearity, layout=int(attrs.get("layout", 0)), dtype=W.dtype,
                directions=directions, where=where)


def _feeds(graph, upper, lower, limit=8):
    """Whether ``upper``'s input X is ``lower``'s output Y, through a few reshaping ops."""
    producer = {o: n for n in graph.node for o in n.output}
    name = upper.input[0]
    for _ in range(limit):
        if name == lower.output[0]:
            return True
        node = producer.get(name)
        if node is None or node.op_type not in ("Transpose", "Reshape", "Squeeze", "Unsqueeze",
                                                "Identity", "Dropout", "Cast", "Flatten"):
            return False
        name = node.input[0]
    return False


def load(source, *, backend="auto", batch_first=None):
    """Read the RNN, LSTM or GRU nodes of an ONNX model into a fastrnn layer or cell.

    Parameters
    ----------
    source : str, os.PathLike, readable binary file object, or onnx.ModelProto
    backend : str
        The fastrnn backend of the new object.
    batch_first : bool, optional
        Override the layout.  By default it is the exported layer's, from
        the metadata :func:`export` writes, else the nodes' ``layout``
        attribute (a model that transposes around time-major nodes, as
        ``torch.onnx.export`` writes for ``batch_first=True``, then loads as
        time-major).

    Returns
    -------
    fastrnn.RNN, LSTM, GRU, or (for a cell written by :func:`export`) a cell
        With the weights of the nodes, exactly (the gates are moved, never
        computed); dtype that of the weights (float16 widened exactly to float32).
        A chain of nodes, each fed by the previous one's output, becomes
        ``num_layers``.

    Raises
    ------
    ValueError
        The file is not an ONNX model.
    UnsupportedOnnxError
        No recurrent node; nodes that do not form one stack; anything without a
        fastrnn equivalent: ``direction="reverse"``, other activations,
        ``clip``, ``input_forget``, peepholes, GRU ``linear_before_reset=0``,
        weights computed in the graph instead of stored.
    """
    onnx = _import_onnx()
    from onnx import helper, numpy_helper

    if isinstance(source, onnx.ModelProto):
        model, where = source, "model"
    else:
        where = getattr(source, "name", None) if hasattr(source, "read") else str(source)
        try:
            model = onnx.load_model(source)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            raise
        except Exception as exc:  # protobuf DecodeError and friends
            raise ValueError(f"{where}: not an ONNX model ({type(exc).__name__}: {exc})") from None
    graph = model.graph
    nodes = [n for n in graph.node if n.op_type in _RNN_OPS and n.domain in ("", "ai.onnx")]
    if not nodes:
        raise UnsupportedOnnxError(f"{where}: the graph has no RNN, LSTM or GRU node")
    consts = _constants(graph, numpy_helper)
    layers = [_parse_node(n, i, consts, helper) for i, n in enumerate(nodes)]
    first = layers[0]
    for l, (spec, node) in enumerate(zip(layers[1:], nodes[1:]), start=1):
        for key in ("kind", "D", "H", "nonlinearity", "layout"):
            if spec[key] != first[key]:
                raise UnsupportedOnnxError(f"{where}: {spec['where']} has {key}={spec[key]!r} but "
                                           f"{first['where']} has {first[key]!r}; fastrnn reads "
                                           f"a stack of equal recurrent nodes")
        if spec["input_size"] != first["D"] * first["H"] or not _feeds(graph, node, nodes[l - 1]):
            raise UnsupportedOnnxError(f"{where}: {spec['where']} is not fed by the output of "
                                       f"{layers[l - 1]['where']}; the graph's {len(nodes)} "
                                       f"recurrent nodes do not form one stack")
    props = {p.key: p.value for p in model.metadata_props}
    meta_class, meta = props.get(META_CLASS), {}
    if META_CONFIG in props:
        try:
            meta = json.loads(props[META_CONFIG])
        except ValueError:
            meta = {}
    dtype = first["dtype"]
    if dtype == np.float16:
        dtype = np.dtype(np.float32)
    dtype = _common.float_dtype(dtype, f"{where}: the weights' dtype")
    bias = any(spec["bias"] for spec in layers)
    cell = (meta_class in ("RNNCell", "LSTMCell", "GRUCell") and len(layers) == 1
            and first["D"] == 1 and meta_class[:-4] == first["kind"])
    if batch_first is None:
        batch_first = bool(meta.get("batch_first", first["layout"] == 1))
    options = dict(nonlinearity=first["nonlinearity"])
    if not cell:
        options.update(num_layers=len(layers), bidirectional=first["D"] == 2,
                       batch_first=bool(batch_first))
        dropout = meta.get("dropout")
        if isinstance(dropout, (int, float)) and 0 <= dropout <= 1 and len(layers) > 1:
            options["dropout"] = float(dropout)
    seed = meta.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0:
        options["seed"] = seed
    obj = _common.build(first["kind"], cell=cell, input_size=first["input_size"],
                        hidden_size=first["H"], bias=bias, dtype=dtype, backend=backend, **options)
    state = {}
    directions = [w for spec in layers for w in spec["directions"]]
    for names, w in zip(_common.direction_weights(obj), directions):
        for key, name in names.items():
            if name is None:
                continue
            value = w[key]
            state[name] = value if value is not None else np.zeros_like(w["w_ih"][:, 0])
    obj.load_state_dict(state, strict=True)
    return obj
