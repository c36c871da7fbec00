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

with the gates restacked: LSTM i, o, f, c in ONNX for i, f, g, o (and the
peepholes ``P`` (D, 3H), i, o, f, for ``weight_peephole_l{k}`` (3, H), i, f, o); GRU
z, r, h in ONNX for r, z, n, with ``linear_before_reset=1`` for fastrnn's
(PyTorch's) default GRU and ``linear_before_reset=0`` for
``GRU(reset_after=False)``.  A stack of ``num_layers`` is a chain of nodes:
each node's ``Y`` (T, D, B, H) is reshaped to (T, B, D*H) for the next.
``lengths`` become the ``sequence_lens`` input.  A layer's ``activations`` are
the nodes' ``activations`` (both directions' in a bidirectional node) with
``activation_alpha`` and ``activation_beta`` listing the parameters of the
functions that take them, in order (as onnxruntime reads them); export
always writes them, and fastrnn's metadata keeps their exact values (ONNX
stores float32).  An LSTM with ``proj_size > 0`` has no ONNX equivalent and
is refused.

:func:`load` reads a model exactly as written or raises: a file that does not
decode as ONNX raises ValueError naming it, and anything it cannot read
exactly (a malformed node, tensor or attribute, a node that computes
something beside the recurrent stack, metadata that is incomplete or
disagrees with the nodes) raises :class:`UnsupportedOnnxError` naming what
is wrong; it never loads part of a model or guesses.

Inputs and outputs of an exported layer (names fixed): ``input`` (T, B, I)
or (B, T, I) with ``batch_first``; optional ``h0`` (and ``c0``), (L*D, B,
H); optional ``lengths`` (B,) int32; outputs ``output`` (T, B, D*H) (or
batch-first), ``h_n`` (and ``c_n``) as fastrnn returns them.  An exported
cell takes ``input`` (B, I), ``h`` (and ``c``) (B, H), and returns ``h_1``
(and ``c_1``).
"""

import inspect
import json
import math
import numbers
import os

import numpy as np

from . import _checks
from . import activations as _acts
from .backends import resolve
from .celltypes import by_kind
from .interop import _common

#: opset of the exported models (RNN/LSTM/GRU-14 with ``layout``, Squeeze/Unsqueeze-13)
OPSET = 17
#: IR version of the exported models at the default opset (opset 17's, read by every current
#: runtime); a later opset gets the IR version the ONNX specification pairs with it
IR_VERSION = 8
#: metadata keys that let :func:`load` rebuild exactly the exported class and options
META_CLASS, META_CONFIG, META_VERSION = "fastrnn.class", "fastrnn.config", "fastrnn.onnx_version"
_META_FORMAT = 1
_RNN_OPS = ("RNN", "LSTM", "GRU")
#: the activations whose alpha onnxruntime reads as 0 when the node omits it, where the ONNX
#: standard takes the default of the operator of the same name: a node must give their alpha
_AMBIGUOUS_ALPHA = ("affine", "scaled_tanh", "thresholded_relu")


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


def _onnx_peepholes(obj, names, dtype):
    """P (D, 3H), gates i, o, f, of one node, or None without peepholes."""
    if not getattr(obj, "peepholes", False):
        return None
    p = obj.parameters()
    return np.stack([p[n["w_ph"]][[0, 2, 1]].reshape(-1) for n in names]).astype(dtype)


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
        Opset of the default domain, at least 14 (RNN/LSTM/GRU with ``layout``) and at most
        the newest the installed onnx knows.

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
    target = _checks.file_or_path("path", path, "w")
    initial_state = None if initial_state is None else _checks.check_bool("initial_state",
                                                                          initial_state)
    lengths = _checks.check_bool("lengths", lengths)
    use_layout_attribute = _checks.check_bool("use_layout_attribute", use_layout_attribute)
    # at most the newest opset the installed onnx knows (its checker cannot check a later one)
    opset = _checks.check_int("opset", opset, minimum=14, maximum=onnx.defs.onnx_opset_version())
    if getattr(obj, "proj_size", 0):
        raise UnsupportedOnnxError(
            f"an LSTM with proj_size={obj.proj_size} cannot be exported to ONNX: the ONNX LSTM "
            f"operator has no projection (its hidden state and output have hidden_size "
            f"features)")
    if cell and lengths:
        raise UnsupportedOnnxError("lengths apply to sequence layers; a cell runs one step")
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
    attrs = dict(hidden_size=H, direction="bidirectional" if D == 2 else
                 "reverse" if getattr(obj, "reverse", False) else "forward")
    if layout:
        attrs["layout"] = 1
    if kind == "GRU":
        attrs["linear_before_reset"] = 1 if obj.reset_after else 0
    if kind == "LSTM" and obj.input_forget:
        attrs["input_forget"] = 1
    if obj.clip is not None:
        with np.errstate(over="ignore"):
            as_float32 = float(np.float32(obj.clip))
        if not 0 < as_float32 < np.inf:
            raise UnsupportedOnnxError(f"clip={obj.clip} cannot be exported: ONNX stores the clip "
                                       f"as a float32 attribute, which would be {as_float32}")
        attrs["clip"] = float(obj.clip)
    acts = _export_activations(obj, kind, D)
    if acts is not None:
        for a in acts:
            for which, number in zip(("alpha", "beta"), a.params):
                with np.errstate(over="ignore", under="ignore"):
                    as_float32 = float(np.float32(number))
                if not np.isfinite(as_float32) or (number != 0 and as_float32 == 0):
                    raise UnsupportedOnnxError(
                        f"activation {a.onnx} with {which}={number} cannot be exported: ONNX "
                        f"stores activation parameters as float32 attributes, where it would "
                        f"be {as_float32}")
        attrs["activations"] = [a.onnx for a in acts]
        alpha = [a.alpha for a in acts if len(a.params) >= 1]
        beta = [a.beta for a in acts if len(a.params) >= 2]
        if alpha:
            attrs["activation_alpha"] = alpha
        if beta:
            attrs["activation_beta"] = beta
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
        P = _onnx_peepholes(obj, names[l * D:(l + 1) * D], dtype)
        if P is not None:
            node_in.append(g.const(f"P_l{l}", P))
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
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets,
                              ir_version=max(IR_VERSION, helper.find_min_ir_version_for(opsets)),
                              producer_name="fastrnn",
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
    onnx.save_model(model, target)
    return model


def _export_activations(obj, kind, D):
    """The ``activations`` attribute of ``obj``'s nodes (D lists of its slots), or None for the
    operator's defaults (an RNN always names its Tanh or Relu)."""
    acts = getattr(obj, "activations", None)
    if acts is None:
        if kind != "RNN":
            return None
        acts = (_acts.activation(obj.nonlinearity),)
    acts = tuple(acts)
    return acts * D if len(acts) == len(_acts.SLOTS[kind.lower()]) else acts


# -- load ---------------------------------------------------------------------------------------
#: the default ONNX domain, in both spellings
_DEFAULT_DOMAINS = ("", "ai.onnx")
#: ops that only move, reshape, retype or describe data: :func:`load` reads the recurrent nodes
#: and takes these as the layout plumbing exporters put around them (fastrnn's transposes and
#: squeezes, torch.onnx's Shape/Gather/Expand for the zero initial state); any other node
#: computes something a fastrnn object would lack, and is refused
_LAYOUT_OPS = frozenset({"Cast", "Concat", "Constant", "ConstantOfShape", "Dropout", "Expand",
                         "Flatten", "Gather", "Identity", "Reshape", "Shape", "Size", "Slice",
                         "Split", "Squeeze", "Transpose", "Unsqueeze"})
