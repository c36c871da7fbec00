"""LSTM kernels of the numba backend (equations, gate order i, f, g, o and shapes of
:mod:`fastrnn.reference.lstm`; x (T, B, I), h (B, P), c (B, H), P = proj_size or H).

Forward:

1. input projection of all steps, ``G[t] = x_t @ W_ih^T``, into the gate
   store (T, B, 4H): one BLAS GEMM over all T*B rows (an eval-mode forward
   projects ``config.EVAL_BYTES`` of gates at a time into a smaller workspace);
2. per thread (a slice of the batch), per step: ``G[t] += b_ih + b_hh +
   h_{t-1} @ W_hh^T`` (one 4H-wide product), then one fused pass computing
   the four activations, ``c_t``, ``tanh(c_t)`` and ``h_t = o * tanh(c_t)``
   (then ``h_t = m_t @ W_hr^T`` with a projection).

A training-mode forward stores ``G`` (post-activation gates), ``c_t`` and
``tanh(c_t)``: T*B*6H values (plus T*B*P projected outputs with proj_size),
so the backward needs no transcendental function.  The backward loop (per
thread, t = T-1..0) overwrites ``G[t]`` with the gate gradients and
``tanh(c_t)`` with ``m_t = o * tanh(c_t)`` (the output before projection,
h_t itself without one); then dx, dW_ih, dW_hh and dW_hr are single BLAS
GEMMs over all T*B rows, and the bias gradients column sums.

Peepholes (``w_ph`` (3, H), rows i, f, o) enter the fused passes: ``p_i * c_{t-1}`` and
``p_f * c_{t-1}`` before i and f, ``p_o * c_t`` before o; their gradient is a column sum
over all T*B rows after the loop.  With ``input_forget`` (coupled gates) the pass sets
``f = 1 - i``, and the backward's gradient of a_i takes the path through f.

With ``activations=[f, g, h]`` (:mod:`fastrnn.activations`) the fused passes apply f to the
gates i, f, o, g to the candidate and h to c_t by the row passes of
:mod:`fastrnn.jit.activations` (the store then keeps h(c_t) where it keeps tanh(c_t)), and
the backward takes their derivatives from the stored outputs; the defaults keep their own
fused loops.
"""

import numpy as np

from . import _common
from .activations import act_grad_row, act_row, sigmoid, tanh
from .config import batch_slices, helper, jit, one_blas_thread, threads_for
from ..reference._common import check_call, check_clip, check_flag
from .gemm import (add_rows, clip_row, copy, init_rows, mask_row, mm_nt, mm_rows, mm_rows_live,
                   store_norm)


@helper()
def _cell_update(g, c, ph, coupled, clip, M, t, b, cs, tcs, m, m2):
    """Fused LSTM update of one sequence: activations, cell state, output.

    Every loop stores to one array only: LLVM vectorises a loop only when it
    can check cheaply that its stores do not overlap its loads.

    Parameters
    ----------
    g : (4H,) array: pre-activations in, post-activation gates (i, f, g, o) out
    c : (H,) array: c_{t-1} in, c_t out
    ph : (3, H) array of peepholes (i, f, o), or (0, 0) without
    coupled : bool, f = 1 - i (input_forget)
    clip : float, the cell clip of the pre-activations (0: none)
    M, t, b : (T, B, 4H) array receiving the clip's mask at [t, b], or (0, 0, 0)
    cs, tcs : (H,) arrays receiving c_t and tanh(c_t)
    m, m2 : (H,) arrays both receiving o * tanh(c_t)
    """
    H = c.shape[0]
    gif, gg, go = g[:2 * H], g[2 * H:3 * H], g[3 * H:4 * H]
    gi, gf = g[:H], g[H:2 * H]
    peep = ph.shape[0] > 0
    if peep:
        pi, pf = ph[0], ph[1]
        for j in range(H):
            gi[j] += pi[j] * c[j]
        for j in range(H):
            gf[j] += pf[j] * c[j]
    if clip > 0:
        clip_row(g[:3 * H], clip, M, t, b, 0)
    for j in range(2 * H):
        gif[j] = sigmoid(gif[j])
    if coupled:
        one = c.dtype.type(1)
        for j in range(H):
            gf[j] = one - gi[j]
    for j in range(H):
        gg[j] = tanh(gg[j])
    for j in range(H):
        c[j] = gf[j] * c[j] + gi[j] * gg[j]
    if peep:
        po = ph[2]
        for j in range(H):
            go[j] += po[j] * c[j]
    if clip > 0:
        clip_row(go, clip, M, t, b, 3 * H)
    for j in range(H):
        go[j] = sigmoid(go[j])
    for j in range(H):
        cs[j] = c[j]
    for j in range(H):
        tcs[j] = tanh(c[j])
    for j in range(H):
        m[j] = go[j] * tcs[j]
    for j in range(H):
        m2[j] = m[j]


