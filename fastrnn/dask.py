"""Dask: batch inference over chunked arrays and synchronous data-parallel training.

Needs dask (``pip install "fastrnn[dask]"``: dask[array] and distributed); ``import fastrnn``
does not import this module, nor dask.

:func:`predict`
    A fastrnn layer (``RNN``/``LSTM``/``GRU``) or a fitted ``fastrnn.sklearn`` estimator
    applied to a dask array chunked along its batch axis, one task per chunk.  A snapshot of
    the model (a deep copy in evaluation mode, taken at the call) is one key of the graph that
    every chunk's task depends on: it travels to each worker once, not with every chunk.  Each
    chunk's result is bit for bit that of the same model called on that chunk in one process
    (``model(chunk)``, or ``estimator.predict_proba(chunk)``, ...).

:class:`DataParallel`
    Synchronous mini-batch training: the driver holds the modules and the optimizer; each
    :meth:`~DataParallel.step` splits the global batch into shards (one per worker), each
    worker computes the gradients of its shard on a copy of the current weights, the partial
    results are summed by a tree of tasks, the driver applies the optimizer, and the new
    weights go to every worker (``scatter(..., broadcast=True)``) for the next step.

On a ``distributed`` worker, every task of this module first sets fastrnn's threads
(``fastrnn.set_num_threads``) to the worker's ``nthreads``.
"""

import contextlib
import copy
import math
import numbers
import sys
import threading
import time
import uuid

import numpy as np

try:
    import dask
except ImportError as exc:
    raise ImportError(f"fastrnn.dask needs dask, which is not installed ({exc}): "
                      f"pip install 'fastrnn[dask]'") from exc
import dask.array as da

from . import _runtime
from .layers import RNNBase
from .module import Module

__all__ = ["predict", "DataParallel"]

_ESTIMATOR_METHODS = ("predict", "predict_proba", "predict_log_proba")


# -- workers ----------------------------------------------------------------------------------------
_held = {"tasks": 0, "saved": None}    # tasks of workers without a process of their own
_held_lock = threading.Lock()


def _forget_after_fork():
    """In a child made by fork, no task runs: the lock anew, the driver's count back."""
    global _held_lock
    _held_lock = threading.Lock()
    if _held["tasks"]:
        _held["tasks"] = 0
        _runtime.set_num_threads(_held["saved"])


_runtime.after_fork(_forget_after_fork)


@contextlib.contextmanager
def _worker_threads():
    """On a distributed worker, fastrnn's thread count at most the worker's ``nthreads``
    during the task.  A worker started by a nanny has a process of its own and keeps the
    setting; one without (``LocalCluster(processes=False)``, whose workers are threads of the
    driver's process) gets the driver's count back when its last running task ends.
    Elsewhere (the local threaded scheduler, the driver) nothing changes."""
    distributed = sys.modules.get("distributed")
    worker = None
    if distributed is not None:
        try:
            worker = distributed.get_worker()
        except ValueError:   # not inside a worker's task
            pass
    if worker is None:
        yield
        return
    # (Worker.state.nthreads first: distributed 2024 warns at Worker.nthreads, which moved)
    n = max(1, int(getattr(getattr(worker, "state", None), "nthreads", None) or worker.nthreads))
    if getattr(worker, "nanny", None):
        if _runtime.get_num_threads() != n:
            _runtime.set_num_threads(n)
        yield
        return
    with _held_lock:
        if _held["tasks"] == 0:
            _held["saved"] = _runtime.get_num_threads()
            _runtime.set_num_threads(min(n, _held["saved"]))
        _held["tasks"] += 1
    try:
        yield
    finally:
        with _held_lock:
            if _held["tasks"] > 0:   # (0: a child made by fork in the task, which forgot it)
                _held["tasks"] -= 1
                if _held["tasks"] == 0:
                    _runtime.set_num_threads(_held["saved"])


def _client(client):
    """The distributed client to use: ``client``, or the default one when distributed is
    imported and a client exists; None for the local schedulers (and for ``client=False``)."""
    if client is False:
        return None
    if client is not None:
        from distributed import Client
        if not isinstance(client, Client):
            raise TypeError(f"client must be a distributed.Client, None or False, but got "
                            f"{type(client).__name__}")
        return client
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None
    try:
        return distributed.default_client()
    except ValueError:
        return None


# -- inference ----------------------------------------------------------------------------------------
def _is_estimator(model):
    est = sys.modules.get("fastrnn.sklearn")    # only if imported: it imports scikit-learn
    return est is not None and isinstance(model, est._RNNEstimator)


