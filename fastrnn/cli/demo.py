"""``fastrnn demo``: train a character-level LSTM with truncated BPTT and Adam.

The default corpus needs no download: the docstrings of the Python standard
library of the interpreter that runs the command, read from its source files
with :mod:`ast` (nothing is imported or executed).  ``--text FILE`` trains on
any UTF-8 text instead.

The text is cut into ``--batch`` parallel streams that an LSTM reads one
character at a time (one-hot input), predicting the next character through a
dense head; gradients flow back ``--bptt`` steps (truncated BPTT, the state
carried across chunks), are clipped, and Adam updates the weights.  The
quality measure is bits per character (bpc) on held-out text, before and
after training: 0 bpc would be perfect prediction, log2(vocabulary) is a
uniform guess.
"""

import ast
import collections
import math
import os
import sys
import sysconfig
import zlib

import numpy as np

from ..module import evaluating
from ._common import (
    CommandError, Timer, add_common_arguments, bar_write, check_backend, check_output_path,
    holdout_fraction, load_modules, nonnegative_int, plain, positive_float, positive_int,
    progress, save_modules,
)

NAME = "demo"
HELP = "train a character-level LSTM (truncated BPTT, Adam) and generate text"
DESCRIPTION = plain(__doc__) + """

examples:
  fastrnn demo                                  # ~15 s on 2 cores, stdlib docstrings
  fastrnn demo --text book.txt --steps 5000 --hidden 256
  fastrnn demo --load fastrnn-demo.npz --steps 0 --sample-chars 500   # only generate
"""

LN2 = math.log(2.0)
#: where the trained model goes without --save
DEFAULT_SAVE = "fastrnn-demo.npz"
HIDDEN, LAYERS = 128, 1          # the model's sizes when none is loaded
#: folders of the standard library whose docstrings are not prose worth learning
_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__",
              "turtledemo", "_bundled", "lib2to3"}


def add_arguments(p):
    data = p.add_argument_group("data")
    data.add_argument("--text", metavar="FILE",
                      help="UTF-8 text file to train on (default: docstrings of the Python "
                           "standard library, gathered now)")
    data.add_argument("--max-chars", type=positive_int, default=1_000_000,
                      help="use at most this many characters of the corpus (default: %(default)s)")
    data.add_argument("--val-fraction", type=holdout_fraction, default=0.05,
                      help="share of the text held out to measure bits per character, between "
                           "0 and 0.5 (default: %(default)s)")
    model = p.add_argument_group("model")
    model.add_argument("--hidden", type=positive_int, default=None,
                       help=f"LSTM hidden size (default: {HIDDEN}; with --load, the model's)")
    model.add_argument("--layers", type=positive_int, default=None,
                       help=f"stacked LSTM layers (default: {LAYERS}; with --load, the model's)")
    model.add_argument("--load", metavar="MODEL.npz",
                       help="start from a model saved by an earlier run (its vocabulary and sizes)")
    train = p.add_argument_group("training")
    train.add_argument("--steps", type=nonnegative_int, default=1100,
                       help="weight updates, one per chunk of --bptt characters in each stream "
                            "(default: %(default)s; 0 only evaluates and samples)")
    train.add_argument("--bptt", type=positive_int, default=64,
                       help="truncated BPTT chunk length k1 = k2 (default: %(default)s)")
    train.add_argument("--batch", type=positive_int, default=32,
                       help="parallel streams of text (default: %(default)s)")
    train.add_argument("--lr", type=positive_float, default=1e-2,
                       help="Adam learning rate (default: %(default)s)")
    train.add_argument("--clip", type=positive_float, default=1.0,
                       help="clip the gradient norm to this (default: %(default)s)")
    train.add_argument("--time-limit", type=positive_float, default=115.0, metavar="SECONDS",
                       help="stop training early so that the whole command takes about this "
                            "long (default: %(default)s)")
    out = p.add_argument_group("output")
    out.add_argument("--sample-every", type=nonnegative_int, default=250,
                     help="print generated text every this many steps (default: %(default)s; "
                          "0: only at the end)")
    out.add_argument("--sample-chars", type=positive_int, default=240,
                     help="length of each sample (default: %(default)s)")
    out.add_argument("--temperature", type=positive_float, default=0.7,
                     help="sampling temperature: lower is more conservative (default: %(default)s)")
    saving = out.add_mutually_exclusive_group()
    saving.add_argument("--save", metavar="MODEL.npz", default=None,
                     help=f"where to save the trained model (default: {DEFAULT_SAVE}; with "
                          f"--steps 0 nothing is trained, and nothing saved unless --save "
                          f"is given)")
    saving.add_argument("--no-save", action="store_true", help="do not save the model")
    add_common_arguments(p)


