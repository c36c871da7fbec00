"""The table of benchmark cases: cells, passes, shapes and backends.

Everything that decides *what* is benchmarked lives here, once, and drives both
the pytest-benchmark suite under ``bench/`` and the report command
``python -m fastrnn.bench``:

* :data:`SHAPES` -- the named problem sizes (T, B, I, H) of the issue;
* :data:`CASES` -- the single list of ``(cell, shape, pass)`` cases;
* :data:`BACKENDS` -- the single list of backends (every fastrnn backend
  known to :mod:`fastrnn.backends`, plus ``"torch"`` as the peer);
* the GEMM flop count (:func:`gemm_flops`), the theoretical training-mode
  store (:func:`theoretical_memory`) and the targets (:func:`target`).

A *pass* is ``"infer"`` (forward in eval mode, nothing kept for backward) or
``"train"`` (forward in train mode followed by the backward).  The ``step``
shape is one call of ``LSTMCell``/``GRUCell`` from Python.
"""

import importlib
import re
from typing import NamedTuple

from ..backends import AUTO_ORDER, MODULES, backends as fastrnn_backends


class Shape(NamedTuple):
    """A problem size.

    Attributes
    ----------
    name : str
        Short name used in group names and on the command line.
    T, B, I, H : int
        Sequence length, batch, input size and hidden size.
    step : bool
        True for a one-step cell call (``T`` is then 1).
    """

    name: str
    T: int
    B: int
    I: int  # noqa: E741 - the conventional name of the input size
    H: int
    step: bool = False

    @property
    def label(self):
        """``"name (T,B,I,H)"`` for tables."""
        if self.step:
            return f"{self.name} (B={self.B}, I={self.I}, H={self.H})"
        return f"{self.name} ({self.T},{self.B},{self.I},{self.H})"

    def with_steps(self, steps):
        """The same shape with the sequence length cut to ``min(T, steps)``.

        Parameters
        ----------
        steps : int or None
            ``None`` keeps the shape as it is.

        Returns
        -------
        Shape
        """
        if steps is None or self.step or steps >= self.T:
            return self
        return self._replace(T=int(steps))


class Case(NamedTuple):
    """One benchmark case: a cell type, a shape and a pass.

    Attributes
    ----------
    cell : str
        ``"rnn"``, ``"lstm"`` or ``"gru"``.
    shape : Shape
    pass_ : str
        ``"infer"`` or ``"train"``.
    """

    cell: str
    shape: Shape
    pass_: str

    @property
    def group(self):
        """pytest-benchmark group name, ``f"{cell}-{pass}-{shape}"``: one group compares backends."""
        return f"{self.cell}-{self.pass_}-{self.shape.name}"

    @property
    def id(self):
        """Same as :attr:`group`; the backend is appended by the test id."""
        return self.group


#: named shapes of the issue: (T, B, I, H)
SHAPES = {
    "stream": Shape("stream", 100, 1, 64, 64),
    "small": Shape("small", 100, 16, 64, 128),
    "medium": Shape("medium", 100, 32, 128, 256),
    "large": Shape("large", 50, 64, 512, 512),
    "step": Shape("step", 1, 1, 128, 128, step=True),
}
#: the sequence shapes, smallest first
SEQUENCE_SHAPES = ("stream", "small", "medium", "large")
#: cell types of the sequence layers
CELLS = ("rnn", "lstm", "gru")
#: cell types benchmarked as a single step from Python
STEP_CELLS = ("lstm", "gru")
#: forward in eval mode; forward + backward in train mode
PASSES = ("infer", "train")
#: gates stacked in the weights of each cell type
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
#: the peer every fastrnn backend is compared with
PEER = "torch"
#: every backend the suite knows about, available or not (fastrnn's, then the peer)
BACKENDS = tuple(MODULES) + (PEER,)
#: the oracle every other backend is checked against
REFERENCE = "numpy"
#: backends that compile at run time and keep a compile cache on disk
JIT_BACKENDS = ("numba",)


