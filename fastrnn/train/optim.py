"""Optimizers with PyTorch's update rules: :class:`SGD`, :class:`Adam`, :class:`AdamW`, :class:`Adagrad`.

An optimizer holds two dicts with the same keys: the live parameter arrays
(updated in place by :meth:`Optimizer.step`) and their gradient arrays (read
by ``step``, zeroed by :meth:`Optimizer.zero_grad`).  Give it the modules and
it builds both::

    lstm, head = fastrnn.LSTM(I, H), fastrnn.train.Linear(H, C)
    opt = Adam({"lstm": lstm, "head": head}, lr=2e-3)
    opt.zero_grad(); ...forward, loss, backward...; opt.step()

or give it the dicts yourself: ``Adam(params, grads, lr=...)``.  The update
of each parameter follows ``torch.optim`` (single-tensor code path, one
parameter group) and is computed in the parameter's dtype; there is no
randomness, so a run is reproducible bit for bit.

One difference: :meth:`Optimizer.step` updates every parameter it holds, at every step.
PyTorch's skips a parameter whose ``.grad`` is None, which is what ``zero_grad()`` leaves
(``set_to_none=True``) until a backward reaches it: a module left out of a step's graph
(an auxiliary head, an unused branch) keeps still there, while here it takes the step of a
zero gradient (weight decay, and the momentum or Adam's moments it has built up).  Give such
a module an optimizer of its own, stepped only when it is used.
"""

import math
from collections.abc import Mapping

import numpy as np

from .. import _checks
from ..module import Module
from . import _compiled

__all__ = ["parameters_and_grads", "Optimizer", "SGD", "Adam", "AdamW", "Adagrad"]


def parameters_and_grads(modules):
    """Gather the parameters and gradients of one or more modules into two flat dicts.

    Parameters
    ----------
    modules : Module, sequence of Modules, or dict name -> Module
        One module keeps its own parameter names (``"weight_ih_l0"``); a
        sequence prefixes them with the position (``"0.weight_ih_l0"``), a
        dict with its key (``"lstm.weight_ih_l0"``).  A module given twice (one
        shared by an encoder and a decoder, say) is taken once, under its first
        name, as PyTorch's ``parameters()`` yields a shared parameter once.

    Returns
    -------
    params : dict name -> live parameter array
    grads : dict name -> live gradient array (same keys)
    """
    return _gather(modules, "modules")


def _gather(modules, what):
    """:func:`parameters_and_grads`, its messages naming the argument ``what``."""
    if isinstance(modules, Module):
        return modules.parameters(), dict(modules.grads)
    if hasattr(modules, "items") and callable(modules.items):
        named = [(str(k), m) for k, m in modules.items()]
    elif isinstance(modules, (list, tuple)):
        named = [(str(i), m) for i, m in enumerate(modules)]
    else:
        raise TypeError(f"{what} must be a Module, a list of Modules or a dict of Modules, "
                        f"but got {type(modules).__name__}")
    params, grads, seen = {}, {}, set()
    for prefix, m in named:
        if not isinstance(m, Module):
            raise TypeError(f"{what}[{_checks.short(prefix)}] must be a fastrnn Module, "
                            f"but got {type(m).__name__}")
        if id(m) in seen:
            continue
        seen.add(id(m))
        for name, p in m.parameters().items():
            params[f"{prefix}.{name}"] = p
            grads[f"{prefix}.{name}"] = m.grads[name]
    return params, grads


def _number(name, value, minimum=0.0, below=None):
    """A finite real hyper-parameter >= ``minimum`` (and < ``below``), as a float; the message
    of a value out of range is PyTorch's ("Invalid lr: -1.0")."""
    value = _checks.check_real(name, value)
    if value < minimum or (below is not None and value >= below):
        rng = f">= {minimum}" + (f" and < {below}" if below is not None else "")
        raise ValueError(f"Invalid {name}: {value} (must be {rng})")
    return value


#: the largest step count a state may hold
_MAX_STEPS = 2**63 - 1