# -- corpus -------------------------------------------------------------------------------
def _stdlib_files():
    root = sysconfig.get_paths().get("stdlib") or os.path.dirname(os.__file__)
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.startswith("."))
        files += [os.path.join(folder, n) for n in sorted(names) if n.endswith(".py")]
    # a fixed pseudo-random order (same on every run) mixes modules from all over the library
    files.sort(key=lambda f: zlib.crc32(os.path.relpath(f, root).encode()))
    return root, files


def _docstrings(source):
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= 40:
                out.append(doc)
    return out


def stdlib_docstrings(max_chars=1_000_000):
    """Docstrings of the standard library's modules, classes and functions, read with :mod:`ast`.

    Parameters
    ----------
    max_chars : int
        Stop once this many characters are gathered.

    Returns
    -------
    text : str
        Docstrings separated by blank lines.
    description : str
        Where the text came from.
    """
    root, files = _stdlib_files()
    docs, total, used = [], 0, 0
    for path in files:
        try:
            with open(path, encoding="utf-8") as fh:
                source = fh.read()
        except (OSError, UnicodeDecodeError):
            continue
        found = _docstrings(source)
        if found:
            used += 1
        for doc in found:
            docs.append(doc)
            total += len(doc) + 2
        if total >= max_chars:
            break
    if total < min(20_000, max_chars):   # no sources (a .pyc-only Python): use loaded modules
        import inspect
        names = sorted(set(sys.modules) & set(getattr(sys, "stdlib_module_names", ())))
        for name in names:
            module = sys.modules[name]
            for obj in [module] + [v for _, v in sorted(vars(module).items(), key=lambda kv: kv[0])
                                   if inspect.isclass(v) or inspect.isfunction(v)]:
                doc = inspect.getdoc(obj) if obj is module or getattr(obj, "__module__", None) == name else None
                if doc and len(doc) >= 40:
                    docs.append(doc)
                    total += len(doc) + 2
        description = f"docstrings of the {len(names)} loaded standard-library modules"
    else:
        description = (f"docstrings of {used} modules of the Python "
                       f"{sys.version_info[0]}.{sys.version_info[1]} standard library ({root})")
    return "\n\n".join(docs)[:max_chars], description


def read_text(path, max_chars):
    """The text of a UTF-8 file (at most ``max_chars`` characters), with clear errors."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read(max_chars)
    except FileNotFoundError:
        raise CommandError(f"text file {path!r} does not exist") from None
    except IsADirectoryError:
        raise CommandError(f"--text {path!r} is a directory, not a text file") from None
    except PermissionError:
        raise CommandError(f"text file {path!r} is not readable (permission denied)") from None
    except UnicodeDecodeError as exc:
        raise CommandError(f"text file {path!r} is not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise CommandError(f"cannot read text file {path!r}: {exc}") from None
    return text


class Vocabulary:
    """Characters <-> integer ids."""

    def __init__(self, chars):
        self.chars = "".join(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self):
        return len(self.chars)

    @classmethod
    def from_text(cls, text, min_count=3):
        """Every character seen at least ``min_count`` times, in code point order."""
        ids, counts = np.unique(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32),
                                return_counts=True)
        return cls(chr(c) for c, n in zip(ids, counts) if n >= min_count)

    def encode(self, text):
        """(N,) int64 ids; characters outside the vocabulary are dropped."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table = np.full(max(int(codes.max(initial=0)), max(map(ord, self.chars))) + 1, -1, np.int64)
        table[[ord(c) for c in self.chars]] = np.arange(len(self.chars))
        ids = table[codes]
        return ids[ids >= 0]

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids)


class OneHot:
    """Lazy one-hot view of a (T, B) array of ids: slicing time gives (t, B, V) float arrays."""

    def __init__(self, ids, size, dtype=np.float32):
        self.ids, self.size = ids, size
        self.eye = np.eye(size, dtype=dtype)
        self.shape = ids.shape + (size,)

    def __getitem__(self, index):
        return self.eye[self.ids[index]]


