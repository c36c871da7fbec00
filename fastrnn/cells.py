"""Public one-step cells: :class:`RNNCell`, :class:`LSTMCell`, :class:`GRUCell`.

Same arguments, parameter names (``weight_ih``, ``weight_hh``, ``bias_ih``,
``bias_hh``), shapes and equations as ``torch.nn.RNNCell/LSTMCell/GRUCell``.
A cell advances one time step; :meth:`backward` backpropagates through the
last step called in training mode.  Beyond PyTorch, every cell takes ``clip`` (ONNX's cell
clip, as :class:`fastrnn.layers.RNNBase` describes it), ``GRUCell`` ``reset_after`` and
``LSTMCell`` ``peepholes`` and ``input_forget``, and every cell ``activations``, as the
layers do.
"""

import numpy as np

from . import _checks, _docs
from .activations import check_activations, check_in_dtype, to_config
from .celltypes import CELL_TYPES
from .module import Module, _evaluating_here
from .reference._common import check_clip


def _no_plan(x, hx):
    return None


class _CellBase(Module):
    _type = None    # the cell type (fastrnn.celltypes)
    _plan = None    # (backend, its prepared eval step of these weights), see _prepare_plan

    def __init__(self, input_size, hidden_size, bias, dtype, backend, seed, peepholes=False,
                 clip=None, activations=None, **opts):
        self.input_size = _checks.check_int("input_size", input_size)
        self.hidden_size = _checks.check_int("hidden_size", hidden_size)
        self.bias = _checks.check_bool("bias", bias)
        self.peepholes = _checks.check_bool("peepholes", peepholes)
        self.clip = check_clip(clip)
        self.activations = check_activations(self._type.name, activations)
        if activations is not None and opts.get("nonlinearity", "tanh") != "tanh":
            raise ValueError("give the RNN's activation once: nonlinearity='relu' or "
                             "activations, not both")
        self._opts = opts
        if self.clip is not None:
            self._opts["clip"] = self.clip
        if self.activations is not None:
            self._opts["activations"] = self.activations
        super().__init__(dtype, backend, seed)
        check_clip(self.clip, self._dtype)     # one the dtype holds (not 0, not inf)
        check_in_dtype(self.activations, self._dtype)
        GH = self._type.gates * self.hidden_size
        shapes = {"weight_ih": (GH, self.input_size), "weight_hh": (GH, self.hidden_size)}
        if self.bias:
            shapes.update(bias_ih=(GH,), bias_hh=(GH,))
        if self.peepholes:
            shapes["weight_peephole"] = (3, self.hidden_size)
        self._init_parameters(shapes, self.hidden_size)
        self._names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if self.bias else (None, None))
        if len(self._type.weights) > 4:   # LSTM: no projection in cells, optional peepholes
            self._names += (None, "weight_peephole" if self.peepholes else None)
        # the live parameter arrays, in the kernels' order (load_state_dict writes into them)
        self._weights = tuple(None if n is None else self._params[n] for n in self._names)

    def get_config(self):
        config = dict(input_size=self.input_size, hidden_size=self.hidden_size, bias=self.bias,
                      dtype=self._dtype.name, seed=self._config_seed(), **self._opts)
        if self.peepholes:
            config["peepholes"] = True
        if self.activations is not None:
            config["activations"] = to_config(self.activations)
        return config

    def __repr__(self):
        extra = "" if self.bias else ", bias=False"
        if self._opts.get("nonlinearity", "tanh") != "tanh":
            extra += f", nonlinearity={self._opts['nonlinearity']!r}"
        if not self._opts.get("reset_after", True):
            extra += ", reset_after=False"
        if self.peepholes:
            extra += ", peepholes=True"
        if self._opts.get("input_forget", False):
            extra += ", input_forget=True"
        if self.clip is not None:
            extra += f", clip={self.clip!r}"
        if self.activations is not None:
            extra += f", activations={self.activations!r}"
        if self._dtype != np.float32:
            extra += f", dtype={self._dtype.name}"
        return f"{type(self).__name__}({self.input_size}, {self.hidden_size}{extra})"

    def _state_arrays(self, name, values, batch, unbatched):
        """Check states (or their gradients); ``name``: the argument, or one name per state."""
        expected = (self.hidden_size,) if unbatched else (batch, self.hidden_size)
        out = []
        for k, v in enumerate(values):
            if not (type(v) is np.ndarray and v.dtype == self._dtype and v.shape == expected
                    and v.flags.c_contiguous):
                label = self._type.states[k]
                if not isinstance(name, str):
                    full = name[k]
                elif len(self._type.states) == 1:
                    full = f"{name} ({label})"
                else:
                    full = f"{name}[{k}] ({label})"
                v = np.ascontiguousarray(_checks.check_shape(
                    full, _checks.as_float_array(full, v, self._dtype), expected))
            out.append(v.reshape(batch, self.hidden_size) if unbatched else v)
        return tuple(out)

    def __call__(self, x, hx=None):
        # (Module's __call__ passes *args and **kwargs on: ~0.1-0.3 us of a ~5 us step)
        return self.forward(x, hx)

    def _prepare_plan(self):
        """Ask the backend for its prepared eval-mode step of these weights (its
        ``<cell>_step_plan``), which the forwards call first: it returns ``hy``, or None where
        it does not take ``x`` and ``hx`` as they are (the checked path, :meth:`_step`, then
        runs the step, and prepares the plan when there is none for this backend yet)."""
        made = self._backend.step_plan(self._type.name, self._weights, **self._opts)
        self._plan = (self._backend, made or _no_plan)

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_plan", None)          # made again after a pickle or a copy
        return state

    def _step(self, x, hx):
        arr = x
        if not (type(x) is np.ndarray and x.dtype == self._dtype and x.flags.c_contiguous):
            arr = _checks.as_float_array("input", x, self._dtype)
        if arr.ndim not in (1, 2):
            raise ValueError(f"{type(self).__name__}: Expected input to be 1D or 2D, "
                             f"got {arr.ndim}D instead (shape {arr.shape})")
        arr = np.ascontiguousarray(arr)
        if arr.shape[-1] != self.input_size:
            raise ValueError(f"input.size(-1) must be equal to input_size. "
                             f"Expected {self.input_size}, got {arr.shape[-1]}")
        unbatched = arr.ndim == 1
        if unbatched:
            arr = arr.reshape(1, self.input_size)
        B = arr.shape[0]
        if hx is None:
            states = tuple(np.zeros((B, self.hidden_size), dtype=self._dtype) for _ in self._type.states)
        else:
            states = self._state_arrays("hx", hx if len(self._type.states) > 1 else (hx,), B, unbatched)
        weights = self._weights
        training = self._forward_mode()    # read once
        if training:   # what the backward reads is the forward's own, not the caller's
            arr, weights = self._private(arr, x), self._snapshot(weights)
        elif self._plan is None or self._plan[0] is not self._backend:
            self._prepare_plan()
        step_forward, step_backward = self._backend.kernels(self._type.name)[2:]
        hy, cache = step_forward(arr, states, weights, training, **self._opts)
        self._keep(training, (step_backward, cache, unbatched, B))
        return tuple(h[0] for h in hy) if unbatched else hy

    def _backstep(self, dhy, names):
        step_backward, cache, unbatched, B = self._take_cache()
        try:
            dstates = self._state_arrays(names, dhy, B, unbatched)
        except (TypeError, ValueError):
            self._cache = (step_backward, cache, unbatched, B)
            raise
        dx, dhx = step_backward(dstates, cache,
                                tuple(None if n is None else self.grads[n] for n in self._names))
        if unbatched:
            return dx[0], tuple(d[0] for d in dhx)
        return dx, dhx



