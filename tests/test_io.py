"""Saving and loading: bit-for-bit round trips, and one clear error per kind of bad file."""

import io
import json
import os
import pickle
import stat
import threading
import zipfile

import numpy as np
import pytest

import fastrnn
from fastrnn import io as fio
from fastrnn.module import Module


def bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


def assert_same_model(a, b):
    assert type(a) is type(b)
    assert a.get_config() == b.get_config()
    pa, pb = a.parameters(), b.parameters()
    assert list(pa) == list(pb)
    for name in pa:
        assert pa[name].dtype == pb[name].dtype and pa[name].shape == pb[name].shape, name
        assert np.array_equal(bits(pa[name]), bits(pb[name])), name


OBJECTS = [
    lambda dt: fastrnn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, batch_first=True,
                            dropout=0.5, dtype=dt, seed=1),
    lambda dt: fastrnn.GRU(3, 4, bias=False, dtype=dt, seed=2),
    lambda dt: fastrnn.RNN(2, 3, num_layers=3, nonlinearity="relu", dtype=dt, seed=3),
    lambda dt: fastrnn.RNNCell(2, 3, nonlinearity="relu", dtype=dt, seed=4),
    lambda dt: fastrnn.LSTMCell(2, 3, dtype=dt, seed=5),
    lambda dt: fastrnn.GRUCell(2, 3, bias=False, dtype=dt, seed=6),
    # the variants PyTorch lacks: their options and parameters travel too
    lambda dt: fastrnn.LSTM(3, 4, num_layers=2, peepholes=True, input_forget=True, clip=0.75,
                            reverse=True, dtype=dt, seed=7),
    lambda dt: fastrnn.GRU(3, 4, reset_after=False, clip=2.5, dtype=dt, seed=8),
    lambda dt: fastrnn.LSTMCell(2, 3, peepholes=True, clip=1.5, dtype=dt, seed=9),
    lambda dt: fastrnn.GRUCell(2, 3, reset_after=False, dtype=dt, seed=10),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", OBJECTS, ids=["LSTM", "GRU", "RNN", "RNNCell", "LSTMCell", "GRUCell",
                                               "LSTM-variants", "GRU-variants", "LSTMCell-variants",
                                               "GRUCell-variants"])
def test_round_trip_is_bit_for_bit(make, dtype, tmp_path):
    obj = make(dtype)
    first = next(iter(obj.parameters().values()))
    first.flat[0] = -0.0                                   # signed zero
    first.flat[1] = np.frombuffer(np.array([0x7FC00123], np.uint32).tobytes(), np.float32)[0] \
        if dtype == np.float32 else np.frombuffer(np.array([0x7FF8000000000123], np.uint64).tobytes(),
                                                  np.float64)[0]  # NaN with a payload
    first.flat[2] = np.finfo(dtype).smallest_subnormal
    path = tmp_path / "model.npz"
    assert obj.save(path) == path
    loaded = fastrnn.io.load(path)
    assert_same_model(obj, loaded)
    assert loaded.training and loaded.backend == obj.backend
    # the file is an ordinary .npz that numpy reads without pickle
    with np.load(path, allow_pickle=False) as npz:
        assert set(npz.files) == {fio.HEADER, *obj.parameters()}
        header = json.loads(npz[fio.HEADER].tobytes())
    assert header["format_version"] == fio.FORMAT_VERSION and header["class"] == type(obj).__name__


@pytest.mark.parametrize("make", OBJECTS)
def test_a_loaded_model_keeps_its_options(make, tmp_path):
    """The options that change no parameter's shape (reset_after, clip, input_forget, relu)
    travel too: the loaded model computes what the saved one did."""
    obj = make(np.float64).eval()
    obj.save(tmp_path / "m.npz")
    loaded = fio.load(tmp_path / "m.npz").eval()
    rng = np.random.default_rng(0)
    step = isinstance(obj, (fastrnn.RNNCell, fastrnn.LSTMCell, fastrnn.GRUCell))
    x = rng.standard_normal((2, obj.input_size) if step else (4, 2, obj.input_size))
    a, b = obj(x), loaded(x)
    a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
    np.testing.assert_array_equal(a, b)


