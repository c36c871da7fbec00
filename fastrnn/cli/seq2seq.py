"""``fastrnn seq2seq``: an encoder-decoder learns to add two integers written as text.

A question such as ``123+45`` (two numbers of 1 to 3 digits, drawn at random and generated
on the fly) is read character by character, reversed (as in the classic Keras example: the
digits that decide the first digits of the answer then come last), by an LSTM encoder; its
final state starts an LSTM decoder that writes the answer, ``168``, one character at a time,
then an end token.  Training feeds the decoder the whole answer at once (teacher forcing) and
backpropagates from its initial state into the encoder.  One question in ten (by a hash of
its text, of every size of numbers) is held out: never trained on, drawn with another seed
for the score, which decodes from the encoder's state alone (greedy search, or beam search
with --beam): exact match (the whole answer right) and per character.
"""

import zlib

import numpy as np

from ..module import evaluating
from ._common import (
    PAD, SPECIAL, Timer, add_common_arguments, check_backend, decode_texts,
    match_rates, nonnegative_int, plain, positive_float, positive_int, prepare_plot, progress,
    pyplot, save_figure, teacher_forcing,
)

NAME = "seq2seq"
HELP = "encoder-decoder: learn to add two integers written as text ('123+45' -> '168')"
DESCRIPTION = plain(__doc__) + """

examples:
  fastrnn seq2seq                          # the defaults: about 0.98-0.99 exact in a minute
  fastrnn seq2seq --steps 500 --plot s2s.png
"""

CHARS = "0123456789+"
VOCAB = SPECIAL + list(CHARS)
CODE = {c: i + 3 for i, c in enumerate(CHARS)}
DIGITS = 3
SRC_LEN = 2 * DIGITS + 1
TGT_LEN = DIGITS + 2          # the answer (at most DIGITS + 1 digits) and the end token


def add_arguments(p):
    p.add_argument("--hidden", type=positive_int, default=128,
                   help="hidden size of encoder and decoder (default: %(default)s)")
    p.add_argument("--embedding", type=positive_int, default=16,
                   help="character embedding size (default: %(default)s)")
    p.add_argument("--steps", type=positive_int, default=4000,
                   help="Adam updates (default: %(default)s)")
    p.add_argument("--batch", type=positive_int, default=128,
                   help="questions per update (default: %(default)s)")
    p.add_argument("--lr", type=positive_float, default=5e-3,
                   help="Adam learning rate, halved for the last third (default: %(default)s)")
    p.add_argument("--clip", type=positive_float, default=1.0,
                   help="gradient norm clipping (default: %(default)s)")
    p.add_argument("--test-size", type=positive_int, default=2000,
                   help="held-out questions (default: %(default)s)")
    p.add_argument("--beam", type=nonnegative_int, default=0,
                   help="beam width of the final evaluation (default: 0, greedy search)")
    p.add_argument("--examples", type=nonnegative_int, default=8,
                   help="held-out questions printed with their answers (default: %(default)s)")
    add_common_arguments(p, plot_help="draw the loss and the held-out accuracy")


def held_out(question):
    """Whether a question is one of the held-out tenth (by a hash of its text)."""
    return zlib.crc32(question.encode()) % 10 == 0


def questions(rng, n, test=False):
    """``n`` random questions and answers, as strings: training questions, or with ``test``
    held-out ones (each operand of 1 to DIGITS digits, the number of digits uniform)."""
    qs, answers = [], []
    while len(qs) < n:
        m = 12 * (n - len(qs)) if test else (n - len(qs)) * 5 // 4 + 8
        d = rng.integers(1, DIGITS + 1, size=(2, m))
        a, b = rng.integers(np.where(d == 1, 0, 10 ** (d - 1)), 10 ** d)
        for x, y in zip(a.tolist(), b.tolist()):
            q = f"{x}+{y}"
            if held_out(q) == test and len(qs) < n:
                qs.append(q)
                answers.append(str(x + y))
    return qs, answers


def encode(qs, answers):
    """Token arrays of a batch: the reversed question (T_src, B) with its lengths, the decoder's
    input (START + answer) and target (answer + END), (T_tgt, B), with their lengths."""
    src = np.full((SRC_LEN, len(qs)), PAD, dtype=np.int64)
    src_len = np.array([len(q) for q in qs], dtype=np.int64)
    for b, q in enumerate(qs):
        src[:len(q), b] = [CODE[c] for c in reversed(q)]
    return (src, src_len) + teacher_forcing(answers, CODE, TGT_LEN)


