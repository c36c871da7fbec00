"""LSTM reference kernels (PyTorch's ``nn.LSTM`` equations, gate order i, f, g, o).

Textbook notation, per step t (U = weight_ih, W = weight_hh, b = bias_ih + bias_hh)::

    a_t = U x_t + W h_{t-1} + b               (4H,) split into a_i, a_f, a_g, a_o
    i_t = sigmoid(a_i)   f_t = sigmoid(a_f)   g_t = tanh(a_g)   o_t = sigmoid(a_o)
    c_t = f_t * c_{t-1} + i_t * g_t
    m_t = o_t * tanh(c_t)
    h_t = m_t                 or, with a projection (LSTMP), h_t = V_r m_t

With peepholes (ONNX's ``P``; Gers & Schmidhuber 2000), p = w_ph (3, H) rows i, f, o::

    i_t = sigmoid(a_i + p_i * c_{t-1})   f_t = sigmoid(a_f + p_f * c_{t-1})
    o_t = sigmoid(a_o + p_o * c_t)

With coupled input and forget gates (ONNX's ``input_forget=1``) the forget gate is
``f_t = 1 - i_t`` (a_f and the forget gate's weights are unused).

With ``activations=[f, g, h]`` (ONNX's activations; :mod:`fastrnn.activations`) sigmoid
becomes f (i, f, o), the candidate's tanh g and the output's tanh(c_t) h.

Shapes: x (T, B, I), h (B, P), c (B, H), with P = proj_size or H.
"""

import numpy as np

from .. import activations as _acts
from ._common import (
    check_call, check_clip, check_flag, clamp,
    Saved, add_bias, keep, masked, record_norm, step_kernels, take,
    unpadded, valid_steps,
)


def lstm_forward(x, hx, weights, lengths=None, training=True, input_forget=False, clip=None,
                 activations=None):
    """LSTM over a whole sequence.

    Parameters
    ----------
    x : (T, B, I) array
    hx : tuple (h0 (B, P), c0 (B, H))
    weights : tuple (w_ih (4H, I), w_hh (4H, P), b_ih (4H,) or None, b_hh (4H,) or None,
        w_hr (P, H) or None, w_ph (3, H) or None)
    lengths : (B,) int array or None
    training : bool
        Keep what the backward needs.
    input_forget : bool
        Couple the input and forget gates: ``f = 1 - i``.
    clip : float or None
        Clip every gate's pre-activation to [-clip, clip] (ONNX's cell clip; not c_t).
    activations : None or sequence of three activations (f, g, h)
        See :mod:`fastrnn.activations`; None: sigmoid, tanh, tanh.

    Returns
    -------
    y : (T, B, P) array
    hy : tuple (h_n (B, P), c_n (B, H))
    saved : Saved or None
        x, h_prev and c_prev (the states entering each step), gates (post-activation),
        c_all (c_t), hc (h(c_t)), valid, weights, input_forget, activations (f, g, h), mask (1
        where a pre-activation was inside the clip, or None); None when ``training`` is False.
    """
    input_forget = check_flag("input_forget", input_forget)
    clip = check_clip(clip, np.asarray(x).dtype)
    check_call("lstm", x, hx, weights, lengths)
    acts = _acts.resolve("lstm", activations)
    _acts.check_in_dtype(acts, np.asarray(x).dtype)
    fa, ga, ha = (lambda v, a=a: _acts.forward(a, v) for a in acts)
    w_ih, w_hh, b_ih, b_hh, w_hr, w_ph = weights
    T, B, _ = x.shape
    H = w_hh.shape[0] // 4
    h, c = hx
    valid = valid_steps(lengths, T, B)
    x = unpadded(x, lengths)
    y = np.zeros((T, B, h.shape[1]), dtype=x.dtype)
    S = T if training else 1      # steps kept: all for the backward, else one (O(B*H) memory)
    h_prev, c_prev = np.empty((S, B, h.shape[1]), x.dtype), np.empty((S, B, H), dtype=x.dtype)
    gates, c_all = np.empty((S, B, 4 * H), dtype=x.dtype), np.empty((S, B, H), dtype=x.dtype)
    hc = np.empty((S, B, H), dtype=x.dtype)
    mask = None if clip is None else np.ones((S, B, 4 * H), dtype=x.dtype)
    for t in range(T):
        s = t % S
        a = x[t] @ w_ih.T + h @ w_hh.T
        for b in (b_ih, b_hh):   # either bias may be absent
            if b is not None:
                a += b
        if w_ph is not None:
            a[:, :H] += w_ph[0] * c
            a[:, H:2 * H] += w_ph[1] * c
        if clip is not None:
            a[:, :3 * H], mask[s, :, :3 * H] = clamp(a[:, :3 * H], clip)
        i, f = fa(a[:, :H]), fa(a[:, H:2 * H])
        if input_forget:
            f = 1 - i
        g = ga(a[:, 2 * H:3 * H])
        c_new = f * c + i * g
        if w_ph is not None:
            a[:, 3 * H:] += w_ph[2] * c_new
        if clip is not None:
            a[:, 3 * H:], mask[s, :, 3 * H:] = clamp(a[:, 3 * H:], clip)
        o = fa(a[:, 3 * H:])
        hc[s] = ha(c_new)
        h_new = o * hc[s]
        if w_hr is not None:
            h_new = h_new @ w_hr.T
        h_prev[s], c_prev[s] = h, c
        gates[s] = np.concatenate([i, f, g, o], axis=1)
        c_all[s] = c_new
        y[t] = masked(valid, t, h_new)
        h, c = keep(valid, t, h_new, h), keep(valid, t, c_new, c)
    saved = Saved("lstm", False, False, x=x, h_prev=h_prev, c_prev=c_prev, gates=gates,
                  c_all=c_all, hc=hc, valid=valid, weights=weights,
                  input_forget=input_forget, activations=acts, mask=mask) if training else None
    return y, (h, c), saved


