"""Losses with a fused, numerically stable backward.

Each loss returns the scalar loss *and* its gradient with respect to the
predictions in one call, the way a NumPy training loop uses them::

    loss, dlogits = cross_entropy(logits, targets)      # logits (T, B, C), targets (T, B)
    dh = head.backward(dlogits)

Classes are on the last axis (unlike ``torch.nn.functional.cross_entropy``,
which wants them on axis 1): a (T, B, C) array of logits is scored against a
(T, B) array of integer targets, a (B, C) array against (B,).
"""

import numpy as np

from .. import _checks
from . import _compiled

_REDUCTIONS = ("mean", "sum", "none")
#: logits (elements) from which cross_entropy runs its compiled passes, where the extension is
#: built (fastrnn_optim.h's fr_xent_*: two passes around NumPy's exp, instead of ten)
COMPILED_MIN_SIZE = 1024
#: cross_entropy shifts a row by its maximum when exp(logits - row mean) sums to this or more
_SUM_LIMIT = 2.0 ** 64


def _logits(name, logits, axis):
    """``logits`` as a float array with a non-empty ``axis`` (normalised), both checked."""
    z = _checks.as_array(name, logits, "a floating-point array-like")
    if z.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array, but got dtype {z.dtype}")
    if z.ndim == 0:
        raise ValueError(f"{name} must have at least one axis (the classes), but got a scalar")
    axis = _checks.check_axis("axis", axis, z.ndim)
    if z.shape[axis] == 0:
        raise ValueError(f"{name} must have at least one class on axis {axis}, but got shape "
                         f"{z.shape}")
    return z, axis


def log_softmax(logits, axis=-1):
    """``log(softmax(logits))`` computed stably (the maximum is subtracted first).

    Parameters
    ----------
    logits : array of floats
    axis : int

    Returns
    -------
    array like ``logits``
    """
    z, axis = _logits("logits", logits, axis)
    with np.errstate(invalid="ignore", over="ignore"):   # inf and NaN propagate as in torch
        shifted = z - np.max(z, axis=axis, keepdims=True)
        return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax(logits, axis=-1, temperature=1.0):
    """Stable softmax of ``logits / temperature`` along ``axis``.

    ``temperature`` is a finite real number > 0.
    """
    z, axis = _logits("logits", logits, axis)
    temperature = _checks.check_real("temperature", temperature, above=0)
    with np.errstate(invalid="ignore", over="ignore"):
        # shifted before the division: logits / temperature could overflow (to NaN after
        # the shift) where (logits - max) / temperature only goes to -inf
        e = np.exp((z - np.max(z, axis=axis, keepdims=True)) / temperature)
        return e / np.sum(e, axis=axis, keepdims=True)


def _as_weights(name, mask, shape):
    """A mask (bool or float weights) broadcast to ``shape``, as float64; None stays None."""
    if mask is None:
        return None
    m = _checks.as_array(name, mask, "an array-like of bools or non-negative weights")
    if m.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be an array of bool or of non-negative weights, "
                        f"but got dtype {m.dtype}")
    try:
        m = np.broadcast_to(m, shape)
    except ValueError:
        raise ValueError(f"{name} of shape {m.shape} does not broadcast to the shape "
                         f"{tuple(shape)} it masks") from None
    m = m.astype(np.float64)
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ValueError(f"{name} must hold finite non-negative weights (or bools)")
    return m


def _check_reduction(reduction):
    _checks.check_choice("reduction", reduction, _REDUCTIONS)


def _class_weights(weight, C):
    """``weight`` as a (C,) float64 array of finite non-negative class weights (None stays)."""
    if weight is None:
        return None
    w = _checks.as_array("weight", weight, "an array-like of C non-negative class weights")
    if w.dtype.kind not in "biuf":
        raise TypeError(f"weight must be an array of non-negative class weights, but got dtype "
                        f"{w.dtype}")
    if w.shape != (C,):
        raise ValueError(f"weight must have one entry per class, shape ({C},), but got shape "
                         f"{w.shape}")
    w = w.astype(np.float64)
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weight must hold finite non-negative class weights")
    return w


