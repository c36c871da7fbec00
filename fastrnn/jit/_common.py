"""Python-side helpers shared by the numba kernels' public wrappers.

The products over all T*B rows of a sequence (the input projection before a
time loop; dx and the weight gradients after it) are BLAS calls made here,
through NumPy, between the compiled loops, on blocks of output rows shared
among the kernels' threads (BLAS itself on one thread, see
:func:`fastrnn.jit.config.one_blas_thread`): BLAS packs its operands once per
call, which pays off over hundreds of rows.  A sparse input's products (the
projection and dW_ih, :func:`sparse_input`) are numba loops over its entries
instead, on one thread.
"""

import numpy as np

from .. import activations as _acts
from ..reference._common import Saved, check, step_backward, take  # noqa: F401 - the contract's
from ..reference._common import unpadded  # noqa: F401 - the kernels' (training) input
from ..reference._common import valid_steps
from . import config
from .config import run_threads, threads_for
from .gemm import csr, mm_small, pack, panel_shape, sparse_mm, sparse_wgrad

#: bytes added to every row of the buffers that matrix products write, so that rows
#: whose width is a multiple of 4 KiB do not map to the same cache sets
ROW_PAD_BYTES = 64

_EMPTY = {}

#: the kernels' ``kinds, params`` of a cell's default activations (see :func:`act_arrays`)
DEFAULT_ACTS = (np.empty(0, dtype=np.int32), np.empty((0, 2)))


def writeable(a):
    """``a`` (an array or None), or a copy of it when it is read-only.  numba types a read-only
    array apart from a writeable one, so a kernel called with one is compiled again (2 s for
    LSTMCell's step); a copy of an input costs one pass over it."""
    return a if a is None or a.flags.writeable else a.copy()


def writeable_all(arrays):
    """:func:`writeable` of each of ``arrays`` (a tuple, the weights), as a tuple."""
    return tuple(writeable(a) for a in arrays)


def contiguous(a, dtype):
    """``a`` as a C-contiguous, writeable array of ``dtype`` (no copy when it already is one;
    see :func:`writeable`)."""
    return writeable(np.ascontiguousarray(a, dtype=dtype))


def act_arrays(cell, activations, x):
    """The ``activations`` option of a kernel as the kernels take it
    (:mod:`fastrnn.jit.activations`).

    Parameters
    ----------
    cell : {"rnn", "lstm", "gru"}
    activations : None or sequence
        The option, checked by :func:`fastrnn.activations.check_activations` (None, or every
        slot at the cell's default: the defaults).
    x : array
        The kernel's input: the parameters are checked in its float type
        (:func:`fastrnn.activations.check_in_dtype`).

    Returns
    -------
    kinds : (3,) int32 array of activation codes, one per slot, or (0,) for the defaults
    params : (3, 2) float64 array of [alpha, beta] per slot, or (0, 2) for the defaults
    """
    if activations is None:   # the common case, first: no check to make
        return DEFAULT_ACTS
    acts = _acts.check_activations(cell, activations)
    _acts.check_in_dtype(acts, np.asarray(x).dtype)   # parameters the input's dtype holds
    return DEFAULT_ACTS if acts is None else _acts.codes(acts)


def lengths_or_full(lengths, T, B):
    """(B,) int64 lengths, all T when ``lengths`` is None (the kernels always mask)."""
    if lengths is None:
        return np.full(B, T, dtype=np.int64)
    return contiguous(lengths, np.int64)


def bias_or_empty(b, dtype):
    """A bias as it is, or a (0,) array standing for "no bias"."""
    return empty(1, dtype) if b is None else b


def packed(w, transpose):
    """``w.T`` (``transpose``) or ``w`` packed in column panels for the kernels' matrix products.

    A C-contiguous ``w`` that fits in one panel is its own packed form: a view, no copy.
    """
    K, N = (w.shape[1], w.shape[0]) if transpose else w.shape
    shape = panel_shape(K, N)
    if not transpose and shape[0] == 1 and w.flags.c_contiguous:
        return w.reshape(shape)
    out = np.empty(shape, dtype=w.dtype)
    pack(w, transpose, out)
    return out


