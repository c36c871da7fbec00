"""Every bad input gets a TypeError or ValueError that names the argument,
what was expected and what was received -- never a crash inside a kernel."""

import numpy as np
import pytest

import fastrnn

T, B, I, H = 4, 3, 5, 6


def raises(exc, *words):
    """pytest.raises that also checks the message contains every word (case-insensitive)."""
    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(exc)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *args):
            out = self.ctx.__exit__(*args)
            message = str(self.info.value).lower()
            missing = [w for w in words if w.lower() not in message]
            assert not missing, f"message {str(self.info.value)!r} lacks {missing}"
            return out
    return _Check()


@pytest.fixture
def lstm(backend):
    return fastrnn.LSTM(I, H, num_layers=2, backend=backend, seed=0)


@pytest.fixture
def gru(backend):
    return fastrnn.GRU(I, H, backend=backend, seed=0)


# -- constructor ------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [fastrnn.RNN, fastrnn.LSTM, fastrnn.GRU,
                                 fastrnn.RNNCell, fastrnn.LSTMCell, fastrnn.GRUCell])
@pytest.mark.parametrize("arg", ["input_size", "hidden_size"])
def test_sizes_must_be_positive_integers(cls, arg):
    kwargs = {"input_size": 3, "hidden_size": 4}
    for bad, exc, words in [(2.5, TypeError, ["integer", "float", "2.5"]),
                            ("3", TypeError, ["integer", "str"]),
                            (True, TypeError, ["integer", "bool"]),
                            (0, ValueError, [">= 1", "0"]),
                            (-2, ValueError, [">= 1", "-2"])]:
        with raises(exc, arg, *words):
            cls(**dict(kwargs, **{arg: bad}))


@pytest.mark.parametrize("cls", [fastrnn.RNN, fastrnn.LSTM, fastrnn.GRU,
                                 fastrnn.RNNCell, fastrnn.LSTMCell, fastrnn.GRUCell])
def test_activation_parameters_the_dtype_cannot_hold_are_refused(cls):
    """alpha = 1e-50 is 0 in float32: scaled_tanh's derivative (alpha * beta - beta / alpha *
    y^2) was NaN on every backend; float64 holds it."""
    for acts, what in [(("scaled_tanh", 1e-50, 1.0), "alpha"),
                       (("scaled_tanh", 1e-39, 1.0), "beta / alpha"),
                       (("scaled_tanh", 1e20, 1e20), "alpha * beta"),
                       (("affine", 1e39, 0.0), "alpha")]:
        S = 1 if cls in (fastrnn.RNN, fastrnn.RNNCell) else 3 if cls in (
            fastrnn.LSTM, fastrnn.LSTMCell) else 2
        activations = [acts] + ["tanh"] * (S - 1)
        with raises(ValueError, "activations", f"scaled_tanh's {what}" if acts[0] ==
                    "scaled_tanh" else f"affine's {what}", "float32 represents"):
            cls(3, 4, activations=activations)
        cls(3, 4, activations=activations, dtype=np.float64)


@pytest.mark.parametrize("cls", [fastrnn.RNN, fastrnn.LSTM, fastrnn.GRU,
                                 fastrnn.RNNCell, fastrnn.LSTMCell, fastrnn.GRUCell])
def test_a_clip_the_dtype_rounds_to_zero_is_refused(cls):
    for clip in (1e-50, 1e39):         # 0 and inf in float32
        with raises(ValueError, "clip", "float32 holds, neither rounded to 0 nor infinite",
                    repr(clip)):
            cls(3, 4, clip=clip)
        assert cls(3, 4, clip=clip, dtype=np.float64).clip == clip


@pytest.mark.parametrize("bad,exc", [(0, ValueError), (-1, ValueError), (1.5, TypeError)])
def test_num_layers_must_be_a_positive_integer(bad, exc):
    with raises(exc, "num_layers", str(bad)):
        fastrnn.GRU(3, 4, num_layers=bad)


@pytest.mark.parametrize("bad,exc", [(-0.1, ValueError), (1.5, ValueError), ("0.5", TypeError),
                                     (True, TypeError), (float("nan"), ValueError)])
def test_dropout_must_be_a_probability(bad, exc):
    with raises(exc, "dropout", "[0, 1]"):
        fastrnn.LSTM(3, 4, num_layers=2, dropout=bad)


@pytest.mark.parametrize("bad,exc,words", [(-1, ValueError, [">= 0", "-1"]),
                                           (4, ValueError, ["smaller than hidden_size", "4"]),
                                           (6, ValueError, ["smaller than hidden_size", "6"]),
                                           (1.0, TypeError, ["integer", "float"])])
