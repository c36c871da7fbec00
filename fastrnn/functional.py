"""Functional layer under the public classes: stacks, directions, dropout and lengths.

Everything here works on time-major, batched, C-contiguous arrays whose shapes
and dtypes the public classes have already checked; the per-sequence work is
done by the kernels of a :class:`fastrnn.backends.Backend`.  There is one
kernel call per layer and direction for the whole sequence.
"""

import numpy as np

from .celltypes import MODES


def reverse_padded(a, lengths):
    """Reverse every sequence in time within its own length.

    Parameters
    ----------
    a : (T, B, ...) array
    lengths : (B,) int array or None
        Positions ``t >= lengths[b]`` stay where they are, so the mapping is
        its own inverse and the reverse direction of a bidirectional layer
        starts at each sequence's own last valid step.

    Returns
    -------
    (T, B, ...) C-contiguous array (a copy)
    """
    if lengths is None:
        return np.ascontiguousarray(a[::-1])
    T, B = a.shape[:2]
    s = np.arange(T)[:, None]
    index = np.where(s < lengths[None, :], lengths[None, :] - 1 - s, s)
    return a[index, np.arange(B)[None, :]]


def dropout_mask(rng, shape, p, dtype):
    """Inverted-dropout mask: 0 with probability p, else 1 / (1 - p)."""
    if p >= 1:
        return np.zeros(shape, dtype=dtype)
    keep = rng.random(shape, dtype=np.float64) >= p
    return keep.astype(dtype) * dtype.type(1.0 / (1.0 - p))


def sequence_forward(backend, mode, x, hx, weights, *, num_layers, num_directions,
                     lengths=None, dropout=0.0, training=True, rng=None, reverse=False,
                     options=None, direction_options=None):
    """Run a stacked, possibly bidirectional recurrent layer over a sequence.

    Parameters
    ----------
    backend : fastrnn.backends.Backend
    mode : str
        A key of :data:`fastrnn.celltypes.MODES`.
    x : (T, B, I) array
    hx : tuple of (L*D, B, H_state) arrays
        ``(h0,)``, or ``(h0, c0)`` for LSTM; index ``layer * D + direction``.
    weights : list of L*D weight tuples
        In the same order as ``hx``; see the kernel contract in :mod:`fastrnn.reference`.
    num_layers, num_directions : int
    lengths : (B,) int64 array or None
    dropout : float
        Dropout on the outputs of every layer but the last, in training only.
    training : bool
        Keep what the backward needs (otherwise the returned cache is None).
    rng : numpy.random.Generator
        Source of the dropout masks.
    reverse : bool
        With one direction, run it from each sequence's last valid step to its first (ONNX's
        ``direction="reverse"``); ``out[t]`` stays aligned with ``x[t]``.  (With two, the
        second always runs that way.)
    options : dict or None
        Keyword arguments of the cell's kernels beyond those of ``mode``: ``clip`` of every
        cell, the GRU's ``reset_after=False``, the LSTM's ``input_forget=True``.
    direction_options : list of D dicts, or None
        Keyword arguments of one direction's kernels (ONNX's ``activations`` may differ
        between the directions), added to ``options``.

    Returns
    -------
    y : (T, B, D*Hout) array
    hy : tuple of (L*D, B, H_state) arrays, like ``hx``
    cache : object or None
    """
    cell, opts = MODES[mode]
    if options:
        opts = {**opts, **options}
    forward = backend.kernels(cell)[0]
    per_dir = [{**opts, **d} for d in direction_options] if direction_options else \
        [opts] * num_directions
    if num_layers == 1 and num_directions == 1 and not reverse:
        # one kernel call: its final states (new arrays) are the layer's, without copies (a
        # stream's call per chunk: lists, not generators, which cost a frame each)
        y, h_n, cache = forward(x, tuple([h[0] for h in hx]), weights[0], lengths, training,
                                **per_dir[0])
        cache = (backend, cell, 1, (False,), lengths, [cache], [None]) if training else None
        return y, tuple([h[None] for h in h_n]), cache
    D = num_directions
    backwards = (False, True) if D == 2 else (bool(reverse),)
    hy = tuple(np.empty_like(h) for h in hx)
    layer_in = x
    caches, masks = [], []
    for layer in range(num_layers):
        ys = []
        for d in range(D):
            k = layer * D + d
            x_d = reverse_padded(layer_in, lengths) if backwards[d] else layer_in
            y, h_n, cache = forward(x_d, tuple(h[k] for h in hx), weights[k], lengths,
                                    training, **per_dir[d])
            for dst, src in zip(hy, h_n):
                dst[k] = src
            ys.append(reverse_padded(y, lengths) if backwards[d] else y)
            caches.append(cache)
        out = ys[0] if D == 1 else np.concatenate(ys, axis=2)
        mask = None
        if training and dropout > 0 and layer < num_layers - 1:
            mask = dropout_mask(rng, out.shape, dropout, out.dtype)
            out = out * mask
        masks.append(mask)
        layer_in = out
    cache = (backend, cell, num_layers, backwards, lengths, caches, masks) if training else None
    return layer_in, hy, cache


def sequence_backward(cache, dy, dhy, dweights, step_norms=False, input_grad=True):
    """Backpropagation through time for :func:`sequence_forward`.

    Parameters
    ----------
    cache : what :func:`sequence_forward` returned with ``training=True``
    dy : (T, B, D*Hout) array
    dhy : tuple of (L*D, B, H_state) arrays
    dweights : list of L*D tuples aligned with the forward's ``weights``, written
        The gradient buffers: every weight's gradient is added into its buffer.
    step_norms : bool
        Also return ||dJ/dh_t|| per layer and direction, step and sequence.
    input_grad : bool
        False skips the gradient of the input (the first layer's dx), returned as None.

    Returns
    -------
    dx : (T, B, I) array, or None without ``input_grad``
    dhx : tuple of (L*D, B, H_state) arrays
    norms : (L*D, T, B) array, or None when ``step_norms`` is False
    """
    backend, cell, num_layers, backwards, lengths, caches, masks = cache
    D = len(backwards)
    backward = backend.kernels(cell)[1]
    T, B = dy.shape[:2]
    dhx = tuple(np.empty_like(g) for g in dhy)
    norms = np.zeros((num_layers * D, T, B), dtype=dy.dtype) if step_norms else None
    dout = dy
    for layer in range(num_layers - 1, -1, -1):
        if masks[layer] is not None:
            dout = dout * masks[layer]
        width = dout.shape[2] // D
        dlayer_in = None
        for d in range(D):
            k = layer * D + d
            dy_d = dout[:, :, d * width:(d + 1) * width]
            dy_d = reverse_padded(dy_d, lengths) if backwards[d] else np.ascontiguousarray(dy_d)
            norm_k = np.zeros((T, B), dtype=dy.dtype) if step_norms else None
            need_dx = input_grad or layer > 0
            dx, dh0 = backward(dy_d, tuple(g[k] for g in dhy), caches[k], dweights[k], norm_k,
                               need_dx)
            if backwards[d] and need_dx:
                dx = reverse_padded(dx, lengths)
            if step_norms:
                norms[k] = reverse_padded(norm_k, lengths) if backwards[d] else norm_k
            for dst, src in zip(dhx, dh0):
                dst[k] = src
            if need_dx:
                dlayer_in = dx if dlayer_in is None else dlayer_in + dx
        dout = dlayer_in
    return dout, dhx, norms
