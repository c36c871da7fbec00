"""fastrnn: fast CPU kernels for RNN, LSTM and GRU, forward and backpropagation through time.

Drop-in counterparts of PyTorch's ``nn.RNN/LSTM/GRU`` and ``nn.RNNCell/LSTMCell/GRUCell``
on NumPy arrays, with an explicit ``backward``.
"""

from . import onnx, optim, train
from ._config import show_config
from ._runtime import get_num_threads, set_num_threads
from .backends import backends, warmup
from .cells import GRUCell, LSTMCell, RNNCell
from .interop import from_keras, from_torch, to_keras, to_torch
from .io import load, save
from .layers import GRU, LSTM, RNN
from .train import Linear, clip_grad_norm, clip_grad_value

__version__ = "0.1.0"

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "backends", "warmup",
           "get_num_threads", "set_num_threads", "show_config",
           "save", "load", "from_torch", "to_torch", "from_keras", "to_keras", "onnx",
           "train", "optim", "Linear", "clip_grad_norm", "clip_grad_value",
           "__version__"]
