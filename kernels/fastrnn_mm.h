/* The per-step products of the recurrence: C[n x N] += A[n x K] @ W[K x N], W packed once
 * (and, further down, the matrix-vector products of a step, the weight gradients, the
 * products of a sparse input, and the multiply-add peak that is their floor).
 *
 * Part of the Cython kernels (kernels/_kernels.pyx), compiled into each build of them: for any
 * CPU of the platform, with AVX2 and FMA, and with AVX-512 (see setup.py); the width of the
 * vectors below follows the build's instruction set.  A recurrent layer multiplies a few rows
 * (one time step of a thread's slice of the batch) by the same weight matrix at every step.
 * BLAS packs the whole weight matrix again at each such call, which costs as much as the
 * product when the rows are few; here the caller packs W once per call of a whole sequence
 * (fr_pack_*) and every step reads the packed copy.
 *
 * Layout of a packed W: panels of FR_NR(T) columns (two vectors), one after the other; panel
 * p holds W[k, p*NR + j] at [p*K*NR + k*NR + j], columns past N are zero.
 *
 * The micro-kernel (fr_tile_*) keeps a tile of C of R rows by NP panels in vector registers
 * for the whole K loop (as the kernels of BLIS and OpenBLAS do): per k it loads 2*NP vectors
 * of W and R values of A, and does 2*R*NP multiply-adds, so it is bound by multiply-adds, not
 * by loads and stores.  NP is chosen per R (FR_NP_R) so that the tile fills 12 of the 16
 * vector registers of AVX2 or 24 of the 32 of AVX-512; a tile of 1 row spans 6 panels, which
 * is how a batch of 1 still keeps 12 independent sums in flight (12 panels, 24 sums, read
 * 12 streams of W at once and measured 41 against 56 GFLOP/s at K = 128, N = 512).  With
 * AVX-512 the tiles go up to 12 rows of one panel (FR_MR): per k, 2 vectors of W for 24
 * multiply-adds instead of 4, so each tile reads half as much of W from the L2 cache, where a
 * large layer's weights (4 MB and more) pass on their way from L3 at every step.  One core,
 * the per-step products of a 50-step forward (x_t W_ih^T, then + h W_hh^T, fresh C rows each
 * step; Intel Xeon, AVX-512): 32 rows by K = 512 by N = 2048, 133 -> 147 GFLOP/s against tiles
 * of at most 6 rows; 64 rows 149 -> 168; 8 rows 74 -> 82; K = 256, N = 512: 176 -> 195.
 *
 * Every element of C gets the same operations in the same order, whichever tile it falls in:
 * C + A[r,0] W[0,j] + A[r,1] W[1,j] + ... (fused multiply-adds where the build has them), so
 * the results do not depend on how rows are split between calls or threads.  All matrices
 * are row-major with leading dimensions (row strides) lda and ldc.
 */
#ifndef FASTRNN_MM_H
#define FASTRNN_MM_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__)
#define FR_VBYTES 64
/* panels per tile of 1..6 rows: 2*R*NP accumulators, 24 of the 32 vector registers (12
 * for one row: see above) */
#define FR_NP_1 6
#define FR_NP_2 6
#define FR_NP_3 4
#define FR_NP_4 3
#define FR_NP_5 2
#define FR_NP_6 2
/* ... and of 7..12 rows: one panel (up to 24 accumulators) */
#define FR_NP_7 1
#define FR_NP_8 1
#define FR_NP_9 1
#define FR_NP_10 1
#define FR_NP_11 1
#define FR_NP_12 1
/* rows of the tallest tile */
#define FR_MR 12
#else
#if defined(__AVX__)
#define FR_VBYTES 32
#else
#define FR_VBYTES 16
#endif
/* panels per tile of 1..6 rows: 2*R*NP accumulators, 12 of the 16 vector registers */
#define FR_NP_1 6
#define FR_NP_2 3
#define FR_NP_3 2
#define FR_NP_4 1
#define FR_NP_5 1
#define FR_NP_6 1
/* rows of the tallest tile */
#define FR_MR 6
#endif
/* columns of a panel of a packed W: two vectors */
#define FR_NR(T) (2 * FR_VBYTES / (ptrdiff_t)sizeof(T))
/* bytes of the part of W (panels, or rows k0..k1 of one) that stays in the L2 cache while all
 * tiles of rows go by.  A product of many rows reads A's rows again for every chunk: its
 * chunks are of fr_block_bytes, half of a core's L2 cache (set at import), at least
 * FR_BLOCK_BYTES (chosen on Zen 3, 512 KB of L2, and used where the size is unknown) and at
 * most FR_BLOCK_MAX.  Intel Xeon (2 MB of L2), 2 threads of 1600 rows each, K = 2048 by
 * N = 512 (the dx of LSTM(512, 512)'s training at T = 50, B = 64): chunks of 256 KB 211
 * GFLOP/s a core, 512 KB 223, 1 MB 226-228, 2 MB 214; K = 512 by N = 2048 (an input's
 * product) 207 -> 225 with 1 MB.  A product of up to FR_FEW_ROWS rows (a step of a slice of
 * the batch, a few steps of one) by a W larger than fr_block_bytes (half of L2) reads little
 * of A and most of W from L3 at every step: its chunks are of FR_BLOCK_BYTES (or FR_NP_6 whole
 * panels, if larger), and where the L2 cache holds two such beside the rest (fr_block_bytes
 * at least twice that), the tiles over each chunk ask for the next one (fr_ahead), so that
 * the first tile over it does not wait for L3.  The same Xeon, 2 threads, each 32 rows of a
 * step by K = 512 by N = 2048 (W shared): 1 MB chunks 200 GFLOP/s a core, 256 KB 203, 256 KB
 * with the next asked for 210; 128 rows 215, 212, 218; 256 rows 216, 211, 212; the forward's
 * products of 48 steps (4 steps of the input at a time, then each step's h_{t-1}), 32 rows a
 * thread: 32.5 -> 30.5 ms.  A team member's 2 MB share of the same W_hh^T (64 rows, eval):
 * whole calls 0.97x the time.  Where W stays in L2 (LSTM(128, 256)'s 1 MB of W_hh^T), asking
 * for lines already there cost 5-9% (16 rows by K = 256 by N = 1024). */
#define FR_BLOCK_BYTES (256 * 1024)
#define FR_BLOCK_MAX (1024 * 1024)
#define FR_FEW_ROWS 128
static ptrdiff_t fr_block_bytes = FR_BLOCK_BYTES;
/* sets fr_block_bytes to `bytes` within [FR_BLOCK_BYTES, FR_BLOCK_MAX]; returns the old value */
static ptrdiff_t fr_set_block_bytes(ptrdiff_t bytes)
{
    const ptrdiff_t before = fr_block_bytes;
    fr_block_bytes = bytes < FR_BLOCK_BYTES ? FR_BLOCK_BYTES
                     : bytes > FR_BLOCK_MAX ? FR_BLOCK_MAX : bytes;
    return before;
}
/* rows of a panel ahead of the tile's k that it asks the cache for (2 KB of an AVX2 panel of
 * floats, 4 KB of an AVX-512 one): the first tile over a chunk of W reads it from L3 (the
 * weights of a large layer, 4 MB each, do not fit in L2), and without the prefetch it waited
 * for it (Zen 3, one thread, 32 rows by K = 512 by N = 2048 and K = 2048 by N = 512: 62 against
 * 72 GFLOP/s, medians of 15 rounds alternating in one process) */
#define FR_PREFETCH_K 32
/* rows of W in a block of the transposed pack (fr_pack_rows) */
#define FR_TB 16

#if defined(__GNUC__) || defined(__clang__)
#define FR_INLINE static inline __attribute__((always_inline, unused))
#define FR_UNROLL _Pragma("GCC unroll 32")
#define FR_NOINLINE __attribute__((noinline))
#define FR_VECTORS 1
#define FR_PREFETCH(p) __builtin_prefetch(p, 1, 3)
#define FR_PREFETCH_R(p) __builtin_prefetch(p, 0, 3)
#define FR_PREFETCH_L2(p) __builtin_prefetch(p, 0, 2)
#else
#define FR_INLINE static __forceinline
#define FR_UNROLL
#define FR_NOINLINE __declspec(noinline)
#define FR_VECTORS 0
#define FR_PREFETCH(p) ((void)(p))
#define FR_PREFETCH_R(p) ((void)(p))
#define FR_PREFETCH_L2(p) ((void)(p))
#endif

/* The part of a packed W, [next, end), that the tiles ask the L2 cache for while they go over
 * the chunk before it (see fr_block_bytes and fr_mm_groups): a tile of the _ahead kind asks for
 * a cache line at each of its k from `next` on and moves `next` past them; the tiles after
 * `next` reaches `end` are of the plain kind.  (One kind with the test for `end` inside its
 * loop took two more registers than the tile of 11 rows had, which then kept row pointers on
 * the stack: every product 2-3% slower, those that asked for nothing too.) */
typedef struct {
    const char* next;
    const char* end;
} fr_ahead;

/* the number of elements of a packed K x N matrix */
#define FR_PACKED_SIZE(T, K, N) ((ptrdiff_t)(K) * (((ptrdiff_t)(N) + FR_NR(T) - 1) / FR_NR(T)) * FR_NR(T))

#if FR_VECTORS
/* vectors of the build's width; the "u" types may be at any address of an element */
#define FR_VTYPES(SUF, T)                                                                    \
typedef T fr_v_##SUF __attribute__((vector_size(FR_VBYTES)));                                \
typedef T fr_vu_##SUF __attribute__((vector_size(FR_VBYTES), aligned(sizeof(T))));
#define FR_VL(T) (FR_VBYTES / (ptrdiff_t)sizeof(T))

/* C (R x NP*NR, row stride ldc) += A (R x [k0, k1), row stride lda) @ panels of Wp (each
 * pstride elements apart, row k of a panel at k*NR); with `zero`, = instead of += (C is not
 * read) */
