"""The encoder-decoder: float64 finite-difference checks of the attention, the bridge and the
whole model's loss (padding included), a PyTorch re-implementation of the whole model (same
weights, teacher forcing, attention) for the loss and every gradient, masking, step-by-step
decoding against teacher forcing, beam search against exhaustive search, save/load."""
import itertools
import os

import numpy as np
import pytest

import elman
from _torch import require
from elman import Attention, Bridge, Seq2Seq, beam_search, greedy_decode
from elman.gradcheck import gradcheck
from elman.module import Module

TOL = 1e-6


def rng(seed=0):
    return np.random.default_rng(seed)


def assert_small(errors, expected=None, tol=TOL):
    if expected is not None:
        assert set(errors) == set(expected)
    worst = max(errors, key=errors.get)
    assert errors[worst] < tol, f"{worst}: {errors[worst]:.2e} ({errors})"


# -- attention ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["dot", "general", "additive"])
def test_attention_gradcheck_with_masking(kind):
    Hq, Hk = (4, 4) if kind == "dot" else (3, 5)
    att = Attention(Hq, Hk, kind=kind, attention_size=6 if kind == "additive" else None,
                    dtype=np.float64, seed=1)
    q = rng(1).standard_normal((3, 4, Hq))
    k = rng(2).standard_normal((5, 4, Hk))
    errors = gradcheck(att, (q, k), kwargs={"lengths": np.array([5, 2, 1, 3])})
    names = {"dot": [], "general": ["weight"],
             "additive": ["weight_query", "weight_key", "bias", "v"]}[kind]
    assert_small(errors, names + ["input[0]", "input[1]"])


@pytest.mark.parametrize("kind", ["dot", "general", "additive"])
def test_attention_padding_gets_no_weight_and_no_influence(kind):
    att = Attention(4, 4, kind=kind, dtype=np.float64, seed=0)
    q = rng(1).standard_normal((2, 3, 4))
    k = rng(2).standard_normal((6, 3, 4))
    lengths = np.array([6, 3, 1])
    c = att(q, k, lengths)
    w = att.weights
    assert np.all(w[1, :, 3:] == 0) and np.all(w[2, :, 1:] == 0)
    np.testing.assert_allclose(w.sum(axis=2), 1.0)
    k2 = k.copy()
    k2[3:, 1] = 1e3            # garbage in the padding
    k2[1:, 2] = -7.0
    np.testing.assert_array_equal(att(q, k2, lengths), c)
    # a single valid key: its value is the context, whatever the query
    np.testing.assert_allclose(c[:, 2], np.broadcast_to(k[0, 2], (2, 4)))


def test_attention_matches_torch_formulas():
    torch = require("torch")
    att = Attention(3, 5, kind="additive", attention_size=4, dtype=np.float64, seed=3)
    q, k = rng(1).standard_normal((2, 2, 3)), rng(2).standard_normal((4, 2, 5))
    lengths = np.array([4, 2])
    c = att(q, k, lengths)
    p = {n: torch.tensor(v) for n, v in att.state_dict().items()}
    Q, K = torch.tensor(q).transpose(0, 1), torch.tensor(k).transpose(0, 1)
    e = torch.tanh((Q @ p["weight_query"].T)[:, :, None] + (K @ p["weight_key"].T
                                                            + p["bias"])[:, None]) @ p["v"]
    mask = torch.arange(4)[None, :] >= torch.tensor(lengths)[:, None]
    a = torch.softmax(e.masked_fill(mask[:, None, :], float("-inf")), dim=-1)
    np.testing.assert_allclose(c, (a @ K).transpose(0, 1).numpy(), atol=1e-12)


def test_attention_refuses_bad_sizes():
    with pytest.raises(ValueError, match="query_size == key_size"):
        Attention(3, 4, kind="dot")
    with pytest.raises(ValueError, match="kind must be one of"):
        Attention(3, 4, kind="cosine")
    att = Attention(3, 4)
    with pytest.raises(ValueError, match=r"keys must have shape \(Tk, 2, 4\)"):
        att(np.ones((1, 2, 3)), np.ones((5, 2, 3)))


# -- bridge ------------------------------------------------------------------------------------

