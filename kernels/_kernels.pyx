# Compiler directives: setup.py (the same for every build of this file, see _kernels_avx2.pyx).
"""Cython kernels of the ``cython`` backend (``fastrnn._cython``).

The twelve functions of the kernel contract written down in
:mod:`fastrnn.reference` (``rnn/lstm/gru`` x ``forward/backward/step_forward/
step_backward``), same names, signatures, shapes and results, for float32 and
float64 (fused types: every ``*_fwd`` / ``*_bwd`` below is compiled twice).

Kernel structure (the same as the numba backend's):

* the input projection: for a batch of at least STEP_INPUT_MIN_BATCH sequences,
  per thread in the time loop, with the per-step products below, a thread's
  rows of INPUT_GROUP steps at once without lengths, of one step with them (in
  eval mode the gate store then holds those steps); for smaller batches, and
  in eval mode on a team (below), one GEMM over T*B rows, written straight
  into the buffer of saved gates (in eval mode into a bounded chunk of time
  steps, so memory stays O(B*H) beyond the output); either way each gate gets
  the same bits;
* one recurrent product per step, G*H wide (4H LSTM, 3H GRU, H RNN): over many
  steps the register-blocked micro-kernel of ``fastrnn_mm.h`` on the weights
  packed once per call (BLAS would pack the whole weight matrix at every step);
  a single step, BLAS (GEMV for 1-4 rows) reading the weights in place;
* one fused pass per step and sequence: bias, activations, state update,
  masking; the forward saves the post-activation gates (and tanh(c_t) for the
  LSTM), so the backward calls no transcendental function;
* the ``activations`` option (ONNX's functions per slot, :mod:`fastrnn.activations`):
  None, or every slot at the cell's default, runs the code paths above; any other choice
  runs generic rows, in passes over a row (clip, then the slot's function, switched
  outside each loop), which keep h(c_t) in place of tanh(c_t) and take each derivative
  from the saved output (in float32 elu and softplus go through the vectorised tanh;
  in float64 they call libm);
* the backward loops t = T-1..0 with one GEMM per step for dh (plus one for
  the LSTM projection), and computes dx, dW_ih, dW_hh (and dW_hr) as single
  GEMMs over T*B rows after the loop (each thread computing a block of the
  output rows);
* the backward writes the gradients of the gate pre-activations over the
  forward's gate store, in place (as the numba backend does): no second
  T*B*G buffer.  For the GRU a store row [r, z, n, W_hn h + b_hn] becomes
  [dr, dz, dn, dn*r]: its columns 0:3H are the gradient of the input projection,
  its columns 0:2H and 3H:4H that of the recurrent product.  So a training
  record (``Saved``) supports one backward pass: the backward uses it up, and a
  second backward on it raises a RuntimeError;
* the backward adds the weight gradients into the caller's buffers (BLAS
  beta = 1, as haste and llm.c do): no gradient array is allocated per call;
* all workspaces are allocated once per call, before the loop;
* threads: SciPy's OpenBLAS is held at one thread during a call; a time loop
  splits the batch over a small pool of threads (each runs the whole loop on
  its slice, as many rows as its measured pace makes in the same time: see
  loop_split), the GEMMs before and after it split their output rows; an
  eval-mode forward of at most TEAM_MAX_ROWS sequences a team member (a batch
  too small to split, or whose slices would be thin, with weights too large for
  one core's L2 cache) splits the hidden units instead, over a team of threads
  that meet at a barrier after every step (see run_team), each reading only its
  share of the weights; one step of at most 4
  sequences splits the rows of its two products (run_step_team).

Lengths masking is the reference's: steps ``t >= lengths[b]`` give a zero
output and leave the state of sequence ``b`` untouched; their gradient passes
through unchanged.  The products skip those rows, with the same bits: those of
a step (live_mm: the running rows gathered into a block of their own), the
input projection of all steps and dx (live_rows_mm), and the weight gradients
(grad_rows: their gate gradients are 0); only an eval forward's projection of
a chunk of steps (and a team's) still takes every row.  A sparse input (at most
1/SPARSE_DENSITY of it not zero: one-hot characters) is compressed once per call
(sparse_input), and x @ w_ih^T and dW_ih += dA^T x run over its entries alone,
with the same bits.  BLAS comes from ``scipy.linalg.cython_blas`` and every
kernel runs without the GIL.

Builds: ``setup.py`` compiles this file for any CPU of the platform (module
``_kernels``) and, on x86-64, twice more: with AVX2 and FMA (``_kernels_avx2``,
from ``_kernels_avx2.pyx``) and with AVX-512 (``_kernels_avx512``); ``fastrnn._cython``
imports the widest this CPU runs.  ``ISA`` says which build a module is;
:func:`cpu_runs` (asked of the ``_kernels`` build, which runs anywhere) whether
this CPU runs another.
"""

import threading as _threading

import numpy as np

cimport numpy as cnp
from cython cimport floating
from cpython.ref cimport PyObject
from cpython.tuple cimport PyTuple_GET_SIZE
from libc.limits cimport INT_MAX
from libc.stdint cimport int64_t
from libc.stdlib cimport calloc, malloc, free
from libc.string cimport memcmp, memcpy, memset
from libc.math cimport exp, expm1, fabs, fabsf, log1p

from _common cimport (
    DOTS_MAX_COLUMNS, GEMV_MAX_COLUMNS, gemm, rowmm, rowmm_groups, wgrad, wgrad2, sparse_mm,
    fr_sparse_grad,
    fr_pack_f32, fr_pack_f64,
    fr_packed_size_f32, fr_packed_size_f64, fr_panel_width_f32, fr_panel_width_f64,
    fr_block_bytes, fr_set_block_bytes, FR_BLOCK_BYTES, FR_BLOCK_MAX,
    fr_peak_f32, fr_peak_lanes, FR_PEAK_SUMS,
    act_tanh, act_sigmoid, act_relu, tanh_f32, sigmoid_f32, sigmoid_f64, c_tanh,
    tanh_bias, add_to, mul_to, norm2, colsum_add, cell_state,
    lstm_grad_row, lstm_row, gru_row, gru_state, gru_grad_row,
)

cnp.import_array()

cdef extern from *:
    """
    #if defined(__AVX512F__)
    #define FR_ISA "avx512"
    #elif defined(__AVX2__) && defined(__FMA__)
    #define FR_ISA "avx2"
    #else
    #define FR_ISA "baseline"
    #endif
    /* 1 if this CPU and its operating system (its saved vector state) run the build: 2 for
     * AVX2 and FMA, 3 for AVX-512 F, VL, BW and DQ (and AVX2 and FMA) */
    static int fr_cpu_runs(int level)
    {
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
        __builtin_cpu_init();
        if (level >= 2 && !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")))
            return 0;
        if (level >= 3 && !(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
                            && __builtin_cpu_supports("avx512bw")
                            && __builtin_cpu_supports("avx512dq")))
            return 0;
        return 1;
    #else
        return level <= 1;
    #endif
    }
    """
    const char* FR_ISA
    int fr_cpu_runs(int level) noexcept nogil

#: the instruction set this build of the kernels was compiled for: "baseline", "avx2" or "avx512"
ISA = FR_ISA.decode("ascii")
#: the builds, narrowest first
_LEVELS = {"baseline": 1, "avx2": 2, "avx512": 3}


def cpu_runs(isa):
    """Whether this CPU and its operating system run the code of build ``isa``: ``"avx2"``
    (AVX2 and FMA), ``"avx512"`` (AVX-512 F, VL, BW, DQ) or ``"baseline"``."""
    return bool(fr_cpu_runs(_LEVELS[isa]))


__all__ = [
    "rnn_forward", "rnn_backward", "rnn_step_forward", "rnn_step_backward",
    "lstm_forward", "lstm_backward", "lstm_step_forward", "lstm_step_backward",
    "gru_forward", "gru_backward", "gru_step_forward", "gru_step_backward",
]

cdef enum:
    # eval-mode forwards project the input of at most this many gate elements at a time (1 MB
    # of floats; against 4 MB, 0.99-1.06x as fast on a team of two for LSTM and GRU at the
    # benchmark's small, medium and large shapes, Zen 3)
    CHUNK_ELEMENTS = 1 << 18
    # rows of one GEMM of the input projection of all steps (a few ms at most)
    PROJECTION_ROWS = 16384
    LIVE_BLOCK = 256         # rows gathered at a time by live_rows_mm
    # a forward of many steps over a batch of at least this many sequences multiplies the
    # input step by step, in the time loop, with the per-step products of fastrnn_mm.h (which
    # beat BLAS's GEMM when a thread has 3 or more rows); smaller batches project the input of
    # all steps at once, as one GEMM (the rule depends on the batch alone, not on the threads,
    # so that results do not depend on the number of threads)
    STEP_INPUT_MIN_BATCH = 8
    # ... and without lengths a thread's rows of this many steps at once (rowmm_groups; their
    # gates stay in the store until their step, which in eval mode holds as many), so that each
    # chunk of w_ih^T comes from memory once for them all rather than once a step: per step,
    # a thread's 32 rows read all 4 MB of LSTM(512, 512)'s packed w_ih^T, and two threads read
    # from L3 at 29-48 GB/s (Intel Xeon, AVX-512).  The products of that forward (T=48, B=64,
    # both threads, in C): 35.9 ms a step at a time, 35.5 and 33.4 two at a time, 32.9 three,
    # 32.8 and 32.7 four, 33.7 and 32.4 six.  An eval forward at B = 128 (each thread 64 rows,
    # no team): 0.98x the time (medians of 6 pairs of processes); at the medium shape (weights
    # in L2) 1.00x.  The same bits.
    INPUT_GROUP = 4


# gates stacked in the weights, by cell (0 RNN, 1 LSTM, 2 GRU), for code without the GIL:
# filled from the one table of cell types at import (GATES, below)
cdef int CELL_GATES[3]


# =======================================================================================
# Arguments of one kernel call
# =======================================================================================
ctypedef struct Act:
    # one slot's activation of the activations option (fastrnn.activations)
    int kind                 # ACT_*: the index of its name in fastrnn.activations.NAMES
    double alpha, beta       # its parameters (0 where it has none)


ctypedef struct Check:
    # weights (rows x K, row-major) to compare with the copy they were packed from
    const void* src          # or NULL: nothing to check
    const void* copy
    int K


ctypedef struct Pack:
    # a weight matrix that packed() left to the PACK phase: W[k, j] = src[k*rs + j*cs] (K x N)
    # packed into out (see fastrnn_mm.h's fr_pack), floats (item 4) or doubles
    const char* src
    char* out
    Py_ssize_t rs, cs
    int K, N, item


cdef enum:
    MAX_PACKS = 4            # a call's packs left to its PACK phase: w_hh, w_hr, w_ih, w_hn


ctypedef struct Args:
    int T, B, In, H, P, Tc   # In: input size (I is a macro of complex.h)
    int b0, b1               # the batch rows [b0, b1) a time loop works on
    int part, nparts         # PRE / BWD_POST: this call does part `part` of `nparts` of each GEMM
    int members              # FWD_UNITS: the size of the team (see run_team)
    int member, u0, u1       # a team member's index and hidden units [u0, u1)
    int* pieces              # FWD_UNITS: the counters of the input projection's pieces (fwd_units)
    int steals               # FWD_UNITS: the pieces this member made of another's units
    void* team               # the team's barrier (fr_barrier), or NULL
    bint products_done       # a one-step eval forward whose products a team made (STEP_ROWS):
                             # PRE and FWD_LOOP skip them; the GRU's W_hh h is then in ghb
    void* ghb                # (B, padded 3H) GRU: W_hh h of the step (products_done), or NULL
    Check check[2]           # FWD_UNITS: the weights (w_hh, w_ih) whose packed copies came
                             # from the cache unchecked: each member compares its rows
    int* stale               # FWD_UNITS: set to 1 if a member finds them changed
    int ldg                  # row stride of the gate store (elements): its width, padded for
                             # LSTM and GRU (see padded_width)
    bint train
    int variant              # RNN: 1 relu (0 tanh); GRU: 1 the reset gate before the product
                             # of n (0 after it, PyTorch's); LSTM: 1 input and forget gates
                             # coupled, f = 1 - i (ONNX's input_forget)
    bint chunked             # eval mode: input projection a chunk of Tc steps at a time, in the loop
    double clip              # ONNX's cell clip of every gate pre-activation, or 0 (none)
    bint acts                # the activations option: 0 the cell's defaults (the default rows
                             # run), 1 the generic rows with act (RNN relu is variant 1 instead)
    Act act[3]               # the activation of each slot: RNN f; GRU f (r, z), g (n); LSTM f
                             # (i, f, o), g (the candidate), h (applied to c_t)
    void* cmask              # (T, B, G) the clip's gradient mask (training with a clip), or NULL
    const int64_t* lens      # (B,) or NULL
    const int* live_rows     # backward with lengths: the rows t*B + b of the sequences running
    int nlive                # at their step (t < lens[b]), in order, and how many; else NULL
    # a sparse input (sparse_input): x's T*B rows compressed (CSR: row r's values xs_val[e] at
    # columns xs_idx[e], e in [xs_ptr[r], xs_ptr[r + 1])), for its products; NULL: x is dense
    const int* xs_ptr
    const int* xs_idx
    const void* xs_val
    # inputs
    void* x                  # (T, B, I)
    void* w_ih               # (G, I)
    void* w_hh               # (G, P)
    void* w_hr               # (P, H) or NULL (LSTM projection)
    void* w_ph               # (3, H) or NULL (LSTM peepholes, rows i, f, o)
    # the right-hand operands of the per-step products (fastrnn_mm.h), or NULL (BLAS):
    # copies packed for fastrnn_mm.h, see packed();
    # forward: w_hh^T (P, G) and w_hr^T (H, P); backward: w_hh (G, P) and w_hr (P, H);
    # w_ih^T (I, G, GRU: 3H) when the forward multiplies the input step by step; in a
    # backward with dx over more than one step, w_ih (G, I) for dx = dA w_ih
    void* w_ih_r
    void* w_hh_r
    void* w_hr_r
    void* w_hn_r             # GRU with the reset gate before: w_hh[2H:] (forward: transposed), and
                             # w_hh_r then holds w_hh[:2H]
    # w_ih^T packed for the input projection of all steps (eval-mode forwards of a small batch,
    # from the cache of packed weights), or NULL: BLAS, which packs w_ih again at every call
    void* w_ih_p
    Pack packs[MAX_PACKS]    # the right-hand operands above that the PACK phase packs, before
    int npacks               # the other phases (see packed()), and how many
    void* b_ih               # (G,) or NULL
    void* b_hh               # (G,) or NULL
    void* bias               # (G,) workspace: the biases the forward adds (GRU: 4H)
    # kept by the forward for the backward
    void* gates              # post-activation gates, (T|Tc, B, Gs); the backward overwrites them
                             # with the gradients of the pre-activations (GRU: [dr, dz, dn, dn*r])
    void* hs                 # hidden states entering each step, (T+1|2, B, P); slot 0 = h0
    void* cs                 # LSTM cell states, (T+1|2, B, H); slot 0 = c0
    void* tc                 # LSTM tanh(c_t) (h(c_t) with a.acts), (T, B, H) in training
    void* mb                 # LSTM projection input m_t, (T|1, B, H)
    void* y                  # output (T, B, P) or NULL (step kernels)
    # backward (dw_*, db_*: the caller's gradient buffers, added into)
    void* dy                 # (T, B, P) or NULL (zero)
    void* dh                 # (B, P): dh_n in, dh0 out
    void* dc                 # (B, H): dc_n in, dc0 out
    void* norms              # (T, B) or NULL
    void* dht                # LSTM with projection: (T, B, P) gradient of h_t
    void* dx                 # (T, B, I)
    void* dw_ih
    void* dw_hh
    void* db_ih              # or NULL
    void* db_hh              # or NULL
    void* dw_hr              # or NULL
    void* dw_ph              # or NULL
    # set to 1 (a Ctrl-C during a long call, see stopped()) to end the time loops at the next
    # step: their results are then not used; NULL: the call is not watched
    volatile int* stop


cdef inline bint valid(const int64_t* lens, int t, int b) noexcept nogil:
    return lens == NULL or t < lens[b]


# With lengths, a step's products need only the rows of the sequences still running: those
# past their length keep their state and output 0, and their gradients pass through.  Live
# holds a slice's running rows at a step (live_at: the part of a.live_rows, the list of the
# running rows of every step, that falls in the slice), and live_mm makes a product over them
# alone: their operands gathered into a block of their own, the results put back (the other
# rows of C are left as they are).  fr_mm computes each row on its own, in the order of k,
# whichever rows go with it, so a running row's result is the same bits as in the whole slice.
# LSTM(64, 128), T = 200, lengths 10-200 (Zen 3, two threads, one process alternating the
# build before): eval at B = 256 (the benchmark's ragged batches) 83 -> 52 ms, at B = 16 (a
# team) 6.0 -> 4.4 ms; training (forward and backward) at B = 256 309 -> 243 ms, with the
# weight gradients over the running rows alone too (grad_rows) 283 -> 185 ms, and with the
# input projection and dx (live_rows_mm) 287 -> 172 ms (1.67x; GRU 1.53x, RNN 1.50x); all
# lengths T: unchanged.
ctypedef struct Live:
    int n                    # the rows of the slice whose sequence runs at this step
    int all                  # 1: all the slice's rows (no lengths, or none ended): no gather
    const int* rows          # with lengths: the n rows, t*B + b (in a.live_rows), in order
    int base                 # with lengths: the row t*B + b0 of the slice's first
    void* buf                # with lengths: the gathered operands, room for nb rows of each


cdef inline void live_free(Live* s) noexcept nogil:
    free(s.buf)
    s.buf = NULL


cdef int live_init(Live* s, Args* a, int nb, size_t item) noexcept nogil:
    """The running rows of a slice of nb rows (all of them until live_at), with room for the
    operands of every product of a time loop (K, N <= max(I, 4H, P)); 0, or -1 when out of
    memory."""
    cdef size_t width = <size_t>max(max(a.In, 4 * a.H), a.P)
    s.n, s.all, s.rows, s.base, s.buf = nb, 1, NULL, 0, NULL
    if a.live_rows == NULL:
        return 0
    s.buf = malloc(2 * <size_t>nb * width * item + 1)
    return 0 if s.buf != NULL else -1


