"""Smoke tests of ``python -m fastrnn``: every command with tiny settings, its errors and exit codes."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from fastrnn.__main__ import main

FAST = ["--quiet", "--backend", "numpy"]


def run(capsys, *argv):
    """main(argv) in this process: (exit status, stdout, stderr)."""
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# -- the entry point ------------------------------------------------------------------------
def test_module_entry_point_help_and_errors():
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    done = subprocess.run([sys.executable, "-m", "fastrnn", "--help"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert done.returncode == 0
    for command in ("demo", "adding", "gradflow", "forecast"):
        assert command in done.stdout
    done = subprocess.run([sys.executable, "-m", "fastrnn", "forecast", "--data", "/nonexistent.csv"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1
    assert "does not exist" in done.stderr and "Traceback" not in done.stderr


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    with open(tmp_path / "err.txt", "w+") as err:          # like 'fastrnn gradflow | head -0'
        proc = subprocess.Popen([sys.executable, "-m", "fastrnn", "gradflow", "--length", "5",
                                 "--hidden", "4", "--batch", "2", "--repeats", "1", *FAST],
                                stdout=subprocess.PIPE, stderr=err, env=env)
        proc.stdout.close()
        assert proc.wait(timeout=60) == 1
        err.seek(0)
        assert err.read() == ""


@pytest.mark.parametrize("where", ["build_parser", "parse_args"])
def test_interrupt_before_the_command_runs_is_one_line(capsys, monkeypatch, where):
    import argparse

    import fastrnn.__main__ as entry

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    if where == "build_parser":
        monkeypatch.setattr(entry, "build_parser", interrupted)
    else:
        monkeypatch.setattr(argparse.ArgumentParser, "parse_args", interrupted)
    try:
        status, out, err = run(capsys, "gradflow", *FAST)
    except KeyboardInterrupt:                    # not let through to pytest, which would stop
        pytest.fail("the interrupt escaped main()")
    assert status == 130 and out == ""
    assert err == "\nfastrnn: interrupted\n"


def test_an_interrupt_a_library_turned_into_another_error_is_one_line(capsys, monkeypatch):
    """numba, compiling, can catch the KeyboardInterrupt of a Ctrl-C in a callback and fail
    with an error of its own: still 130 and one line; the same error without a Ctrl-C is
    raised as it is."""
    import signal
    import time

    import fastrnn.cli.gradflow as command

    def swallowed(args):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        except KeyboardInterrupt:
            pass
        raise RuntimeError("no compiled object yet")
    monkeypatch.setattr(command, "run", swallowed)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    status, out, err = run(capsys, "gradflow", *FAST)
    assert status == 130 and out == "" and err == "\nfastrnn gradflow: interrupted\n"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # given back

    def failing(args):
        raise RuntimeError("no compiled object yet")
    monkeypatch.setattr(command, "run", failing)
    with pytest.raises(RuntimeError, match="no compiled object yet"):
        run(capsys, "gradflow", *FAST)


def test_sizes_too_large_for_the_memory_end_with_a_message(capsys):
    status, out, err = run(capsys, "gradflow", "--hidden", "1000000", *FAST)
    assert status == 1 and "Traceback" not in err
    assert err.startswith("fastrnn gradflow: error: not enough memory for these sizes")


@pytest.mark.parametrize("command", ["demo", "adding", "gradflow", "forecast"])
def test_every_command_has_help(capsys, command):
    status, out, _ = run(capsys, command, "--help")
    assert status == 0
    assert f"fastrnn {command}" in out
    assert "--seed" in out


def test_usage_errors_exit_2(capsys):
    assert run(capsys, )[0] == 2                                  # no command
    assert run(capsys, "nonsense")[0] == 2
    status, _, err = run(capsys, "demo", "--steps", "-3")
    assert status == 2 and "--steps" in err
    for value in ("50,x", "5,,6", "5,6,", ""):     # an empty item is not a length either
        status, _, err = run(capsys, "adding", "--lengths", value)
        assert status == 2 and "comma-separated" in err, value
    status, _, err = run(capsys, "adding", "--lengths", "10,1")
    assert status == 2 and "--lengths" in err and "at least 2, got 1" in err
    for value in ("rnn,,lstm", "rnn,"):
        status, _, err = run(capsys, "adding", "--cells", value)
        assert status == 2 and "comma-separated" in err, value
    status, _, err = run(capsys, "adding", "--cells", "rnn,transformer")
    assert status == 2
    status, _, err = run(capsys, "forecast", "--lr", "nan")
    assert status == 2
    for value in ("0.9", "0", "0.5"):
        status, _, err = run(capsys, "demo", "--val-fraction", value)
        assert status == 2 and "--val-fraction" in err and "between 0 and 0.5" in err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "x"])
def test_gradflow_gate_bias_must_be_finite(capsys, value):
    status, out, err = run(capsys, "gradflow", "--gate-bias", value, *FAST)
    assert status == 2 and out == ""
    assert "--gate-bias" in err


def test_bad_backend_is_a_usage_error(capsys, monkeypatch):
    status, _, err = run(capsys, "gradflow", "--backend", "fortran", "--quiet")
    assert status == 2
    assert "fastrnn gradflow: error: argument --backend:" in err and "fortran" in err
    # a bad FASTRNN_BACKEND with --backend auto is the environment's, not an argument's
    monkeypatch.setenv("FASTRNN_BACKEND", "fortran")
    status, _, err = run(capsys, "gradflow", "--quiet")
    assert status == 1 and "FASTRNN_BACKEND" in err and "argument --backend" not in err


# -- demo -------------------------------------------------------------------------------------
DEMO_TINY = ["--max-chars", "40000", "--steps", "40", "--hidden", "32", "--bptt", "16",
             "--batch", "16", "--lr", "0.01", "--sample-every", "20", "--sample-chars", "30"]


def bpc_pair(out):
    m = re.search(r"held-out bits per character: ([\d.]+) -> ([\d.]+) \(start -> end\)", out)
    assert m, out
    return float(m.group(1)), float(m.group(2))


def test_demo_loss_drops_saves_and_reloads(capsys, tmp_path):
    model = tmp_path / "demo.npz"
    status, out, err = run(capsys, "demo", *DEMO_TINY, "--save", model, *FAST)
    assert status == 0, err
    assert "standard library" in out
    start, end = bpc_pair(out)
    assert start > 5.5                       # about log2(vocabulary) at initialisation
    assert end < start - 1.0                 # really learned something
    assert out.count("--- sample after") == 2
    assert model.exists()
    # reload: evaluation only, the same held-out score
    status, out2, err = run(capsys, "demo", "--max-chars", "40000", "--load", model, "--steps", "0",
                            "--no-save", "--sample-chars", "20", *FAST)
    assert status == 0, err
    assert bpc_pair(out2)[0] == pytest.approx(end, abs=1e-3)
    assert "loaded from" in out2


def test_demo_small_max_chars_reads_the_library_sources(capsys):
    status, out, err = run(capsys, "demo", "--max-chars", "15000", "--steps", "1", "--hidden", "4",
                           "--bptt", "8", "--batch", "4", "--sample-every", "0",
                           "--sample-chars", "5", "--no-save", *FAST)
    assert status == 0, err
    corpus = next(line for line in out.splitlines() if line.startswith("corpus:"))
    assert "standard library (" in corpus and "loaded" not in corpus
    assert "15,000 characters" in corpus


def test_demo_saves_by_default_but_not_when_it_only_generates(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text("the cat sat on the mat. " * 100, encoding="utf-8")
    tiny = ["demo", "--text", "t.txt", "--hidden", "4", "--bptt", "8", "--batch", "2",
            "--sample-every", "0", "--sample-chars", "5", *FAST]
    status, out, err = run(capsys, *tiny, "--steps", "2")
    assert status == 0, err
    assert "model saved to fastrnn-demo.npz" in out
    (tmp_path / "fastrnn-demo.npz").rename(tmp_path / "m.npz")
    status, out, err = run(capsys, *tiny, "--steps", "0", "--load", "m.npz")   # only generate
    assert status == 0, err
    assert "model saved" not in out and not (tmp_path / "fastrnn-demo.npz").exists()
    status, out, err = run(capsys, *tiny, "--steps", "0", "--load", "m.npz", "--save", "c.npz")
    assert status == 0, err
    assert "model saved to c.npz" in out and (tmp_path / "c.npz").exists()
    # sizes that disagree with the loaded model's, and --save with --no-save, are refused
    status, out, err = run(capsys, *tiny, "--steps", "0", "--load", "m.npz", "--layers", "2")
    assert status == 1 and "--layers 2 does not match the model loaded from m.npz, which has 1" \
        in err
    status, out, err = run(capsys, *tiny, "--steps", "1", "--save", "d.npz", "--no-save")
    assert status == 2 and "not allowed with argument" in err


def test_demo_is_deterministic_given_a_seed(capsys, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat. " * 400, encoding="utf-8")
    args = ["demo", "--text", text, "--steps", "6", "--hidden", "8", "--bptt", "8", "--batch", "4",
            "--sample-every", "0", "--sample-chars", "40", "--no-save", "--seed", "3", *FAST]
    outs = [run(capsys, *args)[1] for _ in range(2)]
    strip = [re.sub(r"[\d.]+ s|[\d,]+ characters/s|\(gathered in [\d.]+ s\)", "", o) for o in outs]
    assert strip[0] == strip[1]


def test_demo_file_errors(capsys, tmp_path):
    status, _, err = run(capsys, "demo", "--text", tmp_path / "missing.txt", *FAST)
    assert status == 1 and "does not exist" in err
    status, _, err = run(capsys, "demo", "--text", tmp_path, *FAST)
    assert status == 1 and "directory" in err
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("caf\xe9 ".encode("latin-1") * 100)
    status, _, err = run(capsys, "demo", "--text", latin, *FAST)
    assert status == 1 and "UTF-8" in err
    short = tmp_path / "short.txt"
    short.write_text("abcabc abc", encoding="utf-8")
    status, _, err = run(capsys, "demo", "--text", short, *FAST)
    assert status == 1 and "too short" in err
    bad_model = tmp_path / "bad.npz"
    bad_model.write_bytes(b"not a zip file at all")
    status, _, err = run(capsys, "demo", "--load", bad_model, "--steps", "0", *FAST)
    assert status == 1 and "bad.npz" in err and "Traceback" not in err
    status, _, err = run(capsys, "demo", "--save", tmp_path / "no" / "such" / "m.npz", *FAST)
    assert status == 1 and "does not exist" in err


def test_output_files_that_cannot_be_written_fail_before_the_training(capsys, tmp_path):
    """A name ending with a separator, a folder, or a file the system will not open for
    writing (/proc/version even as root) fails at once, naming it, with nothing trained."""
    for path, says in ((f"{tmp_path / 'models'}{os.sep}", "is a folder"),
                       (tmp_path, "is a folder"),
                       ("/proc/version", "cannot write")):
        if says == "cannot write" and not os.path.exists(path):
            continue                                  # (no /proc: not Linux)
        status, out, err = run(capsys, "demo", *DEMO_TINY, "--save", path, *FAST)
        assert status == 1 and says in err and str(path) in err, err
        assert "bits per character" not in out
    assert not (tmp_path / "models").exists() and sorted(tmp_path.iterdir()) == []


def test_the_output_check_leaves_pipes_alone_and_follows_links(tmp_path):
    """A named pipe is checked without opening it (opening blocks for a reader, and closing
    ends that reader's input before the model is written); a symbolic link, dangling too, is
    checked at the file it names."""
    import threading

    from fastrnn.cli._common import check_output_path
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    checked = threading.Thread(target=check_output_path, args=(str(fifo),), daemon=True)
    checked.start()
    checked.join(timeout=10)
    assert not checked.is_alive(), "the check of a named pipe blocked"
    link = tmp_path / "link.npz"
    os.symlink(tmp_path / "target.npz", link)
    assert check_output_path(str(link)) == str(link)
    assert not (tmp_path / "target.npz").exists()


def test_an_interrupted_save_leaves_the_saved_model_whole(capsys, tmp_path, monkeypatch):
    """The model saved back to the file it was loaded from, and a Ctrl-C in the middle of the
    writing: exit status 130, and the old file loads as before (it was emptied)."""
    model = tmp_path / "demo.npz"
    status, _, err = run(capsys, "demo", *DEMO_TINY, "--save", model, *FAST)
    assert status == 0, err
    before = model.read_bytes()

    def interrupted(fh, **arrays):
        fh.write(b"PK\x03\x04")
        raise KeyboardInterrupt
    monkeypatch.setattr(np, "savez", interrupted)
    status, _, err = run(capsys, "demo", "--max-chars", "40000", "--load", model, "--steps", "0",
                         "--save", model, "--sample-chars", "5", *FAST)
    assert status == 130
    assert model.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["demo.npz"]      # no temporary file left


def _cli_model(path, edit=None):
    """A model file as 'fastrnn demo --save' writes it, its JSON description passed through edit."""
    import json

    import fastrnn
    from fastrnn.cli._common import save_modules
    from fastrnn.train import Linear
    save_modules(path, {"lstm": fastrnn.LSTM(3, 4), "head": Linear(4, 3)},
                 {"vocabulary": "abc", "steps": 0})
    if edit:
        arrays = dict(np.load(path))
        arrays["__description__"] = np.array(json.dumps(edit(json.loads(str(
            arrays["__description__"])))))
        np.savez(path, **arrays)
    return path


def _huge(description):
    description["modules"]["lstm"]["config"]["hidden_size"] = 2 ** 31 - 1
    return description


@pytest.mark.parametrize("kind, says", [
    ("huge", "shape"),                              # refused before allocating 100 GB
    ("modules_list", "'modules'"),
    ("layer_save", "fastrnn.load"),
    ("plain_npz", "no '__description__' header"),
    ("vocabulary", "do not fit"),                   # 4 characters for a 3-input LSTM
])
def test_demo_load_refuses_untrustworthy_model_files(capsys, tmp_path, kind, says):
    import fastrnn
    path = tmp_path / f"{kind}.npz"
    if kind == "huge":
        _cli_model(path, _huge)
    elif kind == "modules_list":
        _cli_model(path, lambda d: dict(d, modules=[]))
    elif kind == "vocabulary":
        _cli_model(path, lambda d: dict(d, meta={"vocabulary": "abcd", "steps": 0}))
    elif kind == "layer_save":
        fastrnn.LSTM(3, 4).save(path)
    else:
        np.savez(path, weight=np.zeros(3))
    status, out, err = run(capsys, "demo", "--load", path, "--steps", "0", "--no-save", *FAST)
    assert status == 1 and out == ""
    assert err.startswith(f"fastrnn demo: error: model file {str(path)!r}") and err.count("\n") == 1
    assert says in err


# -- adding, gradflow, forecast ----------------------------------------------------------------
def test_adding_tiny(capsys, tmp_path):
    plot = tmp_path / "adding.png"
    args = ["adding", "--lengths", "6,10", "--steps", "15", "--hidden", "6", "--batch", "8",
            "--test-size", "50", "--no-early-stop", *FAST]
    if has_matplotlib():
        args += ["--plot", plot]
    status, out, err = run(capsys, *args)
    assert status == 0, err
    assert "baseline" in out
    rows = [line.split() for line in out.splitlines() if re.match(r"^\s+(6|10)\s", line)]
    assert [r[0] for r in rows] == ["6", "10"]
    mses = [float(v.rstrip("*")) for r in rows for v in r[1:]]
    assert len(mses) == 6 and all(0 <= v < 2 for v in mses)
    if has_matplotlib():
        assert plot.stat().st_size > 1000


def test_gradflow_tiny_default_backend(capsys, tmp_path):
    plot = tmp_path / "gradflow.png"
    args = ["gradflow", "--length", "30", "--hidden", "16", "--batch", "4", "--repeats", "1",
            "--quiet"]
    if has_matplotlib():
        args += ["--plot", plot]
    status, out, err = run(capsys, *args)
    assert status == 0, err
    lines = {line.split("  ")[0].strip(): line for line in out.splitlines()}
    rnn = [float(v) for v in lines["RNN (tanh)"].split()[2:]]
    exploding = lines["RNN, W_hh = 3 x orthogonal"].split()
    assert rnn[0] == 1.0 and rnn[-1] < 1e-3              # vanishes over 29 steps
    assert float(exploding[-1]) > 1e2                     # explodes
    assert "vanishes" in out and "explodes" in out
    if has_matplotlib():
        assert plot.stat().st_size > 1000


def test_gradflow_same_seed_same_numbers(capsys):
    args = ["gradflow", "--length", "12", "--hidden", "8", "--batch", "2", "--repeats", "1",
            "--seed", "5", *FAST]
    a, b = run(capsys, *args)[1], run(capsys, *args)[1]
    assert a.splitlines()[:-1] == b.splitlines()[:-1]        # all but "done in ... s"


def test_forecast_tiny_and_custom_csv(capsys, tmp_path):
    status, out, err = run(capsys, "forecast", "--epochs", "3", "--hidden", "8", *FAST)
    assert status == 0, err
    assert "sunspot" in out and "naive" in out and "1969-2008" in out
    series = tmp_path / "series.csv"
    t = np.arange(120)
    series.write_text("month,value\n" + "".join(f"{i},{np.sin(i / 3):.4f}\n" for i in t))
    plot = tmp_path / "forecast.png"
    args = ["forecast", "--data", series, "--window", "8", "--test", "12", "--epochs", "30",
            "--hidden", "8", "--lr", "0.02", *FAST]
    if has_matplotlib():
        args += ["--plot", plot]
    status, out, err = run(capsys, *args)
    assert status == 0, err
    assert "beats the naive forecast" in out             # a sine is easy
    if has_matplotlib():
        assert plot.stat().st_size > 1000


def test_forecast_bad_files(capsys, tmp_path):
    status, _, err = run(capsys, "forecast", "--data", tmp_path / "nope.csv", *FAST)
    assert status == 1 and "does not exist" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("year,value\n1,2\n2,abc\n")
    status, _, err = run(capsys, "forecast", "--data", bad, *FAST)
    assert status == 1 and "line 3" in err
    bad.write_text("year,value\n\n1,2\n\n\n2,inf\n")     # blank lines count as the file's lines
    status, _, err = run(capsys, "forecast", "--data", bad, *FAST)
    assert status == 1 and "line 6: value 'inf' is not finite" in err
    short = tmp_path / "short.csv"
    short.write_text("1\n2\n3\n")
    status, _, err = run(capsys, "forecast", "--data", short, *FAST)
    assert status == 1 and "needs at least" in err


def test_forecast_flat_tail_has_a_verdict_without_ratio(capsys, tmp_path):
    series = tmp_path / "flat.csv"               # varies, then stuck: the naive error is 0
    values = [np.sin(i / 3) for i in range(60)] + [5.0] * 20
    series.write_text("".join(f"{i},{v:.4f}\n" for i, v in enumerate(values)))
    status, out, err = run(capsys, "forecast", "--data", series, "--window", "5", "--test", "10",
                           "--epochs", "2", "--hidden", "4", *FAST)
    assert status == 0, err
    assert "naive forecast is exact" in out and "RMSE 0" in out


def test_forecast_csv_with_bom_keeps_its_first_value(capsys, tmp_path):
    series = tmp_path / "bom.csv"                # Excel's "CSV UTF-8": a BOM, no header
    series.write_bytes(b"\xef\xbb\xbf" + "".join(f"{i % 7}\n" for i in range(40)).encode())
    status, out, err = run(capsys, "forecast", "--data", series, "--window", "4", "--test", "5",
                           "--epochs", "1", "--hidden", "4", *FAST)
    assert status == 0, err
    assert "40 values" in out


# -- caption ----------------------------------------------------------------------------------
def test_caption_takes_a_seed_beyond_32_bits(capsys):
    pytest.importorskip("sklearn")
    status, out, err = run(capsys, "caption", "--epochs", "1", "--hidden", "4", "--embedding", "2",
                           "--batch", "512", "--seed", 2 ** 32 + 5, *FAST)
    assert status == 0, err
    assert "held-out (450 images" in out


# -- optional pieces -----------------------------------------------------------------------------
def test_plot_without_matplotlib_says_how_to_install(capsys, tmp_path, monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # import matplotlib -> ImportError
    status, out, err = run(capsys, "gradflow", "--length", "5", "--plot", tmp_path / "g.png", *FAST)
    assert status == 1
    assert "fastrnn[plot]" in err
    assert out == ""                                            # failed before doing any work


@pytest.mark.skipif(not has_matplotlib(), reason="needs matplotlib")
def test_plot_format_checked_up_front_and_real_file_named(capsys, tmp_path):
    tiny = ["gradflow", "--length", "5", "--hidden", "4", "--batch", "2", "--repeats", "1", *FAST]
    status, out, err = run(capsys, *tiny, "--plot", tmp_path / "g.jpgg")
    assert status == 1 and out == ""                            # failed before doing any work
    assert "'jpgg'" in err and ".png" in err
    status, out, err = run(capsys, *tiny, "--plot", tmp_path / "noext")
    assert status == 0, err
    assert (tmp_path / "noext.png").exists() and not (tmp_path / "noext").exists()
    assert f"plot saved to {tmp_path / 'noext.png'}\n" in out


def test_shipped_sunspot_data():
    from fastrnn.data import load_sunspots
    years, values = load_sunspots()
    assert years[0] == 1700 and years[-1] == 2008 and len(years) == 309
    np.testing.assert_array_equal(np.diff(years), 1)
    np.testing.assert_array_equal(values[:5], [5, 11, 16, 23, 36])
    assert values.max() == 190.2 and values.min() >= 0
