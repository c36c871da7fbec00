"""The runtime shared by the compiled backends (``fastrnn._runtime``): threads, pool, BLAS.

Fork, interrupt and BLAS-pool tests run in subprocesses with a time bound, so a
hang or a crash fails the test instead of stopping the run.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastrnn
from fastrnn import _runtime

from helpers import BACKENDS, FORK_WHILE_HELD, required

COMPILED = [b for b in BACKENDS if b != "numpy"]


def run_script(code, timeout=120, env=None, drop=()):
    """Run ``code`` in a fresh Python; (exit status, stdout, stderr), failing on a time-out.
    ``env`` is added to this process's environment, the variables ``drop`` names left out."""
    base = {k: v for k, v in os.environ.items() if k not in drop}
    try:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                              text=True, timeout=timeout, env=dict(base, **(env or {})))
    except subprocess.TimeoutExpired:
        pytest.fail(f"the script did not finish within {timeout} s (a hang)")
    return done.returncode, done.stdout, done.stderr


def test_one_thread_count_for_both_backends():
    before = fastrnn.get_num_threads()
    try:
        fastrnn.set_num_threads(3)
        assert _runtime.get_num_threads() == 3
        if "numba" in COMPILED:
            from fastrnn.jit import config
            assert config.get_num_threads() == 3
        if "cython" in COMPILED:
            from fastrnn import _cython
            assert _cython.get_num_threads() == 3
            assert _cython.kernels.thread_count() == 3
    finally:
        fastrnn.set_num_threads(before)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="number of threads"):
            fastrnn.set_num_threads(bad)


def test_a_new_pool_warms_on_every_thread_at_once(monkeypatch):
    """The caller and every worker of a new pool run the warm-ups at the same time (so the
    OpenBLAS buffers of concurrent calls all get written), and it returns promptly."""
    import threading
    import time
    inside, peak, threads = [0], [0], set()
    lock = threading.Lock()

    def spy(barrier):
        barrier.wait()
        with lock:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
            threads.add(threading.get_ident())
        time.sleep(0.05)
        with lock:
            inside[0] -= 1

    monkeypatch.setattr(_runtime, "_warmers", {"spy": spy})
    monkeypatch.setattr(_runtime, "_pool", {"pid": None, "workers": 0, "executor": None})
    start = time.perf_counter()
    monkeypatch.setattr(_runtime, "_threads", 2)
    executor = _runtime.pool(2)
    assert time.perf_counter() - start < 10
    assert len(threads) == 3 and peak[0] == 3
    assert _runtime.pool(1) is executor and _runtime.pool(2) is executor     # made once
    executor.shutdown()


def test_bad_thread_environment_variable_is_named():
    for bad in ("two", "0", "\u00b2", "2147483648", "9" * 5000):   # (\u00b2 is a digit to isdigit)
        status, _, err = run_script("import fastrnn", env={"FASTRNN_NUM_THREADS": bad})
        assert status != 0 and "FASTRNN_NUM_THREADS must be a positive integer" in err, bad


