"""The training toolkit's compiled passes, where the extension is built.

The compiled kernels (``kernels/fastrnn_optim.h``, in every build of the extension) do in one
pass what the NumPy code of :mod:`fastrnn.train.optim` (Adam's update) and
:mod:`fastrnn.train.clip` (the sum of squares of a 2-norm) does in several, and run the
products of :class:`fastrnn.train.Linear` on the recurrent kernels' tiles
(``kernels/fastrnn_mm.h``).  That NumPy code stays the oracle and the path taken where the
extension is not built: Adam's update is bit-identical either way, the 2-norm equal within
double rounding, the head's products within float rounding.
"""

import functools


@functools.cache
def kernels():
    """The chosen build of the compiled kernels (:mod:`fastrnn._cython`), with its
    ``adam_update``, ``sum_squares``, ``dense_forward`` and ``dense_backward``; None when the extension is not built or its build
    cannot be used here."""
    try:
        from .. import _cython
    except ImportError:
        return None
    return _cython
