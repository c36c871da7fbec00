"""Malformed model files: each fails with its documented FormatError, fast and in little memory.

The corpus is made here from real saved models: byte flips, truncations, duplicated members,
lying sizes (zip entries, .npy headers, the header's config), zip bombs, bad header JSON and
config values.  Every load runs in this process under a time limit (``time_limit``), and the
ones that could allocate or inflate under a memory limit (``peak_bytes``).
"""

import io
import json
import signal
import struct
import threading
import time
import tracemalloc
import warnings
import zipfile
import zlib

import numpy as np
import pytest

import fastrnn
from fastrnn import io as fio
from fastrnn.train import Embedding, Linear

#: seconds any one test may take before it fails instead of hanging
TIME_LIMIT = 10
#: bytes a malformed load may allocate (the files here are at most a few MB)
MEMORY_LIMIT = 16 << 20

MODELS = {
    "LSTM": lambda: fastrnn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2,
                                 backend="numpy", seed=1),
    "GRU": lambda: fastrnn.GRU(2, 3, backend="numpy", seed=2),
    "RNN": lambda: fastrnn.RNN(2, 3, num_layers=2, nonlinearity="relu", bias=False,
                               backend="numpy", seed=3),
}


@pytest.fixture(autouse=True)
def time_limit():
    """Fail, rather than hang, a test that runs over :data:`TIME_LIMIT` seconds.

    The alarm raises pytest's ``Failed`` (a BaseException), which no ``except Exception``
    inside ``load`` can turn into a FormatError.
    """
    in_main_thread = threading.current_thread() is threading.main_thread()
    if not hasattr(signal, "setitimer") or not in_main_thread:
        yield
        return

    def expired(signum, frame):
        pytest.fail(f"over the {TIME_LIMIT} s limit: a malformed file made load hang")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def saved(model):
    buf = io.BytesIO()
    model.save(buf)
    return buf.getvalue()


def same_model(a, b):
    """Same class and config, and every parameter bit-for-bit equal."""
    sa, sb = a.state_dict(), b.state_dict()
    return (type(a) is type(b) and a.get_config() == b.get_config() and list(sa) == list(sb)
            and all(sa[n].dtype == sb[n].dtype and sa[n].shape == sb[n].shape
                    and sa[n].tobytes() == sb[n].tobytes() for n in sa))


def members_of(data):
    """``{name: array}`` of a saved file, the header as a dict."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        members = {k: npz[k] for k in npz.files}
    members[fio.HEADER] = json.loads(members[fio.HEADER].tobytes())
    return members


def npy(array):
    """The bytes of ``array`` as a .npy file."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def npy_header(shape, dtype=np.float32):
    """The .npy header (version 1.0) of an array of ``shape``, without its data."""
    fields = np.lib.format.header_data_from_array_1_0(np.zeros(0, dtype))
    fields["shape"] = tuple(shape)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, fields)
    return buf.getvalue()


def header_bytes(header):
    return json.dumps(header).encode() if isinstance(header, dict) else header


def pack(members, extra=()):
    """An .npz made by zipfile from ``{name: array}`` (the header as a dict or raw bytes)
    plus ``extra`` (name, array) pairs, which may repeat a name."""
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile: "Duplicate name"
        with zipfile.ZipFile(out, "w") as zf:
            for name, array in list(members.items()) + list(extra):
                if name == fio.HEADER:
                    array = np.frombuffer(header_bytes(array), np.uint8)
                zf.writestr(name + ".npy", npy(array))
    return out.getvalue()


def raw_zip(entries):
    """A zip archive written by hand, its sizes and flags as given (lies included).

    Parameters
    ----------
    entries : list of tuple
        ``(name, payload, method, crc, file_size, flags)``: the name as bytes, the member's
        bytes as stored (compressed for method 8), and what its entries declare.
    """
    out, central = bytearray(), bytearray()
    for name, payload, method, crc, file_size, flags in entries:
        offset = len(out)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, flags, method, 0, 0x21, crc,
                           len(payload), file_size, len(name), 0) + name + payload
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, flags, method, 0, 0x21,
                               crc, len(payload), file_size, len(name), 0, 0, 0, 0, 0,
                               offset) + name
    start = len(out)
    out += central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries),
                                 len(central), start, 0)
    return bytes(out)


