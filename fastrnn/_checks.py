"""Argument checks shared by the public classes.

Every failure is a TypeError (wrong kind of thing) or ValueError (right kind,
wrong value) whose message names the argument, what was expected and what was
received.
"""

import numbers
import operator

import numpy as np

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _type_name(value):
    return type(value).__name__


#: the largest size any argument may give: the kernels index with 32-bit integers
MAX_SIZE = 2**31 - 1


def check_int(name, value, minimum=1, maximum=MAX_SIZE):
    """An integer (not bool) in [minimum, maximum], returned as a Python int."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer, but got bool ({value!r})")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, but got {_type_name(value)} ({value!r})") from None
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, but got {value}")
    if value > maximum:
        raise ValueError(f"{name} must be an integer <= {maximum}, but got {value}")
    return value


def check_dropout(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"dropout must be a number in [0, 1] representing the probability of "
                        f"an element being zeroed, but got {_type_name(value)} ({value!r})")
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"dropout must be a number in [0, 1] representing the probability of "
                         f"an element being zeroed, but got {value}")
    return value


def check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, but got {value!r}")
    return value


def check_dtype(dtype):
    """np.float32 or np.float64 (any spelling numpy understands; None means float32) as a dtype."""
    if dtype is None:
        return DTYPES[0]
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if not any(resolved is d or (resolved is not None and resolved == d) for d in DTYPES):
        raise ValueError(f"dtype must be float32 or float64, but got {dtype!r}")
    return resolved


def as_float_array(name, value, dtype):
    """Any array-like of real floats as an array of ``dtype`` (converted if needed).

    Torch tensors work (``np.asarray`` reads them; one that requires grad is
    detached first).  Integer, bool, complex, object and string data raise a
    TypeError: they are not silently reinterpreted.
    """
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # torch.Tensor, without importing torch
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} must be a floating-point array-like, but could not be "
                        f"converted to an array: {exc}") from None
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array (float32 or float64), "
                        f"but got an array of dtype {arr.dtype}")
    return arr.astype(dtype, copy=False)


def check_shape(name, arr, expected):
    if arr.shape != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, but got {arr.shape}")
    return arr


def as_lengths(lengths, batch, steps, unbatched=False):
    """Per-sequence lengths as a (B,) int64 array with 1 <= lengths <= T."""
    if hasattr(lengths, "detach") and hasattr(lengths, "numpy"):
        lengths = lengths.detach().cpu().numpy()
    try:
        arr = np.asarray(lengths)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"lengths must be an array-like of integers, but could not be "
                        f"converted to an array: {exc}") from None
    if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind == "f"):  # [] is float
        raise TypeError(f"lengths must be integers, but got dtype {arr.dtype} "
                        f"with values {arr.ravel()[:8].tolist()}")
    expected = [(), (1,)] if unbatched else [(batch,)]
    if arr.shape not in expected:
        want = "a scalar or shape (1,) for unbatched input" if unbatched else f"shape ({batch},), one per sequence"
        raise ValueError(f"lengths must have {want}, but got shape {arr.shape}")
    arr = arr.reshape(batch).astype(np.int64)
    bad = arr[(arr < 1) | (arr > steps)]
    if bad.size:
        raise ValueError(f"lengths must be between 1 and the sequence length {steps}, "
                         f"but got {bad.tolist()}")
    return arr