#: the layout ops that may stand between a graph's input and its first recurrent node, and
#: between the nodes of a stack: they move values without selecting, repeating or joining any
_PATH_OPS = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Cast",
             "Flatten")
#: the inputs and outputs of each recurrent operator, by position
_INPUTS = {"RNN": ("X", "W", "R", "B", "sequence_lens", "initial_h"),
           "GRU": ("X", "W", "R", "B", "sequence_lens", "initial_h"),
           "LSTM": ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P")}
_OUTPUTS = {"RNN": ("Y", "Y_h"), "GRU": ("Y", "Y_h"), "LSTM": ("Y", "Y_h", "Y_c")}
#: the attributes :func:`load` reads, all those of the operators' schemas up to opset 22 (one a
#: later opset adds is refused until it is read); ``output_sequence`` (opset 1) selects outputs
_ATTRIBUTES = {kind: {"activation_alpha", "activation_beta", "activations", "clip", "direction",
                      "hidden_size", "layout", "output_sequence"} | extra
               for kind, extra in (("RNN", set()), ("LSTM", {"input_forget"}),
                                   ("GRU", {"linear_before_reset"}))}
#: TensorProto data types read as weights: FLOAT, FLOAT16 (widened exactly to float32), DOUBLE
_WEIGHT_TYPES = (1, 10, 11)
#: the TensorProto data types of floats: those and BFLOAT16
_FLOAT_TYPES = _WEIGHT_TYPES + (16,)
#: the types of the keys of the fastrnn.config metadata, and how a message names each type
_CONFIG_TYPES = {"input_size": "int", "hidden_size": "int", "num_layers": "int",
                 "proj_size": "int", "bias": "bool", "batch_first": "bool",
                 "bidirectional": "bool", "dropout": "number", "seed": "seed", "dtype": "str",
                 "nonlinearity": "str", "reverse": "bool", "reset_after": "bool",
                 "peepholes": "bool", "input_forget": "bool", "clip": "positive",
                 "activations": "activations"}
_TYPE_NAMES = {"int": "a JSON integer", "bool": "a JSON boolean (true or false)",
               "number": "a JSON number", "seed": "a JSON integer >= 0 or null",
               "positive": "a positive JSON number",
               "activations": "a JSON array of activations (a name, or [name, alpha(, beta)])",
               "str": "a JSON string"}


def _is_activation_list(value):
    """Whether a metadata value is a list of activations as get_config writes them."""
    if not isinstance(value, list) or not value:
        return False
    try:
        for entry in value:
            if not isinstance(entry, (str, list)):
                return False
            _acts.activation(entry)
    except (TypeError, ValueError):
        return False
    return True


def _text(value, what):
    """A protobuf string field as ``str``: protobuf hands invalid UTF-8 back as ``bytes``."""
    if isinstance(value, bytes):
        raise UnsupportedOnnxError(f"{what} is not UTF-8 text: {value!r}")
    return value


def _enum_name(enum, value):
    """``NAME (value)`` of a protobuf enum value, or the bare number when the enum lacks it."""
    try:
        return f"{enum.Name(value)} ({value})"
    except ValueError:
        return str(value)


def _read_model(onnx, source):
    """The ModelProto of ``source`` and how messages name the source.

    A source that is not protobuf-encoded ONNX raises ValueError; one that
    cannot be opened raises the OSError of opening it.
    """
    if isinstance(source, onnx.ModelProto):
        model, where, path = source, "model", None
    else:
        source = _checks.file_or_path("source", source, "r")
        if not isinstance(source, str):
            name = getattr(source, "name", None)
            path = name if isinstance(name, str) else None
            where = path or f"<{type(source).__name__}>"
        else:
            path = where = source
        try:
            model = onnx.load_model(source, load_external_data=False)
        except OSError:
            raise  # the source itself cannot be read: missing, a directory, no permission
        except Exception as exc:  # protobuf DecodeError and friends
            raise ValueError(f"{where}: not an ONNX model ({type(exc).__name__}: {exc})") from None
    if not model.HasField("graph"):
        raise ValueError(f"{where}: not an ONNX model (it holds no graph)")
    tensors = list(model.graph.initializer) + [a.t for n in model.graph.node for a in n.attribute
                                               if a.HasField("t")]
    if any(onnx.external_data_helper.uses_external_data(t) for t in tensors):
        if path is None:
            raise UnsupportedOnnxError(f"{where}: the model keeps tensors in external files, "
                                       f"which only a model read from its path can find")
        try:
            onnx.external_data_helper.load_external_data_for_model(
                model, os.path.dirname(os.path.abspath(path)))
        except Exception as exc:
            raise UnsupportedOnnxError(f"{where}: the external data of its tensors cannot be "
                                       f"read ({type(exc).__name__}: {exc})") from exc
    return model, where


def _unknown_fields(message):
    """Numbers of the fields of ``message`` its schema lacks (a corrupt tag, or a newer ONNX)."""
    try:
        from google.protobuf.unknown_fields import UnknownFieldSet
    except ImportError:  # protobuf < 4.23
        fields = message.UnknownFields()
    else:
        fields = UnknownFieldSet(message)
    return sorted({f.field_number for f in fields})


def _check_known_fields(model, onnx, where):
    """The parts :func:`load` reads hold no field protobuf could not place (it keeps them aside)."""
    graph = model.graph
    parts = [("the model", model), ("the graph", graph)]
    parts += [(f"opset import {k}", o) for k, o in enumerate(model.opset_import)]
    parts += [(f"metadata entry {k}", p) for k, p in enumerate(model.metadata_props)]
    parts += [(f"initializer {t.name!r}", t) for t in graph.initializer]
    for i, node in enumerate(graph.node):
        parts.append((f"node {i} ({node.op_type} {node.name!r})", node))
        for a in node.attribute:
            parts.append((f"attribute {a.name!r} of node {i}", a))
            if a.HasField("t"):
                parts.append((f"the tensor of attribute {a.name!r} of node {i}", a.t))
    for what, message in parts:
        numbers = _unknown_fields(message)
        if numbers:
            raise UnsupportedOnnxError(f"{where}: {what} has fields the installed onnx "
                                       f"{onnx.__version__} does not know (numbers {numbers}): "
                                       f"the file is corrupt, or written for a newer ONNX")


def _check_text(model, where):
    """Every string :func:`load` reads is UTF-8 text (a corrupt byte makes it ``bytes``)."""
    graph = model.graph
    for k, p in enumerate(model.metadata_props):
        _text(p.key, f"{where}: the key of metadata entry {k}")
        _text(p.value, f"{where}: metadata {p.key!r}")
    _text(model.producer_name, f"{where}: the producer name")
    for o in model.opset_import:
        _text(o.domain, f"{where}: an opset domain")
    for t in graph.initializer:
        _text(t.name, f"{where}: the name of an initializer")
    for v in list(graph.input) + list(graph.output):
        _text(v.name, f"{where}: the name of a graph input or output")
    for i, node in enumerate(graph.node):
        for field in ("op_type", "domain", "name"):
            _text(getattr(node, field), f"{where}: the {field} of node {i}")
        for k, name in enumerate(node.input):
            _text(name, f"{where}: input {k} of node {i}")
        for k, name in enumerate(node.output):
            _text(name, f"{where}: output {k} of node {i}")
        for a in node.attribute:
            _text(a.name, f"{where}: an attribute name of node {i}")


def _default_opset(model, where):
    """The opset the model imports for the default ONNX domain."""
    versions = sorted({o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS})
    if not versions:
        raise UnsupportedOnnxError(f"{where}: the model imports no opset of the default ONNX "
                                   f"domain ('' or 'ai.onnx'), so its operators have no defined "
                                   f"meaning")
    if len(versions) > 1:
        raise UnsupportedOnnxError(f"{where}: the model imports the default ONNX domain at "
                                   f"opsets {versions}; expected one")
    if versions[0] < 1:
        raise UnsupportedOnnxError(f"{where}: the model imports opset {versions[0]} of the "
                                   f"default ONNX domain; opsets start at 1")
    return versions[0]


def _node_label(index, node):
    domain = "" if node.domain in _DEFAULT_DOMAINS else f", domain {node.domain!r}"
    return f"node {index} ({node.op_type} {node.name!r}{domain})"


def _recurrent_nodes(graph, where):
    """``(index, node)`` of the RNN/LSTM/GRU nodes, once every node is known to be understood.

    Refuses recurrent op types outside the default domain, graphs without a
    recurrent node, nodes that compute something (anything but
    :data:`_LAYOUT_OPS`), and names defined twice or used but never defined.
    """
    for i, node in enumerate(graph.node):
        if node.op_type in _RNN_OPS and node.domain not in _DEFAULT_DOMAINS:
            raise UnsupportedOnnxError(
                f"{where}: node {i} ({node.op_type} {node.name!r}) is in domain "
                f"{node.domain!r}, not the default ONNX domain ('' or 'ai.onnx'): it is not the "
                f"ONNX {node.op_type} operator, and fastrnn cannot read it")
    recurrent = [(i, n) for i, n in enumerate(graph.node) if n.op_type in _RNN_OPS]
    if not recurrent:
        raise UnsupportedOnnxError(f"{where}: the graph has no RNN, LSTM or GRU node")
    for i, node in enumerate(graph.node):
        if node.op_type not in _RNN_OPS and (node.domain not in _DEFAULT_DOMAINS
                                             or node.op_type not in _LAYOUT_OPS):
            raise UnsupportedOnnxError(
                f"{where}: {_node_label(i, node)} is neither a recurrent node nor one of the "
                f"data-movement ops fastrnn reads past ({', '.join(sorted(_LAYOUT_OPS))}); "
                f"loading the recurrent nodes alone would drop what it computes (extract the "
                f"recurrent part first, e.g. with onnx.utils.extract_model)")
    defined = {}

    def define(name, what, again=()):
        if not name:
            raise UnsupportedOnnxError(f"{where}: {what} has an empty name")
        if name in defined and defined[name] not in again:
            raise UnsupportedOnnxError(f"{where}: {what} defines {name!r}, which {defined[name]} "
                                       f"already defines; ONNX defines each name once")
        defined.setdefault(name, what)

    for t in graph.initializer:
        define(t.name, "an initializer")
    for t in graph.sparse_initializer:
        define(t.values.name, "a sparse initializer")
    for v in graph.input:  # IR < 4 lists the initializers among the inputs too
        define(v.name, "a graph input", again=("an initializer", "a sparse initializer"))
    for i, node in enumerate(graph.node):
        for name in node.output:
            if name:
                define(name, _node_label(i, node))
    for i, node in enumerate(graph.node):
        for k, name in enumerate(node.input):
            if name and name not in defined:
                raise UnsupportedOnnxError(f"{where}: input {k} of {_node_label(i, node)}, "
                                           f"{name!r}, is defined by no initializer, graph input "
                                           f"or node")
    for v in graph.output:
        if v.name not in defined:
            raise UnsupportedOnnxError(f"{where}: the graph output {v.name!r} is computed by no "
                                       f"node")
    return recurrent


def _constants(graph, onnx):
    """name -> TensorProto of the initializers and Constant nodes (through Identity) of a graph."""
    values = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.domain not in _DEFAULT_DOMAINS or not node.output or not node.output[0]:
            continue
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                    values[node.output[0]] = a.t
        elif node.op_type == "Identity" and node.input and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    return values


def _array(tensor, what, onnx):
    """The ndarray of a weight tensor, its data type, dims and contents checked."""
    data_type, dims = tensor.data_type, list(tensor.dims)
    types = onnx.TensorProto.DataType
    if data_type not in types.values():
        raise UnsupportedOnnxError(f"{what} has data type {data_type}, which is no ONNX tensor "
                                   f"data type")
    if data_type not in _WEIGHT_TYPES:
        raise UnsupportedOnnxError(f"{what} has data type {_enum_name(types, data_type)}; "
                                   f"fastrnn reads weights of type FLOAT, DOUBLE or FLOAT16")
    if any(d < 0 for d in dims):
        raise UnsupportedOnnxError(f"{what} has dims {dims}; ONNX dims are >= 0")
    try:
        array = onnx.numpy_helper.to_array(tensor)
    except Exception as exc:  # data that does not fill the dims, segments, ...
        raise UnsupportedOnnxError(f"{what} ({_enum_name(types, data_type)}, dims {dims}) cannot "
                                   f"be decoded: {type(exc).__name__}: {exc}") from None
    if array.shape != tuple(dims):
        raise UnsupportedOnnxError(f"{what} decodes to shape {array.shape}, not its dims {dims}")
    return array


def _attributes(node, kind, schema, opset, where, onnx):
    """name -> value of the attributes of a recurrent node, checked against the operator's schema.

    Strings come back as ``str``; an attribute the schema of ``kind`` at
    ``opset`` lacks, one given twice or with another type, and one
    :func:`load` does not read, are refused.
    """
    A = onnx.AttributeProto
    fields = {A.FLOAT: "f", A.INT: "i", A.STRING: "s", A.FLOATS: "floats", A.INTS: "ints",
              A.STRINGS: "strings"}

    def decode(value, name):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise UnsupportedOnnxError(f"{where}: attribute {name!r} is not UTF-8 text: "
                                       f"{value!r}") from None

    out = {}
    for a in node.attribute:
        name = a.name
        if name in out:
            raise UnsupportedOnnxError(f"{where}: attribute {name!r} is given twice")
        if a.ref_attr_name:
            raise UnsupportedOnnxError(f"{where}: attribute {name!r} refers to the attribute "
                                       f"{a.ref_attr_name!r} of an enclosing function instead of "
                                       f"giving a value")
        spec = schema.attributes.get(name)
        if spec is None:
            raise UnsupportedOnnxError(f"{where}: {name!r} is not an attribute of {kind} at opset "
                                       f"{opset} ({kind}-{schema.since_version}, whose attributes "
                                       f"are {sorted(schema.attributes)})")
        if name not in _ATTRIBUTES[kind]:
            raise UnsupportedOnnxError(f"{where}: attribute {name!r} has no fastrnn counterpart")
        if a.type != spec.type.value or a.type not in fields:
            raise UnsupportedOnnxError(f"{where}: attribute {name!r} has type "
                                       f"{_enum_name(A.AttributeType, a.type)}, but {kind} "
                                       f"defines it as {spec.type.name}")
        value = getattr(a, fields[a.type])
        if a.type == A.STRING:
            value = decode(value, name)
        elif a.type == A.STRINGS:
            value = [decode(v, name) for v in value]
        elif a.type in (A.FLOATS, A.INTS):
            value = list(value)
        out[name] = value
    return out


def _parse_node(node, index, consts, opset, where, onnx):
    """The structure and fastrnn-layout weights of one RNN/LSTM/GRU node, every field checked."""
    kind, node_label = node.op_type, _node_label(index, node)
    where = f"{where}: {node_label}"
    try:
        schema = onnx.defs.get_schema(kind, opset, "")
    except onnx.defs.SchemaError:
        raise UnsupportedOnnxError(f"{where}: opset {opset} of the default ONNX domain has no "
                                   f"{kind} operator") from None
    attrs = _attributes(node, kind, schema, opset, where, onnx)

    def invalid(name, allowed):
        raise UnsupportedOnnxError(f"{where}: {name}={attrs[name]!r} is not a value ONNX defines "
                                   f"for {kind}; expected {allowed}")

    direction = attrs.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        invalid("direction", "'forward', 'reverse' or 'bidirectional'")
    D = 2 if direction == "bidirectional" else 1
    layout = attrs.get("layout", 0)
    if layout not in (0, 1):
        invalid("layout", "0 (time-major X) or 1 (batch-major X)")
    if attrs.get("output_sequence", 0) not in (0, 1):
        invalid("output_sequence", "0 or 1")
    if "hidden_size" in attrs and attrs["hidden_size"] < 1:
        invalid("hidden_size", "a positive integer")
    if "clip" in attrs and not (np.isfinite(attrs["clip"]) and attrs["clip"] > 0):
        invalid("clip", "a positive number")
    if kind == "LSTM":
        if attrs.get("input_forget", 0) not in (0, 1):
            invalid("input_forget", "0 or 1")
    if kind == "GRU":
        if attrs.get("linear_before_reset", 0) not in (0, 1):
            invalid("linear_before_reset", "0 or 1")
    acts = _node_activations(attrs, kind, D, direction, where)

    labels = _INPUTS[kind]
    if len(node.input) > len(labels) or len(node.output) > len(_OUTPUTS[kind]):
        raise UnsupportedOnnxError(f"{where}: {len(node.input)} inputs and {len(node.output)} "
                                   f"outputs; {kind} has at most {len(labels)} inputs "
                                   f"({', '.join(labels)}) and {len(_OUTPUTS[kind])} outputs")
    inputs = dict(zip(labels, node.input))
    for label in ("X", "W", "R"):
        if not inputs.get(label):
            raise UnsupportedOnnxError(f"{where}: its required input {label} (input "
                                       f"{labels.index(label)}) is missing or empty")

    def tensor(label):
        name = inputs.get(label, "")
        if not name:
            return None
        if name not in consts:
            raise UnsupportedOnnxError(f"{where}: its {label} input {name!r} is computed in the "
                                       f"graph rather than stored as a constant (an initializer "
                                       f"or Constant node); fold constants when exporting (e.g. "
                                       f"do_constant_folding=True), or export with a newer "
                                       f"opset (torch.onnx's opset 7 slices and joins the "
                                       f"weights in the graph)")
        return _array(consts[name], f"{where}: its {label} tensor {name!r}", onnx)

    if inputs.get("sequence_lens") in consts:
        raise UnsupportedOnnxError(f"{where}: its sequence_lens input {inputs['sequence_lens']!r} "
                                   f"is a stored constant; a fastrnn layer takes the lengths of "
                                   f"each call")
    for label in ("initial_h", "initial_c"):
        if inputs.get(label) in consts and np.any(tensor(label)):
            raise UnsupportedOnnxError(f"{where}: its {label} input {inputs[label]!r} is a stored "
                                       f"nonzero constant; a fastrnn layer starts from zeros or "
                                       f"from the state passed in")
    W, R, B = tensor("W"), tensor("R"), tensor("B")
    P = tensor("P") if kind == "LSTM" else None
    G = by_kind(kind).gates
    if W.ndim != 3 or R.ndim != 3 or W.shape[0] != D or R.shape[0] != D:
        raise UnsupportedOnnxError(f"{where}: W {W.shape} and R {R.shape} must be 3-D with "
                                   f"{D} direction(s) first")
    H = R.shape[2]
    if (H < 1 or W.shape[2] < 1 or attrs.get("hidden_size", H) != H or W.shape[1] != G * H
            or R.shape[1] != G * H):
        raise UnsupportedOnnxError(f"{where}: W {W.shape}, R {R.shape} and hidden_size="
                                   f"{attrs.get('hidden_size')} do not fit a {kind} with {G} gates "
                                   f"and at least one input and hidden feature")
    if B is not None and B.shape != (D, 2 * G * H):
        raise UnsupportedOnnxError(f"{where}: B must have shape {(D, 2 * G * H)}, but has {B.shape}")
    if P is not None and P.shape != (D, 3 * H):
        raise UnsupportedOnnxError(f"{where}: P must have shape {(D, 3 * H)}, but has {P.shape}")
    for label, array in (("R", R), ("B", B), ("P", P)):
        if array is not None and array.dtype != W.dtype:
            raise UnsupportedOnnxError(f"{where}: W is {W.dtype} but {label} is {array.dtype}; "
                                       f"a fastrnn layer has one dtype")
    src, dst = _common.GATE_ORDERS["onnx"][kind], _common.GATE_ORDERS["fastrnn"][kind]
    directions = []
    for d in range(D):
        w = {"w_ih": _common.reorder_gates(W[d], src, dst),
             "w_hh": _common.reorder_gates(R[d], src, dst), "b_ih": None, "b_hh": None}
        if B is not None:
            w["b_ih"] = _common.reorder_gates(B[d, :G * H], src, dst)
            w["b_hh"] = _common.reorder_gates(B[d, G * H:], src, dst)
        # peepholes: i, o, f in ONNX, rows i, f, o in fastrnn; all zeros are no peepholes
        w["w_ph"] = None if P is None else P[d].reshape(3, H)[[0, 2, 1]]
        directions.append(w)
    # GRU: linear_before_reset=0 (ONNX's default) is GRU(reset_after=False); None: not a GRU
    reset_after = bool(attrs.get("linear_before_reset", 0)) if kind == "GRU" else None
    return dict(kind=kind, D=D, reverse=direction == "reverse", H=H, input_size=W.shape[2],
                bias=B is not None, activations=acts, reset_after=reset_after,
                peepholes=P is not None and bool(np.any(P)), has_p=P is not None,
                input_forget=bool(attrs.get("input_forget", 0)) if kind == "LSTM" else None,
                clip=attrs.get("clip"),
                layout=layout, dtype=W.dtype,
                directions=directions, where=where, label=node_label)


def _node_activations(attrs, kind, D, direction, where):
    """A node's activations, per direction: a tuple of D tuples of Activation (one per slot),
    alpha and beta consumed in order by the functions that take them (as onnxruntime does)."""
    slots = len(_acts.SLOTS[kind.lower()])
    names = list(attrs.get("activations", []))
    if not names:
        names = [_acts.TABLE[d][0] for d in _acts.DEFAULTS[kind.lower()]] * D
    if len(names) != slots * D:
        # (one list for both directions is not ONNX's: onnxruntime refuses it too)
        raise UnsupportedOnnxError(f"{where}: activations {attrs['activations']} has "
                                   f"{len(names)} entries; a {kind} with direction={direction!r} "
                                   f"takes {slots * D}, {slots} for each direction")
    by_lower = {onnx.lower(): name for onnx, name in _acts.FROM_ONNX.items()}
    alpha, beta = list(attrs.get("activation_alpha", [])), list(attrs.get("activation_beta", []))
    out = []
    for k, onnx_name in enumerate(names):
        # (in any case: onnxruntime runs an LSTM's or a GRU's 'tanh', if not an RNN's)
        name = by_lower.get(str(onnx_name).lower())
        if name is None:
            raise UnsupportedOnnxError(f"{where}: activations[{k}]={onnx_name!r} is not one of "
                                       f"ONNX's {', '.join(_acts.FROM_ONNX)}")
        _, a0, b0 = _acts.TABLE[name]
        params = []
        for default, values, label in ((a0, alpha, "activation_alpha"),
                                       (b0, beta, "activation_beta")):
            if default is None:
                continue
            if values:
                params.append(values.pop(0))
            elif name in _AMBIGUOUS_ALPHA:
                raise UnsupportedOnnxError(
                    f"{where}: activations[{k}]={onnx_name!r} has no value in {label}: the ONNX "
                    f"standard then takes the {onnx_name} operator's default, onnxruntime 0; "
                    f"give it explicitly")
            else:
                params.append(default)
        try:
            out.append(_acts.activation((name, *params), f"{where}: activations[{k}]"))
        except ValueError as exc:
            raise UnsupportedOnnxError(str(exc)) from None
    for values, label in ((alpha, "activation_alpha"), (beta, "activation_beta")):
        if values:
            raise UnsupportedOnnxError(f"{where}: {label}={attrs[label]} has {len(values)} "
                                       f"value(s) more than its activations {names} read")
    return tuple(tuple(out[d * slots:(d + 1) * slots]) for d in range(D))


def _layer_activations(kind, per_direction, meta_acts):
    """The constructor arguments ``nonlinearity`` and ``activations`` of a layer whose nodes
    have ``per_direction`` activations; exact parameters from fastrnn's metadata
    (``meta_acts``, checked by :func:`_metadata`, or None) where they agree with the nodes'
    float32 attributes."""
    if meta_acts is not None:
        S = len(per_direction[0])
        exact = tuple(_acts.activation(a) for a in meta_acts)
        if len(exact) == S:
            exact = exact * len(per_direction)
        flat = tuple(a for d in per_direction for a in d)
        if len(exact) == len(flat) and all(
                e.name == a.name and np.float32(e.alpha) == np.float32(a.alpha)
                and np.float32(e.beta) == np.float32(a.beta) for e, a in zip(exact, flat)):
            # the layer as fastrnn wrote it: RNN(activations=["relu"]) stays that, rather than
            # becoming RNN(nonlinearity="relu"), which its metadata would then contradict
            return None, list(meta_acts)
    return _common.activation_options(kind, per_direction)


def _as_float(value):
    """A JSON number as a float (inf for an integer beyond a float's range)."""
    try:
        return float(value)
    except OverflowError:
        return float("inf")


#: options get_config omits at their default: key -> (default, what the metadata then
#: describes, what nodes with another value have)
_OMITTED_AT_DEFAULT = {
    "reverse": (False, "a layer that runs forwards", lambda v: "direction='reverse'"),
    "peepholes": (False, "an LSTM without peepholes", lambda v: "nonzero P"),
    "clip": (None, "a layer without a cell clip", lambda v: f"clip={v}"),
    "input_forget": (False, "an LSTM with separate input and forget gates",
                     lambda v: "input_forget=1"),
    "reset_after": (True, "a GRU that resets after the recurrent product",
                    lambda v: "linear_before_reset=0"),
    "activations": (None, "a layer with its default activations",
                    lambda v: f"activations {v}"),
}


def _clip(node_clip, meta_clip):
    """The layer's clip from a node's (a float32 attribute) and fastrnn's metadata's (the value
    exported): the metadata's when the two agree in float32, so that a round trip is exact."""
    if (node_clip is not None and isinstance(meta_clip, (int, float))
            and not isinstance(meta_clip, bool)
            and np.float32(meta_clip) == np.float32(node_clip)):
        return meta_clip
    return node_clip


def _producers(graph):
    """tensor name -> the node that makes it."""
    return {o: n for n in graph.node for o in n.output if o}


def _perm(node):
    """A Transpose node's ``perm`` attribute as a list (None when it has none)."""
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), None)


