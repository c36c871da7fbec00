"""Runnable workloads for the benchmark cases, and the check that guards them.

A :class:`Workload` is one case on one backend, built once (weights, inputs,
gradients of the outputs) and called many times.  Every backend of a case gets
the same weights and inputs: fastrnn modules are seeded identically (their
initialisation does not depend on the backend) and the torch peer loads the
fastrnn weights through ``load_state_dict``.

:class:`Checker` compares a backend's results with the numpy reference before
anything is timed, so a wrong kernel cannot produce a benchmark number.
"""

from collections import OrderedDict

import numpy as np

from .cases import PEER, REFERENCE

#: seed of the weights and the inputs of every workload
SEED = 0
#: dtype of every benchmark
DTYPE = np.float32
#: a result is wrong when max|result - reference| > CHECK_RTOL * max|reference|
CHECK_RTOL = 1e-3


class CheckError(AssertionError):
    """A backend's results differ from the numpy reference: its timings would be meaningless."""


def _fastrnn_class(cell, step):
    import fastrnn
    if step:
        return {"rnn": fastrnn.RNNCell, "lstm": fastrnn.LSTMCell, "gru": fastrnn.GRUCell}[cell]
    return {"rnn": fastrnn.RNN, "lstm": fastrnn.LSTM, "gru": fastrnn.GRU}[cell]


def _inputs(case, shape):
    """Inputs and output gradients of a case, the same for every backend."""
    rng = np.random.default_rng(SEED + 1)
    s = shape
    if s.step:
        data = {"x": rng.standard_normal((s.B, s.I)), "h0": rng.standard_normal((s.B, s.H)),
                "dh": rng.standard_normal((s.B, s.H))}
        if case.cell == "lstm":
            data["c0"] = rng.standard_normal((s.B, s.H))
            data["dc"] = rng.standard_normal((s.B, s.H))
    else:
        data = {"x": rng.standard_normal((s.T, s.B, s.I)),
                "dout": rng.standard_normal((s.T, s.B, s.H))}
    return {k: np.ascontiguousarray(v, dtype=DTYPE) for k, v in data.items()}


def reference_weights(case):
    """The weights every backend of ``case`` runs with, as a name -> array dict."""
    cls = _fastrnn_class(case.cell, case.shape.step)
    return cls(case.shape.I, case.shape.H, dtype=DTYPE, backend=REFERENCE, seed=SEED).state_dict()


class Workload:
    """One case on one backend, ready to be called.

    ``Workload(case, backend)`` builds a :class:`TorchWorkload` for the torch
    peer and a :class:`FastrnnWorkload` for a fastrnn backend.

    Parameters
    ----------
    case : fastrnn.bench.cases.Case
    backend : str
        A fastrnn backend name, or ``"torch"``.
    steps : int, optional
        Cut the sequence length to ``min(T, steps)`` (cheaper checks).

    Attributes
    ----------
    shape : Shape
        The shape actually run (``case.shape`` unless ``steps`` cut it).
    """

    def __new__(cls, case, backend, steps=None):
        if cls is Workload:
            cls = TorchWorkload if backend == PEER else FastrnnWorkload
        return super().__new__(cls)

    def __init__(self, case, backend, steps=None):
        self.case, self.backend = case, backend
        self.shape = case.shape.with_steps(steps)
        self.data = _inputs(case, self.shape)

    def __call__(self):
        """Run the pass once (what is timed)."""
        raise NotImplementedError

    def results(self):
        """Run the pass once and return everything it computes.

        Returns
        -------
        dict
            name -> float64 ndarray: ``out`` (sequences), ``h_n`` (and
            ``c_n`` for LSTM), and for ``train`` also ``dx``, ``dh0``
            (``dc0``) where the backend computes them and ``grad.<param>``
            for every parameter.
        """
        raise NotImplementedError


