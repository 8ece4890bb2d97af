"""Layer-normalised cells (Ba, Kiros & Hinton 2016, "Layer normalization"), the ``layer_norm=True``
option of :class:`elman.RNN`, :class:`elman.GRU` and :class:`elman.LSTM`.

The input projection ``W_ih x`` and the recurrent projection ``W_hh h_prev`` are each normalised
over all their G*H pre-activations, with a gain (init 1) and a shift (init 0) of their own, and
only then do the biases come in; the LSTM also normalises ``c_t`` before the output tanh (the
stored ``c_t`` stays as it is)::

    LN(v; g, s) = g * (v - mean(v)) / sqrt(var(v) + eps) + s        over the last axis, eps 1e-5

    RNN   h = tanh(LN(W_ih x; ih) + LN(W_hh h_prev; hh) + b_ih + b_hh)            (or relu)
    LSTM  [i, f, g, o] = act(LN(W_ih x; ih) + LN(W_hh h_prev; hh) + b_ih + b_hh)
          c = f * c_prev + i * g;   h = o * tanh(LN(c; c))
    GRU   gx = LN(W_ih x; ih) + b_ih;   gh = LN(W_hh h_prev; hh)             ([r | z | n] blocks)
          r = sigmoid(gx_r + gh_r + b_hr);   z = sigmoid(gx_z + gh_z + b_hz)
          n = tanh(gx_n + r * (gh_n + b_hn));   h = (1 - z) * n + z * h_prev

Parameters (per layer-direction, suffix ``_l{k}``/``_reverse``): ``ln_ih_weight``,
``ln_ih_bias``, ``ln_hh_weight``, ``ln_hh_bias`` (G*H,), the LSTM's ``ln_c_weight``,
``ln_c_bias`` (H,). Scaling ``weight_ih`` by a positive constant leaves the output unchanged
(up to eps): the input side is normalised.

Backward through a normalisation, from ``dy`` and the normalised ``n`` with ``rstd``::

    dg += sum(dy * n);  ds += sum(dy);  dn = dy * g
    dv  = rstd * (dn - mean(dn) - n * mean(dn * n))

The step backward adds the gains' and shifts' gradients of the recurrent side (and of ``c``,
and the GRU's ``b_hh``) into sums that :meth:`parameter_grads` hands to the layer after the
loop; the input side's come whole-sequence in :meth:`transform_input_backward`. The sums live
in the pass's own step constants (``cache.consts["grad_sums"]``, a fresh mapping per forward
pass), never on the cell object, which every layer-direction and row block of a layer shares:
so two directions, or two row blocks, may run their backward passes at once. The compiled twins of the step
loops are in :mod:`elman.fast.layer_norm`; they normalise the input side row by row inside the
loops instead, and sum its gains', shifts' and the biases' gradients there too.
"""
from __future__ import annotations

import numpy as np

from .base import ParamSpec, sigmoid_
from .gru import GRUEquations
from .lstm import LSTMEquations
from .rnn import RNNEquations

__all__ = ["LayerNormRNNEquations", "LayerNormGRUEquations", "LayerNormLSTMEquations"]

EPS = 1e-5                     # torch.nn.LayerNorm's default


def normalise(v: np.ndarray, out: np.ndarray | None = None):
    """``(n, rstd)``: ``v`` normalised over its last axis (into ``out``), and 1/std per row."""
    mu = v.mean(axis=-1, keepdims=True)
    centred = np.subtract(v, mu, out=out)
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + EPS)
    centred *= rstd
    return centred, rstd


def normalise_backward(dn: np.ndarray, n: np.ndarray, rstd: np.ndarray) -> np.ndarray:
    """The gradient wrt the un-normalised values from ``dn`` (wrt the normalised ``n``)."""
    return rstd * (dn - dn.mean(axis=-1, keepdims=True)
                   - n * np.mean(dn * n, axis=-1, keepdims=True))


