"""Truncated backpropagation through time over long sequences and many parallel streams.

Full BPTT over a sequence of length T stores T steps and gives one update per
sequence.  Truncated BPTT (Williams & Peng 1990, "BPTT(k2; k1)") walks
through the sequence in chunks of ``k1`` steps; after each chunk it
backpropagates ``k2 >= k1`` steps into the past (no further), updates the
weights, and carries the hidden (and cell) state forward into the next chunk
*as a constant*: no gradient flows back across the truncation point.

With ``k2 == k1`` (the common case, and the default) each chunk is run once.
With ``k2 > k1`` the backward window of ``k2`` steps overlaps the previous
chunks, so it is run again from the state stored at its start (cost about
``k2 / k1`` forwards per step); the losses are still only those of the last
``k1`` steps.

A long 1-D stream is usually cut into ``B`` contiguous streams that are
trained side by side (:func:`split_streams`), the batch axis of the layer.
"""

import numbers
from collections import namedtuple

import numpy as np

from .. import _checks
from ..layers import RNNBase

__all__ = ["split_streams", "windows", "Chunk", "TBPTT"]


def split_streams(data, num_streams):
    """Cut one long sequence into ``num_streams`` contiguous streams side by side.

    Stream ``b`` is ``data[b * L:(b + 1) * L]`` with ``L = len(data) // num_streams``;
    the last ``len(data) % num_streams`` items are dropped.

    Parameters
    ----------
    data : (N, ...) array
    num_streams : int
        B, at most N.

    Returns
    -------
    (L, B, ...) array, time-major: ``out[t, b] = data[b * L + t]``
    """
    B = _checks.check_int("num_streams", num_streams)
    data = _checks.as_array("data", data, "a sequence (an array-like of N items)")
    if data.ndim == 0 or len(data) < B:
        raise ValueError(f"data must be a sequence of at least num_streams={B} items to split "
                         f"into {B} streams, but got shape {data.shape}")
    L = len(data) // B
    out = data[:L * B].reshape((B, L) + data.shape[1:])
    return np.ascontiguousarray(np.swapaxes(out, 0, 1))


def windows(T, k1, k2=None):
    """The windows BPTT(k2; k1) visits over a sequence of length T.

    Parameters
    ----------
    T : int
        Sequence length.
    k1 : int
        Steps per chunk (between weight updates); the last chunk may be shorter.
    k2 : int, optional
        Steps backpropagated, ``>= k1``; ``k1`` by default.

    Returns
    -------
    list of (w0, t0, t1)
        Chunk ``[t0, t1)`` carries the loss; the backward runs over ``[w0, t1)``,
        ``w0 = max(0, t0 - (k2 - k1))``: ``k2`` steps for a full chunk, and
        ``w0 == t0`` when ``k2 == k1``.
    """
    T = _checks.check_int("T", T)
    k1 = _checks.check_int("k1", k1)
    k2 = k1 if k2 is None else _checks.check_int("k2", k2)
    if k2 < k1:
        raise ValueError(f"k2 (steps backpropagated, {k2}) must be >= k1 (steps between "
                         f"updates, {k1}): every step's loss is backpropagated at least "
                         f"to the start of its chunk")
    out = []
    for t0 in range(0, T, k1):
        t1 = min(t0 + k1, T)
        out.append((max(0, t0 - (k2 - k1)), t0, t1))
    return out


#: What :meth:`TBPTT.run` tells the callback after each chunk's backward.
Chunk = namedtuple("Chunk", "index w0 t0 t1 loss step_norms")
Chunk.__doc__ = """One chunk of truncated BPTT, after its backward.

index : int, position of the chunk in this run
w0, t0, t1 : int, backward window ``[w0, t1)`` and loss chunk ``[t0, t1)``
loss : whatever ``loss_and_grad`` returned as the loss
step_norms : (L*D, t1 - w0, B) array of ||dJ/dh_t|| over the window, or None
"""


def _loss_and_dout(result, shape):
    """The ``(loss, dout)`` a ``loss_and_grad`` callback returned, dout as a float array of
    ``shape``, checked (the message names the callback)."""
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise TypeError(f"loss_and_grad must return a pair (loss, dout), but returned "
                        f"{type(result).__name__} ({_checks.short(result)})")
    loss, dout = result
    what = "the dout returned by loss_and_grad"
    dout = _checks.as_array(what, dout, "a floating-point array-like")
    if dout.dtype.kind != "f":
        raise TypeError(f"{what} must be a floating-point array, but got dtype {dout.dtype}")
    if dout.shape != shape:
        raise ValueError(f"loss_and_grad must return dout shaped like out {shape}, "
                         f"but got {dout.shape}")
    return loss, dout


