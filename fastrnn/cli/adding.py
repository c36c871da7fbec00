"""``fastrnn adding``: the adding problem (Hochreiter & Schmidhuber 1997), RNN vs LSTM vs GRU.

Each input step carries two numbers: a value drawn from U(0, 1) and a marker
that is 1 at exactly two steps (one in the first half of the sequence, one in
the second) and 0 elsewhere.  The target, read from the last step's hidden
state through a dense head, is the sum of the two marked values.  Predicting
the mean sum, 1, whatever the input, scores MSE = Var(U1 + U2) = 1/6 = 0.167:
a model that fails to carry the first marked value across the sequence is
stuck near that baseline.  The longer the sequence, the further back the
gradient has to reach.

Every model is trained with Adam on fresh random batches until it has solved
the task with a margin (validation MSE below a twentieth of the baseline,
checked every 50 steps) or for --steps updates, and its MSE is then measured
on a held-out test set of the same length: below a tenth of the baseline
counts as solved.  Whether and when an LSTM leaves the baseline
plateau varies from one seed to the next (typically after 500-1000 steps at
T = 100 here); the GRU is usually quicker, and the tanh RNN stays stuck once
T is a few tens of steps.
"""

import numpy as np

from ._common import (
    Timer, UsageError, add_common_arguments, check_backend, choice_list, int_list,
    last_step_regression_step, plain, positive_float, positive_int, prepare_plot, progress, pyplot,
    save_figure,
)

NAME = "adding"
HELP = "the adding problem at several lengths: tanh RNN vs LSTM vs GRU"
DESCRIPTION = plain(__doc__) + """

examples:
  fastrnn adding                          # T = 10, 50, 100 (minutes on the numpy backend)
  fastrnn adding --lengths 200 --cells rnn,gru --plot adding.png
"""

CELLS = ("RNN", "LSTM", "GRU")
BASELINE = 1.0 / 6.0
SOLVED = 0.1 * BASELINE
#: steps between checks of the validation MSE (early stopping, "solved at")
CHECK_EVERY = 50


def add_arguments(p):
    p.add_argument("--lengths", type=int_list, default=[10, 50, 100],
                   help="sequence lengths, each at least 2, comma-separated (default: 10,50,100)")
    p.add_argument("--cells", type=choice_list(CELLS), default=list(CELLS),
                   help="models to compare, comma-separated (default: RNN,LSTM,GRU)")
    p.add_argument("--hidden", type=positive_int, default=32,
                   help="hidden size (default: %(default)s)")
    p.add_argument("--steps", type=positive_int, default=1500,
                   help="most Adam updates per model (default: %(default)s)")
    p.add_argument("--no-early-stop", action="store_true",
                   help="train every model for all --steps, even once it has solved the task")
    p.add_argument("--batch", type=positive_int, default=64,
                   help="sequences per update (default: %(default)s)")
    p.add_argument("--lr", type=positive_float, default=1e-2,
                   help="Adam learning rate (default: %(default)s)")
    p.add_argument("--clip", type=positive_float, default=1.0,
                   help="gradient norm clipping (default: %(default)s)")
    p.add_argument("--test-size", type=positive_int, default=1000,
                   help="held-out sequences for the final MSE (default: %(default)s)")
    add_common_arguments(p, plot_help="draw the learning curves")


