"""Elman RNN kernels of the numba backend (equations of :mod:`fastrnn.reference.rnn`;
x (T, B, I), h (B, H); ``nonlinearity`` "tanh" or "relu", or any activation f of
:mod:`fastrnn.activations` through ``activations=[f]``).

Forward: the input projection of all steps, ``x_t @ W_ih^T``, into the
store (T, B, H) as one BLAS GEMM over all T*B rows (an eval-mode forward
projects ``config.EVAL_BYTES`` of gates at a time into a smaller workspace); then
per thread (a slice of the batch), per step, ``b_ih + b_hh + h_{t-1} @
W_hh^T`` added in place and the activation.  A training-mode forward stores
h_t, T*B*H values; the backward loop (per thread, t = T-1..0) needs a
(T, B, H) buffer for the pre-activation gradients, because the products
after the time loop (dx, dW_ih, dW_hh: single BLAS GEMMs over all T*B rows)
need both them and h_t.  tanh and relu run fused loops of their own; any other f is
applied, and differentiated from h_t, by the row passes of :mod:`fastrnn.jit.activations`.
"""

import numpy as np

from . import _common
from .. import activations as _acts
from .activations import act_grad_row, act_row, tanh
from .config import batch_slices, helper, jit, one_blas_thread, threads_for
from ..reference._common import check_call, check_clip, check_nonlinearity
from .gemm import add_rows, clip_row, init_rows, mask_row, mm_nt, mm_rows, mm_rows_live, store_norm


def _activation(nonlinearity, activations, x):
    """The RNN's activation as its kernels take it, from the options ``nonlinearity`` and
    ``activations`` (see :func:`fastrnn.reference._common.check_nonlinearity`).

    Returns
    -------
    relu : bool, the activation is relu
    kinds, params : arrays for :func:`_activate`: (0,) and (0, 2) for tanh and relu (the
        kernels' own loops), else the activation's (see :func:`_common.act_arrays`)
    """
    if activations is None and nonlinearity in ("tanh", "relu"):   # the common case, first
        return (nonlinearity == "relu",) + _common.DEFAULT_ACTS
    (act,) = acts = check_nonlinearity(nonlinearity, activations)
    _acts.check_in_dtype(acts, np.asarray(x).dtype)
    if act.name in ("tanh", "relu"):
        return (act.name == "relu",) + _common.DEFAULT_ACTS
    return (False,) + _acts.codes(acts)


@helper()
def _activate(g, h, hy, relu, kinds, params):
    """h_t = f(a) of one sequence: g (>= H,) a in, h_t out; h, hy (H,) receive h_t.

    f is the activation of slot 0 of ``kinds, params`` (:mod:`fastrnn.jit.activations`), or,
    when ``kinds`` is (0,), relu (``relu``) or tanh.
    """
    H = h.shape[0]
    zero = g.dtype.type(0)
    if kinds.shape[0] > 0:
        act_row(kinds[0], params[0, 0], params[0, 1], g[:H])
    elif relu:
        for j in range(H):
            if g[j] < zero:   # NaN stays NaN
                g[j] = zero
    else:
        for j in range(H):
            g[j] = tanh(g[j])
    for j in range(H):
        h[j] = g[j]
    for j in range(H):
        hy[j] = g[j]


@jit
def _forward_slice(h, w_hh, b_ih, b_hh, relu, kinds, params, clip, M, lengths, y, G, t0, nt, b0,
                   b1):
    """Steps t0 <= t < t0 + nt of the forward for the sequences b0 <= b < b1.

    Parameters
    ----------
    h : (B, H) array, h_{t0-1} in, h_{t0+nt-1} out
    w_hh : W_hh^T (H, H) packed (see gemm.pack)
    b_ih, b_hh : (H,) arrays, or (0,) when absent
    relu : bool, relu (else tanh) when ``kinds`` is (0,)
    kinds, params : (3,) int32 and (3, 2) float64 arrays, the activation (slot 0), or (0,) and
        (0, 2) for relu or tanh (see :func:`_common.act_arrays`)
    clip : float, the cell clip (0: none)
    M : (T, B, H) array receiving the clip's mask (training), or (0, 0, 0)
    lengths : (B,) int64 array
    y : (T, B, H) array, written
    G : (TG, B, >= H) array: step t's x_t @ W_ih^T at t % TG in, h_t out
    t0, nt, b0, b1 : int
    """
    B, H = h.shape
    h3 = h.reshape((1, B, H))
    for t in range(t0, t0 + nt):
        tg = t % G.shape[0]
        add_rows(G[tg, b0:b1], 0, H, b_ih, b_hh)
        mm_rows(h3, 0, 0, w_hh, H, G, tg, 0, 1, b0, b1)
        for b in range(b0, b1):
            if t >= lengths[b]:
                y[t, b, :] = 0
                G[tg, b, :] = 0
                continue
            if clip > 0:
                clip_row(G[tg, b, :H], clip, M, t, b, 0)
            _activate(G[tg, b], h[b], y[t, b], relu, kinds, params)


