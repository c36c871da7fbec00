"""The matrix products inside the numba kernels' time loops: numba loops, not BLAS calls.

(The products over all T*B rows of a sequence, before and after the time
loop, are BLAS calls made by the wrappers, see :mod:`fastrnn.jit._common`;
but for a sparse input's, below.)

Inside the loop a recurrent layer multiplies small blocks of rows (a thread's
slice of the batch at one time step) by the same weight matrix again and
again.  BLAS would copy ("pack") the weights at every such call, and its
thread pool would fight the kernels' own threads for the cores.  Here the right-hand operand is
packed once per kernel call (:func:`pack`, into column panels of at most
:data:`PANEL` elements, contiguous, so the rows read together do not share
cache sets), and the products run on the calling thread:

* :func:`mm_rows` (``C += A @ R``, the forward's and the backward's products)
  updates 4 rows of C from 4 columns of A at a time: an inner loop along a
  row segment of C doing 16 fused multiply-adds per 8 loads and 4 stores,
  which LLVM turns into SIMD code; R is walked in blocks of
  :data:`BLOCK_BYTES` that stay in the L2 cache while all rows go by.
* :func:`mm_nt` (``C += A @ R^T``) serves the one-step kernels, which use the
  weights as stored (packing would cost more than the step).
* :func:`mm_small` (``C = A @ B``) takes the products over all rows that are too
  small for a BLAS call (see :func:`fastrnn.jit._common.matmul`).
* :func:`sparse_mm` and :func:`sparse_wgrad` take the input's products, x @ W_ih^T and
  dW_ih += D^T x, over x's entries alone when x is sparse (:func:`csr`).

Two rules keep the inner loops fast: they index only views whose index
starts at 0 (an offset index such as ``v[j0 + j]`` gets numba's
negative-index check and loses vectorisation, halving the speed), and every
update is written ``c[j] = c[j] + a0 * w0[j] + a1 * w1[j] + ...`` so that it
compiles to a chain of fused multiply-adds only.

These are not the cython backend's register-blocked tiles (``kernels/fastrnn_mm.h``),
which keep a tile of C (6 rows by 16 columns with AVX2, up to 12 by 32 with AVX-512) in
vector registers for the whole loop over k.  Numba cannot express them: it has no vector
types; the tile written as 96 scalar sums stays scalar, since Numba turns LLVM's SLP
vectorizer off (10 GFLOP/s; with ``NUMBA_SLP_VECTORIZE=1`` 80, and :func:`mm_rows` itself
then drops from 99 to 80); and sums kept in a local array, or in a stack buffer made by an
intrinsic, stay loads and stores (4-10 GFLOP/s).  What that costs, one thread of an Intel
Xeon (AVX-512), 32 rows by K = 512 by N = 2048 (a thread's share of a step of
LSTM(512, 512) at B = 64): :func:`mm_rows` 90 GFLOP/s (80 compiled for Haswell's AVX2), the
cython tiles 188-209 (its avx512 build) and 110 (avx2).  The benchmark's report states the
cost on whole rows ("numba against cython").

Rows are addressed as ``(t, b)`` pairs of time-major ``(T, B, width)``
arrays, so one call covers any run of time steps of a slice of the batch.
Every output element gets the same sequence of operations whichever block of
4 rows it falls in, so results do not depend on how rows are split between
calls or threads.
"""

import numpy as np

from .config import REDUCE_FASTMATH, helper, jit

#: bytes of the block of the right-hand operand kept in the L2 cache while all rows go by
BLOCK_BYTES = 256 * 1024
#: widest column panel (elements): the inner loop's length
PANEL = 512


@helper()
def _block_rows(width, itemsize, nbytes):
    """Rows of a (rows, width) block of ``nbytes``: a multiple of 4, so that groups of 4
    rows start at the same place whatever the blocking (and results do not change)."""
    rows = nbytes // (max(1, width) * itemsize)
    return max(4, rows - rows % 4)


def panel_shape(K, N):
    """Shape (panels, K, width) of a (K, N) right-hand operand packed by :func:`pack`."""
    width = max(1, min(N, PANEL))
    return (N + width - 1) // width, K, width


