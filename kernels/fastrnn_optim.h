/* The element-wise passes of the training toolkit (fastrnn.train): the moments and update of
 * an Adam step, and the sum of squares of a gradient norm, each one pass over the arrays; the
 * softmax cross-entropy's two passes around its exponentials (at the end).
 *
 * Their NumPy twins in fastrnn/train are the oracle.  NumPy's Adam makes about ten passes over
 * each parameter-sized array (a ufunc per operation, with temporaries): 0.4-0.9 ms per step of
 * the README's training loop, more than PyTorch's whole optimizer step.  Here every element
 * gets the same operations as in NumPy, in the same order, each rounded to the element type:
 * products are not contracted into fused multiply-adds (FR_NO_CONTRACT), and square roots and
 * quotients are IEEE's in both, so the update is bit-identical to NumPy's.  The sum of squares
 * accumulates in double in 8 partial sums (so that it vectorises): another order of additions
 * than NumPy's dot, equal to it within double rounding.
 */
#ifndef FASTRNN_OPTIM_H
#define FASTRNN_OPTIM_H

#include <math.h>
#include <stddef.h>
#include <string.h>

#if defined(__clang__)
#define FR_NO_CONTRACT
#define FR_NO_CONTRACT_BODY _Pragma("clang fp contract(off)")
#elif defined(__GNUC__)
#define FR_NO_CONTRACT __attribute__((optimize("fp-contract=off")))
#define FR_NO_CONTRACT_BODY
#else
#define FR_NO_CONTRACT
#define FR_NO_CONTRACT_BODY
#endif

/* IEEE square roots; setup.py compiles the kernels with -fno-math-errno, without which a sqrt
 * (which may set errno) does not vectorise */
#define FR_SQRT_f32 __builtin_sqrtf
#define FR_SQRT_f64 __builtin_sqrt

/* The moments and the parameter update of one Adam step over n elements, in place: p, m, v
 * (and vmax, with amsgrad) read and written, g read (already negated for maximize, with
 * Adam's weight decay added, and p already decayed for AdamW's: fastrnn.train.Adam does
 * those first).  Scalars as fastrnn.train.Adam computes them: a1 = 1 - beta1, b2 = beta2,
 * a2 = 1 - beta2, c2 = sqrt(1 - beta2**t), step = lr / (1 - beta1**t).  The NumPy twin:
 *     m += a1 * (g - m); v *= b2; v += a2 * g * g; vmax = maximum(vmax, v) (amsgrad, whose
 *     v is then vmax); p -= step * (m / (sqrt(v) / c2 + eps))                              */
#define FR_DEFINE_ADAM(SUF, T)                                                                 \
FR_NO_CONTRACT static void fr_adam_##SUF(ptrdiff_t n, T* restrict p, const T* restrict g,    \
                                         T* restrict m, T* restrict v, T* restrict vmax,     \
                                         int amsgrad, T a1, T b2, T a2, T c2, T step, T eps) \
{                                                                                            \
    FR_NO_CONTRACT_BODY                                                                      \
    for (ptrdiff_t i = 0; i < n; i++) {                                                      \
        T gi = g[i];                                                                         \
        T d = gi - m[i];                                                                     \
        d = a1 * d;                                                                          \
        T mi = m[i] + d;                                                                     \
        T vi = v[i] * b2;                                                                    \
        T s = a2 * gi;                                                                       \
        s = s * gi;                                                                          \
        vi = vi + s;                                                                         \
        m[i] = mi;                                                                           \
        v[i] = vi;                                                                           \
        if (amsgrad) {                                                                       \
            T x = vmax[i];                                                                   \
            vi = (x >= vi || x != x) ? x : vi;   /* np.maximum: a NaN wins */                \
            vmax[i] = vi;                                                                    \
        }                                                                                    \
        T den = FR_SQRT_##SUF(vi) / c2;                                                      \
        den = den + eps;                                                                     \
        T u = mi / den;                                                                      \
        u = step * u;                                                                        \
        p[i] = p[i] - u;                                                                     \
    }                                                                                        \
}