#define FR_DEFINE_TILE(NAME, SUF, T, R, NP, LOOK)                                             \
FR_INLINE void NAME(ptrdiff_t k0, ptrdiff_t k1, const T* A,            \
                                          ptrdiff_t lda, const T* Wp, ptrdiff_t pstride,     \
                                          T* C, ptrdiff_t ldc, int zero, fr_ahead* ahead)    \
{                                                                                            \
    const ptrdiff_t VL = FR_VL(T), NR = FR_NR(T);                                            \
    const char* next = LOOK ? ahead->next : NULL;                                            \
    fr_v_##SUF acc[R][2 * (NP)];                                                             \
    ptrdiff_t k;                                                                             \
    int r, p;                                                                                \
    FR_UNROLL for (r = 0; r < R; r++)                                                        \
        FR_UNROLL for (p = 0; p < 2 * (NP); p++)                                             \
            acc[r][p] = zero ? (fr_v_##SUF){0} : *(const fr_vu_##SUF*)(C + r * ldc + p * VL); \
    for (k = k0; k < k1; k++) {                                                              \
        fr_v_##SUF w[2 * (NP)];                                                              \
        if (LOOK) {                                                                          \
            FR_PREFETCH_L2(next);                                                            \
            next += 64;                                                                      \
        }                                                                                    \
        FR_UNROLL for (p = 0; p < NP; p++) {                                                 \
            FR_PREFETCH_R(Wp + p * pstride + (k + FR_PREFETCH_K) * NR);                      \
            if (FR_VBYTES == 64)   /* a row of a panel is two cache lines */                 \
                FR_PREFETCH_R(Wp + p * pstride + (k + FR_PREFETCH_K) * NR + VL);             \
            w[2 * p] = *(const fr_vu_##SUF*)(Wp + p * pstride + k * NR);                     \
            w[2 * p + 1] = *(const fr_vu_##SUF*)(Wp + p * pstride + k * NR + VL);            \
        }                                                                                    \
        FR_UNROLL for (r = 0; r < R; r++) {                                                  \
            const T a = A[r * lda + k];                                                      \
            FR_UNROLL for (p = 0; p < 2 * (NP); p++)                                         \
                acc[r][p] += a * w[p];                                                       \
        }                                                                                    \
    }                                                                                        \
    if (LOOK)                                                                                \
        ahead->next = next;                                                                  \
    FR_UNROLL for (r = 0; r < R; r++)                                                        \
        FR_UNROLL for (p = 0; p < 2 * (NP); p++)                                             \
            *(fr_vu_##SUF*)(C + r * ldc + p * VL) = acc[r][p];                               \
}
#else
#define FR_VTYPES(SUF, T)
#define FR_DEFINE_TILE(NAME, SUF, T, R, NP, LOOK)                                             \
FR_INLINE void NAME(ptrdiff_t k0, ptrdiff_t k1, const T* A,            \
                                          ptrdiff_t lda, const T* Wp, ptrdiff_t pstride,     \
                                          T* C, ptrdiff_t ldc, int zero, fr_ahead* ahead)    \
{                                                                                            \
    const ptrdiff_t NR = FR_NR(T);                                                           \
    ptrdiff_t k, j;                                                                          \
    int r, p;                                                                                \
    (void)ahead;                                                                             \
    for (r = 0; r < R; r++)                                                                  \
        for (p = 0; p < NP; p++) {                                                           \
            if (zero)                                                                        \
                for (j = 0; j < NR; j++) C[r * ldc + p * NR + j] = 0;                        \
            for (k = k0; k < k1; k++) {                                                      \
                const T a = A[r * lda + k];                                                  \
                const T* w = Wp + p * pstride + k * NR;                                      \
                T* c = C + r * ldc + p * NR;                                                 \
                for (j = 0; j < NR; j++)                                                     \
                    c[j] += a * w[j];                                                        \
            }                                                                                \
        }                                                                                    \
}
#endif

/* the tiles of R rows: NP panels (as many as fill the registers, FR_NP_R) and fewer */
#define FR_TILE(SUF, T, R, NP) FR_DEFINE_TILE(fr_tile_##SUF##_##R##_##NP, SUF, T, R, NP, 0)    \
    FR_DEFINE_TILE(fr_tile_##SUF##_##R##_##NP##_ahead, SUF, T, R, NP, 1)
#define FR_TILES_1(SUF, T) FR_TILE(SUF, T, 1, 1) FR_TILE(SUF, T, 1, 2) FR_TILE(SUF, T, 1, 3)     \
    FR_TILE(SUF, T, 1, 4) FR_TILE(SUF, T, 1, 5) FR_TILE(SUF, T, 1, 6)
#define FR_TILES_2(SUF, T) FR_TILE(SUF, T, 2, 1) FR_TILE(SUF, T, 2, 2) FR_TILE(SUF, T, 2, 3)     \
    FR_TILE(SUF, T, 2, 4) FR_TILE(SUF, T, 2, 5) FR_TILE(SUF, T, 2, 6)
#define FR_TILES_3(SUF, T) FR_TILE(SUF, T, 3, 1) FR_TILE(SUF, T, 3, 2) FR_TILE(SUF, T, 3, 3)     \
    FR_TILE(SUF, T, 3, 4)
#define FR_TILES_4(SUF, T) FR_TILE(SUF, T, 4, 1) FR_TILE(SUF, T, 4, 2) FR_TILE(SUF, T, 4, 3)
#define FR_TILES_5(SUF, T) FR_TILE(SUF, T, 5, 1) FR_TILE(SUF, T, 5, 2)
#define FR_TILES_6(SUF, T) FR_TILE(SUF, T, 6, 1) FR_TILE(SUF, T, 6, 2)
#define FR_TILES_7(SUF, T) FR_TILE(SUF, T, 7, 1)
#define FR_TILES_8(SUF, T) FR_TILE(SUF, T, 8, 1)
#define FR_TILES_9(SUF, T) FR_TILE(SUF, T, 9, 1)
#define FR_TILES_10(SUF, T) FR_TILE(SUF, T, 10, 1)
#define FR_TILES_11(SUF, T) FR_TILE(SUF, T, 11, 1)
#define FR_TILES_12(SUF, T) FR_TILE(SUF, T, 12, 1)
/* a call of the tile of R rows and NP panels (NP a literal or a macro that expands to one) */
#define FR_CALL(SUF, R, NP) FR_CALL_(SUF, R, NP)
#define FR_CALL_(SUF, R, NP) (ahead != NULL && ahead->next < ahead->end                        \
    ? fr_tile_##SUF##_##R##_##NP##_ahead(k0, k1, A, lda, Wp + p * pstride, pstride,              \
                                         C + p * NR, ldc, zero, ahead)                           \
    : fr_tile_##SUF##_##R##_##NP(k0, k1, A, lda, Wp + p * pstride, pstride, C + p * NR, ldc,     \
                                 zero, NULL))

/* C (R rows) += (= with `zero`) A (R rows) @ Wp over columns [0, N) and rows [k0, k1) of W: tiles of FR_NP_R
 * panels, then one tile of the panels left, then the partial panel at the end if any */
#define FR_DEFINE_ROWS(SUF, T, R)                                                            \
FR_TILES_##R(SUF, T)                                                                         \
static void fr_rows_##SUF##_##R(ptrdiff_t k0, ptrdiff_t k1, ptrdiff_t K, ptrdiff_t N,        \
                                const T* A, ptrdiff_t lda, const T* Wp, T* C, ptrdiff_t ldc, \
                                int zero, fr_ahead* ahead)                                   \
{                                                                                            \
    const ptrdiff_t NR = FR_NR(T), pstride = K * NR, full = N / NR;                          \
    ptrdiff_t p = 0, j;                                                                      \
    int r;                                                                                   \
    for (; p + FR_NP_##R <= full; p += FR_NP_##R)                                            \
        FR_CALL(SUF, R, FR_NP_##R);                                                          \
    switch (full - p) {   /* fewer than FR_NP_R panels left */                               \
    case 0: break;                                                                           \
    case 1: FR_CALL(SUF, R, 1); break;                                                       \
    FR_REST_##R(SUF)                                                                         \
    }                                                                                        \
    if (full * NR < N) {                                                                     \
        /* the last panel is partial: its tile goes through a buffer of whole panels */     \
        T tile[R * FR_NR(T)];                                                                \
        const ptrdiff_t m = N - full * NR;                                                   \
        for (r = 0; r < R; r++) {                                                            \
            if (zero) memset(tile + r * NR, 0, m * sizeof(T));                               \
            else memcpy(tile + r * NR, C + r * ldc + full * NR, m * sizeof(T));              \
            for (j = m; j < NR; j++) tile[r * NR + j] = 0;                                   \
        }                                                                                    \
        fr_tile_##SUF##_##R##_1(k0, k1, A, lda, Wp + full * pstride, pstride, tile, NR, 0,   \
                                NULL);                                                       \
        for (r = 0; r < R; r++)                                                              \
            memcpy(C + r * ldc + full * NR, tile + r * NR, m * sizeof(T));                   \
    }                                                                                        \
}
/* the cases 2.. of the panels left after the tiles of FR_NP_R (a case above FR_NP_R - 1 is
 * never taken) */
#define FR_CASE(SUF, R, NP) case NP: FR_CALL(SUF, R, NP); break;
#define FR_REST_1(SUF) FR_CASE(SUF, 1, 2) FR_CASE(SUF, 1, 3) FR_CASE(SUF, 1, 4) FR_CASE(SUF, 1, 5)
#define FR_REST_2(SUF) FR_CASE(SUF, 2, 2) FR_CASE(SUF, 2, 3) FR_CASE(SUF, 2, 4) FR_CASE(SUF, 2, 5)
#define FR_REST_3(SUF) FR_CASE(SUF, 3, 2) FR_CASE(SUF, 3, 3)
#define FR_REST_4(SUF) FR_CASE(SUF, 4, 2)
#define FR_REST_5(SUF)
#define FR_REST_6(SUF)
#define FR_REST_7(SUF)
#define FR_REST_8(SUF)
#define FR_REST_9(SUF)
#define FR_REST_10(SUF)
#define FR_REST_11(SUF)
#define FR_REST_12(SUF)
/* the tiles taller than 6 rows (AVX-512: FR_MR 12), and the cases of fr_rows that call them */
#if FR_MR > 6
#define FR_DEFINE_TALL_ROWS(SUF, T) FR_DEFINE_ROWS(SUF, T, 7) FR_DEFINE_ROWS(SUF, T, 8)           \
    FR_DEFINE_ROWS(SUF, T, 9) FR_DEFINE_ROWS(SUF, T, 10) FR_DEFINE_ROWS(SUF, T, 11)            \
    FR_DEFINE_ROWS(SUF, T, 12)
#define FR_TALL_CASE(SUF, R)                                                                 \
    case R: fr_rows_##SUF##_##R(k0, k1, K, N, A, lda, Wp, C, ldc, zero, ahead); break;
#define FR_TALL_CASES(SUF) FR_TALL_CASE(SUF, 7) FR_TALL_CASE(SUF, 8) FR_TALL_CASE(SUF, 9)         \
    FR_TALL_CASE(SUF, 10) FR_TALL_CASE(SUF, 11) FR_TALL_CASE(SUF, 12)
#else
#define FR_DEFINE_TALL_ROWS(SUF, T)
#define FR_TALL_CASES(SUF)
#endif

#define FR_DEFINE_MM(SUF, T)                                                                 \
FR_VTYPES(SUF, T)                                                                            \
FR_DEFINE_ROWS(SUF, T, 1)                                                                  \
FR_DEFINE_ROWS(SUF, T, 2)                                                                  \
FR_DEFINE_ROWS(SUF, T, 3)                                                                  \
FR_DEFINE_ROWS(SUF, T, 4)                                                                  \
FR_DEFINE_ROWS(SUF, T, 5)                                                                  \
FR_DEFINE_ROWS(SUF, T, 6)                                                                  \
FR_DEFINE_TALL_ROWS(SUF, T)                                                                  \
                                                                                             \
/* the number of elements of a K x N matrix packed */                                       \
static ptrdiff_t fr_packed_size_##SUF(int K, int N) { return FR_PACKED_SIZE(T, K, N); }      \
/* the columns of a panel (FR_NR) */                                                         \
static int fr_panel_width_##SUF(void) { return (int)FR_NR(T); }                              \
                                                                                             \
/* out (FR_PACKED_SIZE) = W packed, where W[k, j] = w[k*rs + j*cs] (K x N).  When W is the   \
 * transpose of a row-major matrix (rs == 1), a panel goes in blocks of FR_TB rows of W:     \
 * FR_TB elements of each of its NR columns (a contiguous run of w each) into a block in     \
 * the L1 cache, then out row by row.  Before, each column of a panel was written in one     \
 * sweep down the panel, which with AVX-512 (a panel of K = 512 rows is 64 KB) left the L1   \
 * cache at every column: Intel Xeon, one core, w 2048 x 512 floats (W_hh^T of              \
 * LSTM(512, 512), packed by every training forward), 1.34 -> 0.35 ms (AVX2 build 0.67 ->   \
 * 0.55, baseline 0.42 -> 0.30).  (Every element is copied as it is: the layout is the same  \
 * either way.)  With `rows` (or NULL), row k of W is row rows[k] of w. */                   \
static void fr_pack_rows_##SUF(int K, int N, const T* w, ptrdiff_t rs, ptrdiff_t cs,        \
                               const int* rows, T* out)                                      \
{                                                                                            \
    const ptrdiff_t NR = FR_NR(T);                                                           \
    ptrdiff_t p, k, j, n, k0, kn;                                                            \
    if (rs == 1 && cs != 1 && rows == NULL) {                                                \
        T blk[FR_NR(T)][FR_TB];                                                              \
        for (p = 0; p * NR < N; p++) {                                                       \
            T* o = out + p * K * NR;                                                         \
            n = N - p * NR < NR ? N - p * NR : NR;                                           \
            for (k0 = 0; k0 < K; k0 += FR_TB) {                                              \
                kn = K - k0 < FR_TB ? K - k0 : FR_TB;                                        \
                if (n == NR && kn == FR_TB)                                                  \
                    for (j = 0; j < NR; j++)                                                 \
                        for (k = 0; k < FR_TB; k++) blk[j][k] = w[(p * NR + j) * cs + k0 + k]; \
                else   /* the last rows, or the last panel's columns past N: zeros */       \
                    for (j = 0; j < NR; j++)                                                 \
                        for (k = 0; k < FR_TB; k++)                                          \
                            blk[j][k] = j < n && k < kn ? w[(p * NR + j) * cs + k0 + k] : 0; \
                for (k = 0; k < kn; k++)                                                     \
                    for (j = 0; j < NR; j++) o[(k0 + k) * NR + j] = blk[j][k];               \
            }                                                                                \
        }                                                                                    \
        return;                                                                              \
    }                                                                                        \
    for (k = 0; k < K; k++) {                                                                \
        const T* src = w + (rows != NULL ? (ptrdiff_t)rows[k] : k) * rs;                     \
        for (p = 0; (p + 1) * NR <= N; p++) {                                                \
            T* o = out + (p * K + k) * NR;                                                   \
            if (cs == 1) memcpy(o, src + p * NR, NR * sizeof(T));                            \
            else for (j = 0; j < NR; j++) o[j] = src[(p * NR + j) * cs];                     \
        }                                                                                    \
        if (p * NR < N) {                                                                    \
            T* o = out + (p * K + k) * NR;                                                   \
            for (j = 0; j < NR; j++) o[j] = p * NR + j < N ? src[(p * NR + j) * cs] : 0;     \
        }                                                                                    \
    }                                                                                        \
}                                                                                            \
                                                                                             \
static void fr_pack_##SUF(int K, int N, const T* w, ptrdiff_t rs, ptrdiff_t cs, T* out)      \
{                                                                                            \
    fr_pack_rows_##SUF(K, N, w, rs, cs, NULL, out);                                          \
}                                                                                            \
                                                                                             \
/* R (1..FR_MR) rows of C += the same rows of A @ Wp (columns [0, N) of the panels at Wp) */\
static void fr_rows_##SUF(int R, ptrdiff_t k0, ptrdiff_t k1, ptrdiff_t K, ptrdiff_t N,       \
                          const T* A, ptrdiff_t lda, const T* Wp, T* C, ptrdiff_t ldc,       \
                          int zero, fr_ahead* ahead)                                         \
{                                                                                            \
    switch (R) {                                                                             \
    case 1: fr_rows_##SUF##_1(k0, k1, K, N, A, lda, Wp, C, ldc, zero, ahead); break;         \
    case 2: fr_rows_##SUF##_2(k0, k1, K, N, A, lda, Wp, C, ldc, zero, ahead); break;         \
    case 3: fr_rows_##SUF##_3(k0, k1, K, N, A, lda, Wp, C, ldc, zero, ahead); break;         \
    case 4: fr_rows_##SUF##_4(k0, k1, K, N, A, lda, Wp, C, ldc, zero, ahead); break;         \
    case 5: fr_rows_##SUF##_5(k0, k1, K, N, A, lda, Wp, C, ldc, zero, ahead); break;         \
    case 6: fr_rows_##SUF##_6(k0, k1, K, N, A, lda, Wp, C, ldc, zero, ahead); break;         \
    FR_TALL_CASES(SUF)                                                                       \
    default: break;                                                                          \
    }                                                                                        \
}                                                                                            \
                                                                                             \
