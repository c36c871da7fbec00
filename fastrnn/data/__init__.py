"""Small real data sets shipped with fastrnn (see ``README.md`` in this folder for sources).

* :func:`load_sunspots`: yearly mean sunspot numbers, 1700-2008 (309 values).
"""

import csv
import io
from importlib import resources

import numpy as np

__all__ = ["load_sunspots", "read_text"]


def read_text(name):
    """The text of a data file shipped in this package (e.g. ``"sunspots.csv"``)."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def load_sunspots():
    """Yearly sunspot numbers 1700-2008.

    Source: the ``sunspots`` data set of statsmodels (``statsmodels/datasets/sunspots``),
    from NOAA's National Geophysical Data Center; public domain.

    Returns
    -------
    years : (309,) int64 array
        1700, 1701, ..., 2008.
    values : (309,) float64 array
        Yearly mean sunspot number (``SUNACTIVITY``).
    """
    rows = list(csv.reader(io.StringIO(read_text("sunspots.csv"))))
    if rows[0] != ["YEAR", "SUNACTIVITY"]:
        raise ValueError(f"unexpected header in sunspots.csv: {rows[0]}")
    years = np.array([int(float(r[0])) for r in rows[1:] if r], dtype=np.int64)
    values = np.array([float(r[1]) for r in rows[1:] if r], dtype=np.float64)
    return years, values
