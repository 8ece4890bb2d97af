"""Attention over a sequence of keys, masked by the keys' lengths: Luong's ``dot`` and
``general`` scores and Bahdanau's ``additive`` score.

For every query ``q_t`` (a decoder state) and every key ``k_s`` (an encoder output)::

    dot        e[t, s] = q_t . k_s                                  (needs Hq == Hk)
    general    e[t, s] = q_t . (W k_s)                              W: (Hq, Hk)
    additive   e[t, s] = v . tanh(W_q q_t + W_k k_s + b)            W_q: (A, Hq), W_k: (A, Hk)

    a[t, :]  = softmax(e[t, :])   over the valid keys s < length only (padding gets weight 0)
    c_t      = sum_s a[t, s] k_s                                    the context vector

Shapes (time-major, as the recurrent layers)::

    query    (Tq, N, Hq)       keys     (Tk, N, Hk)       lengths  (N,) ints in 1..Tk, or None
    context  (Tq, N, Hk)       weights  (N, Tq, Tk)       (``self.weights`` after a forward)

``backward(dcontext)`` returns ``(dquery, dkeys)`` and adds the parameter gradients into
``Param.grad``. The weights are not an output of the graph here (they only feed the context), so
no gradient wrt them is taken.

>>> import numpy as np
>>> att = Attention(4, 4, kind="dot")
>>> q, k = np.ones((2, 3, 4)), np.ones((5, 3, 4))
>>> c = att(q, k, lengths=np.array([5, 2, 1]))
>>> c.shape, att.weights.shape, att.weights[1, 0].round(2).tolist()
((2, 3, 4), (3, 2, 5), [0.5, 0.5, 0.0, 0.0, 0.0])
"""
from __future__ import annotations

import numpy as np

from . import _validate, registry
from .init import uniform_
from .layers import _saved, activation_backward, activation_forward
from .module import Module, Param

__all__ = ["Attention", "ATTENTION_KINDS"]

ATTENTION_KINDS = ("dot", "general", "additive")


