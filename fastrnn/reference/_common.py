"""Helpers shared by the reference kernels, and the kernel contract's pieces every
Python-side backend uses: the saved record (:class:`Saved`, :func:`take`) and the check
of the gradient buffers a backward adds into (:func:`check_dweights`)."""

import threading

import numpy as np

from .. import _runtime
from ..celltypes import CELL_TYPES

#: cell -> (gate blocks, weights in its tuple)
_GATES_AND_WEIGHTS = {k: (c.gates, len(c.weights)) for k, c in CELL_TYPES.items()}

_TAKE = threading.Lock()


def _forget_after_fork():
    global _TAKE
    _TAKE = threading.Lock()   # another thread may have held it at the fork


_runtime.after_fork(_forget_after_fork)


class Saved:
    """What a training-mode forward keeps for its backward: one record, its arrays by name.

    Parameters
    ----------
    cell : str
        The cell type of the forward that made it (``"rnn"``, ``"lstm"``, ``"gru"``).
    step : bool
        Made by a one-step kernel (``<cell>_step_forward``).
    once : bool
        A backward consumes it (the compiled backends write the gradients over the saved
        gates): a second backward raises, and the arrays are dropped as it is taken.
    **arrays
        The saved values, read back as attributes (``saved.gates``); :attr:`fields` names them.
    """

    def __init__(self, cell, step, once, **arrays):
        self.cell, self.step, self.once, self.used = cell, step, once, False
        self._names = tuple(arrays)
        self.__dict__.update(arrays)

    @property
    def fields(self):
        """The names of the saved values this record holds (none once a backward took them)."""
        return tuple(k for k in self._names if k in self.__dict__)

    def __repr__(self):
        state = ", used" if self.used else ""
        return f"Saved({self.cell}{'_step' if self.step else ''}: {', '.join(self.fields)}{state})"


def _used(made_by):
    return RuntimeError(f"this {made_by} record was already used by a backward pass (the "
                        f"backward writes the gradients over the gates it saved): run the "
                        f"forward again")


def check(saved, cell, dweights, step=False):
    """Check ``saved`` for a backward of ``cell`` (a step backward, ``step``, needs the record of
    a step forward; a sequence backward takes either, a step being a sequence of one), that it
    is not used up, and the gradient buffers ``dweights`` against its weights."""
    name = f"{cell}_{'step_' if step else ''}backward"
    made_by = f"{cell}_{'step_' if step else ''}forward"
    if not isinstance(saved, Saved):
        raise TypeError(f"{name} needs the record returned by {made_by} with training=True, "
                        f"but got {type(saved).__name__}")
    if saved.cell != cell or (step and not saved.step):
        raise ValueError(f"{name} needs the record returned by {made_by}, but got one from "
                         f"{saved.cell}_{'step_' if saved.step else ''}forward")
    if saved.used:
        raise _used(made_by)
    check_dweights(dweights, saved.weights, name)