/* C (n x N) = A (n x K) @ W (K x N), plus C when `accumulate`; Wp = W packed by fr_pack.    \
 * (Without `accumulate` the tiles start from zero: C is neither read nor cleared first.)   \
 * The rows go in tiles of                                                                   \
 * equal height (32 rows: 6, 6, 5, 5, 5, 5; with AVX-512 11, 11, 10), so no tile is left   \
 * with one or two rows, and the panels in chunks of about fr_block_bytes (a few rows by a   \
 * large W: FR_BLOCK_BYTES, the next chunk asked for; see there), each read from memory      \
 * once and from the L2 cache by every tile; a chunk has at least FR_NP_6 panels, the        \
 * width of a tile of 6 rows (panels taller than that go in blocks of rows of W).  With      \
 * AVX-512 a chunk of one panel                                                              \
 * (K from 1025 to 2048: the backward's dh at H = 512, K = 3H or 4H) made tiles of one panel \
 * instead of two, 12 sums in registers instead of 24, and the GRU's and the LSTM's training \
 * at the benchmark's large shape spent most of their time in them.                         \
 *                                                                                           \
 * fr_mm_groups: the same for `groups` blocks of n rows each, block g's rows of A and C      \
 * starting ga and gc elements after block g-1's (a slice's rows of several time steps),     \
 * each chunk of W going over the tiles of every block: read from memory once for all.       \
 *                                                                                           \
 * More rows than fill half of L2 (mc, from fr_block_bytes) by a W of more than two chunks   \
 * go in blocks of mc rows (of whole groups, where a group has fewer), each a product of its \
 * own: the block's rows stay in L2 while W's chunks go by, and W comes from L3 once a       \
 * block.  Without, every chunk of W read all the rows from memory again: the backward's dx  \
 * of LSTM(512, 512) at T = 50, B = 64 (dA W_ih, 1600 rows by K = 2048 a thread, 13 MB each) \
 * read dA 16 times, where the threads share W_ih's 4 MB.  AMD Zen 5, AVX2 build, 2 threads, \
 * A/B alternating in one process (15 rounds): dx 37.1 -> 33.9 ms (181 -> 198 GFLOP/s), the  \
 * whole training call 0.987-0.995x the time, GRU(512, 512) 0.97-0.98x; RNN(512, 512)'s      \
 * 1 MB, two chunks (0.98-1.02x), and the benchmark's medium LSTM and GRU with chunks of     \
 * 256 KB (as on Zen 3: 512 KB of W, 1.01-1.02x) gained nothing and are left as they were.   \
 * The products alone, on both threads (C, medians of 15 rounds, chunks of 256 KB and        \
 * 512 KB): K = 2048 by N = 512 165-185 -> 193-202 GFLOP/s, K = 1536 by 512                  \
 * 173-194 -> 188-207, K = 512 by 2048 177-195 -> 185-205; the AVX-512 build                 \
 * 278-293 -> 296-328 at K = 2048. */                                                        \
