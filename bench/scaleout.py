"""Scale-out rows: fastrnn on a dask ``distributed.LocalCluster`` against the same work in one
process (``python -m bench --kinds dask``; needs the ``dask`` extra).

These rows compare fastrnn with itself, spread over worker processes or not, so they have no
peer: every figure is measured in fresh processes of its own, rounds alternating between the
one process and the cluster, medians over the rounds.

* ``lstm-infer-dask``: batch inference of N sequences, ``fastrnn.dask.predict`` over X chunked
  by sequences and persisted on the workers (the last step's output gathered), against the
  same chunks called one after another in one process with all its threads; and the
  per-task overhead of the cluster (a no-op task's round trip, and per task of 200 at once).
* ``lstm-train-dask``: one step of ``fastrnn.dask.DataParallel`` (LSTM, ``Linear`` head,
  cross-entropy, Adam) at a global batch B, on 1 and on 2 workers, split into the slowest
  worker's compute, the driver's share (combining, the optimizer) and the rest
  (communication and scheduling); against the same step in one process.

A model of a step on n workers is fitted to them: ``t(n) = C / n + D + a + b n``, with C the
compute of the whole batch on one worker thread (n times the slowest shard), D the driver's
share and ``a + b n`` the communication and scheduling (the weights go to every worker and
the gradients of every shard come back, so it grows with n): C and D from the 2-worker step,
a and b from the communication at 1 and 2 workers.  The model passes through the 2-worker
step; at n = 1 it is the 2-worker shards' rate over the whole batch, which a lone worker's
larger batch beats (the measured 1-worker step is beside it in the report).  It predicts the step time and the speedup over one process at more workers, as long as
each worker has a core of its own and the network is the loopback's.
"""

import importlib
import json
import statistics
import sys
import time

import numpy as np

from .cases import Row, Shape
from .worker import emit, run_module

#: batch inference: T steps of I inputs, N sequences in chunks of INFER_CHUNK, LSTM of H units
INFER = Shape("dask", 50, 10_000, 64, 128)
INFER_CHUNK = 1_000
#: data-parallel training: T steps of I inputs, LSTM of H units, a head of CLASSES classes,
#: at each global batch of TRAIN_BATCHES
TRAIN = Shape("dask", 50, 256, 64, 128)
TRAIN_BATCHES = (256, 1024)
CLASSES = 10
#: workers of the cluster runs (1 thread each), and the workers the model predicts for
WORKERS, PREDICT = (1, 2), (1, 2, 4, 8, 16)


def rows():
    """The scale-out rows of the report."""
    return ([Row("dask", "lstm", "infer", INFER)]
            + [Row("dask", "lstm", "train", TRAIN._replace(B=b)) for b in TRAIN_BATCHES])


def available():
    """Empty when dask and distributed import, else why not."""
    try:
        for name in ("dask", "distributed"):
            importlib.import_module(name)
    except ImportError as exc:
        return f"{exc} (pip install 'fastrnn[dask]')"
    return ""


# -- the work, in a process of its own ----------------------------------------------------------
def _model(shape, seed=0):
    import fastrnn
    from fastrnn.train import Linear
    lstm = fastrnn.LSTM(shape.I, shape.H, seed=seed)
    return lstm, Linear(shape.H, CLASSES, seed=seed + 1)


def _data(shape, n, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((shape.T, n, shape.I), dtype=np.float32)
    return x, rng.integers(0, CLASSES, n)


def loss_and_grad(modules, x, labels):
    """Mean cross-entropy of the last step's logits, and the backward (a shard's work)."""
    from fastrnn.train import cross_entropy
    out, _ = modules["rnn"](x)
    loss, dlogits = cross_entropy(modules["head"](out[-1]), labels)
    dout = np.zeros_like(out)
    dout[-1] = modules["head"].backward(dlogits)
    modules["rnn"].backward(dout, input_grad=False)
    return loss


def _median_time(fn, repeats):
    fn()                                    # the first call: compiling, caches, connections
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _cluster(workers):
    import distributed
    cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       host="127.0.0.1", dashboard_address=None)
    return cluster, distributed.Client(cluster)


def _noop():
    return None