/* sum of squares of n values, in double */
#define FR_DEFINE_SUMSQ(SUF, T)                                                                \
static double fr_sumsq_##SUF(ptrdiff_t n, const T* restrict x)                               \
{                                                                                            \
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                                  \
    ptrdiff_t i = 0;                                                                         \
    for (; i + 8 <= n; i += 8)                                                               \
        for (int j = 0; j < 8; j++)                                                          \
            s[j] += (double)x[i + j] * (double)x[i + j];                                     \
    for (; i < n; i++)                                                                       \
        s[0] += (double)x[i] * (double)x[i];                                                 \
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));                \
}

/* Softmax cross-entropy (fastrnn.train.cross_entropy) over n rows of C classes (z, n x C,
 * contiguous), in two passes around the exponentials, which the caller takes in between
 * (NumPy's exp: vectorised, and as exact as NumPy's code of the same loss):
 * - fr_xent_shift: shift[r] = the maximum of row r, and e = z - shift[r].  NaNs are not
 *   looked for: a vector lane that meets one keeps it and skips what follows, so a row with a
 *   NaN gets some shift, and the NaN reaches the row's sum below, and so its loss and its
 *   whole gradient (rows of scale 0 still get zeros);
 * - fr_xent_grad, e = exp(z - shift) in place: s = the row's sum of e, nll[r] = log(s) +
 *   shift[r] - z[r, t[r]] (in double), and the gradient over e: e * (scale[r] / s), less
 *   scale[r] at t[r]; a row whose scale is 0 gets zeros.
 * Maxima and sums run in vectors of the build's width (GCC's vector types; a plain loop
 * elsewhere): written as scalar loops in lanes, GCC left them scalar, and the two passes
 * took 0.17 ms at the README loop's 2,048 rows by 96 classes, more than NumPy's exp.  In
 * NumPy the whole loss took ten passes over the logits and their temporaries: 0.23-0.31 ms
 * there, warm, 0.55-0.65 ms inside the loop. */
#if defined(__GNUC__) || defined(__clang__)
#define FR_XVECTORS 1
#if defined(__AVX512F__)
#define FR_XBYTES 64
#elif defined(__AVX__)
#define FR_XBYTES 32
#else
#define FR_XBYTES 16
#endif
#define FR_XTYPES(SUF, T, I)                                                                   \
typedef T fr_xv_##SUF __attribute__((vector_size(FR_XBYTES), aligned(sizeof(T))));           \
typedef I fr_xi_##SUF __attribute__((vector_size(FR_XBYTES), aligned(sizeof(T))));
#else
#define FR_XVECTORS 0
#define FR_XTYPES(SUF, T, I)
#endif

#define FR_DEFINE_XENT(SUF, T, I)                                                              \
FR_XTYPES(SUF, T, I)                                                                         \
/* the largest of C values (without NaNs; see fr_xent_shift for a row with some) */                                \
static T fr_row_max_##SUF(ptrdiff_t C, const T* restrict z)                                  \
{                                                                                            \
    T m = -INFINITY;                                                                         \
    ptrdiff_t j = 0;                                                                         \
    if (FR_XVECTORS && C >= FR_XBYTES / (ptrdiff_t)sizeof(T)) {                              \
        FR_ROW_MAX_VECTORS(SUF, T)                                                           \
    }                                                                                        \
    for (; j < C; j++)                                                                       \
        m = m < z[j] ? z[j] : m;                                                             \
    return m;                                                                                \
}                                                                                            \
                                                                                             \
/* the sum of C values (lanes of a vector, then those summed in order, then the rest) */      \
static T fr_row_sum_##SUF(ptrdiff_t C, const T* restrict e)                                  \
{                                                                                            \
    T s = 0;                                                                                 \
    ptrdiff_t j = 0;                                                                         \
    if (FR_XVECTORS && C >= FR_XBYTES / (ptrdiff_t)sizeof(T)) {                              \
        FR_ROW_SUM_VECTORS(SUF, T)                                                           \
    }                                                                                        \
    for (; j < C; j++)                                                                       \
        s += e[j];                                                                           \
    return s;                                                                                \
}                                                                                            \
                                                                                             \
