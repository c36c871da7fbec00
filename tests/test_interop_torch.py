"""fastrnn.from_torch / to_torch against the real torch.nn modules.

Outputs, final states and every gradient (input, initial states, all
parameters) are compared after converting in both directions, across cell
type x bias x bidirectional x num_layers x proj_size x batch_first x dtype,
plus lengths (packed sequences), unbatched input and the three cells.
"""

import os

import numpy as np
import pytest

from helpers import required

if required("FASTRNN_REQUIRE_TORCH") or required("FASTRNN_REQUIRE_INTEROP"):
    import torch  # CI installs it: a missing torch is a failure there, not a skip
else:
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (pip install torch); "
                                "set FASTRNN_REQUIRE_TORCH=1 to make this a failure")

import fastrnn  # noqa: E402
from fastrnn.interop import from_torch, to_torch  # noqa: E402
from fastrnn.train import Embedding, Linear  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported:UserWarning")

#: largest difference seen per dtype over the module's comparisons
MAX_ERR = {"float32": 0.0, "float64": 0.0}
TOL = {"float32": dict(atol=1e-5, rtol=1e-4), "float64": dict(atol=1e-9, rtol=1e-9)}
T, B, I, H, P = 5, 3, 4, 6, 3


def assert_close(got, want, dtype, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    if got.size:
        err = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
        MAX_ERR[dtype] = max(MAX_ERR[dtype], err)
    np.testing.assert_allclose(got, want, err_msg=what, **TOL[dtype])


def make_torch(mode, dtype, **kw):
    torch_dtype = getattr(torch, dtype)
    if mode.startswith("RNN"):
        return torch.nn.RNN(I, H, nonlinearity=mode[4:].lower(), dtype=torch_dtype, **kw)
    return getattr(torch.nn, mode)(I, H, dtype=torch_dtype, **kw)


def torch_run(module, x, hx, dout, dstates, lengths=None):
    """Forward + backward of ``sum(out * dout) + sum(h_n * dh_n) (+ c_n)`` in torch."""
    x_t = torch.tensor(x, requires_grad=True)
    hx_t = [torch.tensor(h, requires_grad=True) for h in hx]
    module.zero_grad()
    inp = x_t
    if lengths is not None:
        inp = torch.nn.utils.rnn.pack_padded_sequence(x_t, torch.tensor(lengths), enforce_sorted=False,
                                                      batch_first=module.batch_first)
    out, hn = module(inp, tuple(hx_t) if len(hx_t) == 2 else hx_t[0])
    if lengths is not None:
        steps = x.shape[1 if module.batch_first else 0]
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=module.batch_first,
                                                        total_length=steps)
    states = hn if isinstance(hn, tuple) else (hn,)
    loss = (out * torch.tensor(dout)).sum()
    loss = loss + sum((s * torch.tensor(d)).sum() for s, d in zip(states, dstates))
    loss.backward()
    grads = {n: p.grad.numpy() for n, p in module.named_parameters()}
    return (out.detach().numpy(), [s.detach().numpy() for s in states], x_t.grad.numpy(),
            [h.grad.numpy() for h in hx_t], grads)


def fastrnn_run(layer, x, hx, dout, dstates, lengths=None):
    layer.zero_grad()
    lstm = isinstance(layer, fastrnn.LSTM)
    out, hn = layer(x, tuple(hx) if lstm else hx[0], lengths=lengths)
    dx, dh0 = layer.backward(dout, tuple(dstates) if lstm else dstates[0])
    states = hn if lstm else (hn,)
    dh0 = dh0 if lstm else (dh0,)
    return out, list(states), dx, list(dh0), {n: g.copy() for n, g in layer.grads.items()}


LAYER_RESULTS = ("output", "final states", "d input", "d initial states", "parameter gradients")
CELL_RESULTS = ("new states", "d input", "d states", "parameter gradients")


def compare(theirs, ours, dtype, names=LAYER_RESULTS):
    assert len(theirs) == len(ours) == len(names)
    for name, a, b in zip(names, ours, theirs):
        if isinstance(a, dict):
            assert sorted(a) == sorted(b), f"{name}: {sorted(a)} != {sorted(b)}"
            for k in a:
                assert_close(a[k], b[k], dtype, f"{name} {k}")
        elif isinstance(a, list):
            assert len(a) == len(b)
            for i, (u, v) in enumerate(zip(a, b)):
                assert_close(u, v, dtype, f"{name}[{i}]")
        else:
            assert_close(a, b, dtype, name)


