"""The ``cython`` backend: the kernel contract of :mod:`fastrnn.reference`, compiled.

The kernels live in the extension module ``fastrnn._cython._kernels``, built
by ``setup.py`` from ``kernels/_kernels.pyx`` when Cython and a C compiler are
there (``pip install .``, ``pip install -e .``, or a platform wheel).  Without
it this package does not import and ``fastrnn.backends()`` says why.  BLAS
comes from SciPy (``scipy.linalg.cython_blas``), so SciPy must be installed.

Threads: a kernel call holds SciPy's OpenBLAS at one thread and splits the work
itself (the batch, in the time loop; output rows, in the GEMMs before and after
it) over :func:`get_num_threads` threads: the usable cores by default, or the
environment variable ``FASTRNN_CYTHON_THREADS``, or :func:`set_num_threads`.

A backward consumes its cache (it writes the gradients over the forward's
stored gates), as in the numba backend: a second backward on it raises.
"""

try:
    from ._kernels import (  # noqa: F401
        APPROX_MAX_ABS_ERR,
        BLAS_LIBRARIES,
        activation,
        get_num_threads,
        gru_backward,
        gru_forward,
        gru_step_backward,
        gru_step_forward,
        lstm_backward,
        lstm_forward,
        lstm_step_backward,
        lstm_step_forward,
        rnn_backward,
        rnn_forward,
        rnn_step_backward,
        rnn_step_forward,
        set_num_threads,
    )
except ImportError as exc:
    if getattr(exc, "name", None) == "scipy" or "scipy" in str(exc):
        raise ImportError(f"the cython backend needs SciPy for BLAS ({exc}); "
                          f"install it with `pip install scipy`") from exc
    raise ImportError(f"fastrnn was installed without its compiled Cython extension ({exc})") from exc

__all__ = [
    "rnn_forward", "rnn_backward", "rnn_step_forward", "rnn_step_backward",
    "lstm_forward", "lstm_backward", "lstm_step_forward", "lstm_step_backward",
    "gru_forward", "gru_backward", "gru_step_forward", "gru_step_backward",
]