static void fr_mm_groups_##SUF(int groups, int n, int K, int N, const T* A, ptrdiff_t lda,   \
                               ptrdiff_t ga, const T* Wp, T* C, ptrdiff_t ldc, ptrdiff_t gc, \
                               int accumulate)                                               \
{                                                                                            \
    const ptrdiff_t NR = FR_NR(T), row_bytes = FR_NR(T) * (ptrdiff_t)sizeof(T);              \
    const ptrdiff_t panels = (N + NR - 1) / NR, pstride = (ptrdiff_t)K * NR;                 \
    const int tiles = (n + FR_MR - 1) / FR_MR;                                               \
    /* a few rows by a W that does not fit in L2: chunks of FR_BLOCK_BYTES, or of FR_NP_6     \
     * whole panels, each tile asking for the next chunk (see fr_ahead) */                   \
    const ptrdiff_t small = (ptrdiff_t)K * row_bytes * FR_NP_6 > FR_BLOCK_BYTES              \
                            ? (ptrdiff_t)K * row_bytes * FR_NP_6 : FR_BLOCK_BYTES;           \
    const ptrdiff_t wbytes = panels * pstride * (ptrdiff_t)sizeof(T);   /* packed W */       \
    const int look = (ptrdiff_t)n * groups <= FR_FEW_ROWS && 2 * small <= fr_block_bytes     \
                     && wbytes > fr_block_bytes;                                             \
    const ptrdiff_t block = look ? small : fr_block_bytes;                                   \
    /* the rows of A that fill half of L2 (fr_block_bytes), at least a tile */              \
    const ptrdiff_t arow = (ptrdiff_t)(K > 0 ? K : 1) * (ptrdiff_t)sizeof(T);                \
    const ptrdiff_t mc = fr_block_bytes / arow > FR_MR ? fr_block_bytes / arow : FR_MR;      \
    fr_ahead ahead = {NULL, NULL};                                                           \
    ptrdiff_t kc, chunk, p0, k0, k1, width, next;                                            \
    int t, q, R, g;                                                                          \
    if (n <= 0 || N <= 0 || groups <= 0) return;                                             \
    if (K <= 0) {                                                                            \
        if (!accumulate)                                                                     \
            for (g = 0; g < groups; g++)                                                     \
                for (q = 0; q < n; q++)                                                      \
                    memset(C + g * gc + (ptrdiff_t)q * ldc, 0, N * sizeof(T));               \
        return;                                                                              \
    }                                                                                        \
    if (wbytes > 2 * fr_block_bytes && (ptrdiff_t)n * groups > mc) {                         \
        /* many rows by a W of more than two chunks: blocks of mc rows (of whole groups      \
         * where a group is shorter), each a product of its own */                           \
        const int per = n <= mc ? (int)(mc / n) : 0;   /* whole groups in a block */         \
        if (per > 0)                                                                         \
            for (g = 0; g < groups; g += per)                                                \
                fr_mm_groups_##SUF(groups - g < per ? groups - g : per, n, K, N, A + g * ga, \
                                   lda, ga, Wp, C + g * gc, ldc, gc, accumulate);            \
        else                                                                                 \
            for (g = 0; g < groups; g++)                                                     \
                for (q = 0; q < n; q += (int)mc)                                             \
                    fr_mm_groups_##SUF(1, n - q < mc ? n - q : (int)mc, K, N,                \
                                       A + g * ga + (ptrdiff_t)q * lda, lda, 0, Wp,          \
                                       C + g * gc + (ptrdiff_t)q * ldc, ldc, 0, accumulate); \
        return;                                                                              \
    }                                                                                        \
    if ((ptrdiff_t)K * row_bytes * FR_NP_6 <= block) {                                       \
        kc = K;                                                                              \
        chunk = tiles * groups > 1 ? block / ((ptrdiff_t)K * row_bytes) : panels;            \
    } else {                                                                                 \
        kc = block / (row_bytes * FR_NP_6);                                                  \
        chunk = tiles * groups > 1 ? FR_NP_6 : panels;                                       \
    }                                                                                        \
    for (p0 = 0; p0 < panels; p0 += chunk) {                                                 \
        width = N - p0 * NR < chunk * NR ? N - p0 * NR : chunk * NR;                         \
        if (look && chunk < panels) {   /* the next chunk, or after the last the first */   \
            next = p0 + chunk < panels ? p0 + chunk : 0;                                     \
            ahead.next = (const char*)(Wp + next * pstride);                                 \
            ahead.end = (const char*)(Wp + (panels - next < chunk ? panels : next + chunk)   \
                                           * pstride);                                       \
        }                                                                                    \
        for (k0 = 0; k0 < K; k0 += kc) {                                                     \
            k1 = K - k0 < kc ? K : k0 + kc;                                                  \
            for (g = 0; g < groups; g++)                                                     \
                for (t = 0, q = 0; t < tiles; t++, q += R) {                                 \
                    R = n / tiles + (t < n % tiles);                                         \
                    fr_rows_##SUF(R, k0, k1, K, width, A + g * ga + (ptrdiff_t)q * lda, lda, \
                                  Wp + p0 * pstride,                                         \
                                  C + g * gc + (ptrdiff_t)q * ldc + p0 * NR, ldc,            \
                                  !accumulate && k0 == 0, look ? &ahead : NULL);             \
                }                                                                            \
        }                                                                                    \
    }                                                                                        \
}                                                                                            \
                                                                                             \
static void fr_mm_##SUF(int n, int K, int N, const T* A, ptrdiff_t lda, const T* Wp,         \
                        T* C, ptrdiff_t ldc, int accumulate)                                 \
{                                                                                            \
    fr_mm_groups_##SUF(1, n, K, N, A, lda, 0, Wp, C, ldc, 0, accumulate);                    \
}

/* The products of a step (a batch of up to 64 sequences; see gemm in _common.pxd), as dot
 * products: y[j] = alpha * (A[j, :] . x) + beta * y[j] for the m rows of A (each K long, lda
 * apart, as stored: nothing packed, since a step reads each weight once) and each sequence's
 * x (fr_dots for one, fr_dots_cols for a batch: 4 rows of A by 3 sequences at a time, each
 * row read once for the 3; at LSTMCell(128, 128) and B = 8, 4.0x as fast as BLAS's GEMM,
 * which packed the 512 KB of weights at every call, 2.4x at B = 16, 1.8x at B = 32, 1.6x
 * at B = 64, with the team of two that a batch of up to 64 now gets; on one thread 3.7x at
 * B = 5, 1.3x at B = 32, 1.0x at B = 64).  Alone in a
 * loop on one core, BLAS's own (OpenBLAS 0.3, sgemv_t) read LSTMCell(128, 128)'s 512 KB of
 * weights from the L2 cache at 72 GB/s, this at 114 GB/s (Zen 4; 4 rows at a time, one
 * vector of sums each, as fast as 8 rows); inside a cell called from Python the two were
 * within the noise on one thread and this 1.02-1.05x as fast on a team of two.  Where the
 * compiler has vector shuffles, VL rows go at a time (8 floats with AVX2, 16 with AVX-512)
 * and their sums leave the registers as one vector (FR_TREE): taking each row's sum out of
 * its vector on its own (fr_hsum) was a quarter of the time at K = 128, and one accumulator
 * each for 4 rows left the multiply-adds waiting for each other.  Zen 3, one thread, A/B
 * alternating in one process, 41 rounds: a team member's share of LSTMCell(128, 128)
 * (8 blocks of 64 rows by K = 128) 1.20x as fast, 64 rows by K = 64 1.31x, 512 by 128
 * 1.16x; the cell's eval step 1.09x (B = 1, H = 64 to 256).
 *
 * Each row's sum has the same operations in the same order whichever rows go with it: lanes
 * l of its vector sum A[j, k] x[k] over k = l, l + VL, ... (k < K - K % VL), the lanes are
 * added as a halving tree (lane i + VL/2 into lane i, then i + VL/4, ...), and the last
 * K % VL products one by one after; so results do not depend on how rows are split between
 * threads. */
/* y = alpha * s + beta * y (beta 0: y is not read), one way in every function: with FMA, the
 * product alpha * s fused with the addition (the compiler may contract a * b + c * d either
 * way, and did differently in two loops of the same expression) */
#if defined(__FMA__) || defined(__AVX512F__)
#define FR_AXPBY_f32(alpha, s, beta, y) __builtin_fmaf(alpha, s, (beta) * (y))
#define FR_AXPBY_f64(alpha, s, beta, y) __builtin_fma(alpha, s, (beta) * (y))
#else
#define FR_AXPBY_f32(alpha, s, beta, y) ((alpha) * (s) + (beta) * (y))
#define FR_AXPBY_f64(alpha, s, beta, y) ((alpha) * (s) + (beta) * (y))
#endif
#define FR_AXPBY(SUF, alpha, s, beta, y) ((beta) == 0 ? (alpha) * (s) : FR_AXPBY_##SUF(alpha, s, beta, y))

#if FR_VECTORS && (defined(__clang__) || __GNUC__ >= 12)
/* the halving tree with shuffles, for the lanes of a vector of each type (FR_LANES_SUF) */
#if FR_VBYTES == 64
#define FR_LANES_f32 16
#define FR_LANES_f64 8
#elif FR_VBYTES == 32
#define FR_LANES_f32 8
#define FR_LANES_f64 4
#else
#define FR_LANES_f32 4
#define FR_LANES_f64 2
#endif
#define FR_HALF(v, n) (__builtin_shufflevector(v, v, FR_LO_##n) + __builtin_shufflevector(v, v, FR_HI_##n))
#define FR_LO_16 0, 1, 2, 3, 4, 5, 6, 7
#define FR_HI_16 8, 9, 10, 11, 12, 13, 14, 15
#define FR_LO_8 0, 1, 2, 3
#define FR_HI_8 4, 5, 6, 7
#define FR_HSUM_16(v) FR_HSUM_8(FR_HALF(v, 16))
#define FR_HSUM_8(v) FR_HSUM_4(FR_HALF(v, 8))
#define FR_HSUM_4(v) ({ __typeof__(v) b_ = (v); (b_[0] + b_[2]) + (b_[1] + b_[3]); })
#define FR_HSUM_2(v) ({ __typeof__(v) b_ = (v); b_[0] + b_[1]; })
#define FR_HSUM(n, v) FR_HSUM_(n, v)
#define FR_HSUM_(n, v) FR_HSUM_##n(v)
#define FR_DEFINE_HSUM(SUF, T)                                                               \
FR_INLINE T fr_hsum_##SUF(fr_v_##SUF v) { return FR_HSUM(FR_LANES_##SUF, v); }
/* The same halving tree for the sums of VL rows at once, each row's vector of sums one of
 * acc[0..VL) (VL = n lanes), without taking a lane out of a vector: a step of half-width w
 * adds, for a pair of vectors a and b, in every block of 2w lanes, the upper w lanes to the
 * lower w, of a into the block's lower half and of b into its upper half (FR_TLO/FR_THI pick
 * the two addends); log2(n) such steps leave one vector whose lane l holds the sum of the row
 * whose index is l with its bits reversed (FR_REV puts them back in order).  Every sum is the
 * one FR_HSUM makes, addend for addend (a + b for b + a: the same bits). */
