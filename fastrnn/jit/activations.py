"""Activations of the numba kernels: scalar sigmoid and tanh, a vectorisable approximation in
float32, and row passes of every function of the ``activations`` option.

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

The other activations a cell may use (the ``activations`` option: ONNX's set, one table
in :mod:`fastrnn.activations`) are applied to whole rows by :func:`act_row`, and their
derivatives, computed from the outputs as there, by :func:`act_grad_row`.  The kernels
take them as arrays, so that one compiled kernel serves every choice: ``kinds``, the int32
codes of :data:`fastrnn.activations.CODES` per slot, and ``params``, a float64 (slots, 2)
array of [alpha, beta] (:func:`fastrnn.activations.codes`); a (0,) ``kinds`` stands for the
cell's defaults, which the kernels run in their own fused loops.  Each function branches on
the kind once, outside its loop over the row: the loop of a function made of arithmetic and
comparisons vectorises (sigmoid and tanh are the approximations above in float32; so are
elu's and softplus's, through that tanh: exp(x) - 1 = 2 t / (1 - t) and log1p(exp(-|x|)) =
2 atanh((1 - t) / (3 + t)) with t = tanh(x / 2) or tanh(|x| / 2), atanh by its series to the
13th power; absolute error below 1e-6); in float64 those two call ``math.expm1``,
``math.exp`` and ``math.log1p``, which do not vectorise.  The two row functions are
compiled once per dtype as functions of their own (:func:`~fastrnn.jit.config.jit`, not
``helper``), which the kernels call: inlined, their loops would be compiled again at each of
their 28 call sites in the kernels (per dtype), 10 s of the backend's compile time.  For the
same reason functions of one form share a loop (sigmoid, tanh and scaled_tanh are
``c0 + c1 * tanh(c2 * x)``).
"""

import math

import numpy as np
from numba import types
from numba.extending import overload

from .. import activations as _acts
from .config import FASTMATH, jit

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


def expm1_neg(x):
    """exp(x) - 1 of a float32 or float64 scalar x <= 0 (or NaN) (jitted code only)."""
    raise NotImplementedError("fastrnn.jit.activations.expm1_neg is for numba-compiled code")


def softplus(x):
    """log(1 + exp(x)) of a float32 or float64 scalar, without overflow (jitted code only)."""
    raise NotImplementedError("fastrnn.jit.activations.softplus is for numba-compiled code")


_TWO, _THREE, _ZERO = np.float32(2.0), np.float32(3.0), np.float32(0.0)
#: atanh's series, s + s^3/3 + ... + s^13/13, as a polynomial in s^2 (highest power first)
_ATANH = tuple(np.float32(1.0 / k) for k in (13, 11, 9, 7, 5, 3, 1))


def _expm1_neg32(x):
    # 2 t / (1 - t), t = tanh(x / 2): the vectorised tanh (1 - t >= 1 for x <= 0)
    t = tanh(_HALF * x)
    return _TWO * t / (_ONE - t)


def _softplus32(x):
    # max(x, 0) + log1p(u), u = exp(-|x|) = (1 - t) / (1 + t), t = tanh(|x| / 2):
    # log1p(u) = 2 atanh(s), s = u / (2 + u) = (1 - t) / (3 + t) in [0, 1/3]
    t = tanh(_HALF * abs(x))
    s = (_ONE - t) / (_THREE + t)
    s2 = s * s
    p = _ATANH[0]
    p = p * s2 + _ATANH[1]
    p = p * s2 + _ATANH[2]
    p = p * s2 + _ATANH[3]
    p = p * s2 + _ATANH[4]
    p = p * s2 + _ATANH[5]
    p = p * s2 + _ATANH[6]
    return (x if x > _ZERO else _ZERO) + _TWO * s * p


def _softplus64(x):
    return (x if x > 0.0 else 0.0) + math.log1p(math.exp(-abs(x)))


def _per_dtype(stub, f32, f64):
    """Make ``f32`` and ``f64`` the float32 and float64 implementations of the scalar function
    ``stub`` in jitted code (a numba overload)."""
    @overload(stub, jit_options=_JIT_OPTIONS)
    def implementation(x):
        if x == types.float32:
            return f32
        if x == types.float64:
            return f64
        return None

    return implementation


def _tanh64(x):
    return math.tanh(x)


def _expm1_neg64(x):
    return math.expm1(x)


_per_dtype(tanh, _tanh32, _tanh64)
_per_dtype(sigmoid, _sigmoid32, _sigmoid64)
_per_dtype(expm1_neg, _expm1_neg32, _expm1_neg64)
_per_dtype(softplus, _softplus32, _softplus64)


# the kernels' codes of the activations (fastrnn.activations.CODES), constants of the row passes
_SIGMOID, _TANH, _RELU = _acts.CODES["sigmoid"], _acts.CODES["tanh"], _acts.CODES["relu"]
_AFFINE, _LEAKY_RELU = _acts.CODES["affine"], _acts.CODES["leaky_relu"]
_THRESHOLDED_RELU, _SCALED_TANH = _acts.CODES["thresholded_relu"], _acts.CODES["scaled_tanh"]
_HARD_SIGMOID, _ELU, _SOFTSIGN = (_acts.CODES[k] for k in ("hard_sigmoid", "elu", "softsign"))


