"""The one-step LSTM module, :class:`LSTMCell`, with its options: the plain equations
(:mod:`elman.cells.lstm`) or, with ``peephole=True``, the peephole ones
(:mod:`elman.cells.peephole_lstm`). Its own file because it chooses between the two equation
files, and the peephole one builds on the plain one."""
from __future__ import annotations

import numpy as np

from .. import _validate, registry
from .base import CellBase
from .lstm import LSTMEquations
from .peephole_lstm import PeepholeLSTMEquations

__all__ = ["LSTMCell"]


@registry.register("module")
class LSTMCell(CellBase):
    """One LSTM step (equations in :mod:`elman.cells.lstm`); returns ``(h, c)``.

    >>> import numpy as np, elman
    >>> cell = elman.LSTMCell(3, 4, seed=0)
    >>> h, c = cell(np.zeros((2, 3)))                  # states default to zeros
    >>> h.shape, c.shape
    ((2, 4), (2, 4))
    >>> dx, (dh, dc) = cell.backward(np.ones_like(h), None)

    ``forget_bias=b``: the forget blocks of the biases start at ``b_if = b``, ``b_hf = 0``
    (:class:`~elman.cells.lstm.LSTMEquations`).

    ``peephole=True`` (Gers & Schmidhuber 2000; the same equations as
    ``elman.LSTM(peephole=True)``, in :mod:`elman.cells.peephole_lstm`): ``i`` and ``f`` see
    ``c_prev``, ``o`` sees the new ``c``, through the diagonal weights ``weight_ci``,
    ``weight_cf``, ``weight_co`` (H,), initialised to zero, created after the four standard
    parameters (so the same seed gives the plain cell's weights). torch.nn.LSTMCell has none.

    >>> cell = elman.LSTMCell(3, 4, peephole=True, seed=0)
    >>> [name for name, _ in cell.named_parameters()][4:]
    ['weight_ci', 'weight_cf', 'weight_co']
    """

    def __init__(self, input_size, hidden_size, bias=True, dtype=np.float32, seed=None,
                 forget_bias=None, zoneout=0.0, peephole=False):
        peephole = _validate.flag("peephole", peephole)
        eq = (PeepholeLSTMEquations if peephole else LSTMEquations)(forget_bias)
        if eq.forget_bias is not None and not _validate.flag("bias", bias):
            raise ValueError("forget_bias needs bias=True (it sets the forget gate's bias)")
        super().__init__(eq, input_size, hidden_size, bias, dtype, seed, zoneout)
        self.forget_bias = eq.forget_bias
        self.peephole = peephole

    def extra_repr(self):
        s = super().extra_repr()
        if self.forget_bias is not None:
            s += f", forget_bias={self.forget_bias!r}"
        return s + (", peephole=True" if self.peephole else "")

    def config(self) -> dict:
        cfg = super().config()
        if self.forget_bias is not None:
            cfg["forget_bias"] = self.forget_bias
        if self.peephole:                 # only when on: older configs and checkpoints stay
            cfg["peephole"] = True
        return cfg