#define FR_TSTEP(n, w, a, b) (__builtin_shufflevector(a, b, FR_TLO_##n##_##w)                   \
                              + __builtin_shufflevector(a, b, FR_THI_##n##_##w))
#define FR_TREE_2(acc) acc[0] = FR_TSTEP(2, 1, acc[0], acc[1]);
#define FR_TREE_4(acc) FR_TPASS(4, 2, 2, acc) FR_TPASS(4, 1, 1, acc)
#define FR_TREE_8(acc) FR_TPASS(8, 4, 4, acc) FR_TPASS(8, 2, 2, acc) FR_TPASS(8, 1, 1, acc)
#define FR_TREE_16(acc) FR_TPASS(16, 8, 8, acc) FR_TPASS(16, 4, 4, acc) FR_TPASS(16, 2, 2, acc) \
    FR_TPASS(16, 1, 1, acc)
/* one step over the first 2*cnt vectors: acc[i] = the step of acc[2i] and acc[2i + 1] */
#define FR_TPASS(n, w, cnt, acc) { int i_; FR_UNROLL for (i_ = 0; i_ < (cnt); i_++)               \
    acc[i_] = FR_TSTEP(n, w, acc[2 * i_], acc[2 * i_ + 1]); }
#define FR_TREE(n, acc) FR_TREE_(n, acc)
#define FR_TREE_(n, acc) FR_TREE_##n(acc)
#define FR_TORDER(n, v) FR_TORDER_(n, v)
#define FR_TORDER_(n, v) __builtin_shufflevector(v, v, FR_REV_##n)
#define FR_TLO_16_8 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define FR_THI_16_8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#define FR_TLO_16_4 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27
#define FR_THI_16_4 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31
#define FR_TLO_16_2 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29
#define FR_THI_16_2 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31
#define FR_TLO_16_1 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30
#define FR_THI_16_1 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31
#define FR_TLO_8_4 0, 1, 2, 3, 8, 9, 10, 11
#define FR_THI_8_4 4, 5, 6, 7, 12, 13, 14, 15
#define FR_TLO_8_2 0, 1, 8, 9, 4, 5, 12, 13
#define FR_THI_8_2 2, 3, 10, 11, 6, 7, 14, 15
#define FR_TLO_8_1 0, 8, 2, 10, 4, 12, 6, 14
#define FR_THI_8_1 1, 9, 3, 11, 5, 13, 7, 15
#define FR_TLO_4_2 0, 1, 4, 5
#define FR_THI_4_2 2, 3, 6, 7
#define FR_TLO_4_1 0, 4, 2, 6
#define FR_THI_4_1 1, 5, 3, 7
#define FR_TLO_2_1 0, 2
#define FR_THI_2_1 1, 3
#define FR_REV_16 0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15
#define FR_REV_8 0, 4, 2, 6, 1, 5, 3, 7
#define FR_REV_4 0, 2, 1, 3
#define FR_REV_2 0, 1
#define FR_DOT_LANES 1
/* sums of VL rows (as above) into s[0..VL) */
#define FR_DEFINE_DOT_LANES(SUF, T) FR_DEFINE_DOT_BLOCK(SUF, T, lanes, FR_LANES_##SUF, 1)
#define FR_DOT_LANES_CALL(SUF, K, A, lda, x, s) fr_dot_block_##SUF##_lanes(K, A, lda, x, 0, s)
#define FR_DOT_GROUP(SUF, C, ...) fr_dot_group_##SUF##_##C(__VA_ARGS__)
/* sums of R rows of A with each of C vectors x (C rows of X, ldx apart) into s[c * R + r],
 * each one's lanes and tree as above (the bits of fr_dot_rows), every row of A read once for
 * all C vectors: fr_dot_block_SUF_lanes (R = VL, C = 1) for one vector, _2 and _3 (R =
 * FR_DBR) for fr_dots_cols */
