/* The element-wise passes of the training toolkit (fastrnn.train): the moments and update of
 * an Adam step, and the sum of squares of a gradient norm, each one pass over the arrays.
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

#include <stddef.h>

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

FR_DEFINE_ADAM(f32, float)
FR_DEFINE_ADAM(f64, double)
FR_DEFINE_SUMSQ(f32, float)
FR_DEFINE_SUMSQ(f64, double)

#endif
