"""Conversion to and from Keras 3: ``SimpleRNN``, ``LSTM``, ``GRU``, their cells, ``Bidirectional``.

Keras keeps, per cell, ``kernel`` (I, G*H), ``recurrent_kernel`` (H, G*H) and
``bias`` (G*H,), or (2, G*H) for ``GRU(reset_after=True)`` (row 0 the input
bias, row 1 the recurrent bias), as ``layer.get_weights()`` returns them.
A Keras ``GRU(reset_after=False)`` (the reset gate before the recurrent
product) is fastrnn's ``GRU(reset_after=False)``, and back.
fastrnn keeps PyTorch's layout: ``weight_ih`` (G*H, I), ``weight_hh``
(G*H, H), ``bias_ih`` and ``bias_hh`` (G*H,).  A conversion transposes the
matrices and restacks the gates:

=====  ===================  ==================
cell   Keras gate order     fastrnn gate order
=====  ===================  ==================
LSTM   i, f, c, o           i, f, g, o (same)
GRU    z, r, h              r, z, n
=====  ===================  ==================

Keras's single bias (SimpleRNN, LSTM, GRU with ``reset_after=False``)
becomes ``bias_ih`` with ``bias_hh = 0``; exporting writes ``bias_ih +
bias_hh`` (which enter those cells' pre-activations alike).

Keras's ``activation`` and ``recurrent_activation`` become fastrnn's ``activations``
(``recurrent_activation`` is the slot f of the gates, ``activation`` the slot g and, for the
LSTM, h): ``tanh``, ``sigmoid``, ``relu``, ``linear``, ``elu``, ``softsign``, ``softplus``,
``leaky_relu`` (negative slope 0.2) and ``hard_sigmoid``, which is ``relu6(x + 3) / 6`` in
Keras 3 (``("hard_sigmoid", 1/6, 0.5)``) and ``clip(0.2 x + 0.5, 0, 1)`` in Keras 2
(``tf_keras``: ``("hard_sigmoid", 0.2, 0.5)``).

Keras layers are batch-major: a layer imported from Keras has
``batch_first=True``.  Keras's ``dropout``/``recurrent_dropout`` (on inputs
and states) have no fastrnn counterpart and are not carried over (inference
is unaffected).  keras is imported inside :func:`to_keras` only; the other
functions recognise Keras objects by their classes without importing it.
"""

import os
import warnings

import numpy as np

from .. import _checks
from .. import activations as _acts
from ..celltypes import by_kind
from . import _common

_KERAS_MODULES = ("keras", "tf_keras", "tensorflow")
_CELL_KINDS = {"SimpleRNNCell": "RNN", "LSTMCell": "LSTM", "GRUCell": "GRU"}
_LAYER_NAMES = {"RNN": "SimpleRNN", "LSTM": "LSTM", "GRU": "GRU"}
# options of Keras's recurrent layers that its cells do not take
_LAYER_ONLY = {"return_sequences", "return_state", "stateful", "unroll", "zero_output_for_mask",
               "use_cudnn"}

def _keras_class(obj):
    """The first Keras class name in ``obj``'s MRO among the ones we handle, else None."""
    wanted = ("Bidirectional", "StackedRNNCells", "RNN", *_CELL_KINDS)
    for klass in type(obj).__mro__:
        if klass.__module__.split(".")[0] in _KERAS_MODULES and klass.__name__ in wanted:
            return klass.__name__
    return None


def _warn_if_call_overridden(obj, where, stacklevel):
    """A subclass of a Keras layer or cell that overrides its ``call`` computes something of
    its own, which the import does not see: it converts as that Keras class, with a warning."""
    stock = next((k for k in type(obj).__mro__
                  if k.__module__.split(".")[0] in _KERAS_MODULES), None)
    if stock is not None and type(obj).call is not stock.call:
        warnings.warn(f"{where}: {type(obj).__qualname__} overrides call() of Keras's "
                      f"{stock.__name__}; it is imported as a {stock.__name__}, without what "
                      f"its own call() adds", UserWarning, stacklevel=stacklevel + 1)


