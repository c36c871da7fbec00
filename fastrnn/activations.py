"""The activation functions a cell may use in place of its defaults: ONNX's set, one table.

A cell has one activation per *slot*: the RNN one (f: its output), the GRU two (f: the
reset and update gates; g: the new gate n), the LSTM three (f: the input, forget and output
gates; g: the cell candidate; h: the cell state's output, ``o * h(c_t)``).  PyTorch's
cells use f = sigmoid (tanh for the RNN), g = h = tanh; ONNX lets a model name any of the
functions below for each slot, with the parameters ``alpha`` and ``beta``, per direction.

====================  ==================  ===============================  ===============
fastrnn name          ONNX name           y = f(x)                         alpha, beta
====================  ==================  ===============================  ===============
``sigmoid``           Sigmoid             1 / (1 + exp(-x))
``tanh``              Tanh                tanh(x)
``relu``              Relu                max(x, 0)
``affine``            Affine              alpha * x + beta                 1, 0
``leaky_relu``        LeakyRelu           x if x >= 0 else alpha * x       0.01 (>= 0)
``thresholded_relu``  ThresholdedRelu     x if x > alpha else 0            1
``scaled_tanh``       ScaledTanh          alpha * tanh(beta * x)           1, 1
``hard_sigmoid``      HardSigmoid         min(max(alpha * x + beta, 0), 1) 0.2, 0.5
``elu``               Elu                 x if x >= 0 else alpha*(e^x-1)   1 (>= 0)
``softsign``          Softsign            x / (1 + abs(x))
``softplus``          Softplus            log(1 + exp(x))
====================  ==================  ===============================  ===============

The default parameters are those of the ONNX operators of the same name (the ONNX
standard's rule for ``activation_alpha``); onnxruntime reads a missing alpha of Affine,
ScaledTanh and ThresholdedRelu as 0 instead, so :mod:`fastrnn.onnx` always writes them.
Keras 3's ``hard_sigmoid`` is ``relu6(x + 3) / 6``: ``hard_sigmoid`` with alpha 1/6,
beta 0.5 (Keras 2's was alpha 0.2, beta 0.5).

Gradients are computed from the activation's *output* y (the kernels keep the activated
gates, not the pre-activations), which determines the derivative of each function above
everywhere except at single points.  At the points where the derivative is not defined the
convention is PyTorch's: relu, leaky_relu and elu take the left derivative at 0 (0, alpha,
alpha), hard_sigmoid's derivative is 0 at its two corners (as ``torch.nn.functional.
hardsigmoid``), thresholded_relu's is 0 at its threshold.  The output does not determine the
input when leaky_relu's or elu's alpha is negative, so those are refused.  thresholded_relu
with a negative alpha has derivative 0 at x = 0 exactly (where y = 0), 1 elsewhere above
alpha.
"""

import math
from typing import NamedTuple

import numpy as np

from .celltypes import CELL_TYPES

#: name -> (ONNX name, default alpha, default beta); the index of a name is its kernel code
TABLE = {
    "sigmoid": ("Sigmoid", None, None),
    "tanh": ("Tanh", None, None),
    "relu": ("Relu", None, None),
    "affine": ("Affine", 1.0, 0.0),
    "leaky_relu": ("LeakyRelu", 0.01, None),
    "thresholded_relu": ("ThresholdedRelu", 1.0, None),
    "scaled_tanh": ("ScaledTanh", 1.0, 1.0),
    "hard_sigmoid": ("HardSigmoid", 0.2, 0.5),
    "elu": ("Elu", 1.0, None),
    "softsign": ("Softsign", None, None),
    "softplus": ("Softplus", None, None),
}
NAMES = tuple(TABLE)
#: the kernels' code of each name
CODES = {name: k for k, name in enumerate(NAMES)}
#: ONNX name -> fastrnn name
FROM_ONNX = {onnx: name for name, (onnx, _, _) in TABLE.items()}

