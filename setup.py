"""Build script: the package (metadata lives in pyproject.toml) plus the optional Cython extension.

The extension ``fastrnn._cython._kernels`` (the ``cython`` backend) is built
from ``kernels/_kernels.pyx`` when Cython, NumPy, SciPy (for
``scipy.linalg.cython_blas``) and a C compiler are available.  Otherwise the
build goes on without it, a pure-Python install with the numpy (and numba)
backends, and says so in a message.  On x86-64 (Linux, macOS) the same source
is built a second time with AVX2 and FMA, as ``fastrnn._cython._kernels_avx2``
(``kernels/_kernels_avx2.pyx``), which ``fastrnn._cython`` picks on CPUs that
have them; the first build stays the one that runs on any CPU of the platform.

Environment variables:

FASTRNN_REQUIRE_CYTHON=1
    A missing Cython/NumPy/SciPy or a failed compilation is an error instead
    of a fallback (wheel builds set it, so a wheel never ships without the
    extension).
FASTRNN_NATIVE=1
    Compile for this machine's CPU (``-march=native``): faster element-wise
    loops, but the result only runs on CPUs like this one.  Never for wheels.
"""

import os
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _switch(name):
    """An off/on environment switch, read as fastrnn reads its own (fastrnn._runtime._switch,
    which the build cannot import): 0/1, false/true, no/yes, off/on; unset or empty is off;
    anything else is refused rather than read as off."""
    value = os.environ.get(name, "").strip().lower() or "0"
    if value not in ("0", "1", "false", "true", "no", "yes", "off", "on"):
        raise SystemExit(f"{name} must be 0 or 1 (or false/true, no/yes, off/on), but got "
                         f"{os.environ.get(name)!r}")
    return value in ("1", "true", "yes", "on")


REQUIRE_CYTHON = _switch("FASTRNN_REQUIRE_CYTHON")
NATIVE = _switch("FASTRNN_NATIVE")

HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = "kernels"
#: Cython compiler directives of every build of the kernels
DIRECTIVES = dict(language_level=3, boundscheck=False, wraparound=False, cdivision=True,
                  initializedcheck=False, nonecheck=False, embedsignature=True)
#: flags of the builds for x86-64 CPUs with more than the baseline (what fastrnn._cython checks);
#: the AVX-512 one also vectorises the element-wise loops 512 bits wide (GCC prefers 256)
ISA_FLAGS = {
    "_avx2": ["-mavx2", "-mfma"],
    "_avx512": ["-mavx512f", "-mavx512vl", "-mavx512bw", "-mavx512dq", "-mavx2", "-mfma",
                "-mprefer-vector-width=512"],
}
BANNER = "=" * 78


def _fallback(reason):
    """Report why the extension is not built; fatal under FASTRNN_REQUIRE_CYTHON=1."""
    if REQUIRE_CYTHON:
        sys.stderr.write(f"\n{BANNER}\nfastrnn: the Cython extension is required "
                         f"(FASTRNN_REQUIRE_CYTHON=1) but cannot be built:\n  {reason}\n{BANNER}\n")
        raise SystemExit(f"fastrnn: Cython extension required but not built: {reason}")
    sys.stderr.write(
        f"\n{BANNER}\nfastrnn: building WITHOUT the Cython extension (backend 'cython' will be "
        f"unavailable;\nthe numpy and numba backends work as usual).\n  reason: {reason}\n"
        f"To build it: install Cython>=3, numpy, scipy and a C compiler, then reinstall,\n"
        f"bypassing the wheel this build leaves in pip's cache:\n"
        f"  pip install --no-cache-dir --force-reinstall --no-binary fastrnn fastrnn\n"
        f"Set FASTRNN_REQUIRE_CYTHON=1 to make this an error.\n{BANNER}\n")


