"""``fastrnn gradflow``: vanishing and exploding gradients, measured.

A loss placed on the LAST step of a sequence sends its gradient back through
time: ||dJ/dh_t|| for t = T-1, T-2, ..., 0 is what reaches earlier steps, the
quantity that vanishes or explodes (Bengio et al. 1994; Pascanu et al. 2013).
This command measures it with the layers' own backward
(``return_step_norms=True``) on random input, at initialisation, for

* RNN, LSTM and GRU with PyTorch's initialisation, U(-1/sqrt(H), 1/sqrt(H)):
  the gradient shrinks geometrically, fastest for the tanh RNN;
* a tanh RNN whose recurrent matrix is orthogonal times --gain (default 3):
  the gradient explodes;
* an LSTM whose forget-gate bias is raised by --gate-bias (default 3) and a
  GRU whose update-gate bias is raised by it: gates held open carry the
  gradient ten to twenty times further back (the constant error carousel of
  Hochreiter & Schmidhuber 1997; Gers et al. 2000; Jozefowicz et al. 2015).

The table gives ||dJ/dh_{T-1-s}|| / ||dJ/dh_{T-1}|| for s steps back
(geometric mean over the batch and --repeats initialisations).
"""

import math

import numpy as np

from ._common import (
    Timer, add_common_arguments, check_backend, finite_float, plain, positive_float, positive_int,
    prepare_plot, progress, pyplot, save_figure,
)

NAME = "gradflow"
HELP = "per-step gradient norms ||dJ/dh_t|| back through time: vanishing and exploding"
DESCRIPTION = plain(__doc__) + """

examples:
  fastrnn gradflow
  fastrnn gradflow --length 200 --hidden 128 --plot gradflow.png
"""


def add_arguments(p):
    p.add_argument("--length", type=positive_int, default=100,
                   help="sequence length T (default: %(default)s)")
    p.add_argument("--hidden", type=positive_int, default=64,
                   help="hidden size (default: %(default)s)")
    p.add_argument("--input-size", type=positive_int, default=16,
                   help="input size; inputs are standard normal (default: %(default)s)")
    p.add_argument("--batch", type=positive_int, default=32,
                   help="sequences per initialisation (default: %(default)s)")
    p.add_argument("--repeats", type=positive_int, default=3,
                   help="independent initialisations averaged (default: %(default)s)")
    p.add_argument("--gain", type=positive_float, default=3.0,
                   help="scale of the orthogonal recurrent matrix of the exploding tanh RNN "
                        "(default: %(default)s)")
    p.add_argument("--gate-bias", type=finite_float, default=3.0,
                   help="added to the LSTM forget-gate and GRU update-gate biases in the "
                        "open-gate variants (default: %(default)s)")
    add_common_arguments(p, plot_help="draw the norms against steps back, log scale")


def variants(gain, gate_bias):
    """(label, layer class name, how to change the initial weights) for each measured model."""
    def orthogonal(layer, rng):
        H = layer.hidden_size
        q, r = np.linalg.qr(rng.standard_normal((H, H)))
        layer.parameters()["weight_hh_l0"][...] = gain * q * np.sign(np.diag(r))

    def open_gate(layer, rng):          # the second gate block: f for LSTM (i,f,g,o), z for GRU (r,z,n)
        H = layer.hidden_size
        layer.parameters()["bias_hh_l0"][H:2 * H] += gate_bias

    return [
        ("RNN (tanh)", "RNN", None),
        (f"RNN, W_hh = {gain:g} x orthogonal", "RNN", orthogonal),
        ("LSTM", "LSTM", None),
        (f"LSTM, forget bias +{gate_bias:g}", "LSTM", open_gate),
        ("GRU", "GRU", None),
        (f"GRU, update bias +{gate_bias:g}", "GRU", open_gate),
    ]