# glibc's own allocator settings, which a test's environment may carry (dask's nanny leaves
# MALLOC_TRIM_THRESHOLD_ in the process that starts a cluster)
GLIBC_MALLOC = _runtime.GLIBC_MALLOC_VARIABLES + ("GLIBC_TUNABLES", _runtime.MALLOC_ENV)
# the README's training loop at its benchmark shape; prints whether fastrnn set the allocator's
# thresholds, and the page faults of one chunk (after a few to warm up)
LOOP_FAULTS = """
    import resource, numpy as np, fastrnn
    from fastrnn import _runtime
    from fastrnn.train import TBPTT, Adam, Linear, clip_grad_norm, cross_entropy
    T, B, V, H = 64, 32, 96, 128
    rng = np.random.default_rng(0)
    x = np.eye(V, dtype=np.float32)[rng.integers(0, V, (T, B))]
    y = rng.integers(0, V, (T, B))
    lstm, head = fastrnn.LSTM(V, H, seed=0), Linear(H, V, seed=0)
    opt = Adam({"lstm": lstm, "head": head}, lr=1e-3)
    tbptt = TBPTT(lstm, k1=T)
    def loss_and_grad(out, t0, t1):
        loss, dlogits = cross_entropy(head(out), y[t0:t1])
        return loss, head.backward(dlogits)
    def update(chunk):
        clip_grad_norm(opt.grads, 1.0); opt.step(); opt.zero_grad()
    for _ in range(5):
        tbptt.run(x, loss_and_grad, update)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        tbptt.run(x, loss_and_grad, update)
    print(_runtime.malloc_tuned(), (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


GLIBC_ONLY = pytest.mark.skipif(
    not hasattr(os, "confstr") or "glibc" not in (os.confstr("CS_GNU_LIBC_VERSION") or ""),
    reason="the allocator's thresholds are glibc's")


@GLIBC_ONLY
def test_a_training_loops_arrays_stay_on_the_heap():
    """With glibc's thresholds as fastrnn sets them, a training loop's arrays come from the
    heap again at every chunk: no page faults (glibc's defaults: ~870 a chunk)."""
    runs = {}
    for switch in ("1", "0"):
        status, out, err = run_script(LOOP_FAULTS, env={"FASTRNN_MALLOC": switch}, drop=GLIBC_MALLOC)
        assert status == 0, err
        tuned, faults = out.split()
        runs[switch] = (tuned == "True", float(faults))
    assert runs["1"][0] and runs["1"][1] < 20, runs
    assert not runs["0"][0] and runs["0"][1] > 100, runs      # what the thresholds save


@GLIBC_ONLY
@pytest.mark.parametrize("env", [{"FASTRNN_MALLOC": "0"}, {"MALLOC_TRIM_THRESHOLD_": "1048576"},
                                 {"MALLOC_MMAP_THRESHOLD_": "1048576"},
                                 {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1048576"}])
def test_the_allocator_is_left_alone_when_asked(env):
    code = "import fastrnn; print(fastrnn._runtime.malloc_tuned())"
    status, out, err = run_script(code, env=env, drop=GLIBC_MALLOC)
    assert status == 0 and out.strip() == "False", err
    status, out, err = run_script(code, drop=GLIBC_MALLOC)     # and set without them
    assert status == 0 and out.strip() == "True", err


@pytest.mark.parametrize("switch", ["FASTRNN_MALLOC", "FASTRNN_BLAS_POOL"])
def test_bad_switches_are_named_at_import_and_an_empty_one_is_its_default(switch):
    # (a bad FASTRNN_BLAS_POOL was met at the first layer of each backend, then ignored)
    status, _, err = run_script("import fastrnn", env={switch: "sometimes"})
    assert status != 0 and f"{switch} must be 0 or 1 (or false/true" in err and \
        "but got 'sometimes'" in err, err
    code = ("import fastrnn; fastrnn.GRU(2, 3)\n"
            "print(fastrnn._runtime.malloc_tuned(), bool(fastrnn._runtime.blas_pool_libraries()))")
    status, out, err = run_script(code, env={switch: ""}, drop=GLIBC_MALLOC)
    assert status == 0 and out.split() == ["True", "True"], (out, err)


@pytest.mark.parametrize("backend", COMPILED)
def test_results_do_not_depend_on_the_thread_count(backend):
    lstm = fastrnn.LSTM(16, 24, backend=backend, seed=0)
    x = np.random.default_rng(0).standard_normal((30, 64, 16)).astype(np.float32)
    before = fastrnn.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            fastrnn.set_num_threads(n)
            out, _ = lstm(x)
            lstm.zero_grad()
            lstm.backward(np.cos(out))
            results.append((out, lstm.grads["weight_hh_l0"].copy()))
    finally:
        fastrnn.set_num_threads(before)
    for out, grad in results[1:]:
        np.testing.assert_array_equal(out, results[0][0])
        np.testing.assert_array_equal(grad, results[0][1])


def test_the_training_toolkit_alone_puts_blas_on_the_pool():
    """A process whose first compiled call is the training toolkit's, with no module made (a
    loss on NumPy's own products), loads the kernels as a layer would: NumPy's OpenBLAS then
    runs its parallel jobs on fastrnn's pool.  Without, OpenBLAS's own threads spun ~0.1 s
    after each NumPy product, and a compiled product right after one took twice its time."""
    if "cython" not in COMPILED:
        pytest.skip("the BLAS pool is part of the cython extension")
    code = """
        import numpy as np
        from fastrnn import _runtime
        from fastrnn.train import cross_entropy
        assert not _runtime.blas_pool_libraries()
        cross_entropy(np.ones((64, 32, 10), np.float32), np.zeros((64, 32), int))
        print(len(_runtime.blas_pool_libraries()))
    """
    status, out, err = run_script(code)
    assert status == 0, err
    assert int(out) >= 1
    status, out, err = run_script(code, env={"FASTRNN_BLAS_POOL": "0"})
    assert status == 0 and int(out) == 0, err


def test_blas_pool_keeps_concurrent_products_apart_and_the_fp_state_clean():
    """With FASTRNN_BLAS_POOL=1: products from four threads at once give the results they give
    one at a time, bit for bit (OpenBLAS's per-thread buffers are not shared between two calls),
    no product of finite arrays raises a floating-point error under np.errstate(all="raise")
    (each job gets the caller's control words, not stale ones), and the pool recognised the
    layout of OpenBLAS's job entries on this platform."""
    if "cython" not in COMPILED:
        pytest.skip("the BLAS pool is part of the cython extension")
    code = """
        import platform, threading
        import numpy as np, fastrnn
        from fastrnn import _runtime
        from fastrnn._cython import kernels
        from threadpoolctl import threadpool_limits
        fastrnn.backends()
        assert _runtime.blas_pool_libraries()
        rng = np.random.default_rng(1)
        pairs = [rng.standard_normal((2, 300 + 7 * i, 300 + 7 * i)).astype(dt)
                 for i, dt in enumerate([np.float32, np.float64] * 4)]
        with threadpool_limits(2, user_api="blas"):
            with np.errstate(all="raise"):
                want = [a @ b for a, b in pairs]
            got = [[None] * len(pairs) for _ in range(4)]
            errors = []
            def work(k):
                try:
                    with np.errstate(all="raise"):
                        for _ in range(5):
                            for i, (a, b) in enumerate(pairs[k:] + pairs[:k]):
                                got[k][(i + k) % len(pairs)] = a @ b
                except Exception as exc:
                    errors.append(repr(exc))
            threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert not errors, errors
        for k in range(4):
            for g, w in zip(got[k], want):
                np.testing.assert_array_equal(g, w)
        calls, started, unknown = kernels.blas_pool_stats()
        assert calls > 0
        if platform.system() == "Linux" and platform.machine() in ("x86_64", "aarch64"):
            assert unknown == 0, f"{unknown} calls with an unknown layout of OpenBLAS's jobs"
        print("ok")
    """
    status, out, err = run_script(code, env={"FASTRNN_BLAS_POOL": "1"})
    assert status == 0 and out.strip() == "ok", err


def test_blas_pool_runs_numpy_products():
    """By default (and with FASTRNN_BLAS_POOL=1), NumPy's multi-threaded products run on
    fastrnn's pool, the chosen build's (whose kernels run on it too: one set of workers), and
    give the same results; with FASTRNN_BLAS_POOL=0 they stay on OpenBLAS's threads."""
    if "cython" not in COMPILED:
        pytest.skip("the BLAS pool is part of the cython extension")
    code = """
        import numpy as np, fastrnn
        from fastrnn import _runtime
        from fastrnn._cython import kernels
        from threadpoolctl import threadpool_limits
        fastrnn.backends()
        paths = _runtime.blas_pool_libraries()
        assert any("numpy" in p for p in paths), paths
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal((2, 700, 700)).astype(np.float32)
        with threadpool_limits(1, user_api="blas"):
            want = a @ b
        calls = kernels.blas_pool_stats()[0]
        with threadpool_limits(2, user_api="blas"):
            for _ in range(20):
                got = a @ b
        assert kernels.blas_pool_stats()[0] > calls, "the pool was not used"
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)
        print("ok")
    """
    for on in ({"FASTRNN_BLAS_POOL": "1"}, {}):         # on, and on by default
        env = dict(os.environ)
        env.pop("FASTRNN_BLAS_POOL", None)
        env.update(on)
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                              text=True, timeout=120, env=env)
        assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    for off in ({"FASTRNN_BLAS_POOL": "0"},):
        env = dict(os.environ)
        env.pop("FASTRNN_BLAS_POOL", None)
        env.update(off)
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                              text=True, timeout=120, env=env)
        assert done.returncode != 0 and "AssertionError" in done.stderr, done.stderr


@pytest.mark.parametrize("backend, how, batch",
                         [(b, how, 16) for b in COMPILED
                          for how in ("os.fork", "fork", "spawn", "forkserver")]
                         # batch 1: the cython kernels' team of threads (hidden units split)
                         + [("cython", how, 1) for how in ("os.fork", "fork")
                            if "cython" in COMPILED])
def test_a_child_process_runs_kernels_after_the_parent_did(backend, how, batch, tmp_path):
    code = f"""
        import os, signal, sys, multiprocessing as mp
        import numpy as np, fastrnn
        from fastrnn.train import Linear

        def teams():      # (batch 1: a team of threads must run, in parent and child)
            from fastrnn._cython import kernels
            return kernels.team_stats() if {batch} == 1 else 0

        def work(_=None):
            lstm = fastrnn.LSTM(32, 64, backend="{backend}", seed=0).eval()
            before = teams()
            out = float(lstm(np.ones((50, {batch}, 32), "f4"))[0].sum())
            head = Linear(64, 40, seed=1)       # the training toolkit's products, split too
            y = head(np.full((300, 64), 0.5, "f4"))
            out += float(y.sum()) + float(head.backward(np.cos(y)).sum())
            return out, teams() > before or {batch} != 1

        if __name__ == "__main__":
            want = work()                       # threads and pools started in the parent
            assert want[1], "no team ran"
            if "{how}" == "os.fork":
                pid = os.fork()
                if pid == 0:
                    signal.alarm(120)   # a child that hangs ends itself
                    os._exit(0 if work() == want else 3)
                _, status = os.waitpid(pid, 0)
                sys.exit(os.waitstatus_to_exitcode(status))
            with mp.get_context("{how}").Pool(2) as pool:
                got = pool.map(work, range(3))
            sys.exit(0 if got == [want] * 3 else 4)
    """
    path = tmp_path / "child.py"      # spawn and forkserver import the main module again
    path.write_text(textwrap.dedent(code))
    try:
        done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                              timeout=240, env=dict(os.environ, FASTRNN_NUM_THREADS="2"))
    except subprocess.TimeoutExpired:
        pytest.fail(f"{how} child of a {backend} parent hung")
    assert done.returncode == 0, done.stderr[-2000:]


def run_fork_while_held(tmp_path, code, hung):
    """Run ``code`` after :data:`helpers.FORK_WHILE_HELD` in a fresh Python on two threads; it
    must exit 0 within 120 s (``hung``: the failure's message when it does not)."""
    path = tmp_path / "child.py"
    path.write_text(textwrap.dedent(FORK_WHILE_HELD) + textwrap.dedent(code))
    try:
        done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                              timeout=120, env=dict(os.environ, FASTRNN_NUM_THREADS="2"))
    except subprocess.TimeoutExpired:
        pytest.fail(hung)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("backend", ["numpy"] + COMPILED)