def random_io(layer, rng, dtype, unbatched=False):
    """x, hx, dout and the gradients of the final states for one call of ``layer``."""
    D = layer.num_directions
    LD, hout = layer.num_layers * D, layer.proj_size or layer.hidden_size
    lead = (T,) if unbatched else ((B, T) if layer.batch_first else (T, B))
    state_lead = (LD,) if unbatched else (LD, B)
    x = rng.standard_normal(lead + (I,)).astype(dtype)
    sizes = [hout, layer.hidden_size] if isinstance(layer, fastrnn.LSTM) else [hout]
    hx = [rng.standard_normal(state_lead + (s,)).astype(dtype) for s in sizes]
    dout = rng.standard_normal(lead + (D * hout,)).astype(dtype)
    dstates = [rng.standard_normal(state_lead + (s,)).astype(dtype) for s in sizes]
    return x, hx, dout, dstates


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors: torch's second thread only spins against the other processes on the machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


MODES = [("RNN_TANH", 0), ("RNN_RELU", 0), ("GRU", 0), ("LSTM", 0), ("LSTM", P)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mode,proj_size", MODES)
def test_layers_both_ways(mode, proj_size, bias, bidirectional, num_layers, batch_first, dtype):
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    kw = dict(num_layers=num_layers, bias=bias, batch_first=batch_first, bidirectional=bidirectional)
    if proj_size:
        kw["proj_size"] = proj_size
    module = make_torch(mode, dtype, **kw)

    layer = from_torch(module)  # torch -> fastrnn
    assert layer.dtype == np.dtype(dtype) and layer.batch_first == batch_first
    assert layer.num_layers == num_layers and layer.bidirectional == bidirectional
    assert getattr(layer, "proj_size", 0) == proj_size and layer.bias == bias
    if mode.startswith("RNN"):
        assert layer.nonlinearity == mode[4:].lower()
    args = random_io(layer, rng, dtype)
    compare(torch_run(module, *args), fastrnn_run(layer, *args), dtype)

    # fastrnn -> torch, from a layer with fastrnn's own initialisation
    cls = {"GRU": fastrnn.GRU, "LSTM": fastrnn.LSTM}.get(mode, fastrnn.RNN)
    extra = {"nonlinearity": mode[4:].lower()} if mode.startswith("RNN") else {}
    native = cls(I, H, dtype=dtype, seed=2, **kw, **extra)
    back = native.to_torch()
    assert type(back) is type(module)
    assert next(back.parameters()).dtype == getattr(torch, dtype)
    for name, p in back.named_parameters():
        assert np.array_equal(p.detach().numpy(), native.parameters()[name]), name
    # all_weights: per layer and direction, torch's order
    assert [len(w) for w in native.all_weights] == [len(w) for w in back.all_weights]
    for ours, theirs in zip(native.all_weights, back.all_weights):
        for a, t in zip(ours, theirs):
            assert np.array_equal(a, t.detach().numpy())
    assert native.flatten_parameters() is None        # torch's code calls it before a forward
    args = random_io(native, rng, dtype)
    compare(torch_run(back, *args), fastrnn_run(native, *args), dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("mode,proj_size", MODES)
def test_lengths_match_packed_sequences(mode, proj_size, bidirectional, dtype):
    torch.manual_seed(0)
    rng = np.random.default_rng(3)
    kw = dict(num_layers=2, bidirectional=bidirectional, batch_first=True)
    if proj_size:
        kw["proj_size"] = proj_size
    module = make_torch(mode, dtype, **kw)
    layer = from_torch(module)
    lengths = np.array([T, 2, 4])
    args = random_io(layer, rng, dtype)
    compare(torch_run(module, *args, lengths=lengths), fastrnn_run(layer, *args, lengths=lengths),
            dtype)


@pytest.mark.parametrize("mode,proj_size", MODES)
def test_unbatched_input(mode, proj_size):
    torch.manual_seed(0)
    rng = np.random.default_rng(4)
    kw = dict(num_layers=2, bidirectional=True)
    if proj_size:
        kw["proj_size"] = proj_size
    module = make_torch(mode, "float64", **kw)
    layer = from_torch(module)
    args = random_io(layer, rng, "float64", unbatched=True)
    compare(torch_run(module, *args), fastrnn_run(layer, *args), "float64")


CELLS = [("RNNCell", {"nonlinearity": "tanh"}), ("RNNCell", {"nonlinearity": "relu"}),
         ("LSTMCell", {}), ("GRUCell", {})]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("unbatched", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("name,kw", CELLS)
def test_cells_both_ways(name, kw, bias, unbatched, dtype):
    torch.manual_seed(0)
    rng = np.random.default_rng(5)
    lead = () if unbatched else (B,)
    nstates = 2 if name == "LSTMCell" else 1
    torch_cell = getattr(torch.nn, name)(I, H, bias=bias, dtype=getattr(torch, dtype), **kw)
    native = getattr(fastrnn, name)(I, H, bias=bias, dtype=dtype, seed=6, **kw)
    for theirs, ours in [(torch_cell, from_torch(torch_cell)), (native.to_torch(), native)]:
        assert type(ours) is getattr(fastrnn, name) and type(theirs) is getattr(torch.nn, name)
        assert ours.dtype == np.dtype(dtype) and ours.bias == bias
        x = rng.standard_normal(lead + (I,)).astype(dtype)
        hx = [rng.standard_normal(lead + (H,)).astype(dtype) for _ in range(nstates)]
        dh = [rng.standard_normal(lead + (H,)).astype(dtype) for _ in range(nstates)]
        # torch
        x_t = torch.tensor(x, requires_grad=True)
        hx_t = [torch.tensor(h, requires_grad=True) for h in hx]
        theirs.zero_grad()
        new = theirs(x_t, tuple(hx_t) if nstates == 2 else hx_t[0])
        new = new if nstates == 2 else (new,)
        sum((s * torch.tensor(d)).sum() for s, d in zip(new, dh)).backward()
        want = ([s.detach().numpy() for s in new], x_t.grad.numpy(), [h.grad.numpy() for h in hx_t],
                {n: p.grad.numpy() for n, p in theirs.named_parameters()})
        # fastrnn
        ours.zero_grad()
        got_new = ours(x, tuple(hx) if nstates == 2 else hx[0])
        got_new = got_new if nstates == 2 else (got_new,)
        dx, dhx = ours.backward(*dh) if nstates == 2 else ours.backward(dh[0])
        dhx = dhx if nstates == 2 else (dhx,)
        got = (list(got_new), dx, list(dhx), dict(ours.grads))
        compare(want, got, dtype, CELL_RESULTS)


def test_configuration_and_mode_carry_over():
    module = torch.nn.LSTM(3, 5, num_layers=3, dropout=0.25, batch_first=True, proj_size=2).eval()
    layer = from_torch(module)
    assert layer.get_config() == dict(input_size=3, hidden_size=5, num_layers=3, bias=True,
                                      batch_first=True, dropout=0.25, bidirectional=False,
                                      dtype="float32", seed=None, proj_size=2)
    assert layer.training is False
    back = layer.train().to_torch()
    assert back.training is True and back.dropout == 0.25 and back.proj_size == 2
    cell = from_torch(torch.nn.RNNCell(3, 4, nonlinearity="relu", bias=False))
    assert cell.get_config()["nonlinearity"] == "relu" and cell.bias is False
    assert to_torch(cell).nonlinearity == "relu"


def test_conversions_copy_rather_than_share():
    module = torch.nn.GRU(3, 4)
    layer = from_torch(module)
    with torch.no_grad():
        module.weight_ih_l0.zero_()
    assert np.any(layer.parameters()["weight_ih_l0"] != 0)
    back = layer.to_torch()
    layer.parameters()["weight_hh_l0"][...] = 0
    assert torch.any(back.weight_hh_l0 != 0)


def test_dtype_choice_and_half_precision_widened_exactly():
    module = torch.nn.LSTM(3, 4).to(torch.float16)
    layer = from_torch(module)
    assert layer.dtype == np.float32
    assert np.array_equal(layer.parameters()["weight_ih_l0"],
                          module.weight_ih_l0.detach().float().numpy())
    assert from_torch(torch.nn.GRU(3, 4), dtype=np.float64).dtype == np.float64
    with pytest.raises(ValueError, match="float32 or float64"):
        from_torch(torch.nn.GRU(3, 4), dtype=np.int32)
    assert from_torch(torch.nn.GRU(3, 4), dtype=torch.float64).dtype == np.float64  # torch's too
    assert from_torch(torch.nn.GRU(3, 4).double(), dtype=torch.float32).dtype == np.float32
    with pytest.raises(ValueError, match="float32 or float64, but got torch.int64"):
        from_torch(torch.nn.GRU(3, 4), dtype=torch.int64)


def test_a_module_on_the_meta_device_is_refused_with_the_remedy():
    with pytest.raises(ValueError, match="'meta' device .*weight_ih_l0.*to_empty"):
        from_torch(torch.nn.LSTM(3, 4, device="meta"))


def test_rejects_other_modules_by_name():
    with pytest.raises(TypeError, match="from_torch expects .*Linear"):
        from_torch(torch.nn.Linear(3, 4))
    with pytest.raises(TypeError, match="from_torch expects"):
        from_torch(np.zeros(3))
    with pytest.raises(TypeError, match="fastrnn layer .*but got torch.nn.modules.rnn.LSTM$"):
        to_torch(torch.nn.LSTM(3, 4))
    with pytest.raises(TypeError, match=r"but got the class torch.nn.modules.rnn.LSTM \(pass an "
                                        r"instance\)"):
        from_torch(torch.nn.LSTM)


def test_a_reverse_layer_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="reverse=True.*no layer that runs only backwards"):
        to_torch(fastrnn.GRU(3, 4, reverse=True))


def test_variants_torch_lacks_are_refused_with_the_reason():
    for obj in (fastrnn.GRU(3, 4, reset_after=False), fastrnn.GRUCell(3, 4, reset_after=False)):
        with pytest.raises(ValueError, match=r"reset_after=False\) cannot be converted to torch"):
            to_torch(obj)
    for obj in (fastrnn.LSTM(3, 4, peepholes=True), fastrnn.LSTMCell(3, 4, peepholes=True)):
        with pytest.raises(ValueError, match=r"peepholes=True\) cannot be converted to torch"):
            to_torch(obj)
    for obj in (fastrnn.RNN(3, 4, clip=1.5), fastrnn.GRUCell(3, 4, clip=1.5)):
        with pytest.raises(ValueError, match=r"clip=1.5\) cannot be converted to torch"):
            to_torch(obj)
    for obj in (fastrnn.LSTM(3, 4, input_forget=True), fastrnn.LSTMCell(3, 4, input_forget=True)):
        with pytest.raises(ValueError, match=r"input_forget=True\) cannot be converted to torch"):
            to_torch(obj)
    for obj in (fastrnn.LSTM(3, 4, activations=["sigmoid", "relu", "relu"]),
                fastrnn.GRUCell(3, 4, activations=["hard_sigmoid", "tanh"]),
                fastrnn.RNN(3, 4, activations=["elu"])):
        with pytest.raises(ValueError, match=r"activations=.*cannot be converted to torch"):
            to_torch(obj)
    with pytest.raises(ValueError, match="one nonlinearity for every direction"):
        to_torch(fastrnn.RNN(3, 4, bidirectional=True, activations=["tanh", "relu"]))


def test_an_rnn_with_relu_activations_is_torch_relu():
    import torch

    for obj in (fastrnn.RNN(3, 4, bidirectional=True, activations=["relu"], dtype=np.float64),
                fastrnn.RNNCell(3, 4, activations=["relu"], dtype=np.float64)):
        twin = to_torch(obj)
        assert twin.nonlinearity == "relu"
        x = np.random.default_rng(0).standard_normal((5, 2, 3) if obj.__class__ is fastrnn.RNN
                                                      else (2, 3))
        got = obj.eval()(x)
        want = twin.eval()(torch.from_numpy(x))
        got, want = (got[0], want[0]) if isinstance(got, tuple) else (got, want)
        np.testing.assert_allclose(got, want.detach().numpy(), atol=1e-12)


#: (fastrnn's class, PyTorch's) whose constructors take PyTorch's positional arguments
POSITIONAL = [(fastrnn.RNN, torch.nn.RNN), (fastrnn.LSTM, torch.nn.LSTM),
              (fastrnn.GRU, torch.nn.GRU), (fastrnn.RNNCell, torch.nn.RNNCell),
              (fastrnn.LSTMCell, torch.nn.LSTMCell), (fastrnn.GRUCell, torch.nn.GRUCell),
              (Linear, torch.nn.Linear), (Embedding, torch.nn.Embedding)]


@pytest.mark.parametrize("ours, theirs", POSITIONAL, ids=[c.__name__ for c, _ in POSITIONAL])
def test_constructors_take_torch_positional_arguments(ours, theirs):
    """PyTorch's constructors in PyTorch's positional order, device and dtype included:
    fastrnn's take the same arguments in the same places (its own ones after them)."""
    import inspect
    names = list(inspect.signature(theirs.__init__).parameters)[1:]
    if names == ["args", "kwargs"]:     # the layers: RNNBase's, without the mode
        names = list(inspect.signature(torch.nn.RNNBase.__init__).parameters)[2:]
        if theirs is torch.nn.RNN:      # nn.RNN takes nonlinearity fourth
            names.insert(3, "nonlinearity")
    assert list(inspect.signature(ours.__init__).parameters)[1:len(names) + 1] == names
    defaults = {"input_size": 3, "hidden_size": 4, "in_features": 3, "out_features": 4,
                "num_layers": 1, "nonlinearity": "tanh", "bias": True, "batch_first": False,
                "dropout": 0.0, "bidirectional": False, "proj_size": 0, "device": "cpu",
                "dtype": torch.float64, "num_embeddings": 5, "embedding_dim": 3,
                "padding_idx": None, "max_norm": None, "norm_type": 2.0,
                "scale_grad_by_freq": False, "sparse": False, "_weight": None, "_freeze": False}
    args = [defaults[name] for name in names]
    assert next(theirs(*args).parameters()).dtype == torch.float64
    assert ours(*args).dtype == np.float64


def test_a_subclass_that_overrides_forward_is_converted_with_a_warning():
    """A torch module with a forward() of its own computes something the conversion cannot
    see: it converts as the torch class, and says so; a subclass that keeps torch's forward
    converts silently."""
    class Scaled(torch.nn.LSTM):
        def forward(self, *args, **kwargs):
            out, state = super().forward(*args, **kwargs)
            return 2 * out, state

    class Named(torch.nn.GRUCell):
        label = "mine"

    with pytest.warns(UserWarning, match=r"Scaled overrides forward\(\) of torch.nn.LSTM"):
        assert isinstance(from_torch(Scaled(3, 4)), fastrnn.LSTM)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert isinstance(from_torch(Named(3, 4)), fastrnn.GRUCell)


def test_constructors_take_torch_float_dtypes():
    """fastrnn.LSTM(..., dtype=torch.float64), as nn.LSTM takes it (from_torch already did)."""
    for dtype, want in ((torch.float32, np.float32), (torch.float64, np.float64)):
        for make in (fastrnn.LSTM, fastrnn.GRUCell):
            assert make(3, 4, dtype=dtype).dtype == want
    with pytest.raises(ValueError, match="dtype must be float32 or float64, but got "
                                         "torch.float16"):
        fastrnn.LSTM(3, 4, dtype=torch.float16)
    # the same in the conversions: from_torch and fastrnn.onnx.export's dtype
    assert from_torch(torch.nn.GRU(3, 4), dtype=torch.float64).dtype == np.float64
    pytest.importorskip("onnx", reason="onnx is not installed")
    import io
    import fastrnn.onnx as fonnx
    model = fonnx.export(fastrnn.LSTM(3, 4, dtype=np.float64), io.BytesIO(), dtype=torch.float32)
    assert fonnx.load(model).dtype == np.float32
    # torch's devices: the CPU's taken, the others refused; to() takes a tensor's too
    lstm = fastrnn.LSTM(3, 4, device=torch.device("cpu"))
    assert fastrnn.LSTMCell(3, 4, device=torch.device("cpu", 0)).dtype == np.float32
    assert lstm.to(torch.device("cpu")) is lstm and lstm.to(torch.float32) is lstm
    assert lstm.to(torch.zeros(2)) is lstm
    for device in (torch.device("cuda"), torch.device("meta")):
        with pytest.raises(ValueError, match=f"^device must be None or 'cpu' .* but got "
                                             f"device\\(type='{device.type}'\\)"):
            fastrnn.GRU(3, 4, device=device)
        with pytest.raises(ValueError, match="^device must be"):
            lstm.to(device)
    with pytest.raises(ValueError, match=r"^dtype: LSTM keeps the dtype it was built with "
                                         r"\(float32\), but got torch.float64"):
        lstm.to(torch.zeros(2, dtype=torch.float64))
    # and zero_grad takes PyTorch's set_to_none (the arrays stay, zeroed)
    from fastrnn.train import Adam
    lstm = fastrnn.LSTM(3, 4)
    opt = Adam(lstm)
    for zero_grad in (lstm.zero_grad, opt.zero_grad):
        for g in lstm.grads.values():
            g.fill(1)
        grads = dict(lstm.grads)
        zero_grad(set_to_none=True)
        assert all(lstm.grads[k] is g and not g.any() for k, g in grads.items())
        with pytest.raises(TypeError, match="set_to_none must be a bool"):
            zero_grad(set_to_none="yes")
