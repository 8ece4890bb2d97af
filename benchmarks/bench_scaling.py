#!/usr/bin/env python
"""Data-parallel scaling on MPI: the three task models trained with ``fit`` on 1 and on
``--ranks`` ranks of this machine, the same global batches, float32.

For each model (the defaults of ``elman forecast``, ``elman classify`` and ``elman generate``,
on synthetic data of the same shapes: speed does not depend on the values) the script runs
``fit`` for ``--steps`` global batches, in a fresh job per run, alternating 1 rank and K ranks
``--repeats`` times, and reports the median training throughput (samples per second), the
speed-up, the parallel efficiency (speed-up / K), the bytes every rank all-reduces per step
(the gradients and two numbers, in the parameters' dtype) and what one such ``Allreduce``
costs here (median of 50, in a K-rank job).

    python benchmarks/bench_scaling.py                    # 1 vs 2 ranks, every model
    python benchmarks/bench_scaling.py --models generate --ranks 2 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

# name -> (batch size, what one sample is)
MODELS = {"forecast": (32, "14 days x 6 inputs -> LSTM(32) -> Last -> Dense(1), MSE"),
          "classify": (64, "50 token ids -> Embedding(10000, 64) -> GRU(64) -> Last -> "
                           "Dense(1, sigmoid), BCE"),
          "generate": (32, "64 characters -> Embedding(65, 32) -> LSTM(512) -> Linear(65) at "
                           "every step, cross-entropy")}
SLOW_ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def build(name: str, n_samples: int):
    """(model compiled as the task does, x, y) with ``n_samples`` synthetic samples."""
    import numpy as np
    import elman
    rng = np.random.default_rng(0)
    if name == "forecast":
        model = elman.Sequential([elman.LSTM(6, 32, seed=1), elman.Last(),
                                  elman.Dense(32, 1, seed=2)], seed=0)
        model.compile(elman.Adam(model.parameters(), lr=3e-3), "mse")
        x = rng.standard_normal((n_samples, 14, 6)).astype(np.float32)
        y = rng.standard_normal((n_samples, 1)).astype(np.float32)
    elif name == "classify":
        model = elman.Sequential([elman.Embedding(10_000, 64, seed=1), elman.GRU(64, 64, seed=2),
                                  elman.Last(), elman.Dense(64, 1, activation="sigmoid",
                                                            seed=3)], seed=0)
        model.compile(elman.Adam(model.parameters(), lr=3e-3), "binary_crossentropy")
        x = rng.integers(1, 10_000, size=(n_samples, 50))
        y = rng.integers(0, 2, size=(n_samples, 1)).astype(np.float32)
    else:
        model = elman.Sequential([elman.Embedding(65, 32, seed=1), elman.LSTM(32, 512, seed=2),
                                  elman.Linear(512, 65, seed=3)], seed=0)
        model.compile(elman.Adam(model.parameters(), lr=3e-3),
                      "sparse_categorical_crossentropy")
        x = rng.integers(0, 65, size=(n_samples, 64))
        y = rng.integers(0, 65, size=(n_samples, 64))
    return model, x, y


def worker(name: str, steps: int) -> None:
    """Run inside the MPI job (or alone): time ``steps`` global batches of ``fit``."""
    import elman
    comm = elman.distributed.world()
    batch = MODELS[name][0]
    model, x, y = build(name, batch * steps)
    distributed = "mpi" if comm.size > 1 else None
    model.fit(x[:2 * batch], y[:2 * batch], batch_size=batch, verbose=0,
              distributed=distributed)                           # warm-up (and compiling)
    comm.barrier()
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch, verbose=0, distributed=distributed)
    seconds = time.perf_counter() - start
    reducer = elman.distributed.GradientReducer(comm, model.optimizer.params)
    allreduce = []
    for _ in range(50):
        comm.barrier()
        t = time.perf_counter()
        comm.allreduce_(reducer.flat.buffer)
        allreduce.append(time.perf_counter() - t)
    if comm.is_root:
        print("RESULT " + json.dumps({
            "model": name, "ranks": comm.size, "seconds": seconds, "steps": steps,
            "samples_per_second": batch * steps / seconds,
            "parameters": int(sum(p.data.size for p in model.parameters())),
            "bytes_per_step": reducer.bytes_per_step,
            "allreduce_ms": 1e3 * statistics.median(allreduce) if comm.size > 1 else 0.0,
            "threads_per_rank": elman.get_num_threads()}), flush=True)


def run_job(name: str, ranks: int, steps: int, env: dict) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--steps", str(steps)]
    if ranks > 1:
        mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        cmd = [mpiexec if os.path.exists(mpiexec) else shutil.which("mpiexec"), "-n",
               str(ranks)] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
    line = next(l for l in out.stdout.splitlines() if l.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--ranks", type=int, default=2, help="ranks of the parallel runs")
    p.add_argument("--steps", type=int, default=30, help="global batches timed per run")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--markdown", metavar="FILE")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.steps)
        return 0
    env = {k: v for k, v in os.environ.items() if k not in SLOW_ENV_VARS}
    rows = []
    head = ["model", "batch", "parameters", "bytes all-reduced per step", "Allreduce ms",
            "1 rank samples/s", f"{args.ranks} ranks samples/s", "speed-up", "efficiency"]
    for name in args.models.split(","):
        one, many = [], []
        for _ in range(args.repeats):
            one.append(run_job(name, 1, args.steps, env))
            many.append(run_job(name, args.ranks, args.steps, env))
        r1 = statistics.median(r["samples_per_second"] for r in one)
        rk = statistics.median(r["samples_per_second"] for r in many)
        ms = statistics.median(r["allreduce_ms"] for r in many)
        rows.append([name, str(MODELS[name][0]), f"{one[0]['parameters']:,}",
                     f"{many[0]['bytes_per_step']:,}", f"{ms:.3f}", f"{r1:,.0f}", f"{rk:,.0f}",
                     f"{rk / r1:.2f}x", f"{rk / r1 / args.ranks:.0%}"])
        print(f"{name}: 1 rank {r1:,.0f}/s ({one[0]['threads_per_rank']} threads), "
              f"{args.ranks} ranks {rk:,.0f}/s ({many[0]['threads_per_rank']} thread(s) each); "
              f"Allreduce of {many[0]['bytes_per_step']:,} bytes {ms:.3f} ms", flush=True)
    table = "| " + " | ".join(head) + " |\n|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) \
        + "|\n" + "".join("| " + " | ".join(r) + " |\n" for r in rows)
    print()
    print(table)
    for name in args.models.split(","):
        print(f"- {name}: {MODELS[name][1]}")
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
