"""Exact weight conversion between fastrnn and other frameworks.

* :mod:`fastrnn.interop.torch`: :func:`from_torch` / :func:`to_torch` for
  ``torch.nn.RNN/LSTM/GRU`` and the three cells.
* :mod:`fastrnn.interop.keras`: :func:`from_keras` / :func:`to_keras` /
  :func:`keras_weights` for Keras 3 ``SimpleRNN``, ``LSTM``, ``GRU``
  (``reset_after`` either way), their cells and ``Bidirectional``.
* ONNX lives in :mod:`fastrnn.onnx` (``export`` / ``load``).

Each library is imported inside the functions that need it, so importing
this package costs nothing and needs none of them.

Gate orders (weights stack the gates along one axis, in this order):

=========  ==============  ============  =====================================
cell       fastrnn/torch   Keras 3       ONNX
=========  ==============  ============  =====================================
LSTM       i, f, g, o      i, f, c, o    i, o, f, c
GRU        r, z, n         z, r, h       z, r, h (``linear_before_reset=1``)
=========  ==============  ============  =====================================
"""

from ._common import GATE_ORDERS, reorder_gates
from .keras import from_keras, keras_weights, to_keras
from .torch import from_torch, to_torch

__all__ = ["from_torch", "to_torch", "from_keras", "to_keras", "keras_weights",
           "GATE_ORDERS", "reorder_gates"]
