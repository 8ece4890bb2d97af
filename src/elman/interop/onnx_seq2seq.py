"""Export an encoder-decoder (:class:`elman.Seq2Seq`) to ONNX as two graphs, the usual shape
for sequence-to-sequence inference: the **encoder** runs once per batch, the **decoder step**
once per output symbol, and the search (greedy or beam, :mod:`elman.beam`) stays in the caller's
loop, feeding each step's states back.

Encoder graph::

    src      (batch, time) int64 ids       lengths  (batch,) int64
    ->
    memory   (time, batch, D*H)            the encoder's outputs (zero past each length)
    h0       (L_dec, batch, H_dec)          the bridged initial decoder state
    c0       (L_dec, batch, H_dec)          only for an LSTM decoder

Decoder-step graph::

    tokens   (batch,) int64                 the previous output ids (BOS at the start)
    h        (L_dec, batch, H_dec)          c (L_dec, batch, H_dec) for an LSTM decoder
    memory   (time, batch, D*H)             lengths (batch,) int64, as the encoder had them
    ->
    log_probs (batch, V)                    log softmax of the next id's scores
    h_n, c_n                                the new state (c_n for an LSTM decoder)
    weights  (batch, time)                  the attention weights (not with attention="none")

The recurrent layers become ONNX ``RNN``/``GRU``/``LSTM`` nodes (:mod:`.onnx`), the embeddings
``Gather``, the attention ``MatMul``/``Tanh`` with a ``Where`` mask from the lengths before the
``Softmax``, so padding gets exactly zero weight. Written in evaluation mode (no dropout).
Checked against elman step by step in onnxruntime in ``tests/test_seq2seq_onnx.py``.
"""
from __future__ import annotations

import os

import numpy as np

from .. import _validate
from .._version import __version__
from ..seq2seq import Seq2Seq
from .onnx import (MIN_OPSET, _check_recurrent, _Graph, _make_model, _model_dtype, _onnx,
                   _recurrent, default_opset)

__all__ = ["seq2seq_to_onnx", "export_seq2seq_onnx"]


def _output(g: _Graph, value: str, name: str) -> None:
    """Expose ``value`` as the graph output ``name``."""
    g.nodes.append(g.helper.make_node("Identity", [value], [name], name=g.name(f"out_{name}")))


def _linear(g: _Graph, x: str, layer, base: str, activation: str | None = None) -> str:
    """``x @ W.T + b`` (+ activation) for an elman Linear, on the last axis of ``x``."""
    y = g.op("MatMul", [x, g.weight(layer.weight.data.T, f"{base}_WT")], f"{base}_mm")
    if layer.bias is not None:
        y = g.op("Add", [y, g.weight(layer.bias.data, f"{base}_b")], f"{base}_out")
    if activation == "tanh":
        y = g.op("Tanh", [y], f"{base}_tanh")
    return y


def _bridge(g: _Graph, model: Seq2Seq, state: str | None, which: str, h_n: str) -> str:
    """The decoder's initial ``which`` state ("h" or "c") from the encoder's final states
    (``state``; None: zeros shaped like the encoder's ``h_n``)."""
    bridge = model.bridge
    D = 2 if bridge.bidirectional else 1
    H, Le, Ld, Hd = bridge.encoder_hidden, bridge.encoder_layers, bridge.decoder_layers, \
        bridge.decoder_hidden
    if state is None:                       # an LSTM decoder after a GRU/RNN encoder: zeros
        state, zero = h_n, True
    else:
        zero = bridge.mode == "zeros"
    # (D*Le, N, H) -> (Le, D, N, H) -> the source layer of each decoder layer -> (Ld, N, D*H)
    s = g.op("Reshape", [state, g.ints([Le, D, -1, H], "shape")], f"{which}_layers")
    s = g.op("Gather", [s, g.ints(bridge._sources().tolist(), "sources")], f"{which}_picked",
             axis=0)
    s = g.op("Transpose", [s], f"{which}_t", perm=[0, 2, 1, 3])
    s = g.op("Reshape", [s, g.ints([Ld, -1, D * H], "shape")], f"{which}_s")
    if zero:                                # zeros of the right shape, batch size included
        return g.op("MatMul", [s, g.weight(np.zeros((D * H, Hd)), "zeros")], f"{which}0")
    if bridge.mode == "copy":
        return s
    layer = bridge.hidden if which == "h" else bridge.cell
    return _linear(g, s, layer, f"bridge_{which}", "tanh" if which == "h" else None)


