"""Shared fixtures: the backends under test, torch as the parity peer, tolerances.

Environment variables:

FASTRNN_REQUIRE_TORCH=1
    Tests that need torch fail instead of skipping when it is missing.
FASTRNN_REQUIRE_BACKENDS=numba,cython
    These backends must be available: their parametrised tests run (and fail
    loudly) even when the backend does not import, instead of being left out.
"""

import os

import pytest

import fastrnn

from helpers import BACKENDS, required


def pytest_report_header(config):
    status = fastrnn.backends()
    lines = [f"fastrnn backends under test: {BACKENDS}"]
    lines += [f"  {name}: unavailable ({s['reason']})" for name, s in status.items() if not s["available"]]
    return lines


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Every backend this installation has (plus the required ones, so they fail if missing)."""
    return request.param


@pytest.fixture(scope="session")
def torch():
    """PyTorch as the parity peer; a skip with the reason, or a failure under FASTRNN_REQUIRE_TORCH=1."""
    try:
        import torch as _torch
    except ImportError as exc:
        message = (f"torch is not installed ({exc}); install it with `pip install torch==2.13.0` "
                   f"(CPU build) to run the PyTorch parity tests")
        if required("FASTRNN_REQUIRE_TORCH"):
            pytest.fail(message + " -- required because FASTRNN_REQUIRE_TORCH=1")
        pytest.skip(message)
    _torch.set_num_threads(1)   # the parity problems are tiny: threads only add overhead
    return _torch

