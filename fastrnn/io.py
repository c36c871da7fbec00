"""Saving and loading fastrnn models: a ``.npz`` of the parameters plus a JSON header.

File format (version :data:`FORMAT_VERSION`)
--------------------------------------------
A zip archive readable by ``numpy.load(path, allow_pickle=False)``, one
``.npy`` member per array:

* ``__fastrnn__``: the header, a 1-D uint8 array holding UTF-8 JSON::

      {"format": "fastrnn", "format_version": 1, "fastrnn_version": "0.1.0",
       "class": "LSTM", "module": "fastrnn.layers",
       "config": {...get_config()...},
       "arrays": {"weight_ih_l0": {"shape": [64, 8], "dtype": "<f4"}, ...}}

* one array per parameter, under its PyTorch name (``weight_ih_l0``, ...),
  with its exact bytes: a round trip is bit-for-bit.

The class is found by name, never by unpickling: in the ``fastrnn`` package
(its module as recorded, then the top-level namespace), or in the classes
registered with :func:`register_class`.  Loading checks everything (header,
version, class, config, the set of arrays, every shape and dtype, every
member's CRC) before it returns a new object; it never modifies an existing
one, so a failure leaves nothing half-loaded.  Each kind of bad file has its
own exception, all subclasses of :class:`FormatError` (a ``ValueError``).

A file is untrusted input: loading reads the zip entries and the ``.npy``
headers first (each member stored once, its declared size equal to what its
header describes, a compressed one at most ``_MAX_INFLATION`` times smaller),
then checks the parameters the header's config implies against those arrays,
and only then allocates the model and reads the data, each member with a
limit of its declared size.  A damaged or hostile file fails fast with its
error; it cannot make loading allocate more than the arrays it holds.
"""

import collections
import errno
import importlib
import inspect
import io
import itertools
import json
import math
import operator
import os
import secrets
import stat
import struct
import zipfile
import zlib
from typing import NamedTuple

import numpy as np

from . import _checks
from .backends import resolve

#: version of the file format this module writes and the newest it reads
FORMAT_VERSION = 1
#: name of the header member
HEADER = "__fastrnn__"
FORMAT_NAME = "fastrnn"

_ZIP_MAGIC = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC = b"PK\x05\x06"
_NPY_MAGIC = b"\x93NUMPY"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: the same model gives the same bytes
_registry = {}


class FormatError(ValueError):
    """A file that cannot be loaded as a fastrnn model; the subclasses say why.

    Attributes
    ----------
    path : str or None
        The file, when it was given by name.
    """

    def __init__(self, message, path=None):
        self.path = path
        where = f"{path}: " if path is not None else ""
        super().__init__(where + message)


class CorruptFileError(FormatError):
    """The file is damaged: empty, truncated, failed checksum, unreadable member or header."""


class ForeignFileError(FormatError):
    """The file is not a fastrnn model (another format, or an ``.npz`` without fastrnn's header)."""


class FormatVersionError(FormatError):
    """The file's format version is not one this fastrnn reads (written by a newer fastrnn)."""


class PickledArrayError(FormatError):
    """An array in the file holds Python objects, which only unpickling could read; it is refused."""


class MissingArrayError(FormatError):
    """A parameter the model needs (or the header lists) is not in the file."""


class UnexpectedArrayError(FormatError):
    """The file holds arrays that are not parameters of the model."""


class ArrayShapeError(FormatError):
    """An array's shape differs from the parameter's shape."""


class ArrayDtypeError(FormatError):
    """An array's dtype differs from the model's dtype."""


class ConfigError(FormatError):
    """The header's class is unknown, or its config does not build an object."""


def register_class(cls):
    """Make a :class:`fastrnn.module.Module` subclass defined outside fastrnn loadable.

    Classes of the ``fastrnn`` package are found without registration.  Can
    be used as a class decorator.

    Parameters
    ----------
    cls : type
        A subclass of :class:`fastrnn.module.Module` whose ``get_config()``
        returns its constructor arguments.

    Returns
    -------
    type
        ``cls`` itself.
    """
    from .module import Module

    if not (isinstance(cls, type) and issubclass(cls, Module)):
        raise TypeError(f"register_class expects a subclass of fastrnn.module.Module, "
                        f"but got {cls!r}")
    _registry[_qualified(cls)] = cls
    return cls


