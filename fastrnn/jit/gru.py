"""GRU kernels of the numba backend (equations, gate order r, z, n and both reset forms of
:mod:`fastrnn.reference.gru`; x (T, B, I), h (B, H)).

Forward:

1. input projection of all steps, ``x_t @ W_ih^T``, into the first 3H
   columns of the gate store (T, B, 4H): one BLAS GEMM over all T*B rows (an
   eval-mode forward projects ``config.EVAL_BYTES`` of gates at a time into a
   smaller workspace);
2. per thread (a slice of the batch), per step: ``+ b_ih``, ``gh = b_hh +
   h_{t-1} @ W_hh^T`` (one 3H-wide product), then one fused pass for r, z, n
   and h_t.

A training-mode forward stores ``[r, z, n, W_hn h_{t-1} + b_hn]`` (4H) and
h_t (H) per step and sequence, T*B*5H values, so the backward needs no
transcendental function.  The backward loop (per thread, t = T-1..0)
overwrites the store with ``[dr, dz, dn, dn * r]``: its first 3H columns are
the gradient of the input projection, columns 0:2H and 3H:4H that of the
recurrent one.  dx, dW_ih and dW_hh are then single BLAS GEMMs over all T*B
rows.

With ``reset_after=False`` (the reset gate before the product of n) a step makes two
recurrent products, ``h_{t-1} @ W_hrz^T`` (2H wide) and then ``(r * h_{t-1}) @ W_hn^T``; the
store keeps ``[r, z, n, r * h_{t-1}]`` and becomes ``[dr, dz, dn, r * h_{t-1}]``: the backward's
step makes ``d(r h) = dn @ W_hn`` before dr, then adds ``[dr, dz] @ W_hrz`` into dh, and dW_hn
is one GEMM of the dn and r * h columns after the loop.

With ``activations=[f, g]`` (:mod:`fastrnn.activations`) the fused passes apply f to r and z
and g to n by the row passes of :mod:`fastrnn.jit.activations`, and the backward takes their
derivatives from the stored gates; the defaults keep their own fused loops.
"""

import numpy as np

from . import _common
from .activations import act_grad_row, act_row, sigmoid, tanh
from .config import batch_slices, helper, jit, one_blas_thread, threads_for
from ..reference._common import check_call, check_clip, check_flag
from .gemm import (add_rows, clip_row, copy, init_rows, mask_row, mm_nt, mm_rows, mm_rows_live,
                   store_norm)


@helper()
def _cell_update(g, gh, h, hs, hy, kinds, params, clip, M, t, b):
    """Fused GRU update of one sequence (one store per loop, so that every loop vectorises).

    Parameters
    ----------
    g : (4H,) array: ``b_ih + U x`` in columns 0:3H; [r, z, n, W_hn h + b_hn] out
    gh : (3H,) array, ``b_hh + W h_{t-1}``
    h : (H,) array, h_{t-1} in, h_t out
    hs, hy : (H,) arrays receiving h_t
    kinds, params : (3,) int32 and (3, 2) float64 arrays, the activations f (r, z) and g (n)
        in their first two slots (see :func:`_common.act_arrays`), or (0,) and (0, 2) for
        sigmoid, tanh
    clip : float, the cell clip of the pre-activations (0: none)
    M, t, b : (T, B, 3H) array receiving the clip's mask at [t, b], or (0, 0, 0)
    """
    H = h.shape[0]
    one = h.dtype.type(1)
    grz, gr, gz, gn, ghn = g[:2 * H], g[:H], g[H:2 * H], g[2 * H:3 * H], g[3 * H:4 * H]
    ghrz, ghh = gh[:2 * H], gh[2 * H:3 * H]
    generic = kinds.shape[0] > 0
    if clip > 0 or generic:
        for j in range(2 * H):
            grz[j] = grz[j] + ghrz[j]
        if clip > 0:
            clip_row(grz, clip, M, t, b, 0)
        if generic:
            act_row(kinds[0], params[0, 0], params[0, 1], grz)
        else:
            for j in range(2 * H):
                grz[j] = sigmoid(grz[j])
    else:
        for j in range(2 * H):
            grz[j] = sigmoid(grz[j] + ghrz[j])
    for j in range(H):
        ghn[j] = ghh[j]
    if clip > 0 or generic:
        for j in range(H):
            gn[j] = gn[j] + gr[j] * ghn[j]
        if clip > 0:
            clip_row(gn, clip, M, t, b, 2 * H)
        if generic:
            act_row(kinds[1], params[1, 0], params[1, 1], gn)
        else:
            for j in range(H):
                gn[j] = tanh(gn[j])
    else:
        for j in range(H):
            gn[j] = tanh(gn[j] + gr[j] * ghn[j])
    for j in range(H):
        h[j] = (one - gz[j]) * gn[j] + gz[j] * h[j]
    for j in range(H):
        hs[j] = h[j]
    for j in range(H):
        hy[j] = h[j]