def _streams(name, streams, batch):
    """``streams`` (an int, a slice, a bool mask or an array of indices over a batch of ``batch``
    sequences; ``batch`` None when not known yet) checked, as an index of the batch axis."""
    if isinstance(streams, slice):
        for part in ("start", "stop", "step"):
            value = getattr(streams, part)
            if value is not None:
                _checks.check_int(f"{name}.{part}", value, minimum=-(2**63 - 1), maximum=2**63 - 1)
        if streams.step == 0:
            raise ValueError(f"{name}.step must not be zero")
        return streams
    top = _checks.MAX_SIZE if batch is None else batch - 1
    kinds = "an int, a slice, a bool mask or an array of stream indices"
    if isinstance(streams, (bool, np.bool_)):
        raise TypeError(f"{name} must be {kinds}, but got bool ({streams})")
    if isinstance(streams, numbers.Integral):
        return _checks.check_int(name, streams, minimum=-(top + 1), maximum=top)
    index = _checks.as_array(name, streams, kinds)
    if index.ndim == 0:
        if index.dtype.kind not in "iu":
            raise TypeError(f"{name} must be {kinds}, but got {type(streams).__name__} "
                            f"({_checks.short(streams)})")
        return _checks.check_int(name, index.item(), minimum=-(top + 1), maximum=top)
    if index.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (over the batch), but got shape "
                         f"{index.shape}")
    if index.size == 0 and not isinstance(streams, np.ndarray):   # [] is float64 to NumPy
        return index.astype(np.intp)
    if index.dtype.kind == "b":
        if batch is not None and index.shape != (batch,):
            raise ValueError(f"{name} as a bool mask must have one entry per stream ({batch}), "
                             f"but got shape {index.shape}")
        return index
    if index.dtype.kind not in "iu":
        raise TypeError(f"{name} must be {kinds}, but got an array of dtype {index.dtype}")
    bad = index[(index < -(top + 1)) | (index > top)]
    if bad.size:
        raise ValueError(f"{name} must index streams in [-{top + 1}, {top + 1}), but got "
                         f"{_checks.short(bad.tolist())}")
    return index