def _qualified(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def _plain(value, key):
    """A JSON-ready copy of a config value (numpy scalars as Python scalars, tuples as lists)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v, key) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, key) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.dtype):
        return value.name
    raise TypeError(f"config entry {key!r} = {value!r} ({type(value).__name__}) cannot be "
                    f"stored as JSON")


def _header(obj):
    from . import __version__

    if isinstance(obj, type) or not callable(getattr(obj, "get_config", None)) \
            or not callable(getattr(obj, "state_dict", None)):
        what = f"the class {obj.__name__}" if isinstance(obj, type) else type(obj).__name__
        raise TypeError(f"obj must be a fastrnn Module (save expects a layer, cell or head), "
                        f"but got {what}")
    config = {}
    for key, value in obj.get_config().items():
        if key == "seed" and not (value is None or isinstance(value, int)):
            value = None  # a sequence of ints is a seed too, but the format stores an int or null
        config[key] = _plain(value, key)
    cls = type(obj)
    arrays = obj.state_dict()
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION,
              "fastrnn_version": __version__, "class": cls.__qualname__,
              "module": cls.__module__, "config": config,
              "arrays": {name: {"shape": list(a.shape), "dtype": a.dtype.str}
                         for name, a in arrays.items()}}
    if HEADER in arrays:
        raise ValueError(f"a parameter may not be named {HEADER!r}")
    return json.dumps(header, allow_nan=False, sort_keys=False), arrays


def _write_npz(fileobj, members):
    with zipfile.ZipFile(fileobj, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in members.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=_FIXED_TIME)
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)


def save(obj, path):
    """Save a fastrnn layer, cell or other Module subclass to ``path``.

    Parameters
    ----------
    obj : fastrnn.module.Module
        Anything with ``get_config()`` and ``state_dict()``: the layers, the
        cells, the training toolkit's heads.
    path : str, os.PathLike or writable binary file object
        Written exactly as given (no suffix is added; ``.npz`` is customary).
        A path to a regular file is written atomically: a temporary file in
        the same directory is renamed over it once complete, so a crash never
        leaves a torn file.  A symbolic link is written through (the file it
        points to is replaced), and an existing file keeps its permissions, as
        with ``numpy.save``.  What a rename would replace or cannot reach is
        written in place, as ``numpy.save`` writes it: a pipe or a device
        (``/dev/stdout``), a file with other hard links, a writable file in a
        directory that is not.

    Returns
    -------
    path
        ``path``, as given.

    Notes
    -----
    The parameters are stored with their exact bytes; gradients, the
    train/eval mode, the backend and the dropout generator's state are not
    stored.  A ``seed`` given as a Generator, a SeedSequence or a sequence of
    ints is stored as ``None``.  The same model always gives the same bytes.
    """
    target = _checks.file_or_path("path", path, "w")
    text, arrays = _header(obj)
    members = {HEADER: np.frombuffer(text.encode("utf-8"), dtype=np.uint8)}
    members.update(arrays)
    if not isinstance(target, str):
        _write_npz(target, members)
    else:
        write_file(target, lambda f: _write_npz(f, members))
    return path


def write_file(target, write):
    """Write a file at path ``target`` through ``write(binary file object)``, as :func:`save`
    does: a regular file atomically (a temporary file in its directory, renamed over it once
    complete: an error or a Ctrl-C during ``write`` leaves the old file as it was), through
    a symbolic link to the file it names, keeping an existing file's permissions; in place,
    as ``numpy.save`` writes, what a rename would replace or cannot reach (a pipe, a device,
    a file with other hard links, a writable file in a directory that is not).

    Raises OSError naming ``target``: a name that ends with a separator or is a directory,
    a read-only file, a directory that is missing or not writable."""
    def in_place(where):         # as numpy.save writes: opened, truncated, written
        with open(where, "wb") as f:
            write(f)

    if target.endswith(os.sep) or (os.altsep and target.endswith(os.altsep)):
        raise IsADirectoryError(errno.EISDIR, "names a directory (it ends with a separator), "
                                "not a file", target)
    try:
        st = os.stat(target)        # (through links, /dev/fd/N's to a pipe included)
    except OSError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", target)
    if st is not None and (not stat.S_ISREG(st.st_mode) or st.st_nlink > 1):
        # a device, a pipe, a file with other names: written in place, as numpy.save does (a
        # rename would replace the device or the pipe, or break the other names' link)
        return in_place(target)
    # through a symbolic link to the file it names (a rename over the link would replace the
    # link, and leave its file as it was)
    final = os.path.realpath(target)
    directory = os.path.dirname(final)
    if st is not None and not os.access(final, os.W_OK):
        raise PermissionError(errno.EACCES, "the file is read-only", target)
    mode = None if st is None else stat.S_IMODE(st.st_mode)   # an existing file keeps them
    tmp = os.path.join(directory, f".fastrnn-{secrets.token_hex(6)}.tmp")   # short: any name fits
    # os.open rather than mkstemp: a new file gets the umask's permissions, like any saved file
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o666)
    except PermissionError:
        if st is None:
            raise PermissionError(errno.EACCES, "the directory is not writable", target) from None
        return in_place(final)   # a writable file in a directory that is not
    except OSError as exc:    # (a missing directory, say: name the path given, not ours)
        raise type(exc)(exc.errno, exc.strerror, target) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if mode is not None:
                os.chmod(f.fileno() if os.chmod in os.supports_fd else tmp, mode)
            os.fsync(f.fileno())
        try:
            os.replace(tmp, final)
        except PermissionError:
            if st is None:        # (an existing file was found writable above)
                raise PermissionError(errno.EACCES, "cannot replace the file", target) from None
            os.unlink(tmp)        # (another's writable file in a sticky directory: in place)
            return in_place(final)
        except OSError as exc:
            raise type(exc)(exc.errno, exc.strerror, target) from None
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return None


# -- loading ------------------------------------------------------------------------------
#: largest header read, in bytes of JSON (a real one is a few kB: one entry per parameter)
_MAX_HEADER_BYTES = 16 << 20
#: largest .npy header read, in characters (numpy's own default; fastrnn's are 128 bytes)
_MAX_NPY_HEADER = 10000
#: bytes read at the start of a member to parse its .npy header: magic, version, length, text
_NPY_PREFIX = 12 + _MAX_NPY_HEADER
#: largest ratio of a compressed member's declared size to its compressed size: deflate
#: reaches ~1000 on zeros, float weights ~1.1; fastrnn itself writes its members uncompressed
_MAX_INFLATION = 100
#: a compressed member declaring at most this many bytes is never refused for its ratio
_INFLATION_SLACK = 1 << 20
#: members are read (and checked) this many bytes at a time
_CHUNK = 1 << 20
#: what zipfile and the decompressors raise for a damaged archive or member
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
               OverflowError, NotImplementedError, RuntimeError, struct.error, zlib.error)
try:
    import lzma
    _ZIP_ERRORS += (lzma.LZMAError,)
except ImportError:  # a Python built without lzma cannot open lzma members at all
    pass


class _Member(NamedTuple):
    """One ``.npy`` member: its zip entry and its parsed .npy header; the data is not read."""
    info: zipfile.ZipInfo
    key: str
    offset: int          # bytes of .npy header before the data
    shape: tuple
    fortran: bool
    dtype: np.dtype

    @property
    def nbytes(self):
        """Bytes of data the .npy header describes."""
        return math.prod(self.shape) * self.dtype.itemsize


def _clip(text, limit=80):
    """``text`` (read from a file, so of any length) cut to ``limit`` characters for a message."""
    text = str(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _short(value, limit=80):
    """The repr of a value read from a file, cut to ``limit`` characters for a message."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int of more digits than str() converts, ...
        text = f"<{type(value).__name__}>"
    return _clip(text, limit)


def _listed(names, limit=8):
    """A list of names for a message: the first ``limit``, then how many there are in all."""
    names = list(names)
    shown = ", ".join(_short(n, 40) for n in names[:limit])
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return f"[{shown}{more}]"


#: bytes read first: a source that does not start as a .npz is refused before the rest is read
_PREFIX = 8
#: bytes at the end of a file where its zip end record can lie (22 + the longest comment)
_TAIL = 22 + 0xFFFF


def _read_bytes(path):
    """The bytes of a model file and its name for messages (None for an unnamed file object).

    A source whose first bytes are not a .npz (zip) archive's is refused after reading them
    and, where it can seek, its last 64 kB (where the end record of a damaged archive would
    say so): a wrong path to a large file, or /dev/zero, is not read whole."""
    source = _checks.file_or_path("path", path, "r")
    if isinstance(source, str):
        mode = os.stat(source).st_mode
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            raise ForeignFileError("not a fastrnn model file: it is a device, not a file", source)
        with open(source, "rb") as f:
            return _read_model(f), source
    name = getattr(source, "name", None)
    return _read_model(source), (name if isinstance(name, str) and name else None)


def _read_model(f):
    try:
        data = f.read(_PREFIX)
    except TypeError:                 # a read() that takes no size: the whole source, at once
        return _as_bytes(f.read())
    data = _as_bytes(data)
    if len(data) < _PREFIX or data[:4] in (_ZIP_MAGIC, _EMPTY_ZIP_MAGIC):
        return data + _as_bytes(f.read())
    try:                              # not a .npz at the start: its end, if it can be read
        here = f.tell()
        f.seek(0, io.SEEK_END)
        end = f.tell()
    except (OSError, ValueError, AttributeError):
        here = end = None
    if not (isinstance(here, int) and isinstance(end, int)):
        return data + _as_bytes(f.read())    # a stream (a pipe): read to its end
    start = max(here, end - _TAIL)     # (a device's end is 0: nothing more is read)
    f.seek(start)
    return data + _as_bytes(f.read(max(0, end - start)))


def _as_bytes(data):
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"path must be a binary file object, but its read() returned "
                        f"{type(data).__name__}, not bytes (open the file with 'rb')")
    return bytes(data)


