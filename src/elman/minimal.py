r"""``MinGRU`` and ``MinLSTM``: the minimal recurrent layers of Feng et al. 2024, "Were RNNs All
We Needed?" (the plain versions of the paper's algorithms), whose gates read only the input, so
that the recurrence is linear in ``h`` and runs as a parallel scan over time (:mod:`elman.scan`).

MinGRU, parameters ``weight_ih_l{k}`` (2H, I) with row blocks ``[z | h~]`` and ``bias_ih_l{k}``
(2H,)::

    z_t  = sigmoid(W_z x_t + b_z)
    h~_t = W_h x_t + b_h
    h_t  = (1 - z_t) * h_{t-1} + z_t * h~_t          a_t = 1 - z_t,  b_t = z_t * h~_t

MinLSTM, ``weight_ih_l{k}`` (3H, I) with row blocks ``[f | i | h~]`` and ``bias_ih_l{k}`` (3H,)::

    f_t = sigmoid(W_f x_t + b_f),   i_t = sigmoid(W_i x_t + b_i),   h~_t = W_h x_t + b_h
    f'_t = f_t / (f_t + i_t),       i'_t = i_t / (f_t + i_t)
    h_t = f'_t * h_{t-1} + i'_t * h~_t                a_t = f'_t,     b_t = i'_t * h~_t

Computed without cancellation: ``a_t = sigmoid(-(W_z x_t + b_z))`` for MinGRU; for MinLSTM
``f'_t`` and ``i'_t`` from scaled exponentials (:class:`_MinLSTMGates`), finite and accurate when
both gates are shut, where ``f / (f + i)`` would be 0 / 0 in floating point.

The layers take the arguments, shapes and state layout of :class:`elman.GRU` (without
``weight_hh``/``bias_hh``: there is no recurrent weight)::

    x        (T, N, I)  or (N, T, I) with batch_first, or (T, I) unbatched
    out      (T, N, D*H)            the last layer's state at every step
    h0, h_n  (D*num_layers, N, H)   indexed layer * D + direction

``lengths`` (one int per sequence, 1..T) has PyTorch's packed-sequence meaning: outputs past a
sequence's end are zero, ``h_n`` is the state at its last valid step, and the reverse direction
starts at that step. Inter-layer ``dropout`` acts in training mode, as in the other layers.

``mode="scan"`` (default) solves the recurrence as a blocked parallel scan; ``mode="sequential"``
one step at a time. Both give the same numbers up to rounding, forward and backward.
:meth:`MinimalLayer.step` runs one time step with a carried state, for generation.
"""
from __future__ import annotations

import numpy as np

from . import _validate, registry
from .cells.base import ParamSpec, check_input, check_state, make_parameters, \
    parameter_count, sigmoid_
from .module import Module
from .stateful import StatefulMixin
from .recurrent import _to_caller, _zero_padding, dropout_mask, layer_repr, stack_arguments
from .scan import SCANS, scan_backward

__all__ = ["MinGRU", "MinLSTM", "MinimalLayer"]


class _MinGRUGates:
    """``(a, b)`` of the scan from MinGRU's input projection, and back."""
    gates = 2

    @staticmethod
    def forward(gx: np.ndarray, H: int):
        """``gx`` (T, N, 2H) = ``[W_z x + b_z | W_h x + b_h]`` -> ``(a, b, saved)``."""
        z = sigmoid_(gx[..., :H].copy())
        a = sigmoid_(-gx[..., :H])                # 1 - z, without cancellation as z -> 1
        h_tilde = gx[..., H:]
        return a, z * h_tilde, (z, a, h_tilde)

    @staticmethod
    def backward(da: np.ndarray, db: np.ndarray, saved) -> np.ndarray:
        z, a, h_tilde = saved
        dz = db * h_tilde - da                    # a = 1 - z, b = z * h~
        dz *= z * a                               # through the sigmoid: z (1 - z)
        return np.concatenate([dz, db * z], axis=-1)