@registry.register("module")
class Attention(Module):
    """Masked attention; see the module docstring for the equations and shapes.

    Parameters are initialised as PyTorch's ``nn.Linear`` would initialise the same maps
    (uniform in +-1/sqrt(fan_in)): ``weight`` (Hq, Hk) for ``general``; ``weight_query`` (A, Hq),
    ``weight_key`` (A, Hk), ``bias`` (A,) and ``v`` (A,) for ``additive`` (``attention_size`` A,
    default Hq); none for ``dot``.
    """

    def __init__(self, query_size: int, key_size: int, kind: str = "general",
                 attention_size: int | None = None, dtype=np.float32, seed=None):
        super().__init__()
        self.query_size = _validate.positive_int("query_size", query_size)
        self.key_size = _validate.positive_int("key_size", key_size)
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"kind must be one of {ATTENTION_KINDS}, got {kind!r}")
        self.kind = kind
        if kind == "dot" and self.query_size != self.key_size:
            raise ValueError(f"dot attention needs query_size == key_size, got query_size "
                             f"{self.query_size} and key_size {self.key_size}; use "
                             f"kind='general' or 'additive'")
        self.attention_size = (self.query_size if attention_size is None else
                               _validate.positive_int("attention_size", attention_size))
        self.dtype = _validate.float_dtype(dtype)
        rng = _validate.rng(seed)
        A, Hq, Hk = self.attention_size, self.query_size, self.key_size
        count = {"dot": 0, "general": Hq * Hk, "additive": A * (Hq + Hk + 2)}[kind]
        _validate.affordable("Attention", count, self.dtype,
                             {"query_size": Hq, "key_size": Hk, "attention_size": A})

        def uniform(shape, fan_in):      # nn.Linear's rule for the same map
            return Param(uniform_(np.empty(shape, self.dtype), 1 / np.sqrt(fan_in), rng))
        if kind == "general":
            self.weight = uniform((Hq, Hk), Hk)
        elif kind == "additive":
            self.weight_query = uniform((A, Hq), Hq)
            self.weight_key = uniform((A, Hk), Hk)
            self.bias = uniform((A,), Hk)
            self.v = uniform((A,), A)
        self.weights = None
        self._cache = None

    def config(self) -> dict:
        cfg = dict(query_size=self.query_size, key_size=self.key_size, kind=self.kind,
                   dtype=self.dtype.name)
        if self.kind == "additive":
            cfg["attention_size"] = self.attention_size
        return cfg

    def extra_repr(self) -> str:
        return f"{self.query_size}, {self.key_size}, kind={self.kind!r}"

    # -- forward ---------------------------------------------------------------------------
    def forward(self, query, keys, lengths=None):
        query = _validate.float_array("query", query, self.dtype)
        keys = _validate.float_array("keys", keys, self.dtype)
        if query.ndim != 3 or query.shape[2] != self.query_size:
            raise ValueError(f"Attention: query must have shape (Tq, N, {self.query_size}), got "
                             f"{query.shape}")
        if keys.ndim != 3 or keys.shape[2] != self.key_size or keys.shape[1] != query.shape[1]:
            raise ValueError(f"Attention: keys must have shape (Tk, {query.shape[1]}, "
                             f"{self.key_size}), got {keys.shape}")
        Tk, N = keys.shape[:2]
        Q = query.transpose(1, 0, 2)                      # (N, Tq, Hq)
        K = keys.transpose(1, 0, 2)                       # (N, Tk, Hk)
        saved = {"Q": Q, "K": K}
        # scores e (N, Tq, Tk)
        if self.kind == "dot":
            e = Q @ K.transpose(0, 2, 1)
        elif self.kind == "general":
            KW = K @ self.weight.data.T                   # (N, Tk, Hq): W k_s for every key
            e = Q @ KW.transpose(0, 2, 1)
            saved["KW"] = KW
        else:
            PQ = Q @ self.weight_query.data.T             # (N, Tq, A)
            PK = K @ self.weight_key.data.T + self.bias.data  # (N, Tk, A)
            E = activation_forward("tanh", PQ[:, :, None, :] + PK[:, None, :, :])  # (N,Tq,Tk,A)
            e = E @ self.v.data
            saved["E"] = E
        # softmax over the valid keys only: padded keys get exactly 0 weight, so neither they
        # nor the gradient through them depend on what the padding holds
        if lengths is not None:
            lengths = _validate.lengths(lengths, N, Tk, "Attention")
            valid = np.arange(Tk)[None, :] < lengths[:, None]          # (N, Tk)
            e = np.where(valid[:, None, :], e, -np.inf)
        a = activation_forward("softmax", e)
        context = a @ K                                   # (N, Tq, Hk)
        saved["a"] = a
        self._save_for_backward(saved)
        self.weights = a
        return np.ascontiguousarray(context.transpose(1, 0, 2))

    # -- backward --------------------------------------------------------------------------
    def backward(self, dcontext):
        s = _saved(self)
        Q, K, a = s["Q"], s["K"], s["a"]
        dC = np.asarray(dcontext, self.dtype).transpose(1, 0, 2)          # (N, Tq, Hk)
        if dC.shape != (K.shape[0], Q.shape[1], K.shape[2]):
            raise ValueError(f"Attention.backward: expected dcontext of shape "
                             f"{(Q.shape[1], K.shape[0], K.shape[2])}, got "
                             f"{np.shape(dcontext)}")
        # c = a K
        da = dC @ K.transpose(0, 2, 1)                    # (N, Tq, Tk)
        dK = a.transpose(0, 2, 1) @ dC                    # (N, Tk, Hk)
        # softmax (masked keys have a = 0, hence de = 0 there)
        de = activation_backward("softmax", a, da)
        if self.kind == "dot":
            dQ = de @ K
            dK += de.transpose(0, 2, 1) @ Q
        elif self.kind == "general":
            KW = s["KW"]
            dQ = de @ KW
            dKW = de.transpose(0, 2, 1) @ Q               # (N, Tk, Hq)
            self.weight.grad += dKW.reshape(-1, self.query_size).T @ K.reshape(-1, self.key_size)
            dK += dKW @ self.weight.data
        else:
            E = s["E"]
            # e = E v
            self.v.grad += np.einsum("ntsa,nts->a", E, de)
            dZ = activation_backward("tanh", E, de[..., None] * self.v.data)  # (N, Tq, Tk, A)
            dPQ = dZ.sum(axis=2)                          # (N, Tq, A)
            dPK = dZ.sum(axis=1)                          # (N, Tk, A)
            self.weight_query.grad += dPQ.reshape(-1, self.attention_size).T @ \
                Q.reshape(-1, self.query_size)
            self.weight_key.grad += dPK.reshape(-1, self.attention_size).T @ \
                K.reshape(-1, self.key_size)
            self.bias.grad += dPK.sum(axis=(0, 1))
            dQ = dPQ @ self.weight_query.data
            dK += dPK @ self.weight_key.data
        self._cache = None
        return (np.ascontiguousarray(dQ.transpose(1, 0, 2)),
                np.ascontiguousarray(dK.transpose(1, 0, 2)))