def _open_zip(data, where):
    if not data:
        raise CorruptFileError("the file is empty (0 bytes): nothing was written, or the write "
                               "was cut off", where)
    if data.startswith(_NPY_MAGIC):
        raise ForeignFileError("this is a single NumPy .npy array, not a fastrnn model file "
                               "(a .npz written by layer.save / fastrnn.io.save)", where)
    if data[:1] == b"\x80":
        raise ForeignFileError("this is a Python pickle, not a fastrnn model file; fastrnn "
                               "never unpickles (for a torch checkpoint, torch.load it and use "
                               "fastrnn.from_torch or load_state_dict)", where)
    if len(data) < len(_ZIP_MAGIC) and _ZIP_MAGIC.startswith(data):
        raise CorruptFileError(f"the file is only {len(data)} byte(s) long: the start of a "
                               f".npz archive, cut off", where)
    if data[:4] not in (_ZIP_MAGIC, _EMPTY_ZIP_MAGIC) and _declared_entries(data) is not None:
        raise CorruptFileError(f"the file ends like a .npz (zip) archive but does not start "
                               f"like one (it starts with {data[:8]!r}): the file is damaged",
                               where)
    if data[:4] not in (_ZIP_MAGIC, _EMPTY_ZIP_MAGIC):
        raise ForeignFileError(f"not a fastrnn model file: it is not a .npz (zip) archive "
                               f"(it starts with {data[:8]!r})", where)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except _ZIP_ERRORS as exc:
        raise CorruptFileError(f"the .npz archive is truncated or corrupt ({_clip(exc, 200)}); "
                               f"the file was probably cut off while being written or copied",
                               where) from None
    declared, found = _declared_entries(data), len(zf.infolist())
    if declared is not None and declared != found:  # zipfile reads the directory by its size
        zf.close()
        raise CorruptFileError(f"the .npz archive's end record declares {declared} members, but "
                               f"its directory holds {found}: the file is damaged", where)
    return zf


