"""Conversion to and from PyTorch: ``nn.RNN/LSTM/GRU`` and ``nn.RNNCell/LSTMCell/GRUCell``.

fastrnn uses PyTorch's parameter names, shapes, gate orders and equations, so
a conversion copies every parameter unchanged and carries the constructor
arguments over (``num_layers``, ``bidirectional``, ``proj_size``,
``batch_first``, ``bias``, ``nonlinearity``, ``dropout``) and the train/eval
mode.  torch is imported inside the functions only.
"""

import warnings

import numpy as np

from . import _common

def _import_torch():
    try:
        import torch
    except ImportError as exc:
        raise ImportError(f"this conversion needs PyTorch, which is not installed ({exc}); "
                          f"install its CPU build with: pip install torch --index-url "
                          f"https://download.pytorch.org/whl/cpu") from None
    return torch


def _numpy_dtype(module, dtype, torch):
    """The fastrnn dtype for a torch module: ``dtype`` if given, else the module's own."""
    if dtype is not None:
        return _common.float_dtype(dtype, "dtype")   # (torch.float32 and torch.float64 too)
    param = next(module.parameters(), None)
    if param is not None and param.dtype == torch.float64:
        return np.dtype(np.float64)
    if param is None or param.dtype.is_floating_point:
        return np.dtype(np.float32)  # float32, or float16/bfloat16 widened exactly
    raise TypeError(f"the parameters of {type(module).__name__} have dtype {param.dtype}; "
                    f"expected a floating-point module")


def from_torch(module, *, dtype=None, backend="auto"):
    """A fastrnn layer or cell with the configuration and parameters of a torch module.

    Parameters
    ----------
    module : torch.nn.RNN, LSTM, GRU, RNNCell, LSTMCell or GRUCell
        Any configuration: ``num_layers``, ``bidirectional``, ``proj_size``,
        ``batch_first``, ``bias=False``, ``nonlinearity``, ``dropout``; on any
        device (the parameters are copied to host memory).
    dtype : float32 or float64 (NumPy's or torch's), optional
        The dtype of the new object; by default that of the module's
        parameters (float64 stays float64, anything else becomes float32,
        which holds float16 and bfloat16 values exactly).
    backend : str
        The fastrnn backend of the new object.

    Returns
    -------
    fastrnn.RNN, LSTM, GRU, RNNCell, LSTMCell or GRUCell
        In the module's train/eval mode, with ``seed=None`` (the seed only
        matters for dropout masks).

    Raises
    ------
    TypeError
        ``module`` is not one of the six supported torch modules.

    Examples
    --------
    >>> import torch, fastrnn
    >>> layer = fastrnn.from_torch(torch.nn.LSTM(8, 16, num_layers=2, bidirectional=True))
    >>> layer
    LSTM(8, 16, num_layers=2, bidirectional=True)
    """
    torch = _import_torch()
    nn = torch.nn
    target = _numpy_dtype(module, dtype, torch) if isinstance(module, nn.Module) else None
    meta = [n for n, p in module.named_parameters()
            if p.is_meta] if isinstance(module, nn.Module) else []
    if meta:
        raise ValueError(f"{type(module).__name__}'s parameters are on the 'meta' device "
                         f"({', '.join(meta)}): they have no values to copy; materialise them "
                         f"first (module.to_empty(device='cpu'), then load the weights)")
    if isinstance(module, nn.RNNBase):
        mode = module.mode
        if mode not in ("RNN_TANH", "RNN_RELU", "LSTM", "GRU"):
            raise TypeError(f"unsupported torch.nn.RNNBase mode {mode!r}")
        kind = "RNN" if mode.startswith("RNN") else mode
        options = dict(num_layers=module.num_layers, batch_first=module.batch_first,
                       dropout=float(module.dropout), bidirectional=module.bidirectional)
        if kind == "LSTM":
            options["proj_size"] = getattr(module, "proj_size", 0)
        if kind == "RNN":
            options["nonlinearity"] = "tanh" if mode == "RNN_TANH" else "relu"
        cell = False
    elif isinstance(module, (nn.RNNCell, nn.LSTMCell, nn.GRUCell)):
        kind = next(k for k in _common.KINDS if isinstance(module, getattr(nn, k + "Cell")))
        options = {"nonlinearity": module.nonlinearity} if kind == "RNN" else {}
        cell = True
    else:
        raise TypeError(f"from_torch expects torch.nn.RNN, LSTM, GRU, RNNCell, LSTMCell or "
                        f"GRUCell, but got {_common.describe_type(module)}")
    stock = getattr(nn, kind + "Cell" if cell else kind)
    if isinstance(module, stock) and type(module).forward is not stock.forward:
        warnings.warn(f"{type(module).__qualname__} overrides forward() of torch.nn."
                      f"{stock.__name__}; it is converted as a {stock.__name__}, without what "
                      f"its own forward() adds", UserWarning, stacklevel=2)
    with warnings.catch_warnings():
        # torch already warned about dropout with num_layers=1 when the module was built
        warnings.filterwarnings("ignore", message="dropout=.* has no effect", category=UserWarning)
        obj = _common.build(kind, cell=cell, input_size=module.input_size,
                            hidden_size=module.hidden_size, bias=module.bias, dtype=target,
                            backend=backend, **options)
    torch_dtype = getattr(torch, target.name)
    state = {}
    for name in obj.parameters():
        tensor = getattr(module, name, None)  # getattr also sees re-parametrised weights
        if tensor is None:
            raise ValueError(f"{type(module).__name__} has no parameter {name!r}, which a "
                             f"{type(obj).__name__} with this configuration needs")
        state[name] = tensor.detach().to(device="cpu", dtype=torch_dtype).numpy()
    obj.load_state_dict(state, strict=True)
    obj.train(module.training)
    return obj