#: PyTorch's choice for each activation slot of each cell (the table of cell types has them),
#: and the slots' names
DEFAULTS = {name: cell.activations for name, cell in CELL_TYPES.items()}
SLOTS = {name: ("f", "g", "h")[:len(acts)] for name, acts in DEFAULTS.items()}


class _Fields(NamedTuple):
    name: str
    alpha: float
    beta: float


class Activation(_Fields):
    """One slot's activation: a name of :data:`TABLE` and its two parameters (0.0 where the
    function has none).

    A parameter left out is the function's default (the table above): ``Activation(
    "leaky_relu")`` is ``('leaky_relu', 0.01)``, as the name alone or ``activation(
    "leaky_relu")`` is (it was alpha 0, a relu, and an ``Activation("affine")`` made a layer
    of zeros)."""
    __slots__ = ()

    def __new__(cls, name, alpha=None, beta=None):
        entry = _entry(name)
        a0, b0 = (entry[1], entry[2]) if entry is not None else (None, None)
        return super().__new__(cls, name, (a0 or 0.0) if alpha is None else alpha,
                               (b0 or 0.0) if beta is None else beta)

    @property
    def onnx(self):
        """The ONNX name."""
        entry = _entry(self.name)
        if entry is None:
            raise ValueError(f"{self!r} names no activation of fastrnn.activations.TABLE")
        return entry[0]

    @property
    def params(self):
        """The parameters the function reads: (), (alpha,) or (alpha, beta)."""
        _, a, b = _entry(self.name)
        return tuple(v for v, d in ((self.alpha, a), (self.beta, b)) if d is not None)

    def __repr__(self):
        if _entry(self.name) is None:       # a made-up name, refused where it is used
            return f"Activation{tuple(self)!r}"
        params = self.params
        return repr(self.name) if not params else repr((self.name,) + params)


def _entry(name):
    """The row of TABLE of a fastrnn or ONNX name (any case for fastrnn's), or None."""
    return TABLE.get(FROM_ONNX.get(name, name.lower())) if isinstance(name, str) else None


def _number(value, what):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                        np.floating)):
        raise TypeError(f"{what} must be a number, but got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, but got {value}")
    return value


def activation(spec, what="activation"):
    """One slot's activation from what a user writes: a name (fastrnn's, case-insensitive, or
    ONNX's), a tuple ``(name, alpha)`` or ``(name, alpha, beta)``, or an :class:`Activation`."""
    if isinstance(spec, Activation):
        # checked as its tuple would be (a name made up, a negative alpha of elu: refused here,
        # not met as a KeyError in a kernel or as a wrong gradient); a parameter the function
        # does not read must be left at 0
        name, entry = spec.name, _entry(spec.name)
        if entry is None:
            spec = (name,) if isinstance(name, str) else name    # refused below
        else:
            reads = (entry[1] is not None, entry[2] is not None)
            if any(v != 0 for v, r in zip((spec.alpha, spec.beta), reads) if not r):
                raise ValueError(f"{what} {spec!r}: {name!r} takes "
                                 f"{sum(reads)} parameter(s), but a parameter it does not read "
                                 f"is not 0: alpha={spec.alpha}, beta={spec.beta}")
            spec = (name,) + tuple(v for v, r in zip((spec.alpha, spec.beta), reads) if r)
    if isinstance(spec, str):
        name, params = spec, ()
    elif isinstance(spec, (tuple, list)) and spec and isinstance(spec[0], str):
        name, params = spec[0], tuple(spec[1:])
    else:
        raise TypeError(f"{what} must be a name such as 'tanh' or a tuple (name, alpha[, beta]), "
                        f"but got {type(spec).__name__}")
    key = FROM_ONNX.get(name, name.lower())
    if key not in TABLE:
        raise ValueError(f"{what} must be one of {', '.join(NAMES)} (or their ONNX names), "
                         f"but got {name!r}")
    _, a0, b0 = TABLE[key]
    takes = (a0 is not None) + (b0 is not None)
    if len(params) > takes:
        raise ValueError(f"{what} {key!r} takes {takes} parameter(s) "
                         f"({', '.join(('alpha', 'beta')[:takes]) or 'none'}), but got "
                         f"{len(params)}")
    alpha = _number(params[0], f"{what} alpha") if len(params) > 0 else (a0 or 0.0)
    beta = _number(params[1], f"{what} beta") if len(params) > 1 else (b0 or 0.0)
    if key in ("leaky_relu", "elu") and alpha < 0:
        raise ValueError(f"{what} {key!r} needs alpha >= 0 (its gradient is computed from its "
                         f"output, which a negative alpha does not determine), but got {alpha}")
    return Activation(key, alpha, beta)


