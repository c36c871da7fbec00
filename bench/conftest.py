"""pytest configuration of the benchmark suite (``bench/``).

Ordinary ``pytest`` runs (``--benchmark-disable`` in the project's addopts)
execute every benchmark once as a smoke test; ``pytest bench --benchmark-enable``
times them.  The ``bench`` marker selects or deselects the suite
(``pytest -m "not bench"`` runs the tests only).

The environment variables of ``tests/conftest.py`` apply here too: with
``FASTRNN_REQUIRE_TORCH=1`` the torch peer's benchmarks fail instead of
skipping when torch is missing, and so do those of the backends listed in
``FASTRNN_REQUIRE_BACKENDS`` (comma-separated).
"""

import os

import pytest

from fastrnn.bench.cases import PEER, backend_status
from fastrnn.bench.machine import usable_cores
from fastrnn.bench.workloads import Checker


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "bench: a pytest-benchmark case of bench/ (a smoke run without --benchmark-enable)")


@pytest.fixture(scope="session")
def status():
    """Which backends can run here (fastrnn's and the torch peer), computed once."""
    return backend_status()


@pytest.fixture(scope="session")
def required():
    """Backends whose benchmarks must run (and fail when missing) rather than skip."""
    names = {b.strip() for b in os.environ.get("FASTRNN_REQUIRE_BACKENDS", "").split(",") if b.strip()}
    if os.environ.get("FASTRNN_REQUIRE_TORCH") == "1":
        names.add(PEER)
    return names


@pytest.fixture(scope="session")
def checker():
    """One Checker for the session, so each numpy reference result is computed once."""
    return Checker()


def _benchmarks_enabled(config):
    """True under ``--benchmark-enable`` (pytest-benchmark's own decision, as its fixture makes it)."""
    session = getattr(config, "_benchmarksession", None)
    if session is not None and hasattr(session, "disabled"):
        return not session.disabled
    return not (config.getoption("benchmark_disable", False)
                and not config.getoption("benchmark_enable", False))


@pytest.fixture(scope="session", autouse=True)
def torch_threads(request, status):
    """Threads of the torch peer: the usable cores (2 on the dev machine) when timing.

    A smoke run (benchmarks disabled) gives torch one thread: it measures
    nothing, and on a busy machine the OpenMP barriers of a multi-threaded
    torch make a single call take seconds.
    """
    if not status[PEER]["available"]:
        yield None
        return
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(usable_cores() if _benchmarks_enabled(request.config) else 1)
    yield torch.get_num_threads()
    torch.set_num_threads(before)