def test_loaded_model_computes_the_same(tmp_path):
    layer = fastrnn.LSTM(3, 4, num_layers=2, bidirectional=True, seed=0).eval()
    layer.save(tmp_path / "m.npz")
    loaded = fio.load(tmp_path / "m.npz").eval()
    x = np.random.default_rng(0).standard_normal((5, 2, 3)).astype(np.float32)
    out, (h, c) = layer(x)
    out2, (h2, c2) = loaded(x)
    assert np.array_equal(out, out2) and np.array_equal(h, h2) and np.array_equal(c, c2)


def test_file_objects_backend_and_reproducible_bytes(tmp_path):
    layer = fastrnn.GRU(2, 3, seed=0)
    buf = io.BytesIO()
    layer.save(buf)
    buf.seek(0)
    assert_same_model(layer, fio.load(buf, backend="numpy"))
    assert fio.load(io.BytesIO(buf.getvalue()), backend="numpy").backend == "numpy"
    layer.save(tmp_path / "a.npz")
    layer.save(tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes() == buf.getvalue()


@pytest.mark.skipif(os.name != "posix", reason="symbolic links and modes as POSIX has them")
def test_saving_over_a_link_or_a_private_file_keeps_what_the_path_is(tmp_path):
    """As numpy.save: the link's file is written (the link stays a link) and an existing
    file keeps its permissions (a private model does not become world-readable)."""
    old, new = fastrnn.GRU(2, 3, seed=0), fastrnn.GRU(2, 3, seed=1)
    old.save(tmp_path / "v1.npz")
    os.symlink("v1.npz", tmp_path / "latest.npz")
    new.save(tmp_path / "latest.npz")
    assert os.path.islink(tmp_path / "latest.npz")
    assert_same_model(new, fio.load(tmp_path / "v1.npz"))
    private = tmp_path / "private.npz"
    old.save(private)
    os.chmod(private, 0o600)
    new.save(private)
    assert os.stat(private).st_mode & 0o777 == 0o600
    assert_same_model(new, fio.load(private))
    assert sorted(os.listdir(tmp_path)) == ["latest.npz", "private.npz", "v1.npz"]   # no leftovers


def test_saving_into_a_missing_directory_names_the_path_given(tmp_path):
    target = tmp_path / "missing" / "m.npz"
    with pytest.raises(FileNotFoundError) as info:
        fastrnn.GRU(2, 3).save(target)
    assert info.value.filename == str(target) and ".tmp" not in str(info.value)


def test_saving_to_what_a_rename_would_replace_writes_in_place(tmp_path):
    """A hard-linked file, a named pipe: written through, as numpy.save does (the rename over
    them broke the link, and replaced the pipe by a file); a directory is named; a name of
    240 characters fits (the temporary file's name is short)."""
    old, new = fastrnn.GRU(2, 3, seed=0), fastrnn.GRU(2, 3, seed=1)
    old.save(tmp_path / "a.npz")
    os.link(tmp_path / "a.npz", tmp_path / "b.npz")
    new.save(tmp_path / "a.npz")
    assert_same_model(new, fio.load(tmp_path / "b.npz"))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fio.load(fifo)))
    reader.start()
    new.save(fifo)
    reader.join(60)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and got and assert_same_model(new, got[0]) is None
    with pytest.raises(IsADirectoryError) as info:
        new.save(tmp_path)
    assert info.value.filename == str(tmp_path)
    long = tmp_path / ("m" * 236 + ".npz")
    new.save(long)
    assert_same_model(new, fio.load(long))


def test_saving_to_a_pipe_by_its_dev_fd_name_and_to_a_name_with_a_trailing_separator(tmp_path):
    """/dev/stdout into a pipe is written through (the real path of a /dev/fd link to a pipe
    does not exist: FileNotFoundError); "model/" names a directory, not a file to write."""
    import subprocess
    import sys
    code = "import fastrnn; fastrnn.GRU(2, 3, seed=1).save('/dev/stdout')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_model(fastrnn.GRU(2, 3, seed=1), fio.load(io.BytesIO(done.stdout)))
    with pytest.raises(IsADirectoryError) as info:
        fastrnn.GRU(2, 3).save(str(tmp_path / "model") + os.sep)
    assert "ends with a separator" in str(info.value) and not (tmp_path / "model").exists()