def _feeds(graph, upper, lower, D, layout, limit=8):
    """Whether ``upper``'s input X is ``lower``'s output Y (of ``D`` directions, ``layout``),
    through a few reshaping ops: with two directions and layout 0, through the transpose of Y
    (T, 2, B, H) to (T, B, 2, H) that puts each sequence's two halves side by side (a reshape
    alone would mix the directions and the batch); with layout 1, Y (B, T, 2, H) has them side
    by side already, and that transpose would swap time and the directions."""
    if not lower.output or not lower.output[0]:
        return False
    producer = _producers(graph)
    name = upper.input[0]
    moved = False
    for _ in range(limit):
        if name == lower.output[0]:
            return D == 1 or moved == (layout == 0)
        node = producer.get(name)
        if node is None or not node.input or node.op_type not in _PATH_OPS:
            return False
        if node.op_type == "Transpose":
            # Y (T, D, B, H) to (T, B, D, H) is the one transpose of a stack; another (time and
            # batch swapped, say) feeds the next node something a stack does not
            if _perm(node) != [0, 2, 1, 3] or moved:
                return False
            moved = True
        name = node.input[0]
    return False


def _consumers(graph):
    """tensor name -> [(node, input position)] of the nodes that read it."""
    out = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name:
                out.setdefault(name, []).append((node, k))
    return out