class FastrnnWorkload(Workload):
    """A fastrnn layer (or cell) on one of fastrnn's backends."""

    def __init__(self, case, backend, steps=None):
        super().__init__(case, backend, steps)
        s = self.shape
        self.module = _fastrnn_class(case.cell, s.step)(s.I, s.H, dtype=DTYPE, backend=backend,
                                                          seed=SEED)
        self.module.train(case.pass_ == "train")
        d, m = self.data, self.module
        lstm = case.cell == "lstm"
        if s.step:
            hx = (d["h0"], d["c0"]) if lstm else d["h0"]
            if case.pass_ == "infer":
                self._run = lambda: m(d["x"], hx)
            elif lstm:
                def run():
                    m(d["x"], hx)
                    return m.backward(d["dh"], d["dc"])
                self._run = run
            else:
                def run():
                    m(d["x"], hx)
                    return m.backward(d["dh"])
                self._run = run
        elif case.pass_ == "infer":
            self._run = lambda: m(d["x"])
        else:
            def run():
                m(d["x"])
                return m.backward(d["dout"])
            self._run = run

    def __call__(self):
        self._run()

    def results(self):
        d, m, lstm = self.data, self.module, self.case.cell == "lstm"
        m.zero_grad()
        res = {}
        if self.shape.step:
            hy = m(d["x"], (d["h0"], d["c0"]) if lstm else d["h0"])
            hy = hy if lstm else (hy,)
        else:
            res["out"], hy = m(d["x"])
            hy = hy if lstm else (hy,)
        res.update(zip(("h_n", "c_n"), hy))
        if self.case.pass_ == "train":
            if self.shape.step:
                dx, dh0 = m.backward(d["dh"], d["dc"]) if lstm else m.backward(d["dh"])
            else:
                dx, dh0 = m.backward(d["dout"])
            res["dx"] = dx
            res.update(zip(("dh0", "dc0"), dh0 if lstm else (dh0,)))
            res.update({f"grad.{k}": g for k, g in m.grads.items()})
        return {k: np.array(v, dtype=np.float64) for k, v in res.items()}


class TorchWorkload(Workload):
    """The PyTorch peer (``nn.RNN/LSTM/GRU`` or ``nn.LSTMCell/GRUCell``) with fastrnn's weights.

    Inference runs with ``requires_grad`` off on the parameters (no graph,
    no context manager in the timed call); training clears the gradients
    (``grad = None``, as ``zero_grad()`` does) and backpropagates the output
    gradient to the parameters and to the input.
    """

    def __init__(self, case, backend, steps=None):
        import torch
        super().__init__(case, backend, steps)
        s, lstm = self.shape, case.cell == "lstm"
        nn = torch.nn
        if s.step:
            cls = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[case.cell]
        else:
            cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[case.cell]
        m = cls(s.I, s.H).float()
        m.load_state_dict({k: torch.from_numpy(v) for k, v in reference_weights(case).items()})
        train = case.pass_ == "train"
        m.train(train)
        for p in m.parameters():
            p.requires_grad_(train)
        self.module = m
        t = {k: torch.from_numpy(v) for k, v in self.data.items()}
        self.tensors = t
        params = list(m.parameters())
        if s.step:
            leaves = [t["x"], t["h0"]] + ([t["c0"]] if lstm else [])
            for leaf in leaves:
                leaf.requires_grad_(train)
            hx = (t["h0"], t["c0"]) if lstm else t["h0"]
            grads_out = (t["dh"], t["dc"]) if lstm else (t["dh"],)

            def run():
                for v in params + leaves:
                    v.grad = None
                hy = m(t["x"], hx)
                torch.autograd.backward(hy if lstm else (hy,), grads_out)
                return hy
            self._run = run if train else (lambda: m(t["x"], hx))
        else:
            t["x"].requires_grad_(train)

            def run():
                for v in params:
                    v.grad = None
                t["x"].grad = None
                out, hy = m(t["x"])
                out.backward(t["dout"])
                return out, hy
            self._run = run if train else (lambda: m(t["x"]))

    def __call__(self):
        self._run()

    def results(self):
        lstm, s = self.case.cell == "lstm", self.shape
        res = {}
        got = self._run()
        if s.step:
            hy = got if lstm else (got,)
        else:
            res["out"], hy = got
            hy = hy if lstm else (hy,)  # (1, B, H), like fastrnn's
        res.update(zip(("h_n", "c_n"), hy))
        if self.case.pass_ == "train":
            res["dx"] = self.tensors["x"].grad
            if s.step:
                res["dh0"] = self.tensors["h0"].grad
                if lstm:
                    res["dc0"] = self.tensors["c0"].grad
            res.update({f"grad.{k}": p.grad for k, p in self.module.named_parameters()})
        return {k: v.detach().numpy().astype(np.float64) for k, v in res.items()}