def stored(name, data):
    """A raw_zip entry for an uncompressed member."""
    return (name.encode(), data, zipfile.ZIP_STORED, zlib.crc32(data), len(data), 0)


def deflated(prefix, zeros=0, noise=0, seed=0):
    """Raw deflate of ``prefix`` then ``zeros`` zero bytes, never holding the zeros at once.

    With ``noise``, every MiB of zeros is followed by that many random bytes (counted in the
    size), which keeps the compression ratio modest.  Returns (compressed, crc, size).
    """
    rng = np.random.default_rng(seed)
    packer = zlib.compressobj(1, zlib.DEFLATED, -15)
    parts, crc, size = [packer.compress(prefix)], zlib.crc32(prefix), len(prefix)
    block = memoryview(bytes(1 << 20))
    while zeros > 0:
        chunk = block[:min(zeros, len(block))]
        parts.append(packer.compress(chunk))
        crc, size, zeros = zlib.crc32(chunk, crc), size + len(chunk), zeros - len(chunk)
        if noise:
            junk = rng.bytes(noise)
            parts.append(packer.compress(junk))
            crc, size = zlib.crc32(junk, crc), size + len(junk)
    parts.append(packer.flush())
    return b"".join(parts), crc, size


def deflated_entry(name, stream, file_size=None):
    """A raw_zip entry for a deflated member: ``stream`` from :func:`deflated`, its true size
    declared unless ``file_size`` says otherwise."""
    compressed, crc, size = stream
    return (name.encode(), compressed, zipfile.ZIP_DEFLATED, crc,
            size if file_size is None else file_size, 0)


def with_member(data, name, entry):
    """The raw_zip of a saved file's members, ``name`` replaced by ``entry`` (or appended)."""
    entries = []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            key = info.filename[:-4]
            entries.append(entry if key == name else stored(info.filename, zf.read(info)))
    if name not in [e[0].decode()[:-4] for e in entries]:
        entries.append(entry)
    return raw_zip(entries)


def with_header(data, edit):
    """A saved file re-packed, its header dict passed through ``edit`` (returns the new one)."""
    members = members_of(data)
    members[fio.HEADER] = edit(members[fio.HEADER])
    return pack(members)


def edit_config(**changes):
    def edit(header):
        header["config"].update(changes)
        return header
    return edit


def expect(error, blob, tmp_path, match=None, limit=MEMORY_LIMIT, seconds=1.0):
    """Load ``blob`` from a file: it must raise ``error``, naming the file, within ``seconds``
    and allocating at most ``limit`` bytes.  Returns the exception."""
    path = tmp_path / "bad.npz"
    path.write_bytes(blob)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(error, match=match) as info:
            fio.load(path, backend="numpy")
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(info.value).startswith(f"{path}: "), str(info.value)
    assert isinstance(info.value, fio.FormatError)
    assert elapsed < seconds, f"load took {elapsed:.2f} s to fail"
    assert peak < len(blob) + limit, f"load allocated {peak / 2**20:.0f} MiB before failing"
    return info.value


@pytest.fixture(scope="module")
def files():
    """The saved bytes of each model of :data:`MODELS`, and the models."""
    models = {name: make() for name, make in MODELS.items()}
    return {name: (model, saved(model)) for name, model in models.items()}