def test_proj_size_must_be_below_hidden_size(bad, exc, words):
    with raises(exc, "proj_size", *words):
        fastrnn.LSTM(3, 4, proj_size=bad)


@pytest.mark.parametrize("cls", [fastrnn.RNN, fastrnn.GRU])
def test_proj_size_is_for_lstm_only(cls):
    """PyTorch's RNN and GRU take proj_size=0 and refuse any other."""
    assert cls(3, 4, proj_size=0).get_config() == cls(3, 4).get_config()
    with raises(ValueError, "proj_size argument is only supported for LSTM", "proj_size=2"):
        cls(3, 4, proj_size=2)
    with raises(TypeError, "proj_size", "float"):
        cls(3, 4, proj_size=1.0)


@pytest.mark.parametrize("cls", [fastrnn.RNN, fastrnn.RNNCell])
def test_unknown_nonlinearity(cls):
    with raises(ValueError, "nonlinearity", "tanh", "relu", "sigmoid"):
        cls(3, 4, nonlinearity="sigmoid")


@pytest.mark.parametrize("cls", [fastrnn.RNN, fastrnn.RNNCell])
@pytest.mark.parametrize("activations", [["tanh"], ["sigmoid"], ["relu"]])
def test_relu_and_activations_are_not_both_given(cls, activations):
    """nonlinearity='relu' and activations at once are refused, even when the activations
    are the defaults' (["tanh"] was dropped without a word and the RNN ran relu)."""
    with raises(ValueError, "nonlinearity='relu'", "activations", "not both"):
        cls(3, 4, nonlinearity="relu", activations=activations)


@pytest.mark.parametrize("bad,words", [
    (("leaky_relu", -1.0), ["'leaky_relu' needs alpha >= 0", "-1.0"]),
    (("elu", -2.0), ["'elu' needs alpha >= 0"]),
    (("bogus",), ["must be one of", "'bogus'"]),
    (("tanh", 2.0), ["'tanh' takes 0 parameter(s)", "alpha=2.0"])])
def test_an_activation_object_is_checked_as_its_tuple_is(bad, words):
    """An Activation is checked like ("leaky_relu", -1.0): it was taken as it was, and a
    negative alpha made a wrong gradient, a made-up name a KeyError in the first call."""
    from fastrnn.activations import Activation
    with raises(ValueError, *words):
        fastrnn.RNN(2, 3, activations=[Activation(*bad)])
    if bad[0] != "tanh":      # (the tuple form takes no alpha for tanh at all)
        with raises(ValueError, *words[:1]):
            fastrnn.RNN(2, 3, activations=[bad])
    assert repr(fastrnn.GRU(2, 3, activations=[Activation("hard_sigmoid", 0.2, 0.5), Activation(
        "tanh")]).activations) == "(('hard_sigmoid', 0.2, 0.5), 'tanh')"


@pytest.mark.parametrize("name", ["affine", "leaky_relu", "thresholded_relu", "scaled_tanh",
                                  "hard_sigmoid", "elu", "LeakyRelu", "HardSigmoid"])
def test_an_activation_object_without_parameters_takes_the_functions_defaults(name):
    """Activation("affine") was alpha 0, beta 0 (the record's defaults): a layer of zeros, and
    Activation("leaky_relu") a relu; a parameter left out is the function's default, as with
    the name alone, and an object of an ONNX name has a repr."""
    from fastrnn.activations import Activation, activation
    assert Activation(name) == activation(name)._replace(name=name)
    assert Activation(name, 0.5).alpha == 0.5
    x = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(np.float32)
    got = fastrnn.RNN(4, 5, activations=[Activation(name)], backend="numpy", seed=0)(x)[0]
    want = fastrnn.RNN(4, 5, activations=[name], backend="numpy", seed=0)(x)[0]
    np.testing.assert_array_equal(got, want)
    assert repr(Activation(name)) == repr(activation(name)).replace(
        repr(activation(name).name), repr(name), 1)
    assert repr(Activation("bogus")) == "Activation('bogus', 0.0, 0.0)"


@pytest.mark.parametrize("bad", [np.int32, "float16", np.complex64, "double-ish", object, "int8"])
def test_unknown_dtype(bad):
    with raises(ValueError, "dtype", "float32", "float64"):
        fastrnn.LSTM(3, 4, dtype=bad)


def test_unknown_backend():
    with raises(ValueError, "backend", "numpy", "'cuda'"):
        fastrnn.GRU(3, 4, backend="cuda")
    with raises(TypeError, "backend", "str", "int"):
        fastrnn.GRU(3, 4, backend=1)