def make_cases(cells=CELLS, shapes=tuple(SHAPES), passes=PASSES, shape_table=None):
    """Build the list of cases for a selection of cells, shapes and passes.

    Parameters
    ----------
    cells : sequence of str
    shapes : sequence of str or Shape
        Names of :data:`SHAPES` (or of ``shape_table``), or Shape objects.
    passes : sequence of str
    shape_table : dict, optional
        Extra named shapes (name -> Shape), looked up before :data:`SHAPES`.

    Returns
    -------
    list of Case
        Sequence cases in the order cell, pass, shape; then the step cases
        (only for cells in :data:`STEP_CELLS`).
    """
    table = dict(SHAPES, **(shape_table or {}))
    resolved = [s if isinstance(s, Shape) else table[s] for s in shapes]
    seq = [s for s in resolved if not s.step]
    steps = [s for s in resolved if s.step]
    out = [Case(c, s, p) for c in cells for p in passes for s in seq]
    out += [Case(c, s, p) for s in steps for c in cells if c in STEP_CELLS for p in passes]
    return out


#: THE table of cases: cell x pass x shape for the layers, plus the cell steps
CASES = make_cases()

_SHAPE_RE = re.compile(r"^(\d+)x(\d+)x(\d+)x(\d+)$")


def parse_shape(token):
    """A shape from a name of :data:`SHAPES` or an explicit ``"TxBxIxH"``.

    Parameters
    ----------
    token : str
        ``"small"``, or e.g. ``"8x2x4x5"`` (a custom sequence shape named by the token).

    Returns
    -------
    Shape

    Raises
    ------
    ValueError
        Neither a known name nor ``TxBxIxH`` with positive integers.
    """
    token = token.strip()
    if token in SHAPES:
        return SHAPES[token]
    m = _SHAPE_RE.match(token)
    if m and all(int(v) > 0 for v in m.groups()):
        return Shape(token, *(int(v) for v in m.groups()))
    raise ValueError(f"unknown shape {token!r}: use one of {list(SHAPES)} or TxBxIxH (e.g. 8x2x4x5)")


def backend_status(peer=True):
    """Which backends of :data:`BACKENDS` can run here.

    Parameters
    ----------
    peer : bool
        Import torch to see whether the peer works; when False (a run that
        does not use it) the peer is reported unavailable without importing it.

    Returns
    -------
    dict
        ``{name: {"available": bool, "reason": str}}``: fastrnn's own
        :func:`fastrnn.backends` plus an entry for the torch peer.
    """
    status = dict(fastrnn_backends())
    if not peer:
        status[PEER] = {"available": False, "reason": "not requested"}
        return status
    try:
        importlib.import_module("torch")
        status[PEER] = {"available": True, "reason": ""}
    except Exception as exc:  # ImportError, or a broken install
        status[PEER] = {"available": False,
                        "reason": f"{type(exc).__name__}: {exc}; the peer is optional"}
    return status


def available_backends():
    """Names of the available backends, in :data:`BACKENDS` order."""
    status = backend_status()
    return [b for b in BACKENDS if status.get(b, {}).get("available")]


def auto_backend(status=None):
    """The backend ``backend="auto"`` picks when FASTRNN_BACKEND is unset: the one targets apply to.

    Parameters
    ----------
    status : dict, optional
        :func:`backend_status` (or :func:`fastrnn.backends`); asked for when omitted.

    Returns
    -------
    str
    """
    status = fastrnn_backends() if status is None else status
    for name in AUTO_ORDER:
        if status.get(name, {}).get("available"):
            return name
    return REFERENCE


def gemm_flops(case):
    """Floating-point operations of the GEMMs of one call of a case.

    Forward: ``2*T*B*G*H*(I+H)`` (input and recurrent products of the G
    stacked gates; no projection in these cases).  The backward costs about
    twice the forward (one GEMM for the input gradient and one for the weight
    gradient per forward GEMM), so a ``train`` pass counts 3x the forward.

    Parameters
    ----------
    case : Case

    Returns
    -------
    int
    """
    s = case.shape
    forward = 2 * s.T * s.B * GATES[case.cell] * s.H * (s.I + s.H)
    return forward if case.pass_ == "infer" else 3 * forward