def test_file_objects_without_a_sized_read_or_an_int_seek(tmp_path):
    """A duck-typed source whose read() takes no size loads (it did before the first bytes were
    read alone); an mmap, whose seek() returns None, is refused as foreign, not a TypeError."""
    import mmap
    buf = io.BytesIO()
    fastrnn.GRU(2, 3, seed=1).save(buf)

    class Whole:
        def read(self):
            return buf.getvalue()
    assert_same_model(fastrnn.GRU(2, 3, seed=1), fio.load(Whole()))
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"not a model\n" * 100)
    with open(notes, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        with pytest.raises(fio.ForeignFileError, match="not a .npz"):
            fio.load(m)


def test_a_foreign_source_is_refused_from_its_first_bytes(tmp_path):
    """A wrong path to a large file, or /dev/zero, is refused without reading it whole (it was
    read to the end, or until memory ran out); a file object's name is in the error."""
    class Counting(io.BytesIO):
        read_bytes = 0

        def read(self, n=-1):
            data = super().read(n)
            Counting.read_bytes += len(data)
            return data
    with pytest.raises(fio.ForeignFileError, match="not a .npz"):
        fio.load(Counting(b"\x00" * (16 << 20)))
    assert Counting.read_bytes < 100_000
    with pytest.raises(fio.ForeignFileError, match="a device, not a file"):
        fio.load("/dev/zero")
    with open("/dev/zero", "rb") as f, pytest.raises(fio.ForeignFileError) as info:
        fio.load(f)
    assert info.value.path == "/dev/zero"


@pytest.mark.parametrize("seed,plain", [(np.int64(3), 3), (np.uint8(3), 3), (np.array([1, 2]), [1, 2]),
                                        (np.random.default_rng(0), None),
                                        (np.random.SeedSequence(1), None), (2**70, 2**70)])
def test_get_config_holds_plain_values_whatever_the_seed(seed, plain):
    """get_config is JSON: a NumPy integer seed as an int, a Generator or SeedSequence as None."""
    from fastrnn.train import Embedding, Linear
    for obj in (fastrnn.GRU(2, 3, seed=seed), fastrnn.LSTMCell(2, 3, seed=seed),
                Linear(2, 3, seed=seed), Embedding(4, 3, seed=seed)):
        config = obj.get_config()
        assert config["seed"] == plain and type(config["seed"]) is type(plain)
        json.dumps(config)


def test_generator_seed_is_stored_as_none(tmp_path):
    cell = fastrnn.GRUCell(2, 3, seed=np.random.default_rng(7))
    cell.save(tmp_path / "c.npz")
    loaded = fio.load(tmp_path / "c.npz")
    assert loaded.seed is None
    assert all(np.array_equal(loaded.parameters()[n], p) for n, p in cell.parameters().items())


def test_training_toolkit_head_round_trips(tmp_path):
    from fastrnn import train
    head = train.Linear(4, 3, dtype=np.float64, seed=0)
    head.save(tmp_path / "head.npz")
    assert_same_model(head, fio.load(tmp_path / "head.npz"))
    assert_same_model(head, fio.load(tmp_path / "head.npz", backend="numpy"))


class Scale(Module):
    """A Module defined outside fastrnn: y = x * weight."""

    def __init__(self, size, dtype=np.float32, seed=None):
        self.size = size
        super().__init__(dtype, "numpy", seed)
        self._init_parameters({"weight": (size,)}, size)

    def get_config(self):
        return dict(size=self.size, dtype=self._dtype.name, seed=self.seed)


def test_outside_classes_load_only_when_registered(tmp_path):
    obj = Scale(4, seed=0)
    obj.save(tmp_path / "s.npz")
    with pytest.raises(fio.ConfigError, match="unknown class .*Scale.*register_class"):
        fio.load(tmp_path / "s.npz")
    fio.register_class(Scale)
    try:
        assert_same_model(obj, fio.load(tmp_path / "s.npz"))
    finally:
        fio._registry.clear()
    with pytest.raises(TypeError, match="subclass of fastrnn.module.Module"):
        fio.register_class(dict)


def test_failed_save_leaves_the_old_file_alone(tmp_path):
    path = tmp_path / "m.npz"
    fastrnn.GRU(2, 3, seed=0).save(path)
    before = path.read_bytes()

    class Odd(Scale):
        def get_config(self):
            return dict(super().get_config(), size=object())

    with pytest.raises(TypeError, match="config entry 'size'"):
        Odd(2).save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]  # no temporary file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # permissions of an ordinary file
    with pytest.raises(TypeError, match="fastrnn Module"):
        fio.save({"weight": np.zeros(3)}, path)


