"""fastrnn.sklearn: scikit-learn's estimator checks, a real data set (digits read as sequences),
ragged input, partial_fit, early stopping, determinism, pickling, the gradient the training
loop feeds the layer, and errors.

scikit-learn is optional: without it these tests skip, unless FASTRNN_REQUIRE_SKLEARN=1 (CI)
makes its absence a failure.
"""

import inspect
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import required

if required("FASTRNN_REQUIRE_SKLEARN"):
    import sklearn  # CI installs it (the sklearn extra): missing, it is a failure, not a skip
else:
    sklearn = pytest.importorskip("sklearn", minversion="1.4", reason=(
        "scikit-learn is not installed (pip install -e \".[sklearn]\"); set "
        "FASTRNN_REQUIRE_SKLEARN=1 to make this a failure"))

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits, make_blobs  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastrnn.sklearn import RNNClassifier, RNNRegressor  # noqa: E402

from helpers import BACKENDS  # noqa: E402


def ragged(rng, n, features, max_len=12):
    """``n`` sequences (T_i, features) of lengths 1..max_len (the first two: max_len and 1)."""
    lens = rng.integers(1, max_len + 1, size=n)
    lens[:2] = max_len, 1
    return [rng.standard_normal((t, features)) for t in lens]


def padded(seqs, fill=7.0):
    """The sequences in one (N, T, F) array padded with ``fill``, and their lengths."""
    lens = np.array([len(s) for s in seqs])
    out = np.full((len(seqs), lens.max(), seqs[0].shape[1]), fill)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
    return out, lens


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's digits (bundled, no download), 8 rows of 8 pixels as (N, T=8, F=8)."""
    X, y = load_digits(return_X_y=True)
    return X.reshape(-1, 8, 8) / 16.0, y


# -- scikit-learn's own checks --------------------------------------------------------------------
CHECKED = [RNNClassifier(random_state=0), RNNRegressor(random_state=0)]   # the defaults
_XFAIL = ({"expected_failed_checks": lambda est: est._expected_failed_checks()}
          if "expected_failed_checks" in inspect.signature(parametrize_with_checks).parameters
          else {})   # scikit-learn < 1.6 reads them from the _xfail_checks tag


#: scikit-learn checks that need what the test extras leave out (pandas; SCIPY_ARRAY_API with an
#: array-API library): left out of the list rather than collected and skipped
_NEEDS_OTHER_PACKAGES = ("check_array_api_input", "_data_not_an_array")


def _without_checks_needing_other_packages(mark):
    def name(value):
        check = value.values[1] if hasattr(value, "values") else value[1]
        return getattr(check, "func", check).__name__
    argnames, argvalues = mark.args[0], list(mark.args[1])
    kept = [v for v in argvalues if not any(n in name(v) for n in _NEEDS_OTHER_PACKAGES)]
    assert len(kept) == len(argvalues) - 2 * len(_NEEDS_OTHER_PACKAGES)
    return pytest.mark.parametrize(argnames, kept, **mark.kwargs)


@_without_checks_needing_other_packages(parametrize_with_checks(CHECKED, **_XFAIL))
def test_sklearn_estimator_checks(estimator, check):
    """Every check of scikit-learn's suite, but the few listed with their reason in
    fastrnn.sklearn (they assume a 2-D X has features for columns)."""
    check(estimator)


def test_expected_failures_are_few_and_explained():
    for est in CHECKED:
        failed = est._expected_failed_checks()
        assert len(failed) <= 4
        assert all(len(reason) > 40 for reason in failed.values())


def test_tags():
    try:
        from sklearn.utils import get_tags
    except ImportError:   # scikit-learn < 1.6: the _more_tags dict
        for est in CHECKED:
            tags = est._get_tags()
            assert tags["X_types"] == ["2darray", "3darray"] and not tags["allow_nan"]
            assert tags["_xfail_checks"] == est._expected_failed_checks()
        assert CHECKED[1]._get_tags()["multioutput"]
        return
    for est in CHECKED:
        tags = get_tags(est)
        assert tags.input_tags.two_d_array and tags.input_tags.three_d_array
        assert not tags.input_tags.allow_nan and not tags.input_tags.sparse
        assert not tags.non_deterministic
    assert get_tags(CHECKED[1]).target_tags.multi_output


