"""``fastrnn caption``: one-to-many, an image in, its name spelled out character by character.

Each 8x8 image of scikit-learn's bundled handwritten digits goes through a dense layer
(``tanh(W x + b)``) into the initial state of a GRU decoder, which writes the digit's
English name ("seven") one letter at a time, then an end token: the captioning picture of
the textbooks, on data that ships with a package.  Training feeds the decoder the whole name
at once (teacher forcing) and backpropagates from its initial state into the dense layer.
The held-out score decodes from the image alone (greedy search, or beam search with --beam),
on a quarter of the images kept aside: exact match (the whole name right) and per character;
--plot shows held-out images with the names generated for them.  Needs scikit-learn
(``pip install "fastrnn[sklearn]"``) for the data.
"""

import numpy as np

from ..module import evaluating
from ._common import (
    PAD, SPECIAL, CommandError, Timer, add_common_arguments, check_backend, decode_texts,
    match_rates, nonnegative_int, plain, positive_float, positive_int, prepare_plot, progress,
    pyplot, save_figure, teacher_forcing,
)

NAME = "caption"
HELP = "one-to-many: an 8x8 digit image in, its name spelled out ('seven')"
DESCRIPTION = plain(__doc__) + """

examples:
  fastrnn caption                          # about 0.97 exact on held-out images, in seconds
  fastrnn caption --plot caption.png
"""

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
LETTERS = sorted(set("".join(NAMES)))
VOCAB = SPECIAL + LETTERS
CODE = {c: i + 3 for i, c in enumerate(LETTERS)}
MAX_LEN = max(map(len, NAMES)) + 1          # the longest name and its end token


def add_arguments(p):
    p.add_argument("--hidden", type=positive_int, default=64,
                   help="hidden size of the decoder (default: %(default)s)")
    p.add_argument("--embedding", type=positive_int, default=16,
                   help="letter embedding size (default: %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=40,
                   help="passes over the training images (default: %(default)s)")
    p.add_argument("--batch", type=positive_int, default=32,
                   help="images per update (default: %(default)s)")
    p.add_argument("--lr", type=positive_float, default=5e-3,
                   help="Adam learning rate (default: %(default)s)")
    p.add_argument("--clip", type=positive_float, default=1.0,
                   help="gradient norm clipping (default: %(default)s)")
    p.add_argument("--beam", type=nonnegative_int, default=0,
                   help="beam width of the final evaluation (default: 0, greedy search)")
    add_common_arguments(p, plot_help="show held-out images with their generated names")


def load_digits_split(seed):
    """(x_train, y_train, x_test, y_test): images as (N, 64) floats in [0, 1], a stratified
    quarter held out."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise CommandError(f"fastrnn caption reads scikit-learn's bundled digits and needs "
                           f"scikit-learn ({exc}): pip install 'fastrnn[sklearn]'") from None
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    # scikit-learn takes seeds below 2**32; --seed takes any integer >= 0
    split_seed = seed if seed < 2 ** 32 else int(np.random.SeedSequence(seed).generate_state(1)[0])
    x_tr, x_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, random_state=split_seed,
                                              stratify=y)
    return x_tr, y_tr, x_te, y_te


class Model:
    """A dense layer from the image to the decoder's initial state; a fastrnn.train.Decoder."""

    def __init__(self, hidden, embedding, seed, backend):
        from ..train import Decoder, Linear
        s = np.random.SeedSequence(seed).generate_state(2)
        self.encoder = Linear(64, hidden, seed=int(s[0]))
        self.decoder = Decoder(len(VOCAB), embedding, hidden, cell="gru", padding_idx=PAD,
                               seed=int(s[1]), backend=backend)
        self.modules = {"encoder": self.encoder,
                        **{f"dec_{k}": m for k, m in self.decoder.modules.items()}}

    def train(self, mode=True):
        for m in self.modules.values():
            m.train(mode)

    def state(self, images):
        return np.tanh(self.encoder(images))[None]            # (1, B, H): a GRU's h0

    def loss_and_backward(self, images, labels):
        from ..train import cross_entropy
        h0 = self.state(images)
        tgt_in, tgt_out, lengths = teacher_forcing([NAMES[k] for k in labels], CODE, MAX_LEN)
        logits, _ = self.decoder(tgt_in, h0, lengths=lengths)
        loss, dlogits = cross_entropy(logits, tgt_out, ignore_index=PAD)
        dh0 = self.decoder.backward(dlogits)
        self.encoder.backward(dh0[0] * (1 - h0[0] ** 2))
        return loss

    def names(self, images, beam=0):
        with evaluating(self.modules.values()):
            return decode_texts(self.decoder, self.state(images), MAX_LEN, VOCAB, beam)


def run(args):
    from ..train import Adam, clip_grad_norm
    backend = check_backend(args.backend)
    plot = prepare_plot(args.plot)
    x_tr, y_tr, x_te, y_te = load_digits_split(args.seed)
    model = Model(args.hidden, args.embedding, args.seed, backend)
    opt = Adam(model.modules, lr=args.lr)
    rng = np.random.default_rng([args.seed, 0])
    steps = args.epochs * -(-len(x_tr) // args.batch)
    print(f"caption: {len(x_tr)} training and {len(x_te)} held-out digit images; dense layer "
          f"into a GRU decoder, H={args.hidden}, {args.epochs} epochs of batches of {args.batch} "
          f"(lr {args.lr:g}), backend {backend}", flush=True)
    clock = Timer()
    bar = progress(steps, "training", args.quiet, unit="step")
    try:
        for epoch in range(args.epochs):
            order = rng.permutation(len(x_tr))
            losses = []
            for lo in range(0, len(order), args.batch):
                idx = order[lo:lo + args.batch]
                losses.append(model.loss_and_backward(x_tr[idx], y_tr[idx]))
                clip_grad_norm(opt.grads, args.clip)
                opt.step()
                opt.zero_grad()
                bar.update(1)
            bar.set_postfix_str(f"epoch {epoch + 1}, loss {np.mean(losses):.3f}")
    finally:
        bar.close()
    train_s = clock()
    generated = model.names(x_te, args.beam)
    exact, per_char = match_rates(generated, [NAMES[k] for k in y_te])
    how = f"beam search, width {args.beam}" if args.beam else "greedy decoding"
    print(f"held-out ({len(x_te)} images, {how}): exact match {exact:.4f}, per character "
          f"{per_char:.4f}")
    print(f"trained in {train_s:.1f} s")
    wrong = [(g, NAMES[k]) for g, k in zip(generated, y_te) if g != NAMES[k]]
    if wrong:
        print("some mistakes (generated / true): "
              + ", ".join(f"{g!r}/{w!r}" for g, w in wrong[:6]))
    if plot:
        plt = pyplot()
        fig, axes = plt.subplots(2, 8, figsize=(10, 3.2))
        for ax, img, name, k in zip(axes.ravel(), x_te, generated, y_te):
            ax.imshow(img.reshape(8, 8), cmap="gray_r")
            ax.set_title(name, color="black" if name == NAMES[k] else "red", fontsize=10)
            ax.axis("off")
        fig.suptitle(f"Held-out digits and the names the decoder writes (exact match "
                     f"{exact:.3f}; red: wrong)")
        save_figure(fig, plot)
    return 0