# -- model --------------------------------------------------------------------------------
def evaluate_bpc(lstm, head, ids, streams=32, chunk=256):
    """Bits per character of ``lstm`` + ``head`` predicting each next character of ``ids``.

    The text is read as ``streams`` parallel streams, the state carried over
    chunks, in evaluation mode (nothing is kept for a backward).
    """
    from ..train import cross_entropy, split_streams
    B = max(1, min(streams, (len(ids) - 1) // 2))
    data = split_streams(ids, B)                       # (L, B)
    x, y = OneHot(data[:-1], head.out_features, lstm.dtype), data[1:]
    total, count, state = 0.0, 0, None
    with evaluating((lstm, head)):
        for t0 in range(0, y.shape[0], chunk):
            out, state = lstm(x[t0:t0 + chunk], state)
            loss, _ = cross_entropy(head(out), y[t0:t0 + chunk], reduction="sum")
            total += loss
            count += y[t0:t0 + chunk].size
    return total / max(count, 1) / LN2


def generate(lstm, head, vocab, rng, length, prime="\n", temperature=0.7):
    """Sample ``length`` characters after ``prime`` (which must use vocabulary characters)."""
    from ..train import softmax
    eye = np.eye(len(vocab), dtype=lstm.dtype)
    with evaluating((lstm, head)):
        prime_ids = vocab.encode(prime)
        if prime_ids.size == 0:
            prime_ids = np.array([0])
        out, state = lstm(eye[prime_ids][:, None, :])
        logits = head(out[-1, 0])
        chars = []
        for _ in range(length):
            p = softmax(logits.astype(np.float64), temperature=temperature)
            i = int(rng.choice(len(vocab), p=p))
            chars.append(i)
            out, state = lstm(eye[i][None, None, :], state)
            logits = head(out[0, 0])
    return vocab.decode(prime_ids) + vocab.decode(chars)


def demo_model(path, modules, meta):
    """(lstm, head, vocabulary, steps trained) of a model file saved by this command, checked."""
    if set(modules) != {"lstm", "head"} or "vocabulary" not in meta:
        raise CommandError(f"{path!r} is not a model saved by 'fastrnn demo'")
    lstm, head, chars = modules["lstm"], modules["head"], meta["vocabulary"]
    steps = meta.get("steps", 0)
    width = (lstm.proj_size or lstm.hidden_size) * (2 if lstm.bidirectional else 1)
    if not (isinstance(chars, str) and len(set(chars)) == len(chars) >= 2
            and lstm.input_size == len(chars) == head.out_features
            and head.in_features == width and not lstm.batch_first
            and isinstance(steps, int) and not isinstance(steps, bool)):
        raise CommandError(f"model file {path!r} is not a usable 'fastrnn demo' model: its "
                           f"vocabulary, step count, LSTM and head do not fit together")
    return lstm, head, Vocabulary(chars), steps


def _indent(text):
    return "\n".join("  | " + line for line in text.splitlines())


def run(args):
    import fastrnn
    from ..train import TBPTT, Adam, Linear, clip_grad_norm, cross_entropy, split_streams

    backend = check_backend(args.backend)
    if args.no_save or (args.save is None and args.steps == 0):   # --steps 0 trains nothing
        save_path = None
    else:
        save_path = check_output_path(DEFAULT_SAVE if args.save is None else args.save,
                                      "--save model file")
    rng = np.random.default_rng(args.seed)
    seeds = np.random.SeedSequence(args.seed).spawn(2)

    run_clock = Timer()
    # a saved model first (a bad file fails before the corpus is read), then the corpus
    loaded = None
    if args.load:
        loaded = demo_model(args.load, *load_modules(
            args.load, {"LSTM": fastrnn.LSTM, "Linear": Linear}, backend))
    clock = Timer()
    if args.text:
        text = read_text(args.text, args.max_chars)
        source = f"{args.text}"
    else:
        text, source = stdlib_docstrings(args.max_chars)
    gathered = clock()

    # model
    if loaded:
        lstm, head, vocab, steps_before = loaded
        for flag, given, has in (("--hidden", args.hidden, lstm.hidden_size),
                                 ("--layers", args.layers, lstm.num_layers)):
            if given is not None and given != has:
                raise CommandError(f"{flag} {given} does not match the model loaded from "
                                   f"{args.load}, which has {has}: leave {flag} out with --load")
    else:
        hidden, layers = args.hidden or HIDDEN, args.layers or LAYERS
        vocab = Vocabulary.from_text(text)
        if len(vocab) < 2:
            raise CommandError(f"the text has {len(vocab)} distinct character(s) (seen at least "
                               f"3 times); a language model needs at least 2")
        lstm = fastrnn.LSTM(len(vocab), hidden, num_layers=layers, backend=backend,
                            seed=int(seeds[0].generate_state(1)[0]))
        head = Linear(hidden, len(vocab), seed=int(seeds[1].generate_state(1)[0]))
        steps_before = 0
    ids = vocab.encode(text)
    n_val = max(int(len(ids) * args.val_fraction), 2 * args.bptt + 2)
    n_train = len(ids) - n_val
    if n_train < args.batch * (args.bptt + 1):
        raise CommandError(
            f"the text is too short: {len(ids)} usable characters, but --batch {args.batch} "
            f"streams of at least --bptt {args.bptt} + 1 characters and a held-out part of "
            f"{n_val} need more (use a longer text or smaller --batch / --bptt)")
    train_ids, val_ids = ids[:n_train], ids[n_train:]
    streams = split_streams(train_ids, args.batch)            # (L, B)
    x, y = OneHot(streams[:-1], len(vocab), lstm.dtype), streams[1:]

    n_params = sum(p.size for p in lstm.parameters().values()) + \
        sum(p.size for p in head.parameters().values())
    print(f"fastrnn demo: character-level LSTM, truncated BPTT (k={args.bptt}), Adam, "
          f"backend {lstm.backend}")
    print(f"corpus: {source}: {len(text):,} characters, {len(vocab)} distinct "
          f"(gathered in {gathered:.1f} s)")
    print(f"model: {lstm!r} + {head!r}: {n_params:,} parameters"
          + (f" (loaded from {args.load}, {steps_before} steps trained)" if args.load else ""))
    print(f"data: {n_train:,} characters for training as {args.batch} streams of "
          f"{streams.shape[0]:,}; {n_val:,} held out; uniform guess = "
          f"{math.log2(len(vocab)):.2f} bits per character")

    start_bpc = evaluate_bpc(lstm, head, val_ids)
    print(f"held-out bits per character before training: {start_bpc:.3f}", flush=True)

    opt = Adam({"lstm": lstm, "head": head}, lr=args.lr)
    tb = TBPTT(lstm, args.bptt)
    state = {"step": 0, "ema": None, "first": None, "chars": 0, "stopped": False}
    bar = progress(args.steps, "training", args.quiet, unit="step")
    recent = collections.deque(maxlen=20)      # (seconds, characters) of the last steps
    clock = Timer()

    def loss_and_grad(out, t0, t1):
        loss, dlogits = cross_entropy(head(out), y[t0:t1])
        return loss, head.backward(dlogits)

    def after_backward(chunk):
        clip_grad_norm(opt.grads, args.clip)
        opt.step()
        opt.zero_grad()
        s = state
        s["step"] += 1
        s["chars"] += (chunk.t1 - chunk.t0) * args.batch
        bpc = chunk.loss / LN2
        s["first"] = bpc if s["first"] is None else s["first"]
        s["ema"] = bpc if s["ema"] is None else 0.95 * s["ema"] + 0.05 * bpc
        elapsed = clock()
        bar.update(1)
        bar.set_postfix_str(f"bpc {s['ema']:.3f}, {s['chars'] / max(elapsed, 1e-9):,.0f} chars/s")
        if args.sample_every and s["step"] % args.sample_every == 0 and s["step"] < args.steps:
            text_out = generate(lstm, head, vocab, rng, args.sample_chars,
                                temperature=args.temperature)
            bar_write(bar, f"--- sample after {s['step']} steps (training bpc "
                           f"{s['ema']:.2f}) ---\n{_indent(text_out)}")
        # time left for the final evaluation (a forward over the held-out text costs
        # about a third of training on as many characters), a sample and the save; the
        # speed is that of the last steps (the first ones may include compilation)
        recent.append((elapsed, s["chars"]))
        (t_a, c_a), (t_b, c_b) = recent[0], recent[-1]
        rate = (c_b - c_a) / (t_b - t_a) if len(recent) > 1 and t_b > t_a else math.inf
        reserve = 1.0 + 0.5 * n_val / rate
        if run_clock() + reserve > args.time_limit and s["step"] < args.steps:
            s["stopped"] = True
            return True
        return s["step"] >= args.steps

    try:
        while state["step"] < args.steps and not state["stopped"]:
            tb.reset()                    # each pass over the text starts from zero state
            tb.run(x, loss_and_grad, after_backward)
    finally:
        bar.close()
    train_time = clock()
    end_bpc = evaluate_bpc(lstm, head, val_ids)
    sample = generate(lstm, head, vocab, rng, args.sample_chars, temperature=args.temperature)

    print(f"--- sample after {state['step']} steps ---\n{_indent(sample)}")
    if state["stopped"]:
        print(f"note: stopped after {state['step']} of {args.steps} steps to finish within "
              f"--time-limit {args.time_limit:g} s")
    if state["step"]:
        print(f"trained {state['step']} steps, {state['chars']:,} characters in {train_time:.1f} s "
              f"({state['chars'] / train_time:,.0f} characters/s); training bpc "
              f"{state['first']:.3f} -> {state['ema']:.3f} (smoothed)")
    print(f"held-out bits per character: {start_bpc:.3f} -> {end_bpc:.3f} (start -> end)")
    if save_path:
        save_modules(save_path, {"lstm": lstm, "head": head},
                     {"vocabulary": vocab.chars, "steps": steps_before + state["step"],
                      "bits_per_character": end_bpc, "command": "fastrnn demo"})
        print(f"model saved to {save_path} (continue or sample with: fastrnn demo --load "
              f"{save_path} --steps 0)")
    return 0