def test_unknown_backend_from_environment(monkeypatch):
    monkeypatch.setenv("FASTRNN_BACKEND", "fortran")
    with raises(ValueError, "FASTRNN_BACKEND", "'fortran'"):
        fastrnn.GRU(3, 4)


def test_bad_seed():
    with raises(TypeError, "seed", "str"):
        fastrnn.GRU(3, 4, seed="abc")
    for bad in (True, np.True_, False):      # NumPy would take True for 1
        with raises(TypeError, "seed", "bool"):
            fastrnn.GRU(3, 4, seed=bad)
    from fastrnn.train.seq2seq import Decoder
    for bad, words in (("a", ["str", "'a'"]), (-1, ["int", "-1"]), (1.5, ["float"]),
                       (True, ["bool"])):
        with raises(TypeError, "seed must be None, a non-negative int or a numpy SeedSequence",
                    *words):
            Decoder(10, 4, 5, seed=bad)


@pytest.mark.parametrize("mode", ["False", "no", 2, None, np.array([True])])
def test_train_mode_must_be_a_bool(lstm, mode):
    """bool("False") is True: a string (or anything else) is refused, as PyTorch does."""
    cell = fastrnn.LSTMCell(I, H).eval()
    for m in (lstm, cell):
        with raises(TypeError, "mode must be a bool"):
            m.train(mode)
    assert cell.training is False and lstm.train(np.bool_(False)).training is False


# -- forward inputs -------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(I,), (2, T, B, I), ()])
def test_input_of_wrong_ndim(lstm, shape):
    with raises(ValueError, "input", "2D", "3D", str(shape)):
        lstm(np.zeros(shape))


def test_input_of_wrong_feature_size(lstm):
    with raises(ValueError, "input_size", f"expected {I}", "got 7"):
        lstm(np.zeros((T, B, 7)))


@pytest.mark.parametrize("value", [np.zeros((T, B, I), dtype=np.int64), np.zeros((T, B, I), dtype=bool),
                                   np.zeros((T, B, I), dtype=np.complex128),
                                   np.zeros((T, B, I), dtype=object), [[["a"] * I] * B] * T])
def test_input_must_be_floating_point(lstm, value):
    with raises(TypeError, "input", "floating-point", str(np.asarray(value).dtype)):
        lstm(value)


def test_ragged_input(lstm):
    with raises(TypeError, "input", "array"):
        lstm([[[0.0] * I], [[0.0] * (I - 1)]])


def test_sequence_length_zero(lstm):
    with raises(ValueError, "input", "sequence length 0"):
        lstm(np.zeros((0, B, I)))


def test_hx_of_wrong_shape(lstm, gru):
    x = np.zeros((T, B, I))
    with raises(ValueError, "hx", "h_0", "(2, 3, 6)", "(1, 3, 6)"):
        lstm(x, (np.zeros((1, B, H)), np.zeros((2, B, H))))
    with raises(ValueError, "hx", "c_0", "(2, 3, 6)", "(2, 3, 5)"):
        lstm(x, (np.zeros((2, B, H)), np.zeros((2, B, 5))))
    with raises(ValueError, "hx", "(1, 3, 6)", "(1, 2, 6)"):
        gru(x, np.zeros((1, 2, H)))
    with raises(ValueError, "hx", "unbatched", "(1, 6)", "(1, 3, 6)"):
        gru(np.zeros((T, I)), np.zeros((1, B, H)))


def test_lstm_hx_must_be_a_pair(lstm):
    with raises(TypeError, "hx", "tuple", "ndarray"):
        lstm(np.zeros((T, B, I)), np.zeros((2, B, H)))
    with raises(TypeError, "hx", "tuple", "length 3"):
        lstm(np.zeros((T, B, I)), (np.zeros((2, B, H)),) * 3)


def test_hx_must_be_floating_point(gru):
    with raises(TypeError, "hx", "floating-point", "int64"):
        gru(np.zeros((T, B, I)), np.zeros((1, B, H), dtype=np.int64))


def test_a_none_where_an_array_belongs_is_named_as_none(lstm, backend):
    """(not "an array of dtype object", which hides what was passed)"""
    x = np.zeros((T, B, I))
    with raises(TypeError, "hx[1] (c_0)", "floating-point", "got None"):
        lstm(x, (np.zeros((2, B, H)), None))
    lstm(x)
    with raises(TypeError, "dhx[1] (dc_n)", "got None"):
        lstm.backward(np.zeros((T, B, H)), (np.zeros((2, B, H)), None))
    with raises(TypeError, "dout", "got None"):
        lstm.backward(None)
    with raises(TypeError, "hx[1] (c_0)", "got a dict: {'c': 1}"):
        lstm(x, (np.zeros((2, B, H)), {"c": 1}))
    cell = fastrnn.GRUCell(I, H, backend=backend)
    cell(np.zeros((B, I)))
    with raises(TypeError, "dh1", "got None"):
        cell.backward(None)