# -- damage: flips and cuts --------------------------------------------------------------------
def structure_positions(data):
    """Every byte of the zip structure: local headers, central directory, end record."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        positions = set(range(zf.start_dir, len(data)))
        for info in zf.infolist():
            start = info.header_offset
            name_len, extra_len = struct.unpack_from("<2H", data, start + 26)
            positions.update(range(start, start + 30 + name_len + extra_len))
    return sorted(positions)


@pytest.mark.parametrize("name", list(MODELS))
def test_byte_flips_raise_format_error_or_load_the_same_model(name, files, tmp_path):
    model, data = files[name]
    rng = np.random.default_rng(sum(map(ord, name)))
    positions = rng.choice(len(data), 70, replace=False).tolist()
    if name == "GRU":  # one file: every byte of its zip structure too
        positions += structure_positions(data)
    raised = 0
    for k, pos in enumerate(positions):
        bad = bytearray(data)
        bad[pos] ^= int(rng.integers(1, 256))
        path = tmp_path / f"flip{k}.npz"
        path.write_bytes(bytes(bad))
        try:
            loaded = fio.load(path, backend="numpy")
        except fio.FormatError as exc:
            assert str(exc).startswith(f"{path}: "), str(exc)
            raised += 1
            continue
        assert same_model(model, loaded), f"a flip at byte {pos} loaded a different model"
    assert raised >= len(positions) // 2  # most bytes matter: the data, under its CRC


def test_truncations_are_corrupt(files, tmp_path):
    _, data = files["LSTM"]
    for n in sorted({0, 1, 3, 4, 30, 100, *range(5, len(data), 97), len(data) - 22,
                     len(data) - 1}):
        expect(fio.CorruptFileError, data[:n], tmp_path,
               match="empty|cut off|truncated|damaged|corrupt")


def test_a_member_cut_out_of_the_middle_is_corrupt(files, tmp_path):
    _, data = files["GRU"]
    start = data.index(b"weight_hh_l0.npy")
    expect(fio.CorruptFileError, data[:start] + data[start + 200:], tmp_path)


def test_a_directory_that_hides_members_is_corrupt(files, tmp_path):
    """The first directory entry's comment length, damaged, swallows the other entries:
    zipfile then lists only the header; the end record still counts five members."""
    _, data = files["GRU"]
    bad = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        start, end = zf.start_dir, data.rindex(b"PK\x05\x06")
    name_len, extra_len = struct.unpack_from("<2H", data, start + 28)
    struct.pack_into("<H", bad, start + 32, end - start - 46 - name_len - extra_len)
    with zipfile.ZipFile(io.BytesIO(bytes(bad))) as zf:
        assert zf.namelist() == ["__fastrnn__.npy"]
    expect(fio.CorruptFileError, bytes(bad), tmp_path,
           match="end record declares 5 members, but its directory holds 1")


# -- duplicates and names ----------------------------------------------------------------------
def test_duplicated_members_are_corrupt(files, tmp_path):
    _, data = files["GRU"]
    members = members_of(data)
    second = np.zeros_like(members["weight_ih_l0"])
    expect(fio.CorruptFileError, pack(members, [("weight_ih_l0", second)]), tmp_path,
           match=r"member 'weight_ih_l0\.npy' appears 2 times")
    expect(fio.CorruptFileError, pack(members, [(fio.HEADER, members[fio.HEADER])]), tmp_path,
           match=r"member '__fastrnn__\.npy' appears 2 times")
    # the same bytes twice are refused too: a duplicate is never a valid file
    expect(fio.CorruptFileError, pack(members, [("bias_hh_l0", members["bias_hh_l0"])]),
           tmp_path, match="bias_hh_l0.npy' appears 2 times")


def test_names_that_are_not_utf8_are_corrupt(files, tmp_path):
    _, data = files["GRU"]
    entry = (b"weight_\xff\xfe.npy", b"x", zipfile.ZIP_STORED, zlib.crc32(b"x"), 1, 0x800)
    expect(fio.CorruptFileError, with_member(data, "extra", entry), tmp_path,
           match="truncated or corrupt|cannot be read")


# -- lying sizes -------------------------------------------------------------------------------
def test_huge_sizes_in_the_config_fail_before_allocating(files, tmp_path):
    _, data = files["LSTM"]
    cases = [
        (dict(hidden_size=10**9), fio.ArrayShapeError,
         r"weight_ih_l0.*\(16, 3\).*\(4000000000, 3\)"),
        (dict(input_size=2 * 10**9), fio.ArrayShapeError, "weight_ih_l0.*2000000000"),
        (dict(hidden_size=10**12), fio.ConfigError, "hidden_size must be an integer <= 2147483647"),
        (dict(input_size=10**15), fio.ConfigError, "input_size must be an integer <= 2147483647"),
        (dict(hidden_size=10**6, proj_size=10**5), fio.ArrayShapeError, "weight_ih_l0"),
        (dict(proj_size=10**9), fio.ConfigError, "proj_size must be smaller than hidden_size"),
        (dict(num_layers=100000), fio.MissingArrayError,
         r"at least 400000 parameters.*file holds 20 array"),
        (dict(num_layers=10**12, bidirectional=False), fio.MissingArrayError,
         "at least 2000000000000"),
    ]
    for changes, error, match in cases:
        expect(error, with_header(data, edit_config(**changes)), tmp_path, match=match,
               limit=1 << 20, seconds=0.5)


@pytest.mark.parametrize("model, changes", [
    (lambda: Linear(3, 5, seed=0), dict(in_features=2000, out_features=20000)),
    (lambda: Embedding(5, 3, seed=0), dict(num_embeddings=20000, embedding_dim=2000)),
    (lambda: Embedding(5, 3, seed=0), dict(num_embeddings=10**6, embedding_dim=10**6)),
])
def test_the_training_modules_huge_sizes_fail_before_allocating(model, changes, tmp_path):
    """The toolkit's modules too: a config whose table the file does not hold is refused
    before the table is drawn (an Embedding drew its 480 MB, or raised MemoryError, first)."""
    expect(fio.ArrayShapeError, with_header(saved(model()), edit_config(**changes)), tmp_path,
           match="weight", limit=1 << 20, seconds=0.5)


def test_huge_shapes_in_the_array_list_and_npy_headers(files, tmp_path):
    _, data = files["GRU"]

    def listing(header):
        header["arrays"]["weight_ih_l0"]["shape"] = [10**12, 10**12]
        return header
    expect(fio.ArrayShapeError, with_header(data, listing), tmp_path,
           match=r"weight_ih_l0.*\(9, 2\).*header lists \(1000000000000, 1000000000000\)")
    # a .npy header claiming 4 TB for 72 bytes of data, listed in the header or not
    raw = npy_header((10**12,)) + bytes(72)
    entry = stored("weight_ih_l0.npy", raw)
    for blob in [data, with_header(data, listing)]:
        expect(fio.CorruptFileError, with_member(blob, "weight_ih_l0", entry), tmp_path,
               match=r"weight_ih_l0\.npy' declares 200 bytes, but its \.npy header describes "
                     r"4000000000128")


def test_member_sizes_that_disagree_with_the_npy_header(files, tmp_path):
    _, data = files["GRU"]
    raw = npy(np.zeros((9, 2), np.float32))
    cases = [
        # stored, the entry claims fewer bytes than stored (a reader would stop early)
        (b"weight_ih_l0.npy", raw, 0, zlib.crc32(raw), len(raw) - 8, 0),
        # stored, trailing bytes after the array
        stored("weight_ih_l0.npy", raw + b"\0" * 8),
        # deflated, honest entry, 64 kB of random data behind a (9, 2) header
        deflated_entry("weight_ih_l0.npy",
                       deflated(raw + np.random.default_rng(0).bytes(1 << 16))),
    ]
    for entry in cases:
        expect(fio.CorruptFileError, with_member(data, "weight_ih_l0", entry), tmp_path,
               match=r"weight_ih_l0\.npy.*(declares|describes)")


@pytest.fixture(scope="module")
def bomb():
    """A .npy of 112 MiB of zeros (shape (28 Mi,) float32), deflated to about 0.5 MB."""
    stream = deflated(npy_header((28 << 20,)), zeros=112 << 20)
    assert stream[2] > 100 * len(stream[0])
    return stream


def test_zip_bombs_fail_fast_without_inflating(files, bomb, tmp_path):
    _, data = files["GRU"]
    small = len(npy(np.zeros((9, 2), np.float32)))
    cases = [
        # the entry declares what a (9, 2) array needs; the stream inflates to 112 MiB
        ("weight_ih_l0", small, r"weight_ih_l0\.npy.*(Bad CRC-32|declares)"),
        # honest entry: 112 MiB declared for 0.5 MB compressed
        ("weight_ih_l0", None, r"weight_ih_l0\.npy' declares \d+ bytes compressed into \d+ "
                               r".*zip bomb"),
        # the header member, and a member that is not a parameter, as bombs
        (fio.HEADER, None, "__fastrnn__.npy.*zip bomb"),
        ("extra", None, "extra.npy.*zip bomb"),
    ]
    for name, size, match in cases:
        entry = deflated_entry(name + ".npy", bomb, size)
        expect(fio.CorruptFileError, with_member(data, name, entry), tmp_path, match=match)


def test_config_is_checked_against_the_arrays_before_any_data_is_read(files, tmp_path):
    """A 65 MiB member, consistent with its zip entry, its .npy header and the header's list,
    and compressed only ~50 times (not a bomb): the config's (9, 2) refuses it unread."""
    _, data = files["GRU"]
    count = ((64 << 20) + 64 * (16 << 10)) // 4  # 64 MiB of zeros, 16 kiB of noise after each
    stream = deflated(npy_header((count,)), zeros=64 << 20, noise=16 << 10)
    assert stream[2] == len(npy_header((count,))) + 4 * count
    assert 10 * len(stream[0]) < stream[2] < fio._MAX_INFLATION * len(stream[0])

    def listing(header):
        header["arrays"]["weight_ih_l0"]["shape"] = [count]
        return header
    blob = with_member(with_header(data, listing), "weight_ih_l0",
                       deflated_entry("weight_ih_l0.npy", stream))
    expect(fio.ArrayShapeError, blob, tmp_path,
           match=rf"weight_ih_l0' has shape \({count},\), but the parameter of GRU.*\(9, 2\)")