@pytest.mark.parametrize("X_dtype", ["float64", "float32"])
def test_classifier_trains_on_blobs(X_dtype):
    """What check_classifiers_train asserts, but that predict(X.T) raises (X.T is a valid input
    of two longer sequences here): blobs learnt, lists accepted, probabilities consistent."""
    X_m, y_m = make_blobs(n_samples=300, random_state=0)
    X_m = ((X_m - X_m.mean(0)) / X_m.std(0)).astype(X_dtype)
    for X, y in ((X_m[y_m != 2], y_m[y_m != 2]), (X_m, y_m)):
        clf = clone(CHECKED[0])
        with pytest.raises(ValueError, match="inconsistent numbers of samples"):
            clf.fit(X, y[:-1])
        clf.fit(X.tolist(), y.tolist())
        pred = clf.predict(X)
        assert pred.shape == (len(X),) and np.mean(pred == y) > 0.83
        np.testing.assert_array_equal(clf.classes_, np.unique(y))
        proba = clf.predict_proba(X)
        assert proba.shape == (len(X), len(clf.classes_))
        np.testing.assert_array_equal(np.argmax(proba, axis=1), pred)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba))
        with pytest.raises(ValueError, match="X has 2 features, but RNNClassifier is expecting "
                                             "1 features"):
            clf.predict(X[:, :, None].repeat(2, axis=2))


def test_import_fastrnn_does_not_import_sklearn():
    code = ("import sys, fastrnn; assert 'sklearn' not in sys.modules, 'sklearn imported'; "
            "assert 'fastrnn.sklearn' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- a real data set --------------------------------------------------------------------------------
def test_digits_rows(digits):
    """Digits read row by row (T=8 steps of F=8 pixels): >= 97% held-out accuracy in seconds."""
    X, y = digits
    X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0, stratify=y)
    start = time.perf_counter()
    clf = RNNClassifier(cell="gru", hidden_size=64, lr=1e-2, max_epochs=30, random_state=0)
    clf.fit(X_train, y_train)
    elapsed = time.perf_counter() - start
    accuracy = clf.score(X_test, y_test)
    print(f"digits, rows as steps: accuracy {accuracy:.4f} in {elapsed:.1f} s")
    assert accuracy >= 0.97
    assert elapsed < 20
    assert clf.n_features_in_ == 8 and clf.n_iter_ == len(clf.loss_curve_) <= 30


def test_grid_search(digits):
    X, y = digits
    search = GridSearchCV(RNNClassifier(cell="gru", lr=1e-2, max_epochs=8, random_state=0),
                          {"hidden_size": [8, 32]}, cv=2)
    search.fit(X[:300], y[:300])
    assert search.best_params_["hidden_size"] in (8, 32)
    assert search.cv_results_["mean_test_score"].shape == (2,)
    assert search.best_estimator_.hidden_size == search.best_params_["hidden_size"]
    assert search.score(X[300:600], y[300:600]) > 0.7


# -- input forms ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("Estimator", [RNNClassifier, RNNRegressor])
def test_list_of_sequences_equals_padded_with_lengths(Estimator, bidirectional):
    rng = np.random.default_rng(0)
    seqs = ragged(rng, 50, 3)
    X, lens = padded(seqs, fill=7.0)      # the padding must be ignored, whatever it holds
    y = np.array([s[:, 0].sum() for s in seqs])
    if Estimator is RNNClassifier:
        y = (y > 0).astype(int)
    kw = dict(cell="gru", hidden_size=8, bidirectional=bidirectional, max_epochs=4,
              batch_size=16, random_state=0)
    a = Estimator(**kw).fit(seqs, y)
    b = Estimator(**kw).fit(X, y, lengths=lens)
    method = "predict_proba" if Estimator is RNNClassifier else "predict"
    ref = getattr(a, method)(seqs)
    np.testing.assert_array_equal(getattr(b, method)(X, lengths=lens), ref)
    np.testing.assert_array_equal(getattr(a, method)(X, lengths=lens), ref)
    np.testing.assert_array_equal(a.loss_curve_, b.loss_curve_)
    # one sequence alone gives what it gives among others (to float32 rounding)
    np.testing.assert_allclose(getattr(a, method)([seqs[5]]), ref[5:6], rtol=1e-5, atol=1e-6)
    # score takes lengths too
    assert a.score(X, y, lengths=lens) == a.score(seqs, y)


