"""GRU reference kernels (PyTorch's ``nn.GRU`` equations, gate order r, z, n).

Textbook notation, per step t (U = weight_ih, W = weight_hh)::

    r_t = sigmoid(U_r x_t + b_ir + W_r h_{t-1} + b_hr)
    z_t = sigmoid(U_z x_t + b_iz + W_z h_{t-1} + b_hz)
    n_t = tanh(U_n x_t + b_in + r_t * (W_n h_{t-1} + b_hn))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

By default the reset gate multiplies the recurrent term *after* its matrix product
(PyTorch's GRU, ``linear_before_reset=1`` of ONNX, ``reset_after=True`` of Keras).  With
``reset_after=False`` it multiplies the state *before* it (the GRU of Cho et al. 2014, ONNX's
default ``linear_before_reset=0``, Keras 2's default ``reset_after=False``)::

    n_t = tanh(U_n x_t + b_in + W_n (r_t * h_{t-1}) + b_hn)

With ``activations=[f, g]`` (ONNX's activations; :mod:`fastrnn.activations`) sigmoid
becomes f (r, z) and tanh g (n).

Shapes: x (T, B, I), h (B, H).
"""

import numpy as np

from .. import activations as _acts
from ._common import (
    check_call, check_clip, check_flag, clamp,
    Saved, add_bias, keep, masked, record_norm, step_kernels, take, unpadded, valid_steps,
)


def gru_forward(x, hx, weights, lengths=None, training=True, reset_after=True, clip=None,
                activations=None):
    """GRU over a whole sequence.

    Parameters
    ----------
    x : (T, B, I) array
    hx : tuple (h0 (B, H),)
    weights : tuple (w_ih (3H, I), w_hh (3H, H), b_ih (3H,) or None, b_hh (3H,) or None)
    lengths : (B,) int array or None
    training : bool
    reset_after : bool
        Reset gate applied after the recurrent product of n (PyTorch's form), or before it.
    clip : float or None
        Clip every gate's whole pre-activation to [-clip, clip] (ONNX's cell clip).
    activations : None or sequence of two activations (f, g)
        See :mod:`fastrnn.activations`; None: sigmoid, tanh.

    Returns
    -------
    y : (T, B, H) array
    hy : tuple (h_n (B, H),)
    saved : Saved or None
        x, h_prev (the state entering each step), gates ([r, z, n, W_hn h + b_hn] per step, or
        [r, z, n, r * h_{t-1}] with ``reset_after=False``), valid, weights, reset_after, activations (f, g),
        mask (1 where a pre-activation was inside the clip, or None); None when ``training`` is
        False.
    """
    reset_after = check_flag("reset_after", reset_after)
    clip = check_clip(clip, np.asarray(x).dtype)
    check_call("gru", x, hx, weights, lengths)
    acts = _acts.resolve("gru", activations)
    _acts.check_in_dtype(acts, np.asarray(x).dtype)
    w_ih, w_hh, b_ih, b_hh = weights
    T, B, _ = x.shape
    H = w_hh.shape[0] // 3
    (h,) = hx
    valid = valid_steps(lengths, T, B)
    x = unpadded(x, lengths)
    y = np.zeros((T, B, H), dtype=x.dtype)
    S = T if training else 1      # steps kept: all for the backward, else one (O(B*H) memory)
    h_prev, gates = np.empty((S, B, H), x.dtype), np.empty((S, B, 4 * H), dtype=x.dtype)
    mask = None if clip is None else np.empty((S, B, 3 * H), dtype=x.dtype)
    for t in range(T):
        s = t % S
        gi, gh = x[t] @ w_ih.T, h @ (w_hh if reset_after else w_hh[:2 * H]).T
        if b_ih is not None:
            gi += b_ih
        if b_hh is not None:
            gh += b_hh[:gh.shape[1]]
        a_rz, m_rz = clamp(gi[:, :2 * H] + gh[:, :2 * H], clip)
        r, z = _acts.forward(acts[0], a_rz[:, :H]), _acts.forward(acts[0], a_rz[:, H:])
        if reset_after:
            hn = gh[:, 2 * H:]                   # W_n h_{t-1} + b_hn
            a_n, m_n = clamp(gi[:, 2 * H:] + r * hn, clip)
            kept = hn
        else:
            kept = r * h                         # r_t * h_{t-1}
            hn = kept @ w_hh[2 * H:].T           # W_n (r_t * h_{t-1}) + b_hn
            if b_hh is not None:
                hn += b_hh[2 * H:]
            a_n, m_n = clamp(gi[:, 2 * H:] + hn, clip)
        n = _acts.forward(acts[1], a_n)
        if clip is not None:
            mask[s, :, :2 * H], mask[s, :, 2 * H:] = m_rz, m_n
        h_new = (1 - z) * n + z * h
        h_prev[s] = h
        gates[s] = np.concatenate([r, z, n, kept], axis=1)
        y[t] = masked(valid, t, h_new)
        h = keep(valid, t, h_new, h)
    saved = Saved("gru", False, False, x=x, h_prev=h_prev, gates=gates, valid=valid,
                  weights=weights, reset_after=reset_after, activations=acts,
                  mask=mask) if training else None
    return y, (h,), saved