def test_a_child_forked_while_another_thread_holds_the_locks_runs_kernels(backend, tmp_path):
    """A lock another thread holds at a fork stays held in the child, where that thread does
    not exist: the pool's, the numba kernels' BLAS guard and the saved record's are made anew
    there (the numba backend's child hung in its first kernel call when the fork came while
    another thread was in one)."""
    code = f"""
        import numpy as np, fastrnn
        from fastrnn import _runtime
        from fastrnn.jit import config
        from fastrnn.reference import _common

        lstm = fastrnn.LSTM(32, 64, backend="{backend}", seed=0)
        x = np.ones((50, 16, 32), "f4")

        def work():
            out, _ = lstm(x)
            dx, _ = lstm.backward(np.ones_like(out))
            return float(out.sum()), float(dx.sum())

        want = work()
        locks = [_runtime._pool_lock, config._blas_lock, _common._TAKE]

        def hold(held, release):
            for lock in locks:
                lock.acquire()
            held.set()
            release.wait()
            for lock in locks:
                lock.release()

        fork_while_held(hold, lambda: work() == want)
    """
    run_fork_while_held(tmp_path, code,
                        f"the {backend} child of a fork made while the locks were held hung")


@pytest.mark.skipif("numba" not in COMPILED, reason="needs the numba backend")
def test_a_child_forked_during_a_numba_call_has_numpys_blas_threads(tmp_path):
    """A numba kernel call holds NumPy's BLAS at one thread until it returns; a child forked
    during it, where that call's thread does not exist, gets the counts from before the call
    (it kept one thread until its own first numba call)."""
    code = """
        import numpy as np, fastrnn
        from fastrnn.jit import config

        def blas_threads():
            return [lib.get_num_threads() for lib in config._blas_libraries()]

        for lib in config._blas_libraries():   # two threads whatever the environment says
            lib.set_num_threads(2)
        before = blas_threads()
        assert max(before) > 1, before

        @config.one_blas_thread
        def call(held, release):
            config.hold_blas_at_one_thread()
            assert max(blas_threads()) == 1
            held.set()
            release.wait()

        def child():
            a = np.ones((300, 300), "f4")
            ok = blas_threads() == before and float((a @ a)[0, 0]) == 300.0
            # its own numba calls hold BLAS at one thread and give it back (the parent's call
            # in progress is not counted in the child: counted, it held nothing)
            inside = []

            @config.one_blas_thread
            def own_call():
                config.hold_blas_at_one_thread()
                inside.append(blas_threads())
            own_call()
            return ok and inside == [[1] * len(before)] and blas_threads() == before

        fork_while_held(call, child)
    """
    run_fork_while_held(tmp_path, code, "the child of a fork made during a numba call hung")


