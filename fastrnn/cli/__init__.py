"""The ``fastrnn`` command line (``python -m fastrnn COMMAND``), one module per command.

Each command module has ``NAME``, ``HELP``, ``DESCRIPTION``, ``add_arguments(parser)``
and ``run(args) -> int`` (the exit status); :mod:`fastrnn.__main__` wires them
into one argparse parser.
"""

from . import adding, demo, forecast, gradflow

#: the commands in the order ``--help`` lists them
COMMANDS = (demo, adding, gradflow, forecast)

__all__ = ["COMMANDS"]
