"""Helpers shared by the commands: argument types, errors, progress bars, plots, models on disk."""

import argparse
import errno
import json
import os
import re
import stat
import time

import numpy as np

#: How to get the optional plotting dependency.
PLOT_HINT = "pip install 'fastrnn[plot]'  (or: pip install matplotlib)"


def plain(docstring):
    """A module docstring as --help text: the title line dropped, reST markup removed."""
    body = docstring.split("\n", 2)[2].strip() if docstring.count("\n") >= 2 else docstring
    body = re.sub(r":\w+:`~?([^`]*)`", r"\1", body)
    return body.replace("``", "")


class CommandError(Exception):
    """A failure the user can fix (bad file, impossible setting): printed without a traceback."""


class UsageError(CommandError):
    """A bad argument found after parsing (a backend name, say): exit status 2, as argparse's."""


# -- argument types ---------------------------------------------------------------------
def positive_int(text):
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def nonnegative_int(text):
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _float_type(ok, wanted, doc):
    """An argparse type: a float that ``ok`` accepts (every one is finite), else "expected
    ``wanted``"."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
        if not (np.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text}")
        return value
    parse.__doc__ = doc
    return parse


positive_float = _float_type(lambda v: v > 0, "a positive number",
                             "argparse type: a finite float > 0.")
nonnegative_float = _float_type(lambda v: v >= 0, "a number >= 0",
                                "argparse type: a finite float >= 0.")
finite_float = _float_type(lambda v: True, "a finite number",
                           "argparse type: a finite float (of any sign).")
holdout_fraction = _float_type(lambda v: 0 < v < 0.5, "a number between 0 and 0.5",
                               "argparse type: a float in (0, 0.5), the share held out.")


def int_list(text):
    """argparse type: comma-separated positive integers, e.g. ``50,100,200`` (an empty item,
    ``50,,100``, is refused like any other that is not one)."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers like 50,100,200, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers like 50,100,200, got {text!r}")
    return values


def choice_list(choices):
    """argparse type: comma-separated names out of ``choices`` (case-insensitive; an empty
    item is refused)."""
    lookup = {c.lower(): c for c in choices}

    def parse(text):
        names = [part.strip().lower() for part in text.split(",")]
        bad = [n for n in names if n not in lookup]
        if not names or bad:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated names out of {','.join(choices)}, got {text!r}")
        return [lookup[n] for n in names]
    return parse