def _declared_entries(data):
    """The member count in a zip archive's end record, or None (not found, or in ZIP64's).

    Found where zipfile finds it: the last 22 bytes, else the last end-record signature
    within the longest possible archive comment.
    """
    start = len(data) - 22  # the end record's signature is an empty archive's magic
    if start < 0 or data[start:start + 4] != _EMPTY_ZIP_MAGIC:
        start = data.rfind(_EMPTY_ZIP_MAGIC, max(0, len(data) - 22 - 0xFFFF))
    if start < 0 or start + 22 > len(data):
        return None
    entries = struct.unpack_from("<H", data, start + 10)[0]
    return None if entries == 0xFFFF else entries


def _zip_members(zf, where, header=HEADER):
    """The archive's members by array name (``weight_ih_l0``), each named once, ``header``
    (fastrnn's, or the command line's description of its several modules) among them.

    Raises
    ------
    ForeignFileError
        A torch checkpoint, an archive without fastrnn's header, or a member that is not a
        ``.npy`` array.
    CorruptFileError
        A member whose local header cannot be read or names it differently (a damaged
        name), or a name that appears more than once: numpy (and zipfile) would silently
        read only its last copy.
    """
    infos = zf.infolist()
    for info in infos:  # a name damaged in the directory differs from the member's own copy
        try:
            zf.open(info).close()
        except _ZIP_ERRORS as exc:
            raise CorruptFileError(f"member {_short(info.filename)} cannot be read "
                                   f"({_clip(exc, 200)}): the file is damaged", where) from None
    names = [info.filename for info in infos]
    if any(n.endswith("data.pkl") for n in names):
        raise ForeignFileError("this is a PyTorch checkpoint (torch.save), not a fastrnn model "
                               "file; load it with torch.load and pass the module to "
                               "fastrnn.from_torch (or the state dict to load_state_dict)", where)
    counts = collections.Counter(names)
    repeated = [n for n, c in counts.items() if c > 1]
    if repeated:
        raise CorruptFileError(f"member {_short(repeated[0])} appears {counts[repeated[0]]} "
                               f"times in the archive (repeated members: {_listed(repeated)}); "
                               f"each array must be stored once, and a reader would silently "
                               f"take one copy: the file is damaged or was tampered with", where)
    if header + ".npy" not in counts:
        if header == HEADER and "__description__.npy" in counts:
            raise ForeignFileError("this is a model saved by the fastrnn command line "
                                   "(`fastrnn demo --save`: several modules and their "
                                   "description), not one module written by fastrnn.save; run "
                                   "it with `fastrnn demo --load PATH`", where)
        shown = sorted(n[:-4] if n.endswith(".npy") else n for n in names)[:8]
        raise ForeignFileError(f"not a fastrnn model file: no {header!r} header among its "
                               f"members {shown}; a plain .npz of parameters can be loaded "
                               f"with model.load_state_dict(dict(numpy.load(path)))", where)
    for name in names:
        if not name.endswith(".npy"):
            raise ForeignFileError(f"member {_short(name)} is not a .npy array: this is not a "
                                   f"file written by fastrnn", where)
    return {info.filename[:-4]: info for info in infos}