#define FR_DBR 4
#define FR_DEFINE_DOT_BLOCK(SUF, T, TAG, R, C)                                               \
FR_INLINE void fr_dot_block_##SUF##_##TAG(ptrdiff_t K, const T* A, ptrdiff_t lda,            \
                                          const T* X, ptrdiff_t ldx, T* s)                   \
{                                                                                            \
    const ptrdiff_t VL = FR_VL(T), Kv = K - K % FR_VL(T);                                    \
    enum { NA = (R) * (C),                                                                   \
           NT = (NA + FR_LANES_##SUF - 1) / FR_LANES_##SUF * FR_LANES_##SUF };               \
    fr_v_##SUF acc[NT];                                                                      \
    T out[NT];                                                                               \
    ptrdiff_t k;                                                                             \
    int r, c, g;                                                                             \
    FR_UNROLL for (r = 0; r < NT; r++) acc[r] = (fr_v_##SUF){0};                             \
    for (k = 0; k < Kv; k += VL) {                                                           \
        fr_v_##SUF xv[C];                                                                    \
        FR_UNROLL for (c = 0; c < (C); c++) xv[c] = *(const fr_vu_##SUF*)(X + c * ldx + k);  \
        FR_UNROLL for (r = 0; r < (R); r++) {                                                \
            const fr_v_##SUF av = *(const fr_vu_##SUF*)(A + r * lda + k);                    \
            FR_UNROLL for (c = 0; c < (C); c++) acc[c * (R) + r] += av * xv[c];              \
        }                                                                                    \
    }                                                                                        \
    /* the trees of FR_LANES vectors at a time (the last group padded with zero vectors,     \
     * whose sums nobody reads: a tree adds lanes of one vector only) */                     \
    FR_UNROLL for (g = 0; g < NT; g += FR_LANES_##SUF) {                                     \
        fr_v_##SUF t[FR_LANES_##SUF];                                                        \
        FR_UNROLL for (r = 0; r < FR_LANES_##SUF; r++) t[r] = acc[g + r];                    \
        FR_TREE(FR_LANES_##SUF, t)                                                           \
        *(fr_vu_##SUF*)(out + g) = FR_TORDER(FR_LANES_##SUF, t[0]);                          \
    }                                                                                        \
    FR_UNROLL for (r = 0; r < NA; r++) s[r] = out[r];                                        \
    if (Kv < K)                                                                              \
        for (c = 0; c < (C); c++)                                                            \
            for (r = 0; r < (R); r++)                                                        \
                for (k = Kv; k < K; k++) s[c * (R) + r] += A[r * lda + k] * X[c * ldx + k];  \
}
/* Y[c, :] (c < C) = alpha * A (m x K) @ X[c, :] + beta * Y[c, :]: blocks of FR_DBR rows,
 * then the rows left over by fr_dots for each c */
#define FR_DEFINE_DOT_GROUP(SUF, T, C)                                                       \
FR_DEFINE_DOT_BLOCK(SUF, T, C, FR_DBR, C)                                                    \
FR_INLINE void fr_dot_group_##SUF##_##C(int m, int K, T alpha, const T* A, ptrdiff_t lda,    \
                                        const T* X, ptrdiff_t ldx, T beta, T* Y,             \
                                        ptrdiff_t ldy)                                       \
{                                                                                            \
    T s[FR_DBR * (C)];                                                                       \
    ptrdiff_t j;                                                                             \
    int r, c;                                                                                \
    for (j = 0; j + FR_DBR <= m; j += FR_DBR) {                                              \
        fr_dot_block_##SUF##_##C(K, A + j * lda, lda, X, ldx, s);                            \
        for (c = 0; c < (C); c++) {                                                          \
            T* y = Y + c * ldy + j;                                                          \
            for (r = 0; r < FR_DBR; r++)                                                     \
                y[r] = FR_AXPBY(SUF, alpha, s[c * FR_DBR + r], beta, y[r]);                  \
        }                                                                                    \
    }                                                                                        \
    if (j < m)                                                                               \
        for (c = 0; c < (C); c++)                                                            \
            fr_dots_##SUF((int)(m - j), K, alpha, A + j * lda, lda, X + c * ldx, beta,       \
                          Y + c * ldy + j);                                                  \
}
#else
#define FR_DOT_LANES 0
#define FR_DEFINE_DOT_LANES(SUF, T)
#define FR_DEFINE_DOT_GROUP(SUF, T, C)
#define FR_DOT_LANES_CALL(SUF, K, A, lda, x, s) ((void)0)
#define FR_DOT_GROUP(SUF, C, ...) ((void)0)
#endif
#if FR_VECTORS && !(defined(__clang__) || __GNUC__ >= 12)
#define FR_DEFINE_HSUM(SUF, T)                                                               \
FR_INLINE T fr_hsum_##SUF(fr_v_##SUF v)                                                      \
{                                                                                            \
    T b[FR_VL(T)];                                                                           \
    ptrdiff_t w, i;                                                                          \
    memcpy(b, &v, sizeof v);                                                                 \
    for (w = FR_VL(T) / 2; w >= 1; w /= 2)                                                   \
        for (i = 0; i < w; i++) b[i] += b[i + w];                                            \
    return b[0];                                                                             \
}
#endif

#if FR_VECTORS
/* sums of R rows (as above) into s[0..R) */
#define FR_DEFINE_DOT_ROWS(SUF, T, R)                                                         \
FR_INLINE void fr_dot_rows_##SUF##_##R(ptrdiff_t K, const T* A, ptrdiff_t lda, const T* x,   \
                                       T* s)                                                 \
{                                                                                            \
    const ptrdiff_t VL = FR_VL(T), Kv = K - K % FR_VL(T);                                    \
    fr_v_##SUF acc[R];                                                                       \
    ptrdiff_t k;                                                                             \
    int r;                                                                                   \
    FR_UNROLL for (r = 0; r < R; r++) acc[r] = (fr_v_##SUF){0};                              \
    for (k = 0; k < Kv; k += VL) {                                                           \
        const fr_v_##SUF xv = *(const fr_vu_##SUF*)(x + k);                                  \
        FR_UNROLL for (r = 0; r < R; r++)                                                    \
            acc[r] += *(const fr_vu_##SUF*)(A + r * lda + k) * xv;                           \
    }                                                                                        \
    FR_UNROLL for (r = 0; r < R; r++) {                                                      \
        T sum = fr_hsum_##SUF(acc[r]);                                                       \
        for (k = Kv; k < K; k++) sum += A[r * lda + k] * x[k];                               \
        s[r] = sum;                                                                          \
    }                                                                                        \
}
#else
#define FR_DEFINE_HSUM(SUF, T)
#define FR_DEFINE_DOT_ROWS(SUF, T, R)                                                         \
FR_INLINE void fr_dot_rows_##SUF##_##R(ptrdiff_t K, const T* A, ptrdiff_t lda, const T* x,   \
                                       T* s)                                                 \
{                                                                                            \
    const ptrdiff_t VL = FR_VBYTES / (ptrdiff_t)sizeof(T), Kv = K - K % VL;                  \
    T b[FR_VBYTES / sizeof(T)];                                                              \
    ptrdiff_t k, w, i;                                                                       \
    int r;                                                                                   \
    for (r = 0; r < R; r++) {                                                                \
        for (i = 0; i < VL; i++) b[i] = 0;                                                   \
        for (k = 0; k < Kv; k += VL)                                                         \
            for (i = 0; i < VL; i++) b[i] += A[r * lda + k + i] * x[k + i];                  \
        for (w = VL / 2; w >= 1; w /= 2)                                                     \
            for (i = 0; i < w; i++) b[i] += b[i + w];                                        \
        for (k = Kv; k < K; k++) b[0] += A[r * lda + k] * x[k];                              \
        s[r] = b[0];                                                                         \
    }                                                                                        \
}
#endif

#define FR_DEFINE_DOTS(SUF, T)                                                               \
FR_DEFINE_HSUM(SUF, T)                                                                       \
FR_DEFINE_DOT_ROWS(SUF, T, 1)                                                                \
FR_DEFINE_DOT_ROWS(SUF, T, 4)                                                                \
FR_DEFINE_DOT_LANES(SUF, T)                                                                  \
                                                                                             \
/* y (m) = alpha * A (m x K, rows lda apart) @ x (K) + beta * y; beta 0: y is not read */    \
static void fr_dots_##SUF(int m, int K, T alpha, const T* A, ptrdiff_t lda, const T* x,     \
                          T beta, T* y)                                                      \
{                                                                                            \
    T s[FR_VBYTES / sizeof(T) > 4 ? FR_VBYTES / sizeof(T) : 4];                              \
    ptrdiff_t j = 0;                                                                         \
    int r, R;                                                                                \
    const int lanes = FR_DOT_LANES ? (int)(FR_VBYTES / sizeof(T)) : 0;                       \
    for (; j < m; j += R) {                                                                  \
        R = lanes && m - j >= lanes ? lanes : m - j >= 4 ? 4 : 1;                            \
        if (R == lanes) FR_DOT_LANES_CALL(SUF, K, A + j * lda, lda, x, s);                   \
        else if (R == 4) fr_dot_rows_##SUF##_4(K, A + j * lda, lda, x, s);                   \
        else fr_dot_rows_##SUF##_1(K, A + j * lda, lda, x, s);                               \
        for (r = 0; r < R; r++)                                                              \
            y[j + r] = FR_AXPBY(SUF, alpha, s[r], beta, y[j + r]);                           \
    }                                                                                        \
}                                                                                            \
                                                                                             \
/* Y[c, :] (m, Y's rows ldy apart) = alpha * A (m x K) @ X[c, :] + beta * Y[c, :] for the n   \
 * rows c of X (ldx apart): fr_dots for each, bit for bit, but where the build can, 3 rows of \
 * X at a time (2 for the last two), every row of A read once for all of them */             \
FR_DEFINE_DOT_GROUP(SUF, T, 2)                                                               \
FR_DEFINE_DOT_GROUP(SUF, T, 3)                                                               \
static void fr_dots_cols_##SUF(int m, int n, int K, T alpha, const T* A, ptrdiff_t lda,      \
                               const T* X, ptrdiff_t ldx, T beta, T* Y, ptrdiff_t ldy)       \
{                                                                                            \
    int c = 0;                                                                               \
    if (FR_DOT_LANES) {                                                                      \
        for (; n - c >= 3; c += 3)                                                           \
            FR_DOT_GROUP(SUF, 3, m, K, alpha, A, lda, X + c * ldx, ldx, beta, Y + c * ldy, ldy); \
        if (n - c == 2) {                                                                    \
            FR_DOT_GROUP(SUF, 2, m, K, alpha, A, lda, X + c * ldx, ldx, beta, Y + c * ldy, ldy); \
            c += 2;                                                                          \
        }                                                                                    \
    }                                                                                        \
    for (; c < n; c++)                                                                       \
        fr_dots_##SUF(m, K, alpha, A, lda, X + c * ldx, beta, Y + c * ldy);                  \
}

/* The weight gradients after the time loop: W (n x N, rows ldw apart) += D^T B over K rows,
 * W[i, j] += sum_k D[k, i] B[k, j], where D (K x n, rows ldd apart) holds the gradients of the
 * gate pre-activations of all T*B rows (a thread's share of their columns) and B (K x N, rows
 * ldb apart) what entered the gates (x, or h_{t-1}).  As in BLAS, both are packed a block of
 * FR_WKC rows at a time: B's rows into panels of two vectors (fr_pack), D's columns (W's rows)
 * into the tiles' order (fr_wpack), so a tile reads both as one stream each.  Read as stored
 * instead (the rows of D and of B are 4-8 KB and 2 KB apart at the benchmark's large shape,
 * all in a few sets of the L1 cache), the tiles ran at half of the multiply-add rate: on Zen 3
 * (AVX2, one thread, n = 1024, K = 3200, N = 512) 30-37 GFLOP/s as stored, 60-69 packed
 * (BLAS's sgemm 65-72 in the same process); the tile's rows of W are prefetched one tile
 * ahead (without, 52-58).  Packing takes the ~1 MB of D once per block (BLAS packed the whole
 * 8 MB at the README's loop shape, for each of x and h_{t-1}).
 *
 * The tile (fr_wtile_*) keeps R rows of W by one panel (two vectors) in registers over a
 * block of FR_WKC rows of D and B (the tile's packed D in the L1 cache for every panel of a
 * group, the group's panels of B in the L2 cache for every tile: fr_wcols): R is FR_WMR (24
 * of the 32 vector registers of AVX-512, 12 of the 16 of AVX2 and SSE), then 4 and 1 for the
 * rows left.  Every
 * element gets W + D[k0, i] B[k0, j] + ... in the order of k, block after block, whichever
 * tile it falls in: results do not depend on how the rows of W are split between threads. */
#if FR_VBYTES == 64
#define FR_WMR 12
#else
#define FR_WMR 6
#endif
#define FR_WKC 256
/* rows of D packed (tile by tile) and summed at a time: 8 rows of a thread's 1024 columns,
 * 32 KB, stay in the L1 cache between the two */
#define FR_WPACK_ROWS 8
/* rows of W taken at a time by fr_wblock, their tiles over B's full panels (fr_wcols), then
 * over the partial one: their block of packed D is about 128 KB (a multiple of FR_WMR rows) */
#define FR_WMC(T) ((128 * 1024 / (FR_WKC * (ptrdiff_t)sizeof(T))) / FR_WMR * FR_WMR)

/* A sparse operand of the weight gradients (fr_wgrad2): W (n x N, rows ldw apart) += D^T A,
 * A's rows compressed as fr_sparse_mm reads them (ptr, idx, val; ptr indexed by D's row);
 * Wt, the sums' workspace, is fr_wgrad2's.  val, W and Wt are of the call's element type. */
typedef struct {
    int N;
    const int* ptr;
    const int* idx;
    const void* val;
    void* W;
    ptrdiff_t ldw;
    void* Wt;
} fr_sparse_grad;

#if FR_VECTORS
#define FR_DEFINE_WTILE(SUF, T, R)                                                           \
FR_INLINE void fr_wtile_##SUF##_##R(ptrdiff_t kn, const T* D, ptrdiff_t ldd, const T* B,     \
                                    ptrdiff_t ldb, T* C, ptrdiff_t ldc)                      \
{                                                                                            \
    const ptrdiff_t VL = FR_VL(T);                                                           \
    fr_v_##SUF acc[R][2];                                                                    \
    ptrdiff_t k;                                                                             \
    int r;                                                                                   \
    FR_UNROLL for (r = 0; r < R; r++) {                                                      \
        acc[r][0] = *(const fr_vu_##SUF*)(C + r * ldc);                                      \
        acc[r][1] = *(const fr_vu_##SUF*)(C + r * ldc + VL);                                 \
    }                                                                                        \
    for (k = 0; k < kn; k++) {                                                               \
        const fr_v_##SUF b0 = *(const fr_vu_##SUF*)(B + k * ldb);                            \
        const fr_v_##SUF b1 = *(const fr_vu_##SUF*)(B + k * ldb + VL);                       \
        FR_UNROLL for (r = 0; r < R; r++) {                                                  \
            const T a = D[k * ldd + r];                                                      \
            acc[r][0] += a * b0;                                                             \
            acc[r][1] += a * b1;                                                             \
        }                                                                                    \
    }                                                                                        \
    FR_UNROLL for (r = 0; r < R; r++) {                                                      \
        *(fr_vu_##SUF*)(C + r * ldc) = acc[r][0];                                            \
        *(fr_vu_##SUF*)(C + r * ldc + VL) = acc[r][1];                                       \
    }                                                                                        \
}
#else
#define FR_DEFINE_WTILE(SUF, T, R)                                                           \
FR_INLINE void fr_wtile_##SUF##_##R(ptrdiff_t kn, const T* D, ptrdiff_t ldd, const T* B,     \
                                    ptrdiff_t ldb, T* C, ptrdiff_t ldc)                      \
{                                                                                            \
    ptrdiff_t k, j;                                                                          \
    int r;                                                                                   \
    for (r = 0; r < R; r++)                                                                  \
        for (k = 0; k < kn; k++)                                                             \
            for (j = 0; j < FR_NR(T); j++)                                                   \
                C[r * ldc + j] += D[k * ldd + r] * B[k * ldb + j];                           \
}
#endif

#define FR_DEFINE_WGRAD(SUF, T)                                                              \
FR_DEFINE_WTILE(SUF, T, 1)                                                                   \
FR_DEFINE_WTILE(SUF, T, 4)                                                                   \
FR_DEFINE_WTILE(SUF, T, FR_WMR)                                                              \
                                                                                             \
/* Dp (n * kn) = the kn x n block of D (rows ldd apart) packed for fr_wtile: the tile of    \
 * rows [i, i + R) of W (R = FR_WMR, then 4, then 1) holds D[k, i + r] at Dp[i * kn + k * R + \
 * r]; and db1, db2 (n, or NULL) += the column sums of the block, every element's sum in the  \
 * order of the rows; with `rows` (or NULL), row k of the block is row rows[k] of D.  With a   \
 * sparse operand A (sp, NULL: none; see fr_sparse_grad), its product is summed the same way, \
 * row by row: sp->Wt (N x n) += A[r, j] D[r, :] for each entry of row r of A, where r =      \
 * rows[k] or r0 + k.  With Dp NULL (no dense product reads it), the sums alone.  The rows go \
 * FR_WPACK_ROWS at a time: packed tile by tile (each tile's part of Dp written whole lines  \
 * at a time), then summed while they are in the L1 cache.  Row by row instead (every row    \
 * writing a few values into each of n / R tiles, 12 KB apart), the 1 MB of a block of the   \
 * large LSTM's training took 3.0 ms a thread, against 2.1-2.3 (AMD Zen 4, one core of two    \
 * at once; the same bits). */                                                               \
static void fr_wpack_##SUF(ptrdiff_t n, ptrdiff_t kn, const T* D, ptrdiff_t ldd,            \
                           const int* rows, ptrdiff_t r0, T* Dp, T* db1, T* db2,             \
                           const fr_sparse_grad* sp)                                         \
{                                                                                            \
    const T* dk[FR_WPACK_ROWS];      /* the rows of D of this group */                      \
    const T* d;                                                                              \
    ptrdiff_t k0, k1, k, i, j, r;                                                            \
    int e;                                                                                   \
    for (k0 = 0; k0 < kn; k0 = k1) {                                                         \
        k1 = kn - k0 < FR_WPACK_ROWS ? kn : k0 + FR_WPACK_ROWS;                              \
        for (k = k0; k < k1; k++)                                                            \
            dk[k - k0] = D + (rows != NULL ? (ptrdiff_t)rows[k] : k) * ldd;                  \
        if (Dp != NULL) {                                                                    \
            for (i = 0; i + FR_WMR <= n; i += FR_WMR)                                        \
                for (k = k0; k < k1; k++)                                                    \
                    memcpy(Dp + i * kn + k * FR_WMR, dk[k - k0] + i, FR_WMR * sizeof(T));    \
            for (; i + 4 <= n; i += 4)                                                       \
                for (k = k0; k < k1; k++)                                                    \
                    memcpy(Dp + i * kn + k * 4, dk[k - k0] + i, 4 * sizeof(T));              \
            for (; i < n; i++)                                                               \
                for (k = k0; k < k1; k++)                                                    \
                    Dp[i * kn + k] = dk[k - k0][i];                                          \
        }                                                                                    \
        for (k = k0; k < k1; k++) {                                                          \
            d = dk[k - k0];                                                                  \
            if (db1 != NULL)                                                                 \
                for (j = 0; j < n; j++)                                                      \
                    db1[j] += d[j];                                                          \
            if (db2 != NULL)                                                                 \
                for (j = 0; j < n; j++)                                                      \
                    db2[j] += d[j];                                                          \
            if (sp == NULL) continue;                                                        \
            r = rows != NULL ? (ptrdiff_t)rows[k] : r0 + k;                                  \
            for (e = sp->ptr[r]; e < sp->ptr[r + 1]; e++) {                                  \
                const T v = ((const T*)sp->val)[e];                                          \
                T* o = (T*)sp->Wt + (ptrdiff_t)sp->idx[e] * n;                               \
                for (j = 0; j < n; j++)                                                      \
                    o[j] += d[j] * v;                                                        \
            }                                                                                \
        }                                                                                    \
    }                                                                                        \
}                                                                                            \
                                                                                             \
/* the R rows of a tile of C (one panel, NR values) into the cache ahead of their tile */   \
FR_INLINE void fr_prefetch_rows_##SUF(int R, const T* C, ptrdiff_t ldc)                      \
{                                                                                            \
    int r;                                                                                   \
    for (r = 0; r < R; r++) {                                                                \
        FR_PREFETCH(C + r * ldc);                                                            \
        FR_PREFETCH(C + r * ldc + FR_NR(T) - 1);                                             \
    }                                                                                        \
}                                                                                            \
                                                                                             \
/* rows [0, n) of C (rows ldc apart) += D^T B over kn rows, from Dp (fr_wpack) and the     \
 * `full` panels of B packed one after another (Bp, kn x NR each): each tile of rows          \
 * (FR_WMR, then 4, then 1) over every panel of a group in turn, its packed D (12 KB with    \
 * AVX-512) staying in the L1 cache while the group's panels come from the L2, the tile of C \
 * of the next panel (or of the next rows) asked for ahead.  A group is as many panels as    \
 * fill fr_block_bytes (half of L2): all of them at the large LSTM's N = 512 on a core of    \
 * 1 MB of L2 or more, two groups where the L2 is 512 KB (Zen 3), so that they stay there.   \
 * Panel by panel instead (the panel in the L1 cache for every tile of rows), the tiles of  \
 * that LSTM's training ran 2-3% slower (Zen 4, whose 32 KB of L1 a panel of FR_WKC rows     \
 * fills on its own: 256 x 32 floats).  Each height of tile has a loop of its own and the    \
 * whole is not inlined (one loop over the three, or this inlined into fr_wgrad, spilled the \
 * tile's registers to the stack). */                                                        \
static FR_NOINLINE void fr_wcols_##SUF(ptrdiff_t n, ptrdiff_t kn, const T* Dp, ptrdiff_t full, \
                                       const T* Bp, T* C, ptrdiff_t ldc)                     \
{                                                                                            \
    const ptrdiff_t NR = FR_NR(T), pbytes = kn * NR * (ptrdiff_t)sizeof(T);                  \
    const ptrdiff_t group = fr_block_bytes / pbytes > 1 ? fr_block_bytes / pbytes : 1;       \
    ptrdiff_t g0, g1, i, p;                                                                  \
    for (g0 = 0; g0 < full; g0 = g1) {                                                       \
        g1 = full - g0 < group ? full : g0 + group;                                          \
        for (i = 0; i + FR_WMR <= n; i += FR_WMR)                                            \
            for (p = g0; p < g1; p++) {                                                      \
                if (p + 1 < g1)                                                              \
                    fr_prefetch_rows_##SUF(FR_WMR, C + i * ldc + (p + 1) * NR, ldc);         \
                else if (i + 2 * FR_WMR <= n)                                                \
                    fr_prefetch_rows_##SUF(FR_WMR, C + (i + FR_WMR) * ldc + g0 * NR, ldc);   \
                fr_wtile_##SUF##_FR_WMR(kn, Dp + i * kn, FR_WMR, Bp + p * kn * NR, NR,       \
                                        C + i * ldc + p * NR, ldc);                          \
            }                                                                                \
        for (; i + 4 <= n; i += 4)                                                           \
            for (p = g0; p < g1; p++)                                                        \
                fr_wtile_##SUF##_4(kn, Dp + i * kn, 4, Bp + p * kn * NR, NR,                 \
                                   C + i * ldc + p * NR, ldc);                               \
        for (; i < n; i++)                                                                   \
            for (p = g0; p < g1; p++)                                                        \
                fr_wtile_##SUF##_1(kn, Dp + i * kn, 1, Bp + p * kn * NR, NR,                 \
                                   C + i * ldc + p * NR, ldc);                               \
    }                                                                                        \
}                                                                                            \
                                                                                             \
