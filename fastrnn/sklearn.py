"""scikit-learn estimators: :class:`RNNClassifier` and :class:`RNNRegressor`.

Many-to-one sequence models with scikit-learn's interface: one label (or one
value, or one row of values) per sequence, read from the recurrent layer's
output at the sequence's last valid step through a dense head.  They work in
pipelines, ``GridSearchCV``, ``cross_val_score``, and pickle.

scikit-learn is an optional dependency (``pip install "fastrnn[sklearn]"``):
this module imports it, ``import fastrnn`` does not import this module.

Input ``X``, in ``fit``, ``partial_fit``, ``predict``, ``predict_proba`` and ``score``:

- a 3-D array (N, T, F): N sequences of T steps of F features each;
- a 2-D array (N, T): N univariate sequences (F = 1), so a table whose rows
  are series of equal length works as is (the number of columns is the
  length of the sequences, not a number of features: it may differ between
  ``fit`` and ``predict``);
- a list of N arrays (T_i, F) (or (T_i,) for univariate sequences) of any
  lengths T_i, padded with zeros here and run with their lengths;
- with ``lengths=`` (an int per sequence), a padded array whose steps past
  each length are ignored.

Example::

    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from fastrnn.sklearn import RNNClassifier

    X, y = load_digits(return_X_y=True)
    X = X.reshape(-1, 8, 8) / 16.0                      # 8 rows of 8 pixels per image
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0, stratify=y)
    clf = RNNClassifier(cell="gru", hidden_size=64, lr=1e-2, max_epochs=30,
                        random_state=0).fit(X_train, y_train)
    clf.score(X_test, y_test)                           # about 0.98
"""

import inspect
import numbers
import sys

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
except ImportError as exc:
    raise ImportError(f"fastrnn.sklearn needs scikit-learn, which is not installed ({exc}): "
                      f"pip install 'fastrnn[sklearn]'") from exc
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d

from . import layers
from .backends import MODULES, resolve
from .train import SGD, Adam, AdamW, Linear, clip_grad_norm, cross_entropy, mse_loss, softmax

__all__ = ["RNNClassifier", "RNNRegressor"]