def lstm_backward(dy, dhy, saved, dweights, step_norms=None, input_grad=True):
    """Backpropagation through time for :func:`lstm_forward`.

    Parameters
    ----------
    dy : (T, B, P) array
    dhy : tuple (dh_n (B, P), dc_n (B, H))
    saved : Saved, what :func:`lstm_forward` returned with ``training=True``
    dweights : tuple aligned with the forward's ``weights``, written (added into)
        The gradient of each weight is added to its buffer (None where the weight is None).
    step_norms : (T, B) array or None
        Receives ||dJ/dh_t|| per step and sequence.
    input_grad : bool
        False skips dx (returned as None): the input of a first layer needs none.

    Returns
    -------
    dx : (T, B, I) array, or None without ``input_grad``
    dhx : tuple (dh0 (B, P), dc0 (B, H))
    """
    s = take(saved, "lstm", dweights, dy, dhy, step_norms=step_norms)
    x, h_prev, c_prev, gates = s["x"], s["h_prev"], s["c_prev"], s["gates"]
    c_all, valid, weights, input_forget = s["c_all"], s["valid"], s["weights"], s["input_forget"]
    w_ih, w_hh, b_ih, b_hh, w_hr, w_ph = weights
    fa, ga, ha = s["activations"]
    T = x.shape[0]
    H = w_hh.shape[0] // 4
    grads = list(dweights)   # the caller's buffers, added into in place
    dx = np.zeros_like(x) if input_grad else None
    dh, dc = dhy[0].copy(), dhy[1].copy()
    for t in range(T - 1, -1, -1):
        i, f, g, o = (gates[t, :, k * H:(k + 1) * H] for k in range(4))
        dh_t = masked(valid, t, dh + dy[t])
        record_norm(step_norms, t, dh_t, valid)
        hc = s["hc"][t]                      # h(c_t)
        if w_hr is not None:
            grads[4] += dh_t.T @ masked(valid, t, o * hc)
            dm = dh_t @ w_hr
        else:
            dm = dh_t
        m = None if s["mask"] is None else s["mask"][t]
        da_o = dm * hc * _acts.derivative(fa, o)
        if m is not None:
            da_o = da_o * m[:, 3 * H:]
        dc_t = masked(valid, t, dc) + dm * o * _acts.derivative(ha, hc)
        if w_ph is not None:
            dc_t = dc_t + da_o * w_ph[2]
        if input_forget:                     # f = 1 - i: i reaches c_t through f too
            da_i, da_f = dc_t * (g - c_prev[t]) * _acts.derivative(fa, i), np.zeros_like(i)
        else:
            da_i = dc_t * g * _acts.derivative(fa, i)
            da_f = dc_t * c_prev[t] * _acts.derivative(fa, f)
        da = np.concatenate([
            da_i,                            # d a_i
            da_f,                            # d a_f
            dc_t * i * _acts.derivative(ga, g),  # d a_g
            da_o,                            # d a_o
        ], axis=1)
        if m is not None:
            da[:, :3 * H] *= m[:, :3 * H]
        # past a sequence's end: no gradient, even where the state it kept is inf or NaN (no
        # product below pairs those rows' zeros with it: 0 * inf is NaN), as in PyTorch's
        # packed sequences, which never compute those steps
        da, c_prev_t = masked(valid, t, da), masked(valid, t, c_prev[t])
        dc_prev = dc_t * f
        if w_ph is not None:
            dc_prev = dc_prev + da[:, :H] * w_ph[0] + da[:, H:2 * H] * w_ph[1]
            grads[5][0] += (da[:, :H] * c_prev_t).sum(axis=0)
            grads[5][1] += (da[:, H:2 * H] * c_prev_t).sum(axis=0)
            grads[5][2] += (da[:, 3 * H:] * masked(valid, t, c_all[t])).sum(axis=0)
        if input_grad:
            dx[t] = masked(valid, t, da @ w_ih)
        grads[0] += da.T @ x[t]
        grads[1] += da.T @ masked(valid, t, h_prev[t])
        add_bias(grads, da, 2)
        add_bias(grads, da, 3)
        dh = keep(valid, t, da @ w_hh, dh)
        dc = keep(valid, t, dc_prev, dc)
    return dx, (dh, dc)


lstm_step_forward, lstm_step_backward = step_kernels("lstm", lstm_forward, lstm_backward)
