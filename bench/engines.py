"""The engines: fastrnn's backends and the peers, each running the rows it supports.

:data:`ENGINES` is the one table of engines: the report times each of them
in processes of its own, and ``tests/test_bench.py`` checks each against the
numpy reference on every row it supports.  An engine is

* a fastrnn backend (``numpy``, the reference and oracle; ``numba``;
  ``cython``), run as the README shows;
* PyTorch as its users run it: inference under ``torch.inference_mode()``,
  training with autograd (the training loop as PyTorch's tutorials write it);
* onnxruntime (inference), on the model ``fastrnn.onnx.export`` writes, with
  ``intra_op_num_threads`` set to the benchmark's thread count;
* JAX (kernel rows): ``jit`` over ``lax.scan`` with the input product hoisted
  out of the loop, and ``grad`` of ``sum(out * dout)`` (with respect to the
  weights and the input) for training.

Every engine gets the same weights (a fastrnn layer seeded with :data:`SEED`
on the numpy backend, loaded into the others) and the same inputs.  A
workload is built once and called many times; :meth:`Workload.results` runs
it on fresh state and returns what it computes, which :func:`check` compares
with the numpy reference's at the size timed, in the same process after
timing, so a wrong engine's number is marked as such (the tests check every
engine on every row at the row's :meth:`~bench.cases.Row.reduced` size).
"""

import functools
import importlib.util
import io
from typing import NamedTuple

import numpy as np

from .cases import LOOP_CLIP, LOOP_LR, STREAM_VARIANTS, ragged_lengths

#: seed of the weights and the inputs of every workload
SEED = 0
#: dtype of every benchmark
DTYPE = np.float32
#: a result is wrong when max|result - reference| > CHECK_RTOL * max|reference|: the engines'
#: float32 results, at the rows' own sizes, are within 3e-6 of the float32 reference's; one of
#: weights and inputs rounded to float16 is 4.5e-4 to 8.7e-4 off, and is caught
CHECK_RTOL = 2e-4
#: the same for the training loop's rows, whose results are weights after Adam's steps: Adam
#: moves a weight by about lr whatever the size of its gradient, so a gradient near zero that
#: rounds the other way moves it the other way (the engines: 1e-5 to 2.4e-4)
LOOP_CHECK_RTOL = 1e-3
#: the numpy reference: the oracle every engine is checked against
REFERENCE = "numpy"


class CheckError(AssertionError):
    """An engine's results differ from the numpy reference: its timings would be meaningless."""


class Engine(NamedTuple):
    """One row of the engine table.

    Attributes
    ----------
    name : str
    peer : bool
        A library users would pick instead of fastrnn (the ratios are against these).
    kinds : tuple of str
        The row kinds it runs.
    infer_only : bool
        It runs no training pass.
    module : str
        The module whose presence decides whether it is available.
    """

    name: str
    peer: bool
    kinds: tuple
    infer_only: bool
    module: str

    def supports(self, row):
        return row.kind in self.kinds and not (self.infer_only and row.pass_ == "train")


ALL_KINDS = ("kernel", "step", "loop", "stream", "ragged", "variant")

#: THE table of engines, fastrnn's first (PyTorch and JAX have none of the variant rows' cells)
ENGINES = {
    "numpy": Engine("numpy", False, ("kernel", "step", "variant"), False, "numpy"),
    "numba": Engine("numba", False, ALL_KINDS, False, "numba"),
    "cython": Engine("cython", False, ALL_KINDS, False, "fastrnn._cython"),
    "torch": Engine("torch", True, ("kernel", "step", "loop", "stream", "ragged"), False,
                    "torch"),
    "onnxruntime": Engine("onnxruntime", True, ("kernel", "step", "stream", "ragged", "variant"),
                          True, "onnxruntime"),
    "jax": Engine("jax", True, ("kernel",), False, "jax"),
}
FASTRNN = tuple(n for n, e in ENGINES.items() if not e.peer)
PEERS = tuple(n for n, e in ENGINES.items() if e.peer)


def availability():
    """``{engine: reason it cannot run, or ""}``, without importing any peer."""
    import fastrnn
    status = fastrnn.backends()
    out = {}
    for name, engine in ENGINES.items():
        if name in status:
            out[name] = "" if status[name]["available"] else status[name]["reason"]
        elif importlib.util.find_spec(engine.module) is None:
            out[name] = f"{engine.module} is not installed"
        else:
            out[name] = ""
    if not out["onnxruntime"] and importlib.util.find_spec("onnx") is None:
        out["onnxruntime"] = "onnx (needed to export the model) is not installed"
    return out


