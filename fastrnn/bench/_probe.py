"""Measurements that need a fresh process: peak memory and first-call latency.

This module is the child side; :mod:`fastrnn.bench.probes` starts it with
:data:`BOOTSTRAP` (so that the import of fastrnn itself is timed) and reads
the one line of JSON it prints after :data:`MARKER`.
"""

import gc
import json
import os
import sys
import time
import tracemalloc

#: prefix of the line that carries the result
MARKER = "FASTRNN_BENCH_PROBE "

#: what the child runs (``python -c BOOTSTRAP SPEC``): time ``import fastrnn``, then probe
BOOTSTRAP = (
    "import sys, time\n"
    "t0 = time.perf_counter()\n"
    "import fastrnn\n"
    "t1 = time.perf_counter()\n"
    "from fastrnn.bench._probe import main\n"
    "main(sys.argv[1], t1 - t0)\n"
)


def _status_bytes():
    """VmRSS and VmHWM of this process in bytes (Linux), or {} elsewhere."""
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError):
        pass
    return out


def _reset_peak():
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS; False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return "VmHWM" in _status_bytes()


def _maxrss_bytes():
    """Peak resident set of this process so far (0 where the OS does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _setup(spec):
    """Import the backend's libraries, returning (seconds, case)."""
    from fastrnn.bench.cases import Case, Shape
    start = time.perf_counter()
    if spec["backend"] == "torch":
        import torch
        torch.set_num_threads(spec["torch_threads"])
    else:
        from fastrnn.backends import resolve
        resolve(spec["backend"])
    seconds = time.perf_counter() - start
    return seconds, Case(spec["cell"], Shape(*spec["shape"]), spec["pass"])


def probe_memory(spec):
    """Peak memory of one call of a case, above what existed before it.

    The kernels are compiled (and the peer initialised) by a call at two time
    steps first, so the measured call allocates only what the pass itself needs.

    Returns
    -------
    dict
        ``rss_peak`` (bytes: peak resident set during the call minus the
        resident set before it), ``method`` (how the peak was read),
        ``traced_peak`` (bytes: peak of the allocations tracemalloc sees,
        which are NumPy's and Python's, not numba's or torch's own) and
        ``seconds`` (duration of the measured call).
    """
    from fastrnn.bench.workloads import Workload
    _, case = _setup(spec)
    warm = Workload(case, spec["backend"], steps=2)
    warm()
    work = Workload(case, spec["backend"])
    gc.collect()
    exact = _reset_peak()
    before = _status_bytes().get("VmRSS")
    if before is None:  # no /proc: ru_maxrss only, an upper bound that includes the imports
        before = 0
    maxrss_before = _maxrss_bytes()
    tracemalloc.start()
    start = time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    if exact:
        peak, method = _status_bytes()["VmHWM"] - before, "VmHWM after reset"
    elif _maxrss_bytes() > maxrss_before:
        peak, method = _maxrss_bytes() - before, "ru_maxrss (approximate)"
    else:
        peak, method = None, "unavailable (peak did not rise above the earlier maximum)"
    return {"rss_peak": peak, "method": method, "traced_peak": traced_peak, "seconds": seconds}


def probe_first_call(spec, import_seconds):
    """Latency of the first call of a case in this fresh process.

    Returns
    -------
    dict
        ``import`` (seconds of ``import fastrnn``, plus torch for the peer),
        ``load`` (seconds to load the backend: importing the compiled
        module, or torch), ``first`` (building the layer and its first
        call, including any compilation), ``second`` (the next call), and
        ``total`` (import + load + first).
    """
    from fastrnn.bench.workloads import Workload
    load, case = _setup(spec)
    start = time.perf_counter()
    work = Workload(case, spec["backend"])
    work()
    first = time.perf_counter() - start
    start = time.perf_counter()
    work()
    second = time.perf_counter() - start
    return {"import": import_seconds, "load": load, "first": first, "second": second,
            "total": import_seconds + load + first}


def probe_warmup(spec, import_seconds):
    """Seconds of the jit backend's ``warmup()`` in this fresh process.

    Returns
    -------
    dict
        ``import``, ``load`` and ``warmup`` seconds, ``total`` their sum,
        and ``function``: the warm-up function that was called.
    """
    import importlib
    load, _ = _setup(spec)
    fn, name = None, None
    for module_name in ("fastrnn", "fastrnn.jit"):
        module = importlib.import_module(module_name)
        if callable(getattr(module, "warmup", None)):
            fn, name = module.warmup, f"{module_name}.warmup()"
            break
    if fn is None:
        return {"error": "neither fastrnn.warmup nor fastrnn.jit.warmup exists"}
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    return {"import": import_seconds, "load": load, "warmup": seconds,
            "total": import_seconds + load + seconds, "function": name}


def main(spec_json, import_seconds):
    """Run the probe described by ``spec_json`` and print its result after :data:`MARKER`.

    Parameters
    ----------
    spec_json : str
        JSON object: ``kind`` (``"memory"``, ``"first_call"`` or
        ``"warmup"``), ``backend``, ``cell``, ``shape`` (the fields of a
        :class:`fastrnn.bench.cases.Shape`), ``pass`` and ``torch_threads``.
    import_seconds : float
        How long ``import fastrnn`` took in this process.
    """
    spec = json.loads(spec_json)
    kind = spec["kind"]
    if kind == "memory":
        result = probe_memory(spec)
    elif kind == "first_call":
        result = probe_first_call(spec, import_seconds)
    elif kind == "warmup":
        result = probe_warmup(spec, import_seconds)
    else:
        raise ValueError(f"unknown probe kind {kind!r}")
    result["pid"] = os.getpid()
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()
