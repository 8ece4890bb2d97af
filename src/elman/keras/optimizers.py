"""Keras' optimizer classes by name and arguments (``learning_rate``, ``rho``, ``beta_1``, ...),
for ``compile(optimizer=RMSprop(learning_rate=1e-3))``. Each is a recipe: ``compile`` builds the
elman optimizer of the same rule (:mod:`elman.optim`) on the model's weights once they exist.
The update rules are PyTorch's, which equal Keras' for SGD (with or without momentum) and
differ from them in where ``epsilon`` enters for the adaptive ones.
"""
from __future__ import annotations

from .. import optim as _optim

__all__ = ["SGD", "RMSprop", "Adagrad", "Adam", "AdamW", "KerasOptimizer"]


class KerasOptimizer:
    """A recipe: the elman optimizer class and its arguments, built by :meth:`build`."""

    _cls = _optim.Optimizer

    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def build(self, params) -> _optim.Optimizer:
        return self._cls(params, **self.kwargs)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{type(self).__name__}({args})"


class SGD(KerasOptimizer):
    _cls = _optim.SGD

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False):
        super().__init__(lr=learning_rate, momentum=momentum, nesterov=nesterov)


class RMSprop(KerasOptimizer):
    _cls = _optim.RMSprop

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7,
                 centered=False):
        super().__init__(lr=learning_rate, alpha=rho, momentum=momentum, eps=epsilon,
                         centered=centered)


class Adagrad(KerasOptimizer):
    _cls = _optim.Adagrad

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7):
        super().__init__(lr=learning_rate, initial_accumulator_value=initial_accumulator_value,
                         eps=epsilon)


class Adam(KerasOptimizer):
    _cls = _optim.Adam

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False):
        super().__init__(lr=learning_rate, betas=(beta_1, beta_2), eps=epsilon, amsgrad=amsgrad)


class AdamW(KerasOptimizer):
    _cls = _optim.AdamW

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-7, amsgrad=False):
        super().__init__(lr=learning_rate, weight_decay=weight_decay, betas=(beta_1, beta_2),
                         eps=epsilon, amsgrad=amsgrad)
