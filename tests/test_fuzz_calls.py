"""Malformed calls, drawn by hypothesis: every public call either works or raises a TypeError or
ValueError whose message names the argument; never an error from inside NumPy or a kernel."""

import io
import math
import os
import pathlib
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from helpers import required

import fastrnn
from fastrnn.backends import resolve
from fastrnn.interop import reorder_gates
from fastrnn.train import (TBPTT, SGD, Adagrad, Adam, AdamW, Linear, clip_grad_norm,
                           clip_grad_value, cross_entropy, grad_norm, log_softmax, mse_loss,
                           parameters_and_grads, softmax, split_streams, windows)

#: values no argument below takes (as the value of that argument), of every kind a careless
#: caller passes: wrong types, wrong dtypes, wrong ranks, ragged lists, empty arrays, huge ints
BAD = [
    "x", b"x", 1.5, -3, 0, 10**30, float("nan"), float("inf"), [], [[1.0], []], {"a": 1},
    object(), (1, 2, 3), np.zeros((2, 3), dtype=int), np.zeros((2, 3), dtype=complex),
    np.array(["a", "b"]), np.array([None, 1.0], dtype=object), np.zeros((0,)),
    np.zeros((2, 3, 4, 5)), np.zeros((7, 7, 7)), np.zeros((3, 5)), np.ones(5, dtype=bool),
    10**5000,   # beyond a float's range, and more digits than str() converts
]
T, B, I, H = 4, 3, 5, 6

#: class -> constructor arguments that must be checked, with the names a message may use
_LAYER_FLAGS = ["bias", "batch_first", "bidirectional", "reverse", "clip", "activations"]
CONSTRUCTORS = {
    fastrnn.LSTM: ["input_size", "hidden_size", "num_layers", "dropout", "proj_size", "dtype",
                   "backend", "seed", "peepholes", "input_forget", *_LAYER_FLAGS],
    fastrnn.GRU: ["input_size", "hidden_size", "num_layers", "dropout", "dtype", "backend", "seed",
                  "reset_after", *_LAYER_FLAGS],
    fastrnn.RNN: ["input_size", "hidden_size", "num_layers", "nonlinearity", "dropout", "dtype",
                  "backend", "seed", *_LAYER_FLAGS],
    fastrnn.LSTMCell: ["input_size", "hidden_size", "dtype", "backend", "seed", "bias",
                       "peepholes", "input_forget", "clip", "activations"],
    fastrnn.GRUCell: ["input_size", "hidden_size", "dtype", "backend", "seed", "bias",
                      "reset_after", "clip", "activations"],
    fastrnn.RNNCell: ["input_size", "hidden_size", "nonlinearity", "dtype", "backend", "seed",
                      "bias", "clip", "activations"],
}
def _seed_ok(value):
    try:
        np.random.default_rng(value)
    except (TypeError, ValueError):
        return False
    return True


def _f32_holds(v):
    with np.errstate(over="ignore", under="ignore"):
        return 0 < np.float32(v) < np.inf


#: values that are right for some of those arguments (the constructor must take them)
def _flag_ok(value):
    return isinstance(value, (bool, np.bool_)) or (isinstance(value, int) and value in (0, 1))


VALID_FOR = {"seed": _seed_ok, "bias": _flag_ok, "batch_first": _flag_ok, "bidirectional": _flag_ok,
             "reverse": _flag_ok, "reset_after": _flag_ok, "peepholes": _flag_ok,
             "input_forget": _flag_ok, "activations": lambda v: v is None,
             "clip": lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)
                                             and 0 < v < 1e308 and _f32_holds(v)),
             "proj_size": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < H,
             "dropout": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
             and 0 <= v <= 1}


def expect_named_error(call, *names):
    """Run ``call``: it may work, else it must raise TypeError/ValueError naming one of ``names``."""
    try:
        call()
    except (TypeError, ValueError) as exc:
        message = str(exc)
        assert any(n in message for n in names), f"{type(exc).__name__} does not name " \
                                                 f"{names}: {message}"
        return exc
    except Exception as exc:  # noqa: BLE001 - the point: nothing else may come out
        pytest.fail(f"{type(exc).__name__} instead of a named TypeError/ValueError: {exc}")
    return None


def _good_input(value, max_ndim):
    """Whether a value from BAD happens to be a right input: floats of 1 to ``max_ndim``
    dimensions whose last one is I."""
    arr = np.asarray(value) if isinstance(value, np.ndarray) else None
    return (arr is not None and arr.dtype.kind == "f" and 1 <= arr.ndim <= max_ndim
            and arr.shape[-1] == I)


FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(cls=st.sampled_from(list(CONSTRUCTORS)), data=st.data())
def test_constructor_arguments(backend, cls, data):
    arg = data.draw(st.sampled_from(CONSTRUCTORS[cls]))
    value = data.draw(st.sampled_from(BAD))
    kwargs = dict(input_size=I, hidden_size=H, backend=backend)
    kwargs[arg] = value
    if arg in VALID_FOR and VALID_FOR[arg](value):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # dropout with one layer warns
        exc = expect_named_error(lambda: cls(**kwargs), arg)
    assert exc is not None, f"{cls.__name__}({arg}={value!r}) was accepted"