def test_compressed_files_still_load(files, tmp_path):
    for model, data in files.values():
        members = members_of(data)
        members[fio.HEADER] = np.frombuffer(json.dumps(members[fio.HEADER]).encode(), np.uint8)
        path = tmp_path / "compressed.npz"
        np.savez_compressed(path, **members)
        assert same_model(model, fio.load(path, backend="numpy"))


def test_fortran_order_arrays_load_the_same_values(files, tmp_path):
    model, data = files["GRU"]
    members = members_of(data)
    members["weight_ih_l0"] = np.asfortranarray(members["weight_ih_l0"])
    path = tmp_path / "f.npz"
    path.write_bytes(pack(members))
    assert same_model(model, fio.load(path, backend="numpy"))


# -- .npy headers ------------------------------------------------------------------------------
def test_damaged_npy_headers_are_corrupt(files, tmp_path):
    _, data = files["GRU"]
    raw = npy(np.zeros((9, 2), np.float32))
    length = struct.unpack_from("<H", raw, 8)[0]
    cases = [
        b"not an npy file at all",
        raw[:6] + b"\x09\x00" + raw[8:],                                  # unknown version
        raw.replace(b"(9, 2)", b"(9,-2)"),                                # negative size
        raw.replace(b"'descr'", b"'dascr'"),                              # not numpy's keys
        raw.replace(b"(9, 2)", b"(((((("),                                # not a literal
        raw[:10] + "{'é': 1}".encode("latin-1").ljust(length - 1) + b"\n" + raw[10 + length:],
        raw[:6] + b"\x02\x00" + struct.pack("<L", 0xFFFFFFF0) + raw[10:],  # a 4 GB header
        raw[:6] + b"\x01\x00" + struct.pack("<H", 0xFFFF) + raw[10:],      # longer than the member
        raw[:9],                                                          # cut in the magic
    ]
    for bad in cases:
        blob = with_member(data, "weight_ih_l0", stored("weight_ih_l0.npy", bad))
        expect(fio.CorruptFileError, blob, tmp_path,
               match=r"weight_ih_l0.*(\.npy header|declares|describes|negative)")


