"""The numba backend: compiled kernels for RNN, LSTM and GRU.

Implements the kernel contract of :mod:`fastrnn.reference` (same functions,
arguments and results, float32 and float64), with two differences a caller
can see: float32 activations are a rational approximation (max abs error
3e-7, see :mod:`fastrnn.jit.activations`), and a backward pass consumes its
record (it reuses the forward's stored gates as its gradient buffer, so each
forward can be backpropagated once, as in the layers and cells).

Modules: :mod:`~fastrnn.jit.config` (compile flags, disk cache, threads),
:mod:`~fastrnn.jit.activations`, :mod:`~fastrnn.jit.gemm` (matrix products),
and one module per cell type, :mod:`~fastrnn.jit.rnn`, :mod:`~fastrnn.jit.lstm`,
:mod:`~fastrnn.jit.gru`.
"""

import numpy as np

from .activations import act_grad_row, act_row
from .config import get_num_threads, set_num_threads
from .gru import gru_backward, gru_forward, gru_step_backward, gru_step_forward
from .lstm import lstm_backward, lstm_forward, lstm_step_backward, lstm_step_forward
from .rnn import rnn_backward, rnn_forward, rnn_step_backward, rnn_step_forward

__all__ = [
    "rnn_forward", "rnn_backward", "rnn_step_forward", "rnn_step_backward",
    "lstm_forward", "lstm_backward", "lstm_step_forward", "lstm_step_backward",
    "gru_forward", "gru_backward", "gru_step_forward", "gru_step_backward",
    "warmup", "get_num_threads", "set_num_threads",
]


def warmup(dtypes=(np.float32, np.float64)):
    """Compile every kernel for ``dtypes`` now (or load it from the disk cache).

    The first call of each kernel otherwise pays its compilation (seconds);
    after this, no call compiles.  Each kernel is compiled once per dtype:
    the wrappers pass every kernel the same argument types whatever the
    options (bias or not, projection or not, lengths or not, training or not,
    and any ``activations``: they are passed as arrays of codes and parameters,
    :func:`fastrnn.jit._common.act_arrays`, so the compiled kernels are the
    same for every choice of them, the defaults included).  The row passes of
    the activations, which the kernels call, are compiled (or loaded) too.

    Parameters
    ----------
    dtypes : iterable of numpy dtypes
    """
    T, B, I, H = 2, 2, 8, 4   # (I >= config.SPARSE_DENSITY: the sparse input's kernels too)
    for dtype in dtypes:
        rng = np.random.default_rng(0)

        def arr(*shape):
            return rng.standard_normal(shape).astype(dtype)

        x, h, c = arr(T, B, I), arr(B, H), arr(B, H)
        gru = (gru_forward, gru_backward, gru_step_forward, gru_step_backward,
               (arr(3 * H, I), arr(3 * H, H), arr(3 * H), arr(3 * H)), (h,))
        cells = [   # (kernels..., weights, states, options): every variant with kernels of its own
            (rnn_forward, rnn_backward, rnn_step_forward, rnn_step_backward,
             (arr(H, I), arr(H, H), arr(H), arr(H)), (h,), {}),
            gru + ({},),
            gru + ({"reset_after": False},),
            (lstm_forward, lstm_backward, lstm_step_forward, lstm_step_backward,
             (arr(4 * H, I), arr(4 * H, H), arr(4 * H), arr(4 * H), None, None), (h, c), {}),
        ]
        sparse = np.zeros_like(x)   # one entry in 32: the input's sparse products
        sparse[-1, -1, -1] = 1
        for forward, backward, step_forward, step_backward, weights, hx, opts in cells:
            dweights = tuple(None if w is None else np.zeros_like(w) for w in weights)
            for xs in (x, sparse):
                y, hy, saved = forward(xs, hx, weights, **opts)
                backward(y, hy, saved, dweights, np.zeros((T, B), dtype=dtype))
            hy, saved = step_forward(x[0], hx, weights, **opts)
            step_backward(hy, saved, dweights)
        # the row passes the kernels call: a kernel loaded from the disk cache carries its own
        # copy, which leaves these unloaded; with the types of the kernels' calls (int32 code)
        row = np.zeros(1, dtype=dtype)
        act_row(np.int32(0), 0.0, 0.0, row)
        act_grad_row(np.int32(0), 0.0, 0.0, row, row.copy())
