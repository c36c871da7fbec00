"""The table of benchmark rows: what is measured, once, for the report and the tests.

A :class:`Row` is one workload at one size: a *kind* of workload, a cell type,
a pass and a :class:`Shape`.  The kinds are

* ``kernel`` -- one layer call on a whole sequence: ``infer`` is a forward in
  eval mode (PyTorch under ``torch.inference_mode()``), ``train`` a forward in
  train mode followed by the backward of a given output gradient;
* ``step`` -- one call of a cell (``LSTMCell``/``GRUCell``) from Python at B=1;
* ``loop`` -- the README's training loop: LSTM, ``Linear`` head, cross-entropy,
  backward, gradient clipping and Adam, one 64-step chunk of one-hot
  characters per call, the state carried between chunks;
* ``stream`` -- one sequence at B=1 over 10,000 steps with the state carried,
  through the cell API step by step (``cell``) or the layer on chunks of 1 or
  16 steps (``chunk1``, ``chunk16``);
* ``ragged`` -- batch inference of 2,048 sequences of lengths drawn from
  10-200, through ``lengths`` (PyTorch: ``pack_padded_sequence``; onnxruntime:
  ``sequence_lens``), 256 sequences per call;
* ``variant`` -- an ``infer`` kernel row of a cell variant PyTorch lacks (:data:`VARIANTS`:
  the GRU with the reset gate before the product, the LSTM with peepholes, with coupled
  input and forget gates or with ONNX's cell clip, Keras 2's GRU (hard_sigmoid gates, the
  reset gate before the product) and the LSTM with relu activations), against onnxruntime, the one peer that runs them (forward only,
  so there is no training row: no library to compare with).

:meth:`Row.reduced` gives the same row at a size where every engine's
results can be checked against the numpy reference in a fraction of a second
(the tests' check; the report checks each row at the size it timed).
"""

import re
from typing import NamedTuple

from fastrnn.celltypes import CELL_TYPES, CELLS

#: gates stacked in the weights of each cell type
GATES = {name: c.gates for name, c in CELL_TYPES.items()}
PASSES = ("infer", "train")


class Shape(NamedTuple):
    """A problem size: sequence length ``T``, batch ``B``, input ``I`` and hidden ``H`` sizes."""

    name: str
    T: int
    B: int
    I: int  # noqa: E741 - the conventional name of the input size
    H: int

    @property
    def label(self):
        return f"{self.name} ({self.T},{self.B},{self.I},{self.H})"


#: the kernel rows' shapes, smallest first: (T, B, I, H)
SHAPES = {
    "stream": Shape("stream", 100, 1, 64, 64),
    "small": Shape("small", 100, 16, 64, 128),
    "medium": Shape("medium", 100, 32, 128, 256),
    "large": Shape("large", 50, 64, 512, 512),
}
#: one cell call at B=1 (a stream), and at B=8 (a small batch of streams, a decoder's beams)
STEP = Shape("step", 1, 1, 128, 128)
STEPS = {"": STEP, "B8": STEP._replace(B=8)}
#: the training loop: one chunk of K1 steps of B one-hot characters out of a vocabulary of V
LOOP_K1, LOOP_B, LOOP_V, LOOP_HIDDEN = 64, 32, 96, (128, 256)
#: the training loop's optimizer and clipping: the README's clip, and a learning rate below
#: its 8e-3 (Adam moves a weight by about lr whatever its gradient, so the engines' weights
#: after its steps differ by a share of lr: the check's bound, LOOP_CHECK_RTOL); the time of
#: a chunk does not depend on it
LOOP_LR, LOOP_CLIP = 2e-3, 1.0
#: streaming: steps of one sequence at B=1, and the chunk lengths of the layer variants
STREAM = Shape("stream", 10_000, 1, 128, 128)
STREAM_VARIANTS = {"cell": 1, "chunk1": 1, "chunk16": 16}
#: ragged batches: T is the longest length, B the sequences per batch; RAGGED_BATCHES batches
#: (2,048 sequences) per call, lengths uniform over [RAGGED_MIN_LENGTH, T]
RAGGED = Shape("ragged", 200, 256, 64, 128)
RAGGED_BATCHES, RAGGED_MIN_LENGTH = 8, 10