@one_blas_thread
def rnn_forward(x, hx, weights, lengths=None, training=True, nonlinearity="tanh", clip=None,
                activations=None):
    """Elman RNN over a whole sequence (the kernel contract of :mod:`fastrnn.reference`).

    Parameters
    ----------
    x : (T, B, I) array, float32 or float64
    hx : tuple (h0 (B, H),)
    weights : tuple (w_ih (H, I), w_hh (H, H), b_ih (H,) or None, b_hh (H,) or None)
    lengths : (B,) int64 array or None
        Steps ``t >= lengths[b]`` give zero output and leave sequence b's state alone.
    training : bool
        Keep what the backward needs (T*B*H values); otherwise only
        O(max(B * H, config.EVAL_BYTES)) workspace beyond the output.
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
        The record for :func:`rnn_backward` (x, sparse: x compressed or None, h0, G: h_t,
        relu, acts: the activation's kinds and params, lens, weights, M: the clip's mask), None
        when ``training`` is False.
    """
    clip = check_clip(clip, np.asarray(x).dtype)
    relu, kinds, params = _activation(nonlinearity, activations, x)
    check_call("rnn", x, hx, weights, lengths)
    weights = _common.writeable_all(weights)
    w_ih, w_hh, b_ih, b_hh = weights
    dt = x.dtype
    x = _common.contiguous(x, dt)
    T, B = x.shape[0], x.shape[1]
    H = w_hh.shape[0]
    h = np.array(hx[0], dtype=dt, order="C")
    h0 = h.copy() if training else None
    lens = _common.lengths_or_full(lengths, T, B)
    if training:   # the backward's dW_ih = D^T x runs over every row, padding included
        x = _common.unpadded(x, lens)
    y = np.empty((T, B, H), dtype=dt)
    G = _common.row_buffer(_common.store_steps(T, B, H, dt, training), B, H, dt)
    M = _common.clip_mask(clip, training, T, B, H, dt)
    args = (h, _common.packed(w_hh, True), _common.bias_or_empty(b_ih, dt),
            _common.bias_or_empty(b_hh, dt), relu, kinds, params, clip or 0.0, M, lens, y, G)
    sparse = _common.forward_loop(_forward_slice, args, x, w_ih, G, threads_for(2 * T * B * H * H))
    saved = _common.Saved("rnn", False, True, x=x, sparse=sparse, h0=h0, G=G, relu=relu,
                          acts=(kinds, params), lens=lens, weights=weights,
                          M=M) if training else None
    return y, (h,), saved


@jit
def _backward_slice(dy, dh, G, DA, M, w_hh, relu, kinds, params, lengths, norms, s0, s1, b0, b1):
    """BPTT over the steps s0 <= t < s1, the last first, for the sequences b0 <= b < b1
    (dh, and dc for LSTM, carry the gradient of the state from one call to the next).

    Parameters
    ----------
    dy : (T, B, H) array
    dh : (B, H) array, dh_n in, dh0 out
    G : (T, B, >= H) array of h_t
    DA : (T, B, H) array receiving the pre-activation gradients
    M : (T, B, H) array, the clip's mask, or (0, 0, 0) without a clip
    w_hh : W_hh (H, H) packed (see gemm.pack)
    relu : bool, relu (else tanh) when ``kinds`` is (0,)
    kinds, params : the activation, as :func:`_forward_slice`
    lengths : (B,) int64 array
    norms : (T, B) array receiving ||dJ/dh_t||, or (0, 0)
    s0, s1, b0, b1 : int
    """
    B, H = dh.shape
    one, zero = dy.dtype.type(1), dy.dtype.type(0)
    dh3 = dh.reshape((1, B, H))
    held = np.empty((B, H), dtype=dh.dtype)   # (see mm_rows_live)
    for t in range(s1 - 1, s0 - 1, -1):
        for b in range(b0, b1):
            if t >= lengths[b]:
                DA[t, b, :] = 0
                if norms.shape[0] > 0:
                    norms[t, b] = 0
                continue
            d, da, hv = dh[b], DA[t, b], G[t, b]
            for j in range(H):
                d[j] += dy[t, b, j]
            store_norm(norms, t, b, d)
            if kinds.shape[0] > 0:
                for j in range(H):
                    da[j] = d[j]
                act_grad_row(kinds[0], params[0, 0], params[0, 1], hv[:H], da)
            elif relu:
                for j in range(H):
                    da[j] = zero if hv[j] <= zero else d[j]   # as PyTorch: NaN units pass, inf stays
            else:
                for j in range(H):
                    da[j] = d[j] * (one - hv[j] * hv[j])
            mask_row(da, M, t, b, 0)
            for j in range(H):
                d[j] = zero
        mm_rows_live(DA, t, 0, w_hh, H, dh3, held, lengths, b0, b1)