# -- shared inputs and weights ---------------------------------------------------------------
def _rng(offset=1):
    return np.random.default_rng(SEED + offset)


def _f32(a):
    return np.ascontiguousarray(a, dtype=DTYPE)


def inputs(row):
    """The inputs of a row, the same for every engine (a dict of float32 arrays)."""
    rng, s = _rng(), row.shape
    if row.kind == "step":
        data = {"x": rng.standard_normal((s.B, s.I)), "h0": rng.standard_normal((s.B, s.H)),
                "dh": rng.standard_normal((s.B, s.H))}
        if row.cell == "lstm":
            data["c0"] = rng.standard_normal((s.B, s.H))
            data["dc"] = rng.standard_normal((s.B, s.H))
        return {k: _f32(v) for k, v in data.items()}
    if row.kind in ("kernel", "variant"):
        return {"x": _f32(rng.standard_normal((s.T, s.B, s.I))),
                "dout": _f32(rng.standard_normal((s.T, s.B, s.H)))}
    if row.kind == "stream":
        return {"x": _f32(rng.standard_normal((s.T, 1, s.I)))}
    if row.kind == "ragged":
        lengths = ragged_lengths(s, SEED)
        batches = []
        for i in range(0, len(lengths), s.B):
            n = lengths[i:i + s.B]
            x = rng.standard_normal((int(n.max()), len(n), s.I))
            x[np.arange(x.shape[0])[:, None] >= n[None, :]] = 0.0     # zero padding
            batches.append((_f32(x), n.astype(np.int64)))
        return {"batches": batches}
    if row.kind == "loop":     # characters: 4 chunks of ids, one-hot inputs, next-id targets
        ids = rng.integers(0, s.I, size=(4 * s.T + 1, s.B))
        return {"x": _f32(np.eye(s.I)[ids[:-1]]).reshape(4, s.T, s.B, s.I),
                "targets": ids[1:].reshape(4, s.T, s.B)}
    raise ValueError(f"unknown row kind {row.kind!r}")


def _layer_class(cell, step):
    import fastrnn
    if step:
        return {"rnn": fastrnn.RNNCell, "lstm": fastrnn.LSTMCell, "gru": fastrnn.GRUCell}[cell]
    return {"rnn": fastrnn.RNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}[cell]


def _make(row, backend):
    """The fastrnn layer (or cell, for step rows) of a row, seeded, on ``backend``."""
    s = row.shape
    return _layer_class(row.cell, row.kind == "step")(s.I, s.H, dtype=DTYPE, backend=backend,
                                                      seed=SEED, **row.options)


@functools.lru_cache(maxsize=None)
def reference_weights(row):
    """The weights every engine of ``row`` runs with: ``{PyTorch name: array}`` (made once a
    process, and never written: the engines load them into parameters of their own)."""
    return _make(row, REFERENCE).state_dict()


def _head(row):
    from fastrnn.train import Linear
    return Linear(row.shape.H, row.shape.I, dtype=DTYPE, seed=SEED + 1)


@functools.lru_cache(maxsize=None)
def head_weights(row):
    """The loop rows' head (``Linear(H, I)``), ``{PyTorch name: array}`` (made once a process)."""
    return _head(row).state_dict()


def _onnx_export_args(row):
    """What onnxruntime's model of ``row`` is exported from: ``{"cell": True}`` for the cell
    (the stream row through the cell API), else the layer, with ``fastrnn.onnx.export``'s
    options (``initial_state`` for streaming chunks, ``lengths`` for ragged batches)."""
    if row.kind == "stream":
        return {"cell": True} if row.variant == "cell" else {"initial_state": True}
    return {"lengths": True} if row.kind == "ragged" else {}


@functools.lru_cache(maxsize=None)
def onnx_model(row, cell=False, **export_args):
    """The ONNX model (bytes) onnxruntime runs for ``row``: ``fastrnn.onnx.export`` of the
    reference layer, or with ``cell`` of a cell of its weights (made once a process)."""
    import fastrnn.onnx
    obj = _make(row, REFERENCE)
    if cell:
        layer, s = obj, row.shape
        obj = _layer_class(row.cell, True)(s.I, s.H, dtype=DTYPE, backend=REFERENCE)
        obj.load_state_dict(_as_cell_weights(layer.state_dict()))
    buf = io.BytesIO()
    fastrnn.onnx.export(obj, buf, **export_args)
    return buf.getvalue()