@helper()
def _cell_update_acts(g, c, ph, coupled, kinds, params, clip, M, t, b, cs, tcs, m, m2):
    """:func:`_cell_update` with the activations ``kinds, params`` (f: i, f, o; g: the candidate;
    h: c_t), in row passes (:func:`~fastrnn.jit.activations.act_row`).

    Every loop stores to one array only: LLVM vectorises a loop only when it
    can check cheaply that its stores do not overlap its loads.

    Parameters
    ----------
    g : (4H,) array: pre-activations in, post-activation gates (i, f, g, o) out
    c : (H,) array: c_{t-1} in, c_t out
    ph : (3, H) array of peepholes (i, f, o), or (0, 0) without
    coupled : bool, f = 1 - i (input_forget)
    kinds, params : (3,) int32 and (3, 2) float64 arrays, the activations f, g, h (see
        :func:`_common.act_arrays`)
    clip : float, the cell clip of the pre-activations (0: none)
    M, t, b : (T, B, 4H) array receiving the clip's mask at [t, b], or (0, 0, 0)
    cs, tcs : (H,) arrays receiving c_t and h(c_t)
    m, m2 : (H,) arrays both receiving o * h(c_t)
    """
    H = c.shape[0]
    gif, gg, go = g[:2 * H], g[2 * H:3 * H], g[3 * H:4 * H]
    gi, gf = g[:H], g[H:2 * H]
    peep = ph.shape[0] > 0
    if peep:
        pi, pf = ph[0], ph[1]
        for j in range(H):
            gi[j] += pi[j] * c[j]
        for j in range(H):
            gf[j] += pf[j] * c[j]
    if clip > 0:
        clip_row(g[:3 * H], clip, M, t, b, 0)
    act_row(kinds[0], params[0, 0], params[0, 1], gif)
    if coupled:
        one = c.dtype.type(1)
        for j in range(H):
            gf[j] = one - gi[j]
    act_row(kinds[1], params[1, 0], params[1, 1], gg)
    for j in range(H):
        c[j] = gf[j] * c[j] + gi[j] * gg[j]
    if peep:
        po = ph[2]
        for j in range(H):
            go[j] += po[j] * c[j]
    if clip > 0:
        clip_row(go, clip, M, t, b, 3 * H)
    act_row(kinds[0], params[0, 0], params[0, 1], go)
    for j in range(H):
        cs[j] = c[j]
    for j in range(H):
        tcs[j] = c[j]
    act_row(kinds[2], params[2, 0], params[2, 1], tcs)
    for j in range(H):
        m[j] = go[j] * tcs[j]
    for j in range(H):
        m2[j] = m[j]