@helper()
def _cell_backward(g, d, hp, t1, t2, kinds, params, M, t, b):
    """Backward of :func:`_cell_update` for one sequence at one step.

    Parameters
    ----------
    g : (4H,) array: [r, z, n, hn] in, [dr, dz, dn, dn * r] out
    d : (H,) array: dJ/dh_t in, its part through z (dJ/dh_t * z) out
    hp : (H,) array, h_{t-1}
    t1, t2 : (H,) and (2H,) scratch arrays
    kinds, params : the activations, as :func:`_cell_update`
    M, t, b : (T, B, 3H) array of the clip's mask, read at [t, b], or (0, 0, 0)
    """
    if kinds.shape[0] > 0:
        _cell_backward_acts(g, d, hp, t1, t2, kinds, params, M, t, b)
        return
    H = d.shape[0]
    one = d.dtype.type(1)
    gr, gz, gn, ghn = g[:H], g[H:2 * H], g[2 * H:3 * H], g[3 * H:4 * H]
    for j in range(H):
        t1[j] = (d[j] - d[j] * gz[j]) * (one - gn[j] * gn[j])   # as PyTorch: inf gives NaN
    mask_row(t1, M, t, b, 2 * H)
    for j in range(H):
        t2[j] = d[j] * gz[j]
    for j in range(H):
        gz[j] = d[j] * (hp[j] - gn[j]) * gz[j] * (one - gz[j])
    mask_row(gz, M, t, b, H)
    for j in range(H):
        gn[j] = t1[j]
    for j in range(H):
        d[j] = t2[j]
    for j in range(H):
        t2[j] = t1[j] * gr[j]
    for j in range(H):
        gr[j] = t1[j] * ghn[j] * gr[j] * (one - gr[j])
    mask_row(gr, M, t, b, 0)
    for j in range(H):
        ghn[j] = t2[j]


@helper()
def _cell_backward_acts(g, d, hp, t1, t2, kinds, params, M, t, b):
    """:func:`_cell_backward` with the activations of ``kinds, params`` (not (0,)): each
    derivative is a row pass (:func:`~fastrnn.jit.activations.act_grad_row`) over the
    product it multiplies, made in a scratch row; r and z, adjacent, take one pass (same
    arguments, ``t2`` (2H,))."""
    H = d.shape[0]
    grz, gr, gz, gn, ghn = g[:2 * H], g[:H], g[H:2 * H], g[2 * H:3 * H], g[3 * H:4 * H]
    tr, tz = t2[:H], t2[H:2 * H]
    for j in range(H):   # dn = (d - z d) g'(a_n), masked by the clip
        t1[j] = d[j] - d[j] * gz[j]
    act_grad_row(kinds[1], params[1, 0], params[1, 1], gn, t1)
    mask_row(t1, M, t, b, 2 * H)
    for j in range(H):   # dr = dn (W_hn h + b_hn) f'(a_r)
        tr[j] = t1[j] * ghn[j]
    for j in range(H):   # dz = d (h_{t-1} - n) f'(a_z)
        tz[j] = d[j] * (hp[j] - gn[j])
    act_grad_row(kinds[0], params[0, 0], params[0, 1], grz, t2)
    mask_row(t2, M, t, b, 0)
    for j in range(H):
        d[j] = d[j] * gz[j]
    for j in range(H):
        ghn[j] = t1[j] * gr[j]
    for j in range(H):
        gn[j] = t1[j]
    for j in range(2 * H):
        grz[j] = t2[j]