def _data_tensors(graph, consts):
    """The names of the tensors that hold the model's values (not shapes): the graph's inputs
    that are not constants, the recurrent nodes' outputs, and whatever a node makes of any of
    them, but for Shape's and Size's outputs (a shape is not a value)."""
    data = {i.name for i in graph.input if i.name not in consts}
    grown = True
    while grown:            # (a fixed point: the nodes need not be in order)
        grown = False
        for node in graph.node:
            if node.op_type in ("Shape", "Size"):
                continue
            if node.op_type in _RNN_OPS or any(n in data for n in node.input if n):
                new = {o for o in node.output if o} - data
                if new:
                    data |= new
                    grown = True
    return data


def _state_slice(node, consts, consumers, nodes, Ds, onnx):
    """Whether Slice ``node`` is how torch.onnx gives a stack's nodes their initial states:
    rows [l*D, (l+1)*D) of h0 or c0 (axis 0, step 1), read by node l of the stack as its
    initial_h or initial_c (through reshaping ops) and by nothing else."""
    def values(k, attribute):
        if len(node.input) <= 1:      # (before opset 10, starts, ends and axes are attributes)
            return next((list(a.ints) for a in node.attribute if a.name == attribute), None)
        if len(node.input) <= k or not node.input[k]:
            return None
        t = consts.get(node.input[k])
        return None if t is None else [int(v) for v in np.ravel(_plain_values(t, onnx))
                                      if np.isfinite(v)]
    starts, ends = values(1, "starts"), values(2, "ends")
    axes, steps = values(3, "axes"), values(4, "steps")
    if (starts is None or ends is None or len(starts) != 1 or len(ends) != 1
            or axes not in (None, [0]) or steps not in (None, [1])):
        return False
    readers = []
    pending = [o for o in node.output if o]
    while pending:
        for reader, k in consumers.get(pending.pop(), []):
            if reader.op_type in _RNN_OPS:
                readers.append((reader, k))
            elif reader.op_type in _PATH_OPS:
                pending.extend(o for o in reader.output if o)
            else:
                return False
    for reader, k in readers:
        l = next((i for i, n in enumerate(nodes) if n is reader), None)
        if l is None or k not in (5, 6) or [starts[0], ends[0]] != [l * Ds[l], (l + 1) * Ds[l]]:
            return False
    return bool(readers)


