"""ONNX graphs of :class:`elman.MinGRU` and :class:`elman.MinLSTM` from standard operators: the
layer's equations written out (:mod:`elman.minimal`), with the recurrence ``h_t = a_t * h_{t-1}
+ b_t`` as one ``Scan`` node per layer-direction (a sequential loop; its body is one ``Mul`` and
one ``Add``).

Per layer and direction, on a time-major input ``X`` (T, N, I)::

    X_d  = X, or ReverseSequence(X, lengths) for the reverse direction (each sequence backwards
           from its own last step; without lengths a Slice with step -1)
    G    = MatMul(X_d, W^T) + b                      (T, N, G*H), sliced into the gate blocks
    MinGRU:  z = Sigmoid(G_z);  a = Sigmoid(-G_z) (= 1 - z);  b = z * G_h
    MinLSTM: d = Softplus(-G_i) - Softplus(-G_f) (= log f - log i);
             a = Sigmoid(d) (= f / (f + i));  b = Sigmoid(-d) * G_h
    with lengths, past a sequence's end: a = 1, b = 0 (the state is kept), outputs zero
    h_n, Y = Scan(h_0, a, b)                          Y (T, N, H), reversed back if needed

:mod:`elman.interop.onnx` calls :func:`minimal_layer` for such a layer; the graph's inputs and
outputs are those of a GRU there (``input``, ``h0``, ``lengths`` -> ``output``, ``h_n``).
"""
from __future__ import annotations

import numpy as np

from ..minimal import MinGRU, MinimalLayer

__all__ = ["minimal_layer"]


def _scan_body(g, base: str):
    """The Scan body: state h, scan inputs a_t, b_t -> (h_t, h_t)."""
    helper, T = g.helper, g.tensor_type
    dims = ["batch", "hidden"]
    nodes = [helper.make_node("Mul", ["a_t", "h_prev"], ["ah"], name="mul"),
             helper.make_node("Add", ["ah", "b_t"], ["h_next"], name="add"),
             helper.make_node("Identity", ["h_next"], ["y_t"], name="out")]
    return helper.make_graph(
        nodes, f"{base}_body",
        [helper.make_tensor_value_info(n, T, dims) for n in ("h_prev", "a_t", "b_t")],
        [helper.make_tensor_value_info(n, T, dims) for n in ("h_next", "y_t")])


def minimal_layer(g, layer: MinimalLayer, X: str, h0: str | None, lengths: str | None,
                  prefix: str):
    """Nodes for ``layer`` on a time-major input ``X`` (T, N, I); ``h0`` (L*D, N, H) or None;
    ``lengths`` (N,) int64 or None. Returns ``(Y (T, N, D*H), h_n (L*D, N, H), None)``."""
    D, H, L = (2 if layer.bidirectional else 1), layer.hidden_size, layer.num_layers
    scalars = {}

    def scalar(v: int) -> str:                            # made on first use: no unused ones
        if v not in scalars:
            scalars[v] = g.const(np.full((), v, g.dtype), ("zero_f", "one_f")[v])
        return scalars[v]
    valid = None
    if lengths is not None:                               # (T, N, 1): t < lengths[n]
        T = g.op("Gather", [g.op("Shape", [X], f"{prefix}shape"), g.ints(0, "zero")],
                 f"{prefix}T", axis=0)
        steps = g.op("Range", [g.ints(0, "zero"), T, g.ints(1, "one")], f"{prefix}steps")
        valid = g.op("Less", [g.op("Unsqueeze", [steps, g.ints([1, 2])], f"{prefix}t"),
                              g.op("Unsqueeze", [lengths, g.ints([0, 2])], f"{prefix}len")],
                     f"{prefix}valid")

    def reverse(x, base):
        if lengths is not None:
            return g.op("ReverseSequence", [x, lengths], base, batch_axis=1, time_axis=0)
        return g.op("Slice", [x, g.ints([-1], "starts"), g.ints([-(2 ** 62)], "ends"),
                              g.ints([0]), g.ints([-1], "steps")], base)

    def block(G, j, base):
        return g.op("Slice", [G, g.ints([j * H], "starts"), g.ints([(j + 1) * H], "ends"),
                              g.ints([2])], base)

    h_n = []
    for k in range(L):
        outs = []
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            name = f"{prefix}l{k}" + ("r" if d else "")
            Xd = reverse(X, f"{name}_x") if d else X
            G = g.op("MatMul", [Xd, g.weight(getattr(layer, "weight_ih" + sfx).data.T,
                                             f"{name}_Wt")], f"{name}_gx")
            if layer.bias:
                G = g.op("Add", [G, g.weight(getattr(layer, "bias_ih" + sfx).data, f"{name}_b")],
                         f"{name}_g")
            if isinstance(layer, MinGRU):
                gz = block(G, 0, f"{name}_gz")
                z = g.op("Sigmoid", [gz], f"{name}_z")
                a = g.op("Sigmoid", [g.op("Neg", [gz], f"{name}_ngz")], f"{name}_a")  # 1 - z
                b = g.op("Mul", [z, block(G, 1, f"{name}_h_tilde")], f"{name}_bt")
            else:
                # d = log f - log i = softplus(-g_i) - softplus(-g_f); f' = sigmoid(d)
                soft = [g.op("Softplus", [g.op("Neg", [block(G, j, f"{name}_g{j}")],
                                               f"{name}_ng{j}")], f"{name}_sp{j}")
                        for j in (0, 1)]
                logit = g.op("Sub", [soft[1], soft[0]], f"{name}_d")
                a = g.op("Sigmoid", [logit], f"{name}_a")
                i_n = g.op("Sigmoid", [g.op("Neg", [logit], f"{name}_nd")], f"{name}_i_n")
                b = g.op("Mul", [i_n, block(G, 2, f"{name}_h_tilde")], f"{name}_bt")
            if valid is not None:
                a = g.op("Where", [valid, a, scalar(1)], f"{name}_a_kept")
                b = g.op("Where", [valid, b, scalar(0)], f"{name}_b_kept")
            index = k * D + d
            if h0 is None:                                # zeros (N, H), N from the input
                state = g.op("Mul", [g.op("Gather", [b, g.ints(0, "zero")], f"{name}_b0",
                                          axis=0), scalar(0)], f"{name}_h0")
            else:
                state = g.op("Squeeze", [g.op("Slice", [h0, g.ints([index], "starts"),
                                                        g.ints([index + 1], "ends"),
                                                        g.ints([0])], f"{name}_h0s"),
                                         g.ints([0])], f"{name}_h0")
            last, Y = g.op("Scan", [state, a, b], f"{name}_scan", outputs=2,
                           body=_scan_body(g, name), num_scan_inputs=2)
            if valid is not None:
                Y = g.op("Where", [valid, Y, scalar(0)], f"{name}_y")
            outs.append(reverse(Y, f"{name}_y_fwd") if d else Y)
            h_n.append(g.op("Unsqueeze", [last, g.ints([0])], f"{name}_h_n"))
        X = outs[0] if D == 1 else g.op("Concat", outs, f"{prefix}l{k}_out", axis=2)
    h_n = h_n[0] if len(h_n) == 1 else g.op("Concat", h_n, f"{prefix}h_n", axis=0)
    return X, h_n, None