/* W (n x N) += D^T B over one block of kn rows, D's packed (dp, fr_wpack): B's rows         \
 * (rows[k], or k when rows is NULL) packed into bp, then FR_WMC rows of W at a time over     \
 * the full panels (fr_wcols) and the last one.  That last panel of W, if partial, goes      \
 * through a tile of whole panels (B's packed panel has zeros past N). */                    \
static void fr_wblock_##SUF(ptrdiff_t n, ptrdiff_t kn, const T* dp, int N, const T* B,       \
                            ptrdiff_t ldb, const int* rows, T* bp, T* W, ptrdiff_t ldw)      \
{                                                                                            \
    const ptrdiff_t NR = FR_NR(T), full = N / FR_NR(T), m = N - full * FR_NR(T);             \
    const ptrdiff_t mc = FR_WMC(T);                                                          \
    T ct[FR_WMR * FR_NR(T)];                                                                 \
    ptrdiff_t i0, nc, i, r, c, R;                                                            \
    fr_pack_rows_##SUF((int)kn, N, B, ldb, 1, rows, bp);                                     \
    for (i0 = 0; i0 < n; i0 += mc) {                                                         \
        nc = n - i0 < mc ? n - i0 : mc;                                                      \
        fr_wcols_##SUF(nc, kn, dp + i0 * kn, full, bp, W + i0 * ldw, ldw);                   \
        if (m == 0) continue;                                                                \
        for (i = 0; i < nc; i += R) {                                                        \
            R = nc - i < FR_WMR ? nc - i : FR_WMR;                                           \
            for (r = 0; r < R; r++)                                                          \
                for (c = 0; c < NR; c++)                                                     \
                    ct[r * NR + c] = c < m ? W[(i0 + i + r) * ldw + full * NR + c] : 0;      \
            fr_wcols_##SUF(R, kn, dp + (i0 + i) * kn, 1, bp + full * kn * NR, ct, NR);       \
            for (r = 0; r < R; r++)                                                          \
                for (c = 0; c < m; c++)                                                      \
                    W[(i0 + i + r) * ldw + full * NR + c] = ct[r * NR + c];                  \
        }                                                                                    \
    }                                                                                        \
}                                                                                            \
                                                                                             \