#: cell name -> (layer class, extra constructor arguments)
CELLS = {
    "lstm": (layers.LSTM, {}),
    "gru": (layers.GRU, {}),
    "rnn_tanh": (layers.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (layers.RNN, {"nonlinearity": "relu"}),
}
OPTIMIZERS = ("adam", "sgd", "adamw")

# scikit-learn 1.6 renamed check_array's force_all_finite to ensure_all_finite
_FINITE = ("ensure_all_finite" if "ensure_all_finite" in inspect.signature(check_array).parameters
           else "force_all_finite")
# predict runs the layer over blocks of sequences whose output is at most this many bytes
_PREDICT_BYTES = 64 << 20
# a check that cannot apply to a model whose 2-D input is (N, T) univariate sequences -> why
_SEQUENCE_LENGTH = ("a 2-D X is N univariate sequences of T steps: X[:, :k] (or X.T) is a valid "
                    "input of shorter (longer) sequences, not one with fewer features")
_EXPECTED_FAILED_CHECKS = {
    "check_n_features_in": "n_features_in_ is F, the features per step: 1 for a 2-D X (N, T), "
                           "not T",
    "check_n_features_in_after_fitting": _SEQUENCE_LENGTH + "; n_features_in_ is F = 1",
    "check_estimators_partial_fit_n_features": _SEQUENCE_LENGTH,
}
_EXPECTED_FAILED_CLASSIFIER_CHECKS = {
    **_EXPECTED_FAILED_CHECKS,
    "check_classifiers_train": _SEQUENCE_LENGTH + " (the check wants predict(X.T) to raise; "
                               "everything else it asserts is tested in tests/test_sklearn.py)",
}


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


class _RNNEstimator(BaseEstimator):
    """What :class:`RNNClassifier` and :class:`RNNRegressor` share: parameters, input
    handling, the training loop and the forward pass."""

    def __init__(self, cell="lstm", hidden_size=64, num_layers=1, bidirectional=False,
                 dropout=0.0, lr=1e-3, optimizer="adam", weight_decay=0.0, max_epochs=200,
                 batch_size=32, clip_norm=None, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=10, tol=1e-4, random_state=None, backend="auto", verbose=0,
                 dtype=np.float32):
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.lr = lr
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.clip_norm = clip_norm
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.random_state = random_state
        self.backend = backend
        self.verbose = verbose
        self.dtype = dtype

    # -- tags -------------------------------------------------------------------------------
    def __sklearn_tags__(self):   # scikit-learn >= 1.6
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True     # (N, T): univariate sequences
        tags.input_tags.three_d_array = True   # (N, T, F)
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        return tags

    def _more_tags(self):   # scikit-learn < 1.6
        return {"X_types": ["2darray", "3darray"], "allow_nan": False,
                "_xfail_checks": dict(self._expected_failed_checks())}

    def _expected_failed_checks(self):
        return _EXPECTED_FAILED_CHECKS

    # -- parameters ---------------------------------------------------------------------------
    def _check_params(self):
        """Every parameter checked (scikit-learn checks them in ``fit``, not in ``__init__``);
        returns the dtype as a numpy dtype."""
        name = type(self).__name__

        def fail(param, what, error=ValueError):
            value = getattr(self, param)
            raise error(f"{name}: {param} must be {what}, but got {value!r}")

        if not isinstance(self.cell, str) or self.cell not in CELLS:
            fail("cell", f"one of {list(CELLS)}")
        for param in ("hidden_size", "num_layers", "max_epochs", "batch_size", "n_iter_no_change"):
            value = getattr(self, param)
            if not _is_int(value):
                fail(param, "an int >= 1", TypeError)
            if value < 1:
                fail(param, "an int >= 1")
        if not isinstance(self.bidirectional, (bool, np.bool_)):
            fail("bidirectional", "a bool", TypeError)
        if not isinstance(self.early_stopping, (bool, np.bool_)):
            fail("early_stopping", "a bool", TypeError)
        for param, lo, lo_open, hi, hi_open in (("dropout", 0, False, 1, True),
                                                ("lr", 0, True, np.inf, True),
                                                ("weight_decay", 0, False, np.inf, True),
                                                ("validation_fraction", 0, True, 1, True),
                                                ("tol", 0, False, np.inf, True)):
            value = getattr(self, param)
            interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
            if not _is_real(value):
                fail(param, f"a real number in {interval}", TypeError)
            if not (np.isfinite(value) and (lo < value if lo_open else lo <= value)
                    and (value < hi if hi_open else value <= hi)):
                fail(param, f"a real number in {interval}")
        if not isinstance(self.optimizer, str) or self.optimizer not in OPTIMIZERS:
            fail("optimizer", f"one of {list(OPTIMIZERS)}")
        if self.clip_norm is not None:
            if not _is_real(self.clip_norm):
                fail("clip_norm", "None or a real number > 0", TypeError)
            if not self.clip_norm > 0:
                fail("clip_norm", "None or a real number > 0")
        if not isinstance(self.backend, str) or self.backend not in ("auto", *MODULES):
            fail("backend", f"one of {['auto', *MODULES]}")
        resolve(self.backend)   # RuntimeError saying why when it is known but missing here
        if not (_is_int(self.verbose) or isinstance(self.verbose, (bool, np.bool_))):
            fail("verbose", "a bool or an int >= 0", TypeError)
        if self.verbose < 0:
            fail("verbose", "a bool or an int >= 0")
        seed = self.random_state
        if seed is not None and not isinstance(seed, np.random.RandomState):
            if not _is_int(seed):
                fail("random_state", "None, an int in [0, 2**32 - 1] or a "
                     "numpy.random.RandomState", TypeError)
            if not 0 <= seed < 2 ** 32:
                fail("random_state", "None, an int in [0, 2**32 - 1] or a "
                     "numpy.random.RandomState")
        try:
            dtype = None if self.dtype is None else np.dtype(self.dtype)
        except (TypeError, ValueError):
            dtype = None
        if dtype is None or dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            fail("dtype", "np.float32 or np.float64")
        return dtype

    # -- input --------------------------------------------------------------------------------
    def _sequences(self, X, lengths, dtype, reset):
        """``X`` (and ``lengths``) as a padded (N, T, F) array of ``dtype`` and (N,) int64
        lengths.  Without ``reset``, F is checked against ``n_features_in_``."""
        name = type(self).__name__
        if X is None:
            raise ValueError(f"{name}: X must be an array-like of sequences, but got None")
        finite = {_FINITE: True}
        ragged = False
        if isinstance(X, (list, tuple)):
            try:
                probe = np.asarray(X)
            except ValueError:   # an inhomogeneous list: sequences of several lengths
                ragged = True
            else:
                ragged = (probe.dtype == object and probe.ndim == 1 and len(probe) > 0
                          and all(hasattr(e, "__len__") and not isinstance(e, (str, bytes))
                                  for e in probe))
        if ragged:
            seqs = []
            for i, seq in enumerate(X):
                arr = check_array(seq, dtype=dtype, ensure_2d=False, allow_nd=True,
                                  ensure_min_samples=0, ensure_min_features=0, estimator=self,
                                  input_name=f"X[{i}]", **finite)
                if arr.ndim == 1:
                    arr = arr[:, None]
                if arr.ndim != 2:
                    raise ValueError(f"{name}: each sequence of a list X must be a (T_i, F) or "
                                     f"(T_i,) array, but X[{i}] has shape {arr.shape}")
                if arr.shape[0] == 0:
                    raise ValueError(f"{name}: each sequence must have at least one step, but "
                                     f"X[{i}] has 0 (shape {arr.shape})")
                if arr.shape[1] == 0:
                    raise ValueError(f"{name}: X[{i}] has 0 features per step (shape "
                                     f"{arr.shape}), while a minimum of 1 is required")
                if seqs and arr.shape[1] != seqs[0].shape[1]:
                    raise ValueError(f"{name}: the sequences of a list X must all have the same "
                                     f"number of features, but X[0] has {seqs[0].shape[1]} and "
                                     f"X[{i}] has {arr.shape[1]}")
                seqs.append(arr)
            avail = np.array([len(s) for s in seqs], dtype=np.int64)
            Xp = np.zeros((len(seqs), int(avail.max()), seqs[0].shape[1]), dtype=dtype)
            for i, s in enumerate(seqs):
                Xp[i, :len(s)] = s
        else:
            arr = check_array(X, dtype=dtype, allow_nd=True, estimator=self, input_name="X",
                              **finite)
            if arr.ndim == 2:
                arr = arr[:, :, None]
            elif arr.ndim != 3:
                raise ValueError(f"{name}: X must be a 3-D array (N, T, F), a 2-D array (N, T) "
                                 f"of univariate sequences or a list of (T_i, F) arrays, but "
                                 f"got an array of shape {arr.shape}")
            if arr.shape[1] == 0:   # (check_array counts the columns of a 2-D X only)
                raise ValueError(f"{name}: X has sequences of 0 steps (shape {arr.shape}), while "
                                 f"a minimum of 1 is required")
            if arr.shape[2] == 0:
                raise ValueError(f"{name}: X has 0 features per step (shape {arr.shape}), while "
                                 f"a minimum of 1 is required")
            Xp = arr
            avail = np.full(len(arr), arr.shape[1], dtype=np.int64)
        F = Xp.shape[2]
        if lengths is None:
            lens = avail
        else:
            lens = self._lengths(lengths, avail)
        if not reset and F != self.n_features_in_:
            raise ValueError(f"X has {F} features, but {name} is expecting {self.n_features_in_} "
                             f"features as input (features per step: X is (N, T, F), or (N, T) "
                             f"with F = 1)")
        return Xp, lens

    def _check_samples(self, Xp, targets):
        if len(Xp) != len(targets):
            raise ValueError(f"{type(self).__name__}: X and y have inconsistent numbers of "
                             f"samples: X has {len(Xp)} sequences, y has {len(targets)} rows")

    def _lengths(self, lengths, avail):
        name = type(self).__name__
        try:
            arr = np.asarray(lengths)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name}: lengths must be an array-like of ints, one per sequence, "
                            f"but could not be converted: {exc}") from None
        if arr.dtype.kind not in "iu":
            raise TypeError(f"{name}: lengths must be ints, but got dtype {arr.dtype}")
        if arr.shape != avail.shape:
            raise ValueError(f"{name}: lengths must have shape ({len(avail)},), one per "
                             f"sequence of X, but got shape {arr.shape}")
        # (checked before the cast: a uint64 beyond int64 would wrap to a negative length)
        bad = np.flatnonzero((arr < 1) | (arr > avail))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"{name}: lengths must be between 1 and the number of steps of "
                             f"each sequence, but lengths[{i}] = {int(arr[i])} for a sequence of "
                             f"{int(avail[i])} steps ({bad.size} such)")
        return arr.astype(np.int64)

    # -- model ------------------------------------------------------------------------------------
    def _build(self, dtype, n_features, n_out):
        """A fresh layer, head, optimizer and shuffling generator, seeded from random_state."""
        self.n_features_in_ = n_features
        rs = check_random_state(self.random_state)
        seeds = rs.randint(0, 2 ** 31 - 1, size=4)
        layer_cls, extra = CELLS[self.cell]
        self.rnn_ = layer_cls(self.n_features_in_, self.hidden_size, num_layers=self.num_layers,
                              dropout=float(self.dropout), bidirectional=bool(self.bidirectional),
                              dtype=dtype, backend=self.backend, seed=int(seeds[0]), **extra)
        D = 2 if self.bidirectional else 1
        self.head_ = Linear(D * self.hidden_size, n_out, dtype=dtype, seed=int(seeds[1]))
        modules = {"rnn": self.rnn_, "head": self.head_}
        kw = dict(lr=float(self.lr), weight_decay=float(self.weight_decay))
        if self.optimizer == "adam":
            self.optimizer_ = Adam(modules, **kw)
        elif self.optimizer == "adamw":
            self.optimizer_ = AdamW(modules, **kw)
        else:
            self.optimizer_ = SGD(modules, momentum=0.9, nesterov=True, **kw)
        self._shuffle_rng = np.random.default_rng(int(seeds[2]))
        self._split_seed = int(seeds[3])
        self.rnn_.eval()
        self.head_.eval()
        self.n_iter_ = 0
        self.loss_curve_ = []

    def _features(self, out, lens):
        """The (B, D*H) output read for each sequence: the forward direction at its last valid
        step, the backward direction (bidirectional) at step 0, where it ends."""
        H, rows = self.rnn_.hidden_size, np.arange(out.shape[1])
        feats = out[lens - 1, rows]
        if self.rnn_.bidirectional:
            feats[:, H:] = out[0, :, H:]
        return feats

    def _dout(self, out, lens, dfeats):
        """dLoss/dout: zeros but at the steps :meth:`_features` read."""
        H, rows = self.rnn_.hidden_size, np.arange(out.shape[1])
        dout = np.zeros_like(out)
        dout[lens - 1, rows, :H] = dfeats[:, :H]
        if self.rnn_.bidirectional:
            dout[0, :, H:] = dfeats[:, H:]
        return dout

    @staticmethod
    def _batch(Xp, lens, idx):
        """Time-major (T_b, B, F) input of the sequences ``idx``, cut at their longest length,
        and their lengths (None when they all run to T_b)."""
        lb = lens[idx]
        T = int(lb.max())
        xb = np.ascontiguousarray(Xp[idx, :T].transpose(1, 0, 2))
        return xb, lb, (None if np.all(lb == T) else lb)

    def _forward(self, Xp, lens):
        """Head outputs (N, n_out) of the fitted model, in evaluation mode, by blocks."""
        N = len(Xp)
        width = self.head_.in_features
        per_seq = max(1, Xp.shape[1] * width * Xp.dtype.itemsize)
        block = max(1, min(N, _PREDICT_BYTES // per_seq))
        outs = []
        for start in range(0, N, block):
            idx = np.arange(start, min(N, start + block))
            xb, lb, lb_arg = self._batch(Xp, lens, idx)
            out, _ = self.rnn_(xb, lengths=lb_arg)
            outs.append(self.head_(self._features(out, lb)))
        return np.concatenate(outs, axis=0)

    # -- training -----------------------------------------------------------------------------------
    def _loss_and_grads(self, Xp, lens, targets, idx):
        """The loss of the sequences ``idx`` (training-mode forward); its gradients added to
        the layer's and the head's."""
        xb, lb, lb_arg = self._batch(Xp, lens, idx)
        out, _ = self.rnn_(xb, lengths=lb_arg)
        loss, dpred = self._loss(self.head_(self._features(out, lb)), targets[idx])
        self.rnn_.backward(self._dout(out, lb, self.head_.backward(dpred)), input_grad=False)
        return loss

    def _epoch(self, Xp, lens, targets):
        """One pass over the data in shuffled mini-batches; returns the mean loss."""
        rnn, head, opt = self.rnn_, self.head_, self.optimizer_
        N = len(Xp)
        order = self._shuffle_rng.permutation(N)
        total = 0.0
        rnn.train()
        head.train()
        try:
            for start in range(0, N, self.batch_size):
                idx = order[start:start + self.batch_size]
                loss = self._loss_and_grads(Xp, lens, targets, idx)
                if self.clip_norm is not None:
                    clip_grad_norm(opt.grads, float(self.clip_norm))
                opt.step()
                opt.zero_grad()
                total += loss * len(idx)
        finally:
            rnn.eval()
            head.eval()
        if not np.isfinite(total):
            raise FloatingPointError(
                f"{type(self).__name__}: the training loss became {total / N} in epoch "
                f"{self.n_iter_ + 1}; lower lr or set clip_norm")
        # each loss is the model's before its step: the last steps may have overflowed it
        bad = next((name for name, p in (*rnn.parameters().items(),
                                         *head.parameters().items())
                    if not np.all(np.isfinite(p))), None)
        if bad is not None:
            self._diverged(bad, total / N, self.n_iter_ + 1)
        return total / N

    def _diverged(self, what, loss, epoch):
        raise FloatingPointError(
            f"{type(self).__name__}: the model's {what} became non-finite in epoch {epoch} "
            f"(its mean loss, each taken before its step, was {loss:.5g}); lower lr or set "
            f"clip_norm")

    def _finite_outputs(self, Xp, lens, loss):
        """Head outputs of ``Xp`` (sequences ``lens``) after epoch ``n_iter_``, or
        FloatingPointError where the model, its parameters finite, makes non-finite ones
        (weights large enough to overflow the states: a relu cell's are unbounded)."""
        out = self._forward(Xp, lens)
        if not np.all(np.isfinite(out)):
            self._diverged("outputs", loss, self.n_iter_)
        return out

    def _train(self, Xp, lens, targets, epochs, incremental):
        """The loop of ``fit`` (``epochs`` = max_epochs, stopping rules on) or of one
        ``partial_fit`` call (one epoch, no early stopping)."""
        early = bool(self.early_stopping) and not incremental
        self.optimizer_.lr = float(self.lr)       # as set now (partial_fit: set_params between
        self.optimizer_.weight_decay = float(self.weight_decay)   # calls changes them)
        if early:
            if len(Xp) < 2:
                raise ValueError(f"{type(self).__name__}: early_stopping needs at least 2 "
                                 f"samples to hold out a validation set, but got 1 sample")
            tr, va = self._validation_split(targets)
            Xv, lv, tv = Xp[va], lens[va], targets[va]
            Xp, lens, targets = Xp[tr], lens[tr], targets[tr]
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            best_params = None
        best, stale = np.inf, 0
        bar = self._progress(epochs) if self.verbose and not incremental else None
        try:
            for _ in range(epochs):
                loss = self._epoch(Xp, lens, targets)
                self.n_iter_ += 1
                self.loss_curve_.append(loss)
                note = f"loss {loss:.5g}"
                if early:
                    score = self._score(self._finite_outputs(Xv, lv, loss), tv)
                    self.validation_scores_.append(score)
                    note += f", validation score {score:.5g}"
                    if score > self.best_validation_score_:
                        best_params = (self.rnn_.state_dict(), self.head_.state_dict())
                    stale = 0 if score > self.best_validation_score_ + self.tol else stale + 1
                    self.best_validation_score_ = max(self.best_validation_score_, score)
                elif not incremental:
                    stale = 0 if loss < best - self.tol else stale + 1
                    best = min(best, loss)
                if self.verbose and not incremental:
                    self._report(bar, note)
                if not incremental and stale >= self.n_iter_no_change:
                    break
        finally:
            if bar is not None:
                bar.close()
        if early:
            self.rnn_.load_state_dict(best_params[0])
            self.head_.load_state_dict(best_params[1])
        else:
            # the last epoch's outputs, on one batch (a forward: in a partial_fit of one batch,
            # a third more time; the validation outputs above are checked at every epoch)
            first = np.arange(min(len(Xp), self.batch_size))
            self._finite_outputs(Xp[first], lens[first], loss)
        if self.verbose and incremental:
            print(f"{type(self).__name__} epoch {self.n_iter_}: loss {loss:.5g}",
                  file=sys.stderr, flush=True)

    def _validation_split(self, targets):
        """Training and validation indices for early stopping (stratified for a classifier
        whose every class has at least two samples)."""
        N = len(targets)
        # the sizes train_test_split makes (ceil for the test share), checked first: its own
        # error names its test_size and train_size, which are not this estimator's
        n_val = int(np.ceil(self.validation_fraction * N))
        need = 1 if isinstance(self, ClassifierMixin) else 2   # R^2 needs two samples
        if N - n_val < 1 or n_val < need:
            raise ValueError(f"{type(self).__name__}: early_stopping with validation_fraction="
                             f"{self.validation_fraction} of {N} samples leaves {N - n_val} for "
                             f"training and {n_val} for validation (at least 1 and {need})")
        stratify = None
        if isinstance(self, ClassifierMixin):
            counts = np.bincount(targets)
            if counts[counts > 0].min() >= 2 and n_val >= np.count_nonzero(counts) \
                    and N - n_val >= np.count_nonzero(counts):
                stratify = targets
        return train_test_split(np.arange(N), test_size=self.validation_fraction,
                                random_state=self._split_seed, stratify=stratify)

    def _progress(self, epochs):
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        return tqdm(total=epochs, desc=type(self).__name__, unit="epoch", file=sys.stderr,
                    leave=True)

    def _report(self, bar, note):
        if bar is not None:
            bar.set_postfix_str(note, refresh=False)
            bar.update(1)
        else:
            print(f"{type(self).__name__} epoch {self.n_iter_}: {note}", file=sys.stderr,
                  flush=True)


class RNNClassifier(ClassifierMixin, _RNNEstimator):
    """Sequence classifier: a recurrent layer read at each sequence's last step, a dense head,
    softmax cross-entropy.

    The layer (``cell``) runs over each sequence; its output at the sequence's
    last valid step (bidirectional: the forward direction's there, the backward
    direction's at step 0, where it ends) goes through a
    :class:`fastrnn.train.Linear` head to one logit per class.  Training runs
    mini-batches of ``batch_size`` shuffled sequences through
    :func:`fastrnn.train.cross_entropy`, the backward pass of the head and of
    the layer (the gradient enters the layer at the steps read), optional
    gradient clipping and one step of the optimizer.

    Parameters
    ----------
    cell : {"lstm", "gru", "rnn_tanh", "rnn_relu"}, default="lstm"
        The recurrent layer: :class:`fastrnn.LSTM`, :class:`fastrnn.GRU`, or
        :class:`fastrnn.RNN` with a tanh or relu nonlinearity.
    hidden_size : int, default=64
        Hidden size H of the layer.
    num_layers : int, default=1
        Stacked recurrent layers.
    bidirectional : bool, default=False
        Run every layer in both directions; the head reads 2*H values.
    dropout : float in [0, 1), default=0.0
        Dropout between stacked layers during training, as in PyTorch (none with
        ``num_layers=1``: the layer warns).
    lr : float, default=1e-3
        Learning rate.
    optimizer : {"adam", "sgd", "adamw"}, default="adam"
        :class:`fastrnn.train.Adam`, :class:`fastrnn.train.SGD` (Nesterov
        momentum 0.9) or :class:`fastrnn.train.AdamW` (decoupled weight decay).
    weight_decay : float, default=0.0
        L2 penalty (adam, sgd) or decoupled weight decay (adamw).
    max_epochs : int, default=200
        Most passes over the training data in ``fit``.
    batch_size : int, default=32
        Sequences per optimizer step.
    clip_norm : float or None, default=None
        Scale the gradients so that their joint 2-norm is at most this before
        each step (:func:`fastrnn.train.clip_grad_norm`); None: no clipping.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified),
        stop when its accuracy has not improved by ``tol`` for
        ``n_iter_no_change`` epochs, and keep the parameters of the best
        epoch.  Without it, ``fit`` stops when the training loss has not
        decreased by ``tol`` for ``n_iter_no_change`` epochs.
    validation_fraction : float in (0, 1), default=0.1
        The share held out by ``early_stopping``.
    n_iter_no_change : int, default=10
        Epochs without improvement before stopping.
    tol : float, default=1e-4
        The improvement that counts.
    random_state : None, int or numpy RandomState, default=None
        Seeds the initial weights, the shuffling, dropout and the validation
        split: an int makes ``fit`` reproducible (bit for bit on one machine
        and backend).
    backend : {"auto", "numpy", "numba", "cython"}, default="auto"
        The fastrnn backend of the layer.
    verbose : bool or int, default=0
        Show a progress bar over the epochs (tqdm, when installed: ``pip install
        "fastrnn[progress]"``; otherwise one line per epoch on stderr).
    dtype : np.float32 or np.float64, default=np.float32
        Precision of the parameters and of the computation.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels.
    n_features_in_ : int
        F, the number of features per step (1 for a 2-D X).
    n_iter_ : int
        Epochs run (``fit`` resets it, each ``partial_fit`` adds one).
    loss_curve_ : list of float
        Mean training loss of each epoch.
    validation_scores_ : list of float
        With ``early_stopping``: the validation accuracy of each epoch.
    best_validation_score_ : float
        With ``early_stopping``: the best of them, whose parameters are kept.
    rnn_ : fastrnn.LSTM, fastrnn.GRU or fastrnn.RNN
        The trained layer (``batch_first=False``, in evaluation mode).
    head_ : fastrnn.train.Linear
        The trained head, (D*H) -> n_classes.
    optimizer_ : fastrnn.train.Optimizer
        The optimizer, with its state (``partial_fit`` continues with it).

    Notes
    -----
    ``X`` is a 3-D array (N, T, F), a 2-D array (N, T) of univariate
    sequences, or a list of (T_i, F) or (T_i,) arrays of any lengths; with
    ``lengths``, the steps of a padded X past each length are ignored.  A 2-D X
    is read as sequences, so its number of columns may differ between ``fit``
    and ``predict``; the number of features F may not.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.model_selection import train_test_split
    >>> from fastrnn.sklearn import RNNClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> X = X.reshape(-1, 8, 8) / 16.0                  # (N, T=8 rows, F=8 pixels)
    >>> X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0, stratify=y)
    >>> clf = RNNClassifier(cell="gru", hidden_size=64, lr=1e-2, max_epochs=30,
    ...                     random_state=0).fit(X_train, y_train)
    >>> clf.predict_proba(X_test).shape
    (450, 10)
    >>> clf.score(X_test, y_test) > 0.97
    True
    """

    def _expected_failed_checks(self):
        return _EXPECTED_FAILED_CLASSIFIER_CHECKS

    @staticmethod
    def _loss(logits, targets):
        return cross_entropy(logits, targets)

    def _targets(self, y, classes):
        """``y`` as indices into ``classes`` (None: the labels of y), and those classes."""
        name = type(self).__name__
        if y is None:
            raise ValueError(f"{name} requires y to be passed, but the target y is None")
        y = column_or_1d(y, warn=True)
        if y.dtype.kind in "fc" and not np.all(np.isfinite(y)):   # before NumPy casts them
            what = "NaN" if np.any(np.isnan(y)) else "infinity"
            raise ValueError(f"{name}: Input y contains {what}; y holds the class labels")
        check_classification_targets(y)
        if classes is None:
            classes = np.unique(y)
        unknown = np.setdiff1d(y, classes)
        if unknown.size:
            raise ValueError(f"{name}: y holds labels not in classes {classes.tolist()}: "
                             f"{unknown[:8].tolist()}")
        return np.searchsorted(classes, y).astype(np.intp), classes

    def fit(self, X, y, lengths=None):
        """Train from scratch on sequences ``X`` and labels ``y``.

        Parameters
        ----------
        X : array-like of shape (N, T, F) or (N, T), or list of N arrays (T_i, F) or (T_i,)
            The sequences.
        y : array-like of shape (N,)
            One label per sequence (ints, strings, ...).
        lengths : array-like of shape (N,) of ints, optional
            Valid steps of each sequence of a padded ``X`` (1 <= lengths[i] <=
            its steps); the rest are ignored.

        Returns
        -------
        self : RNNClassifier
        """
        dtype = self._check_params()
        Xp, lens = self._sequences(X, lengths, dtype, reset=True)
        targets, classes = self._targets(y, None)
        self._check_samples(Xp, targets)
        for attr in ("validation_scores_", "best_validation_score_"):
            self.__dict__.pop(attr, None)
        self.classes_ = classes
        self._build(dtype, Xp.shape[2], len(classes))
        self._train(Xp, lens, targets, self.max_epochs, incremental=False)
        return self

    def partial_fit(self, X, y, classes=None, lengths=None):
        """One epoch over ``X``, ``y``, starting from the current parameters.

        The first call (before any ``fit``) builds the model from the parameters; later
        calls take ``lr``, ``weight_decay``, ``batch_size`` and ``clip_norm`` as they are
        then (``set_params`` between calls changes them), the rest as built.  No early
        stopping, no stopping rule: one epoch per call.

        Parameters
        ----------
        X, y, lengths : as in :meth:`fit`
        classes : array-like of shape (n_classes,)
            Every label there will be: required on the first call (before
            any ``fit``), optional later (it must then equal ``classes_``).

        Returns
        -------
        self : RNNClassifier
        """
        first = not hasattr(self, "rnn_")
        name = type(self).__name__
        if classes is not None:
            try:
                given = column_or_1d(classes, warn=True)    # (a column too, as for y)
            except ValueError:
                raise ValueError(f"{name}: classes must be a 1-D array of labels, but got shape "
                                 f"{np.shape(classes)}") from None
            check_classification_targets(given)
            classes = np.unique(given)
            if len(classes) != len(given):
                raise ValueError(f"{name}: classes must be distinct labels, but got "
                                 f"{given.tolist()}")
        if first and classes is None:
            raise ValueError(f"{name}: classes must be passed on the first call to partial_fit "
                             f"(every label there will be)")
        if not first and classes is not None and not np.array_equal(classes, self.classes_):
            raise ValueError(f"{name}: classes={classes.tolist()} is not the same as on the "
                             f"first call to partial_fit, classes_={self.classes_.tolist()}")
        dtype = self._check_params()
        if not first:
            dtype = self.rnn_.dtype
        Xp, lens = self._sequences(X, lengths, dtype, reset=first)
        targets, classes = self._targets(y, classes if first else self.classes_)
        self._check_samples(Xp, targets)
        if first:
            self.classes_ = classes
            self._build(dtype, Xp.shape[2], len(classes))
        self._train(Xp, lens, targets, 1, incremental=True)
        return self

    def _score(self, outputs, targets):
        return accuracy_score(targets, np.argmax(outputs, axis=1))

    def predict_proba(self, X, lengths=None):
        """Class probabilities.

        Parameters
        ----------
        X, lengths : as in :meth:`fit`

        Returns
        -------
        proba : ndarray of shape (N, n_classes), float64
            Softmax of the head's logits; columns in the order of ``classes_``.
        """
        check_is_fitted(self)
        Xp, lens = self._sequences(X, lengths, self.rnn_.dtype, reset=False)
        return softmax(self._forward(Xp, lens).astype(np.float64), axis=1)

    def predict_log_proba(self, X, lengths=None):
        """Logarithm of :meth:`predict_proba`, shape (N, n_classes)."""
        return np.log(self.predict_proba(X, lengths))

    def predict(self, X, lengths=None):
        """The most probable class of each sequence.

        Parameters
        ----------
        X, lengths : as in :meth:`fit`

        Returns
        -------
        y : ndarray of shape (N,)
            Labels from ``classes_``.
        """
        proba = self.predict_proba(X, lengths)
        return self.classes_[np.argmax(proba, axis=1)]

    def score(self, X, y, sample_weight=None, lengths=None):
        """Mean accuracy on ``X``, ``y`` (weighted by ``sample_weight``).

        Parameters
        ----------
        X, y, lengths : as in :meth:`fit`
        sample_weight : array-like of shape (N,), optional

        Returns
        -------
        score : float
        """
        return accuracy_score(y, self.predict(X, lengths), sample_weight=sample_weight)


class RNNRegressor(RegressorMixin, _RNNEstimator):
    """Sequence regressor: a recurrent layer read at each sequence's last step, a dense head,
    mean squared error.

    As :class:`RNNClassifier`, with one output per target column and the mean
    squared error of the targets standardised with the mean and standard
    deviation of the training targets (of the first ``partial_fit`` call);
    :meth:`predict` undoes the standardisation.

    Parameters
    ----------
    cell, hidden_size, num_layers, bidirectional, dropout, lr, optimizer, weight_decay, \
max_epochs, batch_size, clip_norm, n_iter_no_change, tol, random_state, backend, verbose, dtype
        As in :class:`RNNClassifier`.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data, stop when its
        R^2 has not improved by ``tol`` for ``n_iter_no_change`` epochs, and
        keep the parameters of the best epoch.  Without it, ``fit`` stops
        when the training loss has not decreased by ``tol`` for
        ``n_iter_no_change`` epochs.
    validation_fraction : float in (0, 1), default=0.1
        The share held out by ``early_stopping``.

    Attributes
    ----------
    n_features_in_ : int
        F, the number of features per step (1 for a 2-D X).
    n_outputs_ : int
        Target columns k (1 for a 1-D y).
    n_iter_, loss_curve_, rnn_, head_, optimizer_
        As in :class:`RNNClassifier` (the loss is that of the standardised targets).
    validation_scores_, best_validation_score_ : list of float, float
        With ``early_stopping``: the validation R^2 of each epoch, and the best.

    Examples
    --------
    >>> import numpy as np
    >>> from fastrnn.sklearn import RNNRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(-1, 1, (600, 12))               # 600 univariate sequences of 12 steps
    >>> y = X.sum(axis=1)
    >>> reg = RNNRegressor(cell="gru", hidden_size=32, lr=1e-2, max_epochs=40,
    ...                    random_state=0).fit(X[:500], y[:500])
    >>> reg.score(X[500:], y[500:]) > 0.9
    True
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _more_tags(self):
        return {**super()._more_tags(), "multioutput": True}

    @staticmethod
    def _loss(pred, targets):
        return mse_loss(pred, targets)

    def _targets(self, y, dtype, scaling):
        """``y`` as a (N, k) array of ``dtype`` standardised by ``scaling`` = (ndim of y, k,
        mean, scale), or by its own mean and standard deviation (None); and the scaling."""
        name = type(self).__name__
        if y is None:
            raise ValueError(f"{name} requires y to be passed, but the target y is None")
        y = check_array(y, ensure_2d=False, allow_nd=True, dtype=np.float64, input_name="y",
                        estimator=self, **{_FINITE: True})
        if y.ndim not in (1, 2):
            raise ValueError(f"{name}: y must be 1-D (N,) or 2-D (N, k), but got shape {y.shape}")
        y2 = y.reshape(len(y), -1)
        if scaling is None:
            if y2.shape[1] == 0:
                raise ValueError(f"{name}: y must have at least one column, but got shape "
                                 f"{y.shape}")
            scale = y2.std(axis=0)
            scaling = (y.ndim, y2.shape[1], y2.mean(axis=0), np.where(scale > 0, scale, 1.0))
        elif y2.shape[1] != scaling[1]:
            raise ValueError(f"{name}: y has {y2.shape[1]} columns, but the model predicts "
                             f"{scaling[1]}")
        return ((y2 - scaling[2]) / scaling[3]).astype(dtype), scaling

    def _set_scaling(self, scaling):
        self._y_ndim, self.n_outputs_, self._y_mean, self._y_scale = scaling

    def fit(self, X, y, lengths=None):
        """Train from scratch on sequences ``X`` and targets ``y``.

        Parameters
        ----------
        X : array-like of shape (N, T, F) or (N, T), or list of N arrays (T_i, F) or (T_i,)
            The sequences.
        y : array-like of shape (N,) or (N, k)
            One value (or k values) per sequence.
        lengths : array-like of shape (N,) of ints, optional
            Valid steps of each sequence of a padded ``X``.

        Returns
        -------
        self : RNNRegressor
        """
        dtype = self._check_params()
        Xp, lens = self._sequences(X, lengths, dtype, reset=True)
        targets, scaling = self._targets(y, dtype, None)
        self._check_samples(Xp, targets)
        for attr in ("validation_scores_", "best_validation_score_"):
            self.__dict__.pop(attr, None)
        self._set_scaling(scaling)
        self._build(dtype, Xp.shape[2], self.n_outputs_)
        self._train(Xp, lens, targets, self.max_epochs, incremental=False)
        return self

    def partial_fit(self, X, y, lengths=None):
        """One epoch over ``X``, ``y``, starting from the current parameters.

        As :meth:`RNNClassifier.partial_fit`; the standardisation of the targets is
        set by the first call (or by ``fit``).

        Parameters
        ----------
        X, y, lengths : as in :meth:`fit`

        Returns
        -------
        self : RNNRegressor
        """
        first = not hasattr(self, "rnn_")
        dtype = self._check_params()
        if not first:
            dtype = self.rnn_.dtype
        Xp, lens = self._sequences(X, lengths, dtype, reset=first)
        scaling = None if first else (self._y_ndim, self.n_outputs_, self._y_mean, self._y_scale)
        targets, scaling = self._targets(y, dtype, scaling)
        self._check_samples(Xp, targets)
        if first:
            self._set_scaling(scaling)
            self._build(dtype, Xp.shape[2], self.n_outputs_)
        self._train(Xp, lens, targets, 1, incremental=True)
        return self

    def _score(self, outputs, targets):
        return r2_score(targets, outputs)

    def predict(self, X, lengths=None):
        """Predicted targets.

        Parameters
        ----------
        X, lengths : as in :meth:`fit`

        Returns
        -------
        y : ndarray of shape (N,), or (N, k) when fitted on a 2-D y; float64
        """
        check_is_fitted(self)
        Xp, lens = self._sequences(X, lengths, self.rnn_.dtype, reset=False)
        pred = self._forward(Xp, lens).astype(np.float64) * self._y_scale + self._y_mean
        return pred[:, 0] if self._y_ndim == 1 else pred

    def score(self, X, y, sample_weight=None, lengths=None):
        """R^2 of :meth:`predict` on ``X`` against ``y`` (uniform average over outputs).

        Parameters
        ----------
        X, y, lengths : as in :meth:`fit`
        sample_weight : array-like of shape (N,), optional

        Returns
        -------
        score : float
        """
        return r2_score(y, self.predict(X, lengths), sample_weight=sample_weight)
