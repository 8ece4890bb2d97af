"""Whole training runs against PyTorch: the seed tutorials' models trained step by step in both
frameworks from the same weights on the same batches end at the same weights (float64).

Seed 003: a 2-layer GRU + Linear head, MSE, Adam(lr=0.003, weight_decay=1e-3).
Seed 004: LSTM(1, 64) + Linear(64, 1) predicting from the last step of (10, N, 1) sequences.
Seed 001: Embedding -> RNN -> last step -> Linear -> sigmoid, BCE, RMSprop, variable lengths.
"""
import numpy as np
import pytest

import elman
from _torch import require_torch

STEPS = 8


def _copy_into(elman_module, torch_module):
    elman_module.load_state_dict({k: v.detach().numpy() for k, v in
                                  torch_module.state_dict().items()})


def _compare(elman_modules, torch_modules):
    for em, tm in zip(elman_modules, torch_modules):
        for name, tp in tm.named_parameters():
            np.testing.assert_allclose(getattr(em, name).data, tp.detach().numpy(),
                                       rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])
def test_seed003_and_004_many_to_one_regression_matches_torch(kind):
    torch = require_torch()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    I, H, L = (3, 8, 2) if kind == "GRU" else (1, 16, 1)
    t_rnn = getattr(torch.nn, kind)(I, H, num_layers=L).double()
    t_head = torch.nn.Linear(H, 1).double()
    e_rnn = getattr(elman, kind)(I, H, num_layers=L, dtype=np.float64)
    e_head = elman.Linear(H, 1, dtype=np.float64)
    _copy_into(e_rnn, t_rnn)
    _copy_into(e_head, t_head)
    t_opt = torch.optim.Adam(list(t_rnn.parameters()) + list(t_head.parameters()), lr=0.003,
                             weight_decay=1e-3)
    e_opt = elman.Adam(e_rnn.parameters() + e_head.parameters(), lr=0.003, weight_decay=1e-3)
    mse = elman.MSELoss()
    for _ in range(STEPS):
        x = rng.standard_normal((10, 16, I))
        y = rng.standard_normal((16, 1))
        # torch
        t_opt.zero_grad()
        out, _ = t_rnn(torch.from_numpy(x))
        loss = torch.nn.functional.mse_loss(t_head(out[-1]), torch.from_numpy(y))
        loss.backward()
        t_opt.step()
        # elman
        e_opt.zero_grad()
        out, _ = e_rnn(x)
        value, dpred = mse(e_head(out[-1]), y)
        dout = np.zeros_like(out)
        dout[-1] = e_head.backward(dpred)
        e_rnn.backward(dout, None, input_grad=False)
        e_opt.step()
        assert value == pytest.approx(loss.item(), rel=1e-12)
    _compare([e_rnn, e_head], [t_rnn, t_head])


def test_seed001_sentiment_model_with_lengths_matches_torch():
    torch = require_torch()
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    V, E, H, T, N = 20, 6, 8, 7, 5
    t_emb = torch.nn.Embedding(V, E, padding_idx=0).double()
    t_rnn = torch.nn.RNN(E, H, batch_first=True).double()
    t_head = torch.nn.Linear(H, 1).double()
    e_emb = elman.Embedding(V, E, padding_idx=0, dtype=np.float64)
    e_rnn = elman.RNN(E, H, batch_first=True, dtype=np.float64)
    e_head = elman.Linear(H, 1, dtype=np.float64)
    for e, t in ((e_emb, t_emb), (e_rnn, t_rnn), (e_head, t_head)):
        _copy_into(e, t)
    model = elman.Sequential([e_emb, e_rnn, elman.Last(batch_first=True), e_head,
                              elman.Sigmoid()])
    model.compile(optimizer=elman.RMSprop(model.parameters(), lr=0.01), loss="binary_crossentropy")
    t_params = list(t_emb.parameters()) + list(t_rnn.parameters()) + list(t_head.parameters())
    t_opt = torch.optim.RMSprop(t_params, lr=0.01)
    for _ in range(STEPS):
        lengths = rng.integers(1, T + 1, size=N)
        tokens = rng.integers(1, V, size=(N, T))
        tokens[np.arange(T)[None, :] >= lengths[:, None]] = 0          # post-padding
        y = rng.integers(0, 2, size=(N, 1)).astype(np.float64)
        # torch: pack, run, pick each sequence's last valid step
        t_opt.zero_grad()
        packed = pack_padded_sequence(t_emb(torch.from_numpy(tokens)), torch.from_numpy(lengths),
                                      batch_first=True, enforce_sorted=False)
        out, _ = t_rnn(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
        last = out[torch.arange(N), torch.from_numpy(lengths) - 1]
        prob = torch.sigmoid(t_head(last))
        loss = torch.nn.functional.binary_cross_entropy(prob, torch.from_numpy(y))
        loss.backward()
        t_opt.step()
        # elman: one fit step on the same batch
        history = model.fit(tokens, y, epochs=1, batch_size=N, shuffle=False, verbose=0,
                            lengths=lengths)
        assert history.history["loss"][0] == pytest.approx(loss.item(), rel=1e-10)
    _compare([e_emb, e_rnn, e_head], [t_emb, t_rnn, t_head])
