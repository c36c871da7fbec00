"""The ``fastrnn`` command line (``python -m fastrnn COMMAND``), one module per command.

Each command module has ``NAME``, ``HELP``, ``DESCRIPTION``, ``add_arguments(parser)``
and ``run(args) -> int`` (the exit status); :mod:`fastrnn.__main__` wires them
into one argparse parser.
"""

from . import adding, caption, demo, forecast, gradflow, seq2seq

#: the commands in the order ``--help`` lists them
COMMANDS = (demo, adding, gradflow, forecast, seq2seq, caption)

__all__ = ["COMMANDS"]
