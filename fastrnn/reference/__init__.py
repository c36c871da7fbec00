"""Pure-NumPy reference kernels: the oracle for tests and the baseline for speed.

One module per cell type, each with ``*_forward`` and ``*_backward`` side by
side (plus ``*_step_forward`` / ``*_step_backward`` for the one-step cells).
The code follows the textbook notation of a recurrent layer::

    a_t = W h_{t-1} + U x_t + b         (pre-activation)
    h_t = f(a_t)                         (new hidden state)

and maps onto PyTorch's parameter names once, here:

==========  =================  ==============================================
textbook    PyTorch            shape
==========  =================  ==============================================
``U``       ``weight_ih``      (G*H, I)   input-to-hidden, G gates stacked
``W``       ``weight_hh``      (G*H, P)   hidden-to-hidden (P = H, or proj_size)
``b``       ``bias_ih + bias_hh``  (G*H,) two biases, as PyTorch keeps them
``V_r``     ``weight_hr``      (P, H)     LSTM projection (proj_size > 0)
``p``       ``weight_peephole``  (3, H)   LSTM peepholes i, f, o (peepholes=True)
==========  =================  ==============================================

G is 1 for RNN, 4 for LSTM (gates i, f, g, o) and 3 for GRU (gates r, z, n).

The kernel contract shared by every backend (``fastrnn.backends``):

``<cell>_forward(x, hx, weights, lengths=None, training=True, **opts)``
    x: (T, B, I) C-contiguous, float32 or float64 in the machine's byte order; hx:
    tuple of initial states, each (B, H) or (B, P); weights: ``(w_ih, w_hh, b_ih, b_hh)``
    (LSTM adds ``w_hr`` and ``w_ph``), a bias, ``w_hr`` or ``w_ph`` may be ``None``; every
    array of x's dtype (another is refused by name: a kernel computes in x's dtype and
    returns arrays of it); lengths: (B,) integers in [0, T] or ``None``; ``opts``: the cell's
    options, ``nonlinearity`` ("tanh" or "relu") of the RNN, ``reset_after`` (bool) of the GRU,
    ``input_forget`` (bool) of the LSTM, ``clip`` (None or a positive number) and
    ``activations`` (None, or one activation per slot of the cell:
    :mod:`fastrnn.activations`) of every cell, which the saved record carries to the
    backward.  Steps
    ``t >= lengths[b]`` leave the state of sequence ``b`` untouched and give a
    zero output.  Returns ``y (T, B, Hout)``, ``hy`` (tuple like ``hx``) and
    ``saved``: one record (:class:`~fastrnn.reference._common.Saved` here and in
    numba, the extension's own ``Saved`` in cython) of what the backward needs,
    its arrays by name (``None`` when ``training`` is False).

``<cell>_backward(dy, dhy, saved, dweights, step_norms=None, input_grad=True)``
    dy: (T, B, Hout); dhy: tuple of gradients of the final states; dweights:
    the caller's gradient buffers, a tuple aligned with ``weights`` (writable,
    C-contiguous, the weight's shape and dtype; ``None`` where the weight is
    ``None``): the backward *adds* each weight's gradient into its buffer
    (``+=``, BLAS beta = 1), as haste and llm.c do, so a training loop keeps one
    set of buffers and no gradient is allocated per call.  Returns ``dx (T, B,
    I)`` (``None``, and not computed, when ``input_grad`` is False) and ``dhx``
    (tuple).  When ``step_norms`` is a (T, B) array it receives ``||dJ/dh_t||``
    for every step (0 past a sequence's length).  The compiled backends write
    the gradients over the forward's saved gates, so a record serves one
    backward: a second one raises (the reference, which keeps its record,
    allows it; the layers and cells take a record once whatever the backend).

``<cell>_step_forward(x, hx, weights, training=True, **opts)`` and ``<cell>_step_backward(dhy, saved, dweights)``
    One step (what the cells run): x (B, I); return ``(hy, saved)`` and
    ``(dx (B, I), dhx)``, the step backward adding into ``dweights`` likewise.
"""

from .rnn import rnn_forward, rnn_backward, rnn_step_forward, rnn_step_backward
from .lstm import lstm_forward, lstm_backward, lstm_step_forward, lstm_step_backward
from .gru import gru_forward, gru_backward, gru_step_forward, gru_step_backward

__all__ = [
    "rnn_forward", "rnn_backward", "rnn_step_forward", "rnn_step_backward",
    "lstm_forward", "lstm_backward", "lstm_step_forward", "lstm_step_backward",
    "gru_forward", "gru_backward", "gru_step_forward", "gru_step_backward",
]
