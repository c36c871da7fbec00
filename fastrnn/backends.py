"""Backend dispatch: which kernel implementation runs a layer or a cell.

Every backend is a module exposing, for each cell type ``rnn``, ``lstm`` and
``gru``, the four kernels of the contract written down in
:mod:`fastrnn.reference`: ``<cell>_forward``, ``<cell>_backward``,
``<cell>_step_forward`` and ``<cell>_step_backward``.  A backend may also have
``<cell>_step_plan(weights, **options)``: a callable ``plan(x, hx)`` that is
``<cell>_step_forward(x, hx, weights, False, **options)[0]`` for the arguments it takes
as they are and None for the others (the cells' eval-mode steps call it first).

``backend="auto"`` means the environment variable ``FASTRNN_BACKEND`` when it
is set, otherwise the first available of :data:`AUTO_ORDER`.
"""

import importlib
import os
import sys
import warnings

from .celltypes import CELLS

#: backend name -> module that implements the kernel contract
MODULES = {
    "numpy": "fastrnn.reference",
    "numba": "fastrnn.jit",
    "cython": "fastrnn._cython",
}
#: what ``backend="auto"`` picks, first available wins: the fastest first (bench/RESULTS.md:
#: cython is the faster compiled backend on most rows, and starts without compiling)
AUTO_ORDER = ("cython", "numba", "numpy")
#: how to get a backend that is missing
HINTS = {
    "numba": "install numba (pip install numba)",
    "cython": "build the extension from source with Cython and a C compiler "
              "(pip install --no-cache-dir --force-reinstall --no-binary fastrnn fastrnn, or "
              "pip install -e . in a checkout)",
}
ENV_VAR = "FASTRNN_BACKEND"

_loaded = {}   # name -> module, or the exception that stopped its import


def _load(name):
    if name not in _loaded:
        try:
            _loaded[name] = importlib.import_module(MODULES[name])
        except Exception as exc:  # ImportError, or a broken build raising something else
            _loaded[name] = exc
        else:   # BLAS's parallel jobs on a pool that does not spin (see fastrnn._runtime)
            from ._runtime import install_blas_pool
            install_blas_pool()
    return _loaded[name]


def backends():
    """Which backends this installation has.

    Returns
    -------
    dict
        ``{name: {"available": bool, "reason": str}}`` for every known
        backend; ``reason`` says why a missing one is missing and how to get
        it, and is empty for an available one.
    """
    out = {}
    for name in MODULES:
        mod = _load(name)
        if isinstance(mod, Exception):
            # (an error of a setting carries its own hint: a rebuild would not help)
            hint = getattr(mod, "hint", None) or HINTS.get(name, "")
            reason = f"{type(mod).__name__}: {mod}" + (f"; to get it, {hint}" if hint else "")
            out[name] = {"available": False, "reason": reason}
        else:
            out[name] = {"available": True, "reason": ""}
    return out


def warmup():
    """Compile (or load from the disk cache) the kernels of every available compiled backend.

    Otherwise the first call of each numba kernel pays its compilation; after
    this no call compiles.  Backends without a ``warmup`` need none.
    """
    for name in MODULES:
        module = _load(name)
        if not isinstance(module, Exception) and hasattr(module, "warmup"):
            module.warmup()


class Backend:
    """A resolved backend: its name and its kernels by cell type."""

    def __init__(self, name, module):
        self.name = name
        self.module = module
        self._kernels = {cell: tuple(getattr(module, f"{cell}_{kind}") for kind in
                                     ("forward", "backward", "step_forward", "step_backward"))
                         for cell in CELLS}
        self._plans = {cell: getattr(module, f"{cell}_step_plan", None) for cell in CELLS}

    def kernels(self, cell):
        """``(forward, backward, step_forward, step_backward)`` for ``cell`` in CELLS."""
        return self._kernels[cell]

    def step_plan(self, cell, weights, **options):
        """The backend's prepared eval-mode step of ``cell`` (see above) for ``weights`` and
        ``options``, or None where it has none for them."""
        make = self._plans[cell]
        return None if make is None else make(weights, **options)

    def __repr__(self):
        return f"Backend({self.name!r})"


_warned = set()   # backends whose setting's error "auto" has warned of


def _passed_over(name):
    """Warn (once a process) that "auto" passes over backend ``name`` because an environment
    variable set for it is wrong (its error has ``setting``): a typo there should not quietly
    make every layer slower."""
    exc = _loaded.get(name)
    if getattr(exc, "setting", None) and name not in _warned:
        _warned.add(name)
        # the warning points at the first frame outside this package: the user's line
        frame, level, package = sys._getframe(0), 1, os.path.dirname(__file__)
        while frame is not None and frame.f_code.co_filename.startswith(package + os.sep):
            frame, level = frame.f_back, level + 1
        warnings.warn(f"backend='auto' is not using {name!r}: {exc}; to use it, {exc.hint}",
                      RuntimeWarning, stacklevel=level)


def resolve(name="auto"):
    """Turn a backend name into a :class:`Backend`.

    Parameters
    ----------
    name : str
        ``"auto"``, or one of :data:`MODULES`.

    Raises
    ------
    TypeError
        ``name`` is not a string.
    ValueError
        ``name`` (or ``FASTRNN_BACKEND``) is not a known backend.
    RuntimeError
        The backend asked for is known but not available here; the message says why.
    """
    if not isinstance(name, str):
        raise TypeError(f"backend must be a str, one of {['auto', *MODULES]}, "
                        f"but got {type(name).__name__}")
    source = "backend"
    if name == "auto":
        env = os.environ.get(ENV_VAR, "").strip().lower()    # (as the other switches)
        if env and env != "auto":
            name, source = env, f"environment variable {ENV_VAR}"
        else:
            for candidate in AUTO_ORDER:
                if not isinstance(_load(candidate), Exception):
                    return Backend(candidate, _load(candidate))
                _passed_over(candidate)
            raise RuntimeError(f"no backend is available: {backends()}")  # numpy always imports
    if name not in MODULES:
        raise ValueError(f"{source} must be one of {['auto', *MODULES]}, but got {name!r}")
    mod = _load(name)
    if isinstance(mod, Exception):
        raise RuntimeError(f"backend {name!r} (from {source}) is not available: "
                           f"{backends()[name]['reason']}")
    return Backend(name, mod)
