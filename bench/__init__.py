"""The benchmark of a source checkout: fastrnn against the libraries users would pick instead.

``python -m bench`` runs the report (:mod:`bench.report`); every engine is
timed in processes of its own (:mod:`bench.worker`) on the one table of rows
(:mod:`bench.cases`) and engines (:mod:`bench.engines`).  Nothing here is
installed with the package.
"""
