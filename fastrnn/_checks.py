"""Argument checks shared by the public classes.

Every failure is a TypeError (wrong kind of thing) or ValueError (right kind,
wrong value) whose message names the argument, what was expected and what was
received.
"""

import io
import math
import numbers
import operator
import os

import numpy as np

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _type_name(value):
    return type(value).__name__


def short(value, limit=80):
    """The repr of ``value`` for a message, cut to ``limit`` characters; never raises (an int of
    more digits than ``str()`` converts, a broken ``__repr__``)."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - ValueError for a huge int, anything from a user's __repr__
        if isinstance(value, int):
            text = f"<an int of about {int(value.bit_length() * math.log10(2)) + 1} digits>"
        else:
            text = f"<{_type_name(value)}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


#: the largest size any argument may give: the kernels index with 32-bit integers
MAX_SIZE = 2**31 - 1


def check_int(name, value, minimum=1, maximum=MAX_SIZE):
    """An integer (not bool) in [minimum, maximum], returned as a Python int."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, but got bool ({value!r})")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, but got {_type_name(value)} "
                        f"({short(value)})") from None
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, but got {short(value)}")
    if value > maximum:
        raise ValueError(f"{name} must be an integer <= {maximum}, but got {short(value)}")
    return value


_COMPARE = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def check_real(name, value, minimum=None, maximum=None, *, above=None, below=None,
               infinite=False):
    """A real number (not bool, never NaN, +-inf only with ``infinite``) in the bounds, as a float.

    ``minimum``/``maximum`` are inclusive bounds, ``above``/``below`` exclusive ones.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, but got {_type_name(value)} "
                        f"({short(value)})")
    try:
        number = float(value)
    except (OverflowError, ValueError):
        raise ValueError(f"{name} must be a real number within the range of a float, but got "
                         f"{short(value)}") from None
    if math.isnan(number) or (math.isinf(number) and not infinite):
        raise ValueError(f"{name} must be a {'' if infinite else 'finite '}real number, "
                         f"but got {number}")
    bounds = [(op, bound) for op, bound in ((">=", minimum), (">", above), ("<=", maximum),
                                            ("<", below)) if bound is not None]
    if not all(_COMPARE[op](number, bound) for op, bound in bounds):
        wanted = " and ".join(f"{op} {bound}" for op, bound in bounds)
        raise ValueError(f"{name} must be a real number {wanted}, but got {number}")
    return number


def seed_sequence(name, seed):
    """A numpy SeedSequence of ``seed``: None, a non-negative int (or a sequence of them), or a
    SeedSequence; anything else is refused with the argument's name."""
    if isinstance(seed, np.random.SeedSequence):
        return seed
    try:
        if isinstance(seed, (bool, np.bool_)):    # (SeedSequence takes True for 1)
            raise TypeError("a bool is not a seed")
        return np.random.SeedSequence(seed)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be None, a non-negative int or a numpy SeedSequence, but "
                        f"got {_type_name(seed)} ({short(seed)}): {exc}") from None