def test_univariate_forms():
    """(N, T) is N univariate sequences: the same as (N, T, 1), and as a list of (T,) arrays;
    predict takes sequences of another length."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 6))
    y = X.sum(axis=1)
    kw = dict(cell="lstm", hidden_size=8, max_epochs=3, random_state=0)
    a = RNNRegressor(**kw).fit(X, y)
    b = RNNRegressor(**kw).fit(X[:, :, None], y)
    c = RNNRegressor(**kw).fit(list(X), y)
    assert a.n_features_in_ == b.n_features_in_ == c.n_features_in_ == 1
    np.testing.assert_array_equal(a.predict(X), b.predict(X[:, :, None]))
    np.testing.assert_array_equal(a.predict(X), c.predict(X))
    seqs = [rng.standard_normal(t) for t in (1, 9, 4)]
    assert a.predict(seqs).shape == (3,)
    assert a.predict(rng.standard_normal((5, 20))).shape == (5,)


def test_training_gradient_matches_finite_differences():
    """The gradient of one training batch, entering the layer at each sequence's last valid step
    (and, bidirectional, at step 0 for the backward direction), against central differences."""
    rng = np.random.default_rng(2)
    seqs = ragged(rng, 6, 2, max_len=5)
    X, lens = padded(seqs)
    y = np.array([0, 1, 2, 1, 0, 2])
    clf = RNNClassifier(cell="lstm", hidden_size=3, num_layers=2, bidirectional=True,
                        max_epochs=1, dtype=np.float64, backend="numpy", random_state=0)
    clf.fit(X, y, lengths=lens)
    Xp, lp = clf._sequences(X, lens, np.dtype(np.float64), reset=False)
    idx = np.array([3, 0, 1, 5])
    targets = np.searchsorted(clf.classes_, y)
    clf.optimizer_.zero_grad()
    clf.rnn_.train()
    clf.head_.train()
    clf._loss_and_grads(Xp, lp, targets, idx)
    clf.rnn_.eval()
    clf.head_.eval()

    def loss():
        return clf._loss(clf._forward(Xp[idx], lp[idx]), targets[idx])[0]

    params, grads = clf.optimizer_.params, clf.optimizer_.grads
    for name in ("rnn.weight_ih_l0", "rnn.weight_hh_l0_reverse", "rnn.bias_ih_l1",
                 "rnn.weight_hh_l1_reverse", "head.weight", "head.bias"):
        p, g = params[name].reshape(-1), grads[name].reshape(-1)
        for k in rng.choice(p.size, size=min(4, p.size), replace=False):
            old = p[k]
            p[k] = old + 1e-6
            up = loss()
            p[k] = old - 1e-6
            down = loss()
            p[k] = old
            assert abs((up - down) / 2e-6 - g[k]) < 1e-7 + 1e-5 * abs(g[k]), (name, k)


# -- training ---------------------------------------------------------------------------------------
def test_partial_fit():
    X, y = make_blobs(n_samples=120, n_features=4, random_state=0)
    X = X[:, :, None]                        # 4 steps of 1 feature
    clf = RNNClassifier(cell="gru", hidden_size=16, lr=1e-2, random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(X, y)
    with pytest.raises(ValueError, match=r"classes must be a 1-D array of labels, but got shape "
                                         r"\(1, 3\)"):
        clf.partial_fit(X, y, classes=[[0, 1, 2]])
    assert not hasattr(clf, "classes_")
    for epoch in range(15):
        for part in (slice(0, 60), slice(60, 120)):
            clf.partial_fit(X[part], y[part], classes=[0, 1, 2] if epoch == 0 else None)
    assert clf.n_iter_ == len(clf.loss_curve_) == 30
    assert clf.score(X, y) > 0.9
    with pytest.raises(ValueError, match="not the same as on the first call"):
        clf.partial_fit(X, y, classes=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="not in classes"):
        clf.partial_fit(X, y + 1)
    # one partial_fit call is one epoch of fit: the same seeds, shuffling and updates
    one = RNNClassifier(cell="gru", hidden_size=16, lr=1e-2, max_epochs=1, random_state=0)
    one.fit(X, y)
    inc = clone(one).partial_fit(X, y, classes=np.unique(y))
    np.testing.assert_array_equal(one.predict_proba(X), inc.predict_proba(X))
    # fit then partial_fit continues from there, with the optimizer's state
    one.partial_fit(X, y)
    inc.partial_fit(X, y)
    assert one.n_iter_ == inc.n_iter_ == 2
    np.testing.assert_array_equal(one.predict_proba(X), inc.predict_proba(X))
    # lr is read at each call; the architecture is the one built
    inc.set_params(lr=1e-3, hidden_size=4).partial_fit(X, y)
    assert inc.optimizer_.lr == 1e-3 and inc.rnn_.hidden_size == 16


def test_regressor_partial_fit_keeps_the_first_scaling():
    rng = np.random.default_rng(3)
    X = rng.uniform(-1, 1, (200, 5))
    y = 10 + 3 * X.sum(axis=1)
    reg = RNNRegressor(cell="gru", hidden_size=16, lr=1e-2, random_state=0)
    for _ in range(25):
        reg.partial_fit(X[:100], y[:100])
        reg.partial_fit(X[100:], y[100:])
    assert reg.n_iter_ == 50 and reg.n_outputs_ == 1
    assert reg.score(X, y) > 0.9
    with pytest.raises(ValueError, match="y has 2 columns, but the model predicts 1"):
        reg.partial_fit(X, np.c_[y, y])


def test_early_stopping(digits):
    X, y = digits
    X, y = X[:500], y[:500]
    clf = RNNClassifier(cell="gru", hidden_size=16, lr=3e-2, max_epochs=200, early_stopping=True,
                        validation_fraction=0.2, n_iter_no_change=3, random_state=0).fit(X, y)
    assert clf.n_iter_ < 200
    scores = clf.validation_scores_
    assert len(scores) == clf.n_iter_ == len(clf.loss_curve_)
    assert clf.best_validation_score_ == max(scores) > 0.5
    assert clf.n_iter_ - 1 - int(np.argmax(scores)) >= 3     # stopped for 3 epochs without gain
    # the parameters kept are those of the best epoch: its validation score again
    _, va = clf._validation_split(np.searchsorted(clf.classes_, y))
    assert len(va) == 100
    assert clf.score(X[va], y[va]) == clf.best_validation_score_
    # without early stopping there is no validation score, and fit stops on the training loss
    plain = clone(clf).set_params(early_stopping=False).fit(X, y)
    assert not hasattr(plain, "best_validation_score_")
    assert not hasattr(clone(clf).set_params(early_stopping=False).fit(X, y), "validation_scores_")
    reg = RNNRegressor(cell="gru", hidden_size=8, lr=1e-2, early_stopping=True, n_iter_no_change=2,
                       random_state=0).fit(X[:, :, 0], X[:, :, 0].sum(axis=1))
    assert reg.best_validation_score_ == max(reg.validation_scores_)


@pytest.mark.parametrize("Estimator", [RNNClassifier, RNNRegressor])
def test_deterministic_given_random_state(Estimator):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((64, 7, 2))
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    kw = dict(cell="lstm", hidden_size=8, num_layers=2, dropout=0.3, max_epochs=3,
              batch_size=16)
    method = "predict_proba" if Estimator is RNNClassifier else "predict"
    first = Estimator(random_state=0, **kw).fit(X, y)
    again = Estimator(random_state=0, **kw).fit(X, y)
    np.testing.assert_array_equal(getattr(first, method)(X), getattr(again, method)(X))
    assert first.loss_curve_ == again.loss_curve_
    refit = first.fit(X, y)              # fit starts over: same result
    np.testing.assert_array_equal(getattr(refit, method)(X), getattr(again, method)(X))
    other = Estimator(random_state=1, **kw).fit(X, y)
    assert not np.array_equal(getattr(other, method)(X), getattr(again, method)(X))
    state = Estimator(random_state=np.random.RandomState(0), **kw).fit(X, y)
    assert state.loss_curve_ == Estimator(random_state=np.random.RandomState(0), **kw) \
        .fit(X, y).loss_curve_


@pytest.mark.parametrize("Estimator", [RNNClassifier, RNNRegressor])
def test_pickle_round_trip(Estimator):
    rng = np.random.default_rng(5)
    seqs = ragged(rng, 40, 2)
    y = np.array([int(s[-1, 0] > 0) for s in seqs])
    est = Estimator(cell="gru", hidden_size=8, bidirectional=True, max_epochs=3,
                    random_state=0).fit(seqs, y)
    method = "predict_proba" if Estimator is RNNClassifier else "predict"
    loaded = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(getattr(loaded, method)(seqs), getattr(est, method)(seqs))
    assert loaded.get_params() == est.get_params()
    # training continues identically: optimizer state and shuffling generator came along
    est.partial_fit(seqs, y)
    loaded.partial_fit(seqs, y)
    np.testing.assert_array_equal(getattr(loaded, method)(seqs), getattr(est, method)(seqs))


def test_regressor_learns_the_sum():
    rng = np.random.default_rng(6)
    X = rng.uniform(-1, 1, (600, 12))              # 600 univariate sequences of 12 steps
    y = X.sum(axis=1)
    reg = RNNRegressor(cell="gru", hidden_size=32, lr=1e-2, max_epochs=40, random_state=0)
    reg.fit(X[:500], y[:500])
    r2 = reg.score(X[500:], y[500:])
    print(f"sum of 12 steps: R^2 {r2:.4f}")
    assert r2 > 0.9
    assert reg.predict(X[500:]).shape == (100,) and reg.predict(X[500:]).dtype == np.float64


def test_regressor_multi_output():
    rng = np.random.default_rng(7)
    seqs = [rng.uniform(-1, 1, (t, 2)) for t in rng.integers(3, 10, size=500)]
    Y = np.array([[s[:, 0].sum(), 100 + 10 * s[-1, 1]] for s in seqs])   # two targets, two scales
    reg = RNNRegressor(cell="gru", hidden_size=32, lr=1e-2, max_epochs=30, random_state=0)
    reg.fit(seqs[:400], Y[:400])
    assert reg.n_outputs_ == 2
    pred = reg.predict(seqs[400:])
    assert pred.shape == (100, 2)
    assert reg.score(seqs[400:], Y[400:]) > 0.9
    column = RNNRegressor(cell="gru", hidden_size=4, max_epochs=2, random_state=0)
    assert column.fit(seqs, Y[:, :1]).predict(seqs[:3]).shape == (3, 1)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "numpy"] or ["auto"])
def test_backend_parity_float64(backend):
    """The compiled backends train and predict as the NumPy reference does, at float64."""
    rng = np.random.default_rng(8)
    seqs = ragged(rng, 30, 3, max_len=6)
    y = np.array([int(s[:, 1].sum() > 0) for s in seqs])
    kw = dict(cell="gru", hidden_size=6, bidirectional=True, max_epochs=3, batch_size=8,
              dtype=np.float64, random_state=0)
    ref = RNNClassifier(backend="numpy", **kw).fit(seqs, y)
    got = RNNClassifier(backend=backend, **kw).fit(seqs, y)
    assert got.rnn_.dtype == np.float64
    np.testing.assert_allclose(got.predict_proba(seqs), ref.predict_proba(seqs),
                               rtol=1e-9, atol=1e-11)
    np.testing.assert_array_equal(got.predict(seqs), ref.predict(seqs))


# -- progress -----------------------------------------------------------------------------------------
def test_verbose(capsys, monkeypatch):
    X = np.random.default_rng(9).standard_normal((20, 4))
    y = np.arange(20) % 2
    RNNClassifier(hidden_size=4, max_epochs=3, verbose=1, random_state=0).fit(X, y)
    err = capsys.readouterr().err
    pytest.importorskip("tqdm")
    assert "RNNClassifier" in err and "3/3" in err           # tqdm's bar
    monkeypatch.setitem(sys.modules, "tqdm", None)            # as if tqdm were not installed
    RNNClassifier(hidden_size=4, max_epochs=3, verbose=1, random_state=0).fit(X, y)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"RNNClassifier epoch {k}" for k in (1, 2, 3)]
    RNNClassifier(hidden_size=4, max_epochs=3, random_state=0).fit(X, y)
    assert capsys.readouterr().err == ""


# -- errors -------------------------------------------------------------------------------------------
_X = np.random.default_rng(10).standard_normal((8, 5, 2))
_y = np.arange(8) % 2


def _nan(a, value=np.nan):
    a = a.copy()
    a[3, 2, 1] = value
    return a


@pytest.mark.parametrize("params, X, y, kwargs, error, match", [
    (dict(cell="transformer"), _X, _y, {}, ValueError, r"cell must be one of \['lstm', 'gru'"),
    (dict(cell=None), _X, _y, {}, ValueError, "cell must be one of"),
    (dict(hidden_size=0), _X, _y, {}, ValueError, "hidden_size must be an int >= 1, but got 0"),
    (dict(hidden_size=2.5), _X, _y, {}, TypeError, "hidden_size must be an int"),
    (dict(num_layers=True), _X, _y, {}, TypeError, "num_layers must be an int"),
    (dict(max_epochs=-1), _X, _y, {}, ValueError, "max_epochs"),
    (dict(batch_size=0), _X, _y, {}, ValueError, "batch_size"),
    (dict(n_iter_no_change=0), _X, _y, {}, ValueError, "n_iter_no_change"),
    (dict(bidirectional="yes"), _X, _y, {}, TypeError, "bidirectional must be a bool"),
    (dict(early_stopping=1), _X, _y, {}, TypeError, "early_stopping must be a bool"),
    (dict(dropout=1.0), _X, _y, {}, ValueError, r"dropout must be a real number in \[0, 1\)"),
    (dict(dropout="0.1"), _X, _y, {}, TypeError, "dropout must be a real number"),
    (dict(lr=0), _X, _y, {}, ValueError, "lr must be a real number in"),
    (dict(lr=np.nan), _X, _y, {}, ValueError, "lr must be a real number in"),
    (dict(weight_decay=-1), _X, _y, {}, ValueError, "weight_decay"),
    (dict(validation_fraction=1.0), _X, _y, {}, ValueError, "validation_fraction"),
    (dict(tol=-1e-3), _X, _y, {}, ValueError, "tol"),
    (dict(optimizer="rmsprop"), _X, _y, {}, ValueError, "optimizer must be one of"),
    (dict(clip_norm=0), _X, _y, {}, ValueError, "clip_norm must be None or a real number > 0"),
    (dict(clip_norm="1"), _X, _y, {}, TypeError, "clip_norm"),
    (dict(backend="gpu"), _X, _y, {}, ValueError, "backend must be one of"),
    (dict(verbose=-1), _X, _y, {}, ValueError, "verbose must be a bool or an int >= 0"),
    (dict(verbose="1"), _X, _y, {}, TypeError, "verbose must be a bool or an int >= 0"),
    (dict(random_state=-1), _X, _y, {}, ValueError, r"random_state must be None, an int in"),
    (dict(random_state=2 ** 32), _X, _y, {}, ValueError, r"random_state must be None, an int"),
    (dict(random_state="a"), _X, _y, {}, TypeError, r"random_state must be None, an int in"),
    (dict(random_state=True), _X, _y, {}, TypeError, r"random_state must be None, an int in"),
    (dict(random_state=np.random.default_rng(0)), _X, _y, {}, TypeError,
     r"numpy.random.RandomState, but got Generator"),
    (dict(dtype=np.int32), _X, _y, {}, ValueError, "dtype must be np.float32 or np.float64"),
    (dict(dtype=None), _X, _y, {}, ValueError, "dtype"),
    ({}, _X[:, 0, 0], _y, {}, ValueError, "Expected 2D array, got 1D array"),
    ({}, _X[:, :, :, None], _y, {}, ValueError, r"X must be a 3-D array \(N, T, F\)"),
    ({}, _X[:, :, :0], _y, {}, ValueError, "0 features per step"),
    ({}, _X[:, :0], _y, {}, ValueError, "X has sequences of 0 steps"),
    ({}, _X[:, :0, 0], _y, {}, ValueError, r"0 feature\(s\)"),   # check_array's words: 0 steps
    ({}, _X[:0], _y[:0], {}, ValueError, r"0 sample\(s\)"),
    ({}, _nan(_X), _y, {}, ValueError, "Input X contains NaN"),
    ({}, _nan(_X, np.inf), _y, {}, ValueError, "Input X contains infinity"),
    ({}, "abc", _y, {}, ValueError, None),
    ({}, None, _y, {}, ValueError, "X must be an array-like of sequences, but got None"),
    ({}, _X, _y[:-1], {}, ValueError, "X has 8 sequences, y has 7"),
    ({}, _X, None, {}, ValueError, "requires y to be passed, but the target y is None"),
    ({}, _X, np.linspace(0, 1, 8), {}, ValueError, "Unknown label type"),
    ({}, _X, np.c_[_y, _y], {}, ValueError, "y should be a 1d array"),
    ({}, _X, np.r_[_y[:-1], np.inf], {}, ValueError, "Input y contains infinity"),
    ({}, _X, _y, dict(lengths=[5] * 7), ValueError, r"lengths must have shape \(8,\)"),
    ({}, _X, _y, dict(lengths=[5] * 7 + [6]), ValueError,
     r"lengths\[7\] = 6 for a sequence of 5 steps"),
    ({}, _X, _y, dict(lengths=[5] * 7 + [0]), ValueError, "lengths must be between 1"),
    ({}, _X, _y, dict(lengths=[5.0] * 8), TypeError, "lengths must be ints"),
    ({}, _X, _y, dict(lengths=np.full(8, 2 ** 63, np.uint64)), ValueError,
     r"lengths\[0\] = 9223372036854775808 for a sequence of 5 steps"),   # (not wrapped)
    ({}, [np.ones((3, 2)), np.ones((4, 3))], [0, 1], {}, ValueError,
     r"X\[0\] has 2 and X\[1\] has 3"),
    ({}, [np.ones((3, 2)), np.ones((0, 2))], [0, 1], {}, ValueError,
     r"X\[1\] has 0 \(shape \(0, 2\)\)"),
    ({}, [np.ones((3, 2)), np.ones((4, 2, 1))], [0, 1], {}, ValueError,
     r"X\[1\] has shape \(4, 2, 1\)"),
    ({}, [np.ones((3, 2)), np.ones((4, 0))], [0, 1], {}, ValueError,
     r"X\[1\] has 0 features per step"),
    ({}, [np.ones((3, 2)), np.array([[1.0, np.nan]])], [0, 1], {}, ValueError,
     r"Input X\[1\] contains NaN"),
    ({}, [np.ones((3, 2)), np.ones((4, 2))], [0, 1], dict(lengths=[3, 5]), ValueError,
     r"lengths\[1\] = 5 for a sequence of 4 steps"),
    (dict(early_stopping=True), _X[:1], _y[:1], {}, ValueError, "at least 2 samples"),
])
def test_fit_errors(params, X, y, kwargs, error, match):
    with pytest.raises(error, match=match):
        RNNClassifier(**{"max_epochs": 1, **params}).fit(X, y, **kwargs)


def test_divergence_is_an_error():
    X = np.random.default_rng(11).standard_normal((32, 20)) * 10
    reg = RNNRegressor(cell="rnn_relu", hidden_size=32, lr=1e4, optimizer="sgd", max_epochs=20,
                       random_state=0)
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match="lower lr or set "
                                                                            "clip_norm"):
        reg.fit(X, X.sum(axis=1))


@pytest.mark.parametrize("make,early", [(RNNRegressor, False), (RNNRegressor, True),
                                         (RNNClassifier, True), (RNNClassifier, False)])
def test_divergence_in_the_last_steps_is_an_error(make, early):
    """Each mini-batch's loss is the one before its step: the steps of the last epoch (or of
    one partial_fit) that overflow the weights left a model that predicted only NaN (the
    classifier class 0, its validation score kept as the best)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 10, 2))
    y = X.sum((1, 2)) if make is RNNRegressor else (X.sum((1, 2)) > 0).astype(int)
    params = dict(cell="rnn_relu", optimizer="sgd", lr=1.0 if make is RNNRegressor else 100.0,
                  max_epochs=2 if make is RNNRegressor else 1, early_stopping=early,
                  random_state=0)
    epoch = params["max_epochs"]          # (the last one, whose steps overflowed the model)
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match=f"became non-finite "
                                                                            f"in epoch {epoch} "):
        make(**params).fit(X, y)
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match="non-finite"):
        est = make(**{**params, "max_epochs": 1})
        for _ in range(3):
            est.partial_fit(X, y, **({"classes": [0, 1]} if make is RNNClassifier else {}))