def compare(results, reference, rtol=CHECK_RTOL):
    """Largest scaled error of ``results`` against ``reference``.

    Parameters
    ----------
    results, reference : dict
        As returned by :meth:`Workload.results`.
    rtol : float
        Bound on ``max|a - b| / max|b|`` per array.

    Returns
    -------
    float
        The largest scaled error over the arrays both dicts have.

    Raises
    ------
    CheckError
        An array is missing from ``results`` (outputs and, for a training
        pass, ``dx`` and every parameter gradient are required), has another
        shape, is not finite, or is off by more than ``rtol``.
    """
    required = [k for k in reference if k in ("out", "h_n", "c_n", "dx") or k.startswith("grad.")]
    missing = [k for k in required if k not in results]
    if missing:
        raise CheckError(f"results lack {missing}")
    worst, problems = 0.0, []
    for key in sorted(set(results) & set(reference)):
        a, b = results[key], reference[key]
        if a.shape != b.shape:
            problems.append(f"{key}: shape {a.shape}, reference {b.shape}")
            continue
        if not np.all(np.isfinite(a)):
            problems.append(f"{key}: not finite")
            continue
        scale = float(np.max(np.abs(b))) if b.size else 0.0
        err = float(np.max(np.abs(a - b))) / scale if scale > 0 else float(np.max(np.abs(a), initial=0.0))
        worst = max(worst, err)
        if err > rtol:
            problems.append(f"{key}: max error {err:.3g} of max|reference| (bound {rtol:g})")
    if problems:
        raise CheckError("; ".join(problems))
    return worst


class Checker:
    """Checks backends against the numpy reference, computing each reference once.

    Parameters
    ----------
    rtol : float
        See :func:`compare`.
    keep : int
        How many reference results to keep (the most recently used ones):
        the backends of one case are checked one after the other, and the
        results of a large case take tens of megabytes.
    """

    def __init__(self, rtol=CHECK_RTOL, keep=2):
        self.rtol = rtol
        self.keep = keep
        self._reference = OrderedDict()

    def reference(self, case, steps=None):
        """The numpy reference's results for ``case`` (cut to ``steps`` time steps), cached."""
        key = (case, case.shape.with_steps(steps))
        if key in self._reference:
            self._reference.move_to_end(key)
        else:
            self._reference[key] = Workload(case, REFERENCE, steps).results()
            while len(self._reference) > self.keep:
                self._reference.popitem(last=False)
        return self._reference[key]

    def check(self, case, backend, steps=None, workload=None):
        """Check one backend on one case.

        Parameters
        ----------
        case : Case
        backend : str
        steps : int, optional
            Check on the sequence cut to this many steps (same B, I, H).
        workload : Workload, optional
            An already built workload of this case and backend at that
            length; it is run once (which also warms it up).

        Returns
        -------
        float
            The largest scaled error (0.0 for the reference itself).

        Raises
        ------
        CheckError
            With the case and backend named.
        """
        if backend == REFERENCE:
            return 0.0
        ref = self.reference(case, steps)
        w = workload if workload is not None else Workload(case, backend, steps)
        try:
            return compare(w.results(), ref, self.rtol)
        except CheckError as exc:
            raise CheckError(f"{backend} differs from the numpy reference on {case.group} "
                             f"(T={w.shape.T}): {exc}") from None