@helper()
def _gates_rz(g, gh, h, kinds, params, clip, M, t, b):
    """Reset-before forward, first half: r, z and r * h_{t-1} of one sequence.

    Parameters
    ----------
    g : (4H,) array: ``b_ih + U x`` in columns 0:3H; r, z in 0:2H and r * h_{t-1} in 3H:4H out
    gh : (>= 2H,) array, ``b_hrz + W_hrz h_{t-1}`` in its first 2H
    h : (H,) array, h_{t-1}
    kinds, params : the activations, as :func:`_cell_update`
    clip, M, t, b : the cell clip (0: none) and its mask's array and row, as _cell_update
    """
    H = h.shape[0]
    grz, gr, grh = g[:2 * H], g[:H], g[3 * H:4 * H]
    ghrz = gh[:2 * H]
    for j in range(2 * H):
        grz[j] = grz[j] + ghrz[j]
    if clip > 0:
        clip_row(grz, clip, M, t, b, 0)
    if kinds.shape[0] > 0:
        act_row(kinds[0], params[0, 0], params[0, 1], grz)
    else:
        for j in range(2 * H):
            grz[j] = sigmoid(grz[j])
    for j in range(H):
        grh[j] = gr[j] * h[j]


@helper()
def _gates_n(g, ghn, h, hs, hy, kinds, params, clip, M, t, b):
    """Reset-before forward, second half: n and h_t of one sequence.

    Parameters
    ----------
    g : (4H,) array: [r, z, U_n x + b_in, r * h] in, [r, z, n, r * h] out
    ghn : (H,) array, ``b_hn + W_hn (r * h_{t-1})``
    h : (H,) array, h_{t-1} in, h_t out
    hs, hy : (H,) arrays receiving h_t
    kinds, params : the activations, as :func:`_cell_update`
    clip, M, t, b : the cell clip (0: none) and its mask's array and row, as _cell_update
    """
    H = h.shape[0]
    one = h.dtype.type(1)
    gz, gn = g[H:2 * H], g[2 * H:3 * H]
    for j in range(H):
        gn[j] = gn[j] + ghn[j]
    if clip > 0:
        clip_row(gn, clip, M, t, b, 2 * H)
    if kinds.shape[0] > 0:
        act_row(kinds[1], params[1, 0], params[1, 1], gn)
    else:
        for j in range(H):
            gn[j] = tanh(gn[j])
    for j in range(H):
        h[j] = (one - gz[j]) * gn[j] + gz[j] * h[j]
    for j in range(H):
        hs[j] = h[j]
    for j in range(H):
        hy[j] = h[j]


@helper()
def _grads_zn(g, d, hp, t1, t2, kinds, params, M, t, b):
    """Reset-before backward, first half, of one sequence at one step.

    Parameters
    ----------
    g : (4H,) array: [r, z, n, r * h] in, [r, dz, dn, r * h] out
    d : (H,) array: dJ/dh_t in, its part through z (dJ/dh_t * z) out
    hp : (H,) array, h_{t-1}
    t1, t2 : (H,) scratch arrays (used with activations)
    kinds, params : the activations, as :func:`_cell_update`
    M, t, b : (T, B, 3H) array of the clip's mask, read at [t, b], or (0, 0, 0)
    """
    H = d.shape[0]
    one = d.dtype.type(1)
    gz, gn = g[H:2 * H], g[2 * H:3 * H]
    if kinds.shape[0] > 0:   # each derivative a row pass over the product it multiplies
        for j in range(H):
            t1[j] = d[j] - d[j] * gz[j]
        act_grad_row(kinds[1], params[1, 0], params[1, 1], gn, t1)
        for j in range(H):
            t2[j] = d[j] * (hp[j] - gn[j])
        act_grad_row(kinds[0], params[0, 0], params[0, 1], gz, t2)
        for j in range(H):
            d[j] = d[j] * gz[j]
        for j in range(H):
            gn[j] = t1[j]
        for j in range(H):
            gz[j] = t2[j]
    else:
        for j in range(H):
            dn = (d[j] - d[j] * gz[j]) * (one - gn[j] * gn[j])   # as PyTorch: inf gives NaN
            dz = d[j] * (hp[j] - gn[j]) * gz[j] * (one - gz[j])
            d[j] = d[j] * gz[j]
            gn[j] = dn
            gz[j] = dz
    mask_row(g[H:3 * H], M, t, b, H)