def to_torch(obj):
    """An equivalent torch module for a fastrnn layer or cell.

    Parameters
    ----------
    obj : fastrnn.RNN, LSTM, GRU, RNNCell, LSTMCell or GRUCell

    Returns
    -------
    torch.nn.RNN, LSTM, GRU, RNNCell, LSTMCell or GRUCell
        Same configuration, parameters copied (not shared) in the same dtype
        (torch.float32 or torch.float64), on the CPU, in the same train/eval mode.

    Raises
    ------
    ValueError
        ``reverse=True``: PyTorch has no layer that runs only backwards; ``reset_after=False``:
        PyTorch's GRU applies the reset gate after the product of n only; ``peepholes=True``
        and ``input_forget=True``: PyTorch's LSTM has neither; ``clip``: no PyTorch layer has
        a cell clip; ``activations`` other than PyTorch's (an RNN's all-relu ones become
        ``nonlinearity="relu"``).
    """
    kind = _common.kind_of(obj)   # a TypeError for anything but a fastrnn layer or cell
    nonlinearity = getattr(obj, "nonlinearity", None)
    acts = getattr(obj, "activations", None)
    if acts is not None:
        if kind == "RNN" and all(a.name == "relu" for a in acts):
            nonlinearity = "relu"
        elif kind == "RNN" and all(a.name in ("tanh", "relu") for a in acts):
            raise ValueError(f"{type(obj).__name__}(activations={acts}) cannot be converted to "
                             f"torch: torch.nn.RNN has one nonlinearity for every direction "
                             f"(export to ONNX, attribute activations)")
        else:
            raise ValueError(f"{type(obj).__name__}(activations={acts}) cannot be converted to "
                             f"torch: torch.nn.{kind} uses "
                             f"{'tanh or relu' if kind == 'RNN' else 'sigmoid and tanh'} only "
                             f"(export to ONNX, attribute activations)")
    if getattr(obj, "peepholes", False):
        raise ValueError(f"{type(obj).__name__}(peepholes=True) cannot be converted to torch: "
                         f"torch.nn.LSTM has no peephole connections (export to ONNX, input P)")
    if getattr(obj, "clip", None) is not None:
        raise ValueError(f"{type(obj).__name__}(clip={obj.clip}) cannot be converted to torch: "
                         f"torch.nn.{_common.kind_of(obj)} has no cell clip (export to ONNX, "
                         f"attribute clip)")
    if getattr(obj, "input_forget", False):
        raise ValueError(f"{type(obj).__name__}(input_forget=True) cannot be converted to torch: "
                         f"torch.nn.LSTM has no coupled input and forget gates (export to ONNX, "
                         f"input_forget=1)")
    if not getattr(obj, "reset_after", True):
        raise ValueError(f"{type(obj).__name__}(reset_after=False) cannot be converted to torch: "
                         f"torch.nn.GRU applies the reset gate after the recurrent product of n "
                         f"only (export to ONNX, linear_before_reset=0, or to Keras, "
                         f"reset_after=False)")
    if getattr(obj, "reverse", False):
        raise ValueError(f"{type(obj).__name__}(reverse=True) cannot be converted to torch: "
                         f"torch.nn.{_common.kind_of(obj)} has no layer that runs only backwards "
                         f"(run a forward one on the input flipped within each sequence's "
                         f"length, or export to ONNX, direction='reverse')")
    torch = _import_torch()
    nn = torch.nn
    torch_dtype = getattr(torch, obj.dtype.name)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="dropout option adds dropout after all but "
                                "last recurrent layer", category=UserWarning)
        if _common.is_cell(obj):
            extra = {"nonlinearity": nonlinearity} if kind == "RNN" else {}
            module = getattr(nn, kind + "Cell")(obj.input_size, obj.hidden_size, bias=obj.bias,
                                                dtype=torch_dtype, **extra)
        else:
            extra = {}
            if kind == "RNN":
                extra["nonlinearity"] = nonlinearity
            if kind == "LSTM":
                extra["proj_size"] = obj.proj_size
            module = getattr(nn, kind)(obj.input_size, obj.hidden_size, num_layers=obj.num_layers,
                                       bias=obj.bias, batch_first=obj.batch_first,
                                       dropout=obj.dropout, bidirectional=obj.bidirectional,
                                       dtype=torch_dtype, **extra)
    state = {name: torch.from_numpy(np.array(p, copy=True)) for name, p in obj.parameters().items()}
    module.load_state_dict(state, strict=True)
    module.train(obj.training)
    return module