@pytest.mark.parametrize("enc_layers,dec_layers,bi,mode,cells", [
    (2, 2, True, "linear", (True, True)),
    (2, 1, True, "auto", (True, True)),        # top layer, projected (2*3 != 4)
    (1, 3, False, "linear", (False, True)),    # GRU -> LSTM: c0 = 0
    (2, 2, False, "linear", (True, False)),    # LSTM -> GRU: c_n unused
])
def test_bridge_gradcheck(enc_layers, dec_layers, bi, mode, cells):
    enc_c, dec_c = cells
    bridge = Bridge(enc_layers, dec_layers, 3, 4, bidirectional=bi, mode=mode,
                    encoder_cell_state=enc_c, decoder_cell_state=dec_c, dtype=np.float64,
                    seed=0)
    D = 2 if bi else 1
    h = rng(1).standard_normal((D * enc_layers, 2, 3))
    inputs = (h, rng(2).standard_normal(h.shape)) if enc_c else (h,)
    if dec_c:
        errors = gradcheck(bridge, inputs)
    else:                          # the output (h0, None): check h0 alone
        class H0(Module):
            def __init__(self):
                super().__init__()
                self.b = bridge

            def forward(self, *x):
                return self.b(*x)[0]

            def backward(self, dh0):
                return self.b.backward(dh0, None)
        errors = gradcheck(H0(), inputs)
    assert_small(errors)
    assert bridge.mode == "linear"


def test_bridge_copy_takes_each_layer_with_directions_side_by_side():
    bridge = Bridge(2, 2, 3, 6, bidirectional=True, dtype=np.float64)
    assert bridge.mode == "copy" and not bridge.parameters()
    h = rng(0).standard_normal((4, 2, 3))          # (layer*2 + direction, N, H)
    h0, c0 = bridge(h)
    assert c0 is None
    np.testing.assert_array_equal(h0[1], np.concatenate([h[2], h[3]], axis=1))
    dh, _ = bridge.backward(np.ones_like(h0))
    np.testing.assert_array_equal(dh, np.ones_like(h))
    with pytest.raises(ValueError, match="bridge='copy' needs"):
        Bridge(1, 1, 3, 5, mode="copy")


# -- the whole model ---------------------------------------------------------------------------

def batch(seed=0, N=3, S=5, T=4, Vs=9, Vt=8):
    """A padded batch: src (N, S), tgt_in = [BOS y..], tgt_out = [y.. EOS], lengths."""
    r = rng(seed)
    src_len = np.array([S, 2, 3])[:N]
    tgt_len = np.array([2, T, 3])[:N]
    src = np.zeros((N, S), np.int64)
    tgt_in = np.zeros((N, T), np.int64)
    tgt_out = np.zeros((N, T), np.int64)
    for n in range(N):
        src[n, :src_len[n]] = r.integers(3, Vs, src_len[n])
        y = r.integers(3, Vt, tgt_len[n] - 1)
        tgt_in[n, :tgt_len[n]] = np.r_[1, y]
        tgt_out[n, :tgt_len[n]] = np.r_[y, 2]
    return src, tgt_in, tgt_out, src_len, tgt_len


class LossOf(Module):
    """The model's loss on a fixed batch as a module with no inputs, for gradcheck."""

    def __init__(self, model, data):
        super().__init__()
        self.model, self.data = model, data

    def forward(self):
        src, tgt_in, tgt_out, sl, tl = self.data
        value, self.dlogits = self.model.loss(src, tgt_in, tgt_out, sl, tl)
        return np.array(value)

    def backward(self, w):
        self.model.backward(self.dlogits * w)
        return ()