@helper()
def _grads_r(g, d, drh, hp, kinds, params, M, t, b):
    """Reset-before backward, second half: dr, and the part of dJ/dh_{t-1} through r * h.

    Parameters
    ----------
    g : (4H,) array: r in columns 0:H, dr out
    d : (H,) array, added into
    drh : (H,) array, dJ/d(r * h_{t-1}) = dn @ W_hn (with activations, then scratch)
    hp : (H,) array, h_{t-1}
    kinds, params : the activations, as :func:`_cell_update`
    M, t, b : (T, B, 3H) array of the clip's mask, read at [t, b], or (0, 0, 0)
    """
    H = d.shape[0]
    one = d.dtype.type(1)
    gr = g[:H]
    for j in range(H):
        d[j] += drh[j] * gr[j]
    if kinds.shape[0] > 0:
        for j in range(H):
            drh[j] = drh[j] * hp[j]
        act_grad_row(kinds[0], params[0, 0], params[0, 1], gr, drh)
        for j in range(H):
            gr[j] = drh[j]
    else:
        for j in range(H):
            gr[j] = drh[j] * hp[j] * gr[j] * (one - gr[j])
    mask_row(gr, M, t, b, 0)


@jit
def _forward_slice(h, w_hh, b_ih, b_hh, kinds, params, clip, M, lengths, y, G, Hs, GH, t0, nt, b0,
                   b1):
    """Steps t0 <= t < t0 + nt of the forward for the sequences b0 <= b < b1.

    Parameters
    ----------
    h : (B, H) array, h_{t0-1} in, h_{t0+nt-1} out
    w_hh : W_hh^T (H, 3H) packed (see gemm.pack)
    b_ih, b_hh : (3H,) arrays, or (0,) when absent
    kinds, params : the activations, as :func:`_cell_update`
    clip : float, the cell clip (0: none)
    M : (T, B, 3H) array receiving the clip's mask (training), or (0, 0, 0)
    lengths : (B,) int64 array
    y : (T, B, H) array, written
    G : (TG, B, >= 4H) array: step t's x_t @ W_ih^T in columns 0:3H at t % TG in,
        [r, z, n, W_hn h + b_hn] out
    Hs : (TS, B, H) array receiving h_t at index t % TS (TS = T, or 1 in eval mode)
    GH : (1, B, >= 3H) workspace
    t0, nt, b0, b1 : int
    """
    B, H = h.shape
    h3 = h.reshape((1, B, H))
    for t in range(t0, t0 + nt):
        tg = t % G.shape[0]
        ts = t % Hs.shape[0]
        add_rows(G[tg, b0:b1], 0, 3 * H, b_ih, b_ih[:0])
        init_rows(GH[0, b0:b1], 0, 3 * H, b_hh, b_hh[:0])
        mm_rows(h3, 0, 0, w_hh, 3 * H, GH, 0, 0, 1, b0, b1)
        for b in range(b0, b1):
            if t >= lengths[b]:
                y[t, b, :] = 0
                G[tg, b, :] = 0
                Hs[ts, b, :] = 0
                continue
            _cell_update(G[tg, b], GH[0, b], h[b], Hs[ts, b], y[t, b], kinds, params, clip, M,
                         t, b)


@jit
def _forward_slice_rb(h, w_hrz, w_hn, b_ih, b_hh, kinds, params, clip, M, lengths, y, G, Hs, GH,
                      t0, nt, b0, b1):
    """:func:`_forward_slice` of the reset-before GRU.

    Parameters
    ----------
    w_hrz, w_hn : W_hh[:2H]^T (H, 2H) and W_hh[2H:]^T (H, H), packed (see gemm.pack)
    G : (TG, B, >= 4H) array: step t's U x in columns 0:3H at t % TG in,
        [r, z, n, r * h_{t-1}] out
    (the rest as :func:`_forward_slice`)
    """
    B, H = h.shape
    h3 = h.reshape((1, B, H))
    for t in range(t0, t0 + nt):
        tg = t % G.shape[0]
        ts = t % Hs.shape[0]
        add_rows(G[tg, b0:b1], 0, 3 * H, b_ih, b_ih[:0])
        init_rows(GH[0, b0:b1], 0, 3 * H, b_hh, b_hh[:0])
        mm_rows(h3, 0, 0, w_hrz, 2 * H, GH, 0, 0, 1, b0, b1)
        for b in range(b0, b1):
            if t >= lengths[b]:
                G[tg, b, :] = 0
                continue
            _gates_rz(G[tg, b], GH[0, b], h[b], kinds, params, clip, M, t, b)
        mm_rows(G, tg, 3 * H, w_hn, H, GH, 0, 2 * H, 1, b0, b1)
        for b in range(b0, b1):
            if t >= lengths[b]:
                y[t, b, :] = 0
                Hs[ts, b, :] = 0
                continue
            _gates_n(G[tg, b], GH[0, b, 2 * H:3 * H], h[b], Hs[ts, b], y[t, b], kinds, params,
                     clip, M, t, b)


