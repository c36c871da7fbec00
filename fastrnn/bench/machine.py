"""Description of the machine and the software a benchmark ran on."""

import importlib
import os
import platform
import subprocess
from importlib import metadata


def _cpu_model():
    """The CPU model name from /proc/cpuinfo (Linux), else what platform says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _cores():
    """(usable cores, cores the OS reports)."""
    total = os.cpu_count() or 1
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = total
    return usable, total


def usable_cores():
    """Cores this process may run on (the torch peer gets this many threads)."""
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


def load_average():
    """The 1-minute load average, or None where the OS does not report it."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


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


def _version(dist):
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


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
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.exists(os.path.join(here, ".git")):
        return None
    try:
        out = subprocess.run(["git", "-C", here, "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def describe(torch_threads=None):
    """The machine and software versions, as (label, value) pairs.

    Parameters
    ----------
    torch_threads : int, optional
        The thread count the torch peer was given.

    Returns
    -------
    list of (str, str)
    """
    import numpy

    import fastrnn
    usable, total = _cores()
    info = [
        ("CPU", _cpu_model()),
        ("cores", f"{usable} usable of {total}"),
        ("memory", _memory_total()),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("python", platform.python_version()),
        ("numpy", numpy.__version__),
        ("BLAS (threadpoolctl)", _blas()),
    ]
    numba_version = _version("numba")
    if numba_version:
        try:
            import numba
            numba_version += f" ({numba.config.NUMBA_NUM_THREADS} threads, " \
                             f"layer {numba.config.THREADING_LAYER})"
        except Exception as exc:  # a broken numba install is worth a line, not a crash
            numba_version += f" (import failed: {type(exc).__name__})"
    info.append(("numba", numba_version or "not installed"))
    torch_version = _version("torch")
    if torch_version and torch_threads is not None:
        torch_version += f" (set_num_threads({torch_threads}))"
    info.append(("torch", torch_version or "not installed"))
    commit = _git_commit()
    info.append(("fastrnn", fastrnn.__version__ + (f" ({commit})" if commit else "")))
    backends = fastrnn.backends()
    info.append(("fastrnn backends", ", ".join(
        f"{k}: {'yes' if v['available'] else 'no'}" for k, v in backends.items())))
    if backends.get("cython", {}).get("available"):
        from fastrnn import _cython
        info.append(("cython kernels", f"{_cython.ISA} build (this machine can use: "
                                       f"{', '.join(_cython.available_isas())})"))
    load = load_average()
    if load is not None:
        info.append(("load average (1 min) at start", f"{load:.2f}"))
    return info