def check_activations(cell, activations):
    """The kernels' ``activations`` option: None (the cell's defaults) or one entry per slot.

    Parameters
    ----------
    cell : {"rnn", "lstm", "gru"}
    activations : None or sequence
        One entry per slot of ``cell`` (:data:`SLOTS`), each as :func:`activation` takes it.

    Returns
    -------
    None or tuple of Activation
        None when every slot has the cell's default (the kernels then run their default path).
    """
    if activations is None:
        return None
    slots = SLOTS[cell]
    if isinstance(activations, str) or not isinstance(activations, (tuple, list)):
        raise TypeError(f"activations must be None or a sequence of {len(slots)} activation(s) "
                        f"({', '.join(slots)}), but got {type(activations).__name__}")
    if len(activations) != len(slots):
        raise ValueError(f"activations of a {cell.upper()} must have {len(slots)} entr"
                         f"{'y' if len(slots) == 1 else 'ies'} ({', '.join(slots)}), but got "
                         f"{len(activations)}")
    acts = tuple(activation(a, f"activations[{k}] ({slots[k]})")
                 for k, a in enumerate(activations))
    if all(a == Activation(d) for a, d in zip(acts, DEFAULTS[cell])):
        return None
    return acts


def resolve(cell, activations):
    """The activations of every slot of ``cell``: ``activations`` (checked) or the defaults."""
    return check_activations(cell, activations) or tuple(Activation(d) for d in DEFAULTS[cell])


def codes(acts, slots=3):
    """The kernels' form of ``acts`` (a tuple of :class:`Activation`): an int32 array of codes
    and a float64 array (slots, 2) of [alpha, beta], padded with tanh to ``slots`` entries."""
    kinds = np.full(slots, CODES["tanh"], dtype=np.int32)
    params = np.zeros((slots, 2))
    for k, a in enumerate(acts):
        kinds[k], params[k] = CODES[a.name], (a.alpha, a.beta)
    return kinds, params


def forward(act, x):
    """``act`` applied to the array ``x`` (any float dtype, kept); NaN propagates."""
    name, a, b = act
    dt = x.dtype.type
    with np.errstate(over="ignore", invalid="ignore"):
        if name == "sigmoid":
            e = np.exp(-np.abs(x))
            y = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
        elif name == "tanh":
            y = np.tanh(x)
        elif name == "relu":
            y = np.maximum(x, 0)
        elif name == "affine":
            y = dt(a) * x + dt(b)
        elif name == "leaky_relu":
            y = np.where(x >= 0, x, dt(a) * x)
        elif name == "thresholded_relu":
            y = np.where((x > dt(a)) | np.isnan(x), x, dt(0))
        elif name == "scaled_tanh":
            y = dt(a) * np.tanh(dt(b) * x)
        elif name == "hard_sigmoid":
            y = np.minimum(np.maximum(dt(a) * x + dt(b), 0), 1)
        elif name == "elu":
            y = np.where(x >= 0, x, dt(a) * np.expm1(np.minimum(x, 0)))
        elif name == "softsign":
            y = x / (1 + np.abs(x))
        else:   # softplus, without overflow
            y = np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))
    return np.asarray(y, dtype=x.dtype)