def _activation_name(fn):
    return getattr(fn, "__name__", None) or repr(fn)


#: Keras 3's activation functions fastrnn has, by name
_FROM_KERAS = {"tanh": "tanh", "sigmoid": "sigmoid", "relu": "relu", "linear": ("affine", 1.0, 0.0),
               "hard_sigmoid": ("hard_sigmoid", 1 / 6, 0.5), "elu": ("elu", 1.0),
               "softsign": "softsign", "softplus": "softplus", "leaky_relu": ("leaky_relu", 0.2)}
#: Keras 2 (tf_keras, tensorflow.keras) differs in one: hard_sigmoid is clip(0.2 x + 0.5, 0, 1)
_FROM_KERAS2 = dict(_FROM_KERAS, hard_sigmoid=("hard_sigmoid", 0.2, 0.5))


def _keras_activation(fn, what):
    """The :class:`~fastrnn.activations.Activation` of a Keras activation function."""
    name = _activation_name(fn)
    keras2 = getattr(fn, "__module__", "").split(".")[0] in ("tf_keras", "tensorflow")
    spec = (_FROM_KERAS2 if keras2 else _FROM_KERAS).get(name)
    if spec is None:
        raise ValueError(f"{what}={name!r} is not supported; fastrnn has the Keras activations "
                         f"{', '.join(sorted(_FROM_KERAS))}")
    return _acts.activation(spec)


def _to_keras_activation(act, what):
    """The Keras 3 activation name equal to ``act`` (an Activation), or ValueError."""
    for name, spec in _FROM_KERAS.items():
        if _acts.activation(spec) == act:
            return name
    raise ValueError(f"{what} {act!r} has no equal among Keras 3's activations (its "
                     f"hard_sigmoid is ('hard_sigmoid', 1/6, 0.5), its leaky_relu "
                     f"('leaky_relu', 0.2), linear ('affine', 1, 0)); export to ONNX")


def _keras_options(obj, kind):
    """The Keras ``activation`` / ``recurrent_activation`` arguments of ``obj``'s layers, or
    ValueError when Keras cannot express its activations."""
    acts = getattr(obj, "activations", None)
    if acts is None:
        return {"activation": obj.nonlinearity} if kind == "RNN" else {}
    S = len(_acts.SLOTS[kind.lower()])
    name = type(obj).__name__
    if len(acts) != S:
        raise ValueError(f"{name}(activations={acts}) cannot be exported to Keras: its two "
                         f"directions differ, and Keras's Bidirectional takes one layer "
                         f"configuration (export to ONNX)")
    if kind == "RNN":
        return {"activation": _to_keras_activation(acts[0], f"{name}: activation")}
    if kind == "LSTM" and acts[1] != acts[2]:
        raise ValueError(f"{name}(activations={acts}) cannot be exported to Keras: Keras's LSTM "
                         f"uses its one activation for the candidate (g) and the output (h) "
                         f"(export to ONNX)")
    return {"activation": _to_keras_activation(acts[1], f"{name}: activation (g)"),
            "recurrent_activation": _to_keras_activation(acts[0],
                                                         f"{name}: recurrent_activation (f)")}