def _npy_member(zf, info, key, where):
    """Check one member's zip entry and parse its .npy header, without reading its data.

    Reads at most ``_NPY_PREFIX`` bytes of the member (an uncompressed member, whose bytes
    are in memory already, is streamed through once so that its CRC is checked before its
    header is believed).

    Raises
    ------
    CorruptFileError
        Sizes that disagree (zip entry, compression ratio, .npy header), a failed CRC, a
        damaged or truncated .npy header.
    PickledArrayError
        An array of Python objects.
    """
    name = _short(info.filename)
    if info.compress_type == zipfile.ZIP_STORED:
        if info.compress_size != info.file_size:
            raise CorruptFileError(f"member {name} is stored uncompressed, yet its zip entry "
                                   f"declares {info.file_size} bytes of data in "
                                   f"{info.compress_size}: the file is damaged", where)
    elif info.file_size > max(_INFLATION_SLACK, _MAX_INFLATION * info.compress_size):
        raise CorruptFileError(f"member {name} declares {info.file_size} bytes compressed into "
                               f"{info.compress_size} (more than {_MAX_INFLATION} times smaller): "
                               f"refused as a likely zip bomb (fastrnn writes its arrays "
                               f"uncompressed)", where)
    try:
        if info.compress_type == zipfile.ZIP_STORED:
            with zf.open(info) as f:
                while f.read(_CHUNK):
                    pass
        with zf.open(info) as f:
            head = f.read(min(info.file_size, _NPY_PREFIX))
    except _ZIP_ERRORS as exc:
        raise CorruptFileError(f"member {name} cannot be read ({_clip(exc, 200)}): the file is "
                               f"damaged", where) from None
    f = io.BytesIO(head)
    try:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f".npy format version {version[0]}.{version[1]} does not exist")
        # version 3.0 differs from 2.0 only in allowing UTF-8 field names (structured dtypes)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                       np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(f, max_header_size=_MAX_NPY_HEADER)
    except Exception as exc:  # ValueError mostly; a hostile header's literal_eval can raise others
        raise CorruptFileError(f"array {key!r} has a damaged .npy header ({_clip(exc, 200)})",
                               where) from None
    if dtype.hasobject:
        raise PickledArrayError(f"array {key!r} holds Python objects (dtype {dtype}), which could "
                                f"only be read by unpickling, and loading never unpickles "
                                f"(allow_pickle=False); a fastrnn model file holds only "
                                f"float arrays", where)
    if any(n < 0 for n in shape):
        raise CorruptFileError(f"array {key!r} has a negative size in its shape "
                               f"{_short(shape)}", where)
    member = _Member(info, key, f.tell(), tuple(shape), fortran, dtype)
    if info.file_size != member.offset + member.nbytes:
        raise CorruptFileError(f"member {name} declares {info.file_size} bytes, but its .npy "
                               f"header describes {member.offset + member.nbytes} "
                               f"({member.offset} of header, then shape {_short(member.shape)} "
                               f"of {dtype}): the file is damaged", where)
    return member


def _read_data(zf, member, where):
    """The array of a member whose header :func:`_npy_member` checked.

    Reads the declared number of bytes, a chunk at a time, into an array allocated for
    exactly that size; one byte more, or one byte fewer, is an error, so a member cannot
    inflate beyond what its entry and header declare.
    """
    name = _short(member.info.filename)
    flat = np.empty(math.prod(member.shape), member.dtype)
    out = flat.view(np.uint8)
    need, filled = member.nbytes, 0
    try:
        with zf.open(member.info) as f:
            head = f.read(member.offset)
            while len(head) == member.offset and filled < need:
                chunk = f.read(min(_CHUNK, need - filled))
                if not chunk:
                    break
                out[filled:filled + len(chunk)] = np.frombuffer(chunk, np.uint8)
                filled += len(chunk)
            extra = f.read(1)
    except _ZIP_ERRORS as exc:
        raise CorruptFileError(f"member {name} cannot be read ({_clip(exc, 200)}): the file is "
                               f"damaged", where) from None
    if len(head) != member.offset or filled != need:
        raise CorruptFileError(f"member {name} is truncated: it ends after "
                               f"{len(head) + filled} of its {member.offset + need} bytes", where)
    if extra:
        raise CorruptFileError(f"member {name} holds more than the {member.offset + need} bytes "
                               f"it declares: the file is damaged", where)
    return flat.reshape(member.shape, order="F" if member.fortran else "C")