def cross_entropy(logits, targets, ignore_index=-100, mask=None, reduction="mean", *,
                  weight=None, label_smoothing=0.0):
    """Softmax cross-entropy and its gradient with respect to the logits.

    ``loss_i = logsumexp(logits_i) - logits_i[targets_i]``, reduced over the
    positions that count: those whose target is not ``ignore_index`` and,
    with ``mask``, weighted by it.  ``weight`` and ``label_smoothing`` are
    ``torch.nn.functional.cross_entropy``'s.

    Parameters
    ----------
    logits : (..., C) array of floats
        Unnormalised scores, e.g. (T, B, C) or (B, C); classes on the last axis.
    targets : (...) array of ints
        Class index in ``[0, C)`` per position, shaped like ``logits`` without
        its last axis.
    ignore_index : int
        Targets equal to this are skipped (no loss, zero gradient), as in
        PyTorch; -100 by default.
    mask : (...) array of bool or non-negative floats, optional
        Broadcast to the shape of ``targets``: False / 0 skips a position, a
        float weights it (e.g. padding of variable-length sequences).
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides the weighted sum by the total weight of the
        positions that count (PyTorch's mean over non-ignored targets, weighted
        by their classes' ``weight``); when nothing counts the loss is 0 with a
        zero gradient (PyTorch gives NaN).  ``"none"`` gives each position's
        loss, and the gradient of each position's loss with respect to its own
        logits (that of their sum).
    weight : (C,) array of non-negative floats, optional
        A weight per class, as PyTorch's: a position's loss is multiplied by its
        target's weight, and ``label_smoothing``'s term weights each class's.
    label_smoothing : float in [0, 1]
        The target is ``(1 - label_smoothing)`` on the target class and
        ``label_smoothing / C`` on every class, as in PyTorch; 0 by default.

    Returns
    -------
    loss : float, or (...) array of the logits' dtype with ``reduction="none"``
        Accumulated in float64.
    dlogits : (..., C) array of the logits' dtype
        Without ``weight`` and ``label_smoothing``,
        ``w * (softmax(logits) - onehot(targets)) / total weight``.

    Raises
    ------
    TypeError
        Non-float logits, non-integer targets.
    ValueError
        Shapes that do not match, targets out of range, a bad reduction, weight
        or label_smoothing.
    """
    _check_reduction(reduction)
    z = _checks.as_array("logits", logits, "a floating-point array-like")
    if z.dtype.kind != "f":
        raise TypeError(f"logits must be a floating-point array, but got dtype {z.dtype}")
    if z.ndim < 1 or z.shape[-1] < 1:
        raise ValueError(f"logits must have a class axis last, with at least one class, "
                         f"but got shape {z.shape}")
    t = _checks.as_array("targets", targets, "an array-like of integer class indices")
    if t.dtype.kind not in "iu":
        raise TypeError(f"targets must be integer class indices, but got dtype {t.dtype}")
    if t.shape != z.shape[:-1]:
        raise ValueError(f"targets must have shape {z.shape[:-1]} (logits shape {z.shape} "
                         f"without its class axis), but got {t.shape}")
    C = z.shape[-1]
    ignore_index = _checks.check_int("ignore_index", ignore_index, minimum=-(2 ** 63),
                                     maximum=2 ** 63 - 1)
    classes = _class_weights(weight, C)
    eps = _checks.check_real("label_smoothing", label_smoothing, minimum=0.0, maximum=1.0)
    counted = t != ignore_index
    bad = t[counted & ((t < 0) | (t >= C))]
    if bad.size:
        raise ValueError(f"targets must be in [0, {C}) (or ignore_index={ignore_index}), "
                         f"but got {np.unique(bad)[:8].tolist()}")
    w = counted.astype(np.float64)
    m = _as_weights("mask", mask, t.shape)
    if m is not None:
        w *= m

    z2 = z.reshape(-1, C)
    t2 = np.where(counted, t, 0).reshape(-1).astype(np.intp)
    w2 = w.reshape(-1)                                           # each position's weight
    ct = 1.0 if classes is None else classes[t2]                 # its target's class weight
    wt = w2 if classes is None else w2 * ct
    total = float(np.sum(wt))
    denom = total if reduction == "mean" else 1.0
    if denom == 0.0:
        zero = 0.0 if reduction != "none" else np.zeros(t.shape, z.dtype)
        return zero, np.zeros_like(z)
    # With label smoothing, a position's target is (1 - eps) on its class and eps / C on each
    # class c, weighted by weight[c]: its gradient is
    #   (w / denom) * (A softmax - (1 - eps) weight[t] onehot(t) - (eps / C) weight),
    # A = (1 - eps) weight[t] + (eps / C) sum(weight): the passes below make
    # scale * (softmax - onehot(t)) with scale = (w / denom) A, and the last lines correct the
    # target's entry and subtract the smoothing's term.
    smooth = eps / C
    class_sum = float(C if classes is None else np.sum(classes))
    scale = wt / denom if eps == 0.0 else (w2 / denom) * ((1.0 - eps) * ct + smooth * class_sum)
    nll, grad = _nll_and_grad(z2, t2, scale)
    kept = np.where(wt > 0, nll, 0.0)
    if eps == 0.0 and reduction != "none":
        return float(np.dot(kept, wt) / denom), grad.reshape(z.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        per = kept * wt
        if eps > 0.0:
            # sum over c of weight[c] * -log softmax_c = sum(weight) lse - weight . logits,
            # lse = nll + logits[t], all in float64
            z64 = z2.astype(np.float64)
            rows = np.arange(len(t2))
            lse = nll + z64[rows, t2]
            redo = ~np.isfinite(lse)       # (a -inf target logit: inf + -inf) from the row
            if redo.any():
                lse[redo] = np.logaddexp.reduce(z64[redo], axis=1)
            zw = z64.sum(axis=1) if classes is None else z64 @ classes
            spread = np.where(w2 > 0, class_sum * lse - zw, 0.0) * w2
            per = (1.0 - eps) * per + smooth * spread
            fix = (w2 / denom).astype(z.dtype)
            grad[rows, t2] += (scale - (1.0 - eps) * wt / denom).astype(z.dtype)
            if classes is None:
                grad -= (fix * z.dtype.type(smooth))[:, None]
            else:
                grad -= fix[:, None] * (smooth * classes).astype(z.dtype)[None, :]
            grad[w2 == 0] = 0
    if reduction == "none":
        return per.reshape(t.shape).astype(z.dtype), grad.reshape(z.shape)
    return float(np.sum(per) / denom), grad.reshape(z.shape)


def _nll_and_grad(z2, t2, scale):
    """``-log softmax(z2)[t2]`` per row (float64, at least 0) and ``scale * (softmax(z2) -
    onehot(t2))`` (z2's dtype; exactly 0 on rows whose scale is 0), for rows z2 (N, C)."""
    # where the extension is built: each row shifted by its maximum in one compiled pass,
    # NumPy's exp, and one more pass for the sums, the loss per row and the gradient
    fused = _compiled.kernels() if z2.size >= COMPILED_MIN_SIZE else None
    if fused is not None:
        native = z2.dtype.newbyteorder("=")     # (logits stored big-endian: a native copy)
        grad, nll = np.empty(z2.shape, native), np.empty(z2.shape[0])
        with np.errstate(invalid="ignore", over="ignore"):
            if fused.cross_entropy_rows(np.ascontiguousarray(z2, native), t2,
                                        np.ascontiguousarray(scale, np.float64), grad, nll):
                return nll, grad
    C = z2.shape[1]
    rows = np.arange(z2.shape[0])
    with np.errstate(invalid="ignore", over="ignore"):   # NaN / inf in, NaN / inf out, like torch
        # In NumPy, each row is shifted by its mean, a matrix-vector product, rather than by its
        # maximum: NumPy's max over a short last axis (96 classes) costs 20x the product, and
        # more than the rest of the loss.  Rows whose exponentials then sum to _SUM_LIMIT or
        # more (a maximum ~44 above the mean) or to no finite number (inf or NaN logits) are
        # shifted by their maximum instead.  One array, in place: shifted logits, their
        # exponentials, then the gradient (NumPy's temporaries of the (N, C) array cost as much
        # as the arithmetic).
        ones = np.ones(C, z2.dtype)
        shift = z2 @ np.full(C, 1.0 / C, z2.dtype)
        grad = z2 - shift[:, None]
        d_t = grad[rows, t2].astype(np.float64)    # the target's shifted logit, as exp reads it
        np.exp(grad, out=grad)
        s = grad @ ones
        redo = ~(s < _SUM_LIMIT)
        if redo.any():
            zr = z2[redo]
            shift[redo] = np.max(zr, axis=1)
            gr = zr - shift[redo][:, None]
            d_t[redo] = gr[rows[:len(gr)], t2[redo]]
            np.exp(gr, out=gr)
            grad[redo] = gr
            s[redo] = gr @ ones
        # in float64, from the shifted logits the exponentials were taken of (float32 rounds
        # a shifted logit of 28 by 2e-6: the loss of a confident row came out -1e-6, not 0):
        # log(s) - d_t, not log(s) + shift - z_t, which loses log(s) when every logit of a row
        # is far from 0; and at least 0, as the exact value is (NaN stays NaN)
        nll = np.maximum(np.log(s.astype(np.float64)) - d_t, 0.0)
        grad *= (scale / s).astype(z2.dtype)[:, None]     # the softmax, weighted
        grad[rows, t2] -= scale.astype(z2.dtype)          # less the one-hot, weighted
        skipped = scale == 0
        if skipped.any():
            grad[skipped] = 0  # skipped positions get exactly zero, even with inf logits
    return nll, grad


def mse_loss(pred, target, mask=None, reduction="mean"):
    """Mean squared error and its gradient with respect to the predictions.

    Parameters
    ----------
    pred : (...) array of floats
    target : (...) array of floats, the same shape
    mask : array of bool or non-negative floats, optional
        Broadcast to ``pred``'s shape; weights each squared error (False / 0 skips it).
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides by the number of elements (by the total weight with a mask).
        ``"none"`` gives each element's (weighted) squared error.

    Returns
    -------
    loss : float, or array like ``pred`` with ``reduction="none"``
        Accumulated in float64.
    dpred : array like ``pred``
        ``2 * w * (pred - target) / total weight``.
    """
    _check_reduction(reduction)
    p = _checks.as_array("pred", pred, "a floating-point array-like")
    y = _checks.as_array("target", target, "a floating-point array-like")
    for name, a in (("pred", p), ("target", y)):
        if a.dtype.kind != "f":
            raise TypeError(f"{name} must be a floating-point array, but got dtype {a.dtype}")
    if p.shape != y.shape:
        raise ValueError(f"pred and target must have the same shape, but got {p.shape} "
                         f"and {y.shape}")
    diff = p.astype(np.float64) - y.astype(np.float64)
    w = _as_weights("mask", mask, p.shape)
    if w is not None:
        diff = np.where(w > 0, diff, 0.0)    # skipped even where NaN or inf (missing targets)
    if reduction == "none":
        weighted = diff if w is None else w * diff
        return (weighted * diff).astype(p.dtype), (2.0 * weighted).astype(p.dtype)
    if w is None:
        total = float(diff.size)
        sq = float(np.dot(diff.ravel(), diff.ravel()))
    else:
        total = float(np.sum(w))
        sq = float(np.sum(w * diff * diff))
        diff = diff * w
    denom = total if reduction == "mean" else 1.0
    if denom == 0.0:
        return 0.0, np.zeros_like(p)
    return sq / denom, (2.0 / denom * diff).astype(p.dtype)