class _MinLSTMGates:
    """``(a, b)`` of the scan from MinLSTM's input projection, and back.

    ``f' = f / (f + i)`` is computed as ``(1 + v) / (2 + u + v)`` with ``u = exp(-g_f)``, ``v =
    exp(-g_i)``, numerator and denominator scaled by ``exp(-m)``, ``m = max(0, -g_f, -g_i)``: no
    exponential overflows, the denominator is at least 1, and every term is positive, so ``f'``
    and ``i'`` keep full relative precision even when both gates are shut (where ``f + i`` is 0
    in floating point and ``f / (f + i)`` would be 0 / 0)."""
    gates = 3

    @staticmethod
    def forward(gx: np.ndarray, H: int):
        """``gx`` (T, N, 3H) = ``[W_f x + b_f | W_i x + b_i | W_h x + b_h]`` ->
        ``(a, b, saved)``."""
        gf, gi, h_tilde = gx[..., :H], gx[..., H:2 * H], gx[..., 2 * H:]
        m = np.maximum(-gf, -gi)
        np.maximum(m, 0, out=m)
        w = np.exp(-m)                            # exp(-m), exp(-g_f - m), exp(-g_i - m)
        u = np.exp(np.subtract(-gf, m))
        v = np.exp(np.subtract(-gi, m))
        den = 2 * w + u + v
        f_n = (w + v) / den                       # f' = f / (f + i)
        i_n = (w + u) / den                       # i' = i / (f + i) = 1 - f'
        not_f = sigmoid_(-gf)                     # 1 - f, 1 - i: the slopes of log f, log i
        not_i = sigmoid_(-gi)
        return f_n, i_n * h_tilde, (f_n, i_n, not_f, not_i, h_tilde)

    @staticmethod
    def backward(da: np.ndarray, db: np.ndarray, saved) -> np.ndarray:
        f_n, i_n, not_f, not_i, h_tilde = saved
        # a = f' = sigmoid(d), b = (1 - f') h~: dd = f' i' (da - db h~); d = log f - log i
        dd = (da - db * h_tilde) * f_n * i_n
        return np.concatenate([dd * not_f, -dd * not_i, db * i_n], axis=-1)