def run(spec):
    """Measure one thing described by ``spec`` (a dict) in this process; returns a dict."""
    import fastrnn
    what, shape = spec["what"], Shape(*spec["shape"])
    fastrnn.set_num_threads(spec["threads"])
    repeats = spec["repeats"]
    if what == "infer-process":
        lstm, _ = _model(shape)
        lstm.eval()
        x, _ = _data(shape, shape.B)
        chunk = spec["chunk"]

        # contiguous chunks made once, as the cluster's persisted chunks are
        chunks = [np.ascontiguousarray(x[:, lo:lo + chunk]) for lo in range(0, shape.B, chunk)]

        def infer():
            for xc in chunks:
                lstm(xc)[0][-1]
        return {"seconds": _median_time(infer, repeats)}
    if what == "infer-cluster":
        import dask.array as da
        from distributed import wait
        from fastrnn.dask import predict
        lstm, _ = _model(shape)
        x, _ = _data(shape, shape.B)
        cluster, client = _cluster(spec["workers"])
        try:
            X = da.from_array(x, chunks=(shape.T, spec["chunk"], shape.I)).persist()
            wait(X)
            seconds = _median_time(lambda: predict(lstm, X)[-1].compute(), repeats)
            trip = _median_time(lambda: client.submit(_noop, pure=False).result(), 30)
            t0 = time.perf_counter()
            client.gather(client.map(lambda i: None, range(200), pure=False))
            per_task = (time.perf_counter() - t0) / 200
        finally:
            client.close()
            cluster.close()
        return {"seconds": seconds, "round_trip": trip, "per_task": per_task}
    if what == "train-process":
        from fastrnn.train import Adam
        lstm, head = _model(shape)
        modules = {"rnn": lstm, "head": head}
        opt = Adam(modules, lr=1e-3)
        x, y = _data(shape, shape.B)

        def step():
            opt.zero_grad()
            loss_and_grad(modules, x, y)
            opt.step()
        return {"step": _median_time(step, repeats)}
    if what == "train-cluster":
        from fastrnn.dask import DataParallel
        from fastrnn.train import Adam
        lstm, head = _model(shape)
        modules = {"rnn": lstm, "head": head}
        x, y = _data(shape, shape.B)
        cluster, client = _cluster(spec["workers"])
        try:
            dp = DataParallel(modules, Adam(modules, lr=1e-3), loss_and_grad,
                              batch_axes=(1, 0), client=client)
            dp.step(x, y)
            timings = []
            for _ in range(repeats):
                dp.step(x, y)
                timings.append(dict(dp.timing))
        finally:
            client.close()
            cluster.close()
        return {k: statistics.median(t[k] for t in timings) for k in ("step", "worker", "driver")}
    raise ValueError(f"unknown measurement {what!r}")


# -- the rows, in fresh processes ---------------------------------------------------------------
def measure(row, threads, rounds=3, repeats=5, timeout=600, log=None):
    """Measure one scale-out row: {label: median over rounds of each figure, or an error}.

    ``rounds`` fresh processes per configuration, alternating between the one process and the
    cluster; ``repeats`` timed calls (steps) in each, their median its figure.
    """
    s = row.shape
    base = {"shape": list(s), "threads": threads, "repeats": repeats}
    if row.pass_ == "infer":
        configs = {"process": dict(base, what="infer-process", chunk=INFER_CHUNK)}
        configs.update({f"cluster{w}": dict(base, what="infer-cluster", workers=w, threads=1,
                                            chunk=INFER_CHUNK) for w in WORKERS})
    else:
        configs = {"process": dict(base, what="train-process")}
        configs.update({f"cluster{w}": dict(base, what="train-cluster", workers=w, threads=1)
                        for w in WORKERS})
    runs = {name: [] for name in configs}
    for r in range(rounds):
        for name in (list(configs) if r % 2 == 0 else list(configs)[::-1]):
            if log:
                log(f"{row.id}: {name}, round {r + 1} of {rounds}")
            runs[name].append(run_module("bench.scaleout", configs[name], timeout))
    out = {}
    for name, results in runs.items():
        good = [res for res in results if "error" not in res]
        if not good:
            out[name] = {"error": results[0]["error"]}
            continue
        out[name] = {k: statistics.median(res[k] for res in good) for k in good[0]}
    return out


def model(result):
    """The fitted step model of a train row's result: {C, D, a, b, predicted: {n: seconds}}, or
    None when a measurement is missing."""
    try:
        one, two, proc = result["cluster1"], result["cluster2"], result["process"]
        comm = {1: one["step"] - one["worker"] - one["driver"],
                2: two["step"] - two["worker"] - two["driver"]}
    except KeyError:
        return None
    b = comm[2] - comm[1]
    a = comm[1] - b
    C, D = 2 * two["worker"], two["driver"]
    predicted = {n: C / n + D + a + b * n for n in PREDICT}
    return {"C": C, "D": D, "a": a, "b": b, "predicted": predicted, "process": proc["step"]}