class RNNCell(_CellBase):
    """One step of an Elman RNN: ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`` (or relu).

    Weights: ``weight_ih`` (H, I), ``weight_hh`` (H, H), ``bias_ih``, ``bias_hh`` (H,).
    ``torch.nn.RNNCell``'s arguments, and fastrnn's: ``dtype``, ``backend``, ``seed``
    (see :class:`fastrnn.layers.RNNBase`), ``clip`` (ONNX's cell clip) and ``activations``
    (one entry), as :class:`fastrnn.RNN` takes them.
    """
    _type = CELL_TYPES["rnn"]

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", device=None,
                 dtype=np.float32, backend="auto", seed=None, clip=None, activations=None):
        _checks.check_device(device)
        _checks.check_choice("nonlinearity", nonlinearity, ("tanh", "relu"))
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, dtype, backend, seed, clip=clip,
                         activations=activations, nonlinearity=nonlinearity)

    def forward(self, x, hx=None):
        """One step. x: (B, I) or (I,); hx: (B, H) or (H,), zeros by default. Returns h' like hx."""
        plan = self._plan
        if plan is not None and hx is not None and plan[0] is self._backend and (
                not self.training or _evaluating_here(self)):   # (a decoder's step)
            hy = plan[1](x, (hx,))
            if hy is not None:
                return hy[0]
        return self._step(x, hx)[0]

    def backward(self, dh1):
        """Backward of the last step. dh1: like h'. Returns ``dx, dh``."""
        dx, (dh,) = self._backstep((dh1,), ("dh1",))
        return dx, dh


