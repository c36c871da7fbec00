"""What is specific to the numba backend's kernels (fastrnn.jit); the contract they share
with the other backends is tested in test_kernel_contract.py.

The float32 activations (error bound, saturation, NaN), eval-mode forwards in blocks of
``config.EVAL_BYTES``, the input's sparse products, thread-count
independence with the products split into many BLAS
blocks, BLAS held at one thread, the memory kept by a forward, the disk cache (including its
quiet fallback when the cache directory is read-only), ``warmup``, and the ``activations``
option running on the kernels ``warmup`` compiled.
"""

import itertools
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

numba = pytest.importorskip("numba")

from fastrnn import reference  # noqa: E402
from fastrnn.celltypes import CELL_TYPES  # noqa: E402
from fastrnn import jit as nb  # noqa: E402
from fastrnn.jit import _common, activations, config  # noqa: E402

DTYPES = (np.float64, np.float32)


@pytest.fixture
def threads(request):
    """Run with the given thread count, and force threading for tiny shapes."""
    n = request.param
    saved = (config.get_num_threads(), config.PARALLEL_MIN_FLOPS, config.BLAS_PARALLEL_MIN_FLOPS)
    config.set_num_threads(n)
    config.PARALLEL_MIN_FLOPS = config.BLAS_PARALLEL_MIN_FLOPS = 0
    yield n
    config.set_num_threads(saved[0])
    config.PARALLEL_MIN_FLOPS, config.BLAS_PARALLEL_MIN_FLOPS = saved[1:]


# ---------------------------------------------------------------- activations
@numba.njit(error_model="numpy", fastmath=set(config.FASTMATH))   # kernels' flags, no disk cache
def _apply_activations(x, th, sg):
    for i in range(x.shape[0]):
        th[i] = activations.tanh(x[i])
        sg[i] = activations.sigmoid(x[i])


def _activations(x):
    th, sg = np.empty_like(x), np.empty_like(x)
    _apply_activations(x, th, sg)
    return th, sg


def _exact(x):
    x = x.astype(np.float64)
    return np.tanh(x), 0.5 + 0.5 * np.tanh(0.5 * x)


@pytest.mark.parametrize("dtype, bound", [(np.float32, 5e-7), (np.float64, 1e-15)])
def test_activation_error_bound(dtype, bound):
    x = np.linspace(-20, 20, 4_000_001, dtype=np.float64).astype(dtype)
    x = np.concatenate([x, np.linspace(-1e-3, 1e-3, 100_001).astype(dtype)])
    th, sg = _activations(x)
    ref_th, ref_sg = _exact(x)
    assert np.abs(th - ref_th).max() < bound
    assert np.abs(sg - ref_sg).max() < bound


@pytest.mark.parametrize("dtype", DTYPES)
def test_activation_saturation_and_nan(dtype):
    x = np.array([1e4, -1e4, np.inf, -np.inf, 40.0, -40.0, np.nan, 0.0], dtype=dtype)
    th, sg = _activations(x)
    np.testing.assert_array_equal(th[:6], [1, -1, 1, -1, 1, -1])
    np.testing.assert_array_equal(sg[[0, 2, 4]], [1, 1, 1])
    assert np.all(sg[[1, 3]] == 0) and 0 <= sg[5] < 1e-12
    assert np.isnan(th[6]) and np.isnan(sg[6])
    assert th[7] == 0 and sg[7] == 0.5


def test_activation_range_float32():
    x = np.linspace(-12, 12, 4_000_001).astype(np.float32)
    th, sg = _activations(x)
    assert np.all(np.abs(th) <= 1) and np.all((sg >= 0) & (sg <= 1))
    np.testing.assert_array_equal(np.sign(th), np.sign(x))


