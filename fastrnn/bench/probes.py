"""Parent side of the fresh-process measurements: peak memory and first-call latency.

Each probe is a new Python process (``sys.executable -c BOOTSTRAP``) that
imports fastrnn from the same place as this one.  First-call latency is
measured with a *cold* compile cache (a new, empty cache directory) and then
with that directory *warm* (the cold run filled it).  The cache directory is
redirected through the variables numba and fastrnn's jit backend read (see
:func:`cache_env_vars`); after a cold run the report says how many files
landed there, so a cache that ignored the redirection (and made the "cold"
run warm) is visible.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import fastrnn

from ._probe import BOOTSTRAP, MARKER

#: variables that point numba's and fastrnn's compile cache somewhere else
CACHE_ENV_VARS = ("NUMBA_CACHE_DIR", "FASTRNN_CACHE_DIR", "XDG_CACHE_HOME")
#: glibc: a fixed mmap threshold, so freed large arrays go back to the OS and the
#: resident set tracks the live arrays (the default threshold grows after frees)
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
#: seconds a probe may take before it is reported as timed out
DEFAULT_TIMEOUT = 900.0

_ENV_NAME_RE = re.compile(
    r"""(?:environ(?:\.get)?\s*[(\[]\s*|getenv\(\s*)["']([A-Z][A-Z0-9_]*)["']"""  # os.environ.get("X")
    r"""|^[A-Z_]*ENV[A-Z_]*\s*=\s*["']([A-Z][A-Z0-9_]*)["']""",  # CACHE_ENV = "X"
    re.MULTILINE)


def cache_env_vars():
    """Names of the environment variables that relocate the compile cache.

    Returns
    -------
    list of str
        :data:`CACHE_ENV_VARS`, plus every variable that
        ``fastrnn/jit/config.py`` reads whose name contains ``CACHE`` and
        ``DIR``, ``PATH`` or ``HOME`` (found in its source, without importing it).
    """
    names = list(CACHE_ENV_VARS)
    config = os.path.join(os.path.dirname(os.path.abspath(fastrnn.__file__)), "jit", "config.py")
    try:
        with open(config) as f:
            source = f.read()
    except OSError:
        return names
    for name in (a or b for a, b in _ENV_NAME_RE.findall(source)):
        if "CACHE" in name and any(k in name for k in ("DIR", "PATH", "HOME")) and name not in names:
            names.append(name)
    return names


def _child_env(cache_dir=None, extra=None):
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastrnn.__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("FASTRNN_BACKEND", None)  # every probe names its backend
    if cache_dir is not None:
        for name in cache_env_vars():
            env[name] = cache_dir
    env.update(extra or {})
    return env


def run_probe(spec, cache_dir=None, extra_env=None, timeout=DEFAULT_TIMEOUT):
    """Run one probe in a fresh process.

    Parameters
    ----------
    spec : dict
        See :func:`fastrnn.bench._probe.main`.
    cache_dir : str, optional
        Point the compile cache here (see :func:`cache_env_vars`).
    extra_env : dict, optional
    timeout : float
        Seconds.

    Returns
    -------
    dict
        The probe's result, or ``{"error": message}`` when the process
        failed, timed out or printed no result.
    """
    cmd = [sys.executable, "-c", BOOTSTRAP, json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=_child_env(cache_dir, extra_env), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"exit status {proc.returncode}: {tail}"}


def _spec(kind, backend, case, torch_threads):
    return {"kind": kind, "backend": backend, "cell": case.cell, "shape": list(case.shape),
            "pass": case.pass_, "torch_threads": torch_threads}


def measure_memory(case, backend, torch_threads, timeout=DEFAULT_TIMEOUT):
    """Peak memory of one call of ``case`` on ``backend``, in a fresh process.

    Parameters
    ----------
    case : Case
        Usually the ``train`` pass at the large shape.
    backend : str
    torch_threads : int
    timeout : float

    Returns
    -------
    dict
        See :func:`fastrnn.bench._probe.probe_memory`, or ``{"error": ...}``.
    """
    return run_probe(_spec("memory", backend, case, torch_threads), extra_env=MALLOC_ENV,
                     timeout=timeout)


def _count_files(path):
    return sum(len(files) for _, _, files in os.walk(path))


def measure_first_call(case, backend, torch_threads, timeout=DEFAULT_TIMEOUT, warmup=False):
    """First-call latency in a fresh process, with a cold and then a warm compile cache.

    Parameters
    ----------
    case : Case
    backend : str
    torch_threads : int
    timeout : float
    warmup : bool
        Time the jit backend's ``warmup()`` instead of the case's first call.

    Returns
    -------
    dict
        ``{"cold": result, "warm": result, "cache_files": n, "cache_files_warm": m}``:
        the two probe results and the number of files in the (fresh) cache
        directory after the cold run and after the warm run (more files after
        the warm run mean it missed the cache and compiled again).
    """
    kind = "warmup" if warmup else "first_call"
    cache_dir = tempfile.mkdtemp(prefix="fastrnn-bench-cache-")
    try:
        spec = _spec(kind, backend, case, torch_threads)
        cold = run_probe(spec, cache_dir, timeout=timeout)
        files = _count_files(cache_dir)
        warm = run_probe(spec, cache_dir, timeout=timeout)
        files_warm = _count_files(cache_dir)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    return {"cold": cold, "warm": warm, "cache_files": files, "cache_files_warm": files_warm}
