#!/usr/bin/env python
"""elman's cell options against what a PyTorch user would write for them, side by side.

PyTorch has no recurrent (variational) dropout: its users write the time loop themselves, an
``nn.LSTMCell`` stepped in Python with the mask on ``h`` before each step (the "nn.LSTM + dropout
on h via a per-step loop" of issue #11). Each row times one training step (zero_grad, forward,
backward, Adam) of the same model in elman (compiled fast path) and in that PyTorch loop, on the
same CPU in the same process, alternating repeat by repeat; the table gives medians and the
ratio. float32, ``--threads`` threads each.

    python benchmarks/bench_cells.py                   # the rows below, 7 repeats
    python benchmarks/bench_cells.py --quick           # a tiny smoke run
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

# (N, T, I, H) as in bench_rnn.py
CONFIGS = [(64, 100, 32, 128), (64, 100, 128, 256)]
QUICK = [(4, 6, 3, 8)]
P = 0.25                     # recurrent dropout rate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--min-time", type=float, default=0.3, help="seconds per timed repeat")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--markdown", metavar="FILE", help="also write the table to FILE")
    ap.add_argument("--keep-env", action="store_true",
                    help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (else: re-run without them)")
    args = ap.parse_args(argv)
    if not args.keep_env and (os.environ.get("OPENBLAS_CORETYPE")
                              or os.environ.get("OPENBLAS_L2_SIZE")):
        # they slow NumPy's OpenBLAS on this machine; both go together (see bench_rnn.py)
        env = {k: v for k, v in os.environ.items()
               if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)

    import numpy as np
    import threadpoolctl
    import torch

    import elman
    torch.set_num_threads(args.threads)
    elman.set_num_threads(args.threads)
    blas = ", ".join(f"{i['internal_api']} {i.get('architecture') or ''}".strip()
                     for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")
    rows = []
    for N, T, I, H in (QUICK if args.quick else CONFIGS):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((T, N, I)).astype(np.float32)
        dout = rng.standard_normal((T, N, H)).astype(np.float32)
        ours = elman.LSTM(I, H, recurrent_dropout=P, seed=0)
        opt = elman.Adam(ours.parameters(), lr=1e-3)

        cell = torch.nn.LSTMCell(I, H)
        topt = torch.optim.Adam(cell.parameters(), lr=1e-3)
        xt, doutt = torch.from_numpy(x), torch.from_numpy(dout)

        def elman_step():
            opt.zero_grad()
            out, _ = ours(x)
            ours.backward(dout, None, input_grad=False)
            opt.step()

        def torch_step():
            topt.zero_grad()
            mask = torch.bernoulli(torch.full((N, H), 1 - P)) / (1 - P)   # one per sequence
            h = torch.zeros(N, H)
            c = torch.zeros(N, H)
            outs = []
            for t in range(T):
                h, c = cell(xt[t], (h * mask, c))
                outs.append(h)
            (torch.stack(outs) * doutt).sum().backward()
            topt.step()

        times = {"elman": [], "torch": []}
        for fn in (elman_step, torch_step):          # warm-up (compilation, allocations)
            fn()
        for _ in range(2 if args.quick else args.repeats):
            for name, fn in (("elman", elman_step), ("torch", torch_step)):
                count, start = 0, time.perf_counter()
                while True:
                    fn()
                    count += 1
                    elapsed = time.perf_counter() - start
                    if elapsed >= (0.01 if args.quick else args.min_time):
                        break
                times[name].append(elapsed / count)
        e, t = statistics.median(times["elman"]), statistics.median(times["torch"])
        rows.append((f"LSTM, recurrent_dropout={P}", (N, T, I, H), e * 1e3, t * 1e3, t / e))

    lines = [f"elman {elman.__version__} vs torch {torch.__version__}, float32, "
             f"{args.threads} threads, BLAS: {blas}; medians of "
             f"{2 if args.quick else args.repeats} alternating repeats, ms per training step",
             "", "| model | N, T, I, H | elman | torch loop | elman faster by |",
             "|---|---|--:|--:|--:|"]
    for name, cfg, e, t, ratio in rows:
        lines.append(f"| {name} | {', '.join(map(str, cfg))} | {e:.2f} | {t:.2f} | "
                     f"{ratio:.2f}x |")
    print("\n".join(lines))
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