@one_blas_thread
def gru_forward(x, hx, weights, lengths=None, training=True, reset_after=True, clip=None,
                activations=None):
    """GRU over a whole sequence (the kernel contract of :mod:`fastrnn.reference`).

    Parameters
    ----------
    x : (T, B, I) array, float32 or float64
    hx : tuple (h0 (B, H),)
    weights : tuple (w_ih (3H, I), w_hh (3H, H), b_ih (3H,) or None, b_hh (3H,) or None)
    lengths : (B,) int64 array or None
        Steps ``t >= lengths[b]`` give zero output and leave sequence b's state alone.
    training : bool
        Keep what the backward needs (T*B*5H values); otherwise only
        O(max(B * H, config.EVAL_BYTES)) workspace beyond the output.
    reset_after : bool
        The reset gate after the recurrent product of n (PyTorch's GRU), or before it.
    clip : float or None
        Clip every gate's whole pre-activation to [-clip, clip] (ONNX's cell clip).
    activations : None or sequence of two activations (f, g)
        See :mod:`fastrnn.activations`; None: sigmoid, tanh.

    Returns
    -------
    y : (T, B, H) array
    hy : tuple (h_n (B, H),)
    saved : Saved or None
        The record for :func:`gru_backward` (x, sparse: x compressed or None, h0, G: the
        gates, Hs: h_t, lens, weights, reset_after, acts: the activations' kinds and params, M:
        the clip's mask), None when ``training`` is False.
    """
    reset_after = check_flag("reset_after", reset_after)
    clip = check_clip(clip, np.asarray(x).dtype)
    kinds, params = _common.act_arrays("gru", activations, x)
    check_call("gru", x, hx, weights, lengths)
    weights = _common.writeable_all(weights)
    w_ih, w_hh, b_ih, b_hh = weights
    dt = x.dtype
    x = _common.contiguous(x, dt)
    T, B = x.shape[0], x.shape[1]
    H3, H = w_hh.shape
    h = np.array(hx[0], dtype=dt, order="C")
    h0 = h.copy() if training else None
    lens = _common.lengths_or_full(lengths, T, B)
    if training:   # the backward's dW_ih = D^T x runs over every row, padding included
        x = _common.unpadded(x, lens)
    y = np.empty((T, B, H), dtype=dt)
    G = _common.row_buffer(_common.store_steps(T, B, 4 * H, dt, training), B, 4 * H, dt)
    Hs = np.empty((T if training else 1, B, H), dtype=dt)
    if reset_after:
        kernel, w_hh_p = _forward_slice, (_common.packed(w_hh, True),)
    else:
        kernel = _forward_slice_rb
        w_hh_p = (_common.packed(w_hh[:2 * H], True), _common.packed(w_hh[2 * H:], True))
    M = _common.clip_mask(clip, training, T, B, H3, dt)
    args = (h,) + w_hh_p + (_common.bias_or_empty(b_ih, dt), _common.bias_or_empty(b_hh, dt),
                            kinds, params, clip or 0.0, M, lens, y, G, Hs,
                            _common.row_buffer(1, B, H3, dt))
    sparse = _common.forward_loop(kernel, args, x, w_ih, G, threads_for(2 * T * B * H3 * H))
    saved = _common.Saved("gru", False, True, x=x, sparse=sparse, h0=h0, G=G, Hs=Hs, lens=lens,
                          weights=weights, reset_after=reset_after, acts=(kinds, params),
                          M=M) if training else None
    return y, (h,), saved