#: argument of a layer's forward/backward -> names its message may use
LAYER_ARGS = {"input": ("input",), "hx": ("hx", "h_0", "c_0"), "lengths": ("lengths",),
              "dout": ("dout",), "dhx": ("dhx", "dh_n", "dc_n")}


@FUZZ
@given(kind=st.sampled_from(["lstm", "gru", "rnn"]), arg=st.sampled_from(list(LAYER_ARGS)),
       value=st.sampled_from(BAD), batch_first=st.booleans())
def test_layer_call_arguments(backend, kind, arg, value, batch_first):
    cls = {"lstm": fastrnn.LSTM, "gru": fastrnn.GRU, "rnn": fastrnn.RNN}[kind]
    layer = cls(I, H, num_layers=2, batch_first=batch_first, backend=backend, seed=0)
    x = np.zeros((B, T, I) if batch_first else (T, B, I), np.float32)
    call = dict(input=x, hx=None, lengths=None)
    if arg in call:
        call[arg] = value
        exc = expect_named_error(lambda: layer(call["input"], call["hx"], lengths=call["lengths"]),
                                 *LAYER_ARGS[arg])
        # values of BAD that are right here: (3, 5) floats as an unbatched input (sequence of
        # 3 steps), (1, 2, 3) as the lengths of 3 sequences of up to 4 steps
        good = (_good_input(value, 2) and np.ndim(value) == 2 if arg == "input" else
                arg == "lengths" and isinstance(value, tuple) and value == (1, 2, 3))
        assert (exc is None) == good, f"{arg}={value!r}"
        return
    out, _ = layer(x)
    back = dict(dout=np.zeros_like(out), dhx=None)
    back[arg] = value
    exc = expect_named_error(lambda: layer.backward(back["dout"], back["dhx"]), *LAYER_ARGS[arg])
    assert exc is not None, f"backward({arg}={value!r}) was accepted"
    layer.backward(np.zeros_like(out))   # a refused call leaves the forward for the next


@FUZZ
@given(kind=st.sampled_from(["lstm", "gru", "rnn"]), arg=st.sampled_from(["input", "hx", "dh1"]),
       value=st.sampled_from(BAD))
def test_cell_call_arguments(backend, kind, arg, value):
    cls = {"lstm": fastrnn.LSTMCell, "gru": fastrnn.GRUCell, "rnn": fastrnn.RNNCell}[kind]
    cell = cls(I, H, backend=backend, seed=0)
    x = np.zeros((B, I), np.float32)
    if arg == "input":
        exc = expect_named_error(lambda: cell(value), "input")
        assert (exc is None) == _good_input(value, 2), f"input={value!r}"
    elif arg == "hx":
        exc = expect_named_error(lambda: cell(x, value), "hx")
        assert exc is not None, f"hx={value!r} was accepted"
    else:
        cell(x)
        exc = expect_named_error(lambda: cell.backward(value), "dh1")
        assert exc is not None, f"dh1={value!r} was accepted"
        cell.backward(np.zeros((B, H), np.float32))


@FUZZ
@given(arg=st.sampled_from(["in_features", "out_features", "bias", "dtype", "seed", "input", "dy"]),
       value=st.sampled_from(BAD + [("f8", -1)]))
def test_linear_arguments(arg, value):
    kwargs = dict(in_features=I, out_features=2)
    if arg in ("in_features", "out_features", "bias", "dtype", "seed"):
        if arg == "seed" and VALID_FOR["seed"](value) or arg == "bias" and one_of(0)(value):
            return
        kwargs[arg] = value
        exc = expect_named_error(lambda: Linear(**kwargs), arg)
        assert exc is not None, f"Linear({arg}={value!r}) was accepted"
        return
    head = Linear(**kwargs)
    if arg == "input":
        exc = expect_named_error(lambda: head(value), "input")
        assert (exc is None) == _good_input(value, 99), f"input={value!r}"
        return
    head(np.zeros((B, I), np.float32))
    exc = expect_named_error(lambda: head.backward(value), "dy")
    assert exc is not None, f"dy={value!r} was accepted"
    head.backward(np.zeros((B, 2), np.float32))


@FUZZ
@given(value=st.sampled_from(BAD + [None]))
def test_load_state_dict_arguments(backend, value):
    layer = fastrnn.GRU(I, H, backend=backend, seed=0)
    before = layer.state_dict()
    exc = expect_named_error(lambda: layer.load_state_dict(value), "state_dict")
    assert exc is not None
    exc = expect_named_error(lambda: layer.load_state_dict({"weight_ih_l0": value}), "weight_ih_l0",
                             "state_dict")
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(v, before[k])   # a refused load changed nothing


# -- the rest of the package: training toolkit, files, threads, backends, converters ----------
def one_of(*choices):
    """Predicate: the value is one of ``choices`` (same type and equal; never an array)."""
    return lambda v: any(type(v) is type(c) and not isinstance(v, np.ndarray) and v == c
                         for c in choices)


def _r(value):
    """repr for a message (10**5000 has more digits than repr converts)."""
    try:
        return repr(value)[:80]
    except ValueError:
        return f"<{type(value).__name__}>"


