"""Public sequence layers: :class:`RNN`, :class:`LSTM`, :class:`GRU`.

Constructor arguments, parameter names and shapes, gate order, equations and
the layout of outputs and states are those of ``torch.nn.RNN/LSTM/GRU``; the
arrays are NumPy arrays and the backward pass is explicit.
"""

import numpy as np

from . import _checks, _docs, functional
from .activations import check_in_dtype, check_layer_activations, to_config
from .celltypes import of_mode
from .module import Module
from .reference._common import check_clip


class RNNBase(Module):
    """Shared machinery of :class:`RNN`, :class:`LSTM` and :class:`GRU`.

    ``reverse=True`` (not in PyTorch) runs every layer from the last step to the first, and
    from each sequence's last valid step with ``lengths``: ONNX's ``direction="reverse"``,
    Keras's ``go_backwards=True``.  ``out[t]`` stays aligned with ``x[t]`` (as ONNX and the
    reverse half of a bidirectional layer have it; Keras returns that sequence flipped), ``h_n``
    is the state after step 0, and the parameters keep the names of a forward layer
    (``weight_ih_l0``, ...).  It excludes ``bidirectional``.

    ``clip`` (not in PyTorch; ONNX's cell clip), a positive number the dtype holds (neither
    rounded to 0 nor infinite) or None, bounds every gate's
    pre-activation to ``[-clip, clip]`` before its activation (not the LSTM's cell state).
    Where it cuts, the gradient is 0; at the bounds themselves it passes (PyTorch's clamp).

    ``activations`` (not in PyTorch; ONNX's activations and Keras's ``activation`` and
    ``recurrent_activation``) replaces the cell's activation functions: one entry per slot,
    RNN (f), GRU (f: r, z; g: n), LSTM (f: i, f, o; g: the candidate; h: of c_t), each a name
    of :mod:`fastrnn.activations` (``"hard_sigmoid"``, ``"relu"``, ...; ONNX's names too) or a
    tuple ``(name, alpha[, beta])``.  A bidirectional layer takes one list for both
    directions, or the forward's entries followed by the reverse's.  None keeps PyTorch's.

    fastrnn's own arguments of every layer and cell:

    - ``dtype``: ``np.float32`` (default) or ``np.float64``, of the parameters and of what a
      call returns (inputs of other float dtypes are converted);
    - ``backend``: ``"auto"`` (default: ``FASTRNN_BACKEND`` if set, else the fastest one
      installed, cython, numba then numpy), ``"cython"``, ``"numba"`` or ``"numpy"`` (the
      reference); :func:`fastrnn.backends` says which are available and why not;
    - ``seed``: None (default, fresh entropy), an int >= 0, a ``numpy.random.SeedSequence``
      or ``Generator``: the parameters' initialisation, U(-1/sqrt(H), 1/sqrt(H)) as in
      PyTorch, and the dropout masks;
    - ``device``: PyTorch's argument, taken for its code: None or the CPU (``"cpu"``).
    """

    def __init__(self, mode, input_size, hidden_size, num_layers=1, bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, proj_size=0,
                 device=None, dtype=np.float32, backend="auto", seed=None, reverse=False,
                 options=None, peepholes=False, clip=None, activations=None):
        _checks.check_device(device)
        self.mode = mode
        self.clip = check_clip(clip)
        self.bidirectional = _checks.check_bool("bidirectional", bidirectional)
        self.activations, per_direction = check_layer_activations(
            of_mode(mode).name, activations, 2 if self.bidirectional else 1)
        if activations is not None and mode == "RNN_RELU":
            raise ValueError("give the RNN's activation once: nonlinearity='relu' or "
                             "activations, not both")
        self._direction_options = None if self.activations is None else \
            [{"activations": a} for a in per_direction]
        self._options = dict(options or {})   # the kernels' keyword arguments beyond the mode's
        if self.clip is not None:
            self._options["clip"] = self.clip
        self.input_size = _checks.check_int("input_size", input_size)
        self.hidden_size = _checks.check_int("hidden_size", hidden_size)
        self.num_layers = _checks.check_int("num_layers", num_layers)
        _not_a_dtype(proj_size, "an int >= 0")
        self.proj_size = _checks.check_int("proj_size", proj_size, minimum=0)
        if self.proj_size >= self.hidden_size:
            raise ValueError(f"proj_size must be smaller than hidden_size ({self.hidden_size}), "
                             f"but got {self.proj_size}")
        self.dropout = _checks.check_dropout(dropout)
        self.bias = _checks.check_bool("bias", bias)
        self.batch_first = _checks.check_bool("batch_first", batch_first)
        self.reverse = _checks.check_bool("reverse", reverse)
        self.peepholes = _checks.check_bool("peepholes", peepholes)
        if self.reverse and self.bidirectional:
            raise ValueError("reverse=True runs the layer's one direction from the last step to "
                             "the first; bidirectional=True already runs one direction each "
                             "way: set one of them")
        super().__init__(dtype, backend, seed)
        check_clip(self.clip, self._dtype)     # one the dtype holds (not 0, not inf)
        check_in_dtype(self.activations, self._dtype)
        if self.dropout > 0 and self.num_layers == 1:
            import warnings
            warnings.warn(f"dropout={self.dropout} has no effect with num_layers=1: dropout acts "
                          f"between layers, after all but the last", UserWarning, stacklevel=3)

        H, G, D = self.hidden_size, of_mode(mode).gates, self.num_directions
        out = self.proj_size or H
        shapes, self._weight_names = {}, []
        for layer in range(self.num_layers):
            layer_in = self.input_size if layer == 0 else out * D
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                names = [f"weight_ih{sfx}", f"weight_hh{sfx}"]
                shapes[names[0]], shapes[names[1]] = (G * H, layer_in), (G * H, out)
                if self.bias:
                    names += [f"bias_ih{sfx}", f"bias_hh{sfx}"]
                    shapes[names[2]] = shapes[names[3]] = (G * H,)
                else:
                    names += [None, None]
                if mode == "LSTM":
                    if self.proj_size:
                        names.append(f"weight_hr{sfx}")
                        shapes[names[4]] = (self.proj_size, H)
                    else:
                        names.append(None)
                    if self.peepholes:
                        names.append(f"weight_peephole{sfx}")
                        shapes[names[5]] = (3, H)
                    else:
                        names.append(None)
                self._weight_names.append(names)
        self._init_parameters(shapes, H)

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    @property
    def all_weights(self):
        """PyTorch's ``all_weights``: for each layer and direction (layer 0, its reverse, layer
        1, ...), a list of its live parameter arrays in PyTorch's order, ``weight_ih``,
        ``weight_hh``, ``bias_ih``, ``bias_hh`` (with ``bias``), ``weight_hr`` (with
        ``proj_size``), then fastrnn's ``weight_peephole`` (with ``peepholes``)."""
        return [[self._params[n] for n in names if n is not None] for names in self._weight_names]

    def flatten_parameters(self):
        """PyTorch's ``flatten_parameters()``, which its code calls before a forward (cuDNN
        wants the weights in one block): nothing to do here, since fastrnn's kernels lay the
        weights out as they read them."""

    def _state_sizes(self):
        """Sizes of the states: (h,) or, for LSTM, (h, c)."""
        if self.mode == "LSTM":
            return (self.proj_size or self.hidden_size, self.hidden_size)
        return (self.hidden_size,)

    def _weights(self):
        """The kernels' weight tuples, one per layer and direction: made once, as the parameter
        arrays are never replaced (load_state_dict and the optimizers write into them)."""
        weights = self.__dict__.get("_weight_tuples")
        if weights is None:
            weights = self._weight_tuples = [
                tuple(None if n is None else self._params[n] for n in names)
                for names in self._weight_names]
        return weights

    def _grad_buffers(self):
        """The gradient buffers the kernels add into, aligned with :meth:`_weights`."""
        return [tuple(None if n is None else self.grads[n] for n in names)
                for names in self._weight_names]

    def get_config(self):
        config = dict(input_size=self.input_size, hidden_size=self.hidden_size,
                      num_layers=self.num_layers, bias=self.bias, batch_first=self.batch_first,
                      dropout=self.dropout, bidirectional=self.bidirectional,
                      dtype=self._dtype.name, seed=self._config_seed())
        if self.mode == "LSTM":
            config["proj_size"] = self.proj_size
        if self.mode.startswith("RNN"):
            config["nonlinearity"] = self.nonlinearity
        if self.reverse:
            config["reverse"] = True
        if self.peepholes:
            config["peepholes"] = True
        if self.activations is not None:
            config["activations"] = to_config(self.activations)
        config.update(self._options)
        return config

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        for name, default in [("num_layers", 1), ("bias", True), ("batch_first", False),
                              ("dropout", 0.0), ("bidirectional", False), ("proj_size", 0)]:
            if getattr(self, name) != default:
                s += f", {name}={getattr(self, name)}"
        if self.reverse:
            s += ", reverse=True"
        if self.peepholes:
            s += ", peepholes=True"
        if self.mode == "RNN_RELU":
            s += ", nonlinearity='relu'"
        for name, value in self._options.items():
            s += f", {name}={value!r}"
        if self.activations is not None:
            s += f", activations={self.activations!r}"
        if self._dtype != np.float32:
            s += f", dtype={self._dtype.name}"
        return s

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"

    # -- inputs ---------------------------------------------------------------------
    def _states(self, name, value, batch, unbatched, what):
        """Check a tuple of states (``hx`` or ``dhx``) and return them as (L*D, B, H) arrays."""
        spec = self.__dict__.get("_state_spec")   # (sizes, L*D): fixed by the constructor
        if spec is None:
            spec = self._state_spec = (self._state_sizes(), self.num_layers * self.num_directions)
        sizes, LD = spec
        if not unbatched:   # arrays as the kernels take them: no conversion, no message built
            values = value if self.mode == "LSTM" and isinstance(value, (tuple, list)) else (value,)
            if len(values) == len(sizes):
                for v, size in zip(values, sizes):
                    if not (type(v) is np.ndarray and v.dtype == self._dtype
                            and v.shape == (LD, batch, size) and v.flags.c_contiguous):
                        break
                else:
                    return tuple(values)
        labels = ("h_0", "c_0") if what == "hx" else ("dh_n", "dc_n")
        if self.mode == "LSTM":
            if not isinstance(value, (tuple, list)) or len(value) != 2:
                raise TypeError(f"{name} must be a tuple ({labels[0]}, {labels[1]}) for LSTM, "
                                f"but got {type(value).__name__}"
                                + (f" of length {len(value)}" if isinstance(value, (tuple, list)) else ""))
            parts = [(f"{name}[{i}] ({labels[i]})", v) for i, v in enumerate(value)]
        else:
            parts = [(f"{name} ({labels[0]})", value)]
        states = []
        for (label, v), size in zip(parts, sizes):
            arr = _checks.as_float_array(label, v, self._dtype)
            if unbatched:
                if arr.ndim == 1 and LD == 1:
                    arr = arr[None]
                _checks.check_shape(label + " for unbatched input", arr, (LD, size))
                arr = arr[:, None, :]
            else:
                _checks.check_shape(label, arr, (LD, batch, size))
            states.append(np.ascontiguousarray(arr))
        return tuple(states)

    def _as_sequence(self, name, value, unbatched, shape=None):
        """Check ``x`` or ``dout`` and return it time-major, batched, C-contiguous."""
        arr = _checks.as_float_array(name, value, self._dtype)
        if shape is not None:
            _checks.check_shape(name, arr, shape)
        if unbatched:
            arr = arr[:, None, :]
        elif self.batch_first:
            arr = arr.transpose(1, 0, 2)
        return np.ascontiguousarray(arr)

    def _to_user(self, arr, unbatched):
        """A time-major batched array in the layout the user passed."""
        if unbatched:
            return arr[:, 0, :]
        if self.batch_first:
            return np.ascontiguousarray(arr.transpose(1, 0, 2))
        return arr

    # -- forward / backward -------------------------------------------------------------
    def forward(self, x, hx=None, lengths=None):
        """Run the layer over a sequence.

        T steps, B sequences, I = input_size, H = hidden_size, L = num_layers, D = 2 when
        bidirectional (else 1), P = proj_size when set (else H) and Hout = P.

        Parameters
        ----------
        x : (T, B, I) array-like, (B, T, I) with ``batch_first``, or (T, I) unbatched
        hx : initial state, optional (zeros by default)
            ``h0`` (L*D, B, H) for RNN/GRU; ``(h0, c0)`` for LSTM with
            h0 (L*D, B, P) and c0 (L*D, B, H); unbatched: (L*D, H).
        lengths : (B,) array-like of int, optional
            Valid length of each sequence (any order); later steps give a zero
            output and leave the state alone.

        Returns
        -------
        out : (T, B, D*Hout) array (batch-first / unbatched like ``x``)
        h_n : (L*D, B, Hout) array, or ``(h_n, c_n)`` for LSTM
        """
        if type(x).__name__ == "PackedSequence" and hasattr(x, "batch_sizes"):
            raise TypeError("input is a torch PackedSequence: fastrnn takes the padded batch "
                            "and its lengths, x, lengths = torch.nn.utils.rnn."
                            "pad_packed_sequence(packed), then layer(x, lengths=lengths)")
        arr = _checks.as_float_array("input", x, self._dtype)
        if arr.ndim not in (2, 3):
            raise ValueError(f"{type(self).__name__}: Expected input to be 2D (unbatched) or 3D "
                             f"(batched), but got input of shape {arr.shape} ({arr.ndim}D)")
        unbatched = arr.ndim == 2
        if arr.shape[-1] != self.input_size:
            raise ValueError(f"input.size(-1) must be equal to input_size. "
                             f"Expected {self.input_size}, got {arr.shape[-1]}")
        seq = self._as_sequence("input", arr, unbatched)
        T, B = seq.shape[:2]
        if T == 0:
            raise ValueError(f"input must have at least one time step, but got sequence length 0 "
                             f"(input shape {arr.shape})")
        if hx is None:
            LD = self.num_layers * self.num_directions
            states = tuple(np.zeros((LD, B, s), dtype=self._dtype) for s in self._state_sizes())
            hx_ndim = None
        else:
            states = self._states("hx", hx, B, unbatched, "hx")
            hx_ndim = [np.ndim(v) for v in (hx if self.mode == "LSTM" else (hx,))] \
                if unbatched else None   # (only an unbatched call's dh0 follows hx's shape)
        lens = None if lengths is None else _checks.as_lengths(lengths, B, T, unbatched)
        training = self._forward_mode()    # read once
        if training:
            seq = self._private(seq, x)
            lens = None if lens is None else self._private(lens, lengths)
        weights = self._weights()
        if training:   # what the backward reads is the forward's own, not the caller's
            weights = [self._snapshot(w) for w in weights]
        y, hy, cache = functional.sequence_forward(
            self._backend, self.mode, seq, states, weights,
            num_layers=self.num_layers, num_directions=self.num_directions, lengths=lens,
            dropout=self.dropout, training=training, rng=self._rng, reverse=self.reverse,
            options=self._options, direction_options=self._direction_options)
        out = self._to_user(y, unbatched)
        if unbatched:
            hy = tuple([h[:, 0, :] for h in hy])
        self._keep(training, (cache, out.shape, unbatched, hx_ndim, tuple(h.shape for h in hy)))
        return (out, hy) if self.mode == "LSTM" else (out, hy[0])

    def backward(self, dout, dhx=None, return_step_norms=False, input_grad=True):
        """Backpropagation through time for the last training-mode forward.

        Parameter gradients are added to :attr:`grads` (call :meth:`zero_grad`
        to reset them).

        Parameters
        ----------
        dout : array-like shaped like the forward's ``out``
            Gradient of the loss with respect to the output.
        dhx : gradient of the final state, optional (zeros by default)
            ``dh_n`` for RNN/GRU, ``(dh_n, dc_n)`` for LSTM, shaped like the
            forward's ``h_n`` / ``(h_n, c_n)``.
        return_step_norms : bool
            Also return ``||dJ/dh_t||`` for every layer and direction, step and
            sequence: a (L*D, T, B) array ((L*D, T) unbatched), at no cost when False.
        input_grad : bool
            False skips the gradient of the input (``dx`` is then None), as PyTorch does
            for an input that does not require grad: a layer that reads the data needs
            none, and it is one of the three products after the time loop.

        Returns
        -------
        dx : array shaped like the forward's input, or None without ``input_grad``
        dh0 : shaped like ``hx`` (or ``h_n``); ``(dh0, dc0)`` for LSTM
        step_norms : only with ``return_step_norms``
        """
        return_step_norms = _checks.check_bool("return_step_norms", return_step_norms)
        input_grad = _checks.check_bool("input_grad", input_grad)
        cache, out_shape, unbatched, hx_ndim, hy_shapes = self._take_cache()
        try:
            dy = self._as_sequence("dout", dout, unbatched, out_shape)
            B = dy.shape[1]
            if dhx is None:
                dstates = tuple(np.zeros((s[0], B, s[-1]), dtype=self._dtype) for s in hy_shapes)
            else:
                dstates = self._states("dhx", dhx, B, unbatched, "dhx")
        except (TypeError, ValueError):
            self._cache = (cache, out_shape, unbatched, hx_ndim, hy_shapes)  # a bad call does not consume it
            raise
        dx, dh0, norms = functional.sequence_backward(cache, dy, dstates, self._grad_buffers(),
                                                      return_step_norms, input_grad)
        if dx is not None:
            dx = self._to_user(dx, unbatched)
        if unbatched:
            dh0 = tuple(d[:, 0, :] for d in dh0)
            if hx_ndim is not None:
                dh0 = tuple(d[0] if nd == 1 else d for d, nd in zip(dh0, hx_ndim))
        dh0 = dh0 if self.mode == "LSTM" else dh0[0]
        if return_step_norms:
            return dx, dh0, (norms[:, :, 0] if unbatched else norms)
        return dx, dh0