def prepare(row, engine):
    """Make what a peer's workload of ``row`` takes from fastrnn (the reference weights, the
    ONNX model): the worker calls this before its clocks, so that a peer's import and build
    times are that library's own, as its users would see them, not fastrnn's work of
    providing the same weights to every engine.  Nothing for fastrnn's engines."""
    if engine == "onnxruntime":
        onnx_model(row, **_onnx_export_args(row))
    elif engine in PEERS:
        reference_weights(row._replace(kind="kernel"))
        if row.kind == "loop":
            head_weights(row)


def _as_cell_weights(weights):
    """A one-layer state dict (``weight_ih_l0``) renamed for a cell (``weight_ih``)."""
    return {k[:-3]: v for k, v in weights.items()}


class Workload:
    """One row on one engine: built once, called many times.

    ``__call__`` runs the timed call; :meth:`results` runs the row's work on
    fresh state once and returns ``{name: float64 array}``.
    """

    def __init__(self, row, engine):
        self.row, self.engine = row, engine
        self.data = inputs(row)

    def __call__(self):
        raise NotImplementedError

    def results(self):
        raise NotImplementedError


def _collect(**arrays):
    return {k: np.array(v, dtype=np.float64) for k, v in arrays.items() if v is not None}


# -- fastrnn ---------------------------------------------------------------------------------
class FastrnnWorkload(Workload):
    """A row on one of fastrnn's backends, written as the README shows."""

    def __init__(self, row, engine):
        super().__init__(row, engine)
        getattr(self, "_build_" + row.kind)()

    def __call__(self):
        self._run()

    def _build_kernel(self):
        m, d = _make(self.row, self.engine), self.data
        m.train(self.row.pass_ == "train")
        self.module = m
        if self.row.pass_ == "infer":
            self._run = lambda: m(d["x"])
        else:
            def run():
                m(d["x"])
                return m.backward(d["dout"])
            self._run = run

    def _build_step(self):
        m, d, lstm = _make(self.row, self.engine), self.data, self.row.cell == "lstm"
        m.train(self.row.pass_ == "train")
        self.module = m
        hx = (d["h0"], d["c0"]) if lstm else d["h0"]
        dh = (d["dh"], d["dc"]) if lstm else (d["dh"],)
        if self.row.pass_ == "infer":
            self._run = lambda: m(d["x"], hx)
        else:
            def run():
                m(d["x"], hx)
                return m.backward(*dh)
            self._run = run

    def results(self):
        getattr(self, "_reset_" + self.row.kind, lambda: None)()
        return getattr(self, "_results_" + self.row.kind)()

    # a variant row is a kernel row of a layer with options
    def _build_variant(self):
        self._build_kernel()

    def _results_variant(self):
        return self._results_kernel()

    def _results_kernel(self):
        d, m, lstm = self.data, self.module, self.row.cell == "lstm"
        m.zero_grad()
        out, hy = m(d["x"])
        res = dict(zip(("h_n", "c_n"), hy if lstm else (hy,)), out=out)
        if self.row.pass_ == "train":
            dx, dh0 = m.backward(d["dout"])
            res.update(zip(("dh0", "dc0"), dh0 if lstm else (dh0,)), dx=dx)
            res.update({f"grad.{k}": g for k, g in m.grads.items()})
        return _collect(**res)

    def _results_step(self):
        d, m, lstm = self.data, self.module, self.row.cell == "lstm"
        m.zero_grad()
        hy = m(d["x"], (d["h0"], d["c0"]) if lstm else d["h0"])
        res = dict(zip(("h_n", "c_n"), hy if lstm else (hy,)))
        if self.row.pass_ == "train":
            dx, dh0 = m.backward(d["dh"], d["dc"]) if lstm else m.backward(d["dh"])
            res.update(zip(("dh0", "dc0"), dh0 if lstm else (dh0,)), dx=dx)
            res.update({f"grad.{k}": g for k, g in m.grads.items()})
        return _collect(**res)

    # the README's training loop, one chunk per call, the state carried between calls
    def _build_loop(self):
        import fastrnn
        from fastrnn.train import TBPTT, Adam, clip_grad_norm, cross_entropy
        s = self.row.shape
        self.lstm = lstm = fastrnn.LSTM(s.I, s.H, dtype=DTYPE, backend=self.engine, seed=SEED)
        self.head = head = _head(self.row)
        self.opt = opt = Adam({"lstm": lstm, "head": head}, lr=LOOP_LR)
        self.tbptt = TBPTT(lstm, k1=s.T)
        self.chunk, self.losses, self.norms = 0, [], []
        xs, ys = self.data["x"], self.data["targets"]

        def loss_and_grad(out, t0, t1):
            loss, dlogits = cross_entropy(head(out), ys[self.chunk % len(ys)][t0:t1])
            return loss, head.backward(dlogits)

        def update(chunk):
            self.norms.append(clip_grad_norm(opt.grads, LOOP_CLIP))
            opt.step()
            opt.zero_grad()

        def run():
            self.losses += self.tbptt.run(xs[self.chunk % len(xs)], loss_and_grad, update)
            self.chunk += 1
        self._run = run

    def _reset_loop(self):
        self._build_loop()

    def _results_loop(self):
        self._run()
        self._run()
        weights = {f"w.{k}": v for k, v in self.lstm.state_dict().items()}
        weights.update({f"w.head.{k}": v for k, v in self.head.state_dict().items()})
        return _collect(loss=self.losses, norm=self.norms, **weights)

    # streaming: one sequence at B=1, the state carried step by step or chunk by chunk
    def _build_stream(self):
        d, variant = self.data, self.row.variant
        lstm = _make(self.row, self.engine).eval()
        if variant == "cell":
            import fastrnn
            s = self.row.shape
            cell = fastrnn.LSTMCell(s.I, s.H, dtype=DTYPE, backend=self.engine).eval()
            cell.load_state_dict(_as_cell_weights(lstm.state_dict()))
            xs = list(d["x"])         # (1, I) per step

            def run(keep=None):
                h = c = np.zeros((1, s.H), DTYPE)
                for x in xs:
                    h, c = cell(x, (h, c))
                    if keep is not None:
                        keep.append(h)
                return h, c
        else:
            k = STREAM_VARIANTS[variant]
            chunks = [d["x"][t:t + k] for t in range(0, len(d["x"]), k)]

            def run(keep=None):
                state = None
                for x in chunks:
                    out, state = lstm(x, state)
                    if keep is not None:
                        keep.append(out)
                return state
        self._stream = run
        self._run = run

    def _results_stream(self):
        outs = []
        h, c = self._stream(outs)
        return _collect(out=np.concatenate(outs).reshape(-1, self.row.shape.H),
                        h_n=np.reshape(h, -1), c_n=np.reshape(c, -1))

    # ragged batches through lengths
    def _build_ragged(self):
        lstm = _make(self.row, self.engine).eval()
        batches = self.data["batches"]

        def run(keep=None):
            for x, n in batches:
                out, (h, c) = lstm(x, lengths=n)
                if keep is not None:
                    keep.append((out, h[0], c[0]))
        self._ragged = run
        self._run = run

    def _results_ragged(self):
        """The final states of every batch, and the first batch's output (its padded steps
        included: zeros, in every engine)."""
        kept = []
        self._ragged(kept)
        return _collect(out=kept[0][0], h_n=np.concatenate([k[1] for k in kept]),
                        c_n=np.concatenate([k[2] for k in kept]))