/* W1 (n x N1) += D^T B1 and W2 (n x N2, N2 = 0: none) += D^T B2 over the same K rows of D   \
 * (rows 0 .. K-1, or with `rows` rows[0 .. K-1] of D, B1 and B2: those whose D is not zero)  \
 * (see above), db1, db2 (n, or NULL) += the column sums of D (the bias gradients), and      \
 * (S: a sparse operand, or NULL) S->W (n x S->N) += D^T A over A's entries alone: per block  \
 * of FR_WKC rows, D's columns packed once for both products and summed as they are packed   \
 * (as two products and two sums, the layer's 8 MB of D at the README's loop shape was read  \
 * four times and packed twice; the sparse product in a pass of its own, reading D again,    \
 * took 3.8% of that loop's time).  The sparse sums run in W^T (N x n: an entry adds into    \
 * one contiguous row of it), copied from S->W and back.  0, or -1 when the blocks could     \
 * not be allocated (nothing written). */                                                    \
static int fr_wgrad2_##SUF(int n, int K, const int* rows, const T* D, ptrdiff_t ldd,         \
                           int N1, const T* B1, ptrdiff_t ldb1, T* W1, ptrdiff_t ldw1,       \
                           int N2, const T* B2, ptrdiff_t ldb2, T* W2, ptrdiff_t ldw2,       \
                           T* db1, T* db2, const fr_sparse_grad* S)                          \
{                                                                                            \
    const ptrdiff_t bsize = FR_PACKED_SIZE(T, FR_WKC, N1 > N2 ? N1 : N2);                    \
    const ptrdiff_t dsize = N1 > 0 || N2 > 0 ? FR_WKC * (ptrdiff_t)n : 0;                    \
    const ptrdiff_t tsize = S != NULL ? (ptrdiff_t)n * S->N : 0;                             \
    fr_sparse_grad sp;                                                                       \
    char* raw;                                                                               \
    T *bp, *dp, *W;                                                                          \
    ptrdiff_t k0, kn, i, j;                                                                  \
    if (n <= 0 || K <= 0) return 0;                                                          \
    raw = (char*)malloc((size_t)(bsize + dsize + tsize) * sizeof(T) + 64);                   \
    if (raw == NULL) return -1;                                                              \
    bp = (T*)(raw + (64 - (size_t)raw % 64));                                                \
    dp = bp + bsize;                                                                         \
    if (S != NULL) {                                                                         \
        sp = *S;                                                                             \
        sp.Wt = dp + dsize;                                                                  \
        W = (T*)S->W;                                                                        \
        for (i = 0; i < n; i++)                                                              \
            for (j = 0; j < S->N; j++) ((T*)sp.Wt)[j * n + i] = W[i * S->ldw + j];           \
    }                                                                                        \
    for (k0 = 0; k0 < K; k0 += FR_WKC) {                                                     \
        /* the block's rows: rows[k0 ..] of D, B1 and B2, or rows k0 .. */                   \
        const int* rk = rows != NULL ? rows + k0 : NULL;                                     \
        const ptrdiff_t at = rows != NULL ? 0 : k0;                                          \
        kn = K - k0 < FR_WKC ? K - k0 : FR_WKC;                                              \
        fr_wpack_##SUF(n, kn, D + at * ldd, ldd, rk, k0, N1 > 0 || N2 > 0 ? dp : NULL,       \
                       db1, db2, S != NULL ? &sp : NULL);                                    \
        if (N1 > 0)                                                                          \
            fr_wblock_##SUF(n, kn, dp, N1, B1 + at * ldb1, ldb1, rk, bp, W1, ldw1);          \
        if (N2 > 0)                                                                          \
            fr_wblock_##SUF(n, kn, dp, N2, B2 + at * ldb2, ldb2, rk, bp, W2, ldw2);          \
    }                                                                                        \
    if (S != NULL)                                                                           \
        for (i = 0; i < n; i++)                                                              \
            for (j = 0; j < S->N; j++) W[i * S->ldw + j] = ((const T*)sp.Wt)[j * n + i];     \
    free(raw);                                                                               \
    return 0;                                                                                \
}                                                                                            \
                                                                                             \
/* W (n x N) += D^T B over K rows (fr_wgrad2 with one product and no sums) */                \
static int fr_wgrad_##SUF(int n, int K, const int* rows, int N, const T* D, ptrdiff_t ldd,   \
                          const T* B, ptrdiff_t ldb, T* W, ptrdiff_t ldw)                    \
{                                                                                            \
    if (N <= 0) return 0;                                                                    \
    return fr_wgrad2_##SUF(n, K, rows, D, ldd, N, B, ldb, W, ldw, 0, NULL, 0, NULL, 0, NULL,  \
                           NULL, NULL);                                                      \
}

/* The input's products when the input is sparse (most of it zeros: one-hot characters, say),
 * its rows in compressed form (CSR): row r's values are val[e] at columns idx[e], e in
 * [ptr[r], ptr[r + 1]), columns in increasing order.  A product then reads only the rows of W
 * the input's entries pick: for one-hot rows out of a vocabulary of 96, 1/96 of the
 * multiply-adds of the dense product.  Every element gets the sum fr_mm gives it (and
 * fr_wgrad2's sparse operand the sum of its dense one), term by term in the same order, less
 * the terms of A's zeros; those are zeros (+-0) for finite operands, so the results are the
 * same bits (up to the sign of a zero).
 *
 * C (row r - r0, rows ldc apart) = A (row r) @ W over columns [0, N) for the n rows r =
 * rows[i] of A, or r0 + i; W (K x N) packed by fr_pack.  Never inlined: whether each
 * `acc[j] += v * w[j]` becomes one fused multiply-add, as in fr_mm's tiles, is the compiler's
 * choice (contraction), and inlined into its caller, GCC 12 compiled the float64 loop of the
 * AVX-512 build so that 0.1% of an RNN's outputs came out 1 ulp from the dense product's. */
#define FR_DEFINE_SPARSE(SUF, T)                                                             \
static FR_NOINLINE void fr_sparse_mm_##SUF(int n, const int* rows, ptrdiff_t r0,             \
                                           const int* ptr, const int* idx, const T* val,     \
                                           int K, int N, const T* Wp, T* C, ptrdiff_t ldc)   \
{                                                                                            \
    const ptrdiff_t NR = FR_NR(T), pstride = (ptrdiff_t)K * NR;                              \
    ptrdiff_t i, p, j, r, m;                                                                 \
    int e;                                                                                   \
    for (i = 0; i < n; i++) {                                                                \
        r = rows != NULL ? rows[i] : r0 + i;                                                 \
        T* c = C + (r - r0) * ldc;                                                           \
        const int e0 = ptr[r], e1 = ptr[r + 1];                                              \
        for (p = 0; p * NR < N; p++) {                                                       \
            T acc[FR_NR(T)];                                                                 \
            for (j = 0; j < NR; j++) acc[j] = 0;                                             \
            for (e = e0; e < e1; e++) {                                                      \
                const T v = val[e];                                                          \
                const T* w = Wp + p * pstride + (ptrdiff_t)idx[e] * NR;                      \
                for (j = 0; j < NR; j++) acc[j] += v * w[j];                                 \
            }                                                                                \
            /* (a whole panel as a copy of constant size: stores, not a call of memcpy) */   \
            m = N - p * NR;                                                                  \
            if (m >= NR)                                                                     \
                memcpy(c + p * NR, acc, sizeof(acc));                                        \
            else                                                                             \
                memcpy(c + p * NR, acc, m * sizeof(T));                                      \
        }                                                                                    \
    }                                                                                        \
}

FR_DEFINE_MM(f32, float)
FR_DEFINE_MM(f64, double)
FR_DEFINE_WGRAD(f32, float)
FR_DEFINE_WGRAD(f64, double)
FR_DEFINE_DOTS(f32, float)
FR_DEFINE_DOTS(f64, double)
FR_DEFINE_SPARSE(f32, float)
FR_DEFINE_SPARSE(f64, double)

/* The machine's floor (the benchmark report's multiply-add peak): `rounds` rounds of
 * FR_PEAK_SUMS independent float32 multiply-adds of this build's vectors, the sums kept in
 * registers, which no product can outrun: a product's multiply-adds also wait for its loads.
 * FR_PEAK_SUMS covers the multiply-add units' latency times their number (4 cycles x 2 units
 * on the x86-64 CPUs seen here: 8 in flight) and leaves registers for nothing else: 24 of the
 * 32 of AVX-512, 12 of the 16 of AVX2 and SSE.  2 * FR_PEAK_SUMS * FR_VL(float) FLOP a round.
 * The sum of the results goes to a volatile: without that side effect the compiler may move
 * the loop past the caller's clock, or drop it. */
#if FR_VBYTES == 64
#define FR_PEAK_SUMS 24
#else
#define FR_PEAK_SUMS 12
#endif
static volatile float fr_peak_sink;
static FR_NOINLINE void fr_peak_f32(long rounds)
{
    long k;
    int i;
#if FR_VECTORS
    fr_v_f32 acc[FR_PEAK_SUMS], total = {0};
    const fr_v_f32 b = (fr_v_f32){0} + 0.999999f, c = (fr_v_f32){0} + 1e-6f;
    float sum = 0;
    FR_UNROLL for (i = 0; i < FR_PEAK_SUMS; i++) acc[i] = (fr_v_f32){0} + (float)i;
    for (k = 0; k < rounds; k++)
        FR_UNROLL for (i = 0; i < FR_PEAK_SUMS; i++) acc[i] = acc[i] * b + c;
    FR_UNROLL for (i = 0; i < FR_PEAK_SUMS; i++) total += acc[i];
    for (i = 0; i < FR_VL(float); i++) sum += total[i];
#else
    float acc[FR_PEAK_SUMS], sum = 0;
    for (i = 0; i < FR_PEAK_SUMS; i++) acc[i] = (float)i;
    for (k = 0; k < rounds; k++)
        for (i = 0; i < FR_PEAK_SUMS; i++) acc[i] = acc[i] * 0.999999f + 1e-6f;
    for (i = 0; i < FR_PEAK_SUMS; i++) sum += acc[i];
#endif
    fr_peak_sink = sum;
}
/* the elements of a vector of floats in this build (1 where it has no vectors) */
static int fr_peak_lanes(void)
{
#if FR_VECTORS
    return (int)FR_VL(float);
#else
    return 1;
#endif
}

#endif /* FASTRNN_MM_H */