@_worker_threads()
def _predict_block(model, method, batch_size, batch_axis, offset, x, lengths):
    """One chunk's prediction (run on a worker), in slices of ``batch_size`` sequences; the
    chunk's first sequence is sequence ``offset`` of X (an error names the chunk's)."""
    n = x.shape[batch_axis]
    step = n if batch_size is None else batch_size
    outs = []
    for start in range(0, max(n, 1), max(step, 1)):
        sl = [slice(None)] * x.ndim
        sl[batch_axis] = slice(start, start + step)
        xb = x[tuple(sl)]
        lb = None if lengths is None else lengths[start:start + step]
        try:
            if method is None:
                out, _ = model(xb, lengths=lb)
            else:
                out = getattr(model, method)(xb, lengths=lb)
        except ValueError as exc:
            first = offset + start
            last = first + (xb.shape[batch_axis] - 1)
            raise ValueError(f"sequences {first} to {last} of X: {exc}") from exc
        outs.append(out)
    return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=batch_axis)


def _check_batch_size(batch_size):
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise TypeError(f"batch_size must be a positive int or None, but got "
                        f"{type(batch_size).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or None, but got {batch_size}")
    return int(batch_size)


def _output_spec(model, method, X):
    """(batch axis, output shape without the batch axis as a list with None at the batch axis,
    output dtype) of ``model`` on ``X``, checking X against the model."""
    if method is None:
        if X.ndim != 3:
            layout = "(B, T, I)" if model.batch_first else "(T, B, I)"
            raise ValueError(f"X must be a 3-D dask array {layout} for this layer, but got "
                             f"shape {X.shape}")
        if X.shape[2] != model.input_size:
            raise ValueError(f"X must have input_size={model.input_size} features on its last "
                             f"axis, but got shape {X.shape}")
        width = model.num_directions * (model.proj_size or model.hidden_size)
        if model.batch_first:
            return 0, [None, X.shape[1], width], np.dtype(model.dtype)
        return 1, [X.shape[0], None, width], np.dtype(model.dtype)
    if X.ndim not in (2, 3):
        raise ValueError(f"X must be a 3-D dask array (N, T, F) or a 2-D one (N, T) for "
                         f"{type(model).__name__}, but got shape {X.shape}")
    features = 1 if X.ndim == 2 else X.shape[2]
    if features != model.n_features_in_:
        raise ValueError(f"X has {features} features, but {type(model).__name__} is expecting "
                         f"{model.n_features_in_} features as input")
    if hasattr(model, "classes_"):
        if method == "predict":
            return 0, [None], model.classes_.dtype
        return 0, [None, len(model.classes_)], np.dtype(np.float64)
    if method != "predict":
        raise ValueError(f"method must be 'predict' for {type(model).__name__}, but got "
                         f"{method!r}")
    k = model.head_.out_features
    return 0, ([None] if model._y_ndim == 1 else [None, k]), np.dtype(np.float64)


