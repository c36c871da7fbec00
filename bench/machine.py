"""Description of the machine and the software a benchmark ran on."""

import importlib
import os
import platform
import subprocess


def _cores():
    """(usable cores, cores the OS reports)."""
    total = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = total
    return usable, total


def usable_cores():
    """Cores this process may run on (every engine gets this many threads by default)."""
    return _cores()[0]


def _memory_total():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 2 ** 20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"


def cpu_counters():
    """CPU seconds so far: ``(machine, own)``; machine is every core's non-idle time (steal
    included: on a VM that is time the hypervisor gave to others), None where /proc/stat is
    missing; own is this process's and its waited-for children's user + system time."""
    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None, own
    if not fields or fields[0] != "cpu":
        return None, own
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    values = [int(v) for v in fields[1:9]]
    busy = sum(values) - values[3] - values[4]
    return busy / ticks, own


def others_cpu(start, end, seconds):
    """Cores used on average by other processes (and the hypervisor) between two
    :func:`cpu_counters` readings ``seconds`` apart, or None when unknown."""
    if start[0] is None or end[0] is None or seconds <= 0:
        return None
    return max(0.0, ((end[0] - start[0]) - (end[1] - start[1])) / seconds)


def _blas():
    """Threadpools of the BLAS libraries loaded in this process (threadpoolctl), as text."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    importlib.import_module("numpy")  # its BLAS must be loaded to be listed
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    if not pools:
        return "none found"
    return "; ".join(
        f"{p.get('internal_api')} {p.get('version')} ({p.get('threading_layer', '?')}, "
        f"{p.get('num_threads')} threads, {p.get('architecture', '?')}, "
        f"{os.path.basename(p.get('filepath', ''))})" for p in pools)


def _git_commit():
    """``git describe`` of the checkout fastrnn runs from, or None when it is not a checkout."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(here, ".git")):
        return None
    try:
        out = subprocess.run(["git", "-C", here, "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


#: instruction sets the report names, as /proc/cpuinfo spells them
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve")


def instruction_sets():
    """The instruction sets of :data:`ISA_FLAGS` this CPU reports (Linux), as text."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("flags", "features")):
                    have = set(line.split(":", 1)[1].split())
                    return ", ".join(x for x in ISA_FLAGS if x in have) or "none of " + \
                        ", ".join(ISA_FLAGS)
    except OSError:
        pass
    return f"unknown ({platform.machine()})"


#: the distributions of the engines, for their versions
ENGINE_DISTS = {"numba": "numba", "torch": "torch", "onnxruntime": "onnxruntime", "jax": "jax"}


def describe(threads, engines):
    """The machine and software versions, as (label, value) pairs.

    Parameters
    ----------
    threads : int
        The thread count every engine was given.
    engines : sequence of str
        The engines that run (their versions are listed).

    Returns
    -------
    list of (str, str)
    """
    import numpy

    import fastrnn
    from fastrnn._config import cpu_model, dist_version
    usable, total = _cores()
    info = [
        ("CPU", cpu_model()),
        ("instruction sets", instruction_sets()),
        ("cores", f"{usable} usable of {total}; every engine runs {threads} threads"),
        ("memory", _memory_total()),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("python", platform.python_version()),
        ("numpy", numpy.__version__),
        ("BLAS (threadpoolctl, as a user's process starts)", _blas()),
    ]
    commit = _git_commit()
    info.append(("fastrnn", fastrnn.__version__ + (f" ({commit})" if commit else "")))
    from fastrnn import _runtime
    info.append(("fastrnn BLAS pool (FASTRNN_BLAS_POOL)",
                 "on" if _runtime.blas_pool_enabled() else "off"))
    info.append(("glibc malloc thresholds set by fastrnn (FASTRNN_MALLOC)",
                 f"mmap {_runtime.MMAP_THRESHOLD >> 20} MiB, trim {_runtime.TRIM_THRESHOLD >> 20} MiB"
                 if _runtime.malloc_tuned() else "no"))
    if "cython" in engines:
        from fastrnn import _cython
        info.append(("cython kernels", f"{_cython.ISA} build (this machine can use: "
                                       f"{', '.join(_cython.available_isas())})"))
        l2 = _cython.kernels.l2_cache_bytes()
        info.append(("L2 cache of a core, as the cython kernels see it (a small batch whose "
                     "weights fit is split by rows, not over a team)",
                     f"{l2 >> 10} KiB" if l2 else "unknown (teams)"))
    for engine, dist in ENGINE_DISTS.items():
        if engine in engines:
            info.append((engine, dist_version(dist) or "unknown version"))
    return info
