"""elman.interop.torch: from_torch / to_torch are exact (weights bit for bit, outputs to float
precision) over randomised configurations, and refuse what they cannot express."""
import subprocess
import sys

import numpy as np
import pytest

import elman
from elman.interop import ConversionError
from elman.interop.torch import from_torch, to_torch

from _torch import require_torch

torch = require_torch()
nn = torch.nn

# torch's own notice that it runs projected LSTMs without oneDNN
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported")


# -- helpers ----------------------------------------------------------------------------------

def tol(dtype):
    return 1e-10 if np.dtype(dtype) == np.float64 else 1e-5


def assert_close(ours, theirs, dtype, what=""):
    """max |ours - theirs| <= tol * max(1, max |theirs|)."""
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != torch {theirs.shape}"
    scale = max(1.0, float(np.max(np.abs(theirs), initial=0.0)))
    err = float(np.max(np.abs(ours.astype(np.float64) - theirs), initial=0.0)) / scale
    assert err <= tol(dtype), f"{what}: relative error {err:.3g} > {tol(dtype)}"


def assert_same_state(elman_module, torch_module):
    """Same names, and every array equal bit for bit (and of the same dtype)."""
    ours = elman_module.state_dict()
    theirs = torch_module.state_dict()
    assert list(ours) == list(theirs)
    for k, v in theirs.items():
        t = v.detach().numpy()
        assert ours[k].dtype == t.dtype, (k, ours[k].dtype, t.dtype)
        assert np.array_equal(ours[k], t), k


def assert_same_torch(a, b):
    """Two torch modules: same type, repr, mode and state, bit for bit."""
    assert type(a) is type(b)
    assert repr(a) == repr(b)
    assert [m.training for m in a.modules()] == [m.training for m in b.modules()]
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def random_recurrent(rng, seed):
    """A torch.nn.RNN/GRU/LSTM with random arguments, dtype and mode."""
    kind = str(rng.choice(["RNN", "GRU", "LSTM"]))
    hidden = int(rng.integers(2, 7))
    layers = int(rng.integers(1, 4))
    kw = dict(num_layers=layers, bias=bool(rng.random() < 0.8),
              batch_first=bool(rng.random() < 0.5), bidirectional=bool(rng.random() < 0.5))
    if layers > 1 and rng.random() < 0.4:
        kw["dropout"] = float(rng.choice([0.1, 0.5]))
    if kind == "RNN":
        kw["nonlinearity"] = str(rng.choice(["tanh", "relu"]))
    if kind == "LSTM" and rng.random() < 0.5:
        kw["proj_size"] = int(rng.integers(1, hidden))
    dtype = torch.float64 if rng.random() < 0.5 else torch.float32
    torch.manual_seed(seed)
    module = getattr(nn, kind)(int(rng.integers(1, 6)), hidden, dtype=dtype, **kw)
    if kw.get("dropout") or rng.random() < 0.5:
        module.eval()              # parity needs dropout off; the mode itself is copied
    return module


def torch_run(module, x, hx, lengths):
    """torch's output and final state(s), packed when lengths are given."""
    tx = torch.from_numpy(x)
    with torch.no_grad():
        if lengths is None:
            return module(tx, hx)
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
        T = x.shape[1] if module.batch_first else x.shape[0]
        packed = pack_padded_sequence(tx, torch.tensor(lengths), batch_first=module.batch_first,
                                      enforce_sorted=False)
        out, state = module(packed, hx)
        out, _ = pad_packed_sequence(out, batch_first=module.batch_first, total_length=T)
        return out, state