@jit
def pack(W, transpose, out):
    """Pack a right-hand operand into column panels: out[p, k, j] = R[k, p * width + j].

    R is ``W.T`` when ``transpose`` is true, else W; columns past its width are
    zeros.  Each panel is contiguous, so the rows the inner loop reads
    together are close in memory rather than a power-of-2 stride apart (which
    makes them compete for the same cache sets).

    Parameters
    ----------
    W : (N, K) array if transpose, else (K, N)
    transpose : bool
    out : (panels, K, width) C-contiguous array, see :func:`panel_shape`
    """
    width, K = out.shape[2], out.shape[1]
    N = W.shape[0] if transpose else W.shape[1]
    for p in range(out.shape[0]):
        j0 = p * width
        nj = min(N - j0, width)
        panel = out[p]
        for k in range(K):
            row = panel[k]
            for j in range(nj, width):
                row[j] = 0
        if transpose:   # in 32 x 32 tiles, so that both sides stay in cache
            for kb in range(0, K, 32):
                for jb in range(0, nj, 32):
                    tile = W[j0 + jb:j0 + min(nj, jb + 32), kb:min(K, kb + 32)]
                    for k in range(tile.shape[1]):
                        row = panel[kb + k, jb:jb + tile.shape[0]]
                        for j in range(tile.shape[0]):
                            row[j] = tile[j, k]
        else:
            for k in range(K):
                row, src = panel[k], W[k, j0:j0 + nj]
                for j in range(nj):
                    row[j] = src[j]


@helper()
def mm_rows(A, ta, acol, Bp, N, C, tc, ccol, nt, b0, b1):
    """Add a product to rows of a time-major array: C[rows, cols] += A[rows, acol:acol+K] @ R.

    R is the (K, N) right-hand operand packed into ``Bp`` by :func:`pack`.
    Rows are ``(ta + s, b)`` of A and ``(tc + s, b)`` of C for ``0 <= s < nt``
    and ``b0 <= b < b1``.

    Parameters
    ----------
    A : (TA, Bsz, >= acol + K) array
    ta, acol : int
        First time step and first column of A used.
    Bp : (panels, K, width) C-contiguous array
    N : int
        Columns of R.
    C : (TC, Bsz, >= ccol + N) C-contiguous array, updated in place
    tc, ccol : int
        First time step and first column of C written.
    nt, b0, b1 : int
        Number of time steps, and the slice of the batch.
    """
    K, width = Bp.shape[1], Bp.shape[2]
    bc = b1 - b0
    n = nt * bc
    if n <= 0 or N == 0:
        return
    kc = _block_rows(width, Bp.itemsize, BLOCK_BYTES)
    for p in range(Bp.shape[0]):
        B = Bp[p]
        j0 = p * width
        nj = min(N - j0, width)
        cl = ccol + j0
        for k0 in range(0, K, kc):
            k1 = min(K, k0 + kc)
            q = 0
            while q + 4 <= n:
                s0, s1, s2, s3 = q // bc, (q + 1) // bc, (q + 2) // bc, (q + 3) // bc
                r0, r1 = b0 + q % bc, b0 + (q + 1) % bc
                r2, r3 = b0 + (q + 2) % bc, b0 + (q + 3) % bc
                c0 = C[tc + s0, r0, cl:cl + nj]
                c1 = C[tc + s1, r1, cl:cl + nj]
                c2 = C[tc + s2, r2, cl:cl + nj]
                c3 = C[tc + s3, r3, cl:cl + nj]
                a0, a1, a2, a3 = A[ta + s0, r0], A[ta + s1, r1], A[ta + s2, r2], A[ta + s3, r3]
                k = k0
                while k + 4 <= k1:
                    i = acol + k
                    x00, x01, x02, x03 = a0[i], a0[i + 1], a0[i + 2], a0[i + 3]
                    x10, x11, x12, x13 = a1[i], a1[i + 1], a1[i + 2], a1[i + 3]
                    x20, x21, x22, x23 = a2[i], a2[i + 1], a2[i + 2], a2[i + 3]
                    x30, x31, x32, x33 = a3[i], a3[i + 1], a3[i + 2], a3[i + 3]
                    w0, w1, w2, w3 = B[k], B[k + 1], B[k + 2], B[k + 3]
                    for j in range(nj):
                        v0, v1, v2, v3 = w0[j], w1[j], w2[j], w3[j]
                        c0[j] = c0[j] + x00 * v0 + x01 * v1 + x02 * v2 + x03 * v3
                        c1[j] = c1[j] + x10 * v0 + x11 * v1 + x12 * v2 + x13 * v3
                        c2[j] = c2[j] + x20 * v0 + x21 * v1 + x22 * v2 + x23 * v3
                        c3[j] = c3[j] + x30 * v0 + x31 * v1 + x32 * v2 + x33 * v3
                    k += 4
                while k < k1:
                    i = acol + k
                    x00, x10, x20, x30 = a0[i], a1[i], a2[i], a3[i]
                    w0 = B[k]
                    for j in range(nj):
                        v0 = w0[j]
                        c0[j] = c0[j] + x00 * v0
                        c1[j] = c1[j] + x10 * v0
                        c2[j] = c2[j] + x20 * v0
                        c3[j] = c3[j] + x30 * v0
                    k += 1
                q += 4
            while q < n:
                s0, r0 = q // bc, b0 + q % bc
                c0 = C[tc + s0, r0, cl:cl + nj]
                a0 = A[ta + s0, r0]
                k = k0
                while k + 4 <= k1:
                    i = acol + k
                    x00, x01, x02, x03 = a0[i], a0[i + 1], a0[i + 2], a0[i + 3]
                    w0, w1, w2, w3 = B[k], B[k + 1], B[k + 2], B[k + 3]
                    for j in range(nj):
                        c0[j] = c0[j] + x00 * w0[j] + x01 * w1[j] + x02 * w2[j] + x03 * w3[j]
                    k += 4
                while k < k1:
                    x00 = a0[acol + k]
                    w0 = B[k]
                    for j in range(nj):
                        c0[j] = c0[j] + x00 * w0[j]
                    k += 1
                q += 1