def _cell_spec(cell, where):
    """Kind, sizes, options and fastrnn-layout weights of one built Keras cell."""
    kind = _CELL_KINDS.get(_keras_class(cell))
    if kind is None:
        raise TypeError(f"{where}: expected a Keras SimpleRNNCell, LSTMCell or GRUCell, "
                        f"but got {_common.describe_type(cell)}")
    if not getattr(cell, "built", False):
        raise ValueError(f"{where} has no weights yet: build it first (call it on an input, "
                         f"or call .build(input_shape))")
    _warn_if_call_overridden(cell, where, 4)
    act = _keras_activation(cell.activation, f"{where}: activation")
    if kind == "RNN":
        acts = (act,)
    else:
        rec = _keras_activation(cell.recurrent_activation, f"{where}: recurrent_activation")
        acts = (rec, act, act) if kind == "LSTM" else (rec, act)
    reset_after = bool(getattr(cell, "reset_after", True)) if kind == "GRU" else None
    if getattr(cell, "dropout", 0) or getattr(cell, "recurrent_dropout", 0):
        warnings.warn(f"{where}: Keras dropout={cell.dropout}, recurrent_dropout="
                      f"{cell.recurrent_dropout} act on inputs and states and have no fastrnn "
                      f"counterpart; the imported layer has dropout=0 (inference is unaffected)",
                      UserWarning, stacklevel=4)
    # (bfloat16 weights, ml_dtypes' type, as float32: exactly, and numbers NumPy computes with)
    weights = [np.asarray(w) for w in cell.get_weights()]
    weights = [w.astype(np.float32) if w.dtype.name == "bfloat16" else w for w in weights]
    units, bias = int(cell.units), bool(cell.use_bias)
    return dict(kind=kind, units=units, bias=bias, activations=acts,
                reset_after=reset_after, input_size=int(weights[0].shape[0]),
                dtype=weights[0].dtype,
                weights=from_keras_arrays(kind, weights, units, bias, where,
                                          reset_after is not False))


def from_keras_arrays(kind, weights, units, use_bias, where="weights", reset_after=True):
    """Keras ``get_weights()`` arrays of one cell as fastrnn (PyTorch) arrays.

    Parameters
    ----------
    kind : {"RNN", "LSTM", "GRU"}
    weights : list of ndarray
        ``[kernel, recurrent_kernel]`` plus ``bias`` when ``use_bias``;
        a GRU bias is (2, 3H) with ``reset_after=True``, (3H,) without.
    units : int
    use_bias : bool
    where : str
        How to name the source in error messages.
    reset_after : bool
        The GRU's ``reset_after`` (the other kinds ignore it).

    Returns
    -------
    dict
        ``w_ih`` (G*H, I), ``w_hh`` (G*H, H), ``b_ih``, ``b_hh`` (G*H,) or ``None``.
    """
    reset_after = _checks.check_bool("reset_after", reset_after)
    G = by_kind(kind).gates
    GH = G * units
    expected = 3 if use_bias else 2
    if len(weights) != expected:
        raise ValueError(f"{where}: expected {expected} arrays (kernel, recurrent_kernel"
                         f"{', bias' if use_bias else ''}), but got {len(weights)}")
    kernel, recurrent = weights[0], weights[1]
    if kernel.ndim != 2 or kernel.shape[1] != GH:
        raise ValueError(f"{where}: kernel must have shape (input_size, {GH}), but got {kernel.shape}")
    if recurrent.shape != (units, GH):
        raise ValueError(f"{where}: recurrent_kernel must have shape ({units}, {GH}), "
                         f"but got {recurrent.shape}")
    src, dst = _common.GATE_ORDERS["keras"][kind], _common.GATE_ORDERS["fastrnn"][kind]
    out = {"w_ih": _common.reorder_gates(kernel.T, src, dst),
           "w_hh": _common.reorder_gates(recurrent.T, src, dst), "b_ih": None, "b_hh": None}
    if use_bias:
        bias = weights[2]
        if kind == "GRU" and reset_after:
            if bias.shape != (2, GH):
                raise ValueError(f"{where}: a GRU bias (reset_after=True) must have shape "
                                 f"(2, {GH}), but got {bias.shape}")
            out["b_ih"] = _common.reorder_gates(bias[0], src, dst)
            out["b_hh"] = _common.reorder_gates(bias[1], src, dst)
        else:
            if bias.shape != (GH,):
                raise ValueError(f"{where}: bias must have shape ({GH},), but got {bias.shape}")
            out["b_ih"] = _common.reorder_gates(bias, src, dst)
            out["b_hh"] = np.zeros_like(out["b_ih"])
    return out