class Optimizer:
    """Base class: parameter/gradient bookkeeping, ``zero_grad``, state dicts.

    Parameters
    ----------
    params : dict name -> array, or Module(s) (see :func:`parameters_and_grads`)
    grads : dict name -> array, optional
        Required when ``params`` is a dict of arrays; same keys and shapes, any float dtype
        (each is read in its parameter's dtype).
    **hyper : the optimizer's hyper-parameters (attributes of the same name,
        which may be changed between steps, e.g. ``opt.lr *= 0.5``)
    """

    _hyper = ()
    #: per-parameter state: keys of arrays shaped like the parameter, keys of step counts (None:
    #: not declared, any keys), the keys a state must have, and whether it may be empty instead
    #: (before the first step)
    _state_arrays = None
    _state_counts = ()
    _state_required = ()
    _state_empty_ok = True

    def __init__(self, params, grads=None, **hyper):
        if (not isinstance(params, (Module, np.ndarray, str, bytes)) and not hasattr(params, "items")
                and hasattr(params, "__iter__")):
            params = list(params)          # a generator of modules, as torch takes one
            if not params:
                raise ValueError("optimizer got an empty parameter list (params is empty)")
        if isinstance(params, Module) or (
                isinstance(params, (list, tuple)) and params and isinstance(params[0], Module)) or (
                hasattr(params, "values") and callable(params.values)
                and any(isinstance(v, Module) for v in params.values())):
            if grads is not None:
                raise TypeError("grads must not be given when params are modules "
                                "(their .grads are used)")
            params, grads = _gather(params, "params")
        if not hasattr(params, "items"):
            raise TypeError(f"params must be a dict name -> array or Module(s), "
                            f"but got {type(params).__name__}")
        if not hasattr(grads, "items"):
            raise TypeError(f"grads must be a dict name -> array with the keys of params, "
                            f"but got {type(grads).__name__}")
        if set(params) != set(grads):
            raise ValueError(f"params and grads must have the same keys; only in params: "
                             f"{_checks.short(sorted(map(str, set(params) - set(grads))), 200)}, "
                             f"only in grads: "
                             f"{_checks.short(sorted(map(str, set(grads) - set(params))), 200)}")
        if not params:
            raise ValueError("optimizer got an empty parameter list (params is empty)")
        first = {}     # id of each array -> its first name: each parameter is updated once
        for name, p in params.items():
            if id(p) in first:
                raise ValueError(f"params[{_checks.short(first[id(p)])}] and "
                                 f"params[{_checks.short(name)}] are the same array; give each "
                                 f"parameter once (a step would update it twice)")
            first[id(p)] = name
            g = grads[name]
            label = _checks.short(name)
            if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
                kind = type(p).__name__ + (f" of dtype {p.dtype}" if hasattr(p, "dtype") else "")
                raise TypeError(f"params[{label}] must be a floating-point numpy array, "
                                f"but got {kind}")
            if not p.flags.writeable:
                raise ValueError(f"params[{label}] is read-only; the optimizer updates it in place")
            if not isinstance(g, np.ndarray) or g.shape != p.shape:
                raise ValueError(f"grads[{label}] must be an array of shape {p.shape}, "
                                 f"but got {getattr(g, 'shape', type(g).__name__)}")
            if g.dtype.kind != "f":
                raise TypeError(f"grads[{label}] must be a floating-point array, but got dtype "
                                f"{g.dtype}")
        self.params = dict(params)
        self.grads = {name: grads[name] for name in self.params}
        for key, value in hyper.items():
            setattr(self, key, value)
        self.state = {name: {} for name in self.params}
        self.steps = 0

    @classmethod
    def _checked(cls, **hyper):
        """The hyper-parameters checked (TypeError / ValueError naming the bad one) and
        converted; a subclass checks its own."""
        return hyper

    def zero_grad(self, set_to_none=True):
        """Set every gradient to zero (in place; ``set_to_none``, PyTorch's argument, is taken
        for its code: the arrays are kept either way, the modules and this optimizer share
        them, and :meth:`step` then updates every parameter, as the module docstring says)."""
        _checks.check_bool("set_to_none", set_to_none)
        for name, g in self.grads.items():
            if not g.flags.writeable:
                raise ValueError(f"grads[{_checks.short(name)}] is read-only; zero_grad sets the "
                                 f"gradients to zero in place")
        for g in self.grads.values():
            g.fill(0)

    def step(self):
        """Update every parameter in place from its gradient.

        The hyper-parameters are checked first, as the constructor checks them: they are
        attributes, which may have been changed since (``opt.lr = ...``).
        """
        self._checked(**self.hyperparameters())
        self.steps += 1
        for name, p in self.params.items():
            self._update(p, self.grads[name].astype(p.dtype, copy=False), self.state[name])

    def _update(self, p, g, state):
        raise NotImplementedError

    def hyperparameters(self):
        """dict of the hyper-parameters as they are now."""
        return {k: getattr(self, k) for k in self._hyper}

    def state_dict(self):
        """Copy of the optimizer's state: hyper-parameters, step count, per-parameter buffers."""
        return {"type": type(self).__name__, "hyper": self.hyperparameters(), "steps": self.steps,
                "state": {n: {k: (v.copy() if isinstance(v, np.ndarray) else v)
                              for k, v in s.items()} for n, s in self.state.items()}}

    def load_state_dict(self, state_dict):
        """Restore what :meth:`state_dict` returned (same parameter names and shapes).

        Everything is checked before anything changes: a refused ``state_dict``
        (TypeError / ValueError naming the entry) leaves the optimizer as it was.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a dict as {type(self).__name__}.state_dict() "
                            f"returns, but got {type(state_dict).__name__}")
        missing = [k for k in ("type", "hyper", "steps", "state") if k not in state_dict]
        if missing:
            raise ValueError(f"state_dict lacks the entries {missing}")
        kind = state_dict["type"]
        if not isinstance(kind, str) or kind != type(self).__name__:
            raise ValueError(f"state_dict is for {_checks.short(kind)}, not {type(self).__name__}")
        hyper = state_dict["hyper"]
        if not isinstance(hyper, Mapping) or set(hyper) != set(self._hyper):
            got = sorted(map(str, hyper)) if isinstance(hyper, Mapping) else type(hyper).__name__
            raise ValueError(f"state_dict['hyper'] must be a dict of the hyper-parameters "
                             f"{list(self._hyper)}, but got {_checks.short(got, 200)}")
        try:
            hyper = self._checked(**hyper)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"state_dict['hyper']: {exc}") from None
        steps = _checks.check_int("state_dict['steps']", state_dict["steps"], minimum=0,
                                  maximum=_MAX_STEPS)
        state = state_dict["state"]
        if not isinstance(state, Mapping) or set(state) != set(self.params):
            raise ValueError("state_dict['state'] must be a dict with one entry per parameter, "
                             "the parameter names of this optimizer")
        new_state = {name: self._checked_state(name, s) for name, s in state.items()}
        for k, v in hyper.items():
            setattr(self, k, v)
        self.steps = steps
        self.state = new_state

    def _checked_state(self, name, s):
        """A copy of the state ``s`` of parameter ``name`` from a state_dict, checked."""
        label = f"state_dict['state'][{_checks.short(name)}]"
        if not isinstance(s, Mapping):
            raise TypeError(f"{label} must be a dict, but got {type(s).__name__}")
        p = self.params[name]
        if self._state_arrays is not None:
            known = set(self._state_arrays) | set(self._state_counts)
            unknown = [k for k in s if k not in known]
            if unknown:
                raise ValueError(f"{label} has unknown entries {_checks.short(unknown)} (a state "
                                 f"of {type(self).__name__} has {sorted(known)})")
            lacking = [k for k in self._state_required if k not in s]
            if lacking and (s or not self._state_empty_ok):
                raise ValueError(f"{label} lacks the entries {lacking}")
        out = {}
        for k, v in s.items():
            entry = f"{label}[{_checks.short(k)}]"
            if k in self._state_counts:
                out[k] = _checks.check_int(entry, v, minimum=0, maximum=_MAX_STEPS)
            elif self._state_arrays is not None or isinstance(v, np.ndarray):
                arr = _checks.as_float_array(entry, v, p.dtype)
                _checks.check_shape(entry, arr, p.shape)
                out[k] = np.array(arr, dtype=p.dtype)
            else:
                out[k] = v
        return out

    def __repr__(self):
        hyper = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({len(self.params)} parameters, {hyper})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as ``torch.optim.SGD``.

    ::

        g = grad (+ weight_decay * p)                       (-grad with maximize)
        buf = g on the first step, else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf   (nesterov)   or   g = buf   (momentum > 0)
        p -= lr * g

    Parameters
    ----------
    params, grads : see :class:`Optimizer`
    lr : float
    momentum, dampening, weight_decay : float
    nesterov, maximize : bool
    """

    _hyper = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize")
    _state_arrays = ("momentum_buffer",)

    def __init__(self, params, grads=None, lr=1e-3, momentum=0.0, dampening=0.0,
                 weight_decay=0.0, nesterov=False, maximize=False):
        super().__init__(params, grads, **self._checked(
            lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
            nesterov=nesterov, maximize=maximize))

    @classmethod
    def _checked(cls, lr, momentum, dampening, weight_decay, nesterov, maximize):
        out = dict(lr=_number("lr", lr), momentum=_number("momentum", momentum),
                   dampening=_number("dampening", dampening, -math.inf),
                   weight_decay=_number("weight_decay", weight_decay),
                   nesterov=_checks.check_bool("nesterov", nesterov),
                   maximize=_checks.check_bool("maximize", maximize))
        if out["nesterov"] and (out["momentum"] <= 0 or out["dampening"] != 0):
            raise ValueError(f"Nesterov momentum (nesterov=True) requires a momentum > 0 and zero "
                             f"dampening, but got momentum={out['momentum']}, "
                             f"dampening={out['dampening']}")
        return out

    def _update(self, p, g, state):
        d = -g if self.maximize else g
        if self.weight_decay:
            d = d + self.weight_decay * p
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = d.copy()
            else:
                buf *= self.momentum
                buf += (1 - self.dampening) * d
            d = d + self.momentum * buf if self.nesterov else buf
        p -= self.lr * d


