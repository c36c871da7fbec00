"""Elman RNN reference kernels (PyTorch's ``nn.RNN`` equations).

Textbook notation, per step t (U = weight_ih, W = weight_hh)::

    a_t = U x_t + b_ih + W h_{t-1} + b_hh
    h_t = tanh(a_t)      or relu(a_t) with nonlinearity="relu", or f(a_t) with activations=[f]

Shapes: x (T, B, I), h (B, H).
"""

import numpy as np

from .. import activations as _acts
from ._common import (
    check_call, check_clip, check_nonlinearity, clamp,
    Saved, add_bias, keep, masked, record_norm, step_kernels, take, unpadded, valid_steps,
)


def rnn_forward(x, hx, weights, lengths=None, training=True, nonlinearity="tanh", clip=None,
                activations=None):
    """Elman RNN over a whole sequence.

    Parameters
    ----------
    x : (T, B, I) array
    hx : tuple (h0 (B, H),)
    weights : tuple (w_ih (H, I), w_hh (H, H), b_ih (H,) or None, b_hh (H,) or None)
    lengths : (B,) int array or None
    training : bool
    nonlinearity : {"tanh", "relu"}
    clip : float or None
        Clip the pre-activation to [-clip, clip] (ONNX's cell clip).
    activations : None or sequence of one activation (f)
        In place of ``nonlinearity`` (which must then stay "tanh"): see
        :mod:`fastrnn.activations`.

    Returns
    -------
    y : (T, B, H) array
    hy : tuple (h_n (B, H),)
    saved : Saved or None
        x, h_prev (the state entering each step), h_all (after it), valid, weights,
        activations (a tuple of one :class:`~fastrnn.activations.Activation`), mask (1 where the pre-activation was inside the clip, or None);
        None when ``training`` is False.
    """
    clip = check_clip(clip, np.asarray(x).dtype)
    check_call("rnn", x, hx, weights, lengths)
    (f,) = acts = check_nonlinearity(nonlinearity, activations)
    _acts.check_in_dtype(acts, np.asarray(x).dtype)
    w_ih, w_hh, b_ih, b_hh = weights
    T, B, _ = x.shape
    (h,) = hx
    valid = valid_steps(lengths, T, B)
    x = unpadded(x, lengths)
    y = np.zeros((T, B, h.shape[1]), dtype=x.dtype)
    S = T if training else 1      # steps kept: all for the backward, else one (O(B*H) memory)
    h_prev, h_all = np.empty((S,) + y.shape[1:], y.dtype), np.empty((S,) + y.shape[1:], y.dtype)
    mask = None if clip is None else np.empty((S,) + y.shape[1:], y.dtype)
    for t in range(T):
        s = t % S
        a = x[t] @ w_ih.T + h @ w_hh.T
        for b in (b_ih, b_hh):   # either bias may be absent
            if b is not None:
                a += b
        a, m = clamp(a, clip)
        h_new = _acts.forward(f, a)
        h_prev[s], h_all[s] = h, h_new
        if m is not None:
            mask[s] = m
        y[t] = masked(valid, t, h_new)
        h = keep(valid, t, h_new, h)
    saved = Saved("rnn", False, False, x=x, h_prev=h_prev, h_all=h_all, valid=valid,
                  weights=weights, activations=acts, mask=mask) if training else None
    return y, (h,), saved


def rnn_backward(dy, dhy, saved, dweights, step_norms=None, input_grad=True):
    """Backpropagation through time for :func:`rnn_forward`.

    Parameters
    ----------
    dy : (T, B, H) array
    dhy : tuple (dh_n (B, H),)
    saved : Saved, what :func:`rnn_forward` returned with ``training=True``
    dweights : tuple aligned with the forward's ``weights``, written (added into)
        The gradient of each weight is added to its buffer (None where the weight is None).
    step_norms : (T, B) array or None
    input_grad : bool
        False skips dx (returned as None): the input of a first layer needs none.

    Returns
    -------
    dx : (T, B, I) array, or None without ``input_grad``
    dhx : tuple (dh0 (B, H),)
    """
    s = take(saved, "rnn", dweights, dy, dhy, step_norms=step_norms)
    x, h_prev, h_all, valid, weights = s["x"], s["h_prev"], s["h_all"], s["valid"], s["weights"]
    w_ih, w_hh, b_ih, b_hh = weights
    T = x.shape[0]
    grads = list(dweights)   # the caller's buffers, added into in place
    dx = np.zeros_like(x) if input_grad else None
    dh = dhy[0].copy()
    for t in range(T - 1, -1, -1):
        dh_t = masked(valid, t, dh + dy[t])
        record_norm(step_norms, t, dh_t, valid)
        if s["activations"][0].name == "relu":
            # as PyTorch's threshold_backward: 0 where h <= 0, else dh (inf stays inf, NaN units pass)
            da = np.where(h_all[t] <= 0, 0, dh_t).astype(dh_t.dtype, copy=False)
        else:
            da = dh_t * _acts.derivative(s["activations"][0], h_all[t])
        if s["mask"] is not None:
            da = da * s["mask"][t]
        da = masked(valid, t, da)            # (past a sequence's end: 0, even from NaN)
        if input_grad:
            dx[t] = masked(valid, t, da @ w_ih)
        grads[0] += da.T @ x[t]
        grads[1] += da.T @ masked(valid, t, h_prev[t])
        add_bias(grads, da, 2)
        add_bias(grads, da, 3)
        dh = keep(valid, t, da @ w_hh, dh)
    return dx, (dh,)


rnn_step_forward, rnn_step_backward = step_kernels("rnn", rnn_forward, rnn_backward)
