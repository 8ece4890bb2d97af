"""The gated recurrent unit (Cho et al. 2014), PyTorch's convention.

Gate rows of ``W_ih``/``W_hh`` are ``[r | z | n]``. One step::

    r  = sigmoid(W_ir x + b_ir + W_hr h_prev + b_hr)          reset gate
    z  = sigmoid(W_iz x + b_iz + W_hz h_prev + b_hz)          update gate
    n  = tanh(W_in x + b_in + r * (W_hn h_prev + b_hn))       candidate (reset applied *after*
                                                               the matrix product: cuDNN/PyTorch)
    h  = (1 - z) * n + z * h_prev

Backward, from dh::

    dz_pre = dh * (h_prev - n) * z * (1 - z)
    dn_pre = dh * (1 - z) * (1 - n**2)
    dr_pre = dn_pre * (W_hn h_prev + b_hn) * r * (1 - r)
    dGX = [dr_pre, dz_pre, dn_pre]       gradient of the input-side pre-activations
    dGH = [dr_pre, dz_pre, dn_pre * r]   the recurrent side: differs in the candidate block
    dh_prev = dGH W_hh + dh * z          (the loop does the GEMM; the direct term is ours)
"""
from __future__ import annotations

import numpy as np

from .base import CellBase, sigmoid_

__all__ = ["GRUEquations", "GRUCell"]


class GRUEquations:
    gates = 3
    has_cell = False
    saved_width = 1        # W_hn h_prev + b_hn, needed for dr
    separate_dgh = True
    work_width = 1

    @staticmethod
    def prepare_forward(b_ih, b_hh, H, dtype):
        """(bias for the input projection, step constant b_hn)."""
        if b_ih is None:
            return None, None
        # b_hr and b_hz sit outside the reset product: fold them into the input projection.
        # b_hn is multiplied by r, so it stays on the recurrent side.
        gx_bias = b_ih.copy()
        gx_bias[:2 * H] += b_hh[:2 * H]
        return gx_bias, b_hh[2 * H:]

    def forward(self, gx, gh, consts, h_prev, c_prev, h, c, saved):
        H = h.shape[1]
        rz = gx[:, :2 * H]
        rz += gh[:, :2 * H]
        sigmoid_(rz)                                   # r, z
        r, z, n = gx[:, :H], gx[:, H:2 * H], gx[:, 2 * H:]
        hn = saved                                     # W_hn h_prev + b_hn
        if consts is None:                             # no bias
            hn[...] = gh[:, 2 * H:]
        else:
            np.add(gh[:, 2 * H:], consts, out=hn)
        n += r * hn
        np.tanh(n, out=n)                              # n
        np.subtract(h_prev, n, out=h)                  # h = n + z * (h_prev - n)
        h *= z
        h += n

    def prepare_backward(self, cache, dGX, dGH):
        """Whole-sequence slopes: r(1-r) and z(1-z) for the gates, and (1-z)(1-n^2), the factor
        that takes dh to the candidate's pre-activation."""
        H = dGX.shape[2] // 3
        gates = cache.gates
        rz, drz = gates[..., :2 * H], dGX[..., :2 * H]
        np.subtract(1, rz, out=drz)
        drz *= rz
        z, n, dn = gates[..., H:2 * H], gates[..., 2 * H:], dGX[..., 2 * H:]
        np.multiply(n, n, out=dn)
        np.subtract(1, dn, out=dn)
        dn *= 1 - z
        return None

    def backward(self, dh, dc, gates, saved, aux, h_prev, c_prev, dgx, dgh, work):
        H = dh.shape[1]
        r, z, n = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:]
        dr, dz, dn = dgx[:, :H], dgx[:, H:2 * H], dgx[:, 2 * H:]
        tmp = work
        dn *= dh                                       # candidate: dh (1 - z)(1 - n^2)
        np.subtract(h_prev, n, out=tmp)                # update gate: dh (h_prev - n) z(1 - z)
        tmp *= dh
        dz *= tmp
        np.multiply(dn, r, out=dgh[:, 2 * H:])         # recurrent side of the candidate: * r
        np.multiply(dn, saved, out=tmp)                # reset gate: dn_pre (W_hn h + b_hn) r(1-r)
        dr *= tmp
        dgh[:, :2 * H] = dgx[:, :2 * H]
        return dh * z                                  # h_prev's direct path through z * h_prev


class GRUCell(CellBase):
    """One GRU step (equations in the module docstring).

    >>> import numpy as np, elman
    >>> cell = elman.GRUCell(3, 4, seed=0)
    >>> cell.weight_ih.shape, cell.weight_hh.shape     # gate rows [r | z | n]
    ((12, 3), (12, 4))
    >>> cell(np.zeros(3)).shape                        # unbatched
    (4,)
    """

    def __init__(self, input_size, hidden_size, bias=True, dtype=np.float32, seed=None):
        super().__init__(GRUEquations(), input_size, hidden_size, bias, dtype, seed)