def check_bool(name, value):
    """A flag: True or False (numpy's bools and the integers 0 and 1 too), as a Python bool.

    Anything else (a string, an array, another number) is refused rather than read by
    ``bool()``, which takes ``"no"`` for True and fails inside NumPy for an array.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be a bool (True or False), but got {_type_name(value)} "
                    f"({short(value)})")


def check_axis(name, value, ndim):
    """An axis of an array of ``ndim`` dimensions (negative counts from the end), as an int >= 0."""
    axis = check_int(f"{name} (an axis of an array of {ndim} dimensions)", value,
                     minimum=-max(ndim, 1), maximum=max(ndim, 1) - 1)
    if ndim == 0:
        raise ValueError(f"{name}={axis} needs an array with at least one axis, but got a scalar")
    return axis % ndim


def check_dropout(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"dropout must be a number in [0, 1] representing the probability of "
                        f"an element being zeroed, but got {_type_name(value)} ({short(value)})")
    try:
        number = float(value)
    except (OverflowError, ValueError):
        number = math.inf     # an int beyond a float's range: far outside [0, 1]
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"dropout must be a number in [0, 1] representing the probability of "
                         f"an element being zeroed, but got {short(value)}")
    return number


def check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, but got {short(value)}")
    return value


def check_dtype(dtype):
    """np.float32 or np.float64 (any spelling numpy understands, and torch.float32 and
    torch.float64, which PyTorch's constructors take; None means float32) as a dtype."""
    if dtype is None:
        return DTYPES[0]
    if type(dtype).__module__ == "torch" and str(dtype) in ("torch.float32", "torch.float64"):
        dtype = str(dtype)[len("torch."):]      # (torch is not imported here)
    try:
        resolved = np.dtype(dtype)
    except (TypeError, ValueError):  # ValueError: ("f8", -1), a malformed structured dtype
        resolved = None
    if not any(resolved is d or (resolved is not None and resolved == d) for d in DTYPES):
        raise ValueError(f"dtype must be float32 or float64, but got {short(dtype)}")
    return resolved


def check_device(device):
    """None, or the CPU as PyTorch names it (``"cpu"``, ``"cpu:0"``, ``torch.device("cpu")``):
    fastrnn's kernels run on the CPU, and its constructors and ``Module.to`` take PyTorch's
    ``device`` argument for PyTorch's code.  Any other device is refused."""
    if device is None:
        return None
    if isinstance(device, str) or (type(device).__module__ == "torch"
                                   and type(device).__name__ == "device"):
        text = str(device)
        if text == "cpu" or (text.startswith("cpu:") and text[4:].isdigit()):
            return "cpu"
    hint = (", a dtype (PyTorch's arguments go ..., device, dtype: give dtype= by keyword)"
            if names_dtype(device) else "")
    raise ValueError(f"device must be None or 'cpu' (fastrnn runs on the CPU), but got "
                     f"{short(device)}{hint}")


def names_dtype(value):
    """Whether ``value`` names a dtype (a torch dtype, or anything numpy reads as one) rather
    than a device (``"cpu"``, ``torch.device``): how ``Module.to`` tells its positional
    arguments apart, as PyTorch's does.  Whether it is one fastrnn takes is check_dtype's."""
    if type(value).__module__ == "torch":
        return type(value).__name__ == "dtype"
    if value is None or isinstance(value, str) and value.startswith("cpu"):
        return False
    try:
        np.dtype(value)
    except (TypeError, ValueError):
        return False
    return True


def _tensor_values(tensor):
    """A torch tensor's values as a NumPy array (detached, on the CPU); floating types NumPy
    lacks (bfloat16, the float8 types) as float32, which holds each of their values exactly."""
    tensor = tensor.detach().cpu()
    try:
        return tensor.numpy()
    except TypeError:
        if tensor.is_floating_point():
            return tensor.float().numpy()
        raise


def as_array(name, value, what="an array-like"):
    """``np.asarray(value)`` (a torch tensor detached first), or a TypeError naming ``name``
    when NumPy cannot make an array of it (a ragged list, a complex32 tensor, ...)."""
    try:
        if hasattr(value, "detach") and hasattr(value, "numpy"):  # torch.Tensor, without importing torch
            value = _tensor_values(value)
        return np.asarray(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise TypeError(f"{name} must be {what}, but could not be converted to an array: "
                        f"{exc}") from None


def as_float_array(name, value, dtype):
    """Any array-like of real floats as an array of ``dtype`` (converted if needed).

    Torch tensors work (``np.asarray`` reads them; one that requires grad is
    detached first).  Integer, bool, complex, object and string data raise a
    TypeError: they are not silently reinterpreted.
    """
    if type(value) is np.ndarray and value.dtype == dtype:
        return value          # the common case, without the generic conversion (a step's call)
    arr = as_array(name, value, "a floating-point array-like")
    if arr.dtype.kind != "f":
        got = f"an array of dtype {arr.dtype}"
        if arr.ndim == 0 and arr.dtype.kind == "O":       # None, say: name it, not its array
            got = "None" if value is None else f"a {type(value).__name__}: {short(value)}"
        raise TypeError(f"{name} must be a floating-point array (float32 or float64), "
                        f"but got {got}")
    return arr.astype(dtype, copy=False)


def check_shape(name, arr, expected):
    if arr.shape != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, but got {arr.shape}")
    return arr


def as_lengths(lengths, batch, steps, unbatched=False):
    """Per-sequence lengths as a (B,) int64 array with 1 <= lengths <= T."""
    arr = as_array("lengths", lengths, "an array-like of integers")
    if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind == "f"):  # [] is float
        raise TypeError(f"lengths must be integers, but got dtype {arr.dtype} "
                        f"with values {short(arr.ravel()[:8].tolist())}")
    expected = [(), (1,)] if unbatched else [(batch,)]
    if arr.shape not in expected:
        want = "a scalar or shape (1,) for unbatched input" if unbatched else f"shape ({batch},), one per sequence"
        raise ValueError(f"lengths must have {want}, but got shape {arr.shape}")
    arr = arr.reshape(batch)
    bad = arr[(arr < 1) | (arr > steps)]     # before the cast: 2**64 - 1 would become -1
    if bad.size:
        raise ValueError(f"lengths must be between 1 and the sequence length {steps}, "
                         f"but got {short(bad[:8].tolist())}")
    return arr.astype(np.int64)


def file_or_path(name, value, mode):
    """A binary file object open for ``mode`` (``"r"`` or ``"w"``), returned as is, or a path
    (str, bytes or os.PathLike), returned as a str."""
    method, doing = ("read", "reading") if mode == "r" else ("write", "writing")
    if hasattr(value, method):
        if not callable(getattr(value, method)):
            raise TypeError(f"{name} must be a path or a binary file object open for {doing}, "
                            f"but got {_type_name(value)} whose {method} is not callable")
        if isinstance(value, io.TextIOBase):
            raise TypeError(f"{name} must be a binary file object (opened with '{mode}b'), "
                            f"but got a text stream ({_type_name(value)})")
        able = getattr(value, "readable" if mode == "r" else "writable", None)
        if callable(able):
            try:
                ok = able()
            except ValueError:   # "I/O operation on closed file"
                raise ValueError(f"{name} is a closed file object ({_type_name(value)})") from None
            if not ok:
                raise ValueError(f"{name} is a file object that is not open for {doing} "
                                 f"({_type_name(value)}, mode {getattr(value, 'mode', '?')!r})")
        return value
    try:
        path = os.fsdecode(os.fspath(value))
    except TypeError:
        raise TypeError(f"{name} must be a path (str, bytes or os.PathLike) or a binary file "
                        f"object open for {doing}, but got {_type_name(value)} "
                        f"({short(value)})") from None
    if not path:
        raise ValueError(f"{name} must be a path, but got an empty one")
    if "\0" in path:
        raise ValueError(f"{name} must be a path without NUL characters, but got {short(path)}")
    return path