class _LayerNorm:
    """What the three layer-normalised cells share: their parameters, the input side's
    normalisation (whole sequence) and the recurrent side's (per step), and the sums of the
    per-step parameter gradients."""

    kernel = "elman.fast.layer_norm"
    separate_dgh = True        # the recurrent side has its own normalisation

    def parameters(self, input_size, hidden_size, proj_size=0, bias=True):
        GH = self.gates * hidden_size
        specs = super().parameters(input_size, hidden_size, proj_size, bias)
        specs += [ParamSpec("ln_ih_weight", (GH,), "ones"), ParamSpec("ln_ih_bias", (GH,), "zeros"),
                  ParamSpec("ln_hh_weight", (GH,), "ones"), ParamSpec("ln_hh_bias", (GH,), "zeros")]
        if self.has_cell:
            specs += [ParamSpec("ln_c_weight", (hidden_size,), "ones"),
                      ParamSpec("ln_c_bias", (hidden_size,), "zeros")]
        return specs

    # -- the input side, whole sequence ---------------------------------------------------------
    def transform_input(self, GX, w):
        n, rstd = normalise(GX, out=GX.copy())
        np.multiply(n, w["ln_ih_weight"], out=GX)
        GX += w["ln_ih_bias"]
        return n, rstd, w["ln_ih_weight"]

    def transform_input_backward(self, dGX, cache, g):
        n, rstd, gain = cache.input_state
        GH = dGX.shape[2]
        g["ln_ih_weight"] += (dGX * n).reshape(-1, GH).sum(axis=0)
        g["ln_ih_bias"] += dGX.reshape(-1, GH).sum(axis=0)
        return normalise_backward(dGX * gain, n, rstd)

    # -- the recurrent side, per step ----------------------------------------------------------
    def _recurrent(self, gh, consts, saved):
        """LN(gh; hh) for the step's rows; ``saved`` keeps the normalised values and rstd."""
        H = saved.shape[1] // self.saved_width
        GH = self.gates * H
        n, rstd = normalise(gh, out=saved[:, :GH])
        saved[:, GH] = rstd[:, 0]
        return n * consts["ln_hh_weight"] + consts["ln_hh_bias"]

    def _recurrent_backward(self, d, saved, consts, dgh):
        """``d`` (gradient wrt LN(gh)) into ``dgh`` (wrt the raw gh); gains into accumulators."""
        H = saved.shape[1] // self.saved_width
        GH = self.gates * H
        n, rstd = saved[:, :GH], saved[:, GH:GH + 1]
        sums = consts["grad_sums"]
        sums["ln_hh_weight"] += (d * n).sum(axis=0)
        sums["ln_hh_bias"] += d.sum(axis=0)
        dgh[...] = normalise_backward(d * consts["ln_hh_weight"], n, rstd)

    def _constants(self, w):
        return {k: w[k] for k in w if k.startswith("ln_") or k == "bias_hh"}

    #: the step constants whose gradients the step backward sums (the GRU adds ``bias_hh``)
    summed = ("ln_hh_weight", "ln_hh_bias", "ln_c_weight", "ln_c_bias")

    def prepare_backward(self, cache, dGX, dGH):
        """Fresh zero sums for this pass's per-step gradients, in ``cache.consts["grad_sums"]``
        (the pass's own: see the module docstring); :meth:`parameter_grads` hands them over."""
        consts = cache.consts
        consts["grad_sums"] = {k: np.zeros_like(consts[k]) for k in self.summed if k in consts}
        return None

    def bias_grads(self, dGX, dGH, g, split):
        db = dGX.reshape(-1, dGX.shape[2]).sum(axis=0)     # RNN, LSTM: both after the norms
        g["bias_ih"] += db
        g["bias_hh"] += db

    def parameter_grads(self, cache, dGX, dGH, g):
        for name, value in cache.consts["grad_sums"].items():
            g[name] += value


class LayerNormRNNEquations(_LayerNorm, RNNEquations):
    saved_width = 2            # LN(W_hh h) normalised (H), rstd (its first column)

    def prepare_forward(self, w, H, dtype):
        bias, _ = RNNEquations.prepare_forward(w, H, dtype)
        return bias, self._constants(w)

    def forward(self, gx, gh, consts, h_prev, c_prev, h, c, saved):
        np.add(gx, self._recurrent(gh, consts, saved), out=h)
        if self.nonlinearity == "tanh":
            np.tanh(h, out=h)
        else:
            np.maximum(h, 0, out=h)
        gx[...] = h                                    # the gates: the activated state

    def backward(self, dh, dc, gates, saved, aux, h_prev, c_prev, dgx, dgh, work, consts):
        if self.nonlinearity == "tanh":
            np.multiply(dh, 1 - gates * gates, out=dgx)
        else:
            np.multiply(dh, gates > 0, out=dgx)
        self._recurrent_backward(dgx, saved, consts, dgh)
        return None