@pytest.mark.skipif("cython" not in COMPILED, reason="needs the cython backend")
def test_a_child_forked_during_a_cython_call_has_scipys_blas_threads(tmp_path):
    """A cython kernel call holds SciPy's BLAS at one thread until it returns; a child forked
    during it, where that call's thread does not exist, gets the counts from before the call
    (it kept one thread for good: its own calls nested inside the dead thread's hold)."""
    code = """
        import numpy as np, fastrnn
        from threadpoolctl import threadpool_limits
        from fastrnn._cython import kernels

        threadpool_limits(2, user_api="blas")      # two threads whatever the environment says
        before = kernels._blas_single()
        assert before and max(before) > 1, before

        def call(held, release):
            assert max(kernels._blas_single(True)) == 1
            held.set()
            release.wait()
            kernels._blas_single(False)

        def child():
            lstm = fastrnn.LSTM(8, 16, backend="cython", seed=0).eval()
            lstm(np.ones((3, 2, 8), "f4"))
            return kernels._blas_single() == before

        fork_while_held(call, child)
    """
    run_fork_while_held(tmp_path, code, "the child of a fork made during a cython call hung")


#: a child's start for the Ctrl-C tests: Python's own SIGINT handler (a shell's background job
#: starts with SIGINT ignored, and Python then keeps it ignored), ``interrupt_delay(call,
#: at)``: SIGINT ``at`` seconds into ``call()``, the seconds until its KeyboardInterrupt, or
#: None when the call ended first; and ``interrupt_repeatedly``, which prints how many calls
#: of a series were interrupted and their delays (see :func:`assert_interrupted_promptly`)
INTERRUPT = """
    import os, signal, threading, time
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def interrupt_delay(call, at):
        sent = []

        def interrupt():
            sent.append(time.perf_counter())
            os.kill(os.getpid(), signal.SIGINT)
        timer = threading.Timer(at, interrupt)
        timer.start()
        try:
            call()
            timer.join()
            return None
        except KeyboardInterrupt:
            return time.perf_counter() - sent[0]

    def interrupt_repeatedly(call, check, rounds, step, before=lambda: None):
        # call() timed once, then `rounds` calls with SIGINT (0.1 + step * i) of that time
        # in (before() ahead of each), check() after each interrupted one
        before()
        start = time.perf_counter()
        call()
        took = time.perf_counter() - start
        delays = []
        for i in range(rounds):
            before()
            delay = interrupt_delay(call, took * (0.1 + step * i))
            if delay is None:
                continue
            delays.append(delay)
            check()
        print(len(delays), *delays)
"""


def assert_interrupted_promptly(code, at_least):
    """Run ``code`` (INTERRUPT's, ending in one ``interrupt_repeatedly``) on two threads: at
    least ``at_least`` calls interrupted, each KeyboardInterrupt within 0.1 s of its signal
    (they come in 1-15 ms) but one, which may meet a stall of this shared host's (one came
    0.12 s after) and must come within 0.5 s.  A call that waits for its end instead (an
    unwatched one: 0.3-0.6 s) fails every round."""
    status, out, err = run_script(textwrap.dedent(INTERRUPT) + textwrap.dedent(code),
                                  timeout=300, env={"FASTRNN_NUM_THREADS": "2"})
    assert status == 0, f"exit status {status}: {err[-2000:]}"
    count, *delays = out.split()
    delays = sorted(float(d) for d in delays)
    assert int(count) == len(delays) >= at_least
    assert delays[-2] < 0.1 and delays[-1] < 0.5, \
        f"KeyboardInterrupts came {', '.join(f'{d:.3f}' for d in delays)} s after the signals"