def never(value):
    return False


def _check(call, valid, names, what):
    """``call()`` works when ``valid``, else raises TypeError/ValueError naming one of ``names``."""
    exc = expect_named_error(call, *names)
    if valid:
        assert exc is None, f"{what} was refused: {exc}"
    else:
        assert exc is not None, f"{what} was accepted"
    return exc


def _with(base, arg, value):
    """``base`` (a dict of keyword arguments) with ``arg`` set to ``value``."""
    out = dict(base)
    out[arg] = value
    return out


def _fresh(value):
    """A copy of an array of BAD (for calls that write into their argument), else the value."""
    return value.copy() if isinstance(value, np.ndarray) else value


#: the values of BAD (and beyond) that are right for a finite real >= 0 (learning rates, eps, ...)
NON_NEGATIVE = one_of(1.5, 0, 10**30, np.float32(0.5), np.float64(0.5))
#: a flag (the ints 0 and 1 are taken for False and True)
FLAG = one_of(0, True, False, 1, np.True_)


# -- losses --------------------------------------------------------------------------------
def _loss_inputs():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((T, B, 5)).astype(np.float32)
    return dict(
        cross_entropy=dict(logits=logits, targets=rng.integers(0, 5, (T, B))),
        mse_loss=dict(pred=rng.standard_normal((T, B)),
                      target=rng.standard_normal((T, B)).astype(np.float32)),
        log_softmax=dict(logits=logits), softmax=dict(logits=logits))


LOSSES = {"cross_entropy": cross_entropy, "mse_loss": mse_loss, "log_softmax": log_softmax,
          "softmax": softmax}
#: weights a mask of BAD gives right: a scalar >= 0, or one per sequence (B = 3)
MASK = one_of(0, 1.5, (1, 2, 3))
#: (function, argument) -> (predicate of the values that are right, values beyond BAD)
LOSS_ARGS = {
    ("cross_entropy", "logits"): (lambda v: isinstance(v, np.ndarray) and v.dtype == np.float16, [
        np.zeros((T, B, 0), np.float32), np.zeros((B, T, 5)), np.zeros((T, B, 5), int),
        np.zeros((T, B, 5), np.float16)]),
    ("cross_entropy", "targets"): (lambda v: isinstance(v, np.ndarray) and v.dtype == np.int8, [
        np.full((T, B), 5), np.full((T, B), -1), np.zeros((T, B)), np.zeros((B, T), int),
        np.zeros((T, B, 1), int), np.full((T, B), 2**64 - 1, np.uint64),
        np.full((T, B), -100, np.int8)]),
    ("cross_entropy", "ignore_index"): (one_of(-3, 0, np.int64(2)), [True, 2**63, np.int64(2)]),
    ("cross_entropy", "mask"): (MASK, [np.ones((T, B, 2)), -np.ones(B), np.full(B, np.nan)]),
    ("cross_entropy", "reduction"): (one_of("none", "sum"), ["none", "sum", "MEAN", None]),
    ("cross_entropy", "weight"): (
        lambda v: isinstance(v, np.ndarray) and v.shape == (5,) and v.dtype.kind in "biuf"
        and bool(np.all(np.isfinite(v)) and np.all(v >= 0)),
        [np.ones(5), np.arange(5, dtype=np.int8), -np.ones(5), np.full(5, np.inf), np.ones(4)]),
    ("cross_entropy", "label_smoothing"): (one_of(0, 1, 0.1, np.float64(0.5)),
                                           [0.1, 1, np.float64(0.5), -0.1, True, "0.1"]),
    ("mse_loss", "pred"): (never, [np.zeros((B, T)), np.zeros((T, B), int), np.zeros((T, B, 1))]),
    ("mse_loss", "target"): (never, [np.zeros((B, T)), np.zeros((T, B), int)]),
    ("mse_loss", "mask"): (MASK, [np.ones((T, B, 2)), -np.ones(B), np.full(B, np.inf)]),
    ("mse_loss", "reduction"): (one_of("none", "sum"), ["none", "sum", "MAX", None]),
    ("log_softmax", "logits"): (
        lambda v: isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.ndim >= 1
        and v.shape[-1] > 0,
        [np.zeros((3, 0)), np.zeros(4, int), np.float64(1.0), np.zeros((0, 3))]),
    ("log_softmax", "axis"): (one_of(-3, 0, np.int64(1)), [3, -4, True, (0, 1), np.int64(1)]),
    ("softmax", "logits"): (
        lambda v: isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.ndim >= 1
        and v.shape[-1] > 0, [np.zeros((3, 0)), np.zeros(4, int), np.zeros((0, 3))]),
    ("softmax", "axis"): (one_of(-3, 0), [3, -4, True]),
    ("softmax", "temperature"): (one_of(1.5, 10**30, np.float32(2.0)),
                                 [0.0, -1.0, np.float32(2.0)]),
}