@jit
def _backward_slice(dy, dh, h0, G, Hs, w_hzr, w_hn, kinds, params, M, lengths, norms, s0, s1,
                    b0, b1):
    """BPTT over the steps s0 <= t < s1, the last first, for the sequences b0 <= b < b1
    (dh, and dc for LSTM, carry the gradient of the state from one call to the next).

    Parameters
    ----------
    dy : (T, B, H) array
    dh : (B, H) array, dh_n in, dh0 out
    h0 : (B, H) array
    G : (T, B, >= 4H) array: [r, z, n, hn] in, [dr, dz, dn, dn * r] out
    Hs : (T, B, H) array of h_t
    w_hzr, w_hn : W_hh[:2H] (2H, H) and W_hh[2H:] (H, H), packed (see gemm.pack)
    kinds, params : the activations, as :func:`_cell_update`
    M : (T, B, 3H) array of the clip's mask, or (0, 0, 0)
    lengths : (B,) int64 array
    norms : (T, B) array receiving ||dJ/dh_t||, or (0, 0)
    s0, s1, b0, b1 : int
    """
    B, H = dh.shape
    t1, t2 = np.empty(H, dtype=dy.dtype), np.empty(2 * H, dtype=dy.dtype)
    dh3 = dh.reshape((1, B, H))
    held = np.empty((B, H), dtype=dh.dtype)   # (see mm_rows_live)
    for t in range(s1 - 1, s0 - 1, -1):
        for b in range(b0, b1):
            if t >= lengths[b]:
                G[t, b, :] = 0
                if norms.shape[0] > 0:
                    norms[t, b] = 0
                continue
            d, dyv = dh[b], dy[t, b]
            for j in range(H):
                d[j] += dyv[j]
            store_norm(norms, t, b, d)
            _cell_backward(G[t, b], d, Hs[t - 1, b] if t > 0 else h0[b], t1, t2, kinds, params,
                           M, t, b)
        mm_rows_live(G, t, 0, w_hzr, H, dh3, held, lengths, b0, b1)
        mm_rows_live(G, t, 3 * H, w_hn, H, dh3, held, lengths, b0, b1)


@jit
def _backward_slice_rb(dy, dh, h0, G, Hs, DRH, w_hrz, w_hn, kinds, params, M, lengths, norms, s0,
                       s1, b0, b1):
    """:func:`_backward_slice` of the reset-before GRU.

    Parameters
    ----------
    G : (T, B, >= 4H) array: [r, z, n, r * h_{t-1}] in, [dr, dz, dn, r * h_{t-1}] out
    DRH : (1, B, H) workspace, d(r * h_{t-1}) of a step
    w_hrz, w_hn : W_hh[:2H] (2H, H) and W_hh[2H:] (H, H), packed (see gemm.pack)
    M : (T, B, 3H) array of the clip's mask, or (0, 0, 0)
    (the rest as :func:`_backward_slice`)
    """
    B, H = dh.shape
    t1, t2 = np.empty(H, dtype=dy.dtype), np.empty(H, dtype=dy.dtype)
    dh3 = dh.reshape((1, B, H))
    held = np.empty((B, H), dtype=dh.dtype)   # (see mm_rows_live)
    empty = dh[0, :0]
    for t in range(s1 - 1, s0 - 1, -1):
        for b in range(b0, b1):
            if t >= lengths[b]:
                G[t, b, :] = 0
                if norms.shape[0] > 0:
                    norms[t, b] = 0
                continue
            d, dyv = dh[b], dy[t, b]
            for j in range(H):
                d[j] += dyv[j]
            store_norm(norms, t, b, d)
            _grads_zn(G[t, b], d, Hs[t - 1, b] if t > 0 else h0[b], t1, t2, kinds, params, M,
                      t, b)
        init_rows(DRH[0, b0:b1], 0, H, empty, empty)
        mm_rows(G, t, 2 * H, w_hn, H, DRH, 0, 0, 1, b0, b1)
        for b in range(b0, b1):
            if t < lengths[b]:
                _grads_r(G[t, b], dh[b], DRH[0, b], Hs[t - 1, b] if t > 0 else h0[b], kinds,
                         params, M, t, b)
        mm_rows_live(G, t, 0, w_hrz, H, dh3, held, lengths, b0, b1)