class GRUCell(_CellBase):
    """One step of a GRU (gate order r, z, n; PyTorch's reset-after equations by default).

    Weights: ``weight_ih`` (3H, I), ``weight_hh`` (3H, H), ``bias_ih``, ``bias_hh`` (3H,).
    ``torch.nn.GRUCell``'s arguments, and fastrnn's: ``dtype``, ``backend``, ``seed`` (see
    :class:`fastrnn.layers.RNNBase`), ``reset_after=False`` (the reset gate applied before the
    product of n), ``clip`` (ONNX's cell clip) and ``activations`` (two entries), as
    :class:`fastrnn.GRU` takes them.
    """
    _type = CELL_TYPES["gru"]

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=np.float32,
                 backend="auto", seed=None, reset_after=True, clip=None, activations=None):
        _checks.check_device(device)
        self.reset_after = _checks.check_bool("reset_after", reset_after)
        opts = {} if self.reset_after else {"reset_after": False}
        super().__init__(input_size, hidden_size, bias, dtype, backend, seed, clip=clip,
                         activations=activations, **opts)

    def forward(self, x, hx=None):
        """One step. x: (B, I) or (I,); hx: (B, H) or (H,), zeros by default. Returns h'."""
        plan = self._plan
        if plan is not None and hx is not None and plan[0] is self._backend and (
                not self.training or _evaluating_here(self)):   # (a decoder's step)
            hy = plan[1](x, (hx,))
            if hy is not None:
                return hy[0]
        return self._step(x, hx)[0]

    def backward(self, dh1):
        """Backward of the last step. dh1: like h'. Returns ``dx, dh``."""
        dx, (dh,) = self._backstep((dh1,), ("dh1",))
        return dx, dh


class LSTMCell(_CellBase):
    """One step of an LSTM (gate order i, f, g, o).

    Weights: ``weight_ih`` (4H, I), ``weight_hh`` (4H, H), ``bias_ih``, ``bias_hh`` (4H,),
    and with ``peepholes=True`` (not in PyTorch; see :class:`fastrnn.LSTM`)
    ``weight_peephole`` (3, H), rows i, f, o.  ``input_forget=True`` couples the input and
    forget gates, ``f = 1 - i``.  ``torch.nn.LSTMCell``'s arguments, and fastrnn's:
    ``dtype``, ``backend``, ``seed`` (see :class:`fastrnn.layers.RNNBase`), ``peepholes``,
    ``input_forget``, ``clip`` (ONNX's cell clip) and ``activations`` (three entries), as
    :class:`fastrnn.LSTM` takes them.
    """
    _type = CELL_TYPES["lstm"]

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=np.float32,
                 backend="auto", seed=None, peepholes=False, input_forget=False, clip=None,
                 activations=None):
        _checks.check_device(device)
        self.input_forget = _checks.check_bool("input_forget", input_forget)
        opts = {"input_forget": True} if self.input_forget else {}
        super().__init__(input_size, hidden_size, bias, dtype, backend, seed, peepholes, clip,
                         activations, **opts)

    def forward(self, x, hx=None):
        """One step. x: (B, I) or (I,); hx: ``(h, c)`` each (B, H) or (H,). Returns ``(h', c')``."""
        plan = self._plan
        if plan is not None and type(hx) is tuple and plan[0] is self._backend and (
                not self.training or _evaluating_here(self)):   # (a decoder's step)
            hy = plan[1](x, hx)
            if hy is not None:
                return hy
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise TypeError(f"hx must be a tuple (h, c) for LSTMCell, but got {type(hx).__name__}"
                            + (f" of length {len(hx)}" if isinstance(hx, (tuple, list)) else ""))
        return self._step(x, hx)

    def backward(self, dh1, dc1=None):
        """Backward of the last step. dh1, dc1: like h', c' (dc1 zeros by default).

        Returns ``dx, (dh, dc)``.
        """
        if dc1 is None:
            dh1 = _checks.as_float_array("dh1", dh1, self._dtype)
            dc1 = np.zeros(dh1.shape, dtype=self._dtype)
        return self._backstep((dh1, dc1), ("dh1", "dc1"))


for _cls, _cell in ((RNNCell, "rnn"), (LSTMCell, "lstm"), (GRUCell, "gru")):
    _docs.document(_cls, _cell, layer=False)