def predict(model, X, lengths=None, *, batch_size=None, method=None):
    """Batch inference of ``model`` over the dask array ``X``, one task per chunk.

    Parameters
    ----------
    model : fastrnn.RNN / LSTM / GRU, or a fitted fastrnn.sklearn estimator
        A deep copy in evaluation mode is taken now: training ``model`` afterwards does not
        change the result.  It is one key of the graph, shared by every chunk's task.
    X : dask.array.Array
        Time-major (T, B, I) for a layer, (B, T, I) for a ``batch_first`` one, (N, T, F) or
        (N, T) for an estimator.  Chunks along the batch axis make the tasks; chunks along
        the other axes are merged first (a sequence is one task's work).
    lengths : None, numpy or dask array of ints, shape (B,)
        The valid steps of each sequence; rechunked as X's batch axis.
    batch_size : int, optional
        Each task runs its chunk in slices of this many sequences (memory of the forward);
        by default the whole chunk in one call.
    method : str, optional
        For an estimator: ``"predict"`` (default), ``"predict_proba"`` or
        ``"predict_log_proba"``.  Must be None for a layer (the output ``out`` is returned;
        the final states are not).

    Returns
    -------
    dask.array.Array
        A layer's ``out``, (T, B, D*H_out) or (B, T, D*H_out) in the layer's dtype; an
        estimator's predictions, (N,) or (N, k).  Chunked as X along the batch axis.
        Each chunk equals, bit for bit, the same call on that chunk in one process (with
        ``batch_size``, the calls on its slices).  Against one call on the whole batch the
        compiled cython backend and the numpy one may differ in the last bits (BLAS products
        of other shapes); a layer on the numba backend gives the same bits (an estimator's
        output head may not: it takes NumPy's product for fewer than 32 sequences).
    """
    if isinstance(model, RNNBase):
        if method is not None:
            raise ValueError(f"method must be None for a layer ({type(model).__name__}), "
                             f"but got {method!r}")
    elif _is_estimator(model):
        from sklearn.utils.validation import check_is_fitted
        if method is None:
            method = "predict"
        if method not in _ESTIMATOR_METHODS or not hasattr(model, method):
            allowed = [m for m in _ESTIMATOR_METHODS if hasattr(model, m)]
            raise ValueError(f"method must be one of {allowed} for {type(model).__name__}, "
                             f"but got {method!r}")
        check_is_fitted(model)
    else:
        raise TypeError(f"model must be a fastrnn RNN, LSTM or GRU layer or a fastrnn.sklearn "
                        f"estimator, but got {type(model).__name__}")
    if not isinstance(X, da.Array):
        raise TypeError(f"X must be a dask array (dask.array.from_array(x, chunks=...)), but "
                        f"got {type(X).__name__}")
    layer = isinstance(model, RNNBase)     # (a layer refuses integers too)
    if X.dtype.kind not in ("f" if layer else "fiu"):
        kind = " of a floating-point dtype for a layer" if layer else ""
        raise TypeError(f"X must hold real numbers{kind}, but got dtype {X.dtype}")
    if any(math.isnan(s) for s in X.shape):
        raise ValueError(f"X must have known chunk sizes (X.compute_chunk_sizes()), but got "
                         f"shape {X.shape}")
    batch_size = _check_batch_size(batch_size)
    batch_axis, out_shape, out_dtype = _output_spec(model, method, X)
    X = X.rechunk({ax: -1 for ax in range(X.ndim) if ax != batch_axis})
    bchunks = X.chunks[batch_axis]
    n = X.shape[batch_axis]

    if lengths is not None:
        if isinstance(lengths, da.Array):
            lens = lengths
        else:
            try:
                arr = np.asarray(lengths)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"lengths must be an array-like of ints, one per sequence, but "
                                f"could not be converted: {exc}") from None
            lens = da.from_array(arr, chunks=-1)
        if lens.dtype.kind not in "iu":
            raise TypeError(f"lengths must be ints, but got dtype {lens.dtype}")
        if lens.shape != (n,):
            raise ValueError(f"lengths must have shape ({n},), one per sequence of X, but got "
                             f"shape {lens.shape}")
        if not isinstance(lengths, da.Array):     # checked here: positions of the whole X
            T = X.shape[1 if batch_axis == 0 else 0]
            bad = np.flatnonzero((arr < 1) | (arr > T))
            if bad.size:
                raise ValueError(f"lengths must be between 1 and the sequence length {T} of X, "
                                 f"but lengths[{bad[0]}] = {arr[bad[0]]} ({bad.size} such)")
        lens = lens.rechunk((bchunks,))
        # (unoptimised: optimising renames nothing but changes the tasks of the user's own
        # keys, which distributed then warns about when the user computes them)
        lens_blocks = lens.to_delayed(optimize_graph=False).ravel()
    else:
        lens_blocks = [None] * len(bchunks)

    snapshot = copy.deepcopy(model)
    if method is None:
        snapshot.eval()
    model_key = f"fastrnn-model-{uuid.uuid4().hex}"
    model_d = dask.delayed(snapshot, name=model_key, pure=False)
    run = dask.delayed(_predict_block, pure=True)
    x_blocks = X.to_delayed(optimize_graph=False).ravel()
    meta = np.empty((0,) * len(out_shape), dtype=out_dtype)
    parts = []
    offsets = np.cumsum((0,) + bchunks[:-1])
    for xb, lb, size, offset in zip(x_blocks, lens_blocks, bchunks, offsets):
        shape = tuple(size if s is None else s for s in out_shape)
        task = run(model_d, method, batch_size, batch_axis, int(offset), xb, lb,
                   dask_key_name=f"fastrnn-predict-{model_key[14:]}-{len(parts)}")
        parts.append(da.from_delayed(task, shape=shape, dtype=out_dtype, meta=meta))
    return da.concatenate(parts, axis=batch_axis)


