"""Base class of the layers and cells: parameters, gradients, modes, state dicts."""

import contextlib
import threading
from collections import namedtuple

import numpy as np

from . import _checks
from .backends import resolve


#: what :meth:`Module.load_state_dict` returns, as PyTorch's does: the names it did not find
#: and those it did not know (both empty after a strict load)
IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _line_aligned(shape, dtype):
    """An uninitialised C-contiguous array of ``shape`` and ``dtype`` whose data starts at a
    multiple of 64 bytes (a view of a slightly larger buffer), as PyTorch's CPU allocator aligns
    tensors.  A cell's step reads each weight row with vectors of up to 64 bytes, which
    straddled two cache lines where the C library's allocator started the array 16 or 32 bytes
    past one: LSTMCell(128, 128)'s step 4-6% slower."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    buf = np.empty(nbytes + 64, dtype=np.uint8)
    skip = -buf.ctypes.data % 64
    return buf[skip:skip + nbytes].view(dtype).reshape(shape)


#: this thread's ``evaluating`` blocks: ``ids`` maps id(module) -> blocks open
_blocks = threading.local()


def _evaluating_here(module):
    """Whether this thread is inside an :func:`evaluating` block of ``module``."""
    ids = getattr(_blocks, "ids", None)
    return bool(ids) and id(module) in ids


@contextlib.contextmanager
def evaluating(modules):
    """Forwards of ``modules`` in evaluation mode inside the block, in this thread only (a
    decoder's greedy or beam search, between its teacher-forced forward and that backward).

    Nothing shared changes: the modules' ``training`` stays what other threads see (another
    thread may train the same decoder meanwhile), and a forward inside the block neither
    needs nor drops what the last training-mode forward kept for its backward, which
    ``train(False)`` would drop.  Blocks nest, within a thread and across threads.
    """
    modules = list(modules)
    ids = _blocks.__dict__.setdefault("ids", {})
    for m in modules:
        ids[id(m)] = ids.get(id(m), 0) + 1
    try:
        yield
    finally:
        for m in modules:
            if ids[id(m)] == 1:
                del ids[id(m)]
            else:
                ids[id(m)] -= 1


class Module:
    """Parameters by PyTorch name, their accumulated gradients, train/eval mode.

    Subclasses fill ``self._params`` (name -> ndarray, in PyTorch's order) in
    their constructor and call :meth:`_init_parameters`.
    """

    def __init__(self, dtype, backend, seed):
        self._dtype = _checks.check_dtype(dtype)
        self.backend = backend
        self.seed = seed
        try:
            if isinstance(seed, (bool, np.bool_)):    # (default_rng takes True for 1)
                raise TypeError("a bool is not a seed")
            self._rng = np.random.default_rng(seed)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"seed must be None, a non-negative int or a numpy SeedSequence/"
                            f"Generator, but got {type(seed).__name__} ({seed!r}): {exc}") from None
        self.training = True
        self._params = {}
        self.grads = {}
        self._cache = None

    def get_config(self):
        """The constructor arguments that rebuild this object (``type(self)(**config)``).

        Plain Python values only (the dtype as its name), so the dict can be stored as JSON.
        """
        raise NotImplementedError

    def _config_seed(self):
        """``seed`` as :meth:`get_config` gives it: an int, or a list of ints, as plain Python
        ints; None for a Generator or a SeedSequence, which no config holds (the seed drew the
        initial weights, which ``state_dict`` carries, and drives dropout)."""
        seed = self.seed
        if isinstance(seed, (np.random.Generator, np.random.SeedSequence)) or seed is None:
            return None
        return np.asarray(seed).tolist()

    # -- parameters ---------------------------------------------------------------
    def _init_parameters(self, shapes, hidden_size):
        """Create every parameter, U(-1/sqrt(H), 1/sqrt(H)) like PyTorch, from the seeded
        generator, and its gradient (zeros), each starting on a cache line (see _line_aligned)."""
        bound = 1.0 / np.sqrt(hidden_size)
        for name, shape in shapes.items():
            self._params[name] = _line_aligned(shape, self._dtype)
            self._params[name][...] = self._rng.uniform(-bound, bound, shape)
            self.grads[name] = _line_aligned(shape, self._dtype)
            self.grads[name].fill(0)

    @property
    def dtype(self):
        """The numpy dtype of parameters, outputs and gradients (float32 or float64)."""
        return self._dtype

    @property
    def backend(self):
        """Name of the backend that runs the kernels (``"auto"`` already resolved)."""
        return self._backend.name

    @backend.setter
    def backend(self, name):
        self._backend = resolve(name)
        self._backend_request = name   # what the user asked for: resolved again after a pickle

    # -- pickle and copy ------------------------------------------------------------------
    def __getstate__(self):
        """Everything but the backend's module (the name asked for instead) and a training
        forward's record: a pickle (or deep copy) carries configuration, parameters, gradients,
        mode and random generator; the backward of a forward made before it is not carried."""
        state = dict(self.__dict__)
        state["_backend"] = state.pop("_backend_request", self._backend.name)
        state["_cache"] = None
        return state

    def __setstate__(self, state):
        """Resolve the backend again, here: a model pickled where the cython build exists
        loads where it does not.  A backend asked for by name that is missing here falls back
        to ``"auto"``, with a warning saying so."""
        state = dict(state)
        request = state.pop("_backend")
        self.__dict__.update(state)
        try:
            self.backend = request
        except RuntimeError as exc:   # known, but not available on this machine
            import warnings
            warnings.warn(f"{type(self).__name__} was pickled with backend={request!r}, which is "
                          f"not available here ({exc}); it runs on backend='auto' instead",
                          RuntimeWarning, stacklevel=2)
            self.backend = "auto"

    def parameters(self, recurse=True):
        """dict name -> the live parameter array (writes to it change the model).
        (``recurse`` is taken for PyTorch's code: a fastrnn module holds no others.)"""
        _checks.check_bool("recurse", recurse)
        return dict(self._params)

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """``(prefix + "." + name, live parameter array)`` pairs (``name`` alone without a
        prefix), in PyTorch's order, as PyTorch's
        ``named_parameters()`` yields them (``recurse`` and ``remove_duplicate`` are taken for
        its code: a fastrnn module holds no other modules and no parameter twice)."""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, but got {type(prefix).__name__}")
        _checks.check_bool("recurse", recurse)
        _checks.check_bool("remove_duplicate", remove_duplicate)
        dot = prefix + "." if prefix else ""
        return ((dot + name, p) for name, p in self._params.items())

    def __getattr__(self, name):
        # a parameter by its PyTorch name, as an attribute (lstm.weight_ih_l0): the live array
        params = self.__dict__.get("_params")
        if params is not None and name in params:
            return params[name]
        if hasattr(type(self), name):
            # a property whose code raised AttributeError: raise that one, not "no attribute"
            return object.__getattribute__(self, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name, value):
        # lstm.weight_ih_l0 = w writes w into the live parameter (checked, and named by the
        # attribute): an attribute of its own would hide the array the kernels read.  (The
        # private names skip the lookup, but not this call, ~0.1 us.)
        if not name.startswith("_"):
            params = self.__dict__.get("_params")
            if params is not None and name in params:
                arr = _checks.as_float_array(name, value, self._dtype)
                _checks.check_shape(name, arr, params[name].shape)
                params[name][...] = arr
                return
        object.__setattr__(self, name, value)

    def state_dict(self, *, destination=None, prefix="", keep_vars=False):
        """dict name -> a copy of every parameter, in PyTorch's order and names.

        PyTorch's keyword arguments: ``prefix`` goes before every name
        (``"rnn."``), ``destination`` (a mapping) receives the entries and is
        returned, and ``keep_vars=True`` gives the live parameter arrays
        instead of copies.
        """
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, but got {type(prefix).__name__}")
        keep_vars = _checks.check_bool("keep_vars", keep_vars)
        if destination is None:
            destination = {}
        elif not (hasattr(destination, "keys") and hasattr(destination, "__setitem__")):
            raise TypeError(f"destination must be a mapping (a dict), but got "
                            f"{type(destination).__name__}")
        for name, p in self._params.items():
            destination[prefix + name] = p if keep_vars else p.copy()
        return destination

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """Copy parameters in from a mapping of name -> array-like (torch tensors work).

        Everything is checked before anything is written: missing, unexpected
        and mis-shaped entries are all named in one error, and a failed load
        leaves the parameters as they were.  With ``strict=False`` missing and
        unexpected names are ignored (shapes are still checked).  ``assign``
        is taken for PyTorch's code: the values are copied into the parameters
        either way (the arrays an optimizer holds stay the model's).

        Returns
        -------
        IncompatibleKeys
            ``(missing_keys, unexpected_keys)``, lists of names, as PyTorch's
            ``load_state_dict`` returns (empty after a strict load).
        """
        strict = _checks.check_bool("strict", strict)
        _checks.check_bool("assign", assign)
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping of parameter name to array, "
                            f"but got {type(state_dict).__name__}")
        names = set(state_dict.keys())
        missing = [n for n in self._params if n not in names]
        unexpected = sorted(str(n) for n in names if n not in self._params)
        problems, values = [], {}
        for name, param in self._params.items():
            if name not in names:
                continue
            try:
                value = _checks.as_float_array(f"state_dict[{name!r}]", state_dict[name], self._dtype)
            except TypeError as exc:
                problems.append(str(exc))
                continue
            if value.shape != param.shape:
                problems.append(f"size mismatch for {name}: expected shape {param.shape}, "
                                f"but got {value.shape}")
            values[name] = value
        if strict and missing:
            problems.insert(0, f"Missing key(s) in state_dict: {missing}")
        if strict and unexpected:
            problems.insert(0, f"Unexpected key(s) in state_dict: {unexpected}")
        if problems:
            raise ValueError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                             + "\n\t".join(problems))
        for name, value in values.items():
            self._params[name][...] = value
        return IncompatibleKeys(missing, unexpected)

    def zero_grad(self, set_to_none=True):
        """Set every accumulated gradient to zero.

        ``set_to_none`` is PyTorch's argument, taken for its code: either way the gradient
        arrays are zeroed in place and kept (optimizers hold them), which is what the next
        backward sees after PyTorch's either way too."""
        _checks.check_bool("set_to_none", set_to_none)
        for g in self.grads.values():
            g.fill(0)

    # -- modes --------------------------------------------------------------------
    def train(self, mode=True):
        """Training mode (dropout on, forward keeps what backward needs), or evaluation mode
        for ``mode=False``. Returns self."""
        self.training = _checks.check_bool("mode", mode)
        if not self.training:
            self._cache = None
        return self

    def eval(self):
        """Evaluation mode: no dropout, the forward keeps nothing for backward. Returns self."""
        return self.train(False)

    def __call__(self, *args, **kwargs):
        """``module(...)`` is ``module.forward(...)``, as in PyTorch."""
        return self.forward(*args, **kwargs)

    def to(self, *args, **kwargs):
        """PyTorch's ``module.to(device)``, ``to(dtype)``, ``to(device, dtype)`` and
        ``to(tensor)``, for PyTorch's code: the device must be the CPU (see the constructors'
        ``device``) and the dtype the one the module was built with, since fastrnn converts
        no module in place (build one with the other ``dtype`` and ``load_state_dict`` this
        one's ``state_dict()``).  Returns self."""
        device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
        _checks.check_bool("non_blocking", kwargs.pop("non_blocking", False))
        kwargs.pop("memory_format", None)
        if kwargs:
            raise TypeError(f"to() got unexpected keyword argument(s) {sorted(kwargs)}")
        if len(args) > 3:
            raise TypeError(f"to() takes at most 3 positional arguments, but got {len(args)}")
        for arg in args:
            if isinstance(arg, bool):
                continue                                       # non_blocking
            if _checks.names_dtype(arg):
                dtype = arg
            elif hasattr(arg, "device") and hasattr(arg, "dtype") and not isinstance(arg, type):
                device, dtype = arg.device, arg.dtype          # a tensor (or an array)
            else:
                device = arg
        _checks.check_device(device)
        wanted = self._dtype if dtype is None else _checks.check_dtype(dtype)
        if wanted != self._dtype:
            raise ValueError(f"dtype: {type(self).__name__} keeps the dtype it was built with "
                             f"({self._dtype.name}), but got {_checks.short(dtype)}: build one "
                             f"with dtype={wanted.name} and load this one's state_dict() into it")
        return self

    def cpu(self):
        """PyTorch's ``module.cpu()``: fastrnn's modules are on the CPU already. Returns self."""
        return self

    def _private(self, arr, source):
        """``arr`` itself, or a copy when it may share memory with ``source`` (what the caller
        passed): a training forward keeps its input for the backward, so an edit of the caller's
        array in between must not reach it."""
        if arr.flags.owndata and arr is not source:
            return arr           # made by the conversion of ``source``: nobody else has it
        if isinstance(source, np.ndarray) and not np.may_share_memory(arr, source):
            return arr
        return arr.copy()        # the caller's array, a view of it, or of its buffer (a tensor)

    @staticmethod
    def _snapshot(weights):
        """Copies of ``weights`` (None stays None) for a training forward to keep: the backward
        then differentiates the weights the forward used, whatever is written to the live
        parameters in between (a user's edit, an optimizer step)."""
        return tuple(None if w is None else w.copy() for w in weights)

    def _forward_mode(self):
        """Whether a forward of this thread trains: ``training``, but False inside an
        :func:`evaluating` block of this thread.  A forward reads it once."""
        return self.training and not _evaluating_here(self)

    def _keep(self, training, record):
        """After a forward: keep a training-mode forward's ``record`` for the backward.  An
        evaluation-mode forward drops the pending one (the backward is of the last forward),
        unless it ran inside an :func:`evaluating` block, which leaves it."""
        if training:
            self._cache = record
        elif not _evaluating_here(self):
            self._cache = None

    def _take_cache(self):
        if self._cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() needs a forward pass in training mode first "
                f"(call .train() before the forward); a forward in eval mode keeps nothing, "
                f"and each forward can be backpropagated once")
        cache, self._cache = self._cache, None
        return cache

    # -- files ----------------------------------------------------------------------
    def save(self, path):
        """Save configuration and parameters to ``path`` (see :func:`fastrnn.io.save`).

        Reload with :func:`fastrnn.io.load`; the round trip is bit-for-bit.
        """
        from .io import save
        return save(self, path)

    def to_torch(self):
        """The equivalent torch module, weights copied (see :func:`fastrnn.interop.to_torch`)."""
        from .interop.torch import to_torch
        return to_torch(self)
