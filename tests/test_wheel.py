"""The wheel: build it, install it into a fresh virtual environment, run a smoke test there.

Two roles in one file:

* run as a script (``python tests/test_wheel.py [--require-cython]``), it is the smoke
  test of an *installed* fastrnn: import, the backends listed, forward+backward of every
  cell and layer type on every available backend (float64 and float32; numba float32
  alone), parity with the numpy reference, the compiled extension present and no Cython
  source installed.  It needs only numpy (and whatever the backends need); cibuildwheel
  runs it against each wheel it builds.
* collected by pytest (marker ``wheel``; select with ``-m wheel``, leave out with
  ``-m "not wheel"``), it builds the sdist and, from it, the platform wheel with
  ``python -m build`` (``pip wheel`` when the ``build`` package is not installed), or
  takes a pre-built wheel from the environment variable FASTRNN_WHEEL (a file or a
  directory), creates a fresh venv (no system site-packages), ``pip install``s the wheel
  (numpy comes as its dependency, scipy for BLAS) and runs this file there as the smoke
  script.

Environment variables:

FASTRNN_WHEEL
    A wheel (or a directory with one) to test instead of building one.
FASTRNN_WHEEL_ISOLATION=1
    Build in an isolated environment (which downloads the build requirements) even
    when the running interpreter has them (by default it builds with ``--no-isolation``
    then).
"""

import glob
import os
import subprocess
import sys
import sysconfig
import tempfile

import numpy as np

try:
    import pytest
except ImportError:  # the smoke script runs in a venv without pytest
    pytest = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# =======================================================================================
# The smoke test (runs in the fresh venv, or under cibuildwheel)
# =======================================================================================
def _cell_run(fastrnn, cls, opts, backend, dtype, rng):
    I, H, B = 5, 4, 3
    cell = cls(I, H, backend=backend, dtype=dtype, seed=7, **opts)
    x = rng.standard_normal((B, I)).astype(dtype)
    lstm = cls is fastrnn.LSTMCell
    hx = (np.zeros((B, H), dtype), np.zeros((B, H), dtype)) if lstm else np.zeros((B, H), dtype)
    out = cell(x, hx)
    h = out[0] if lstm else out
    dh = np.ones_like(h)
    dx, dhx = cell.backward(dh, np.ones_like(h)) if lstm else cell.backward(dh)
    return [h, dx] + [np.asarray(d) for d in (dhx if lstm else (dhx,))] + \
        [cell.grads[k] for k in sorted(cell.grads)]


def _builds_match_the_reference(_cython):
    """Forward+backward of every cell type on every build of the cython kernels this machine can
    use (the backend itself runs only the chosen one), against the reference kernels."""
    from fastrnn import reference
    from fastrnn.celltypes import CELL_TYPES
    T, B, I, H = 5, 3, 4, 6
    for isa in _cython.available_isas():
        module = _cython.load(isa)
        for cell, kind in CELL_TYPES.items():
            G = kind.gates
            for dtype, atol in ((np.float64, 1e-9), (np.float32, 2e-4)):
                rng = np.random.default_rng(1)
                weights = [rng.uniform(-0.5, 0.5, shape).astype(dtype)
                           for shape in ((G * H, I), (G * H, H), (G * H,), (G * H,))]
                weights = tuple(weights + [None] * (len(kind.weights) - 4))
                x = rng.standard_normal((T, B, I)).astype(dtype)
                hx = tuple(np.zeros((B, H), dtype) for _ in kind.states)
                results = []
                for kernels in (module, reference):
                    y, hy, saved = getattr(kernels, f"{cell}_forward")(x, hx, weights)
                    dw = tuple(None if w is None else np.zeros_like(w) for w in weights)
                    dx, dhx = getattr(kernels, f"{cell}_backward")(np.ones_like(y), hy, saved, dw)
                    results.append([y, *hy, dx, *dhx, *dw])
                for a, b in zip(*results):
                    if b is None:   # the gradient of an absent weight (LSTM projection)
                        assert a is None, f"{cell} on the {isa} build: a gradient where none is due"
                        continue
                    err = float(np.max(np.abs(a - b)))
                    assert err <= atol * max(1.0, float(np.max(np.abs(b)))), \
                        f"{cell} on the {isa} build ({np.dtype(dtype).name}): error {err:.3g}"
        print(f"  cython {isa} build: forward+backward of every cell type match the reference")


def _layer_run(fastrnn, cls, opts, backend, dtype, rng):
    T, B, I, H = 6, 3, 5, 4
    layer = cls(I, H, num_layers=2, bidirectional=True, backend=backend, dtype=dtype, seed=3, **opts)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    lengths = np.array([6, 2, 4])
    out, hy = layer(x, lengths=lengths)
    dx, _ = layer.backward(np.ones_like(out))
    return [out, dx] + [layer.grads[k] for k in sorted(layer.grads)]