# -- data-parallel training ---------------------------------------------------------------------------
def _named(modules):
    """dict name -> Module of ``modules`` (one Module: the name ``""``)."""
    if isinstance(modules, Module):
        return {"": modules}
    if hasattr(modules, "items") and callable(modules.items):
        named = {str(k): m for k, m in modules.items()}
        if not named:
            raise ValueError("modules must not be empty")
        for k, m in named.items():
            if not isinstance(m, Module):
                raise TypeError(f"modules[{k!r}] must be a fastrnn Module, but got "
                                f"{type(m).__name__}")
        return named
    raise TypeError(f"modules must be a fastrnn Module or a dict name -> Module, but got "
                    f"{type(modules).__name__}")


@_worker_threads()
def _shard_task(template, weights, seeds, loss_and_grad, combine, n, arrays):
    """One shard's share (run on a worker): the gradients of ``loss_and_grad`` on a copy of the
    modules holding ``weights``, each drawing its dropout masks from a generator of its entry
    of ``seeds`` (one of its own for each step and shard), as (grads, loss, weight, seconds);
    with ``combine == "mean"`` the gradients and the loss are multiplied by the weight (the
    shard's ``n`` samples, or the weight ``loss_and_grad`` returned)."""
    t0 = time.perf_counter()
    modules = copy.deepcopy(template)   # the tasks of one worker may share the template
    for name, m in modules.items():
        m.load_state_dict(weights[name])
        m._rng = np.random.default_rng(seeds[name])
        m.zero_grad()
        m.train()
    result = loss_and_grad(modules[""] if list(modules) == [""] else modules, *arrays)
    if isinstance(result, tuple) and len(result) == 2:
        loss, weight = _number(result[0], "the loss"), _number(result[1], "the weight")
    elif isinstance(result, tuple):
        raise ValueError(f"loss_and_grad must return the loss or (loss, weight), but "
                         f"returned a tuple of {len(result)}")
    else:
        loss, weight = _number(result, "the loss"), float(n)
    grads = {}
    for name, m in modules.items():
        for p, g in m.grads.items():
            grads[(name, p)] = g * weight if combine == "mean" else g.copy()
    if combine == "mean":
        loss *= weight
    return grads, loss, weight, time.perf_counter() - t0


def _number(value, what):
    """A real number loss_and_grad returned, as a float."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"loss_and_grad must return the loss or (loss, weight), real numbers, "
                        f"but {what} is {type(value).__name__} {value!r:.60}") from None


def _add(a, b):
    """The sum of two shards' partial results (a tree of these reduces them)."""
    ga, la, wa, sa = a
    gb, lb, wb, sb = b
    for k, g in gb.items():
        ga[k] = ga[k] + g
    return ga, la + lb, wa + wb, max(sa, sb)


def _tree(parts, add):
    while len(parts) > 1:
        nxt = [add(parts[i], parts[i + 1]) for i in range(0, len(parts) - 1, 2)]
        if len(parts) % 2:
            nxt.append(parts[-1])
        parts = nxt
    return parts[0]