def _read_header(zf, member, where):
    """The header dict, checked for the entries :func:`load` relies on."""
    if member.dtype != np.uint8 or len(member.shape) != 1:
        raise CorruptFileError(f"the {HEADER!r} header must be a 1-D uint8 array, but it is "
                               f"{member.dtype} with shape {_short(member.shape)}", where)
    if member.nbytes > _MAX_HEADER_BYTES:
        raise CorruptFileError(f"the {HEADER!r} header declares {member.nbytes} bytes, but a "
                               f"header is at most {_MAX_HEADER_BYTES}: the file is damaged", where)
    header = _json_object(_read_data(zf, member, where).tobytes(), "the header", where)
    if header.get("format") != FORMAT_NAME:
        raise ForeignFileError(f"the header names format {_short(header.get('format'))}, not "
                               f"{FORMAT_NAME!r}", where)
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise FormatVersionError(f"the header's format_version must be an integer, but it is "
                                 f"{_short(version)}", where)
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"the file has format version {_clip(version, 40)}, written by fastrnn "
            f"{_clip(header.get('fastrnn_version', '?'), 40)}; this fastrnn reads format "
            f"versions up to {FORMAT_VERSION}: upgrade fastrnn (pip install -U fastrnn) to "
            f"load it", where)
    if version < 1:
        raise FormatVersionError(f"format version {_clip(version, 40)} does not exist (versions "
                                 f"start at 1)", where)
    for key, kind in (("class", str), ("module", str), ("config", dict), ("arrays", dict)):
        value = header.get(key)
        if not isinstance(value, kind):
            found = (f"{type(value).__name__} {_short(value)}" if key in header else "missing")
            raise CorruptFileError(f"the header's {key!r} entry must be a {kind.__name__}, but "
                                   f"it is {found}", where)
    for name, entry in header["arrays"].items():
        shape = entry.get("shape") if isinstance(entry, dict) else None
        ok = (isinstance(shape, list) and isinstance(entry.get("dtype"), str)
              and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape))
        if not ok:
            raise CorruptFileError(f"the header's entry for array {_short(name)} must be "
                                   f'{{"shape": [sizes], "dtype": "<f4"}}, but it is '
                                   f"{_short(entry)}", where)
    return header


def _json_object(text, what, where):
    """``text`` (a str, or UTF-8 bytes) parsed as a JSON object, or a CorruptFileError that
    names ``what`` (the header of a file; the command line's description of its modules)."""
    try:
        value = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise CorruptFileError(f"{what} is not valid UTF-8 JSON ({_clip(exc, 200)})",
                               where) from None
    if not isinstance(value, dict):
        raise CorruptFileError(f"{what} must be a JSON object, but it is "
                               f"{type(value).__name__}", where)
    return value


def _call(label, config, limit=300):
    """``GRU(input_size=2, ...)``: the class called with the file's config, for messages."""
    arguments = itertools.islice(config.items(), 20)
    text = f"{label}({', '.join(f'{_clip(k, 40)}={_short(v, 40)}' for k, v in arguments)}"
    return _clip(text + (", ...)" if len(config) > 20 else ")"), limit)


def _is_public_name(dotted):
    return all(part.isidentifier() and not part.startswith("_") for part in dotted.split("."))


def _resolve_class(header, where):
    from .module import Module

    name, module = header["class"], header["module"]
    cls = _registry.get(f"{module}.{name}")
    if cls is None and (module == "fastrnn" or module.startswith("fastrnn.")) \
            and _is_public_name(module) and _is_public_name(name) and "." not in name:
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except Exception:  # ImportError, or a module that fails to import here: unknown class
            cls = None
        if cls is None:
            import fastrnn
            cls = getattr(fastrnn, name, None)
    if cls is None:
        hint = ("register it with fastrnn.io.register_class before loading" if not
                module.startswith("fastrnn") else "it may come from a newer fastrnn")
        raise ConfigError(f"unknown class {_clip(module, 100)}.{_clip(name, 100)}: {hint}", where)
    if not (isinstance(cls, type) and issubclass(cls, Module)):
        raise ConfigError(f"{_clip(module, 100)}.{_clip(name, 100)} is not a fastrnn Module "
                          f"class", where)
    return cls