def gru_backward(dy, dhy, saved, dweights, step_norms=None, input_grad=True):
    """Backpropagation through time for :func:`gru_forward`.

    Parameters
    ----------
    dy : (T, B, H) array
    dhy : tuple (dh_n (B, H),)
    saved : Saved, what :func:`gru_forward` returned with ``training=True``
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
    s = take(saved, "gru", dweights, dy, dhy, step_norms=step_norms)
    x, h_prev, gates, valid, weights = s["x"], s["h_prev"], s["gates"], s["valid"], s["weights"]
    reset_after = s["reset_after"]
    fa, ga = s["activations"]
    w_ih, w_hh, b_ih, b_hh = weights
    T = x.shape[0]
    H = w_hh.shape[0] // 3
    grads = list(dweights)   # the caller's buffers, added into in place
    dx = np.zeros_like(x) if input_grad else None
    dh = dhy[0].copy()
    for t in range(T - 1, -1, -1):
        r, z, n, kept = (gates[t, :, k * H:(k + 1) * H] for k in range(4))
        dh_t = masked(valid, t, dh + dy[t])
        record_norm(step_norms, t, dh_t, valid)
        dn = (dh_t - z * dh_t) * _acts.derivative(ga, n)   # d of n's pre-activation (h' = n + z (h - n))
        dz = dh_t * (h_prev[t] - n) * _acts.derivative(fa, z)
        m = None if s["mask"] is None else s["mask"][t]
        if m is not None:                           # the clip: no gradient outside it
            dn, dz = dn * m[:, 2 * H:], dz * m[:, H:2 * H]
        # past a sequence's end: no gradient, even where the state it kept is inf or NaN (no
        # product below pairs those rows' zeros with it: 0 * inf is NaN), as in PyTorch's
        # packed sequences, which never compute those steps
        dn, dz, h_prev_t = (masked(valid, t, v) for v in (dn, dz, h_prev[t]))
        if reset_after:                             # kept: W_n h + b_hn
            dr = masked(valid, t, dn * kept * _acts.derivative(fa, r))
            if m is not None:
                dr = dr * m[:, :H]
            dgh = np.concatenate([dr, dz, dn * r], axis=1)  # d (W h + b_h)
            dgh = masked(valid, t, dgh)
            grads[1] += dgh.T @ h_prev_t
            dh_prev = dgh @ w_hh
        else:                                       # kept: r * h
            drh = dn @ w_hh[2 * H:]                 # d (r * h)
            dr = masked(valid, t, drh * h_prev[t] * _acts.derivative(fa, r))
            if m is not None:
                dr = dr * m[:, :H]
            dgh = np.concatenate([dr, dz, dn], axis=1)      # d (W_rz h + b_hrz, W_n (r h) + b_hn)
            grads[1][:2 * H] += dgh[:, :2 * H].T @ h_prev_t
            grads[1][2 * H:] += dn.T @ masked(valid, t, kept)
            dh_prev = dgh[:, :2 * H] @ w_hh[:2 * H] + drh * r
        dgi = np.concatenate([dr, dz, dn], axis=1)  # d (U x + b_i)
        if input_grad:
            dx[t] = masked(valid, t, dgi @ w_ih)
        grads[0] += dgi.T @ x[t]
        add_bias(grads, dgi, 2)
        add_bias(grads, dgh, 3)
        dh = keep(valid, t, dh_t * z + dh_prev, dh)
    return dx, (dh,)


gru_step_forward, gru_step_backward = step_kernels("gru", gru_forward, gru_backward)
