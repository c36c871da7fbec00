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
"""

import math
import numbers

import numpy as np

from ..module import Module

__all__ = ["parameters_and_grads", "Optimizer", "SGD", "Adam", "AdamW", "Adagrad"]


def parameters_and_grads(modules):
    """Gather the parameters and gradients of one or more modules into two flat dicts.

    Parameters
    ----------
    modules : Module, sequence of Modules, or dict name -> Module
        One module keeps its own parameter names (``"weight_ih_l0"``); a
        sequence prefixes them with the position (``"0.weight_ih_l0"``), a
        dict with its key (``"lstm.weight_ih_l0"``).

    Returns
    -------
    params : dict name -> live parameter array
    grads : dict name -> live gradient array (same keys)
    """
    if isinstance(modules, Module):
        return modules.parameters(), dict(modules.grads)
    if hasattr(modules, "items") and callable(modules.items):
        named = [(str(k), m) for k, m in modules.items()]
    elif isinstance(modules, (list, tuple)):
        named = [(str(i), m) for i, m in enumerate(modules)]
    else:
        raise TypeError(f"modules must be a Module, a list of Modules or a dict of Modules, "
                        f"but got {type(modules).__name__}")
    params, grads = {}, {}
    for prefix, m in named:
        if not isinstance(m, Module):
            raise TypeError(f"modules[{prefix!r}] must be a fastrnn Module, "
                            f"but got {type(m).__name__}")
        for name, p in m.parameters().items():
            params[f"{prefix}.{name}"] = p
            grads[f"{prefix}.{name}"] = m.grads[name]
    return params, grads


def _number(name, value, minimum=0.0, below=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise TypeError(f"{name} must be a real number, but got {type(value).__name__} ({value!r})")
    value = float(value)
    if value < minimum or (below is not None and value >= below):
        rng = f">= {minimum}" + (f" and < {below}" if below is not None else "")
        raise ValueError(f"Invalid {name}: {value} (must be {rng})")
    return value


class Optimizer:
    """Base class: parameter/gradient bookkeeping, ``zero_grad``, state dicts.

    Parameters
    ----------
    params : dict name -> array, or Module(s) (see :func:`parameters_and_grads`)
    grads : dict name -> array, optional
        Required when ``params`` is a dict of arrays; same keys, shapes and dtypes.
    **hyper : the optimizer's hyper-parameters (attributes of the same name,
        which may be changed between steps, e.g. ``opt.lr *= 0.5``)
    """

    _hyper = ()

    def __init__(self, params, grads=None, **hyper):
        if isinstance(params, Module) or (
                isinstance(params, (list, tuple)) and params and isinstance(params[0], Module)) or (
                hasattr(params, "values") and any(isinstance(v, Module) for v in params.values())):
            if grads is not None:
                raise TypeError("grads must not be given when params are modules "
                                "(their .grads are used)")
            params, grads = parameters_and_grads(params)
        if not hasattr(params, "items"):
            raise TypeError(f"params must be a dict name -> array or Module(s), "
                            f"but got {type(params).__name__}")
        if grads is None or not hasattr(grads, "items"):
            raise TypeError("grads must be a dict name -> array with the keys of params")
        if set(params) != set(grads):
            raise ValueError(f"params and grads must have the same keys; only in params: "
                             f"{sorted(set(params) - set(grads))}, only in grads: "
                             f"{sorted(set(grads) - set(params))}")
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        for name, p in params.items():
            g = grads[name]
            if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
                raise TypeError(f"params[{name!r}] must be a floating-point numpy array, "
                                f"but got {type(p).__name__}")
            if not p.flags.writeable:
                raise ValueError(f"params[{name!r}] is read-only; the optimizer updates it in place")
            if not isinstance(g, np.ndarray) or g.shape != p.shape:
                raise ValueError(f"grads[{name!r}] must be an array of shape {p.shape}, "
                                 f"but got {getattr(g, 'shape', type(g).__name__)}")
        self.params = dict(params)
        self.grads = {name: grads[name] for name in self.params}
        for key, value in hyper.items():
            setattr(self, key, value)
        self.state = {name: {} for name in self.params}
        self.steps = 0

    def zero_grad(self):
        """Set every gradient to zero (in place)."""
        for g in self.grads.values():
            g.fill(0)

    def step(self):
        """Update every parameter in place from its gradient."""
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
        """Restore what :meth:`state_dict` returned (same parameter names and shapes)."""
        if state_dict.get("type") != type(self).__name__:
            raise ValueError(f"state_dict is for {state_dict.get('type')!r}, not {type(self).__name__}")
        if set(state_dict["state"]) != set(self.params):
            raise ValueError("state_dict has different parameter names than this optimizer")
        for name, s in state_dict["state"].items():
            for k, v in s.items():
                if isinstance(v, np.ndarray) and v.shape != self.params[name].shape:
                    raise ValueError(f"state of {name!r}[{k!r}] has shape {v.shape}, "
                                     f"expected {self.params[name].shape}")
        for k, v in state_dict["hyper"].items():
            setattr(self, k, v)
        self.steps = int(state_dict["steps"])
        self.state = {n: {k: (np.array(v, dtype=self.params[n].dtype) if isinstance(v, np.ndarray)
                              else v) for k, v in s.items()}
                      for n, s in state_dict["state"].items()}

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

    def __init__(self, params, grads=None, lr=1e-3, momentum=0.0, dampening=0.0,
                 weight_decay=0.0, nesterov=False, maximize=False):
        lr, momentum = _number("lr", lr), _number("momentum", momentum)
        dampening, weight_decay = _number("dampening", dampening, -math.inf), \
            _number("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, grads, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=bool(nesterov), maximize=bool(maximize))

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

    def __init__(self, params, grads=None, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                 weight_decay=0.0, amsgrad=False, maximize=False):
        lr, eps, weight_decay = _number("lr", lr), _number("eps", eps), \
            _number("weight_decay", weight_decay)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair (beta1, beta2), but got {betas!r}")
        betas = (_number("beta parameter at index 0", betas[0], 0.0, 1.0),
                 _number("beta parameter at index 1", betas[1], 0.0, 1.0))
        super().__init__(params, grads, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=bool(amsgrad), maximize=bool(maximize))

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
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m += (1 - beta1) * (g - m)
        v *= beta2
        v += (1 - beta2) * g * g
        if self.amsgrad:
            np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
            v = state["max_exp_avg_sq"]
        step_size = self.lr / (1 - beta1 ** t)
        denom = np.sqrt(v) / math.sqrt(1 - beta2 ** t) + self.eps
        p -= step_size * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as ``torch.optim.AdamW``.

    Before the Adam step, ``p *= 1 - lr * weight_decay`` (default 0.01).
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

    def __init__(self, params, grads=None, lr=1e-2, lr_decay=0.0, weight_decay=0.0,
                 initial_accumulator_value=0.0, eps=1e-10, maximize=False):
        super().__init__(params, grads, lr=_number("lr", lr), lr_decay=_number("lr_decay", lr_decay),
                         weight_decay=_number("weight_decay", weight_decay),
                         initial_accumulator_value=_number("initial_accumulator_value",
                                                           initial_accumulator_value),
                         eps=_number("eps", eps), maximize=bool(maximize))
        for name, p in self.params.items():
            self.state[name] = {"step": 0, "sum": np.full_like(p, self.initial_accumulator_value)}

    def _update(self, p, g, state):
        state["step"] += 1
        g = -g if self.maximize else g
        if self.weight_decay:
            g = g + self.weight_decay * p
        clr = self.lr / (1 + (state["step"] - 1) * self.lr_decay)
        state["sum"] += g * g
        p -= clr * (g / (np.sqrt(state["sum"]) + self.eps))
