"""``fastrnn bench``: the benchmark report of the compiled backends (``fastrnn.bench``).

Runs the report of :mod:`fastrnn.bench` (median times per backend and the
ratio to PyTorch) with the arguments that follow ``bench``.  Installations
without that module say so and exit with status 1.
"""

import argparse
import importlib
import inspect
import runpy
import sys

from ._common import CommandError, plain

NAME = "bench"
HELP = "benchmark report of the backends (fastrnn.bench), if installed"
DESCRIPTION = plain(__doc__) + """

examples:
  fastrnn bench                  # the full report
  fastrnn bench --quick          # a shorter one (options are the report's own)
  fastrnn bench --help           # the report's options (when it is installed)
"""


def add_arguments(p):
    p.add_argument("report_args", nargs=argparse.REMAINDER, metavar="...",
                   help="arguments passed on to the benchmark report")


def _load():
    """The report's entry point: a callable ``main(argv)``, or None to run the module as __main__."""
    try:
        module = importlib.import_module("fastrnn.bench")
    except ModuleNotFoundError as exc:
        if exc.name not in ("fastrnn.bench",):
            raise CommandError(f"the benchmark report could not be loaded: {exc}") from None
        raise CommandError(
            "the benchmark report is not available in this installation: the module "
            "fastrnn.bench (part of the numba backend work) is not installed. Update fastrnn "
            "to a version that has it, or run the benchmark suite of a source checkout with "
            "'pytest bench --benchmark-enable'.") from None
    except Exception as exc:    # a broken report module: say what broke
        raise CommandError(f"the benchmark report could not be loaded: "
                           f"{type(exc).__name__}: {exc}") from None
    for holder in (module, _submodule("fastrnn.bench.report")):
        if holder is not None and callable(getattr(holder, "main", None)):
            return holder.main
    return None


def _submodule(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def run(args):
    """Entry from the argparse sub-parser (``fastrnn bench [args]``)."""
    argv = list(args.report_args)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    return run_argv(argv, help_text=None)


def run_argv(argv, help_text=None):
    """Run the report with ``argv`` (everything after ``bench`` on the command line).

    ``--help`` shows the report's own options when it is installed, else
    ``help_text`` (this command's description).
    """
    try:
        entry = _load()
    except CommandError:
        if help_text is not None and ("-h" in argv or "--help" in argv):
            print(help_text)
            return 0
        raise
    if entry is not None:
        try:
            kwargs = {"prog": "fastrnn bench"} if "prog" in inspect.signature(entry).parameters else {}
            status = entry(argv, **kwargs)
        except SystemExit as exc:
            status = exc.code
    else:
        saved = sys.argv
        sys.argv = ["fastrnn bench"] + argv
        try:
            runpy.run_module("fastrnn.bench", run_name="__main__", alter_sys=False)
            status = 0
        except SystemExit as exc:
            status = exc.code
        finally:
            sys.argv = saved
    if status is None:
        return 0
    if isinstance(status, int):
        return status
    print(status, file=sys.stderr)      # sys.exit("message")
    return 1