def _not_a_dtype(proj_size, expected):
    """A dtype where proj_size goes (fastrnn's positional order before it took PyTorch's)."""
    if _checks.names_dtype(proj_size):
        raise ValueError(f"proj_size must be {expected}, but got {_checks.short(proj_size)}, "
                         f"a dtype (PyTorch's arguments go ..., bidirectional, proj_size, "
                         f"device, dtype: give dtype= by keyword)")


def _no_projection(kind, proj_size):
    """PyTorch's RNN and GRU take proj_size, and refuse all but 0: so do these."""
    _not_a_dtype(proj_size, f"0 for {kind}")
    if _checks.check_int("proj_size", proj_size, minimum=0):
        raise ValueError(f"proj_size argument is only supported for LSTM, not RNN or GRU "
                         f"({kind} got proj_size={proj_size})")


class RNN(RNNBase):
    """Elman RNN, ``h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)`` (or relu).

    Same arguments as ``torch.nn.RNN``, plus ``dtype``, ``backend``, ``seed``, ``reverse``,
    ``clip`` and ``activations`` (one entry; see :class:`RNNBase`).
    Parameters are named ``weight_ih_l{k}[_reverse]`` (H, I or D*H),
    ``weight_hh_l{k}[_reverse]`` (H, H), ``bias_ih_l{k}[_reverse]`` and
    ``bias_hh_l{k}[_reverse]`` (H,).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, proj_size=0, device=None,
                 dtype=np.float32, backend="auto", seed=None, reverse=False, clip=None,
                 activations=None):
        _no_projection("RNN", proj_size)
        self.nonlinearity = _checks.check_choice("nonlinearity", nonlinearity, ("tanh", "relu"))
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size,
                         hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         0, device, dtype, backend, seed, reverse, clip=clip,
                         activations=activations)


class LSTM(RNNBase):
    """Long short-term memory, gate order i, f, g, o, optional projection (LSTMP).

    Same arguments as ``torch.nn.LSTM``, plus ``dtype``, ``backend``, ``seed``, ``reverse``,
    ``clip``, ``activations`` (three entries; see :class:`RNNBase`), ``peepholes`` and
    ``input_forget``.
    ``weight_ih_l{k}`` is (4H, I), ``weight_hh_l{k}`` (4H, P), biases (4H,) and,
    with ``proj_size=P > 0``, ``weight_hr_l{k}`` (P, H).  Returns
    ``out, (h_n, c_n)``; :meth:`backward` takes ``dhx=(dh_n, dc_n)`` and returns
    ``dx, (dh0, dc0)``.

    ``peepholes=True`` (not in PyTorch; ONNX's ``P``, Gers & Schmidhuber 2000) adds
    ``weight_peephole_l{k}`` (3, H), rows i, f, o: ``i = sigmoid(... + p_i * c_{t-1})``,
    ``f = sigmoid(... + p_f * c_{t-1})``, ``o = sigmoid(... + p_o * c_t)``.

    ``input_forget=True`` (not in PyTorch; ONNX's ``input_forget=1``) couples the input and
    forget gates: ``f = 1 - i``.  The forget gate's rows of the weights and biases are then
    unused (their gradients are zero); the parameters keep their shapes.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=np.float32,
                 backend="auto", seed=None, reverse=False, peepholes=False, input_forget=False,
                 clip=None, activations=None):
        self.input_forget = _checks.check_bool("input_forget", input_forget)
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, proj_size, device, dtype, backend, seed, reverse,
                         options={"input_forget": True} if self.input_forget else None,
                         peepholes=peepholes, clip=clip, activations=activations)