class MinimalLayer(StatefulMixin, Module):
    """The stack of layers and directions shared by :class:`MinGRU` and :class:`MinLSTM`:
    input projection (one GEMM per layer-direction), gates -> ``(a, b)``, the scan, and back."""

    _gates: type

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype=np.float32, seed=None, mode="scan",
                 stateful=False):
        super().__init__()
        self._stateful_init(stateful)      # elman.stateful: states carried between calls
        stack_arguments(self, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                        bidirectional, dtype, seed)
        self.mode = mode                     # checked by the property setter
        D, H, G = self._D, self.hidden_size, self._gates.gates

        def specs(layer_in):
            return [ParamSpec("weight_ih", (G * H, layer_in))] + \
                ([ParamSpec("bias_ih", (G * H,))] if self.bias else [])
        first, later = parameter_count(specs(self.input_size)), parameter_count(specs(D * H))
        _validate.affordable(type(self).__name__, D * (first + (self.num_layers - 1) * later),
                             self.dtype, {"input_size": self.input_size, "hidden_size": H,
                                          "num_layers": self.num_layers})
        self._names = []                     # per layer-direction: (weight, bias or None)
        for layer in range(self.num_layers):
            for direction in range(D):
                sfx = f"_l{layer}" + ("_reverse" if direction else "")
                made = make_parameters(specs(self.input_size if layer == 0 else D * H), H,
                                       self.dtype, self._rng)
                for name, param in made.items():
                    setattr(self, name + sfx, param)
                self._names.append(("weight_ih" + sfx, "bias_ih" + sfx if self.bias else None))
        self._cache = None

    @property
    def mode(self) -> str:
        """``"scan"`` (the blocked parallel scan) or ``"sequential"`` (one step at a time)."""
        return self._mode

    @mode.setter
    def mode(self, value) -> None:
        if value not in SCANS:
            raise ValueError(f"mode must be one of {sorted(SCANS)}, got {value!r}")
        self._mode = value

    @property
    def _D(self) -> int:
        return 2 if self.bidirectional else 1

    def extra_repr(self) -> str:
        return layer_repr(self, (("mode", "scan"), ("stateful", False)))

    def config(self) -> dict:
        """The constructor arguments, as plain JSON-able values (``seed`` is not kept)."""
        cfg = dict(input_size=self.input_size, hidden_size=self.hidden_size,
                   num_layers=self.num_layers, bias=self.bias, batch_first=self.batch_first,
                   dropout=self.dropout, bidirectional=self.bidirectional,
                   dtype=self.dtype.name, mode=self.mode)
        if self.stateful:                  # only when on: older configs stay the same
            cfg["stateful"] = True
        return cfg

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x, hx=None, lengths=None):
        """Run the stack: returns ``(out, h_n)``; ``hx`` is ``h_0`` (zeros when None)."""
        x, batched = check_input(x, self.input_size, self.dtype, 3,
                                 time_axis=1 if self.batch_first else 0)
        if not batched:
            X = x[:, None, :]
        elif self.batch_first:
            X = x.transpose(1, 0, 2)
        else:
            X = x
        T, N, _ = X.shape
        D, H, LD = self._D, self.hidden_size, self.num_layers * self._D
        hx = self._carry_in(hx, N, batched)           # stateful: the last call's final states
        if hx is None:
            h0 = np.zeros((LD, N, H), self.dtype)
        else:
            if isinstance(hx, (tuple, list)):
                raise TypeError(f"hx of {type(self).__name__} must be one array h_0, got a "
                                f"{type(hx).__name__}")
            h0 = check_state("h_0", hx, (LD, N, H) if batched else (LD, H),
                             self.dtype).reshape(LD, N, H)
        valid = order = None
        if lengths is not None:
            if not batched:
                raise ValueError("lengths is only supported for batched input (T, N, I); got "
                                 f"unbatched input of shape {x.shape}")
            lengths = _validate.lengths(lengths, N, T, type(self).__name__)
            if lengths.size and lengths.min() < T:
                valid = np.arange(T)[:, None] < lengths[None, :]             # (T, N)
                # padding is never read as data: zero it so NaN there cannot leak into dW
                X = np.where(valid[:, :, None], X, 0)
        if D == 2:
            # the reverse direction reads each sequence backwards from its own last step:
            # time index order[t, n] (an involution), gathered with columns cols
            ends = np.full(N, T) if valid is None else lengths
            t = np.arange(T)[:, None]
            order = np.where(t < ends[None, :], ends[None, :] - 1 - t, t)
        cols = np.arange(N)[None, :]

        run = SCANS[self.mode]
        caches, masks, h_n = [], [], []
        layer_in = X
        for layer in range(self.num_layers):
            outs = []
            for direction in range(D):
                k = layer * D + direction
                Xd = layer_in[order, cols] if direction else layer_in
                weight, bias = self._params_of(k)
                gx = Xd @ weight.T
                if bias is not None:
                    gx += bias
                a, b, saved = self._gates.forward(gx, H)
                if valid is not None:        # past the end: a = 1, b = 0 keeps the state
                    a[~valid] = 1
                    b[~valid] = 0
                h = run(a, b, h0[k])
                h_n.append(h[-1])
                caches.append((Xd, a, h, saved))
                out = h if valid is None else _zero_padding(h.copy(), lengths)
                outs.append(out[order, cols] if direction else out)
            out = outs[0] if D == 1 else np.concatenate(outs, axis=2)
            mask = None
            if layer < self.num_layers - 1 and self.training and self.dropout > 0:
                mask = dropout_mask(self._rng, self.dropout, out.shape, self.dtype)
                out = out * mask
            masks.append(mask)
            layer_in = out
        self._save_for_backward(dict(caches=caches, masks=masks, h0=h0, valid=valid,
                                     order=order, batched=batched, T=T, N=N))
        out, h_n = (_to_caller(a, None, batched) for a in (layer_in, np.stack(h_n)))
        if batched and self.batch_first:
            out = out.transpose(1, 0, 2)
        self._carry_out(h_n, None, N, batched)
        return out, h_n

    def _params_of(self, k: int, grads: bool = False):
        weight, bias = self._names[k]
        field = "grad" if grads else "data"
        return (getattr(getattr(self, weight), field),
                None if bias is None else getattr(getattr(self, bias), field))

    def step(self, x, hx=None):
        """One time step for generation: ``x`` (N, I) or (I,), ``hx`` the carried state
        (num_layers, N, H) or (num_layers, H) (zeros when None). Returns ``(y, h)``: ``y`` the
        last layer's new state (N, H), ``h`` all layers' states, to pass back in. The same
        numbers as :meth:`forward` over the whole sequence (up to rounding in mode "scan");
        ``backward`` works on it too.
        Unidirectional layers only (the reverse direction needs the future)."""
        if self.bidirectional:
            raise ValueError(f"{type(self).__name__}.step() needs a unidirectional layer: the "
                             "reverse direction of a bidirectional one reads the future")
        x = _validate.float_array("x", x, self.dtype)
        if x.ndim not in (1, 2):
            raise ValueError(f"x must be (N, I) or (I,) for step(), got shape {x.shape}")
        out, h = self.forward(x[None] if x.ndim == 1 else
                              (x[:, None] if self.batch_first else x[None]), hx)
        return (out[0] if x.ndim == 1 or not self.batch_first else out[:, 0]), h

    # -- backward --------------------------------------------------------------------------
    def backward(self, dout=None, dh_n=None, input_grad: bool = True):
        """Backpropagate the last forward call (then free what it kept): ``dout`` shaped like
        ``out``, ``dh_n`` like ``h_n`` (either None: zero). Returns ``(dx, dh_0)`` and **adds**
        the parameter gradients into ``Param.grad``."""
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward() needs a forward() first: there "
                               "is no saved sequence to differentiate (one backward per forward; "
                               "a forward under elman.no_grad() saves nothing)")
        st = self._cache
        T, N, batched, valid, order = st["T"], st["N"], st["batched"], st["valid"], st["order"]
        D, H, L = self._D, self.hidden_size, self.num_layers
        cols = np.arange(N)[None, :]
        if dout is not None:
            shape = (T, D * H) if not batched else \
                ((N, T, D * H) if self.batch_first else (T, N, D * H))
            dout = check_state("dout", dout, shape, self.dtype)
            if not batched:
                dout = dout[:, None, :]
            elif self.batch_first:
                dout = dout.transpose(1, 0, 2)
        if dh_n is not None:
            dh_n = check_state("dh_n", dh_n, (L * D, N, H) if batched else (L * D, H),
                               self.dtype).reshape(L * D, N, H)
        run = SCANS[self.mode]
        dh0 = np.zeros((L * D, N, H), self.dtype)
        dY = dout
        for layer in reversed(range(L)):
            dX = None
            for direction in range(D):
                k = layer * D + direction
                Xd, a, h, saved = st["caches"][k]
                dh = None if dY is None else dY[:, :, direction * H:(direction + 1) * H]
                if dh is not None:
                    dh = dh[order, cols] if direction else dh
                    if valid is not None:            # out is zero past the end: no gradient
                        dh = np.where(valid[:, :, None], dh, 0)
                da, db, dh0[k] = scan_backward(a, st["h0"][k], h, dh,
                                               None if dh_n is None else dh_n[k], run)
                if valid is not None:                # a = 1, b = 0 there are constants
                    da[~valid] = 0
                    db[~valid] = 0
                if st.get("dh_steps") is not None:  # db_t = dL/dh_t, the total (scan.py)
                    st["dh_steps"][k] = db[order, cols] if direction else db.copy()
                dgx = self._gates.backward(da, db, saved)
                weight, _ = self._params_of(k)
                gweight, gbias = self._params_of(k, grads=True)
                flat = dgx.reshape(T * N, dgx.shape[-1])
                gweight += flat.T @ Xd.reshape(T * N, Xd.shape[-1])
                if gbias is not None:
                    gbias += flat.sum(axis=0)
                if layer == 0 and not input_grad:
                    continue
                dXd = dgx @ weight
                if direction:
                    dXd = dXd[order, cols]
                dX = dXd if dX is None else dX + dXd
            mask = st["masks"][layer - 1] if layer > 0 else None
            dY = dX * mask if mask is not None and dX is not None else dX
        self._cache = None
        dx, dh0 = (_to_caller(a, None, batched) for a in (dY, dh0))
        if dx is not None and batched and self.batch_first:
            dx = dx.transpose(1, 0, 2)
        return dx, dh0

    def _state_gradients(self):
        """Ask the backward of the last forward to keep ``dL/dh_t`` at every step (for
        :func:`elman.gradient_flow`). Returns a function that, once that backward ran, gives
        one (T, N, H) array per layer-direction (index ``layer * D + direction``), time-major,
        zero past a sequence's end."""
        record = self._cache["dh_steps"] = [None] * (self.num_layers * self._D)
        return lambda: list(record)