class TBPTT:
    """Stateful truncated BPTT of one recurrent layer (``fastrnn.RNN/LSTM/GRU``).

    Parameters
    ----------
    rnn : fastrnn.RNN, LSTM or GRU
        Unidirectional (a reverse direction would need the future).  Any
        number of layers, ``proj_size``, ``batch_first``.
    k1 : int
        Chunk length: steps between weight updates.
    k2 : int, optional
        Backpropagation depth, ``>= k1`` (default ``k1``).

    Attributes
    ----------
    state : None, h (L, B, H), or (h, c) for LSTM
        The carried state: where the next :meth:`run` starts (None = zeros).
        It is a plain array, never a path for gradients.

    Examples
    --------
    >>> import numpy as np, fastrnn
    >>> from fastrnn.train import Adam, Linear, TBPTT, clip_grad_norm, cross_entropy
    >>> lstm, head = fastrnn.LSTM(8, 32, seed=0), Linear(32, 8, seed=1)
    >>> opt = Adam({"lstm": lstm, "head": head}, lr=1e-3)
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((200, 4, 8)).astype(np.float32)   # (T, B, I), T >> k1
    >>> targets = rng.integers(0, 8, size=(200, 4))                # (T, B) class ids
    >>> tb = TBPTT(lstm, k1=50)
    >>> def loss_and_grad(out, t0, t1):                 # out: (t1 - t0, B, H)
    ...     logits = head(out)
    ...     loss, dlogits = cross_entropy(logits, targets[t0:t1])
    ...     return loss, head.backward(dlogits)
    >>> def update(chunk):
    ...     clip_grad_norm(opt.grads, 1.0); opt.step(); opt.zero_grad()
    >>> losses = tb.run(x, loss_and_grad, update)       # one loss per chunk of 50 steps
    >>> len(losses)
    4
    """

    def __init__(self, rnn, k1, k2=None):
        if isinstance(rnn, type) or not (
                hasattr(rnn, "num_layers") and hasattr(rnn, "bidirectional")
                and callable(getattr(rnn, "backward", None))):
            raise TypeError(f"rnn must be a fastrnn.RNN, LSTM or GRU layer, "
                            f"but got {type(rnn).__name__}")
        if rnn.bidirectional:
            raise ValueError("rnn must be a unidirectional layer: truncated BPTT cannot run the "
                             "reverse direction of a bidirectional one (it would need the "
                             "future)")
        if getattr(rnn, "reverse", False):
            raise ValueError("rnn must run forwards in time: truncated BPTT carries the state "
                             "from one chunk to the next, and a reverse=True layer starts each "
                             "sequence at its end")
        self.rnn = rnn
        self.k1 = _checks.check_int("k1", k1)
        self.k2 = self.k1 if k2 is None else _checks.check_int("k2", k2)
        windows(1, self.k1, self.k2)     # checks k2 >= k1
        self.state = None
        self._streams_reset = False   # reset(streams) was called (read by run after each chunk)

    @property
    def _is_lstm(self):
        return getattr(self.rnn, "mode", "") == "LSTM"

    def reset(self, streams=None):
        """Forget the carried state: all of it (``streams=None``), or that of some streams.

        Between runs, or from :meth:`run`'s ``after_backward``, where the streams restart
        from zeros at the end of the chunk just done (e.g. where a new document begins).
        With ``k2 > k1`` the next window would start inside that chunk, so after a reset of
        every stream it starts at the chunk's end instead; a reset of some streams only is
        refused there (one forward cannot restart some streams midway).

        Parameters
        ----------
        streams : int, slice, bool mask or index array over the batch, optional
            Those streams restart from zeros.
        """
        if streams is None:
            self.state = None
            return
        states = self.state if self._is_lstm else (self.state,)
        index = _streams("streams", streams, None if self.state is None else states[0].shape[1])
        if self.state is None:
            return
        for s in states:
            s[:, index] = 0
        self._streams_reset = True

    def _time_axis(self):
        return 1 if self.rnn.batch_first else 0

    def _slice(self, x, a, b):
        return x[:, a:b] if self.rnn.batch_first else x[a:b]

    def _check_state(self, batch):
        """The carried (or user-set) ``state``: the layer's, for a batch of ``batch``."""
        state = self.state
        what = ("the layer's (h, c) for LSTM, each (num_layers * num_directions, B, H)"
                if self._is_lstm else "the layer's h, (num_layers * num_directions, B, H)")
        if self._is_lstm != isinstance(state, (tuple, list)) or (
                self._is_lstm and len(state) != 2):
            raise TypeError(f"state must be None or {what}, but got {type(state).__name__}"
                            + (f" of length {len(state)}" if isinstance(state, (tuple, list))
                               else ""))
        shapes = [np.shape(s) for s in (state if self._is_lstm else (state,))]
        if any(len(s) != 3 for s in shapes):
            raise ValueError(f"state must be None or {what}, but got shape(s) {shapes}")
        if shapes[0][1] != batch:
            raise ValueError(f"x has a batch of {batch} sequences, but the state carried "
                             f"from the last run has {shapes[0][1]}: call reset() to start "
                             f"from zeros")
        self.rnn._states("state", state, batch, False, "hx")    # the sizes and dtypes

    def run(self, x, loss_and_grad, after_backward=None, return_step_norms=False):
        """Truncated BPTT over the whole of ``x``, starting from :attr:`state`.

        For each chunk: forward over its backward window from the state
        stored at the window's start, ``loss_and_grad`` on the outputs of the
        chunk, backward over the window with no gradient entering its final
        state, then ``after_backward`` (where the caller clips gradients and
        steps the optimizer).  The layer's gradients accumulate in its
        ``grads`` and are not zeroed here.  Puts the layer in training mode.

        The callback may :meth:`reset` streams, or set :attr:`state`: the next chunk starts
        from that state.

        Parameters
        ----------
        x : (T, B, I) array ((B, T, I) for ``batch_first``)
            Or any object with ``.shape`` and slicing along the time axis
            returning such arrays (e.g. a lazy one-hot view of token ids).
        loss_and_grad : callable ``(out, t0, t1) -> (loss, dout)``
            ``out`` is the layer's output over steps ``[t0, t1)``, (t1 - t0, B, H)
            (batch-first if the layer is); ``dout`` is dloss/dout, same shape.
        after_backward : callable ``(chunk: Chunk) -> bool``, optional
            Called after each chunk's backward; a true return value stops the
            run after that chunk.
        return_step_norms : bool
            Give each :class:`Chunk` the per-step gradient norms of its window.

        Returns
        -------
        list
            The loss of every chunk run, in order.
        """
        if not hasattr(x, "shape") and isinstance(x, (list, tuple)):
            x = _checks.as_array("x", x, "a 3-D array-like")   # nested lists, as the layers
        try:
            shape = tuple(getattr(x, "shape", None))
        except TypeError:    # no shape, or not a sequence
            shape = None
        layout = "(B, T, I) with batch_first" if self.rnn.batch_first else "(T, B, I)"
        if shape is None or len(shape) != 3:
            raise ValueError(f"x must be a 3-D sequence ((T, B, I), or (B, T, I) with "
                             f"batch_first), but got shape {_checks.short(shape)}")
        T = shape[self._time_axis()]
        if shape[2] != self.rnn.input_size or not T >= 1:
            raise ValueError(f"x must be shaped {layout} with I = input_size = "
                             f"{self.rnn.input_size} and at least one step, but got shape {shape}")
        try:
            kind = np.dtype(getattr(x, "dtype", np.float32)).kind
        except TypeError:   # a dtype of another library (torch): the layer converts it
            kind = "f"
        if kind != "f":
            raise TypeError(f"x must hold floating-point values, but got dtype {x.dtype}")
        if not callable(loss_and_grad):
            raise TypeError(f"loss_and_grad must be a callable (out, t0, t1) -> (loss, dout), "
                            f"but got {type(loss_and_grad).__name__}")
        if after_backward is not None and not callable(after_backward):
            raise TypeError(f"after_backward must be None or a callable (chunk) -> bool, "
                            f"but got {type(after_backward).__name__}")
        return_step_norms = _checks.check_bool("return_step_norms", return_step_norms)
        if self.state is not None:
            self._check_state(shape[1 - self._time_axis()])
        self.rnn.train()
        plan = windows(T, self.k1, self.k2)
        start_state = self.state      # state at plan[0].w0 == 0
        losses = []
        for i, (w0, t0, t1) in enumerate(plan):
            next_w0 = plan[i + 1][0] if i + 1 < len(plan) else t1
            next_state = None
            if w0 < next_w0 < t1:
                # the next window starts inside this one: get its start state first
                # (an eval-mode forward keeps no cache, so it comes before the training one)
                self.rnn.eval()
                try:
                    _, next_state = self.rnn.forward(self._slice(x, w0, next_w0), start_state)
                finally:
                    self.rnn.train()
            self.rnn.train()          # (the callback may have used the layer in eval mode)
            out, hy = self.rnn.forward(self._slice(x, w0, t1), start_state)
            if next_w0 == t1:
                next_state = hy
            elif next_w0 == w0:
                next_state = start_state
            part = self._slice(out, t0 - w0, t1 - w0)
            loss, dpart = _loss_and_dout(loss_and_grad(part, t0, t1), part.shape)
            if w0 < t0:
                dout = np.zeros_like(out)
                self._slice(dout, t0 - w0, t1 - w0)[...] = dpart
            else:
                dout = dpart
            # the input's gradient is not used here: fastrnn's layers skip it
            extra = {"input_grad": False} if isinstance(self.rnn, RNNBase) else {}
            result = self.rnn.backward(dout, None, return_step_norms=return_step_norms, **extra)
            norms = result[2] if return_step_norms else None
            losses.append(loss)
            start_state = next_state
            self.state = hy
            self._streams_reset = False
            if after_backward is not None and after_backward(Chunk(i, w0, t0, t1, loss, norms)):
                break                   # (a reset with it is the next run's start)
            if self.state is not hy or self._streams_reset:   # the callback reset the state
                if next_w0 == t1:
                    start_state = self.state
                elif self.state is not hy:
                    # every stream restarts at t1: no window reaches back before it
                    plan[i + 1:] = [(max(w, t1), a, b) for w, a, b in plan[i + 1:]]
                    start_state = self.state
                else:
                    raise ValueError(
                        f"reset(streams=...) from after_backward needs k2 == k1 (here k1 = "
                        f"{self.k1}, k2 = {self.k2}): the next window starts inside the chunk "
                        f"just done, and one forward cannot restart some streams at its end; "
                        f"reset every stream (reset()), or end the run there (return True) "
                        f"and reset between runs")
        return losses