@jit
def _forward_slice(h, c, w_hh, b_ih, b_hh, w_hr, ph, coupled, kinds, params, clip, CM, lengths, y,
                   G, Cs, TCs, Hs, M, Hn, t0, nt, b0, b1):
    """Steps t0 <= t < t0 + nt of the forward for the sequences b0 <= b < b1.

    Parameters
    ----------
    h : (B, P) array, h_{t0-1} in, h_{t0+nt-1} out
    c : (B, H) array, c_{t0-1} in, c_{t0+nt-1} out
    w_hh : W_hh^T (P, 4H) packed (see gemm.pack)
    b_ih, b_hh : (4H,) arrays, or (0,) when absent
    w_hr : W_hr^T (H, P) packed, or (0, 0, 0) without projection
    ph : (3, H) array of peepholes, or (0, 0) without
    coupled : bool, input and forget gates coupled (f = 1 - i)
    kinds, params : the activations, as :func:`_cell_update_acts`, or (0,) and (0, 2) for
        sigmoid, tanh, tanh
    clip : float, the cell clip (0: none)
    CM : (T, B, 4H) array receiving the clip's mask (training), or (0, 0, 0)
    lengths : (B,) int64 array
    y : (T, B, P) array, written
    G : (TG, B, >= 4H) array: step t's input projection x_t @ W_ih^T at t % TG in,
        post-activation gates out
    Cs, TCs : (TS, B, H) arrays receiving c_t and h(c_t) at index t % TS (TS = T or 1)
    Hs : (TS, B, P) array receiving the projected h_t, or (0, 0, 0) without projection
    M : (1, B, H) array, workspace for o * h(c_t) with a projection, else (0, 0, 0)
    Hn : (1, B, >= P) array, workspace for the projected h_t, else (0, 0, 0)
    t0, nt, b0, b1 : int
    """
    B = h.shape[0]
    H, P = c.shape[1], h.shape[1]
    proj = w_hr.shape[0] > 0
    generic = kinds.shape[0] > 0
    h3 = h.reshape((1, B, P))
    for t in range(t0, t0 + nt):
        tg = t % G.shape[0]
        ts = t % Cs.shape[0]
        add_rows(G[tg, b0:b1], 0, 4 * H, b_ih, b_hh)
        mm_rows(h3, 0, 0, w_hh, 4 * H, G, tg, 0, 1, b0, b1)
        for b in range(b0, b1):
            if t >= lengths[b]:
                y[t, b, :] = 0
                G[tg, b, :] = 0
                Cs[ts, b, :] = 0
                TCs[ts, b, :] = 0
                if proj:
                    Hs[ts, b, :] = 0
                continue
            m, m2 = (M[0, b], M[0, b]) if proj else (h[b], y[t, b])
            if generic:
                _cell_update_acts(G[tg, b], c[b], ph, coupled, kinds, params, clip, CM, t, b,
                                  Cs[ts, b], TCs[ts, b], m, m2)
            else:
                _cell_update(G[tg, b], c[b], ph, coupled, clip, CM, t, b, Cs[ts, b], TCs[ts, b],
                             m, m2)
        if proj:
            for b in range(b0, b1):
                Hn[0, b, :] = 0
            mm_rows(M, 0, 0, w_hr, P, Hn, 0, 0, 1, b0, b1)
            for b in range(b0, b1):
                if t < lengths[b]:
                    copy(h[b], Hn[0, b])
                    copy(y[t, b], Hn[0, b])
                    copy(Hs[ts, b], Hn[0, b])


