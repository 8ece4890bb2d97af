"""``python -m elman``: a short demonstration of the whole engine on seed 000's task.

Predict tomorrow's temperature from the last 14 days of (temperature, humidity, wind), with an
LSTM, a linear head, mean squared error and Adam, in an explicit training loop: forward, loss,
backward, clip, step. The data is a synthetic but realistic daily series (a seasonal cycle plus
autocorrelated weather noise; the real Seattle weather comes with ``elman forecast``). Scaling
statistics come from the training days only, and the model is compared with the persistence
forecast (tomorrow = today) on the same held-out days.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import elman
from elman.losses import MSELoss
from elman.optim import Adam, clip_grad_norm_


def synthetic_weather(days: int, rng: np.random.Generator) -> np.ndarray:
    """(days, 3) temperature (degC), relative humidity (%), wind (m/s)."""
    t = np.arange(days)
    season = np.sin(2 * np.pi * (t - 105) / 365.25)
    anomaly = np.zeros(days)
    for d in range(1, days):              # AR(1) weather systems lasting a few days
        anomaly[d] = 0.75 * anomaly[d - 1] + rng.normal(0, 1.6)
    wind = np.abs(3 + 1.5 * rng.standard_normal(days) - 0.3 * anomaly)
    temp = 12 + 8 * season + anomaly - 0.25 * (wind - 3)
    humidity = np.clip(70 - 12 * season - 2.5 * anomaly + rng.normal(0, 4, days), 20, 100)
    return np.stack([temp, humidity, wind], axis=1)


def windows(series: np.ndarray, lookback: int):
    """x (T=lookback, N, F) of consecutive days and y (N, 1): the next day's temperature."""
    n = len(series) - lookback
    idx = np.arange(lookback)[:, None] + np.arange(n)[None, :]
    return series[idx], series[lookback:, :1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m elman", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--epochs", type=int, default=30, help="passes over the training windows")
    ap.add_argument("--hidden", type=int, default=32, help="LSTM hidden size")
    ap.add_argument("--lookback", type=int, default=14, help="days of history per forecast")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    data = synthetic_weather(4 * 365, rng)
    n_train, n_val = int(0.7 * len(data)), int(0.15 * len(data))
    # Scaler from the training days only: the held-out days must not leak into it.
    mean, std = data[:n_train].mean(axis=0), data[:n_train].std(axis=0)
    scaled = ((data - mean) / std).astype(np.float32)
    x, y = windows(scaled, args.lookback)
    target_day = np.arange(args.lookback, len(data))       # index of the day each y predicts
    split = [target_day < n_train, (target_day >= n_train) & (target_day < n_train + n_val),
             target_day >= n_train + n_val]
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = [(x[:, m], y[m]) for m in split]

    lstm = elman.LSTM(3, args.hidden, seed=args.seed)
    head = elman.Linear(args.hidden, 1, seed=args.seed)
    params = lstm.parameters() + head.parameters()
    optimizer = Adam(params, lr=args.lr)
    loss_fn = MSELoss()

    def predict(xb):
        out, (h_n, _) = lstm(xb)
        return head(h_n[-1])                               # many-to-one: the last state

    def rmse_degrees(xb, yb):
        return float(np.sqrt(np.mean((predict(xb) - yb) ** 2))) * std[0]

    print(f"elman {elman.__version__}: next-day temperature from {args.lookback} days of "
          f"(temperature, humidity, wind); synthetic data, {len(data)} days")
    print(f"windows: train {y_tr.shape[0]}, validation {y_va.shape[0]}, test {y_te.shape[0]}")
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(y_tr.shape[0])
        total = 0.0
        for i in range(0, len(order), args.batch_size):
            b = order[i:i + args.batch_size]
            optimizer.zero_grad()
            out, (h_n, _) = lstm(x_tr[:, b])                         # forward
            pred = head(h_n[-1])
            loss, dpred = loss_fn(pred, y_tr[b])                     # loss
            dh_last = head.backward(dpred)                           # backward
            dh_n = np.zeros_like(h_n)
            dh_n[-1] = dh_last
            lstm.backward(None, (dh_n, None))
            clip_grad_norm_(params, 1.0)                             # clip
            optimizer.step()                                         # step
            total += loss * len(b)
        if epoch == 1 or epoch % 5 == 0 or epoch == args.epochs:
            print(f"epoch {epoch:3d}  train MSE {total / len(order):.4f}  "
                  f"validation RMSE {rmse_degrees(x_va, y_va):.3f} degC")
    seconds = time.perf_counter() - start

    persistence = x_te[-1, :, :1]                    # tomorrow = today, in scaled units
    rmse_persist = float(np.sqrt(np.mean((persistence - y_te) ** 2))) * std[0]
    rmse_model = rmse_degrees(x_te, y_te)
    print(f"\ntest RMSE: LSTM {rmse_model:.3f} degC, persistence {rmse_persist:.3f} degC "
          f"({100 * (1 - rmse_model / rmse_persist):+.1f} % better); trained in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