@helper()
def mm_rows_live(A, ta, acol, Bp, N, C, held, lengths, b0, b1):
    """:func:`mm_rows` of step ``ta`` of A into C[0] (one step), leaving alone the rows of the
    sequences that ended before step ``ta`` (``ta >= lengths[b]``): their rows of A are 0, but
    0 * inf is NaN, and a non-finite weight must not reach a state that PyTorch's packed
    sequences hold apart.  ``held``: (>= b1, >= N) workspace."""
    for b in range(b0, b1):
        if ta >= lengths[b]:
            copy(held[b, :N], C[0, b, :N])
    mm_rows(A, ta, acol, Bp, N, C, 0, 0, 1, b0, b1)
    for b in range(b0, b1):
        if ta >= lengths[b]:
            copy(C[0, b, :N], held[b, :N])


@helper(fastmath=REDUCE_FASTMATH)
def mm_nt(A, B, C, ccol):
    """Add a product with a transposed right operand: C[:, ccol:ccol+N] += A @ B.T.

    For the one-step kernels, which use the weights as stored ((G*H, K), no
    packed copy): every output is a dot product of two contiguous rows; 8 of
    them share each load of A's row.

    Parameters
    ----------
    A : (M, K) C-contiguous array
    B : (N, K) C-contiguous array
    C : (M, >= ccol + N) C-contiguous array, updated in place
    """
    M, K = A.shape
    N = B.shape[0]
    zero = C.dtype.type(0)
    for i in range(M):
        a, c = A[i], C[i, ccol:ccol + N]
        j = 0
        while j + 8 <= N:
            w0, w1, w2, w3 = B[j], B[j + 1], B[j + 2], B[j + 3]
            w4, w5, w6, w7 = B[j + 4], B[j + 5], B[j + 6], B[j + 7]
            s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = zero
            for k in range(K):
                x = a[k]
                s0 += x * w0[k]
                s1 += x * w1[k]
                s2 += x * w2[k]
                s3 += x * w3[k]
                s4 += x * w4[k]
                s5 += x * w5[k]
                s6 += x * w6[k]
                s7 += x * w7[k]
            c[j] += s0
            c[j + 1] += s1
            c[j + 2] += s2
            c[j + 3] += s3
            c[j + 4] += s4
            c[j + 5] += s5
            c[j + 6] += s6
            c[j + 7] += s7
            j += 8
        while j < N:
            w0 = B[j]
            s0 = zero
            for k in range(K):
                s0 += a[k] * w0[k]
            c[j] += s0
            j += 1


@jit
def mm_small(A, B, C, add):
    """``C = A @ B`` (``C += A @ B`` when ``add``) as a plain loop, for products too small to
    pay for a BLAS call from Python (a one-step cell's dx and weight gradients).

    Parameters
    ----------
    A : (M, K) C-contiguous array
    B : (K, N) C-contiguous array
    C : (M, N) C-contiguous array, written
    """
    M, K = A.shape
    N = B.shape[1]
    for i in range(M):
        c = C[i]
        if not add:
            for j in range(N):
                c[j] = 0
        for k in range(K):
            a = A[i, k]
            b = B[k]
            for j in range(N):
                c[j] = c[j] + a * b[j]


@helper()
def add_rows(C, ccol, N, b1, b2):
    """C[i, ccol:ccol+N] += b1 + b2 for every row i; an empty bias (shape (0,)) counts as zeros."""
    for i in range(C.shape[0]):
        c = C[i, ccol:ccol + N]
        if b1.shape[0] > 0:
            for j in range(N):
                c[j] += b1[j]
        if b2.shape[0] > 0:
            for j in range(N):
                c[j] += b2[j]


@helper()
def init_rows(C, ccol, N, b1, b2):
    """C[i, ccol:ccol+N] = b1 + b2 for every row i (see :func:`add_rows`)."""
    for i in range(C.shape[0]):
        C[i, ccol:ccol + N] = 0
    add_rows(C, ccol, N, b1, b2)