@one_blas_thread
def lstm_forward(x, hx, weights, lengths=None, training=True, input_forget=False, clip=None,
                 activations=None):
    """LSTM over a whole sequence (the kernel contract of :mod:`fastrnn.reference`).

    Parameters
    ----------
    x : (T, B, I) array, float32 or float64
    hx : tuple (h0 (B, P), c0 (B, H))
    weights : tuple (w_ih (4H, I), w_hh (4H, P), b_ih (4H,) or None, b_hh (4H,) or None,
        w_hr (P, H) or None, w_ph (3, H) or None)
    lengths : (B,) int64 array or None
        Steps ``t >= lengths[b]`` give zero output and leave sequence b's state alone.
    training : bool
        Keep what the backward needs (T*B*6H values, plus T*B*P with a projection);
        otherwise only O(max(B * H, config.EVAL_BYTES)) workspace beyond the output.
    input_forget : bool
        Couple the input and forget gates (f = 1 - i).
    clip : float or None
        Clip every gate's pre-activation to [-clip, clip] (ONNX's cell clip).
    activations : None or sequence of three activations (f, g, h)
        See :mod:`fastrnn.activations`; None: sigmoid, tanh, tanh.

    Returns
    -------
    y : (T, B, P) array
    hy : tuple (h_n (B, P), c_n (B, H))
    saved : Saved or None
        The record for :func:`lstm_backward` (x, sparse: x compressed or None, h0, c0, G: the
        gates, Cs: c_t, TCs: h(c_t), Hs: the projected h_t, lens, weights, input_forget, acts:
        the activations' kinds and params, CM: the clip's mask), None when ``training`` is
        False.
    """
    input_forget = check_flag("input_forget", input_forget)
    clip = check_clip(clip, np.asarray(x).dtype)
    kinds, params = _common.act_arrays("lstm", activations, x)
    check_call("lstm", x, hx, weights, lengths)
    weights = _common.writeable_all(weights)
    w_ih, w_hh, b_ih, b_hh, w_hr, w_ph = weights
    dt = x.dtype
    x = _common.contiguous(x, dt)
    T, B = x.shape[0], x.shape[1]
    H4, P = w_hh.shape
    H = H4 // 4
    h = np.array(hx[0], dtype=dt, order="C")
    c = np.array(hx[1], dtype=dt, order="C")
    h0, c0 = (h.copy(), c.copy()) if training else (None, None)
    lens = _common.lengths_or_full(lengths, T, B)
    if training:   # the backward's dW_ih = D^T x runs over every row, padding included
        x = _common.unpadded(x, lens)
    proj = w_hr is not None
    y = np.empty((T, B, P), dtype=dt)
    TS = T if training else 1
    G = _common.row_buffer(_common.store_steps(T, B, H4, dt, training), B, H4, dt)
    Cs, TCs = np.empty((TS, B, H), dtype=dt), np.empty((TS, B, H), dtype=dt)
    CM = _common.clip_mask(clip, training, T, B, H4, dt)
    if proj:
        Hs, M = np.empty((TS, B, P), dt), np.empty((1, B, H), dt)
        Hn = _common.row_buffer(1, B, P, dt)
    else:
        Hs = M = Hn = _common.empty(3, dt)
    args = (h, c, _common.packed(w_hh, True), _common.bias_or_empty(b_ih, dt),
            _common.bias_or_empty(b_hh, dt),
            _common.packed(w_hr, True) if proj else _common.empty(3, dt),
            _peepholes(w_ph, dt), input_forget, kinds, params, clip or 0.0, CM, lens, y, G, Cs,
            TCs, Hs, M, Hn)
    sparse = _common.forward_loop(_forward_slice, args, x, w_ih, G, threads_for(2 * T * B * H4 * P))
    saved = _common.Saved("lstm", False, True, x=x, sparse=sparse, h0=h0, c0=c0, G=G, Cs=Cs,
                          TCs=TCs, Hs=Hs, lens=lens, weights=weights, input_forget=input_forget,
                          acts=(kinds, params), CM=CM) if training else None
    return y, (h, c), saved


def _peepholes(w_ph, dt):
    """The peepholes as the kernels take them: (3, H) C-contiguous, or (0, 0) without."""
    return _common.empty(2, dt) if w_ph is None else np.ascontiguousarray(w_ph, dtype=dt)