def to_keras_arrays(kind, w_ih, w_hh, b_ih=None, b_hh=None, reset_after=True):
    """fastrnn (PyTorch) arrays of one cell as the list Keras ``set_weights()`` takes.

    Returns
    -------
    list of ndarray
        ``[kernel (I, G*H), recurrent_kernel (H, G*H)]`` plus the bias:
        ``b_ih + b_hh`` (G*H,) for SimpleRNN, LSTM and GRU with ``reset_after=False``,
        ``stack([b_ih, b_hh])`` (2, 3H) for GRU (reset_after=True); no bias when ``b_ih``
        is None.
    """
    reset_after = _checks.check_bool("reset_after", reset_after)
    src, dst = _common.GATE_ORDERS["fastrnn"][kind], _common.GATE_ORDERS["keras"][kind]
    out = [np.ascontiguousarray(_common.reorder_gates(w_ih, src, dst).T),
           np.ascontiguousarray(_common.reorder_gates(w_hh, src, dst).T)]
    if b_ih is not None:
        if kind == "GRU" and reset_after:
            out.append(np.stack([_common.reorder_gates(b_ih, src, dst),
                                 _common.reorder_gates(b_hh, src, dst)]))
        else:
            out.append(_common.reorder_gates(b_ih + b_hh, src, dst))
    return out


def _layer_specs(item, where, flipped=False):
    """The per-direction cell specs of each stacked layer inside one Keras object.

    Every spec of a unidirectional layer also says whether that layer runs backwards in the
    time of the original input (``"backwards"``).  ``flipped``: whether the sequence ``item``
    reads is in reversed time (Keras's ``go_backwards=True`` layers return their sequence
    flipped, and the next layer reads it so).  Returns ``(layers, flipped)``, the second for
    the sequence ``item`` returns.
    """
    name = _keras_class(item)
    if name is not None:
        _warn_if_call_overridden(item, where, 3)
    if name == "RNN" and getattr(item, "stateful", False):
        warnings.warn(f"{where}: stateful=True carries the last state of one call into the "
                      f"next; fastrnn's layers keep none between calls: pass it on yourself "
                      f"(out, state = layer(x, state))", UserWarning, stacklevel=3)
    if name == "Bidirectional":
        if item.merge_mode != "concat":
            raise ValueError(f"{where}: Bidirectional(merge_mode={item.merge_mode!r}) is not "
                             f"supported; fastrnn (like PyTorch) concatenates the two directions "
                             f"(merge_mode='concat'); other merges can be applied to the two "
                             f"halves of the output of the imported layer")
        fwd, bwd = item.forward_layer, item.backward_layer
        if getattr(fwd, "go_backwards", False) or not getattr(bwd, "go_backwards", True):
            raise ValueError(f"{where}: the forward layer of a Bidirectional must run forwards "
                             f"and the backward layer backwards")
        if flipped:
            raise ValueError(f"{where}: a Bidirectional above a go_backwards=True layer reads its "
                             f"sequence in reversed time: its directions would be swapped")
        f, _ = _layer_specs(fwd, f"{where}.forward_layer")
        b, _ = _layer_specs(bwd, f"{where}.backward_layer")
        if len(f) != 1 or len(b) != 1 or len(f[0]) != 1 or len(b[0]) != 1:
            raise ValueError(f"{where}: Bidirectional over stacked or nested layers is not supported")
        return [[f[0][0], b[0][0]]], False
    if name == "RNN":
        backwards = flipped != bool(getattr(item, "go_backwards", False))
        cell = item.cell
        if _keras_class(cell) == "StackedRNNCells":
            specs = [[_cell_spec(c, f"{where}.cell.cells[{i}]")] for i, c in enumerate(cell.cells)]
        else:
            specs = [[_cell_spec(cell, f"{where}.cell")]]
        for (spec,) in specs:
            spec["backwards"] = backwards
        return specs, backwards
    raise TypeError(f"{where}: expected a Keras SimpleRNN, LSTM, GRU, RNN or Bidirectional "
                    f"layer (or a list of them), or a SimpleRNNCell, LSTMCell or GRUCell, but "
                    f"got {_common.describe_type(item)}")


