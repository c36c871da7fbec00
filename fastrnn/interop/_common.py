"""What the converters share: gate orders, and the weights of a fastrnn object per layer and direction.

fastrnn stores weights the way PyTorch does: ``weight_ih`` (G*H, I) and
``weight_hh`` (G*H, P) with the G gates stacked along the first axis, and two
biases.  Other libraries stack the same gates in another order (and Keras
transposes the matrices); :data:`GATE_ORDERS` spells every order out with
one letter per gate, so a conversion is one call to :func:`reorder_gates`.
"""

import numpy as np

from .. import _checks
from .. import activations as _acts
from ..celltypes import CELL_TYPES

#: gate order of each convention and cell kind, one letter per gate in fastrnn's (PyTorch's)
#: letters (i input, f forget, g cell candidate, o output; r reset, z update, n new), from
#: the table of cell types: {"fastrnn" | "torch" | "keras" | "onnx": {kind: order}}
GATE_ORDERS = {convention: {c.kind: c.orders[source] for c in CELL_TYPES.values()}
               for convention, source in (("fastrnn", "torch"), ("torch", "torch"),
                                          ("keras", "keras"), ("onnx", "onnx"))}

#: ONNX / Keras / fastrnn name of each cell kind
KINDS = tuple(c.kind for c in CELL_TYPES.values())


def reorder_gates(array, source, target, axis=0):
    """Restack the gate blocks of ``array`` from one gate order to another.

    Parameters
    ----------
    array : array-like of numbers
        Gates stacked along ``axis`` in ``source`` order, each block of equal size.
    source, target : str
        One letter per gate (see :data:`GATE_ORDERS`), each letter once, the
        same letters in another order.
    axis : int
        The axis the gates are stacked along.

    Returns
    -------
    ndarray
        A new C-contiguous array with the blocks in ``target`` order; values
        are moved, never computed, so the conversion is exact.
    """
    for name, order in (("source", source), ("target", target)):
        if not isinstance(order, str):
            raise TypeError(f"{name} must be a gate order, a str of one letter per gate (such as "
                            f"'ifgo'), but got {type(order).__name__} ({_checks.short(order)})")
        if not order or len(set(order)) != len(order):
            raise ValueError(f"{name} must be a gate order naming each gate once (one letter per "
                             f"gate, such as 'ifgo'), but got {_checks.short(order)}")
    if sorted(source) != sorted(target):
        raise ValueError(f"source {_checks.short(source)} and target {_checks.short(target)} "
                         f"must name the same gates in two orders")
    array = _checks.as_array("array", array, "an array-like of numbers")
    if array.dtype.kind not in "biufc":
        raise TypeError(f"array must hold numbers, but got an array of dtype {array.dtype}")
    if array.ndim == 0:
        raise ValueError(f"array must have an axis of stacked gates, but got a scalar "
                         f"({_checks.short(array.item())})")
    axis = _checks.check_axis("axis", axis, array.ndim)
    if array.shape[axis] % len(source):
        raise ValueError(f"array's axis {axis} of {array.shape[axis]} rows cannot hold "
                         f"{len(source)} equal gate blocks ({source!r}): array has shape "
                         f"{array.shape}")
    blocks = dict(zip(source, np.split(array, len(source), axis=axis)))
    return np.ascontiguousarray(np.concatenate([blocks[g] for g in target], axis=axis))


def describe_type(obj):
    """How an error names what it got: ``module.Class`` of an instance (``torch.nn.modules.rnn.
    LSTM``, not the ``LSTM`` a fastrnn class shares), and a class passed for an instance as
    such."""
    if isinstance(obj, type):
        return f"the class {obj.__module__}.{obj.__qualname__} (pass an instance)"
    cls = type(obj)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def kind_of(obj):
    """``"RNN"``, ``"LSTM"`` or ``"GRU"`` for a fastrnn layer or cell."""
    from ..cells import _CellBase
    from ..layers import RNNBase

    if isinstance(obj, RNNBase):
        return "RNN" if obj.mode.startswith("RNN") else obj.mode
    if isinstance(obj, _CellBase):
        return obj._type.kind
    raise TypeError(f"obj must be a fastrnn layer (RNN, LSTM, GRU) or cell (RNNCell, LSTMCell, "
                    f"GRUCell), but got {describe_type(obj)}")


def is_cell(obj):
    """Whether ``obj`` is a fastrnn one-step cell (rather than a sequence layer)."""
    from ..cells import _CellBase

    return isinstance(obj, _CellBase)


def activation_options(kind, per_direction):
    """The constructor arguments ``(nonlinearity, activations)`` of a layer or cell of ``kind``
    whose directions have the activations ``per_direction`` (a tuple of
    :class:`~fastrnn.activations.Activation` each): an RNN's tanh or relu in both directions is
    its ``nonlinearity``; PyTorch's defaults are no option at all; else one list for both
    directions when they agree, the forward's then the reverse's when they do not."""
    first = per_direction[0]
    same = all(p == first for p in per_direction)
    if kind == "RNN" and same and first[0].name in ("tanh", "relu"):
        return first[0].name, None
    if same and _acts.check_activations(kind.lower(), first) is None:
        return None, None
    return None, list(first if same else sum(per_direction, ()))


def direction_weights(obj):
    """The parameter names of every layer and direction, in fastrnn's order.

    Returns
    -------
    list of dict
        One dict per (layer, direction), index ``layer * D + direction``,
        with keys ``w_ih``, ``w_hh``, ``b_ih``, ``b_hh``, ``w_hr`` and ``w_ph`` mapping to
        a parameter name or ``None`` (no bias, no projection, no peepholes).  A cell gives a
        one-element list.
    """
    names = [obj._names] if is_cell(obj) else obj._weight_names
    keys = ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "w_ph")
    return [{k: (n[i] if i < len(n) else None) for i, k in enumerate(keys)} for n in names]


def build(kind, *, cell, input_size, hidden_size, bias, dtype, backend="auto", **options):
    """A new fastrnn layer or cell of ``kind`` (``"RNN"``, ``"LSTM"``, ``"GRU"``).

    ``options`` are the remaining constructor arguments (``num_layers``,
    ``bidirectional``, ``nonlinearity``, ...); ``None`` values are dropped.
    """
    import fastrnn.cells as cells
    import fastrnn.layers as layers

    cls = getattr(cells if cell else layers, kind + ("Cell" if cell else ""))
    options = {k: v for k, v in options.items() if v is not None}
    return cls(input_size=input_size, hidden_size=hidden_size, bias=bias, dtype=dtype,
               backend=backend, **options)


def float_dtype(dtype, what):
    """float32 or float64 as a numpy dtype (torch.float32 and torch.float64 too, as the
    constructors take them), with a message naming ``what`` otherwise; None is refused."""
    if dtype is None:
        raise ValueError(f"{what} must be float32 or float64, but got None")
    try:
        return _checks.check_dtype(dtype)
    except ValueError:
        raise ValueError(f"{what} must be float32 or float64, but got "
                         f"{_checks.short(dtype)}") from None