CONFIGS = [
    dict(cell="lstm", attention="general", bidirectional=True, encoder_layers=2),
    dict(cell="gru", attention="additive", bidirectional=False, decoder_layers=2,
         decoder_hidden=4),
    dict(cell="rnn", attention="dot", bidirectional=True),
    dict(cell="lstm", attention="none", bidirectional=False, bridge="zeros"),
    dict(cell="gru", decoder_cell="lstm", attention="general", bidirectional=True),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_whole_model_loss_gradcheck(cfg):
    model = Seq2Seq(9, 8, embedding_dim=3, hidden_size=3, dtype=np.float64, seed=2, **cfg)
    # larger attention, bridge and encoder-recurrent weights: at the default initialisation of
    # such tiny sizes the attention is nearly uniform and some gradients are ~1e-5, where the
    # central differences' rounding noise (~1e-11) alone would be a relative 1e-6
    for name, p in model.named_parameters():
        if name.startswith(("attention", "encoder.weight_hh", "bridge")):
            p.data *= 4
    errors = gradcheck(LossOf(model, batch()), (), eps=1e-5)
    assert_small(errors, ["model." + n for n, _ in model.named_parameters()], tol=1e-5)


def test_padding_never_changes_a_sequence_result():
    model = Seq2Seq(9, 8, embedding_dim=3, hidden_size=4, dtype=np.float64, seed=0)
    src, tgt_in, tgt_out, sl, tl = batch()
    logits = model(src, tgt_in, sl, tl)
    for n in range(3):
        alone = model(src[n:n + 1, :sl[n]], tgt_in[n:n + 1, :tl[n]])
        np.testing.assert_allclose(logits[n, :tl[n]], alone[0], atol=1e-12)
    # the loss counts real target ids only: mean over them of -log p
    value, _ = model.loss(src, tgt_in, tgt_out, sl, tl)
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    picks = [-logp[n, t, tgt_out[n, t]] for n in range(3) for t in range(tl[n])]
    assert value == pytest.approx(np.mean(picks), rel=1e-12)


def _torch_model(torch, model):
    """The same architecture in PyTorch, holding the elman model's weights."""
    nn = torch.nn
    cfg = model.config()
    D = 2 if cfg["bidirectional"] else 1
    K, Hd = D * cfg["hidden_size"], cfg["decoder_hidden"]
    rnns = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
    tm = nn.Module()
    tm.source_embedding = nn.Embedding(cfg["source_vocab"], cfg["embedding_dim"], padding_idx=0)
    tm.target_embedding = nn.Embedding(cfg["target_vocab"], cfg["embedding_dim"], padding_idx=0)
    tm.encoder = rnns[cfg["cell"]](cfg["embedding_dim"], cfg["hidden_size"],
                                   cfg["encoder_layers"], bidirectional=D == 2)
    tm.decoder = rnns[cfg["decoder_cell"]](cfg["embedding_dim"], Hd, cfg["decoder_layers"])
    tm.bridge = nn.Module()
    if model.bridge.mode == "linear":
        tm.bridge.hidden = nn.Linear(K, Hd)
        if hasattr(model.bridge, "cell"):
            tm.bridge.cell = nn.Linear(K, Hd)
    if cfg["attention"] != "none":
        tm.attention = nn.Module()
        for name, p in model.attention.named_parameters():
            setattr(tm.attention, name, nn.Parameter(torch.zeros(p.shape, dtype=torch.float64)))
        tm.combine = nn.Linear(K + Hd, Hd)
    tm.output = nn.Linear(Hd, cfg["target_vocab"])
    tm.double()
    tm.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    return tm


def _torch_loss(torch, tm, model, src, tgt_in, tgt_out, sl, tl):
    """Forward of the PyTorch twin: packed sequences, bridge, masked attention, CE."""
    pack = torch.nn.utils.rnn.pack_padded_sequence
    unpack = torch.nn.utils.rnn.pad_packed_sequence
    cfg = model.config()
    S, T = src.shape[1], tgt_in.shape[1]
    D = 2 if cfg["bidirectional"] else 1
    emb = tm.source_embedding(torch.tensor(src).T)
    out, state = tm.encoder(pack(emb, torch.tensor(sl), enforce_sorted=False))
    memory, _ = unpack(out, total_length=S)
    h_n, c_n = state if cfg["cell"] == "lstm" else (state, None)

    def gather(s):              # decoder layer l <- encoder layer l (or the top one)
        Le, Ld = cfg["encoder_layers"], cfg["decoder_layers"]
        src_layers = range(Ld) if Le == Ld else [Le - 1] * Ld
        s = s.reshape(Le, D, *s.shape[1:])
        return torch.stack([torch.cat(list(s[k]), dim=-1) for k in src_layers])

    N, Hd = src.shape[0], cfg["decoder_hidden"]
    mode = model.bridge.mode
    if mode == "zeros":
        h0 = torch.zeros(cfg["decoder_layers"], N, Hd, dtype=torch.float64)
    elif mode == "copy":
        h0 = gather(h_n)
    else:
        h0 = torch.tanh(tm.bridge.hidden(gather(h_n)))
    if cfg["decoder_cell"] == "lstm":
        if c_n is None or mode == "zeros":
            c0 = torch.zeros_like(h0)
        else:
            c0 = gather(c_n) if mode == "copy" else tm.bridge.cell(gather(c_n))
        state0 = (h0, c0)
    else:
        state0 = h0
    emb = tm.target_embedding(torch.tensor(tgt_in).T)
    out, _ = tm.decoder(pack(emb, torch.tensor(tl), enforce_sorted=False), state0)
    dec, _ = unpack(out, total_length=T)
    if cfg["attention"] == "none":
        logits = tm.output(dec)
    else:
        Q, Km = dec.transpose(0, 1), memory.transpose(0, 1)
        p = dict(tm.attention.named_parameters())
        if cfg["attention"] == "dot":
            e = Q @ Km.transpose(1, 2)
        elif cfg["attention"] == "general":
            e = Q @ (Km @ p["weight"].T).transpose(1, 2)
        else:
            e = torch.tanh((Q @ p["weight_query"].T)[:, :, None]
                           + (Km @ p["weight_key"].T + p["bias"])[:, None]) @ p["v"]
        mask = torch.arange(S)[None, :] >= torch.tensor(sl)[:, None]
        a = torch.softmax(e.masked_fill(mask[:, None, :], float("-inf")), dim=-1)
        context = (a @ Km).transpose(0, 1)
        logits = tm.output(torch.tanh(tm.combine(torch.cat([context, dec], dim=2))))
    V = cfg["target_vocab"]
    return torch.nn.functional.cross_entropy(logits.transpose(0, 1).reshape(-1, V),
                                             torch.tensor(tgt_out).reshape(-1), ignore_index=0)


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_whole_model_matches_pytorch(cfg):
    torch = require("torch")
    model = Seq2Seq(11, 10, embedding_dim=5, hidden_size=6, dtype=np.float64, seed=4, **cfg)
    data = batch(3, S=6, T=5, Vs=11, Vt=10)
    tm = _torch_model(torch, model)
    expected = _torch_loss(torch, tm, model, *data)
    expected.backward()
    value, dlogits = model.loss(*data)
    model.backward(dlogits)
    assert value == pytest.approx(expected.item(), rel=1e-10)
    # (with bridge="zeros" and no attention, the encoder gets no gradient: None in PyTorch)
    grads = {k: torch.zeros_like(p) if p.grad is None else p.grad
             for k, p in tm.named_parameters()}
    names = [n for n, _ in model.named_parameters()]
    assert set(names) == set(grads)
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, grads[name].numpy(), atol=1e-10, rtol=1e-7,
                                   err_msg=name)


