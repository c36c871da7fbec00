"""fastrnn.dask: batch inference over chunked dask arrays and data-parallel training, on a
2-process LocalCluster (loopback only, one per module) and on the local threaded scheduler.

dask and distributed are optional: without them these tests skip, unless
FASTRNN_REQUIRE_DASK=1 (CI) makes their absence a failure.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from helpers import required

if required("FASTRNN_REQUIRE_DASK"):
    import dask  # CI installs them (the dask extra): missing, it is a failure, not a skip
    import distributed
else:
    dask = pytest.importorskip("dask", minversion="2024.1", reason=(
        "dask is not installed (pip install -e \".[dask]\"); set FASTRNN_REQUIRE_DASK=1 to "
        "make this a failure"))
    distributed = pytest.importorskip("distributed", minversion="2024.1", reason=(
        "distributed is not installed (pip install -e \".[dask]\"); set FASTRNN_REQUIRE_DASK=1 "
        "to make this a failure"))

import dask.array as da  # noqa: E402

import fastrnn  # noqa: E402
from fastrnn.dask import DataParallel, predict  # noqa: E402
from fastrnn.train import SGD, Adam, Linear, cross_entropy, mse_loss  # noqa: E402

from helpers import BACKENDS, FORK_WHILE_HELD  # noqa: E402


@pytest.fixture(scope="module")
def client():
    """Two worker processes of one thread each, on 127.0.0.1, not the default client."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, host="127.0.0.1") as cluster:
        with distributed.Client(cluster, set_as_default=False) as c:
            yield c


@pytest.fixture(params=["threads", "cluster"])
def where(request):
    """Where to compute: the local threaded scheduler or the cluster's client."""
    if request.param == "threads":
        return "threads"
    return request.getfixturevalue("client")


def compute(arr, where):
    return arr.compute(scheduler=where)


def test_import_fastrnn_does_not_import_dask():
    code = ("import sys, fastrnn, fastrnn.train; "
            "bad = [m for m in ('dask', 'distributed') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- predict -------------------------------------------------------------------------------------------
def chunked_reference(model, x, lengths, axis, chunks, batch_size=None):
    """The same model on the same chunks (and slices of batch_size), in this process."""
    outs, start = [], 0
    for size in chunks:
        step = batch_size or size
        for s in range(start, start + size, step):
            e = min(s + step, start + size)
            sl = [slice(None)] * x.ndim
            sl[axis] = slice(s, e)
            outs.append(model(x[tuple(sl)], lengths=None if lengths is None else lengths[s:e])[0])
        start += size
    return np.concatenate(outs, axis=axis)


@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_lstm_time_major_with_lengths(where, backend):
    rng = np.random.default_rng(0)
    lstm = fastrnn.LSTM(5, 12, num_layers=2, bidirectional=True, proj_size=4, backend=backend,
                        seed=0)
    x = rng.standard_normal((9, 53, 5)).astype(np.float32)
    lengths = rng.integers(1, 10, size=53)
    X = da.from_array(x, chunks=(4, 20, 5))        # the time axis chunked too: merged
    for lens in (lengths, da.from_array(lengths, chunks=7)):
        out = predict(lstm, X, lens)
        assert out.shape == (9, 53, 8) and out.dtype == np.float32
        assert out.chunks == ((9,), (20, 20, 13), (8,))
        got = compute(out, where)
        assert np.array_equal(got, chunked_reference(lstm.eval(), x, lengths, 1, (20, 20, 13)))
    # against one call on the whole batch: the last bits of the BLAS products
    np.testing.assert_allclose(got, lstm(x, lengths=lengths)[0], rtol=0, atol=1e-6)


def test_predict_batch_first_gru_and_batch_size(where):
    rng = np.random.default_rng(1)
    gru = fastrnn.GRU(3, 7, batch_first=True, dtype=np.float64, seed=1)
    x = rng.standard_normal((40, 6, 3))
    X = da.from_array(x, chunks=(16, 6, 3))
    out = predict(gru, X, batch_size=5)
    assert out.chunks == ((16, 16, 8), (6,), (7,)) and out.dtype == np.float64
    got = compute(out, where)
    assert np.array_equal(got, chunked_reference(gru, x, None, 0, (16, 16, 8), batch_size=5))
    assert np.array_equal(compute(predict(fastrnn.RNN(3, 4, batch_first=True, seed=2).eval(),
                                          X.astype(np.float32)), where).shape, (40, 6, 4))


def test_predict_snapshot_and_training_mode(where):
    """The model as it was at the call, in evaluation mode even when it is training."""
    rng = np.random.default_rng(2)
    rnn = fastrnn.RNN(3, 4, dropout=0.5, num_layers=2, seed=3).train()
    x = rng.standard_normal((5, 12, 3)).astype(np.float32)
    out = predict(rnn, da.from_array(x, chunks=(5, 6, 3)))
    expected = chunked_reference(rnn.eval(), x, None, 1, (6, 6))
    rnn.parameters()["weight_hh_l0"][...] = 0   # after the call: no effect on the result
    assert np.array_equal(compute(out, where), expected)


@pytest.fixture(scope="module")
def classifier():
    if not required("FASTRNN_REQUIRE_SKLEARN"):
        pytest.importorskip("sklearn", minversion="1.4")
    from fastrnn.sklearn import RNNClassifier
    rng = np.random.default_rng(3)
    X = rng.standard_normal((60, 8, 2))
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int) + 2 * (X[:, -1, 1] > 0)
    clf = RNNClassifier(cell="gru", hidden_size=8, max_epochs=3, random_state=0)
    return clf.fit(X, y), X


