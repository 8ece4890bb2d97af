#!/usr/bin/env python
"""MinGRU/MinLSTM (the parallel scan, and the same layers stepped sequentially) against elman's
own GRU/LSTM and torch's nn.GRU/nn.LSTM at the same hidden size, for T from 64 to 4096.

Each cell times one training step (zero_grad, forward, backward of ``sum(out * dout)``, Adam) of
one unidirectional layer, float32, ``--threads`` threads each, all in one process on the same CPU,
the models alternating repeat by repeat; the tables give medians (ms per step), the throughput
ratios, and the cost per time step (how the cost grows with T; ``growth`` is the exponent ``p`` of
``cost ~ T^p`` between the smallest and the largest T).

    python benchmarks/bench_minimal.py --markdown benchmarks/results/minimal.md
    python benchmarks/bench_minimal.py --quick          # a tiny smoke run
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_rnn import emit, reexec_without_slow_env, setup_threads  # noqa: E402

N, I, H = 16, 32, 64
STEPS = (64, 256, 1024, 4096)
QUICK = dict(N=2, I=3, H=4, steps=(8, 40))
# (T, N, H) for the scan alone, against the sequential loop: where each wins
SCAN_SHAPES = ((4096, 1, 16), (4096, 16, 64), (4096, 64, 256))
QUICK_SCAN_SHAPES = ((40, 1, 4),)
MODELS = ("MinGRU scan", "MinGRU sequential", "elman GRU", "torch GRU",
          "MinLSTM scan", "MinLSTM sequential", "elman LSTM", "torch LSTM")


def make_steps(N, T, I, H, seed=0):
    """{model name: a function running one training step}, all on the same data."""
    import numpy as np
    import torch

    import elman
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, N, I)).astype(np.float32)
    dout = rng.standard_normal((T, N, H)).astype(np.float32)
    xt, doutt = torch.from_numpy(x), torch.from_numpy(dout)

    def ours(layer):
        opt = elman.Adam(layer.parameters(), lr=1e-3)

        def step():
            opt.zero_grad()
            layer(x)
            layer.backward(dout, None, input_grad=False)
            opt.step()
        return step

    def theirs(layer):
        opt = torch.optim.Adam(layer.parameters(), lr=1e-3)

        def step():
            opt.zero_grad()
            out, _ = layer(xt)
            (out * doutt).sum().backward()
            opt.step()
        return step

    return {"MinGRU scan": ours(elman.MinGRU(I, H, seed=0)),
            "MinGRU sequential": ours(elman.MinGRU(I, H, seed=0, mode="sequential")),
            "elman GRU": ours(elman.GRU(I, H, seed=0)),
            "torch GRU": theirs(torch.nn.GRU(I, H)),
            "MinLSTM scan": ours(elman.MinLSTM(I, H, seed=0)),
            "MinLSTM sequential": ours(elman.MinLSTM(I, H, seed=0, mode="sequential")),
            "elman LSTM": ours(elman.LSTM(I, H, seed=0)),
            "torch LSTM": theirs(torch.nn.LSTM(I, H))}


def time_steps(steps: dict, repeats: int, min_time: float) -> dict:
    """{name: median seconds per call}, the functions alternating repeat by repeat."""
    for fn in steps.values():                      # warm-up (compilation, allocations)
        fn()
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            count, start = 0, time.perf_counter()
            while True:
                fn()
                count += 1
                elapsed = time.perf_counter() - start
                if elapsed >= min_time:
                    break
            times[name].append(elapsed / count)
    return {name: statistics.median(t) for name, t in times.items()}


def tables(results: dict, steps: tuple) -> list[str]:
    """Markdown: ms per step and ratios per T, then microseconds per time step and growth."""
    lines = ["| T | " + " | ".join(MODELS) + " |", "|--:|" + "--:|" * len(MODELS)]
    for T in steps:
        lines.append(f"| {T} | " + " | ".join(f"{results[T][m] * 1e3:.2f}" for m in MODELS)
                     + " |")
    pairs = [("MinGRU scan", "elman GRU"), ("MinGRU scan", "torch GRU"),
             ("MinGRU scan", "MinGRU sequential"), ("MinLSTM scan", "elman LSTM"),
             ("MinLSTM scan", "torch LSTM"), ("MinLSTM scan", "MinLSTM sequential")]
    lines += ["", "Training throughput of the scan layers relative to the others (x = times "
              "faster):", "", "| T | " + " | ".join(f"{a} vs {b}" for a, b in pairs) + " |",
              "|--:|" + "--:|" * len(pairs)]
    for T in steps:
        lines.append(f"| {T} | " + " | ".join(f"{results[T][b] / results[T][a]:.2f}x"
                                               for a, b in pairs) + " |")
    lo, hi = steps[0], steps[-1]
    lines += ["", "Cost per time step (microseconds), and growth p in cost ~ T^p from "
              f"T = {lo} to {hi}:", "", "| model | " + " | ".join(f"T={T}" for T in steps)
              + " | growth p |", "|---|" + "--:|" * (len(steps) + 1)]
    for m in MODELS:
        p = math.log(results[hi][m] / results[lo][m]) / math.log(hi / lo)
        lines.append(f"| {m} | " + " | ".join(f"{results[T][m] / T * 1e6:.1f}" for T in steps)
                     + f" | {p:.2f} |")
    return lines


def scan_table(shapes, repeats: int, min_time: float) -> list[str]:
    """Markdown: :func:`elman.scan.scan` against :func:`elman.scan.scan_sequential` alone
    (forward, float32), ms per call."""
    import numpy as np

    from elman.scan import scan, scan_sequential
    lines = ["| T, N, H | blocked scan | sequential loop | scan faster by |", "|---|--:|--:|--:|"]
    for shape in shapes:
        rng = np.random.default_rng(0)
        a = rng.uniform(0, 1, shape).astype(np.float32)
        b = rng.standard_normal(shape).astype(np.float32)
        h0 = np.zeros(shape[1:], np.float32)
        t = time_steps({"scan": lambda: scan(a, b, h0),
                        "loop": lambda: scan_sequential(a, b, h0)}, repeats, min_time)
        lines.append(f"| {', '.join(map(str, shape))} | {t['scan'] * 1e3:.2f} | "
                     f"{t['loop'] * 1e3:.2f} | {t['loop'] / t['scan']:.2f}x |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-time", type=float, default=0.1, help="seconds per timed repeat")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", default=f"{N},{I},{H}", metavar="N,I,H",
                    help="batch, input and hidden size (default %(default)s)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--scan-only", action="store_true",
                    help="only the table of the scan alone against the sequential loop")
    ap.add_argument("--markdown", metavar="FILE", help="also write the tables to FILE")
    ap.add_argument("--keep-env", action="store_true",
                    help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (else: re-run without them)")
    args = ap.parse_args(argv)
    env_note = reexec_without_slow_env(args)

    import numpy as np
    import torch

    import elman
    limiter = setup_threads(np, torch, elman, args.threads)   # noqa: F841 (kept alive)
    n, i, h = map(int, args.size.split(","))
    steps = STEPS
    if args.quick:
        n, i, h, steps = QUICK["N"], QUICK["I"], QUICK["H"], QUICK["steps"]
    repeats, min_time = (2, 0.01) if args.quick else (args.repeats, args.min_time)
    lines = []
    if not args.scan_only:
        results = {T: time_steps(make_steps(n, T, i, h), repeats, min_time) for T in steps}
        lines += [f"elman {elman.__version__} vs torch {torch.__version__}, float32, "
                  f"{args.threads} threads, one layer, N={n}, I={i}, H={h}; medians of "
                  f"{repeats} alternating repeats, ms per training step (forward, backward, "
                  f"Adam)" + (f"; {env_note}" if env_note else ""), ""]
        lines += tables(results, steps) + [""]
    lines += [f"The scan alone (forward, float32, {args.threads} threads), medians of {repeats} "
              f"alternating repeats, ms per call:", ""]
    lines += scan_table(QUICK_SCAN_SHAPES if args.quick else SCAN_SHAPES, repeats, min_time)
    emit(lines, args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