class GRU(RNNBase):
    """Gated recurrent unit, gate order r, z, n.

    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``, ``h' = (1 - z) * n + z * h``.
    Same arguments as ``torch.nn.GRU``, plus ``dtype``, ``backend``, ``seed``, ``reverse``,
    ``clip``, ``activations`` (two entries; see :class:`RNNBase`) and ``reset_after``.

    ``reset_after=False`` (not in PyTorch) applies the reset gate to the state before its
    product, ``n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)``: the GRU of Cho et al. (2014),
    ONNX's ``linear_before_reset=0`` and Keras's ``reset_after=False``.  The parameters keep
    their names and shapes.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, device=None, dtype=np.float32,
                 backend="auto", seed=None, reverse=False, reset_after=True, clip=None,
                 activations=None):
        _no_projection("GRU", proj_size)
        self.reset_after = _checks.check_bool("reset_after", reset_after)
        super().__init__("GRU", input_size, hidden_size, num_layers, bias, batch_first,
                         dropout, bidirectional, 0, device, dtype, backend, seed, reverse,
                         options=None if self.reset_after else {"reset_after": False}, clip=clip,
                         activations=activations)


for _cls, _cell in ((RNN, "rnn"), (LSTM, "lstm"), (GRU, "gru")):
    _docs.document(_cls, _cell, layer=True)