def derivative(act, y):
    """f'(x) of ``act`` computed from its output ``y = f(x)`` (see the module docstring for
    the points where it is not defined)."""
    name, a, b = act
    dt = y.dtype.type
    one = dt(1)
    with np.errstate(invalid="ignore"):
        if name == "sigmoid":
            d = y * (one - y)
        elif name == "tanh":
            d = one - y * y
        elif name == "relu":
            d = np.where(y <= 0, dt(0), one)     # NaN passes, as PyTorch's threshold_backward
        elif name == "thresholded_relu":
            d = np.where(y == 0, dt(0), one)     # y != 0: above the threshold
        elif name == "affine":
            d = np.full_like(y, a)
        elif name == "leaky_relu":
            d = np.where(y <= 0, dt(a), one)
        elif name == "scaled_tanh":
            d = dt(a * b) - dt(b / a if a != 0 else 0) * y * y
        elif name == "hard_sigmoid":
            d = np.where((y > 0) & (y < 1), dt(a), dt(0))
        elif name == "elu":
            d = np.where(y <= 0, y + dt(a), one)
        elif name == "softsign":
            d = (one - np.abs(y)) ** 2
        else:   # softplus: sigmoid(x) = 1 - exp(-y)
            d = -np.expm1(-y)
    return np.asarray(d, dtype=y.dtype)


def check_layer_activations(cell, activations, directions):
    """A layer's ``activations`` argument: one entry per slot for every direction, or (with two
    directions) the forward's slots then the reverse's, as ONNX lists them.

    Returns
    -------
    public : None or tuple of Activation
        What the layer reports and saves: None (the defaults), S entries (every direction),
        or 2 S (one list per direction, when they differ).
    per_direction : list of None or tuple of Activation
        One entry per direction, as the kernels take it (None: the defaults).
    """
    if activations is None:
        return None, [None] * directions
    S = len(SLOTS[cell])
    pair = directions == 2 and isinstance(activations, (tuple, list))
    if pair and len(activations) not in (S, 2 * S):
        raise ValueError(f"activations of a bidirectional {cell.upper()} must have {S} entries "
                         f"(both directions) or {2 * S} (the forward's, then the reverse's), "
                         f"but got {len(activations)}")
    if pair and len(activations) == 2 * S:
        per = [check_activations(cell, activations[:S]), check_activations(cell, activations[S:])]
    else:
        per = [check_activations(cell, activations)] * directions
    full = [p or resolve(cell, None) for p in per]
    if all(p is None for p in per):
        return None, per
    return (full[0] if full[0] == full[-1] else full[0] + full[1]), per


def check_in_dtype(acts, dtype):
    """Refuse parameters that the layer's float ``dtype`` makes infinite, or rounds from
    nonzero to 0 (with scaled_tanh's ``beta / alpha`` and ``alpha * beta``, which its
    derivative reads: ``alpha = 1e-50`` in float32 gave NaN gradients)."""
    if acts is None or np.dtype(dtype).char not in "fd":
        return          # (a kernel given an integer x refuses it by name elsewhere)
    dt = np.dtype(dtype).type
    for a in acts:
        values = dict(zip(("alpha", "beta"), a.params))
        if a.name == "scaled_tanh" and a.alpha != 0:
            values.update({"beta / alpha": a.beta / a.alpha, "alpha * beta": a.alpha * a.beta})
        for what, v in values.items():
            with np.errstate(over="ignore", under="ignore"):
                cast = dt(v)
            if not np.isfinite(cast) or (v != 0 and cast == 0):
                raise ValueError(
                    f"activations: {a.name}'s {what} must be a finite number that "
                    f"{np.dtype(dtype).name} represents (not 0 unless it is 0), but got {v:g}, in "
                    f"{a!r}")


def to_config(acts):
    """``acts`` (a tuple of :class:`Activation`, or None) as plain values: a name, or a list
    ``[name, alpha(, beta)]`` per entry, which :func:`activation` reads back."""
    if acts is None:
        return None
    return [a.name if not a.params else [a.name, *a.params] for a in acts]
