/* Small matrix products of the per-step recurrence: C[n x N] += A[n x K] @ W[K x N].
 *
 * Part of the Cython kernels (kernels/_kernels.pyx), compiled into each build of them (for
 * any CPU of the platform, and with AVX2 and FMA: see setup.py).  A recurrent layer multiplies a
 * few rows (one time step of a thread's slice of the batch) by the same weight matrix
 * at every step.  BLAS copies ("packs") the whole weight matrix at each such call,
 * which costs more than the product when the rows are few; this loop reads the weights
 * in place (the caller keeps a copy of them whose rows are padded, see ldw below).  All
 * matrices are row-major with leading dimensions (row strides) lda, ldw, ldc; an ldw of
 * a multiple of 2 KiB puts the 4 rows of W read together in the same cache sets, which
 * measured 20-40% slower.  The inner loop runs along a contiguous output row and updates 4 rows from 4
 * rows of W at a time (16 multiply-adds per 8 loads and 4 stores); restrict-qualified
 * pointers let the compiler vectorise it without run-time alias checks.  W is walked
 * in panels of at most FR_PANEL columns, and those in blocks of rows of FR_BLOCK_BYTES
 * that stay in the L2 cache while all rows of A go by (the numba backend's gemm.mm_rows
 * does the same).  Block boundaries are multiples of 4 rows of W.  Every output
 * element gets the same sequence of operations whichever block of 4 rows it falls in,
 * so results do not depend on how rows are split between calls or threads.
 */
#ifndef FASTRNN_MM_H
#define FASTRNN_MM_H

#include <stddef.h>

#if defined(_MSC_VER)
#define FR_RESTRICT __restrict
#else
#define FR_RESTRICT __restrict__
#endif

/* widest column panel of W (elements): the inner loop's length */
#define FR_PANEL 512
/* bytes of the block of W (rows of a panel) kept in the L2 cache while all rows go by */
#define FR_BLOCK_BYTES (256 * 1024)

#define FR_DEFINE_MM(SUF, T)                                                                  \
static void fr_rows4_##SUF(ptrdiff_t m, T* FR_RESTRICT c0, T* FR_RESTRICT c1,                 \
                           T* FR_RESTRICT c2, T* FR_RESTRICT c3, const T* FR_RESTRICT w0,     \
                           const T* FR_RESTRICT w1, const T* FR_RESTRICT w2,                  \
                           const T* FR_RESTRICT w3, const T* x)                               \
{                                                                                             \
    const T x00 = x[0], x01 = x[1], x02 = x[2], x03 = x[3];                                   \
    const T x10 = x[4], x11 = x[5], x12 = x[6], x13 = x[7];                                   \
    const T x20 = x[8], x21 = x[9], x22 = x[10], x23 = x[11];                                 \
    const T x30 = x[12], x31 = x[13], x32 = x[14], x33 = x[15];                               \
    ptrdiff_t j;                                                                              \
    for (j = 0; j < m; j++) {                                                                 \
        const T v0 = w0[j], v1 = w1[j], v2 = w2[j], v3 = w3[j];                               \
        c0[j] = c0[j] + x00 * v0 + x01 * v1 + x02 * v2 + x03 * v3;                            \
        c1[j] = c1[j] + x10 * v0 + x11 * v1 + x12 * v2 + x13 * v3;                            \
        c2[j] = c2[j] + x20 * v0 + x21 * v1 + x22 * v2 + x23 * v3;                            \
        c3[j] = c3[j] + x30 * v0 + x31 * v1 + x32 * v2 + x33 * v3;                            \
    }                                                                                         \
}                                                                                             \
                                                                                              \
static void fr_rows4k1_##SUF(ptrdiff_t m, T* FR_RESTRICT c0, T* FR_RESTRICT c1,               \
                             T* FR_RESTRICT c2, T* FR_RESTRICT c3, const T* FR_RESTRICT w0,   \
                             T x0, T x1, T x2, T x3)                                          \
{                                                                                             \
    ptrdiff_t j;                                                                              \
    for (j = 0; j < m; j++) {                                                                 \
        const T v0 = w0[j];                                                                   \
        c0[j] = c0[j] + x0 * v0;                                                              \
        c1[j] = c1[j] + x1 * v0;                                                              \
        c2[j] = c2[j] + x2 * v0;                                                              \
        c3[j] = c3[j] + x3 * v0;                                                              \
    }                                                                                         \
}                                                                                             \
                                                                                              \