# -- the header --------------------------------------------------------------------------------
@pytest.mark.parametrize("raw, match", [
    (b"[1, 2]", "must be a JSON object, but it is list"),
    (b'"fastrnn"', "must be a JSON object, but it is str"),
    (b"3.5", "must be a JSON object, but it is float"),
    (b"null", "must be a JSON object, but it is NoneType"),
    (b'{"format": "fastrnn", "x": "\xff\xfe"}', "not valid UTF-8 JSON"),
    (b"\xef\xbb\xbf{}", "not valid UTF-8 JSON"),
    (b"[" * 100000 + b"]" * 100000, "not valid UTF-8 JSON"),
    (b"", "not valid UTF-8 JSON"),
], ids=["list", "str", "float", "null", "latin1", "bom", "nested", "empty"])
def test_header_json_that_is_not_an_object(raw, match, files, tmp_path):
    _, data = files["GRU"]
    members = members_of(data)
    members[fio.HEADER] = raw
    expect(fio.CorruptFileError, pack(members), tmp_path, match=match)


def test_header_larger_than_any_header_is_corrupt(files, tmp_path, monkeypatch):
    _, data = files["GRU"]
    monkeypatch.setattr(fio, "_MAX_HEADER_BYTES", 4096)  # 16 MiB: the same check, smaller files
    members = members_of(data)
    members[fio.HEADER] = json.dumps(members[fio.HEADER]).encode().ljust(4097)
    expect(fio.CorruptFileError, pack(members), tmp_path,
           match="header declares 4097 bytes, but a header is at most 4096")
    members[fio.HEADER] = members[fio.HEADER][:4096]  # at the limit: loads
    path = tmp_path / "limit.npz"
    path.write_bytes(pack(members))
    assert same_model(files["GRU"][0], fio.load(path, backend="numpy"))


