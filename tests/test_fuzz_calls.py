"""Malformed calls, drawn by hypothesis: every public call either works or raises a TypeError or
ValueError whose message names the argument; never an error from inside NumPy or a kernel."""

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import fastrnn
from fastrnn.train import Linear

#: values no argument below takes (as the value of that argument), of every kind a careless
#: caller passes: wrong types, wrong dtypes, wrong ranks, ragged lists, empty arrays, huge ints
BAD = [
    "x", b"x", 1.5, -3, 0, 10**30, float("nan"), float("inf"), [], [[1.0], []], {"a": 1},
    object(), (1, 2, 3), np.zeros((2, 3), dtype=int), np.zeros((2, 3), dtype=complex),
    np.array(["a", "b"]), np.array([None, 1.0], dtype=object), np.zeros((0,)),
    np.zeros((2, 3, 4, 5)), np.zeros((7, 7, 7)), np.zeros((3, 5)), np.ones(5, dtype=bool),
]
T, B, I, H = 4, 3, 5, 6

#: class -> constructor arguments that must be checked, with the names a message may use
CONSTRUCTORS = {
    fastrnn.LSTM: ["input_size", "hidden_size", "num_layers", "dropout", "proj_size", "dtype",
                   "backend", "seed"],
    fastrnn.GRU: ["input_size", "hidden_size", "num_layers", "dropout", "dtype", "backend", "seed"],
    fastrnn.RNN: ["input_size", "hidden_size", "num_layers", "nonlinearity", "dropout", "dtype",
                  "backend", "seed"],
    fastrnn.LSTMCell: ["input_size", "hidden_size", "dtype", "backend", "seed"],
    fastrnn.GRUCell: ["input_size", "hidden_size", "dtype", "backend", "seed"],
    fastrnn.RNNCell: ["input_size", "hidden_size", "nonlinearity", "dtype", "backend", "seed"],
}
def _seed_ok(value):
    try:
        np.random.default_rng(value)
    except (TypeError, ValueError):
        return False
    return True


#: values that are right for some of those arguments (the constructor must take them)
VALID_FOR = {"seed": _seed_ok,
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
@given(arg=st.sampled_from(["in_features", "out_features", "dtype", "seed", "input", "dy"]),
       value=st.sampled_from(BAD))
def test_linear_arguments(arg, value):
    kwargs = dict(in_features=I, out_features=2)
    if arg in ("in_features", "out_features", "dtype", "seed"):
        if arg == "seed" and VALID_FOR["seed"](value):
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