def measure(cls, T, I, H, B, repeats, rng, backend, change=None):
    """Geometric-mean ||dJ/dh_t|| / ||dJ/dh_{T-1}||, (T,) from step T-1 back to 0.

    Each repeat draws a fresh layer (float64) and input; the loss is
    ``J = <g, h_{T-1}>`` with a random unit vector g per sequence.
    """
    logs = []
    for _ in range(repeats):
        layer = cls(I, H, dtype=np.float64, backend=backend,
                    seed=int(rng.integers(0, 2 ** 31)))
        if change is not None:
            change(layer, rng)
        x = rng.standard_normal((T, B, I))
        out, _ = layer(x)
        dout = np.zeros_like(out)
        g = rng.standard_normal((B, out.shape[2]))
        dout[-1] = g / np.linalg.norm(g, axis=1, keepdims=True)
        _, _, norms = layer.backward(dout, return_step_norms=True)
        with np.errstate(divide="ignore"):
            logs.append(np.log(norms[0]) - np.log(norms[0, -1]))      # (T, B)
    mean = np.mean(np.concatenate(logs, axis=1), axis=1)               # geometric mean
    return np.exp(mean[::-1])                                          # index s = steps back


def describe_rate(ratios, lo, hi):
    """How fast the norm changes per step back between s=lo and s=hi, in words."""
    a, b = ratios[lo], ratios[hi]
    if hi <= lo:
        return "(sequence too short to tell)"
    if not (a > 0 and b > 0 and np.isfinite(a) and np.isfinite(b)):
        return "x0 per step: the gradient is gone (underflow)" if b == 0 else "overflow"
    factor = math.exp((math.log(b) - math.log(a)) / (hi - lo))
    if factor < 1:
        tenfold = math.log(10) / -math.log(factor)
        return f"x{factor:.3f} per step: the gradient vanishes, 10x smaller every {tenfold:.0f} steps"
    if factor > 1:
        return (f"x{factor:.3f} per step: the gradient explodes, 10x larger every "
                f"{math.log(10) / math.log(factor):.0f} steps")
    return "x1.000 per step: the gradient is kept"


def _columns(T):
    marks = [0, 1, 5, 10, 20, 50, 100, 200, 500, 1000]
    cols = [s for s in marks if s < T]
    if T - 1 not in cols:
        cols.append(T - 1)
    return cols


def _fmt(v):
    if v == 0 or not np.isfinite(v):
        return f"{v:>8.0e}" if v == 0 else f"{v:>8}"
    return f"{v:>8.1e}"


def run(args):
    import fastrnn

    backend = check_backend(args.backend)
    plot = prepare_plot(args.plot)
    rng = np.random.default_rng(args.seed)
    T = args.length
    rows = []
    models = variants(args.gain, args.gate_bias)
    clock = Timer()
    bar = progress(len(models), "measuring", args.quiet, unit="model")
    try:
        for label, cls_name, change in models:
            ratios = measure(getattr(fastrnn, cls_name), T, args.input_size, args.hidden,
                             args.batch, args.repeats, rng, backend, change)
            rows.append((label, ratios))
            bar.update(1)
    finally:
        bar.close()

    cols = _columns(T)
    print(f"gradient norm ||dJ/dh_(T-1-s)|| / ||dJ/dh_(T-1)|| at s steps back "
          f"(T={T}, H={args.hidden}, loss on the last step, at initialisation, "
          f"geometric mean over {args.batch} x {args.repeats} sequences, backend {backend})")
    width = max(len(label) for label, _ in rows) + 2
    print("s steps back".ljust(width) + "".join(f"{s:>9d}" for s in cols))
    for label, ratios in rows:
        print(label.ljust(width) + "".join(" " + _fmt(ratios[s]) for s in cols))
    lo, hi = min(1, T - 1), max(min(1, T - 1), (T - 1) // 2)
    print(f"rate per step back (geometric mean from s={lo} to s={hi}):")
    for label, ratios in rows:
        print(f"  {label.ljust(width)} {describe_rate(ratios, lo, hi)}")
    print(f"done in {clock():.1f} s")

    if plot:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(7.5, 4.5))
        styles = {"RNN": "tab:red", "LSTM": "tab:blue", "GRU": "tab:green"}
        for (label, ratios), (_, cls_name, change) in zip(rows, models):
            ax.semilogy(np.arange(T), np.where(ratios > 0, ratios, np.nan), label=label,
                        color=styles[cls_name], linestyle="--" if change else "-", linewidth=1.8)
        ax.set_xlabel("steps back from the loss (s)")
        ax.set_ylabel(r"$\|\partial J/\partial h_{T-1-s}\| \;/\; \|\partial J/\partial h_{T-1}\|$")
        ax.set_title(f"Gradient flow back through time at initialisation (T={T}, H={args.hidden})")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
        save_figure(fig, plot)
    return 0
