"""Helpers shared by the reference kernels."""

import numpy as np


def sigmoid(a):
    """Logistic function, stable for any input: no overflow, NaN propagates."""
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(a.dtype, copy=False)


def valid_steps(lengths, T, B):
    """(T, B, 1) bool array, True where step t is inside sequence b; None without lengths."""
    if lengths is None:
        return None
    return (np.arange(T)[:, None] < lengths[None, :])[:, :, None]


def keep(valid, t, new, old):
    """The new state where step t is valid, else the old one."""
    return new if valid is None else np.where(valid[t], new, old)


def masked(valid, t, value):
    """``value`` with the rows of sequences that ended before step t zeroed."""
    return value if valid is None else np.where(valid[t], value, 0)


def record_norm(step_norms, t, dh, valid):
    """Store ||dJ/dh_t|| per sequence into step_norms[t] (0 past the end)."""
    if step_norms is not None:
        step_norms[t] = np.linalg.norm(masked(valid, t, dh), axis=1)


def add_bias(grads, da, i):
    """Accumulate the bias gradient ``sum_b da`` into grads[i] unless that bias is absent."""
    if grads[i] is not None:
        grads[i] += da.sum(axis=0)


def zero_like_weights(weights):
    """Gradient buffers aligned with ``weights`` (None where a weight is None)."""
    return [None if w is None else np.zeros_like(w) for w in weights]


def step_kernels(forward, backward):
    """One-step kernels built from the sequence kernels (T = 1).

    ``step_forward(x, hx, weights, training=True, **opts)`` takes x: (B, I) and
    returns ``(hy, cache)``; ``step_backward(dhy, cache)`` returns
    ``(dx (B, I), dhx, dweights)``.
    """

    def step_forward(x, hx, weights, training=True, **opts):
        _, hy, cache = forward(x[None], hx, weights, None, training, **opts)
        return hy, cache

    def step_backward(dhy, cache):
        dy = np.zeros((1,) + dhy[0].shape, dtype=dhy[0].dtype)
        dx, dhx, dweights = backward(dy, dhy, cache)
        return dx[0], dhx, dweights

    return step_forward, step_backward
