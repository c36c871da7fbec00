"""Python-side helpers shared by the numba kernels' public wrappers."""

import numpy as np

from .gemm import DIRECT_MIN, pack, panel_shape

#: fewest rows (T*B) for which a short-rowed weight gradient is summed transposed: the
#: final transposition costs as much as summing a few rows
TRANSPOSED_MIN_ROWS = 64
#: bytes added to every row of the buffers that matrix products write, so that rows
#: whose width is a multiple of 4 KiB do not map to the same cache sets
ROW_PAD_BYTES = 64

_EMPTY = {}


def contiguous(a, dtype):
    """``a`` as a C-contiguous array of ``dtype`` (no copy when it already is one)."""
    return np.ascontiguousarray(a, dtype=dtype)


def lengths_or_full(lengths, T, B):
    """(B,) int64 lengths, all T when ``lengths`` is None (the kernels always mask)."""
    if lengths is None:
        return np.full(B, T, dtype=np.int64)
    return np.ascontiguousarray(lengths, dtype=np.int64)


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


def take(cache, cell):
    """Open a training-mode cache for the backward, once: it is emptied as it is read.

    The backward reuses the forward's stored gates as its gradient buffer, so
    a cache supports one backward pass.
    """
    if not isinstance(cache, list):
        raise TypeError(f"{cell}_backward needs the cache returned by {cell}_forward "
                        f"with training=True, but got {type(cache).__name__}")
    if not cache:
        raise RuntimeError(f"this {cell}_forward cache was already used by a backward pass: "
                           f"the numba backend overwrites it, so run the forward again")
    values = tuple(cache)
    cache.clear()
    return values


def grad_scratch(K, ng, rows, dtype):
    """Scratch for a (ng, K) weight gradient summed over ``rows`` rows: (K, ng) zeros when
    summing it transposed pays (short rows, many of them), else an empty array (see
    :func:`fastrnn.jit.gemm.weight_grad`)."""
    if K < DIRECT_MIN and rows >= TRANSPOSED_MIN_ROWS:
        return np.zeros((K, ng), dtype=dtype)
    return empty(2, dtype)