@one_blas_thread
def gru_backward(dy, dhy, saved, dweights, step_norms=None, input_grad=True):
    """Backpropagation through time for :func:`gru_forward` (consumes ``saved``).

    Parameters
    ----------
    dy : (T, B, H) array
    dhy : tuple (dh_n (B, H),)
    saved : the record returned by :func:`gru_forward` with ``training=True``
        Used up: the gate store is overwritten with the gradients.
    dweights : tuple aligned with the weights, added into (None where a weight is None)
    step_norms : (T, B) array or None
        Receives ||dJ/dh_t|| per step and sequence (0 past a sequence's length).
    input_grad : bool
        False skips dx (returned as None): the input of a first layer needs none.

    Returns
    -------
    dx : (T, B, I) array, or None without ``input_grad``
    dhx : tuple (dh0 (B, H),)
    """
    s = _common.take(saved, "gru", dweights, dy, dhy, step_norms=step_norms)
    x, h0, G, Hs, lens, weights = s["x"], s["h0"], s["G"], s["Hs"], s["lens"], s["weights"]
    reset_after, (kinds, params), M = s["reset_after"], s["acts"], s["M"]
    w_ih, w_hh, b_ih, b_hh = weights
    dw_ih, dw_hh, db_ih, db_hh = dweights
    dt = x.dtype
    T, B = x.shape[0], x.shape[1]
    H3, H = w_hh.shape
    dy = _common.contiguous(dy, dt)
    dh = np.array(dhy[0], dtype=dt, order="C")
    norms = _common.norms_buffer(step_norms, T, B, dt)
    slices = batch_slices(B, threads_for(2 * T * B * H3 * H))
    w_hh_p = (_common.packed(w_hh[:2 * H], False), _common.packed(w_hh[2 * H:], False))
    if reset_after:
        kernel, args = _backward_slice, (dy, dh, h0, G, Hs) + w_hh_p + (kinds, params, M, lens,
                                                                         norms)
    else:
        DRH = _common.row_buffer(1, B, H, dt)
        kernel, args = _backward_slice_rb, (dy, dh, h0, G, Hs, DRH) + w_hh_p + (kinds, params, M,
                                                                                lens, norms)
    _common.backward_loop(kernel, args, G, list(zip(slices[:-1], slices[1:])))
    _common.store_norms(step_norms, norms)
    del args, w_hh_p   # the packed weights: free them before the gradients are allocated

    # [dr, dz, dn, dn * r] (reset-before: [dr, dz, dn, r * h_{t-1}]), one row per (t, b)
    D = _common.flat(G)[:, :4 * H]
    dx = _common.input_grads(D[:, :H3], w_ih, x, dw_ih, _common.saved_sparse(s, x, w_ih),
                             input_grad, lens)
    _common.recurrent_grad(D[:, :2 * H], h0, Hs, dw_hh[:2 * H], lens)
    if reset_after:
        _common.recurrent_grad(D[:, 3 * H:], h0, Hs, dw_hh[2 * H:], lens)
    else:
        _common.matmul(D[:, 2 * H:3 * H].T, D[:, 3 * H:], dw_hh[2 * H:], add=True)
    if b_ih is not None or b_hh is not None:
        dsum = D.sum(axis=0)
        if db_ih is not None:
            db_ih += dsum[:H3]
        if db_hh is not None:
            db_hh[:2 * H] += dsum[:2 * H]
            db_hh[2 * H:] += dsum[3 * H:] if reset_after else dsum[2 * H:3 * H]
    return dx, (dh,)


@jit
def _step_forward_kernel_rb(x, h, w_ih, w_hrz, w_hn, b_ih, b_hh, kinds, params, clip, M, hy, G, GH,
                            RH):
    """:func:`_step_forward_kernel` of the reset-before GRU (G receives [r, z, n, r * h]).

    Parameters
    ----------
    w_hrz, w_hn : W_hh[:2H] (2H, H) and W_hh[2H:] (H, H), C-contiguous
    RH : (B, H) workspace, r * h in contiguous rows for the second product
    (the rest as :func:`_step_forward_kernel`)
    """
    B, H = h.shape
    init_rows(G[0], 0, 3 * H, b_ih, b_ih[:0])
    init_rows(GH[0], 0, 3 * H, b_hh, b_hh[:0])
    mm_nt(x, w_ih, G[0], 0)
    mm_nt(h, w_hrz, GH[0], 0)
    for b in range(B):
        _gates_rz(G[0, b], GH[0, b], h[b], kinds, params, clip, M, 0, b)
        copy(RH[b], G[0, b, 3 * H:4 * H])
    mm_nt(RH, w_hn, GH[0], 2 * H)
    for b in range(B):
        copy(hy[b], h[b])
        _gates_n(G[0, b], GH[0, b, 2 * H:3 * H], hy[b], hy[b], hy[b], kinds, params, clip, M, 0,
                 b)