# ---------------------------------------------------------------- parity with the reference
def _weights(cell, I, H, P, bias, dtype, rng):
    G = CELL_TYPES[cell].gates
    w = [rng.uniform(-0.6, 0.6, (G * H, I)), rng.uniform(-0.6, 0.6, (G * H, P or H))]
    w += [rng.uniform(-0.6, 0.6, G * H), rng.uniform(-0.6, 0.6, G * H)] if bias else [None, None]
    if cell == "lstm":
        w += [rng.uniform(-0.6, 0.6, (P, H)) if P else None, None]
    return tuple(None if a is None else a.astype(dtype) for a in w)


def _problem(cell, T, B, I, H, P, bias, dtype, with_lengths, seed=0):
    rng = np.random.default_rng(seed)
    weights = _weights(cell, I, H, P, bias, dtype, rng)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    hx = (rng.standard_normal((B, P or H)).astype(dtype),)
    if cell == "lstm":
        hx += (rng.standard_normal((B, H)).astype(dtype),)
    lengths = rng.integers(1, T + 1, B).astype(np.int64) if with_lengths else None
    if with_lengths and B:
        lengths[0] = T
    return rng, x, hx, weights, lengths


def _check(got, ref, dtype, grad=False):
    assert got.shape == ref.shape and got.dtype == ref.dtype
    if dtype == np.float64:
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)
    elif grad:
        scale = max(1.0, np.abs(ref).max(initial=0))
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * scale)
    else:
        np.testing.assert_allclose(got, ref, rtol=0, atol=2e-5)


def _zeros(weights):
    """Gradient buffers for ``weights`` (the backward adds into them)."""
    return tuple(None if w is None else np.zeros_like(w) for w in weights)


def _kernels(module, cell):
    return tuple(getattr(module, f"{cell}_{k}") for k in
                 ("forward", "backward", "step_forward", "step_backward"))


CASES = [  # cell, proj_size, options
    ("rnn", 0, {"nonlinearity": "tanh"}), ("rnn", 0, {"nonlinearity": "relu"}),
    ("gru", 0, {}), ("gru", 0, {"reset_after": False}), ("lstm", 0, {}), ("lstm", 3, {}),
]
CASE_IDS = [cell + str(P) + "".join(f"-{k}={v}" for k, v in opts.items()) for cell, P, opts in CASES]