@one_blas_thread
def rnn_backward(dy, dhy, saved, dweights, step_norms=None, input_grad=True):
    """Backpropagation through time for :func:`rnn_forward` (consumes ``saved``).

    Parameters
    ----------
    dy : (T, B, H) array
    dhy : tuple (dh_n (B, H),)
    saved : the record returned by :func:`rnn_forward` with ``training=True``
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
    s = _common.take(saved, "rnn", dweights, dy, dhy, step_norms=step_norms)
    x, h0, G, relu, lens, weights = s["x"], s["h0"], s["G"], s["relu"], s["lens"], s["weights"]
    (kinds, params), M = s["acts"], s["M"]
    w_ih, w_hh, b_ih, b_hh = weights
    dw_ih, dw_hh, db_ih, db_hh = dweights
    dt = x.dtype
    T, B = x.shape[0], x.shape[1]
    H = w_hh.shape[0]
    dy = _common.contiguous(dy, dt)
    dh = np.array(dhy[0], dtype=dt, order="C")
    norms = _common.norms_buffer(step_norms, T, B, dt)
    DA = np.empty((T, B, H), dtype=dt)
    slices = batch_slices(B, threads_for(2 * T * B * H * H))
    args = (dy, dh, G, DA, M, _common.packed(w_hh, False), relu, kinds, params, lens, norms)
    _common.backward_loop(_backward_slice, args, G, list(zip(slices[:-1], slices[1:])))
    _common.store_norms(step_norms, norms)
    del args   # the packed weights: free them before the gradients are allocated

    D = _common.flat(DA)   # pre-activation gradients, one row per (t, b)
    dx = _common.input_grads(D, w_ih, x, dw_ih, _common.saved_sparse(s, x, w_ih), input_grad,
                             lens)
    _common.recurrent_grad(D, h0, G, dw_hh, lens)
    _common.bias_grads(D, db_ih, db_hh)
    return dx, (dh,)


@jit
def _step_forward_kernel(x, h, w_ih, w_hh, b_ih, b_hh, relu, kinds, params, clip, M, hy, G):
    """One step for a batch, with the weights as stored (no packed copies).

    Parameters
    ----------
    x : (B, I) array
    h : (B, H) array
    w_ih (H, I), w_hh (H, H) arrays; b_ih, b_hh (H,) arrays or (0,) when absent
    relu : bool, relu (else tanh) when ``kinds`` is (0,)
    kinds, params : the activation, as :func:`_forward_slice`
    clip : float, the cell clip (0: none); M : (1, B, H) array receiving its mask, or (0, 0, 0)
    hy : (B, H) array receiving h'
    G : (1, B, H) array receiving h' (the store for the backward)
    """
    B = x.shape[0]
    g2 = G[0]
    init_rows(g2, 0, w_hh.shape[0], b_ih, b_hh)
    mm_nt(x, w_ih, g2, 0)
    mm_nt(h, w_hh, g2, 0)
    for b in range(B):
        if clip > 0:
            clip_row(g2[b, :w_hh.shape[0]], clip, M, 0, b, 0)
        _activate(g2[b], hy[b], hy[b], relu, kinds, params)


def rnn_step_forward(x, hx, weights, training=True, nonlinearity="tanh", clip=None,
                     activations=None):
    """One Elman RNN step (what :class:`fastrnn.RNNCell` runs).

    Parameters
    ----------
    x : (B, I) array
    hx : tuple (h (B, H),)
    weights : tuple (w_ih (H, I), w_hh (H, H), b_ih (H,) or None, b_hh (H,) or None)
    training : bool
    nonlinearity : {"tanh", "relu"}
    clip : float or None
    activations : None or sequence of one activation (f), in place of ``nonlinearity``

    Returns
    -------
    hy : tuple (h' (B, H),)
    saved : the record for :func:`rnn_step_backward`, or None when ``training`` is False
    """
    clip = check_clip(clip, np.asarray(x).dtype)
    relu, kinds, params = _activation(nonlinearity, activations, x)
    check_call("rnn", x, hx, weights, step=True)
    weights = _common.writeable_all(weights)
    w_ih, w_hh, b_ih, b_hh = weights
    dt = x.dtype
    x, (h,) = _common.writeable(x), _common.writeable_all(hx)
    B = x.shape[0]
    H = w_hh.shape[0]
    hy, G = np.empty((B, H), dt), np.empty((1, B, H), dt)
    M = _common.clip_mask(clip, training, 1, B, H, dt)
    _step_forward_kernel(x, h, w_ih, w_hh, _common.bias_or_empty(b_ih, dt),
                         _common.bias_or_empty(b_hh, dt), relu, kinds, params, clip or 0.0, M,
                         hy, G)
    if not training:
        return (hy,), None
    return (hy,), _common.Saved("rnn", True, True, x=x[None], h0=h.copy(), G=G, relu=relu,
                                acts=(kinds, params), lens=np.ones(B, dtype=np.int64),
                                weights=weights, M=M)


def rnn_step_backward(dhy, saved, dweights):
    """Backward of :func:`rnn_step_forward` (consumes ``saved``).

    Parameters
    ----------
    dhy : tuple (dh' (B, H),)
    saved : the record returned by :func:`rnn_step_forward` with ``training=True``
    dweights : tuple aligned with the weights, added into

    Returns
    -------
    dx : (B, I) array
    dhx : tuple (dh (B, H),)
    """
    return _common.step_backward(rnn_backward, "rnn", dhy, saved, dweights)
