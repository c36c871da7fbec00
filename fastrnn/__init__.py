"""fastrnn: fast CPU kernels for RNN, LSTM and GRU, forward and backpropagation through time.

Drop-in counterparts of PyTorch's ``nn.RNN/LSTM/GRU`` and ``nn.RNNCell/LSTMCell/GRUCell``
on NumPy arrays, with an explicit ``backward``.
"""

from .backends import backends
from .cells import GRUCell, LSTMCell, RNNCell
from .layers import GRU, LSTM, RNN

__version__ = "0.1.0"

__all__ = ["RNN", "LSTM", "GRU", "RNNCell", "LSTMCell", "GRUCell", "backends", "__version__"]
