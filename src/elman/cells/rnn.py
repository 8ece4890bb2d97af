"""The Elman RNN cell (Elman 1990, "Finding structure in time").

Equations, one step, PyTorch's convention (both biases, as ``torch.nn.RNN``)::

    a   = W_ih x + b_ih + W_hh h_prev + b_hh        (N, H)
    h   = tanh(a)          or   relu(a)

Backward, from dh (gradient wrt h)::

    da  = dh * (1 - h**2)  or   dh * [h > 0]
    dGX = dGH = da         (the loop turns them into dW_ih, dW_hh, db and dh_prev = da W_hh)
"""
from __future__ import annotations

import numpy as np

from .. import registry
from .base import CellBase, CellEquations, summed_biases

__all__ = ["RNNEquations", "RNNCell"]


class RNNEquations(CellEquations):
    kernel = "elman.fast.rnn"
    gates = 1
    has_cell = False
    saved_width = 0        # backward needs only h, which the loop keeps anyway
    separate_dgh = False   # the input and recurrent pre-activation gradients are the same
    work_width = 0
    recurrent_gates = 1    # gate blocks whose recurrent input is h_prev (the loop's GEMM)

    def __init__(self, nonlinearity: str = "tanh"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity

    @staticmethod
    def prepare_forward(w, H, dtype):
        """(bias for the input projection, step constants). Both biases act on the same
        pre-activation: add them once, to the input projection."""
        return summed_biases(w, H), None

    projection_bias = staticmethod(summed_biases)

    def keeps_operands(self) -> bool:
        return True

    def forward(self, gx, gh, consts, h_prev, c_prev, h, c, saved):
        gx += gh                                    # a = (W_ih x + b) + W_hh h_prev
        if self.nonlinearity == "tanh":
            np.tanh(gx, out=gx)
        else:
            np.maximum(gx, 0, out=gx)
        h[...] = gx         # the gates keep h too: with zoneout the state is not h itself

    def prepare_backward(self, cache, dGX, dGH):
        """Slopes of the nonlinearity for the whole sequence, from the activated values."""
        h = cache.gates
        if self.nonlinearity == "tanh":             # tanh' = 1 - h^2
            np.multiply(h, h, out=dGX)
            np.subtract(1, dGX, out=dGX)
        else:                                       # relu' = [h > 0]
            np.greater(h, 0, out=dGX, casting="unsafe")
        return None

    def backward(self, dh, dc, gates, saved, aux, h_prev, c_prev, dgx, dgh, work, consts):
        dgx *= dh                                   # da = dh * slope
        return None                                 # h_prev enters only through W_hh


@registry.register("module")
class RNNCell(CellBase):
    """One step of an Elman RNN: ``h' = tanh(W_ih x + b_ih + W_hh h + b_hh)`` (or relu).

    >>> import numpy as np, elman
    >>> cell = elman.RNNCell(3, 5, seed=0)
    >>> h = cell(np.ones((2, 3)))                      # batch of 2 -> (2, 5)
    >>> h.shape
    (2, 5)
    >>> dx, dh = cell.backward(np.ones_like(h))        # dx (2, 3), dh (2, 5)
    """

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh",
                 dtype=np.float32, seed=None, zoneout=0.0):
        super().__init__(RNNEquations(nonlinearity), input_size, hidden_size, bias, dtype, seed,
                         zoneout)
        self.nonlinearity = nonlinearity

    def config(self) -> dict:
        return dict(super().config(), nonlinearity=self.nonlinearity)