def test_predict_estimator(where, classifier):
    clf, X = classifier
    lengths = np.random.default_rng(4).integers(1, 9, size=len(X))
    Xd = da.from_array(X, chunks=(25, 8, 2))
    proba = predict(clf, Xd, lengths, method="predict_proba")
    assert proba.shape == (60, 4) and proba.dtype == np.float64
    got = compute(proba, where)
    expected = np.concatenate([clf.predict_proba(X[s:s + 25], lengths=lengths[s:s + 25])
                               for s in range(0, 60, 25)])
    assert np.array_equal(got, expected)
    labels = predict(clf, Xd)                   # method="predict" by default
    assert labels.shape == (60,) and labels.dtype == clf.classes_.dtype
    assert np.array_equal(compute(labels, where),
                          np.concatenate([clf.predict(X[s:s + 25]) for s in range(0, 60, 25)]))


def test_predict_takes_a_subclass_of_an_estimator(classifier):
    from fastrnn.sklearn import RNNClassifier

    class MyClassifier(RNNClassifier):
        pass

    clf, X = classifier
    mine = MyClassifier(**clf.get_params()).fit(X, clf.predict(X))
    got = predict(mine, da.from_array(X, chunks=(30, 8, 2)), method="predict_proba")
    assert np.array_equal(compute(got, "threads"), np.concatenate(
        [mine.predict_proba(X[s:s + 30]) for s in (0, 30)]))


def test_dask_ml_parallel_post_fit_takes_univariate_sequences(where):
    """dask-ml's ParallelPostFit wraps an estimator for block-wise prediction of a 2-D X: here
    (N, T) univariate sequences (its map_blocks assumes 2-D X; for (N, T, F), fastrnn.dask.predict
    is the way).  Bit for bit the estimator's own predictions."""
    if not required("FASTRNN_REQUIRE_SKLEARN"):
        pytest.importorskip("sklearn", minversion="1.4")
    if required("FASTRNN_REQUIRE_DASK"):
        from dask_ml.wrappers import ParallelPostFit   # (the test extra)
    else:
        ParallelPostFit = pytest.importorskip("dask_ml.wrappers").ParallelPostFit
    from fastrnn.sklearn import RNNClassifier
    rng = np.random.default_rng(6)
    X = rng.standard_normal((90, 12))
    y = (X[:, -4:].sum(axis=1) > 0).astype(int)
    clf = ParallelPostFit(RNNClassifier(cell="lstm", hidden_size=8, max_epochs=3, random_state=0))
    clf.fit(X, y)
    Xd = da.from_array(X, chunks=(40, 12))
    labels, proba = clf.predict(Xd), clf.predict_proba(Xd)
    assert labels.shape == (90,) and proba.shape == (90, 2)
    assert np.array_equal(compute(labels, where), clf.estimator.predict(X))
    expected = np.concatenate([clf.estimator.predict_proba(X[s:s + 40]) for s in range(0, 90, 40)])
    assert np.array_equal(compute(proba, where), expected)


