"""Gradient clipping with ``torch.nn.utils.clip_grad_norm_`` / ``clip_grad_value_`` semantics.

Both functions change the gradient arrays in place.  ``grads`` may be a dict
name -> array (e.g. ``module.grads``, or the ``grads`` of
:func:`fastrnn.train.optim.parameters_and_grads`), a :class:`fastrnn.module.Module`,
a list of modules, or any iterable of arrays.
"""

import math

import numpy as np

from .. import _checks
from ..module import Module
from . import _compiled


def _arrays(grads, in_place=None):
    """The gradient arrays behind any accepted ``grads`` argument, as a list, each once (a
    module or an array given twice counts once in the norm and is clipped once, as PyTorch's
    ``parameters()`` yields a shared parameter once); ``in_place`` names the function that
    writes into them (each must then be writable)."""
    if isinstance(grads, Module):
        return list(grads.grads.values())
    if isinstance(grads, np.ndarray):
        named = [("grads", grads)]
    elif hasattr(grads, "values") and callable(grads.values):
        if callable(getattr(grads, "items", None)):
            named = [(f"grads[{_checks.short(k)}]", g) for k, g in grads.items()]
        else:
            named = [(f"grads[{i}]", g) for i, g in enumerate(grads.values())]
    else:
        try:
            items = list(grads)
        except TypeError:
            raise TypeError(f"grads must be a dict of arrays, a Module, a list of modules or "
                            f"an iterable of arrays, but got {type(grads).__name__}") from None
        named = [(f"grads[{i}]", g) for i, g in enumerate(items)]
    out = []
    for label, g in named:
        if isinstance(g, Module):
            out.extend(g.grads.values())
            continue
        if not (isinstance(g, np.ndarray) and g.dtype.kind == "f"):
            kind = type(g).__name__ + (f" of dtype {g.dtype}" if hasattr(g, "dtype") else "")
            raise TypeError(f"{label} must be a floating-point numpy array (a gradient, changed "
                            f"in place) or a Module, but got {kind}")
        if in_place and not g.flags.writeable:
            raise ValueError(f"{label} is read-only; {in_place} changes the gradients in place")
        out.append(g)
    return list({id(g): g for g in out}.values())


def _norm_type(norm_type):
    p = _checks.check_real("norm_type", norm_type, infinite=True)
    if not p > 0:
        raise ValueError(f"norm_type must be positive (or inf), but got {_checks.short(norm_type)}")
    return p


def grad_norm(grads, norm_type=2.0):
    """The p-norm of all gradients taken together as one vector.

    Parameters
    ----------
    grads : dict of arrays, Module, list of modules, or iterable of arrays
    norm_type : float
        p > 0, or ``inf`` for the largest absolute value.

    Returns
    -------
    float
        Accumulated in float64 (no overflow of float32 squares); 0.0 when there
        are no gradients.
    """
    p = _norm_type(norm_type)
    arrays = _arrays(grads)
    if not arrays:
        return 0.0
    if math.isinf(p):
        return float(np.max([np.max(np.abs(g)) if g.size else 0.0 for g in arrays]))
    total = 0.0
    fused = _compiled.kernels() if p == 2.0 else None
    with np.errstate(over="ignore", invalid="ignore"):
        for g in arrays:
            s = fused.sum_squares(g) if fused is not None else None
            if s is not None:    # one compiled pass, no float64 copy
                total += s
                continue
            a = g.astype(np.float64, copy=False).ravel()
            if p == 2.0:
                total += float(np.dot(a, a))
            elif p == 1.0:
                total += float(np.sum(np.abs(a)))
            else:
                total += float(np.sum(np.abs(a) ** p))
        return float(total ** (1.0 / p))


def clip_grad_norm(grads, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients together so that their joint norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: the total norm is that of all
    gradients concatenated into one vector; every gradient is multiplied by
    ``min(1, max_norm / (total_norm + 1e-6))``.

    Parameters
    ----------
    grads : dict of arrays, Module, list of modules, or iterable of arrays
        Changed in place.
    max_norm : float
        Largest allowed norm, > 0 (``inf``: no clipping).
    norm_type : float
        p of the p-norm (2 by default), or ``inf``.
    error_if_nonfinite : bool
        Raise instead of scaling when the total norm is NaN or infinite (the
        gradients are then left unchanged).  Otherwise a NaN norm makes every
        gradient NaN and an infinite one makes them 0 (or NaN), as in PyTorch.

    Returns
    -------
    float
        The total norm *before* clipping (float64 accumulation).

    Raises
    ------
    RuntimeError
        ``error_if_nonfinite`` and a non-finite total norm.
    """
    max_norm = _checks.check_real("max_norm", max_norm, above=0, infinite=True)
    _norm_type(norm_type)
    error_if_nonfinite = _checks.check_bool("error_if_nonfinite", error_if_nonfinite)
    arrays = _arrays(grads, in_place="clip_grad_norm")
    total = grad_norm(arrays, norm_type)
    if not arrays:
        return 0.0
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {float(norm_type)} for gradients from `parameters` is "
            f"non-finite, so it cannot be clipped. To disable this error and scale the "
            f"gradients by the non-finite norm anyway, set `error_if_nonfinite=False`")
    coef = min(max_norm / (total + 1e-6), 1.0) if not math.isnan(total) else math.nan
    if coef != 1.0:
        with np.errstate(invalid="ignore"):    # inf * 0 gives NaN, as in torch
            for g in arrays:
                g *= g.dtype.type(coef)
    return total


def clip_grad_value(grads, clip_value):
    """Clip every gradient element into ``[-clip_value, clip_value]`` in place.

    As ``torch.nn.utils.clip_grad_value_``; NaN elements stay NaN.

    Parameters
    ----------
    grads : dict of arrays, Module, list of modules, or iterable of arrays
    clip_value : float
        Non-negative bound.
    """
    v = _checks.check_real("clip_value", clip_value, minimum=0, infinite=True)
    for g in _arrays(grads, in_place="clip_grad_value"):
        np.clip(g, -v, v, out=g)