#: the cell variants of the ``variant`` rows: name -> (cell, the layer's keyword arguments);
#: onnxruntime runs each (linear_before_reset=0, P, input_forget=1, clip, activations with
#: alpha and beta), PyTorch and JAX none
VARIANTS = {
    "reset_before": ("gru", {"reset_after": False}),
    "peepholes": ("lstm", {"peepholes": True}),
    "input_forget": ("lstm", {"input_forget": True}),
    "clip": ("lstm", {"clip": 1.0}),
    # Keras 2's GRU: the reset gate before the product, hard_sigmoid gates
    "hard_sigmoid": ("gru", {"reset_after": False,
                             "activations": [("hard_sigmoid", 0.2, 0.5), "tanh"]}),
    "relu": ("lstm", {"activations": ["sigmoid", "relu", "relu"]}),
}
VARIANT_SHAPE = SHAPES["medium"]

KINDS = ("kernel", "step", "loop", "stream", "ragged", "variant")


class Row(NamedTuple):
    """One row of the report: a workload, a cell type, a pass, a shape and a variant.

    Attributes
    ----------
    kind : str
        One of :data:`KINDS`.
    cell : str
        ``"rnn"``, ``"lstm"`` or ``"gru"``.
    pass_ : str
        ``"infer"`` or ``"train"``.
    shape : Shape
    variant : str
        ``stream``: ``"cell"``, ``"chunk1"`` or ``"chunk16"``; ``variant``: a key of
        :data:`VARIANTS`; ``step``: a key of :data:`STEPS` (empty: B=1); empty otherwise.
    """

    kind: str
    cell: str
    pass_: str
    shape: Shape
    variant: str = ""

    @property
    def id(self):
        """``lstm-infer-medium``, ``lstm-train-loop-H256``, ``lstm-infer-stream-chunk16``,
        ``lstm-infer-step-B8``, ..."""
        if self.kind == "kernel":
            return f"{self.cell}-{self.pass_}-{self.shape.name}"
        if self.kind == "variant":
            return f"{self.cell}-{self.pass_}-{self.shape.name}-{self.variant}"
        if self.kind == "loop":
            return f"{self.cell}-train-loop-H{self.shape.H}"
        tail = f"-{self.variant}" if self.variant else ""
        return f"{self.cell}-{self.pass_}-{self.kind}{tail}"

    @property
    def options(self):
        """The layer's keyword arguments beyond the shape (a variant's options; else none)."""
        return dict(VARIANTS[self.variant][1]) if self.kind == "variant" else {}

    @property
    def units(self):
        """(work items per call, their name): what a throughput is counted in."""
        s = self.shape
        if self.kind == "loop":
            return s.T * s.B, "characters"
        if self.kind == "stream":
            return s.T, "steps"
        if self.kind == "ragged":
            return RAGGED_BATCHES * s.B, "sequences"
        return 1, "calls"

    def flops(self):
        """Multiply-add FLOPs of the GEMMs of one call (kernel and step rows), else None.

        Forward: ``2*T*B*G*H*(I+H)``; a training pass counts 3x the forward (the
        backward does one product for the input and one for the weight gradient
        per forward product).
        """
        if self.kind not in ("kernel", "step", "variant"):
            return None
        s = self.shape
        forward = 2 * s.T * s.B * GATES[self.cell] * s.H * (s.I + s.H)
        return forward if self.pass_ == "infer" else 3 * forward

    def weight_bytes(self):
        """Bytes of the float32 weights of a step row's cell (W_ih and W_hh), else None."""
        if self.kind != "step":
            return None
        s = self.shape
        return 4 * GATES[self.cell] * s.H * (s.I + s.H)

    def bias_bytes(self):
        """Bytes of the float32 biases of a step row's cell (b_ih and b_hh), else None."""
        if self.kind != "step":
            return None
        return 4 * 2 * GATES[self.cell] * self.shape.H

    def weight_traffic(self):
        """Bytes of weights one call of a step row must move at the least, else None: the
        forward reads the weights once; a training step also reads them for dx and dh and
        writes their gradients (3x; fastrnn, which adds into the caller's gradients, also
        reads those: 4x)."""
        w = self.weight_bytes()
        if w is None:
            return None
        return w if self.pass_ == "infer" else 3 * w

    def reduced(self):
        """The same row at a size checked against the numpy reference in well under a second."""
        s = self.shape
        if self.kind in ("kernel", "variant"):
            return self._replace(shape=s._replace(T=min(s.T, 8)))
        if self.kind == "loop":
            return self._replace(shape=Shape(s.name, 8, 4, 12, 16))
        if self.kind == "stream":
            return self._replace(shape=s._replace(T=40, I=8, H=16))
        if self.kind == "ragged":
            return self._replace(shape=Shape(s.name, 12, 4, 6, 8))
        return self