def _check_data_path(graph, consts, nodes, layers, where, onnx):
    """Refuse the data-movement ops that select or reorder the values themselves: a Gather,
    Split or Expand of the input or of an output (``x[idx]``, ``y[-1]``, a permutation of
    the features), a Concat on the way to a recurrent node's input, and a Slice but
    torch.onnx's rows of the initial states of each node of a stack (``x[2:]``, a crop of
    time, changes what the layer computes; loading the recurrent nodes alone would drop it)."""
    data = _data_tensors(graph, consts)
    consumers = _consumers(graph)
    Ds = [spec["D"] for spec in layers]
    def reaches_input(names):
        seen, pending = set(), list(names)
        while pending:
            name = pending.pop()
            for reader, k in consumers.get(name, []):
                if reader.op_type in _RNN_OPS:
                    if k == 0:
                        return True
                    continue
                if reader.op_type in ("Shape", "Size"):
                    continue          # a shape, not the values
                for o in reader.output:
                    if o and o not in seen:
                        seen.add(o)
                        pending.append(o)
        return False
    for i, node in enumerate(graph.node):
        # (the data a node moves is its first input; a Concat joins all of them)
        reads = node.input if node.op_type == "Concat" else node.input[:1]
        if node.op_type in _RNN_OPS or not any(n in data for n in reads if n):
            continue
        label = _node_label(i, node)
        if node.op_type in ("Gather", "Split", "Expand"):
            raise UnsupportedOnnxError(
                f"{where}: {label} selects or repeats values of the model's data (an index, a "
                f"reversal or a permutation, say): a computation a fastrnn layer lacks; "
                f"loading the recurrent nodes alone would drop it")
        if node.op_type == "Slice" and not _state_slice(node, consts, consumers, nodes, Ds, onnx):
            raise UnsupportedOnnxError(
                f"{where}: {label} slices the model's data (a crop of time or of the batch, "
                f"say), other than the rows of the initial states each node of a stack reads; "
                f"loading the recurrent nodes alone would drop it")
        if node.op_type == "Concat" and reaches_input([o for o in node.output if o]):
            raise UnsupportedOnnxError(
                f"{where}: {label} joins values on the way to a recurrent node's input: a "
                f"computation a fastrnn layer lacks")