# -- PyTorch ---------------------------------------------------------------------------------
class TorchWorkload(Workload):
    """A row in PyTorch, as its users write it, with the reference weights."""

    def __init__(self, row, engine):
        import torch
        super().__init__(row, engine)
        self.torch = torch
        getattr(self, "_build_" + row.kind)()

    def __call__(self):
        self._run()

    def _module(self, step=False):
        torch, s, nn = self.torch, self.row.shape, self.torch.nn
        if step:
            cls = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[self.row.cell]
        else:
            cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[self.row.cell]
        m = cls(s.I, s.H)
        weights = reference_weights(self.row._replace(kind="kernel"))
        if step:
            weights = _as_cell_weights(weights)
        m.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        return m

    def _build_kernel(self, step=False):
        torch = self.torch
        m = self.module = self._module(step)
        t = self.tensors = {k: torch.from_numpy(v) for k, v in self.data.items()}
        lstm = self.row.cell == "lstm"
        if step:
            hx = (t["h0"], t["c0"]) if lstm else t["h0"]
            args, grads_out = (t["x"], hx), ((t["dh"], t["dc"]) if lstm else (t["dh"],))
            leaves = [t["x"], t["h0"]] + ([t["c0"]] if lstm else [])
        else:
            args, leaves = (t["x"],), [t["x"]]
        if self.row.pass_ == "infer":
            m.eval()

            def run():
                with torch.inference_mode():
                    return m(*args)
            self._run = run
            return
        for leaf in leaves:
            leaf.requires_grad_(True)
        params = list(m.parameters())

        def run():
            for v in params + leaves:
                v.grad = None
            got = m(*args)
            if step:
                torch.autograd.backward(got if lstm else (got,), grads_out)
            else:
                got[0].backward(t["dout"])
            return got
        self._run = run

    def _build_step(self):
        self._build_kernel(step=True)

    def results(self):
        return getattr(self, "_results_" + self.row.kind)()

    def _results_kernel(self):
        lstm, t, step = self.row.cell == "lstm", self.tensors, self.row.kind == "step"
        got = self._run()
        res = {}
        if step:
            hy = got if lstm else (got,)
        else:
            res["out"], hy = got
            hy = hy if lstm else (hy,)
        res.update(zip(("h_n", "c_n"), hy))
        if self.row.pass_ == "train":
            res["dx"] = t["x"].grad
            if step:
                res["dh0"] = t["h0"].grad
                if lstm:
                    res["dc0"] = t["c0"].grad
            res.update({f"grad.{k}": p.grad for k, p in self.module.named_parameters()})
        return _collect(**{k: v.detach().numpy() for k, v in res.items()})

    _results_step = _results_kernel

    # the same training loop in idiomatic PyTorch
    def _build_loop(self):
        torch, F, s = self.torch, self.torch.nn.functional, self.row.shape
        self.module = lstm = self._module()
        self.head = head = torch.nn.Linear(s.H, s.I)
        head.load_state_dict({k: torch.from_numpy(v) for k, v in head_weights(self.row).items()})
        params = list(lstm.parameters()) + list(head.parameters())
        opt = torch.optim.Adam(params, lr=LOOP_LR)
        xs = torch.from_numpy(self.data["x"])
        ys = torch.from_numpy(self.data["targets"])
        self.chunk, self.state, self.losses, self.norms = 0, None, [], []

        def run():
            x, y = xs[self.chunk % len(xs)], ys[self.chunk % len(ys)]
            out, state = lstm(x, self.state)
            loss = F.cross_entropy(head(out).reshape(-1, s.I), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            self.norms.append(torch.nn.utils.clip_grad_norm_(params, LOOP_CLIP))
            opt.step()
            self.state = tuple(v.detach() for v in state)
            self.losses.append(loss.item())
            self.chunk += 1
        self._run = run

    def _results_loop(self):
        self._build_loop()
        self._run()
        self._run()
        weights = {f"w.{k}": v.detach().numpy() for k, v in self.module.state_dict().items()}
        weights.update({f"w.head.{k}": v.detach().numpy() for k, v in self.head.state_dict().items()})
        return _collect(loss=self.losses, norm=[float(n) for n in self.norms], **weights)

    def _build_stream(self):
        torch, variant, s = self.torch, self.row.variant, self.row.shape
        x = torch.from_numpy(self.data["x"])
        if variant == "cell":
            cell = self._module(step=True).eval()
            xs = list(x)

            def run(keep=None):
                with torch.inference_mode():
                    h = c = torch.zeros(1, s.H)
                    for xt in xs:
                        h, c = cell(xt, (h, c))
                        if keep is not None:
                            keep.append(h.numpy())
                    return h.numpy(), c.numpy()
        else:
            lstm, k = self._module().eval(), STREAM_VARIANTS[variant]
            chunks = list(torch.split(x, k))

            def run(keep=None):
                with torch.inference_mode():
                    state = None
                    for xt in chunks:
                        out, state = lstm(xt, state)
                        if keep is not None:
                            keep.append(out.numpy())
                    return tuple(v.numpy() for v in state)
        self._run = self._stream = run

    _results_stream = FastrnnWorkload._results_stream

    def _build_ragged(self):
        torch = self.torch
        pack = torch.nn.utils.rnn.pack_padded_sequence
        unpack = torch.nn.utils.rnn.pad_packed_sequence
        lstm = self._module().eval()
        batches = [(torch.from_numpy(x), torch.from_numpy(n)) for x, n in self.data["batches"]]

        def run(keep=None):
            with torch.inference_mode():
                for x, n in batches:
                    packed, (h, c) = lstm(pack(x, n, enforce_sorted=False))
                    out, _ = unpack(packed, total_length=x.shape[0])
                    if keep is not None:
                        keep.append((out.numpy(), h[0].numpy(), c[0].numpy()))
        self._run = self._ragged = run

    _results_ragged = FastrnnWorkload._results_ragged


# -- onnxruntime -----------------------------------------------------------------------------
class OnnxruntimeWorkload(Workload):
    """A row in onnxruntime, on the model ``fastrnn.onnx.export`` writes of the reference layer."""

    def __init__(self, row, engine, threads=1):
        super().__init__(row, engine)
        self.threads = threads
        getattr(self, "_build_" + row.kind)()

    def __call__(self):
        self._run()

    def _session(self):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        self.session_options = so
        return ort.InferenceSession(onnx_model(self.row, **_onnx_export_args(self.row)), so,
                                    providers=["CPUExecutionProvider"])

    def _build_kernel(self):
        sess = self._session()
        feed = {"input": self.data["x"]}
        self._run = lambda: sess.run(None, feed)

    _build_variant = _build_kernel

    def _build_step(self):
        sess, d = self._session(), self.data
        feed = {"input": d["x"], "h": d["h0"]}
        if self.row.cell == "lstm":
            feed["c"] = d["c0"]
        self._run = lambda: sess.run(None, feed)

    def results(self):
        got = self._run()
        if self.row.kind in ("kernel", "step", "variant"):
            names = (("out",) if self.row.kind != "step" else ()) + ("h_n", "c_n")
            return _collect(**dict(zip(names, got)))
        return getattr(self, "_results_" + self.row.kind)()

    def _build_stream(self):
        s, variant, x = self.row.shape, self.row.variant, self.data["x"]
        if variant == "cell":
            sess, xs, names = self._session(), list(x), ("h_1", "c_1")

            def run(keep=None):
                h = c = np.zeros((1, s.H), DTYPE)
                for xt in xs:
                    h, c = sess.run(names, {"input": xt, "h": h, "c": c})
                    if keep is not None:
                        keep.append(h)
                return h, c
        else:
            k = STREAM_VARIANTS[variant]
            sess = self._session()
            chunks = [x[t:t + k] for t in range(0, len(x), k)]

            def run(keep=None):
                h = c = np.zeros((1, 1, s.H), DTYPE)
                for xt in chunks:
                    out, h, c = sess.run(None, {"input": xt, "h0": h, "c0": c})
                    if keep is not None:
                        keep.append(out)
                return h, c
        self._run = self._stream = run

    _results_stream = FastrnnWorkload._results_stream

    def _build_ragged(self):
        sess = self._session()
        batches = [(x, n.astype(np.int32)) for x, n in self.data["batches"]]

        def run(keep=None):
            for x, n in batches:
                out, h, c = sess.run(None, {"input": x, "lengths": n})
                if keep is not None:
                    keep.append((out, h[0], c[0]))
        self._run = self._ragged = run

    _results_ragged = FastrnnWorkload._results_ragged


# -- JAX -------------------------------------------------------------------------------------
class JaxWorkload(Workload):
    """A kernel row in JAX: ``jit`` over ``lax.scan``, PyTorch's equations and weights."""

    def __init__(self, row, engine):
        import jax
        import jax.numpy as jnp
        super().__init__(row, engine)
        cell, lstm = row.cell, row.cell == "lstm"
        params = {k: jnp.asarray(v) for k, v in reference_weights(row._replace(kind="kernel")).items()}
        x, dout = jnp.asarray(self.data["x"]), jnp.asarray(self.data["dout"])
        B, H = row.shape.B, row.shape.H

        def step(carry, xp, w_hh, b_hh):
            h = carry[0]
            hp = h @ w_hh.T + b_hh
            if cell == "rnn":
                h = jnp.tanh(xp + hp)
                return (h,), h
            if cell == "gru":
                xr, xz, xn = jnp.split(xp, 3, axis=-1)
                hr, hz, hn = jnp.split(hp, 3, axis=-1)
                r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
                n = jnp.tanh(xn + r * hn)
                h = (1 - z) * n + z * h
                return (h,), h
            i, f, g, o = jnp.split(xp + hp, 4, axis=-1)
            c = jax.nn.sigmoid(f) * carry[1] + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        def forward(p, x):
            xp = x @ p["weight_ih_l0"].T + p["bias_ih_l0"]          # hoisted: one GEMM
            init = tuple(jnp.zeros((B, H), x.dtype) for _ in range(2 if lstm else 1))
            final, out = jax.lax.scan(lambda c, xt: step(c, xt, p["weight_hh_l0"], p["bias_hh_l0"]),
                                      init, xp)
            return out, final

        def loss(p, x):
            out, _ = forward(p, x)
            return jnp.sum(out * dout)

        if row.pass_ == "infer":
            fn = jax.jit(forward)
            self._run = lambda: jax.block_until_ready(fn(params, x))
        else:
            fn = jax.jit(jax.grad(loss, argnums=(0, 1)))
            self._run = lambda: jax.block_until_ready(fn(params, x))
        self._forward = jax.jit(forward)
        self._params, self._x = params, x

    def __call__(self):
        self._run()

    def results(self):
        out, final = self._forward(self._params, self._x)
        res = dict(zip(("h_n", "c_n"), (np.asarray(v)[None] for v in final)), out=np.asarray(out))
        if self.row.pass_ == "train":
            grads, dx = self._run()
            res["dx"] = np.asarray(dx)
            res.update({f"grad.{k}": np.asarray(v) for k, v in grads.items()})
        return _collect(**res)


def build(row, engine, threads=1):
    """The workload of ``row`` on ``engine`` (built, not yet called)."""
    if not ENGINES[engine].supports(row):
        raise ValueError(f"engine {engine!r} does not run {row.id}")
    if engine in FASTRNN:
        return FastrnnWorkload(row, engine)
    if engine == "torch":
        return TorchWorkload(row, engine)
    if engine == "onnxruntime":
        return OnnxruntimeWorkload(row, engine, threads)
    return JaxWorkload(row, engine)


def compare(results, reference, rtol=CHECK_RTOL):
    """Largest scaled error of ``results`` against ``reference``.

    Returns
    -------
    float
        The largest ``max|a - b| / max|b|`` over the arrays of ``reference``.

    Raises
    ------
    CheckError
        An array of ``reference`` is missing from ``results``, has another
        shape, is not finite, or is off by more than ``rtol``.  Arrays only the
        engine computes (torch's dh0 of a sequence) are not compared.
    """
    worst, problems = 0.0, []
    for key in sorted(reference):
        if key not in results:
            if key in ("dh0", "dc0"):       # peers that do not return the initial state's gradient
                continue
            problems.append(f"{key}: missing")
            continue
        a, b = results[key], reference[key]
        if a.shape != b.shape:
            problems.append(f"{key}: shape {a.shape}, reference {b.shape}")
            continue
        if not np.all(np.isfinite(a)):
            problems.append(f"{key}: not finite")
            continue
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        err = float(np.max(np.abs(a - b), initial=0.0)) / scale if scale > 0 else \
            float(np.max(np.abs(a), initial=0.0))
        worst = max(worst, err)
        if err > rtol:
            problems.append(f"{key}: max error {err:.3g} of max|reference| (bound {rtol:g})")
    if problems:
        raise CheckError("; ".join(problems))
    return worst


def check(row, engine, threads=1):
    """Check ``engine`` against the numpy reference on ``row`` (the report checks the row it
    timed, at its size: the kernels choose their threads and tiles by size, so a smaller
    check would run other paths than the timed ones; the tests, ``row.reduced()``).

    Returns
    -------
    float
        The largest scaled error.

    Raises
    ------
    CheckError
        Naming the row and the engine.
    """
    reference = FastrnnWorkload(row, REFERENCE).results()
    rtol = LOOP_CHECK_RTOL if row.kind == "loop" else CHECK_RTOL
    try:
        return compare(build(row, engine, threads).results(), reference, rtol)
    except CheckError as exc:
        raise CheckError(f"{engine} differs from the numpy reference on {row.id}: "
                         f"{exc}") from None