@pytest.mark.parametrize("backend, hidden, shape",
                         [(b, 128, (4000, 64, 64)) for b in COMPILED]
                         # batch 1: the cython kernels' team of threads (hidden units split)
                         + [("cython", 512, (12000, 1, 64))] * ("cython" in COMPILED))
def test_ctrl_c_during_a_kernel_raises_and_the_next_call_is_right(backend, hidden, shape):
    """SIGINT during long multi-threaded forwards: KeyboardInterrupt promptly, never a crash;
    then the layer still gives the right answer.  Repeated: the crash showed in half of the runs."""
    # signals 10-64% into the call: (nearly) all interrupted; long calls are watched (cython:
    # WATCH_FLOPS in kernels/_kernels.pyx; numba's loops return to Python every chunk):
    # measured here at most 2-7 ms (numba), 1-5 ms (cython)
    assert_interrupted_promptly(f"""
        import numpy as np, fastrnn
        lstm = fastrnn.LSTM(64, {hidden}, backend="{backend}", seed=0).eval()
        small = np.ones((20, {shape[1]}, 64), "f4")
        want = lstm(small)[0]
        x = np.ones({shape}, "f4")
        lstm(x[:10])
        interrupt_repeatedly(lambda: lstm(x),
                             lambda: np.testing.assert_array_equal(lstm(small)[0], want), 10, 0.06)
        if {shape[1]} == 1:      # batch 1: a team of threads ran the calls
            from fastrnn._cython import kernels
            assert kernels.team_stats() > 0
    """, at_least=8)


@pytest.mark.skipif("cython" not in COMPILED, reason="needs the cython backend")
def test_ctrl_c_in_a_child_forked_during_a_watched_call():
    """A child forked (by another thread) while the main thread's long cython call was watched
    inherited the call's SIGINT handler, took it for a watch in progress and watched none of its
    own calls: a Ctrl-C waited for the call's end (0.3-0.6 s).  Its calls are watched again."""
    assert_interrupted_promptly("""
        import numpy as np, fastrnn, sys
        lstm = fastrnn.LSTM(64, 128, backend="cython", seed=0).eval()
        x = np.ones((4000, 64, 64), "f4")
        lstm(x[:10])

        def forker():
            time.sleep(0.05)                 # the main thread is inside its watched call
            pid = os.fork()
            if pid == 0:
                interrupt_repeatedly(lambda: lstm(x), lambda: None, 4, 0.15)
                sys.stdout.flush()
                os._exit(0)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        thread = threading.Thread(target=forker)
        thread.start()
        lstm(x)
        lstm(x)                              # (the fork comes during one of them)
        thread.join()
    """, at_least=3)


@pytest.mark.parametrize("backend", COMPILED)
def test_ctrl_c_during_a_training_forward_raises_and_the_next_call_is_right(backend):
    """A training-mode forward keeps every step's gates, and the numba backend projected the
    input of all steps in one call, then ran all the steps in another: SIGINT waited for the
    end of the sequence (14 s at T = 600,000).  Both now go in blocks of steps with Python in
    between, as an eval-mode forward's do."""
    assert_interrupted_promptly(f"""
        import numpy as np, fastrnn
        lstm = fastrnn.LSTM(64, 128, backend="{backend}", seed=0)
        small = np.ones((20, 4, 64), "f4")
        def run(x):
            out, _ = lstm(x)
            lstm.backward(np.ones_like(out))
            return out
        want = run(small)
        x = np.ones((3000, 16, 64), "f4")
        run(x[:10])
        interrupt_repeatedly(lambda: lstm(x),
                             lambda: np.testing.assert_array_equal(run(small), want), 6, 0.1)
    """, at_least=5)       # signals 10-60% into the call: (nearly) all interrupted


@pytest.mark.skipif("numba" not in COMPILED, reason="needs the numba backend")
def test_ctrl_c_during_a_numba_backward_raises_within_its_time_loop():
    """A numba backward's time loop runs in blocks of steps with Python in between, so SIGINT
    10-40% into a long backward (its time loop) raises KeyboardInterrupt promptly (it waited
    for the whole loop: 0.35-0.55 s at T=4000); the next forward and backward are right."""
    assert_interrupted_promptly("""
        import numpy as np, fastrnn
        lstm = fastrnn.LSTM(64, 256, backend="numba", seed=0)
        small = np.ones((20, 4, 64), "f4")
        def grads():
            lstm.zero_grad()
            out, _ = lstm(small)
            lstm.backward(np.ones_like(out))
            return [g.copy() for g in lstm.grads.values()]
        want = grads()
        x = np.ones((3000, 32, 64), "f4")
        dout = np.ones_like(lstm(x)[0])

        def same_grads():
            for a, b in zip(grads(), want):
                np.testing.assert_array_equal(a, b)
        interrupt_repeatedly(lambda: lstm.backward(dout), same_grads, 6, 0.06,
                             before=lambda: lstm(x))
    """, at_least=5)


