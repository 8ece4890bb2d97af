"""Seed 000, done right: tomorrow's temperature from the last 3 days of (temperature, humidity,
wind), with an Elman RNN.

The tutorial wrote the RNN, its BPTT and Adam by hand, trained one sample at a time, and
normalised the test set with the test set's own statistics. Here the same model is written twice
with elman:

1. with modules and an explicit loop in labelled phases: forward, loss, backward, clip, step;
2. with ``Sequential.fit``, Keras style.

Both use mini-batches (the whole batch goes through one GEMM per step), a chronological split,
and a scaler fit on the training days only; predictions are mapped back to degrees. The data is
synthetic here (``elman.data.synthetic_weather``); ``elman forecast`` runs on real weather.

Run: ``python examples/seed000_weather.py [--epochs 60]``
"""
from __future__ import annotations

import argparse

import numpy as np

import elman
from elman.data import StandardScaler, chronological_split, sliding_windows, synthetic_weather

LOOKBACK = 3        # the tutorial's three days
HIDDEN = 64         # and its 64 hidden units


def prepare(seed: int):
    """Windows (N, 3, 3) samples-first, targets (N, 1), split 70/15/15 by target day; inputs and
    target scaled with statistics of the training days only."""
    data = synthetic_weather(4 * 365, seed=seed)
    x, y, rows = sliding_windows(data, LOOKBACK)                  # y: next day's temperature
    train, val, test = chronological_split(rows, len(data), (0.7, 0.15, 0.15))
    scaler = StandardScaler().fit(data[:rows[train].max() + 1])   # training days only
    x = scaler.transform(x).astype(np.float32)
    y = scaler.transform(y, columns=[0]).astype(np.float32)
    return [(x[m], y[m]) for m in (train, val, test)], scaler


def rmse_degrees(pred, y, scaler) -> float:
    return float(np.sqrt(np.mean((scaler.inverse_transform(pred, columns=[0])
                                  - scaler.inverse_transform(y, columns=[0])) ** 2)))


def explicit_loop(splits, scaler, epochs: int, seed: int) -> float:
    """The tutorial's structure, with elman's modules: RNN -> last hidden state -> Linear."""
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = splits
    rnn = elman.RNN(3, HIDDEN, batch_first=True, seed=seed)          # h_t = tanh(W x + U h + b)
    head = elman.Linear(HIDDEN, 1, seed=seed)                         # y = W_hy h_T + b_y
    params = rnn.parameters() + head.parameters()
    optimizer = elman.Adam(params, lr=3e-3)
    loss_fn = elman.MSELoss()
    rng = np.random.default_rng(seed)

    def predict(x):
        _, h_n = rnn(x)
        return head(h_n[-1])

    for epoch in range(1, epochs + 1):
        for batch in np.array_split(rng.permutation(len(x_tr)), max(1, len(x_tr) // 32)):
            optimizer.zero_grad()
            pred = predict(x_tr[batch])                                # forward
            loss, dpred = loss_fn(pred, y_tr[batch])                   # loss
            dh_n = np.zeros((1, len(batch), HIDDEN), np.float32)       # backward: BPTT from
            dh_n[-1] = head.backward(dpred)                            # the last step only
            rnn.backward(None, dh_n, input_grad=False)
            elman.clip_grad_norm_(params, max_norm=1.0)                # clip
            optimizer.step()                                           # step
        if epoch % max(1, epochs // 5) == 0:
            print(f"  epoch {epoch:3d}: validation RMSE "
                  f"{rmse_degrees(predict(x_va), y_va, scaler):.3f} degC")
    return rmse_degrees(predict(x_te), y_te, scaler)


def keras_style(splits, scaler, epochs: int, seed: int) -> float:
    """The same model as a Sequential: Embedding-free SimpleRNN -> Last -> Dense."""
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = splits
    model = elman.Sequential([elman.RNN(3, HIDDEN, seed=seed), elman.Last(),
                              elman.Dense(HIDDEN, 1, seed=seed)], seed=seed)
    model.compile(optimizer=elman.Adam(model.parameters(), lr=3e-3), loss="mse",
                  metrics=["mae"], global_clipnorm=1.0)
    model.fit(x_tr, y_tr, epochs=epochs, batch_size=32, validation_data=(x_va, y_va),
              verbose=0)
    return rmse_degrees(model.predict(x_te), y_te, scaler)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    splits, scaler = prepare(args.seed)
    x_te, y_te = splits[2]
    persistence = rmse_degrees(x_te[:, -1, :1], y_te, scaler)        # tomorrow = today
    print("explicit loop (forward, loss, backward, clip, step):")
    loop = explicit_loop(splits, scaler, args.epochs, args.seed)
    print("Sequential.fit:")
    fit = keras_style(splits, scaler, args.epochs, args.seed)
    print(f"\ntest RMSE: explicit loop {loop:.3f} degC, Sequential.fit {fit:.3f} degC, "
          f"persistence {persistence:.3f} degC")
    return {"explicit_loop": loop, "sequential_fit": fit, "persistence": persistence}


if __name__ == "__main__":
    main()