@helper()
def _cell_backward(g, tcs, cp, dc, dm, ph, coupled, kinds, params, CM, t, b, tmp, tmp2):
    """Backward of :func:`_cell_update` for one sequence at one step.

    Parameters
    ----------
    g : (4H,) array: gates (i, f, g, o) in, their pre-activation gradients out
    tcs : (H,) array: h(c_t) in, o * h(c_t) out
    cp : (H,) array, c_{t-1}
    dc : (H,) array: dJ/dc_t from step t+1 in, dJ/dc_{t-1} out
    dm : (H,) array: dJ/d(o * h(c_t)) in, zeros out
    ph : (3, H) array of peepholes, or (0, 0) without
    coupled : bool, f = 1 - i (input_forget)
    kinds, params : the activations, as :func:`_cell_update_acts`, or (0,) and (0, 2) for
        sigmoid, tanh, tanh
    CM, t, b : (T, B, 4H) array of the clip's mask, read at [t, b], or (0, 0, 0)
    tmp, tmp2 : (H,) and (2H,) scratch arrays (tmp2: with activations)
    """
    if kinds.shape[0] > 0:
        _cell_backward_acts(g, tcs, cp, dc, dm, ph, coupled, kinds, params, CM, t, b, tmp, tmp2)
        return
    H = dc.shape[0]
    one = dc.dtype.type(1)
    gi, gf, gg, go = g[:H], g[H:2 * H], g[2 * H:3 * H], g[3 * H:4 * H]
    peep = ph.shape[0] > 0
    for j in range(H):   # dc becomes dJ/dc_t
        dc[j] = dc[j] + dm[j] * go[j] * (one - tcs[j] * tcs[j])
    for j in range(H):
        tmp[j] = dm[j] * tcs[j] * go[j] * (one - go[j])
    mask_row(tmp, CM, t, b, 3 * H)
    if peep:             # o read c_t through p_o
        po = ph[2]
        for j in range(H):
            dc[j] += tmp[j] * po[j]
    for j in range(H):
        tcs[j] = go[j] * tcs[j]
    for j in range(H):
        go[j] = tmp[j]
    for j in range(H):
        tmp[j] = dc[j] * gi[j] * (one - gg[j] * gg[j])
    if coupled:          # i reaches c_t through f = 1 - i too; a_f is unused
        for j in range(H):
            gi[j] = dc[j] * (gg[j] - cp[j]) * gi[j] * (one - gi[j])
    else:
        for j in range(H):
            gi[j] = dc[j] * gg[j] * gi[j] * (one - gi[j])
    for j in range(H):
        gg[j] = tmp[j]
    for j in range(H):
        tmp[j] = dc[j] * gf[j]
    if coupled:
        for j in range(H):
            gf[j] = 0
    else:
        for j in range(H):
            gf[j] = dc[j] * cp[j] * gf[j] * (one - gf[j])
    mask_row(g[:3 * H], CM, t, b, 0)
    if peep:             # i and f read c_{t-1} through p_i and p_f
        pi, pf = ph[0], ph[1]
        for j in range(H):
            tmp[j] += gi[j] * pi[j] + gf[j] * pf[j]
    for j in range(H):
        dc[j] = tmp[j]
    for j in range(H):
        dm[j] = 0


@helper()
def _cell_backward_acts(g, tcs, cp, dc, dm, ph, coupled, kinds, params, CM, t, b, tmp, tmp2):
    """:func:`_cell_backward` with the activations of ``kinds, params`` (not (0,)): each
    derivative is a row pass (:func:`~fastrnn.jit.activations.act_grad_row`) over the
    product it multiplies, made in a scratch row; i and f, adjacent, take one pass (same
    arguments, ``tmp2`` (2H,))."""
    H = dc.shape[0]
    gif, gi, gf, gg, go = g[:2 * H], g[:H], g[H:2 * H], g[2 * H:3 * H], g[3 * H:4 * H]
    kf, af, bf = kinds[0], params[0, 0], params[0, 1]
    peep = ph.shape[0] > 0
    for j in range(H):   # dc becomes dJ/dc_t: + dm * o * h'(c_t)
        tmp[j] = dm[j] * go[j]
    act_grad_row(kinds[2], params[2, 0], params[2, 1], tcs, tmp)
    for j in range(H):
        dc[j] = dc[j] + tmp[j]
    for j in range(H):   # da_o = dm * h(c_t) * f'(a_o)
        tmp[j] = dm[j] * tcs[j]
    act_grad_row(kf, af, bf, go, tmp)
    mask_row(tmp, CM, t, b, 3 * H)
    if peep:             # o read c_t through p_o
        po = ph[2]
        for j in range(H):
            dc[j] += tmp[j] * po[j]
    for j in range(H):
        tcs[j] = go[j] * tcs[j]
    for j in range(H):
        go[j] = tmp[j]
    for j in range(H):   # da_g = dc * i * g'(a_g)
        tmp[j] = dc[j] * gi[j]
    act_grad_row(kinds[1], params[1, 0], params[1, 1], gg, tmp)
    ti, tf = tmp2[:H], tmp2[H:2 * H]
    if coupled:          # i reaches c_t through f = 1 - i too; a_f is unused (zeroed below)
        for j in range(H):
            ti[j] = dc[j] * (gg[j] - cp[j])
    else:
        for j in range(H):
            ti[j] = dc[j] * gg[j]
    for j in range(H):
        tf[j] = dc[j] * cp[j]
    act_grad_row(kf, af, bf, gif, tmp2)   # da_i, da_f: * f'(a_i), f'(a_f)
    for j in range(H):
        gg[j] = tmp[j]
    for j in range(H):   # dJ/dc_{t-1} through f, before f is overwritten
        tmp[j] = dc[j] * gf[j]
    for j in range(2 * H):
        gif[j] = tmp2[j]
    if coupled:
        for j in range(H):
            gf[j] = 0
    mask_row(g[:3 * H], CM, t, b, 0)
    if peep:             # i and f read c_{t-1} through p_i and p_f
        pi, pf = ph[0], ph[1]
        for j in range(H):
            tmp[j] += gi[j] * pi[j] + gf[j] * pf[j]
    for j in range(H):
        dc[j] = tmp[j]
    for j in range(H):
        dm[j] = 0


