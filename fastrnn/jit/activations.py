"""Scalar sigmoid and tanh for the numba kernels: a vectorisable approximation in float32.

``math.tanh`` and ``math.exp`` are calls into libm that LLVM cannot turn
into SIMD code, and per element they cost more than the matrix products of a
small layer.  In float32 the kernels use instead a rational function, clamped
to a finite range, that compiles to a few fused multiply-adds and one
division on a whole vector of lanes::

    tanh(x) ~= x * P(x^2) / Q(x^2)   for |x| <= 7.9053,  P of degree 6, Q of degree 3

(the coefficients of Eigen's ``ptanh_float``), with ``tanh(x) = +-1`` for
``|x| > 9.02``, where the float32 value of tanh is exactly +-1, and
``sigmoid(x) = 0.5 + 0.5 * tanh(x / 2)``.  Maximum absolute error against
the exact functions over a dense grid of [-20, 20]: 2.9e-7 for tanh, 1.7e-7
for sigmoid (tested in tests/test_jit_kernels.py); +-inf and +-1e4 saturate
to exactly -1/1 (tanh) and 0/1 (sigmoid), and NaN gives NaN.

In float64 the exact functions are used (sigmoid in the overflow-free form
of the reference kernels).

Both functions are numba overloads: call them from jitted code only.
"""

import math

import numpy as np
from numba import types
from numba.extending import overload

from .config import FASTMATH

_JIT_OPTIONS = dict(fastmath=set(FASTMATH), error_model="numpy")

_CLAMP = np.float32(7.90531110763549805)   # the rational function's range
_SATURATE = np.float32(9.02)               # |x| above which float32 tanh(x) is exactly +-1
_HALF, _ONE = np.float32(0.5), np.float32(1.0)
_P = tuple(np.float32(c) for c in (
    -2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
    1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03))
_Q = tuple(np.float32(c) for c in (
    1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03))


def tanh(x):
    """Hyperbolic tangent of a float32 or float64 scalar (jitted code only)."""
    raise NotImplementedError("fastrnn.jit.activations.tanh is for numba-compiled code")


def sigmoid(x):
    """Logistic function of a float32 or float64 scalar (jitted code only)."""
    raise NotImplementedError("fastrnn.jit.activations.sigmoid is for numba-compiled code")


def _tanh32(x):
    y = x
    if y > _CLAMP:   # comparisons are False for NaN, which flows through
        y = _CLAMP
    if y < -_CLAMP:
        y = -_CLAMP
    y2 = y * y
    p = _P[0]
    p = p * y2 + _P[1]
    p = p * y2 + _P[2]
    p = p * y2 + _P[3]
    p = p * y2 + _P[4]
    p = p * y2 + _P[5]
    p = p * y2 + _P[6]
    q = _Q[0]
    q = q * y2 + _Q[1]
    q = q * y2 + _Q[2]
    q = q * y2 + _Q[3]
    r = y * p / q
    if x > _SATURATE:
        r = _ONE
    if x < -_SATURATE:
        r = -_ONE
    return r


def _sigmoid32(x):
    return _HALF + _HALF * tanh(_HALF * x)


def _sigmoid64(x):
    e = math.exp(-abs(x))
    if x >= 0:
        return 1.0 / (1.0 + e)
    return e / (1.0 + e)


@overload(tanh, jit_options=_JIT_OPTIONS)
def _tanh_impl(x):
    if x == types.float32:
        return _tanh32
    if x == types.float64:
        return lambda x: math.tanh(x)
    return None


@overload(sigmoid, jit_options=_JIT_OPTIONS)
def _sigmoid_impl(x):
    if x == types.float32:
        return _sigmoid32
    if x == types.float64:
        return _sigmoid64
    return None
