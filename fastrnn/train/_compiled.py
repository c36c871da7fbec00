"""The training toolkit's compiled passes, where the extension is built.

The compiled kernels (``kernels/fastrnn_optim.h``, in every build of the extension) do in one
pass what the NumPy code of :mod:`fastrnn.train.optim` (Adam's update) and
:mod:`fastrnn.train.clip` (the sum of squares of a 2-norm) does in several, and in two what
:func:`fastrnn.train.cross_entropy` does in ten; they run the products of
:class:`fastrnn.train.Linear` on the recurrent kernels' tiles (``kernels/fastrnn_mm.h``).
That NumPy code stays the oracle and the path taken where the extension is not built: Adam's
update is bit-identical either way, the 2-norm equal within double rounding, the loss and
the head's products within float rounding.
"""

import functools


@functools.cache
def kernels():
    """The chosen build of the compiled kernels (:mod:`fastrnn._cython`), with its
    ``adam_update``, ``sum_squares``, ``dense_forward``, ``dense_backward`` and
    ``cross_entropy_rows``; None when the extension is not built or its build cannot be used
    here.  Loaded as the layers load a backend (:mod:`fastrnn.backends`), so that NumPy's
    BLAS runs its parallel jobs on fastrnn's pool from then on (see :mod:`fastrnn._runtime`):
    a training loop of NumPy code around these kernels and no layer (or before its first)
    otherwise left OpenBLAS's threads spinning ~0.1 s after each NumPy product, and a
    dense_forward of 2,048 rows by 128 by 96 right after one took 0.28 ms instead of 0.14."""
    from ..backends import _load
    module = _load("cython")
    return None if isinstance(module, Exception) else module