@pytest.mark.skipif("cython" not in COMPILED, reason="needs the cython backend")
def test_cython_calls_split_on_the_pool_of_openblas_jobs_and_teams():
    """The cython kernels' split phases run on the C pool of kernels/fastrnn_pool.h, which also
    runs OpenBLAS's jobs and the teams (its threads are awake when a phase follows a product),
    not on Python threads; and on two threads give one thread's bits."""
    code = """
        import threading
        import numpy as np, fastrnn
        from fastrnn._cython import kernels
        x = np.random.default_rng(0).standard_normal((100, 32, 64)).astype("f4")
        def train():
            lstm = fastrnn.LSTM(64, 128, backend="cython", seed=0)
            out, _ = lstm(x)
            lstm.backward(np.cos(out))
            return out, lstm.grads["weight_hh_l0"]
        fastrnn.set_num_threads(1)
        want = train()
        fastrnn.set_num_threads(2)
        started = kernels.blas_pool_stats()[1]
        got = train()
        assert kernels.blas_pool_stats()[1] > started, "no worker of the C pool ran a slice"
        assert threading.enumerate() == [threading.main_thread()], threading.enumerate()
        for a, b in zip(want, got):
            np.testing.assert_array_equal(a, b)
    """
    status, out, err = run_script(code, env={"FASTRNN_BLAS_POOL": "0"})
    assert status == 0, f"exit status {status}: {err[-2000:]}"


@pytest.mark.skipif("cython" not in COMPILED, reason="needs the cython backend")
def test_the_pool_hands_jobs_to_spinning_workers_and_serves_callers_from_threads_at_once():
    """Back-to-back calls hand their jobs to the pool's spinning worker through its slot (not
    the queue); and 4 Python threads at once, each mixing a cell's steps (a team), NumPy's
    products (OpenBLAS's jobs on the pool) and a layer's forward and backward (split phases),
    get the bits of one thread, with no hang and no more workers than the callers need."""
    code = """
        from concurrent.futures import ThreadPoolExecutor
        import time
        import numpy as np, fastrnn
        from fastrnn._cython import kernels
        from threadpoolctl import threadpool_limits
        rng = np.random.default_rng(0)
        cell = fastrnn.LSTMCell(128, 128, backend="cython", seed=0).eval()
        xc = rng.standard_normal((1, 128)).astype("f4")
        hc = (rng.standard_normal((1, 128)).astype("f4"), rng.standard_normal((1, 128)).astype("f4"))
        a, b = rng.standard_normal((2, 700, 700)).astype("f4")   # (OpenBLAS splits it)
        x = rng.standard_normal((20, 16, 32)).astype("f4")
        def steps():
            h = hc
            for _ in range(20):
                h = cell(xc, h)
            return h
        def train():
            lstm = fastrnn.LSTM(32, 64, backend="cython", seed=0)
            out, _ = lstm(x)
            lstm.backward(np.cos(out))
            return out, lstm.grads["weight_hh_l0"]
        fastrnn.set_num_threads(2)
        with threadpool_limits(1, user_api="blas"):
            want = (steps(), a @ b, train())
        products = kernels.blas_pool_stats()[0]
        # Rounds of 100 steps until one hands at least half of its jobs to the spinning worker.
        # One round is not enough to judge: the worker's spin runs out whenever its core is
        # taken from it for 50 us (by the host's other guests, or by OpenBLAS's own threads,
        # which spin for ~0.1 s after the process starts), and then that step goes through the
        # queue.  In CI a process's first round handed 1 job of 100; run again, first rounds
        # handed 0-100 and second ones 71-100.
        deadline, rounds = time.monotonic() + 30, []
        while not rounds or (rounds[-1] < 50 and time.monotonic() < deadline):
            handed, back = kernels.pool_handed(), kernels.pool_taken_back()
            runs = kernels.team_stats()
            for _ in range(5):
                steps()
            assert kernels.team_stats() - runs == 100, "the steps did not run on a team"
            rounds.append(kernels.pool_handed() - handed - (kernels.pool_taken_back() - back))
        assert rounds[-1] >= 50, (f"jobs run by a worker they were handed to in {len(rounds)}"
                                  f" rounds of 100 steps; the last ten: {rounds[-10:]}")
        def work(k):
            with threadpool_limits(2, user_api="blas"):
                return [(steps(), a @ b, train()) for _ in range(15)]
        with ThreadPoolExecutor(4) as pool:     # (an exception in a thread raises here)
            got = [r for rs in pool.map(work, range(4)) for r in rs]
        assert len(got) == 60
        assert kernels.blas_pool_stats()[0] > products, "NumPy's products did not run on the pool"
        for (h, p, (out, g)) in got:
            for u, v in zip(h, want[0]):
                np.testing.assert_array_equal(u, v)
            np.testing.assert_allclose(p, want[1], rtol=1e-5, atol=1e-3)
            np.testing.assert_array_equal(out, want[2][0])
            np.testing.assert_array_equal(g, want[2][1])
        started = kernels.blas_pool_stats()[1]
        assert 1 <= started <= 8, f"{started} workers for 4 callers of 2 jobs each"
        print("ok", started)
    """
    status, out, err = run_script(code, timeout=240)
    assert status == 0 and out.startswith("ok"), f"exit status {status}: {err[-2000:]}"


