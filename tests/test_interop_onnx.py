"""elman.interop.onnx: the exported graphs pass onnx.checker and onnxruntime computes what elman
computes (float32, 1e-5 relative) over a grid of layers and models; what ONNX cannot express is
refused."""
import itertools
import os
import re

import numpy as np
import pytest

import elman
from elman.interop import ConversionError
from elman.interop.onnx import MIN_OPSET, default_opset, export_onnx, export_onnx_main, to_onnx

from _torch import require

onnx = require("onnx")
ort = require("onnxruntime")

DOCS = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "interop.md")


def session(proto):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def assert_close(ours, theirs, what="", rtol=1e-5):
    """max |ours - theirs| <= rtol * max(1, max |ours|)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != onnxruntime {theirs.shape}"
    scale = max(1.0, float(np.max(np.abs(ours), initial=0.0)))
    err = float(np.max(np.abs(ours - theirs), initial=0.0)) / scale
    assert err <= rtol, f"{what}: relative error {err:.3g} > {rtol}"


def io_names(proto):
    dims = {}
    for v in list(proto.graph.input) + list(proto.graph.output):
        dims[v.name] = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
    return dims


# -- recurrent layers: the grid -----------------------------------------------------------------

GRID = list(itertools.product(["RNN", "GRU", "LSTM"], [False, True], [1, 2], [False, True],
                              [False, True]))


@pytest.mark.parametrize("kind,bidirectional,layers,initial_states,lengths", GRID,
                         ids=[f"{k}-{'bi' if b else 'uni'}-L{n}-{'h0' if s else 'zero'}-"
                              f"{'lengths' if ln else 'full'}" for k, b, n, s, ln in GRID])
def test_recurrent_layer_matches_onnxruntime(kind, bidirectional, layers, initial_states,
                                             lengths):
    # the other arguments vary with the case, reproducibly
    seed = GRID.index((kind, bidirectional, layers, initial_states, lengths))
    rng = np.random.default_rng(seed)
    kw = dict(num_layers=layers, bidirectional=bidirectional, bias=bool(rng.random() < 0.8),
              batch_first=bool(rng.random() < 0.4), seed=seed)
    if kind == "RNN":
        kw["nonlinearity"] = "relu" if rng.random() < 0.4 else "tanh"
    I, H = int(rng.integers(1, 6)), int(rng.integers(2, 7))
    layer = getattr(elman, kind)(I, H, **kw).eval()
    proto = to_onnx(layer, lengths=lengths, initial_states=initial_states)
    names = io_names(proto)
    D = 2 if bidirectional else 1
    assert [i.name for i in proto.graph.input] == (
        ["input"] + (["h0", "c0"] if initial_states and kind == "LSTM" else
                     ["h0"] if initial_states else []) + (["lengths"] if lengths else []))
    assert [o.name for o in proto.graph.output] == (["output", "h_n", "c_n"] if kind == "LSTM"
                                                    else ["output", "h_n"])
    seq = ["batch", "time"] if layer.batch_first else ["time", "batch"]
    assert names["input"] == seq + [I] and names["output"] == seq + [D * H]
    assert names["h_n"] == [layers * D, "batch", H]
    assert sum(n.op_type == kind for n in proto.graph.node) == layers
    sess = session(proto)
    for T, N in ((5, 3), (2, 6)):                       # dynamic batch and time axes
        x = rng.standard_normal((N, T, I) if layer.batch_first else (T, N, I))
        x = x.astype(np.float32)
        feeds, args, kwargs = {"input": x}, [], {}
        if initial_states:
            h0 = rng.standard_normal((layers * D, N, H)).astype(np.float32)
            feeds["h0"] = h0
            if kind == "LSTM":
                feeds["c0"] = rng.standard_normal((layers * D, N, H)).astype(np.float32)
                args = [(h0, feeds["c0"])]
            else:
                args = [h0]
        if lengths:
            feeds["lengths"] = kwargs["lengths"] = rng.integers(1, T + 1, size=N)
        theirs = sess.run(None, feeds)
        out, state = layer(x, *args, **kwargs)
        states = state if kind == "LSTM" else (state,)
        assert_close(out, theirs[0], f"output T={T} N={N}")
        for name, ours, t in zip(("h_n", "c_n"), states, theirs[1:]):
            assert_close(ours, t, f"{name} T={T} N={N}")


def test_operator_attributes():
    gru = to_onnx(elman.GRU(3, 4, bidirectional=True))
    node = next(n for n in gru.graph.node if n.op_type == "GRU")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["linear_before_reset"] == 1 and attrs["direction"] == b"bidirectional"
    rnn = to_onnx(elman.RNN(3, 4, nonlinearity="relu", bidirectional=True))
    node = next(n for n in rnn.graph.node if n.op_type == "RNN")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["activations"] == [b"Relu", b"Relu"]


def test_default_opset_is_the_runtimes_highest():
    opset = default_opset()
    assert opset >= MIN_OPSET
    assert to_onnx(elman.LSTM(2, 3)).opset_import[0].version == opset
    assert to_onnx(elman.LSTM(2, 3), opset=14).opset_import[0].version == 14
    assert session(to_onnx(elman.LSTM(2, 3), opset=14)) is not None


# -- Sequential models --------------------------------------------------------------------------

def _models():
    return {
        "embedding-lstm-last-sigmoid": lambda: elman.Sequential([
            elman.Embedding(40, 6, padding_idx=0, seed=0), elman.LSTM(6, 8, seed=1),
            elman.Last(), elman.Dense(8, 1, activation="sigmoid", seed=2)]),
        "embedding-bigru2-lastbi-softmax": lambda: elman.Sequential([
            elman.Embedding(40, 5, seed=3),
            elman.GRU(5, 6, num_layers=2, bidirectional=True, batch_first=True, seed=4),
            elman.LastBidirectional(6, batch_first=True),
            elman.Dense(12, 4, activation="softmax", seed=5)]),
        "rnn-relu-meanpool-logsoftmax": lambda: elman.Sequential([
            elman.RNN(3, 6, nonlinearity="relu", seed=6), elman.Dropout(0.5), elman.MeanPool(),
            elman.Linear(6, 3, seed=7), elman.LogSoftmax()]),
        "lstm-batch-first-last-time-major": lambda: elman.Sequential([
            elman.LSTM(3, 5, batch_first=True, seed=8), elman.Last(), elman.Tanh(),
            elman.Dense(5, 2, bias=False, seed=9)]),
        "per-step-layernorm-softmax-dim1": lambda: elman.Sequential([
            elman.GRU(3, 6, batch_first=True, seed=10), elman.LayerNorm(6),
            elman.Dense(6, 4, activation="relu", seed=11), elman.Softmax(dim=1)]),
        "nested": lambda: elman.Sequential([
            elman.Sequential([elman.Dense(3, 4, activation="tanh", seed=12),
                              elman.LSTM(4, 5, bidirectional=True, seed=13)]),
            elman.Sequential([elman.Dense(10, 4, seed=14),
                              elman.GRU(4, 3, batch_first=True, seed=17)]),
            elman.Last(batch_first=True), elman.ReLU()]),
        # elman's own Sequential refuses lengths when a nested one has no sequence layer
        "nested-plain-no-lengths": lambda: elman.Sequential([
            elman.LSTM(3, 5, seed=18), elman.Sequential([elman.Dense(5, 4, seed=19),
                                                         elman.Sigmoid()]),
            elman.Softmax(dim=0)]),
        "dense-only": lambda: elman.Sequential([
            elman.Dense(3, 8, activation="relu", seed=15), elman.Dropout(0.2),
            elman.Dense(8, 2, activation="softmax", seed=16)]),
    }


@pytest.mark.parametrize("name", list(_models()))
def test_sequential_matches_onnxruntime(name):
    model = _models()[name]()
    model.train()            # the graph is the evaluation mode whatever the model's mode
    rng = np.random.default_rng(len(name))
    ids = isinstance(model[0], elman.Embedding)
    sequences = model._has_sequence_layers
    for lengths in ([False, True] if sequences and "no-lengths" not in name else [False]):
        proto = to_onnx(model, lengths=lengths)
        sess = session(proto)
        assert [i.name for i in proto.graph.input] == ["input"] + (["lengths"] if lengths else [])
        assert proto.graph.input[0].type.tensor_type.elem_type == (
            onnx.TensorProto.INT64 if ids else onnx.TensorProto.FLOAT)
        assert not any(n.op_type == "Dropout" for n in proto.graph.node)
        for N, T in ((4, 6), (1, 3)):
            if ids:
                x = rng.integers(1, model[0].num_embeddings, size=(N, T))
            elif sequences:
                x = rng.standard_normal((N, T, 3)).astype(np.float32)
            else:
                x = rng.standard_normal((N, 3)).astype(np.float32)
            feeds, kw = {"input": x}, {}
            if lengths:
                feeds["lengths"] = kw["lengths"] = rng.integers(1, T + 1, size=N)
            ours = model.eval()(x, **kw)
            model.train()
            assert_close(ours, sess.run(None, feeds)[0], f"{name} lengths={lengths} N={N}")
    assert io_names(proto)["output"][0] == "batch"


def test_float64_model():
    layer = elman.LSTM(3, 4, num_layers=2, dtype=np.float64, seed=0)
    proto = to_onnx(layer)                                # exact: a double graph
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    proto32 = to_onnx(layer, dtype=np.float32)            # what onnxruntime can run
    assert_close(layer(x)[0], session(proto32).run(None, {"input": x.astype(np.float32)})[0])


# -- files and the command line ---------------------------------------------------------------

def test_export_writes_a_checked_file(tmp_path):
    path = tmp_path / "gru.onnx"
    proto = export_onnx(elman.GRU(3, 4, num_layers=2), path, opset=17)
    loaded = onnx.load(str(path))
    onnx.checker.check_model(loaded, full_check=True)
    assert loaded.SerializeToString() == proto.SerializeToString()
    assert loaded.opset_import[0].version == 17 and loaded.producer_name == "elman"
    assert os.listdir(tmp_path) == ["gru.onnx"]          # no temporary file left behind


def test_command_line(tmp_path, capsys):
    model = _models()["embedding-lstm-last-sigmoid"]()
    ckpt = tmp_path / "model.npz"
    elman.save(model, str(ckpt))
    out = tmp_path / "model.onnx"
    assert export_onnx_main([str(ckpt), str(out), "--lengths", "--opset", "18", "--verify"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out} (opset 18" in text and "lengths ('batch',)" in text
    err = float(re.search(r"max relative difference (\S+)", text).group(1))
    assert err < 1e-5
    ids = np.array([[3, 4, 5, 0], [7, 8, 0, 0]])
    theirs = ort.InferenceSession(str(out)).run(None, {"input": ids, "lengths": np.array([3, 2])})
    assert_close(model(ids, lengths=[3, 2]), theirs[0])


# -- refusals ---------------------------------------------------------------------------------

class _Custom(elman.Module):
    def forward(self, x):
        return x


def test_refusals():
    with pytest.raises(ConversionError, match="proj_size=2: ONNX's LSTM operator has no"):
        to_onnx(elman.LSTM(3, 4, proj_size=2))
    with pytest.raises(ConversionError, match=r"model layer 1 \(LSTM\) has proj_size"):
        to_onnx(elman.Sequential([elman.Dense(2, 3), elman.LSTM(3, 4, proj_size=1)]))
    with pytest.raises(ConversionError, match=r"model layer 1 \(_Custom\) has no ONNX form.*"
                                              r"Supported: elman.RNN"):
        to_onnx(elman.Sequential([elman.Dense(2, 3), _Custom()]))
    with pytest.raises(ValueError, match="lengths=True needs a model with sequence layers"):
        to_onnx(elman.Sequential([elman.Dense(2, 3)]), lengths=True)
    with pytest.raises(ValueError, match="initial_states=True applies to a recurrent layer"):
        to_onnx(elman.Sequential([elman.GRU(2, 3)]), initial_states=True)
    with pytest.raises(ValueError, match=r"opset must be in \[14"):
        to_onnx(elman.GRU(2, 3), opset=13)
    with pytest.raises(ConversionError, match="LayerNormalization needs opset >= 17"):
        to_onnx(elman.Sequential([elman.LayerNorm(3)]), opset=16)
    with pytest.raises(TypeError, match="expects an elman module"):
        to_onnx("model.npz")


# -- the documentation's examples run -----------------------------------------------------------

def test_docs_examples_run(tmp_path, monkeypatch):
    require("torch")
    with open(DOCS, encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, DOCS, "exec"), {"__name__": "__docs__"})


@pytest.mark.parametrize("bidirectional", [False, True])
def test_classic_gru_exports_with_linear_before_reset_0(bidirectional):
    """elman.GRU(reset_after=False) is ONNX's default GRU (linear_before_reset=0)."""
    rng = np.random.default_rng(3)
    layer = elman.GRU(3, 5, num_layers=2, bidirectional=bidirectional, reset_after=False, seed=1)
    proto = to_onnx(layer, lengths=True)
    gru_nodes = [n for n in proto.graph.node if n.op_type == "GRU"]
    assert gru_nodes and all(a.i == 0 for n in gru_nodes for a in n.attribute
                             if a.name == "linear_before_reset")
    x = rng.standard_normal((6, 4, 3)).astype(np.float32)
    lengths = np.array([6, 2, 5, 1])
    ours, h_n = layer(x, lengths=lengths)
    theirs = session(proto).run(None, {"input": x, "lengths": lengths})
    assert_close(ours, theirs[0], "output")
    assert_close(h_n, theirs[1], "h_n")