def _origins(graph, consts, name, producer=None):
    """Where the values of tensor ``name`` come from, back through the ops that move or select
    them (the path ops, Slice, Gather, Split, Expand and every input of a Concat): a set of
    ``("input", graph input)``, ``("constant", name)``, ``("zeros", label)`` for a
    ConstantOfShape (a nonzero fill is refused) and ``("node", label)`` for anything else: a
    recurrent node's output, a shape."""
    producer = _producers(graph) if producer is None else producer
    index = {id(n): i for i, n in enumerate(graph.node)}
    out, seen, pending = set(), set(), [name]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in consts:
            out.add(("constant", name))
            continue
        node = producer.get(name)
        if node is None:
            out.add(("input", name))
        elif node.op_type == "ConstantOfShape":
            out.add(("zeros", _node_label(index[id(node)], node)))
        elif node.op_type == "Concat":
            pending.extend(n for n in node.input if n)
        elif (node.op_type in _PATH_OPS or node.op_type in ("Slice", "Gather", "Split", "Expand")) \
                and node.input and node.input[0]:
            pending.append(node.input[0])
        else:
            out.add(("node", _node_label(index[id(node)], node)))
    return out


def _check_states_and_lengths(graph, consts, nodes, layers, where):
    """Refuse initial states that are computed in the graph (from the model's input, or a
    node's output: one node of a stack started from another's final state) rather than passed
    in or zero, and ``sequence_lens`` that the nodes of a stack do not all read alike: a fastrnn
    layer starts every node from zeros or from the state passed in, and applies one set of
    lengths to every layer."""
    producer = _producers(graph)
    data_inputs = {o for kind, o in _origins(graph, consts, nodes[0].input[0], producer)
                   if kind == "input"}

    def origins_of(spec, label, name, remedy):
        """The origins of input ``label`` (tensor ``name``), refused when computed."""
        origins = _origins(graph, consts, name, producer) if name else set()
        for kind, origin in sorted(origins):
            if kind == "node" or (kind == "input" and origin in data_inputs):
                what = (f"the output of {origin}" if kind == "node"
                        else f"the model's input {origin!r}")
                raise UnsupportedOnnxError(f"{spec['where']}: its {label} input {name!r} is "
                                           f"computed from {what}; {remedy}")
        return origins

    lengths = []
    for node, spec in zip(nodes, layers):
        inputs = dict(zip(_INPUTS[node.op_type], node.input))
        for label in ("initial_h", "initial_c"):
            origins_of(spec, label, inputs.get(label, ""), "a fastrnn layer starts each layer "
                                                           "from zeros or from the state passed in")
        name = inputs.get("sequence_lens", "")
        lengths.append((spec, name, origins_of(spec, "sequence_lens", name,
                                               "a fastrnn layer takes the lengths of each call")))
    first = lengths[0]
    for spec, name, origins in lengths[1:]:
        if origins != first[2]:
            said = lambda n: f"sequence_lens {n!r}" if n else "no sequence_lens"  # noqa: E731
            raise UnsupportedOnnxError(
                f"{spec['where']} reads {said(name)} but {first[0]['label']} reads "
                f"{said(first[1])}; a fastrnn layer applies one set of lengths to every layer "
                f"of its stack")


def _graph_batch_first(graph, node, layout):
    """Whether the graph reads its input batch first, as the first recurrent node ``node``
    (of ``layout``) sees it: the node's own layout, turned over by each transpose of time and
    batch (perm [1, 0, 2]) on the way from the graph's input to its X."""
    producer = _producers(graph)
    flipped = layout == 1
    name = node.input[0]
    for _ in range(16):
        prev = producer.get(name)
        if prev is None or not prev.input:
            break
        if prev.op_type == "Transpose" and _perm(prev) == [1, 0, 2]:
            flipped = not flipped
        name = prev.input[0]
    return flipped


def _plain_values(tensor, onnx):
    """A small constant's values (a shape, steps, a fill value) as an array; NaN where they
    cannot be read (then nothing compares equal to them)."""
    try:
        return np.asarray(onnx.numpy_helper.to_array(tensor))
    except Exception:  # noqa: BLE001 - external data, a malformed tensor: not a plain value
        return np.array([np.nan])