# -- recurrent layers -------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(30))
def test_recurrent_layers_round_trip_and_parity(seed):
    rng = np.random.default_rng(seed)
    module = random_recurrent(rng, seed)
    layer = from_torch(module)
    kind = type(module).__name__
    assert type(layer) is getattr(elman, kind)
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout",
                 "bidirectional"):
        assert getattr(layer, attr) == getattr(module, attr), attr
    if kind == "LSTM":
        assert layer.proj_size == module.proj_size
    if kind == "RNN":
        assert layer.nonlinearity == module.nonlinearity
    assert layer.training == module.training
    assert_same_state(layer, module)

    # outputs: random input, initial states or none, lengths or none, sometimes unbatched
    dtype = layer.dtype
    T, N = int(rng.integers(1, 6)), int(rng.integers(1, 5))
    D = 2 if module.bidirectional else 1
    P = getattr(module, "proj_size", 0) or module.hidden_size
    LD = D * module.num_layers
    unbatched = rng.random() < 0.15
    if unbatched:
        x = rng.standard_normal((T, module.input_size))
        h_shape, c_shape = (LD, P), (LD, module.hidden_size)
    else:
        x = rng.standard_normal((N, T, module.input_size) if module.batch_first
                                else (T, N, module.input_size))
        h_shape, c_shape = (LD, N, P), (LD, N, module.hidden_size)
    x = x.astype(dtype)
    hx = thx = None
    if rng.random() < 0.6:
        h0 = rng.standard_normal(h_shape).astype(dtype)
        if kind == "LSTM":
            c0 = rng.standard_normal(c_shape).astype(dtype)
            hx, thx = (h0, c0), (torch.from_numpy(h0), torch.from_numpy(c0))
        else:
            hx, thx = h0, torch.from_numpy(h0)
    lengths = None
    if not unbatched and rng.random() < 0.5:
        lengths = rng.integers(1, T + 1, size=N)
    out, state = layer(x, hx, lengths=lengths)
    tout, tstate = torch_run(module, x, thx, lengths)
    context = f"seed {seed}: {module!r} {module.dtype if hasattr(module, 'dtype') else ''}"
    assert_close(out, tout, dtype, f"output, {context}")
    if kind == "LSTM":
        assert_close(state[0], tstate[0], dtype, f"h_n, {context}")
        assert_close(state[1], tstate[1], dtype, f"c_n, {context}")
    else:
        assert_close(state, tstate, dtype, f"h_n, {context}")

    # and back: the same torch module, bit for bit
    back = to_torch(layer)
    assert_same_torch(back, module)
    if kind == "RNN":
        assert back.nonlinearity == module.nonlinearity
    assert back.weight_ih_l0.dtype == module.weight_ih_l0.dtype


@pytest.mark.parametrize("seed", range(12))
def test_cells_round_trip_and_parity(seed):
    rng = np.random.default_rng(100 + seed)
    kind = ["RNNCell", "GRUCell", "LSTMCell"][seed % 3]
    kw = dict(bias=bool(rng.random() < 0.7))
    if kind == "RNNCell":
        kw["nonlinearity"] = str(rng.choice(["tanh", "relu"]))
    dtype = torch.float64 if seed % 2 else torch.float32
    torch.manual_seed(seed)
    module = getattr(nn, kind)(int(rng.integers(1, 6)), int(rng.integers(1, 7)), dtype=dtype,
                               **kw)
    cell = from_torch(module)
    assert type(cell) is getattr(elman, kind)
    assert_same_state(cell, module)
    N, H = int(rng.integers(1, 5)), module.hidden_size
    x = rng.standard_normal((N, module.input_size)).astype(cell.dtype)
    hx = thx = None
    if rng.random() < 0.7:
        if kind == "LSTMCell":
            hx = tuple(rng.standard_normal((N, H)).astype(cell.dtype) for _ in range(2))
            thx = tuple(torch.from_numpy(a) for a in hx)
        else:
            hx = rng.standard_normal((N, H)).astype(cell.dtype)
            thx = torch.from_numpy(hx)
    ours = cell(x, hx)
    with torch.no_grad():
        theirs = module(torch.from_numpy(x), thx)
    if kind == "LSTMCell":
        assert_close(ours[0], theirs[0], cell.dtype, "h")
        assert_close(ours[1], theirs[1], cell.dtype, "c")
    else:
        assert_close(ours, theirs, cell.dtype, "h")
    back = to_torch(cell)
    assert_same_torch(back, module)
    if kind == "RNNCell":
        assert back.nonlinearity == module.nonlinearity


# -- the other layers -------------------------------------------------------------------------