def model_keys(arr):
    graph = dict(arr.__dask_graph__())
    found = []
    for key, value in graph.items():
        v = getattr(value, "value", value)      # a DataNode (dask >= 2024.12) or the object
        if isinstance(v, (fastrnn.LSTM, fastrnn.GRU, fastrnn.RNN)):
            found.append(key)
    return graph, found


def test_model_is_one_key_of_the_graph(client):
    lstm = fastrnn.LSTM(4, 6, seed=0)
    X = da.from_array(np.ones((3, 50, 4), np.float32), chunks=(3, 5, 4))
    out = predict(lstm, X)
    graph, found = model_keys(out)
    assert len(found) == 1, found
    tasks = [k for k in graph if "fastrnn-predict" in str(k)]
    assert len(tasks) == 10
    deps = out.__dask_graph__().get_all_dependencies()
    assert all(found[0] in deps[k] for k in tasks)
    (optimized,) = dask.optimize(out)
    assert len(model_keys(optimized)[1]) == 1
    # on the cluster: the model key is one task, its result fetched by the chunks' tasks
    with distributed.get_task_stream(client) as stream:
        client.compute(out).result()
    keys = [str(t["key"]) for t in stream.data]
    assert sum("fastrnn-model" in k for k in keys) == 1, keys
    assert sum("fastrnn-predict" in k for k in keys) == 10, keys


def test_workers_use_their_nthreads(client):
    lstm = fastrnn.LSTM(4, 6, seed=0)
    X = da.from_array(np.ones((3, 8, 4), np.float32), chunks=(3, 2, 4))
    compute(predict(lstm, X), client)
    nthreads = client.nthreads()
    assert client.run(fastrnn.get_num_threads) == nthreads


def test_workers_in_the_drivers_process_leave_its_thread_count():
    """A cluster whose workers are threads of this process (processes=False) runs each task at
    most at the worker's nthreads, and gives the driver its thread count back (it stayed 1)."""
    before = fastrnn.get_num_threads()

    def threads_in_task(m, x):     # the "loss": the thread count the task ran with
        out, _ = m(x)
        m.backward(np.ones_like(out))
        return float(fastrnn.get_num_threads()), 1.0
    try:
        fastrnn.set_num_threads(3)
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                      dashboard_address=":0") as cluster:   # (inproc://)
            with distributed.Client(cluster, set_as_default=False) as c:
                lstm = fastrnn.LSTM(4, 6, seed=0)
                X = da.from_array(np.ones((3, 8, 4), np.float32), chunks=(3, 2, 4))
                compute(predict(lstm, X), c)
                assert fastrnn.get_num_threads() == 3
                gru = fastrnn.GRU(4, 5, dtype=np.float64, seed=1)
                dp = DataParallel(gru, SGD(gru, lr=0.1), threads_in_task, batch_axes=(1,),
                                  n_shards=4, client=c)
                assert dp.step(np.ones((3, 8, 4))) == 1.0
        assert fastrnn.get_num_threads() == 3
    finally:
        fastrnn.set_num_threads(before)


