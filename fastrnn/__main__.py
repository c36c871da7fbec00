"""``python -m fastrnn COMMAND [options]``: the fastrnn command line.

Commands: ``demo`` (train a character-level LSTM), ``adding`` (the adding
problem, RNN vs LSTM vs GRU), ``gradflow`` (vanishing and exploding
gradients, measured), ``forecast`` (yearly sunspot numbers).
``python -m fastrnn COMMAND --help`` describes each.

Exit status: 0 on success, 1 when the command fails (the message says why),
2 for bad arguments, 130 when interrupted.
"""

import argparse
import sys


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
    """Run the command line with ``argv`` (``sys.argv[1:]`` by default); returns the exit status."""
    from .cli._common import CommandError

    parser = build_parser()
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:         # --help, --version (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help()
        return 2
    try:
        status = args._run(args)
    except CommandError as exc:
        print(f"{args._prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{args._prog}: interrupted", file=sys.stderr)
        return 130
    return 0 if status is None else int(status)


if __name__ == "__main__":
    sys.exit(main())
