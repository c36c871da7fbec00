"""``python -m fastrnn COMMAND [options]``: the fastrnn command line.

Commands: ``demo`` (train a character-level LSTM), ``adding`` (the adding
problem, RNN vs LSTM vs GRU), ``gradflow`` (vanishing and exploding
gradients, measured), ``forecast`` (yearly sunspot numbers), ``seq2seq``
(an encoder-decoder that learns to add numbers written as text),
``caption`` (one-to-many: a digit image in, its name spelled out).
``python -m fastrnn COMMAND --help`` describes each.

Exit status: 0 on success, 1 when the command fails (the message says why) or
its output pipe is closed early, 2 for bad arguments, 130 when interrupted.
"""

import argparse
import os
import signal
import sys
import threading


def build_parser():
    """The argparse parser with one sub-parser per command."""
    from . import __version__
    from .cli import COMMANDS

    parser = argparse.ArgumentParser(
        prog="fastrnn",
        description="fastrnn: RNN, LSTM and GRU on NumPy arrays with explicit backpropagation "
                    "through time. Train and examine recurrent models from the command line.",
        epilog="Run 'fastrnn COMMAND --help' for the options of a command.")
    parser.add_argument("--version", action="version", version=f"fastrnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.DESCRIPTION,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _prog=f"fastrnn {module.NAME}")
    return parser


def main(argv=None):
    """Run the command line with ``argv`` (``sys.argv[1:]`` by default); returns the exit status.

    Ctrl-C once ``main`` runs (argument parsing, the command's imports, the command) prints
    one line and gives 130, also where a library swallowed the ``KeyboardInterrupt`` and
    failed instead (numba compiling); output cut off by a closed pipe (``fastrnn forecast |
    head -2``) ends quietly with 1; sizes too large for the memory end with a message and 1.
    """
    prog = "fastrnn"
    interrupted = []

    def on_sigint(signum, frame):
        interrupted.append(signum)
        signal.default_int_handler(signum, frame)

    previous = None
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        from .cli._common import CommandError, UsageError

        parser = build_parser()
        argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:         # --help, --version (0) or a usage error (2)
            return exc.code if isinstance(exc.code, int) else 2
        if args.command is None:
            parser.print_help()
            return 2
        prog = args._prog
        try:
            status = args._run(args)
        except CommandError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 2 if isinstance(exc, UsageError) else 1
        sys.stdout.flush()                # a closed pipe shows here, not at interpreter exit
        return 0 if status is None else int(status)
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of our output has gone: point stdout at devnull so that Python's own
        # flush at exit does not raise again (the recipe of the docs of the signal module)
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return 1
    except Exception as exc:
        if interrupted:     # a Ctrl-C that a library turned into another error
            print(f"\n{prog}: interrupted", file=sys.stderr)
            return 130
        if isinstance(exc, MemoryError):
            print(f"{prog}: error: not enough memory for these sizes ({exc}); try smaller "
                  f"sizes (--hidden, --batch, --test-size, ...)", file=sys.stderr)
            return 1
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    _status = main()
    if _status == 130:
        # interrupted: a KeyboardInterrupt that went through code run by exec (SciPy's imports
        # do that) leaves CPython's "unhandled interrupt" mark, and 'python -m' then ends the
        # process by SIGINT whatever status is returned; end it with the documented 130
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(130)
    sys.exit(_status)