@FUZZ
@pytest.mark.parametrize("fn,arg", list(LOSS_ARGS))
@given(data=st.data())
def test_loss_arguments(fn, arg, data):
    valid, extra = LOSS_ARGS[(fn, arg)]
    value = data.draw(st.sampled_from(BAD + extra))
    kwargs = _with(_loss_inputs()[fn], arg, value)
    names = (arg, "logits") if arg == "targets" else (arg, "targets") if arg == "logits" else \
        (arg, "pred", "target") if arg in ("pred", "target") else (arg,)
    _check(lambda: LOSSES[fn](**kwargs), valid(value), names, f"{fn}({arg}={_r(value)})")


# -- optimizers ----------------------------------------------------------------------------
def _params():
    """Two parameters of different dtypes (shapes that no array of BAD has) and their gradients."""
    params = {"w": np.linspace(-1, 1, 8).reshape(4, 2), "b": np.ones(2, np.float32)}
    grads = {"w": np.full((4, 2), 0.5), "b": np.full(2, -0.25, np.float32)}
    return params, grads


OPTIMIZERS = {"SGD": (SGD, dict(lr=0.1, momentum=0.9)), "Adam": (Adam, {}),
              "AdamW": (AdamW, {}), "Adagrad": (Adagrad, {})}
#: hyper-parameter -> (predicate of the values that are right, values beyond BAD)
HYPER = {
    "lr": (NON_NEGATIVE, [-1e-9, 10**400, np.float32(0.5)]),
    "momentum": (NON_NEGATIVE, [-0.5]),
    "dampening": (one_of(1.5, -3, 0, 10**30, np.float64(0.5)), [np.float64(0.5)]),
    "weight_decay": (NON_NEGATIVE, [-1.0]),
    "eps": (NON_NEGATIVE, [-1e-8]),
    "lr_decay": (NON_NEGATIVE, [-0.1]),
    "initial_accumulator_value": (NON_NEGATIVE, [-0.1]),
    "nesterov": (FLAG, [True, 1, 2, "yes"]),
    "maximize": (FLAG, [True, np.True_, "no"]),
    "amsgrad": (FLAG, [True, 2]),
    "betas": (one_of((0.0, 0.0), [0.5, 0.5], (np.float32(0.9), 0.999)), [
        (0.9, 1.0), (-0.1, 0.9), (math.nan, 0.9), (0.9,), (0.9, 0.99, 0.1), ("0.9", 0.9),
        (0.0, 0.0), [0.5, 0.5], (np.float32(0.9), 0.999), np.array([0.9, 0.99])]),
}


def _optimizer_args():
    return [(name, arg) for name, (cls, _) in OPTIMIZERS.items() for arg in cls._hyper]


@FUZZ
@pytest.mark.parametrize("name,arg", _optimizer_args())
@given(data=st.data())
def test_optimizer_hyperparameters(name, arg, data):
    """Each hyper-parameter, given to the constructor, then set as an attribute before a step
    (``opt.lr = ...`` is how a schedule changes it): checked both times."""
    cls, base = OPTIMIZERS[name]
    valid, extra = HYPER[arg]
    value = data.draw(st.sampled_from(BAD + extra))
    ok = valid(value)
    params, grads = _params()
    _check(lambda: cls(params, grads, **_with(base, arg, value)), ok, (arg,),
           f"{name}({arg}={_r(value)})")
    opt = cls(params, grads, **base)
    opt.step()                                  # a state to keep, and amsgrad set afterwards
    good, before = getattr(opt, arg), {k: p.copy() for k, p in params.items()}
    setattr(opt, arg, value)
    with np.errstate(all="ignore"):             # lr=1e30 makes infinities
        exc = _check(opt.step, ok, (arg,), f"{name}.{arg} = {_r(value)}; step()")
    if exc is not None:
        for k, p in params.items():            # a refused step changed nothing
            np.testing.assert_array_equal(p, before[k])
        setattr(opt, arg, good)
        opt.step()


#: params/grads values beyond BAD, each a function of the good (params, grads)
PARAM_CASES = {
    "missing key": lambda p, g: ({"w": p["w"]}, g),
    "extra key": lambda p, g: (dict(p, c=np.zeros(3)), g),
    "empty": lambda p, g: ({}, g),
    "int array": lambda p, g: (dict(p, w=np.zeros((4, 2), int)), g),
    "read-only": lambda p, g: (dict(p, w=np.frombuffer(bytes(64)).reshape(4, 2)), g),
    "module and array": lambda p, g: ({"head": Linear(2, 2), "b": p["b"]}, None),
    "modules and a str": lambda p, g: ([Linear(2, 2), "x"], None),
    "modules with grads": lambda p, g: (Linear(2, 2), g),
}
GRAD_CASES = {
    "missing key": lambda p, g: (p, {"w": g["w"]}),
    "extra key": lambda p, g: (p, dict(g, c=np.zeros(3))),
    "wrong shape": lambda p, g: (p, dict(g, w=np.zeros((2, 4)))),
    "int array": lambda p, g: (p, dict(g, w=np.zeros((4, 2), int))),
    "list": lambda p, g: (p, dict(g, b=[0.0, 0.0])),
    "None": lambda p, g: (p, None),
}