def _target_dtype(dtype, weights_dtype):
    """The fastrnn dtype of an import: ``dtype`` if given, else that of the Keras weights
    (float16 widened to float32, which holds it exactly, as from_torch does; _cell_spec has
    made bfloat16 weights float32 already)."""
    if dtype is not None:
        return _common.float_dtype(dtype, "dtype")
    name = getattr(weights_dtype, "name", str(weights_dtype))
    if name == "float16":
        return np.dtype(np.float32)
    return _common.float_dtype(name, "the Keras layer's dtype (that of its weights)")


def from_keras(obj, *, dtype=None, backend="auto"):
    """A fastrnn layer or cell with the weights of a built Keras 3 recurrent layer.

    Parameters
    ----------
    obj : Keras layer, cell, or list of layers
        ``SimpleRNN``, ``LSTM``, ``GRU`` (either ``reset_after``), ``RNN`` over
        one of their cells or a ``StackedRNNCells``, ``Bidirectional``
        (``merge_mode="concat"``) over one of those; a list of such layers
        stacked one on the other (each ``return_sequences=True`` but the
        last) becomes one fastrnn layer with ``num_layers=len(obj)``; a
        ``SimpleRNNCell``, ``LSTMCell`` or ``GRUCell`` becomes a fastrnn cell.
        Layers must be built (have weights).
    dtype : float32 or float64, optional
        Default: the dtype of the Keras weights.
    backend : str
        The fastrnn backend of the new object.

    Returns
    -------
    fastrnn.RNN, LSTM, GRU (``batch_first=True``), or RNNCell, LSTMCell, GRUCell
        Its output sequence is Keras's output with ``return_sequences=True``;
        Keras's ``return_sequences=False`` output is ``out[:, -1]`` for a
        unidirectional layer and the concatenated final states
        ``concat(h_n[-2], h_n[-1])`` for a bidirectional one.  Layers that run
        backwards in the input's time (``go_backwards=True`` on the first
        layer, or on a single ``RNN`` over ``StackedRNNCells``) give a
        ``reverse=True`` layer, whose ``out[:, t]`` is aligned with ``x[:, t]``:
        Keras returns that sequence flipped (``out[:, ::-1]``), and its
        ``return_sequences=False`` output is ``out[:, 0]`` (``h_n[-1]``).

    Raises
    ------
    ValueError
        Activations fastrnn lacks (see the module docstring), ``merge_mode`` other than
        ``"concat"``, stacked layers that do not all run the same way in the
        input's time (``go_backwards=True`` on two stacked layers), an
        unbuilt layer, or stacked layers that do not fit together.
    TypeError
        ``obj`` is not a supported Keras object.
    """
    if _keras_class(obj) in _CELL_KINDS:
        spec = _cell_spec(obj, type(obj).__name__)
        target = _target_dtype(dtype, spec["dtype"])
        nonlinearity, activations = _common.activation_options(spec["kind"],
                                                               [spec["activations"]])
        cell = _common.build(spec["kind"], cell=True, input_size=spec["input_size"],
                             hidden_size=spec["units"], bias=spec["bias"], dtype=target,
                             backend=backend, nonlinearity=nonlinearity, activations=activations,
                             reset_after=False if spec["reset_after"] is False else None)
        _load(cell, [spec["weights"]])
        return cell
    items = list(obj) if isinstance(obj, (list, tuple)) else [obj]
    if not items:
        raise ValueError("from_keras got an empty list of layers")
    layers, flipped = [], False
    for i, item in enumerate(items):
        name = item.__name__ if isinstance(item, type) else type(item).__name__
        where = name if len(items) == 1 else f"layers[{i}] ({name})"
        specs, flipped = _layer_specs(item, where, flipped)
        layers.extend(specs)
        inner = [item] if _keras_class(item) != "Bidirectional" else [item.forward_layer,
                                                                      item.backward_layer]
        if i < len(items) - 1 and not all(getattr(k, "return_sequences", True) for k in inner):
            raise ValueError(f"{where} has return_sequences=False: it gives the last step "
                             f"alone, which the layer above cannot read as a sequence (Keras "
                             f"itself cannot stack them); every layer but the last must return "
                             f"sequences")
    first = layers[0][0]
    D = len(layers[0])
    reverse = D == 1 and first["backwards"]
    if D == 1 and any(spec["backwards"] != reverse for (spec,) in layers):
        runs = ", ".join("backwards" if spec["backwards"] else "forwards" for (spec,) in layers)
        raise ValueError(f"the stacked layers run {runs} in the time of the input (a "
                         f"go_backwards=True layer returns its sequence flipped, and the next "
                         f"layer reads it so); a fastrnn layer runs all its layers one way: "
                         f"go_backwards=True on the first layer alone runs them all backwards")
    for l, directions in enumerate(layers):
        if len(directions) != D:
            raise ValueError(f"stacked layer {l} has {len(directions)} direction(s) but layer 0 "
                             f"has {D}: mix of Bidirectional and unidirectional layers")
        for d, spec in enumerate(directions):
            if spec["activations"] != layers[0][d]["activations"]:
                raise ValueError(f"stacked layer {l} has the activations "
                                 f"{spec['activations']} but layer 0 has "
                                 f"{layers[0][d]['activations']}; a fastrnn layer needs them "
                                 f"equal")
            for key in ("kind", "units", "bias", "reset_after"):
                if spec[key] != first[key]:
                    if l == 0:      # the two directions of one Bidirectional
                        raise ValueError(f"the Bidirectional's backward_layer has "
                                         f"{key}={spec[key]!r} but its forward_layer has "
                                         f"{key}={first[key]!r}; a fastrnn layer needs them "
                                         f"equal")
                    raise ValueError(f"stacked layer {l} has {key}={spec[key]!r} but layer 0 has "
                                     f"{key}={first[key]!r}; a fastrnn layer needs them equal")
            want = first["input_size"] if l == 0 else D * first["units"]
            if spec["input_size"] != want:
                raise ValueError(f"stacked layer {l} takes {spec['input_size']} input features, "
                                 f"but the layer below gives {want}")
    target = _target_dtype(dtype, first["dtype"])
    nonlinearity, activations = _common.activation_options(
        first["kind"], [spec["activations"] for spec in layers[0]])
    layer = _common.build(first["kind"], cell=False, input_size=first["input_size"],
                          hidden_size=first["units"], bias=first["bias"], dtype=target,
                          backend=backend, num_layers=len(layers), batch_first=True,
                          bidirectional=D == 2, nonlinearity=nonlinearity,
                          activations=activations,
                          reverse=True if reverse else None,
                          reset_after=False if first["reset_after"] is False else None)
    _load(layer, [spec["weights"] for directions in layers for spec in directions])
    return layer