def _layer_cases():
    f64 = torch.float64
    return [
        ("linear", lambda: nn.Linear(5, 3), (4, 5)),
        ("linear-nobias-f64", lambda: nn.Linear(5, 3, bias=False, dtype=f64), (2, 7, 5)),
        ("embedding-padding", lambda: nn.Embedding(11, 4, padding_idx=2), "ids"),
        ("embedding-negative-padding-f64", lambda: nn.Embedding(11, 4, padding_idx=-1, dtype=f64),
         "ids"),
        ("embedding-sparse", lambda: nn.Embedding(11, 4, sparse=True), "ids"),
        ("dropout-eval", lambda: nn.Dropout(0.3).eval(), (3, 4)),
        ("tanh", lambda: nn.Tanh(), (3, 4)),
        ("sigmoid", lambda: nn.Sigmoid(), (3, 4)),
        ("relu", lambda: nn.ReLU(inplace=True), (3, 4)),
        ("softmax-dim0", lambda: nn.Softmax(dim=0), (3, 4)),
        ("log-softmax", lambda: nn.LogSoftmax(dim=-1), (2, 3, 4)),
        ("layernorm", lambda: nn.LayerNorm(4, eps=1e-3), (2, 3, 4)),
        ("layernorm-2d-nobias-f64", lambda: nn.LayerNorm((3, 4), bias=False, dtype=f64),
         (2, 3, 4)),
        ("layernorm-no-affine", lambda: nn.LayerNorm(4, elementwise_affine=False), (5, 4)),
    ]


@pytest.mark.parametrize("name,make,shape", _layer_cases(), ids=[c[0] for c in _layer_cases()])
def test_layers_round_trip_and_parity(name, make, shape):
    torch.manual_seed(0)
    module = make()
    with torch.no_grad():                      # a non-trivial LayerNorm affine part
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    layer = from_torch(module)
    assert type(layer).__name__ == type(module).__name__
    assert layer.training == module.training
    assert_same_state(layer, module)
    rng = np.random.default_rng(0)
    params = list(module.parameters())
    dtype = np.float64 if params and params[0].dtype == torch.float64 else np.float32
    x = rng.integers(0, 11, size=(3, 6)) if shape == "ids" else \
        rng.standard_normal(shape).astype(dtype)
    with torch.no_grad():
        theirs = module(torch.from_numpy(x.copy()))
    assert_close(layer(x), theirs, dtype, name)
    # flags about torch's memory and gradient formats, which elman has no use for, come back
    # at their defaults
    for flag in ("sparse", "inplace"):
        if hasattr(module, flag):
            setattr(module, flag, False)
    assert_same_torch(to_torch(layer), module)


def test_dropout_keeps_p_and_training_mode():
    layer = from_torch(nn.Dropout(0.25))
    assert isinstance(layer, elman.Dropout) and layer.p == 0.25 and layer.training
    back = to_torch(layer.eval())
    assert isinstance(back, nn.Dropout) and back.p == 0.25 and not back.training


def test_requires_grad_false_is_accepted():
    module = nn.Linear(3, 2)
    module.weight.requires_grad_(False)
    assert_same_state(from_torch(module), module)


def test_float16_needs_an_explicit_dtype():
    torch.manual_seed(0)
    module = nn.GRU(3, 4).to(torch.float16)
    with pytest.raises(ConversionError, match=r"torch.float16 parameters.*dtype=np.float32"):
        from_torch(module)
    layer = from_torch(module, dtype=np.float32)      # exact: float16 values are float32 values
    assert layer.dtype == np.float32
    for k, v in module.state_dict().items():
        assert np.array_equal(layer.state_dict()[k], v.float().numpy()), k
    bf = nn.Linear(3, 2).to(torch.bfloat16)
    with pytest.raises(ConversionError, match="bfloat16"):
        from_torch(bf)
    assert from_torch(bf, dtype=np.float64).dtype == np.float64


def test_explicit_dtype_casts_on_purpose():
    module = nn.LSTM(3, 4, dtype=torch.float64)
    layer = from_torch(module, dtype=np.float32)
    assert layer.dtype == np.float32
    assert layer.weight_ih_l0.data.dtype == np.float32


# -- Sequential -------------------------------------------------------------------------------