def take(saved, cell, dweights, dy, dhy, step=False, step_norms=None):
    """:func:`check`, the backward's ``dy``, ``dhy`` and ``step_norms`` against the record's
    sizes (:func:`check_backward_call`), then, when the record serves one backward only, mark
    it used (atomically: two threads cannot both take it) and drop its arrays from the record.
    Nothing is used up when a check fails.

    Returns
    -------
    dict
        The saved arrays by name.
    """
    check(saved, cell, dweights, step)
    (T, B), (G, P) = saved.x.shape[:2], saved.weights[1].shape
    check_backward_call(cell, dy, dhy, T, B, G // _GATES_AND_WEIGHTS[cell][0], P, step_norms)
    if not saved.once:
        return {k: getattr(saved, k) for k in saved._names}
    with _TAKE:
        if saved.used:   # another thread took it since the check
            raise _used(f"{cell}_{'step_' if step else ''}forward")
        saved.used = True
        arrays = {k: saved.__dict__.pop(k) for k in saved._names}
    return arrays


def check_dweights(dweights, weights, kernel):
    """Check the gradient buffers a backward adds into: a tuple aligned with ``weights``, None
    where the weight is None, else a writable C-contiguous array of the weight's shape and
    dtype (the backward writes into it in place, so nothing may be converted or copied)."""
    if not isinstance(dweights, (tuple, list)) or len(dweights) != len(weights):
        raise TypeError(f"{kernel}: dweights must be a tuple of {len(weights)} gradient buffers "
                        f"aligned with the weights, but got {type(dweights).__name__}"
                        + (f" of length {len(dweights)}" if isinstance(dweights, (tuple, list)) else ""))
    for k, (g, w) in enumerate(zip(dweights, weights)):
        if w is None:
            if g is not None:
                raise ValueError(f"{kernel}: dweights[{k}] must be None, as its weight is None")
            continue
        if not (isinstance(g, np.ndarray) and g.shape == w.shape and g.dtype == w.dtype
                and g.flags.c_contiguous and g.flags.writeable):
            got = (f"{type(g).__name__}" if not isinstance(g, np.ndarray) else
                   f"{g.dtype} array of shape {g.shape}"
                   + ("" if g.flags.c_contiguous else ", not C-contiguous")
                   + ("" if g.flags.writeable else ", read-only"))
            raise ValueError(f"{kernel}: dweights[{k}] must be a writable C-contiguous {w.dtype} "
                             f"array of shape {w.shape} (the gradient is added into it), "
                             f"but got {got}")


def _shape(value):
    return value.shape if type(value) is np.ndarray else np.shape(value)


def _dtype_is(name, value, dtype):
    """An array ``value`` of x's dtype: a kernel computes in x's dtype and returns arrays of it
    (the cython kernels refuse others alike; the layers and cells convert first)."""
    if type(value) is np.ndarray and value.dtype != dtype:
        raise TypeError(f"{name} must have x's dtype {dtype}, but got {value.dtype}")


def _shape_is(name, value, want, dtype=None):
    """``value`` of shape ``want`` (and of ``dtype``, when given: see _dtype_is)."""
    if _shape(value) != want:
        raise ValueError(f"{name} must have shape {want}, but got {_shape(value)}")
    if dtype is not None:
        _dtype_is(name, value, dtype)


def check_call(cell, x, hx, weights, lengths=None, step=False):
    """Check the shapes of a forward kernel's arguments against each other, as the cython
    kernels do (the numba kernels index without bounds checks: a mismatch would read and write
    outside the arrays).  ``cell`` is a key of :data:`fastrnn.celltypes.CELL_TYPES`.

    Returns
    -------
    (T, B, I, H, P) : the sizes the arguments imply (T = 1 for a step)
    """
    gates, n = _GATES_AND_WEIGHTS[cell]
    dtype = x.dtype if type(x) is np.ndarray else np.asarray(x).dtype
    if dtype.char not in "fd" or not dtype.isnative:
        raise TypeError(f"x must be a float32 or float64 array in the machine's byte order, "
                        f"but got dtype {dtype}")
    shape = _shape(x)
    if len(shape) != (2 if step else 3):
        raise ValueError(f"x must be {'(B, I) for a step kernel' if step else '(T, B, I)'}, "
                         f"but got shape {shape}")
    T, B, I = (1,) + shape if step else shape
    if not isinstance(weights, (tuple, list)) or len(weights) != n:
        names = ", ".join(CELL_TYPES[cell].weights)
        raise ValueError(f"weights must be a tuple of {n} arrays ({names})")
    _dtype_is("w_ih", weights[0], dtype)
    _dtype_is("w_hh", weights[1], dtype)
    w_ih, w_hh = _shape(weights[0]), _shape(weights[1])
    if len(w_ih) != 2 or len(w_hh) != 2:
        raise ValueError(f"w_ih and w_hh must be 2-D, but got shapes {w_ih} and {w_hh}")
    G = w_ih[0]
    H = G // gates
    if G != H * gates or H < 1:
        raise ValueError(f"w_ih must have {gates}*H rows, but got shape {w_ih}")
    if w_ih[1] != I:
        raise ValueError(f"w_ih must have shape ({G}, {I}) for inputs of size {I}, but got {w_ih}")
    P = w_hh[1]
    if w_hh[0] != G:
        raise ValueError(f"w_hh must have {G} rows like w_ih, but got shape {w_hh}")
    if weights[2] is not None:
        _shape_is("b_ih", weights[2], (G,), dtype)
    if weights[3] is not None:
        _shape_is("b_hh", weights[3], (G,), dtype)
    lstm = n == 6
    if lstm and weights[4] is not None:
        _shape_is("w_hr", weights[4], (P, H), dtype)
    elif P != H:
        raise ValueError(f"w_hh must have shape ({G}, {H}), but got {w_hh}")
    if lstm and weights[5] is not None:
        _shape_is("w_ph", weights[5], (3, H), dtype)
    if not isinstance(hx, (tuple, list)) or len(hx) != (2 if lstm else 1):
        raise ValueError("hx must be a tuple (h0, c0) for LSTM, (h0,) otherwise")
    _shape_is("h0", hx[0], (B, P), dtype)
    if lstm:
        _shape_is("c0", hx[1], (B, H), dtype)
    if lengths is not None and not step:
        lens = np.asarray(lengths)
        if lens.dtype.kind not in "iu":
            raise TypeError(f"lengths must be an integer array, but got dtype {lens.dtype}")
        _shape_is("lengths", lens, (B,))
        if lens.size and (lens.min() < 0 or lens.max() > T):
            raise ValueError(f"lengths must be between 0 and T = {T}, but got "
                             f"{lens.min()}..{lens.max()}")
    return T, B, I, H, P


def check_backward_call(cell, dy, dhy, T, B, H, P, step_norms=None):
    """Check a backward kernel's ``dy`` (T, B, P), ``dhy`` and ``step_norms`` (T, B) against its
    forward's sizes (see :func:`check_call`; the numba kernels write the norms without bounds
    checks)."""
    lstm = cell == "lstm"
    if not isinstance(dhy, (tuple, list)) or len(dhy) != (2 if lstm else 1):
        raise ValueError("dhy must be a tuple (dh_n, dc_n) for LSTM, (dh_n,) otherwise")
    _shape_is("dh_n", dhy[0], (B, P))
    if lstm:
        _shape_is("dc_n", dhy[1], (B, H))
    if dy is None:
        raise ValueError(f"dy must be an array of shape {(T, B, P)}, but got None")
    _shape_is("dy", dy, (T, B, P))
    if step_norms is not None:
        if not isinstance(step_norms, np.ndarray) or not step_norms.flags.writeable:
            raise ValueError(f"step_norms must be a writable array of shape {(T, B)} (the norms "
                             f"are written into it), but got "
                             + ("a read-only array" if isinstance(step_norms, np.ndarray)
                                else type(step_norms).__name__))
        _shape_is("step_norms", step_norms, (T, B))


def check_flag(name, value):
    """A kernel's boolean option (``reset_after``, ``input_forget``): a bool, nothing else."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, but got {type(value).__name__}")
    return bool(value)


def check_nonlinearity(nonlinearity, activations):
    """The RNN's activation from its two spellings: PyTorch's ``nonlinearity`` ("tanh" or
    "relu") or ``activations`` (one entry; ``nonlinearity`` then stays "tanh").

    Returns
    -------
    tuple of one :class:`~fastrnn.activations.Activation`
    """
    from .. import activations as acts

    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', but got {nonlinearity!r}")
    checked = acts.check_activations("rnn", activations)
    if activations is not None and nonlinearity != "tanh":   # (["tanh"] checks to None)
        raise ValueError(f"give the RNN's activation once: nonlinearity={nonlinearity!r} or "
                         f"activations, not both")
    if checked is None:
        checked = (acts.activation(nonlinearity),) if activations is None else \
            (acts.activation("tanh"),)
    return checked


def check_clip(clip, dtype=None):
    """ONNX's cell clip: None (no clip) or a positive float bounding every gate pre-activation
    (one that ``dtype``, the kernels' float type, holds: not rounded to 0, not infinite)."""
    if clip is None:
        return None
    if isinstance(clip, (bool, np.bool_)) or not isinstance(clip, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"clip must be None or a positive number, but got {type(clip).__name__}")
    try:
        value, shown = float(clip), clip
    except OverflowError:
        value, shown = float("inf"), "an integer beyond a float's range"
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"clip must be None or a positive finite number, but got {shown}")
    if dtype is not None and np.dtype(dtype).char in "fd":   # (another x is refused by name)
        with np.errstate(over="ignore", under="ignore"):
            cast = np.dtype(dtype).type(value)
        if cast == 0 or not np.isfinite(cast):
            info = np.finfo(dtype)
            raise ValueError(f"clip must be None or a positive number that {np.dtype(dtype).name} "
                             f"holds, neither rounded to 0 nor infinite (between about "
                             f"{info.smallest_subnormal:.2g} and {info.max:.3g}), but got {shown}")
    return value


def clamp(a, clip):
    """``(min(max(a, -clip), clip), mask)``: the pre-activations clipped (NaN stays NaN) and the
    gradient's mask, 1 where ``-clip <= a <= clip`` (PyTorch's clamp: the bounds pass the
    gradient, NaN does not); ``(a, None)`` without a clip."""
    if clip is None:
        return a, None
    mask = ((a >= -clip) & (a <= clip)).astype(a.dtype)
    return np.where(a < -clip, -clip, np.where(a > clip, clip, a)).astype(a.dtype), mask


def sigmoid(a):
    """Logistic function, stable for any input: no overflow, NaN propagates."""
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(a.dtype, copy=False)


def valid_steps(lengths, T, B):
    """(T, B, 1) bool array, True where step t is inside sequence b; None without lengths."""
    if lengths is None:
        return None
    return (np.arange(T)[:, None] < np.asarray(lengths)[None, :])[:, :, None]


def unpadded(x, lengths):
    """``x`` (T, B, ...), or where a sequence ends before T a copy with the steps past each
    sequence's end zeroed.  No output or state reads them; zeros keep a NaN or inf there
    (padding) out of the backward's products, as PyTorch's packed sequences, which never hold
    the padding.  (The numba backend takes it too, in training.)"""
    T = x.shape[0]
    if lengths is None or np.min(lengths, initial=T) >= T:
        return x
    x = x.copy()
    x[~valid_steps(np.asarray(lengths), T, x.shape[1])[:, :, 0]] = 0
    return x


def keep(valid, t, new, old):
    """The new state where step t is valid, else the old one."""
    return new if valid is None else np.where(valid[t], new, old)


def masked(valid, t, value):
    """``value`` with the rows of sequences that ended before step t zeroed."""
    return value if valid is None else np.where(valid[t], value, 0)


def record_norm(step_norms, t, dh, valid):
    """Store ||dJ/dh_t|| per sequence into step_norms[t] (0 past the end); the squares summed in
    float64, so that a float32 gradient's norm neither underflows to 0 nor overflows to inf
    where the norm itself is a float32 number (1e-25 or 1e20: their squares are not)."""
    if step_norms is not None:
        d = masked(valid, t, dh).astype(np.float64)
        step_norms[t] = np.sqrt(np.einsum("ij,ij->i", d, d))


def add_bias(grads, da, i):
    """Accumulate the bias gradient ``sum_b da`` into grads[i] unless that bias is absent."""
    if grads[i] is not None:
        grads[i] += da.sum(axis=0)


def step_backward(backward, cell, dhy, saved, dweights):
    """The backward of a one-step kernel: ``backward`` (a sequence backward, which checks
    ``dhy``) over its T = 1 step, with no gradient from an output, adding into ``dweights``;
    returns dx (B, I), dhx."""
    check(saved, cell, dweights, True)
    dy = np.zeros((1, saved.x.shape[1], saved.weights[1].shape[1]), dtype=saved.x.dtype)
    dx, dhx = backward(dy, dhy, saved, dweights)
    return dx[0], dhx


def step_kernels(cell, forward, backward):
    """One-step kernels built from the sequence kernels of ``cell`` (T = 1).

    ``step_forward(x, hx, weights, training=True, **opts)`` takes x: (B, I) and
    returns ``(hy, saved)``; ``step_backward(dhy, saved, dweights)`` adds into
    ``dweights`` and returns ``(dx (B, I), dhx)``.
    """

    def step_forward(x, hx, weights, training=True, **opts):
        if np.ndim(x) != 2:       # (the sequence forward checks the rest, on x[None])
            raise ValueError(f"x must be (B, I) for a step kernel, but got shape {np.shape(x)}")
        _, hy, saved = forward(np.asarray(x)[None], hx, weights, None, training, **opts)
        if saved is not None:
            saved.step = True
        return hy, saved

    def step_backward_of_cell(dhy, saved, dweights):
        return step_backward(backward, cell, dhy, saved, dweights)

    return step_forward, step_backward_of_cell