@jit
def _backward_slice(dy, dh, dc, c0, G, Cs, TCs, dH, DM, w_hh, w_hr, ph, coupled, kinds, params, CM,
                    lengths, norms, s0, s1, b0, b1):
    """BPTT over the steps s0 <= t < s1, the last first, for the sequences b0 <= b < b1
    (dh, and dc for LSTM, carry the gradient of the state from one call to the next).

    Parameters
    ----------
    dy : (T, B, P) array
    dh, dc : (B, P) and (B, H) arrays: dh_n, dc_n in, dh0, dc0 out
    c0 : (B, H) array
    G : (T, B, >= 4H) array: post-activation gates in, gate gradients out
    Cs : (T, B, H) array of c_t
    TCs : (T, B, H) array: h(c_t) in, o_t * h(c_t) out
    dH : (T, B, P) array receiving dJ/dh_t with a projection, else (0, 0, 0)
    DM : (1, B, >= H) workspace with a projection, else (0, 0, 0)
    w_hh, w_hr : W_hh (4H, P), W_hr (P, H) packed (see gemm.pack);
        w_hr (0, 0, 0) without projection
    ph : (3, H) array of peepholes, or (0, 0) without
    coupled : bool, input and forget gates coupled
    kinds, params : the activations, as :func:`_cell_update_acts`, or (0,) and (0, 2) for
        sigmoid, tanh, tanh
    CM : (T, B, 4H) array of the clip's mask, or (0, 0, 0)
    lengths : (B,) int64 array
    norms : (T, B) array receiving ||dJ/dh_t||, or (0, 0)
    s0, s1, b0, b1 : int
    """
    B, P = dh.shape
    H = dc.shape[1]
    proj = w_hr.shape[0] > 0
    tmp, tmp2 = np.empty(H, dtype=dy.dtype), np.empty(2 * H, dtype=dy.dtype)
    dh3 = dh.reshape((1, B, P))
    held = np.empty((B, P), dtype=dh.dtype)   # (see mm_rows_live)
    for t in range(s1 - 1, s0 - 1, -1):
        for b in range(b0, b1):
            if t >= lengths[b]:
                G[t, b, :] = 0
                if norms.shape[0] > 0:
                    norms[t, b] = 0
                if proj:
                    dH[t, b, :] = 0
                continue
            d, dyv = (dH[t, b] if proj else dh[b]), dy[t, b]
            if proj:
                copy(d, dh[b])
                dh[b, :] = 0
            for j in range(P):
                d[j] += dyv[j]
            store_norm(norms, t, b, d)
        if proj:
            for b in range(b0, b1):
                DM[0, b, :] = 0
            mm_rows(dH, t, 0, w_hr, H, DM, 0, 0, 1, b0, b1)
        for b in range(b0, b1):
            if t < lengths[b]:
                _cell_backward(G[t, b], TCs[t, b], Cs[t - 1, b] if t > 0 else c0[b], dc[b],
                               DM[0, b, :H] if proj else dh[b], ph, coupled, kinds, params, CM,
                               t, b, tmp, tmp2)
        mm_rows_live(G, t, 0, w_hh, P, dh3, held, lengths, b0, b1)


