"""Optimizers: several steps against torch.optim, bookkeeping, errors; the compiled update
against NumPy's."""

import math

import numpy as np
import pytest

import fastrnn
from fastrnn.train import SGD, Adagrad, Adam, AdamW, Linear, _compiled, optim, parameters_and_grads
from helpers import KERNELS, load_kernels, unaligned

CASES = [
    (SGD, dict(lr=0.1)),
    (SGD, dict(lr=0.05, momentum=0.9)),
    (SGD, dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    (SGD, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    (SGD, dict(lr=0.05, momentum=0.5, maximize=True)),
    (SGD, dict(lr=0.1, momentum=0.5, weight_decay=0.1, maximize=True)),
    (Adam, dict(lr=1e-2)),
    (Adam, dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)),
    (Adam, dict(lr=1e-2, amsgrad=True)),
    (Adam, dict(lr=1e-2, maximize=True)),
    (Adam, dict(lr=1e-2, weight_decay=0.1, maximize=True)),
    (AdamW, dict(lr=1e-2, weight_decay=0.1, maximize=True)),
    (AdamW, dict(lr=1e-2)),
    (AdamW, dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
    (Adagrad, dict(lr=0.1)),
    (Adagrad, dict(lr=0.1, lr_decay=0.01, weight_decay=0.02, initial_accumulator_value=0.1)),
    (Adagrad, dict(lr=0.1, weight_decay=0.05, maximize=True)),
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


def test_fastrnn_optim_is_importable_as_torch_optim_is():
    """``from fastrnn.optim import Adam`` as ``from torch.optim import Adam``: the same classes."""
    import importlib
    import fastrnn
    mod = importlib.import_module("fastrnn.optim")
    assert fastrnn.optim is mod
    for name in optim.__all__:
        assert getattr(mod, name) is getattr(optim, name)
    assert sorted(mod.__all__) == sorted(optim.__all__)


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
    params, grads = {"w": np.ones(3)}, {"w": np.ones(3)}
    opt = Adam(params, grads, lr=0.1)
    opt.step()
    opt.step()
    other = Adam(params, grads, lr=0.1)
    other.load_state_dict(opt.state_dict())
    assert other.steps == opt.steps == 2


def test_parameters_and_grads_forms():
    head = Linear(2, 2, seed=0)
    p, g = parameters_and_grads(head)
    assert list(p) == ["weight", "bias"] and g["weight"] is head.grads["weight"]
    p, g = parameters_and_grads([head, Linear(2, 1)])
    assert list(p) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    with pytest.raises(TypeError):
        parameters_and_grads([np.zeros(2)])
    SGD(head, lr=0.1).step()                          # a single module works too


@pytest.mark.parametrize("cls", [SGD, Adam])
def test_a_module_given_twice_is_stepped_once(cls):
    """A module shared under two names (an embedding of an encoder and a decoder) is one set
    of parameters, as PyTorch's ModuleDict.parameters() yields it: one update a step."""
    shared, alone = Linear(3, 2, seed=0, dtype=np.float64), Linear(3, 2, seed=0, dtype=np.float64)
    twice, once = cls({"enc": shared, "dec": shared}, lr=0.1), cls({"enc": alone}, lr=0.1)
    assert list(twice.params) == ["enc.weight", "enc.bias"]
    for module, opt in ((shared, twice), (alone, once)):
        for _ in range(3):
            module.grads["weight"][...] = 1.0
            opt.step()
    np.testing.assert_array_equal(shared.weight, alone.weight)
    p, _ = parameters_and_grads([shared, alone, shared])
    assert list(p) == ["0.weight", "0.bias", "1.weight", "1.bias"]


def test_errors():
    params = {"w": np.zeros(3)}
    w = np.zeros(3)
    with pytest.raises(ValueError, match=r"params\['a'\] and params\['b'\] are the same array"):
        SGD({"a": w, "b": w}, {"a": np.zeros(3), "b": np.zeros(3)}, lr=0.1)
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


# ---------------------------------------------------------------------------------------
# The compiled update (kernels/fastrnn_optim.h) against its NumPy twin, the oracle
# ---------------------------------------------------------------------------------------
#: the builds of the compiled kernels under test (each one this machine runs; a required but
#: missing one fails in load_kernels)
COMPILED = [k for k in KERNELS if k.startswith("cython")]


def adam_arrays(dtype, n, amsgrad, seed=0):
    """p, g, m, v, v_max with the values that test the rounding and the IEEE cases: tiny and
    huge gradients, NaN, +-inf, zeros, and a NaN in v_max."""
    rng = np.random.default_rng(seed)
    p = rng.standard_normal(n).astype(dtype)
    g = (rng.standard_normal(n) * 10.0 ** rng.integers(-30, 10, n)).astype(dtype)
    g[:6] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30]
    m = rng.standard_normal(n).astype(dtype)
    v = (rng.standard_normal(n) ** 2).astype(dtype)
    v_max = (rng.standard_normal(n) ** 2).astype(dtype) if amsgrad else None
    if amsgrad:
        v_max[6:9] = np.nan
    return p, g, m, v, v_max


@pytest.mark.parametrize("kernels", COMPILED)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("amsgrad", [False, True], ids=["adam", "amsgrad"])
@pytest.mark.parametrize("n", [1, 7, 100_003])
def test_compiled_adam_update_is_numpys_bit_for_bit(kernels, dtype, amsgrad, n):
    mod = load_kernels(kernels)
    scalars = (1 - 0.9, 0.999, 1 - 0.999, math.sqrt(1 - 0.999 ** 3), 2e-3 / (1 - 0.9 ** 3), 1e-8)
    want = adam_arrays(dtype, max(n, 9), amsgrad)
    got = [None if a is None else a.copy() for a in want]
    want = [None if a is None else a[:n] for a in want]
    got = [None if a is None else a[:n] for a in got]
    with np.errstate(all="ignore"):
        optim._adam_update_numpy(*want, *scalars)
    assert mod.adam_update(*got, *scalars) is True
    for name, w, x in zip(("p", "g", "m", "v", "v_max"), want, got):
        if w is not None:
            np.testing.assert_array_equal(x, w, err_msg=name)   # NaN == NaN here


@pytest.mark.parametrize("kernels", COMPILED)
def test_compiled_adam_update_declines_what_it_does_not_take(kernels):
    mod = load_kernels(kernels)
    p, g, m, v, _ = adam_arrays(np.float32, 64, False)
    before = [a.copy() for a in (p, g, m, v)]
    scalars = (0.1, 0.999, 0.001, 0.5, 1e-3, 1e-8)
    strided = np.zeros(128, np.float32)[::2]
    shared = np.zeros(100, np.float32)
    readonly = p.copy()
    readonly.flags.writeable = False
    for args in [(p, g.astype(np.float64), m, v, None),           # mixed dtypes
                 (p, g, strided, v, None),                          # not contiguous
                 (p, g, m[:32], v, None),                           # another size
                 (readonly, g, m, v, None),                         # read-only parameter
                 (p.astype(np.float16), g, m, v, None),             # not float32/64
                 (p, g, m, v, np.zeros(64, np.float64)),            # v_max of another dtype
                 (p.tolist(), g, m, v, None),                       # not an array
                 (p, p, m, v, None),                                # aliases
                 (p, g, shared[:64], shared[30:94], None),          # overlapping
                 (p, g, m, v, m),                                   # v_max is m
                 (p, g.astype(">f4"), m, v, None),                  # big-endian
                 (p, g, m, unaligned(v), None)]:                    # not aligned
        assert mod.adam_update(*args, *scalars) is False
    for a, b in zip((p, g, m, v), before):
        np.testing.assert_array_equal(a, b)
    assert not shared.any()


@pytest.mark.parametrize("kernels", COMPILED)
def test_compiled_sum_squares(kernels):
    mod = load_kernels(kernels)
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        for n in (0, 1, 7, 8, 9, 100_003):
            x = (rng.standard_normal(n) * 1e3).astype(dtype)
            want = float(np.dot(x.astype(np.float64), x.astype(np.float64)))
            assert mod.sum_squares(x) == pytest.approx(want, rel=1e-13, abs=0)
        assert math.isnan(mod.sum_squares(np.array([1.0, np.nan, 2.0], dtype)))
        assert mod.sum_squares(np.array([1.0, np.inf], dtype)) == math.inf
        assert mod.sum_squares(np.ones((4, 3), dtype)) == 12.0          # any shape, C order
    assert mod.sum_squares(np.ones(10, np.float32)[::2]) is None       # NumPy's turn
    assert mod.sum_squares(np.ones(10, ">f4")) is None                 # big-endian: NumPy's turn
    assert mod.sum_squares(unaligned(np.ones(10, np.float32))) is None
    assert mod.sum_squares(np.ones(3, np.int64)) is None


def test_optimizers_take_the_compiled_path_where_it_is_built():
    assert (_compiled.kernels() is not None) == ("cython" in KERNELS or bool(COMPILED))


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in (Adam, AdamW)],
                         ids=[ids(c) for c in CASES if c[0] in (Adam, AdamW)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_compiled_and_numpy_paths_agree_bit_for_bit(case, dtype, monkeypatch):
    cls, kw = case

    def run():
        rng = np.random.default_rng(4)
        params = {"a": rng.standard_normal((40, 30)).astype(dtype),
                  "b": rng.standard_normal(30).astype(dtype)}
        grads = {k: np.zeros_like(v) for k, v in params.items()}
        opt = cls(params, grads, **kw)
        opt.lr = np.float64(opt.lr)     # a NumPy scalar set later: still the parameter's dtype
        for _ in range(5):
            for k, g in grads.items():
                g[...] = rng.standard_normal(g.shape)
            opt.step()
        return params, opt.state_dict()["state"]

    fused_params, fused_state = run()
    monkeypatch.setattr(_compiled, "kernels", lambda: None)
    numpy_params, numpy_state = run()
    for k in fused_params:
        assert fused_params[k].dtype == dtype
        np.testing.assert_array_equal(fused_params[k], numpy_params[k], err_msg=k)
        for name, value in fused_state[k].items():
            np.testing.assert_array_equal(value, numpy_state[k][name], err_msg=f"{k} {name}")


@pytest.mark.parametrize("cls", [SGD, Adam, AdamW, Adagrad])
def test_modules_in_any_iterable_and_an_empty_one_as_torch(cls):
    """A generator of modules is taken as a list is (torch takes any iterable), and an empty
    list, tuple or generator gets torch's "empty parameter list", not a type error."""
    lstm, head = fastrnn.LSTM(3, 4, seed=0), Linear(4, 2, seed=0)
    from_list = cls([lstm, head])
    from_generator = cls(m for m in (lstm, head))
    assert list(from_generator.params) == list(from_list.params)
    assert all(from_generator.params[k] is from_list.params[k] for k in from_list.params)
    for empty in ([], (), iter([])):
        with pytest.raises(ValueError, match="optimizer got an empty parameter list"):
            cls(empty)