@pytest.mark.parametrize("bad,words", [(np.array([2, 3]), ["shape (3,)", "(2,)"]),
                                       (np.array([[1, 2, 3]]), ["shape (3,)", "(1, 3)"]),
                                       (np.array([0, 1, 2]), ["between 1 and", "[0]"]),
                                       (np.array([1, 5, 2]), ["between 1 and", "4", "[5]"]),
                                       (np.array([-1, 2, 2]), ["between 1 and", "[-1]"]),
                                       (np.array([2**64 - 1, 2, 2], np.uint64),
                                        ["between 1 and", "[18446744073709551615]"])])
def test_lengths_of_wrong_shape_or_range(gru, bad, words):
    with raises(ValueError, "lengths", *words):
        gru(np.zeros((T, B, I)), lengths=bad)


@pytest.mark.parametrize("bad", [np.array([1.5, 2.0, 3.0]), np.array([1.0, 2.0, 3.0]),
                                 [True, True, False], ["1", "2", "3"]])
def test_lengths_must_be_integers(gru, bad):
    with raises(TypeError, "lengths", "integers"):
        gru(np.zeros((T, B, I)), lengths=bad)


# -- backward -------------------------------------------------------------------------
def test_backward_before_forward(lstm, gru):
    with raises(RuntimeError, "backward", "forward", "training mode"):
        gru.backward(np.zeros((T, B, H)))
    lstm.eval()
    out, _ = lstm(np.zeros((T, B, I)))
    with raises(RuntimeError, "backward", "training mode"):
        lstm.backward(out)


def test_backward_twice(gru):
    out, _ = gru(np.zeros((T, B, I)))
    gru.backward(out)
    with raises(RuntimeError, "backward", "once"):
        gru.backward(out)


def test_gradient_of_wrong_shape(lstm, gru):
    out, _ = gru(np.zeros((T, B, I)))
    with raises(ValueError, "dout", "(4, 3, 6)", "(4, 3, 5)"):
        gru.backward(np.zeros((T, B, 5)))
    with raises(ValueError, "dhx", "(1, 3, 6)", "(3, 6)"):
        gru.backward(out, np.zeros((B, H)))
    with raises(TypeError, "dout", "floating-point"):
        gru.backward(np.zeros((T, B, H), dtype=int))
    gru.backward(out)   # the failed calls did not use up the forward
    lstm(np.zeros((T, B, I)))
    with raises(ValueError, "dhx", "dc_n", "(2, 3, 6)", "(2, 3, 4)"):
        lstm.backward(out, (np.zeros((2, B, H)), np.zeros((2, B, 4))))


# -- cells ----------------------------------------------------------------------------
def test_cell_bad_inputs(backend):
    cell = fastrnn.LSTMCell(I, H, backend=backend)
    with raises(ValueError, "LSTMCell", "1D or 2D", "3D"):
        cell(np.zeros((2, B, I)))
    with raises(ValueError, "input_size", "expected 5", "got 4"):
        cell(np.zeros((B, 4)))
    with raises(ValueError, "hx", "(3, 6)", "(2, 6)"):
        cell(np.zeros((B, I)), (np.zeros((2, H)), np.zeros((2, H))))
    with raises(TypeError, "hx", "tuple"):
        cell(np.zeros((B, I)), np.zeros((B, H)))
    with raises(TypeError, "input", "floating-point", "int"):
        cell(np.zeros((B, I), dtype=int))
    with raises(RuntimeError, "backward", "forward"):
        cell.backward(np.zeros((B, H)))
    cell(np.zeros((B, I)))
    with raises(ValueError, "dh1", "(3, 6)", "(3, 5)"):
        cell.backward(np.zeros((B, 5)))
    with raises(ValueError, "dc1", "(3, 6)", "(3, 5)"):
        cell.backward(np.zeros((B, H)), np.zeros((B, 5)))
    with raises(TypeError, "dh1", "array"):
        cell.backward([[1.0], []])   # ragged: named, not NumPy's "inhomogeneous shape"
    cell.backward(np.zeros((B, H)))   # the refused calls left the forward for this one
    rnn = fastrnn.RNNCell(I, H, backend=backend)
    with raises(ValueError, "hx", "(6,)", "(3, 6)"):
        rnn(np.zeros(I), np.zeros((B, H)))
    with raises(ValueError, "RNNCell", "1D or 2D", "0D"):   # (not taken as a step of 1 input)
        fastrnn.RNNCell(1, H, backend=backend)(np.float64(0.5))


