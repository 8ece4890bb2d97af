"""MinGRU/MinLSTM exported to ONNX (elman.interop.onnx_minimal): standard operators and a Scan
per layer-direction, run in onnxruntime against the layer itself."""
import numpy as np
import pytest

import elman
from _torch import require

onnx = require("onnx")
ort = require("onnxruntime")

# (num_layers, bidirectional, batch_first, bias, lengths, initial states)
CASES = [(1, False, False, True, False, False),
         (2, True, False, True, True, True),
         (2, True, True, False, True, False),
         (1, False, True, True, False, True)]


@pytest.mark.parametrize("cls", [elman.MinGRU, elman.MinLSTM], ids=lambda c: c.__name__)
@pytest.mark.parametrize("case", CASES)
def test_onnxruntime_runs_the_exported_layer(cls, case, tmp_path):
    layers, bi, batch_first, bias, with_lengths, with_h0 = case
    layer = cls(3, 4, num_layers=layers, bidirectional=bi, batch_first=batch_first, bias=bias,
                dropout=0.3 if layers > 1 else 0.0, seed=0)
    path = tmp_path / "min.onnx"
    proto = elman.export_onnx(layer, path, lengths=with_lengths, initial_states=with_h0)
    ops = {node.op_type for node in proto.graph.node}
    assert "Scan" in ops and not ops & {"GRU", "LSTM", "RNN"}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(layers)
    T, N = 6, 3
    x = rng.standard_normal((N, T, 3) if batch_first else (T, N, 3)).astype(np.float32)
    feeds, args, kwargs = {"input": x}, [], {}
    if with_h0:
        h0 = rng.standard_normal((layers * (2 if bi else 1), N, 4)).astype(np.float32)
        feeds["h0"], args = h0, [h0]
    if with_lengths:
        feeds["lengths"] = np.array([T, 1, 4], np.int64)
        kwargs["lengths"] = [T, 1, 4]
    out, h_n = sess.run(["output", "h_n"], feeds)
    layer.eval()                                   # the graph is the layer in evaluation mode
    want_out, want_h_n = layer(x, *args, **kwargs)
    np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_n, want_h_n, rtol=1e-5, atol=1e-6)
