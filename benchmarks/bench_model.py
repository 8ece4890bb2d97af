#!/usr/bin/env python
"""A whole model's training step, not a layer's: recurrent layer + dense head, elman vs torch.

``bench_rnn.py`` times a recurrent layer on its own. In a model the layer runs between other
work, and that work can cost it time: a dense head's GEMMs run on two threads, and OpenBLAS's
worker thread then spins for about 0.1 s waiting for more, on a core that the layer's row
blocks or directions (elman's own two threads) need next. elman's dense layer and the
recurrent layers' whole-sequence GEMMs therefore run on one thread pool at a time
(``elman.threads.matmul``). This script measures the model both ways, and torch beside it:

``elman``             ``elman.LSTM/GRU/RNN`` -> ``elman.Dense(O)`` on every step, MSE, Adam
``elman, products on OpenBLAS``  the same, with the head's products and the layer's
                      whole-sequence ones as plain NumPy ``a @ b`` on OpenBLAS's two threads
                      (as before ``threads.matmul``)
``torch``             ``torch.nn.LSTM/GRU/RNN`` -> ``nn.Linear(O)``, MSE, Adam

One training step each (zero_grad, forward, loss, backward, Adam step), float32, 2 threads,
the three alternating repeat by repeat, each repeat after a pause (``--settle``); medians.

    python benchmarks/bench_model.py                       # 3 cells x 3 sizes, 5 repeats
    python benchmarks/bench_model.py --cells lstm --configs 2 --min-time 0.3
    python benchmarks/bench_model.py --quick               # a smoke run
"""
from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_bidirectional import _time, parse_args, run_settings  # noqa: E402
from bench_rnn import cpu_model, emit, reexec_without_slow_env  # noqa: E402

# the head has OUT units on every step
OUT = 64
SIDES = ("elman", "elman, products on OpenBLAS", "torch")
# bench_bidirectional.py's sizes (N, T, I, H) at H = 128-512 unless told: 1, 2, 3
DEFAULT_CONFIGS = "1,2,3"


def _steps(np, torch, elman, cell, N, T, I, H):
    """{side: one training step} for one model, the same weights on every side."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, N, I), dtype=np.float32)
    y = rng.standard_normal((T, N, OUT), dtype=np.float32)
    rnn = {"rnn": elman.RNN, "gru": elman.GRU, "lstm": elman.LSTM}[cell](I, H, seed=0)
    dense = elman.Dense(H, OUT, seed=1)
    opt = elman.Adam(list(rnn.parameters()) + list(dense.parameters()), lr=1e-3)
    loss = elman.MSELoss()

    def elman_step():                  # time-major, as torch's: no layout swaps on either side
        opt.zero_grad()
        out, _ = rnn(x)
        _, grad = loss(dense(out), y)
        rnn.backward(dense.backward(grad), None, input_grad=False)
        opt.step()

    def numpy_matmul(a, b, out=None, accumulate=False):   # (threads.matmul's contract)
        if accumulate:
            out += np.matmul(a, b)
            return out
        return np.matmul(a, b, out=out)

    def elman_step_on_blas_pool():
        plain = elman.threads.matmul
        # NumPy's a @ b for the head and the layer's whole-sequence products: OpenBLAS's pool
        elman.threads.matmul = numpy_matmul
        try:
            elman_step()
        finally:
            elman.threads.matmul = plain

    trnn, head = elman.to_torch(rnn), elman.to_torch(dense)          # the same weights
    params = list(trnn.parameters()) + list(head.parameters())
    topt = torch.optim.Adam(params, lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def torch_step():
        topt.zero_grad()
        out, _ = trnn(xt)
        torch.nn.functional.mse_loss(head(out), yt).backward()
        topt.step()
    return dict(zip(SIDES, (elman_step, elman_step_on_blas_pool, torch_step)))


def main(argv=None) -> int:
    args = parse_args(argv, __doc__, configs=DEFAULT_CONFIGS)
    env_note = reexec_without_slow_env(args)
    import numpy as np
    import torch

    import elman
    threads = 2
    torch.set_num_threads(threads)
    elman.set_num_threads(threads)
    configs, repeats, min_time, settle = run_settings(args)
    rows = []
    started = time.perf_counter()
    for N, T, I, H in configs:
        for cell in args.cells:
            steps = _steps(np, torch, elman, cell, N, T, I, H)
            for step in steps.values():               # warm-up: compilation, allocations
                step()
            times = {side: [] for side in steps}
            for _ in range(repeats):
                for side, step in steps.items():
                    times[side].append(_time(step, min_time, settle))
            med = {side: statistics.median(v) * 1e3 for side, v in times.items()}
            rows.append((cell, (N, T, I, H), med))
            print(f"{cell:4s} {(N, T, I, H)}: " + ", ".join(
                f"{side} {ms:.2f} ms" for side, ms in med.items()), flush=True)
    lines = [f"elman {elman.__version__} vs torch {torch.__version__}, float32, {threads} "
             f"threads; {cpu_model()}; a recurrent layer -> Dense({OUT}) on every step, MSE, "
             f"Adam: ms per training step, medians of {repeats} alternating repeats, each "
             f"after a {settle:g} s pause; benchmark time "
             f"{time.perf_counter() - started:.0f} s", "",
             "| cell | N, T, I, H | elman | elman, products on OpenBLAS | torch | torch / elman | "
             "products on OpenBLAS / elman |", "|---|---|--:|--:|--:|--:|--:|"]
    for cell, cfg, med in rows:
        e, b, t = (med[side] for side in SIDES)
        lines.append(f"| {cell} | {', '.join(map(str, cfg))} | {e:.2f} | {b:.2f} | {t:.2f} | "
                     f"{t / e:.2f} | {b / e:.2f} |")
    emit(lines, args.markdown, env_note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
