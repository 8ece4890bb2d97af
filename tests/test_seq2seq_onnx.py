"""The encoder-decoder exported as an ONNX encoder graph and a decoder-step graph, run in
onnxruntime step by step against elman's own encode/decode_step (padding included)."""
import numpy as np
import pytest

import elman
from _torch import require
from elman.interop.onnx_seq2seq import export_seq2seq_onnx, seq2seq_to_onnx


CONFIGS = [
    dict(cell="lstm", attention="general", bidirectional=True, encoder_layers=2,
         decoder_layers=2),
    dict(cell="gru", attention="additive", bidirectional=False, decoder_layers=2,
         decoder_hidden=7),
    dict(cell="rnn", attention="dot", bidirectional=True),
    dict(cell="gru", decoder_cell="lstm", attention="none", bidirectional=True),
    dict(cell="lstm", attention="general", bidirectional=False, bridge="zeros"),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_onnx_graphs_match_elman_step_by_step(tmp_path, cfg):
    ort = require("onnxruntime")
    require("onnx")
    model = elman.Seq2Seq(11, 9, embedding_dim=5, hidden_size=6, seed=3, **cfg).eval()
    enc_path, step_path = tmp_path / "enc.onnx", tmp_path / "step.onnx"
    export_seq2seq_onnx(model, enc_path, step_path)
    enc = ort.InferenceSession(str(enc_path), providers=["CPUExecutionProvider"])
    step = ort.InferenceSession(str(step_path), providers=["CPUExecutionProvider"])
    src = np.array([[4, 5, 6, 7, 8], [9, 10, 0, 0, 0], [3, 4, 5, 0, 0]], np.int64)
    lengths = np.array([5, 2, 3], np.int64)
    got = dict(zip([o.name for o in enc.get_outputs()],
                   enc.run(None, {"src": src, "lengths": lengths})))
    memory, _, state = model.encode(src, lengths)
    np.testing.assert_allclose(got["memory"], memory, atol=1e-5)
    lstm = isinstance(state, tuple)
    np.testing.assert_allclose(got["h0"], state[0] if lstm else state, atol=1e-5)
    if lstm:
        np.testing.assert_allclose(got["c0"], state[1], atol=1e-5)
    tokens = np.full(3, model.bos_id, np.int64)
    feeds = {"memory": got["memory"], "lengths": lengths, "h": got["h0"]}
    if lstm:
        feeds["c"] = got["c0"]
    for _ in range(4):
        out = dict(zip([o.name for o in step.get_outputs()],
                       step.run(None, {**feeds, "tokens": tokens})))
        logp, state, weights = model.decode_step(tokens, state, memory, lengths)
        np.testing.assert_allclose(out["log_probs"], logp, atol=1e-5)
        if weights is not None:
            np.testing.assert_allclose(out["weights"], weights, atol=1e-6)
            assert np.all(out["weights"][1, 2:] == 0)          # padding: exactly no weight
        feeds["h"] = out["h_n"]
        if lstm:
            feeds["c"] = out["c_n"]
        tokens = np.argmax(logp, axis=1).astype(np.int64)


def test_onnx_export_refuses_what_it_cannot_write():
    require("onnx")
    with pytest.raises(TypeError, match="expects an elman.Seq2Seq"):
        seq2seq_to_onnx(elman.GRU(3, 4))
    with pytest.raises(elman.ConversionError, match="Seq2Seq"):
        elman.to_onnx(elman.Seq2Seq(5, 5, embedding_dim=2, hidden_size=2))
