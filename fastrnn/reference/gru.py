"""GRU reference kernels (PyTorch's ``nn.GRU`` equations, gate order r, z, n).

Textbook notation, per step t (U = weight_ih, W = weight_hh)::

    r_t = sigmoid(U_r x_t + b_ir + W_r h_{t-1} + b_hr)
    z_t = sigmoid(U_z x_t + b_iz + W_z h_{t-1} + b_hz)
    n_t = tanh(U_n x_t + b_in + r_t * (W_n h_{t-1} + b_hn))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

The reset gate multiplies the recurrent term *after* its matrix product (the
``linear_before_reset=1`` variant of ONNX, ``reset_after=True`` of Keras).
Shapes: x (T, B, I), h (B, H).
"""

import numpy as np

from ._common import (
    Saved, add_bias, keep, masked, record_norm, sigmoid, step_kernels, take, valid_steps, 
)


def gru_forward(x, hx, weights, lengths=None, training=True):
    """GRU over a whole sequence.

    Parameters
    ----------
    x : (T, B, I) array
    hx : tuple (h0 (B, H),)
    weights : tuple (w_ih (3H, I), w_hh (3H, H), b_ih (3H,) or None, b_hh (3H,) or None)
    lengths : (B,) int array or None
    training : bool

    Returns
    -------
    y : (T, B, H) array
    hy : tuple (h_n (B, H),)
    saved : Saved or None
        x, h_prev (the state entering each step), gates ([r, z, n, W_hn h + b_hn] per step),
        valid, weights; None when ``training`` is False.
    """
    w_ih, w_hh, b_ih, b_hh = weights
    T, B, _ = x.shape
    H = w_hh.shape[0] // 3
    (h,) = hx
    valid = valid_steps(lengths, T, B)
    y = np.zeros((T, B, H), dtype=x.dtype)
    S = T if training else 1      # steps kept: all for the backward, else one (O(B*H) memory)
    h_prev, gates = np.empty((S, B, H), x.dtype), np.empty((S, B, 4 * H), dtype=x.dtype)
    for t in range(T):
        s = t % S
        gi, gh = x[t] @ w_ih.T, h @ w_hh.T
        if b_ih is not None:
            gi += b_ih
        if b_hh is not None:
            gh += b_hh
        r = sigmoid(gi[:, :H] + gh[:, :H])
        z = sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        hn = gh[:, 2 * H:]                   # W_n h_{t-1} + b_hn
        n = np.tanh(gi[:, 2 * H:] + r * hn)
        h_new = (1 - z) * n + z * h
        h_prev[s] = h
        gates[s] = np.concatenate([r, z, n, hn], axis=1)
        y[t] = masked(valid, t, h_new)
        h = keep(valid, t, h_new, h)
    saved = Saved("gru", False, False, x=x, h_prev=h_prev, gates=gates, valid=valid,
                  weights=weights) if training else None
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
    s = take(saved, "gru", dweights)
    x, h_prev, gates, valid, weights = s["x"], s["h_prev"], s["gates"], s["valid"], s["weights"]
    w_ih, w_hh, b_ih, b_hh = weights
    T = x.shape[0]
    H = w_hh.shape[0] // 3
    grads = list(dweights)   # the caller's buffers, added into in place
    dx = np.zeros_like(x) if input_grad else None
    dh = dhy[0].copy()
    for t in range(T - 1, -1, -1):
        r, z, n, hn = (gates[t, :, k * H:(k + 1) * H] for k in range(4))
        dh_t = masked(valid, t, dh + dy[t])
        record_norm(step_norms, t, dh_t, valid)
        dn = (dh_t - z * dh_t) * (1 - n ** 2)       # d of n's pre-activation (h' = n + z (h - n))
        dr = dn * hn * r * (1 - r)
        dz = dh_t * (h_prev[t] - n) * z * (1 - z)
        dgi = np.concatenate([dr, dz, dn], axis=1)  # d (U x + b_i)
        dgh = np.concatenate([dr, dz, dn * r], axis=1)  # d (W h + b_h)
        if input_grad:
            dx[t] = dgi @ w_ih
        grads[0] += dgi.T @ x[t]
        grads[1] += dgh.T @ h_prev[t]
        add_bias(grads, dgi, 2)
        add_bias(grads, dgh, 3)
        dh = keep(valid, t, dh_t * z + dgh @ w_hh, dh)
    return dx, (dh,)


gru_step_forward, gru_step_backward = step_kernels("gru", gru_forward, gru_backward)