#: values per (T*B) saved by a training-mode forward, in units of H
STORE_PER_STEP = {
    "lstm": 6,  # 4H saved gates + H cell states + H outputs
    "gru": 5,   # 3H gates (r, z, n) + H of W_hn h + b_hn + H outputs
    "rnn": 2,   # H activations + H outputs (h_{t-1})
}


def theoretical_memory(cell, shape, itemsize=4):
    """The memory a forward+backward needs beyond its inputs, in bytes.

    Parameters
    ----------
    cell : str
    shape : Shape
    itemsize : int
        Bytes per value (4 for float32).

    Returns
    -------
    dict
        ``store``: what the training-mode forward keeps for the backward,
        ``T*B*STORE_PER_STEP[cell]*H`` values (LSTM: 4H saved gates, H cell
        states, H outputs; GRU: 3H gates, H for ``W_hn h + b_hn``, H outputs;
        RNN: H activations, H outputs); ``weights``: one copy of the weights
        and biases (the gradients the backward returns); ``outputs``: the
        forward's output ``y`` (T, B, H) and the backward's ``dx`` (T, B, I);
        ``total``: their sum.
    """
    G, T, B, I, H = GATES[cell], shape.T, shape.B, shape.I, shape.H
    parts = {
        "store": T * B * STORE_PER_STEP[cell] * H * itemsize,
        "weights": (G * H * (I + H) + 2 * G * H) * itemsize,
        "outputs": (T * B * H + T * B * I) * itemsize,
    }
    parts["total"] = sum(parts.values())
    return parts


#: peak memory above this multiple of :func:`theoretical_memory` is flagged
MEMORY_FLAG_RATIO = 1.5

#: minimum speed-up torch/fastrnn of the issue, by (pass, shape name) and cell
_SPEEDUP_TARGETS = {
    ("train", "stream"): {"rnn": 3.0, "lstm": 3.0, "gru": 3.0},
    ("train", "small"): {"rnn": 1.5, "lstm": 1.1, "gru": 1.5},
    ("train", "medium"): {"rnn": 1.5, "lstm": 1.1, "gru": 1.5},
    ("train", "large"): {"rnn": 1.0, "lstm": 1.0, "gru": 1.0},
}
#: the issue's bound on one LSTMCell step at B=1, H=128, in seconds
_STEP_SECONDS_TARGETS = {("lstm", "infer"): 5e-6}


def target(case):
    """The issue's target for a case, if it has one.

    Parameters
    ----------
    case : Case

    Returns
    -------
    tuple or None
        ``("speedup", x)``: torch time / fastrnn time must be at least x;
        ``("seconds", s)``: the fastrnn call must take at most s seconds;
        None when the issue sets no target for this case.
    """
    if case.shape.step:
        bound = _STEP_SECONDS_TARGETS.get((case.cell, case.pass_))
        return None if bound is None else ("seconds", bound)
    if case.pass_ == "infer":
        return ("speedup", 1.0) if case.shape.name in SEQUENCE_SHAPES else None
    per_cell = _SPEEDUP_TARGETS.get((case.pass_, case.shape.name))
    return None if per_cell is None else ("speedup", per_cell[case.cell])


#: the cython backend's bound on its time relative to the numba backend's (issue 4:
#: "within 10% of the numba backend or faster")
CYTHON_VS_NUMBA = 1.1
#: the cython backend's bound on one LSTMCell step at B=1, H=128, in seconds
_CYTHON_STEP_SECONDS = {("lstm", "infer"): 2e-6}


def cython_target(case):
    """The cython backend's target for a case (issue 4), if it has one.

    Returns
    -------
    tuple or None
        ``("relative", x)``: cython time / numba time must be at most x (every sequence case);
        ``("seconds", s)``: the cython call must take at most s seconds (the LSTMCell step).
    """
    if case.shape.step:
        bound = _CYTHON_STEP_SECONDS.get((case.cell, case.pass_))
        return None if bound is None else ("seconds", bound)
    return ("relative", CYTHON_VS_NUMBA)