@pytest.mark.parametrize("threads", [1, 2], indirect=True)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("cell, P, opts", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("with_lengths", [False, True])
def test_eval_forward_parity(threads, dtype, cell, P, opts, with_lengths, monkeypatch):
    """An eval forward projects the input EVAL_BYTES of gates at a time: here in 3 blocks, the
    last one shorter, and carries the state across them."""
    T, B, I, H = 19, 4, 3, 6
    width = {"rnn": H, "lstm": 4 * H, "gru": 4 * H}[cell]   # the gate store's row
    monkeypatch.setattr(config, "EVAL_BYTES", 8 * B * width * np.dtype(dtype).itemsize)
    assert _common.store_steps(T, B, width, dtype, False) == 8
    _, x, hx, weights, lengths = _problem(cell, T, B, I, H, P, True, dtype, with_lengths)
    y_r, hy_r, _ = _kernels(reference, cell)[0](x, hx, weights, lengths, False, **opts)
    y_n, hy_n, cache = _kernels(nb, cell)[0](x, hx, weights, lengths, False, **opts)
    assert cache is None
    _check(y_n, y_r, dtype)
    for a, b in zip(hy_n, hy_r):
        _check(a, b, dtype)


# ---------------------------------------------------------------- sparse inputs
def _one_hot(T, B, I, dtype, rng):
    """Scaled one-hot rows (an input's sparse products take them: 1/I of x not zero)."""
    return (np.eye(I)[rng.integers(0, I, (T, B))] * rng.uniform(0.5, 2, (T, B, 1))).astype(dtype)


def _run(cell, opts, x, hx, weights, lengths, dy, module=nb):
    """(outputs: training and eval forwards, gradients: dx, dhx and the weights', these
    added into buffers that held 1 already: what the backward added)."""
    forward, backward = _kernels(module, cell)[:2]
    y, hy, record = forward(x, hx, weights, lengths, True, **opts)
    dw = tuple(None if w is None else np.ones_like(w) for w in weights)
    dx, dhx = backward(dy, tuple(np.ones_like(h) for h in hy), record, dw)
    y_eval, hy_eval, _ = forward(x, hx, weights, lengths, False, **opts)
    return [y, *hy, y_eval, *hy_eval], [dx, *dhx, *(w - 1 for w in dw if w is not None)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("cell, P, opts", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("with_lengths", [False, True])
def test_a_sparse_input_is_multiplied_over_its_entries(dtype, cell, P, opts, with_lengths,
                                                      monkeypatch):
    """One-hot rows take the sparse products (forward, in training and eval, and dW_ih), which
    agree with the reference and with the dense products; a dense first row, a denser x, or a
    NaN in W_ih takes the dense products (the NaN then reaches every sequence's output)."""
    T, B, I, H = 7, 5, 24, 6
    rng, _, hx, weights, lengths = _problem(cell, T, B, I, H, P, True, dtype, with_lengths)
    x = _one_hot(T, B, I, dtype, rng)
    dy = rng.standard_normal((T, B, P or H)).astype(dtype)
    width = {"rnn": H, "lstm": 4 * H, "gru": 4 * H}[cell]   # eval: blocks of 3, 3 and 1 steps
    monkeypatch.setattr(config, "EVAL_BYTES", 3 * B * width * np.dtype(dtype).itemsize)
    taken = []
    sparse_input = _common.sparse_input

    def counting(x, w_ih):
        out = sparse_input(x, w_ih)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(_common, "sparse_input", counting)
    wgrads = []
    sparse_wgrad = _common.sparse_wgrad

    def counting_wgrad(*args):
        wgrads.append(True)
        return sparse_wgrad(*args)

    monkeypatch.setattr(_common, "sparse_wgrad", counting_wgrad)
    got = _run(cell, opts, x, hx, weights, lengths, dy)
    # the training forward and the eval forward compress x; the backward's dW_ih takes the
    # training record's compressed x
    assert taken == [True] * 2 and len(wgrads) == 1
    density = config.SPARSE_DENSITY
    monkeypatch.setattr(config, "SPARSE_DENSITY", 0)
    dense = _run(cell, opts, x, hx, weights, lengths, dy)
    assert taken == [True] * 2 + [False] * 2 and len(wgrads) == 1
    monkeypatch.setattr(config, "SPARSE_DENSITY", density)
    for other in (_run(cell, opts, x, hx, weights, lengths, dy, reference), dense):
        for a, b in zip(got[0], other[0]):
            _check(a, b, dtype)
        for a, b in zip(got[1], other[1]):
            _check(a, b, dtype, grad=True)

    for dense_x in (x.copy(), x + (np.arange(T * B * I).reshape(T, B, I) % 5 == 0)):
        dense_x[0, 0, :4] = 1   # a first row with 4 of 24 not zero: above 1/8
        del taken[:]
        _run(cell, opts, dense_x.astype(dtype), hx, weights, lengths, dy)
        assert taken == [False] * 2 and len(wgrads) == 1
    nan_w = (np.array(weights[0]),) + weights[1:]
    nan_w[0][0, 0] = np.nan
    del taken[:]
    y = _run(cell, opts, x, hx, nan_w, lengths, dy)[0][0]
    assert taken == [False] * 2 and len(wgrads) == 1
    assert np.isnan(y[0, :, 0]).all()   # 0 * NaN: every sequence's first step, not only those
    assert (x[0, :, 0] == 0).any()      # whose input 0 is not zero


# ---------------------------------------------------------------- threads
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("cell, P, opts", CASES, ids=CASE_IDS)
def test_thread_count_independence(dtype, cell, P, opts, monkeypatch):
    """Every result is bit-for-bit the same for 1, 2, 3 and 4 threads."""
    T, B, I, H = 9, 8, 6, 9
    # 72 rows: 8 BLAS blocks (also for these tiny products), shared unevenly among the threads
    monkeypatch.setattr(config, "BLAS_MIN_ROWS", 8)
    monkeypatch.setattr(config, "BLAS_MIN_FLOPS", 0)
    monkeypatch.setattr(config, "BLAS_PARALLEL_MIN_FLOPS", 0)
    results = []
    saved = (config.get_num_threads(), config.PARALLEL_MIN_FLOPS)
    config.PARALLEL_MIN_FLOPS = 0
    try:
        for n in (1, 2, 3, 4):
            config.set_num_threads(n)
            rng, x, hx, weights, lengths = _problem(cell, T, B, I, H, P, True, dtype, True, seed=3)
            forward, backward = _kernels(nb, cell)[:2]
            y, hy, record = forward(x, hx, weights, lengths, True, **opts)
            dy = rng.standard_normal(y.shape).astype(dtype)
            norms = np.zeros((T, B), dtype)
            dw = _zeros(weights)
            dx, dhx = backward(dy, hy, record, dw, norms)
            results.append([y, *hy, dx, *dhx, *(w for w in dw if w is not None), norms])
    finally:
        config.set_num_threads(saved[0])
        config.PARALLEL_MIN_FLOPS = saved[1]
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_blas_held_at_one_thread_during_the_products(cell, monkeypatch):
    """BLAS's own threads would spin after each call and slow the time loops down: the
    products run with BLAS held at one thread, and the previous count is given back."""
    threadpoolctl = pytest.importorskip("threadpoolctl")

    def numpy_blas_threads():   # the BLAS of NumPy's wheel (numpy.libs), which the kernels call
        return {p["num_threads"] for p in threadpoolctl.threadpool_info()
                if p["user_api"] == "blas" and f"{os.sep}numpy" in p["filepath"]}

    if not numpy_blas_threads():
        pytest.skip("NumPy's BLAS is not a library of its own wheel here")
    seen = []
    part = _common._matmul_part

    def spy(*args):
        seen.append(numpy_blas_threads())
        return part(*args)

    monkeypatch.setattr(_common, "_matmul_part", spy)
    monkeypatch.setattr(config, "BLAS_MIN_FLOPS", 0)   # every product through BLAS
    _, x, hx, weights, lengths = _problem(cell, 5, 4, 3, 6, 0, True, np.float32, False)
    forward, backward = _kernels(nb, cell)[:2]
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = numpy_blas_threads()
        y, hy, saved = forward(x, hx, weights, lengths, True)
        backward(y, hy, saved, _zeros(weights))
        after = numpy_blas_threads()
    assert before == after == {2}
    assert len(seen) >= 4 and all(s == {1} for s in seen)


def test_set_num_threads_checks():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads"):
            config.set_num_threads(bad)


def test_batch_slices():
    np.testing.assert_array_equal(config.batch_slices(10, 3), [0, 3, 6, 10])
    np.testing.assert_array_equal(config.batch_slices(1, 4), [0, 1])
    np.testing.assert_array_equal(config.batch_slices(0, 2), [0, 0])


# ---------------------------------------------------------------- cache and memory
@pytest.mark.parametrize("cell, P, per_step",
                         [("rnn", 0, 1), ("gru", 0, 5), ("lstm", 0, 6), ("lstm", 3, 6)])
def test_memory_kept_by_forward(cell, P, per_step):
    """A training forward keeps T*B*(per_step*H [+ P]) values; an eval forward keeps nothing."""
    T, B, I, H = 7, 3, 4, 5
    _, x, hx, weights, _ = _problem(cell, T, B, I, H, P, True, np.float64, False)
    forward = _kernels(nb, cell)[0]
    _, _, saved = forward(x, hx, weights)
    arrays = [getattr(saved, k) for k in saved.fields]
    arrays = [a for a in arrays if isinstance(a, np.ndarray) and a is not x and a.ndim == 3]
    expected = T * B * (per_step * H + P)
    pad = T * B * 64 // 8   # the rows of the gate store are padded by 64 bytes
    assert expected <= sum(a.size for a in arrays) <= expected + pad
    assert forward(x, hx, weights, None, False)[2] is None


_CACHE_SCRIPT = textwrap.dedent("""
    import warnings
    warnings.simplefilter("error")
    import numpy as np
    from fastrnn.jit import config, rnn
    x = np.ones((2, 1, 3)); w = (np.ones((4, 3)), np.ones((4, 4)), None, None)
    (h,), _ = rnn.rnn_step_forward(x[0], (np.zeros((1, 4)),), w, False)
    assert np.allclose(h, np.tanh(3.0))
    print(config.CACHE_DIR)
    print(sum(rnn._step_forward_kernel.stats.cache_hits.values()))
""")


def _run_cache_script(cache_dir):
    env = dict(os.environ, FASTRNN_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, "-c", _CACHE_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    return out.stdout.split()


def test_disk_cache(tmp_path):
    cache_dir, hits = _run_cache_script(str(tmp_path))
    assert cache_dir.startswith(str(tmp_path)) and hits == "0"
    assert any(name.endswith(".nbi") for _, _, files in os.walk(tmp_path) for name in files)
    cache_dir_again, hits = _run_cache_script(str(tmp_path))
    assert cache_dir_again == cache_dir and hits == "1"


def test_read_only_cache_falls_back_quietly(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    cache_dir, hits = _run_cache_script(str(blocker / "cache"))   # cannot be created
    assert cache_dir == "None" and hits == "0"
    if os.name == "posix" and os.geteuid() != 0:   # root can write anywhere
        read_only = tmp_path / "read_only"
        read_only.mkdir(mode=0o500)
        cache_dir, _ = _run_cache_script(str(read_only))
        assert cache_dir == "None" and not any(read_only.iterdir())


@pytest.mark.parametrize("damage", ["empty", "truncated", "a folder in the way"])
def test_a_damaged_cache_costs_a_compile_not_a_failed_call(tmp_path, damage):
    """An index file emptied or cut short (a full disk, a killed process), or one that cannot
    be read or written: the kernel compiles and runs (numba let every call fail, in every
    process), and a damaged index is written whole again for the next process."""
    _run_cache_script(str(tmp_path))
    index = next(os.path.join(d, f) for d, _, files in os.walk(tmp_path) for f in files
                 if f.startswith("rnn._step_forward_kernel") and f.endswith(".nbi"))
    if damage == "empty":
        open(index, "wb").close()
    elif damage == "truncated":
        with open(index, "rb+") as f:
            f.truncate(os.path.getsize(index) // 2)
    else:
        os.unlink(index)
        os.mkdir(index)
    cache_dir, hits = _run_cache_script(str(tmp_path))      # (it fails on any output)
    assert hits == "0"
    if damage != "a folder in the way":
        assert _run_cache_script(str(tmp_path))[1] == "1"


def test_the_cache_follows_the_source_and_leaves_numbas_setting(tmp_path, monkeypatch):
    """The cache's folder is named by a digest of the backend's source bytes (an edit starts a
    fresh cache), and numba's own CACHE_DIR, set while the kernels are made, is given back."""
    import shutil
    here = os.path.dirname(config.__file__)
    for name in os.listdir(here):
        if name.endswith(".py"):
            shutil.copy(os.path.join(here, name), tmp_path / name)
    original = config._source_digest()
    monkeypatch.setattr(config, "__file__", str(tmp_path / "config.py"))
    assert config._source_digest() == original
    with open(tmp_path / "gemm.py", "a") as f:
        f.write("\n# an edit\n")
    assert config._source_digest() != original
    code = ("import numba; before = numba.config.CACHE_DIR\n"
            "import fastrnn.jit\n"
            "assert numba.config.CACHE_DIR == before, (numba.config.CACHE_DIR, before)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr


def test_empty_cache_dir_disables_cache():
    cache_dir, _ = _run_cache_script("")
    assert cache_dir == "None"


def test_warmup_compiles_everything_once_per_dtype():
    """After warmup(), no option (bias, projection, lengths, training, relu, batch size,
    thread count, a sparse input) compiles anything new: every kernel has one signature per
    dtype."""
    from numba.core.registry import CPUDispatcher
    from fastrnn.jit import gemm, gru, lstm, rnn

    nb.warmup()
    dispatchers = [obj for mod in (gemm, rnn, gru, lstm) for obj in vars(mod).values()
                   if isinstance(obj, CPUDispatcher)]
    before = {d: len(d.signatures) for d in dispatchers}
    assert before and all(n == 2 for n in before.values()), before
    saved = (config.get_num_threads(), config.PARALLEL_MIN_FLOPS)
    config.PARALLEL_MIN_FLOPS = 0
    try:
        for (cell, P, opts), dtype, B, bias, with_lengths, n in itertools.product(
                CASES, DTYPES, [0, 1, 3], [True, False], [True, False], [1, 2]):
            config.set_num_threads(n)
            rng, x, hx, weights, lengths = _problem(cell, 3, B, 2, 4, P, bias, dtype, with_lengths)
            forward, backward, step_forward, step_backward = _kernels(nb, cell)
            forward(x, hx, weights, lengths, False, **opts)
            y, hy, record = forward(x, hx, weights, lengths, True, **opts)
            dw = _zeros(weights)
            backward(y, hy, record, dw, np.zeros((3, B), dtype) if with_lengths else None)
            hy, record = step_forward(x[0], hx, weights, True, **opts)
            step_backward(hy, record, dw)
        # one-hot inputs (the sparse products), down to one row (T = B = 1)
        for (cell, P, opts), dtype, T, B, with_lengths in itertools.product(
                CASES, DTYPES, [1, 3], [0, 1, 3], [True, False]):
            rng, _, hx, weights, lengths = _problem(cell, T, B, 8, 4, P, True, dtype,
                                                    with_lengths)
            x = np.eye(8, dtype=dtype)[rng.integers(0, 8, (T, B))]
            forward, backward = _kernels(nb, cell)[:2]
            forward(x, hx, weights, lengths, False, **opts)
            y, hy, record = forward(x, hx, weights, lengths, True, **opts)
            backward(y, hy, record, _zeros(weights))
    finally:
        config.set_num_threads(saved[0])
        config.PARALLEL_MIN_FLOPS = saved[1]
    assert {d: len(d.signatures) for d in dispatchers} == before


def _read_only(a):
    if a is None:
        return None
    a = a.copy()
    a.flags.writeable = False
    return a


def test_read_only_arrays_compile_nothing_new():
    """Read-only inputs (a memory-mapped file's, a broadcast's) run on the kernels compiled for
    writeable ones (numba types them apart: a second compile took 2 s for LSTMCell's step) and
    give the same results: x, the states, the weights and the lengths, forward and step."""
    from numba.core.registry import CPUDispatcher
    from fastrnn.jit import gemm, gru, lstm, rnn

    nb.warmup()
    dispatchers = [obj for mod in (gemm, rnn, gru, lstm) for obj in vars(mod).values()
                   if isinstance(obj, CPUDispatcher)]
    before = {d: len(d.signatures) for d in dispatchers}
    for (cell, P, opts), dtype, training in itertools.product(CASES, DTYPES, [True, False]):
        rng, x, hx, weights, lengths = _problem(cell, 3, 2, 2, 4, P, True, dtype, True)
        ro_x, ro_hx, ro_lengths = _read_only(x), tuple(map(_read_only, hx)), _read_only(lengths)
        ro_weights = tuple(map(_read_only, weights))
        forward, backward, step_forward, step_backward = _kernels(nb, cell)
        y, hy, record = forward(ro_x, ro_hx, ro_weights, ro_lengths, training, **opts)
        y_w, hy_w, _ = forward(x, hx, weights, lengths, training, **opts)
        for a, b in zip((y,) + tuple(hy), (y_w,) + tuple(hy_w)):
            np.testing.assert_array_equal(a, b)
        hy1, record1 = step_forward(ro_x[0], ro_hx, ro_weights, training, **opts)
        for a, b in zip(hy1, step_forward(x[0], hx, weights, training, **opts)[0]):
            np.testing.assert_array_equal(a, b)
        if training:
            backward(_read_only(y), tuple(map(_read_only, hy)), record, _zeros(weights))
            step_backward(tuple(map(_read_only, hy1)), record1, _zeros(weights))
    assert {d: len(d.signatures) for d in dispatchers} == before


def test_activations_compile_nothing_new():
    """The activations reach the kernels as arrays (kinds and parameters), not as compile-time
    constants: after warmup(), every function of fastrnn.activations, in every slot and
    variant, runs on the kernels already compiled (one signature per dtype)."""
    from numba.core.registry import CPUDispatcher
    from fastrnn.jit import gemm, gru, lstm, rnn

    nb.warmup()
    dispatchers = [obj for mod in (gemm, rnn, gru, lstm) for obj in vars(mod).values()
                   if isinstance(obj, CPUDispatcher)]
    before = {d: len(d.signatures) for d in dispatchers}
    options = [   # cell, proj_size, options: each name of fastrnn.activations at least once
        ("rnn", 0, {"activations": [("scaled_tanh", 1.3, 0.7)], "clip": 0.7}),
        ("rnn", 0, {"activations": ["relu"]}),
        ("gru", 0, {"activations": [("hard_sigmoid", 0.2, 0.5), "softsign"], "clip": 0.7}),
        ("gru", 0, {"reset_after": False, "activations": ["softplus", ("elu", 0.5)]}),
        ("lstm", 0, {"activations": [("affine", 0.3, 0.5), ("leaky_relu", 0.1), "sigmoid"]}),
        ("lstm", 3, {"input_forget": True, "clip": 0.7,
                     "activations": ["sigmoid", ("thresholded_relu", 0.1), "tanh"]}),
    ]
    for (cell, P, opts), dtype, training in itertools.product(options, DTYPES, [True, False]):
        rng, x, hx, weights, lengths = _problem(cell, 3, 2, 2, 4, P, True, dtype, True)
        forward, backward, step_forward, step_backward = _kernels(nb, cell)
        y, hy, record = forward(x, hx, weights, lengths, training, **opts)
        hy1, record1 = step_forward(x[0], hx, weights, training, **opts)
        if training:
            backward(y, hy, record, _zeros(weights))
            step_backward(hy1, record1, _zeros(weights))
    assert {d: len(d.signatures) for d in dispatchers} == before


def test_a_call_with_enough_work_is_split_over_the_threads(monkeypatch):
    """On 2 threads a layer's call of a few MFLOP runs its kernels on both (a count that fell
    back to one thread would pass every test of results)."""
    import fastrnn
    splits = []
    run_threads = _common.run_threads

    def counting(kernel, args, tails):
        splits.append(len(tails))
        return run_threads(kernel, args, tails)
    monkeypatch.setattr(_common, "run_threads", counting)
    before = fastrnn.get_num_threads()
    fastrnn.set_num_threads(2)
    try:
        layer = fastrnn.LSTM(64, 128, backend="numba", seed=0)
        x = np.ones((20, 32, 64), np.float32)
        out, _ = layer(x)
        layer.backward(np.ones_like(out))
    finally:
        fastrnn.set_num_threads(before)
    assert splits and max(splits) == 2, splits