def row_buffer(T, B, width, dtype):
    """An uninitialised (T, B, width + pad) buffer, used as (T, B, width): its rows are
    padded by :data:`ROW_PAD_BYTES` (kernels take their widths from elsewhere)."""
    return np.empty((T, B, width + ROW_PAD_BYTES // np.dtype(dtype).itemsize), dtype=dtype)


def empty(ndim, dtype):
    """A shared zero-size array standing for an absent buffer (a weight or a store)."""
    key = (ndim, np.dtype(dtype))
    if key not in _EMPTY:
        _EMPTY[key] = np.empty((0,) * ndim, dtype=dtype)
    return _EMPTY[key]


def clip_mask(clip, training, T, B, width, dtype):
    """The buffer of the cell clip's gradient mask: (T, B, width) in training with a clip,
    else empty (eval mode clips without keeping a mask)."""
    if clip is None or not training:
        return empty(3, dtype)
    return np.empty((T, B, width), dtype=dtype)


def norms_buffer(step_norms, T, B, dtype):
    """The (T, B) array the kernel writes step norms to: ``step_norms`` itself when it
    is a C-contiguous array of ``dtype``, else a new one (copied back by :func:`store_norms`);
    an empty one when ``step_norms`` is None."""
    if step_norms is None:
        return empty(2, dtype)
    if step_norms.flags.c_contiguous and step_norms.dtype == dtype:
        return step_norms
    return np.empty((T, B), dtype=dtype)


def store_norms(step_norms, buffer):
    """Copy the norms back into ``step_norms`` when :func:`norms_buffer` made a new buffer."""
    if step_norms is not None and buffer is not step_norms:
        step_norms[...] = buffer


def flat(a):
    """A time-major (T, B, W) array (padded rows included) as a (T*B, W) view."""
    return a.reshape((a.shape[0] * a.shape[1], a.shape[2]))


def store_steps(T, B, width, dtype, training):
    """Time steps a gate store of rows of ``width`` holds: all T in training, else as many
    as fit in :data:`config.EVAL_BYTES` (at least one), so that an eval-mode forward needs
    O(max(B * width, EVAL_BYTES)) workspace whatever T (beyond a sparse input's compressed
    form, :func:`sparse_input`: T*B + 1 row offsets and 3 words an entry)."""
    step_bytes = max(1, B * width * np.dtype(dtype).itemsize)
    return T if training else max(1, min(T, config.EVAL_BYTES // step_bytes))


def _row_blocks(M):
    """Boundaries of the row blocks of an M-row product: at most ``config.BLAS_BLOCKS`` blocks
    of at least ``config.BLAS_MIN_ROWS`` rows (fewer for a short product), a function of M
    alone, so that results do not depend on the thread count."""
    n = max(1, min(config.BLAS_BLOCKS, M // config.BLAS_MIN_ROWS))
    return [M * k // n for k in range(n + 1)]


def _matmul_part(A, B, out, add, bounds, part, parts):
    """This thread's share of :func:`matmul`: its blocks of rows, one BLAS call each."""
    n = len(bounds) - 1
    for k in range(n * part // parts, n * (part + 1) // parts):
        a, o = A[bounds[k]:bounds[k + 1]], out[bounds[k]:bounds[k + 1]]
        if add:
            o += a @ B
        else:
            np.matmul(a, B, out=o)


def matmul(A, B, out, add=False):
    """``out = A @ B`` (``out += A @ B`` when ``add``): BLAS on blocks of rows, threads sharing
    them, or one numba loop below ``config.BLAS_MIN_FLOPS`` (or for an outer product).

    Parameters
    ----------
    A : (M, K) array, B : (K, N) array, out : (M, N) array (any strides BLAS takes)
    """
    flops = 2 * A.shape[0] * A.shape[1] * B.shape[1]
    if flops < config.BLAS_MIN_FLOPS or A.shape[1] == 1:
        # an inner dimension of 1 is an outer product: ~5x slower through NumPy's matmul.
        # C-contiguous operands only, so that the loop is compiled once per dtype
        if out.flags.c_contiguous:
            res = out
        elif add:
            res = np.array(out, order="C")
        else:
            res = np.empty(out.shape, out.dtype)
        mm_small(np.ascontiguousarray(A), np.ascontiguousarray(B), res, add)
        if res is not out:
            out[...] = res
        return
    bounds = _row_blocks(out.shape[0])
    threads = min(len(bounds) - 1, threads_for(flops, config.BLAS_PARALLEL_MIN_FLOPS))
    config.hold_blas_at_one_thread()
    run_threads(_matmul_part, (A, B, out, add, bounds), [(k, threads) for k in range(threads)])


def project(x, t0, nt, w, G):
    """``G[:nt, :, :N] = x[t0:t0+nt] @ w.T``: the input projection of ``nt`` steps.

    Parameters
    ----------
    x : (T, B, I) C-contiguous array
    w : (N, I) array
    G : (>= nt, B, >= N) C-contiguous array
    """
    N = w.shape[0]
    matmul(flat(x[t0:t0 + nt]), w.T, flat(G[:nt])[:, :N])


def sparse_input(x, w_ih):
    """x's rows compressed (``(ptr, idx, val)``, see :func:`fastrnn.jit.gemm.csr`) when at
    most 1/:data:`config.SPARSE_DENSITY` of x is not zero, its first row included, x has at
    least that many columns, and w_ih is finite (a NaN or inf in w_ih reaches every output
    through the zeros' products, as BLAS's dense product spreads it); else None.  The
    products over the entries alone then sum in another order than BLAS's (equal up to
    rounding, not bit for bit), and a NaN or inf in the gate gradients reaches only the
    columns of dW_ih of the inputs that are not zero.

    Parameters
    ----------
    x : (T, B, I) C-contiguous array
    w_ih : (N, I) array
    """
    X = flat(x)
    density = config.SPARSE_DENSITY
    if (not density or X.size == 0 or X.shape[1] < density
            or np.count_nonzero(X[0]) > X.shape[1] // density or not np.isfinite(w_ih).all()):
        return None
    ptr, idx, val = csr(X, X.size // density)
    return (ptr, idx, val) if ptr.shape[0] else None


def forward_loop(kernel, args, x, w_ih, G, threads):
    """A forward's time loop: for each block of as many steps as an eval-mode gate store
    holds (:func:`store_steps`), their input projection into ``G`` (BLAS, :func:`project`;
    over x's entries alone when x is sparse, see :func:`sparse_input`) and then
    ``kernel(*args, t0, nt, b0, b1)`` on ``threads`` slices of the batch at once; the kernel
    finds step t's gates at ``G[t % TG]``.  Between two blocks Python runs, so that a Ctrl-C
    is acted on within one block (a training store holds all T steps: its projection and its
    time loop as one call each ran to the end of the sequence first, 14 s at T = 600,000).

    Parameters
    ----------
    x : (T, B, I) C-contiguous array
    w_ih : (N, I) array
    G : (TG, B, >= N) C-contiguous array (TG = T in training)

    Returns
    -------
    sparse : x compressed, or None (:func:`sparse_input`); a training record keeps it for
        :func:`input_grads`
    """
    T, B = x.shape[0], x.shape[1]
    slices = config.batch_slices(B, threads)
    tails = list(zip(slices[:-1], slices[1:]))
    sparse = sparse_input(x, w_ih)
    if sparse is not None:
        wt = np.ascontiguousarray(w_ih.T)
    block = (G.shape[0] if G.shape[0] < T     # an eval store: its blocks; else all T steps
             else store_steps(T, B, G.shape[2] - ROW_PAD_BYTES // G.itemsize, G.dtype, False))
    for t0 in range(0, T, block):
        nt = min(block, T - t0)
        g = G[t0 % G.shape[0]:][:nt]   # (the whole padded rows: C-contiguous, one signature)
        if sparse is not None:
            sparse_mm(*sparse, t0 * B, wt, flat(g))
        else:
            project(x, t0, nt, w_ih, g)
        run_threads(kernel, args + (t0, nt), tails)
    return sparse


def backward_loop(kernel, args, G, tails):
    """A backward's time loop: ``kernel(*args, s0, s1, b0, b1)`` over blocks of the steps an
    eval-mode store of ``G``'s rows holds (:func:`store_steps`), the last block first, on the
    batch slices ``tails`` at once.  The kernel carries the states' gradients in its arrays
    from one block to the next; between two blocks Python runs, so that a Ctrl-C is acted on
    within one block.

    Parameters
    ----------
    G : (T, B, W) array, the gate store of the forward's record
    """
    T, B = G.shape[0], G.shape[1]
    block = store_steps(T, B, G.shape[2], G.dtype, False)
    for s1 in range(T, 0, -block):
        run_threads(kernel, args + (max(0, s1 - block), s1), tails)


def input_grads(D, w_ih, x, dw_ih, sparse, input_grad=True, lens=None):
    """``dx = D @ W_ih`` and ``dW_ih += D^T @ x``: the input side of a backward, over all rows
    (dW_ih over x's entries alone when x is sparse, see :func:`sparse_input`).  D's rows past
    each sequence's end are 0, and so are x's there (:func:`unpadded`); dx's are made 0.

    Parameters
    ----------
    D : (T*B, N) array (a view of a gate-gradient store): rows (t, b), time-major
    w_ih : (N, I) array
    x : (T, B, I) C-contiguous array
    dw_ih : (N, I) array, added into
    sparse : x compressed, or None: what :func:`saved_sparse` gives for the forward's record
    input_grad : bool
        False skips dx.
    lens : (B,) int64 array, or None (every sequence T steps)

    Returns
    -------
    dx : (T, B, I) array, or None without ``input_grad``
    """
    dx = None
    if input_grad:
        dx = np.empty(x.shape, dtype=x.dtype)
        matmul(D, w_ih, flat(dx))
        ended = ended_steps(lens, x.shape[0])
        if ended is not None:
            # past a sequence's end dx is 0, whatever W_ih holds (0 * inf is NaN)
            dx[ended] = 0
    if sparse is not None:
        wt = np.zeros((dw_ih.shape[1], dw_ih.shape[0]), dtype=dw_ih.dtype)
        # D's rows as one 1-d view (D: a column slice of a C-contiguous gate store, at least
        # one row since x is not empty), whatever the cell's store: one compiled kernel
        ld = D.strides[0] // D.itemsize
        rows = np.lib.stride_tricks.as_strided(D, ((D.shape[0] - 1) * ld + D.shape[1],),
                                               (D.itemsize,))
        sparse_wgrad(*sparse, rows, ld, wt)
        dw_ih += wt.T
    else:
        matmul(D.T, flat(x), dw_ih, add=True)
    return dx


def saved_sparse(s, x, w_ih):
    """The compressed x of a forward's record ``s`` (taken, a dict): the sequence forwards
    keep the one they projected with; a step's record has none, x is compressed here."""
    return s["sparse"] if "sparse" in s else sparse_input(x, w_ih)


def ended_steps(lens, T):
    """(T, B) bool array, True where step t is past sequence b's end; None where no step is
    (``lens`` None, or every sequence T steps)."""
    if lens is None or np.min(lens, initial=T) >= T:
        return None
    return ~valid_steps(lens, T, len(lens))[:, :, 0]


def previous_rows(h0, Hs, K, lens, n):
    """The n rows (t, b), time-major, of each step's previous state: h0's, then Hs's steps
    0, 1, ... (their first K columns); where step t is past sequence b's end, a row of zeros.
    A sequence that has ended keeps its last state, which may be inf or NaN, and its gradient
    rows there are 0: 0 * inf would put a NaN into a weight's gradient, where PyTorch's packed
    sequences never pair the two.  Without such steps (``lens`` None or all T), views.

    Returns
    -------
    (first, rest) : (B, K) and (n - B, K) arrays
    """
    B = h0.shape[0]
    T = n // B if B else 0
    first, rest = h0, flat(Hs)[:n - B, :K]
    ended = ended_steps(lens, T)
    if ended is not None:
        first = np.where(ended[0][:, None], 0, first).astype(h0.dtype, copy=False)
        rest = np.where(ended[1:].reshape(-1, 1), 0, rest).astype(rest.dtype, copy=False)
    return first, rest


def recurrent_grad(D, h0, Hs, out, lens=None):
    """``out += sum_t D_t^T @ h_{t-1}``: a recurrent weight's gradient (over the steps inside
    each sequence: see :func:`previous_rows`).

    Parameters
    ----------
    D : (T*B, N) array (a view of a gate-gradient store): rows (t, b), time-major
    h0 : (B, K) array, h_{-1}
    Hs : (>= T-1, B, >= K) C-contiguous array whose step t holds h_t (in its first K columns)
    out : (N, K) array, added into
    lens : (B,) int64 array, or None (every sequence T steps)
    """
    B, K = h0.shape
    first, rest = previous_rows(h0, Hs, K, lens, D.shape[0])
    matmul(D[:B].T, first, out, add=True)
    if D.shape[0] > B:
        matmul(D[B:].T, rest, out, add=True)


def bias_grads(D, db_ih, db_hh):
    """Add the column sums of ``D`` (T*B, G) into each bias gradient (G,) that is not None: the
    two biases of RNN and LSTM enter the pre-activations alike."""
    if db_ih is not None or db_hh is not None:
        db = D.sum(axis=0)
        for g in (db_ih, db_hh):
            if g is not None:
                g += db


