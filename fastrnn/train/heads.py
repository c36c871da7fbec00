"""Dense output head: the ``V h + c`` that turns hidden states into predictions.

:class:`Linear` is ``torch.nn.Linear`` on NumPy arrays: same constructor
arguments, parameter names (``weight`` (C, H), ``bias`` (C,)), initialisation
and equation ``y = x W^T + b``, with an explicit :meth:`Linear.backward`.
"""

import numpy as np

from .. import _checks
from ..module import Module


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

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, seed=None):
        self.in_features = _checks.check_int("in_features", in_features)
        self.out_features = _checks.check_int("out_features", out_features)
        self.bias = _checks.check_bool("bias", bias)
        # The head runs plain NumPy matrix products whatever the layers' backend is.
        super().__init__(dtype, "numpy", seed)
        shapes = {"weight": (self.out_features, self.in_features)}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        self._init_parameters(shapes, self.in_features)

    @property
    def weight(self):
        """(C, H) live weight array."""
        return self._params["weight"]

    def get_config(self):
        return dict(in_features=self.in_features, out_features=self.out_features,
                    bias=self.bias, dtype=self._dtype.name, seed=self.seed)

    def __repr__(self):
        extra = "" if self._dtype == np.float32 else f", dtype={self._dtype.name}"
        return (f"Linear(in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias}{extra})")

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
        y = x2 @ weight.T
        if self.bias:
            y += self._params["bias"]
        self._cache = None
        if self.training:   # what the backward reads is the forward's own, not the caller's
            self._cache = (self._private(x2, x), weight.copy(), arr.shape)
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
        self.grads["weight"] += d2.T @ x2
        if self.bias:
            self.grads["bias"] += d2.sum(axis=0)
        return (d2 @ weight).reshape(in_shape)