class Model:
    """Source embedding and LSTM encoder; a fastrnn.train.Decoder."""

    def __init__(self, hidden, embedding, seed, backend):
        import fastrnn
        from ..train import Decoder, Embedding
        s = np.random.SeedSequence(seed).generate_state(3)
        self.src_emb = Embedding(len(VOCAB), embedding, padding_idx=PAD, seed=int(s[0]))
        self.encoder = fastrnn.LSTM(embedding, hidden, seed=int(s[1]), backend=backend)
        self.decoder = Decoder(len(VOCAB), embedding, hidden, padding_idx=PAD, seed=int(s[2]),
                               backend=backend)
        self.modules = {"src_emb": self.src_emb, "encoder": self.encoder,
                        **{f"dec_{k}": m for k, m in self.decoder.modules.items()}}

    def train(self, mode=True):
        for m in self.modules.values():
            m.train(mode)

    def loss_and_backward(self, src, src_len, tgt_in, tgt_out, tgt_len):
        from ..train import cross_entropy
        enc_out, state = self.encoder(self.src_emb(src), lengths=src_len)
        logits, _ = self.decoder(tgt_in, state, lengths=tgt_len)
        loss, dlogits = cross_entropy(logits, tgt_out, ignore_index=PAD)
        dstate = self.decoder.backward(dlogits)
        dsrc, _ = self.encoder.backward(np.zeros_like(enc_out), dstate)
        self.src_emb.backward(dsrc)
        return loss

    def answer(self, qs, beam=0):
        """The decoded answers of a list of questions (evaluation mode)."""
        src, src_len, *_ = encode(qs, ["0"] * len(qs))
        with evaluating(self.modules.values()):
            _, state = self.encoder(self.src_emb(src), lengths=src_len)
            return decode_texts(self.decoder, state, TGT_LEN, VOCAB, beam)


def run(args):
    from ..train import Adam, clip_grad_norm
    backend = check_backend(args.backend)
    plot = prepare_plot(args.plot)
    rng = np.random.default_rng([args.seed, 0])
    model = Model(args.hidden, args.embedding, args.seed, backend)
    opt = Adam(model.modules, lr=args.lr)
    test_q, test_a = questions(np.random.default_rng([args.seed, 1]), args.test_size, test=True)
    check_every = max(1, args.steps // 20)
    curve, checks = [], []
    clock = Timer()
    print(f"seq2seq addition: LSTM encoder-decoder, H={args.hidden}, E={args.embedding}, "
          f"{args.steps} Adam steps (lr {args.lr:g}) of {args.batch} questions, backend "
          f"{backend}", flush=True)
    bar = progress(args.steps, "training", args.quiet, unit="step")
    try:
        for step in range(1, args.steps + 1):
            if step == 2 * args.steps // 3 + 1:
                opt.lr = args.lr / 2
            batch = encode(*questions(rng, args.batch))
            curve.append(model.loss_and_backward(*batch))
            clip_grad_norm(opt.grads, args.clip)
            opt.step()
            opt.zero_grad()
            bar.update(1)
            if step % check_every == 0 or step == args.steps:
                exact, _ = match_rates(model.answer(test_q[:500]), test_a[:500])
                checks.append((step, exact))
                bar.set_postfix_str(f"loss {np.mean(curve[-check_every:]):.3f}, "
                                    f"held-out exact {exact:.3f}")
    finally:
        bar.close()
    train_s = clock()
    predicted = model.answer(test_q, args.beam)
    exact, per_char = match_rates(predicted, test_a)
    how = f"beam search, width {args.beam}" if args.beam else "greedy decoding"
    print(f"held-out ({args.test_size} questions, {how}): exact match {exact:.4f}, "
          f"per character {per_char:.4f}")
    print(f"trained in {train_s:.1f} s ({args.steps * args.batch:,} questions seen)")
    for q, a, p in list(zip(test_q, test_a, predicted))[:args.examples]:
        print(f"  {q:>{SRC_LEN}} = {p:<{TGT_LEN}} {'ok' if p == a else 'wrong, ' + a}")
    if plot:
        plt = pyplot()
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
        ax1.semilogy(np.arange(1, len(curve) + 1), curve, linewidth=0.6)
        ax1.set_xlabel("Adam step")
        ax1.set_ylabel("training cross-entropy per token")
        steps_, ex = zip(*checks)
        ax2.plot(steps_, ex, marker="o")
        ax2.set_ylim(0, 1)
        ax2.set_xlabel("Adam step")
        ax2.set_ylabel(f"held-out exact match ({min(500, len(test_q))} questions)")
        for ax in (ax1, ax2):
            ax.grid(True, alpha=0.3)
        fig.suptitle(f"Learning to add: exact match {exact:.3f} on {args.test_size} held-out "
                     f"questions")
        save_figure(fig, plot)
    return 0
