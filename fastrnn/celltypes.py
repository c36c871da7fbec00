"""The one table of recurrent cell types: what every part of fastrnn knows about a cell.

Layers, cells, the functional layer, the backends' kernels, the converters
(PyTorch, Keras, ONNX), the benchmark and the tests read the number of gates,
the states, the weight tuple and the gate orders from :data:`CELL_TYPES`, and
PyTorch's ``mode`` strings from :data:`MODES`; none of them writes these
facts down again.

Gate orders spell the gates stacked along the first axis of ``weight_ih`` and
``weight_hh`` (and the biases) with one letter per gate, in fastrnn's
(PyTorch's) letters: i input, f forget, g cell candidate, o output (LSTM);
r reset, z update, n new (GRU); h the single block of an Elman RNN.

=====  =====  ==============  =========  =========
cell   gates  fastrnn/torch   Keras 3    ONNX
=====  =====  ==============  =========  =========
RNN    1      h               h          h
LSTM   4      i, f, g, o      i, f, g, o i, o, f, g
GRU    3      r, z, n         z, r, n    z, r, n
=====  =====  ==============  =========  =========
"""

from typing import NamedTuple


class CellType(NamedTuple):
    """One recurrent cell type.

    Attributes
    ----------
    name : str
        The kernels' name: a backend has ``<name>_forward``, ``<name>_backward``,
        ``<name>_step_forward`` and ``<name>_step_backward``.
    kind : str
        The family's name in PyTorch, Keras and ONNX (``"RNN"``, ``"LSTM"``, ``"GRU"``).
    gates : int
        Gate blocks stacked in ``weight_ih``, ``weight_hh`` and the biases (G: rows G*H).
    states : tuple of str
        The recurrent states, in the order of ``hx`` and ``hy``: ``("h",)`` or ``("h", "c")``.
    weights : tuple of str
        The kernels' weight tuple, in order (an entry may be None: no bias, no projection,
        no peepholes).
    orders : dict
        Gate order of each convention (``"torch"``, ``"keras"``, ``"onnx"``), one letter a gate.
    activations : tuple of str
        PyTorch's activation of each of the cell's activation slots, f, g and h in order (ONNX's
        ``activations`` of one direction; :mod:`fastrnn.activations`).
    """
    name: str
    kind: str
    gates: int
    states: tuple
    weights: tuple
    orders: dict
    activations: tuple

    @property
    def order(self):
        """fastrnn's own gate order (PyTorch's)."""
        return self.orders["torch"]


#: kernel name -> cell type
CELL_TYPES = {
    "rnn": CellType("rnn", "RNN", 1, ("h",), ("w_ih", "w_hh", "b_ih", "b_hh"),
                    {"torch": "h", "keras": "h", "onnx": "h"}, ("tanh",)),
    "lstm": CellType("lstm", "LSTM", 4, ("h", "c"),
                     ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "w_ph"),
                     {"torch": "ifgo", "keras": "ifgo", "onnx": "iofg"},
                     ("sigmoid", "tanh", "tanh")),
    "gru": CellType("gru", "GRU", 3, ("h",), ("w_ih", "w_hh", "b_ih", "b_hh"),
                    {"torch": "rzn", "keras": "zrn", "onnx": "zrn"}, ("sigmoid", "tanh")),
}

#: the kernel names, in the table's order
CELLS = tuple(CELL_TYPES)

#: PyTorch's ``mode`` of a layer -> (kernel name, options its kernels take)
MODES = {
    "RNN_TANH": ("rnn", {"nonlinearity": "tanh"}),
    "RNN_RELU": ("rnn", {"nonlinearity": "relu"}),
    "LSTM": ("lstm", {}),
    "GRU": ("gru", {}),
}


def by_kind(kind):
    """The cell type of a family name (``"RNN"``, ``"LSTM"`` or ``"GRU"``)."""
    for cell in CELL_TYPES.values():
        if cell.kind == kind:
            return cell
    raise ValueError(f"kind must be one of {[c.kind for c in CELL_TYPES.values()]}, "
                     f"but got {kind!r}")


def of_mode(mode):
    """The cell type of a PyTorch ``mode`` string (a key of :data:`MODES`)."""
    return CELL_TYPES[MODES[mode][0]]