class Adam(Optimizer):
    """Adam (Kingma & Ba), as ``torch.optim.Adam``.

    ::

        g = grad (+ weight_decay * p)
        m = m + (1 - beta1) * (g - m);   v = beta2 * v + (1 - beta2) * g * g
        v_hat = max(v_hat, v) with amsgrad, else v
        p -= lr / (1 - beta1**t) * m / (sqrt(v_hat) / sqrt(1 - beta2**t) + eps)

    Parameters
    ----------
    params, grads : see :class:`Optimizer`
    lr : float
    betas : (float, float)
    eps, weight_decay : float
    amsgrad, maximize : bool
    """

    _hyper = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize")
    _decoupled = False
    _state_arrays = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _state_counts = ("step",)
    _state_required = ("step", "exp_avg", "exp_avg_sq")

    def __init__(self, params, grads=None, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=0.0, amsgrad=False, maximize=False):
        super().__init__(params, grads, **self._checked(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
            maximize=maximize))

    @classmethod
    def _checked(cls, lr, betas, eps, weight_decay, amsgrad, maximize):
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), but got {_checks.short(betas)}")
        return dict(lr=_number("lr", lr),
                    betas=(_number("betas[0] (beta parameter at index 0)", betas[0], 0.0, 1.0),
                           _number("betas[1] (beta parameter at index 1)", betas[1], 0.0, 1.0)),
                    eps=_number("eps", eps), weight_decay=_number("weight_decay", weight_decay),
                    amsgrad=_checks.check_bool("amsgrad", amsgrad),
                    maximize=_checks.check_bool("maximize", maximize))

    def _update(self, p, g, state):
        beta1, beta2 = self.betas
        if not state:
            state["step"] = 0
            state["exp_avg"] = np.zeros_like(p)
            state["exp_avg_sq"] = np.zeros_like(p)
            if self.amsgrad:
                state["max_exp_avg_sq"] = np.zeros_like(p)
        state["step"] += 1
        t = state["step"]
        g = -g if self.maximize else g
        if self.weight_decay:
            if self._decoupled:
                p *= 1 - self.lr * self.weight_decay
            else:
                g = g + self.weight_decay * p
        v_max = None
        if self.amsgrad:   # (set since the first step: the running maximum starts now)
            v_max = state.setdefault("max_exp_avg_sq", np.zeros_like(p))
        _adam_update(p, g, state["exp_avg"], state["exp_avg_sq"], v_max, 1 - beta1, beta2,
                     1 - beta2, math.sqrt(1 - beta2 ** t), self.lr / (1 - beta1 ** t), self.eps)


