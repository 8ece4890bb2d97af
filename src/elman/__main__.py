"""``python -m elman``: a short demonstration of the whole engine: next-day temperature.

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
from elman.data import StandardScaler, chronological_split, sliding_windows, synthetic_weather
from elman.losses import MSELoss
from elman.optim import Adam, clip_grad_norm_


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m elman", description="A short demonstration of "
                                 "the whole engine: predict tomorrow's temperature from the last "
                                 "days' weather with an LSTM, in an explicit training loop.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--epochs", type=int, default=30, help="passes over the training windows")
    ap.add_argument("--hidden", type=int, default=32, help="LSTM hidden size")
    ap.add_argument("--lookback", type=int, default=14, help="days of history per forecast")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for name in ("epochs", "hidden", "lookback", "batch_size"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be a positive integer, got "
                     f"{getattr(args, name)}")
    if not 0 < args.lr < float("inf"):
        ap.error(f"--lr must be a positive number, got {args.lr}")
    if args.seed < 0:
        ap.error(f"--seed must be a non-negative integer, got {args.seed}")

    rng = np.random.default_rng(args.seed)
    data = synthetic_weather(4 * 365, seed=args.seed)
    # windows are time-major (T, N, F), the layout of elman's recurrent layers
    x, y, target_rows = sliding_windows(data, args.lookback, batch_first=False)
    splits = chronological_split(target_rows, len(data), (0.7, 0.15, 0.15))
    # Scaler from the rows before the first validation target only: held-out days must not
    # shape the inputs' statistics (the tutorials normalise the test set with its own).
    scaler = StandardScaler().fit(data[:int(0.7 * len(data))])
    x = scaler.transform(x).astype(np.float32)
    y = scaler.transform(y, columns=[0]).astype(np.float32)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = [(x[:, m], y[m]) for m in splits]
    std = scaler.scale

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