def test_assigning_a_parameter_checks_it_by_its_name(lstm):
    """``lstm.weight_ih_l0 = w`` writes into the live parameter: a wrong kind is a TypeError and
    a wrong shape a ValueError, both naming the attribute (it said "loading state_dict")."""
    before = lstm.weight_ih_l0.copy()
    with raises(TypeError, "weight_ih_l0", "floating-point", "int64"):
        lstm.weight_ih_l0 = np.ones(before.shape, dtype=np.int64)
    with raises(ValueError, "weight_ih_l0 must have shape", str(before.shape)):
        lstm.weight_ih_l0 = np.ones((3, 3))
    np.testing.assert_array_equal(lstm.weight_ih_l0, before)
    live = lstm.weight_ih_l0
    lstm.weight_ih_l0 = np.full(before.shape, 0.5)        # float64 into the float32 array
    assert lstm.weight_ih_l0 is live and np.all(live == 0.5)


# -- state dicts ------------------------------------------------------------------------
def test_load_state_dict_names_every_problem(lstm):
    before = lstm.state_dict()
    state = lstm.state_dict()
    del state["weight_ih_l0"], state["bias_hh_l1"]
    state["weight_hh_l0"] = np.zeros((3, 3))
    state["weight_xx_l9"] = np.zeros(2)
    state["bias_ih_l0"] = np.ones(4 * H)   # valid: must not be written either
    with raises(ValueError, "missing", "weight_ih_l0", "bias_hh_l1", "unexpected", "weight_xx_l9",
                "size mismatch", "weight_hh_l0", "(24, 6)", "(3, 3)"):
        lstm.load_state_dict(state)
    for name, value in before.items():   # nothing half-loaded
        np.testing.assert_array_equal(lstm.parameters()[name], value)


def test_load_state_dict_returns_the_keys_it_did_not_match(lstm):
    """As PyTorch's: (missing_keys, unexpected_keys), empty after a strict load."""
    assert lstm.load_state_dict(lstm.state_dict()) == ([], [])
    state = lstm.state_dict()
    del state["weight_ih_l0"]
    state["extra"] = np.zeros(2)
    got = lstm.load_state_dict(state, strict=False)
    assert got.missing_keys == ["weight_ih_l0"] and got.unexpected_keys == ["extra"]
    missing, unexpected = got
    assert (missing, unexpected) == (["weight_ih_l0"], ["extra"])
    with raises(TypeError, "strict must be a bool"):
        lstm.load_state_dict(state, strict="no")


def test_load_state_dict_rejects_non_mappings_and_non_float(lstm):
    with raises(TypeError, "state_dict", "mapping", "list"):
        lstm.load_state_dict([1, 2])
    state = lstm.state_dict()
    state["bias_ih_l0"] = np.zeros(4 * H, dtype=np.int32)
    with raises(ValueError, "bias_ih_l0", "floating-point"):
        lstm.load_state_dict(state)


@pytest.mark.parametrize("module, extra, missing", [("fastrnn.sklearn", "sklearn", "sklearn"),
                                                     ("fastrnn.dask", "dask", "dask")])
def test_a_submodule_without_its_extra_names_the_extra(module, extra, missing):
    import subprocess
    import sys
    code = (f"import sys; sys.modules[{missing!r}] = None\n"
            f"try:\n"
            f"    import {module}\n"
            f"except ImportError as exc:\n"
            f"    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert f"{module} needs" in done.stdout and f"pip install 'fastrnn[{extra}]'" in done.stdout, \
        done.stdout + done.stderr



def test_a_cython_backend_without_scipy_says_to_install_scipy():
    """The extension is there and SciPy is not (an install with --no-deps): the remedy is
    SciPy, not the rebuild from source said for an extension that is missing."""
    import subprocess
    import sys
    from helpers import REQUIRED
    if "cython" not in REQUIRED and not fastrnn.backends()["cython"]["available"]:
        pytest.skip("the cython extension is not built")
    code = ("import sys; sys.modules['scipy'] = None\n"
            "import fastrnn; print(fastrnn.backends()['cython']['reason'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert "needs SciPy for BLAS" in done.stdout and "pip install scipy" in done.stdout, \
        done.stdout + done.stderr
    assert "build the extension" not in done.stdout