def _extensions():
    """The extension modules to build (their .pyx sources), or [] after a message."""
    try:
        import Cython  # noqa: F401
        import numpy
        import scipy.linalg  # noqa: F401  (its cython_blas.pxd is cimported)
    except ImportError as exc:
        _fallback(f"{type(exc).__name__}: {exc}")
        return []
    depends = [os.path.join(KERNELS, name) for name in ("_kernels.pyx", "_common.pxd", "fastrnn_mm.h",
                                                          "fastrnn_pool.h", "fastrnn_optim.h")]

    def build(name):
        return Extension(
            f"fastrnn._cython.{name}",
            sources=[os.path.join(KERNELS, f"{name}.pyx")],
            depends=depends,
            include_dirs=[numpy.get_include(), KERNELS],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        )

    # the AVX2 and AVX-512 builds where the compiler targets x86-64 and takes GCC's flags (not
    # MSVC); fastrnn._cython.PLATFORM_ISAS states the same rule
    x86 = sysconfig.get_platform().endswith("x86_64")
    return [build("_kernels")] + ([build(f"_kernels{suffix}") for suffix in ISA_FLAGS] if x86 else [])


class OptionalBuildExt(build_ext):
    """build_ext that adds optimisation flags and turns a failure into the fallback."""

    def build_extensions(self):
        if self.compiler.compiler_type == "msvc":
            flags = ["/O2"]
        else:
            # -fno-trapping-math lets the clamps of the activations (compares) be if-converted,
            # so their loops vectorise; -fno-math-errno lets square roots vectorise (nothing
            # reads errno); NaN and inf keep their IEEE meaning (no -ffast-math); loops start on
            # a 64-byte line: the micro-kernel's inner loop (126 bytes) then spans two of the
            # decoder's 64-byte windows, not three.  When an unrelated change moved it to byte
            # 32 of a line, the LSTM ran 2-4% slower (Zen 3); aligned, it runs 1.02-1.05x as
            # fast as in the build where it had started on a line by chance
            flags = ["-O3", "-fno-trapping-math", "-fno-math-errno", "-falign-loops=64"] + (
                ["-march=native"] if NATIVE else [])
        # the debug information Python's CFLAGS ask for (-g) out of the installed modules (5.6
        # of their 6 MB each): the symbols stay, so profiles still name the kernels
        links = ["-Wl,-S"] if sys.platform.startswith("linux") and \
            self.compiler.compiler_type == "unix" else []
        for ext in self.extensions:
            isa = next((f for suffix, f in ISA_FLAGS.items() if ext.name.endswith(suffix)), [])
            ext.extra_compile_args = list(ext.extra_compile_args or []) + flags + isa
            ext.extra_link_args = list(ext.extra_link_args or []) + links
        super().build_extensions()

    def finalize_options(self):
        if self.parallel is None:
            self.parallel = True   # the builds compile side by side, one per core
        self._failed = set()
        # cythonize here, not when setup.py is imported: sdist and egg_info need no generated C
        if self.distribution.ext_modules:
            try:
                from Cython.Build import cythonize
                self.distribution.ext_modules = cythonize(
                    self.distribution.ext_modules,
                    include_path=[KERNELS],
                    build_dir=os.path.join("build", "cython"),  # generated C stays out of the tree
                    compiler_directives=DIRECTIVES,
                    quiet=True,
                )
            except Exception as exc:  # a Cython compile error
                _fallback(f"cythonize failed: {type(exc).__name__}: {exc}")
                self.distribution.ext_modules = []
        super().finalize_options()

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler at all (DistutilsPlatformError) and the like
            _fallback(f"{type(exc).__name__}: {exc}")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # CCompilerError, DistutilsExecError, a failed link
            _fallback(f"compiling {ext.name} failed: {type(exc).__name__}: {exc}")
            self._failed.add(ext.name)

    def _built_only(self, method):
        """Call ``method`` with the extensions that failed left out (nothing to copy or list)."""
        every = self.extensions
        self.extensions = [e for e in every if e.name not in self._failed]
        try:
            return method()
        finally:
            self.extensions = every

    def copy_extensions_to_source(self):
        return self._built_only(super().copy_extensions_to_source)

    def get_outputs(self):
        return self._built_only(super().get_outputs)


setup(
    ext_modules=_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
)