@jit
def _step_forward_kernel(x, h, w_ih, w_hh, b_ih, b_hh, kinds, params, clip, M, hy, G, GH):
    """One step for a batch, with the weights as stored (no packed copies).

    Parameters
    ----------
    x : (B, I) array
    h : (B, H) array
    w_ih (3H, I), w_hh (3H, H) arrays; b_ih, b_hh (3H,) arrays or (0,) when absent
    kinds, params : the activations, as :func:`_cell_update`
    clip : float, the cell clip (0: none); M : (1, B, 3H) array receiving its mask, or (0, 0, 0)
    hy : (B, H) array receiving h'
    G : (1, B, 4H) array receiving [r, z, n, hn]
    GH : (1, B, 3H) workspace
    """
    B, H = h.shape
    init_rows(G[0], 0, 3 * H, b_ih, b_ih[:0])
    init_rows(GH[0], 0, 3 * H, b_hh, b_hh[:0])
    mm_nt(x, w_ih, G[0], 0)
    mm_nt(h, w_hh, GH[0], 0)
    for b in range(B):
        copy(hy[b], h[b])
        _cell_update(G[0, b], GH[0, b], hy[b], hy[b], hy[b], kinds, params, clip, M, 0, b)


def gru_step_forward(x, hx, weights, training=True, reset_after=True, clip=None,
                     activations=None):
    """One GRU step (what :class:`fastrnn.GRUCell` runs).

    Parameters
    ----------
    x : (B, I) array
    hx : tuple (h (B, H),)
    weights : tuple (w_ih (3H, I), w_hh (3H, H), b_ih (3H,) or None, b_hh (3H,) or None)
    training : bool
    reset_after : bool
        The reset gate after the recurrent product of n (PyTorch's GRU), or before it.
    clip : float or None
    activations : None or sequence of two activations (f, g)

    Returns
    -------
    hy : tuple (h' (B, H),)
    saved : the record for :func:`gru_step_backward`, or None when ``training`` is False
    """
    reset_after = check_flag("reset_after", reset_after)
    clip = check_clip(clip, np.asarray(x).dtype)
    kinds, params = _common.act_arrays("gru", activations, x)
    check_call("gru", x, hx, weights, step=True)
    weights = _common.writeable_all(weights)
    w_ih, w_hh, b_ih, b_hh = weights
    dt = x.dtype
    x, (h,) = _common.writeable(x), _common.writeable_all(hx)
    B = x.shape[0]
    H3, H = w_hh.shape
    hy = np.empty((B, H), dt)
    G = np.empty((1, B, 4 * H), dt)
    b_ih, b_hh = _common.bias_or_empty(b_ih, dt), _common.bias_or_empty(b_hh, dt)
    M = _common.clip_mask(clip, training, 1, B, H3, dt)
    if reset_after:
        _step_forward_kernel(x, h, w_ih, w_hh, b_ih, b_hh, kinds, params, clip or 0.0, M, hy, G,
                             np.empty((1, B, H3), dt))
    else:
        _step_forward_kernel_rb(x, h, w_ih, w_hh[:2 * H], w_hh[2 * H:], b_ih, b_hh, kinds, params,
                                clip or 0.0, M, hy, G, np.empty((1, B, H3), dt),
                                np.empty((B, H), dt))
    if not training:
        return (hy,), None
    saved = _common.Saved("gru", True, True, x=x[None], h0=h.copy(), G=G, Hs=hy.reshape(1, B, H),
                          lens=np.ones(B, dtype=np.int64), weights=weights,
                          reset_after=reset_after, acts=(kinds, params), M=M)
    return (hy,), saved


def gru_step_backward(dhy, saved, dweights):
    """Backward of :func:`gru_step_forward` (consumes ``saved``).

    Parameters
    ----------
    dhy : tuple (dh' (B, H),)
    saved : the record returned by :func:`gru_step_forward` with ``training=True``
    dweights : tuple aligned with the weights, added into

    Returns
    -------
    dx : (B, I) array
    dhx : tuple (dh (B, H),)
    """
    return _common.step_backward(gru_backward, "gru", dhy, saved, dweights)