def _encoder_graph(model: Seq2Seq, g: _Graph, helper, TensorProto):
    T = g.tensor_type
    kind = _check_recurrent(model.encoder, "the encoder")
    D = 2 if model.bidirectional else 1
    K, Ld, Hd = D * model.hidden_size, model.decoder_layers, model.decoder_hidden
    for name in ("src", "lengths", "memory", "h0", "c0"):
        g._used.add(name)
    inputs = [helper.make_tensor_value_info("src", TensorProto.INT64, ["batch", "time"]),
              helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"])]
    lens = g.op("Cast", ["lengths"], "lengths_int32", to=TensorProto.INT32)
    emb = g.op("Gather", [g.weight(model.source_embedding.weight.data, "source_embedding"),
                          "src"], "src_emb", axis=0)
    X = g.op("Transpose", [emb], "src_tm", perm=[1, 0, 2])
    Y, h_n, c_n = _recurrent(g, model.encoder, kind, X, None, None, lens, "enc_")
    _output(g, Y, "memory")
    outputs = [helper.make_tensor_value_info("memory", T, ["time", "batch", K])]
    h0 = _bridge(g, model, h_n, "h", h_n)
    _output(g, h0, "h0")
    outputs.append(helper.make_tensor_value_info("h0", T, [Ld, "batch", Hd]))
    if model._has_cell(model.decoder):
        c0 = _bridge(g, model, c_n if model._has_cell(model.encoder) else None, "c", h_n)
        _output(g, c0, "c0")
        outputs.append(helper.make_tensor_value_info("c0", T, [Ld, "batch", Hd]))
    return inputs, outputs


def _attention(g: _Graph, att, q: str, keys: str, mask: str) -> tuple[str, str]:
    """Context (N, K) and weights (N, S) for a query q (N, Hq) over keys (N, S, K)."""
    if att.kind == "additive":
        pq = g.op("MatMul", [q, g.weight(att.weight_query.data.T, "att_WqT")], "att_pq")
        pq = g.op("Unsqueeze", [pq, g.ints([1])], "att_pq1")                 # (N, 1, A)
        pk = g.op("MatMul", [keys, g.weight(att.weight_key.data.T, "att_WkT")], "att_pk")
        pk = g.op("Add", [pk, g.weight(att.bias.data, "att_b")], "att_pkb")  # (N, S, A)
        E = g.op("Tanh", [g.op("Add", [pq, pk], "att_sum")], "att_E")
        e = g.op("MatMul", [E, g.weight(att.v.data, "att_v")], "att_e")     # (N, S)
    else:
        k = keys if att.kind == "dot" else \
            g.op("MatMul", [keys, g.weight(att.weight.data.T, "att_WT")], "att_kw")
        q3 = g.op("Unsqueeze", [q, g.ints([2])], "att_q3")                   # (N, Hq, 1)
        e = g.op("Squeeze", [g.op("MatMul", [k, q3], "att_e3"), g.ints([2])], "att_e")
    e = g.op("Where", [mask, e, g.weight(np.array(-np.inf), "minus_inf")], "att_masked")
    a = g.op("Softmax", [e], "att_weights", axis=-1)
    ctx = g.op("MatMul", [g.op("Unsqueeze", [a, g.ints([1])], "att_a3"), keys], "att_c3")
    return g.op("Squeeze", [ctx, g.ints([1])], "att_context"), a


def _step_graph(model: Seq2Seq, g: _Graph, helper, TensorProto):
    T = g.tensor_type
    kind = _check_recurrent(model.decoder, "the decoder")
    lstm = kind == "LSTM"
    D = 2 if model.bidirectional else 1
    K, Ld, Hd = D * model.hidden_size, model.decoder_layers, model.decoder_hidden
    for name in ("tokens", "h", "c", "memory", "lengths", "log_probs", "h_n", "c_n", "weights"):
        g._used.add(name)
    inputs = [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch"]),
              helper.make_tensor_value_info("h", T, [Ld, "batch", Hd])]
    if lstm:
        inputs.append(helper.make_tensor_value_info("c", T, [Ld, "batch", Hd]))
    inputs += [helper.make_tensor_value_info("memory", T, ["time", "batch", K]),
               helper.make_tensor_value_info("lengths", TensorProto.INT64, ["batch"])]
    emb = g.op("Gather", [g.weight(model.target_embedding.weight.data, "target_embedding"),
                          "tokens"], "tok_emb", axis=0)
    X = g.op("Unsqueeze", [emb, g.ints([0])], "tok_tm")                      # (1, N, E)
    Y, h_n, c_n = _recurrent(g, model.decoder, kind, X, "h", "c" if lstm else None, None,
                             "dec_")
    q = g.op("Squeeze", [Y, g.ints([0])], "dec_out")                         # (N, Hd)
    outputs = []
    if model.attention_kind == "none":
        logits = _linear(g, q, model.output, "output")
    else:
        keys = g.op("Transpose", ["memory"], "keys", perm=[1, 0, 2])         # (N, S, K)
        def scalar(v, base):
            return g.const(np.array(v, np.int64), base)
        steps = g.op("Gather", [g.op("Shape", ["memory"], "memory_shape"), scalar(0, "zero")],
                     "steps")                                                # a scalar
        positions = g.op("Range", [scalar(0, "zero"), steps, scalar(1, "one")], "positions")
        positions = g.op("Reshape", [positions, g.ints([1, -1], "shape")], "positions_row")
        mask = g.op("Less", [positions, g.op("Unsqueeze", ["lengths", g.ints([1])],
                                              "lengths_col")], "valid")       # (N, S)
        ctx, weights = _attention(g, model.attention, q, keys, mask)
        combined = _linear(g, g.op("Concat", [ctx, q], "att_cat", axis=1), model.combine,
                           "combine", "tanh")
        logits = _linear(g, combined, model.output, "output")
        _output(g, weights, "weights")
        outputs.append(helper.make_tensor_value_info("weights", T, ["batch", "time"]))
    logp = g.op("LogSoftmax", [logits], "logp", axis=-1)
    _output(g, logp, "log_probs")
    _output(g, h_n, "h_n")
    outputs = [helper.make_tensor_value_info("log_probs", T, ["batch", model.target_vocab]),
               helper.make_tensor_value_info("h_n", T, [Ld, "batch", Hd])] + outputs
    if lstm:
        _output(g, c_n, "c_n")
        outputs.insert(2, helper.make_tensor_value_info("c_n", T, [Ld, "batch", Hd]))
    return inputs, outputs


def seq2seq_to_onnx(model: Seq2Seq, opset: int | None = None, dtype=None) -> tuple:
    """``(encoder, decoder_step)``: two ``onnx.ModelProto``, checked by ``onnx.checker``
    (inputs and outputs in the module docstring). ``dtype`` as for :func:`elman.to_onnx`:
    onnxruntime's recurrent kernels run float32 only."""
    onnx = _onnx()
    from onnx import TensorProto, helper
    if not isinstance(model, Seq2Seq):
        raise TypeError(f"seq2seq_to_onnx expects an elman.Seq2Seq, got "
                        f"{type(model).__name__}")
    opset = default_opset() if opset is None else _validate.positive_int("opset", opset)
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ValueError(f"opset must be in [{MIN_OPSET}, {onnx.defs.onnx_opset_version()}], "
                         f"got {opset}")
    dt = _model_dtype(model, dtype)
    protos = []
    for name, build in (("encoder", _encoder_graph), ("decoder_step", _step_graph)):
        g = _Graph(onnx, dt, opset)
        inputs, outputs = build(model, g, helper, TensorProto)
        graph = helper.make_graph(g.nodes, f"elman_seq2seq_{name}", inputs, outputs,
                                  initializer=g.initializers,
                                  doc_string=f"elman Seq2Seq {name}: {model.extra_repr()}")
        proto = _make_model(helper, graph, opset)
        proto.producer_version = __version__
        onnx.checker.check_model(proto, full_check=True)
        protos.append(proto)
    return tuple(protos)


def export_seq2seq_onnx(model: Seq2Seq, encoder_path, step_path, opset: int | None = None,
                        dtype=None) -> tuple:
    """Write :func:`seq2seq_to_onnx`'s two graphs to ``encoder_path`` and ``step_path`` (each
    to a temporary name first, then renamed into place)."""
    protos = seq2seq_to_onnx(model, opset, dtype)
    for proto, path in zip(protos, (encoder_path, step_path)):
        path = os.fspath(path)
        tmp = path + ".tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(proto.SerializeToString())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return protos
