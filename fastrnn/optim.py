"""``fastrnn.optim``, where PyTorch users look for the optimizers (``torch.optim``): the
optimizers of :mod:`fastrnn.train.optim`, the same objects under a second name."""

from .train.optim import SGD, Adagrad, Adam, AdamW, Optimizer, parameters_and_grads

__all__ = ["parameters_and_grads", "Optimizer", "SGD", "Adam", "AdamW", "Adagrad"]