def smoke(require_cython=False, backends=None):
    """Exercise an installed fastrnn; raise AssertionError on any problem.

    ``backends``: the backends to compare with the reference (default: every available one).
    """
    import fastrnn

    print(f"fastrnn {fastrnn.__version__} from {os.path.dirname(fastrnn.__file__)}")
    status = fastrnn.backends()
    for name, s in status.items():
        print(f"  backend {name}: {'available' if s['available'] else 'unavailable: ' + s['reason']}")
    assert set(status) >= {"numpy", "numba", "cython"}, status
    assert status["numpy"]["available"]
    if require_cython:
        assert status["cython"]["available"], f"the cython backend is missing: {status['cython']['reason']}"
    pkg = os.path.dirname(fastrnn.__file__)
    installed = [os.path.relpath(p, pkg) for p in glob.glob(os.path.join(pkg, "**", "*"), recursive=True)]
    sources = [p for p in installed if p.endswith((".pyx", ".pxd", ".c"))]
    assert not sources, f"Cython sources were installed: {sources}"
    if status["cython"]["available"]:
        assert any(p.startswith(os.path.join("_cython", "_kernels")) for p in installed), installed
        from fastrnn import _cython
        print(f"  cython kernels: {_cython.kernels.__file__} ({_cython.ISA} build; this machine can "
              f"use {_cython.available_isas()}), BLAS threads controlled in "
              f"{_cython.BLAS_LIBRARIES or 'no library (left alone)'}")
        if require_cython and not os.environ.get(_cython.ISA_ENV):
            best = _cython.expected_isas()[0]
            assert _cython.ISA == best, f"the {best} build should be in use here, not {_cython.ISA}"
        _builds_match_the_reference(_cython)

    cells = [(fastrnn.RNNCell, {"nonlinearity": "tanh"}), (fastrnn.RNNCell, {"nonlinearity": "relu"}),
             (fastrnn.LSTMCell, {}), (fastrnn.GRUCell, {})]
    layers = [(fastrnn.RNN, {}), (fastrnn.LSTM, {}), (fastrnn.LSTM, {"proj_size": 2}), (fastrnn.GRU, {})]
    checked = 0
    if backends is None:
        backends = [b for b, s in status.items() if s["available"] and b != "numpy"]
    for backend in backends:
        # numba compiles every kernel again in a fresh environment (its cache is keyed by the
        # source's path): float32 alone there, half of that (~45 s of the wheel test); the
        # suite runs both dtypes on numba from the checkout
        dtypes = ((np.float64, 1e-9), (np.float32, 2e-4))[backend == "numba":]
        for dtype, atol in dtypes:
            for kind, cases in (("cell", cells), ("layer", layers)):
                run = _cell_run if kind == "cell" else _layer_run
                for cls, opts in cases:
                    got = run(fastrnn, cls, opts, backend, dtype, np.random.default_rng(0))
                    want = run(fastrnn, cls, opts, "numpy", dtype, np.random.default_rng(0))
                    assert len(got) == len(want)
                    for a, b in zip(got, want):
                        assert a.dtype == dtype and a.shape == b.shape, (cls.__name__, backend)
                        err = float(np.max(np.abs(a - b))) if a.size else 0.0
                        assert err <= atol * max(1.0, float(np.max(np.abs(b))) if b.size else 1.0), \
                            f"{cls.__name__}{opts} on {backend} ({np.dtype(dtype).name}): error {err:.3g}"
                    checked += 1
        print(f"  {backend}: forward+backward of every cell and layer type match the reference")
    print(f"smoke test passed ({checked} comparisons with the numpy reference)")
    return checked


# =======================================================================================
# Building and installing the wheel (pytest)
# =======================================================================================
def _venv_python(venv):
    scripts = "Scripts" if sys.platform == "win32" else "bin"
    exe = "python.exe" if sys.platform == "win32" else "python"
    return os.path.join(venv, scripts, exe)


def _run(cmd, timeout, **kwargs):
    print("$", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    if proc.returncode != 0:
        raise AssertionError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n"
                             f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}")
    return proc


def _find_wheel(path):
    """``path``, or the newest fastrnn wheel in the folder ``path`` that this interpreter and
    platform install (a cibuildwheel output holds one per Python version)."""
    if not os.path.isdir(path):
        return path
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename
    here = {str(t) for t in sys_tags()}
    found = []
    for name in glob.glob(os.path.join(path, "fastrnn-*.whl")):
        _, version, _, tags = parse_wheel_filename(os.path.basename(name))
        if any(str(t) in here for t in tags):
            found.append((version, name))
    assert found, f"no fastrnn wheel in {path} installs on this Python and platform"
    return max(found)[1]