def test_torch_sequential_of_plain_layers():
    torch.manual_seed(1)
    module = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Dropout(0.2), nn.Linear(8, 8),
                           nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 3), nn.LogSoftmax(dim=-1))
    module.eval()
    model = from_torch(module)
    assert isinstance(model, elman.Sequential) and len(model) == len(module)
    assert not model.training and not model[2].training
    assert_same_state(model, module)
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    with torch.no_grad():
        assert_close(model(x), module(torch.from_numpy(x)), np.float32, "sequential")
    assert_same_torch(to_torch(model), module)


def test_torch_sequential_with_embedding_and_nesting():
    torch.manual_seed(2)
    module = nn.Sequential(nn.Embedding(20, 5, padding_idx=0),
                           nn.Sequential(nn.Linear(5, 4), nn.Sigmoid()), nn.Softmax(dim=1))
    model = from_torch(module)
    assert isinstance(model[1], elman.Sequential)
    assert_same_state(model, module)
    ids = np.random.default_rng(1).integers(0, 20, size=(3, 7))
    with torch.no_grad():
        assert_close(model(ids), module(torch.from_numpy(ids)), np.float32, "nested")
    assert_same_torch(to_torch(model), module)


def _elman_models():
    return {
        "embedding-lstm-last-sigmoid": lambda: elman.Sequential([
            elman.Embedding(30, 6, padding_idx=0, seed=0), elman.LSTM(6, 8, seed=1),
            elman.Last(), elman.Dense(8, 1, activation="sigmoid", seed=2)]),
        "bigru-batch-first-lastbi-softmax": lambda: elman.Sequential([
            elman.GRU(3, 5, num_layers=2, bidirectional=True, batch_first=True, seed=3),
            elman.LastBidirectional(5, batch_first=True),
            elman.Dense(10, 4, activation="softmax", seed=4)]),
        "rnn-meanpool-f64": lambda: elman.Sequential([
            elman.RNN(3, 6, nonlinearity="relu", dtype=np.float64, seed=5), elman.MeanPool(),
            elman.Dense(6, 2, dtype=np.float64, seed=6)]),
        "per-step-lstm-dense": lambda: elman.Sequential([
            elman.LSTM(3, 6, proj_size=2, seed=7), elman.Dropout(0.5),
            elman.Dense(2, 3, activation="tanh", seed=8)]).eval(),
    }


@pytest.mark.parametrize("name", list(_elman_models()))
def test_elman_sequential_to_torch_twin_and_back(name):
    model = _elman_models()[name]()
    twin = to_torch(model)
    from elman.interop.torch import TorchSequential
    assert type(twin) is TorchSequential
    rng = np.random.default_rng(3)
    first = model[0]
    dtype = model[-1].dtype
    if isinstance(first, elman.Embedding):
        x = rng.integers(1, first.num_embeddings, size=(5, 7))
    else:
        x = rng.standard_normal((5, 7, first.input_size)).astype(dtype)
    lengths = np.array([7, 2, 5, 1, 7])
    for kw in ({}, {"lengths": lengths}):
        with torch.no_grad():
            theirs = twin(torch.from_numpy(x), **{k: torch.from_numpy(v) for k, v in kw.items()})
        assert_close(model(x, **kw), theirs, dtype, f"{name} {sorted(kw)}")
    back = from_torch(twin)
    # A Dense with an activation comes back as Linear + activation; the weights keep their names
    assert list(back.state_dict()) == list(model.state_dict())
    for k, v in model.state_dict().items():
        assert np.array_equal(back.state_dict()[k], v), k
    assert_close(back(x, lengths=lengths), model(x, lengths=lengths), dtype, "back")
    assert_same_torch(to_torch(back), twin)


def test_linear_with_activation_becomes_torch_sequential():
    dense = elman.Dense(4, 3, activation="log_softmax", seed=0)
    twin = to_torch(dense)
    assert isinstance(twin, nn.Sequential) and isinstance(twin[1], nn.LogSoftmax)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    with torch.no_grad():
        assert_close(dense(x), twin(torch.from_numpy(x)), np.float32, "dense")


# -- refusals ---------------------------------------------------------------------------------

