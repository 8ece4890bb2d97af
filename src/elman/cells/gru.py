"""The gated recurrent unit (Cho et al. 2014), in both conventions.

Gate rows of ``W_ih``/``W_hh`` are ``[r | z | n]``. One step::

    r  = sigmoid(W_ir x + b_ir + W_hr h_prev + b_hr)          reset gate
    z  = sigmoid(W_iz x + b_iz + W_hz h_prev + b_hz)          update gate
    n  = tanh(W_in x + b_in + r * (W_hn h_prev + b_hn))       candidate, reset_after=True
                                                               (PyTorch, cuDNN, Keras default)
    n  = tanh(W_in x + b_in + W_hn (r * h_prev) + b_hn)       candidate, reset_after=False
                                                               (Cho et al., Keras/TF1 classic)
    h  = (1 - z) * n + z * h_prev

Backward, from dh::

    dz_pre = dh * (h_prev - n) * z * (1 - z)
    dn_pre = dh * (1 - z) * (1 - n**2)
  reset_after=True:
    dr_pre = dn_pre * (W_hn h_prev + b_hn) * r * (1 - r)
    dGX = [dr_pre, dz_pre, dn_pre]       gradient of the input-side pre-activations
    dGH = [dr_pre, dz_pre, dn_pre * r]   the recurrent side: differs in the candidate block
    dh_prev = dGH W_hh + dh * z          (the loop does the GEMM; the direct term is ours)
  reset_after=False:
    d(r h) = dn_pre W_hn                 the candidate's recurrent input is r * h_prev
    dr_pre = d(r h) * h_prev * r * (1 - r)
    dh_prev = [dr_pre, dz_pre] W_h[rz] + d(r h) * r + dh * z
    dW_hn += dn_pre^T (r * h_prev)       (not dn_pre^T h_prev: the cell's own GEMM)
"""
from __future__ import annotations

import numpy as np

from .. import _validate, registry, threads
from .base import CellBase, CellEquations, sigmoid_

__all__ = ["GRUEquations", "GRUCell"]