@one_blas_thread
def lstm_backward(dy, dhy, saved, dweights, step_norms=None, input_grad=True):
    """Backpropagation through time for :func:`lstm_forward` (consumes ``saved``).

    Parameters
    ----------
    dy : (T, B, P) array
    dhy : tuple (dh_n (B, P), dc_n (B, H))
    saved : the record returned by :func:`lstm_forward` with ``training=True``
        Used up: the gate store is overwritten with the gradients.
    dweights : tuple aligned with the weights, added into (None where a weight is None)
    step_norms : (T, B) array or None
        Receives ||dJ/dh_t|| per step and sequence (0 past a sequence's length).
    input_grad : bool
        False skips dx (returned as None): the input of a first layer needs none.

    Returns
    -------
    dx : (T, B, I) array, or None without ``input_grad``
    dhx : tuple (dh0 (B, P), dc0 (B, H))
    """
    s = _common.take(saved, "lstm", dweights, dy, dhy, step_norms=step_norms)
    x, h0, c0, G, Cs, TCs = s["x"], s["h0"], s["c0"], s["G"], s["Cs"], s["TCs"]
    Hs, lens, weights, input_forget = s["Hs"], s["lens"], s["weights"], s["input_forget"]
    (kinds, params), CM = s["acts"], s["CM"]
    w_ih, w_hh, b_ih, b_hh, w_hr, w_ph = weights
    dw_ih, dw_hh, db_ih, db_hh, dw_hr, dw_ph = dweights
    dt = x.dtype
    T, B = x.shape[0], x.shape[1]
    H4, P = w_hh.shape
    H = H4 // 4
    proj = w_hr is not None
    dy = _common.contiguous(dy, dt)
    dh = np.array(dhy[0], dtype=dt, order="C")
    dc = np.array(dhy[1], dtype=dt, order="C")
    norms = _common.norms_buffer(step_norms, T, B, dt)
    if proj:
        dH, DM = np.empty((T, B, P), dt), _common.row_buffer(1, B, H, dt)
        w_hr_p = _common.packed(w_hr, False)
    else:
        dH = DM = _common.empty(3, dt)
        w_hr_p = _common.empty(3, dt)
    slices = batch_slices(B, threads_for(2 * T * B * H4 * P))
    args = (dy, dh, dc, c0, G, Cs, TCs, dH, DM, _common.packed(w_hh, False), w_hr_p,
            _peepholes(w_ph, dt), input_forget, kinds, params, CM, lens, norms)
    _common.backward_loop(_backward_slice, args, G, list(zip(slices[:-1], slices[1:])))
    _common.store_norms(step_norms, norms)
    del args   # the packed weights: free them before the gradients are allocated

    D = _common.flat(G)[:, :H4]   # gate gradients, one row per (t, b)
    dx = _common.input_grads(D, w_ih, x, dw_ih, _common.saved_sparse(s, x, w_ih), input_grad,
                             lens)
    _common.recurrent_grad(D, h0, Hs if proj else TCs, dw_hh, lens)
    _common.bias_grads(D, db_ih, db_hh)
    if proj:
        _common.matmul(_common.flat(dH).T, _common.flat(TCs), dw_hr, add=True)
    if w_ph is not None:   # [da_i, da_f] against c_{t-1} (c0, then Cs), da_o against c_t
        C = _common.flat(Cs)
        first, rest = _common.previous_rows(c0, Cs, H, lens, D.shape[0])
        for k, col in ((0, 0), (1, H)):
            dw_ph[k] += np.einsum("rj,rj->j", D[:B, col:col + H], first)
            dw_ph[k] += np.einsum("rj,rj->j", D[B:, col:col + H], rest)
        dw_ph[2] += np.einsum("rj,rj->j", D[:, 3 * H:], C)
    return dx, (dh, dc)