@pytest.mark.parametrize("key, value, match", [
    ("config", [1, 2], "'config' entry must be a dict, but it is list"),
    ("class", 7, "'class' entry must be a str"),
    ("module", None, "'module' entry must be a str"),
    ("arrays", "all", "'arrays' entry must be a dict"),
    ("arrays", {"weight_ih_l0": 5}, "entry for array 'weight_ih_l0' must be"),
    ("arrays", {"weight_ih_l0": {"shape": 5, "dtype": "<f4"}}, "entry for array 'weight_ih_l0'"),
    ("arrays", {"weight_ih_l0": {"shape": [9, -2], "dtype": "<f4"}}, "entry for array"),
    ("arrays", {"weight_ih_l0": {"shape": [9, True], "dtype": "<f4"}}, "entry for array"),
    ("arrays", {"weight_ih_l0": {"shape": [9, 2], "dtype": 4}}, "entry for array"),
])
def test_header_entries_of_the_wrong_type_are_corrupt(key, value, match, files, tmp_path):
    _, data = files["GRU"]

    def edit(header):
        header[key] = value
        return header
    expect(fio.CorruptFileError, with_header(data, edit), tmp_path, match=match)


@pytest.mark.parametrize("model, changes, error, match", [
    ("GRU", dict(hidden_size="3"), fio.ConfigError, "hidden_size must be an integer, but got str"),
    ("GRU", dict(hidden_size=3.0), fio.ConfigError, "hidden_size must be an integer, but got fl"),
    ("GRU", dict(hidden_size=True), fio.ConfigError, "hidden_size must be an integer, but got bo"),
    ("GRU", dict(input_size=None), fio.ConfigError, "input_size must be an integer"),
    ("GRU", dict(num_layers=[1]), fio.ConfigError, "num_layers must be an integer"),
    ("GRU", dict(bias="no"), fio.ConfigError, "'bias' of GRU.*must be true or false, but it is s"),
    ("GRU", dict(bias=1), fio.ConfigError, "'bias' of GRU.*must be true or false, but it is int"),
    ("GRU", dict(bidirectional="yes"), fio.ConfigError, "'bidirectional'.*true or false"),
    ("GRU", dict(batch_first=None), fio.ConfigError, "'batch_first'.*true or false"),
    ("GRU", dict(dropout="0"), fio.ConfigError, "dropout must be a number"),
    ("GRU", dict(dropout=float("nan")), fio.ConfigError, "dropout must be a number"),
    ("GRU", dict(dtype="int32"), fio.ConfigError, "dtype must be float32 or float64"),
    ("GRU", dict(dtype={"names": ["a"], "formats": ["<f4"]}), fio.ConfigError, "dtype"),
    ("GRU", dict(dtype=[]), fio.ConfigError, "dtype"),
    ("GRU", dict(dtype={"a": 1}), fio.ConfigError, "does not build one"),
    ("GRU", dict(dtype="float64"), fio.ArrayDtypeError, "weight_ih_l0.*float32.*model is float64"),
    ("GRU", dict(seed=-1), fio.ConfigError, "seed must be"),
    ("GRU", dict(seed=1.5), fio.ConfigError, "seed must be"),
    ("GRU", dict(seed="x"), fio.ConfigError, "seed must be"),
    ("GRU", dict(hidden_size=-1), fio.ConfigError, "hidden_size must be an integer >= 1"),
    ("GRU", dict(hidden_size=4), fio.ArrayShapeError, r"weight_ih_l0.*\(9, 2\).*\(12, 2\)"),
    ("GRU", dict(bias=False), fio.UnexpectedArrayError, "bias_ih_l0.*not parameters of GRU"),
    ("GRU", dict(num_layers=2), fio.MissingArrayError, r"\['weight_ih_l1', .* of GRU are miss"),
    ("GRU", dict(num_layers=3), fio.MissingArrayError, "at least 6 parameters.*holds 4 array"),
    ("GRU", dict(bidirectional=True), fio.MissingArrayError, "weight_ih_l0_reverse"),
    ("GRU", {"units": 3}, fio.ConfigError, "unexpected keyword argument 'units'"),
    ("RNN", dict(nonlinearity=1), fio.ConfigError, "nonlinearity must be one of"),
    ("RNN", dict(nonlinearity="sigmoid"), fio.ConfigError, "nonlinearity must be one of"),
    ("LSTM", dict(proj_size="2"), fio.ConfigError, "proj_size must be an integer"),
    ("LSTM", dict(proj_size=0), fio.UnexpectedArrayError, r"\['weight_hr_l0', .*not parameters"),
])
def test_config_values_of_the_wrong_type_or_size(model, changes, error, match, files, tmp_path):
    _, data = files[model]
    expect(error, with_header(data, edit_config(**changes)), tmp_path, match=match)


def test_missing_config_entries_and_odd_classes(files, tmp_path):
    _, data = files["GRU"]

    def without(key):
        def edit(header):
            del header["config"][key]
            return header
        return edit
    expect(fio.ConfigError, with_header(data, without("hidden_size")), tmp_path,
           match="missing 1 required positional argument: 'hidden_size'")
    for module, name in [("fastrnn.cells", "_CellBase"), ("fastrnn.__main__", "main"),
                         ("fastrnn", "io"), ("fastrnn.layers", "np"), ("fastrnn", "a.b"),
                         ("fastrnn.\ud800", "GRU"), ("fastrnn..layers", "GRU")]:
        def edit(header):
            header["module"], header["class"] = module, name
            return header
        members = members_of(data)
        members[fio.HEADER] = json.dumps(edit(members[fio.HEADER])).encode("utf-8", "surrogatepass")
        expect(fio.ConfigError, pack(members), tmp_path,
               match="unknown class|not a fastrnn Module class|not valid UTF-8")