class LayerNormLSTMEquations(_LayerNorm, LSTMEquations):
    # LN(W_hh h) normalised (4H), its rstd (H: first column), LN(c) normalised (H), its rstd
    # (H: first column), tanh(LN(c)) (H)
    saved_width = 8

    def prepare_forward(self, w, H, dtype):
        bias, (s, shift) = LSTMEquations.prepare_forward(w, H, dtype)
        consts = self._constants(w)
        consts["s"], consts["shift"] = s, shift
        return bias, consts

    def forward(self, gx, gh, consts, h_prev, c_prev, h, c, saved):
        H = c.shape[1]
        gx += self._recurrent(gh, consts, saved)      # all four pre-activations
        gx *= consts["s"]                              # i, f, o: sigmoid; g: tanh
        np.tanh(gx, out=gx)
        gx *= consts["s"]
        gx += consts["shift"]
        i, f, g, o = gx[:, :H], gx[:, H:2 * H], gx[:, 2 * H:3 * H], gx[:, 3 * H:]
        np.multiply(f, c_prev, out=c)                  # c = f * c_prev + i * g
        c += i * g
        n_c, rstd_c = normalise(c, out=saved[:, 5 * H:6 * H])
        saved[:, 6 * H] = rstd_c[:, 0]
        t = saved[:, 7 * H:8 * H]
        np.tanh(n_c * consts["ln_c_weight"] + consts["ln_c_bias"], out=t)
        np.multiply(o, t, out=h)                       # h = o * tanh(LN(c))

    def backward(self, dh, dc, gates, saved, aux, h_prev, c_prev, dgx, dgh, work, consts):
        H = dh.shape[1]
        i, f, g, o = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:3 * H], gates[:, 3 * H:]
        n_c, rstd_c, t = saved[:, 5 * H:6 * H], saved[:, 6 * H:6 * H + 1], saved[:, 7 * H:]
        dy = dh * o * (1 - t * t)                      # wrt LN(c)
        sums = consts["grad_sums"]
        sums["ln_c_weight"] += (dy * n_c).sum(axis=0)
        sums["ln_c_bias"] += dy.sum(axis=0)
        dc += normalise_backward(dy * consts["ln_c_weight"], n_c, rstd_c)
        dgx[:, :H] = dc * g * i * (1 - i)
        dgx[:, H:2 * H] = dc * c_prev * f * (1 - f)
        dgx[:, 2 * H:3 * H] = dc * i * (1 - g * g)
        dgx[:, 3 * H:] = dh * t * o * (1 - o)
        dc *= f                                        # dc_prev
        self._recurrent_backward(dgx, saved, consts, dgh)
        return None


class LayerNormGRUEquations(_LayerNorm, GRUEquations):
    saved_width = 4            # LN(W_hh h) normalised (3H), rstd (H: first column)

    def __init__(self, reset_after: bool = True):
        super().__init__(reset_after)
        if not self.reset_after:
            raise ValueError("layer_norm=True needs reset_after=True: the classic GRU's "
                             "candidate reads W_hn (r * h_prev), a product of its own")
        self.separate_dgh = True

    def prepare_forward(self, w, H, dtype):
        bias = w["bias_ih"].copy() if "bias_ih" in w else None
        if bias is not None:                   # b_hr and b_hz add on the input side; b_hn
            bias[:2 * H] += w["bias_hh"][:2 * H]          # stays inside r * (...)
        return bias, self._constants(w)

    def forward(self, gx, gh, consts, h_prev, c_prev, h, c, saved):
        H = h.shape[1]
        ghn = self._recurrent(gh, consts, saved)
        rz = gx[:, :2 * H]
        rz += ghn[:, :2 * H]
        sigmoid_(rz)
        r, z, n = gx[:, :H], gx[:, H:2 * H], gx[:, 2 * H:]
        hn = ghn[:, 2 * H:]
        if "bias_hh" in consts:
            hn = hn + consts["bias_hh"][2 * H:]
        n += r * hn
        np.tanh(n, out=n)
        np.subtract(h_prev, n, out=h)                  # h = n + z (h_prev - n)
        h *= z
        h += n                                         # (backward recomputes hn for dr)

    def backward(self, dh, dc, gates, saved, aux, h_prev, c_prev, dgx, dgh, work, consts):
        H = dh.shape[1]
        r, z, n = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:]
        n_h = saved[:, 2 * H:3 * H]
        hn = n_h * consts["ln_hh_weight"][2 * H:] + consts["ln_hh_bias"][2 * H:]
        if "bias_hh" in consts:
            hn = hn + consts["bias_hh"][2 * H:]
        dn = dh * (1 - z) * (1 - n * n)
        dgx[:, 2 * H:] = dn
        dgx[:, H:2 * H] = dh * (h_prev - n) * z * (1 - z)
        dgx[:, :H] = dn * hn * r * (1 - r)
        d = dgx.copy()                                 # wrt LN(gh): the candidate's times r
        d[:, 2 * H:] *= r
        sums = consts["grad_sums"]
        if "bias_hh" in sums:
            sums["bias_hh"][:2 * H] += dgx[:, :2 * H].sum(axis=0)
            sums["bias_hh"][2 * H:] += d[:, 2 * H:].sum(axis=0)
        self._recurrent_backward(d, saved, consts, dgh)
        return dh * z                                  # h_prev's direct path through z h_prev

    # b_hr and b_hz act where b_ir and b_iz do, b_hn inside r * (...): the step backward sums
    # bias_hh's gradient, parameter_grads hands it over with the gains'
    summed = _LayerNorm.summed + ("bias_hh",)

    def bias_grads(self, dGX, dGH, g, split):
        g["bias_ih"] += dGX.reshape(-1, dGX.shape[2]).sum(axis=0)