@jit
def _step_forward_kernel(x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr, ph, coupled, kinds, params, clip,
                         CM, hy, cy, G, TCs, M):
    """One step for a batch, with the weights as stored (no packed copies).

    Parameters
    ----------
    x : (B, I) array
    h : (B, P) array, c : (B, H) array
    w_ih (4H, I), w_hh (4H, P) arrays; b_ih, b_hh (4H,) arrays or (0,) when absent;
    w_hr (P, H) array or (0, 0); ph (3, H) array of peepholes or (0, 0)
    coupled : bool, input and forget gates coupled (f = 1 - i)
    kinds, params : the activations, as :func:`_cell_update_acts`, or (0,) and (0, 2) for
        sigmoid, tanh, tanh
    clip : float, the cell clip (0: none); CM : (1, B, 4H) array receiving its mask, or (0, 0, 0)
    hy : (B, P) array receiving h'
    cy : (B, H) array receiving c'
    G : (1, B, 4H) array receiving the post-activation gates
    TCs : (1, B, H) array receiving h(c')
    M : (1, B, H) workspace with a projection, else (0, 0, 0)
    """
    B = x.shape[0]
    proj = w_hr.shape[0] > 0
    g2 = G[0]
    init_rows(g2, 0, w_ih.shape[0], b_ih, b_hh)
    mm_nt(x, w_ih, g2, 0)
    mm_nt(h, w_hh, g2, 0)
    generic = kinds.shape[0] > 0
    for b in range(B):
        copy(cy[b], c[b])
        m = M[0, b] if proj else hy[b]
        if generic:
            _cell_update_acts(g2[b], cy[b], ph, coupled, kinds, params, clip, CM, 0, b, cy[b],
                              TCs[0, b], m, m)
        else:
            _cell_update(g2[b], cy[b], ph, coupled, clip, CM, 0, b, cy[b], TCs[0, b], m, m)
    if proj:
        hy[:, :] = 0
        mm_nt(M[0], w_hr, hy, 0)


def lstm_step_forward(x, hx, weights, training=True, input_forget=False, clip=None,
                      activations=None):
    """One LSTM step (what :class:`fastrnn.LSTMCell` runs).

    Parameters
    ----------
    x : (B, I) C-contiguous array
    hx : tuple (h (B, P), c (B, H)) of C-contiguous arrays
    weights : tuple (w_ih (4H, I), w_hh (4H, P), b_ih, b_hh (4H,) or None, w_hr (P, H) or None,
        w_ph (3, H) or None)
    training : bool
    input_forget : bool
        Couple the input and forget gates (f = 1 - i).
    clip : float or None
    activations : None or sequence of three activations (f, g, h)

    Returns
    -------
    hy : tuple (h' (B, P), c' (B, H))
    saved : the record for :func:`lstm_step_backward`, or None when ``training`` is False
    """
    input_forget = check_flag("input_forget", input_forget)
    clip = check_clip(clip, np.asarray(x).dtype)
    kinds, params = _common.act_arrays("lstm", activations, x)
    check_call("lstm", x, hx, weights, step=True)
    weights = _common.writeable_all(weights)
    w_ih, w_hh, b_ih, b_hh, w_hr, w_ph = weights
    dt = x.dtype
    B = x.shape[0]
    H4, P = w_hh.shape
    H = H4 // 4
    x, (h, c) = _common.writeable(x), _common.writeable_all(hx)
    hy, cy = np.empty((B, P), dt), np.empty((B, H), dt)
    G, TCs = np.empty((1, B, H4), dt), np.empty((1, B, H), dt)
    proj = w_hr is not None
    M = np.empty((1, B, H), dt) if proj else _common.empty(3, dt)
    CM = _common.clip_mask(clip, training, 1, B, H4, dt)
    _step_forward_kernel(x, h, c, w_ih, w_hh, _common.bias_or_empty(b_ih, dt),
                         _common.bias_or_empty(b_hh, dt), w_hr if proj else _common.empty(2, dt),
                         _peepholes(w_ph, dt), input_forget, kinds, params, clip or 0.0, CM, hy,
                         cy, G, TCs, M)
    if not training:
        return (hy, cy), None
    Hs = hy.reshape(1, B, P).copy() if proj else _common.empty(3, dt)
    saved = _common.Saved("lstm", True, True, x=x[None], h0=h.copy(), c0=c.copy(), G=G,
                          Cs=cy.reshape(1, B, H).copy(), TCs=TCs, Hs=Hs, lens=np.ones(B, dtype=np.int64),
                          weights=weights, input_forget=input_forget, acts=(kinds, params),
                          CM=CM)
    return (hy, cy), saved


def lstm_step_backward(dhy, saved, dweights):
    """Backward of :func:`lstm_step_forward` (consumes ``saved``).

    Parameters
    ----------
    dhy : tuple (dh' (B, P), dc' (B, H))
    saved : the record returned by :func:`lstm_step_forward` with ``training=True``
    dweights : tuple aligned with the weights, added into

    Returns
    -------
    dx : (B, I) array
    dhx : tuple (dh (B, P), dc (B, H))
    """
    return _common.step_backward(lstm_backward, "lstm", dhy, saved, dweights)