def test_regressor_errors():
    reg = RNNRegressor(max_epochs=1)
    with pytest.raises(ValueError, match="Input y contains NaN"):
        reg.fit(_X, np.full(8, np.nan))
    with pytest.raises(ValueError, match="y must be 1-D"):
        reg.fit(_X, np.zeros((8, 1, 1)))
    with pytest.raises(ValueError, match="leaves 2 for training and 1 for validation"):
        RNNRegressor(early_stopping=True, validation_fraction=0.2).fit(_X[:3], np.arange(3.0))
    for est in (RNNRegressor, RNNClassifier):     # (not train_test_split's own error)
        with pytest.raises(ValueError, match=rf"^{est.__name__}: early_stopping with "
                                             rf"validation_fraction=0.98 of 8 samples leaves 0 "
                                             rf"for training and 8 for validation"):
            est(early_stopping=True, validation_fraction=0.98).fit(_X, np.arange(8) % 2)


def test_predict_errors():
    clf = RNNClassifier(hidden_size=4, max_epochs=1)
    for method in (clf.predict, clf.predict_proba, clf.predict_log_proba):
        with pytest.raises(NotFittedError):
            method(_X)
    clf.fit(_X, _y)
    with pytest.raises(ValueError, match="X has 3 features, but RNNClassifier is expecting 2"):
        clf.predict(np.ones((2, 5, 3)))
    with pytest.raises(ValueError, match="X has 1 features"):
        clf.predict(np.ones((2, 5)))
    with pytest.raises(ValueError, match="Input X contains NaN"):
        clf.predict_proba(_nan(_X))
    with pytest.raises(ValueError, match="lengths must have shape"):
        clf.predict(_X, lengths=[1, 2])
    with pytest.raises(ValueError, match="X has 1 features"):
        clf.partial_fit(np.ones((2, 5)), [0, 1])


def test_docstring_examples():
    import doctest

    import fastrnn.sklearn
    result = doctest.testmod(fastrnn.sklearn, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0


def test_forecaster_falls_out_of_the_regressor():
    """A forecaster is RNNRegressor on windows of a series (the README's example): yearly
    sunspots, 12 years in, the next year out, fitted on 1712-1951 and scored on 1952-2008,
    well ahead of repeating the last value."""
    from numpy.lib.stride_tricks import sliding_window_view
    from fastrnn.data import load_sunspots
    _, s = load_sunspots()
    w = sliding_window_view(s, 13) / 100.0
    X, y = w[:, :12], w[:, 12]
    reg = RNNRegressor(cell="gru", hidden_size=32, lr=1e-2, max_epochs=100, random_state=0)
    reg.fit(X[:240], y[:240])
    mae = np.abs(reg.predict(X[240:]) - y[240:]).mean()
    naive = np.abs(X[240:, -1] - y[240:]).mean()
    print(f"sunspots, next year: MAE {100 * mae:.1f} against {100 * naive:.1f} for the last value")
    assert mae < 0.8 * naive
    assert reg.score(X[240:], y[240:]) > 0.8