def _importable(module):
    import importlib.util
    return importlib.util.find_spec(module) is not None


def _build(outdir):
    """The platform wheel, built with FASTRNN_REQUIRE_CYTHON=1.

    With the ``build`` package: ``python -m build`` (the sdist, then the wheel from the
    sdist, so the sdist's contents are tested too); without it, ``pip wheel``.  Both
    build in this interpreter's environment (``--no-isolation``) when it has the build
    requirements, else in an isolated one (which downloads them).
    """
    isolated = os.environ.get("FASTRNN_WHEEL_ISOLATION") == "1" or not all(
        _importable(m) for m in ("setuptools", "Cython", "numpy", "scipy"))
    env = dict(os.environ, FASTRNN_REQUIRE_CYTHON="1")
    if _importable("build"):
        cmd, flag, cwd = [sys.executable, "-m", "build", "--outdir", outdir], "--no-isolation", ROOT
    else:
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", outdir, ROOT]
        flag, cwd = "--no-build-isolation", None
    try:
        _run(cmd + ([] if isolated else [flag]), timeout=1200, cwd=cwd, env=env)
    except AssertionError:
        if isolated:
            raise
        # this environment's build requirements did not do (too old a setuptools, say)
        _run(cmd, timeout=1200, cwd=cwd, env=env)
    if not _importable("build"):
        return _find_wheel(outdir)
    sdists = glob.glob(os.path.join(outdir, "fastrnn-*.tar.gz"))
    assert len(sdists) == 1, os.listdir(outdir)
    import tarfile
    with tarfile.open(sdists[0]) as tar:
        names = tar.getnames()
    for needed in ("kernels/_kernels.pyx", "kernels/_kernels_avx2.pyx",
                   "kernels/_kernels_avx512.pyx", "kernels/_common.pxd",
                   "kernels/fastrnn_mm.h", "setup.py", "pyproject.toml"):
        assert any(n.endswith(needed) for n in names), f"{needed} missing from the sdist"
    return _find_wheel(outdir)


if pytest is not None:

    @pytest.mark.wheel
    def test_wheel_installs_into_a_fresh_venv_and_passes_the_smoke_test(tmp_path):
        wheel = _find_wheel(os.environ["FASTRNN_WHEEL"]) if os.environ.get("FASTRNN_WHEEL") \
            else _build(str(tmp_path / "dist"))
        tag = os.path.basename(wheel)
        print(f"wheel: {tag}")
        assert "-none-any" not in tag, f"expected a platform wheel, got {tag}"

        import zipfile
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
        assert any(n.startswith("fastrnn/_cython/_kernels.") for n in names), names
        if sysconfig.get_platform().endswith("x86_64"):   # as setup.py decides
            for isa in ("avx2", "avx512"):
                assert any(n.startswith(f"fastrnn/_cython/_kernels_{isa}.") for n in names), names
        leaked = [n for n in names if n.endswith((".pyx", ".pxd", ".c")) or n.startswith("kernels/")]
        assert not leaked, f"sources in the wheel: {leaked}"

        venv = str(tmp_path / "venv")
        _run([sys.executable, "-m", "venv", venv], timeout=300)
        py = _venv_python(venv)
        # numpy comes with the wheel's dependencies; scipy provides BLAS to the cython kernels
        _run([py, "-m", "pip", "install", "--disable-pip-version-check", wheel, "scipy"], timeout=900)
        # run the smoke script from outside the checkout, so the installed package is the one imported
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "FASTRNN_BACKEND"))}
        proc = _run([py, os.path.abspath(__file__), "--require-cython"], timeout=600,
                    cwd=str(tmp_path), env=env)
        print(proc.stdout)
        assert "smoke test passed" in proc.stdout
        assert os.path.join(venv, "") in proc.stdout.replace("\\", os.sep), \
            "the smoke test imported fastrnn from outside the fresh venv"

    def test_smoke_in_this_environment():
        """The smoke script itself (cython backend), against the fastrnn this test run imports."""
        import fastrnn
        from helpers import required
        require = required("FASTRNN_REQUIRE_CYTHON") or \
            "cython" in os.environ.get("FASTRNN_REQUIRE_BACKENDS", "")
        if not os.path.dirname(fastrnn.__file__).startswith(ROOT):
            pytest.skip("fastrnn is not imported from this checkout")
        if not fastrnn.backends()["cython"]["available"] and not require:
            pytest.skip("cython backend not built here")
        assert smoke(require_cython=require, backends=["cython"]) > 0


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--require-cython", action="store_true",
                        help="fail when the cython backend is not available")
    args = parser.parse_args(argv)
    smoke(require_cython=args.require_cython)
    return 0


if __name__ == "__main__":
    sys.exit(main())