# -- bad files ------------------------------------------------------------------------------------
def good_members(obj=None):
    """The members of a valid file for ``obj``: {"__fastrnn__": header dict, name: array}."""
    obj = obj or fastrnn.GRU(2, 3, seed=0)
    buf = io.BytesIO()
    obj.save(buf)
    with np.load(io.BytesIO(buf.getvalue()), allow_pickle=False) as npz:
        members = {k: npz[k] for k in npz.files}
    members[fio.HEADER] = json.loads(members[fio.HEADER].tobytes())
    return members


def write(path, members):
    """Write members with np.savez (which pickles object arrays), the header as uint8 JSON."""
    members = dict(members)
    if isinstance(members.get(fio.HEADER), dict):
        members[fio.HEADER] = np.frombuffer(json.dumps(members[fio.HEADER]).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **members)
    return path


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        fio.load(tmp_path / "nope.npz")


def test_empty_and_truncated_files_are_corrupt(tmp_path):
    data = (good_path := write(tmp_path / "good.npz", good_members())).read_bytes()
    assert isinstance(fio.load(good_path), fastrnn.GRU)
    for n in (0, 2, 30, len(data) // 2, len(data) - 1):
        (tmp_path / "cut.npz").write_bytes(data[:n])
        with pytest.raises(fio.CorruptFileError, match="empty|cut off|truncated"):
            fio.load(tmp_path / "cut.npz")


def test_damaged_array_bytes_fail_the_checksum(tmp_path):
    data = bytearray(write(tmp_path / "good.npz", good_members()).read_bytes())
    with zipfile.ZipFile(tmp_path / "good.npz") as zf:
        info = zf.getinfo("weight_hh_l0.npy")
    data[info.header_offset + 30 + len(info.filename) + len(info.extra) + 100] ^= 0x01
    (tmp_path / "bad.npz").write_bytes(bytes(data))
    with pytest.raises(fio.CorruptFileError, match="weight_hh_l0.*CRC"):
        fio.load(tmp_path / "bad.npz")


def test_every_single_bit_flip_is_caught_or_harmless():
    layer = fastrnn.LSTM(2, 2, seed=0)
    buf = io.BytesIO()
    layer.save(buf)
    data = buf.getvalue()
    for pos in range(0, len(data), 3):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        try:
            loaded = fio.load(io.BytesIO(bytes(bad)))
        except fio.FormatError:
            continue
        assert_same_model(layer, loaded)  # the flip hit a field zip readers ignore


def test_foreign_files(tmp_path):
    cases = {
        "text.npz": b"hello, this is text\n",
        "array.npy": None,
        "pickle.pkl": pickle.dumps({"weight": [1.0, 2.0]}),
    }
    np.save(tmp_path / "array.npy", np.zeros(3))
    cases["array.npy"] = (tmp_path / "array.npy").read_bytes()
    messages = {"text.npz": "not a .npz", "array.npy": "single NumPy .npy array",
                "pickle.pkl": "pickle.*never unpickles"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(fio.ForeignFileError, match=messages[name]):
            fio.load(tmp_path / name)
    np.savez(tmp_path / "plain.npz", weight_ih_l0=np.zeros((9, 2)))
    with pytest.raises(fio.ForeignFileError, match="no '__fastrnn__' header.*load_state_dict"):
        fio.load(tmp_path / "plain.npz")
    from fastrnn.cli._common import save_modules     # what `fastrnn demo --save` writes
    save_modules(str(tmp_path / "cli.npz"), {"lstm": fastrnn.LSTM(2, 3), "head": fastrnn.Linear(3, 4)}, {})
    with pytest.raises(fio.ForeignFileError, match="fastrnn command line.*fastrnn demo --load"):
        fio.load(tmp_path / "cli.npz")
    with zipfile.ZipFile(tmp_path / "torch.pt", "w") as zf:  # the layout of torch.save
        zf.writestr("archive/data.pkl", pickle.dumps({}))
        zf.writestr("archive/version", "3\n")
    with pytest.raises(fio.ForeignFileError, match="PyTorch checkpoint.*from_torch"):
        fio.load(tmp_path / "torch.pt")
    members = good_members()
    members[fio.HEADER]["format"] = "something-else"
    with pytest.raises(fio.ForeignFileError, match="names format 'something-else'"):
        fio.load(write(tmp_path / "other.npz", members))


def test_format_versions(tmp_path):
    for version, message in [(2, "format version 2.*reads format versions up to 1.*upgrade"),
                             (0, "does not exist"), ("1", "must be an integer"), (None, "integer")]:
        members = good_members()
        members[fio.HEADER]["format_version"] = version
        with pytest.raises(fio.FormatVersionError, match=message):
            fio.load(write(tmp_path / "v.npz", members))


def test_pickled_objects_are_refused(tmp_path):
    members = good_members()
    members["weight_ih_l0"] = np.array([{"a": 1}, None], dtype=object)
    with pytest.raises(fio.PickledArrayError, match="weight_ih_l0.*Python objects.*never unpickles"):
        fio.load(write(tmp_path / "obj.npz", members))
    members = good_members()
    members["extra"] = np.array(["x", print], dtype=object)  # would call into pickle
    with pytest.raises(fio.PickledArrayError, match="'extra'"):
        fio.load(write(tmp_path / "obj2.npz", members))


def test_missing_and_unexpected_arrays(tmp_path):
    members = good_members()
    del members["bias_hh_l0"]
    with pytest.raises(fio.MissingArrayError, match="bias_hh_l0.*does not hold"):
        fio.load(write(tmp_path / "m.npz", members))
    members = good_members()
    del members["bias_hh_l0"]
    del members[fio.HEADER]["arrays"]["bias_hh_l0"]
    with pytest.raises(fio.MissingArrayError, match=r"\['bias_hh_l0'\] of GRU are missing"):
        fio.load(write(tmp_path / "m2.npz", members))
    members = good_members()
    members["weight_hr_l0"] = np.zeros((2, 3), np.float32)
    with pytest.raises(fio.UnexpectedArrayError, match="weight_hr_l0.*not parameters of GRU"):
        fio.load(write(tmp_path / "u.npz", members))


def test_wrong_shapes_and_dtypes(tmp_path):
    members = good_members()
    members["weight_ih_l0"] = np.zeros((9, 5), np.float32)
    with pytest.raises(fio.ArrayShapeError, match=r"weight_ih_l0.*\(9, 5\).*\(9, 2\)"):
        fio.load(write(tmp_path / "s.npz", members))
    members = good_members()
    members["weight_ih_l0"] = members["weight_ih_l0"].astype(np.float64)
    with pytest.raises(fio.ArrayDtypeError, match="weight_ih_l0.*float64.*float32"):
        fio.load(write(tmp_path / "d.npz", members))
    members = good_members()
    members["bias_ih_l0"] = np.zeros(9, np.int32)
    with pytest.raises(fio.ArrayDtypeError, match="bias_ih_l0.*int32"):
        fio.load(write(tmp_path / "i.npz", members))


def test_bad_class_config_and_header(tmp_path):
    members = good_members()
    members[fio.HEADER]["class"] = "Transformer"
    with pytest.raises(fio.ConfigError, match="unknown class fastrnn.layers.Transformer"):
        fio.load(write(tmp_path / "c.npz", members))
    members = good_members()
    members[fio.HEADER]["module"], members[fio.HEADER]["class"] = "os", "system"
    with pytest.raises(fio.ConfigError, match="unknown class os.system"):
        fio.load(write(tmp_path / "os.npz", members))
    members = good_members()
    members[fio.HEADER]["config"]["hidden_size"] = -1
    with pytest.raises(fio.ConfigError, match="hidden_size must be"):
        fio.load(write(tmp_path / "h.npz", members))
    members = good_members()
    members[fio.HEADER] = np.frombuffer(b"{not json", np.uint8)
    with pytest.raises(fio.CorruptFileError, match="not valid UTF-8 JSON"):
        fio.load(write(tmp_path / "j.npz", members))
    members = good_members()
    members[fio.HEADER] = np.zeros(3, np.float32)
    with pytest.raises(fio.CorruptFileError, match="1-D uint8"):
        fio.load(write(tmp_path / "f.npz", members))


def test_every_error_is_a_value_error_with_the_path(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="x.npz: the file is empty"):
        fio.load(tmp_path / "x.npz")
    assert all(issubclass(e, fio.FormatError) for e in (
        fio.CorruptFileError, fio.ForeignFileError, fio.FormatVersionError, fio.PickledArrayError,
        fio.MissingArrayError, fio.UnexpectedArrayError, fio.ArrayShapeError, fio.ArrayDtypeError,
        fio.ConfigError))