def _check_plumbing(graph, consts, where, onnx):
    """Refuse the data-movement ops that compute after all: a Gather, Expand, Concat or any
    other of them reading stored nonzero floats (an embedding's table, a learned initial
    state), a ConstantOfShape filling in a nonzero value, and a Slice that steps other than 1
    (torch.flip's time reversal): loading the recurrent nodes alone would drop what they do."""
    for i, node in enumerate(graph.node):
        if node.op_type in _RNN_OPS:
            continue
        label = _node_label(i, node)
        if node.op_type == "ConstantOfShape":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None and np.any(_plain_values(value, onnx)):
                raise UnsupportedOnnxError(
                    f"{where}: {label} fills a tensor with a nonzero value; a fastrnn layer "
                    f"starts from zeros or from the state passed in")
        if node.op_type == "Slice" and len(node.input) > 4 and node.input[4]:
            steps = consts.get(node.input[4])
            if steps is None or np.any(_plain_values(steps, onnx) != 1):
                raise UnsupportedOnnxError(
                    f"{where}: {label} slices with steps other than 1 (a reversal, say); "
                    f"loading the recurrent nodes alone would drop it")
        if node.op_type in ("Shape", "Size", "Identity"):
            continue
        for k, name in enumerate(node.input):
            if node.op_type == "Dropout" and k > 0:
                continue         # its ratio and mode: inference runs it as the identity
            tensor = consts.get(name)
            if tensor is None or tensor.data_type not in _FLOAT_TYPES:
                continue
            value = _array(tensor, f"{where}: {label}'s input {name!r}", onnx)
            if np.any(value):
                raise UnsupportedOnnxError(
                    f"{where}: {label} reads the stored numbers {name!r} {value.shape} (an "
                    f"embedding's table or a learned initial state, say): a computation a "
                    f"fastrnn layer lacks; extract the recurrent part first, e.g. with "
                    f"onnx.utils.extract_model")


def _metadata(model, kind, where):
    """The class name and config :func:`export` wrote, checked; ``(None, None)`` without them.

    The three ``fastrnn.*`` entries come together (a file written by fastrnn
    without them was truncated or edited); the format must be this one's,
    the class one of ``kind``, and the config a JSON object whose keys are
    known and whose values have the type :func:`export` writes.
    """
    props = {}
    for p in model.metadata_props:
        if p.key in props and p.key.startswith("fastrnn."):
            raise UnsupportedOnnxError(f"{where}: metadata {p.key!r} is given twice")
        props[p.key] = p.value
    keys = (META_CLASS, META_CONFIG, META_VERSION)
    present = [k for k in keys if k in props]
    if not present:
        if model.producer_name == "fastrnn":
            raise UnsupportedOnnxError(f"{where}: the model was written by fastrnn.onnx.export "
                                       f"(producer_name 'fastrnn') but lacks the metadata "
                                       f"{', '.join(keys)} export writes: the file is truncated "
                                       f"or was edited")
        return None, None
    if len(present) < len(keys):
        raise UnsupportedOnnxError(f"{where}: the model has the metadata {present} but not "
                                   f"{[k for k in keys if k not in present]}; export writes all "
                                   f"three (the file is truncated or was edited)")
    if props[META_VERSION] != str(_META_FORMAT):
        raise UnsupportedOnnxError(f"{where}: metadata {META_VERSION!r} is "
                                   f"{props[META_VERSION]!r}; this fastrnn reads format "
                                   f"{str(_META_FORMAT)!r}")
    cls = props[META_CLASS]
    if cls not in (kind, kind + "Cell"):
        raise UnsupportedOnnxError(f"{where}: metadata {META_CLASS!r} is {cls!r}, but the graph's "
                                   f"recurrent nodes are {kind}; expected {kind!r} or "
                                   f"{kind + 'Cell'!r}")

    def unique(pairs):
        out = {}
        for key, value in pairs:
            if key in out:
                raise ValueError(f"key {key!r} given twice")
            out[key] = value
        return out

    try:
        config = json.loads(props[META_CONFIG], object_pairs_hook=unique)
    except ValueError as exc:
        raise UnsupportedOnnxError(f"{where}: metadata {META_CONFIG!r} is not valid JSON ({exc}): "
                                   f"{props[META_CONFIG]!r}") from None
    if not isinstance(config, dict):
        raise UnsupportedOnnxError(f"{where}: metadata {META_CONFIG!r} must be a JSON object, but "
                                   f"is {props[META_CONFIG]!r}")
    for key, value in config.items():
        expected = _CONFIG_TYPES.get(key)
        if expected is None:
            raise UnsupportedOnnxError(f"{where}: metadata {META_CONFIG!r} has the unknown key "
                                       f"{key!r}; export writes {sorted(_CONFIG_TYPES)}")
        integer = isinstance(value, int) and not isinstance(value, bool)
        ok = {"int": integer, "bool": isinstance(value, bool), "str": isinstance(value, str),
              "number": (integer or isinstance(value, float)) and 0 <= value <= 1,
              "positive": (integer or isinstance(value, float)) and 0 < value < float("inf")
              and math.isfinite(_as_float(value)),
              "seed": value is None or (integer and value >= 0),
              "activations": _is_activation_list(value)}[expected]
        if not ok:
            allowed = _TYPE_NAMES[expected] + (" in [0, 1]" if expected == "number" else "")
            raise UnsupportedOnnxError(f"{where}: metadata {META_CONFIG!r} has {key}={value!r}; "
                                       f"expected {allowed}")
    return cls, config