def test_a_child_forked_during_a_task_of_a_thread_worker_gets_the_drivers_count_back():
    """A fork while a worker thread of the driver's process runs a task (its lock held, the
    thread count lowered to the worker's): the child has no such task, so its lock is free
    and its thread count the driver's."""
    code = """
        import fastrnn
        from fastrnn import dask as fdask
        fastrnn.set_num_threads(3)

        def task(held, release):         # as _worker_threads leaves a running task
            with fdask._held_lock:
                fdask._held.update(tasks=1, saved=3)
                fastrnn.set_num_threads(1)
                held.set()
                release.wait()

        def child():
            free = fdask._held_lock.acquire(timeout=10)
            return free and fastrnn.get_num_threads() == 3 and fdask._held["tasks"] == 0

        fork_while_held(task, child)
    """
    done = subprocess.run([sys.executable, "-c",
                           textwrap.dedent(FORK_WHILE_HELD) + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


# -- data-parallel training ----------------------------------------------------------------------------
def classify(m, x, y):
    """Mean cross-entropy of the head on the last step; gradients into the copies."""
    out, _ = m["rnn"](x)
    loss, dlogits = cross_entropy(m["head"](out[-1]), y)
    dout = np.zeros_like(out)
    dout[-1] = m["head"].backward(dlogits)
    m["rnn"].backward(dout, input_grad=False)
    return loss


def regress_sum(gru, x, t):
    """Sum of squared errors of the batch_first GRU's outputs (combine="sum")."""
    out, _ = gru(x)
    loss, dout = mse_loss(out, t, reduction="sum")
    gru.backward(dout, input_grad=False)
    return loss


def one_process(modules, opt, fn, batches):
    for batch in batches:
        opt.zero_grad()
        fn(modules, *batch)
        opt.step()


def assert_same_weights(a, b):
    for name in a:
        for p, w in a[name].state_dict().items():
            np.testing.assert_allclose(w, b[name].state_dict()[p], rtol=1e-12, atol=1e-13,
                                       err_msg=f"{name}.{p}")


@pytest.mark.parametrize("n_shards", [None, 3])
def test_data_parallel_equals_one_process(where, n_shards):
    rng = np.random.default_rng(5)
    X, Y = rng.standard_normal((7, 45, 4)), rng.integers(0, 3, size=45)
    batches = [(X[:, s:s + 16], Y[s:s + 16]) for s in range(0, 45, 16)]   # 16, 16, 13

    def make():
        m = {"rnn": fastrnn.LSTM(4, 8, num_layers=2, dtype=np.float64, seed=0),
             "head": Linear(8, 3, dtype=np.float64, seed=1)}
        return m, Adam(m, lr=1e-2)

    ref, ref_opt = make()
    one_process(ref, ref_opt, classify, batches)
    mods, opt = make()
    dp = DataParallel(mods, opt, classify, batch_axes=(1, 0), n_shards=n_shards,
                      client=False if where == "threads" else where)
    losses = [dp.step(*b) for b in batches]
    assert_same_weights(mods, ref)
    assert all(np.isfinite(losses))
    assert set(dp.timing) == {"step", "worker", "driver"}


def test_data_parallel_sum_single_module(where):
    rng = np.random.default_rng(6)
    X, T = rng.standard_normal((20, 5, 3)), rng.standard_normal((20, 5, 4))
    batches = [(X[s:s + 10], T[s:s + 10]) for s in (0, 10)]
    ref = fastrnn.GRU(3, 4, batch_first=True, dtype=np.float64, seed=2)
    gru = fastrnn.GRU(3, 4, batch_first=True, dtype=np.float64, seed=2)
    ref_opt, opt = SGD(ref, lr=1e-2, momentum=0.9), SGD(gru, lr=1e-2, momentum=0.9)
    one_process(ref, ref_opt, regress_sum, batches)
    dp = DataParallel(gru, opt, regress_sum, combine="sum", n_shards=2,
                      client=False if where == "threads" else where)
    for b in batches:
        dp.step(*b)
    assert_same_weights({"": gru}, {"": ref})


def masked_mean(gru, x, t, mask):
    """Mean squared error over the unmasked steps: the weight is their count (x features)."""
    out, _ = gru(x)
    w = np.broadcast_to(mask, out.shape)
    loss, dout = mse_loss(out, t, mask=w)
    gru.backward(dout, input_grad=False)
    return loss, float(w.sum())


def test_data_parallel_returned_weights(where):
    """(loss, weight): the shards' gradients weighted by the weights, not by the samples."""
    rng = np.random.default_rng(7)
    X, T = rng.standard_normal((12, 6, 3)), rng.standard_normal((12, 6, 4))
    M = (np.arange(6)[None, :, None] < rng.integers(1, 7, size=(12, 1, 1))).astype(np.float64)
    ref = fastrnn.GRU(3, 4, batch_first=True, dtype=np.float64, seed=4)
    gru = fastrnn.GRU(3, 4, batch_first=True, dtype=np.float64, seed=4)
    ref_opt, opt = Adam(ref, lr=1e-2), Adam(gru, lr=1e-2)
    one_process(ref, ref_opt, masked_mean, [(X, T, M)])
    dp = DataParallel(gru, opt, masked_mean, n_shards=3, clip_norm=1e6,
                      client=False if where == "threads" else where)
    loss = dp.step(X, T, M)
    fresh = fastrnn.GRU(3, 4, batch_first=True, dtype=np.float64, seed=4)
    assert loss == pytest.approx(masked_mean(fresh, X, T, M)[0], rel=1e-12)
    assert_same_weights({"": gru}, {"": ref})


# -- errors ----------------------------------------------------------------------------------------------
def test_data_parallel_steps_on_after_the_cluster_restarts(client):
    """The modules' structure is scattered at the first step; a restart of the workers loses
    it, and the next step scatters it again (every step failed with FutureCancelledError)."""
    rng = np.random.default_rng(7)
    X, T = rng.standard_normal((20, 5, 3)), rng.standard_normal((20, 5, 4))
    batches = [(X[s:s + 10], T[s:s + 10]) for s in (0, 10)]
    ref = fastrnn.GRU(3, 4, batch_first=True, dtype=np.float64, seed=2)
    gru = fastrnn.GRU(3, 4, batch_first=True, dtype=np.float64, seed=2)
    one_process(ref, SGD(ref, lr=1e-2), regress_sum, batches)
    dp = DataParallel(gru, SGD(gru, lr=1e-2), regress_sum, combine="sum", n_shards=2,
                      client=client)
    dp.step(*batches[0])
    client.restart()
    dp.step(*batches[1])
    assert_same_weights({"gru": gru}, {"gru": ref})


def test_predict_errors():
    lstm = fastrnn.LSTM(4, 6)
    X = da.zeros((3, 10, 4), chunks=(3, 5, 4), dtype=np.float32)
    cases = [
        (dict(model=fastrnn.LSTMCell(4, 6), X=X), TypeError, "model must be"),
        (dict(model=lstm, X=np.zeros((3, 10, 4))), TypeError, "X must be a dask array"),
        (dict(model=lstm, X=X[0]), ValueError, "X must be a 3-D"),
        (dict(model=lstm, X=da.zeros((3, 10, 5), chunks=5)), ValueError, "input_size=4"),
        (dict(model=lstm, X=X.astype(bool)), TypeError, "X must hold real numbers"),
        (dict(model=lstm, X=X.astype(int)), TypeError,
         "X must hold real numbers of a floating-point dtype for a layer, but got dtype int"),
        (dict(model=lstm, X=X, lengths=np.ones(9, int)), ValueError, r"lengths must have shape \(10,\)"),
        (dict(model=lstm, X=X, lengths=np.ones(10)), TypeError, "lengths must be ints"),
        (dict(model=lstm, X=X, batch_size=0), ValueError, "batch_size must be a positive int"),
        (dict(model=lstm, X=X, batch_size=2.0), TypeError, "batch_size must be a positive int"),
        (dict(model=lstm, X=X, method="predict"), ValueError, "method must be None"),
    ]
    for kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            predict(**kwargs)
    # bad values: named at their position in X, before anything runs (numpy lengths), or by
    # the chunk's sequences (dask lengths, checked by the layer where the chunk runs)
    bad = np.full(10, 3)
    bad[[7, 9]] = 4
    with pytest.raises(ValueError, match=r"lengths must be between 1 and the sequence length 3 "
                                         r"of X, but lengths\[7\] = 4 \(2 such\)"):
        predict(lstm, X, bad)
    with pytest.raises(ValueError, match=r"^sequences 5 to 9 of X: lengths must be between 1 and "
                                         r"the sequence length 3, but got \[4, 4\]"):
        predict(lstm, X, da.from_array(bad, chunks=5)).compute(scheduler="sync")


def test_predict_estimator_errors(classifier):
    from sklearn.exceptions import NotFittedError
    from fastrnn.sklearn import RNNClassifier
    clf, X = classifier
    Xd = da.from_array(X, chunks=(30, 8, 2))
    with pytest.raises(ValueError, match="method must be one of"):
        predict(clf, Xd, method="transform")
    with pytest.raises(ValueError, match="expecting 2 features"):
        predict(clf, Xd[:, :, :1])
    with pytest.raises(NotFittedError):
        predict(RNNClassifier(), Xd)


def test_data_parallel_errors():
    m = {"rnn": fastrnn.LSTM(4, 8), "head": Linear(8, 3)}
    opt = Adam(m)
    cases = [
        (dict(modules=[m["rnn"]], optimizer=opt), TypeError, "modules must be"),
        (dict(modules=m, optimizer="adam"), TypeError, "optimizer must be"),
        (dict(modules={"rnn": fastrnn.LSTM(4, 8)}, optimizer=opt), ValueError,
         "optimizer must update the parameters of modules"),
        # the head's gradients would never be written: its stale ones applied at every step
        (dict(modules={"rnn": m["rnn"]}, optimizer=opt), ValueError,
         r"optimizer must update only the parameters of modules .* also updates \['head\."),
        (dict(modules=m, optimizer=opt, loss_and_grad=3), TypeError, "loss_and_grad must be"),
        (dict(modules=m, optimizer=opt, batch_axes="1"), TypeError, "batch_axes must be"),
        (dict(modules=m, optimizer=opt, combine="max"), ValueError, "combine must be"),
        (dict(modules=m, optimizer=opt, clip_norm=-1), ValueError, "clip_norm must be"),
        (dict(modules=m, optimizer=opt, n_shards=0), ValueError, "n_shards must be"),
        (dict(modules=m, optimizer=opt, client="tcp://x"), TypeError, "client must be"),
    ]
    for kwargs, error, match in cases:
        kwargs.setdefault("loss_and_grad", classify)
        with pytest.raises(error, match=match):
            DataParallel(**kwargs)
    dp = DataParallel(m, opt, classify, batch_axes=(1, 0), client=False)
    x, y = np.zeros((5, 6, 4), np.float32), np.zeros(6, int)
    with pytest.raises(ValueError, match="batch_axes has 2 entries"):
        dp.step(x)
    with pytest.raises(ValueError, match="same batch size"):
        dp.step(x, y[:4])
    with pytest.raises(ValueError, match="out of range"):
        DataParallel(m, opt, classify, batch_axes=(3, 0), client=False).step(x, y)
    # an optimizer over the parameters but gradient arrays of its own would never see the
    # gradients a step writes into the modules' grads
    own = SGD(m["rnn"].parameters(), {k: np.zeros_like(v) for k, v in
                                      m["rnn"].parameters().items()}, lr=1.0)
    with pytest.raises(ValueError, match="gradient arrays are not the modules' grads"):
        DataParallel(m["rnn"], own, classify)
    # what loss_and_grad returns
    for returned, error, match in [
            ([1.0, 2.0], TypeError, "loss_and_grad must return the loss or \\(loss, weight\\), "
                                    "real numbers, but the loss is list"),
            ((1.0, None), TypeError, "but the weight is NoneType"),
            ((1.0, 0.0), ValueError, "the weights loss_and_grad returned for the shards sum "
                                     "to 0")]:
        def fn(modules, x, y, returned=returned):
            classify(modules, x, y)
            return returned
        with pytest.raises(error, match=match):
            DataParallel(m, opt, fn, batch_axes=(1, 0), client=False).step(x, y)


def test_data_parallel_dropout_masks_are_fresh_at_each_step_and_shard(where):
    """The copies on the workers draw their dropout masks from a generator of each step and
    shard (seeded from the driver's model): the same template deep-copied at every task drew
    the same masks at every step, and two shards of the same data dropped the same units."""
    client = False if where == "threads" else where
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4, 3))
    x = np.concatenate([x, x], axis=1)         # two shards of the same sequences
    outs = []

    def forward_backward(lstm, x):
        out, _ = lstm(x)
        lstm.backward(np.ones_like(out))
        return out

    def seen(lstm, x):
        return float(forward_backward(lstm, x).sum())

    def run(seed):
        lstm = fastrnn.LSTM(3, 6, num_layers=2, dropout=0.5, seed=seed, dtype=np.float64)
        dp = DataParallel(lstm, SGD(lstm, lr=0.0), seen, batch_axes=1, client=client,
                          n_shards=2, combine="sum")
        grads = []
        for _ in range(3):
            dp.step(x)
            grads.append(lstm.grads["weight_ih_l1"].copy())
        return grads

    grads = run(0)
    assert not any(np.array_equal(grads[0], g) for g in grads[1:])
    assert all(np.array_equal(a, b) for a, b in zip(grads, run(0)))   # reproducible
    lstm = fastrnn.LSTM(3, 6, num_layers=2, dropout=0.5, seed=0, dtype=np.float64)
    halves = []

    def keep(lstm, x):
        halves.append(forward_backward(lstm, x))
        return float(halves[-1].sum())

    DataParallel(lstm, SGD(lstm, lr=0.0), keep, batch_axes=1, client=False, n_shards=2,
                 combine="sum").step(x)
    assert len(halves) == 2 and not np.array_equal(halves[0], halves[1])


