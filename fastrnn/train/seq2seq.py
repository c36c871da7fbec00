"""A decoder for sequence-to-sequence models: token embedding, a recurrent layer, a dense head.

The encoder is whatever reads the source: a recurrent layer over embedded tokens (its final
state, ``h_n`` or ``(h_n, c_n)``, starts the decoder), or a dense layer over an image.  The
decoder is trained with teacher forcing, the whole shifted target in one call, and its
backward returns the gradient of its initial state, which goes on into the encoder::

    enc_out, state = encoder(src_emb(src), lengths=src_lengths)       # the source read
    logits, _ = decoder(tgt_in, state, lengths=tgt_lengths)         # START + target: (T, B, V)
    loss, dlogits = cross_entropy(logits, tgt_out, ignore_index=PAD)  # target + END
    dstate = decoder.backward(dlogits)                               # into the initial state
    dsrc, _ = encoder.backward(np.zeros_like(enc_out), dstate)        # and on into the encoder
    src_emb.backward(dsrc)

Decoding runs the decoder's layer one step at a time (:meth:`Decoder.step`), through
:func:`fastrnn.train.greedy_search` or :func:`fastrnn.train.beam_search`.
"""

import numpy as np

from .. import _checks
from ..module import evaluating
from .decode import beam_search, greedy_search
from .embedding import Embedding
from .heads import Linear
from .losses import log_softmax

#: ``cell`` -> the recurrent layer's class name in :mod:`fastrnn`
_LAYERS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


class Decoder:
    """Embedding -> recurrent layer -> Linear head over a target vocabulary.

    Parameters
    ----------
    vocab_size : int
        Tokens V of the target vocabulary (the start and end tokens among them).
    embedding_dim : int
    hidden_size : int
    cell : ``"lstm"`` (default), ``"gru"`` or ``"rnn"``
    num_layers : int
    padding_idx : int, optional
        The padding token of the target (its embedding stays zero).
    dtype : np.float32 or np.float64
    seed : None or int
        Seeds the three modules (each its own stream of a SeedSequence).
    backend : str
        The recurrent layer's backend.

    Attributes
    ----------
    embedding : fastrnn.train.Embedding
    rnn : fastrnn.LSTM, GRU or RNN (time-major)
    head : fastrnn.train.Linear
    """

    def __init__(self, vocab_size, embedding_dim, hidden_size, cell="lstm", num_layers=1,
                 padding_idx=None, dtype=np.float32, seed=None, backend="auto"):
        import fastrnn
        cell = _checks.check_choice("cell", cell, tuple(_LAYERS))
        seeds = _checks.seed_sequence("seed", seed).spawn(3)
        streams = [int(s.generate_state(1)[0]) for s in seeds]
        self.cell = cell
        self.embedding = Embedding(vocab_size, embedding_dim, padding_idx=padding_idx,
                                   dtype=dtype, seed=streams[0])
        self.rnn = getattr(fastrnn, _LAYERS[cell])(embedding_dim, hidden_size,
                                                   num_layers=num_layers, dtype=dtype,
                                                   seed=streams[1], backend=backend)
        self.head = Linear(hidden_size, vocab_size, dtype=dtype, seed=streams[2])

    @property
    def modules(self):
        """``{"embedding", "rnn", "head"}``: what an optimizer updates (``Adam(dec.modules)``)."""
        return {"embedding": self.embedding, "rnn": self.rnn, "head": self.head}

    def train(self, mode=True):
        for m in self.modules.values():
            m.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def __call__(self, tokens, hx=None, lengths=None):
        return self.forward(tokens, hx, lengths)

    def forward(self, tokens, hx=None, lengths=None):
        """Logits of every step, the target fed in (teacher forcing).

        Parameters
        ----------
        tokens : (T, B) ints
            The decoder's input: the start token, then the target but its last token.
        hx : initial state of the layer (the encoder's), or None (zeros)
        lengths : (B,) ints, optional

        Returns
        -------
        logits : (T, B, V) array
        hy : the layer's final state
        """
        out, hy = self.rnn(self.embedding(tokens), hx, lengths=lengths)
        return self.head(out), hy

    def backward(self, dlogits, dhy=None):
        """Backward of the last training-mode forward: gradients into the three modules.

        Parameters
        ----------
        dlogits : (T, B, V) array
            Gradient of the loss with respect to the forward's logits.
        dhy : gradient of the final state, optional (zeros by default)
            Shaped like the forward's ``hy`` (``(dh_n, dc_n)`` for LSTM).

        Returns
        -------
        dhx : the gradient of the initial state, shaped like ``hx`` (``(dh0, dc0)`` for LSTM)

        Both arguments are checked before anything runs: a bad call adds no gradient, and
        the forward stays for a corrected call.
        """
        # both arguments checked before any backward runs: a bad call adds no gradient and
        # leaves the forward to a corrected one
        head, rnn = self.head._cache, self.rnn._cache
        if head is not None:
            d = _checks.as_float_array("dlogits", dlogits, self.head._dtype)
            dlogits = _checks.check_shape("dlogits", d, head[2][:-1] + (self.head.out_features,))
        if dhy is not None and rnn is not None:
            _, out_shape, unbatched, _, _ = rnn
            self.rnn._states("dhy", dhy, 1 if unbatched else out_shape[1], unbatched, "dhx")
        demb, dhx = self.rnn.backward(self.head.backward(dlogits), dhy)
        self.embedding.backward(demb)
        return dhx

    def step(self, tokens, state):
        """One decoding step of N sequences: ``(log_probs (N, V), state)``.

        ``state`` is the layer's, (L, N, H) (a tuple for LSTM).  The step runs in evaluation
        mode whatever the decoder's, for this thread only, and leaves the decoder as it was:
        a teacher-forced forward's backward may still follow, and another thread may train
        the decoder meanwhile.
        """
        with evaluating(self.modules.values()):
            out, state = self.rnn(self.embedding(np.asarray(tokens))[None], state)
            return log_softmax(self.head(out[0])), state

    def _check_state(self, state):
        """The layer's state, (L, N, H) arrays: N read along axis 1 (a cell's (N, H) state
        would give it H)."""
        arrays = state if isinstance(state, (tuple, list)) else (state,)
        for i, s in enumerate(arrays):
            if np.ndim(s) != 3:
                label = f"state[{i}]" if isinstance(state, (tuple, list)) else "state"
                raise ValueError(f"{label} must be the layer's state, (num_layers, N, "
                                 f"hidden_size) = ({self.rnn.num_layers}, N, "
                                 f"{self.rnn.hidden_size}), but got shape {np.shape(s)}")

    def greedy(self, state, start, max_len, end=None):
        """:func:`fastrnn.train.greedy_search` from ``state``: ``(tokens, lengths, scores)``.

        ``state`` is the layer's initial state, (L, N, H) (``(h, c)`` for LSTM); ``start``
        the start token, ``max_len`` the most tokens a sequence gets, ``end`` the end token.
        """
        self._check_state(state)
        return greedy_search(self.step, state, start, max_len, end, batch_axis=1)

    def beam(self, state, start, max_len, end=None, beam_width=4, length_penalty=1.0):
        """:func:`fastrnn.train.beam_search` from ``state``: ``(tokens, lengths, scores)``.

        The arguments are :meth:`greedy`'s, and ``beam_width`` (the hypotheses kept per
        sequence) and ``length_penalty`` (scores divided by length ** length_penalty)."""
        self._check_state(state)
        return beam_search(self.step, state, start, max_len, end, beam_width=beam_width,
                           length_penalty=length_penalty, batch_axis=1)
