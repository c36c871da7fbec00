# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Inline building blocks of the Cython kernels: BLAS GEMM and the activations.

Everything here is ``nogil`` and generic over the fused type ``floating``
(float32 / float64), so each kernel in ``_kernels.pyx`` is compiled twice.

Activations
-----------
float64 uses the exact libm functions (``tanh``, ``exp``), like the NumPy
reference.  float32 uses a clamped rational approximation of tanh, the same formula and
coefficients as the numba backend (``fastrnn/jit/activations.py``; Eigen's
``ptanh_float``: ``x * P(x^2) / Q(x^2)`` for |x| <= 7.9053, P of degree 6, Q
of degree 3, and exactly +-1 for |x| > 9.02, where float32 tanh is +-1), and
``sigmoid(x) = 0.5 + 0.5 * tanh(x / 2)``: plain multiply/add/divide and
compares, no libm call, so the element-wise loops vectorise.  The compares
have the input on the left, so NaN falls through all of them and propagates;
+-inf and +-1e4 give exactly +-1 (sigmoid: 0 or 1).  The maximum absolute
error (3.4e-7 for tanh, 2.3e-7 for sigmoid over a dense grid of [-12, 12])
is measured by tests/test_cython_kernels.py against ``APPROX_MAX_ABS_ERR``.
"""

from scipy.linalg.cython_blas cimport sgemm, dgemm, sgemv, dgemv, sger, dger
from cython cimport floating
from libc.string cimport memset

cdef extern from "<math.h>" nogil:
    double c_tanh "tanh"(double x)
    double c_exp "exp"(double x)
    double c_fabs "fabs"(double x)
    double c_sqrt "sqrt"(double x)

cdef extern from "fastrnn_pool.h" nogil:
    # the phase clock (see fastrnn_pool.h): every product below adds its time on its thread
    long fr_clock_start()
    void fr_clock_stop(int which, long t0, long times)
    int FR_CLK_PRODUCTS


# ---------------------------------------------------------------------------------------
# BLAS
# ---------------------------------------------------------------------------------------
cdef enum:
    # a product with at most this many columns (the other products of a step: the weight
    # gradients, dx) is done as that many matrix-vector products, or outer products:
    # OpenBLAS's GEMM packs the whole weight matrix on every call, which costs several times
    # the product itself when it is skinny
    GEMV_MAX_COLUMNS = 4
    # a product of the weights' rows with at most this many vectors (the batch of a step:
    # gemm 'T', 'N') goes to fastrnn_mm.h's fr_dots_cols, which reads the weights as stored,
    # once per 3 vectors (at LSTMCell(128, 128), B = 64, on one thread as fast as BLAS's GEMM,
    # which packs them first, and 1.6x as fast on the step's team of two); above, BLAS's GEMM
    DOTS_MAX_COLUMNS = 64


cdef inline void gemm(char ta, char tb, int m, int n, int k, floating alpha,
                      const floating* a, int lda, const floating* b, int ldb,
                      floating beta, floating* c, int ldc) noexcept nogil:
    """Column-major ``C = alpha op(A) op(B) + beta C`` (C is m x n), any size >= 0 (see
    :func:`gemm_`), on the phase clock's products."""
    cdef long t0 = fr_clock_start()
    gemm_(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    fr_clock_stop(FR_CLK_PRODUCTS, t0, 1)


cdef inline void gemm_(char ta, char tb, int m, int n, int k, floating alpha,
                       const floating* a, int lda, const floating* b, int ldb,
                       floating beta, floating* c, int ldc) noexcept nogil:
    """Column-major ``C = alpha op(A) op(B) + beta C`` (C is m x n), any size >= 0.

    Empty products are handled here (BLAS is never called with a zero
    dimension): k == 0 scales C by beta (0 means zero-fill).  Products with
    few columns go through GEMV, one column of C at a time, and products of
    small inner dimension through GER, one outer product at a time.
    """
    cdef int j
    if m <= 0 or n <= 0:
        return
    if k <= 0:
        if beta == 0:
            for j in range(n):
                memset(c + <Py_ssize_t>j * ldc, 0, m * sizeof(floating))
        elif beta != 1:
            for j in range(n):
                scale(c + <Py_ssize_t>j * ldc, beta, m)
        return
    if k <= GEMV_MAX_COLUMNS:
        # a sum of k outer products (the weight gradients of a step kernel): GER, no packing
        if beta == 0:
            for j in range(n):
                memset(c + <Py_ssize_t>j * ldc, 0, m * sizeof(floating))
        elif beta != 1:
            for j in range(n):
                scale(c + <Py_ssize_t>j * ldc, beta, m)
        for j in range(k):
            # column j of op(A) (m) times row j of op(B) (n)
            ger(m, n, alpha,
                a + <Py_ssize_t>j * lda if ta == c'N' else a + j, 1 if ta == c'N' else lda,
                b + j if tb == c'N' else b + <Py_ssize_t>j * ldb, ldb if tb == c'N' else 1,
                c, ldc)
        return
    if ta == c'T' and tb == c'N' and n <= DOTS_MAX_COLUMNS:
        # the rows of A dotted with the n columns of B (each k contiguous values)
        if floating is float:
            fr_dots_cols_f32(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        else:
            fr_dots_cols_f64(m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
        return
    if n <= GEMV_MAX_COLUMNS:
        for j in range(n):
            # column j of op(B): b[j*ldb + i] for 'N', b[i*ldb + j] for 'T'
            if tb == c'N':
                gemv(ta, m, k, alpha, a, lda, b + <Py_ssize_t>j * ldb, 1, beta, c + <Py_ssize_t>j * ldc)
            else:
                gemv(ta, m, k, alpha, a, lda, b + j, ldb, beta, c + <Py_ssize_t>j * ldc)
        return
    if floating is float:
        sgemm(&ta, &tb, &m, &n, &k, &alpha, <float*>a, &lda, <float*>b, &ldb, &beta, c, &ldc)
    else:
        dgemm(&ta, &tb, &m, &n, &k, &alpha, <double*>a, &lda, <double*>b, &ldb, &beta, c, &ldc)


cdef inline void ger(int m, int n, floating alpha, const floating* x, int incx,
                     const floating* y, int incy, floating* a, int lda) noexcept nogil:
    """A (m x n, column-major) += alpha x y^T."""
    if floating is float:
        sger(&m, &n, &alpha, <float*>x, &incx, <float*>y, &incy, a, &lda)
    else:
        dger(&m, &n, &alpha, <double*>x, &incx, <double*>y, &incy, a, &lda)


cdef inline void gemv(char ta, int m, int k, floating alpha, const floating* a, int lda,
                      const floating* x, int incx, floating beta, floating* y) noexcept nogil:
    """y (m) = alpha op(A) x + beta y, op(A) m x k (A is stored m x k for 'N', k x m for 'T').
    With 'T' and x contiguous (a step's products: the m rows of A dotted with x), fastrnn_mm.h's
    fr_dots rather than BLAS."""
    cdef int rows = m if ta == c'N' else k
    cdef int cols = k if ta == c'N' else m
    cdef int one = 1
    if ta == c'T' and incx == 1:
        if floating is float:
            fr_dots_f32(m, k, alpha, a, lda, x, beta, y)
        else:
            fr_dots_f64(m, k, alpha, a, lda, x, beta, y)
        return
    if floating is float:
        sgemv(&ta, &rows, &cols, &alpha, <float*>a, &lda, <float*>x, &incx, &beta, y, &one)
    else:
        dgemv(&ta, &rows, &cols, &alpha, <double*>a, &lda, <double*>x, &incx, &beta, y, &one)


cdef inline void scale(floating* x, floating s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        x[j] = x[j] * s


# ---------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------
cdef extern from *:
    """
    /* Clamped rational tanh for float32 (see the module docstring); the constants are
     * written as double literals assigned to floats, each rounded once to float.  In C
     * rather than Cython so that the fused LSTM row below calls the same function. */
    static inline float fr_tanh_f32(float x)
    {
        const float clamp = 7.90531110763549805;
        const float a1 = 4.89352455891786e-03, a3 = 6.37261928875436e-04;
        const float a5 = 1.48572235717979e-05, a7 = 5.12229709037114e-08;
        const float a9 = -8.60467152213735e-11, a11 = 2.00018790482477e-13;
        const float a13 = -2.76076847742355e-16;
        const float b0 = 4.89352518554385e-03, b2 = 2.26843463243900e-03;
        const float b4 = 1.18534705686654e-04, b6 = 1.19825839466702e-06;
        const float saturate = 9.02;    /* |x| above which float32 tanh(x) is exactly +-1 */
        float y = x, y2, p, q, r;
        if (y > clamp) y = clamp;
        if (y < -clamp) y = -clamp;
        y2 = y * y;
        p = y2 * a13 + a11;
        p = p * y2 + a9;
        p = p * y2 + a7;
        p = p * y2 + a5;
        p = p * y2 + a3;
        p = p * y2 + a1;
        p = p * y;
        q = y2 * b6 + b4;
        q = q * y2 + b2;
        q = q * y2 + b0;
        r = p / q;
        if (x > saturate) r = 1;
        if (x < -saturate) r = -1;
        return r;
    }
    static inline float fr_sigmoid_f32(float x)
    {
        const float half = 0.5;
        return half + half * fr_tanh_f32(half * x);
    }
    /* exact logistic function, stable for any input (as the reference's) */
    static inline double fr_sigmoid_f64(double x)
    {
        double e = exp(-fabs(x));
        if (x >= 0)
            return 1.0 / (1.0 + e);
        return e / (1.0 + e);
    }
    """
    float tanh_f32 "fr_tanh_f32"(float x) noexcept nogil
    float sigmoid_f32 "fr_sigmoid_f32"(float x) noexcept nogil
    double sigmoid_f64 "fr_sigmoid_f64"(double x) noexcept nogil


cdef inline floating act_tanh(floating x) noexcept nogil:
    if floating is float:
        return tanh_f32(x)
    else:
        return c_tanh(x)


cdef inline floating act_sigmoid(floating x) noexcept nogil:
    if floating is float:
        return sigmoid_f32(x)
    else:
        return sigmoid_f64(x)


cdef inline floating act_relu(floating x) noexcept nogil:
    # NaN < 0 is False: NaN propagates, like np.maximum
    if x < 0:
        return 0
    return x


# ---------------------------------------------------------------------------------------
# Small vector helpers (inner loops over one row; written to vectorise)
# ---------------------------------------------------------------------------------------
cdef inline void tanh_bias(floating* a, const floating* bias, Py_ssize_t n) noexcept nogil:
    """a[j] = tanh(a[j] + bias[j]) in place."""
    cdef Py_ssize_t j
    for j in range(n):
        a[j] = act_tanh(a[j] + bias[j])


cdef inline void add_to(floating* out, const floating* a, const floating* b, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        out[j] = a[j] + b[j]


cdef inline floating norm2(const floating* a, Py_ssize_t n) noexcept nogil:
    """Euclidean norm, accumulated in double."""
    cdef double s = 0
    cdef Py_ssize_t j
    for j in range(n):
        s += <double>a[j] * <double>a[j]
    return <floating>c_sqrt(s)


cdef inline void colsum_add(floating* out, const floating* a, Py_ssize_t rows, Py_ssize_t cols,
                            Py_ssize_t lda) noexcept nogil:
    """out[j] += sum_r a[r * lda + j] (the bias gradient of a stack of rows)."""
    cdef Py_ssize_t r, j
    cdef const floating* row
    for r in range(rows):
        row = a + r * lda
        for j in range(cols):
            out[j] += row[j]


cdef inline void mul_to(floating* out, const floating* a, const floating* b, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(n):
        out[j] = a[j] * b[j]


cdef extern from *:
    """
    /* c_t = f * c_{t-1} + i * g over one row (restrict: the compiler vectorises it without
     * alias checks; written in Cython, the loop stayed scalar: 15% of the element-wise pass) */
    #define FR_DEFINE_CELL_STATE(SUF, T)                                                       \
    static inline void fr_cell_state_##SUF(T* __restrict__ cnext, const T* __restrict__ i,    \
                                           const T* __restrict__ f, const T* __restrict__ g,  \
                                           const T* __restrict__ cprev, Py_ssize_t n)         \
    {                                                                                          \
        Py_ssize_t j;                                                                          \
        for (j = 0; j < n; j++)                                                                \
            cnext[j] = f[j] * cprev[j] + i[j] * g[j];                                          \
    }
    FR_DEFINE_CELL_STATE(f32, float)
    FR_DEFINE_CELL_STATE(f64, double)
    /* the LSTM gates [i, f, g, o] of one row -> the gradients of their pre-activations, in
     * place; dc: dc_t in, dc_{t-1} out (in Cython the loop stayed scalar, and went through
     * double: 8% of a training step) */
    #define FR_DEFINE_LSTM_GRAD(SUF, T)                                                        \
    static inline void fr_lstm_grad_row_##SUF(T* __restrict__ row, const T* __restrict__ tcr, \
                                              const T* __restrict__ cprev,                    \
                                              const T* __restrict__ dm, T* __restrict__ dc,   \
                                              Py_ssize_t H)                                   \
    {                                                                                          \
        const T one = 1;                                                                       \
        Py_ssize_t j;                                                                          \
        for (j = 0; j < H; j++) {                                                              \
            const T i = row[j], f = row[H + j], g = row[2 * H + j], o = row[3 * H + j];         \
            const T tcv = tcr[j], dmv = dm[j];                                                 \
            const T dct = dc[j] + dmv * o * (one - tcv * tcv);                                 \
            row[j] = dct * g * i * (one - i);                                                  \
            row[H + j] = dct * cprev[j] * f * (one - f);                                       \
            row[2 * H + j] = dct * i * (one - g * g);                                          \
            row[3 * H + j] = dmv * tcv * o * (one - o);                                        \
            dc[j] = dct * f;                                                                   \
        }                                                                                      \
    }
    FR_DEFINE_LSTM_GRAD(f32, float)
    FR_DEFINE_LSTM_GRAD(f64, double)
    /* v bounded to [-c, c], NaN kept (as clip_value of _kernels.pyx) */
    #define FR_CLIP(v, c) ((v) < -(c) ? -(c) : ((v) > (c) ? (c) : (v)))
    /* a * b + c, rounded once where the build has fused multiply-adds, as the compiler
     * contracts fr_cell_state's f * c_{t-1} + i * g (the first product fused with the second
     * as its addend).  Spelt out in the one-pass row below: there the compiler fused the other
     * product in some of its loops (the remainder of a row, the coupled gates) and changed the
     * last bit of c_t. */
    #if defined(__FMA__) || defined(__AVX512F__)
    #define FR_MULADD_f32(a, b, c) fmaf(a, b, c)
    #define FR_MULADD_f64(a, b, c) fma(a, b, c)
    #else
    #define FR_MULADD_f32(a, b, c) ((a) * (b) + (c))
    #define FR_MULADD_f64(a, b, c) ((a) * (b) + (c))
    #endif
    /* 1 where v is inside [-c, c] (the bounds included), 0 outside or at NaN: the clip's
     * gradient mask, as clip_value of _kernels.pyx (one, zero: the row's constants) */
    #define FR_INSIDE(v, c) ((v) >= -(c) ? ((v) <= (c) ? one : zero) : zero)
    /* in a row below: v clipped when `clipped`, its mask first kept in mask[j] when `store` */
    #define FR_ROW_CLIP(v, mask)                                                               \
        if (clipped) {                                                                         \
            if (store)                                                                         \
                (mask)[j] = FR_INSIDE(v, clip);                                                \
            v = FR_CLIP(v, clip);                                                              \
        }
    /* One sequence's LSTM step in one pass over its H units.  ri, rf, rg, ro (H each: the
     * parts i, f, g, o of the row, x W_ih^T + h W_hh^T on entry) read, and written with the
     * gates when `store` (training: the backward reads them); bias (4H) read; ph (3H: i, f, o)
     * read when `peep`; cprev (H) read; cnext (H) written: c_t; tcr (H) written when `store`:
     * tanh(c_t); m (H) written: o * tanh(c_t); mi, mf, mg, mo (H each) written when `store`
     * and `clipped`: the parts of the clip's gradient mask.  `coupled`: f = 1 - i.  The flags
     * are constants of each instance (fr_lstm_row_f32_0 .. _15, below), so each is a loop of
     * its own that vectorises with no test inside.  Every element gets the operations the
     * passes over the row did before (peephole, bias, clip, activation, c_t, o, tanh(c_t)) in
     * their order: the same bits.  fr_lstm_row_* takes the whole row (4H) and mask (4H, or
     * NULL) and calls the instance of its flags. */
    #define FR_DEFINE_LSTM_ROW(SUF, T, TANH, SIGMOID)                                          \
    static inline __attribute__((always_inline)) void fr_lstm_row_##SUF##_(                    \
            T* __restrict__ ri, T* __restrict__ rf, T* __restrict__ rg, T* __restrict__ ro,    \
            const T* __restrict__ bias, const T* __restrict__ ph, const T* __restrict__ cprev, \
            T* __restrict__ cnext, T* __restrict__ tcr, T* __restrict__ m,                     \
            T* __restrict__ mi, T* __restrict__ mf, T* __restrict__ mg, T* __restrict__ mo,    \
            Py_ssize_t H, const int peep, const int coupled, const int clipped,                \
            const int store, const T clip)                                                     \
    {                                                                                          \
        const T one = 1, zero = 0;                                                             \
        Py_ssize_t j;                                                                          \
        for (j = 0; j < H; j++) {                                                              \
            const T cp = cprev[j];                                                             \
            T vi = ri[j], vf = rf[j], vg = rg[j], vo = ro[j];                                  \
            T i, f, g, c, o, tc;                                                               \
            if (peep) {                                                                        \
                vi = vi + ph[j] * cp;                                                          \
                vf = vf + ph[H + j] * cp;                                                      \
            }                                                                                  \
            vi = vi + bias[j];                                                                 \
            vf = vf + bias[H + j];                                                             \
            vg = vg + bias[2 * H + j];                                                         \
            FR_ROW_CLIP(vi, mi)                                                                \
            FR_ROW_CLIP(vf, mf)                                                                \
            FR_ROW_CLIP(vg, mg)                                                                \
            i = SIGMOID(vi);                                                                   \
            f = coupled ? one - i : SIGMOID(vf);                                               \
            g = TANH(vg);                                                                      \
            c = FR_MULADD_##SUF(f, cp, i * g);                                                 \
            if (peep)                                                                          \
                vo = vo + ph[2 * H + j] * c;                                                   \
            vo = vo + bias[3 * H + j];                                                         \
            FR_ROW_CLIP(vo, mo)                                                                \
            o = SIGMOID(vo);                                                                   \
            tc = TANH(c);                                                                      \
            cnext[j] = c;                                                                      \
            m[j] = o * tc;                                                                     \
            if (store) {                                                                       \
                ri[j] = i;                                                                     \
                rf[j] = f;                                                                     \
                rg[j] = g;                                                                     \
                ro[j] = o;                                                                     \
                tcr[j] = tc;                                                                   \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
    FR_LSTM_ROW_INSTANCES(SUF, T)                                                              \
    static inline void fr_lstm_row_##SUF(T* row, const T* bias, const T* ph, const T* cprev,   \
                                         T* cnext, T* tcr, T* m, T* cm, Py_ssize_t H,          \
                                         int coupled, T clip, int store)                       \
    {                                                                                          \
        switch ((ph != NULL) * 8 + (coupled != 0) * 4 + (clip > 0) * 2 + (store != 0)) {       \
        FR_LSTM_ROW_CASES(SUF)                                                                 \
        }                                                                                      \
    }
    /* each instance a function of its own (as cases of one function, gcc 12 vectorised 4 of
     * the 16 loops), and each gate's part of the row and of the mask a pointer of its own (as
     * offsets of one pointer, checking their overlap took more tests than gcc makes, and the
     * loops that store the mask stayed scalar) */
    #define FR_LSTM_ROW_INSTANCE(SUF, T, K)                                                    \
    static __attribute__((noinline)) void fr_lstm_row_##SUF##_##K(                             \
            T* row, const T* bias, const T* ph, const T* cprev, T* cnext, T* tcr, T* m,        \
            T* cm, Py_ssize_t H, T clip)                                                       \
    {                                                                                          \
        T* mi = (K & 3) == 3 ? cm : NULL;                                                      \
        fr_lstm_row_##SUF##_(row, row + H, row + 2 * H, row + 3 * H, bias, ph, cprev, cnext,   \
                             tcr, m, mi, mi ? mi + H : NULL, mi ? mi + 2 * H : NULL,           \
                             mi ? mi + 3 * H : NULL, H, (K >> 3) & 1, (K >> 2) & 1,            \
                             (K >> 1) & 1, K & 1, clip);                                       \
    }
    #define FR_LSTM_ROW_INSTANCES(SUF, T)                                                      \
        FR_LSTM_ROW_INSTANCE(SUF, T, 0) FR_LSTM_ROW_INSTANCE(SUF, T, 1)                        \
        FR_LSTM_ROW_INSTANCE(SUF, T, 2) FR_LSTM_ROW_INSTANCE(SUF, T, 3)                        \
        FR_LSTM_ROW_INSTANCE(SUF, T, 4) FR_LSTM_ROW_INSTANCE(SUF, T, 5)                        \
        FR_LSTM_ROW_INSTANCE(SUF, T, 6) FR_LSTM_ROW_INSTANCE(SUF, T, 7)                        \
        FR_LSTM_ROW_INSTANCE(SUF, T, 8) FR_LSTM_ROW_INSTANCE(SUF, T, 9)                        \
        FR_LSTM_ROW_INSTANCE(SUF, T, 10) FR_LSTM_ROW_INSTANCE(SUF, T, 11)                      \
        FR_LSTM_ROW_INSTANCE(SUF, T, 12) FR_LSTM_ROW_INSTANCE(SUF, T, 13)                      \
        FR_LSTM_ROW_INSTANCE(SUF, T, 14) FR_LSTM_ROW_INSTANCE(SUF, T, 15)
    #define FR_LSTM_ROW_CASE(SUF, K)                                                           \
        case K: fr_lstm_row_##SUF##_##K(row, bias, ph, cprev, cnext, tcr, m, cm, H, clip); break;
    #define FR_LSTM_ROW_CASES(SUF)                                                             \
        FR_LSTM_ROW_CASE(SUF, 0) FR_LSTM_ROW_CASE(SUF, 1) FR_LSTM_ROW_CASE(SUF, 2)             \
        FR_LSTM_ROW_CASE(SUF, 3) FR_LSTM_ROW_CASE(SUF, 4) FR_LSTM_ROW_CASE(SUF, 5)             \
        FR_LSTM_ROW_CASE(SUF, 6) FR_LSTM_ROW_CASE(SUF, 7) FR_LSTM_ROW_CASE(SUF, 8)             \
        FR_LSTM_ROW_CASE(SUF, 9) FR_LSTM_ROW_CASE(SUF, 10) FR_LSTM_ROW_CASE(SUF, 11)           \
        FR_LSTM_ROW_CASE(SUF, 12) FR_LSTM_ROW_CASE(SUF, 13) FR_LSTM_ROW_CASE(SUF, 14)          \
        FR_LSTM_ROW_CASE(SUF, 15)
    FR_DEFINE_LSTM_ROW(f32, float, fr_tanh_f32, fr_sigmoid_f32)
    FR_DEFINE_LSTM_ROW(f64, double, tanh, fr_sigmoid_f64)
    /* One sequence's GRU step (reset gate after the product) in one pass over its H units.
     * rr, rz, rn, rh (H each: the parts of the row, x W_ih^T in the first three on entry)
     * read, and written with r, z, n and W_hn h + b_hn when `store` (training); gh (3H, h
     * W_hh^T) read; bias (4H: b_ir + b_hr, b_iz + b_hz, b_in, b_hn) read; hprev (H) read;
     * hnext (H) written: h_t = (1 - z) * n + z * h_{t-1} (fr_gru_state's multiply-add); mr,
     * mz, mn (H each) written when `store` and `clipped`: the parts of the clip's mask.  As
     * the LSTM's row above: the flags constants of each instance (fr_gru_row_f32_0_0 ..
     * _1_1), the same bits as the passes before; fr_gru_row_* takes the whole row and mask. */
    #define FR_DEFINE_GRU_ROW(SUF, T, TANH, SIGMOID)                                           \
    static inline __attribute__((always_inline)) void fr_gru_row_##SUF##_(                     \
            T* __restrict__ rr, T* __restrict__ rz, T* __restrict__ rn, T* __restrict__ rh,    \
            const T* __restrict__ gh, const T* __restrict__ bias,                              \
            const T* __restrict__ hprev, T* __restrict__ hnext,                                \
            T* __restrict__ mr, T* __restrict__ mz, T* __restrict__ mn,                        \
            Py_ssize_t H, const int clipped, const int store, const T clip)                    \
    {                                                                                          \
        const T one = 1, zero = 0;                                                             \
        Py_ssize_t j;                                                                          \
        for (j = 0; j < H; j++) {                                                              \
            T vr = rr[j] + gh[j] + bias[j];                                                    \
            T vz = rz[j] + gh[H + j] + bias[H + j];                                            \
            const T hn = gh[2 * H + j] + bias[3 * H + j];                                      \
            T r, z, vn, n;                                                                     \
            FR_ROW_CLIP(vr, mr)                                                                \
            FR_ROW_CLIP(vz, mz)                                                                \
            r = SIGMOID(vr);                                                                   \
            z = SIGMOID(vz);                                                                   \
            vn = rn[j] + bias[2 * H + j] + r * hn;                                             \
            FR_ROW_CLIP(vn, mn)                                                                \
            n = TANH(vn);                                                                      \
            hnext[j] = FR_MULADD_##SUF(one - z, n, z * hprev[j]);                              \
            if (store) {                                                                       \
                rr[j] = r;                                                                     \
                rz[j] = z;                                                                     \
                rn[j] = n;                                                                     \
                rh[j] = hn;                                                                    \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
    FR_GRU_ROW_INSTANCE(SUF, T, 0, 0) FR_GRU_ROW_INSTANCE(SUF, T, 0, 1)                        \
    FR_GRU_ROW_INSTANCE(SUF, T, 1, 0) FR_GRU_ROW_INSTANCE(SUF, T, 1, 1)                        \
    static inline void fr_gru_row_##SUF(T* row, const T* gh, const T* bias, const T* hprev,    \
                                        T* hnext, T* cm, Py_ssize_t H, T clip, int store)      \
    {                                                                                          \
        switch ((clip > 0) * 2 + (store != 0)) {                                               \
        case 0: fr_gru_row_##SUF##_0_0(row, gh, bias, hprev, hnext, cm, H, clip); break;       \
        case 1: fr_gru_row_##SUF##_0_1(row, gh, bias, hprev, hnext, cm, H, clip); break;       \
        case 2: fr_gru_row_##SUF##_1_0(row, gh, bias, hprev, hnext, cm, H, clip); break;       \
        default: fr_gru_row_##SUF##_1_1(row, gh, bias, hprev, hnext, cm, H, clip);             \
        }                                                                                      \
    }
    #define FR_GRU_ROW_INSTANCE(SUF, T, CLIPPED, STORE)                                        \
    static __attribute__((noinline)) void fr_gru_row_##SUF##_##CLIPPED##_##STORE(              \
            T* row, const T* gh, const T* bias, const T* hprev, T* hnext, T* cm,               \
            Py_ssize_t H, T clip)                                                              \
    {                                                                                          \
        T* mr = CLIPPED && STORE ? cm : NULL;                                                  \
        fr_gru_row_##SUF##_(row, row + H, row + 2 * H, row + 3 * H, gh, bias, hprev, hnext,    \
                            mr, mr ? mr + H : NULL, mr ? mr + 2 * H : NULL, H, CLIPPED,        \
                            STORE, clip);                                                      \
    }
    FR_DEFINE_GRU_ROW(f32, float, fr_tanh_f32, fr_sigmoid_f32)
    FR_DEFINE_GRU_ROW(f64, double, tanh, fr_sigmoid_f64)
    /* the GRU store row [r, z, n, hn] of one sequence -> [dr, dz, dn, dn*r] in place; gh (3H)
     * = [dr, dz, dn*r]; dh = dh_t * z (vectorised, as above) */
    #define FR_DEFINE_GRU_GRAD(SUF, T)                                                         \
    static inline void fr_gru_grad_row_##SUF(T* __restrict__ row, const T* __restrict__ hprev, \
                                             const T* __restrict__ dht, T* __restrict__ gh,    \
                                             T* __restrict__ dh, Py_ssize_t H)                 \
    {                                                                                          \
        const T one = 1;                                                                       \
        Py_ssize_t j;                                                                          \
        for (j = 0; j < H; j++) {                                                              \
            const T r = row[j], z = row[H + j], n = row[2 * H + j], hn = row[3 * H + j];        \
            const T d = dht[j];                                                                \
            const T dn = (d - d * z) * (one - n * n);  /* as PyTorch: inf gives NaN */          \
            const T dr = dn * hn * r * (one - r);                                              \
            const T dz = d * (hprev[j] - n) * z * (one - z);                                   \
            row[j] = dr;                                                                       \
            row[H + j] = dz;                                                                   \
            row[2 * H + j] = dn;                                                               \
            row[3 * H + j] = dn * r;                                                           \
            gh[j] = dr;                                                                        \
            gh[H + j] = dz;                                                                    \
            gh[2 * H + j] = dn * r;                                                            \
            dh[j] = d * z;                                                                     \
        }                                                                                      \
    }
    FR_DEFINE_GRU_GRAD(f32, float)
    FR_DEFINE_GRU_GRAD(f64, double)
    /* h_t = (1 - z) * n + z * h_{t-1} over one row */
    #define FR_DEFINE_GRU_STATE(SUF, T)                                                        \
    static inline void fr_gru_state_##SUF(T* __restrict__ hnext, const T* __restrict__ z,     \
                                          const T* __restrict__ n,                            \
                                          const T* __restrict__ hprev, Py_ssize_t H)          \
    {                                                                                          \
        const T one = 1;                                                                       \
        Py_ssize_t j;                                                                          \
        for (j = 0; j < H; j++)                                                                \
            hnext[j] = (one - z[j]) * n[j] + z[j] * hprev[j];                                  \
    }
    FR_DEFINE_GRU_STATE(f32, float)
    FR_DEFINE_GRU_STATE(f64, double)
    """
    void fr_cell_state_f32(float* cnext, const float* i, const float* f, const float* g,
                           const float* cprev, Py_ssize_t n) noexcept nogil
    void fr_cell_state_f64(double* cnext, const double* i, const double* f, const double* g,
                           const double* cprev, Py_ssize_t n) noexcept nogil
    void fr_lstm_grad_row_f32(float* row, const float* tcr, const float* cprev, const float* dm,
                              float* dc, Py_ssize_t H) noexcept nogil
    void fr_lstm_grad_row_f64(double* row, const double* tcr, const double* cprev,
                              const double* dm, double* dc, Py_ssize_t H) noexcept nogil
    void fr_lstm_row_f32(float* row, const float* bias, const float* ph, const float* cprev,
                         float* cnext, float* tcr, float* m, float* cm, Py_ssize_t H, int coupled,
                         float clip, int store) noexcept nogil
    void fr_lstm_row_f64(double* row, const double* bias, const double* ph, const double* cprev,
                         double* cnext, double* tcr, double* m, double* cm, Py_ssize_t H,
                         int coupled, double clip, int store) noexcept nogil
    void fr_gru_row_f32(float* row, const float* gh, const float* bias, const float* hprev,
                        float* hnext, float* cm, Py_ssize_t H, float clip, int store) noexcept nogil
    void fr_gru_row_f64(double* row, const double* gh, const double* bias, const double* hprev,
                        double* hnext, double* cm, Py_ssize_t H, double clip,
                        int store) noexcept nogil
    void fr_gru_grad_row_f32(float* row, const float* hprev, const float* dht, float* gh,
                             float* dh, Py_ssize_t H) noexcept nogil
    void fr_gru_grad_row_f64(double* row, const double* hprev, const double* dht, double* gh,
                             double* dh, Py_ssize_t H) noexcept nogil
    void fr_gru_state_f32(float* hnext, const float* z, const float* n, const float* hprev,
                          Py_ssize_t H) noexcept nogil
    void fr_gru_state_f64(double* hnext, const double* z, const double* n, const double* hprev,
                          Py_ssize_t H) noexcept nogil


cdef inline void cell_state(floating* cnext, const floating* i, const floating* f,
                            const floating* g, const floating* cprev, Py_ssize_t n) noexcept nogil:
    """cnext = f * cprev + i * g (no argument may overlap another)."""
    if floating is float:
        fr_cell_state_f32(cnext, i, f, g, cprev, n)
    else:
        fr_cell_state_f64(cnext, i, f, g, cprev, n)


cdef inline void lstm_row(floating* row, const floating* bias, const floating* ph,
                          const floating* cprev, floating* cnext, floating* tcr, floating* m,
                          floating* cm, Py_ssize_t H, bint coupled, floating clip,
                          bint store) noexcept nogil:
    """One sequence's LSTM step, in one pass over the row (fr_lstm_row_*).

    Parameters
    ----------
    row : (4H) read, the gate pre-activations without bias [i, f, g, o]; written with the
        gates when ``store``
    bias : (4H) read
    ph : (3H: i, f, o) read, the peepholes, or NULL
    cprev : (H) read, c_{t-1}
    cnext : (H) written, c_t
    tcr : (H) written when ``store``, tanh(c_t)
    m : (H) written, m_t = o * tanh(c_t)
    cm : (4H) written when ``store`` and ``clip``, the clip's gradient mask
    coupled : f = 1 - i (input_forget)
    clip : the cell clip of the pre-activations (0: none)
    store : training (the backward reads the gates, tanh(c_t) and the mask); eval writes
        only c_t and m_t
    """
    if floating is float:
        fr_lstm_row_f32(row, bias, ph, cprev, cnext, tcr, m, cm, H, coupled, clip, store)
    else:
        fr_lstm_row_f64(row, bias, ph, cprev, cnext, tcr, m, cm, H, coupled, clip, store)


cdef inline void gru_row(floating* row, const floating* gh, const floating* bias,
                         const floating* hprev, floating* hnext, floating* cm, Py_ssize_t H,
                         floating clip, bint store) noexcept nogil:
    """One sequence's GRU step (reset gate after the product), in one pass over the row
    (fr_gru_row_*).

    Parameters
    ----------
    row : (4H) read, x W_ih^T [r, z, n] in its first 3H; written with [r, z, n, W_hn h + b_hn]
        when ``store``
    gh : (3H) read, h_{t-1} W_hh^T
    bias : (4H) read, [b_ir + b_hr, b_iz + b_hz, b_in, b_hn]
    hprev : (H) read, h_{t-1}
    hnext : (H) written, h_t
    cm : (3H) written when ``store`` and ``clip``, the clip's gradient mask
    clip : the cell clip of the pre-activations (0: none)
    store : training (the backward reads the row and the mask); eval writes only h_t
    """
    if floating is float:
        fr_gru_row_f32(row, gh, bias, hprev, hnext, cm, H, clip, store)
    else:
        fr_gru_row_f64(row, gh, bias, hprev, hnext, cm, H, clip, store)


cdef inline void lstm_grad_row(floating* row, const floating* tcr, const floating* cprev,
                               const floating* dm, floating* dc, Py_ssize_t H) noexcept nogil:
    """The gates [i, f, g, o] of one sequence in ``row`` -> the gradients of their
    pre-activations, in place; dc: dc_t in, dc_{t-1} out (no argument may overlap another)."""
    if floating is float:
        fr_lstm_grad_row_f32(row, tcr, cprev, dm, dc, H)
    else:
        fr_lstm_grad_row_f64(row, tcr, cprev, dm, dc, H)


cdef inline void gru_state(floating* hnext, const floating* z, const floating* n,
                           const floating* hprev, Py_ssize_t H) noexcept nogil:
    """hnext = (1 - z) * n + z * hprev (no argument may overlap another)."""
    if floating is float:
        fr_gru_state_f32(hnext, z, n, hprev, H)
    else:
        fr_gru_state_f64(hnext, z, n, hprev, H)


cdef inline void gru_grad_row(floating* row, const floating* hprev, const floating* dht,
                              floating* gh, floating* dh, Py_ssize_t H) noexcept nogil:
    """One sequence's store row [r, z, n, hn] -> [dr, dz, dn, dn*r] in place; gh (3H) =
    [dr, dz, dn*r], the gradient of W_hh h + b_hh, for this step's product; dh = dh_t * z
    (no argument may overlap another)."""
    if floating is float:
        fr_gru_grad_row_f32(row, hprev, dht, gh, dh, H)
    else:
        fr_gru_grad_row_f64(row, hprev, dht, gh, dh, H)


# ---------------------------------------------------------------------------------------
# Per-step products: fastrnn_mm.h (the weights packed once per call, unlike BLAS)
# ---------------------------------------------------------------------------------------
cdef extern from "fastrnn_mm.h" nogil:
    ctypedef struct fr_sparse_grad:
        int N
        const int* ptr
        const int* idx
        const void* val
        void* W
        Py_ssize_t ldw
        void* Wt
    Py_ssize_t fr_packed_size_f32(int K, int N)
    Py_ssize_t fr_packed_size_f64(int K, int N)
    Py_ssize_t fr_block_bytes
    Py_ssize_t FR_BLOCK_BYTES
    Py_ssize_t FR_BLOCK_MAX
    Py_ssize_t fr_set_block_bytes(Py_ssize_t nbytes)
    int fr_panel_width_f32()
    int fr_panel_width_f64()
    void fr_peak_f32(long rounds)
    int fr_peak_lanes()
    int FR_PEAK_SUMS
    void fr_pack_f32(int K, int N, const float* w, Py_ssize_t rs, Py_ssize_t cs, float* out)
    void fr_pack_f64(int K, int N, const double* w, Py_ssize_t rs, Py_ssize_t cs, double* out)
    void fr_mm_f32(int n, int K, int N, const float* A, Py_ssize_t lda, const float* Wp,
                   float* C, Py_ssize_t ldc, int accumulate)
    void fr_mm_f64(int n, int K, int N, const double* A, Py_ssize_t lda, const double* Wp,
                   double* C, Py_ssize_t ldc, int accumulate)
    void fr_mm_groups_f32(int groups, int n, int K, int N, const float* A, Py_ssize_t lda,
                          Py_ssize_t ga, const float* Wp, float* C, Py_ssize_t ldc,
                          Py_ssize_t gc, int accumulate)
    void fr_mm_groups_f64(int groups, int n, int K, int N, const double* A, Py_ssize_t lda,
                          Py_ssize_t ga, const double* Wp, double* C, Py_ssize_t ldc,
                          Py_ssize_t gc, int accumulate)
    void fr_dots_f32(int m, int K, float alpha, const float* A, Py_ssize_t lda, const float* x,
                     float beta, float* y)
    void fr_dots_f64(int m, int K, double alpha, const double* A, Py_ssize_t lda,
                     const double* x, double beta, double* y)
    void fr_dots_cols_f32(int m, int n, int K, float alpha, const float* A, Py_ssize_t lda,
                          const float* X, Py_ssize_t ldx, float beta, float* Y, Py_ssize_t ldy)
    void fr_dots_cols_f64(int m, int n, int K, double alpha, const double* A, Py_ssize_t lda,
                          const double* X, Py_ssize_t ldx, double beta, double* Y,
                          Py_ssize_t ldy)
    int fr_wgrad_f32(int n, int K, const int* rows, int N, const float* D, Py_ssize_t ldd,
                     const float* B, Py_ssize_t ldb, float* W, Py_ssize_t ldw)
    int fr_wgrad_f64(int n, int K, const int* rows, int N, const double* D, Py_ssize_t ldd,
                     const double* B, Py_ssize_t ldb, double* W, Py_ssize_t ldw)
    int fr_wgrad2_f32(int n, int K, const int* rows, const float* D, Py_ssize_t ldd,
                      int N1, const float* B1, Py_ssize_t ldb1, float* W1, Py_ssize_t ldw1,
                      int N2, const float* B2, Py_ssize_t ldb2, float* W2, Py_ssize_t ldw2,
                      float* db1, float* db2, const fr_sparse_grad* S)
    int fr_wgrad2_f64(int n, int K, const int* rows, const double* D, Py_ssize_t ldd,
                      int N1, const double* B1, Py_ssize_t ldb1, double* W1, Py_ssize_t ldw1,
                      int N2, const double* B2, Py_ssize_t ldb2, double* W2, Py_ssize_t ldw2,
                      double* db1, double* db2, const fr_sparse_grad* S)
    void fr_sparse_mm_f32(int n, const int* rows, Py_ssize_t r0, const int* ptr, const int* idx,
                          const float* val, int K, int N, const float* Wp, float* C,
                          Py_ssize_t ldc)
    void fr_sparse_mm_f64(int n, const int* rows, Py_ssize_t r0, const int* ptr, const int* idx,
                          const double* val, int K, int N, const double* Wp, double* C,
                          Py_ssize_t ldc)

cdef inline void rowmm(int n, int K, int N, const floating* A, int lda, const floating* Wp,
                       bint accumulate, floating* C, int ldc) noexcept nogil:
    """Row-major C (n x N) = A (n x K) @ W (K x N), plus C when ``accumulate``; ``Wp`` is W
    packed by fr_pack (see fastrnn_mm.h)."""
    cdef long t0 = fr_clock_start()
    if floating is float:
        fr_mm_f32(n, K, N, A, lda, Wp, C, ldc, accumulate)
    else:
        fr_mm_f64(n, K, N, A, lda, Wp, C, ldc, accumulate)
    fr_clock_stop(FR_CLK_PRODUCTS, t0, 1)


cdef inline void rowmm_groups(int groups, int n, int K, int N, const floating* A, int lda,
                              Py_ssize_t ga, const floating* Wp, bint accumulate, floating* C,
                              int ldc, Py_ssize_t gc) noexcept nogil:
    """:func:`rowmm` for ``groups`` blocks of n rows, block g's rows of A and C starting
    g*ga and g*gc elements after the first's, each chunk of W read once for all blocks (the
    bits of a call per block)."""
    cdef long t0 = fr_clock_start()
    if floating is float:
        fr_mm_groups_f32(groups, n, K, N, A, lda, ga, Wp, C, ldc, gc, accumulate)
    else:
        fr_mm_groups_f64(groups, n, K, N, A, lda, ga, Wp, C, ldc, gc, accumulate)
    fr_clock_stop(FR_CLK_PRODUCTS, t0, 1)


cdef inline int wgrad(int n, int K, const int* rows, int N, const floating* D, Py_ssize_t ldd,
                      const floating* B, Py_ssize_t ldb, floating* W,
                      Py_ssize_t ldw) noexcept nogil:
    """W (n x N, rows ldw apart) += D^T B over K rows: W[i, j] += sum_k D[k, i] B[k, j] (a weight
    gradient from the gate gradients D, K x n, and what entered the gates B, K x N; see
    fastrnn_mm.h's fr_wgrad); the rows 0 .. K-1, or ``rows[:K]`` (the rows whose D is not
    zero: of the sequences running at their step); 0, or -1 when its packed blocks could not
    be allocated."""
    cdef long t0 = fr_clock_start()
    cdef int rc
    if floating is float:
        rc = fr_wgrad_f32(n, K, rows, N, D, ldd, B, ldb, W, ldw)
    else:
        rc = fr_wgrad_f64(n, K, rows, N, D, ldd, B, ldb, W, ldw)
    fr_clock_stop(FR_CLK_PRODUCTS, t0, 1)
    return rc


cdef inline int wgrad2(int n, int K, const int* rows, const floating* D, Py_ssize_t ldd,
                       int N1, const floating* B1, Py_ssize_t ldb1, floating* W1, Py_ssize_t ldw1,
                       int N2, const floating* B2, Py_ssize_t ldb2, floating* W2, Py_ssize_t ldw2,
                       floating* db1, floating* db2,
                       const fr_sparse_grad* S=NULL) noexcept nogil:
    """W1 (n x N1) += D^T B1 and W2 (n x N2; N2 = 0: none) += D^T B2, as :func:`wgrad` does
    each, db1, db2 (n, or NULL) += the column sums of D (the bias gradients, each element
    summed in the order of the rows), and S.W += D^T A for a sparse A (S, or NULL: none; its
    values of the type of D): D read and packed once for all of them (fastrnn_mm.h's
    fr_wgrad2), over the rows 0 .. K-1 or ``rows[:K]`` as :func:`wgrad`; 0, or -1 when its
    blocks could not be allocated (nothing written)."""
    cdef long t0 = fr_clock_start()
    cdef int rc
    if floating is float:
        rc = fr_wgrad2_f32(n, K, rows, D, ldd, N1, B1, ldb1, W1, ldw1, N2, B2, ldb2, W2, ldw2,
                           db1, db2, S)
    else:
        rc = fr_wgrad2_f64(n, K, rows, D, ldd, N1, B1, ldb1, W1, ldw1, N2, B2, ldb2, W2, ldw2,
                           db1, db2, S)
    fr_clock_stop(FR_CLK_PRODUCTS, t0, 1)
    return rc


cdef inline void sparse_mm(int n, const int* rows, Py_ssize_t r0, const int* ptr, const int* idx,
                           const floating* val, int K, int N, const floating* Wp, floating* C,
                           Py_ssize_t ldc) noexcept nogil:
    """C (row r - r0, ldc apart) = row r of a sparse A (CSR: ptr, idx, val) @ W (K x N, packed
    by fr_pack), for the n rows r = rows[i], or r0 + i: the bits of :func:`rowmm` for finite W
    (fastrnn_mm.h's fr_sparse_mm)."""
    cdef long t0 = fr_clock_start()
    if floating is float:
        fr_sparse_mm_f32(n, rows, r0, ptr, idx, val, K, N, Wp, C, ldc)
    else:
        fr_sparse_mm_f64(n, rows, r0, ptr, idx, val, K, N, Wp, C, ldc)
    fr_clock_stop(FR_CLK_PRODUCTS, t0, 1)