def test_data_parallel_takes_a_changed_setting_to_the_workers(where):
    """dropout changed between two steps (a schedule) reaches the shards' copies, as it
    reaches the module in one process: the second step runs without dropout."""
    seen = []

    def record(m, x):
        out, _ = m(x)
        m.backward(np.ones_like(out), input_grad=False)
        return float(m.dropout)
    gru = fastrnn.GRU(3, 4, num_layers=2, dropout=0.5, dtype=np.float64, seed=0)
    dp = DataParallel(gru, SGD(gru, lr=0.0), record, batch_axes=1, n_shards=2,
                      client=False if where == "threads" else where)
    x = np.ones((5, 4, 3))
    seen.append(dp.step(x))
    gru.dropout = 0.0
    seen.append(dp.step(x))
    assert seen == [0.5, 0.0]     # (the shards' losses, averaged)


def test_data_parallel_has_a_shard_for_every_worker():
    """The default n_shards counts every worker (distributed 2025.4 to 2026.6 list only 5 in
    scheduler_info())."""
    with distributed.LocalCluster(n_workers=7, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster:   # (inproc://)
        with distributed.Client(cluster, set_as_default=False) as c:
            gru = fastrnn.GRU(3, 4, seed=0)
            assert DataParallel(gru, SGD(gru, lr=0.1), regress_sum, client=c).n_shards == 7


def test_predict_leaves_the_users_keys_as_they_were(client, recwarn):
    """The input's own keys keep their tasks: computing X after a prediction of it draws no
    "different run_spec" warning from the scheduler (to_delayed optimised them)."""
    x = np.random.default_rng(0).standard_normal((40, 6, 2)).astype(np.float32)
    gru = fastrnn.GRU(1, 4, batch_first=True, seed=0)
    X = da.from_array(x, chunks=(10, 2, -1))[:, :, :1]
    import logging
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("distributed.scheduler")
    logger.addHandler(handler)
    try:
        client.compute(predict(gru, X)).result()
        np.testing.assert_array_equal(client.compute(X).result(), x[:, :, :1])
    finally:
        logger.removeHandler(handler)
    assert not [r for r in records if "run_spec" in r.getMessage()]