@helper()
def copy(dst, src):
    """dst[j] = src[j] for every j of dst (a loop: numba's array slice assignment compiles
    an error-message formatter that costs seconds of compile time)."""
    for j in range(dst.shape[0]):
        dst[j] = src[j]


@helper()
def clip_row(g, clip, M, t, b, col):
    """ONNX's cell clip of one row of pre-activations: g[j] clamped to [-clip, clip] (NaN stays
    NaN); unless ``M`` is empty, M[t, b, col + j] = 1 where -clip <= g[j] <= clip, else 0: the
    gradient's mask (PyTorch's clamp passes the gradient at the bounds, not at NaN)."""
    one, zero = g.dtype.type(1), g.dtype.type(0)
    c = g.dtype.type(clip)   # the bound in g's precision, as the reference and cython compare
    if M.shape[0] > 0:
        m = M[t, b]
        for j in range(g.shape[0]):
            m[col + j] = one if (g[j] >= -c and g[j] <= c) else zero
    for j in range(g.shape[0]):
        if g[j] < -c:
            g[j] = -c
        elif g[j] > c:
            g[j] = c


@helper()
def mask_row(d, M, t, b, col):
    """d[j] *= M[t, b, col + j]: the clip's mask on a row of pre-activation gradients (nothing
    when ``M`` is empty)."""
    if M.shape[0] > 0:
        m = M[t, b]
        for j in range(d.shape[0]):
            d[j] *= m[col + j]


@helper()
def store_norm(norms, t, b, v):
    """norms[t, b] = ||v|| (2-norm of a vector), unless ``norms`` is empty; the squares summed in
    float64 (see ``fastrnn.reference._common.record_norm``)."""
    if norms.shape[0] > 0:
        ss = 0.0
        for j in range(v.shape[0]):
            vj = np.float64(v[j])
            ss += vj * vj
        norms[t, b] = np.sqrt(ss)


# The input's products when the input is sparse (one-hot characters, say): its rows in
# compressed form (CSR: row r's values val[e] at columns idx[e], e in [ptr[r], ptr[r + 1])),
# so that a product reads only the rows of W_ih^T the entries pick.  Each row's sum runs over
# its entries in the order of the columns, one row at a time: the results do not depend on
# the threads.
@jit
def csr(X, limit):
    """``(ptr, idx, val)``: the rows of X compressed, or three empty arrays when more than
    ``limit`` of its entries are not zero (counted up to there: a dense X is not read to the
    end).

    Parameters
    ----------
    X : (M, K) C-contiguous array
    limit : int
    """
    M, K = X.shape
    n = 0
    for r in range(M):
        x = X[r]
        for k in range(K):
            if x[k] != 0:
                n += 1
        if n > limit:
            return (np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0, X.dtype))
    ptr = np.empty(M + 1, np.int64)
    idx = np.empty(n, np.int32)
    val = np.empty(n, X.dtype)
    e = 0
    for r in range(M):
        ptr[r] = e
        x = X[r]
        for k in range(K):
            if x[k] != 0:
                idx[e] = k
                val[e] = x[k]
                e += 1
    ptr[M] = e
    return ptr, idx, val


@jit
def sparse_mm(ptr, idx, val, r0, Wt, C):
    """``C[i] = A[r0 + i] @ Wt`` for every row i of C: the rows of a sparse A (CSR) times Wt.

    Parameters
    ----------
    ptr, idx, val : A (M, K) compressed (:func:`csr`)
    Wt : (K, N) C-contiguous array
    C : (n, >= N) C-contiguous array (rows of the gate store): columns [0, N) written
    """
    N = Wt.shape[1]
    for i in range(C.shape[0]):
        c = C[i]
        for j in range(N):
            c[j] = 0
        for e in range(ptr[r0 + i], ptr[r0 + i + 1]):
            v = val[e]
            w = Wt[idx[e]]
            for j in range(N):
                c[j] = c[j] + v * w[j]


@jit
def sparse_wgrad(ptr, idx, val, D, ld, Wt):
    """``Wt += A^T D``: for each entry A[r, k], row k of Wt += A[r, k] D[r], rows r in order.

    Parameters
    ----------
    ptr, idx, val : A (M, K) compressed (:func:`csr`)
    D : 1-d array: the rows of the (M, N) gate gradients, row r at ``D[r * ld:][:N]`` (one
        layout whatever the cell's gradient store: one compiled kernel)
    Wt : (K, N) C-contiguous array, added into
    """
    N = Wt.shape[1]
    for r in range(ptr.shape[0] - 1):
        d = D[r * ld:r * ld + N]
        for e in range(ptr[r], ptr[r + 1]):
            v = val[e]
            w = Wt[idx[e]]
            for j in range(N):
                w[j] = w[j] + v * d[j]