def adding_batch(rng, T, B, dtype=np.float32):
    """A batch of the adding problem.

    Parameters
    ----------
    rng : numpy.random.Generator
    T : int
        Sequence length (>= 2).
    B : int
        Batch size.

    Returns
    -------
    x : (T, B, 2) array
        ``x[..., 0]`` values in U(0, 1), ``x[..., 1]`` the two markers.
    y : (B,) array
        Sum of the two marked values.
    """
    values = rng.random((T, B))
    first = rng.integers(0, T // 2, size=B)
    second = rng.integers(T // 2, T, size=B)
    markers = np.zeros((T, B))
    markers[first, np.arange(B)] = 1.0
    markers[second, np.arange(B)] = 1.0
    x = np.stack([values, markers], axis=-1).astype(dtype)
    y = values[first, np.arange(B)] + values[second, np.arange(B)]
    return x, y.astype(dtype)


def evaluate(layer, head, x, y):
    """Test MSE of the model on (x, y), in evaluation mode."""
    from ..train import mse_loss
    layer.eval(), head.eval()
    try:
        out, _ = layer(x)
        return mse_loss(head(out[-1])[:, 0], y)[0]
    finally:
        layer.train(), head.train()


def train_one(cell, T, args, backend, bar=None):
    """Train one model.

    Returns
    -------
    curve : (n,) array
        Training MSE of every step taken (n <= --steps: with early stopping
        the run ends once the model has solved the task).
    test_mse : float
        MSE on --test-size held-out sequences.
    solved_at : int or None
        The step after which the validation MSE first fell below SOLVED / 2.
    """
    import fastrnn
    from ..train import Adam, Linear

    seeds = np.random.SeedSequence([args.seed, T, CELLS.index(cell)]).generate_state(3)
    rng = np.random.default_rng(seeds[0])
    layer = getattr(fastrnn, cell)(2, args.hidden, backend=backend, seed=int(seeds[1]))
    head = Linear(args.hidden, 1, seed=int(seeds[2]))
    opt = Adam({"rnn": layer, "head": head}, lr=args.lr)
    x_val, y_val = adding_batch(np.random.default_rng([args.seed, T, 998]), T, 256)
    curve, solved_at = [], None
    for step in range(1, args.steps + 1):
        x, y = adding_batch(rng, T, args.batch)
        curve.append(last_step_regression_step(layer, head, opt, x, y, args.clip))
        if bar is not None:
            bar.update(1)
        if step % CHECK_EVERY == 0 and evaluate(layer, head, x_val, y_val) < SOLVED / 2:
            solved_at = step
            if not args.no_early_stop:
                if bar is not None:
                    bar.update(args.steps - step)
                break
    x, y = adding_batch(np.random.default_rng([args.seed, T, 999]), T, args.test_size)
    return np.array(curve), evaluate(layer, head, x, y), solved_at


def smooth(curve, width=25):
    """Moving average (the shorter window at the start), for the plot."""
    c = np.cumsum(np.insert(curve, 0, 0.0))
    idx = np.arange(1, len(curve) + 1)
    lo = np.maximum(0, idx - width)
    return (c[idx] - c[lo]) / (idx - lo)


def run(args):
    backend = check_backend(args.backend)
    plot = prepare_plot(args.plot)
    if min(args.lengths) < 2:
        raise UsageError(f"argument --lengths: every value must be at least 2, got "
                         f"{min(args.lengths)}")
    results, curves, solved = {}, {}, {}
    clock = Timer()
    total = len(args.lengths) * len(args.cells) * args.steps
    print(f"adding problem: {', '.join(args.cells)} with H={args.hidden}, {args.steps} Adam steps "
          f"(lr {args.lr:g}) of {args.batch} sequences, T = "
          f"{', '.join(map(str, args.lengths))}, backend {backend}", flush=True)
    bar = progress(total, "training", args.quiet, unit="step")
    try:
        for T in args.lengths:
            for cell in args.cells:
                bar.set_postfix_str(f"{cell} T={T}")
                curves[T, cell], results[T, cell], solved[T, cell] = train_one(
                    cell, T, args, backend, bar)
    finally:
        bar.close()

    print(f"\ntest MSE on {args.test_size} held-out sequences (baseline, always predicting 1: "
          f"1/6 = {BASELINE:.3f}); * = solved, MSE < {SOLVED:.4f}; in brackets: the step at "
          f"which the validation MSE first fell below {SOLVED / 2:.4f}"
          + ("" if args.no_early_stop else ", where training stopped"))
    print("     T" + "".join(f"{cell:>10}        " for cell in args.cells))
    for T in args.lengths:
        row = f"{T:>6}"
        for cell in args.cells:
            mse, at = results[T, cell], solved[T, cell]
            row += f"{mse:>10.4f}{'*' if mse < SOLVED else ' '}" + \
                (f" ({at:>4})" if at else " " * 7)
        print(row)
    print(f"done in {clock():.1f} s")

    if plot:
        plt = pyplot()
        fig, axes = plt.subplots(1, len(args.lengths), figsize=(4.2 * len(args.lengths), 3.6),
                                 sharey=True, squeeze=False)
        colors = {"RNN": "tab:red", "LSTM": "tab:blue", "GRU": "tab:green"}
        for ax, T in zip(axes[0], args.lengths):
            for cell in args.cells:
                curve = curves[T, cell]
                ax.semilogy(np.arange(1, len(curve) + 1), smooth(curve), color=colors[cell],
                            label=f"{cell} (test MSE {results[T, cell]:.2g})")
            ax.axhline(BASELINE, color="gray", linestyle="--", linewidth=1, label="baseline 1/6")
            ax.set_title(f"T = {T}")
            ax.set_xlim(0, args.steps)
            ax.set_xlabel("Adam step")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        axes[0][0].set_ylabel("training MSE (moving average)")
        if not args.no_early_stop:
            fig.text(0.5, -0.04, "a curve ends where its model solved the task (early stop)",
                     ha="center", fontsize=8, color="gray")
        fig.suptitle("The adding problem: tanh RNN vs LSTM vs GRU", y=1.02)
        save_figure(fig, plot)
    return 0