cdef inline int lower_bound(const int* v, int n, int x) noexcept nogil:
    """The first i with v[i] >= x (v: n sorted values), or n."""
    cdef int lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) // 2
        if v[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline void live_at(Live* s, const Args* a, int t, int b0, int nb) noexcept nogil:
    """s = the rows of the slice [b0, b0 + nb) whose sequence runs at step t."""
    cdef int i0
    if a.live_rows == NULL:
        return
    s.base = t * a.B + b0
    i0 = lower_bound(a.live_rows, a.nlive, s.base)
    s.rows = a.live_rows + i0
    s.n = lower_bound(s.rows, a.nlive - i0, s.base + nb)
    s.all = s.n == nb


cdef inline void gathered_mm(const int* rows, int n, int base, int K, int N, const floating* A,
                             int lda, const floating* Wp, bint accumulate, floating* C, int ldc,
                             floating* buf) noexcept nogil:
    """rowmm (C = A @ W, + C when ``accumulate``) over rows rows[i] - base (i < n) of A (lda
    apart) and C (ldc apart) alone: gathered into buf (n * (K + N) elements), multiplied, and
    put back."""
    cdef int i
    cdef floating* gc = buf + <Py_ssize_t>n * K
    for i in range(n):
        memcpy(buf + <Py_ssize_t>i * K, A + <Py_ssize_t>(rows[i] - base) * lda,
               K * sizeof(floating))
        if accumulate:
            memcpy(gc + <Py_ssize_t>i * N, C + <Py_ssize_t>(rows[i] - base) * ldc,
                   N * sizeof(floating))
    rowmm(n, K, N, buf, K, Wp, accumulate, gc, N)
    for i in range(n):
        memcpy(C + <Py_ssize_t>(rows[i] - base) * ldc, gc + <Py_ssize_t>i * N,
               N * sizeof(floating))


cdef inline void live_mm(Live* s, int K, int N, const floating* A, int lda, const floating* Wp,
                         bint accumulate, floating* C, int ldc) noexcept nogil:
    """rowmm (C = A @ W, + C when ``accumulate``) over the running rows of the slice, whose
    first rows are at A (lda apart) and C (ldc apart)."""
    if s.all:
        rowmm(s.n, K, N, A, lda, Wp, accumulate, C, ldc)
    elif s.n > 0:
        gathered_mm(s.rows, s.n, s.base, K, N, A, lda, Wp, accumulate, C, ldc, <floating*>s.buf)


cdef inline int chunk_steps(int T, int B, int G, bint whole) noexcept nogil:
    """Time steps per input-projection GEMM: all of them when ``whole`` (training, or split batch)."""
    cdef long long per_step = <long long>B * G
    cdef long long tc
    if whole or per_step == 0:
        return T if T > 0 else 1
    tc = CHUNK_ELEMENTS // per_step
    if tc < 1:
        tc = 1
    if tc > T:
        tc = T if T > 0 else 1
    return <int>tc


cdef inline void fill_bias(floating* out, const floating* b1, const floating* b2, Py_ssize_t n) noexcept nogil:
    """out = b1 + b2, either of which may be missing (NULL)."""
    if b1 != NULL and b2 != NULL:
        add_to(out, b1, b2, n)
    elif b1 != NULL:
        memcpy(out, b1, n * sizeof(floating))
    elif b2 != NULL:
        memcpy(out, b2, n * sizeof(floating))
    else:
        memset(out, 0, n * sizeof(floating))


cdef inline void project_rows(floating tag, Args* a, int G, Py_ssize_t r, int n,
                              floating* out) noexcept nogil:
    """out (n rows, a.ldg apart) = rows r .. r+n-1 of x (T*B, I) @ w_ih^T: on the micro-kernel
    from w_ih^T packed (a.w_ih_p; over its entries alone when x is sparse), or one BLAS GEMM."""
    if n <= 0:
        return
    if a.w_ih_p != NULL and a.xs_ptr != NULL:
        sparse_mm(n, NULL, r, a.xs_ptr, a.xs_idx, <const floating*>a.xs_val, a.In, G,
                  <const floating*>a.w_ih_p, out, a.ldg)
    elif a.w_ih_p != NULL:
        rowmm(n, a.In, G, <const floating*>a.x + r * a.In, a.In, <const floating*>a.w_ih_p,
              False, out, a.ldg)
    else:
        gemm(c'T', c'N', G, n, a.In, <floating>1, <const floating*>a.w_ih, a.In,
             <const floating*>a.x + r * a.In, a.In, <floating>0, out, a.ldg)


cdef inline void input_projection(floating tag, Args* a, int G, int t, int steps) noexcept nogil:
    """gates[slot of t ..] = x[t : t + steps] @ w_ih^T: one product over steps*B rows."""
    project_rows(tag, a, G, <Py_ssize_t>t * a.B, steps * a.B,
                 <floating*>a.gates + (0 if a.chunked else <Py_ssize_t>t * a.B * a.ldg))


cdef inline floating* step_gates(floating tag, Args* a, int G, int t, int* t0,
                                 Live* live) noexcept nogil:
    """The gate store of step t, holding x_t @ w_ih^T (G columns): made here for the running
    rows of this slice (``live``; a.w_ih_r: the input product per step), or by the projection
    of all steps (PRE), or of the chunk of Tc steps that begins at t, made here (``t0``: the
    chunk's first step)."""
    cdef floating* gates = <floating*>a.gates
    cdef Py_ssize_t BG = <Py_ssize_t>a.B * a.ldg
    cdef floating* gt
    if a.w_ih_r != NULL:
        gt = gates + (t if a.train else t % a.Tc) * BG
        if a.xs_ptr != NULL:
            if live.n > 0:
                sparse_mm(live.n, live.rows, <Py_ssize_t>t * a.B + a.b0,   # (NULL: no lengths)
                          a.xs_ptr, a.xs_idx, <const floating*>a.xs_val, a.In, G,
                          <const floating*>a.w_ih_r, gt + <Py_ssize_t>a.b0 * a.ldg, a.ldg)
        elif a.lens == NULL:
            # the gate store keeps every step (or a.Tc = INPUT_GROUP): the slice's rows of
            # INPUT_GROUP steps at a time
            if t % INPUT_GROUP == 0:
                rowmm_groups(min(INPUT_GROUP, a.T - t), a.b1 - a.b0, a.In, G,
                             <const floating*>a.x + (<Py_ssize_t>t * a.B + a.b0) * a.In, a.In,
                             <Py_ssize_t>a.B * a.In, <const floating*>a.w_ih_r, False,
                             gt + <Py_ssize_t>a.b0 * a.ldg, <int>a.ldg, BG)
        else:
            live_mm(live, a.In, G, <const floating*>a.x + (<Py_ssize_t>t * a.B + a.b0) * a.In,
                    a.In, <const floating*>a.w_ih_r, False, gt + <Py_ssize_t>a.b0 * a.ldg,
                    a.ldg)
        return gt
    if a.chunked and t % a.Tc == 0:
        t0[0] = t
        input_projection(tag, a, G, t, min(a.Tc, a.T - t))
    return gates + (t - t0[0]) * BG


cdef inline void part_range(int n, int part, int nparts, int* lo, int* hi) noexcept nogil:
    lo[0] = <int>((<long long>n * part) // nparts)
    hi[0] = <int>((<long long>n * (part + 1)) // nparts)


cdef inline void part_rows(Args* a, int* r0, int* r1) noexcept nogil:
    """This part's rows [r0, r1) of T*B (the parts cover them all, one after the other): an
    equal share of them, or with a.live_rows of the rows listed there (those of the sequences
    running at their step, the only ones the products after or before the loop compute)."""
    cdef int i0, i1, TB = a.T * a.B, n = a.nlive
    if a.live_rows == NULL:
        part_range(TB, a.part, a.nparts, r0, r1)
        return
    part_range(n, a.part, a.nparts, &i0, &i1)
    r0[0] = 0 if a.part == 0 else (a.live_rows[i0] if i0 < n else TB)
    r1[0] = TB if a.part == a.nparts - 1 else (a.live_rows[i1] if i1 < n else TB)


cdef int live_rows_mm(Args* a, int r0, int r1, int K, int N, const floating* A, int lda,
                      const floating* Wp, floating* C, int ldc, bint clear) noexcept nogil:
    """C (row r - r0, ldc apart) = A (row r - r0, lda apart) @ W for the rows r in [r0, r1)
    of T*B: all of them, or with a.live_rows only those listed (of the sequences running at
    their step), gathered LIVE_BLOCK at a time into a block of their own (fr_mm gives each row
    the same bits in any block); the others' rows of C are zeroed when ``clear``, else left as
    they are.  0, or -1 when out of memory (nothing computed)."""
    cdef int i0, i1, i, j, m, r, prev
    cdef floating* buf
    if r1 <= r0:
        return 0
    if a.live_rows == NULL:
        rowmm(r1 - r0, K, N, A, lda, Wp, False, C, ldc)
        return 0
    i0 = lower_bound(a.live_rows, a.nlive, r0)
    i1 = lower_bound(a.live_rows, a.nlive, r1)
    if i1 - i0 == r1 - r0:
        rowmm(r1 - r0, K, N, A, lda, Wp, False, C, ldc)
        return 0
    if clear:
        prev = r0
        for i in range(i0, i1 + 1):
            r = a.live_rows[i] if i < i1 else r1
            for j in range(prev, r):
                memset(C + <Py_ssize_t>(j - r0) * ldc, 0, N * sizeof(floating))
            prev = r + 1
    if i1 == i0:
        return 0
    buf = <floating*>malloc(<size_t>min(LIVE_BLOCK, i1 - i0) * (K + N) * sizeof(floating))
    if buf == NULL:
        return -1
    i = i0
    while i < i1:
        m = min(LIVE_BLOCK, i1 - i)
        gathered_mm(a.live_rows + i, m, r0, K, N, A, lda, Wp, False, C, ldc, buf)
        i += m
    free(buf)
    return 0


cdef inline int input_projection_part(floating tag, Args* a, int G) noexcept nogil:
    """This part's share of the rows of the input projection of all T*B rows (training, split),
    in blocks of PROJECTION_ROWS rows, between which a stop (Ctrl-C) is seen.  (Each row is
    computed alike whatever block it is in, as in the split among threads.)  With lengths
    (a.live_rows), only the rows of the sequences running at their step, and the parts share
    those (a sparse x: fr_sparse_mm reads the list of rows as it is, without a gather).  0,
    or -1 when out of memory."""
    cdef int r0, r1, r, n, i0
    cdef floating* out
    part_rows(a, &r0, &r1)
    r = r0
    while r < r1 and not stopped(a):
        n = min(r1 - r, PROJECTION_ROWS)
        out = <floating*>a.gates + <Py_ssize_t>r * a.ldg
        if a.w_ih_p != NULL and a.xs_ptr != NULL and a.live_rows != NULL:
            i0 = lower_bound(a.live_rows, a.nlive, r)
            sparse_mm(lower_bound(a.live_rows, a.nlive, r + n) - i0, a.live_rows + i0, r,
                      a.xs_ptr, a.xs_idx, <const floating*>a.xs_val, a.In, G,
                      <const floating*>a.w_ih_p, out, a.ldg)
        elif a.w_ih_p != NULL and a.xs_ptr == NULL:
            if live_rows_mm(a, r, r + n, a.In, G, <const floating*>a.x + <Py_ssize_t>r * a.In,
                            a.In, <const floating*>a.w_ih_p, out, a.ldg, False):
                return -1
        else:
            project_rows(tag, a, G, r, n, out)
        r += n
    return 0


cdef inline int input_grad_rows(floating tag, Args* a, const floating* dA, int G, int r0, int r1,
                                floating* dx) noexcept nogil:
    """dx = dA W_ih over rows [r0, r1) of T*B: fastrnn_mm.h's micro-kernel from w_ih packed
    (a.w_ih_r, set by the backward over more than one step), else BLAS; dA: (T*B, >= G), rows
    a.ldg apart.  The micro-kernel gives every row the same bits wherever the rows are split;
    OpenBLAS did not (rows split 127 + 128 between two threads, or 64 + 191, against 255 on
    one: the last column of dx at I = 161 differed in the last bit, a tail tile, and a smaller
    product took another kernel).  Against BLAS, in fresh processes alternating: the
    benchmark's LSTM training rows 0.98x the time (small), 0.99x (medium), 1.04x (large, where
    dA, 13 MB a thread, is read once for each panel of 32 inputs), GRU medium 1.01x.  With
    lengths (a.live_rows), the rows of the sequences past their length get 0 without a
    product.  0, or -1 when out of memory."""
    cdef int I = a.In, ld = a.ldg
    if a.w_ih_r != NULL:
        return live_rows_mm(a, r0, r1, G, I, dA + <Py_ssize_t>r0 * ld, ld,
                            <const floating*>a.w_ih_r, dx + <Py_ssize_t>r0 * I, I, True)
    else:
        gemm(c'N', c'N', I, r1 - r0, G, <floating>1, <const floating*>a.w_ih, I,
             dA + <Py_ssize_t>r0 * ld, ld, <floating>0, dx + <Py_ssize_t>r0 * I, I)
    return 0


cdef inline int grad_rows(Args* a) noexcept nogil:
    """The rows of T*B the weight gradients sum over: all, or (a.live_rows) those of the
    sequences running at their step; the others' gate gradients are 0, so they add nothing
    (the sums over the rest keep their order: the same bits)."""
    return a.nlive if a.live_rows != NULL else a.T * a.B


cdef inline int input_wgrad(Args* a, int g0, int g1, const floating* D, int ld,
                            int N2, const floating* B2, Py_ssize_t ldb2, floating* W2,
                            floating* db1, floating* db2) noexcept nogil:
    """Rows [g0, g1) of dW_ih += D^T x, and (N2 > 0) rows [0, g1 - g0) of W2 (N2 wide) += D^T B2
    and db1, db2 (NULL: none) += D's column sums [g0, g1), over the rows of grad_rows: one pass
    of fr_wgrad2 over D (rows ld apart) for all; with a sparse x (a.xs_ptr), x's product over its
    entries alone, in the same pass (the same bits for finite D).  0, or -1 when out of
    memory."""
    cdef int I = a.In
    cdef floating* dw_ih = <floating*>a.dw_ih + <Py_ssize_t>g0 * I
    cdef fr_sparse_grad S
    if a.xs_ptr == NULL:
        return wgrad2(g1 - g0, grad_rows(a), a.live_rows, D + g0, ld,
                      I, <const floating*>a.x, I, dw_ih, I, N2, B2, ldb2, W2, N2, db1, db2)
    S.N, S.ptr, S.idx, S.val, S.W, S.ldw, S.Wt = I, a.xs_ptr, a.xs_idx, a.xs_val, dw_ih, I, NULL
    return wgrad2(g1 - g0, grad_rows(a), a.live_rows, D + g0, ld,
                  N2, B2, ldb2, W2, N2, 0, NULL, 0, NULL, 0, db1, db2, &S)


cdef inline int weight_grads_part(floating tag, Args* a, const floating* dA, int G,
                                  floating* dx, floating* dw_hh) noexcept nogil:
    """This part's share of dx = dA W_ih (rows of T*B, see input_grad_rows; not when dx is NULL),
    dW_ih += dA^T x, dW_hh += dA^T h and the bias gradients db_ih, db_hh += dA's column sums
    (rows of G, fastrnn_mm.h's fr_wgrad2, which reads dA once for all four: the caller's
    gradient buffers, added into); dA: (T*B, G) with rows a.ldg apart, the gate store
    overwritten by the backward.  0, or -1 when out of memory."""
    cdef int P = a.P, r0, r1, g0, g1, ld = a.ldg
    cdef floating* db_ih = <floating*>a.db_ih
    cdef floating* db_hh = <floating*>a.db_hh
    part_rows(a, &r0, &r1)
    part_range(G, a.part, a.nparts, &g0, &g1)
    if dx != NULL and input_grad_rows(tag, a, dA, G, r0, r1, dx):
        return -1
    return input_wgrad(a, g0, g1, dA, ld, P, <const floating*>a.hs, P,
                       dw_hh + <Py_ssize_t>g0 * P, db_ih + g0 if db_ih != NULL else NULL,
                       db_hh + g0 if db_hh != NULL else NULL)


# =======================================================================================
# The cell clip (ONNX's clip: every gate pre-activation bounded to [-clip, clip]); its
# gradient mask is 1 inside (the bounds included, as PyTorch's clamp) and 0 outside or at NaN
# =======================================================================================
cdef inline floating clip_value(floating v, floating c, floating* m, int j) noexcept nogil:
    """v clamped to [-c, c] (NaN stays NaN); m[j] (unless m is NULL) its gradient mask."""
    if m != NULL:
        m[j] = 1 if (v >= -c and v <= c) else 0
    if v < -c:
        return -c
    if v > c:
        return c
    return v


cdef inline floating* clip_mask_row(Args* a, floating tag, int t, int b, int G) noexcept nogil:
    """The clip's mask row of step t, sequence b (G wide), or NULL (no clip, or eval mode)."""
    if a.cmask == NULL:
        return NULL
    return <floating*>a.cmask + (<Py_ssize_t>t * a.B + b) * G


cdef inline void mask_grads(floating* d, const floating* m, int n) noexcept nogil:
    """d[j] *= m[j] (nothing when m is NULL)."""
    cdef int j
    if m != NULL:
        for j in range(n):
            d[j] *= m[j]


cdef inline void clip_row(floating* x, int n, floating c, floating* m) noexcept nogil:
    """x[j] clamped to [-c, c] in place when c > 0 (nothing otherwise); m: the mask row or NULL."""
    cdef int j
    if c > 0:
        for j in range(n):
            x[j] = clip_value(x[j], c, m, j)


# =======================================================================================
# The activations option (fastrnn.activations: ONNX's functions, one per slot of a cell).
# Its rows run in passes over a row, the function's switch outside each loop so that the
# loop vectorises (those of libm's functions excepted); the default rows above and below
# stay as they are, and the kernels take the generic ones only with a.acts.
# =======================================================================================
cdef enum:
    # the codes of fastrnn.activations.NAMES (checked when the module is imported)
    ACT_SIGMOID = 0
    ACT_TANH = 1
    ACT_RELU = 2
    ACT_AFFINE = 3
    ACT_LEAKY_RELU = 4
    ACT_THRESHOLDED_RELU = 5
    ACT_SCALED_TANH = 6
    ACT_HARD_SIGMOID = 7
    ACT_ELU = 8
    ACT_SOFTSIGN = 9
    ACT_SOFTPLUS = 10


cdef inline floating m_fabs(floating v) noexcept nogil:
    if floating is float:
        return fabsf(v)
    else:
        return fabs(v)


cdef inline floating m_expm1(floating v) noexcept nogil:
    """exp(v) - 1 for v <= 0 (or NaN), as elu and softplus's derivative need it.  float32:
    2 t / (1 - t) with t = tanh(v / 2), the vectorised tanh of _common.pxd (1 - t >= 1 here:
    no cancellation; absolute error below 1e-6), where libm's expm1f would stop the loop
    vectorising; float64: libm."""
    cdef float t
    if floating is float:
        t = tanh_f32(<float>0.5 * v)
        return <float>2 * t / (<float>1 - t)
    else:
        return expm1(v)


cdef inline floating m_softplus(floating v) noexcept nogil:
    """log(1 + exp(v)) without overflow: max(v, 0) + log1p(exp(-|v|)); NaN propagates.

    float32 (vectorised: no libm): log1p(u) = 2 atanh(s) with u = exp(-|v|) = (1 - t) / (1 + t),
    t = tanh(|v| / 2), so s = u / (2 + u) = (1 - t) / (3 + t) in [0, 1/3], and atanh's series to
    s^13 (the next term is below 1e-8); absolute error below 1e-6.  float64: libm."""
    cdef floating zero = 0
    cdef floating pos = v if v > zero else zero
    cdef float t, s, s2, p
    if floating is float:
        t = tanh_f32(<float>0.5 * fabsf(v))
        s = (<float>1 - t) / (<float>3 + t)
        s2 = s * s
        p = <float>(1.0 / 13)
        p = p * s2 + <float>(1.0 / 11)
        p = p * s2 + <float>(1.0 / 9)
        p = p * s2 + <float>(1.0 / 7)
        p = p * s2 + <float>(1.0 / 5)
        p = p * s2 + <float>(1.0 / 3)
        p = p * s2 + <float>1
        return pos + <float>2 * s * p
    else:
        return pos + log1p(exp(-fabs(v)))


cdef void act_row(const Act* f, floating* x, Py_ssize_t n) noexcept nogil:
    """x[j] = f(x[j]) in place (x: read and written, n elements), f one slot's activation, as
    fastrnn.activations.forward computes it (NaN propagates).  float32 tanh and sigmoid (and
    scaled_tanh's tanh) are the approximations of _common.pxd; elu and softplus go through that
    tanh in float32 (m_expm1, m_softplus) and call libm in float64."""
    cdef Py_ssize_t j
    cdef floating al = <floating>f.alpha, be = <floating>f.beta, v
    cdef floating zero = 0, one = 1     # (Cython writes literals as doubles: float32 would widen)
    cdef int kind = f.kind
    if kind == ACT_SIGMOID:
        for j in range(n):
            x[j] = act_sigmoid(x[j])
    elif kind == ACT_TANH:
        for j in range(n):
            x[j] = act_tanh(x[j])
    elif kind == ACT_RELU:
        for j in range(n):
            x[j] = act_relu(x[j])
    elif kind == ACT_AFFINE:
        for j in range(n):
            x[j] = al * x[j] + be
    elif kind == ACT_LEAKY_RELU:
        for j in range(n):
            v = x[j]
            x[j] = v if v >= zero else al * v
    elif kind == ACT_THRESHOLDED_RELU:
        for j in range(n):
            v = x[j]
            x[j] = zero if v <= al else v        # NaN is kept
    elif kind == ACT_SCALED_TANH:
        for j in range(n):
            x[j] = al * act_tanh(be * x[j])
    elif kind == ACT_HARD_SIGMOID:
        for j in range(n):
            v = al * x[j] + be
            if v < zero:                         # (compares with NaN are False: it is kept)
                v = zero
            if v > one:
                v = one
            x[j] = v
    elif kind == ACT_ELU:
        for j in range(n):
            v = x[j]
            if not (v >= zero):                  # NaN too: expm1 keeps it
                x[j] = al * m_expm1(v)
    elif kind == ACT_SOFTSIGN:
        for j in range(n):
            v = x[j]
            x[j] = v / (one + m_fabs(v))
    else:
        for j in range(n):
            x[j] = m_softplus(x[j])


cdef void act_grad_row(const Act* f, const floating* y, const floating* din, floating* out,
                       Py_ssize_t n) noexcept nogil:
    """out[j] = din[j] * f'(x_j) from the activation's output y[j] = f(x_j), as
    fastrnn.activations.derivative computes it (its conventions where f' is not defined).

    Parameters
    ----------
    f : the slot's activation
    y : (n,) read, f's outputs
    din : (n,) read, the gradient of the loss with respect to y
    out : (n,) written; it may be y or din (each element is read before it is written)
    """
    cdef Py_ssize_t j
    cdef floating al = <floating>f.alpha, v
    cdef floating zero = 0, one = 1     # (Cython writes literals as doubles: float32 would widen)
    cdef floating c1, c2
    cdef int kind = f.kind
    if kind == ACT_SIGMOID:
        for j in range(n):
            v = y[j]
            out[j] = din[j] * (v * (one - v))
    elif kind == ACT_TANH:
        for j in range(n):
            v = y[j]
            out[j] = din[j] * (one - v * v)
    elif kind == ACT_RELU:
        for j in range(n):
            out[j] = din[j] * (zero if y[j] <= zero else one)
    elif kind == ACT_AFFINE:
        for j in range(n):
            out[j] = din[j] * al
    elif kind == ACT_LEAKY_RELU:
        for j in range(n):
            out[j] = din[j] * (al if y[j] <= zero else one)
    elif kind == ACT_THRESHOLDED_RELU:
        for j in range(n):
            out[j] = din[j] * (zero if y[j] == zero else one)
    elif kind == ACT_SCALED_TANH:
        # alpha * beta * (1 - tanh^2) = alpha * beta - (beta / alpha) * y^2
        c1 = <floating>(f.alpha * f.beta)
        c2 = <floating>(f.beta / f.alpha if f.alpha != 0 else 0)
        for j in range(n):
            v = y[j]
            out[j] = din[j] * (c1 - c2 * v * v)
    elif kind == ACT_HARD_SIGMOID:
        for j in range(n):
            v = y[j]
            out[j] = din[j] * (al if (v > zero and v < one) else zero)   # 0 at its corners
    elif kind == ACT_ELU:
        for j in range(n):
            v = y[j]
            out[j] = din[j] * (v + al if v <= zero else one)
    elif kind == ACT_SOFTSIGN:
        for j in range(n):
            v = one - m_fabs(y[j])
            out[j] = din[j] * (v * v)
    else:
        for j in range(n):
            out[j] = din[j] * (-m_expm1(-y[j]))   # softplus: sigmoid(x) = 1 - exp(-y)


# =======================================================================================
# RNN
# =======================================================================================
cdef int rnn_pre(floating tag, Args* a) noexcept nogil:
    if a.part == 0:
        fill_bias(<floating*>a.bias, <const floating*>a.b_ih, <const floating*>a.b_hh, a.H)
    if not a.chunked and a.w_ih_r == NULL and not a.products_done:
        return input_projection_part(tag, a, a.H)
    return 0


cdef inline void rnn_row_act(floating* row, const floating* bias, int H, floating clip,
                             floating* cm, const Act* f) noexcept nogil:
    """h_t = f(clip(row + bias)) in place: ``row`` (H) read (W h + U x) and written; ``bias``
    (H) read; ``clip`` the cell clip (0: none), ``cm`` its mask row (H, written) or NULL; ``f``
    the activation (a.acts)."""
    add_to(row, row, bias, H)
    clip_row(row, H, clip, cm)
    act_row(f, row, H)


cdef int rnn_fwd_loop(floating tag, Args* a) noexcept nogil:
    cdef int T = a.T, B = a.B, H = a.H, b0 = a.b0, b1 = a.b1
    cdef bint train = a.train, relu = a.variant
    cdef const int64_t* lens = a.lens
    cdef const floating* w_hh = <const floating*>a.w_hh
    cdef const floating* bias = <const floating*>a.bias
    cdef floating* gates = <floating*>a.gates
    cdef floating* hs = <floating*>a.hs
    cdef floating* y = <floating*>a.y
    cdef Py_ssize_t BH = <Py_ssize_t>B * H
    cdef floating* gt
    cdef floating* row
    cdef floating* hprev
    cdef floating* hnext
    cdef floating* yt
    cdef floating* m
    cdef floating v
    cdef int t, t0 = 0, b, j
    cdef Live live
    if live_init(&live, a, b1 - b0, sizeof(floating)) != 0:
        return -1
    for t in range(T):
        if stopped(a):
            break
        live_at(&live, a, t, b0, b1 - b0)
        gt = step_gates(tag, a, H, t, &t0, &live)
        hprev = hs + (t if train else t % 2) * BH
        hnext = hs + (t + 1 if train else (t + 1) % 2) * BH
        yt = y + <Py_ssize_t>t * BH if y != NULL else NULL
        if a.products_done:
            pass
        elif a.w_hh_r != NULL:
            live_mm(&live, H, H, hprev + <Py_ssize_t>b0 * H, H, <const floating*>a.w_hh_r,
                    True, gt + <Py_ssize_t>b0 * H, H)
        else:
            gemm(c'T', c'N', H, b1 - b0, H, <floating>1, w_hh, H, hprev + <Py_ssize_t>b0 * H, H,
                 <floating>1, gt + <Py_ssize_t>b0 * H, H)
        for b in range(b0, b1):
            row = gt + <Py_ssize_t>b * H
            if not valid(lens, t, b):
                memcpy(hnext + <Py_ssize_t>b * H, hprev + <Py_ssize_t>b * H, H * sizeof(floating))
                if yt != NULL:
                    memset(yt + <Py_ssize_t>b * H, 0, H * sizeof(floating))
                continue
            if a.acts:
                rnn_row_act(row, bias, H, <floating>a.clip, clip_mask_row(a, tag, t, b, H),
                            &a.act[0])
            elif a.clip > 0:
                m = clip_mask_row(a, tag, t, b, H)
                for j in range(H):
                    v = clip_value(row[j] + bias[j], <floating>a.clip, m, j)
                    row[j] = act_relu(v) if relu else act_tanh(v)
            elif relu:
                for j in range(H):
                    row[j] = act_relu(row[j] + bias[j])
            else:
                tanh_bias(row, bias, H)
            memcpy(hnext + <Py_ssize_t>b * H, row, H * sizeof(floating))
            if yt != NULL:
                memcpy(yt + <Py_ssize_t>b * H, row, H * sizeof(floating))
    live_free(&live)
    return 0


cdef int rnn_bwd_loop(floating tag, Args* a) noexcept nogil:
    cdef int T = a.T, B = a.B, H = a.H, b0 = a.b0, b1 = a.b1
    cdef bint relu = a.variant
    cdef const int64_t* lens = a.lens
    cdef const floating* w_hh = <const floating*>a.w_hh
    cdef const floating* dy = <const floating*>a.dy
    cdef floating* dh = <floating*>a.dh
    cdef floating* norms = <floating*>a.norms
    cdef floating* dA = <floating*>a.gates   # h_t in, dL/d(pre-activation) out, in place
    cdef Py_ssize_t BH = <Py_ssize_t>B * H
    cdef floating* dht = <floating*>malloc((H + 1) * sizeof(floating))
    cdef floating* da
    cdef floating* dhb
    cdef floating hv
    cdef int t, b, j
    cdef Live live
    if dht == NULL:
        return -1
    if live_init(&live, a, b1 - b0, sizeof(floating)) != 0:
        free(dht)
        return -1
    for t in range(T - 1, -1, -1):
        if stopped(a):
            break
        live_at(&live, a, t, b0, b1 - b0)
        for b in range(b0, b1):
            da = dA + <Py_ssize_t>t * BH + <Py_ssize_t>b * H
            if not valid(lens, t, b):
                memset(da, 0, H * sizeof(floating))
                if norms != NULL:
                    norms[<Py_ssize_t>t * B + b] = 0
                continue
            dhb = dh + <Py_ssize_t>b * H
            if dy != NULL:
                add_to(dht, dhb, dy + <Py_ssize_t>t * BH + <Py_ssize_t>b * H, H)
            else:
                memcpy(dht, dhb, H * sizeof(floating))
            if norms != NULL:
                norms[<Py_ssize_t>t * B + b] = norm2(dht, H)
            if a.acts:
                act_grad_row(&a.act[0], da, dht, da, H)
            elif relu:
                for j in range(H):
                    da[j] = 0 if da[j] <= 0 else dht[j]   # as PyTorch: NaN units pass, inf stays
            else:
                for j in range(H):
                    hv = da[j]
                    da[j] = dht[j] * (1 - hv * hv)
            mask_grads(da, clip_mask_row(a, tag, t, b, H), H)
            memset(dhb, 0, H * sizeof(floating))
        if a.w_hh_r != NULL:
            live_mm(&live, H, H, dA + <Py_ssize_t>t * BH + <Py_ssize_t>b0 * H, H,
                    <const floating*>a.w_hh_r, True, dh + <Py_ssize_t>b0 * H, H)
        else:
            gemm(c'N', c'N', H, b1 - b0, H, <floating>1, w_hh, H,
                 dA + <Py_ssize_t>t * BH + <Py_ssize_t>b0 * H, H, <floating>1, dh + <Py_ssize_t>b0 * H, H)
    free(dht)
    live_free(&live)
    return 0


cdef int rnn_bwd_post(floating tag, Args* a) noexcept nogil:
    cdef const floating* dA = <const floating*>a.gates   # the gradients, after the loop
    return weight_grads_part(tag, a, dA, a.H, <floating*>a.dx, <floating*>a.dw_hh)


# =======================================================================================
# LSTM (gate order i, f, g, o; optional projection h = W_hr m)
# =======================================================================================
cdef inline void lstm_grad_row_var(floating* row, const floating* tcr, const floating* cprev,
                                   const floating* dm, floating* dc, const floating* ph,
                                   bint coupled, const floating* cm, int H) noexcept nogil:
    """lstm_grad_row of the variants: peepholes ``ph`` (3H: i, f, o, or NULL), whose o's
    pre-activation gradient flows into dc_t through p_o and i's and f's into dc_{t-1} through
    p_i and p_f; ``coupled`` gates (f = 1 - i), where i reaches c_t through f too; ``cm`` the
    clip's mask row (4H) or NULL."""
    cdef int j
    cdef floating i, f, g, o, tcv, dmv, dao, dct
    for j in range(H):
        i, f, g, o = row[j], row[H + j], row[2 * H + j], row[3 * H + j]
        tcv, dmv = tcr[j], dm[j]
        dao = dmv * tcv * o * (1 - o)
        if cm != NULL:
            dao = dao * cm[3 * H + j]
        dct = dc[j] + dmv * o * (1 - tcv * tcv)
        if ph != NULL:
            dct = dct + dao * ph[2 * H + j]
        if coupled:
            row[j] = dct * (g - cprev[j]) * i * (1 - i)
            row[H + j] = 0
        else:
            row[j] = dct * g * i * (1 - i)
            row[H + j] = dct * cprev[j] * f * (1 - f)
        row[2 * H + j] = dct * i * (1 - g * g)
        row[3 * H + j] = dao
        if cm != NULL:
            row[j] *= cm[j]
            row[H + j] *= cm[H + j]
            row[2 * H + j] *= cm[2 * H + j]
        dc[j] = dct * f
        if ph != NULL:
            dc[j] += row[j] * ph[j] + row[H + j] * ph[H + j]


cdef void lstm_cell_row_act(floating* row, const floating* bias, const floating* cprev,
                            floating* cnext, floating* tcr, floating* m, int H,
                            const floating* ph, bint coupled, floating clip, floating* cm,
                            const Act* act) noexcept nogil:
    """_common.pxd's lstm_row with the activations ``act`` (a.acts; f: i, f, o; g: the
    candidate; h: c_t), in passes over the row.

    Parameters
    ----------
    row : (4H) read (the gate pre-activations without bias) and written (the gates [i, f, g, o])
    bias : (4H) read
    cprev : (H) read, c_{t-1}
    cnext : (H) written, c_t
    tcr : (H) written, h(c_t)
    m : (H) written, m_t = o * h(c_t)
    ph : (3H: i, f, o) read, the peepholes, or NULL
    coupled : f = 1 - i (input_forget)
    clip : the cell clip of the pre-activations (0: none)
    cm : (4H) written, the clip's mask row, or NULL
    act : (3) the activations of the slots f, g, h
    """
    cdef int j
    cdef floating one = 1
    if ph != NULL:
        for j in range(H):
            row[j] += ph[j] * cprev[j]
            row[H + j] += ph[H + j] * cprev[j]
    add_to(row, row, bias, 3 * H)
    clip_row(row, 3 * H, clip, cm)                   # i, f, g
    if coupled:
        act_row(&act[0], row, H)                     # i
        for j in range(H):
            row[H + j] = one - row[j]
    else:
        act_row(&act[0], row, 2 * H)                 # i, f
    act_row(&act[1], row + 2 * H, H)                 # g
    cell_state(cnext, row, row + H, row + 2 * H, cprev, H)
    if ph != NULL:
        for j in range(H):
            row[3 * H + j] += ph[2 * H + j] * cnext[j]
    add_to(row + 3 * H, row + 3 * H, bias + 3 * H, H)
    clip_row(row + 3 * H, H, clip, cm + 3 * H if cm != NULL else NULL)
    act_row(&act[0], row + 3 * H, H)                 # o
    memcpy(tcr, cnext, H * sizeof(floating))
    act_row(&act[2], tcr, H)                         # h(c_t)
    mul_to(m, row + 3 * H, tcr, H)


cdef void lstm_grad_row_act(floating* row, const floating* tcr, const floating* cprev,
                            const floating* dm, floating* dc, const floating* ph, bint coupled,
                            const floating* cm, int H, const Act* act,
                            floating* s) noexcept nogil:
    """lstm_grad_row_var with the activations ``act`` (a.acts), in row passes.

    Parameters
    ----------
    row : (4H) read (the gates [i, f, g, o]) and written (the gradients of their
        pre-activations)
    tcr : (H) read, h(c_t)
    cprev : (H) read, c_{t-1}
    dm : (H) read, the gradient of m_t
    dc : (H) read (dc_t from the later steps) and written (dc_{t-1})
    ph : (3H: i, f, o) read, the peepholes, or NULL
    coupled : f = 1 - i (input_forget): i reaches c_t through f too
    cm : (4H) read, the clip's mask row, or NULL
    act : (3) the activations of the slots f, g, h
    s : (3H) scratch
    """
    cdef floating* si = s
    cdef floating* sf = s + H
    cdef floating* sg = s + 2 * H
    cdef int j
    # (one output per loop: with more, the compiler's checks of their overlap stop it vectorising)
    mul_to(si, dm, row + 3 * H, H)                       # dL/dh(c_t) = dm * o
    mul_to(sf, dm, tcr, H)                               # dL/do = dm * h(c_t)
    act_grad_row(&act[2], tcr, si, si, H)                # dm * o * h'(c_t)
    act_grad_row(&act[0], row + 3 * H, sf, row + 3 * H, H)   # da_o
    if cm != NULL:
        mask_grads(row + 3 * H, cm + 3 * H, H)
    add_to(dc, dc, si, H)                                # dc_t
    if ph != NULL:
        for j in range(H):
            dc[j] += row[3 * H + j] * ph[2 * H + j]
    if coupled:
        for j in range(H):
            si[j] = dc[j] * (row[2 * H + j] - cprev[j])  # dL/di (through f = 1 - i too)
    else:
        mul_to(si, dc, row + 2 * H, H)                   # dL/di = dc_t * g
        mul_to(sf, dc, cprev, H)                         # dL/df = dc_t * c_{t-1}
    mul_to(sg, dc, row, H)                               # dL/dg = dc_t * i
    mul_to(dc, dc, row + H, H)                           # dc_t * f
    act_grad_row(&act[0], row, si, row, H)               # da_i
    if coupled:
        memset(row + H, 0, H * sizeof(floating))         # da_f: f is no gate of its own
    else:
        act_grad_row(&act[0], row + H, sf, row + H, H)   # da_f
    act_grad_row(&act[1], row + 2 * H, sg, row + 2 * H, H)   # da_g
    mask_grads(row, cm, 3 * H)
    if ph != NULL:
        for j in range(H):
            dc[j] += row[j] * ph[j] + row[H + j] * ph[H + j]


cdef int lstm_pre(floating tag, Args* a) noexcept nogil:
    if a.part == 0:
        fill_bias(<floating*>a.bias, <const floating*>a.b_ih, <const floating*>a.b_hh, 4 * a.H)
    if not a.chunked and a.w_ih_r == NULL and not a.products_done:
        return input_projection_part(tag, a, 4 * a.H)
    return 0


cdef inline void project(floating tag, Args* a, int nb, const floating* m, floating* out,
                         Live* live) noexcept nogil:
    """out (nb x P) = m (nb x H) @ w_hr^T: the LSTM projection of a slice's running rows."""
    if a.w_hr_r != NULL:
        live_mm(live, a.H, a.P, m, a.H, <const floating*>a.w_hr_r, False, out, a.P)
    else:
        gemm(c'T', c'N', a.P, nb, a.H, <floating>1, <const floating*>a.w_hr, a.H, m, a.H,
             <floating>0, out, a.P)


cdef int lstm_fwd_loop(floating tag, Args* a) noexcept nogil:
    cdef int T = a.T, B = a.B, H = a.H, P = a.P, G = 4 * a.H
    cdef int b0 = a.b0, b1 = a.b1, nb = a.b1 - a.b0
    cdef bint train = a.train
    cdef bint proj = a.w_hr != NULL
    cdef const int64_t* lens = a.lens
    cdef const floating* w_hh = <const floating*>a.w_hh
    cdef const floating* w_hr = <const floating*>a.w_hr
    cdef const floating* bias = <const floating*>a.bias
    cdef floating* gates = <floating*>a.gates
    cdef floating* hs = <floating*>a.hs
    cdef floating* cs = <floating*>a.cs
    cdef floating* tc = <floating*>a.tc
    cdef floating* mb = <floating*>a.mb
    cdef floating* y = <floating*>a.y
    cdef Py_ssize_t ldg = a.ldg, BG = <Py_ssize_t>B * a.ldg, BH = <Py_ssize_t>B * H, BP = <Py_ssize_t>B * P
    # scratch: h(c_t) of an eval step with activations (H), projection output with lengths (nb*P)
    cdef floating* tcs = <floating*>malloc((H + <Py_ssize_t>nb * P + 1) * sizeof(floating))
    cdef floating* ptmp = tcs + H
    cdef floating* gt
    cdef floating* hprev
    cdef floating* hnext
    cdef floating* cprev
    cdef floating* cnext
    cdef floating* mt
    cdef floating* yt
    cdef floating* pout
    cdef int t, t0 = 0, b
    cdef Live live
    if tcs == NULL:
        return -1
    if live_init(&live, a, nb, sizeof(floating)) != 0:
        free(tcs)
        return -1
    for t in range(T):
        if stopped(a):
            break
        live_at(&live, a, t, b0, nb)
        gt = step_gates(tag, a, G, t, &t0, &live)
        hprev = hs + (t if train else t % 2) * BP
        hnext = hs + (t + 1 if train else (t + 1) % 2) * BP
        cprev = cs + (t if train else t % 2) * BH
        cnext = cs + (t + 1 if train else (t + 1) % 2) * BH
        mt = mb + (<Py_ssize_t>t * BH if train else 0) if proj else NULL
        yt = y + <Py_ssize_t>t * BP if y != NULL else NULL
        if a.products_done:
            pass
        elif a.w_hh_r != NULL:
            live_mm(&live, P, G, hprev + <Py_ssize_t>b0 * P, P, <const floating*>a.w_hh_r, True,
                    gt + b0 * ldg, <int>ldg)
        else:
            gemm(c'T', c'N', G, nb, P, <floating>1, w_hh, P, hprev + <Py_ssize_t>b0 * P, P,
                 <floating>1, gt + b0 * ldg, <int>ldg)
        for b in range(b0, b1):
            if not valid(lens, t, b):
                memcpy(hnext + <Py_ssize_t>b * P, hprev + <Py_ssize_t>b * P, P * sizeof(floating))
                memcpy(cnext + <Py_ssize_t>b * H, cprev + <Py_ssize_t>b * H, H * sizeof(floating))
                if yt != NULL:
                    memset(yt + <Py_ssize_t>b * P, 0, P * sizeof(floating))
                if proj:
                    memset(mt + <Py_ssize_t>b * H, 0, H * sizeof(floating))
                continue
            if a.acts:
                lstm_cell_row_act(gt + b * ldg, bias, cprev + <Py_ssize_t>b * H,
                                  cnext + <Py_ssize_t>b * H,
                                  tc + <Py_ssize_t>t * BH + <Py_ssize_t>b * H if train else tcs,
                                  mt + <Py_ssize_t>b * H if proj else hnext + <Py_ssize_t>b * P,
                                  H, <const floating*>a.w_ph, a.variant, <floating>a.clip,
                                  clip_mask_row(a, tag, t, b, G), &a.act[0])
            else:
                lstm_row(gt + b * ldg, bias, <const floating*>a.w_ph, cprev + <Py_ssize_t>b * H,
                         cnext + <Py_ssize_t>b * H,
                         tc + <Py_ssize_t>t * BH + <Py_ssize_t>b * H if train else NULL,
                         mt + <Py_ssize_t>b * H if proj else hnext + <Py_ssize_t>b * P,
                         clip_mask_row(a, tag, t, b, G), H, a.variant, <floating>a.clip, train)
            if not proj and yt != NULL:
                memcpy(yt + <Py_ssize_t>b * P, hnext + <Py_ssize_t>b * P, P * sizeof(floating))
        if proj:
            if lens == NULL:
                project(tag, a, nb, mt + <Py_ssize_t>b0 * H, hnext + <Py_ssize_t>b0 * P, &live)
                if yt != NULL:
                    memcpy(yt + <Py_ssize_t>b0 * P, hnext + <Py_ssize_t>b0 * P,
                           <Py_ssize_t>nb * P * sizeof(floating))
            else:
                pout = yt + <Py_ssize_t>b0 * P if yt != NULL else ptmp
                project(tag, a, nb, mt + <Py_ssize_t>b0 * H, pout, &live)
                for b in range(b0, b1):
                    if valid(lens, t, b):
                        memcpy(hnext + <Py_ssize_t>b * P, pout + <Py_ssize_t>(b - b0) * P,
                               P * sizeof(floating))
                    elif yt != NULL:
                        memset(yt + <Py_ssize_t>b * P, 0, P * sizeof(floating))
    free(tcs)
    live_free(&live)
    return 0


cdef int lstm_bwd_loop(floating tag, Args* a) noexcept nogil:
    cdef int T = a.T, B = a.B, H = a.H, P = a.P, G = 4 * a.H
    cdef int b0 = a.b0, b1 = a.b1, nb = a.b1 - a.b0
    cdef bint proj = a.w_hr != NULL
    cdef const int64_t* lens = a.lens
    cdef const floating* w_hh = <const floating*>a.w_hh
    cdef const floating* w_hr = <const floating*>a.w_hr
    cdef const floating* cs = <const floating*>a.cs
    cdef const floating* tc = <const floating*>a.tc
    cdef const floating* dy = <const floating*>a.dy
    cdef floating* dh = <floating*>a.dh
    cdef floating* dc = <floating*>a.dc
    cdef floating* norms = <floating*>a.norms
    cdef floating* dA = <floating*>a.gates   # gates in, their gradients out, in place
    cdef floating* dhts = <floating*>a.dht
    cdef Py_ssize_t ldg = a.ldg, BG = <Py_ssize_t>B * a.ldg, BH = <Py_ssize_t>B * H, BP = <Py_ssize_t>B * P
    # scratch: dh_t rows without projection (nb*P), dm with projection (nb*H), and the
    # generic rows' (3H, with a.acts)
    cdef floating* scratch = <floating*>malloc((<Py_ssize_t>nb * (P + H) + (3 * H if a.acts else 0)
                                                + 1) * sizeof(floating))
    cdef floating* dm = scratch + <Py_ssize_t>nb * P
    cdef floating* sact = dm + <Py_ssize_t>nb * H
    cdef floating* dht
    cdef floating* dr
    cdef floating* dmt
    cdef Py_ssize_t off
    cdef int t, b
    cdef Live live
    if scratch == NULL:
        return -1
    if live_init(&live, a, nb, sizeof(floating)) != 0:
        free(scratch)
        return -1
    for t in range(T - 1, -1, -1):
        if stopped(a):
            break
        live_at(&live, a, t, b0, nb)
        dht = dhts + <Py_ssize_t>t * BP + <Py_ssize_t>b0 * P if proj else scratch
        for b in range(b0, b1):
            dr = dht + <Py_ssize_t>(b - b0) * P
            if not valid(lens, t, b):
                memset(dr, 0, P * sizeof(floating))
                if norms != NULL:
                    norms[<Py_ssize_t>t * B + b] = 0
                continue
            if dy != NULL:
                add_to(dr, dh + <Py_ssize_t>b * P, dy + <Py_ssize_t>t * BP + <Py_ssize_t>b * P, P)
            else:
                memcpy(dr, dh + <Py_ssize_t>b * P, P * sizeof(floating))
            memset(dh + <Py_ssize_t>b * P, 0, P * sizeof(floating))
            if norms != NULL:
                norms[<Py_ssize_t>t * B + b] = norm2(dr, P)
        if proj:
            if a.w_hr_r != NULL:
                live_mm(&live, P, H, dht, P, <const floating*>a.w_hr_r, False, dm, H)
            else:
                gemm(c'N', c'N', H, nb, P, <floating>1, w_hr, H, dht, P, <floating>0, dm, H)
            dmt = dm
        else:
            dmt = dht
        for b in range(b0, b1):
            off = <Py_ssize_t>t * BG + b * ldg
            if not valid(lens, t, b):
                memset(dA + off, 0, G * sizeof(floating))
                continue
            if a.acts:
                lstm_grad_row_act(dA + off, tc + <Py_ssize_t>t * BH + <Py_ssize_t>b * H,
                                  cs + <Py_ssize_t>t * BH + <Py_ssize_t>b * H,
                                  dmt + <Py_ssize_t>(b - b0) * H, dc + <Py_ssize_t>b * H,
                                  <const floating*>a.w_ph, a.variant,
                                  clip_mask_row(a, tag, t, b, G), H, &a.act[0], sact)
            elif a.w_ph != NULL or a.variant or a.cmask != NULL:
                lstm_grad_row_var(dA + off, tc + <Py_ssize_t>t * BH + <Py_ssize_t>b * H,
                                  cs + <Py_ssize_t>t * BH + <Py_ssize_t>b * H,
                                  dmt + <Py_ssize_t>(b - b0) * H, dc + <Py_ssize_t>b * H,
                                  <const floating*>a.w_ph, a.variant,
                                  clip_mask_row(a, tag, t, b, G), H)
            else:
                lstm_grad_row(dA + off, tc + <Py_ssize_t>t * BH + <Py_ssize_t>b * H,
                              cs + <Py_ssize_t>t * BH + <Py_ssize_t>b * H,
                              dmt + <Py_ssize_t>(b - b0) * H, dc + <Py_ssize_t>b * H, H)
        if a.w_hh_r != NULL:
            live_mm(&live, G, P, dA + <Py_ssize_t>t * BG + b0 * ldg, <int>ldg,
                    <const floating*>a.w_hh_r, True, dh + <Py_ssize_t>b0 * P, P)
        else:
            gemm(c'N', c'N', P, nb, G, <floating>1, w_hh, P, dA + <Py_ssize_t>t * BG + b0 * ldg,
                 <int>ldg, <floating>1, dh + <Py_ssize_t>b0 * P, P)
    free(scratch)
    live_free(&live)
    return 0


cdef int lstm_bwd_post(floating tag, Args* a) noexcept nogil:
    cdef int H = a.H, P = a.P, G = 4 * a.H, TB = a.T * a.B, p0, p1
    cdef const floating* dA = <const floating*>a.gates   # the gradients, after the loop
    if weight_grads_part(tag, a, dA, G, <floating*>a.dx, <floating*>a.dw_hh):
        return -1
    if a.w_hr != NULL:
        # dW_hr (P, H) += dh^T m over T*B rows; this part's rows of P
        part_range(P, a.part, a.nparts, &p0, &p1)
        if wgrad(p1 - p0, grad_rows(a), a.live_rows, H, <const floating*>a.dht + p0, P,
                 <const floating*>a.mb, H,
                 <floating*>a.dw_hr + <Py_ssize_t>p0 * H, H):
            return -1
    if a.dw_ph != NULL and a.part == 0:
        peephole_grads(tag, a, dA)
    return 0


cdef void peephole_grads(floating tag, Args* a, const floating* dA) noexcept nogil:
    """dW_ph (3, H) += sum over the T*B rows of [da_i * c_{t-1}, da_f * c_{t-1}, da_o * c_t]."""
    cdef int H = a.H, TB = a.T * a.B, r, j
    cdef Py_ssize_t BH = <Py_ssize_t>a.B * H
    cdef const floating* cs = <const floating*>a.cs   # slot t: c_{t-1}, slot t + 1: c_t
    cdef floating* dph = <floating*>a.dw_ph
    cdef const floating* d
    cdef const floating* cp
    cdef const floating* cn
    for r in range(TB):
        d = dA + <Py_ssize_t>r * a.ldg
        cp = cs + <Py_ssize_t>r * H
        cn = cp + BH
        for j in range(H):
            dph[j] += d[j] * cp[j]
            dph[H + j] += d[H + j] * cp[j]
            dph[2 * H + j] += d[3 * H + j] * cn[j]


# =======================================================================================
# GRU (gate order r, z, n; the reset gate after the recurrent product, or before it with
# a.variant: then a step makes two products, h @ W_hrz^T and (r * h) @ W_hn^T)
# =======================================================================================
cdef void gru_cell_row_act(floating* row, const floating* gh, const floating* bias,
                           const floating* hprev, floating* hnext, int H, floating clip,
                           floating* cm, const Act* act) noexcept nogil:
    """_common.pxd's gru_row with the activations ``act`` (a.acts), in passes over the row.

    Parameters
    ----------
    row : (4H) read (U x in its first 3H) and written ([r, z, n, W_hn h + b_hn])
    gh : (3H) read, W_hh h_{t-1}
    bias : (4H) read, [b_ir + b_hr, b_iz + b_hz, b_in, b_hn]
    hprev : (H) read, h_{t-1}
    hnext : (H) written, h_t
    clip : the cell clip of the pre-activations (0: none)
    cm : (3H) written, the clip's mask row, or NULL
    act : (2) the activations of the slots f (r, z) and g (n)
    """
    cdef int j
    cdef floating hn
    for j in range(2 * H):
        row[j] = row[j] + gh[j] + bias[j]
    clip_row(row, 2 * H, clip, cm)
    act_row(&act[0], row, 2 * H)                     # r, z
    for j in range(H):
        hn = gh[2 * H + j] + bias[3 * H + j]
        row[3 * H + j] = hn
        row[2 * H + j] = row[2 * H + j] + bias[2 * H + j] + row[j] * hn
    clip_row(row + 2 * H, H, clip, cm + 2 * H if cm != NULL else NULL)
    act_row(&act[1], row + 2 * H, H)                 # n
    gru_state(hnext, row + H, row + 2 * H, hprev, H)


cdef void gru_grad_row_act(floating* row, const floating* hprev, const floating* dht,
                           floating* gh, floating* dh, int H, const Act* act) noexcept nogil:
    """gru_grad_row with the activations ``act`` (a.acts), in row passes.

    Parameters
    ----------
    row : (4H) read ([r, z, n, W_hn h + b_hn]) and written ([dr, dz, dn, dn*r])
    hprev : (H) read, h_{t-1}
    dht : (H) read, the gradient of h_t
    gh : (3H) written, [dr, dz, dn*r] (the gradient of W_hh h + b_hh); scratch before
    dh : (H) written, dh_t * z
    act : (2) the activations of the slots f (r, z) and g (n)
    """
    cdef int j
    # (one output per loop: with more, the compiler's checks of their overlap stop it vectorising)
    for j in range(H):
        gh[2 * H + j] = dht[j] - dht[j] * row[H + j]     # dL/dn
    for j in range(H):
        gh[H + j] = dht[j] * (hprev[j] - row[2 * H + j])     # dL/dz
    mul_to(dh, dht, row + H, H)
    act_grad_row(&act[1], row + 2 * H, gh + 2 * H, row + 2 * H, H)   # dn
    act_grad_row(&act[0], row + H, gh + H, row + H, H)               # dz
    mul_to(gh, row + 2 * H, row + 3 * H, H)              # dL/dr = dn * (W_hn h + b_hn)
    mul_to(row + 3 * H, row + 2 * H, row, H)             # dn * r
    act_grad_row(&act[0], row, gh, row, H)               # dr
    memcpy(gh, row, 2 * H * sizeof(floating))
    memcpy(gh + 2 * H, row + 3 * H, H * sizeof(floating))


cdef void gru_rb_rz_act(floating* row, const floating* gh, const floating* bias,
                        const floating* hprev, int H, floating clip, floating* cm,
                        const Act* f) noexcept nogil:
    """The first pass of a step of the reset-before GRU with the activations (a.acts): r, z and
    r * h_{t-1}.

    Parameters
    ----------
    row : (4H) read (U x in its first 3H) and written (r, z in 0:2H; r * h_{t-1} in 3H:4H)
    gh : (2H) read, W_hrz h_{t-1}
    bias : (2H) read, [b_ir + b_hr, b_iz + b_hz]
    hprev : (H) read, h_{t-1}
    clip : the cell clip of the pre-activations (0: none)
    cm : (3H) written (its first 2H), the clip's mask row, or NULL
    f : the activation of the slot f (r, z)
    """
    cdef int j
    for j in range(2 * H):
        row[j] = row[j] + gh[j] + bias[j]
    clip_row(row, 2 * H, clip, cm)
    act_row(f, row, 2 * H)
    for j in range(H):
        row[3 * H + j] = row[j] * hprev[j]


cdef void gru_rb_n_act(floating* row, const floating* gh, const floating* bias,
                       const floating* hprev, floating* hnext, int H, floating clip,
                       floating* cm, const Act* g) noexcept nogil:
    """The second pass of a step of the reset-before GRU with the activations (a.acts): n, h_t.

    Parameters
    ----------
    row : (4H) read (r, z, U_n x) and written (n in 2H:3H)
    gh : (3H) read, its last H: W_hn (r * h_{t-1})
    bias : (4H) read, b_in in 2H:3H, b_hn in 3H:4H
    hprev : (H) read, h_{t-1}
    hnext : (H) written, h_t
    clip : the cell clip of the pre-activations (0: none)
    cm : (3H) written (its last H), the clip's mask row, or NULL
    g : the activation of the slot g (n)
    """
    cdef int j
    for j in range(H):
        row[2 * H + j] = row[2 * H + j] + bias[2 * H + j] + gh[2 * H + j] + bias[3 * H + j]
    clip_row(row + 2 * H, H, clip, cm + 2 * H if cm != NULL else NULL)
    act_row(g, row + 2 * H, H)
    gru_state(hnext, row + H, row + 2 * H, hprev, H)


cdef void gru_rb_grad_zn_act(floating* row, const floating* hprev, floating* dht, floating* dh,
                             floating* s, int H, const Act* act) noexcept nogil:
    """The first pass of a backward step of the reset-before GRU with the activations
    (a.acts): dz, dn.

    Parameters
    ----------
    row : (4H) read ([r, z, n, r * h]) and written (dz, dn in H:3H)
    hprev : (H) read, h_{t-1}
    dht : (H) read (the gradient of h_t), then scratch
    dh : (H) written, dh_t * z
    s : (H) scratch
    act : (2) the activations of the slots f (r, z) and g (n)
    """
    cdef int j
    # (one output per loop: with more, the compiler's checks of their overlap stop it vectorising)
    for j in range(H):
        s[j] = dht[j] * (hprev[j] - row[2 * H + j])      # dL/dz
    mul_to(dh, dht, row + H, H)
    for j in range(H):
        dht[j] = dht[j] - dht[j] * row[H + j]            # dL/dn
    act_grad_row(&act[1], row + 2 * H, dht, row + 2 * H, H)   # dn
    act_grad_row(&act[0], row + H, s, row + H, H)             # dz


cdef void gru_rb_grad_r_act(floating* row, const floating* hprev, floating* drh, floating* dh,
                            int H, const Act* f) noexcept nogil:
    """The second pass of a backward step of the reset-before GRU with the activations
    (a.acts): dr, and d(r * h)'s share of dh_{t-1}.

    Parameters
    ----------
    row : (4H) read (r in 0:H) and written (dr in 0:H)
    hprev : (H) read, h_{t-1}
    drh : (H) read (d(r * h) = dn @ W_hn), then scratch
    dh : (H) read and written, += d(r * h) * r
    f : the activation of the slot f (r, z)
    """
    cdef int j
    for j in range(H):
        dh[j] += drh[j] * row[j]
        drh[j] = drh[j] * hprev[j]                       # dL/dr
    act_grad_row(f, row, drh, row, H)


cdef int gru_pre(floating tag, Args* a) noexcept nogil:
    cdef int H = a.H, j
    cdef floating* bias = <floating*>a.bias
    cdef const floating* b_ih = <const floating*>a.b_ih
    cdef const floating* b_hh = <const floating*>a.b_hh
    # [b_ir + b_hr, b_iz + b_hz, b_in, b_hn]
    if a.part == 0:
        fill_bias(bias, b_ih, b_hh, 2 * H)
        for j in range(H):
            bias[2 * H + j] = b_ih[2 * H + j] if b_ih != NULL else 0
            bias[3 * H + j] = b_hh[2 * H + j] if b_hh != NULL else 0
    if not a.chunked and a.w_ih_r == NULL and not a.products_done:
        return input_projection_part(tag, a, 3 * H)
    return 0


cdef int gru_fwd_loop(floating tag, Args* a) noexcept nogil:
    if a.variant:
        return gru_rb_fwd_loop(tag, a)
    cdef int T = a.T, B = a.B, H = a.H, G3 = 3 * a.H
    cdef int b0 = a.b0, b1 = a.b1, nb = a.b1 - a.b0
    cdef bint train = a.train
    cdef const int64_t* lens = a.lens
    cdef const floating* w_hh = <const floating*>a.w_hh
    cdef const floating* bias = <const floating*>a.bias
    cdef floating* gates = <floating*>a.gates
    cdef floating* hs = <floating*>a.hs
    cdef floating* y = <floating*>a.y
    cdef Py_ssize_t BH = <Py_ssize_t>B * H, ldg = a.ldg, BG = <Py_ssize_t>B * a.ldg
    # scratch: W_hh h for one step of the slice (nb rows of 3H, padded: see padded_width)
    cdef int ldh = padded_width(G3, sizeof(floating))
    cdef floating* ghb = <floating*>malloc((<Py_ssize_t>nb * ldh + 1) * sizeof(floating))
    cdef floating* gt
    cdef floating* hprev
    cdef floating* hnext
    cdef floating* yt
    cdef int t, t0 = 0, b
    cdef Live live
    if ghb == NULL:
        return -1
    if live_init(&live, a, nb, sizeof(floating)) != 0:
        free(ghb)
        return -1
    for t in range(T):
        if stopped(a):
            break
        live_at(&live, a, t, b0, nb)
        gt = step_gates(tag, a, G3, t, &t0, &live)
        hprev = hs + (t if train else t % 2) * BH
        hnext = hs + (t + 1 if train else (t + 1) % 2) * BH
        yt = y + <Py_ssize_t>t * BH if y != NULL else NULL
        if a.products_done:     # (one step: the team's W_hh h, the same rows and stride)
            memcpy(ghb, a.ghb, (<Py_ssize_t>nb * ldh) * sizeof(floating))
        elif a.w_hh_r != NULL:
            live_mm(&live, H, G3, hprev + <Py_ssize_t>b0 * H, H, <const floating*>a.w_hh_r,
                    False, ghb, ldh)
        else:
            gemm(c'T', c'N', G3, nb, H, <floating>1, w_hh, H, hprev + <Py_ssize_t>b0 * H, H,
                 <floating>0, ghb, ldh)
        for b in range(b0, b1):
            if not valid(lens, t, b):
                memcpy(hnext + <Py_ssize_t>b * H, hprev + <Py_ssize_t>b * H, H * sizeof(floating))
                if yt != NULL:
                    memset(yt + <Py_ssize_t>b * H, 0, H * sizeof(floating))
                continue
            if a.acts:
                gru_cell_row_act(gt + b * ldg, ghb + <Py_ssize_t>(b - b0) * ldh, bias,
                                 hprev + <Py_ssize_t>b * H, hnext + <Py_ssize_t>b * H, H,
                                 <floating>a.clip, clip_mask_row(a, tag, t, b, G3), &a.act[0])
            else:
                gru_row(gt + b * ldg, ghb + <Py_ssize_t>(b - b0) * ldh, bias,
                        hprev + <Py_ssize_t>b * H, hnext + <Py_ssize_t>b * H,
                        clip_mask_row(a, tag, t, b, G3), H, <floating>a.clip, train)
            if yt != NULL:
                memcpy(yt + <Py_ssize_t>b * H, hnext + <Py_ssize_t>b * H, H * sizeof(floating))
    free(ghb)
    live_free(&live)
    return 0


cdef inline void gru_mask_grads(floating* row, floating* gh, const floating* cm,
                                int H) noexcept nogil:
    """The clip's mask row ``cm`` (3H: r, z, n) on what gru_grad_row wrote: dn's mask reaches
    dr (dr is dn times its factors) and dn*r as well."""
    cdef int j
    cdef floating mn
    for j in range(H):
        mn = cm[2 * H + j]
        row[j] *= mn * cm[j]
        row[H + j] *= cm[H + j]
        row[2 * H + j] *= mn
        row[3 * H + j] *= mn
        gh[j] = row[j]
        gh[H + j] = row[H + j]
        gh[2 * H + j] = row[3 * H + j]


cdef int gru_bwd_loop(floating tag, Args* a) noexcept nogil:
    if a.variant:
        return gru_rb_bwd_loop(tag, a)
    cdef int T = a.T, B = a.B, H = a.H, G3 = 3 * a.H, G4 = 4 * a.H, b0 = a.b0, b1 = a.b1
    cdef int nb = a.b1 - a.b0
    cdef const int64_t* lens = a.lens
    cdef const floating* w_hh = <const floating*>a.w_hh
    cdef const floating* hs = <const floating*>a.hs
    cdef const floating* dy = <const floating*>a.dy
    cdef floating* dh = <floating*>a.dh
    cdef floating* norms = <floating*>a.norms
    cdef floating* D = <floating*>a.gates    # [r, z, n, hn] in, [dr, dz, dn, dn*r] out, in place
    cdef Py_ssize_t BH = <Py_ssize_t>B * H, ldg = a.ldg, BG4 = <Py_ssize_t>B * a.ldg
    # scratch: dh_t of one sequence (H), [dr, dz, dn*r] of this step's slice (nb rows of 3H,
    # padded: see padded_width), so that the step's product is one GEMM over 3H columns
    cdef int ldh = padded_width(G3, sizeof(floating))
    cdef floating* dht = <floating*>malloc((H + <Py_ssize_t>nb * ldh + 1) * sizeof(floating))
    cdef floating* ghb = dht + H
    cdef floating* dhb
    cdef floating* gh
    cdef bint clipped = a.cmask != NULL
    cdef int t, b
    cdef Live live
    if dht == NULL:
        return -1
    if live_init(&live, a, nb, sizeof(floating)) != 0:
        free(dht)
        return -1
    for t in range(T - 1, -1, -1):
        if stopped(a):
            break
        live_at(&live, a, t, b0, nb)
        for b in range(b0, b1):
            gh = ghb + <Py_ssize_t>(b - b0) * ldh
            if not valid(lens, t, b):
                memset(D + <Py_ssize_t>t * BG4 + b * ldg, 0, G4 * sizeof(floating))
                memset(gh, 0, G3 * sizeof(floating))
                if norms != NULL:
                    norms[<Py_ssize_t>t * B + b] = 0
                continue
            dhb = dh + <Py_ssize_t>b * H
            if dy != NULL:
                add_to(dht, dhb, dy + <Py_ssize_t>t * BH + <Py_ssize_t>b * H, H)
            else:
                memcpy(dht, dhb, H * sizeof(floating))
            if norms != NULL:
                norms[<Py_ssize_t>t * B + b] = norm2(dht, H)
            if a.acts:
                gru_grad_row_act(D + <Py_ssize_t>t * BG4 + b * ldg,
                                 hs + <Py_ssize_t>t * BH + <Py_ssize_t>b * H, dht, gh, dhb, H,
                                 &a.act[0])
            else:
                gru_grad_row(D + <Py_ssize_t>t * BG4 + b * ldg,
                             hs + <Py_ssize_t>t * BH + <Py_ssize_t>b * H, dht, gh, dhb, H)
            if clipped:
                gru_mask_grads(D + <Py_ssize_t>t * BG4 + b * ldg, gh,
                               clip_mask_row(a, tag, t, b, G3), H)
        if a.w_hh_r != NULL:
            live_mm(&live, G3, H, ghb, ldh, <const floating*>a.w_hh_r, True,
                    dh + <Py_ssize_t>b0 * H, H)
        else:
            gemm(c'N', c'N', H, nb, G3, <floating>1, w_hh, H, ghb, ldh, <floating>1,
                 dh + <Py_ssize_t>b0 * H, H)
    free(dht)
    live_free(&live)
    return 0


cdef int gru_rb_fwd_loop(floating tag, Args* a) noexcept nogil:
    """:func:`gru_fwd_loop` of the reset-before GRU: the store row becomes [r, z, n, r * h]."""
    cdef int T = a.T, B = a.B, H = a.H, G3 = 3 * a.H
    cdef int b0 = a.b0, b1 = a.b1, nb = a.b1 - a.b0
    cdef bint train = a.train
    cdef const int64_t* lens = a.lens
    cdef const floating* w_hh = <const floating*>a.w_hh
    cdef const floating* bias = <const floating*>a.bias
    cdef floating* hs = <floating*>a.hs
    cdef floating* y = <floating*>a.y
    cdef Py_ssize_t BH = <Py_ssize_t>B * H, ldg = a.ldg
    # scratch: [W_hrz h, W_hn (r * h)] for one step of the slice (nb rows of 3H, padded)
    cdef int ldh = padded_width(G3, sizeof(floating))
    cdef floating* ghb = <floating*>malloc((<Py_ssize_t>nb * ldh + 1) * sizeof(floating))
    cdef floating* gt
    cdef floating* row
    cdef floating* gh
    cdef floating* hprev
    cdef floating* hnext
    cdef floating* yt
    cdef floating* cm
    cdef int t, t0 = 0, b, j
    cdef Live live
    if ghb == NULL:
        return -1
    if live_init(&live, a, nb, sizeof(floating)) != 0:
        free(ghb)
        return -1
    for t in range(T):
        if stopped(a):
            break
        live_at(&live, a, t, b0, nb)
        gt = step_gates(tag, a, G3, t, &t0, &live)
        hprev = hs + (t if train else t % 2) * BH
        hnext = hs + (t + 1 if train else (t + 1) % 2) * BH
        yt = y + <Py_ssize_t>t * BH if y != NULL else NULL
        if a.w_hh_r != NULL:
            live_mm(&live, H, 2 * H, hprev + <Py_ssize_t>b0 * H, H, <const floating*>a.w_hh_r,
                    False, ghb, ldh)
        else:
            gemm(c'T', c'N', 2 * H, nb, H, <floating>1, w_hh, H, hprev + <Py_ssize_t>b0 * H, H,
                 <floating>0, ghb, ldh)
        for b in range(b0, b1):
            row = gt + b * ldg
            if not valid(lens, t, b):
                memset(row + 3 * H, 0, H * sizeof(floating))
                continue
            gh = ghb + <Py_ssize_t>(b - b0) * ldh
            if a.acts:
                gru_rb_rz_act(row, gh, bias, hprev + <Py_ssize_t>b * H, H, <floating>a.clip,
                              clip_mask_row(a, tag, t, b, G3), &a.act[0])
                continue
            if a.clip > 0:
                cm = clip_mask_row(a, tag, t, b, G3)
                for j in range(2 * H):
                    row[j] = act_sigmoid(clip_value(row[j] + gh[j] + bias[j], <floating>a.clip,
                                                    cm, j))
            else:
                for j in range(2 * H):
                    row[j] = act_sigmoid(row[j] + gh[j] + bias[j])
            for j in range(H):
                row[3 * H + j] = row[j] * hprev[<Py_ssize_t>b * H + j]
        if a.w_hn_r != NULL:
            live_mm(&live, H, H, gt + b0 * ldg + 3 * H, <int>ldg, <const floating*>a.w_hn_r,
                    False, ghb + 2 * H, ldh)
        else:
            gemm(c'T', c'N', H, nb, H, <floating>1, w_hh + <Py_ssize_t>2 * H * H, H,
                 gt + b0 * ldg + 3 * H, <int>ldg, <floating>0, ghb + 2 * H, ldh)
        for b in range(b0, b1):
            if not valid(lens, t, b):
                memcpy(hnext + <Py_ssize_t>b * H, hprev + <Py_ssize_t>b * H, H * sizeof(floating))
                if yt != NULL:
                    memset(yt + <Py_ssize_t>b * H, 0, H * sizeof(floating))
                continue
            row = gt + b * ldg
            gh = ghb + <Py_ssize_t>(b - b0) * ldh
            if a.acts:
                gru_rb_n_act(row, gh, bias, hprev + <Py_ssize_t>b * H, hnext + <Py_ssize_t>b * H,
                             H, <floating>a.clip, clip_mask_row(a, tag, t, b, G3), &a.act[1])
                if yt != NULL:
                    memcpy(yt + <Py_ssize_t>b * H, hnext + <Py_ssize_t>b * H, H * sizeof(floating))
                continue
            if a.clip > 0:
                cm = clip_mask_row(a, tag, t, b, G3)
                for j in range(H):
                    row[2 * H + j] = act_tanh(clip_value(
                        row[2 * H + j] + bias[2 * H + j] + gh[2 * H + j] + bias[3 * H + j],
                        <floating>a.clip, cm + 2 * H if cm != NULL else NULL, j))
            else:
                for j in range(H):
                    row[2 * H + j] = act_tanh(row[2 * H + j] + bias[2 * H + j] + gh[2 * H + j]
                                              + bias[3 * H + j])
            gru_state(hnext + <Py_ssize_t>b * H, row + H, row + 2 * H, hprev + <Py_ssize_t>b * H, H)
            if yt != NULL:
                memcpy(yt + <Py_ssize_t>b * H, hnext + <Py_ssize_t>b * H, H * sizeof(floating))
    free(ghb)
    live_free(&live)
    return 0


cdef int gru_rb_bwd_loop(floating tag, Args* a) noexcept nogil:
    """:func:`gru_bwd_loop` of the reset-before GRU: [r, z, n, r * h] in, [dr, dz, dn, r * h]
    out; per step d(r h) = dn @ W_hn comes before dr, then dh += [dr, dz] @ W_hrz."""
    cdef int T = a.T, B = a.B, H = a.H, G4 = 4 * a.H, b0 = a.b0, b1 = a.b1
    cdef int nb = a.b1 - a.b0
    cdef const int64_t* lens = a.lens
    cdef const floating* w_hh = <const floating*>a.w_hh
    cdef const floating* hs = <const floating*>a.hs
    cdef const floating* dy = <const floating*>a.dy
    cdef floating* dh = <floating*>a.dh
    cdef floating* norms = <floating*>a.norms
    cdef floating* D = <floating*>a.gates
    cdef Py_ssize_t BH = <Py_ssize_t>B * H, ldg = a.ldg, BG4 = <Py_ssize_t>B * a.ldg
    # scratch: dh_t of one sequence (H), d(r * h) of this step's slice (nb rows of H, padded)
    cdef int ldr = padded_width(H, sizeof(floating))
    cdef floating* dht = <floating*>malloc((H + <Py_ssize_t>nb * ldr + 1) * sizeof(floating))
    cdef floating* drh = dht + H
    cdef floating* row
    cdef floating* dhb
    cdef floating* d
    cdef const floating* hp
    cdef floating z, n, r
    cdef int t, b, j
    cdef Live live
    if dht == NULL:
        return -1
    if live_init(&live, a, nb, sizeof(floating)) != 0:
        free(dht)
        return -1
    for t in range(T - 1, -1, -1):
        if stopped(a):
            break
        live_at(&live, a, t, b0, nb)
        for b in range(b0, b1):
            row = D + <Py_ssize_t>t * BG4 + b * ldg
            if not valid(lens, t, b):
                memset(row, 0, G4 * sizeof(floating))
                if norms != NULL:
                    norms[<Py_ssize_t>t * B + b] = 0
                continue
            dhb = dh + <Py_ssize_t>b * H
            if dy != NULL:
                add_to(dht, dhb, dy + <Py_ssize_t>t * BH + <Py_ssize_t>b * H, H)
            else:
                memcpy(dht, dhb, H * sizeof(floating))
            if norms != NULL:
                norms[<Py_ssize_t>t * B + b] = norm2(dht, H)
            hp = hs + <Py_ssize_t>t * BH + <Py_ssize_t>b * H
            if a.acts:
                gru_rb_grad_zn_act(row, hp, dht, dhb, drh + <Py_ssize_t>(b - b0) * ldr, H,
                                   &a.act[0])
            else:
                for j in range(H):
                    z, n = row[H + j], row[2 * H + j]
                    row[2 * H + j] = (dht[j] - dht[j] * z) * (1 - n * n)   # as PyTorch: inf gives NaN
                    row[H + j] = dht[j] * (hp[j] - n) * z * (1 - z)
                    dhb[j] = dht[j] * z
            mask_grads(row + H, clip_mask_row(a, tag, t, b, 3 * H) + H
                       if a.cmask != NULL else NULL, 2 * H)
        if a.w_hn_r != NULL:
            live_mm(&live, H, H, D + <Py_ssize_t>t * BG4 + b0 * ldg + 2 * H, <int>ldg,
                    <const floating*>a.w_hn_r, False, drh, ldr)
        else:
            gemm(c'N', c'N', H, nb, H, <floating>1, w_hh + <Py_ssize_t>2 * H * H, H,
                 D + <Py_ssize_t>t * BG4 + b0 * ldg + 2 * H, <int>ldg, <floating>0, drh, ldr)
        for b in range(b0, b1):
            if not valid(lens, t, b):
                continue
            row = D + <Py_ssize_t>t * BG4 + b * ldg
            dhb = dh + <Py_ssize_t>b * H
            d = drh + <Py_ssize_t>(b - b0) * ldr
            hp = hs + <Py_ssize_t>t * BH + <Py_ssize_t>b * H
            if a.acts:
                gru_rb_grad_r_act(row, hp, d, dhb, H, &a.act[0])
            else:
                for j in range(H):
                    r = row[j]
                    dhb[j] += d[j] * r
                    row[j] = d[j] * hp[j] * r * (1 - r)
            mask_grads(row, clip_mask_row(a, tag, t, b, 3 * H), H)
        if a.w_hh_r != NULL:
            live_mm(&live, 2 * H, H, D + <Py_ssize_t>t * BG4 + b0 * ldg, <int>ldg,
                    <const floating*>a.w_hh_r, True, dh + <Py_ssize_t>b0 * H, H)
        else:
            gemm(c'N', c'N', H, nb, 2 * H, <floating>1, w_hh, H, D + <Py_ssize_t>t * BG4 + b0 * ldg,
                 <int>ldg, <floating>1, dh + <Py_ssize_t>b0 * H, H)
    free(dht)
    live_free(&live)
    return 0


cdef inline int gru_hh_col(int g, int H, bint reset_before) noexcept nogil:
    """Column of the GRU's gradient store that row g of W_hh (r, z, n) reads: [dr, dz, dn, dn*r]
    (reset after), or [dr, dz, dn, r*h] (reset before)."""
    return g if g < 2 * H or reset_before else g + H


cdef int gru_bwd_post(floating tag, Args* a) noexcept nogil:
    cdef int I = a.In, H = a.H, G3 = 3 * a.H, ld = a.ldg, TB = a.T * a.B, r0, r1, g0, g1, lo, hi
    # [dr, dz, dn, dn*r] ([dr, dz, dn, r*h] reset before) after the loop, rows ld = a.ldg apart
    cdef const floating* D = <const floating*>a.gates
    cdef floating* db
    part_rows(a, &r0, &r1)
    part_range(G3, a.part, a.nparts, &g0, &g1)
    # the input projection's gradient: columns 0:3H
    if a.dx != NULL and input_grad_rows(tag, a, D, G3, r0, r1, <floating*>a.dx):
        return -1
    # dW_ih += D^T x over rows g0:g1 of 3H, and db_ih += D's column sums in the same pass
    db = <floating*>a.db_ih
    if input_wgrad(a, g0, g1, D, ld, 0, NULL, 0, NULL, db + g0 if db != NULL else NULL, NULL):
        return -1
    # the recurrent product's gradient: columns 0:2H (rows r, z of W_hh), 3H:4H (rows n)
    lo, hi = g0, min(g1, 2 * H)
    if hi > lo and wgrad(hi - lo, grad_rows(a), a.live_rows, H, D + lo, ld,
                         <const floating*>a.hs, H,
                         <floating*>a.dw_hh + <Py_ssize_t>lo * H, H):
        return -1
    lo, hi = max(g0, 2 * H), g1
    # rows n: against h_{t-1} (reset after), or against r * h_{t-1}, column 3H (reset before)
    if hi > lo and wgrad(hi - lo, grad_rows(a), a.live_rows, H,
                         D + gru_hh_col(lo, H, a.variant), ld,
                         D + 3 * H if a.variant else <const floating*>a.hs,
                         ld if a.variant else H, <floating*>a.dw_hh + <Py_ssize_t>lo * H, H):
        return -1
    if g1 > g0:
        db = <floating*>a.db_hh
        if db != NULL:
            lo, hi = g0, min(g1, 2 * H)
            if hi > lo:
                colsum_add(db + lo, D + lo, TB, hi - lo, ld)
            lo, hi = max(g0, 2 * H), g1
            if hi > lo:
                colsum_add(db + lo, D + gru_hh_col(lo, H, a.variant), TB, hi - lo, ld)
    return 0


# =======================================================================================
# A small batch: its hidden units split over a team (eval-mode forwards)
# =======================================================================================
# A batch below STEP_INPUT_MIN_BATCH sequences runs its time loop on one thread (a thread
# gets at least MIN_ROWS_PER_THREAD rows), and one of up to TEAM_MAX_ROWS a member would give
# each thread a thin slice that reads all of both weights at every step.  In eval mode, the
# hidden units of such a batch are split instead: each member
# of a team owns the units [u0, u1) (whole panels of fastrnn_mm.h), projects the input onto
# their gates and multiplies h_{t-1} by their columns of W_hh (its columns of both weights
# packed together, in the order of the split: see packed()), updates their states, and the
# members meet at a barrier after every step (the next product reads all of h_t).  Each core
# so reads only its share of the weights, from its own cache, and the element-wise work is
# split too.  Every element gets the same operations in the same
# order as on one thread: the results are bit for bit those of one thread.
#
# A member works on the columns [Gs*u0, Gs*u1) of each row of the gate store: its units of
# each gate, gate after gate (Gs: 4 for the GRU, whose store keeps W_hn h + b_hn), so the
# row functions of the cells above run on them as on a cell of n = u1 - u0 units, with the
# biases and peepholes gathered in the same order.  Eval mode, no LSTM projection, the GRU
# with the reset gate after its product (PyTorch's).
cdef extern from "fastrnn_pool.h" nogil:
    ctypedef void (*fr_dojob_fn)(int, void*, int)
    long fr_clock_start()
    void fr_clock_stop(int which, long t0, long times)
    void fr_clock_set(int on)
    long fr_clock_read(int which)
    int FR_CLK_RUN, FR_CLK_THREADS, FR_CLK_PRODUCTS, FR_CLK_PHASE
    ctypedef struct fr_barrier:
        pass
    int fr_barrier_init(fr_barrier* b, int parties)
    void fr_barrier_free(fr_barrier* b)
    int fr_barrier_wait(fr_barrier* b, int me, volatile int* stop)
    long fr_barrier_arrive(fr_barrier* b, int me, volatile int* stop)
    int fr_barrier_ready(fr_barrier* b, int me, long round)
    int fr_barrier_decision(fr_barrier* b, long round)
    void fr_relax(int* turn, int pauses)
    int FR_BARRIER_SPINS
    int fr_team_run(fr_dojob_fn dojob, int numjobs, size_t elsize, void* jobdata, int short_)
    int fr_split_run(fr_dojob_fn dojob, int numjobs, size_t elsize, void* jobdata, int short_)
    void fr_split_run_all(fr_dojob_fn dojob, int numjobs, size_t elsize, void* jobdata)
    int fr_watch_begin()
    void fr_watch_end()
    void fr_watch_after_fork()
    bint fr_watch_seen()
    void fr_watch_clear()
    void fr_flag_raise(int* flag)
    int fr_flag_read(int* flag)
    int fr_ticket_take(int* counter)
    void fr_done_add(int* counter, int n)
    int fr_tickets_take_rest(int* counter, int spent)
    int fr_done_read(int* counter)
    void fr_tickets_reset(int* tickets, int* done)
    long fr_team_runs
    long fr_team_steals
    void fr_stat_add(long* stat, long n)
    void fr_spin_ns(long ns)
    long fr_now_ns()
    Py_ssize_t fr_l2_cache_bytes()


cdef inline int panel_width(bint f32) noexcept nogil:
    """The columns of a panel of packed weights in this build (fr_panel_width_*), float32 or
    float64: the unit of a team member's share of the hidden units."""
    return fr_panel_width_f32() if f32 else fr_panel_width_f64()


cdef inline void unit_range(int H, int nr, int part, int parts, int* u0, int* u1) noexcept nogil:
    """The hidden units [u0, u1) of member ``part`` of a team of ``parts``: whole panels of nr."""
    part_range(H // nr, part, parts, u0, u1)
    u0[0] *= nr
    u1[0] *= nr


cdef inline void gather(const floating* v, int nvec, int H, int u0, int n,
                        floating* out) noexcept nogil:
    """out (nvec*n, written) = [v[g*H + u0 : g*H + u0 + n] for g < nvec] (v: nvec*H, read)."""
    cdef int g
    for g in range(nvec):
        memcpy(out + <Py_ssize_t>g * n, v + <Py_ssize_t>g * H + u0, n * sizeof(floating))


cdef inline void units_input(floating tag, Args* a, int t, int steps, int cols,
                             const floating* w_ih, floating* store) noexcept nogil:
    """A member's input projection of ``steps`` steps from t: store (rows of a.ldg, the
    member's first column; written) = x[t : t + steps] @ its ``cols`` columns of w_ih^T (over
    x's entries alone when it is sparse)."""
    if a.xs_ptr != NULL:
        sparse_mm(steps * a.B, NULL, <Py_ssize_t>t * a.B, a.xs_ptr, a.xs_idx,
                  <const floating*>a.xs_val, a.In, cols, w_ih, store, a.ldg)
    else:
        rowmm(steps * a.B, a.In, cols,
              <const floating*>a.x + <Py_ssize_t>t * a.B * a.In, a.In, w_ih, False, store, a.ldg)


# for the tests: the last member of a team spins this long at each step (see _lag_teams)
cdef int _team_lag_us = 0


# The counters of a team's pieces of input projection (see fwd_units): for chunk parity p and
# member r, the next piece to take of the chunk's projection of r's units, and how many of
# them are made, each in a cache line of its own
cdef enum:
    PIECE_STRIDE = 16          # ints: 64 bytes
    PIECE_ROWS = 64            # rows of a piece of input projection (piece_steps): one call of
                               # the micro-kernel on a few rows costs more than its products
    PIECES_SPENT = 1 << 29     # a ticket counter with no ticket left (take_piece)


cdef inline int* piece_tickets(Args* a, int p, int r) noexcept nogil:
    return a.pieces + (2 * (p * a.members + r)) * PIECE_STRIDE


cdef inline int* piece_done(Args* a, int p, int r) noexcept nogil:
    return a.pieces + (2 * (p * a.members + r) + 1) * PIECE_STRIDE


cdef inline int piece_steps(int B) noexcept nogil:
    """The steps of a piece of a team's input projection (see fwd_units): PIECE_ROWS rows of
    them, or one step of more."""
    return max(1, PIECE_ROWS // B)


cdef inline int chunk_len(Args* a, int c) noexcept nogil:
    """The steps of chunk c (a.Tc, fewer for the last; 0 or less: no chunk c)."""
    return min(a.Tc, a.T - c * a.Tc)


cdef inline int chunk_pieces(Args* a, int c) noexcept nogil:
    """The pieces of chunk c's input projection of one member's units (0: no chunk c)."""
    cdef int steps = chunk_len(a, c), per = piece_steps(a.B)
    return (steps + per - 1) // per if steps > 0 else 0


cdef inline void project_pieces(floating tag, int cell, Args* a, int c, int r, int p0,
                                int p1) noexcept nogil:
    """Pieces [p0, p1) of chunk c's input projection of member r's units (its half of the gate
    store), in one product; then counted made."""
    cdef int per = piece_steps(a.B), s = p0 * per, G = CELL_GATES[cell], u0, u1
    cdef int nr = panel_width(sizeof(floating) == 4)
    cdef int Gs = 1 if cell == 0 else 4
    unit_range(a.H, nr, r, a.members, &u0, &u1)
    units_input(tag, a, c * a.Tc + s, min(p1 * per, chunk_len(a, c)) - s,
                G * (u1 - u0), <const floating*>a.w_ih_r + <Py_ssize_t>G * u0 * a.In,
                <floating*>a.gates + ((c % 2) * a.Tc + s) * <Py_ssize_t>a.B * a.ldg + Gs * u0)
    fr_done_add(piece_done(a, c % 2, r), p1 - p0)


cdef bint take_piece(floating tag, int cell, Args* a, int c, int r) noexcept nogil:
    """Take a piece (piece_steps) of chunk c's input projection of member r's units, if one is
    left, and make it: True, or False when none is left (or there is no chunk c)."""
    cdef int npieces = chunk_pieces(a, c), k
    if npieces == 0:
        return False
    k = fr_ticket_take(piece_tickets(a, c % 2, r))
    if k >= npieces:
        return False
    project_pieces(tag, cell, a, c, r, k, k + 1)
    a.steals += r != a.member
    return True


cdef inline void units_skip(floating* hnext, const floating* hprev, floating* cnext,
                            const floating* cprev, floating* yt, int n) noexcept nogil:
    """A member's units of a sequence past its length: the state kept, the output 0."""
    memcpy(hnext, hprev, n * sizeof(floating))
    if cnext != NULL:
        memcpy(cnext, cprev, n * sizeof(floating))
    memset(yt, 0, n * sizeof(floating))


# A member's loop, for every cell: a (read; u0, u1 its units; cell 0 RNN, 1 LSTM, 2 GRU),
# scratch (written: 8n + B * padded_width(3n) elements, see run_team) and live (written: the
# running rows of each step, see live_mm); returns 0.
#
# The input projection of the member's units goes chunk by chunk (a.Tc steps; the gate store
# holds two chunks, one for even chunks and one for odd ones), in pieces of PIECE_ROWS rows.
# A member that reaches the barrier after a step before the others makes pieces of the next
# chunk while it waits, the others' first (their own work, which they then need not do), then
# its own; at the start of a chunk each member makes the pieces of its units nobody took yet
# (in one product), and waits for those others took (a.pieces: take_piece).  The host's vCPUs
# do not run at one speed, nor alone: a member that runs faster so takes work off the slower
# rather than wait for it.  Over one chunk (T <= Tc) there is no next chunk: the wait is the
# plain barrier's.
cdef int fwd_units(floating tag, int cell, Args* a, floating* scratch, Live* live) noexcept nogil:
    cdef int T = a.T, B = a.B, H = a.H, u0 = a.u0, n = a.u1 - a.u0, t, t0 = 0, b
    cdef int M = a.members, ck = 0, npieces, r, spins
    cdef long round
    cdef int G = CELL_GATES[cell]                                 # gate blocks of the weights
    cdef int Gs = 1 if cell == 0 else 4                          # of a row of the store
    cdef int ldh = padded_width(3 * n, sizeof(floating))
    cdef Py_ssize_t ldg = a.ldg, BH = <Py_ssize_t>B * H, o
    cdef const floating* w_hh = <const floating*>a.w_hh_r + <Py_ssize_t>G * u0 * H
    cdef floating* store = <floating*>a.gates + Gs * u0
    cdef floating* hs = <floating*>a.hs
    cdef floating* cs = <floating*>a.cs
    # the units' biases, gate after gate (Gs*n: the GRU's b_ir + b_hr, b_iz + b_hz, b_in, b_hn)
    cdef floating* bias = scratch
    cdef floating* ph = scratch + 4 * n              # LSTM: 3n, the units' peepholes, or NULL
    cdef floating* tcs = scratch + 7 * n             # LSTM: n, tanh(c_t)
    cdef floating* ghb = scratch + 8 * n             # GRU: B rows of ldh, W_hh h of the units
    cdef floating c = <floating>a.clip
    cdef floating* gt
    cdef floating* hprev
    cdef floating* hnext
    cdef floating* cprev = NULL
    cdef floating* cnext = NULL
    cdef floating* yt
    cdef floating* row
    cdef floating* gh
    cdef int j
    gather(<const floating*>a.bias, Gs, H, u0, n, bias)
    if cell == 1 and a.w_ph != NULL:
        gather(<const floating*>a.w_ph, 3, H, u0, n, ph)
    else:
        ph = NULL
    for t in range(T):
        if t % a.Tc == 0:
            t0, ck = t, t // a.Tc
            npieces = chunk_pieces(a, ck)
            # the next chunk's counters (the one before this one's: all of its pieces made)
            fr_tickets_reset(piece_tickets(a, (ck + 1) % 2, a.member),
                             piece_done(a, (ck + 1) % 2, a.member))
            # this chunk's pieces of this member's units that nobody took, in one product (the
            # others now take pieces of the next chunk alone)
            r = fr_tickets_take_rest(piece_tickets(a, ck % 2, a.member), PIECES_SPENT)
            if r < npieces:
                project_pieces(tag, cell, a, ck, a.member, r, npieces)
            spins = 0
            while fr_done_read(piece_done(a, ck % 2, a.member)) < npieces:
                fr_relax(&spins, FR_BARRIER_SPINS)
        gt = store + <Py_ssize_t>((ck % 2) * a.Tc + t - t0) * B * ldg
        if _team_lag_us > 0 and a.member == M - 1:
            fr_spin_ns(1000 * <long>_team_lag_us)
        hprev = hs + (t % 2) * BH
        hnext = hs + ((t + 1) % 2) * BH
        if cell == 1:
            cprev = cs + (t % 2) * BH
            cnext = cs + ((t + 1) % 2) * BH
        yt = <floating*>a.y + <Py_ssize_t>t * BH
        live_at(live, a, t, 0, B)
        if cell == 2:
            live_mm(live, H, 3 * n, hprev, H, w_hh, False, ghb, ldh)
        else:
            live_mm(live, H, G * n, hprev, H, w_hh, True, gt, <int>ldg)
        for b in range(B):
            o = <Py_ssize_t>b * H + u0
            if not valid(a.lens, t, b):
                units_skip(hnext + o, hprev + o, cnext + o if cell == 1 else NULL,
                           cprev + o if cell == 1 else NULL, yt + o, n)
                continue
            row = gt + b * ldg
            if cell == 1:
                if a.acts:
                    lstm_cell_row_act(row, bias, cprev + o, cnext + o, tcs, hnext + o, n, ph,
                                      a.variant, c, NULL, &a.act[0])
                else:
                    lstm_row(row, bias, ph, cprev + o, cnext + o, NULL, hnext + o, NULL, n,
                             a.variant, c, False)
            elif cell == 2:
                gh = ghb + <Py_ssize_t>b * ldh
                if a.acts:
                    gru_cell_row_act(row, gh, bias, hprev + o, hnext + o, n, c, NULL, &a.act[0])
                else:
                    gru_row(row, gh, bias, hprev + o, hnext + o, NULL, n, c, False)
            else:
                if a.acts:
                    rnn_row_act(row, bias, n, c, NULL, &a.act[0])
                elif c > 0:
                    for j in range(n):
                        row[j] = clip_value(row[j] + bias[j], c, <floating*>NULL, j)
                        row[j] = act_relu(row[j]) if a.variant else act_tanh(row[j])
                elif a.variant:
                    for j in range(n):
                        row[j] = act_relu(row[j] + bias[j])
                else:
                    tanh_bias(row, bias, n)
                memcpy(hnext + o, row, n * sizeof(floating))
            memcpy(yt + o, hnext + o, n * sizeof(floating))
        if a.member == 0:
            stopped(a)       # (member 0's flag is the team's decision)
        round = fr_barrier_arrive(<fr_barrier*>a.team, a.member, a.stop)
        spins, r = 0, 1
        while not fr_barrier_ready(<fr_barrier*>a.team, a.member, round):
            # the others' pieces of the next chunk first, then this member's own
            while r <= M and not take_piece(tag, cell, a, ck + 1, (a.member + r) % M):
                r += 1
            if r > M:
                fr_relax(&spins, FR_BARRIER_SPINS)
        if fr_barrier_decision(<fr_barrier*>a.team, round):
            break
    return 0


ctypedef struct Member:
    Args a
    int cell
    bint f32
    int rc
    void* scratch
    Live live                # FWD_UNITS: the running rows of the batch at each step


cdef bint units_stale(floating tag, Args* a, int gates) noexcept nogil:
    """Whether this member's rows of the weights in a.check (those of its units, gate after
    gate) differ from the copies their packed form was made from; the team agrees on the
    answer (a barrier) before any member uses the packed weights."""
    cdef int k, g
    cdef size_t row
    cdef Py_ssize_t at
    cdef bint changed = False
    for k in range(2):
        if a.check[k].src == NULL:
            continue
        row = <size_t>a.check[k].K * sizeof(floating)
        for g in range(gates):
            at = (<Py_ssize_t>g * a.H + a.u0) * row
            if memcmp(<const char*>a.check[k].src + at, <const char*>a.check[k].copy + at,
                      (a.u1 - a.u0) * row) != 0:
                changed = True
    if a.check[0].src == NULL and a.check[1].src == NULL:
        return False
    if changed:
        fr_flag_raise(a.stale)
    fr_barrier_wait(<fr_barrier*>a.team, a.member, NULL)
    return fr_flag_read(a.stale) != 0


cdef int units_loop(floating tag, int cell, Args* a, floating* scratch, Live* live) noexcept nogil:
    if units_stale(tag, a, CELL_GATES[cell]):
        return STALE
    return fwd_units(tag, cell, a, scratch, live)


cdef void member_job(int index, void* data, int arg) noexcept nogil:
    cdef Member* m = <Member*>data
    if m.f32:
        m.rc = units_loop(<float>0, m.cell, &m.a, <float*>m.scratch, &m.live)
    else:
        m.rc = units_loop(<double>0, m.cell, &m.a, <double*>m.scratch, &m.live)


# One step (a cell's step, or a sequence of one step) of a small batch has too little work for a
# barrier per step but two products that read every weight once: a team splits their rows (the
# gate rows of w_ih and w_hh, whole panels of them per member), each member making its rows with
# the very calls one thread makes for all of them (gemm: fr_dots_cols for a batch of up to
# DOTS_MAX_COLUMNS, each row's and sequence's result the same whichever rows and sequences go
# with it), and the caller then runs the biases and the element-wise step alone (PRE and
# FWD_LOOP skip the products: products_done).
cdef int step_rows(floating tag, int cell, Args* a) noexcept nogil:
    """A member's rows [u0, u1) of the step's products: gates (B rows of a.ldg) = x @ w_ih^T,
    then + h @ w_hh^T (LSTM, RNN) or a.ghb = h @ w_hh^T (GRU)."""
    cdef int r0 = a.u0, n = a.u1 - a.u0, B = a.B, H = a.H, P = a.P
    cdef int ldh = padded_width(3 * H, sizeof(floating))
    cdef floating* gates = <floating*>a.gates
    gemm(c'T', c'N', n, B, a.In, <floating>1, <const floating*>a.w_ih + <Py_ssize_t>r0 * a.In,
         a.In, <const floating*>a.x, a.In, <floating>0, gates + r0, a.ldg)
    if cell == 2:
        gemm(c'T', c'N', n, B, H, <floating>1, <const floating*>a.w_hh + <Py_ssize_t>r0 * H, H,
             <const floating*>a.hs, H, <floating>0, <floating*>a.ghb + r0, ldh)
    else:
        gemm(c'T', c'N', n, B, P, <floating>1, <const floating*>a.w_hh + <Py_ssize_t>r0 * P, P,
             <const floating*>a.hs, P, <floating>1, gates + r0, a.ldg)
    return 0


cdef void step_job(int index, void* data, int arg) noexcept nogil:
    cdef Member* m = <Member*>data
    if m.f32:
        m.rc = step_rows(<float>0, m.cell, &m.a)
    else:
        m.rc = step_rows(<double>0, m.cell, &m.a)


cdef Member* new_team(int cell, bint f32, Args* a, int rows, Member* into=NULL) noexcept nogil:
    """a.members members, in ``into`` (room for as many) or calloc'd (NULL if out of memory),
    each a copy of a with its index and its share [u0, u1) of ``rows`` (hidden units, or gate
    rows), whole panels each; the rest of each member zero."""
    cdef int k, nr = panel_width(f32)
    cdef Member* ms = into
    if ms == NULL:
        ms = <Member*>calloc(a.members, sizeof(Member))
    else:
        memset(ms, 0, a.members * sizeof(Member))
    if ms != NULL:
        for k in range(a.members):
            ms[k].a = a[0]
            ms[k].a.member = k
            unit_range(rows, nr, k, a.members, &ms[k].a.u0, &ms[k].a.u1)
            ms[k].cell, ms[k].f32 = cell, f32
    return ms


cdef enum:
    STEP_TEAM_LOCAL = 4


cdef int run_step_team(int cell, bint f32, Args* a) noexcept nogil:
    """STEP_ROWS: the step's products on a team of a.members, each on its rows; then the
    biases and the element-wise step on this thread (PRE, FWD_LOOP)."""
    cdef int rc = 0
    cdef Member local[STEP_TEAM_LOCAL]      # a small team's members, without an allocation
    cdef Member* ms = new_team(cell, f32, a, a.H * CELL_GATES[cell],
                               local if a.members <= STEP_TEAM_LOCAL else NULL)
    if ms == NULL:
        return -1
    rc = fr_team_run(step_job, a.members, sizeof(Member), ms, 1)
    if ms != local:
        free(ms)
    if rc != 0:
        return TEAMLESS
    a.products_done = True
    rc = call_phase(PRE, cell, f32, a)
    rc |= call_phase(FWD_LOOP, cell, f32, a)
    return rc


cdef int run_team(int cell, bint f32, Args* a) noexcept nogil:
    """FWD_UNITS: the biases (PRE, which leaves the input projection to the members here:
    a.w_ih_r is set), then the time loop on a team of a.members, each on its hidden units."""
    cdef int parts = a.members, k, n, rc = 0
    cdef size_t item = 4 if f32 else 8
    cdef fr_barrier bar
    cdef Member* ms
    # the counters of the pieces of input projection (see fwd_units), on cache lines of their
    # own; those of the odd chunks start taken, until each member sets its own to 0
    cdef int* pieces = <int*>calloc((4 * parts + 1) * PIECE_STRIDE, sizeof(int))
    if pieces == NULL:
        return -1
    a.pieces = <int*>((<size_t>pieces + 63) & ~(<size_t>63))
    for k in range(parts):
        piece_tickets(a, 1, k)[0] = PIECES_SPENT
    if fr_barrier_init(&bar, parts) != 0:
        free(pieces)
        return -1
    ms = new_team(cell, f32, a, a.H)
    if ms == NULL:
        fr_barrier_free(&bar)
        free(pieces)
        return -1
    rc = call_phase(PRE, cell, f32, a)
    a.stale[0] = 0
    for k in range(parts):
        ms[k].a.team = &bar
        n = ms[k].a.u1 - ms[k].a.u0
        ms[k].scratch = malloc((8 * <size_t>n + <size_t>a.B * padded_width(3 * n, item) + 1) * item)
        if ms[k].scratch == NULL or live_init(&ms[k].live, a, a.B, item) != 0:
            rc = -1
    if rc == 0 and fr_team_run(member_job, parts, sizeof(Member), ms, 0) != 0:
        rc = TEAMLESS
    for k in range(parts):
        rc |= ms[k].rc
        fr_stat_add(&fr_team_steals, ms[k].a.steals)
        free(ms[k].scratch)
        live_free(&ms[k].live)
    free(ms)
    fr_barrier_free(&bar)
    free(pieces)
    return rc


# =======================================================================================
# Dispatch by phase, cell and dtype
# =======================================================================================
cdef enum Phase:
    PRE = 0          # forward: biases and the input projection of all steps
    FWD_LOOP = 1     # forward: the time loop over batch rows [b0, b1)
    BWD_LOOP = 2     # backward: the time loop over batch rows [b0, b1)
    BWD_POST = 3     # backward: dx and the weight gradients, one GEMM each
    FWD_UNITS = 4    # eval-mode forward of a small batch: biases, then the time loop on a team
                     # that splits the hidden units (run_team)
    STEP_ROWS = 5    # eval-mode forward of one step of a small batch: its two products on a
                     # team that splits their rows (run_step_team); then PRE and FWD_LOOP
    PACK = 6         # the weights of a.packs packed: part `part` of `nparts` of each one's
                     # panels (pack_part)

#: the phases' names, in the order of the enum Phase just above (phase_clock's keys)
PHASE_NAMES = ("input projection", "forward loop", "backward loop", "dx and weight gradients",
               "forward loop of a team", "step of a team", "weights packed")


cdef int pack_part(Args* a) noexcept nogil:
    """PACK: this part's share of the panels of each weight matrix in a.packs (the panels'
    layout does not depend on the split: panel p of a K x N matrix starts at p*K*NR)."""
    cdef int k, nr, p0, p1, n0, n1
    cdef Pack* pk
    for k in range(a.npacks):
        pk = &a.packs[k]
        nr = panel_width(pk.item == 4)
        part_range((pk.N + nr - 1) // nr, a.part, a.nparts, &p0, &p1)
        n0, n1 = p0 * nr, min(p1 * nr, pk.N)
        if n1 <= n0:
            continue
        if pk.item == 4:
            fr_pack_f32(pk.K, n1 - n0, <const float*>pk.src + n0 * pk.cs, pk.rs, pk.cs,
                        <float*>pk.out + <Py_ssize_t>n0 * pk.K)
        else:
            fr_pack_f64(pk.K, n1 - n0, <const double*>pk.src + n0 * pk.cs, pk.rs, pk.cs,
                        <double*>pk.out + <Py_ssize_t>n0 * pk.K)
    return 0


cdef int call_phase(int phase, int cell, bint f32, Args* a) noexcept nogil:
    if phase == PACK:
        return pack_part(a)
    if phase == FWD_UNITS:
        return run_team(cell, f32, a)
    if phase == STEP_ROWS:
        return run_step_team(cell, f32, a)
    if f32:
        if cell == 1:
            if phase == PRE: return lstm_pre(<float>0, a)
            if phase == FWD_LOOP: return lstm_fwd_loop(<float>0, a)
            if phase == BWD_LOOP: return lstm_bwd_loop(<float>0, a)
            return lstm_bwd_post(<float>0, a)
        if cell == 2:
            if phase == PRE: return gru_pre(<float>0, a)
            if phase == FWD_LOOP: return gru_fwd_loop(<float>0, a)
            if phase == BWD_LOOP: return gru_bwd_loop(<float>0, a)
            return gru_bwd_post(<float>0, a)
        if phase == PRE: return rnn_pre(<float>0, a)
        if phase == FWD_LOOP: return rnn_fwd_loop(<float>0, a)
        if phase == BWD_LOOP: return rnn_bwd_loop(<float>0, a)
        return rnn_bwd_post(<float>0, a)
    if cell == 1:
        if phase == PRE: return lstm_pre(<double>0, a)
        if phase == FWD_LOOP: return lstm_fwd_loop(<double>0, a)
        if phase == BWD_LOOP: return lstm_bwd_loop(<double>0, a)
        return lstm_bwd_post(<double>0, a)
    if cell == 2:
        if phase == PRE: return gru_pre(<double>0, a)
        if phase == FWD_LOOP: return gru_fwd_loop(<double>0, a)
        if phase == BWD_LOOP: return gru_bwd_loop(<double>0, a)
        return gru_bwd_post(<double>0, a)
    if phase == PRE: return rnn_pre(<double>0, a)
    if phase == FWD_LOOP: return rnn_fwd_loop(<double>0, a)
    if phase == BWD_LOOP: return rnn_bwd_loop(<double>0, a)
    return rnn_bwd_post(<double>0, a)


# =======================================================================================
# Python side: argument checks, buffers, the saved record
# =======================================================================================
cdef enum Cell:
    RNN = 0
    LSTM = 1
    GRU = 2

cdef int F32 = cnp.NPY_FLOAT32
cdef int F64 = cnp.NPY_FLOAT64
cdef int I64 = cnp.NPY_INT64
cdef tuple CELL_NAMES = ("rnn", "lstm", "gru")     # the Cell enum's names
from fastrnn.celltypes import CELL_TYPES as _CELL_TYPES
from fastrnn.reference._common import check_dweights   # the contract's messages for dweights
from fastrnn.reference._common import check_clip, check_flag, check_nonlinearity
from fastrnn import activations as _activations
if _activations.CODES != {name: k for k, name in enumerate((
        "sigmoid", "tanh", "relu", "affine", "leaky_relu", "thresholded_relu", "scaled_tanh",
        "hard_sigmoid", "elu", "softsign", "softplus"))}:   # the ACT_* codes of act_row
    raise ImportError("fastrnn.activations.CODES differs from the ACT_* codes the cython "
                      "kernels were built with: rebuild the extension")
# gates stacked in the weights, by Cell (from the one table of cell types)
cdef tuple GATES = tuple(_CELL_TYPES[name].gates for name in CELL_NAMES)
for _cell in range(len(CELL_NAMES)):
    CELL_GATES[_cell] = GATES[_cell]
del _cell


cdef inline cnp.ndarray carray(object obj, int typenum):
    """``obj`` as an aligned, native, C-contiguous array of ``typenum`` (no copy when it is one)."""
    if cnp.PyArray_Check(obj):
        if cnp.PyArray_TYPE(<cnp.ndarray>obj) == typenum and cnp.PyArray_ISCARRAY_RO(<cnp.ndarray>obj):
            return <cnp.ndarray>obj
    return <cnp.ndarray>cnp.PyArray_FROMANY(obj, typenum, 0, 0,
                                           cnp.NPY_ARRAY_CARRAY_RO | cnp.NPY_ARRAY_FORCECAST)


cdef inline cnp.ndarray empty(int nd, cnp.npy_intp d0, cnp.npy_intp d1, cnp.npy_intp d2, int typenum):
    cdef cnp.npy_intp dims[3]
    dims[0] = d0
    dims[1] = d1
    dims[2] = d2
    return <cnp.ndarray>cnp.PyArray_EMPTY(nd, dims, typenum, 0)


cdef cnp.ndarray line_aligned(cnp.npy_intp n, int typenum):
    """:func:`empty`, 1-D, starting at a multiple of 64 bytes (one cache line): a view of a
    larger array."""
    cdef cnp.ndarray buf = empty(1, n + 64, 0, 0, typenum), out
    # elements to the first 64-byte boundary, in unsigned arithmetic: with C's division (the
    # cdivision directive) -address % 64 is negative, and a negative start sliced an empty
    # view near the end of buf, past which the packing then wrote
    cdef Py_ssize_t skip = <Py_ssize_t>(((64 - (<size_t>cnp.PyArray_DATA(buf) & 63)) & 63)
                                        // <size_t>cnp.PyArray_ITEMSIZE(buf))
    out = buf[skip:skip + n]
    if cnp.PyArray_SIZE(out) != n:
        raise MemoryError(f"an aligned buffer of {n} elements was expected")
    return out


cdef cnp.ndarray aligned(cnp.npy_intp d0, cnp.npy_intp d1, cnp.npy_intp d2, int typenum,
                         bint spare=True):
    """:func:`workspace` (``spare``) or :func:`empty`, 3-D, starting at a multiple of 64 bytes
    (else a view of a larger array)."""
    cdef cnp.ndarray buf
    if spare:
        buf = workspace(3, d0, d1, d2, typenum)
        if (<size_t>cnp.PyArray_DATA(buf) & 63) == 0:
            return buf
    return line_aligned(d0 * d1 * d2, typenum).reshape(d0, d1, d2)


# The arrays a training forward keeps for its backward (the gate store, the states, tanh(c))
# go back to a spare list when the backward is done with them, and the next training forward
# of the same shapes takes them again.  Memory fresh from the operating system costs a page
# fault and a zeroed page per 4 KiB: LSTM(64, 128) trained at T=100, B=16 spent 0-3 ms of
# its 6-9 ms per forward and backward on them, depending on where the C library's allocator
# had put its threshold for fresh memory.  The list holds at most SPARE_BYTES.
cdef dict _spare = {}             # spare_key(...) -> arrays of that dtype and shape
cdef Py_ssize_t _spare_bytes = 0
cdef Py_ssize_t SPARE_BYTES = 256 << 20
cdef Py_ssize_t SPARE_MIN_BYTES = 256 << 10     # eval-mode workspaces kept from this size on


cdef inline tuple spare_key(int typenum, int nd, cnp.npy_intp d0, cnp.npy_intp d1,
                            cnp.npy_intp d2):
    """The key of the spare arrays of this dtype and shape (dimensions past ``nd`` are 0)."""
    return (typenum, nd, d0, d1 if nd > 1 else 0, d2 if nd > 2 else 0)


cdef cnp.ndarray workspace(int nd, cnp.npy_intp d0, cnp.npy_intp d1, cnp.npy_intp d2, int typenum):
    """:func:`empty`, or a spare array of that shape (contents undefined either way).  (The GIL
    is held throughout: two threads never take the same array.)"""
    global _spare_bytes
    cdef cnp.ndarray out
    arrays = _spare.get(spare_key(typenum, nd, d0, d1, d2))
    if not arrays:
        return empty(nd, d0, d1, d2, typenum)
    out = arrays.pop()
    _spare_bytes -= cnp.PyArray_NBYTES(out)
    return out


cdef void give_back(tuple arrays):
    """Put ``arrays`` (workspaces nothing else refers to, or None) on the spare list."""
    global _spare_bytes
    cdef cnp.ndarray a
    cdef cnp.npy_intp* dims
    cdef int nd
    for item in arrays:
        if item is None:
            continue
        a = <cnp.ndarray>item
        if _spare_bytes + cnp.PyArray_NBYTES(a) > SPARE_BYTES:
            continue
        nd, dims = cnp.PyArray_NDIM(a), cnp.PyArray_DIMS(a)
        key = spare_key(cnp.PyArray_TYPE(a), nd, dims[0], dims[1] if nd > 1 else 0,
                        dims[2] if nd > 2 else 0)
        _spare.setdefault(key, []).append(a)
        _spare_bytes += cnp.PyArray_NBYTES(a)


cdef inline cnp.ndarray copy_of(cnp.ndarray src, int nd, cnp.npy_intp d0, cnp.npy_intp d1, int typenum):
    cdef cnp.ndarray out = empty(nd, d0, d1, 0, typenum)
    memcpy(cnp.PyArray_DATA(out), cnp.PyArray_DATA(src), cnp.PyArray_NBYTES(out))
    return out


cdef inline cnp.ndarray copy_slot(const void* src, int slot, cnp.npy_intp d0, cnp.npy_intp d1,
                                   int typenum, int nd=2):
    """A new (d0, d1) array holding slot ``slot`` of a (slots, d0, d1) buffer at ``src``;
    ``nd`` 1: a (d1,) array (d0 is 1)."""
    cdef cnp.ndarray out = empty(2, d0, d1, 0, typenum) if nd == 2 else empty(1, d1, 0, 0, typenum)
    cdef size_t nbytes = cnp.PyArray_NBYTES(out)
    memcpy(cnp.PyArray_DATA(out), <const char*>src + slot * nbytes, nbytes)
    return out


cdef enum:
    BLOCK_PARTS = 6
    # an eval step's workspace up to this size lives on the C stack of its call (run_forward):
    # LSTMCell(128, 128) at B = 1 needs 6 KB
    STACK_BLOCK_BYTES = 16384


# One block of memory in parts, each starting on a cache line (64 bytes): block_grow() the
# sizes of the parts, in order, then block_part(k) of the memory (block_size() of it, less
# the 64 of the alignment) is NULL for a part of 0 bytes.
ctypedef struct Block:
    size_t at[BLOCK_PARTS + 1]
    int parts
    char* mem


cdef inline void block_grow(Block* b, size_t nbytes) noexcept:
    b.at[b.parts + 1] = b.at[b.parts] + (0 if nbytes == 0 else (nbytes + 63) & ~(<size_t>63))
    b.parts += 1


cdef inline size_t block_size(Block* b) noexcept:
    return b.at[b.parts] + 64


cdef inline void* block_part(Block* b, int k) noexcept:
    return NULL if b.at[k + 1] == b.at[k] else b.mem + b.at[k]


cdef inline void block_place(Block* b, char* raw) noexcept:
    """The block in ``raw`` (block_size() bytes)."""
    b.mem = raw + ((64 - (<size_t>raw & 63)) & 63)


cdef class _Memory:
    """C memory of ``nbytes`` (.raw), freed with the object."""
    cdef char* raw

    @staticmethod
    cdef _Memory of(size_t nbytes):
        cdef _Memory m = _Memory.__new__(_Memory)
        m.raw = <char*>malloc(nbytes)
        if m.raw == NULL:
            raise MemoryError("fastrnn cython kernel: out of memory for its workspace")
        return m

    def __dealloc__(self):
        free(self.raw)


cdef inline void* data(object arr):
    return NULL if arr is None else cnp.PyArray_DATA(<cnp.ndarray>arr)


cdef str shape_str(cnp.ndarray arr):
    return str(tuple((<object>arr).shape))


cdef cnp.ndarray checked(object obj, int typenum, str name, int nd, cnp.npy_intp d0,
                         cnp.npy_intp d1=-1, cnp.npy_intp d2=-1):
    """``carray(obj)`` whose shape must be (d0[, d1[, d2]])."""
    cdef cnp.ndarray arr = carray(obj, typenum)
    cdef cnp.npy_intp* dims = cnp.PyArray_DIMS(arr)
    cdef bint ok = cnp.PyArray_NDIM(arr) == nd and dims[0] == d0
    if ok and nd > 1:
        ok = dims[1] == d1
    if ok and nd > 2:
        ok = dims[2] == d2
    if not ok:
        want = [d0, d1, d2][:nd]
        raise ValueError(f"{name} must have shape {tuple(want)}, but got {shape_str(arr)}")
    return arr


cdef int dtype_of(object x) except -1:
    cdef int typenum
    if cnp.PyArray_Check(x):
        typenum = cnp.PyArray_TYPE(<cnp.ndarray>x)
        if not cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>x):     # (the type number of '<f4' too)
            raise TypeError(f"x must be a float32 or float64 array in the machine's byte "
                            f"order, but got dtype {x.dtype}")
    else:
        typenum = cnp.PyArray_TYPE(<cnp.ndarray>np.asarray(x))
    if typenum != F32 and typenum != F64:
        raise TypeError(f"the cython kernels take float32 or float64 arrays, but got "
                        f"{np.asarray(x).dtype}")
    return typenum


cdef inline int same_dtype(object a, int typenum, str name) except -1:
    """An array argument of x's dtype (``typenum``), native: a kernel computes in x's dtype
    (the reference and numba kernels refuse others alike; the layers convert first)."""
    if a is not None and cnp.PyArray_Check(a) and (
            cnp.PyArray_TYPE(<cnp.ndarray>a) != typenum
            or not cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>a)):
        raise TypeError(f"{name} must have x's dtype "
                        f"{'float32' if typenum == F32 else 'float64'}, but got {a.dtype}")
    return 0


cdef class _Weights:
    """Checked, C-contiguous weights of one call and the sizes they imply."""
    cdef public object w_ih, w_hh, b_ih, b_hh, w_hr, w_ph
    cdef int G, H, P, In


cdef _Weights check_weights(int cell, object weights, int typenum, int I):
    cdef _Weights w = _Weights.__new__(_Weights)
    cdef int gates = GATES[cell]
    cdef int n = 6 if cell == LSTM else 4
    cdef cnp.ndarray w_ih, w_hh
    if not isinstance(weights, (tuple, list)) or len(weights) != n:
        raise ValueError(f"weights must be a tuple of {n} arrays (w_ih, w_hh, b_ih, b_hh"
                         + (", w_hr, w_ph)" if cell == LSTM else ")"))
    w_ih = carray(weights[0], typenum)
    w_hh = carray(weights[1], typenum)
    if cnp.PyArray_NDIM(w_ih) != 2 or cnp.PyArray_NDIM(w_hh) != 2:
        raise ValueError(f"w_ih and w_hh must be 2-D, but got shapes {shape_str(w_ih)} and {shape_str(w_hh)}")
    w.G = <int>cnp.PyArray_DIMS(w_ih)[0]
    w.H = w.G // gates
    if w.G != w.H * gates or w.H < 1:
        raise ValueError(f"w_ih must have {gates}*H rows, but got shape {shape_str(w_ih)}")
    if I >= 0 and cnp.PyArray_DIMS(w_ih)[1] != I:
        raise ValueError(f"w_ih must have shape ({w.G}, {I}) for inputs of size {I}, "
                         f"but got {shape_str(w_ih)}")
    w.In = <int>cnp.PyArray_DIMS(w_ih)[1]
    w.P = <int>cnp.PyArray_DIMS(w_hh)[1]
    if cnp.PyArray_DIMS(w_hh)[0] != w.G:
        raise ValueError(f"w_hh must have {w.G} rows like w_ih, but got shape {shape_str(w_hh)}")
    w.w_ih, w.w_hh = w_ih, w_hh
    w.b_ih = None if weights[2] is None else checked(weights[2], typenum, "b_ih", 1, w.G)
    w.b_hh = None if weights[3] is None else checked(weights[3], typenum, "b_hh", 1, w.G)
    w.w_hr = None
    if cell == LSTM and weights[4] is not None:
        w.w_hr = checked(weights[4], typenum, "w_hr", 2, w.P, w.H)
    elif w.P != w.H:
        raise ValueError(f"w_hh must have shape ({w.G}, {w.H}), but got {shape_str(w_hh)}")
    w.w_ph = None
    if cell == LSTM and weights[5] is not None:
        w.w_ph = checked(weights[5], typenum, "w_ph", 2, 3, w.H)
    return w


cdef class Saved:
    """What a training-mode forward keeps for its backward: one record, its arrays by name.

    The kernel contract's saved record (see :mod:`fastrnn.reference`): ``x``, ``lengths``,
    ``gates`` (the post-activation gates, (T, B, ldg)), ``hs`` (slot 0 = h0, slot t+1 = h_t),
    and for LSTM ``cs`` (c the same way), ``tc`` (tanh(c_t), or h(c_t) with the activations
    option) and ``mb`` (m_t, with a projection); ``activations``, the forward's (None: the
    cell's defaults), goes to the backward with the cell's variant.  A backward takes it once
    (it writes the gradients over the gates): then ``used`` is True and the arrays are gone."""
    cdef int cell_id, typenum, T, B, In, H, P, variant   # In: input size (I is a macro of complex.h)
    cdef readonly bint step, used
    cdef readonly object x, lengths, gates, hs, cs, tc, mb, cmask
    cdef object sparse       # x compressed (sparse_input's arrays), or None: x is dense
    # None, or a tuple of fastrnn.activations.Activation (one per slot): what set_activations takes
    cdef readonly object activations
    cdef _Weights w

    @property
    def cell(self):
        """The cell type of the forward that made it."""
        return CELL_NAMES[self.cell_id]

    @property
    def fields(self):
        """The names of the saved arrays this record holds."""
        return tuple(n for n in ("x", "lengths", "gates", "hs", "cs", "tc", "mb", "cmask")
                     if getattr(self, n) is not None)

    def __repr__(self):
        return (f"Saved({self.cell}{'_step' if self.step else ''}: {', '.join(self.fields)}"
                f"{', used' if self.used else ''})")


cdef object check_lengths(object lengths, int B, int T):
    if lengths is None:
        return None
    kind = lengths.dtype.kind if cnp.PyArray_Check(lengths) else np.asarray(lengths).dtype.kind
    if kind not in "iu":
        raise TypeError(f"lengths must be an integer array, but got dtype "
                        f"{np.asarray(lengths).dtype}")
    lens = checked(lengths, I64, "lengths", 1, B)
    if B and (lens.min() < 0 or lens.max() > T):   # the kernels index the steps by them
        raise ValueError(f"lengths must be between 0 and T = {T}, but got "
                         f"{lens.min()}..{lens.max()}")
    return lens


# ---------------------------------------------------------------------------------------
# Threads: SciPy's OpenBLAS is held at one thread for the whole kernel call (a pool
# thread woken for every small per-step product costs more than the product, and its
# threads keep spinning after a call, against the element-wise work and the other
# cores' users).  The kernels split the work themselves, over a small thread pool:
# a time loop splits the batch into contiguous slices, one per thread, each running the
# whole loop on its slice (as onnxruntime does); the hoisted GEMMs before and after the
# loop split their output rows.  Every element of a result is computed by the same
# operations whatever the split, up to the BLAS kernel BLAS picks for the slice's size.
# ---------------------------------------------------------------------------------------
ctypedef void (*set_threads_fn)(int) noexcept nogil
ctypedef int (*get_threads_fn)() noexcept nogil

cdef enum:
    MAX_BLAS_LIBS = 4
    MIN_ROWS_PER_THREAD = 4
    STALE = 2        # a team's phase: the cached packed weights were out of date (see run_team)
    TEAMLESS = 4     # a team's phase: no thread could be had for a member (nothing was run)
# a phase below this (~100 us on one thread) runs on one thread: a hand-off to a pool of Python
# threads cost ~50 us (LSTM(64, 64) on a 100-step sequence of batch 1: 223 us with its input
# projection of 3.3 MFLOP split, 140 us without; not measured again on the C pool)
cdef double PARALLEL_MIN_FLOPS = 1e7
# a time loop above this (~5 ms) made on the main thread is watched: a Ctrl-C stops it at its
# next step (see stopped); a shorter one raises KeyboardInterrupt once it is done
cdef double WATCH_FLOPS = 5e8

cdef set_threads_fn _blas_set[MAX_BLAS_LIBS]
cdef get_threads_fn _blas_get[MAX_BLAS_LIBS]
cdef int _blas_saved[MAX_BLAS_LIBS]
cdef int _blas_n = 0
cdef int _single_depth = 0
cdef int _num_threads = 1
#: the OpenBLAS libraries whose thread count the kernels control (paths), for diagnostics
BLAS_LIBRARIES = []


def _openblas_paths():
    """Paths of the loaded OpenBLAS libraries, numpy's own excepted (the kernels use SciPy's)."""
    import os
    import sys
    paths = []
    if not sys.platform.startswith("linux"):
        try:  # elsewhere, threadpoolctl knows how to list the loaded libraries, if it is installed
            import threadpoolctl
            paths = [i["filepath"] for i in threadpoolctl.threadpool_info()
                     if i.get("internal_api") == "openblas"]
        except Exception:
            pass
    else:
        try:
            with open("/proc/self/maps") as maps:
                for line in maps:
                    parts = line.split(None, 5)
                    if len(parts) == 6 and "openblas" in os.path.basename(parts[5].strip()).lower():
                        if parts[5].strip() not in paths:
                            paths.append(parts[5].strip())
        except OSError:
            pass
    sep = os.sep
    return [p for p in paths if f"{sep}numpy.libs{sep}" not in p and f"{sep}numpy{sep}" not in p]


def _bind_blas_threads():
    """Find openblas_set/get_num_threads of SciPy's BLAS; without them BLAS threads are left alone."""
    import ctypes
    global _blas_n
    for path in _openblas_paths():
        if _blas_n >= MAX_BLAS_LIBS:
            break
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_", ""):
            for suffix in ("", "64_"):
                try:
                    set_ = getattr(lib, f"{prefix}openblas_set_num_threads{suffix}")
                    get_ = getattr(lib, f"{prefix}openblas_get_num_threads{suffix}")
                except AttributeError:
                    continue
                _blas_set[_blas_n] = <set_threads_fn><size_t>ctypes.cast(set_, ctypes.c_void_p).value
                _blas_get[_blas_n] = <get_threads_fn><size_t>ctypes.cast(get_, ctypes.c_void_p).value
                _blas_n += 1
                BLAS_LIBRARIES.append(path)
                break
            else:
                continue
            break


def _follow_num_threads(int n):
    """Told by :mod:`fastrnn._runtime` of the thread count (``fastrnn.set_num_threads``)."""
    global _num_threads
    _num_threads = n


def thread_count():
    """The thread count this build of the kernels splits a call over (the runtime's)."""
    return _num_threads


cdef void blas_single_begin() noexcept:
    """Hold SciPy's OpenBLAS at one thread (nested and re-entrant; call with the GIL)."""
    global _single_depth
    cdef int k
    if _single_depth == 0:
        for k in range(_blas_n):
            _blas_saved[k] = _blas_get[k]()
            if _blas_saved[k] != 1:
                _blas_set[k](1)
    _single_depth += 1


cdef void blas_single_end() noexcept:
    global _single_depth
    cdef int k
    _single_depth -= 1
    if _single_depth == 0:
        for k in range(_blas_n):
            if _blas_saved[k] != 1:
                _blas_set[k](_blas_saved[k])


cdef int plan_threads(int B, double loop_flops):
    cdef int n = _num_threads
    if n <= 1 or loop_flops < PARALLEL_MIN_FLOPS:
        return 1
    if n > B // MIN_ROWS_PER_THREAD:
        n = B // MIN_ROWS_PER_THREAD
    return n if n > 1 else 1


# a forward runs on a team that splits its hidden units only if its products come to at least
# TEAM_MIN_FLOPS, and those of one step to TEAM_STEP_FLOPS: below, the hand-off to the team
# and the barrier after each step cost more than they save (one process, alternating calls:
# LSTM(64, 64) at T=100, B=1, 65 kFLOP a step, 1.29x as fast on two threads as on one, GRU
# 1.43x; RNN(64, 64), 16 kFLOP a step, 0.70x; GRU(64, 64) at T=20, 1.0 MFLOP in all, 1.00x)
cdef double TEAM_MIN_FLOPS = 1e6
# an eval-mode forward of up to this many sequences a team member runs on a team even when its
# batch could be split (LSTM(64, 128) at T=100, B=16, eval, 2 threads on Zen 3, one process
# alternating the two: 1.27x as fast on a team, GRU 1.21x; LSTM(512, 512), T=50, B=64: 1.11x;
# T=20, B=16: 1.38x; LSTM(128, 256), T=100, B=32: 1.04x; B=256 with H=128 and B=128 with
# H=256: 0.98-0.99x).  Split by batch, each thread reads all of W_ih and W_hh at every step;
# on a team each reads its share of W_hh, and the input goes in one product per chunk of steps
cdef int TEAM_MAX_ROWS = 32
# ... unless the batch splits over as many threads and all the weights stay in each core's L2
# cache beside L2_RESERVE bytes of other data (weights_fit_l2): then each thread reads them from
# its own cache at every step anyway, and the team would only add a barrier per step and the
# exchange of h_t between the cores.  Intel Xeon (Sapphire Rapids class, 2 MB of L2 a core),
# 2 threads, eval, T=100, one process alternating the two (team / split by batch):
# LSTM(64, 128) B=16 1.16, B=8 1.09; LSTM(128, 256) B=32 1.06, B=16 1.02, B=8 1.01 (1.5 MB of
# weights); GRU(64, 128) B=16 1.10, GRU(128, 256) B=32 1.11, GRU(256, 256) B=32 1.03 (1.5 MB);
# RNN(64, 128) B=16 1.42, RNN(256, 256) B=32 1.21; but LSTM(256, 256) B=32 0.91 (2 MB),
# LSTM(128, 384) B=32 0.85 (3 MB), LSTM(512, 512) B=64 0.91 (8 MB).  On Zen 3 (512 KB of L2)
# the team was 1.27x as fast at LSTM(64, 128), B=16 (384 KB of weights: see above), so the
# reserve is larger than a quarter of that L2.
cdef Py_ssize_t L2_RESERVE = 384 * 1024
cdef Py_ssize_t _l2_bytes = fr_l2_cache_bytes()
fr_set_block_bytes(_l2_bytes // 2)     # the products' chunks of W (see block_bytes)
cdef double TEAM_STEP_FLOPS = 4e4
# one step (STEP_ROWS) goes to a team from this many FLOPs (a cell called from Python, eval,
# B=1, fresh processes alternating one thread and two, medians of 5 pairs: LSTMCell(128, 128),
# 0.26 MFLOP, 11.4 -> 8.2 us; GRUCell(128, 128) 9.2 -> 7.5; LSTMCell(96, 96) 8.1 -> 6.8;
# LSTMCell(64, 64), 65 kFLOP, 5.8 -> 5.5; RNNCell(128, 128), 65 kFLOP, 6.8 -> 6.7); a batch of
# up to DOTS_MAX_COLUMNS too (LSTMCell(128, 128), B = 8, one process alternating the build
# before, on one thread through BLAS, and this: 149 -> 35 us; B = 64: 374 -> 234 us)
cdef double TEAM_ONE_STEP_FLOPS = 6e4


cdef int team_size(int H, int typenum, int T, double flops, double min_flops):
    """The size of a team that splits the hidden units of a small batch (see run_team), or 0:
    whole panels of units for each member, while no other kernel call is in flight.
    ``flops``: of the products of all T steps, at least ``min_flops``."""
    cdef int nr = panel_width(typenum == F32)
    cdef int n = _num_threads
    if (n <= 1 or flops < min_flops or flops < TEAM_STEP_FLOPS * T or _in_flight > 0
            or H % nr != 0):
        return 0
    if n > H // nr:
        n = H // nr
    return n if n > 1 else 0


cdef bint weights_fit_l2(_Weights w, Py_ssize_t item) noexcept:
    """Whether all the weights (w_ih and w_hh) fit in one core's L2 cache beside L2_RESERVE
    bytes (False where the size of that cache is unknown)."""
    return (_l2_bytes > 0
            and <Py_ssize_t>w.G * (w.In + w.P) * item + L2_RESERVE <= _l2_bytes)


def l2_cache_bytes(n=None):
    """The size of one core's L2 cache that the choice between a team and a split of the batch
    uses (weights_fit_l2): the C library's figure at import, 0 where it gives none.  With ``n``
    (for the tests), use ``n`` from now on; returns the figure used before."""
    global _l2_bytes
    cdef Py_ssize_t before = _l2_bytes
    if n is not None:
        if int(n) < 0:
            raise ValueError(f"n must be at least 0, but got {n!r}")
        _l2_bytes = int(n)
    return before


def block_bytes(n=None):
    """The bytes of a packed weight matrix that a product keeps in the L2 cache while its rows
    go by (fastrnn_mm.h's fr_block_bytes): half of a core's L2 cache at import, from 256 KB
    (also where the cache is unknown) to 1 MB.  With ``n`` (for the tests), use ``n`` bytes,
    in that range, from now on.  Returns the figure used before; results do not depend on it."""
    cdef Py_ssize_t before = fr_block_bytes
    if n is not None:
        if not FR_BLOCK_BYTES <= int(n) <= FR_BLOCK_MAX:
            raise ValueError(f"n must be from {FR_BLOCK_BYTES} to {FR_BLOCK_MAX} bytes, "
                             f"but got {n!r}")
        fr_set_block_bytes(int(n))
    return before


def team_stats():
    """Teams run in this process (hidden units split over threads, see run_team), for the tests."""
    return fr_team_runs


def team_steals():
    """Pieces of input projection a team member made of another's units (see fwd_units), in
    this process, for the tests."""
    return fr_team_steals


def _lag_teams(int us):
    """For the tests: the last member of every team spins ``us`` microseconds at each step (0:
    never), as a member on a slower or busier core lags."""
    global _team_lag_us
    _team_lag_us = us


cdef int _teams_refused = 0


def _refuse_teams(int n):
    """For the tests: the next ``n`` calls that chose a team find it cannot run (as when no
    thread can be had) and run on one thread instead."""
    global _teams_refused
    _teams_refused = n


ctypedef struct Slice:
    Args a
    int phase, cell
    bint f32
    int rc
    long ns                  # how long the slice took (a time loop's, for loop_split)


# for the tests: slice 1 of a time loop spins this many nanoseconds per row of its batch, as a
# thread on a slower or busier core lags (see _lag_loops)
cdef long _loop_lag_ns = 0


cdef void slice_job(int i, void* data, int unused) noexcept nogil:
    cdef Slice* s = <Slice*>data
    cdef long t0 = fr_now_ns()
    s.rc = call_phase(s.phase, s.cell, s.f32, &s.a)
    if _loop_lag_ns > 0 and i == 1 and s.phase in (FWD_LOOP, BWD_LOOP):
        fr_spin_ns(_loop_lag_ns * (s.a.b1 - s.a.b0))
    s.ns = fr_now_ns() - t0


# The batch of a time loop split between its threads by their pace.  The slices of a loop run
# the whole loop side by side, with no barrier between steps, and the call waits for the last;
# and the threads of a call do not run at one pace: on the 2-core Intel Xeon (AVX-512) of the
# benchmark, with both cores reading the same packed weights from L3 at every step, one thread
# took 7% longer than the other over LSTM(512, 512)'s training loops at T=50, B=64 (forward
# 39.1 against 36.4 ms, backward 18.5 against 17.2) in 5 processes of 6, the same thread for
# every call of a process but not the same in every process (a C loop of the same products
# showed it as well, the slower thread always the one on the same vCPU).  So each slice's time
# per row of the last loop of the phase (kept as a running mean, over calls without lengths:
# with lengths the rows' work differs) sets the next split: each thread as many rows as it
# makes in the same time, in whole rows, when that is predicted to end the loop sooner than
# equal shares by PACE_MARGIN; equal shares while a pace is unknown.  Which rows a thread makes
# does not change any bit of the results.  That training call, 3 processes of each alternating,
# while one thread was slower (splits of 31-30 rows against 33-34): 109.8, 110.7 and 112.3 ms
# against 111.7, 112.7 and 113.6 with equal shares (medians of 22 calls); an hour later, the
# threads at one pace in most processes, whole processes alternating with the build before:
# 0.995x the time (medians of 12 pairs).
cdef enum:
    PACE_SLOTS = 16          # a loop of more threads takes equal shares
cdef double PACE_MARGIN = 0.005
cdef double PACE_CLAMP = 1.25    # a call's pace of a slice counts as at most this over the mean
cdef double PACE_NEW = 0.25      # the weight of a call's pace in the running mean
cdef int PACE_SHIFT = 8          # a slice's rows stay within 1/PACE_SHIFT of its equal share
cdef bint _pace_on = True
cdef double _pace[2][PACE_SLOTS]     # FWD_LOOP, BWD_LOOP: each slice's time per row over their mean
                                     # (0: unknown)
cdef int _pace_threads[2]            # the threads of those slices
cdef int _pace_rows[2][PACE_SLOTS]   # the rows of each slice of the last such loop (for the
cdef int _pace_slices[2]             # tests), and their number


cdef void loop_split(int phase, int B, int nthreads, bint lens, Slice* slices) noexcept:
    """The batch rows [b0, b1) of each of the ``nthreads`` slices of a time loop (``phase``
    FWD_LOOP or BWD_LOOP): equal shares, or by the threads' pace (see above)."""
    cdef int k, p = phase - FWD_LOOP, lo = 0
    cdef int ends[PACE_SLOTS]
    cdef double speed = 0, acc = 0, even_end = 0, paced_end = 0
    cdef bint paced = (_pace_on and not lens and nthreads <= PACE_SLOTS
                       and _pace_threads[p] == nthreads)
    for k in range(nthreads):
        part_range(B, k, nthreads, &slices[k].a.b0, &slices[k].a.b1)
        if paced and _pace[p][k] > 0:
            speed += 1 / _pace[p][k]
            even_end = max(even_end, (slices[k].a.b1 - slices[k].a.b0) * _pace[p][k])
        else:
            paced = False
    if not paced:
        return
    for k in range(nthreads):
        acc += 1 / _pace[p][k]
        ends[k] = paced_bound(B, nthreads, k, acc / speed, lo)
        paced_end = max(paced_end, (ends[k] - lo) * _pace[p][k])
        lo = ends[k]
    if paced_end <= even_end * (1 - PACE_MARGIN):
        lo = 0
        for k in range(nthreads):
            slices[k].a.b0, slices[k].a.b1 = lo, ends[k]
            lo = ends[k]


cdef inline int paced_bound(int B, int n, int k, double share, int lo) noexcept:
    """The end of slice k's rows of a batch of B split between n slices by pace: ``share`` of
    the batch up to it, in whole rows, at least one row, and within 1/PACE_SHIFT of an equal
    share from ``lo`` (its start)."""
    cdef int hi, even = B // n, slack = B // n // PACE_SHIFT
    if k == n - 1:
        return B
    hi = <int>(B * share + 0.5)
    hi = min(max(hi, lo + even - slack), lo + even + slack)
    return min(max(hi, lo + 1), B - (n - 1 - k))


cdef void learn_pace(int phase, int nthreads, bint lens, Slice* slices) noexcept:
    """Each slice's time per row of a finished time loop into the running means of its phase
    (loop_split)."""
    cdef int k, p = phase - FWD_LOOP
    cdef double pace, mean = 0
    cdef double per_row[PACE_SLOTS]
    if nthreads > PACE_SLOTS:
        return
    _pace_slices[p] = nthreads
    for k in range(nthreads):
        _pace_rows[p][k] = slices[k].a.b1 - slices[k].a.b0
    if lens:
        return
    if _pace_threads[p] != nthreads:
        _pace_threads[p] = nthreads
        for k in range(PACE_SLOTS):
            _pace[p][k] = 0
    for k in range(nthreads):
        if _pace_rows[p][k] <= 0 or slices[k].rc != 0 or slices[k].ns <= 0:
            return
        per_row[k] = <double>slices[k].ns / _pace_rows[p][k]
        mean += per_row[k] / nthreads
    for k in range(nthreads):
        pace = per_row[k] / mean
        pace = min(max(pace, 1 / PACE_CLAMP), PACE_CLAMP)      # (one call's hiccup)
        _pace[p][k] = pace if _pace[p][k] == 0 else (1 - PACE_NEW) * _pace[p][k] + PACE_NEW * pace


def _lag_loops(long ns_per_row):
    """For the tests: slice 1 of every time loop on two or more threads spins ``ns_per_row``
    nanoseconds per row of its batch (0: never), as a thread on a slower core lags."""
    global _loop_lag_ns
    _loop_lag_ns = ns_per_row


def loop_pace(bint on=True, bint forget=False):
    """The rows of each slice of the last time loop on threads, forward and backward:
    ([rows, ...], [rows, ...]) (see loop_split).  ``on`` False splits every batch in equal
    shares from now on (for the tests and benchmarks); ``forget`` drops the paces measured."""
    global _pace_on
    cdef int p, k
    _pace_on = on
    if forget:
        for p in range(2):
            _pace_threads[p] = _pace_slices[p] = 0
            for k in range(PACE_SLOTS):
                _pace[p][k] = 0
    return tuple([_pace_rows[p][k] for k in range(_pace_slices[p])] for p in range(2))


cdef extern from "Python.h":
    # (declared here without Cython's check of the error: interrupted takes it as it is)
    int PyErr_CheckSignals()
    void PyErr_Fetch(PyObject** ptype, PyObject** pvalue, PyObject** ptraceback)
    void PyErr_Restore(PyObject* ptype, PyObject* pvalue, PyObject* ptraceback)
    void PyErr_Clear()


# the exception Python's signal handlers raised in a watched call (see interrupted), until the
# call raises it
cdef PyObject* _raised_type = NULL
cdef PyObject* _raised_value = NULL
cdef PyObject* _raised_tb = NULL


cdef bint interrupted(Args* a) noexcept nogil:
    """A SIGINT came during this watched call (fr_watch_seen): run Python's signal handlers now,
    on this thread (the caller's: the main thread).  When they raise, keep the exception for
    run_split to raise, set ``a.stop`` so that every thread's loop ends at its next step, and
    return True; otherwise (a handler that does not raise) the call goes on."""
    global _raised_type, _raised_value, _raised_tb
    with gil:
        fr_watch_clear()
        if PyErr_CheckSignals() == 0:
            return False
        if _raised_type == NULL:
            PyErr_Fetch(&_raised_type, &_raised_value, &_raised_tb)
        else:
            PyErr_Clear()    # (a second interrupt in the same call: the first is raised)
    a.stop[0] = 1
    return True


cdef inline bint stopped(Args* a) noexcept nogil:
    """The time loops' test at every step: has the call been stopped?  In a watched call (one
    whose ``a.stop`` is set, see run), the caller's thread also acts on a SIGINT here."""
    if a.stop == NULL:
        return False
    if a.stop[0]:
        return True
    return fr_watch_seen() and interrupted(a)


cdef int run_split(int phase, int cell, bint f32, Args* a, int nthreads) except -1:
    """Run a phase on ``nthreads`` threads: loops split the batch, the GEMM phases split each
    product's output.  The caller computes the first slice and the pool of fastrnn_pool.h the
    others (the pool that also runs OpenBLAS's parallel jobs and the teams: its threads are
    awake when phases and products follow each other closely, and no other pool's threads
    compete with them for the cores).  Returns once every slice has; raises what Python's
    signal handlers raised during the call (see stopped)."""
    global _raised_type, _raised_value, _raised_tb
    cdef int rc = 0, k, B = a.B
    cdef bint loop = phase == FWD_LOOP or phase == BWD_LOOP
    cdef Slice* slices
    a.part, a.nparts, a.b0, a.b1 = 0, 1, 0, B
    if nthreads <= 1:
        with nogil:
            rc = call_phase(phase, cell, f32, a)
    else:
        slices = <Slice*>calloc(nthreads, sizeof(Slice))
        if slices == NULL:
            raise MemoryError("fastrnn cython kernel: out of memory for its threads")
        for k in range(nthreads):
            slices[k].a = a[0]
            slices[k].phase, slices[k].cell, slices[k].f32 = phase, cell, f32
            if not loop:
                slices[k].a.part, slices[k].a.nparts = k, nthreads
        if loop:
            loop_split(phase, B, nthreads, a.lens != NULL, slices)
        with nogil:
            fr_split_run_all(slice_job, nthreads, sizeof(Slice), slices)
        for k in range(nthreads):
            rc |= slices[k].rc
        if loop and not (a.stop != NULL and a.stop[0]):
            learn_pace(phase, nthreads, a.lens != NULL, slices)
        free(slices)
    if a.stop != NULL and _raised_type != NULL:    # (only a watched call, the main thread's)
        PyErr_Restore(_raised_type, _raised_value, _raised_tb)
        _raised_type = _raised_value = _raised_tb = NULL
        return -1
    return rc


cdef int _in_flight = 0     # kernel calls running now, in any thread (counted under the GIL)


def _forget_calls_in_flight():
    """In a child made by fork only the forking thread exists: no call of the parent runs, a
    watched call's SIGINT handler goes (see fr_watch_after_fork), and SciPy's BLAS gets back
    the thread counts a call in flight held at one (it kept one thread: the call that would
    have set them back is not in the child)."""
    global _in_flight, _single_depth
    _in_flight = 0
    fr_watch_after_fork()
    if _single_depth > 0:
        _single_depth = 1
        blas_single_end()


def _blas_single(hold=None):
    """Hold SciPy's OpenBLAS at one thread (``hold`` True) or let it go (False), as a kernel
    call does, and return its thread counts (None: only return them; for the tests)."""
    cdef int k
    if hold is True:
        blas_single_begin()
    elif hold is False and _single_depth > 0:
        blas_single_end()
    return [_blas_get[k]() for k in range(_blas_n)]

cdef enum:
    WARM_N = 384    # the warm-up product: WARM_N^3, float32, BLAS on one thread


cdef void warm_product() noexcept nogil:
    """One WARM_N x WARM_N x WARM_N float32 product in SciPy's BLAS on the calling thread."""
    cdef float* m = <float*>calloc(3 * WARM_N * WARM_N, sizeof(float))
    if m != NULL:
        gemm(c'N', c'N', WARM_N, WARM_N, WARM_N, <float>1, m, WARM_N, m + WARM_N * WARM_N, WARM_N,
             <float>0, m + 2 * WARM_N * WARM_N, WARM_N)
        free(m)


cdef void warm_job(int i, void* data, int unused) noexcept nogil:
    """warm_product on this thread once every job of the call has come here (``data``: the
    fr_barrier that every job gets)."""
    fr_barrier_wait(<fr_barrier*>data, i, NULL)
    warm_product()


cdef int _blas_warm_threads = 0     # threads warm_blas last ran on


cdef warm_blas(int nthreads):
    """:func:`warm_product` on ``nthreads`` threads at the same time: the caller and the
    pool's, as a split call runs, so that each of the OpenBLAS buffers that its threads use
    at once is touched.

    OpenBLAS gives each call in flight a work buffer from a table (the first one free) and
    maps its pages only when first written.  Its GEMM kernel prefetches some way past the
    panels it packs, and a prefetch into a page never written costs a page-table walk every
    time (slow in a virtual machine) instead of a TLB hit.  A buffer that only small
    products have used stays that way: the thread that got it ran its share of the input
    projection 3x slower (medium RNN forward on two threads: 19-21 ms instead of 12-14 in
    6 of 21 fresh processes, and in every one whose first split problem was tiny),
    whichever products it had run alone before.  A WARM_N^3 product writes deep enough;
    one per buffer in use at once, so on every thread at the same time."""
    global _blas_warm_threads
    cdef fr_barrier bar
    nthreads = max(nthreads, 1)
    _blas_warm_threads = nthreads
    with nogil:
        if nthreads == 1 or fr_barrier_init(&bar, nthreads) != 0:
            warm_product()
        else:
            if fr_split_run(warm_job, nthreads, 0, &bar, 0) != 0:
                warm_product()
            fr_barrier_free(&bar)


ctypedef struct Peak:
    # one thread's part of multiply_add_peak
    fr_barrier* bar          # where every thread meets before it starts
    long rounds              # of fr_peak_f32
    long ns                  # written: the time they took


cdef void peak_job(int i, void* data, int unused) noexcept nogil:
    cdef Peak* p = <Peak*>data
    cdef long t0
    fr_barrier_wait(p.bar, i, NULL)
    t0 = fr_now_ns()
    fr_peak_f32(p.rounds)
    p.ns = fr_now_ns() - t0


cdef double peak_sample(int threads, long rounds) except -1:
    """Seconds of the slowest of ``threads`` threads running fr_peak_f32(rounds) at once (the
    caller and the pool's, started together at a barrier)."""
    cdef fr_barrier bar
    cdef Peak* ps = <Peak*>calloc(threads, sizeof(Peak))
    cdef int k, rc
    cdef long worst = 0
    if ps == NULL or fr_barrier_init(&bar, threads) != 0:
        free(ps)
        raise MemoryError("multiply_add_peak: no memory for its threads")
    for k in range(threads):
        ps[k].bar, ps[k].rounds = &bar, rounds
    with nogil:
        if threads == 1:
            peak_job(0, ps, 0)
            rc = 0
        else:
            rc = fr_split_run(peak_job, threads, sizeof(Peak), ps, 0)
    for k in range(threads):
        worst = max(worst, ps[k].ns)
    fr_barrier_free(&bar)
    free(ps)
    if rc != 0:
        raise RuntimeError(f"multiply_add_peak: {threads} threads could not be had at once")
    return max(worst, 1) * 1e-9


def multiply_add_peak(threads=None, double seconds=0.2, int repeat=3):
    """The float32 multiply-add throughput of this CPU at this build's vector width (GFLOP/s):
    independent sums kept in registers, on ``threads`` threads at once (default: fastrnn's
    thread count), the caller and the pool's.  No product runs faster (its multiply-adds also
    wait for its loads): it is the floor of the benchmark's rows, beside BLAS's GEMM.  The
    median of ``repeat`` samples of about ``seconds`` each."""
    cdef int n = _num_threads if threads is None else int(threads)
    cdef long rounds = 1 << 16
    cdef double flops_per_round = 2.0 * FR_PEAK_SUMS * fr_peak_lanes(), t
    if not 1 <= n <= 1024:
        raise ValueError(f"threads must be from 1 to 1024, but got {threads!r}")
    if not seconds > 0 or repeat < 1:
        raise ValueError(f"seconds must be above 0 and repeat at least 1, but got "
                         f"{seconds!r} and {repeat!r}")
    while True:                  # rounds that take about ``seconds`` on one thread
        t = peak_sample(1, rounds)
        if t >= seconds / 4 or rounds > (<long>1 << 40):
            break
        rounds *= 4
    rounds = max(1, <long>(rounds * seconds / t))
    samples = sorted(n * rounds * flops_per_round / peak_sample(n, rounds) / 1e9
                     for _ in range(repeat))
    return samples[len(samples) // 2]


cdef int clocked_split(int phase, int cell, bint f32, Args* a, int nthreads,
                       int threads) except -1:
    """:func:`run_split` on the phase clock (see phase_clock): its time on this thread, and
    that by the ``threads`` it keeps busy (``nthreads``, or the size of a team it starts)."""
    cdef long t0 = fr_clock_start()
    cdef int rc = run_split(phase, cell, f32, a, nthreads)
    fr_clock_stop(FR_CLK_PHASE + phase, t0, 1)
    fr_clock_stop(FR_CLK_THREADS + phase, t0, threads)
    return rc


def phase_clock(on=True):
    """Start the phase clock from zero (``on``), or stop it, and return what it had read.

    While it is on, each kernel call of this build adds its time, each of its phases its
    time (on the caller's thread, and times the threads the phase keeps busy), and each thread
    the time of its products; results do not change.  The reading is a dict: ``calls``
    (seconds in the kernels' driver), ``phases`` (``{name: seconds}``, see ``PHASE_NAMES``),
    ``thread_time`` (``{name: seconds}``: each phase's time by its threads), ``products``
    (seconds summed over the threads: the micro-kernels, the weight gradients and BLAS) and
    ``threads`` (the thread count calls use now)."""
    reading = phase_clock_read()
    fr_clock_set(1 if on else 0)
    return reading


def phase_clock_read():
    """What the phase clock has read since it started (see phase_clock), in seconds."""
    return {"calls": fr_clock_read(FR_CLK_RUN) * 1e-9,
            "phases": {name: fr_clock_read(FR_CLK_PHASE + k) * 1e-9
                       for k, name in enumerate(PHASE_NAMES)},
            "thread_time": {name: fr_clock_read(FR_CLK_THREADS + k) * 1e-9
                            for k, name in enumerate(PHASE_NAMES)},
            "products": fr_clock_read(FR_CLK_PRODUCTS) * 1e-9,
            "threads": _num_threads}


cdef int run(int cell, int typenum, Args* a, bint backward, int loop_threads, double hoisted_flops,
             double loop_flops, bint units=False, bint step_team=False) except -1:
    """Run a forward (PRE + FWD_LOOP, or FWD_UNITS when ``units``, or STEP_ROWS when
    ``step_team``) or a backward (BWD_LOOP + BWD_POST), after the PACK phase when packed() left
    copies of the weights to it (a.packs), BLAS on one thread (a step's team calls none).  A
    time loop of more than WATCH_FLOPS made on the main thread is watched (see stopped): a
    Ctrl-C stops it at its next step and raises KeyboardInterrupt here.  Returns 0; with ``units``,
    1 if the team found the weights in a.check changed; with either, 2 if the team could not
    run (another call is in flight, whose threads it would compete with, or no thread could be
    had): nothing was computed then."""
    global _in_flight, _teams_refused
    cdef bint f32 = typenum == cnp.NPY_FLOAT32
    cdef int gemm_threads = 1 if hoisted_flops < PARALLEL_MIN_FLOPS else _num_threads
    cdef int rc = 0, k
    cdef int stop = 0
    cdef bint watched = False
    cdef long t0
    if (units or step_team) and _teams_refused > 0:
        _teams_refused -= 1
        return 2
    _in_flight += 1
    if _in_flight > 1:
        # another call is running (a server's threads): this one keeps to its own thread,
        # rather than handing slices to a pool the other call keeps busy (results are the same
        # on any number of threads)
        loop_threads = gemm_threads = 1
        if units or step_team:   # (it started after this call chose a team)
            _in_flight -= 1
            return 2
    t0 = fr_clock_start()
    if not step_team:      # (a step's team makes its products with fr_dots: no BLAS call)
        blas_single_begin()
    try:
        if _blas_warm_threads < max(loop_threads, gemm_threads):
            warm_blas(_num_threads)
        if loop_flops > WATCH_FLOPS and _threading.current_thread() is _threading.main_thread():
            watched = fr_watch_begin()
            if watched:
                a.stop = &stop
        if a.npacks:
            clocked_split(PACK, cell, f32, a, gemm_threads, gemm_threads)
        if units:
            rc = clocked_split(FWD_UNITS, cell, f32, a, 1, a.members)
        elif step_team:
            rc = clocked_split(STEP_ROWS, cell, f32, a, 1, a.members)
        else:
            if a.chunked:
                # each chunk's projection of all rows is made by the thread that runs the loop
                # (step_gates), so the loop cannot be split (a team's chunks, when the team
                # could not start)
                loop_threads = 1
            if not backward:
                k = 1 if a.chunked else gemm_threads
                rc = clocked_split(PRE, cell, f32, a, k, k)
            rc |= clocked_split(BWD_LOOP if backward else FWD_LOOP, cell, f32, a, loop_threads,
                                loop_threads)
        if backward:
            rc |= clocked_split(BWD_POST, cell, f32, a, gemm_threads, gemm_threads)
    finally:
        if watched:
            fr_watch_end()
            a.stop = NULL
        if not step_team:
            blas_single_end()
        _in_flight -= 1
        fr_clock_stop(FR_CLK_RUN, t0, 1)
    if rc == STALE:
        return 1
    if rc == TEAMLESS:
        return 2
    if rc != 0:
        raise MemoryError("fastrnn cython kernel: out of memory for its workspace")
    return 0


_bind_blas_threads()
from fastrnn import _runtime
_runtime.follow_num_threads(_follow_num_threads)
_runtime.after_fork(_forget_calls_in_flight)


cdef extern from "fastrnn_pool.h":
    void fr_openblas_threads(int sync, fr_dojob_fn dojob, int numjobs, size_t elsize,
                             void* jobdata, int dojob_data) nogil
    long fr_calls, fr_started, fr_unknown_layout, fr_handed, fr_taken_back, fr_pickup_lag_ns


def blas_pool_callback():
    """Address of the OpenBLAS threads callback of ``fastrnn_pool.h`` (see :mod:`fastrnn._runtime`)."""
    return <size_t><void*>fr_openblas_threads


def blas_pool_stats():
    """``(calls, workers started, calls whose job entries had a layout the pool does not
    know)`` of that pool in this process, for the tests (see fastrnn_pool.h)."""
    return fr_calls, fr_started, fr_unknown_layout


def pool_handed():
    """Jobs of the pool's calls (the split phases, the teams, OpenBLAS's jobs) handed straight
    to a spinning worker through its slot rather than queued, in this process (for the tests;
    see fastrnn_pool.h)."""
    return fr_handed


def pool_taken_back():
    """Of the jobs :func:`pool_handed` counts, those of a short call (a cell's step on a team)
    that its caller ran itself because no worker had taken them when it was done with its own,
    in this process (for the tests; see fr_pool_run)."""
    return fr_taken_back


def _lag_pickups(long us):
    """For the tests: the pool's workers wait ``us`` microseconds before they take a job
    handed to them (0: never), as a worker whose core was taken does."""
    global fr_pickup_lag_ns
    fr_pickup_lag_ns = 1000 * us


cdef tuple rnn_activation(object nonlinearity, object activations):
    """The RNN's ``(variant, acts)`` from its two spellings (the reference's check): relu is
    variant 1, tanh the default path (acts None), any other activation the generic rows."""
    (f,) = check_nonlinearity(nonlinearity, activations)
    if f.name == "relu":
        return 1, None
    if f == _activations.Activation("tanh"):
        return 0, None
    return 0, (f,)


cdef int set_activations(Args* a, object acts) except -1:
    """Set a.acts and a.act (written) from ``acts``: None (the cell's defaults) or a tuple of
    fastrnn.activations.Activation, one per slot."""
    cdef int k
    a.acts = acts is not None
    if acts is not None:
        kinds, params = _activations.codes(acts)
        for k in range(3):
            a.act[k].kind = kinds[k]
            a.act[k].alpha, a.act[k].beta = params[k, 0], params[k, 1]
    return 0


cdef int padded_width(int width, Py_ssize_t itemsize) noexcept nogil:
    """A row stride (elements) for rows of ``width``: 64 bytes more (128 if that lands on a
    multiple of 4 KiB), so that rows a power-of-2 number of bytes apart do not share cache
    sets.  The per-step products update 4 rows of the gate store at once: LSTM at H = 256
    (rows of 4 KiB) measured 23.5 GFLOP/s with unpadded rows and 31 with padded ones."""
    cdef Py_ssize_t ld = width + 64 // itemsize
    if (ld * itemsize) % 4096 == 0:
        ld += 64 // itemsize
    return <int>ld


cdef cnp.ndarray packed(object w, bint transpose, int parts=0, int gates=1,
                        Args* later=NULL):
    """``w.T`` (``transpose``) or ``w`` packed for the per-step products of fastrnn_mm.h
    (panels of columns), starting at a multiple of 64 bytes (one cache line).

    ``parts`` (forwards split by hidden units over a team of that many, see run_team): the
    columns of w.T (the gate rows of w, G*H of them, H a multiple of the panel width) in the
    order of the split: for each member, its units of gate 0, then of gate 1, ... (``gates``
    of them).

    ``later``: the arguments of the call the packed copy is for; the copy is then only made
    here, and filled by the call's PACK phase (see run), on its threads (LSTM(512, 512)'s
    training packed its four weight copies, 16 MB, on one thread while the other waited)."""
    cdef cnp.ndarray src = w
    cdef Py_ssize_t item = src.itemsize
    cdef int K = <int>src.shape[1 if transpose else 0], N = <int>src.shape[0 if transpose else 1]
    cdef Py_ssize_t rs = src.strides[1 if transpose else 0] // item
    cdef Py_ssize_t cs = src.strides[0 if transpose else 1] // item
    cdef Py_ssize_t off = 0
    cdef int k, g, u0, u1, nr, H
    cdef Py_ssize_t size = fr_packed_size_f32(K, N) if item == 4 else fr_packed_size_f64(K, N)
    cdef cnp.ndarray out = line_aligned(size, cnp.PyArray_TYPE(src))
    if not parts and later != NULL and later.npacks < MAX_PACKS:
        later.packs[later.npacks] = Pack(<const char*>cnp.PyArray_DATA(src),
                                         <char*>cnp.PyArray_DATA(out), rs, cs, K, N, <int>item)
        later.npacks += 1
        return out
    if not parts:
        pack_block(item, K, N, src, 0, rs, cs, out, 0)
        return out
    # each member's blocks of whole panels, one after the other (no padding between them)
    nr = panel_width(item == 4)
    H = N // gates
    for k in range(parts):
        unit_range(H, nr, k, parts, &u0, &u1)
        for g in range(gates):
            pack_block(item, K, u1 - u0, src, (g * H + u0) * cs, rs, cs, out, off)
            off += <Py_ssize_t>K * (u1 - u0)
    return out


cdef inline void pack_block(Py_ssize_t item, int K, int N, cnp.ndarray src, Py_ssize_t start,
                            Py_ssize_t rs, Py_ssize_t cs, cnp.ndarray out, Py_ssize_t at):
    """out[at:] = the K x N matrix of src's elements from ``start`` (rs, cs apart) packed."""
    if item == 4:
        fr_pack_f32(K, N, <const float*>cnp.PyArray_DATA(src) + start, rs, cs,
                    <float*>cnp.PyArray_DATA(out) + at)
    else:
        fr_pack_f64(K, N, <const double*>cnp.PyArray_DATA(src) + start, rs, cs,
                    <double*>cnp.PyArray_DATA(out) + at)


# The packed weights of eval-mode forwards, kept from call to call: inference calls the same
# weights again and again, and packing them cost more than a short call's steps (LSTM(128, 128)
# at B=1: 22-40 us, against ~4 us a step).  An entry keeps a copy of the weights it was packed
# from, and is used only while the weights are byte for byte that copy (memcmp: 3-4x cheaper
# than packing), so an edit in place, a new array at the same address or anything else is seen.
# An entry is never changed (a call still reading it may run in another thread): a new one
# replaces it.  At most PACKS_BYTES in all (copies and packed), the oldest used dropped first.
cdef dict _packs = {}   # (address, shape, dtype, transpose, parts, gates) -> (copy, packed)
cdef Py_ssize_t _packs_bytes = 0
cdef Py_ssize_t PACKS_BYTES = 64 << 20


cdef void drop_pack(tuple entry):
    """Take an entry (copy, packed) out of the cache's size (the caller has removed it)."""
    global _packs_bytes
    _packs_bytes -= (cnp.PyArray_NBYTES(<cnp.ndarray>entry[0])
                     + cnp.PyArray_NBYTES(<cnp.ndarray>entry[1]))


cdef inline tuple pack_key(cnp.ndarray src, bint transpose, int parts, int gates):
    """The cache's key of ``src`` packed (see packed())."""
    return (<size_t>cnp.PyArray_DATA(src), tuple((<object>src).shape), cnp.PyArray_TYPE(src),
            transpose, parts, gates)


cdef cnp.ndarray cached_packed(object w, bint transpose, int parts=0, int gates=1):
    """:func:`packed`, from the cache above when ``w`` is unchanged since it was packed."""
    global _packs_bytes
    cdef cnp.ndarray src = w, copy, out
    cdef Py_ssize_t nbytes = cnp.PyArray_NBYTES(src)
    if not cnp.PyArray_ISCARRAY_RO(src):
        return packed(w, transpose, parts, gates)
    key = pack_key(src, transpose, parts, gates)
    entry = _packs.pop(key, None)
    if entry is not None:
        if memcmp(cnp.PyArray_DATA(<cnp.ndarray>entry[0]), cnp.PyArray_DATA(src), nbytes) == 0:
            _packs[key] = entry           # (now the most recently used)
            return entry[1]
        drop_pack(entry)
    out = packed(w, transpose, parts, gates)
    copy = src.copy()       # (NumPy may let another thread run here: it may have added the key)
    entry = _packs.pop(key, None)
    if entry is not None:
        drop_pack(entry)
    _packs[key] = (copy, out)
    _packs_bytes += nbytes + cnp.PyArray_NBYTES(out)
    while _packs_bytes > PACKS_BYTES and len(_packs) > 1:
        drop_pack(_packs.pop(next(iter(_packs))))
    return out


cdef tuple cache_entry(object w, int parts, int gates, bint fresh):
    """(copy, packed) of w.T in the order of a team's split (see packed()): from the cache
    without comparing w with the copy (the team does, see units_stale), or packed here and
    put in the cache (``fresh``, or nothing cached), then with no copy to compare with (None)."""
    global _packs_bytes
    cdef cnp.ndarray src = w
    if not cnp.PyArray_ISCARRAY_RO(src):
        return None, packed(w, True, parts, gates)
    key = pack_key(src, True, parts, gates)
    entry = _packs.pop(key, None)
    if entry is not None:
        if not fresh:
            _packs[key] = entry          # (now the most recently used)
            return entry
        drop_pack(entry)
    return None, cached_packed(w, True, parts, gates)


cdef tuple team_operands(Args* a, _Weights w, int parts, int gates, bint fresh=False):
    """Set a.w_hh_r and a.w_ih_r to w_hh^T and w_ih^T packed for a team of ``parts`` (see
    run_team), and a.check to what its members must compare first; returns what the call
    must keep alive.  ``fresh``: packed again, not taken from the cache."""
    hh = cache_entry(w.w_hh, parts, gates, fresh)
    ih = cache_entry(w.w_ih, parts, gates, fresh)
    a.w_hh_r, a.w_ih_r = data(hh[1]), data(ih[1])
    for k, (src, entry) in enumerate(((w.w_hh, hh), (w.w_ih, ih))):
        a.check[k].src = data(src) if entry[0] is not None else NULL
        a.check[k].copy = data(entry[0])
        a.check[k].K = <int>src.shape[1]
    return hh, ih


def _forget_packs():
    """Empty the cache of packed weights (for the tests)."""
    global _packs_bytes
    _packs.clear()
    _packs_bytes = 0


def _packs_size():
    """(entries, bytes) of the cache of packed weights (for the tests)."""
    return len(_packs), _packs_bytes


cdef tuple step_operands(Args* a, _Weights w, bint transpose, bint input_too=False,
                         bint cache=False, bint split_n=False):
    """Set a.w_hh_r and a.w_hr_r to packed copies of the recurrent weights (transposed for a
    forward), and a.w_ih_r to one of w_ih^T when ``input_too``; returns the copies, to be kept
    alive during the call.  ``cache``: from the cache of packed weights (eval-mode forwards);
    otherwise the call's PACK phase fills the copies (packed's ``later``).
    ``split_n`` (GRU, reset gate before): a.w_hh_r from w_hh[:2H], a.w_hn_r from w_hh[2H:]."""
    w_hh = w.w_hh
    w_hn_r = None
    if split_n:
        w_hh = w.w_hh[:2 * w.H]
        w_hn_r = (cached_packed(w.w_hh[2 * w.H:], transpose) if cache
                  else packed(w.w_hh[2 * w.H:], transpose, 0, 1, a))
    a.w_hn_r = data(w_hn_r)
    w_hh_r = cached_packed(w_hh, transpose) if cache else packed(w_hh, transpose, 0, 1, a)
    a.w_hh_r = data(w_hh_r)
    w_hr_r = None
    if w.w_hr is not None:
        w_hr_r = (cached_packed(w.w_hr, transpose) if cache
                  else packed(w.w_hr, transpose, 0, 1, a))
    a.w_hr_r = data(w_hr_r)
    w_ih_r = None
    if input_too:
        w_ih_r = cached_packed(w.w_ih, True) if cache else packed(w.w_ih, True, 0, 1, a)
    a.w_ih_r = data(w_ih_r)
    return (w_hh_r, w_hr_r, w_ih_r, w_hn_r)


cdef tuple forward(int cell, object x, object hx, object weights, object lengths, bint training,
                   int variant, bint step, object clip=None, object acts=None):
    """Shared body of every forward kernel: checks the arguments, then :func:`run_forward`.
    ``step``: x is (B, I), no lengths, no y; ``variant``: see Args; ``clip``: the cell clip, or
    None; ``acts``: the activations, checked (None: the cell's defaults, or a tuple of
    fastrnn.activations.Activation, one per slot)."""
    cdef int typenum = dtype_of(x)
    cdef cnp.ndarray xa = carray(x, typenum)
    cdef int nd = cnp.PyArray_NDIM(xa)
    cdef int T, B, I
    cdef _Weights w
    cdef cnp.ndarray h0, c0 = None
    clip = check_clip(clip, np.float32 if typenum == F32 else np.float64)
    _activations.check_in_dtype(acts, np.float32 if typenum == F32 else np.float64)
    if step:
        if nd != 2:
            raise ValueError(f"x must be (B, I) for a step kernel, but got shape {shape_str(xa)}")
        T, B, I = 1, <int>cnp.PyArray_DIMS(xa)[0], <int>cnp.PyArray_DIMS(xa)[1]
    else:
        if nd != 3:
            raise ValueError(f"x must be (T, B, I), but got shape {shape_str(xa)}")
        T, B, I = <int>cnp.PyArray_DIMS(xa)[0], <int>cnp.PyArray_DIMS(xa)[1], <int>cnp.PyArray_DIMS(xa)[2]
    w = check_weights(cell, weights, typenum, I)
    same_dtype(weights[0], typenum, "w_ih")
    same_dtype(weights[1], typenum, "w_hh")
    same_dtype(weights[2], typenum, "b_ih")
    same_dtype(weights[3], typenum, "b_hh")
    if cell == LSTM:
        same_dtype(weights[4], typenum, "w_hr")
        same_dtype(weights[5], typenum, "w_ph")
    if not isinstance(hx, (tuple, list)) or len(hx) != (2 if cell == LSTM else 1):
        raise ValueError("hx must be a tuple (h0, c0) for LSTM, (h0,) otherwise")
    h0 = checked(hx[0], typenum, "h0", 2, B, w.P)
    same_dtype(hx[0], typenum, "h0")
    lens = None if step else check_lengths(lengths, B, T)
    if cell == LSTM:
        c0 = checked(hx[1], typenum, "c0", 2, B, w.H)
        same_dtype(hx[1], typenum, "c0")
    return run_forward(cell, typenum, xa, T, B, h0, c0, w, lens, training, variant, step, clip,
                       acts)


cdef object live_list(Args* a, object lens, int T):
    """With lengths (an int64 (B,) array, or None), a.live_rows and a.nlive = the rows t*B + b
    of the sequences running at their step (t < lens[b]), in order: the products over all T*B
    rows before and after the time loop take these alone (part_rows, live_rows_mm,
    grad_rows).  Returns the array, which the call must keep alive, or None."""
    if lens is None:
        return None
    live = np.flatnonzero(np.arange(T)[:, None] < lens[None, :]).astype(np.intc)
    a.live_rows, a.nlive = <const int*>data(live), <int>live.shape[0]
    return live


# A sparse input, one-hot characters say (the README's training loop: 1 of 96 inputs is 1),
# makes the input's products mostly multiply-adds of zeros.  When at most 1/SPARSE_DENSITY of
# x is not zero, the forward's x @ w_ih^T and the backward's dW_ih += dA^T x go over x's
# entries alone (fastrnn_mm.h's fr_sparse_mm, and fr_wgrad2's sparse operand, summed as the
# gate gradients are packed): the same bits, since the terms left out are zeros, as long as
# w_ih and the gate gradients are finite (sparse_input checks w_ih; a NaN or inf in dA
# reaches only dW_ih's columns of x's entries).  A dense x costs the check of its first row.
# LSTM(96, 256) on one-hot inputs, T = 64, B = 32, forward and backward: 1.11x as fast (Zen 3,
# one process alternating with the dense products); the README's loop 1.07-1.11x.
cdef enum:
    SPARSE_DENSITY = 8
cdef bint _sparse_inputs = True
cdef long _sparse_calls = 0


def _use_sparse_inputs(bint on):
    """For the tests: whether sparse inputs take their own products (the default); returns the
    setting it replaces."""
    global _sparse_inputs
    was, _sparse_inputs = _sparse_inputs, on
    return was


def sparse_stats():
    """Forwards in this process that took their input as sparse (see sparse_input), for the
    tests."""
    return _sparse_calls


cdef Py_ssize_t count_nonzero(const floating* x, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i, c = 0
    for i in range(n):
        c += x[i] != 0
    return c


cdef bint all_finite(const floating* x, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if not (x[i] - x[i] == 0):
            return False
    return True


cdef inline Py_ssize_t nonzeros(const void* x, Py_ssize_t n, bint f32) noexcept nogil:
    """count_nonzero of n floats (f32) or doubles at x."""
    return count_nonzero(<const float*>x, n) if f32 else count_nonzero(<const double*>x, n)


cdef inline bint finite(const void* x, Py_ssize_t n, bint f32) noexcept nogil:
    """all_finite of n floats (f32) or doubles at x."""
    return all_finite(<const float*>x, n) if f32 else all_finite(<const double*>x, n)


cdef bint fill_csr(const floating* x, Py_ssize_t rows, int I, int* ptr, int* idx,
                   floating* val, int nnz) noexcept nogil:
    """x's rows compressed into ptr (rows + 1), idx and val (nnz each); False if x has more
    entries than nnz (it changed since they were counted: another thread writing it)."""
    cdef Py_ssize_t r
    cdef int j, e = 0
    for r in range(rows):
        ptr[r] = e
        for j in range(I):
            if x[r * I + j] != 0:
                if e == nnz:
                    return False
                idx[e], val[e] = j, x[r * I + j]
                e += 1
    ptr[rows] = e
    return True


cdef object sparse_input(Args* a, cnp.ndarray xa, Py_ssize_t rows, int I, object w_ih,
                         int typenum):
    """With a sparse x (xa: C-contiguous, rows x I; at most 1/SPARSE_DENSITY of it not zero,
    its first row too) and a finite w_ih, a.xs_ptr, a.xs_idx, a.xs_val = x's rows compressed
    (CSR); returns the arrays, which the call (and its backward) must keep alive, or None (x
    is dense: the products read it as stored)."""
    global _sparse_calls
    cdef Py_ssize_t nnz, n = rows * I
    cdef bint f32 = typenum == cnp.NPY_FLOAT32
    cdef const void* x = cnp.PyArray_DATA(xa)
    cdef cnp.ndarray wa = <cnp.ndarray>w_ih
    if not _sparse_inputs or n == 0 or I < SPARSE_DENSITY:
        return None
    with nogil:
        nnz = nonzeros(x, I, f32)                       # the first row
    if nnz * SPARSE_DENSITY > I:
        return None
    with nogil:
        nnz = nonzeros(x, n, f32)
    if nnz * SPARSE_DENSITY > n or nnz > INT_MAX:
        return None
    if not finite(cnp.PyArray_DATA(wa), cnp.PyArray_SIZE(wa), f32):
        return None
    ptr = np.empty(rows + 1, np.intc)
    idx = np.empty(max(nnz, 1), np.intc)
    val = np.empty(max(nnz, 1), np.float32 if f32 else np.float64)
    cdef int* p = <int*>data(ptr)
    cdef int* ix = <int*>data(idx)
    cdef void* v = data(val)
    cdef bint filled
    with nogil:
        if f32:
            filled = fill_csr(<const float*>x, rows, I, p, ix, <float*>v, <int>nnz)
        else:
            filled = fill_csr(<const double*>x, rows, I, p, ix, <double*>v, <int>nnz)
    if not filled:
        return None
    a.xs_ptr, a.xs_idx, a.xs_val = p, ix, v
    _sparse_calls += 1
    return ptr, idx, val


cdef tuple run_forward(int cell, int typenum, cnp.ndarray xa, int T, int B, cnp.ndarray h0,
                       cnp.ndarray c0, _Weights w, object lens, bint training, int variant,
                       bint step, object clip, object acts, int out_nd=2):
    """A forward of checked arguments: x (xa: (T, B, I), or (B, I) for a ``step``), states h0
    (B, P) and c0 (B, H, LSTM), weights ``w``, lengths ``lens`` (int64 (B,), or None), clip
    (None or a number) and activations as :func:`forward` takes them.  Returns (y, hy, saved);
    ``out_nd`` 1 (a step of B = 1): the states of hy are (P,) and (H,)."""
    cdef Args a
    cdef int I = w.In, H = w.H, P = w.P, G = w.G
    cdef int Gs, Tc, slots, nthreads, members = 0, step_members = 0
    cdef cnp.ndarray ghb = None
    cdef double loop_flops
    cdef cnp.ndarray gates = None, bias = None, hs = None, cs = None, tc = None, mb = None
    cdef cnp.ndarray y = None, cmask = None
    cdef Block block
    cdef char stack_block[STACK_BLOCK_BYTES]
    cdef _Memory heap_block = None
    cdef size_t item = cnp.PyArray_ITEMSIZE(xa)
    memset(&a, 0, sizeof(Args))
    Gs = 4 * H if cell == GRU else G                 # the GRU also keeps W_hn h + b_hn
    loop_flops = 2.0 * T * B * G * P + (2.0 * T * B * P * H if w.w_hr is not None else 0)
    nthreads = plan_threads(B, loop_flops)
    if (not training and not step and T > 1 and w.w_hr is None
            and not (cell == GRU and variant)):
        members = team_size(H, typenum, T, loop_flops + 2.0 * T * B * G * I, TEAM_MIN_FLOPS)
        if B > TEAM_MAX_ROWS * members or (members and nthreads >= members
                                            and weights_fit_l2(w, item)):
            members = 0
    elif (not training and T == 1 and B <= DOTS_MAX_COLUMNS and w.w_hr is None
            and not (cell == GRU and variant)):
        step_members = team_size(H, typenum, 1, loop_flops + 2.0 * B * G * I, TEAM_ONE_STEP_FLOPS)
    # (a team projects the input of all steps, chunk by chunk, whatever the batch: the results
    # are the same bits either way, the input's product first, then the recurrent one's)
    per_step_input = not step and T > 1 and B >= STEP_INPUT_MIN_BATCH and not members
    # a sparse x's products over its entries alone, wherever they are made
    sparse = (sparse_input(&a, xa, <Py_ssize_t>T * B, I, w.w_ih, typenum)
              if not step and T > 1 else None)
    Tc = ((min(INPUT_GROUP, T) if lens is None else 1) if per_step_input and not training
          else chunk_steps(T, B, Gs, training or (nthreads > 1 and not members)))
    slots = T + 1 if training else 2
    # rows padded for LSTM and GRU (4H wide); the RNN loops index their store with stride H
    a.ldg = Gs if cell == RNN else padded_width(Gs, item)
    if step and not training:
        # an eval step keeps nothing: its workspaces are parts of one block of C memory (a
        # numpy array each cost ~0.1 us, 0.5 of LSTMCell(128, 128)'s 5.7 us step), on this
        # call's stack when it fits
        memset(&block, 0, sizeof(Block))
        block_grow(&block, <size_t>B * a.ldg * item)                   # gates
        block_grow(&block, <size_t>Gs * item)                          # bias
        block_grow(&block, <size_t>2 * B * P * item)                   # hs
        block_grow(&block, <size_t>2 * B * H * item if cell == LSTM else 0)           # cs
        block_grow(&block, <size_t>B * H * item if w.w_hr is not None else 0)         # mb
        block_grow(&block, <size_t>B * padded_width(G, item) * item if step_members and cell == GRU
                   else 0)                                                            # ghb
        if block_size(&block) <= STACK_BLOCK_BYTES:
            block_place(&block, stack_block)
        else:
            heap_block = _Memory.of(block_size(&block))
            block_place(&block, heap_block.raw)
        a.gates, a.bias, a.hs = block_part(&block, 0), block_part(&block, 1), block_part(&block, 2)
        a.cs, a.mb, a.ghb = block_part(&block, 3), block_part(&block, 4), block_part(&block, 5)
    else:
        if step_members and cell == GRU:
            ghb = empty(1, B * padded_width(G, item), 0, 0, typenum)
            a.ghb = data(ghb)
        # a team's arrays start on a cache line, so that its members' parts of a row (whole
        # panels of units) share none where a panel is 64 bytes or more (AVX2, AVX-512)
        # (a team's store holds two chunks of steps: see fwd_units)
        gates = (aligned(Tc if T <= Tc else 2 * Tc, B, a.ldg, typenum) if members
                 else workspace(3, Tc, B, a.ldg, typenum))
        bias = empty(1, Gs, 0, 0, typenum)
        hs = aligned(slots, B, P, typenum) if members else workspace(3, slots, B, P, typenum)
        if cell == LSTM:
            cs = aligned(slots, B, H, typenum) if members else workspace(3, slots, B, H, typenum)
            if training:
                tc = workspace(3, T, B, H, typenum)
            if w.w_hr is not None:
                mb = workspace(3, T if training else 1, B, H, typenum)
        a.gates, a.bias, a.hs = data(gates), data(bias), data(hs)
        a.cs, a.tc, a.mb = data(cs), data(tc), data(mb)
    memcpy(a.hs, cnp.PyArray_DATA(h0), <size_t>B * P * item)
    if cell == LSTM:
        memcpy(a.cs, cnp.PyArray_DATA(c0), <size_t>B * H * item)
    if not step:
        y = aligned(T, B, P, typenum, False) if members else empty(3, T, B, P, typenum)
    a.T, a.B, a.In, a.H, a.P, a.Tc = T, B, I, H, P, Tc
    a.b0, a.b1 = 0, B
    a.train, a.variant, a.chunked = training, variant, Tc < T and not per_step_input
    set_activations(&a, acts)
    if clip is not None:
        a.clip = clip
        if training:
            cmask = workspace(3, T, B, G, typenum)
            a.cmask = data(cmask)
    a.lens = <const int64_t*>data(lens)
    live = live_list(&a, lens, T)
    a.x, a.w_ih, a.w_hh, a.w_hr = data(xa), data(w.w_ih), data(w.w_hh), data(w.w_hr)
    a.w_ph = data(w.w_ph)
    a.b_ih, a.b_hh = data(w.b_ih), data(w.b_hh)
    a.y = data(y)
    cdef int stale = 0, outcome = 2
    cdef bint fresh = False
    while outcome:
        operands = None
        a.npacks = 0
        a.members = members or step_members
        if members:
            # a team splits the hidden units (run_team): both weights packed in the split's
            # order, from the cache; the members check them against the copies, in parallel
            a.stale = &stale
            operands = team_operands(&a, w, members, G // H, fresh)
        elif not step and T > 1:
            # over many steps the per-step products read w^T packed (here), not BLAS; so does
            # the input, step by step (per_step_input) or projected for all steps at once
            operands = step_operands(&a, w, True, True, not training, cell == GRU and variant)
            if not per_step_input:
                # the projection of all steps from that w_ih^T, not BLAS: LSTM(128, 128) over
                # 16 steps at B=1 spent 42 of its 101 us in BLAS's product; and BLAS split by
                # rows between threads gave other last bits than on one thread (OpenBLAS 0.3's
                # Haswell kernels, I = 257: 127 + 128 rows against 255)
                a.w_ih_p, a.w_ih_r = a.w_ih_r, NULL
        outcome = run(cell, typenum, &a, False, nthreads, 2.0 * T * B * G * I, loop_flops,
                      members > 0, step_members > 0)
        # nothing was computed: the weights changed since they were packed (packed again), or
        # the team could not run (the call runs on one thread)
        fresh = outcome == 1
        if outcome == 2:
            members = step_members = 0
    last = T if training else T % 2
    if cell == LSTM:
        hy = (copy_slot(a.hs, last, B, P, typenum, out_nd),
              copy_slot(a.cs, last, B, H, typenum, out_nd))
    else:
        hy = (copy_slot(a.hs, last, B, P, typenum, out_nd),)
    cdef Saved saved = None
    if training:
        saved = Saved.__new__(Saved)
        saved.cell_id, saved.typenum, saved.step = cell, typenum, step
        saved.T, saved.B, saved.In, saved.H, saved.P, saved.variant = T, B, I, H, P, variant
        saved.x, saved.w, saved.lengths, saved.gates, saved.hs = xa, w, lens, gates, hs
        saved.sparse = sparse
        saved.cs, saved.tc, saved.mb, saved.cmask = cs, tc, mb, cmask
        saved.activations = acts
    elif gates is not None and cnp.PyArray_NBYTES(gates) >= SPARE_MIN_BYTES:
        # the next call's workspaces (hy holds copies: nothing refers to these any more); a
        # small one costs less to allocate again than to keep (chunks of 1 step: 2 us a call)
        give_back((gates, hs, cs, mb))
    return y, hy, saved


cdef bint grad_buffer_ok(object g, object w, int typenum):
    """Whether ``g`` can take the gradient of weight ``w`` in place: a writable, aligned,
    C-contiguous array of ``w``'s shape and dtype."""
    cdef cnp.ndarray wa = <cnp.ndarray>w, ga
    cdef int i
    if not cnp.PyArray_Check(g):
        return False
    ga = <cnp.ndarray>g
    if not (cnp.PyArray_TYPE(ga) == typenum and cnp.PyArray_ISCARRAY(ga)
            and cnp.PyArray_NDIM(ga) == cnp.PyArray_NDIM(wa)):
        return False
    for i in range(cnp.PyArray_NDIM(wa)):
        if cnp.PyArray_DIMS(ga)[i] != cnp.PyArray_DIMS(wa)[i]:
            return False
    return True


cdef tuple grad_buffers(object dweights, _Weights w, int cell, int typenum, str name):
    """The five gradient buffers (dw_ih, dw_hh, db_ih, db_hh, dw_hr), None where there is no
    weight, from the caller's ``dweights`` (aligned with the weights).  A refused one gets the
    contract's own message (fastrnn.reference's check_dweights)."""
    cdef int n = 6 if cell == LSTM else 4, k
    weights = (w.w_ih, w.w_hh, w.b_ih, w.b_hh, w.w_hr, w.w_ph)[:n]
    cdef bint ok = isinstance(dweights, (tuple, list)) and len(dweights) == n
    for k in range(n if ok else 0):
        if weights[k] is None:
            ok = dweights[k] is None
        else:
            ok = grad_buffer_ok(dweights[k], weights[k], typenum)
        if not ok:
            break
    if not ok:
        check_dweights(dweights, weights, name)   # raises, saying what was expected and received
        raise ValueError(f"{name}: dweights must be aligned arrays (the gradients are added "
                         f"into them in place)")
    return tuple(dweights) + (None,) * (6 - n)


cdef tuple backward(int want_cell, object dy, object dhy, object saved, object dweights,
                    object step_norms, bint step, bint input_grad=True):
    """Shared body of every backward kernel: adds the weight gradients into ``dweights`` and
    returns (dx, dhx).  It overwrites the gates of ``saved`` with their gradients, so a record
    serves one backward: a second one raises."""
    cdef Args a
    cdef int cell, typenum, T, B, I, H, P, G, variant, nthreads
    cdef double loop_flops
    cdef _Weights w
    cdef Saved s
    cdef cnp.ndarray dya = None, dh, dc = None, dht = None, dx = None, norms = None, w_ih_b
    cdef cnp.ndarray dw_ih, dw_hh, db_ih, db_hh, dw_hr, dw_ph
    cdef str name = f"{CELL_NAMES[want_cell]}_{'step_' if step else ''}backward"
    cdef str made_by = f"{CELL_NAMES[want_cell]}_{'step_' if step else ''}forward"
    if not isinstance(saved, Saved):
        raise TypeError(f"{name} needs the record returned by cython {made_by} with "
                        f"training=True, but got {type(saved).__name__}")
    s = <Saved>saved
    if s.cell_id != want_cell or (step and not s.step):   # (a step is a sequence of one)
        raise ValueError(f"{name} needs the record returned by cython {made_by}, but got one "
                         f"from {CELL_NAMES[s.cell_id]}_{'step_' if s.step else ''}forward")
    if s.used:
        raise RuntimeError(f"this cython {made_by} record was already used by a backward pass "
                           f"(the backward overwrites the gates it saved with their gradients): "
                           f"run the forward again")
    cell, typenum, T, B, I, H, P, variant = s.cell_id, s.typenum, s.T, s.B, s.In, s.H, s.P, s.variant
    xa, w, lens, gates, hs, cs, tc, mb = s.x, s.w, s.lengths, s.gates, s.hs, s.cs, s.tc, s.mb
    cmask, sparse = s.cmask, s.sparse
    G = GATES[cell] * H
    memset(&a, 0, sizeof(Args))
    if not isinstance(dhy, (tuple, list)) or len(dhy) != (2 if cell == LSTM else 1):
        raise ValueError("dhy must be a tuple (dh_n, dc_n) for LSTM, (dh_n,) otherwise")
    dh = copy_of(checked(dhy[0], typenum, "dh_n", 2, B, P), 2, B, P, typenum)
    if cell == LSTM:
        dc = copy_of(checked(dhy[1], typenum, "dc_n", 2, B, H), 2, B, H, typenum)
    if dy is not None:
        dya = checked(dy, typenum, "dy", 3, T, B, P)
    elif not step:        # (a step's backward has no output gradient; a sequence's must)
        raise ValueError(f"dy must be an array of shape {(T, B, P)}, but got None")
    if step_norms is not None and (not isinstance(step_norms, np.ndarray)
                                   or not step_norms.flags.writeable):
        raise ValueError(f"step_norms must be a writable array of shape {(T, B)} (the norms are "
                         f"written into it), but got "
                         + ("a read-only array" if isinstance(step_norms, np.ndarray)
                            else type(step_norms).__name__))
    if step_norms is not None and tuple(np.shape(step_norms)) != (T, B):
        raise ValueError(f"step_norms must have shape {(T, B)}, but got {tuple(np.shape(step_norms))}")
    dw_ih, dw_hh, db_ih, db_hh, dw_hr, dw_ph = grad_buffers(dweights, w, cell, typenum, name)
    if cell == LSTM and w.w_hr is not None:
        dht = workspace(3, T, B, P, typenum)
    if step_norms is not None:
        norms = empty(2, T, B, 0, typenum)
    if step:
        dx = empty(2, B, I, 0, typenum)
    elif input_grad:
        dx = empty(3, T, B, I, typenum)
    a.T, a.B, a.In, a.H, a.P = T, B, I, H, P
    a.b0, a.b1 = 0, B
    a.variant = variant
    set_activations(&a, s.activations)
    a.lens = <const int64_t*>data(lens)
    live = live_list(&a, lens, T)
    a.x, a.w_ih, a.w_hh, a.w_hr = data(xa), data(w.w_ih), data(w.w_hh), data(w.w_hr)
    a.w_ph = data(w.w_ph)
    a.gates, a.hs, a.cs, a.tc, a.mb = data(gates), data(hs), data(cs), data(tc), data(mb)
    a.cmask = data(cmask)
    if sparse is not None:
        a.xs_ptr, a.xs_idx = <const int*>data(sparse[0]), <const int*>data(sparse[1])
        a.xs_val = data(sparse[2])
    a.ldg = <int>gates.shape[2]
    a.dy, a.dh, a.dc, a.norms = data(dya), data(dh), data(dc), data(norms)
    a.dht = data(dht)
    a.dx, a.dw_ih, a.dw_hh = data(dx), data(dw_ih), data(dw_hh)
    a.db_ih, a.db_hh, a.dw_hr, a.dw_ph = data(db_ih), data(db_hh), data(dw_hr), data(dw_ph)
    loop_flops = 2.0 * T * B * G * P + (4.0 * T * B * P * H if w.w_hr is not None else 0)
    # the arguments are good: from here on the gates become gradients, and the record is used up
    # (no Python code runs between this check and the mark, so two threads cannot both pass)
    if s.used:
        raise RuntimeError(f"this cython {made_by} record was already used by a backward pass")
    s.used = True
    s.x = s.lengths = s.gates = s.hs = s.cs = s.tc = s.mb = s.cmask = s.sparse = None
    nthreads = plan_threads(B, loop_flops)
    operands = None
    if T > 1 or B > GEMV_MAX_COLUMNS:
        # over many steps, or one step of more than GEMV_MAX_COLUMNS sequences, the products
        # dh = dA W_hh and dx = dA W_ih read w packed, here (for one step of a few sequences,
        # BLAS's GEMV reads w as stored: packing it would cost as much as the step; for more,
        # BLAS's GEMM packed w itself, in its slower way, at every call)
        operands = step_operands(&a, w, False, False, False, cell == GRU and variant)
        if dx is not None:
            # dx = dA W_ih over all T*B rows on the same micro-kernel, w_ih packed here: the
            # same bits on any number of threads (see input_grad_rows)
            w_ih_b = packed(w.w_ih, False, 0, 1, &a)
            a.w_ih_r = data(w_ih_b)
            operands += (w_ih_b,)
    run(cell, typenum, &a, True, nthreads, 6.0 * T * B * G * I, loop_flops)
    if norms is not None:
        step_norms[...] = norms
    give_back((gates, hs, cs, tc, mb, dht, cmask))
    return dx, ((dh, dc) if cell == LSTM else (dh,))


# =======================================================================================
# The kernel contract
# =======================================================================================
def rnn_forward(x, hx, weights, lengths=None, training=True, nonlinearity="tanh", clip=None,
                activations=None):
    """Elman RNN over a whole sequence; see :func:`fastrnn.reference.rnn_forward`."""
    variant, acts = rnn_activation(nonlinearity, activations)
    return forward(RNN, x, hx, weights, lengths, training, variant, False, clip, acts)


def rnn_backward(dy, dhy, saved, dweights, step_norms=None, input_grad=True):
    """BPTT for :func:`rnn_forward`; see :func:`fastrnn.reference.rnn_backward`.

    Adds the weight gradients into ``dweights``; consumes ``saved`` (its gates are overwritten
    with their gradients): one backward per forward.
    """
    return backward(RNN, dy, dhy, saved, dweights, step_norms, False, input_grad)


def rnn_step_forward(x, hx, weights, training=True, nonlinearity="tanh", clip=None,
                     activations=None):
    """One RNN step: x (B, I) -> ``(hy, saved)``."""
    variant, acts = rnn_activation(nonlinearity, activations)
    _, hy, saved = forward(RNN, x, hx, weights, None, training, variant, True, clip, acts)
    return hy, saved


def rnn_step_backward(dhy, saved, dweights):
    """Backward of :func:`rnn_step_forward`: ``(dx (B, I), dhx)``, adding into ``dweights``; consumes ``saved``."""
    return backward(RNN, None, dhy, saved, dweights, None, True)


def lstm_forward(x, hx, weights, lengths=None, training=True, input_forget=False, clip=None,
                 activations=None):
    """LSTM over a whole sequence; see :func:`fastrnn.reference.lstm_forward`."""
    variant = int(check_flag("input_forget", input_forget))
    return forward(LSTM, x, hx, weights, lengths, training, variant, False, clip,
                   _activations.check_activations("lstm", activations))


def lstm_backward(dy, dhy, saved, dweights, step_norms=None, input_grad=True):
    """BPTT for :func:`lstm_forward`; see :func:`fastrnn.reference.lstm_backward`.

    Adds the weight gradients into ``dweights``; consumes ``saved`` (its gates are overwritten
    with their gradients): one backward per forward.
    """
    return backward(LSTM, dy, dhy, saved, dweights, step_norms, False, input_grad)


def lstm_step_forward(x, hx, weights, training=True, input_forget=False, clip=None,
                      activations=None):
    """One LSTM step: x (B, I) -> ``((h, c), saved)``."""
    variant = int(check_flag("input_forget", input_forget))
    _, hy, saved = forward(LSTM, x, hx, weights, None, training, variant, True, clip,
                           _activations.check_activations("lstm", activations))
    return hy, saved


def lstm_step_backward(dhy, saved, dweights):
    """Backward of :func:`lstm_step_forward`: ``(dx (B, I), (dh, dc))``, adding into ``dweights``; consumes ``saved``."""
    return backward(LSTM, None, dhy, saved, dweights, None, True)


def gru_forward(x, hx, weights, lengths=None, training=True, reset_after=True, clip=None,
                activations=None):
    """GRU over a whole sequence; see :func:`fastrnn.reference.gru_forward`."""
    variant = int(not check_flag("reset_after", reset_after))
    return forward(GRU, x, hx, weights, lengths, training, variant, False, clip,
                   _activations.check_activations("gru", activations))


def gru_backward(dy, dhy, saved, dweights, step_norms=None, input_grad=True):
    """BPTT for :func:`gru_forward`; see :func:`fastrnn.reference.gru_backward`.

    Adds the weight gradients into ``dweights``; consumes ``saved`` (its gates are overwritten
    with their gradients): one backward per forward.
    """
    return backward(GRU, dy, dhy, saved, dweights, step_norms, False, input_grad)


def gru_step_forward(x, hx, weights, training=True, reset_after=True, clip=None,
                     activations=None):
    """One GRU step: x (B, I) -> ``((h,), saved)``."""
    variant = int(not check_flag("reset_after", reset_after))
    _, hy, saved = forward(GRU, x, hx, weights, None, training, variant, True, clip,
                           _activations.check_activations("gru", activations))
    return hy, saved


def gru_step_backward(dhy, saved, dweights):
    """Backward of :func:`gru_step_forward`: ``(dx (B, I), (dh,))``, adding into ``dweights``; consumes ``saved``."""
    return backward(GRU, None, dhy, saved, dweights, None, True)


# ---------------------------------------------------------------------------------------
# Prepared steps: a cell called step by step in eval mode (a stream, a decoder) pays its
# arguments' checks at every call, and at LSTMCell(128, 128), B = 1, they cost as much as
# the step's products (~2 us of 8).  A plan checks the weights and options once; a call
# checks only what it must to take x and hx as they are, and runs run_forward.
# ---------------------------------------------------------------------------------------
cdef class StepPlan:
    """An eval-mode step of one cell with given weights and options, checked once.

    ``plan(x, hx)`` is ``<cell>_step_forward(x, hx, weights, False, **options)[0]``, bit for
    bit, for x an ndarray of the weights' dtype, C-contiguous, (B, I) or (I,) (then the states
    are (P,) and (H,) too, in and out), and hx a tuple of such arrays (h (B, P), and c (B, H)
    for LSTM).  Anything else, it returns None without looking further: the caller then takes
    the checked path, which converts what it can and says what is wrong with the rest.  The
    plan reads the weights at every call (edits in place are seen); it keeps no state between
    calls, so threads may share it."""
    cdef int cell, typenum, variant, nstates
    cdef _Weights w
    cdef object clip, acts

    def __call__(self, x, hx):
        cdef cnp.ndarray xa, h0, c0 = None
        cdef int nd, B
        cdef _Weights w = self.w
        if not (cnp.PyArray_CheckExact(x) and type(hx) is tuple
                and PyTuple_GET_SIZE(hx) == self.nstates):
            return None
        nd = cnp.PyArray_NDIM(<cnp.ndarray>x)
        if nd < 1 or nd > 2:
            return None
        B = 1 if nd == 1 else <int>cnp.PyArray_DIMS(<cnp.ndarray>x)[0]
        if B < 1:
            return None
        xa = self.taken(x, nd, B, w.In)
        h0 = self.taken(hx[0], nd, B, w.P)
        if xa is None or h0 is None:
            return None
        if self.cell == LSTM:
            c0 = self.taken(hx[1], nd, B, w.H)
            if c0 is None:
                return None
        return run_forward(self.cell, self.typenum, xa, 1, B, h0, c0, w, None, False,
                           self.variant, True, self.clip, self.acts, nd)[1]

    cdef cnp.ndarray taken(self, object v, int nd, int B, int width):
        """``v`` if it is an array this plan takes as it is (x or a state: (B, width), or
        (width,) for nd 1), else None."""
        cdef cnp.ndarray a
        if not cnp.PyArray_CheckExact(v):
            return None
        a = <cnp.ndarray>v
        if (cnp.PyArray_TYPE(a) != self.typenum or not cnp.PyArray_ISCARRAY_RO(a)
                or cnp.PyArray_NDIM(a) != nd or cnp.PyArray_DIMS(a)[nd - 1] != width
                or (nd == 2 and cnp.PyArray_DIMS(a)[0] != B)):
            return None
        return a


cdef object step_plan(int cell, object weights, int variant, object clip, object acts):
    """A :class:`StepPlan`, or None where the weights are not all C-contiguous float32 or
    float64 arrays of one dtype (a plan must read the caller's arrays, not copies)."""
    cdef StepPlan plan
    cdef _Weights w
    if not (isinstance(weights, (tuple, list)) and len(weights) > 0
            and cnp.PyArray_Check(weights[0])):
        return None
    typenum = cnp.PyArray_TYPE(<cnp.ndarray>weights[0])
    if typenum != F32 and typenum != F64:
        return None
    w = check_weights(cell, weights, typenum, -1)
    for given, used in zip(weights, (w.w_ih, w.w_hh, w.b_ih, w.b_hh, w.w_hr, w.w_ph)):
        if given is not used:
            return None
    plan = StepPlan.__new__(StepPlan)
    plan.cell, plan.typenum, plan.variant = cell, typenum, variant
    plan.nstates = 2 if cell == LSTM else 1
    dtype = np.float32 if typenum == F32 else np.float64
    plan.w, plan.clip, plan.acts = w, check_clip(clip, dtype), acts
    _activations.check_in_dtype(acts, dtype)
    return plan


def rnn_step_plan(weights, nonlinearity="tanh", clip=None, activations=None):
    """A :class:`StepPlan` of :func:`rnn_step_forward` in eval mode, or None (see step_plan)."""
    variant, acts = rnn_activation(nonlinearity, activations)
    return step_plan(RNN, weights, variant, clip, acts)


def lstm_step_plan(weights, input_forget=False, clip=None, activations=None):
    """A :class:`StepPlan` of :func:`lstm_step_forward` in eval mode, or None (see step_plan)."""
    return step_plan(LSTM, weights, int(check_flag("input_forget", input_forget)), clip,
                     _activations.check_activations("lstm", activations))


def gru_step_plan(weights, reset_after=True, clip=None, activations=None):
    """A :class:`StepPlan` of :func:`gru_step_forward` in eval mode, or None (see step_plan)."""
    return step_plan(GRU, weights, int(not check_flag("reset_after", reset_after)), clip,
                     _activations.check_activations("gru", activations))


# =======================================================================================
# The activations, for the tests
# =======================================================================================
def activation(name, x):
    """Apply the kernels' own ``"tanh"``, ``"sigmoid"`` or ``"relu"`` to an array.

    float32 input gets the float32 approximation the kernels use, float64 the
    exact function.  Returns a new array of the same dtype and shape.
    """
    cdef int typenum = dtype_of(x)
    cdef cnp.ndarray xa = carray(x, typenum)
    cdef cnp.ndarray out = <cnp.ndarray>cnp.PyArray_EMPTY(cnp.PyArray_NDIM(xa), cnp.PyArray_DIMS(xa),
                                                         typenum, 0)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(xa), j
    cdef float* xf = <float*>cnp.PyArray_DATA(xa)
    cdef float* of = <float*>cnp.PyArray_DATA(out)
    cdef double* xd = <double*>cnp.PyArray_DATA(xa)
    cdef double* od = <double*>cnp.PyArray_DATA(out)
    cdef int kind
    if name not in ("tanh", "sigmoid", "relu"):
        raise ValueError(f"name must be 'tanh', 'sigmoid' or 'relu', but got {name!r}")
    kind = ("tanh", "sigmoid", "relu").index(name)
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            if kind == 0:
                for j in range(n):
                    of[j] = tanh_f32(xf[j])
            elif kind == 1:
                for j in range(n):
                    of[j] = sigmoid_f32(xf[j])
            else:
                for j in range(n):
                    of[j] = act_relu(xf[j])
        else:
            if kind == 0:
                for j in range(n):
                    od[j] = c_tanh(xd[j])
            elif kind == 1:
                for j in range(n):
                    od[j] = sigmoid_f64(xd[j])
            else:
                for j in range(n):
                    od[j] = act_relu(xd[j])
    return out


def _activation_rows(act, x, dy):
    """The rows of the activations option on arrays, for the tests: ``(y, dx)`` with
    ``y = f(x)`` (act_row) and ``dx = dy * f'`` computed from y (act_grad_row).

    Parameters
    ----------
    act : one slot's activation, as :func:`fastrnn.activations.activation` takes it
    x, dy : 1-D arrays of the same length, float32 or float64 (x's dtype)
    """
    cdef int typenum = dtype_of(x)
    cdef cnp.ndarray y = np.array(x, dtype=np.float32 if typenum == F32 else np.float64)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(y)
    cdef cnp.ndarray dya = checked(dy, typenum, "dy", 1, n)
    cdef cnp.ndarray dx = empty(1, n, 0, 0, typenum)
    cdef Args a
    if cnp.PyArray_NDIM(y) != 1:
        raise ValueError(f"x must be 1-D, but got shape {shape_str(y)}")
    set_activations(&a, (_activations.activation(act),))
    with nogil:
        if typenum == F32:
            act_row(&a.act[0], <float*>cnp.PyArray_DATA(y), n)
            act_grad_row(&a.act[0], <const float*>cnp.PyArray_DATA(y),
                         <const float*>cnp.PyArray_DATA(dya), <float*>cnp.PyArray_DATA(dx), n)
        else:
            act_row(&a.act[0], <double*>cnp.PyArray_DATA(y), n)
            act_grad_row(&a.act[0], <const double*>cnp.PyArray_DATA(y),
                         <const double*>cnp.PyArray_DATA(dya), <double*>cnp.PyArray_DATA(dx), n)
    return y, dx


#: Documented bound on |approximation - exact| of the float32 tanh (sigmoid: half of it),
#: checked by the tests over a dense grid; the measured value is printed by them.
APPROX_MAX_ABS_ERR = 5e-7


# =======================================================================================
# The training toolkit's element-wise passes (fastrnn.train): fastrnn_optim.h
# =======================================================================================
cdef extern from "fastrnn_optim.h" nogil:
    void fr_adam_f32(Py_ssize_t n, float* p, const float* g, float* m, float* v, float* vmax,
                     int amsgrad, float a1, float b2, float a2, float c2, float step, float eps)
    void fr_adam_f64(Py_ssize_t n, double* p, const double* g, double* m, double* v,
                     double* vmax, int amsgrad, double a1, double b2, double a2, double c2,
                     double step, double eps)
    double fr_sumsq_f32(Py_ssize_t n, const float* x)
    double fr_sumsq_f64(Py_ssize_t n, const double* x)
    void fr_xent_shift_f32(Py_ssize_t n, Py_ssize_t C, const float* z, float* e, float* shift)
    void fr_xent_shift_f64(Py_ssize_t n, Py_ssize_t C, const double* z, double* e,
                           double* shift)
    void fr_xent_grad_f32(Py_ssize_t n, Py_ssize_t C, const float* z, const Py_ssize_t* t,
                          const double* scale, const float* shift, float* e, double* nll)
    void fr_xent_grad_f64(Py_ssize_t n, Py_ssize_t C, const double* z, const Py_ssize_t* t,
                          const double* scale, const double* shift, double* e, double* nll)


cdef inline bint native(cnp.ndarray arr):
    """``arr``'s elements are in the machine's byte order and at addresses of their size, as
    the C code reads them (an array of '>f4' has the type number of float32 all the same)."""
    return cnp.PyArray_ISNOTSWAPPED(arr) and cnp.PyArray_ISALIGNED(arr)


cdef inline bint plain(object obj, int typenum, Py_ssize_t n, bint write):
    """``obj`` is a C-contiguous array of ``typenum`` with n elements (and writable), native
    (see :func:`native`)."""
    if not cnp.PyArray_Check(obj):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>obj
    return (cnp.PyArray_TYPE(arr) == typenum and cnp.PyArray_IS_C_CONTIGUOUS(arr)
            and cnp.PyArray_SIZE(arr) == n and (not write or cnp.PyArray_ISWRITEABLE(arr))
            and native(arr))


cdef bint apart(tuple arrays):
    """No two of these contiguous arrays (None skipped) share a byte: the kernel's pointers are
    ``restrict``."""
    cdef size_t lo[5]
    cdef size_t hi[5]
    cdef int n = 0, i, j
    for obj in arrays:
        if obj is not None:
            lo[n] = <size_t>cnp.PyArray_DATA(<cnp.ndarray>obj)
            hi[n] = lo[n] + <size_t>cnp.PyArray_NBYTES(<cnp.ndarray>obj)
            n += 1
    for i in range(n):
        for j in range(i + 1, n):
            if lo[i] < hi[j] and lo[j] < hi[i]:
                return False
    return True


def adam_update(p, g, m, v, vmax, double a1, double b2, double a2, double c2, double step,
                double eps):
    """The moments and parameter update of one Adam step, in place, in one pass.

    Bit-identical to the NumPy twin in ``fastrnn.train.optim`` (see fastrnn_optim.h)::

        m += a1 * (g - m); v *= b2; v += a2 * g * g
        vmax = maximum(vmax, v)          # amsgrad (vmax not None); v is then vmax
        p -= step * (m / (sqrt(v) / c2 + eps))

    Parameters
    ----------
    p, m, v : arrays, read and written
        The parameter and its first and second moments: C-contiguous, float32 or float64.
    g : array of p's dtype, size and layout, read
        The gradient (negated for maximize, weight decay added: the caller does that).
    vmax : array like p, read and written, or None
        AMSGrad's running maximum of v.
    a1, b2, a2, c2, step, eps : float
        1 - beta1, beta2, 1 - beta2, sqrt(1 - beta2**t), lr / (1 - beta1**t), eps.

    Returns
    -------
    bool
        True when done; False, having written nothing, when the arrays are not all
        C-contiguous arrays of p's dtype (float32 or float64) and size, in the machine's byte
        order and aligned, writable where written, and apart in memory.
    """
    cdef int typenum = cnp.PyArray_TYPE(p) if cnp.PyArray_Check(p) else -1
    cdef Py_ssize_t n = cnp.PyArray_SIZE(p) if typenum != -1 else 0
    cdef bint ams = vmax is not None
    if typenum not in (F32, F64) or not (
            plain(p, typenum, n, True) and plain(g, typenum, n, False)
            and plain(m, typenum, n, True) and plain(v, typenum, n, True)
            and (not ams or plain(vmax, typenum, n, True)) and apart((p, g, m, v, vmax))):
        return False
    cdef void* pv = cnp.PyArray_DATA(p)
    cdef void* gv = cnp.PyArray_DATA(g)
    cdef void* mv = cnp.PyArray_DATA(m)
    cdef void* vv = cnp.PyArray_DATA(v)
    cdef void* xv = cnp.PyArray_DATA(vmax) if ams else NULL
    with nogil:
        if typenum == F32:
            fr_adam_f32(n, <float*>pv, <const float*>gv, <float*>mv, <float*>vv, <float*>xv,
                        ams, <float>a1, <float>b2, <float>a2, <float>c2, <float>step, <float>eps)
        else:
            fr_adam_f64(n, <double*>pv, <const double*>gv, <double*>mv, <double*>vv,
                        <double*>xv, ams, a1, b2, a2, c2, step, eps)
    return True


def sum_squares(x):
    """Sum of the squares of a C-contiguous float32 or float64 array (native: see
    :func:`native`), accumulated in double (in 8 partial sums: equal to NumPy's float64 dot
    within rounding); None for another array."""
    cdef int typenum = cnp.PyArray_TYPE(x) if cnp.PyArray_Check(x) else -1
    if typenum not in (F32, F64) or not cnp.PyArray_IS_C_CONTIGUOUS(x) or not native(x):
        return None
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef void* data = cnp.PyArray_DATA(x)
    cdef double s
    with nogil:
        if typenum == F32:
            s = fr_sumsq_f32(n, <const float*>data)
        else:
            s = fr_sumsq_f64(n, <const double*>data)
    return s




def cross_entropy_rows(z, t, scale, grad, nll):
    """The numbers of a softmax cross-entropy over the rows of ``z``: each row shifted by its
    maximum, NumPy's exp in place, then per row ``nll = logsumexp(z) - z[t]`` and the
    gradient ``scale * (softmax(z) - onehot(t))`` (fastrnn_optim.h's fr_xent_*).

    Parameters
    ----------
    z : (n, C) array, read
        Logits, float32 or float64.
    t : (n,) intp array, read
        Target class of each row, each in [0, C) (ValueError otherwise).
    scale : (n,) float64 array, read
        Each row's weight in the loss over the reduction's denominator; 0: the row's
        gradient is exactly 0.
    grad : (n, C) array of z's dtype, written
    nll : (n,) float64 array, written

    Returns
    -------
    bool
        True when done; False, having written nothing, when the arrays are not all
        C-contiguous, of those dtypes and shapes (n and C at least 1), native (byte order,
        alignment), the written ones writable and apart from the others.
    """
    cdef int typenum = cnp.PyArray_TYPE(z) if cnp.PyArray_Check(z) else -1
    if typenum != F32 and typenum != F64 or not dense_array(z, typenum, 2, -1, -1, False):
        return False
    cdef cnp.npy_intp n = cnp.PyArray_DIMS(<cnp.ndarray>z)[0]
    cdef cnp.npy_intp C = cnp.PyArray_DIMS(<cnp.ndarray>z)[1]
    if (not dense_array(t, cnp.NPY_INTP, 1, n, -1, False)
            or not dense_array(scale, F64, 1, n, -1, False)
            or not dense_array(grad, typenum, 2, n, C, True)
            or not dense_array(nll, F64, 1, n, -1, True)
            or not apart((grad, nll, z, t, scale))):
        return False
    cdef const Py_ssize_t* tp = <const Py_ssize_t*>cnp.PyArray_DATA(<cnp.ndarray>t)
    cdef cnp.npy_intp r
    for r in range(n):
        if tp[r] < 0 or tp[r] >= C:
            raise ValueError(f"t must hold class indices in [0, {C}), but t[{r}] is {tp[r]}")
    cdef cnp.ndarray shift = empty(1, n, 0, 0, typenum)
    cdef void* zp = cnp.PyArray_DATA(<cnp.ndarray>z)
    cdef void* gp = cnp.PyArray_DATA(<cnp.ndarray>grad)
    cdef void* sp = cnp.PyArray_DATA(shift)
    cdef const double* cp = <const double*>cnp.PyArray_DATA(<cnp.ndarray>scale)
    cdef double* lp = <double*>cnp.PyArray_DATA(<cnp.ndarray>nll)
    with nogil:
        if typenum == F32:
            fr_xent_shift_f32(n, C, <const float*>zp, <float*>gp, <float*>sp)
        else:
            fr_xent_shift_f64(n, C, <const double*>zp, <double*>gp, <double*>sp)
    np.exp(grad, out=grad)
    with nogil:
        if typenum == F32:
            fr_xent_grad_f32(n, C, <const float*>zp, tp, cp, <const float*>sp, <float*>gp, lp)
        else:
            fr_xent_grad_f64(n, C, <const double*>zp, tp, cp, <const double*>sp, <double*>gp,
                             lp)
    return True

# =======================================================================================
# The training toolkit's dense layer (fastrnn.train.Linear): its products on the tiles of
# fastrnn_mm.h, split over the pool's threads
# =======================================================================================
cdef enum:
    # multiply-adds of a dense layer's call below which it runs on the calling thread alone
    # (a hand-off to the pool costs a few microseconds)
    DENSE_SPLIT_MACS = 1 << 18


ctypedef struct Dense:
    # One thread's share of a dense layer's products (dense_job); the parts cover them all.
    int part, nparts
    bint f32
    # rows [r0, r1) (this part's) of C (n x N) = A (n x K) @ W, plus bias (N, or NULL) on
    # every row; W packed by fr_pack (Wp); C NULL: no product
    int n, K, N
    const void* A            # read
    const void* Wp           # read
    const void* bias         # read
    void* C                  # written
    # rows [g0, g1) (this part's) of gW (m x P) += D^T X, and gb (m, or NULL) += D's column
    # sums, over the n rows of D (n x m) and X (n x P); gW NULL: none
    int m, P
    const void* D            # read
    const void* X            # read
    void* gW                 # read and written (added into)
    void* gb                 # read and written (added into)
    int rc                   # written: 0, or -1 when out of memory (nothing of this part's
                             # rows of gW and gb written; other parts' may be)


cdef void dense_job(int i, void* data, int unused) noexcept nogil:
    cdef Dense* d = <Dense*>data
    cdef int r0, r1, g0, g1, r
    cdef size_t item = sizeof(float) if d.f32 else sizeof(double)
    d.rc = 0
    if d.C != NULL:
        part_range(d.n, d.part, d.nparts, &r0, &r1)
        if r1 > r0 and d.bias != NULL:
            for r in range(r0, r1):
                memcpy(<char*>d.C + <Py_ssize_t>r * d.N * item, d.bias, d.N * item)
        if r1 > r0 and d.f32:
            rowmm(r1 - r0, d.K, d.N, <const float*>d.A + <Py_ssize_t>r0 * d.K, d.K,
                  <const float*>d.Wp, d.bias != NULL, <float*>d.C + <Py_ssize_t>r0 * d.N, d.N)
        elif r1 > r0:
            rowmm(r1 - r0, d.K, d.N, <const double*>d.A + <Py_ssize_t>r0 * d.K, d.K,
                  <const double*>d.Wp, d.bias != NULL, <double*>d.C + <Py_ssize_t>r0 * d.N, d.N)
    if d.gW != NULL:
        part_range(d.m, d.part, d.nparts, &g0, &g1)
        if g1 > g0 and d.f32:
            d.rc = wgrad2(g1 - g0, d.n, NULL, <const float*>d.D + g0, d.m,
                          d.P, <const float*>d.X, d.P, <float*>d.gW + <Py_ssize_t>g0 * d.P, d.P,
                          0, <const float*>NULL, 0, <float*>NULL, 0,
                          <float*>d.gb + g0 if d.gb != NULL else <float*>NULL, <float*>NULL)
        elif g1 > g0:
            d.rc = wgrad2(g1 - g0, d.n, NULL, <const double*>d.D + g0, d.m,
                          d.P, <const double*>d.X, d.P, <double*>d.gW + <Py_ssize_t>g0 * d.P,
                          d.P, 0, <const double*>NULL, 0, <double*>NULL, 0,
                          <double*>d.gb + g0 if d.gb != NULL else <double*>NULL, <double*>NULL)


cdef int run_dense(Dense* job, double macs) except -1:
    """Run ``job``'s products (its W already packed, at ``job.Wp``) on ``_num_threads`` threads,
    one below DENSE_SPLIT_MACS multiply-adds: the caller computes the first part and the pool
    of fastrnn_pool.h the others, as :func:`run_split` does.  MemoryError when a part ran out
    of memory (see Dense.rc)."""
    cdef int k, nparts = _num_threads if macs >= DENSE_SPLIT_MACS else 1, rc = 0
    cdef Dense* parts
    nparts = max(1, min(nparts, job.n if job.gW == NULL else max(job.n, job.m)))
    if nparts == 1:
        job.part, job.nparts = 0, 1
        with nogil:
            dense_job(0, job, 0)
        rc = job.rc
    else:
        parts = <Dense*>calloc(nparts, sizeof(Dense))
        if parts == NULL:
            raise MemoryError("fastrnn cython kernel: out of memory for its threads")
        for k in range(nparts):
            parts[k] = job[0]
            parts[k].part, parts[k].nparts = k, nparts
        with nogil:
            fr_split_run_all(dense_job, nparts, sizeof(Dense), parts)
        for k in range(nparts):
            rc |= parts[k].rc
        free(parts)
    if rc != 0:
        raise MemoryError("fastrnn cython kernel: out of memory for a weight gradient's blocks")
    return 0


cdef bint dense_array(object obj, int typenum, int nd, cnp.npy_intp d0, cnp.npy_intp d1,
                      bint write):
    """``obj`` is a C-contiguous array of ``typenum`` shaped (d0[, d1]) (a size < 0: any), whose
    sizes are at least 1 and fit a C int, native (see :func:`native`) (and writable)."""
    if not cnp.PyArray_Check(obj):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>obj
    cdef cnp.npy_intp* dims = cnp.PyArray_DIMS(arr)
    if (cnp.PyArray_TYPE(arr) != typenum or cnp.PyArray_NDIM(arr) != nd
            or not cnp.PyArray_IS_C_CONTIGUOUS(arr) or (write and not cnp.PyArray_ISWRITEABLE(arr))
            or not native(arr)):
        return False
    if (dims[0] != d0 and d0 >= 0) or dims[0] < 1 or dims[0] >= INT_MAX:
        return False
    return nd == 1 or ((dims[1] == d1 or d1 < 0) and 1 <= dims[1] < INT_MAX)


cdef char* pack_weight(object w, int K, int N, Py_ssize_t rs, Py_ssize_t cs, int typenum,
                       char** raw) except NULL:
    """W (K x N, W[k, j] = w[k*rs + j*cs]) packed by fr_pack into malloc'd memory (``raw``, for
    the caller to free), its start on a cache line."""
    cdef Py_ssize_t size = fr_packed_size_f32(K, N) if typenum == F32 else fr_packed_size_f64(K, N)
    cdef size_t item = 4 if typenum == F32 else 8
    cdef char* out
    cdef void* src = cnp.PyArray_DATA(<cnp.ndarray>w)
    raw[0] = <char*>malloc(<size_t>size * item + 64)
    if raw[0] == NULL:
        raise MemoryError("fastrnn cython kernel: out of memory for a packed weight")
    out = raw[0] + (64 - <size_t>raw[0] % 64)
    with nogil:
        if typenum == F32:
            fr_pack_f32(K, N, <const float*>src, rs, cs, <float*>out)
        else:
            fr_pack_f64(K, N, <const double*>src, rs, cs, <double*>out)
    return out


def dense_forward(x, weight, bias, y):
    """``y = x @ weight.T + bias``: the forward of :class:`fastrnn.train.Linear`, on the tiles
    of fastrnn_mm.h (``weight`` packed at each call), the rows split over the threads.

    Every element gets ``bias[j] + x[i, 0] w[j, 0] + x[i, 1] w[j, 1] + ...`` in that order
    (fused multiply-adds where the build has them), whatever the thread count.

    Parameters
    ----------
    x : (n, H) array, read
    weight : (C, H) array, read
    bias : (C,) array, or None, read
    y : (n, C) array, written

    Returns
    -------
    bool
        True when done; False, having written nothing, when the arrays are not all
        C-contiguous arrays of x's dtype (float32 or float64, native byte order, aligned) with
        those shapes (each size at least 1 and below 2**31), ``y`` writable and apart from the
        others in memory.
    """
    cdef int typenum = cnp.PyArray_TYPE(x) if cnp.PyArray_Check(x) else -1
    if typenum != F32 and typenum != F64 or not dense_array(x, typenum, 2, -1, -1, False):
        return False
    cdef cnp.npy_intp n = cnp.PyArray_DIMS(<cnp.ndarray>x)[0]
    cdef cnp.npy_intp H = cnp.PyArray_DIMS(<cnp.ndarray>x)[1]
    if not dense_array(weight, typenum, 2, -1, H, False):
        return False
    cdef cnp.npy_intp C = cnp.PyArray_DIMS(<cnp.ndarray>weight)[0]
    if (not dense_array(y, typenum, 2, n, C, True)
            or bias is not None and not dense_array(bias, typenum, 1, C, -1, False)
            or not apart((y, x, weight, bias))):
        return False
    cdef Dense job
    cdef char* raw = NULL
    memset(&job, 0, sizeof(Dense))
    job.f32, job.n, job.K, job.N = typenum == F32, <int>n, <int>H, <int>C
    job.A, job.bias, job.C = data(x), data(bias), data(y)
    try:
        job.Wp = pack_weight(weight, <int>H, <int>C, 1, H, typenum, &raw)   # W = weight^T
        run_dense(&job, <double>n * H * C)
    finally:
        free(raw)
    return True


def dense_backward(dy, x, weight, dx, gweight, gbias):
    """The backward of :class:`fastrnn.train.Linear`'s forward ``y = x @ weight.T + bias``:
    ``dx = dy @ weight`` (its rows split over the threads), ``gweight += dy.T @ x`` and
    ``gbias += dy.sum(axis=0)`` (their rows split), on the tiles of fastrnn_mm.h, in one
    call of the threads.

    Each element's sum runs over the rows in their order (fused multiply-adds where the build
    has them), whatever the thread count.

    Parameters
    ----------
    dy : (n, C) array, read
    x : (n, H) array, read
    weight : (C, H) array, read
    dx : (n, H) array, written, or None (no input gradient)
    gweight : (C, H) array, read and written (added into)
    gbias : (C,) array, read and written (added into), or None

    Returns
    -------
    bool
        True when done; False, having written nothing, when the arrays are not all
        C-contiguous arrays of dy's dtype (float32 or float64, native byte order, aligned) with
        those shapes (each size at least 1 and below 2**31), the written ones writable and
        apart from the others.

    Raises
    ------
    MemoryError
        When a part's blocks of the weight gradient could not be allocated: ``dx`` and the
        other parts' rows of ``gweight`` and ``gbias`` may then be written already.
    """
    cdef int typenum = cnp.PyArray_TYPE(dy) if cnp.PyArray_Check(dy) else -1
    if typenum != F32 and typenum != F64 or not dense_array(dy, typenum, 2, -1, -1, False):
        return False
    cdef cnp.npy_intp n = cnp.PyArray_DIMS(<cnp.ndarray>dy)[0]
    cdef cnp.npy_intp C = cnp.PyArray_DIMS(<cnp.ndarray>dy)[1]
    if not dense_array(x, typenum, 2, n, -1, False):
        return False
    cdef cnp.npy_intp H = cnp.PyArray_DIMS(<cnp.ndarray>x)[1]
    if (not dense_array(weight, typenum, 2, C, H, False)
            or not dense_array(gweight, typenum, 2, C, H, True)
            or dx is not None and not dense_array(dx, typenum, 2, n, H, True)
            or gbias is not None and not dense_array(gbias, typenum, 1, C, -1, True)
            or not apart((dx, gweight, gbias, dy, x)) or not apart((dx, gweight, gbias, weight))):
        return False
    cdef Dense job
    cdef char* raw = NULL
    memset(&job, 0, sizeof(Dense))
    job.f32, job.n, job.K, job.N = typenum == F32, <int>n, <int>C, <int>H
    job.m, job.P = <int>C, <int>H
    job.A, job.C = data(dy), data(dx)
    job.D, job.X, job.gW, job.gb = data(dy), data(x), data(gweight), data(gbias)
    try:
        if dx is not None:
            job.Wp = pack_weight(weight, <int>C, <int>H, H, 1, typenum, &raw)   # W = weight
        run_dense(&job, <double>n * H * C * (2 if dx is not None else 1))
    finally:
        free(raw)
    return True