def test_refuses_modules_with_hooks():
    lstm = nn.LSTM(3, 4)
    handle = lstm.register_forward_hook(lambda m, i, o: None)
    with pytest.raises(ConversionError, match=r"the module \(torch.nn.LSTM\) has 1 forward hooks"):
        from_torch(lstm)
    handle.remove()
    from_torch(lstm)
    lin = nn.Linear(3, 3)
    lin.register_forward_pre_hook(lambda m, i: None)
    with pytest.raises(ConversionError, match=r"item '1' \(torch.nn.Linear\) has 1 forward pre"):
        from_torch(nn.Sequential(nn.Tanh(), lin))
    gru = nn.GRU(2, 2)
    gru.register_full_backward_hook(lambda m, gi, go: None)
    with pytest.raises(ConversionError, match="backward hooks"):
        from_torch(gru)


def test_refuses_global_hooks():
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: None)
    try:
        with pytest.raises(ConversionError, match="global module hooks"):
            from_torch(nn.Tanh())
    finally:
        handle.remove()


def test_refuses_parametrized_weights():
    lin = torch.nn.utils.parametrizations.weight_norm(nn.Linear(3, 2))
    with pytest.raises(ConversionError, match="parametrized weights.*remove_parametrizations"):
        from_torch(lin)


def test_refuses_unknown_types_and_lists_the_supported_ones():
    with pytest.raises(ConversionError) as e:
        from_torch(nn.Sequential(nn.Linear(3, 3), nn.Conv1d(3, 3, 1)))
    msg = str(e.value)
    assert "item '1' is a torch.nn.Conv1d" in msg
    for name in ("torch.nn.LSTM", "torch.nn.Embedding", "torch.nn.Linear", "torch.nn.Sequential"):
        assert name in msg

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(3, 4)

        def forward(self, x):
            return self.lstm(x)[0][-1]
    with pytest.raises(ConversionError, match=r"Net.*convert its layers one by one"):
        from_torch(Net())

    class MyLSTM(nn.LSTM):
        pass
    with pytest.raises(ConversionError, match="subclass of torch.nn.LSTM"):
        from_torch(MyLSTM(3, 4))
    with pytest.raises(TypeError, match="expects a torch.nn.Module"):
        from_torch(np.zeros(3))


def test_refuses_recurrent_layers_inside_torch_sequential():
    with pytest.raises(ConversionError, match=r"item '1' is a torch.nn.GRU.*tuple"):
        from_torch(nn.Sequential(nn.Embedding(5, 3), nn.GRU(3, 4), nn.Linear(4, 1)))


def test_refuses_what_elman_layers_do_not_compute():
    with pytest.raises(ConversionError, match="max_norm"):
        from_torch(nn.Embedding(5, 3, max_norm=1.0))
    with pytest.raises(ConversionError, match="scale_grad_by_freq"):
        from_torch(nn.Embedding(5, 3, scale_grad_by_freq=True))
    with pytest.raises(ConversionError, match=r"Softmax\) has dim=None"):
        from_torch(nn.Softmax())
    with pytest.raises(ConversionError, match="meta device"):
        from_torch(nn.Linear(3, 2, device="meta"))
    mixed = nn.Linear(3, 2)
    mixed.bias.data = mixed.bias.data.double()
    with pytest.raises(ConversionError, match="mixes parameter dtypes"):
        from_torch(mixed)
    with pytest.raises(ConversionError, match=r"elman.MeanPool, elman.Sequential"):
        to_torch(_Custom())


class _Custom(elman.Module):
    def forward(self, x):
        return x


def test_elman_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['onnx'] = None\n"
            "import elman, elman.interop, elman.interop.torch, elman.interop.onnx\n"
            "try:\n    elman.interop.from_torch(None)\n"
            "except ImportError as e:\n    print('ImportError:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "ImportError: elman.interop.torch needs PyTorch" in out


def test_classic_gru_has_no_torch_twin():
    with pytest.raises(ConversionError, match=r"reset_after=False\) has no torch.nn counterpart"):
        to_torch(elman.GRU(3, 4, reset_after=False))
    with pytest.raises(ConversionError, match=r"reset_after=False\) has no torch.nn counterpart"):
        to_torch(elman.GRUCell(3, 4, reset_after=False))