class DataParallel:
    """Synchronous data-parallel mini-batch training with dask.

    Parameters
    ----------
    modules : Module or dict name -> Module
        The model, held by the driver (e.g. ``{"rnn": lstm, "head": head}``).
    optimizer : fastrnn.train.Optimizer
        Built over the same modules (``Adam(modules, lr=...)``): it updates their parameters.
    loss_and_grad : callable ``loss_and_grad(modules, *shard) -> loss or (loss, weight)``
        Runs on a worker: a training-mode forward of its copy of ``modules`` (the same
        structure: one Module or the dict) on the shard's arrays, the loss and the backward,
        which accumulates the gradients into the copy's ``grads`` (zeroed before).  It must
        be picklable (a module-level function) on a distributed cluster.
    batch_axes : int or sequence of ints, default 0
        The batch axis of each array given to :meth:`step` (1 for a time-major input).
    combine : ``"mean"`` (default) or ``"sum"``
        How the shards' gradients make the global one.  ``"mean"``: ``loss_and_grad``
        returns the *mean* loss over its shard of n_k samples, and the step's gradient is
        ``sum_k w_k g_k / sum_k w_k`` with ``w_k = n_k`` (or the weight it returns, e.g. the
        number of unmasked tokens): the gradient of the mean loss over the global batch.
        ``"sum"``: it returns a *sum* of per-sample losses and the gradient is
        ``sum_k g_k``.  Either way the result is the one-process gradient of the global batch
        up to the rounding of the summation order.
    clip_norm : float, optional
        ``clip_grad_norm`` of the combined gradients, on the driver, before the update.
    client : distributed.Client, None or False
        None (default): the current client if there is one, otherwise the local dask
        scheduler (``dask.compute``); False: the local scheduler in any case.
    n_shards : int, optional
        Shards per step; by default the client's number of workers (else the CPU count).

    Each :meth:`step` scatters the current weights to every worker once
    (``broadcast=True``) and the shards one to a worker, runs one task per shard, sums the
    partial results with a tree of tasks, gathers that sum, applies the optimizer on the
    driver.  The structure of the modules is scattered once, at the first step, and again
    when a module's settings changed (dropout, the backend: what ``get_config`` holds) or
    the cluster lost it (a restart, a worker gone with the only copy).  Dropout masks
    are drawn from a generator of each step and shard, seeded from the driver's modules'
    generators (reproducible for a given ``seed``, but not the masks of one-process training).
    """

    def __init__(self, modules, optimizer, loss_and_grad, *, batch_axes=0, combine="mean",
                 clip_norm=None, client=None, n_shards=None):
        from .train.optim import Optimizer
        self._named = _named(modules)
        self.modules = modules
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fastrnn.train Optimizer, but got "
                            f"{type(optimizer).__name__}")
        live = {id(p): id(m.grads[k]) for m in self._named.values()
                for k, p in m.parameters().items()}
        held = {id(p): id(optimizer.grads[k]) for k, p in optimizer.params.items()}
        if not live.keys() <= held.keys():
            raise ValueError("optimizer must update the parameters of modules (build it as "
                             "Adam(modules, ...)), but some of their parameters are not its own")
        if not held.keys() <= live.keys():
            # a step writes only the modules' gradients: the others' would be applied stale
            extra = sorted(k for k, p in optimizer.params.items() if id(p) not in live)
            raise ValueError(f"optimizer must update only the parameters of modules (build it "
                             f"as Adam(modules, ...)), but it also updates {extra}")
        if any(held[p] != g for p, g in live.items()):
            # each step writes the combined gradients into the modules' grads: an optimizer
            # reading arrays of its own would never see them
            raise ValueError("optimizer must read the gradients of modules (build it as "
                             "Adam(modules, ...)), but some of its gradient arrays are not the "
                             "modules' grads")
        self.optimizer = optimizer
        if not callable(loss_and_grad):
            raise TypeError(f"loss_and_grad must be callable, but got "
                            f"{type(loss_and_grad).__name__}")
        self.loss_and_grad = loss_and_grad
        if isinstance(batch_axes, numbers.Integral) and not isinstance(batch_axes, bool):
            self.batch_axes = int(batch_axes)
        elif isinstance(batch_axes, (list, tuple)) and all(
                isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in batch_axes):
            self.batch_axes = tuple(int(a) for a in batch_axes)
        else:
            raise TypeError(f"batch_axes must be an int or a sequence of ints, but got "
                            f"{batch_axes!r}")
        if combine not in ("mean", "sum"):
            raise ValueError(f"combine must be 'mean' or 'sum', but got {combine!r}")
        self.combine = combine
        if clip_norm is not None:
            if isinstance(clip_norm, bool) or not isinstance(clip_norm, numbers.Real) or not (
                    clip_norm > 0 and math.isfinite(clip_norm)):
                raise ValueError(f"clip_norm must be a positive number or None, but got "
                                 f"{clip_norm!r}")
        self.clip_norm = clip_norm
        self.client = _client(client)
        if n_shards is None:
            if self.client is not None:
                # (every worker: scheduler_info() lists the first 5 alone in distributed
                # 2025.4 to 2026.6)
                n_shards = max(1, len(self.client.nthreads()))
            else:
                n_shards = dask.system.CPU_COUNT
        elif isinstance(n_shards, bool) or not isinstance(n_shards, numbers.Integral):
            raise TypeError(f"n_shards must be a positive int or None, but got "
                            f"{type(n_shards).__name__}")
        elif n_shards < 1:
            raise ValueError(f"n_shards must be a positive int or None, but got {n_shards}")
        self.n_shards = int(n_shards)
        self._template = self._template_settings = None
        #: seconds of the last step: ``step`` (all of it), ``worker`` (the slowest shard's
        #: compute on its worker), ``driver`` (combining and the optimizer); the rest of
        #: ``step`` is communication and scheduling
        self.timing = {}

    def _shards(self, arrays):
        if not arrays:
            raise TypeError("step needs at least one array (the batch)")
        axes = self.batch_axes
        if isinstance(axes, int):
            axes = (axes,) * len(arrays)
        if len(axes) != len(arrays):
            raise ValueError(f"batch_axes has {len(axes)} entries but step got {len(arrays)} "
                             f"arrays")
        arrs, n = [], None
        for i, (a, ax) in enumerate(zip(arrays, axes)):
            a = np.asarray(a)
            if not -a.ndim <= ax < a.ndim:
                raise ValueError(f"batch_axes[{i}] = {ax} is out of range for array {i} of "
                                 f"shape {a.shape}")
            ax %= a.ndim
            if n is None:
                n = a.shape[ax]
            elif a.shape[ax] != n:
                raise ValueError(f"the arrays of a step must have the same batch size, but "
                                 f"array 0 has {n} and array {i} has {a.shape[ax]}")
            arrs.append((a, ax))
        if n == 0:
            raise ValueError("step got an empty batch (batch size 0)")
        bounds = np.linspace(0, n, min(self.n_shards, n) + 1).round().astype(int)
        shards = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            shard = []
            for a, ax in arrs:
                sl = [slice(None)] * a.ndim
                sl[ax] = slice(lo, hi)
                shard.append(np.ascontiguousarray(a[tuple(sl)]))
            shards.append((int(hi - lo), shard))
        return shards

    def step(self, *arrays):
        """One synchronous step on the global batch ``arrays`` (numpy arrays, split along
        ``batch_axes``); returns the global loss (the combined one)."""
        t0 = time.perf_counter()
        shards = self._shards(arrays)
        weights = {name: m.state_dict() for name, m in self._named.items()}
        # fresh dropout masks for each step and shard: generators seeded from the driver's
        # modules' own (which advance at each step, as in one process)
        base = {name: int(m._rng.integers(2 ** 63)) for name, m in self._named.items()}
        seeds = [{name: [b, k] for name, b in base.items()} for k in range(len(shards))]
        fn, combine = self.loss_and_grad, self.combine
        # the modules' structure goes to the workers once, and again when a setting changed
        # (dropout, the backend, ...: what get_config holds), as one process would run it
        settings = {name: (m.get_config(), m.backend) for name, m in self._named.items()}
        if settings != self._template_settings:
            self._template, self._template_settings = None, settings
        if self.client is not None:
            c = self.client
            if self._template is None or self._template.status != "finished":
                # a dict is scattered as one object inside a list (scatter would split a dict)
                self._template = c.scatter([copy.deepcopy(self._named)], broadcast=True,
                                           hash=False)[0]
            w = c.scatter([weights], broadcast=True, hash=False)[0]
            data = c.scatter([s for _, s in shards], hash=False)
            parts = [c.submit(_shard_task, self._template, w, sd, fn, combine, n, d, pure=False)
                     for (n, _), d, sd in zip(shards, data, seeds)]
            total = _tree(parts, lambda a, b: c.submit(_add, a, b, pure=False)).result()
        else:
            if self._template is None:
                self._template = copy.deepcopy(self._named)
            tmpl = dask.delayed(self._template, name=f"fastrnn-modules-{uuid.uuid4().hex}",
                                traverse=False)
            wd = dask.delayed(weights, name=f"fastrnn-weights-{uuid.uuid4().hex}",
                              traverse=False)
            task = dask.delayed(_shard_task, pure=False)
            parts = [task(tmpl, wd, sd, fn, combine, n, s) for (n, s), sd in zip(shards, seeds)]
            # the local scheduler, even where a default distributed client exists (client=False)
            local = {} if _client(None) is None else {"scheduler": "threads"}
            (total,) = dask.compute(_tree(parts, dask.delayed(_add, pure=False)), **local)
        t1 = time.perf_counter()
        grads, loss, weight, worker_s = total
        if combine == "mean" and weight == 0:
            raise ValueError("the weights loss_and_grad returned for the shards sum to 0: "
                             "with combine='mean' the step's gradient is a mean over no samples")
        scale = 1.0 / weight if combine == "mean" else 1.0
        for (name, p), g in grads.items():
            dst = self._named[name].grads[p]
            if scale != 1.0:
                np.multiply(g, scale, out=dst, casting="unsafe")
            else:
                dst[...] = g
        if self.clip_norm is not None:
            from .train.clip import clip_grad_norm
            clip_grad_norm(self.optimizer.grads, self.clip_norm)
        self.optimizer.step()
        t2 = time.perf_counter()
        self.timing = {"step": t2 - t0, "worker": worker_s, "driver": t2 - t1}
        return loss * scale
