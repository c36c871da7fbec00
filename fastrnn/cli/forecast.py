"""``fastrnn forecast``: one-step-ahead forecasting of the yearly sunspot numbers.

A many-to-one recurrent model reads a window of the last --window years and
predicts the next year through a dense head.  It is trained on every window
of the series before the held-out tail (the last --test years), with Adam on
the mean squared error of standardised values, and then forecasts each year
of the tail from the true values before it.  It is compared on that tail
with the naive forecast "next year = this year" (which it has to beat) and,
for context, with a linear autoregression AR(--window) fitted by least squares
on the same training windows.

The data, shipped with fastrnn: yearly mean sunspot numbers 1700-2008 from
NOAA's National Geophysical Data Center, via the statsmodels package (public
domain).  --data FILE forecasts any other series: a CSV file whose last
column holds the numbers (a header line and a first column of labels such as
years are optional).
"""

import csv
import math

import numpy as np

from ._common import (
    CommandError, Timer, add_common_arguments, check_backend, last_step_regression_step, plain,
    positive_float, positive_int, prepare_plot, progress, pyplot, save_figure,
)

NAME = "forecast"
HELP = "forecast the yearly sunspot numbers with a GRU or LSTM, against the naive forecast"
DESCRIPTION = plain(__doc__) + """

examples:
  fastrnn forecast
  fastrnn forecast --cell lstm --hidden 64 --plot forecast.png
  fastrnn forecast --data my_series.csv --window 12 --test 24
"""


def add_arguments(p):
    p.add_argument("--data", metavar="FILE.csv",
                   help="CSV file of the series, numbers in the last column "
                        "(default: the shipped yearly sunspot numbers)")
    p.add_argument("--cell", type=str.lower, choices=["gru", "lstm", "rnn"], default="gru",
                   help="recurrent layer (default: %(default)s)")
    p.add_argument("--hidden", type=positive_int, default=32,
                   help="hidden size (default: %(default)s)")
    p.add_argument("--window", type=positive_int, default=20,
                   help="past values the model reads per forecast (default: %(default)s)")
    p.add_argument("--test", type=positive_int, default=40,
                   help="held-out values at the end of the series (default: %(default)s)")
    p.add_argument("--epochs", type=positive_int, default=150,
                   help="passes over the training windows (default: %(default)s)")
    p.add_argument("--batch", type=positive_int, default=32,
                   help="windows per Adam update (default: %(default)s)")
    p.add_argument("--lr", type=positive_float, default=5e-3,
                   help="Adam learning rate (default: %(default)s)")
    p.add_argument("--clip", type=positive_float, default=1.0,
                   help="gradient norm clipping (default: %(default)s)")
    add_common_arguments(p, plot_help="draw the held-out forecasts against the truth")