@registry.register("module")
@registry.register("recurrent", "mingru")
class MinGRU(MinimalLayer):
    r"""minGRU (Feng et al. 2024): ``h_t = (1 - z_t) * h_{t-1} + z_t * h~_t`` with ``z_t =
    sigmoid(W_z x_t + b_z)``, ``h~_t = W_h x_t + b_h``. Parameters ``weight_ih_l{k}`` (2H, I) for
    k = 0, (2H, D*H) above, rows ``[z | h~]``; ``bias_ih_l{k}`` (2H,); suffix ``_reverse`` for
    the backward direction; initialised U(-1/sqrt(H), 1/sqrt(H)) as PyTorch's GRU. See
    :mod:`elman.minimal` for shapes, ``lengths`` and ``mode``.

    >>> import numpy as np, elman
    >>> gru = elman.MinGRU(4, 8, num_layers=2, bidirectional=True, seed=0)
    >>> x = np.random.default_rng(0).standard_normal((6, 3, 4))       # (T, N, I)
    >>> out, h_n = gru(x, lengths=[6, 2, 4])
    >>> out.shape, h_n.shape                                           # (T, N, 2H), (2*2, N, H)
    ((6, 3, 16), (4, 3, 8))
    >>> dx, dh0 = gru.backward(np.ones_like(out))
    >>> dx.shape, dh0.shape
    ((6, 3, 4), (4, 3, 8))
    """
    _gates = _MinGRUGates


