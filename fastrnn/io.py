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
"""

import importlib
import io
import json
import os
import secrets
import zipfile

import numpy as np

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

    if not callable(getattr(obj, "get_config", None)) or not callable(getattr(obj, "state_dict", None)):
        raise TypeError(f"save expects a fastrnn Module (layer, cell or head), but got "
                        f"{type(obj).__name__}")
    config = {}
    for key, value in obj.get_config().items():
        if key == "seed" and not (value is None or isinstance(value, (int, np.integer))
                                  and not isinstance(value, bool)):
            value = None  # a Generator / SeedSequence seed is not storable; it only drives dropout
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
        A path is written atomically: a temporary file in the same directory
        is renamed over it once complete, so a crash never leaves a torn file.

    Returns
    -------
    path
        ``path``, as given.

    Notes
    -----
    The parameters are stored with their exact bytes; gradients, the
    train/eval mode, the backend and the dropout generator's state are not
    stored.  A ``seed`` given as a Generator or SeedSequence is stored as
    ``None``.  The same model always gives the same bytes.
    """
    text, arrays = _header(obj)
    members = {HEADER: np.frombuffer(text.encode("utf-8"), dtype=np.uint8)}
    members.update(arrays)
    if hasattr(path, "write"):
        _write_npz(path, members)
        return path
    target = os.fspath(path)
    directory, base = os.path.split(os.path.abspath(target))
    tmp = os.path.join(directory, f".{base}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open rather than mkstemp: the file gets the umask's permissions, like any saved file
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_npz(f, members)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


# -- loading ------------------------------------------------------------------------------
def _read_bytes(path):
    if hasattr(path, "read"):
        return path.read(), None
    name = os.fspath(path)
    with open(name, "rb") as f:
        return f.read(), name


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
    if data[:4] not in (_ZIP_MAGIC, _EMPTY_ZIP_MAGIC):
        raise ForeignFileError(f"not a fastrnn model file: it is not a .npz (zip) archive "
                               f"(it starts with {data[:8]!r})", where)
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
            NotImplementedError, RuntimeError) as exc:
        raise CorruptFileError(f"the .npz archive is truncated or corrupt ({exc}); the file "
                               f"was probably cut off while being written or copied", where) from None


def _member_bytes(zf, member, where):
    try:
        return zf.read(member)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError,
            NotImplementedError, RuntimeError) as exc:
        raise CorruptFileError(f"member {member!r} cannot be read ({exc}): the file is damaged",
                               where) from None


