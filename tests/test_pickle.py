"""Pickle and deep copy: layers, cells, the head and the optimizers travel with their weights,
gradients, configuration and optimizer state, never with a backend's module; the backend is
resolved again where they are loaded."""

import copy
import importlib
import pickle

import numpy as np
import pytest

import fastrnn
from fastrnn.train import SGD, Adagrad, Adam, AdamW, Linear, cross_entropy

ROUND_TRIPS = {"pickle": lambda obj: pickle.loads(pickle.dumps(obj)), "deepcopy": copy.deepcopy}


def _models(backend):
    return [
        fastrnn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, backend=backend, seed=1),
        fastrnn.GRU(3, 5, batch_first=True, dropout=0.3, num_layers=2, backend=backend, seed=2),
        fastrnn.RNN(3, 5, nonlinearity="relu", bias=False, backend=backend, seed=3),
        fastrnn.LSTMCell(3, 5, backend=backend, seed=4),
        fastrnn.GRUCell(3, 5, backend=backend, seed=5),
        fastrnn.RNNCell(3, 5, backend=backend, seed=6),
        # the variants PyTorch lacks
        fastrnn.LSTM(3, 5, peepholes=True, input_forget=True, clip=0.5, backend=backend, seed=7),
        fastrnn.GRU(3, 5, reset_after=False, clip=1.0, reverse=True, backend=backend, seed=8),
        fastrnn.RNNCell(3, 5, clip=0.5, backend=backend, seed=9),
    ]


def _train_step(model, x, rng_seed=0):
    """A forward (dropout drawn from the model's own generator) and a backward: outputs, dx,
    gradients."""
    model.zero_grad()
    out = model(x)
    if isinstance(out, tuple) and isinstance(out[0], np.ndarray) and out[0].ndim == x.ndim:
        out = out[0]                                 # a layer: (out, h_n)
    first = out[0] if isinstance(out, tuple) else out   # an LSTMCell: (h, c)
    grad = np.cos(first)
    back = model.backward(grad)
    dx = back[0]
    return [first, dx, *(model.grads[k].copy() for k in sorted(model.grads))]


@pytest.mark.parametrize("how", list(ROUND_TRIPS))
def test_models_round_trip_with_weights_gradients_and_generator(backend, how):
    x_seq = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    for model in _models(backend):
        x = x_seq if isinstance(model, fastrnn.layers.RNNBase) else x_seq[0]
        _train_step(model, x)                        # gradients in place before the trip
        model.grads[next(iter(model.grads))] += 1.0
        clone = ROUND_TRIPS[how](model)
        assert type(clone) is type(model) and clone.backend == model.backend
        assert clone.get_config() == model.get_config() and clone.training == model.training
        for k in model.parameters():
            np.testing.assert_array_equal(clone.parameters()[k], model.parameters()[k])
            np.testing.assert_array_equal(clone.grads[k], model.grads[k])
            assert not np.shares_memory(clone.parameters()[k], model.parameters()[k])
        # the same next steps, bit for bit (dropout masks from the copied generator included)
        for a, b in zip(_train_step(clone, x), _train_step(model, x)):
            np.testing.assert_array_equal(a, b)
        # a cell's kernels read its live parameters: still the clone's own after the trip
        if isinstance(model, fastrnn.cells._CellBase):
            assert all(w is None or any(w is p for p in clone.parameters().values())
                       for w in clone._weights)