static void fr_row1_##SUF(ptrdiff_t m, T* FR_RESTRICT c0, const T* FR_RESTRICT w0,            \
                          const T* FR_RESTRICT w1, const T* FR_RESTRICT w2,                   \
                          const T* FR_RESTRICT w3, T x0, T x1, T x2, T x3)                    \
{                                                                                             \
    ptrdiff_t j;                                                                              \
    for (j = 0; j < m; j++)                                                                   \
        c0[j] = c0[j] + x0 * w0[j] + x1 * w1[j] + x2 * w2[j] + x3 * w3[j];                    \
}                                                                                             \
                                                                                              \
static void fr_row1k1_##SUF(ptrdiff_t m, T* FR_RESTRICT c0, const T* FR_RESTRICT w0, T x0)    \
{                                                                                             \
    ptrdiff_t j;                                                                              \
    for (j = 0; j < m; j++)                                                                   \
        c0[j] = c0[j] + x0 * w0[j];                                                           \
}                                                                                             \
                                                                                              \
static void fr_mm_##SUF(int n, int K, int N, const T* A, ptrdiff_t lda, const T* W,           \
                        ptrdiff_t ldw, T* C, ptrdiff_t ldc)                                   \
{                                                                                             \
    ptrdiff_t panel = N < FR_PANEL ? N : FR_PANEL, kc, j0, m;                                 \
    int q, k, k0, k1, r;                                                                      \
    T x[16];                                                                                  \
    if (n <= 0 || K <= 0 || N <= 0) return;                                                   \
    kc = FR_BLOCK_BYTES / (panel * (ptrdiff_t)sizeof(T));                                     \
    kc -= kc % 4; if (kc < 4) kc = 4;                                                         \
    for (j0 = 0; j0 < N; j0 += panel) {                                                       \
      m = N - j0 < panel ? N - j0 : panel;                                                    \
      for (k0 = 0; k0 < K; k0 += kc) {                                                        \
        k1 = K - k0 < kc ? K : k0 + kc;                                                       \
        for (q = 0; q + 4 <= n; q += 4) {                                                     \
            const T* a0 = A + (ptrdiff_t)q * lda;                                             \
            T* c0 = C + (ptrdiff_t)q * ldc + j0;                                              \
            for (k = k0; k + 4 <= k1; k += 4) {                                               \
                const T* w = W + (ptrdiff_t)k * ldw + j0;                                     \
                for (r = 0; r < 4; r++) {                                                     \
                    x[4 * r] = a0[r * lda + k];                                               \
                    x[4 * r + 1] = a0[r * lda + k + 1];                                       \
                    x[4 * r + 2] = a0[r * lda + k + 2];                                       \
                    x[4 * r + 3] = a0[r * lda + k + 3];                                       \
                }                                                                             \
                fr_rows4_##SUF(m, c0, c0 + ldc, c0 + 2 * ldc, c0 + 3 * ldc,                   \
                               w, w + ldw, w + 2 * ldw, w + 3 * ldw, x);                      \
            }                                                                                 \
            for (; k < k1; k++)                                                               \
                fr_rows4k1_##SUF(m, c0, c0 + ldc, c0 + 2 * ldc, c0 + 3 * ldc,                 \
                                 W + (ptrdiff_t)k * ldw + j0, a0[k], a0[lda + k],             \
                                 a0[2 * lda + k], a0[3 * lda + k]);                           \
        }                                                                                     \
        for (; q < n; q++) {                                                                  \
            const T* a0 = A + (ptrdiff_t)q * lda;                                             \
            T* c0 = C + (ptrdiff_t)q * ldc + j0;                                              \
            for (k = k0; k + 4 <= k1; k += 4) {                                               \
                const T* w = W + (ptrdiff_t)k * ldw + j0;                                     \
                fr_row1_##SUF(m, c0, w, w + ldw, w + 2 * ldw, w + 3 * ldw,                    \
                              a0[k], a0[k + 1], a0[k + 2], a0[k + 3]);                        \
            }                                                                                 \
            for (; k < k1; k++)                                                               \
                fr_row1k1_##SUF(m, c0, W + (ptrdiff_t)k * ldw + j0, a0[k]);                   \
        }                                                                                     \
      }                                                                                       \
    }                                                                                         \
}

FR_DEFINE_MM(f32, float)
FR_DEFINE_MM(f64, double)

#endif /* FASTRNN_MM_H */
