"""Dense output head: the ``V h + c`` that turns hidden states into predictions.

:class:`Linear` is ``torch.nn.Linear`` on NumPy arrays: same constructor
arguments, parameter names (``weight`` (C, H), ``bias`` (C,)), initialisation
and equation ``y = x W^T + b``, with an explicit :meth:`Linear.backward`.

Its products (``x W^T``; ``dy W`` and ``dy^T x`` in the backward) are NumPy's,
or, where the cython extension is built and a call has the rows that repay the
weight's packing (see COMPILED_MIN_ROWS), the kernels' own (``dense_forward``
and ``dense_backward`` of ``kernels/_kernels.pyx``: the register tiles of the
recurrent layers, the weight packed at each call, the rows split over fastrnn's
threads, the backward's three results in one call of them).  NumPy's OpenBLAS
does not know every CPU it meets: on an AMD EPYC with AVX-512 (Zen 5) it runs
its Haswell (AVX2) kernels, and the README loop's head (2,048 rows by H = 256 by
96 classes) took 0.66 ms forward and 1.7 ms forward and backward there, 0.36 and
0.96 ms compiled (H = 128: 0.34 and 0.89 -> 0.17 and 0.49 ms); from 128 rows on,
at H = 128 or 512 by 96, 2,000 or 10,000 classes, the forward was 1.1-2.3x and
the backward 1.5-2.1x as fast as NumPy's.  Results equal NumPy's within rounding
(another order of sums), and do not depend on the thread count.
"""

import numpy as np

from .. import _checks
from ..module import Module
from . import _compiled

#: rows of a forward from which its product runs compiled: the weight is packed (transposed)
#: at every call, which a few rows (a decoder's step) do not repay.  A weight of more than
#: SMALL_WEIGHT_BYTES (packed from beyond the L2 cache) takes LARGE_WEIGHT_ROWS rows: at
#: 512 x 10,000 floats the pack alone took 3.7 ms, NumPy's product of 64 rows 3.9 ms.
COMPILED_MIN_ROWS = 32
SMALL_WEIGHT_BYTES = 512 * 1024
LARGE_WEIGHT_ROWS = 128
#: rows of a backward from which it runs compiled: its pack is a copy of the weight's rows,
#: and its three results come from one call of the threads (faster than NumPy's three
#: products from 1 row on, at 256 x 96 and at 512 x 10,000 floats alike)
COMPILED_MIN_ROWS_BACKWARD = 1


def _forward(x2, weight, bias):
    """``x2 @ weight.T + bias`` (bias None: none), x2 (n, H): on the compiled tiles where the
    extension is built and the call has the rows that repay it (see COMPILED_MIN_ROWS),
    else NumPy's."""
    n = x2.shape[0]
    enough = n >= COMPILED_MIN_ROWS and (n >= LARGE_WEIGHT_ROWS
                                         or weight.nbytes <= SMALL_WEIGHT_BYTES)
    fused = _compiled.kernels() if enough else None
    if fused is not None:
        y = np.empty((n, weight.shape[0]), x2.dtype)
        if fused.dense_forward(x2, weight, bias, y):
            return y
    y = x2 @ weight.T
    if bias is not None:
        y += bias
    return y


def _backward(d2, x2, weight, gweight, gbias):
    """``gweight += d2.T @ x2``, ``gbias += d2.sum(0)`` (gbias None: none); returns
    ``d2 @ weight``: compiled (from COMPILED_MIN_ROWS_BACKWARD rows) or NumPy's."""
    fused = _compiled.kernels() if d2.shape[0] >= COMPILED_MIN_ROWS_BACKWARD else None
    if fused is not None:
        dx = np.empty(x2.shape, d2.dtype)
        if fused.dense_backward(d2, x2, weight, dx, gweight, gbias):
            return dx
    gweight += d2.T @ x2
    if gbias is not None:
        gbias += d2.sum(axis=0)
    return d2 @ weight