def read_series(path):
    """Labels and values of a CSV file whose last column holds numbers.

    Returns
    -------
    labels : list of str (the first column, or positions when there is one column)
    values : (N,) float64 array
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:   # Excel writes a BOM
            reader = csv.reader(fh)     # (line_num: the file's line, blank ones counted)
            rows = [(reader.line_num, r) for r in reader if r and any(c.strip() for c in r)]
    except FileNotFoundError:
        raise CommandError(f"data file {path!r} does not exist") from None
    except IsADirectoryError:
        raise CommandError(f"--data {path!r} is a directory, not a CSV file") from None
    except PermissionError:
        raise CommandError(f"data file {path!r} is not readable (permission denied)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CommandError(f"cannot read data file {path!r}: {exc}") from None
    labels, values = [], []
    for i, (line, row) in enumerate(rows):
        try:
            v = float(row[-1])
        except ValueError:
            if i == 0:          # a header line
                continue
            raise CommandError(f"{path}: line {line}: the last column must be a number, "
                               f"got {row[-1]!r}") from None
        if not math.isfinite(v):
            raise CommandError(f"{path}: line {line}: value {row[-1]!r} is not finite")
        labels.append(row[0].strip() if len(row) > 1 else str(len(values)))
        values.append(v)
    if not values:
        raise CommandError(f"{path}: no numbers found")
    return labels, np.array(values)


def make_windows(series, window):
    """Inputs (W, N, 1) of every window of ``series`` and the value after each, (N,)."""
    n = len(series) - window
    idx = np.arange(window)[:, None] + np.arange(n)[None, :]
    return series[idx][:, :, None], series[window:]


def fit_ar(x, y):
    """Least-squares AR coefficients (with intercept) from windows x (W, N, 1) -> y (N,)."""
    A = np.concatenate([x[:, :, 0].T, np.ones((x.shape[1], 1))], axis=1)
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    return lambda xs: np.concatenate([xs[:, :, 0].T, np.ones((xs.shape[1], 1))], axis=1) @ coef


def errors(pred, truth):
    diff = pred - truth
    return math.sqrt(float(np.mean(diff ** 2))), float(np.mean(np.abs(diff)))


def run(args):
    import fastrnn
    from ..train import Adam, Linear

    backend = check_backend(args.backend)
    plot = prepare_plot(args.plot)
    if args.data:
        labels, values = read_series(args.data)
        source = args.data
    else:
        from ..data import load_sunspots
        years, values = load_sunspots()
        labels = [str(y) for y in years]
        source = "yearly sunspot numbers 1700-2008 (NOAA NGDC, via statsmodels; shipped with fastrnn)"
    W, n_test = args.window, args.test
    if len(values) < W + n_test + 10:
        raise CommandError(f"the series has {len(values)} values; --window {W} + --test {n_test} "
                           f"needs at least {W + n_test + 10} (10 training windows)")

    train_part = values[:-n_test]
    mean, std = float(train_part.mean()), float(train_part.std()) or 1.0
    scaled = ((values - mean) / std).astype(np.float32)
    x_all, y_all = make_windows(scaled, W)             # window i predicts value W + i
    n_train = len(values) - n_test - W
    x_train, y_train = x_all[:, :n_train], y_all[:n_train]
    x_test, truth = x_all[:, n_train:], values[-n_test:]

    rng = np.random.default_rng(args.seed)
    seeds = np.random.SeedSequence(args.seed).generate_state(2)
    cls = {"gru": fastrnn.GRU, "lstm": fastrnn.LSTM, "rnn": fastrnn.RNN}[args.cell]
    layer = cls(1, args.hidden, backend=backend, seed=int(seeds[0]))
    head = Linear(args.hidden, 1, seed=int(seeds[1]))
    opt = Adam({"rnn": layer, "head": head}, lr=args.lr)
    print(f"forecast: {source}")
    print(f"{len(values)} values; training on {n_train} windows of {W} "
          f"({labels[0]}-{labels[-n_test - 1]}), held-out tail {labels[-n_test]}-{labels[-1]} "
          f"({n_test} one-step forecasts); {layer!r} + {head!r}, backend {layer.backend}",
          flush=True)

    clock = Timer()
    batches = math.ceil(n_train / args.batch)
    bar = progress(args.epochs, "training", args.quiet, unit="epoch")
    first = last = None
    try:
        for epoch in range(args.epochs):
            order = rng.permutation(n_train)
            total = 0.0
            for b in range(batches):
                sel = order[b * args.batch:(b + 1) * args.batch]
                loss = last_step_regression_step(layer, head, opt, x_train[:, sel], y_train[sel],
                                                 args.clip)
                total += loss * len(sel)
            last = total / n_train
            first = last if first is None else first
            bar.update(1)
            bar.set_postfix_str(f"train MSE {last:.4f} (standardised)")
        layer.eval(), head.eval()
        out, _ = layer(x_test)
        model_pred = head(out[-1])[:, 0].astype(np.float64) * std + mean
    finally:
        bar.close()

    naive_pred = values[-n_test - 1:-1]
    ar_pred = fit_ar(x_train.astype(np.float64), y_train.astype(np.float64))(
        x_test.astype(np.float64)) * std + mean
    rows = [(f"{args.cell.upper()} (H={args.hidden}, window {W})", model_pred),
            ("naive: next = last value", naive_pred),
            (f"linear AR({W}), least squares", ar_pred)]
    print(f"\ntraining MSE (standardised) {first:.4f} -> {last:.4f} in {clock():.1f} s")
    print(f"one-step forecasts of the held-out {labels[-n_test]}-{labels[-1]}:")
    print(f"  {'model':<36}{'RMSE':>9}{'MAE':>9}")
    for name, pred in rows:
        rmse, mae = errors(pred, truth)
        print(f"  {name:<36}{rmse:>9.2f}{mae:>9.2f}")
    model_rmse, naive_rmse = errors(model_pred, truth)[0], errors(naive_pred, truth)[0]
    if naive_rmse == 0:     # a flat tail: every held-out value equals the one before it
        print(f"the naive forecast is exact on the held-out tail (RMSE 0: every value equals "
              f"the one before it), so there is nothing to beat; the {args.cell.upper()} has "
              f"RMSE {model_rmse:.2f}")
    else:
        verdict = "beats" if model_rmse < naive_rmse else "does NOT beat"
        print(f"the {args.cell.upper()} {verdict} the naive forecast: RMSE {model_rmse:.2f} vs "
              f"{naive_rmse:.2f} ({100 * (1 - model_rmse / naive_rmse):+.0f}%)")

    if plot:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(8, 4))
        try:
            xs = np.array([float(v) for v in labels])
        except ValueError:
            xs = np.arange(len(values), dtype=float)
        lo = max(0, len(values) - n_test - 3 * W)
        ax.plot(xs[lo:], values[lo:], color="black", linewidth=1.5, label="truth")
        ax.plot(xs[-n_test:], model_pred, color="tab:blue", marker="o", markersize=3,
                label=f"{args.cell.upper()} (RMSE {model_rmse:.1f})")
        ax.plot(xs[-n_test:], naive_pred, color="tab:orange", linestyle="--",
                label=f"naive last value (RMSE {naive_rmse:.1f})")
        ax.axvspan(xs[-n_test] - 0.5, xs[-1] + 0.5, color="gray", alpha=0.12, label="held out")
        ax.set_xlabel("year" if not args.data else "")
        ax.set_ylabel("sunspot number" if not args.data else "value")
        ax.set_title("One-step-ahead forecasts on the held-out tail")
        ax.legend(fontsize=8)
        ax.grid(True, alpha=0.3)
        save_figure(fig, plot)
    return 0