@pytest.mark.skipif("cython" not in COMPILED, reason="needs the cython backend")
def test_a_step_waits_for_no_worker_that_has_not_started():
    """A cell's step on a team takes back the job it handed to a worker that has not taken it
    by twice the time of its own (a worker whose core was taken), and runs the job a sleeping
    worker would have run, waking that worker for the next steps: the same bits either way,
    and no step waits the worker's lag."""
    code = """
        import time
        import numpy as np, fastrnn
        from fastrnn._cython import kernels
        rng = np.random.default_rng(0)
        cell = fastrnn.LSTMCell(128, 128, backend="cython", seed=0).eval()
        x = rng.standard_normal((3, 128)).astype("f4")
        hx = tuple(rng.standard_normal((3, 128)).astype("f4") for _ in range(2))
        fastrnn.set_num_threads(1)
        want = cell(x, hx)
        fastrnn.set_num_threads(2)
        def same(got):
            for u, v in zip(got, want):
                np.testing.assert_array_equal(u, v)
        for _ in range(20):                    # the worker started, and spinning
            same(cell(x, hx))
        kernels._lag_pickups(100000)          # it now takes a job 0.1 s after it is handed
        try:
            back, runs, took = kernels.pool_taken_back(), kernels.team_stats(), []
            deadline = time.monotonic() + 20
            while kernels.pool_taken_back() == back:
                assert time.monotonic() < deadline, "no job was taken back"
                start = time.perf_counter()
                same(cell(x, hx))
                took.append(time.perf_counter() - start)
        finally:
            kernels._lag_pickups(0)
        assert kernels.team_stats() - runs == len(took), "the steps did not run on a team"
        # (a step that waited for the lagging worker took 0.1 s)
        assert max(took) < 0.05, f"the slowest of {len(took)} steps took {max(took):.3f} s"
        # a worker past its spin (and its lag) sleeps; the step that finds none spinning runs
        # alone and wakes it: the steps after it are handed to it again
        time.sleep(0.3)
        handed, back = kernels.pool_handed(), kernels.pool_taken_back()
        deadline = time.monotonic() + 20
        while (kernels.pool_handed() - handed) - (kernels.pool_taken_back() - back) < 1:
            assert time.monotonic() < deadline, "the sleeping worker was not woken"
            same(cell(x, hx))
        print("ok")
    """
    status, out, err = run_script(code, timeout=120)
    assert status == 0 and out.startswith("ok"), f"exit status {status}: {err[-2000:]}"


@pytest.mark.parametrize("backend", COMPILED)
def test_signal_handlers_run_during_a_kernel_and_one_that_does_not_raise_changes_nothing(backend):
    """A long call (watched: see ``stopped`` in kernels/_kernels.pyx) runs the program's own
    SIGINT handler promptly, on the main thread; a handler that does not raise leaves the
    call's results exact, and one that raises another exception gets that exception out."""
    code = f"""
        import os, signal, threading, time
        import numpy as np, fastrnn
        lstm = fastrnn.LSTM(64, 128, backend="{backend}", seed=0).eval()
        x = np.random.default_rng(0).standard_normal((500, 64, 64)).astype("f4")
        lstm(x)                    # compiled (numba) and warm
        start = time.perf_counter()
        lstm(x)
        steps = int(np.clip(500 * 0.6 / (time.perf_counter() - start), 500, 20000))
        x = np.random.default_rng(0).standard_normal((steps, 64, 64)).astype("f4")
        want = lstm(x)[0]          # ~0.6 s on any CPU: the signal comes at 0.15 s
        # (numba's input projection is BLAS on blocks that follow T: on OpenBLAS's Haswell
        # kernels a row's bits follow its place in a block, so a prefix is its own call)
        want50 = lstm(x[:50])[0]
        seen = []
        def note(signum, frame):
            seen.append((time.perf_counter(), threading.current_thread() is threading.main_thread()))
        signal.signal(signal.SIGINT, note)
        sent = []
        def interrupt():
            sent.append(time.perf_counter())
            os.kill(os.getpid(), signal.SIGINT)
        timer = threading.Timer(0.15, interrupt)
        timer.start()
        got = lstm(x)[0]
        end = time.perf_counter()
        timer.join()
        assert len(seen) == 1 and seen[0][1], seen
        np.testing.assert_array_equal(got, want)
        class Stop(Exception):
            pass
        def stop(signum, frame):
            raise Stop
        signal.signal(signal.SIGINT, stop)
        timer = threading.Timer(0.15, interrupt)
        timer.start()
        try:
            lstm(x)
            raise AssertionError("the handler's exception did not come out of the call")
        except Stop:
            pass
        timer.join()
        np.testing.assert_array_equal(lstm(x[:50])[0], want50)
        print(seen[0][0] - sent[0], end - sent[0])
    """
    status, out, err = run_script(code, timeout=300, env={"FASTRNN_NUM_THREADS": "2"})
    assert status == 0, f"exit status {status}: {err[-2000:]}"
    handled, done = map(float, out.split())
    assert handled < 0.1            # the handler ran within 0.1 s of the signal...
    assert done - handled > 0.1     # ...well before the call, which went on, returned


@pytest.mark.parametrize("backend", COMPILED)
def test_calls_from_other_threads_match_the_main_thread_bit_for_bit(backend):
    """Training on separate layers and inference on one shared layer from 4 threads at once
    give the main thread's results to the bit (the BLAS hold holds from any thread)."""
    from concurrent.futures import ThreadPoolExecutor
    x = np.random.default_rng(0).standard_normal((50, 16, 32)).astype(np.float32)

    def train():
        lstm = fastrnn.LSTM(32, 64, backend=backend, seed=0)
        out, _ = lstm(x)
        lstm.backward(np.cos(out))
        return out, lstm.grads["weight_hh_l0"]

    shared = fastrnn.LSTM(32, 64, backend=backend, seed=0).eval()
    one = x[:, :1]      # a batch of 1: on the cython backend a team of threads splits its units
    want_train, want_eval, want_one = train(), shared(x)[0], shared(one)[0]
    with ThreadPoolExecutor(4) as pool:
        trained = list(pool.map(lambda _: train(), range(12)))
        evaluated = list(pool.map(lambda _: shared(x)[0], range(12)))
        singles = list(pool.map(lambda _: shared(one)[0], range(40)))
    for out, grad in trained:
        np.testing.assert_array_equal(out, want_train[0])
        np.testing.assert_array_equal(grad, want_train[1])
    for out in evaluated:
        np.testing.assert_array_equal(out, want_eval)
    for out in singles:
        np.testing.assert_array_equal(out, want_one)