def test_float32_model_trains_a_copy_task():
    # a reversal task the model can only learn through attention and the bridge
    r = rng(0)
    model = Seq2Seq(8, 8, embedding_dim=8, hidden_size=16, cell="gru", seed=0)
    opt = elman.Adam(model.parameters(), lr=0.02)
    src = r.integers(3, 8, (64, 4))
    tgt_in = np.concatenate([np.ones((64, 1), np.int64), src[:, ::-1]], axis=1)
    tgt_out = np.concatenate([src[:, ::-1], np.full((64, 1), 2)], axis=1)
    first = None
    for _ in range(60):
        opt.zero_grad()
        value, d = model.loss(src, tgt_in, tgt_out)
        model.backward(d)
        opt.step()
        first = value if first is None else first
    assert value < 0.1 * first
    out = greedy_decode(model, src[:8], max_len=6)
    assert sum(s == list(x[::-1]) for s, x in zip(out.sequences, src[:8])) >= 6


# -- decoding ----------------------------------------------------------------------------------

def small_model(seed=0, **kw):
    return Seq2Seq(7, 5, embedding_dim=4, hidden_size=4, dtype=np.float64, seed=seed,
                   **kw).eval()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_step_by_step_decoding_equals_teacher_forcing(cell):
    model = small_model(cell=cell, attention="additive")
    src, tgt_in, _, sl, tl = batch(Vs=7, Vt=5)
    logits = model(src, tgt_in, sl, tl)
    memory, lengths, state = model.encode(src, sl)
    for t in range(tgt_in.shape[1]):
        logp, state, weights = model.decode_step(tgt_in[:, t], state, memory, lengths)
        z = logits[:, t] - logits[:, t].max(1, keepdims=True)
        expected = z - np.log(np.exp(z).sum(1, keepdims=True))
        valid = t < tl
        np.testing.assert_allclose(logp[valid], expected[valid], atol=1e-12)
        assert np.all(weights[1, 2:] == 0)


