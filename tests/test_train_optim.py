"""Optimizers: several steps against torch.optim, bookkeeping, errors."""

import numpy as np
import pytest

import fastrnn
from fastrnn.train import SGD, Adagrad, Adam, AdamW, Linear, parameters_and_grads

CASES = [
    (SGD, dict(lr=0.1)),
    (SGD, dict(lr=0.05, momentum=0.9)),
    (SGD, dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    (SGD, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    (SGD, dict(lr=0.05, momentum=0.5, maximize=True)),
    (Adam, dict(lr=1e-2)),
    (Adam, dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)),
    (Adam, dict(lr=1e-2, amsgrad=True)),
    (Adam, dict(lr=1e-2, maximize=True)),
    (AdamW, dict(lr=1e-2)),
    (AdamW, dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
    (Adagrad, dict(lr=0.1)),
    (Adagrad, dict(lr=0.1, lr_decay=0.01, weight_decay=0.02, initial_accumulator_value=0.1)),
]


def ids(case):
    cls, kw = case
    return cls.__name__ + "-" + "-".join(f"{k}={v}" for k, v in kw.items())


@pytest.mark.parametrize("case", CASES, ids=[ids(c) for c in CASES])
def test_steps_match_torch(case, torch):
    cls, kw = case
    rng = np.random.default_rng(0)
    params = {"a": rng.standard_normal((4, 3)), "b": rng.standard_normal(5)}
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    tparams = [torch.tensor(params[k].copy(), requires_grad=True) for k in ("a", "b")]
    opt = cls(params, grads, **kw)
    ref = getattr(torch.optim, cls.__name__)(tparams, **kw)
    live = params["a"]
    for step in range(6):
        for (k, p), tp in zip(params.items(), tparams):
            g = rng.standard_normal(p.shape)
            grads[k][...] = g
            tp.grad = torch.tensor(g.copy())
        opt.step()
        ref.step()
        for (k, p), tp in zip(params.items(), tparams):
            np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-13,
                                       err_msg=f"{k} after step {step + 1}")
    assert params["a"] is live          # updated in place


def test_float32_model_matches_torch(torch):
    lstm = fastrnn.LSTM(3, 4, seed=0, backend="numpy")
    head = Linear(4, 2, seed=1)
    opt = Adam({"lstm": lstm, "head": head}, lr=1e-2)
    assert list(opt.params)[:2] == ["lstm.weight_ih_l0", "lstm.weight_hh_l0"]
    assert opt.params["head.weight"] is head.parameters()["weight"]
    tp = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in opt.params.items()}
    ref = torch.optim.Adam(list(tp.values()), lr=1e-2)
    rng = np.random.default_rng(1)
    for _ in range(3):
        for k, g in opt.grads.items():
            g[...] = rng.standard_normal(g.shape).astype(np.float32)
            tp[k].grad = torch.tensor(g.copy())
        opt.step()
        ref.step()
    for k, p in opt.params.items():
        assert p.dtype == np.float32
        np.testing.assert_allclose(p, tp[k].detach().numpy(), rtol=1e-5, atol=1e-6)
    opt.zero_grad()
    assert not any(g.any() for g in lstm.grads.values())
    assert not any(g.any() for g in head.grads.values())


def test_deterministic_and_state_dict_roundtrip():
    def run(split):
        rng = np.random.default_rng(2)
        params = {"w": np.ones((3, 3))}
        grads = {"w": np.zeros((3, 3))}
        opt = Adam(params, grads, lr=0.1, amsgrad=True)
        for i in range(6):
            if i == split:
                saved = opt.state_dict()
                opt = Adam(params, grads, lr=0.5)
                opt.load_state_dict(saved)
            grads["w"][...] = rng.standard_normal((3, 3))
            opt.step()
        return params["w"]

    np.testing.assert_array_equal(run(None), run(None))
    np.testing.assert_array_equal(run(None), run(3))


def test_parameters_and_grads_forms():
    head = Linear(2, 2, seed=0)
    p, g = parameters_and_grads(head)
    assert list(p) == ["weight", "bias"] and g["weight"] is head.grads["weight"]
    p, g = parameters_and_grads([head, Linear(2, 1)])
    assert list(p) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    with pytest.raises(TypeError):
        parameters_and_grads([np.zeros(2)])
    SGD(head, lr=0.1).step()                          # a single module works too


def test_errors():
    params = {"w": np.zeros(3)}
    with pytest.raises(ValueError, match="Invalid lr"):
        SGD(params, {"w": np.zeros(3)}, lr=-1)
    with pytest.raises(ValueError, match="Nesterov"):
        SGD(params, {"w": np.zeros(3)}, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="beta"):
        Adam(params, {"w": np.zeros(3)}, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="same keys"):
        Adam(params, {"v": np.zeros(3)})
    with pytest.raises(ValueError, match="shape"):
        Adam(params, {"w": np.zeros(4)})
    with pytest.raises(TypeError, match="grads"):
        Adam(params)
    with pytest.raises(ValueError, match="empty"):
        Adam({}, {})
    ro = np.zeros(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        Adagrad({"w": ro}, {"w": np.zeros(3)})