def _ms(seconds):
    return f"{seconds * 1e3:.1f} ms"


def markdown(results, threads):
    """The report's section for the scale-out rows: [(row, measure(row)), ...]."""
    lines = [f"LocalCluster of 1 or 2 worker processes of 1 thread each on the loopback, against "
             f"one process of {threads} threads; fresh processes, alternating rounds, medians.", ""]
    infer = [(r, m) for r, m in results if r.pass_ == "infer"]
    train = [(r, m) for r, m in results if r.pass_ == "train"]
    for row, m in infer:
        s = row.shape
        lines += [f"Batch inference: LSTM({s.I}, {s.H}), {s.B:,} sequences of {s.T} steps in "
                  f"chunks of {INFER_CHUNK:,}, the last step's output gathered (sequences/s)", "",
                  "| one process | 1 worker | 2 workers | 2 workers / one process | "
                  "task round trip | per task of 200 |", "|---|---|---|---|---|---|"]
        cells = []
        for name in ("process", "cluster1", "cluster2"):
            v = m.get(name, {})
            cells.append(v["error"] if "error" in v else f"{s.B / v['seconds']:,.0f}")
        ok = all("seconds" in m.get(n, {}) for n in ("process", "cluster2"))
        ratio = f"{m['process']['seconds'] / m['cluster2']['seconds']:.2f}x" if ok else "—"
        c2 = m.get("cluster2", {})
        trip = f"{c2['round_trip'] * 1e3:.2f} ms" if "round_trip" in c2 else "—"
        per = f"{c2['per_task'] * 1e3:.2f} ms" if "per_task" in c2 else "—"
        lines += [f"| {' | '.join(cells)} | {ratio} | {trip} | {per} |", ""]
    if train:
        s = train[0][0].shape
        lines += [f"Data-parallel training step: LSTM({s.I}, {s.H}) + Linear({s.H}, {CLASSES}), "
                  f"{s.T} steps, Adam; step = slowest worker's compute + driver + communication "
                  f"and scheduling", "",
                  "| global batch | one process | 1 worker: step (compute / driver / comm.) | "
                  "2 workers: step (compute / driver / comm.) | 2 workers / one process |",
                  "|---|---|---|---|---|"]
        fits = []
        for row, m in train:
            cells = []
            for name in ("cluster1", "cluster2"):
                v = m.get(name, {})
                if "error" in v:
                    cells.append(v["error"])
                else:
                    comm = v["step"] - v["worker"] - v["driver"]
                    cells.append(f"{_ms(v['step'])} ({_ms(v['worker'])} / {_ms(v['driver'])} / "
                                 f"{_ms(comm)}, {comm / v['step']:.0%})")
            p = m.get("process", {})
            proc = p["error"] if "error" in p else _ms(p["step"])
            ok = "step" in p and "step" in m.get("cluster2", {})
            ratio = f"{p['step'] / m['cluster2']['step']:.2f}x" if ok else "—"
            lines.append(f"| {row.shape.B:,} | {proc} | {cells[0]} | {cells[1]} | {ratio} |")
            fit = model(m)
            if fit:
                fits.append((row, fit))
        lines.append("")
        if fits:
            lines += ["Model of a step on n workers, t(n) = C/n + D + a + b·n, through the 2-worker "
                      "step (C twice its slowest worker's compute, D its driver's share) and the "
                      "communication at 1 and 2 workers (a, b); speedup: one process's step / "
                      "t(n):", "",
                      "| global batch | C | D | a | b | " + " | ".join(f"n={n}" for n in PREDICT)
                      + " |", "|---" * (5 + len(PREDICT)) + "|"]
            for row, f in fits:
                pred = " | ".join(f"{_ms(t)} ({f['process'] / t:.2f}x)"
                                  for t in f["predicted"].values())
                lines.append(f"| {row.shape.B:,} | {_ms(f['C'])} | {_ms(f['D'])} | {_ms(f['a'])} "
                             f"| {_ms(f['b'])} | {pred} |")
            lines.append("")
    return lines


if __name__ == "__main__":
    emit(run(json.loads(sys.argv[1])))