def _sequence_log_prob(model, src, ys):
    """log p(ys + [EOS] | src) by teacher forcing."""
    tgt_in = np.array([[model.bos_id] + ys])
    tgt_out = np.array([ys + [model.eos_id]])
    logits = model(src, tgt_in)[0]
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return float(logp[np.arange(len(ys) + 1), tgt_out[0]].sum())


@pytest.mark.parametrize("penalty", [0.0, 1.0])
def test_wide_beam_finds_the_exhaustive_best(penalty):
    model = small_model(seed=5)
    src = np.array([[3, 4, 5, 6], [6, 5, 0, 0]])
    max_len = 3                 # hypotheses: up to 2 ids then EOS, or 3 ids without EOS
    out = beam_search(model, src, beam_width=5 ** max_len, max_len=max_len,
                      length_penalty=penalty)
    ids = [i for i in range(5) if i not in (model.pad_id, model.bos_id, model.eos_id)]
    for n in range(2):
        best = -np.inf
        for k in range(max_len):
            for ys in itertools.product(ids, repeat=k):
                lp = _sequence_log_prob(model, src[n:n + 1, :np.count_nonzero(src[n])],
                                        list(ys))
                best = max(best, lp / (k + 1) ** penalty)
        assert out.scores[n] >= best - 1e-9
        if out.sequences[n] and len(out.sequences[n]) < max_len:   # ended with EOS: exact
            lp = _sequence_log_prob(model, src[n:n + 1, :np.count_nonzero(src[n])],
                                    out.sequences[n])
            assert out.log_prob[n] == pytest.approx(lp, abs=1e-9)


def test_decoding_never_outputs_padding_or_begin():
    model = small_model(seed=2)
    model.output.bias.data[[0, 1]] = 50.0          # the model's favourites, but not outputs
    model.output.bias.data[2] = -50.0              # and it never ends: cut at max_len
    out = beam_search(model, np.array([[3, 4, 5], [6, 0, 0]]), beam_width=3, max_len=5)
    assert all(i not in (0, 1) for seq in out.sequences for i in seq)
    assert all(len(seq) == 5 for seq in out.sequences)


def test_greedy_is_the_argmax_at_every_step():
    model = small_model(seed=1, cell="gru")
    src = np.array([[3, 4, 5], [6, 0, 0]])
    out = greedy_decode(model, src, max_len=6)
    for n in range(2):
        memory, lengths, state = model.encode(src[n:n + 1])
        token, ys = model.bos_id, []
        for _ in range(6):
            logp, state, _ = model.decode_step(np.array([token]), state, memory, lengths)
            token = int(np.argmax(logp[0, 2:])) + 2      # neither padding nor BOS
            if token == model.eos_id:
                break
            ys.append(token)
        assert out.sequences[n] == ys


def test_beam_refuses_bad_arguments():
    model = small_model()
    with pytest.raises(ValueError, match="beam_width"):
        beam_search(model, np.array([[3]]), beam_width=0)
    with pytest.raises(ValueError, match="length_penalty"):
        beam_search(model, np.array([[3]]), length_penalty=-1)


# -- save / load, errors -----------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    model = Seq2Seq(9, 8, embedding_dim=3, hidden_size=3, cell="lstm", attention="additive",
                    attention_size=5, encoder_layers=2, seed=0)
    model.epoch = 3
    path = os.path.join(tmp_path, "s2s.npz")
    elman.save(model, path)
    loaded = elman.load(path)
    src, tgt_in, *_ = batch()
    np.testing.assert_array_equal(loaded(src, tgt_in), model(src, tgt_in))
    assert loaded.config() == model.config() and loaded.epoch == 3


def test_constructor_and_call_errors_name_the_argument():
    with pytest.raises(ValueError, match="attention must be one of"):
        Seq2Seq(5, 5, attention="luong")
    with pytest.raises(ValueError, match="cell must be one of"):
        Seq2Seq(5, 5, cell="transformer")
    with pytest.raises(ValueError, match="pad_id, bos_id and eos_id must differ"):
        Seq2Seq(5, 5, bos_id=0)
    model = Seq2Seq(5, 5, embedding_dim=2, hidden_size=2)
    with pytest.raises(ValueError, match=r"src must hold ids in \[0, 4\]"):
        model(np.array([[7]]), np.array([[1]]))
    with pytest.raises(ValueError, match="lengths must be in"):
        model(np.array([[3, 4]]), np.array([[1]]), src_lengths=np.array([3]))
