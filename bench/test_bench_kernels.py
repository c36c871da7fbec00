"""pytest-benchmark suite: every case of the table on every backend.

Parametrised by the one table of cases (:data:`fastrnn.bench.cases.CASES`:
cell x pass x shape, plus the LSTMCell/GRUCell steps) and the one list of
backends (:data:`fastrnn.bench.cases.BACKENDS`: every fastrnn backend, then
torch).  ``benchmark.group`` is ``f"{cell}-{pass}-{shape}"``, so each group
of pytest-benchmark's table compares the backends on one case.

Before anything is timed, the backend's results (outputs, final states and,
for ``train``, input, state and parameter gradients) are compared with the
numpy reference's on the same weights and inputs; torch gets fastrnn's
weights through ``load_state_dict``.  A warm-up call then compiles whatever
is compiled lazily, so the timings exclude compilation.

Smoke mode (benchmarks disabled, the default of a plain ``pytest``): each
benchmark runs once, checked first, at its case's batch, input and hidden
sizes but on the first :data:`SMOKE_STEPS` time steps only.  That exercises
every backend at every shape (thread split of the batch, GEMM blocking of
the sizes) in seconds where the full sequences would take minutes (the
numpy reference alone takes seconds per call at the large shape).  With
``--benchmark-enable`` everything runs, is checked and is timed at full size.
"""

import pytest

from fastrnn.bench.cases import BACKENDS, CASES, REFERENCE, gemm_flops
from fastrnn.bench.timing import estimate_call_time, plan_rounds
from fastrnn.bench.workloads import Workload

pytestmark = pytest.mark.bench

#: smoke mode runs (and checks) the sequences cut to this many time steps
SMOKE_STEPS = 8
#: timed mode: bounds on the rounds of one benchmark, and seconds per round at least
MIN_ROUNDS, MAX_ROUNDS, MIN_ROUND_TIME = 2, 1000, 0.005
#: timed mode: seconds one benchmark may take when ``--benchmark-max-time`` is not set
DEFAULT_MAX_TIME = 1.0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bench(benchmark, status, required, checker, case, backend):
    """Check, warm up and time one case on one backend."""
    if not status[backend]["available"]:
        if backend in required:
            pytest.fail(f"{backend} is required (FASTRNN_REQUIRE_*) but not available: "
                        f"{status[backend]['reason']}")
        pytest.skip(f"{backend} not available: {status[backend]['reason']}")
    smoke = benchmark.disabled
    benchmark.group = case.group
    benchmark.extra_info.update(cell=case.cell, pass_=case.pass_, shape=case.shape.name,
                                T=case.shape.T, B=case.shape.B, I=case.shape.I, H=case.shape.H,
                                backend=backend, gemm_flops=gemm_flops(case))
    if smoke:
        work = Workload(case, backend, steps=SMOKE_STEPS)
        checker.check(case, backend, steps=SMOKE_STEPS, workload=work)
        benchmark.pedantic(work, rounds=1, iterations=1)
        return
    work = Workload(case, backend)
    if backend != REFERENCE:  # the checked call is also the first, compiling one
        benchmark.extra_info["max_scaled_error"] = checker.check(case, backend, workload=work)
    budget = float(getattr(benchmark, "_max_time", DEFAULT_MAX_TIME))
    estimate = estimate_call_time(work, budget)  # warm-up calls, excluded from the timing
    rounds, iterations = plan_rounds(estimate, budget, MIN_ROUNDS, MAX_ROUNDS, MIN_ROUND_TIME)
    benchmark.pedantic(work, rounds=rounds, iterations=iterations)
