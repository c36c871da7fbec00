"""One engine on one row, in a process of its own: the child side of the report.

``python -m bench.worker SPEC`` (SPEC a JSON object, see :func:`main`) sets the
engine's thread count, imports only that engine's libraries, builds the
workload (a peer's weights and ONNX model, which come from fastrnn's
reference layer, are made between the import's clock and the build's, so
that both time the peer's own work), times it and checks it against the
numpy reference, then prints
one line: :data:`MARKER` and the result as JSON.  The parent
(:mod:`bench.report`) only starts processes and reads that line, so no
engine's thread pools, allocator state or warm caches reach another's timing.

The check comes after the timing: the process is timed as a user's would be,
from a clean start, and a result that fails the check is reported as an
error, never as a number.
"""

import json
import os
import sys
import time

#: prefix of the line that carries the result
MARKER = "FASTRNN_BENCH_RESULT "
#: the checkout's root: the children import the benchmark from there
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def emit(result):
    """Print ``result`` (a dict) as the child's one line for its parent."""
    sys.stdout.write(MARKER + json.dumps(result) + "\n")
    sys.stdout.flush()


def run_module(module, spec, timeout, extra_env=None, drop_env=()):
    """Run ``python -m module SPEC`` (``spec`` as JSON) in a fresh process from the checkout and
    return the result it emitted, or ``{"error": ...}`` (a timeout, or the last line of its
    stderr).  ``extra_env`` is added to this process's environment, ``drop_env`` left out."""
    import subprocess
    env = {k: v for k, v in os.environ.items() if k not in drop_env}
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra_env or {})
    cmd = [sys.executable, "-m", module, json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              cwd=ROOT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit status {proc.returncode}: {tail}"}


def set_threads(engine, threads):
    """Give ``engine`` ``threads`` threads, before its libraries are imported.

    fastrnn's backends read ``FASTRNN_NUM_THREADS``,
    torch gets ``torch.set_num_threads`` (see :func:`load`), onnxruntime its
    session's ``intra_op_num_threads`` (see :mod:`bench.engines`).  XLA's CPU
    client uses every core the process may run on, so JAX is pinned to
    ``threads`` cores when that is fewer than the usable ones.  The numpy
    engine's products are NumPy's: its BLAS gets ``threads`` (see :func:`load`).
    """
    os.environ["FASTRNN_NUM_THREADS"] = str(threads)
    if engine == "jax" and hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        if threads < len(cores):
            os.sched_setaffinity(0, cores[:threads])


def load(engine, threads):
    """Import what ``engine`` needs (timed by the caller): a peer's library alone, fastrnn
    for fastrnn's engines."""
    if engine == "torch":
        import torch
        torch.set_num_threads(threads)
    elif engine == "onnxruntime":
        import onnxruntime  # noqa: F401
    elif engine == "jax":
        import jax
        jax.config.update("jax_platforms", "cpu")
    else:
        from fastrnn.backends import resolve
        resolve(engine)
        if engine == "numpy":
            from threadpoolctl import threadpool_limits
            threadpool_limits(limits=threads, user_api="blas")


def threads_in_use(engine, work):
    """The thread count ``engine`` runs ``work`` (a built workload) with, as the engine
    reports it: what the tests check :func:`set_threads` and :func:`load` did."""
    if engine == "torch":
        import torch
        return torch.get_num_threads()
    if engine == "onnxruntime":
        return work.session_options.intra_op_num_threads
    if engine == "jax":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    import fastrnn
    if engine == "numpy":
        from threadpoolctl import threadpool_info
        return max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"),
                   default=None)
    return fastrnn.get_num_threads()


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


def measure_time(work, budget, samples, min_sample_time):
    """Seconds per call of a built workload: the first call, then ``samples`` timed samples.

    Each sample times enough back-to-back calls to last ``min_sample_time``;
    sampling stops early once ``budget`` seconds are spent and 3 samples exist.
    """
    from bench.timing import calls_per_sample, estimate_call_time, time_calls
    start = time.perf_counter()
    work()
    first = time.perf_counter() - start
    number = calls_per_sample(estimate_call_time(work, budget), min_sample_time)
    times, spent = [], 0.0
    while len(times) < samples and (len(times) < 3 or spent < budget):
        t = time_calls(work, number)
        times.append(t)
        spent += t * number
    return {"first": first, "samples": times, "number": number}


def measure_memory(row, engine, threads):
    """Peak resident memory of one call, above what the process held before it.

    The engine is warmed up (compiled, pools started) on the row cut to 2
    steps; then a fresh workload of the full row is built and its first call
    measured through the kernel's peak-RSS counter.
    """
    import gc

    from bench.engines import build
    build(row._replace(shape=row.shape._replace(T=min(2, row.shape.T))), engine, threads)()
    work = build(row, engine, threads)
    gc.collect()
    if not _reset_peak():
        return {"error": "no /proc/self/clear_refs: peak memory cannot be measured here"}
    before = _status_bytes()["VmRSS"]
    work()
    return {"rss_peak": _status_bytes()["VmHWM"] - before}