def kernel_rows(cells=CELLS, passes=PASSES, shapes=tuple(SHAPES)):
    return [Row("kernel", c, p, SHAPES[s] if isinstance(s, str) else s)
            for c in cells for p in passes for s in shapes]


def step_rows(cells=("lstm", "gru"), passes=PASSES, batches=tuple(STEPS)):
    return [Row("step", c, p, STEPS[b], b) for b in batches for c in cells for p in passes]


def loop_rows(hidden=LOOP_HIDDEN):
    return [Row("loop", "lstm", "train", Shape(f"H={h}", LOOP_K1, LOOP_B, LOOP_V, h))
            for h in hidden]


def stream_rows(variants=tuple(STREAM_VARIANTS)):
    return [Row("stream", "lstm", "infer", STREAM, v) for v in variants]


def ragged_rows():
    return [Row("ragged", "lstm", "infer", RAGGED)]


def variant_rows(cells=CELLS, passes=PASSES):
    """The variant rows: inference only (their one peer runs no training pass)."""
    return [Row("variant", cell, "infer", VARIANT_SHAPE, name)
            for name, (cell, _) in VARIANTS.items() if cell in cells and "infer" in passes]


def all_rows():
    """Every row of the full report, in the report's order."""
    return (kernel_rows() + step_rows() + loop_rows() + stream_rows() + ragged_rows()
            + variant_rows())


def ragged_lengths(shape, seed):
    """The lengths of a ragged row's sequences, (RAGGED_BATCHES * B,): uniform over
    [RAGGED_MIN_LENGTH, T] (over [T // 4, T] for a reduced T), fixed by ``seed``."""
    import numpy as np
    low = min(RAGGED_MIN_LENGTH, max(1, shape.T // 4))
    return np.random.default_rng(seed).integers(low, shape.T + 1, size=RAGGED_BATCHES * shape.B)


_SHAPE_RE = re.compile(r"^(\d+)x(\d+)x(\d+)x(\d+)$")


def parse_shape(token):
    """A kernel shape from a name of :data:`SHAPES` or an explicit ``"TxBxIxH"``.

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


def row_to_json(row):
    return {"kind": row.kind, "cell": row.cell, "pass": row.pass_, "shape": list(row.shape),
            "variant": row.variant}


def row_from_json(spec):
    return Row(spec["kind"], spec["cell"], spec["pass"], Shape(*spec["shape"]),
               spec.get("variant", ""))


#: values per (T*B) saved by a training-mode forward, in units of H
STORE_PER_STEP = {"lstm": 6, "gru": 5, "rnn": 2}


def theoretical_memory(row, itemsize=4):
    """The memory a call needs beyond its inputs, in bytes, by part.

    Training: the store the forward keeps for the backward (LSTM: 4H gates, H
    cell states, H outputs per step and sequence; GRU: 3H gates, H of
    ``W_hn h + b_hn``, H outputs; RNN: H activations, H outputs), one copy of
    the weights (their gradients), the output ``y`` and ``dx``.  Inference:
    the output ``y`` and O(B*H) of state.
    """
    s, G = row.shape, GATES[row.cell]
    if row.pass_ == "infer":
        parts = {"outputs": s.T * s.B * s.H * itemsize}
    else:
        parts = {"store": s.T * s.B * STORE_PER_STEP[row.cell] * s.H * itemsize,
                 "weights": (G * s.H * (s.I + s.H) + 2 * G * s.H) * itemsize,
                 "outputs": (s.T * s.B * s.H + s.T * s.B * s.I) * itemsize}
    parts["total"] = sum(parts.values())
    return parts