class GRUEquations(CellEquations):
    kernel = "elman.fast.gru"
    gates = 3
    has_cell = False
    saved_width = 1        # reset_after: W_hn h_prev + b_hn (for dr); classic: r * h_prev
    work_width = 1

    def __init__(self, reset_after: bool = True):
        self.reset_after = _validate.flag("reset_after", reset_after)
        # classic: the candidate's recurrent GEMM takes r * h_prev, so the loop's covers r, z
        self.recurrent_gates = 3 if self.reset_after else 2
        # reset_after: the candidate's recurrent-side gradient is dn_pre * r, not dn_pre; in
        # the classic variant both sides are the same array
        self.separate_dgh = self.reset_after

    def prepare_forward(self, w, H, dtype):
        """(bias for the input projection, step constants): b_hn for reset_after (it is
        multiplied by r, so it stays on the recurrent side); for the classic variant every
        bias folds into the projection and the constants are W_hn and its transpose."""
        gx_bias = self.projection_bias(w, H)
        if self.reset_after:
            return gx_bias, (w["bias_hh"][2 * H:] if "bias_hh" in w else None)
        W_hn = w["weight_hh"][2 * H:]
        return gx_bias, (W_hn, np.ascontiguousarray(W_hn.T))

    def projection_bias(self, w, H, out=None):
        """b_ih + b_hh, but for reset_after the candidate block's b_ih alone (b_hn stays on
        the recurrent side); into ``out`` where given; None without biases."""
        if "bias_ih" not in w:
            return None
        out = np.add(w["bias_ih"], w["bias_hh"], out=out)
        if self.reset_after:
            out[2 * H:] = w["bias_ih"][2 * H:]
        return out

    def keeps_operands(self) -> bool:
        """reset_after only: the classic variant's constants hold a copy of W_hn^T."""
        return self.reset_after

    def forward(self, gx, gh, consts, h_prev, c_prev, h, c, saved):
        H = h.shape[1]
        rz = gx[:, :2 * H]
        rz += gh[:, :2 * H]
        sigmoid_(rz)                                   # r, z
        r, z, n = gx[:, :H], gx[:, H:2 * H], gx[:, 2 * H:]
        if self.reset_after:
            hn = saved                                 # W_hn h_prev + b_hn
            if consts is None:                         # no bias
                hn[...] = gh[:, 2 * H:]
            else:
                np.add(gh[:, 2 * H:], consts, out=hn)
            n += r * hn
        else:
            rh = saved                                 # r * h_prev, the candidate's input
            np.multiply(r, h_prev, out=rh)
            n += rh @ consts[1]                        # + W_hn (r * h_prev)
        np.tanh(n, out=n)                              # n
        np.subtract(h_prev, n, out=h)                  # h = n + z * (h_prev - n)
        h *= z
        h += n

    def prepare_backward(self, cache, dGX, dGH):
        """Whole-sequence slopes: r(1-r) and z(1-z) for the gates, and (1-z)(1-n^2), the factor
        that takes dh to the candidate's pre-activation (the same in both variants)."""
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

    def backward(self, dh, dc, gates, saved, aux, h_prev, c_prev, dgx, dgh, work, consts):
        H = dh.shape[1]
        r, z, n = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:]
        dr, dz, dn = dgx[:, :H], dgx[:, H:2 * H], dgx[:, 2 * H:]
        tmp = work
        dn *= dh                                       # candidate: dh (1 - z)(1 - n^2)
        np.subtract(h_prev, n, out=tmp)                # update gate: dh (h_prev - n) z(1 - z)
        tmp *= dh
        dz *= tmp
        if self.reset_after:
            np.multiply(dn, r, out=dgh[:, 2 * H:])     # recurrent side of the candidate: * r
            np.multiply(dn, saved, out=tmp)            # reset: dn_pre (W_hn h + b_hn) r(1-r)
            dr *= tmp
            dgh[:, :2 * H] = dgx[:, :2 * H]
            return dh * z                              # h_prev's direct path through z * h_prev
        d_rh = dn @ consts[0]                          # back through W_hn (r * h_prev)
        np.multiply(d_rh, h_prev, out=tmp)             # reset: d(r h) h_prev r(1-r)
        dr *= tmp
        # dgh is dgx (separate_dgh): b_hn's gradient is dn_pre; dW_hn below
        return dh * z + d_rh * r                       # direct paths: z * h_prev and r * h_prev

    def other_recurrent_grads(self, cache, dGH, g):
        """Classic variant: dW_hn += dn_pre^T (r * h_prev), summed over the sequence."""
        H = dGH.shape[2] // 3
        T, N = dGH.shape[:2]
        # (threads.matmul: on one thread pool at a time, like the engine's other weight grads)
        g["weight_hh"][2 * H:] += threads.matmul(dGH[..., 2 * H:].reshape(T * N, H).T,
                                                 cache.saved.reshape(T * N, H))


@registry.register("module")
class GRUCell(CellBase):
    """One GRU step (equations in the module docstring).

    >>> import numpy as np, elman
    >>> cell = elman.GRUCell(3, 4, seed=0)
    >>> cell.weight_ih.shape, cell.weight_hh.shape     # gate rows [r | z | n]
    ((12, 3), (12, 4))
    >>> cell(np.zeros(3)).shape                        # unbatched
    (4,)
    """

    def __init__(self, input_size, hidden_size, bias=True, dtype=np.float32, seed=None,
                 reset_after=True, zoneout=0.0):
        super().__init__(GRUEquations(reset_after), input_size, hidden_size, bias, dtype, seed,
                         zoneout)
        self.reset_after = _validate.flag("reset_after", reset_after)

    def config(self) -> dict:
        cfg = super().config()
        if not self.reset_after:
            cfg["reset_after"] = False
        return cfg