static void fr_xent_shift_##SUF(ptrdiff_t n, ptrdiff_t C, const T* restrict z, T* restrict e, \
                                T* restrict shift)                                           \
{                                                                                            \
    for (ptrdiff_t r = 0; r < n; r++) {                                                      \
        const T* zr = z + r * C;                                                             \
        T* er = e + r * C;                                                                   \
        const T m = fr_row_max_##SUF(C, zr);                                                 \
        shift[r] = m;                                                                        \
        for (ptrdiff_t j = 0; j < C; j++) er[j] = zr[j] - m;                                 \
    }                                                                                        \
}                                                                                            \
                                                                                             \
static void fr_xent_grad_##SUF(ptrdiff_t n, ptrdiff_t C, const T* restrict z,                \
                               const ptrdiff_t* restrict t, const double* restrict scale,    \
                               const T* restrict shift, T* restrict e, double* restrict nll) \
{                                                                                            \
    for (ptrdiff_t r = 0; r < n; r++) {                                                      \
        T* er = e + r * C;                                                                   \
        const T s = fr_row_sum_##SUF(C, er);                                                 \
        T f;                                                                                 \
        nll[r] = ((double)shift[r] - (double)z[r * C + t[r]]) + log((double)s);              \
        if (scale[r] == 0) {                                                                 \
            memset(er, 0, (size_t)C * sizeof(T));                                            \
            continue;                                                                        \
        }                                                                                    \
        f = (T)(scale[r] / (double)s);                                                       \
        for (ptrdiff_t j = 0; j < C; j++) er[j] *= f;                                        \
        er[t[r]] -= (T)scale[r];                                                             \
    }                                                                                        \
}

#if FR_XVECTORS
/* a vector of maxima over the row (a lane keeps its value where the next is not larger: a
 * NaN, once in a lane, stays), then its lanes' maximum; j left at the first element not read */
#define FR_ROW_MAX_VECTORS(SUF, T)                                                             \
    const ptrdiff_t L = FR_XBYTES / (ptrdiff_t)sizeof(T);                                    \
    fr_xv_##SUF mx = *(const fr_xv_##SUF*)z;                                                 \
    for (j = L; j + L <= C; j += L) {                                                        \
        const fr_xv_##SUF v = *(const fr_xv_##SUF*)(z + j);                                  \
        const fr_xi_##SUF k = mx < v;                                                        \
        mx = (fr_xv_##SUF)(((fr_xi_##SUF)v & k) | ((fr_xi_##SUF)mx & ~k));                   \
    }                                                                                        \
    for (ptrdiff_t l = 0; l < L; l++)                                                        \
        m = m < mx[l] ? mx[l] : m;
#define FR_ROW_SUM_VECTORS(SUF, T)                                                             \
    const ptrdiff_t L = FR_XBYTES / (ptrdiff_t)sizeof(T);                                    \
    fr_xv_##SUF acc = *(const fr_xv_##SUF*)e;                                                \
    for (j = L; j + L <= C; j += L)                                                          \
        acc += *(const fr_xv_##SUF*)(e + j);                                                 \
    for (ptrdiff_t l = 0; l < L; l++)                                                        \
        s += acc[l];
#else
#define FR_ROW_MAX_VECTORS(SUF, T)
#define FR_ROW_SUM_VECTORS(SUF, T)
#endif

FR_DEFINE_ADAM(f32, float)
FR_DEFINE_ADAM(f64, double)
FR_DEFINE_SUMSQ(f32, float)
FR_DEFINE_SUMSQ(f64, double)
FR_DEFINE_XENT(f32, float, int)
FR_DEFINE_XENT(f64, double, long long)

#endif
