"""``fastrnn.show_config()``: what this installation runs on, for a bug report or a benchmark
(as ``numpy.show_config()`` and ``torch.__config__.show()``)."""

import os
import platform
import sys

#: every environment variable fastrnn reads (README, "Environment variables")
ENV_VARS = ("FASTRNN_BACKEND", "FASTRNN_NUM_THREADS", "FASTRNN_CYTHON_ISA", "FASTRNN_BLAS_POOL",
            "FASTRNN_MALLOC", "FASTRNN_CACHE_DIR")
#: the runtime dependencies whose versions are listed
DEPENDENCIES = ("numpy", "numba", "scipy", "threadpoolctl")
MODES = ("stdout", "dicts")


def dist_version(dist):
    """The installed version of distribution ``dist``, or None (also the benchmark's)."""
    from importlib import metadata
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model():
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` says (also
    the benchmark's)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")) \
                        and ":" in line:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _blas():
    from threadpoolctl import threadpool_info
    return [{k: p.get(k) for k in ("internal_api", "version", "num_threads", "filepath")}
            for p in threadpool_info() if p.get("user_api") == "blas"]


def config():
    """What :func:`show_config` prints, as nested dicts of plain values."""
    from . import __version__, _runtime
    from .backends import backends, resolve
    available = backends()
    try:
        default = resolve("auto").name
    except (ValueError, RuntimeError) as exc:      # a bad FASTRNN_BACKEND: said, not raised
        default = f"none ({type(exc).__name__}: {exc})"
    out = {
        "fastrnn": {"version": __version__, "path": os.path.dirname(os.path.abspath(__file__))},
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "machine": {"platform": platform.platform(), "cpu": cpu_model(),
                    "cpus usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                    else os.cpu_count()},
        "dependencies": {dist: dist_version(dist) for dist in DEPENDENCIES},
        "backends": {"auto": default, **{name: "available" if b["available"] else b["reason"]
                                         for name, b in available.items()}},
        "threads": {"kernels": _runtime.get_num_threads(),
                    "BLAS pool (FASTRNN_BLAS_POOL)": _runtime.blas_pool_enabled(),
                    "BLAS": _blas()},
        "glibc malloc thresholds set (FASTRNN_MALLOC)": _runtime.malloc_tuned(),
        "environment": {name: os.environ[name] for name in ENV_VARS if name in os.environ},
    }
    if available["cython"]["available"]:
        from . import _cython
        out["cython"] = {"build": _cython.ISA, "builds this CPU runs": _cython.available_isas(),
                         "L2 cache of a core (bytes)": _cython.kernels.l2_cache_bytes() or None}
    if available["numba"]["available"]:
        from .jit import config as jit_config
        out["numba"] = {"cache": jit_config.CACHE_DIR}
    return out


def _lines(value, indent):
    pad = "  " * indent
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                yield f"{pad}{key}:"
                yield from _lines(item, indent + 1)
            else:
                yield f"{pad}{key}: {item if item not in ({}, []) else 'none'}"
    else:
        for item in value:
            if isinstance(item, dict):
                yield f"{pad}-"
                yield from _lines(item, indent + 1)
            else:
                yield f"{pad}- {item}"


def show_config(mode="stdout"):
    """Print (or return) the versions, backends, cython build, threads, BLAS and settings of
    this installation: what to paste into a bug report.

    Parameters
    ----------
    mode : {"stdout", "dicts"}
        ``"stdout"`` prints the configuration; ``"dicts"`` returns it as nested dicts
        instead (as ``numpy.show_config``).

    Returns
    -------
    None, or dict with ``mode="dicts"``

    Examples
    --------
    >>> import fastrnn
    >>> fastrnn.show_config()                          # doctest: +SKIP
    fastrnn:
      version: 0.1.0
    ...
    >>> fastrnn.show_config("dicts")["backends"]["numpy"]
    'available'
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, but got {mode!r}")
    out = config()
    if mode == "dicts":
        return out
    print("\n".join(_lines(out, 0)))
    return None