def _check_listing(listed, members, where):
    """The header's list of arrays against the arrays in the file (their .npy headers)."""
    missing = [n for n in listed if n not in members]
    if missing:
        raise MissingArrayError(f"the header lists array(s) {_listed(missing)} that the file "
                                f"does not hold: the file is incomplete", where)
    for name, entry in listed.items():
        member = members[name]
        if tuple(entry["shape"]) != member.shape:
            raise ArrayShapeError(f"array {name!r} has shape {member.shape}, but the header "
                                  f"lists {_short(tuple(entry['shape']))}", where)
        if entry["dtype"] != member.dtype.str:
            try:
                listed_dtype = f"{np.dtype(entry['dtype']).name} ({entry['dtype']!r})"
            except Exception:  # not a dtype at all
                listed_dtype = _short(entry["dtype"])
            raise ArrayDtypeError(f"array {name!r} has dtype {member.dtype}, but the header lists "
                                  f"{listed_dtype}", where)


def _check_config(cls, config, call, where):
    """Refuse config values whose type the constructor would silently convert (before building).

    The constructors check their arguments (a TypeError or ValueError becomes a
    :class:`ConfigError`), except flags, which they pass through ``bool()``: there an
    argument whose default is a bool must be ``true`` or ``false`` in the file.
    """
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        parameters = {}
    for key, value in config.items():
        default = parameters[key].default if key in parameters else None
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"config entry {key!r} of {call} must be true or false, but it is "
                              f"{type(value).__name__} {_short(value)}", where)


def _check_layer_count(cls, config, count, call, where):
    """A recurrent layer's ``num_layers`` against the ``count`` arrays in the file.

    Every layer and direction has ``weight_ih`` and ``weight_hh``, so a file of ``count``
    arrays holds at most ``count // 2`` of them; checked before the constructor lists the
    parameters of each layer (``num_layers=100000`` would take seconds).
    """
    from .layers import RNNBase

    layers = config.get("num_layers", 1)
    if not issubclass(cls, RNNBase) or isinstance(layers, bool) or not isinstance(layers, int):
        return  # not a layer, or a num_layers the constructor refuses
    directions = 2 if config.get("bidirectional") is True else 1
    if 2 * layers * directions > count:
        raise MissingArrayError(f"{call} has at least {2 * layers * directions} parameters "
                                f"(weight_ih and weight_hh of each of {layers} layer(s) and "
                                f"{directions} direction(s)), but the file holds {count} "
                                f"array(s): the header's config does not describe the file's "
                                f"arrays", where)


def _planned_shapes(shapes):
    """``{name: shape tuple}`` of what ``_init_parameters`` was asked for, or None if unclear."""
    try:
        return {name: tuple(operator.index(n) for n in shape) if np.iterable(shape)
                else (operator.index(shape),) for name, shape in shapes.items()}
    except (TypeError, AttributeError):
        return None


def _check_parameters(label, call, shapes, dtype, members, where):
    """The model's parameters (names, shapes, dtype) against the file's arrays.

    Parameters
    ----------
    label, call : str
        The class's name, and its call with the file's config, for messages.
    shapes : dict
        Parameter name -> shape tuple.
    dtype : numpy.dtype or None
        The model's dtype (None: not checked).
    members : dict
        Array name -> :class:`_Member`: the arrays in the file, their data unread.
    """
    missing = [n for n in shapes if n not in members]
    if missing:
        raise MissingArrayError(f"parameter(s) {_listed(missing)} of {label} are missing from "
                                f"the file", where)
    unexpected = [n for n in members if n not in shapes]
    if unexpected:
        raise UnexpectedArrayError(f"array(s) {_listed(unexpected)} in the file are not "
                                   f"parameters of {call}", where)
    for name, shape in shapes.items():
        member = members[name]
        if member.shape != shape:
            raise ArrayShapeError(f"array {name!r} has shape {member.shape}, but the parameter "
                                  f"of {call} has shape {_short(shape)}", where)
        if dtype is not None and (member.dtype.kind != "f"
                                  or member.dtype.itemsize != dtype.itemsize):
            raise ArrayDtypeError(f"array {name!r} has dtype {member.dtype}, but the model is "
                                  f"{dtype.name}", where)