def test_a_forward_waiting_for_its_backward_is_not_carried(backend):
    layer = fastrnn.LSTM(3, 4, backend=backend, seed=0)
    out, _ = layer(np.ones((2, 1, 3), np.float32))
    clone = pickle.loads(pickle.dumps(layer))
    with pytest.raises(RuntimeError, match="needs a forward pass"):
        clone.backward(np.ones_like(out))
    layer.backward(np.ones_like(out))                # the original keeps its own


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW, Adagrad])
def test_optimizer_and_its_modules_round_trip_together(backend, cls):
    """Pickled with its modules, an optimizer keeps its moments and still updates those modules'
    live parameters: the next step is the same, bit for bit."""
    lstm = fastrnn.LSTM(3, 6, backend=backend, seed=1)
    head = Linear(6, 4, seed=2)
    opt = cls({"lstm": lstm, "head": head}, lr=1e-2)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    y = rng.integers(0, 4, (5, 2))

    def step(lstm, head, opt):
        opt.zero_grad()
        out, _ = lstm(x)
        _, dlogits = cross_entropy(head(out), y)
        lstm.backward(head.backward(dlogits))
        opt.step()
        return [p.copy() for p in opt.params.values()]

    step(lstm, head, opt)                             # moments that are not zero
    lstm2, head2, opt2 = pickle.loads(pickle.dumps((lstm, head, opt)))
    assert opt2.params["lstm.weight_hh_l0"] is lstm2.parameters()["weight_hh_l0"]
    for a, b in zip(step(lstm2, head2, opt2), step(lstm, head, opt)):
        np.testing.assert_array_equal(a, b)


def test_the_backend_is_resolved_again_where_the_pickle_is_loaded(monkeypatch):
    backends = importlib.import_module("fastrnn.backends")
    auto = fastrnn.GRU(2, 3, seed=0)
    assert pickle.loads(pickle.dumps(auto)).backend == auto.backend
    best = auto.backend
    if best == "numpy":
        pytest.skip("no compiled backend here: nothing to be missing on the other side")
    named = pickle.dumps(fastrnn.GRU(2, 3, backend=best, seed=0))
    # where the backend asked for by name is missing, the model loads on "auto" and says so
    monkeypatch.setitem(backends._loaded, best, ImportError("not built on this machine"))
    with pytest.warns(RuntimeWarning, match=f"backend='{best}'.*not available here"):
        clone = pickle.loads(named)
    assert clone.backend not in (best, "auto")
    out, _ = clone(np.ones((2, 1, 2), np.float32))
    np.testing.assert_allclose(out, auto(np.ones((2, 1, 2), np.float32))[0], rtol=0, atol=1e-6)


def _forward(model, x):
    return model(x)[0]


def test_a_model_goes_through_a_process_pool():
    """What multiprocessing, concurrent.futures, joblib and Dask do with a model: pickle it to
    another process, which runs it there (spawned: a fresh interpreter)."""
    import concurrent.futures
    import multiprocessing
    model = fastrnn.LSTM(3, 4, num_layers=2, seed=0).eval()
    x = np.random.default_rng(1).standard_normal((6, 2, 3)).astype(np.float32)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        out = pool.submit(_forward, model, x).result(timeout=120)
    np.testing.assert_array_equal(out, model(x)[0])


@pytest.mark.parametrize("how", list(ROUND_TRIPS))
def test_a_copy_runs_on_its_own_weights_after_the_original_ran(backend, how):
    """A layer keeps its kernels' weight tuples from its first call: a copy made after it must
    run on the copy's parameters, and writes into either model's parameters reach its next call."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    for cls in (fastrnn.RNN, fastrnn.LSTM, fastrnn.GRU):
        model = cls(3, 5, num_layers=2, bidirectional=True, seed=0, backend=backend).eval()
        before = model(x)[0]
        twin = ROUND_TRIPS[how](model)
        for name, p in twin.parameters().items():
            assert not np.shares_memory(p, model.parameters()[name]), name
        for p in twin.parameters().values():
            p *= 0.5
        np.testing.assert_array_equal(model(x)[0], before)       # the original is untouched
        fresh = cls(3, 5, num_layers=2, bidirectional=True, seed=0, backend=backend).eval()
        fresh.load_state_dict({k: v * np.float32(0.5) for k, v in model.state_dict().items()})
        np.testing.assert_array_equal(twin(x)[0], fresh(x)[0])   # the copy runs its own
        model.load_state_dict(twin.state_dict())                 # written in place
        np.testing.assert_array_equal(model(x)[0], fresh(x)[0])