def _adam_update(p, g, m, v, v_max, a1, b2, a2, c2, step_size, eps):
    """The moments and parameter update of an Adam step, in place (see
    :func:`_adam_update_numpy`): in one compiled pass where the extension is built, with the
    same result bit for bit."""
    # Python floats (not NumPy's float64), so that NumPy computes in p's dtype, as the kernel
    scalars = [float(x) for x in (a1, b2, a2, c2, step_size, eps)]
    fused = _compiled.kernels()
    if fused is None or not fused.adam_update(p, g, m, v, v_max, *scalars):
        _adam_update_numpy(p, g, m, v, v_max, *scalars)


def _adam_update_numpy(p, g, m, v, v_max, a1, b2, a2, c2, step_size, eps):
    """``m``, ``v`` (and AMSGrad's ``v_max``, not None) and ``p`` after a step with gradient
    ``g``, in place: a1 = 1 - beta1, b2 = beta2, a2 = 1 - beta2, c2 = sqrt(1 - beta2**t),
    step_size = lr / (1 - beta1**t), as torch.optim.Adam's single-tensor code."""
    m += a1 * (g - m)
    v *= b2
    v += a2 * g * g
    if v_max is not None:
        np.maximum(v_max, v, out=v_max)
        v = v_max
    denom = np.sqrt(v) / c2 + eps
    p -= step_size * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as ``torch.optim.AdamW``.

    Before the Adam step, ``p *= 1 - lr * weight_decay`` (default 0.01).

    Parameters
    ----------
    params, grads : see :class:`Optimizer`
    lr : float
    betas : (float, float)
    eps : float
    weight_decay : float
        The decoupled decay's rate (0.01 by default, as in PyTorch).
    amsgrad, maximize : bool
    """

    _decoupled = True

    def __init__(self, params, grads=None, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=1e-2, amsgrad=False, maximize=False):
        super().__init__(params, grads, lr, betas, eps, weight_decay, amsgrad, maximize)


class Adagrad(Optimizer):
    """Adagrad (Duchi et al.), as ``torch.optim.Adagrad``.

    ::

        g = grad (+ weight_decay * p)
        clr = lr / (1 + (t - 1) * lr_decay)
        sum += g * g
        p -= clr * g / (sqrt(sum) + eps)

    Parameters
    ----------
    params, grads : see :class:`Optimizer`
    lr, lr_decay, weight_decay, initial_accumulator_value, eps : float
    maximize : bool
    """

    _hyper = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps", "maximize")
    _state_arrays = ("sum",)
    _state_counts = ("step",)
    _state_required = ("step", "sum")
    _state_empty_ok = False

    def __init__(self, params, grads=None, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, maximize=False):
        super().__init__(params, grads, **self._checked(
            lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value, eps=eps, maximize=maximize))
        for name, p in self.params.items():
            self.state[name] = {"step": 0, "sum": np.full_like(p, self.initial_accumulator_value)}

    @classmethod
    def _checked(cls, lr, lr_decay, weight_decay, initial_accumulator_value, eps, maximize):
        return dict(lr=_number("lr", lr), lr_decay=_number("lr_decay", lr_decay),
                    weight_decay=_number("weight_decay", weight_decay),
                    initial_accumulator_value=_number("initial_accumulator_value",
                                                      initial_accumulator_value),
                    eps=_number("eps", eps), maximize=_checks.check_bool("maximize", maximize))

    def _update(self, p, g, state):
        state["step"] += 1
        g = -g if self.maximize else g
        if self.weight_decay:
            g = g + self.weight_decay * p
        clr = self.lr / (1 + (state["step"] - 1) * self.lr_decay)
        state["sum"] += g * g
        p -= clr * (g / (np.sqrt(state["sum"]) + self.eps))