def _build(cls, config, members, label, call, where):
    """``cls(**config)``, its parameters checked against the file's arrays before they exist.

    The constructor runs as it always does, except that its call of ``_init_parameters``
    first compares the parameters it is about to create (names, shapes, dtype) with the
    arrays in the file and raises before allocating anything when they differ: a config
    that does not describe the file's arrays (a huge ``hidden_size``, say) never reaches an
    allocation.  A class that fills its parameters without ``_init_parameters`` is checked
    after construction instead.

    Raises
    ------
    MissingArrayError, UnexpectedArrayError, ArrayShapeError, ArrayDtypeError
        The config's parameters are not the file's arrays.
    ConfigError
        The constructor refuses the config (whatever it raises, bar MemoryError).
    """
    refused = []

    def init_parameters(shapes, *args, **kwargs):
        planned = _planned_shapes(shapes)
        if planned is not None:
            try:
                _check_parameters(label, call, planned, getattr(obj, "_dtype", None), members,
                                  where)
            except FormatError as exc:
                refused.append(exc)  # in case the constructor catches it (it is a ValueError)
                raise
        return type(obj)._init_parameters(obj, shapes, *args, **kwargs)

    try:
        obj = cls.__new__(cls, **config)  # what cls(**config) does, with a hook in between
        if isinstance(obj, cls):
            obj._init_parameters = init_parameters
            try:
                obj.__init__(**config)
            finally:
                obj.__dict__.pop("_init_parameters", None)
    except FormatError:
        raise
    except MemoryError:  # the file's own arrays (checked) do not fit: not a defect of the file
        raise
    except Exception as exc:  # TypeError, ValueError, or whatever else a bad config provokes
        if refused:
            raise refused[0] from None
        raise ConfigError(f"the saved config of {label} does not build one: "
                          f"{type(exc).__name__}: {_clip(exc, 300)}", where) from None
    if refused:
        raise refused[0]
    return obj


def load(path, *, backend=None):
    """Load a model written by :func:`save` (or ``Module.save``).

    Parameters
    ----------
    path : str, os.PathLike or readable binary file object
    backend : str, optional
        Backend of the loaded object (default: the class's default, ``"auto"``).

    Returns
    -------
    fastrnn.module.Module
        A new object of the saved class, built from the saved config, with
        parameters bit-for-bit equal to the saved ones, in training mode.

    Raises
    ------
    FileNotFoundError
        No such file.
    CorruptFileError
        Empty, truncated or damaged file (bad checksum, a member stored twice, sizes that
        disagree, a member that would inflate more than it declares, an unreadable header
        or array).
    ForeignFileError
        Not a fastrnn model file (another format, a torch checkpoint, a plain .npz).
    FormatVersionError
        A format version this fastrnn does not read.
    PickledArrayError
        An array of Python objects, which would need unpickling.
    MissingArrayError, UnexpectedArrayError
        Parameters missing from the file, or arrays that are not parameters.
    ArrayShapeError, ArrayDtypeError
        An array whose shape or dtype differs from the parameter's (or the header's list).
    ConfigError
        Unknown class, or a config its constructor rejects.

    Notes
    -----
    Everything is checked in order, and nothing is allocated beyond what the file declares
    until that declaration is consistent: the zip entries (each member once, sizes), the
    ``.npy`` headers of all arrays (their data unread), the JSON header, its list of arrays,
    the config's types, and the parameters the config implies (names, shapes, dtype)
    against the arrays in the file, before the constructor allocates them.  Only then is the
    data read, each array a chunk at a time into an array of its declared size.
    """
    if backend is not None:
        resolve(backend)     # a bad name is refused before the file is read
    data, where = _read_bytes(path)
    with _open_zip(data, where) as zf:
        members = {key: _npy_member(zf, info, key, where)
                   for key, info in _zip_members(zf, where).items()}
        header = _read_header(zf, members.pop(HEADER), where)
        cls = _resolve_class(header, where)
        _check_listing(header["arrays"], members, where)
        obj = _load_module(zf, cls, header["class"], dict(header["config"]), members, where)
    if backend is not None:
        obj.backend = backend
    return obj


def _load_module(zf, cls, label, config, members, where):
    """``cls(**config)`` with the parameters stored in ``members`` (name -> checked .npy
    member of ``zf``, see :func:`_npy_member`): the config's types, then the parameters it
    implies against the members (before the constructor allocates them), then the data."""
    call = _call(label, config)
    _check_config(cls, config, call, where)
    _check_layer_count(cls, config, len(members), call, where)
    obj = _build(cls, config, members, label, call, where)
    params = obj.parameters()
    _check_parameters(label, call, {n: p.shape for n, p in params.items()}, obj.dtype,
                      members, where)
    obj.load_state_dict({name: _read_data(zf, members[name], where) for name in params},
                        strict=True)
    return obj
