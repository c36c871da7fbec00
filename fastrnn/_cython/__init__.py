"""The ``cython`` backend: the kernel contract of :mod:`fastrnn.reference`, compiled.

The kernels live in an extension module built by ``setup.py`` from
``kernels/_kernels.pyx`` when Cython and a C compiler are there (``pip install
.``, ``pip install -e .``, or a platform wheel).  Without it this package does
not import and ``fastrnn.backends()`` says why.  BLAS comes from SciPy
(``scipy.linalg.cython_blas``), so SciPy must be installed.

Builds: ``_kernels`` runs on any CPU of the platform; on x86-64 there are also
``_kernels_avx2``, the same source compiled with AVX2 and FMA, and
``_kernels_avx512``, with AVX-512 (F, VL, BW, DQ).  The import picks once, by
:data:`ISA_ENV`:

``auto`` (default)
    the first (widest) of :data:`ISAS` that this installation has and this CPU
    and its operating system run;
``avx512``, ``avx2`` or ``baseline``
    that build, or an ImportError saying why it cannot be used.

:data:`ISA` names the build in use, :data:`kernels` is its module and
:func:`available_isas` lists the builds this machine can use (the tests run on each).

Threads: a kernel call holds SciPy's OpenBLAS at one thread and splits the work
itself (the batch, in the time loop; output rows, in the GEMMs before and after
it) over the threads of :mod:`fastrnn._runtime`, shared with the numba backend:
:func:`get_num_threads` of them (``$FASTRNN_NUM_THREADS``, default the usable
cores; :func:`set_num_threads` or ``fastrnn.set_num_threads``).

A backward consumes its cache (it writes the gradients over the forward's
stored gates), as in the numba backend: a second backward on it raises.
"""

import importlib
import importlib.util
import os
import sysconfig

from .._runtime import get_num_threads, set_num_threads  # noqa: F401 - shared with numba

if importlib.util.find_spec(__name__ + "._kernels") is None:
    raise ImportError("fastrnn was installed without its compiled Cython extension (the module "
                      "fastrnn._cython._kernels is not there)")
try:
    from . import _kernels as _baseline   # every build has it; it also tells what the CPU runs
except ImportError as exc:
    # (each with its own remedy: fastrnn.backends() would otherwise say to rebuild, which
    # does not help an extension that is there)
    if getattr(exc, "name", None) == "scipy" or "scipy" in str(exc):
        error = ImportError(f"the cython backend needs SciPy for BLAS ({exc})")
        error.hint = "install it: pip install scipy"
    else:
        error = ImportError(f"fastrnn's compiled Cython extension is installed but failed to "
                            f"import ({exc})")
        error.hint = ("install the NumPy and SciPy versions fastrnn requires (pip check), or "
                      "reinstall fastrnn for the NumPy installed")
    raise error from exc

#: environment variable choosing the build of the kernels: auto, avx512, avx2 or baseline
ISA_ENV = "FASTRNN_CYTHON_ISA"
#: the builds, widest first
ISAS = ("avx512", "avx2", "baseline")
#: what the CPU (and its operating system) must run for each build
_NEEDS = {"avx512": "AVX-512 (F, VL, BW, DQ)", "avx2": "AVX2 and FMA"}
#: the builds setup.py makes on this platform (its twin rule: the AVX2 and AVX-512 ones where
#: the platform is x86-64), widest first
PLATFORM_ISAS = ISAS if sysconfig.get_platform().endswith("x86_64") else ("baseline",)

__all__ = [
    "rnn_forward", "rnn_backward", "rnn_step_forward", "rnn_step_backward",
    "lstm_forward", "lstm_backward", "lstm_step_forward", "lstm_step_backward",
    "gru_forward", "gru_backward", "gru_step_forward", "gru_step_backward",
    "rnn_step_plan", "lstm_step_plan", "gru_step_plan",
]
#: what this package takes from the chosen build, besides the kernels
_SHARED = ("APPROX_MAX_ABS_ERR", "BLAS_LIBRARIES", "activation", "adam_update", "sum_squares",
           "dense_forward", "dense_backward", "cross_entropy_rows")


def _why_not(isa):
    """Why this machine cannot use build ``isa`` (empty when it can)."""
    if isa == "baseline":
        return ""
    if importlib.util.find_spec(f"{__name__}._kernels_{isa}") is None:
        return f"this installation has no {isa} build of the kernels (setup.py makes one on x86-64)"
    if not _baseline.cpu_runs(isa):
        return f"this CPU (or its operating system) does not run {_NEEDS[isa]} code"
    return ""


def available_isas():
    """The builds of the kernels this installation has and this CPU runs, widest first."""
    return [isa for isa in ISAS if not _why_not(isa)]


def expected_isas():
    """The builds an installation made by setup.py has here and this CPU runs, widest first
    (what :func:`available_isas` should say)."""
    return [isa for isa in PLATFORM_ISAS if _baseline.cpu_runs(isa)]


def load(isa):
    """The module of build ``isa`` (one of :data:`ISAS`); ImportError if it cannot be used here."""
    if isa not in ISAS:
        raise ValueError(f"isa must be one of {ISAS}, got {isa!r}")
    reason = _why_not(isa)
    if reason:
        raise ImportError(f"the {isa} build of the cython kernels cannot be used: {reason}")
    return _baseline if isa == "baseline" else importlib.import_module(f"{__name__}._kernels_{isa}")


def _setting_error(message):
    """The ImportError of a build :data:`ISA_ENV` asks for that cannot be had: its ``hint``
    (read by :func:`fastrnn.backends`) is the setting's, not a rebuild, which would not help."""
    exc = ImportError(message)
    exc.hint = f"unset {ISA_ENV}, or set it to 'auto' or to one of {available_isas()}"
    exc.setting = ISA_ENV
    return exc


def _chosen():
    want = os.environ.get(ISA_ENV, "").strip().lower() or "auto"
    if want == "auto":
        return available_isas()[0]
    if want not in ISAS:
        raise _setting_error(f"{ISA_ENV}={want!r}: expected 'auto' or one of {ISAS}")
    try:
        load(want)
    except ImportError as exc:
        raise _setting_error(f"{ISA_ENV}={want!r}: {exc}") from None
    return want


#: the build in use
ISA = _chosen()
#: its module
kernels = load(ISA)
globals().update({name: getattr(kernels, name) for name in __all__ + list(_SHARED)})
