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
    data = np.asarray(data)
    if data.ndim == 0 or len(data) < B:
        raise ValueError(f"cannot split a sequence of length {np.shape(data)[:1]} "
                         f"into {B} streams")
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
    >>> tb = TBPTT(lstm, k1=50)
    >>> def loss_and_grad(out, t0, t1):                 # out: (t1 - t0, B, H)
    ...     logits = head(out)
    ...     loss, dlogits = cross_entropy(logits, targets[t0:t1])
    ...     return loss, head.backward(dlogits)
    >>> def update(chunk):
    ...     clip_grad_norm(opt.grads, 1.0); opt.step(); opt.zero_grad()
    >>> losses = tb.run(x, loss_and_grad, update)       # x: (T, B, I), T >> 50
    """

    def __init__(self, rnn, k1, k2=None):
        if not (hasattr(rnn, "num_layers") and hasattr(rnn, "bidirectional")
                and callable(getattr(rnn, "backward", None))):
            raise TypeError(f"rnn must be a fastrnn.RNN, LSTM or GRU layer, "
                            f"but got {type(rnn).__name__}")
        if rnn.bidirectional:
            raise ValueError("truncated BPTT needs a unidirectional layer: the reverse "
                             "direction of a bidirectional one would need the future")
        self.rnn = rnn
        self.k1 = _checks.check_int("k1", k1)
        self.k2 = self.k1 if k2 is None else _checks.check_int("k2", k2)
        windows(1, self.k1, self.k2)     # checks k2 >= k1
        self.state = None

    @property
    def _is_lstm(self):
        return getattr(self.rnn, "mode", "") == "LSTM"

    def reset(self, streams=None):
        """Forget the carried state: all of it (``streams=None``), or that of some streams.

        Parameters
        ----------
        streams : int, slice, bool mask or index array over the batch, optional
            Those streams restart from zeros (e.g. where a new document begins).
        """
        if streams is None or self.state is None:
            self.state = None
            return
        for s in (self.state if self._is_lstm else (self.state,)):
            s[:, streams] = 0

    def _time_axis(self):
        return 1 if self.rnn.batch_first else 0

    def _slice(self, x, a, b):
        return x[:, a:b] if self.rnn.batch_first else x[a:b]

    def run(self, x, loss_and_grad, after_backward=None, return_step_norms=False):
        """Truncated BPTT over the whole of ``x``, starting from :attr:`state`.

        For each chunk: forward over its backward window from the state
        stored at the window's start, ``loss_and_grad`` on the outputs of the
        chunk, backward over the window with no gradient entering its final
        state, then ``after_backward`` (where the caller clips gradients and
        steps the optimizer).  The layer's gradients accumulate in its
        ``grads`` and are not zeroed here.  Puts the layer in training mode.

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
        shape = getattr(x, "shape", None)
        if shape is None or len(shape) != 3:
            raise ValueError(f"x must be a 3-D sequence ((T, B, I), or (B, T, I) with "
                             f"batch_first), but got shape {shape}")
        T = shape[self._time_axis()]
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
            loss, dpart = loss_and_grad(part, t0, t1)
            dpart = np.asarray(dpart)
            if dpart.shape != part.shape:
                raise ValueError(f"loss_and_grad must return dout shaped like out "
                                 f"{part.shape}, but got {dpart.shape}")
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
            if after_backward is not None and after_backward(
                    Chunk(i, w0, t0, t1, loss, norms)):
                break
        return losses