class Linear(Module):
    """Affine map ``y = x @ weight.T + bias`` over the last axis of any array.

    Parameters
    ----------
    in_features : int
        Size H of each input vector (the hidden size of the recurrent layer below).
    out_features : int
        Size C of each output vector (classes, or predicted values).
    bias : bool
        Learn the additive ``bias`` (default True).
    device : None or "cpu"
        PyTorch's argument, for its code: the CPU is the only device (any other is refused).
    dtype : np.float32 or np.float64
    seed : None, int, numpy SeedSequence or Generator
        Seeds the initialisation: ``weight`` and ``bias`` are drawn from
        U(-1/sqrt(H), 1/sqrt(H)), as ``torch.nn.Linear`` does
        (``kaiming_uniform_(a=sqrt(5))`` reduces to that bound).

    Attributes
    ----------
    grads : dict
        ``{"weight": (C, H), "bias": (C,)}`` gradients, accumulated by :meth:`backward`.

    Examples
    --------
    >>> head = Linear(128, 10, seed=0)
    >>> logits = head(np.zeros((50, 32, 128), np.float32))   # (T, B, H) -> (T, B, C)
    >>> logits.shape
    (50, 32, 10)
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=np.float32,
                 seed=None):
        _checks.check_device(device)
        self.in_features = _checks.check_int("in_features", in_features)
        self.out_features = _checks.check_int("out_features", out_features)
        bias = _checks.check_bool("bias", bias)
        # The head's products are NumPy's, or, where the cython extension is built, its
        # tiles' (see _forward): whatever the layers' backend is.
        super().__init__(dtype, "numpy", seed)
        shapes = {"weight": (self.out_features, self.in_features)}
        if bias:
            shapes["bias"] = (self.out_features,)
        self._init_parameters(shapes, self.in_features)

    @property
    def weight(self):
        """(C, H) live weight array."""
        return self._params["weight"]

    @property
    def bias(self):
        """(C,) live bias array, or None without one (``bias=False``), as PyTorch's
        ``Linear.bias``; assigning an array writes it into the live one."""
        return self._params.get("bias")

    @bias.setter
    def bias(self, value):
        # (Module.__setattr__ writes an existing bias; this is reached without one)
        raise AttributeError("this Linear was built with bias=False and has no bias to "
                             "assign; build it with bias=True")

    def get_config(self):
        return dict(in_features=self.in_features, out_features=self.out_features,
                    bias=self.bias is not None, dtype=self._dtype.name, seed=self._config_seed())

    def __repr__(self):
        extra = "" if self._dtype == np.float32 else f", dtype={self._dtype.name}"
        return (f"Linear(in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}{extra})")

    def forward(self, x):
        """Apply the map.

        Parameters
        ----------
        x : (..., H) array-like of floats
            Any number of leading axes, e.g. (T, B, H), (B, H) or (H,).

        Returns
        -------
        y : (..., C) array of ``dtype``
        """
        arr = _checks.as_float_array("input", x, self._dtype)
        if arr.ndim == 0 or arr.shape[-1] != self.in_features:
            raise ValueError(f"Linear: the last axis of the input must have size in_features="
                             f"{self.in_features}, but got input of shape {arr.shape}")
        x2 = arr.reshape(-1, self.in_features)
        weight = self._params["weight"]
        y = _forward(x2, weight, self._params.get("bias"))
        training = self._forward_mode()
        # what the backward reads is the forward's own, not the caller's
        self._keep(training, (self._private(x2, x), weight.copy(), arr.shape) if training else None)
        return y.reshape(arr.shape[:-1] + (self.out_features,))

    def backward(self, dy):
        """Backward of the last training-mode :meth:`forward`.

        Adds ``dJ/dweight`` and ``dJ/dbias`` to :attr:`grads`.

        Parameters
        ----------
        dy : (..., C) array-like
            Gradient of the loss with respect to the forward's output.

        Returns
        -------
        dx : (..., H) array
            Gradient with respect to the forward's input.
        """
        x2, weight, in_shape = self._take_cache()
        try:
            d = _checks.as_float_array("dy", dy, self._dtype)
            _checks.check_shape("dy", d, in_shape[:-1] + (self.out_features,))
        except (TypeError, ValueError):
            self._cache = (x2, weight, in_shape)   # a bad call does not consume the forward
            raise
        d2 = d.reshape(-1, self.out_features)
        return _backward(d2, x2, weight, self.grads["weight"],
                         self.grads.get("bias")).reshape(in_shape)
