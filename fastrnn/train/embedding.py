"""Embedding lookup: token ids in, vectors out (``torch.nn.Embedding`` on NumPy arrays).

The first layer of a model that reads words or characters: row ``i`` of ``weight`` is the
vector of token ``i``.  Same constructor arguments as PyTorch's for what it has (``padding_idx``
included), same initialisation (N(0, 1), the padding row zero), same results; the backward adds
each output gradient into the row it was read from, so a token used several times gets the sum.
"""

import numbers

import numpy as np

from .. import _checks
from ..module import Module


class Embedding(Module):
    """A table of ``num_embeddings`` vectors of ``embedding_dim`` values, indexed by token id.

    Parameters
    ----------
    num_embeddings : int
        Size V of the vocabulary (ids 0 .. V-1).
    embedding_dim : int
        Size E of each vector.
    padding_idx : int, optional
        An id whose vector starts at zero and gets no gradient (the padding of sequences of
        different lengths); negative counts from the end, as in PyTorch.
    dtype : np.float32 or np.float64
    seed : None, int, numpy SeedSequence or Generator
        Seeds the initialisation: ``weight`` from N(0, 1), as ``torch.nn.Embedding``.
    device : None or "cpu"
        PyTorch's argument, for its code: the CPU is the only device (any other is refused).

    Attributes
    ----------
    grads : dict
        ``{"weight": (V, E)}``, accumulated by :meth:`backward`.

    Examples
    --------
    >>> emb = Embedding(100, 16, padding_idx=0, seed=0)
    >>> emb(np.array([[3, 7], [0, 3]])).shape                  # (T, B) ids -> (T, B, E)
    (2, 2, 16)
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype=np.float32,
                 seed=None, device=None):
        _checks.check_device(device)
        self.num_embeddings = _checks.check_int("num_embeddings", num_embeddings)
        self.embedding_dim = _checks.check_int("embedding_dim", embedding_dim)
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, numbers.Integral):
                raise TypeError(f"padding_idx must be an int or None, but got "
                                f"{type(padding_idx).__name__}")
            V = self.num_embeddings
            if not -V <= padding_idx < V:
                raise ValueError(f"padding_idx must be within num_embeddings: in [{-V}, {V}), "
                                 f"but got {padding_idx}")
            padding_idx = int(padding_idx) % V
        self.padding_idx = padding_idx
        super().__init__(dtype, "numpy", seed)
        self._init_parameters({"weight": (self.num_embeddings, self.embedding_dim)})

    def _init_parameters(self, shapes):
        """The table from N(0, 1) as ``torch.nn.Embedding``, ``padding_idx``'s row zero, and its
        gradient (zeros).  (:func:`fastrnn.load` checks ``shapes`` against a file's arrays
        before this runs, as for every module.)"""
        ((name, shape),) = shapes.items()
        weight = self._rng.standard_normal(shape).astype(self._dtype)
        if self.padding_idx is not None:
            weight[self.padding_idx] = 0
        self._params[name] = weight
        self.grads[name] = np.zeros(shape, dtype=self._dtype)

    @property
    def weight(self):
        """(V, E) live weight array."""
        return self._params["weight"]

    def get_config(self):
        return dict(num_embeddings=self.num_embeddings, embedding_dim=self.embedding_dim,
                    padding_idx=self.padding_idx, dtype=self._dtype.name, seed=self.seed)

    def __repr__(self):
        extra = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        extra += "" if self._dtype == np.float32 else f", dtype={self._dtype.name}"
        return f"Embedding({self.num_embeddings}, {self.embedding_dim}{extra})"

    def _ids(self, ids):
        arr = np.asarray(ids)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.integer)
                                       or arr.dtype == np.bool_ and arr.size == 0):
            raise TypeError(f"Embedding: input must be an array of integer token ids, but got "
                            f"dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= self.num_embeddings):
            bad = arr.min() if arr.min() < 0 else arr.max()
            raise IndexError(f"Embedding: token id {int(bad)} is out of range: ids must be in "
                             f"[0, {self.num_embeddings}) (num_embeddings={self.num_embeddings})")
        return arr.astype(np.intp, copy=False)

    def forward(self, ids):
        """Look the ids up.

        Parameters
        ----------
        ids : (...) array-like of ints in [0, num_embeddings)
            Any shape, e.g. (T, B) time-major token ids.

        Returns
        -------
        (..., E) array of ``dtype``: a new array (editing it leaves ``weight`` alone)
        """
        idx = self._ids(ids)
        out = self._params["weight"][idx]
        self._cache = self._private(idx, ids) if self.training else None
        return out

    def backward(self, dout):
        """Backward of the last training-mode :meth:`forward`: adds ``dout`` into the rows of
        ``grads["weight"]`` that were read (repeated ids add up; ``padding_idx`` gets nothing).

        Parameters
        ----------
        dout : (..., E) array-like, shaped like the forward's output

        Returns
        -------
        None
            Token ids have no gradient.
        """
        idx = self._take_cache()
        try:
            d = _checks.as_float_array("dout", dout, self._dtype)
            _checks.check_shape("dout", d, idx.shape + (self.embedding_dim,))
        except (TypeError, ValueError):
            self._cache = idx   # a bad call does not consume the forward
            raise
        flat, rows = idx.reshape(-1), d.reshape(-1, self.embedding_dim)
        if self.padding_idx is not None:
            keep = flat != self.padding_idx
            flat, rows = flat[keep], rows[keep]
        np.add.at(self.grads["weight"], flat, rows)
        return None