def _load(obj, per_direction):
    """Load a list of fastrnn-layout weight dicts (index layer * D + direction) into ``obj``."""
    state = {}
    for names, weights in zip(_common.direction_weights(obj), per_direction):
        for key, name in names.items():
            if name is not None:
                state[name] = weights[key]
    obj.load_state_dict(state, strict=True)


def keras_weights(obj):
    """The Keras ``set_weights()`` lists of a fastrnn layer or cell.

    Needs no Keras: this is the conversion alone, for a Keras layer you build
    yourself: ``SimpleRNN``/``LSTM``/``GRU`` with the same units, ``use_bias``,
    ``activation``, ``recurrent_activation`` and ``reset_after``, wrapped in
    ``Bidirectional`` when the layer is bidirectional; for ``reverse=True``, the
    first layer of the stack with ``go_backwards=True`` (Keras then returns its
    sequence flipped in time, which the next layers read as it is, and which you
    flip back for fastrnn's output).  :func:`to_keras` builds all of that.

    Parameters
    ----------
    obj : fastrnn.RNN, LSTM, GRU or a cell

    Returns
    -------
    list of list of ndarray
        One list per stacked layer (one for a cell): ``[kernel,
        recurrent_kernel, bias]`` (no bias with ``bias=False``), the forward
        direction's arrays followed by the backward direction's for a
        bidirectional layer (the order of ``Bidirectional.get_weights()``).

    Raises
    ------
    ValueError
        An LSTM with ``proj_size > 0`` (Keras has no projection), ``peepholes=True`` or
        ``input_forget=True`` (Keras 3's LSTM has neither); a ``clip`` (Keras has none);
        activations Keras 3 lacks, an LSTM whose g and h differ, or directions whose
        activations differ.
    """
    kind = _common.kind_of(obj)
    if getattr(obj, "proj_size", 0):
        raise ValueError(f"an LSTM with proj_size={obj.proj_size} cannot be exported to Keras: "
                         f"Keras's LSTM has no projection")
    for option, what in (("peepholes", "peephole connections"),
                         ("input_forget", "coupled input and forget gates")):
        if getattr(obj, option, False):
            raise ValueError(f"{type(obj).__name__}({option}=True) cannot be exported to Keras: "
                             f"Keras 3's LSTM has no {what} (export to ONNX)")
    if getattr(obj, "clip", None) is not None:
        raise ValueError(f"{type(obj).__name__}(clip={obj.clip}) cannot be exported to Keras: "
                         f"Keras 3's recurrent layers have no cell clip (export to ONNX)")
    _keras_options(obj, kind)
    params = obj.parameters()
    reset_after = getattr(obj, "reset_after", True)
    per_direction = [to_keras_arrays(kind, *(None if n is None else params[n].copy()
                                             for n in (names["w_ih"], names["w_hh"],
                                                       names["b_ih"], names["b_hh"])),
                                     reset_after=reset_after)
                     for names in _common.direction_weights(obj)]
    D = 1 if _common.is_cell(obj) else obj.num_directions
    return [sum(per_direction[l * D:(l + 1) * D], []) for l in range(len(per_direction) // D)]


def to_keras(obj, *, batch_size=None, **layer_kwargs):
    """Equivalent built Keras 3 layer(s) or cell for a fastrnn layer or cell.

    Parameters
    ----------
    obj : fastrnn.RNN, LSTM, GRU or a cell
    batch_size : int, optional
        The batch size the layers are built for: required with ``stateful=True`` (Keras
        keeps a stateful layer's states for a fixed batch), else the batch is any.
    **layer_kwargs
        More arguments of the Keras recurrent layers (``return_state``,
        ``stateful``, ...), or of the Keras cell for a cell (``name``,
        ``dropout``, ...).  ``return_sequences`` (default True, the output
        fastrnn gives) and ``return_state`` apply to the last layer of a
        stack; the others return their sequences alone, so that the list
        chains (``keras.Sequential``), and a ``name`` becomes each layer's
        name with ``_l0``, ``_l1``, ... added.  Arguments that would change what the
        layer computes (``units``, ``activation``, ``go_backwards``, ...)
        are refused: they are the fastrnn object's.

    Returns
    -------
    keras layer, list of keras layers, or keras cell
        ``SimpleRNN``/``LSTM``/``GRU`` (with the layer's ``reset_after``), wrapped in
        ``Bidirectional(merge_mode="concat")`` when bidirectional, built for
        inputs of ``input_size`` features, with the weights set; one layer
        per stacked layer (a list when ``num_layers > 1``; for a
        ``reverse=True`` layer the first has ``go_backwards=True``, and the
        output sequence of the last is fastrnn's flipped in time); a
        ``SimpleRNNCell``/``LSTMCell``/``GRUCell`` for a cell.  Keras layers
        are batch-major whatever ``obj.batch_first`` is; ``dropout`` is not
        carried over.
    """
    try:
        import keras
    except ImportError as exc:
        missing = (exc.name or "keras").split(".")[0]
        backends = {"tensorflow", "torch", "jax", os.environ.get("KERAS_BACKEND", "")}
        if missing != "keras" and missing in backends:   # Keras is there; its backend is not
            raise ImportError(f"to_keras: Keras is installed, but not its backend "
                              f"{missing!r} ({exc}): install it, or choose another backend "
                              f"with the environment variable KERAS_BACKEND before importing "
                              f"Keras (for example KERAS_BACKEND=torch with PyTorch's CPU "
                              f"build)") from None
        if missing != "keras":
            raise ImportError(f"to_keras: Keras is installed but cannot be imported: its "
                              f"dependency {missing!r} is missing ({exc})") from None
        raise ImportError(f"to_keras needs Keras 3 ({exc}); install it with pip install keras, "
                          f"and choose its backend with the environment variable KERAS_BACKEND "
                          f"(for example KERAS_BACKEND=torch) before importing it") from None
    kind = _common.kind_of(obj)
    weights = keras_weights(obj)
    options = dict(dtype=obj.dtype.name, use_bias=obj.bias, **_keras_options(obj, kind))
    if kind == "GRU":
        options["reset_after"] = obj.reset_after
    layer_kwargs = dict(layer_kwargs)
    # what the layer computes is obj's: an argument that would change it is refused, not
    # passed on to make a Keras layer with obj's weights that computes something else
    fixed = sorted(set(layer_kwargs) & ({"units", "activation", "recurrent_activation",
                                         "go_backwards", "time_major"} | set(options)))
    if fixed:
        raise ValueError(f"to_keras: {', '.join(fixed)} would change what the Keras layer "
                         f"computes, which is {obj!r}'s (set it on the fastrnn layer instead: "
                         f"activations, reverse, ...); layer_kwargs may only add Keras's own "
                         f"options (return_state, stateful, ...)")
    if _common.is_cell(obj):
        layer_only = sorted(set(layer_kwargs) & _LAYER_ONLY
                            | ({"batch_size"} if batch_size is not None else set()))
        if layer_only:
            raise ValueError(f"to_keras: {', '.join(layer_only)} are options of a Keras "
                             f"recurrent layer, and {type(obj).__name__} converts to a Keras "
                             f"cell; a cell takes its own options only (name, dropout, "
                             f"kernel_regularizer, ...)")
        cell = getattr(keras.layers, _LAYER_NAMES[kind] + "Cell")(obj.hidden_size, **options,
                                                                  **layer_kwargs)
        cell.build((None, obj.input_size))
        cell.set_weights(weights[0])
        return cell
    if batch_size is not None:
        batch_size = _checks.check_int("batch_size", batch_size)
    if layer_kwargs.get("stateful", False) and batch_size is None:
        raise ValueError("to_keras: stateful=True needs batch_size: Keras keeps a stateful "
                         "layer's states for a fixed batch (to_keras(layer, stateful=True, "
                         "batch_size=32))")
    # the last layer's outputs are the stack's: the layers before it feed their sequences on
    last = {"return_sequences": layer_kwargs.pop("return_sequences", True),
            "return_state": layer_kwargs.pop("return_state", False)}
    name = layer_kwargs.pop("name", None)
    out, D, L = [], obj.num_directions, obj.num_layers
    for l in range(L):
        layer_kwargs_l = dict(layer_kwargs, **(last if l == L - 1 else {}))
        if l == 0 and getattr(obj, "reverse", False):
            # the first layer reads x backwards and returns its sequence flipped; the next
            # ones read that forwards: backwards in the input's time, as fastrnn's do
            layer_kwargs_l["go_backwards"] = True
        if name is not None:
            layer_kwargs_l["name"] = name if L == 1 else f"{name}_l{l}"
        layer_kwargs_l.setdefault("return_sequences", True)
        layer = getattr(keras.layers, _LAYER_NAMES[kind])(
            obj.hidden_size, **options, **layer_kwargs_l)
        if D == 2:
            named = {"name": layer_kwargs_l["name"]} if name is not None else {}
            layer = keras.layers.Bidirectional(layer, merge_mode="concat", dtype=obj.dtype.name,
                                               **named)
        in_features = obj.input_size if l == 0 else D * obj.hidden_size
        layer.build((batch_size, None, in_features))
        layer.set_weights(weights[l])
        out.append(layer)
    return out[0] if len(out) == 1 else out