def load(source, *, backend="auto", batch_first=None):
    """Read the RNN, LSTM or GRU nodes of an ONNX model into a fastrnn layer or cell.

    A model loads exactly as written or raises: every node of the graph must
    be understood (recurrent nodes of the default ONNX domain, and the
    data-movement ops exporters put around them), every attribute must be one
    of the operator's with a value ONNX defines, every weight a float tensor
    of the operator's shape, and the metadata :func:`export` writes must be
    complete and agree with the nodes.

    Parameters
    ----------
    source : str, os.PathLike, readable binary file object, or onnx.ModelProto
    backend : str
        The fastrnn backend of the new object.
    batch_first : bool, optional
        Override the layout.  By default it is the exported layer's, from
        the metadata :func:`export` writes, else the graph's: the nodes'
        ``layout`` attribute, turned over by each transpose of time and batch
        before the first node (a model that transposes around time-major
        nodes, as ``torch.onnx.export`` writes for ``batch_first=True``, loads
        as batch_first).

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
        The source is not an ONNX model (it does not decode, or holds no
        graph); the message names the source.
    UnsupportedOnnxError
        A model fastrnn cannot read exactly: no recurrent node; nodes that do
        not form one stack; a recurrent node outside the default ONNX domain;
        any other node but data-movement ops (e.g. a MatMul head), and those
        that select, repeat or join the data itself (a Gather, Slice, Split,
        Expand or Concat of the input or of an output: ``x[2:]``, ``y[-1]``;
        torch.onnx's slices of the initial states for each node of a stack
        load); names
        defined twice or never; text that is not UTF-8; fields protobuf
        does not know in the model, graph, nodes or tensors; attributes the
        operator lacks, of the wrong type or with values ONNX does not define
        (``layout=7``, ``direction="sideways"``); anything without a fastrnn
        equivalent: activations outside ONNX's set, an Affine, ScaledTanh or ThresholdedRelu
        without its alpha (the ONNX standard and onnxruntime read it differently), nonzero
        constant initial states, initial states computed in the graph (from the input, or
        from another node's final state), constant ``sequence_lens``, or ``sequence_lens``
        that the nodes of a stack do not all read; a missing W or
        R; weights computed in the graph instead of stored, of a data type
        other than FLOAT, DOUBLE or FLOAT16, or that do not decode to their
        shape; fastrnn metadata that is incomplete, not valid JSON, of
        another type than :func:`export` writes (booleans are JSON ``true``
        / ``false`` only), or that disagrees with the nodes.
    OSError
        The source cannot be opened (e.g. FileNotFoundError).
    """
    onnx = _import_onnx()
    if batch_first is not None:
        batch_first = _checks.check_bool("batch_first", batch_first)
    resolve(backend)      # a bad name is refused before the file is read

    model, where = _read_model(onnx, source)
    graph = model.graph
    _check_known_fields(model, onnx, where)
    _check_text(model, where)
    opset = _default_opset(model, where)
    recurrent = _recurrent_nodes(graph, where)
    consts = _constants(graph, onnx)
    # the nodes first: weights computed from stored ones (torch's opset 7) are named as such,
    # before the plumbing check would refuse the ops that compute them
    layers = [_parse_node(n, i, consts, opset, where, onnx) for i, n in recurrent]
    _check_plumbing(graph, consts, where, onnx)
    nodes = [n for _, n in recurrent]
    first = layers[0]
    for l, (spec, node) in enumerate(zip(layers[1:], nodes[1:]), start=1):
        for key in ("kind", "D", "reverse", "H", "activations", "reset_after", "input_forget",
                    "clip", "layout", "dtype"):
            if spec[key] != first[key]:
                raise UnsupportedOnnxError(f"{spec['where']} has {key}={spec[key]!r} but "
                                           f"{first['label']} has {first[key]!r}; fastrnn reads "
                                           f"a stack of equal recurrent nodes")
        if (spec["input_size"] != first["D"] * first["H"]
                or not _feeds(graph, node, nodes[l - 1], first["D"], first["layout"])):
            raise UnsupportedOnnxError(f"{spec['where']} is not fed by the output of "
                                       f"{layers[l - 1]['label']}; the graph's {len(nodes)} "
                                       f"recurrent nodes do not form one stack")
    _check_data_path(graph, consts, nodes, layers, where, onnx)
    _check_states_and_lengths(graph, consts, nodes, layers, where)
    meta_class, meta = _metadata(model, first["kind"], where)
    meta = meta or {}
    if batch_first is None and "batch_first" in meta and meta["batch_first"] != _graph_batch_first(
            graph, nodes[0], first["layout"]):
        raise UnsupportedOnnxError(
            f"{where}: metadata {META_CONFIG!r} has batch_first={meta['batch_first']!r}, but the "
            f"graph reads its input {'batch' if not meta['batch_first'] else 'time'} first")
    dtype = first["dtype"]
    if dtype == np.float16:
        dtype = np.dtype(np.float32)
    dtype = _common.float_dtype(dtype, f"{where}: the weights' dtype")
    bias = any(spec["bias"] for spec in layers)
    # peepholes when a node has nonzero ones, or when fastrnn's metadata says so (zeros then:
    # every node must have its P input)
    peepholes = any(spec["peepholes"] for spec in layers)
    if first["kind"] == "LSTM" and meta.get("peepholes") is True:
        lacking = [spec["label"] for spec in layers if not spec["has_p"]]
        if lacking:
            raise UnsupportedOnnxError(f"{where}: metadata {META_CONFIG!r} describes an LSTM with "
                                       f"peepholes, but {', '.join(lacking)} has no P input")
        peepholes = True
    cell = meta_class is not None and meta_class.endswith("Cell")
    if cell and (len(layers) != 1 or first["D"] != 1 or first["reverse"]):
        raise UnsupportedOnnxError(f"{where}: metadata {META_CLASS!r} is {meta_class!r}, but the "
                                   f"graph has {len(layers)} recurrent node(s) with {first['D']} "
                                   f"direction(s)" + (" run in reverse" if first["reverse"] else "")
                                   + "; a cell is one forward node")
    override = batch_first is not None
    if not override:
        # without fastrnn's metadata (another exporter's file, or an extract of one), as the
        # graph reads its input: the node's layout and the transposes before it (torch's
        # batch_first export transposes a time-major node's input)
        batch_first = meta.get("batch_first", _graph_batch_first(graph, nodes[0], first["layout"]))
    nonlinearity, activations = _layer_activations(first["kind"], first["activations"],
                                                   meta.get("activations"))
    options = dict(nonlinearity=nonlinearity, activations=activations, seed=meta.get("seed"),
                   reset_after=False if first["reset_after"] is False else None,
                   peepholes=True if peepholes else None,
                   input_forget=True if first["input_forget"] else None,
                   clip=_clip(first["clip"], meta.get("clip")))
    if not cell:
        options.update(num_layers=len(layers), bidirectional=first["D"] == 2,
                       batch_first=bool(batch_first), dropout=meta.get("dropout"),
                       reverse=True if first["reverse"] else None)
    obj = _common.build(first["kind"], cell=cell, input_size=first["input_size"],
                        hidden_size=first["H"], bias=bias, dtype=dtype, backend=backend, **options)
    config = obj.get_config()
    # get_config leaves these options out at their default: metadata without one describes the
    # default, which nodes with another value contradict
    for key, (default, what, nodes_have) in _OMITTED_AT_DEFAULT.items():
        if meta and config.get(key, default) != default and key not in meta:
            raise UnsupportedOnnxError(f"{where}: metadata {META_CONFIG!r} describes {what}, but "
                                       f"the graph's nodes have {nodes_have(config[key])}")
    for key, value in meta.items():
        if key == "batch_first" and override:
            continue
        if key not in config:
            if key in _OMITTED_AT_DEFAULT and key in inspect.signature(type(obj)).parameters:
                if value == _OMITTED_AT_DEFAULT[key][0]:
                    continue   # the default, written out
                raise UnsupportedOnnxError(f"{where}: metadata {META_CONFIG!r} has "
                                           f"{key}={value!r}, but the graph's nodes make "
                                           f"{key}={_OMITTED_AT_DEFAULT[key][0]!r}")
            raise UnsupportedOnnxError(f"{where}: metadata {META_CONFIG!r} has {key}={value!r}, "
                                       f"but a {type(obj).__name__} has no {key}")
        if config[key] != value:
            raise UnsupportedOnnxError(f"{where}: metadata {META_CONFIG!r} has {key}={value!r}, "
                                       f"but the graph's nodes make {key}={config[key]!r}")
    state = {}
    directions = [w for spec in layers for w in spec["directions"]]
    for names, w in zip(_common.direction_weights(obj), directions):
        for key, name in names.items():
            if name is None:
                continue
            value = w.get(key)
            if value is None:   # a missing bias, or peepholes a node of the stack lacks
                value = np.zeros((3, first["H"]) if key == "w_ph" else w["w_ih"].shape[:1],
                                 w["w_ih"].dtype)
            state[name] = value
    obj.load_state_dict(state, strict=True)
    return obj