@registry.register("module")
@registry.register("recurrent", "minlstm")
class MinLSTM(MinimalLayer):
    r"""minLSTM (Feng et al. 2024): ``h_t = f'_t * h_{t-1} + i'_t * h~_t`` with ``f'_t = f_t /
    (f_t + i_t)``, ``i'_t = i_t / (f_t + i_t)``, ``f_t = sigmoid(W_f x_t + b_f)``, ``i_t =
    sigmoid(W_i x_t + b_i)``, ``h~_t = W_h x_t + b_h``. Parameters ``weight_ih_l{k}`` (3H, I)
    for k = 0, (3H, D*H) above, rows ``[f | i | h~]``; ``bias_ih_l{k}`` (3H,). No cell state:
    the output is ``(out, h_n)``. See :mod:`elman.minimal` for shapes, ``lengths`` and ``mode``.

    >>> import numpy as np, elman
    >>> lstm = elman.MinLSTM(3, 5, seed=0)
    >>> x = np.random.default_rng(0).standard_normal((7, 3))          # (T, I), unbatched
    >>> out, h = lstm(x)
    >>> y, h1 = lstm.step(x[0])                                        # one step, carried state
    >>> bool(np.allclose(y, out[0])), h1.shape
    (True, (1, 5))
    """
    _gates = _MinLSTMGates