def test_the_training_toolkit_from_threads_matches_the_main_thread_bit_for_bit():
    """Linear heads and the loss (their compiled products and passes where the extension is
    built, split over the same pool) from 4 threads at once give the main thread's results."""
    from concurrent.futures import ThreadPoolExecutor
    from fastrnn.train import Linear, cross_entropy
    rng = np.random.default_rng(1)
    x = rng.standard_normal((600, 64)).astype(np.float32)
    targets = rng.integers(0, 40, 600)

    def step():
        head = Linear(64, 40, seed=2)
        loss, dlogits = cross_entropy(head(x), targets)
        return loss, head.backward(dlogits), head.grads["weight"]

    want = step()
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: step(), range(16)))
    for loss, dx, grad in got:
        assert loss == want[0]
        np.testing.assert_array_equal(dx, want[1])
        np.testing.assert_array_equal(grad, want[2])


def test_the_tests_and_the_build_read_their_switches_as_the_library_does(monkeypatch):
    """FASTRNN_REQUIRE_* (the tests) and FASTRNN_REQUIRE_CYTHON / FASTRNN_NATIVE (setup.py):
    1/true/yes/on in any case, off when unset; another value is an error, not a silent skip
    of the tests it was meant to require."""
    for value, on in (("1", True), ("TRUE", True), ("on", True), ("yes", True), ("0", False),
                      ("off", False), ("", False)):
        monkeypatch.setenv("FASTRNN_REQUIRE_X", value)
        assert required("FASTRNN_REQUIRE_X") is on, value
    monkeypatch.delenv("FASTRNN_REQUIRE_X")
    assert required("FASTRNN_REQUIRE_X") is False
    monkeypatch.setenv("FASTRNN_REQUIRE_X", "maybe")
    with pytest.raises(ValueError, match="FASTRNN_REQUIRE_X must be 0 or 1"):
        required("FASTRNN_REQUIRE_X")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for value, status in (("on", 0), ("maybe", 1)):
        done = subprocess.run([sys.executable, "setup.py", "--version"], cwd=root, text=True,
                              capture_output=True, timeout=120,
                              env=dict(os.environ, FASTRNN_NATIVE=value))
        assert done.returncode == status, done.stderr
        assert (status == 0) != ("FASTRNN_NATIVE must be 0 or 1" in done.stderr)



def test_show_config_says_what_runs(capsys, monkeypatch):
    """The backend "auto" picks, the cython build in use, the thread count and the settings
    in the environment, printed and as dicts; a bad FASTRNN_BACKEND is said, not raised."""
    from fastrnn.backends import resolve
    monkeypatch.setenv("FASTRNN_CACHE_DIR", "/nowhere/in/particular")
    info = fastrnn.show_config("dicts")
    assert info["backends"]["auto"] == resolve().name
    assert info["threads"]["kernels"] == fastrnn.get_num_threads()
    assert info["fastrnn"]["version"] == fastrnn.__version__
    assert info["environment"]["FASTRNN_CACHE_DIR"] == "/nowhere/in/particular"
    for name in BACKENDS:
        assert info["backends"][name] == "available"
    if "cython" in BACKENDS:
        from fastrnn import _cython
        assert info["cython"]["build"] == _cython.ISA
        assert info["cython"]["builds this CPU runs"] == _cython.available_isas()
    assert fastrnn.show_config() is None
    out = capsys.readouterr().out
    assert f"  auto: {resolve().name}\n" in out and f"  kernels: {fastrnn.get_num_threads()}\n" in out
    assert "FASTRNN_CACHE_DIR: /nowhere/in/particular" in out
    monkeypatch.setenv("FASTRNN_BACKEND", "cuda")
    assert "FASTRNN_BACKEND must be one of" in fastrnn.show_config("dicts")["backends"]["auto"]
    with pytest.raises(ValueError, match=r"mode must be one of \['stdout', 'dicts'\], but got 'yaml'"):
        fastrnn.show_config("yaml")


def test_auto_takes_cython_then_numba_then_numpy(monkeypatch):
    """The documented order of backend="auto": the first of cython, numba and numpy that
    this installation runs."""
    import importlib
    b = importlib.import_module("fastrnn.backends")   # (fastrnn.backends is also a function)
    available = [name for name in ("cython", "numba", "numpy")
                 if fastrnn.backends()[name]["available"]]
    assert b.resolve().name == available[0]
    for name in available[:-1]:       # each made unavailable in turn: the next one
        monkeypatch.setitem(b._loaded, name, ImportError(f"{name} made unavailable"))
        assert b.resolve().name == available[available.index(name) + 1]


def test_an_exception_of_the_caller_waits_for_every_worker():
    """A numba call's own share raising (a Ctrl-C) is raised only once the other threads'
    shares have returned: none is still writing into arrays the unwinding frees."""
    import time
    done = []

    def kernel(tag, delay):
        if tag == 0:
            raise KeyboardInterrupt
        time.sleep(delay)
        done.append(tag)
    before = fastrnn.get_num_threads()
    fastrnn.set_num_threads(2)
    try:
        with pytest.raises(KeyboardInterrupt):
            _runtime.run_threads(kernel, (), [(0, 0), (1, 0.3)])
    finally:
        fastrnn.set_num_threads(before)
    assert done == [1]