def measure_profile(work, budget):
    """Where the calls of a built cython workload spend their time: its calls for ``budget``
    seconds (at least 3) on the cython kernels' phase clock, after 3 untimed calls, and as
    long without the clock (what reading it costs).

    Returns ``{"profile": {"wall": seconds per call, "wall_unclocked": the same without the
    clock, "calls": calls timed, ...}}``, the rest being the clock's reading per call
    (``fastrnn._cython.kernels.phase_clock``)."""
    from fastrnn._cython import kernels

    def timed():
        calls, start = 0, time.perf_counter()
        while calls < 3 or time.perf_counter() - start < budget:
            work()
            calls += 1
        return calls, (time.perf_counter() - start) / calls

    for _ in range(3):
        work()
    _, unclocked = timed()
    kernels.phase_clock(True)
    try:
        calls, wall = timed()
    finally:
        reading = kernels.phase_clock(False)
    per_call = {"wall": wall, "wall_unclocked": unclocked, "calls": calls,
                "threads": reading["threads"], "driver": reading["calls"] / calls,
                "products": reading["products"] / calls}
    for key in ("phases", "thread_time"):
        per_call[key] = {name: t / calls for name, t in reading[key].items()}
    return {"profile": per_call}


def measure_gemm(n, samples, min_sample_time, threads):
    """GFLOP/s of ``np.matmul`` of two float32 n x n matrices on ``threads`` threads (the
    machine's GEMM ceiling for the engines' thread count)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from bench.timing import gemm_throughput
    with threadpool_limits(limits=threads, user_api="blas"):
        result = gemm_throughput(n, samples, min_sample_time=min_sample_time)
        result["blas_threads"] = max((p["num_threads"] for p in threadpool_info()
                                      if p["user_api"] == "blas"), default=None)
    return result


def measure_peak(threads, samples, seconds):
    """GFLOP/s of float32 multiply-adds on ``threads`` threads at once (the machine's floor: the
    cython build's ``multiply_add_peak``, at the widest vectors this CPU runs)."""
    from fastrnn._cython import kernels
    return {"gflops": kernels.multiply_add_peak(threads, seconds, samples), "isa": kernels.ISA}


def measure_bandwidth(sizes, samples, min_sample_time):
    """GB/s at which one thread reads weights of each of ``sizes`` bytes from its caches."""
    from bench.timing import read_bandwidth
    return {"gbps": {str(n): read_bandwidth(n, samples, min_sample_time) for n in sizes}}


def main(spec_json):
    """Run the measurement ``spec_json`` asks for and print its result after :data:`MARKER`.

    Parameters
    ----------
    spec_json : str
        JSON object: ``mode`` (``"time"``, ``"memory"``, ``"profile"`` (the cython engine
        only), ``"gemm"``, ``"peak"`` or ``"bandwidth"``),
        ``engine``, ``row`` (:func:`bench.cases.row_to_json`), ``threads``,
        and for ``time`` ``budget``, ``samples``, ``min_sample_time``, ``check``
        (bool); for ``profile`` ``budget``; for ``gemm`` ``n``, ``samples``,
        ``min_sample_time``; for ``peak``
        ``samples``, ``seconds``; for ``bandwidth``
        ``sizes`` (bytes), ``samples``, ``min_sample_time``.
    """
    spec = json.loads(spec_json)
    mode, engine, threads = spec["mode"], spec.get("engine"), int(spec["threads"])
    result = {"pid": os.getpid()}
    try:
        if mode == "gemm":
            result.update(measure_gemm(spec["n"], spec["samples"], spec["min_sample_time"],
                                       threads))
        elif mode == "peak":
            result.update(measure_peak(threads, spec["samples"], spec["seconds"]))
        elif mode == "bandwidth":
            result.update(measure_bandwidth(spec["sizes"], spec["samples"],
                                            spec["min_sample_time"]))
        else:
            set_threads(engine, threads)
            start = time.perf_counter()
            load(engine, threads)
            result["import"] = time.perf_counter() - start
            from bench.cases import row_from_json
            from bench.engines import build, check, prepare
            row = row_from_json(spec["row"])
            prepare(row, engine)       # a peer's weights from fastrnn, before the build's clock
            if mode == "memory":
                result.update(measure_memory(row, engine, threads))
            elif mode == "profile":
                if engine != "cython":
                    raise ValueError(f"a profile needs the cython engine, not {engine!r}")
                result.update(measure_profile(build(row, engine, threads), spec["budget"]))
            else:
                start = time.perf_counter()
                work = build(row, engine, threads)
                result["build"] = time.perf_counter() - start
                result.update(measure_time(work, spec["budget"], spec["samples"],
                                           spec["min_sample_time"]))
                result["threads"] = threads_in_use(engine, work)
                if spec.get("check", True):
                    del work
                    result["check_error"] = check(row, engine, threads)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which names the engine
        result["error"] = f"{type(exc).__name__}: {exc}"
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
