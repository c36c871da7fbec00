"""Embedding lookup: token ids in, vectors out (``torch.nn.Embedding`` on NumPy arrays).

The first layer of a model that reads words or characters: row ``i`` of ``weight`` is the
vector of token ``i``.  PyTorch's constructor arguments in PyTorch's order (``padding_idx``,
``max_norm``, ``scale_grad_by_freq`` included), same initialisation (N(0, 1), the padding row zero), same results; the backward adds
each output gradient into the row it was read from, so a token used several times gets the sum.
"""

import math
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
    max_norm : float, optional
        As PyTorch's: each forward first rescales, in ``weight`` itself, the rows it reads
        whose ``norm_type``-norm is above ``max_norm`` to ``max_norm`` (times
        ``max_norm / (norm + 1e-7)``).
    norm_type : float
        The p of the norm ``max_norm`` bounds (default 2).
    scale_grad_by_freq : bool
        As PyTorch's: the gradient of each row is divided by the number of times its id
        occurs in the forward's ids.
    sparse : bool
        PyTorch's argument, for its code: the gradient is the same dense array either way.
    _weight : (V, E) array-like, optional
        PyTorch's: the initial table instead of a random one.
    _freeze : bool
        PyTorch's; must be False (fastrnn has no frozen parameters: leave the table out of
        the optimizer instead).
    device : None or "cpu"
        PyTorch's argument, for its code: the CPU is the only device (any other is refused).
    dtype : np.float32 or np.float64
    seed : None, int, numpy SeedSequence or Generator
        Seeds the initialisation: ``weight`` from N(0, 1), as ``torch.nn.Embedding``.

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

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None,
                 norm_type=2.0, scale_grad_by_freq=False, sparse=False, _weight=None,
                 _freeze=False, device=None, dtype=np.float32, seed=None):
        _checks.check_device(device)
        if max_norm is not None:
            if isinstance(max_norm, bool) or not isinstance(max_norm, numbers.Real) or not (
                    max_norm > 0 and math.isfinite(max_norm)):
                raise ValueError(f"max_norm must be None or a positive finite number, but got "
                                 f"{max_norm!r}")
            max_norm = float(max_norm)
        if isinstance(norm_type, bool) or not isinstance(norm_type, numbers.Real) or not (
                norm_type > 0):
            raise ValueError(f"norm_type must be a positive number (p of the p-norm; inf for "
                             f"the largest value), but got {norm_type!r}")
        self.max_norm, self.norm_type = max_norm, float(norm_type)
        self.scale_grad_by_freq = _checks.check_bool("scale_grad_by_freq", scale_grad_by_freq)
        self.sparse = _checks.check_bool("sparse", sparse)
        if _checks.check_bool("_freeze", _freeze):
            raise ValueError("_freeze=True: fastrnn has no frozen parameters; leave the "
                             "embedding out of the optimizer instead")
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
        if _weight is not None:
            self.load_state_dict({"weight": _weight})

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
        config = dict(num_embeddings=self.num_embeddings, embedding_dim=self.embedding_dim,
                      padding_idx=self.padding_idx, dtype=self._dtype.name, seed=self._config_seed())
        if self.max_norm is not None:
            config.update(max_norm=self.max_norm, norm_type=self.norm_type)
        if self.scale_grad_by_freq:
            config["scale_grad_by_freq"] = True
        if self.sparse:
            config["sparse"] = True
        return config

    def __repr__(self):
        extra = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            extra += f", max_norm={self.max_norm:g}" + (
                "" if self.norm_type == 2.0 else f", norm_type={self.norm_type:g}")
        extra += ", scale_grad_by_freq=True" if self.scale_grad_by_freq else ""
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
        weight = self._params["weight"]
        if self.max_norm is not None and idx.size:   # PyTorch's embedding_renorm_, in place
            rows = np.unique(idx)
            norms = np.linalg.norm(weight[rows].astype(np.float64), ord=self.norm_type, axis=1)
            over = norms > self.max_norm
            if over.any():
                scale = self.max_norm / (norms[over] + 1e-7)
                weight[rows[over]] *= scale.astype(self._dtype)[:, None]
        out = weight[idx]
        training = self._forward_mode()
        self._keep(training, self._private(idx, ids) if training else None)
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
        if self.scale_grad_by_freq and flat.size:   # each id's rows by 1 / its count
            counts = np.bincount(flat, minlength=self.num_embeddings)
            rows = rows / counts[flat][:, None].astype(self._dtype)
        if self.padding_idx is not None:
            keep = flat != self.padding_idx
            flat, rows = flat[keep], rows[keep]
        np.add.at(self.grads["weight"], flat, rows)
        return None
