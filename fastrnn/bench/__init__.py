"""Benchmarks of fastrnn's backends against each other and against PyTorch.

``python -m fastrnn.bench`` prints the report (see :mod:`fastrnn.bench.report`);
the pytest-benchmark suite under ``bench/`` in a checkout is parametrised by
the same table of cases (:mod:`fastrnn.bench.cases`) and the same workloads
and checks (:mod:`fastrnn.bench.workloads`).  Nothing here imports torch or
numba until a run asks for them.
"""

from .cases import BACKENDS, CASES, CELLS, PASSES, SHAPES, Case, Shape
from .report import Report, Settings, main, run_report

__all__ = ["BACKENDS", "CASES", "CELLS", "PASSES", "SHAPES", "Case", "Shape", "Report",
           "Settings", "main", "run_report"]