@FUZZ
@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("arg", ["params", "grads"])
@given(data=st.data())
def test_optimizer_params_and_grads(name, arg, data):
    cls, base = OPTIMIZERS[name]
    cases = PARAM_CASES if arg == "params" else GRAD_CASES
    case = data.draw(st.sampled_from(list(range(len(BAD))) + list(cases)))
    params, grads = _params()
    if isinstance(case, int):
        value = BAD[case]
        params, grads = (value, grads) if arg == "params" else (params, value)
    else:
        params, grads = cases[case](params, grads)
    what = _r(BAD[case]) if isinstance(case, int) else case
    _check(lambda: cls(params, grads, **base), False, (arg,), f"{name}({arg}: {what})")


def test_optimizer_zero_grad_refuses_read_only_gradients():
    params, grads = _params()
    grads["b"] = np.frombuffer(np.ones(2, np.float32).tobytes(), np.float32)
    opt = SGD(params, grads, lr=0.1)
    exc = expect_named_error(opt.zero_grad, "grads['b']")
    assert exc is not None and grads["w"].all()      # refused before any gradient was zeroed


def _corrupt(state_dict, path, value):
    """A copy of an optimizer's state_dict with the entry at ``path`` (keys) set to ``value``."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in state_dict.items()}
    out["state"] = {k: dict(v) for k, v in state_dict["state"].items()}
    where = out
    for key in path[:-1]:
        where = where[key]
    where[path[-1]] = value
    return out


#: entry of an Adam state_dict -> predicate of the values that are right there
ADAM_ENTRIES = {("type",): never, ("hyper",): never, ("steps",): one_of(0), ("state",): never,
                ("hyper", "lr"): NON_NEGATIVE, ("hyper", "betas"): never,
                ("hyper", "amsgrad"): FLAG, ("state", "w"): never,
                ("state", "w", "step"): one_of(0), ("state", "w", "exp_avg"): never,
                ("state", "b", "exp_avg_sq"): never, ("state", "w", "max_exp_avg_sq"): never}


@FUZZ
@pytest.mark.parametrize("entry", [None] + list(ADAM_ENTRIES))
@given(value=st.sampled_from(BAD))
def test_optimizer_load_state_dict(entry, value):
    params, grads = _params()
    opt = Adam(params, grads, lr=0.1)
    opt.step()
    saved = opt.state_dict()
    sd = value if entry is None else _corrupt(saved, entry, value)
    valid = entry is not None and ADAM_ENTRIES[entry](value)
    with np.errstate(all="ignore"):             # lr=1e30 makes infinities
        _check(lambda: opt.load_state_dict(sd), valid, ("state_dict",),
               f"state_dict {entry}={_r(value)}")
    if not valid:                               # a refused load changed nothing
        after = opt.state_dict()
        assert after["hyper"] == saved["hyper"] and after["steps"] == saved["steps"]
        for k, s in saved["state"].items():
            for key, v in s.items():
                np.testing.assert_array_equal(after["state"][k][key], v)
    with np.errstate(all="ignore"):
        opt.step()


def test_optimizer_load_state_dict_structure():
    """Entries missing, unknown, or of another optimizer: each refused, naming the state_dict."""
    params, grads = _params()
    for cls in (SGD, Adam, Adagrad):
        opt = cls(params, grads, lr=0.1, **({"momentum": 0.9} if cls is SGD else {}))
        opt.step()
        sd = opt.state_dict()
        other = (SGD if cls is Adam else Adam)(params, grads).state_dict()
        name = next(iter(sd["state"]))
        bad = [{k: v for k, v in sd.items() if k != "hyper"}, other,
               _corrupt(sd, ("hyper",), dict(sd["hyper"], extra=1)),
               _corrupt(sd, ("hyper",), {k: v for k, v in sd["hyper"].items() if k != "lr"}),
               _corrupt(sd, ("hyper",), dict(sd["hyper"], params={})),
               _corrupt(sd, ("state",), {name: sd["state"][name]}),
               _corrupt(sd, ("state", name, "unknown"), np.zeros(2)),
               _corrupt(sd, ("state", name), {"step": 1} if cls is not SGD else {"x": 1})]
        if cls is Adagrad:
            bad.append(_corrupt(sd, ("state", name), {}))      # its state is never empty
        for i, value in enumerate(bad):
            _check(lambda: opt.load_state_dict(value), False, ("state_dict",),
                   f"{cls.__name__} #{i}")
        opt.load_state_dict(sd)
        opt.step()


@FUZZ
@given(value=st.sampled_from(BAD + [[Linear(2, 2), 1], {"a": Linear(2, 2)}, Linear(2, 2)]))
def test_parameters_and_grads_argument(value):
    valid = one_of([])(value) or isinstance(value, Linear) or isinstance(value, dict) and all(
        isinstance(m, Linear) for m in value.values())
    _check(lambda: parameters_and_grads(value), valid, ("modules",), f"modules={_r(value)}")


# -- gradient clipping --------------------------------------------------------------------
def _grads():
    return {"w": np.full((4, 2), 3.0), "b": np.full(2, -4.0, np.float32)}


#: stand-ins for gradients beyond BAD: a dict holding a read-only array, or a list
READ_ONLY, LISTS = object(), object()
CLIP_ARGS = {
    ("clip_grad_norm", "grads"): (
        lambda v: one_of([])(v) or isinstance(v, np.ndarray) and v.dtype.kind == "f",
        [READ_ONLY, LISTS]),
    ("clip_grad_norm", "max_norm"): (one_of(1.5, 10**30, math.inf, np.float32(2)),
                                     [0.0, -1.0, np.float32(2)]),
    ("clip_grad_norm", "norm_type"): (one_of(1.5, 10**30, math.inf, 0.5), [-math.inf, 0.5]),
    ("clip_grad_norm", "error_if_nonfinite"): (FLAG, [True, "yes"]),
    ("clip_grad_value", "grads"): (
        lambda v: one_of([])(v) or isinstance(v, np.ndarray) and v.dtype.kind == "f",
        [READ_ONLY, LISTS]),
    ("clip_grad_value", "clip_value"): (one_of(1.5, 0, 10**30, math.inf), [-1e-9]),
    ("grad_norm", "grads"): (      # grad_norm only reads them
        lambda v: one_of([])(v) or v is READ_ONLY
        or isinstance(v, np.ndarray) and v.dtype.kind == "f",
        [READ_ONLY, LISTS]),
    ("grad_norm", "norm_type"): (one_of(1.5, 10**30, math.inf, 0.5), [-math.inf, 0.5]),
}
CLIPS = {"clip_grad_norm": (clip_grad_norm, dict(max_norm=1.0)),
         "clip_grad_value": (clip_grad_value, dict(clip_value=1.0)), "grad_norm": (grad_norm, {})}


@FUZZ
@pytest.mark.parametrize("fn,arg", list(CLIP_ARGS))
@given(data=st.data())
def test_clip_arguments(fn, arg, data):
    valid, extra = CLIP_ARGS[(fn, arg)]
    value = data.draw(st.sampled_from(BAD + extra))
    ok = valid(value)
    grads = _grads()
    if value is READ_ONLY:
        value = dict(grads, b=np.frombuffer(grads["b"].tobytes(), np.float32))
    elif value is LISTS:
        value = dict(grads, b=[1.0, 2.0])
    func, kwargs = CLIPS[fn]
    kwargs = _with(dict(kwargs, grads=grads), arg, _fresh(value))
    before = {k: np.array(g, copy=True) for k, g in grads.items()}
    exc = _check(lambda: func(**kwargs), ok, (arg,), f"{fn}({arg}={_r(value)})")
    if exc is not None:
        for k, g in grads.items():              # refused before any gradient was changed
            np.testing.assert_array_equal(g, before[k])


# -- truncated BPTT -----------------------------------------------------------------------
def _zero_loss(out, t0, t1):
    return 0.0, np.zeros_like(out)


#: argument -> (predicate of the values of BAD and beyond that are right, values beyond BAD)
TBPTT_ARGS = {
    "rnn": (never, [fastrnn.GRU(I, H, bidirectional=True), fastrnn.LSTMCell(I, H),
                    Linear(I, H), fastrnn.LSTM]),
    "k1": (never, [True, np.float64(2.0)]),
    "k2": (one_of(np.int64(3)), [1, np.int64(3)]),          # k1 = 2
    "x": (lambda v: isinstance(v, np.ndarray) and v.shape == (T, B, I) and v.dtype.kind == "f", [
        np.zeros((T, B, 7)), np.zeros((0, B, I)), np.zeros((T, B, I), int), np.zeros((T, B, I))]),
    "loss_and_grad": (never, []),
    "after_backward": (never, []),
    "return_step_norms": (FLAG, [True, "yes"]),
    "returned": (never, [(0.0,), None]),                   # what loss_and_grad returns
    "dout": (lambda v: isinstance(v, np.ndarray) and v.shape == (2, B, H) and v.dtype.kind == "f",
             [np.zeros((2, B, H), int), np.zeros((2, B, H)), np.zeros((B, 2, H))]),
    "streams": (lambda v: one_of(-3, 0, [], slice(0, 2), [0, 2], np.int64(1))(v) or (
        isinstance(v, np.ndarray) and v.dtype == bool and v.shape == (B,)), [
        slice(0, 2), slice("a", None), slice(None, None, 0), np.array([True, False, True]),
        [True, False], 3, -4, [0, 2], [3], np.int64(1), True, np.zeros((1, 1), int)]),
}
TBPTT_NAMES = {"returned": ("loss_and_grad",), "dout": ("loss_and_grad",)}


@FUZZ
@pytest.mark.parametrize("arg", list(TBPTT_ARGS))
@given(data=st.data())
def test_tbptt_arguments(backend, arg, data):
    valid, extra = TBPTT_ARGS[arg]
    value = data.draw(st.sampled_from(BAD + extra))
    lstm = fastrnn.LSTM(I, H, backend=backend, seed=0)
    x = np.zeros((T, B, I), np.float32)
    what, names = f"{arg}={_r(value)}", TBPTT_NAMES.get(arg, (arg,))
    if arg in ("rnn", "k1", "k2"):
        kwargs = _with(dict(rnn=lstm, k1=2), arg, value)
        _check(lambda: TBPTT(**kwargs), valid(value), names, what)
        return
    tb = TBPTT(lstm, 2)
    if arg == "streams":
        tb.run(x, _zero_loss)
        _check(lambda: tb.reset(value), valid(value), names, what)
        tb.reset(None)
        expect_named_error(lambda: tb.reset(value), *names)   # no state yet: nothing to reset
        return
    kwargs = dict(x=x, loss_and_grad=_zero_loss, after_backward=None, return_step_norms=False)
    if arg in kwargs:
        kwargs[arg] = value
    else:
        kwargs["loss_and_grad"] = lambda out, t0, t1: value if arg == "returned" else (0.0, value)
    exc = _check(lambda: tb.run(**kwargs), valid(value), names, what)
    if exc is not None:
        assert tb.run(x, _zero_loss) == [0.0, 0.0]          # a refused run leaves it usable


SPLIT_ARGS = {
    ("split_streams", "data"): lambda v: (isinstance(v, np.ndarray) or type(v) is tuple) and (
        np.ndim(v) >= 1 and len(v) >= 2),
    ("split_streams", "num_streams"): never,
    ("windows", "T"): never, ("windows", "k1"): never, ("windows", "k2"): never,
}


@FUZZ
@pytest.mark.parametrize("fn,arg", list(SPLIT_ARGS))
@given(value=st.sampled_from(BAD + [3, np.int64(5)]))
def test_split_streams_and_windows_arguments(fn, arg, value):
    if fn == "split_streams":
        kwargs = _with(dict(data=np.arange(10), num_streams=2), arg, value)
        call = lambda: split_streams(**kwargs)       # noqa: E731
        valid = SPLIT_ARGS[(fn, arg)](value) or (
            arg == "num_streams" and one_of(3, np.int64(5))(value))
    else:
        kwargs = _with(dict(T=10, k1=4, k2=None), arg, value)
        call = lambda: windows(**kwargs)             # noqa: E731
        valid = one_of(3, np.int64(5))(value) and not (arg == "k2" and value == 3)   # k2 >= k1
    _check(call, valid, (arg, "k1") if arg == "k2" else (arg,), f"{fn}({arg}={_r(value)})")


# -- saving and loading -------------------------------------------------------------------
@FUZZ
@pytest.mark.parametrize("call,arg", [("save", "obj"), ("save", "path"), ("load", "path"),
                                      ("load", "backend")])
@given(data=st.data())
def test_save_and_load_arguments(tmp_path, monkeypatch, call, arg, data):
    monkeypatch.chdir(tmp_path)           # "x" and b"x" are paths that work
    gru = fastrnn.GRU(I, H, backend="numpy", seed=0)
    fastrnn.save(gru, "x")
    extra = {"obj": [fastrnn.GRU, Adam(gru)],
             "path": ["", "a\0b", io.StringIO(), "text", "closed", pathlib.Path("x"),
                      "read-only" if call == "save" else "write-only",
                      io.BytesIO(pathlib.Path("x").read_bytes())],
             "backend": ["numpy", "NUMPY", ""]}[arg]
    value = data.draw(st.sampled_from(BAD + extra))
    if isinstance(value, str) and value in ("text", "read-only", "write-only", "closed"):
        value = {"text": lambda: open("x", "r"), "read-only": lambda: open("x", "rb"),
                 "write-only": lambda: open("y", "wb"), "closed": io.BytesIO}[value]()
        if isinstance(value, io.BytesIO):
            value.close()
    valid = {"obj": never, "backend": one_of("numpy"),
             "path": lambda v: one_of("x", b"x")(v) or isinstance(v, (pathlib.Path, io.BytesIO))
             and not (isinstance(v, io.BytesIO) and v.closed)}[arg](value)
    if call == "save":
        kwargs = _with(dict(obj=gru, path="saved.npz"), arg, value)
        fn = lambda: fastrnn.save(**kwargs)             # noqa: E731
    else:
        kwargs = _with(dict(path="x", backend=None), arg, value)
        fn = lambda: fastrnn.load(**kwargs)             # noqa: E731
    try:
        _check(fn, valid, (arg,), f"{call}({arg}={_r(value)})")
    finally:
        if hasattr(value, "close"):
            value.close()


def test_save_and_load_paths_the_system_refuses(tmp_path):
    """A missing file, a missing directory, a directory: the OSError of opening it, naming it."""
    gru = fastrnn.GRU(I, H, backend="numpy", seed=0)
    load, save = fastrnn.load, lambda p: fastrnn.save(gru, p)
    for call, path, exc in [(load, tmp_path / "missing.npz", FileNotFoundError),
                            (save, tmp_path / "no" / "m.npz", FileNotFoundError),
                            (save, tmp_path, IsADirectoryError),
                            (load, tmp_path, IsADirectoryError)]:
        with pytest.raises(exc) as info:
            call(path)
        assert os.path.basename(path) in str(info.value)
    assert sorted(os.listdir(tmp_path)) == []     # no temporary file left behind


# -- threads and backends -----------------------------------------------------------------
@FUZZ
@given(value=st.sampled_from(BAD + [2**31, True, "2", np.int64(2)]))
def test_set_num_threads_argument(value):
    before = fastrnn.get_num_threads()
    try:
        _check(lambda: fastrnn.set_num_threads(value), one_of(np.int64(2))(value),
               ("n (the number of threads)",), f"set_num_threads({_r(value)})")
    finally:
        fastrnn.set_num_threads(before)


@FUZZ
@given(value=st.sampled_from(BAD + ["numpy", "auto", "NUMPY", "", " numpy"]))
def test_resolve_argument(value):
    # resolve's argument is the ``backend=`` of every constructor, which its messages name
    _check(lambda: resolve(value), one_of("numpy", "auto")(value), ("backend",),
           f"resolve({_r(value)})")


# -- converters ---------------------------------------------------------------------------
REORDER_ARGS = {
    "array": (lambda v: one_of([], (1, 2, 3))(v) or isinstance(v, np.ndarray) and v.ndim >= 1
              and v.shape[0] % 3 == 0 and v.dtype.kind in "biufc",
              [np.zeros(6, object), np.zeros((6, 3), "U1"), np.arange(6)]),
    "source": (one_of("nzr"), ["rzz", "", ["r", "z", "n"], "rzn ", "nzr"]),
    "target": (one_of("nzr"), ["rzz", "", ("z", "r", "n"), "nzr"]),
    "axis": (one_of(0, -1, 1, np.int64(-2)), [-1, 1, 2, -3, np.int64(-2), True]),
}


@FUZZ
@pytest.mark.parametrize("arg", list(REORDER_ARGS))
@given(data=st.data())
def test_reorder_gates_arguments(arg, data):
    valid, extra = REORDER_ARGS[arg]
    value = data.draw(st.sampled_from(BAD + extra))
    kwargs = dict(array=np.arange(18.0).reshape(6, 3), source="rzn", target="zrn", axis=0)
    kwargs[arg] = value
    _check(lambda: reorder_gates(**kwargs), valid(value), (arg, "source", "target")
           if arg in ("source", "target") else (arg,), f"reorder_gates({arg}={_r(value)})")


def test_reorder_gates_orders_naming_a_gate_twice():
    """Repeated letters would take one block twice and drop another; an empty order divides by
    zero: both refused, the orders named."""
    for source, target in [("rzz", "zrz"), ("", ""), ("ii", "ii")]:
        exc = expect_named_error(lambda: reorder_gates(np.zeros((6, 2)), source, target), "source")
        assert exc is not None, (source, target)
    np.testing.assert_array_equal(reorder_gates(np.arange(3), "rzn", "nrz"), [2, 0, 1])


def _onnx():
    if required("FASTRNN_REQUIRE_INTEROP"):
        import onnx
        return onnx
    return pytest.importorskip("onnx", reason="onnx is not installed (pip install onnx)")


ONNX_EXPORT_ARGS = {
    "obj": (never, [fastrnn.GRU, Linear(2, 2)]),
    "path": (lambda v: one_of("x", b"x")(v) or isinstance(v, (pathlib.Path, io.BytesIO)),
             ["", "a\0b", io.StringIO(), pathlib.Path("y.onnx")]),
    "initial_state": (lambda v: v is None or FLAG(v), [True, None, "yes"]),
    "lengths": (FLAG, [True, np.array([3, 3, 3])]),
    "dtype": (lambda v: v is None or one_of("float64")(v) or v is np.float64,
              ["float64", np.float64, np.float16, "float32,float32", ("f8", -1), None]),
    "use_layout_attribute": (FLAG, [True, "no"]),
    "opset": (one_of(14, 17, np.int64(17)), [13, 14, 17, 10**3, True, np.int64(17), 17.0]),
}


@FUZZ
@pytest.mark.parametrize("arg", list(ONNX_EXPORT_ARGS))
@given(data=st.data())
def test_onnx_export_arguments(tmp_path, monkeypatch, arg, data):
    _onnx()
    import fastrnn.onnx as fonnx
    monkeypatch.chdir(tmp_path)
    valid, extra = ONNX_EXPORT_ARGS[arg]
    value = data.draw(st.sampled_from(BAD + extra))
    gru = fastrnn.GRU(I, H, num_layers=2, batch_first=True, backend="numpy", seed=0)
    kwargs = _with(dict(obj=gru, path=io.BytesIO()), arg, value)
    _check(lambda: fonnx.export(**kwargs), valid(value), (arg,), f"export({arg}={_r(value)})")


@FUZZ
@pytest.mark.parametrize("arg", ["source", "backend", "batch_first"])
@given(value=st.sampled_from(BAD + ["numpy", io.StringIO(), "", True]))
def test_onnx_load_arguments(tmp_path, monkeypatch, arg, value):
    _onnx()
    import fastrnn.onnx as fonnx
    monkeypatch.chdir(tmp_path)
    fonnx.export(fastrnn.GRU(I, H, backend="numpy", seed=0), "x")
    fonnx.export(fastrnn.GRU(I, H, backend="numpy", seed=0), "numpy")   # source="numpy" is a file
    kwargs = _with(dict(source="x", backend="numpy", batch_first=None), arg, value)
    valid = {"source": one_of("x", b"x", "numpy"), "backend": one_of("numpy"),
             "batch_first": FLAG}[arg](value)
    _check(lambda: fonnx.load(**kwargs), valid, (arg,), f"onnx.load({arg}={_r(value)})")