def add_common_arguments(parser, plot_help=None):
    """--seed, --backend, --quiet (and --plot FILE when ``plot_help`` is given)."""
    parser.add_argument("--seed", type=nonnegative_int, default=0,
                        help="seed of every random choice (default: %(default)s)")
    parser.add_argument("--backend", default="auto",
                        help="kernel backend: auto, numpy, numba, ... (default: %(default)s; "
                             "the environment variable FASTRNN_BACKEND sets what auto means)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    if plot_help:
        parser.add_argument("--plot", metavar="FILE.png", default=None,
                            help=f"{plot_help} (needs matplotlib: {PLOT_HINT})")


def check_backend(name):
    """Resolve ``--backend`` now, so a bad name fails before any work."""
    from ..backends import resolve
    try:
        return resolve(name).name
    except (ValueError, TypeError) as exc:      # a name that is not a backend's
        if name != "auto":
            raise UsageError(f"argument --backend: {exc}") from None
        raise CommandError(str(exc)) from None  # ($FASTRNN_BACKEND's: not an argument)
    except RuntimeError as exc:                 # a backend this installation cannot run
        raise CommandError(str(exc)) from None


# -- output -----------------------------------------------------------------------------
def check_output_path(path, what="output file"):
    """Fail early, before the training, when ``path`` cannot be written: empty, a folder (or
    a name ending with a separator), in a missing or unwritable folder, or a file that cannot
    be opened for writing (read-only, immutable).  Nothing is written or truncated: an
    existing regular file is opened for appending, a new name is created and removed, a pipe
    or a device is only checked for permission; a symbolic link, at the file it names."""
    if path is None:
        return None
    path = os.fspath(path)
    if (not path or os.path.isdir(path) or path.endswith(os.sep)
            or (os.altsep and path.endswith(os.altsep))):
        raise CommandError(f"{what} {path!r} is a folder or empty, not a file name")
    real = os.path.realpath(path)      # (a symbolic link, dangling too: the file it names)
    folder = os.path.dirname(real)
    if not os.path.isdir(folder):
        raise CommandError(f"cannot write {what} {path!r}: folder {folder!r} does not exist")
    try:
        if not os.path.exists(real):
            os.close(os.open(real, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            os.unlink(real)
        elif stat.S_ISREG(os.stat(real).st_mode):
            open(real, "ab").close()
        elif not os.access(real, os.W_OK):   # a pipe or a device: opening it would block or
            raise PermissionError(errno.EACCES, "permission denied")   # end its reader's input
    except OSError as exc:
        raise CommandError(f"cannot write {what} {path!r}: {exc.strerror or exc}") from None
    return path


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend, or a CommandError saying how to get it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise CommandError(f"--plot needs matplotlib, which is not installed; to get it: "
                           f"{PLOT_HINT}") from None
    return plt


def prepare_plot(path):
    """Check matplotlib, the output path and its format up front (before minutes of training).

    Returns the name of the file the plot will be written to: ``path``, with matplotlib's
    default extension (``savefig.format``, .png) added when it has none, as matplotlib does.
    """
    if path is None:
        return None
    path = check_output_path(path, "plot file")
    pyplot()
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    fmt = os.path.splitext(path)[1][1:]
    if not fmt:
        fmt = str(matplotlib.rcParams["savefig.format"])
        path = check_output_path(path.rstrip(".") + "." + fmt, "plot file")
    supported = FigureCanvasAgg.get_supported_filetypes()
    if fmt.lower() not in supported:
        raise CommandError(f"cannot write plot file {path!r}: matplotlib does not write "
                           f"{fmt!r} files; use one of the extensions "
                           f"{', '.join('.' + t for t in sorted(supported))}")
    return path


def save_figure(fig, path):
    plt = pyplot()
    try:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    except (OSError, ValueError) as exc:
        raise CommandError(f"cannot save the plot to {path!r}: {exc}") from None
    finally:
        plt.close(fig)
    print(f"plot saved to {path}")


def progress(total, desc, quiet=False, unit="it"):
    """A tqdm progress bar on stderr (a silent stand-in when quiet or tqdm is missing)."""
    if not quiet:
        try:
            from tqdm.auto import tqdm
            return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=True)
        except ImportError:
            pass
    return _NoBar()


class _NoBar:
    def update(self, n=1):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def set_postfix_str(self, *args, **kwargs):
        pass

    def write(self, text):
        print(text)

    def close(self):
        pass


def bar_write(bar, text):
    """Print a line without breaking the progress bar."""
    if isinstance(bar, _NoBar):
        print(text, flush=True)
    else:
        bar.write(text)


def last_step_regression_step(layer, head, opt, x, y, clip):
    """One training step of a sequence regressor that reads the last output: the layer on ``x``
    (T, B, I), ``head`` on its last step, mean squared error against ``y`` (B,), the backward,
    gradients clipped to ``clip``, one optimizer step.  Returns the loss."""
    from ..train import clip_grad_norm, mse_loss
    out, _ = layer(x)
    pred = head(out[-1])[:, 0]
    loss, dpred = mse_loss(pred, y)
    dout = np.zeros_like(out)
    dout[-1] = head.backward(dpred[:, None])
    layer.backward(dout)
    clip_grad_norm(opt.grads, clip)
    opt.step()
    opt.zero_grad()
    return loss


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self):
        return time.perf_counter() - self.start


# -- models on disk ---------------------------------------------------------------------
def save_modules(path, modules, meta):
    """Write modules' parameters and a JSON description to one ``.npz`` (no pickles).

    Parameters
    ----------
    path : str
    modules : dict name -> fastrnn Module
    meta : dict of JSON-able values (stored with each module's class and get_config())
    """
    arrays = {}
    description = {"format": "fastrnn-cli-model", "version": 1, "meta": meta, "modules": {}}
    for key, module in modules.items():
        description["modules"][key] = {"class": type(module).__name__,
                                       "config": module.get_config()}
        for name, value in module.state_dict().items():
            arrays[f"{key}/{name}"] = value
    arrays["__description__"] = np.array(json.dumps(description))
    from ..io import write_file
    try:     # atomically: a Ctrl-C or a full disk during the save leaves the old file whole
        write_file(os.fspath(path), lambda fh: np.savez(fh, **arrays))
    except OSError as exc:
        raise CommandError(f"cannot save the model to {path!r}: {exc}") from None


#: largest JSON description :func:`load_modules` reads, in bytes (a real one is a few kB)
_MAX_DESCRIPTION_BYTES = 4 << 20


def load_modules(path, classes, backend="auto"):
    """Read what :func:`save_modules` wrote, with the checks of :func:`fastrnn.load`.

    Nothing in the file is trusted: its members and their ``.npy`` headers are checked
    first, then the JSON description, then each module's config against its stored arrays
    (names, shapes, dtype) before the module is built, so that an edited or hostile file
    cannot make loading allocate more than the arrays it holds.

    Parameters
    ----------
    path : str
    classes : dict class name -> class allowed to be rebuilt
    backend : str
        Backend of the rebuilt recurrent layers.

    Returns
    -------
    modules : dict name -> module with the stored parameters
    meta : dict

    Raises
    ------
    CommandError
        The file is missing, unreadable or not a usable model; the message names the file
        and says what is wrong.
    """
    from .. import io as fio
    try:
        data, _ = fio._read_bytes(path)
    except FileNotFoundError:
        raise CommandError(f"model file {path!r} does not exist") from None
    except IsADirectoryError:
        raise CommandError(f"model file {path!r} is a directory, not a file") from None
    except OSError as exc:
        raise CommandError(f"cannot read model file {path!r}: {exc}") from None
    try:
        return _read_modules(fio, data, classes, backend)
    except (fio.FormatError, KeyError, ValueError, TypeError) as exc:
        why = str(exc) if isinstance(exc, fio.FormatError) else f"{type(exc).__name__}: {exc}"
        raise CommandError(f"model file {path!r} is not a usable fastrnn model: {why}") from None


def _read_modules(fio, data, classes, backend):
    """:func:`load_modules` on the bytes of a file; a bad file raises a fastrnn.io.FormatError."""
    with fio._open_zip(data, None) as zf:
        if fio.HEADER + ".npy" in zf.namelist():
            raise fio.ForeignFileError("it holds a single module written by save() or "
                                       "fastrnn.save, not a model saved by the fastrnn command "
                                       "line (--save); load it in Python with fastrnn.load")
        members = {key: fio._npy_member(zf, info, key, None)
                   for key, info in fio._zip_members(zf, None, "__description__").items()}
        entry = members.pop("__description__")
        if entry.dtype.kind != "U" or entry.shape != () or \
                entry.nbytes > _MAX_DESCRIPTION_BYTES:
            raise fio.CorruptFileError(f"its '__description__' entry must be one JSON text of "
                                       f"at most {_MAX_DESCRIPTION_BYTES >> 20} MB, but it is "
                                       f"{entry.dtype} with shape {fio._short(entry.shape)}")
        description = fio._json_object(str(fio._read_data(zf, entry, None)[()]),
                                       "its description", None)
        if description.get("format") != "fastrnn-cli-model":
            raise fio.ForeignFileError("its description does not name the format "
                                       "'fastrnn-cli-model': not written by the fastrnn command "
                                       "line")
        entries, meta = description.get("modules"), description.get("meta")
        if not isinstance(entries, dict) or not isinstance(meta, dict):
            raise fio.CorruptFileError(f"its description must hold 'modules' and 'meta' objects, "
                                       f"but they are {type(entries).__name__} and "
                                       f"{type(meta).__name__}")
        for key, entry in entries.items():
            if "/" in key or not isinstance(entry, dict) \
                    or not isinstance(entry.get("class"), str) \
                    or not isinstance(entry.get("config"), dict):
                raise fio.CorruptFileError(f"its description of module {fio._short(key)} must be "
                                           f'{{"class": name, "config": {{...}}}}, but it is '
                                           f"{fio._short(entry)}")
        stray = [n for n in members if n.split("/", 1)[0] not in entries or "/" not in n]
        if stray:
            raise fio.UnexpectedArrayError(f"array(s) {fio._listed(stray)} belong to no module "
                                           f"of its description")
        modules = {}
        for key, entry in entries.items():
            label = entry["class"]
            cls = classes.get(label)
            if cls is None:
                raise fio.ConfigError(f"module {key!r} has class {fio._short(label)}; expected "
                                      f"one of {sorted(classes)}")
            config = dict(entry["config"])
            if "hidden_size" in config:       # a recurrent layer: run it on the chosen backend
                config["backend"] = backend
            prefix = key + "/"
            mine = {n[len(prefix):]: m for n, m in members.items() if n.startswith(prefix)}
            modules[key] = fio._load_module(zf, cls, label, config, mine, None)
    return modules, meta


# -- character decoders (the seq2seq and caption commands) ------------------------------
#: the special tokens, first in each command's vocabulary: padding, start, end
PAD, START, END = 0, 1, 2
SPECIAL = ["<pad>", "<start>", "<end>"]


def teacher_forcing(texts, code, steps):
    """The decoder's input (START + text) and target (text + END) as (steps, B) token arrays
    padded with PAD, and the lengths (B,); ``code`` maps a character to its token."""
    B = len(texts)
    tgt_in = np.full((steps, B), PAD, dtype=np.int64)
    tgt_out = np.full((steps, B), PAD, dtype=np.int64)
    lengths = np.empty(B, np.int64)
    for b, text in enumerate(texts):
        codes = [code[c] for c in text]
        tgt_in[:len(codes) + 1, b] = [START] + codes
        tgt_out[:len(codes) + 1, b] = codes + [END]
        lengths[b] = len(codes) + 1
    return tgt_in, tgt_out, lengths


def decode_texts(decoder, state, steps, vocab, beam=0):
    """The texts a fastrnn.train.Decoder writes from ``state``: greedy search, or beam search
    of width ``beam``; the decoder is in evaluation mode."""
    if beam:
        tokens, lengths, _ = decoder.beam(state, START, steps, END, beam_width=beam)
    else:
        tokens, lengths, _ = decoder.greedy(state, START, steps, END)
    return ["".join(vocab[t] for t in row[:n] if t > END) for row, n in zip(tokens, lengths)]


def match_rates(predicted, wanted):
    """(exact match, per character) of texts against the wanted ones: a character counts where
    it stands at its place, out of the longer of the two texts."""
    exact = float(np.mean([p == w for p, w in zip(predicted, wanted)]))
    right = sum(sum(x == y for x, y in zip(p, w)) for p, w in zip(predicted, wanted))
    return exact, right / sum(max(len(p), len(w)) for p, w in zip(predicted, wanted))