def _read_npy(raw, key, where):
    """The array of one ``.npy`` member; pickled (object) arrays are refused before reading."""
    f = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:  # (3, 0) and later: let read_array parse it, object check below
            shape, fortran, dtype = None, None, None
    except (ValueError, EOFError, OSError) as exc:
        raise CorruptFileError(f"array {key!r} has a damaged .npy header ({exc})", where) from None
    if dtype is not None and dtype.hasobject:
        raise PickledArrayError(f"array {key!r} holds Python objects (dtype {dtype}), which could "
                                f"only be read by unpickling, and loading never unpickles "
                                f"(allow_pickle=False); a fastrnn model file holds only "
                                f"float arrays", where)
    f.seek(0)
    try:
        array = np.lib.format.read_array(f, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickle" in str(exc).lower():
            raise PickledArrayError(f"array {key!r} holds Python objects, which could only be "
                                    f"read by unpickling, and loading never unpickles "
                                    f"(allow_pickle=False)", where) from None
        raise CorruptFileError(f"array {key!r} cannot be read ({exc}): the file is damaged",
                               where) from None
    except (EOFError, OSError) as exc:
        raise CorruptFileError(f"array {key!r} is truncated ({exc})", where) from None
    if f.read(1):
        raise CorruptFileError(f"array {key!r} has trailing bytes after its data", where)
    return array


def _read_members(zf, where):
    names = zf.namelist()
    if any(n.endswith("data.pkl") for n in names):
        raise ForeignFileError("this is a PyTorch checkpoint (torch.save), not a fastrnn model "
                               "file; load it with torch.load and pass the module to "
                               "fastrnn.from_torch (or the state dict to load_state_dict)", where)
    if HEADER + ".npy" not in names:
        shown = sorted(n[:-4] if n.endswith(".npy") else n for n in names)[:8]
        raise ForeignFileError(f"not a fastrnn model file: no {HEADER!r} header among its "
                               f"members {shown}; a plain .npz of parameters can be loaded "
                               f"with model.load_state_dict(dict(numpy.load(path)))", where)
    arrays = {}
    for name in names:
        if not name.endswith(".npy"):
            raise ForeignFileError(f"member {name!r} is not a .npy array: this is not a file "
                                   f"written by fastrnn", where)
        key = name[:-4]
        arrays[key] = _read_npy(_member_bytes(zf, name, where), key, where)
    return arrays


def _parse_header(array, where):
    if array.dtype != np.uint8 or array.ndim != 1:
        raise CorruptFileError(f"the {HEADER!r} header must be a 1-D uint8 array, but it is "
                               f"{array.dtype} with shape {array.shape}", where)
    try:
        header = json.loads(array.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptFileError(f"the header is not valid UTF-8 JSON ({exc})", where) from None
    if not isinstance(header, dict):
        raise CorruptFileError(f"the header must be a JSON object, but it is "
                               f"{type(header).__name__}", where)
    if header.get("format") != FORMAT_NAME:
        raise ForeignFileError(f"the header names format {header.get('format')!r}, not "
                               f"{FORMAT_NAME!r}", where)
    version = header.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise FormatVersionError(f"the header's format_version must be an integer, but it is "
                                 f"{version!r}", where)
    if version > FORMAT_VERSION:
        raise FormatVersionError(
            f"the file has format version {version}, written by fastrnn "
            f"{header.get('fastrnn_version', '?')}; this fastrnn reads format versions up to "
            f"{FORMAT_VERSION}: upgrade fastrnn (pip install -U fastrnn) to load it", where)
    if version < 1:
        raise FormatVersionError(f"format version {version} does not exist (versions start "
                                 f"at 1)", where)
    for key, kind in (("class", str), ("module", str), ("config", dict), ("arrays", dict)):
        if not isinstance(header.get(key), kind):
            raise CorruptFileError(f"the header's {key!r} entry is missing or not a "
                                   f"{kind.__name__}", where)
    return header


def _resolve_class(header, where):
    from .module import Module

    name, module = header["class"], header["module"]
    cls = _registry.get(f"{module}.{name}")
    if cls is None and (module == "fastrnn" or module.startswith("fastrnn.")):
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except (ImportError, ValueError, TypeError):
            cls = None
        if cls is None:
            import fastrnn
            cls = getattr(fastrnn, name, None)
    if cls is None:
        hint = ("register it with fastrnn.io.register_class before loading" if not
                module.startswith("fastrnn") else "it may come from a newer fastrnn")
        raise ConfigError(f"unknown class {module}.{name}: {hint}", where)
    if not (isinstance(cls, type) and issubclass(cls, Module)):
        raise ConfigError(f"{module}.{name} is not a fastrnn Module class", where)
    return cls


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
        Empty, truncated or damaged file (bad checksum, unreadable header or array).
    ForeignFileError
        Not a fastrnn model file (another format, a torch checkpoint, a plain .npz).
    FormatVersionError
        A format version this fastrnn does not read.
    PickledArrayError
        An array of Python objects, which would need unpickling.
    MissingArrayError, UnexpectedArrayError
        Parameters missing from the file, or arrays that are not parameters.
    ArrayShapeError, ArrayDtypeError
        An array whose shape or dtype differs from the parameter's.
    ConfigError
        Unknown class, or a config its constructor rejects.
    """
    data, where = _read_bytes(path)
    with _open_zip(data, where) as zf:
        arrays = _read_members(zf, where)
    header = _parse_header(arrays.pop(HEADER), where)
    cls = _resolve_class(header, where)
    listed = header["arrays"]
    missing = [n for n in listed if n not in arrays]
    if missing:
        raise MissingArrayError(f"the header lists array(s) {missing} that the file does not "
                                f"hold: the file is incomplete", where)
    config = dict(header["config"])
    try:
        obj = cls(**config)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the saved config of {header['class']} does not build one: "
                          f"{type(exc).__name__}: {exc}", where) from None
    if backend is not None:
        obj.backend = backend
    params = obj.parameters()
    missing = [n for n in params if n not in arrays]
    if missing:
        raise MissingArrayError(f"parameter(s) {missing} of {header['class']} are missing from "
                                f"the file", where)
    unexpected = [n for n in arrays if n not in params]
    if unexpected:
        arguments = ", ".join(f"{k}={v!r}" for k, v in config.items())
        raise UnexpectedArrayError(f"array(s) {unexpected} in the file are not parameters of "
                                   f"{header['class']}({arguments})", where)
    for name, param in params.items():
        array = arrays[name]
        if array.shape != param.shape:
            raise ArrayShapeError(f"array {name!r} has shape {array.shape}, but the parameter "
                                  f"of {header['class']} has shape {param.shape}", where)
        want = listed.get(name, {}).get("shape") if isinstance(listed.get(name), dict) else None
        if want is not None and list(array.shape) != want:
            raise ArrayShapeError(f"array {name!r} has shape {array.shape}, but the header "
                                  f"says {tuple(want)}", where)
        if array.dtype.kind != "f" or array.dtype.itemsize != param.dtype.itemsize:
            raise ArrayDtypeError(f"array {name!r} has dtype {array.dtype}, but the model is "
                                  f"{param.dtype.name}", where)
    obj.load_state_dict({name: arrays[name] for name in params}, strict=True)
    return obj