@jit
def act_row(kind, alpha, beta, x):
    """x[j] = f(x[j]) for every j: the activation of code ``kind`` over a row, in place
    (the functions of :func:`fastrnn.activations.forward`; NaN propagates).

    Parameters
    ----------
    kind : int, a code of :data:`fastrnn.activations.CODES`
    alpha, beta : float, the function's parameters (ignored by those that have none)
    x : (n,) float32 or float64 array: pre-activations in, activations out
    """
    n = x.shape[0]
    zero, one = x.dtype.type(0), x.dtype.type(1)
    a, b = x.dtype.type(alpha), x.dtype.type(beta)
    if kind == _SIGMOID or kind == _TANH or kind == _SCALED_TANH:
        # one loop, c0 + c1 * tanh(c2 * x): tanh; alpha * tanh(beta * x); and sigmoid as
        # 1/2 + tanh(x / 2) / 2, which in float32 is the approximation sigmoid() itself
        c0, c1, c2 = zero, one, one
        if kind == _SIGMOID:
            half = x.dtype.type(0.5)
            c0, c1, c2 = half, half, half
        elif kind == _SCALED_TANH:
            c1, c2 = a, b
        for j in range(n):
            x[j] = c0 + c1 * tanh(c2 * x[j])
    elif kind == _RELU:
        for j in range(n):
            if x[j] < zero:   # NaN stays NaN
                x[j] = zero
    elif kind == _AFFINE or kind == _HARD_SIGMOID:
        # alpha * x + beta, clamped to [0, 1] by hard_sigmoid (NaN stays NaN)
        lo, hi = (zero, one) if kind == _HARD_SIGMOID else (x.dtype.type(-np.inf),
                                                             x.dtype.type(np.inf))
        for j in range(n):
            v = a * x[j] + b
            if v < lo:
                v = lo
            if v > hi:
                v = hi
            x[j] = v
    elif kind == _LEAKY_RELU:
        for j in range(n):
            v = x[j]
            x[j] = v if v >= zero else a * v
    elif kind == _THRESHOLDED_RELU:
        for j in range(n):
            if x[j] <= a:     # NaN passes
                x[j] = zero
    elif kind == _ELU:
        for j in range(n):
            v = x[j]
            x[j] = v if v >= zero else a * expm1_neg(v)
    elif kind == _SOFTSIGN:
        for j in range(n):
            x[j] = x[j] / (one + abs(x[j]))
    else:   # softplus, without overflow: max(x, 0) + log1p(exp(-|x|))
        for j in range(n):
            x[j] = softplus(x[j])


@jit
def act_grad_row(kind, alpha, beta, y, d):
    """d[j] *= f'(x[j]) for every j, computed from the output y[j] = f(x[j]) of the
    activation of code ``kind`` (the derivatives of :func:`fastrnn.activations.derivative`,
    their conventions where f' is not defined included; d[j] is multiplied, so an infinite
    d[j] times a zero derivative gives NaN, as there).

    Parameters
    ----------
    kind : int, a code of :data:`fastrnn.activations.CODES`
    alpha, beta : float, the function's parameters (ignored by those that have none)
    y : (n,) array, the activation's outputs
    d : (n,) array of the same dtype: gradients with respect to y in, to x out
    """
    n = d.shape[0]
    zero, one = d.dtype.type(0), d.dtype.type(1)
    a = d.dtype.type(alpha)
    if kind == _SIGMOID or kind == _TANH or kind == _SCALED_TANH:
        # one loop, c0 * (c1 - y) * (c2 + y): y (1 - y); (1 - y) (1 + y); and alpha * beta *
        # (1 - tanh^2) = beta / alpha * (alpha - y) * (alpha + y), exactly 0 where y saturates
        c0, c1, c2 = one, one, one
        if kind == _SIGMOID:
            c2 = zero
        elif kind == _SCALED_TANH:
            c0 = d.dtype.type(beta / alpha) if alpha != 0 else zero
            c1, c2 = a, a
        for j in range(n):
            d[j] = d[j] * (c0 * ((c1 - y[j]) * (c2 + y[j])))
    elif kind == _RELU or kind == _LEAKY_RELU:   # relu: the slope 0 below 0; NaN passes
        slope = zero if kind == _RELU else a
        for j in range(n):
            d[j] = d[j] * (slope if y[j] <= zero else one)
    elif kind == _AFFINE:
        for j in range(n):
            d[j] = d[j] * a
    elif kind == _THRESHOLDED_RELU:
        for j in range(n):
            d[j] = d[j] * (zero if y[j] == zero else one)   # y != 0: above the threshold
    elif kind == _HARD_SIGMOID:   # 0 at the two corners
        for j in range(n):
            d[j] = d[j] * (a if (y[j] > zero and y[j] < one) else zero)
    elif kind == _ELU:
        for j in range(n):
            d[j] = d[j] * (y[j] + a if y[j] <= zero else one)
    elif kind == _SOFTSIGN:   # 1 / (1 + |x|)^2 = (1 - |y|)^2
        for j in range(n):
            u = one - abs(y[j])
            d[j] = d[j] * (u * u)
    else:   # softplus: sigmoid(x) = 1 - exp(-y)
        for j in range(n):
            d[j] = d[j] * -expm1_neg(-y[j])
