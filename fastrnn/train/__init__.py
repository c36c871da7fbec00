"""Training toolkit: embeddings, output head, losses, optimizers, gradient clipping,
truncated BPTT, greedy and beam-search decoding.

Everything works on NumPy arrays with explicit backward passes, on top of
the recurrent layers of :mod:`fastrnn` (any backend)::

    import fastrnn
    from fastrnn.train import Linear, cross_entropy, Adam, clip_grad_norm

    lstm, head = fastrnn.LSTM(I, H), Linear(H, C)
    opt = Adam({"lstm": lstm, "head": head}, lr=2e-3)
    out, _ = lstm(x)                                  # (T, B, H)
    loss, dlogits = cross_entropy(head(out), y)       # y: (T, B) ints
    lstm.backward(head.backward(dlogits))
    clip_grad_norm(opt.grads, 1.0)
    opt.step(); opt.zero_grad()
"""

from .clip import clip_grad_norm, clip_grad_value, grad_norm
from .decode import beam_search, greedy_search
from .embedding import Embedding
from .heads import Linear
from .losses import cross_entropy, log_softmax, mse_loss, softmax
from .optim import SGD, Adagrad, Adam, AdamW, Optimizer, parameters_and_grads
from .seq2seq import Decoder
from .tbptt import TBPTT, Chunk, split_streams, windows

__all__ = [
    "Embedding", "Linear",
    "cross_entropy", "mse_loss", "log_softmax", "softmax",
    "Optimizer", "SGD", "Adam", "AdamW", "Adagrad", "parameters_and_grads",
    "clip_grad_norm", "clip_grad_value", "grad_norm",
    "TBPTT", "Chunk", "split_streams", "windows",
    "greedy_search", "beam_search", "Decoder",
]
