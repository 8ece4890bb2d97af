#!/usr/bin/env python
"""elman vs torch on a busy machine: training steps beside 0, 1 and 2 CPU-bound neighbours.

Users run elman beside other work. This script starts the neighbours itself (processes that
spin on a core: ``while True: pass``), and for each count times a training step (forward and
backward of one recurrent layer, float32) of every case in three frameworks, each in a worker
process of its own that lives for the whole run:

``elman``        elman's default thread policy (:mod:`elman.threads`: adaptive, every CPU);
``elman-fixed``  elman with ``set_num_threads(cpus, adaptive=False)``, the old behaviour: every
                 large-enough GEMM on every CPU whatever else runs (for reference);
``torch``        ``torch.nn`` with its default threads (one per CPU).

The workers take turns, repeat by repeat (elman, elman-fixed, torch, elman, ...), so a slow
phase of the machine hits all of them; each repeat runs as many steps as needed to last
``--min-time`` seconds and the tables report medians. Reported: milliseconds per step, each
framework's slowdown against its own idle time, and torch's time over elman's (> 1: elman ahead).

    python benchmarks/bench_load.py                 # the grid (about 10 minutes on 2 cores)
    python benchmarks/bench_load.py --quick         # one tiny case, 2 repeats
    python benchmarks/bench_load.py --markdown benchmarks/results/load.md --json load.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time

# (cell, N, T, I, H): batch, steps, input size, hidden size
CASES = [("lstm", 32, 50, 16, 64), ("gru", 32, 50, 16, 64),
         ("lstm", 64, 100, 32, 128), ("gru", 64, 100, 32, 128),
         ("lstm", 64, 100, 128, 256), ("gru", 64, 100, 128, 256),
         ("lstm", 128, 100, 256, 512)]
QUICK_CASES = [("lstm", 4, 10, 8, 16)]
FRAMEWORKS = ("elman", "elman-fixed", "torch")
NEIGHBOURS = (0, 1, 2)
SLOW_ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


# -- the worker: one framework, every case, timed on request -----------------------------------

def worker(framework: str, cases: list, seed: int) -> None:
    """Read ``case_index iterations`` lines on stdin, answer with the seconds they took."""
    import numpy as np
    rng = np.random.default_rng(seed)
    steps = []
    if framework == "torch":
        import torch
        for cell, N, T, I, H in cases:
            layer = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](I, H)
            x = torch.from_numpy(rng.standard_normal((T, N, I)).astype(np.float32))
            dout = torch.from_numpy(rng.standard_normal((T, N, H)).astype(np.float32))

            def step(layer=layer, x=x, dout=dout):
                layer.zero_grad(set_to_none=False)
                out, _ = layer(x)
                out.backward(dout)
            steps.append(step)
    else:
        import elman
        if framework == "elman-fixed":
            elman.set_num_threads(elman.threads.available_cpus(), adaptive=False)
        for cell, N, T, I, H in cases:
            layer = {"lstm": elman.LSTM, "gru": elman.GRU}[cell](I, H, seed=seed)
            x = rng.standard_normal((T, N, I)).astype(np.float32)
            dout = rng.standard_normal((T, N, H)).astype(np.float32)

            def step(layer=layer, x=x, dout=dout):
                layer.zero_grad()
                layer(x)
                layer.backward(dout, None, input_grad=False)
            steps.append(step)
    for step in steps:               # warm-up (and the compiled kernels' first load)
        step()
    print("ready", flush=True)
    for line in sys.stdin:
        index, iterations = (int(v) for v in line.split())
        start = time.perf_counter()
        for _ in range(iterations):
            steps[index]()
        print(time.perf_counter() - start, flush=True)


class Worker:
    def __init__(self, framework: str, cases: list, seed: int, env: dict):
        self.name = framework
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", framework,
             "--cases-json", json.dumps(cases), "--seed", str(seed)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the {framework} worker did not start")

    def run(self, index: int, iterations: int) -> float:
        self.proc.stdin.write(f"{index} {iterations}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# -- neighbours --------------------------------------------------------------------------------

# spins on a core, and ends by itself when the benchmark that started it is gone
SPINNER = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    pass\n"


def start_neighbours(count: int) -> list:
    return [subprocess.Popen([sys.executable, "-c", SPINNER]) for _ in range(count)]


def stop_neighbours(procs: list) -> None:
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


# -- the run -----------------------------------------------------------------------------------

def measure(workers, cases, counts, repeats, min_time, settle, gap, log):
    """{(framework, case index, neighbours): [seconds per step of each repeat]}."""
    results = {}
    for count in counts:
        neighbours = start_neighbours(count)
        try:
            time.sleep(settle)           # let the neighbours (and elman's load reading) settle
            for i, case in enumerate(cases):
                # iterations per repeat: from one step of the slowest framework
                probe = max(w.run(i, 1) for w in workers)
                iterations = max(1, int(min_time / max(probe, 1e-6)))
                for _ in range(repeats):
                    for w in workers:
                        time.sleep(gap)  # the last one's idle threads stop spinning
                        results.setdefault((w.name, i, count), []).append(
                            w.run(i, iterations) / iterations)
                row = "  ".join(f"{w.name} {1e3 * statistics.median(results[(w.name, i, count)]):8.2f}"
                                for w in workers)
                log(f"neighbours {count}  {case}  ms/step: {row}")
        finally:
            stop_neighbours(neighbours)
    return results


def tables(results, cases, counts, frameworks):
    med = {k: statistics.median(v) for k, v in results.items()}
    head = ["cell", "N, T, I, H", "neighbours"] + [f"{f} ms" for f in frameworks] \
        + [f"{f} slowdown" for f in frameworks] + ["torch / elman"]
    rows = []
    for i, (cell, N, T, I, H) in enumerate(cases):
        for count in counts:
            ms = [1e3 * med[(f, i, count)] for f in frameworks]
            slow = [med[(f, i, count)] / med[(f, i, counts[0])] for f in frameworks]
            ratio = med[("torch", i, count)] / med[("elman", i, count)]
            rows.append([cell, f"{N}, {T}, {I}, {H}", str(count)]
                        + [f"{v:.2f}" for v in ms] + [f"{v:.2f}x" for v in slow]
                        + [f"{ratio:.2f}"])
    return head, rows


def markdown(head, rows) -> str:
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---" if j < 3 else "--:" for j in range(len(head))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def verdict(results, cases, counts):
    """The issue's targets: with the most neighbours, slowdown <= 3x and elman ahead of torch."""
    med = {k: statistics.median(v) for k, v in results.items()}
    busiest, idle = counts[-1], counts[0]
    lines = []
    for i, case in enumerate(cases):
        slow = med[("elman", i, busiest)] / med[("elman", i, idle)]
        ahead = min(med[("torch", i, c)] / med[("elman", i, c)] for c in counts)
        lines.append(f"{case}: slowdown with {busiest} neighbours {slow:.2f}x "
                     f"({'ok' if slow <= 3 else 'MISSED'} <= 3x); torch/elman at worst "
                     f"{ahead:.2f} ({'ok' if ahead >= 1 else 'MISSED'} >= 1)")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one tiny case, 2 repeats (smoke test)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per framework")
    p.add_argument("--min-time", type=float, default=0.3, help="seconds per repeat, at least")
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds between starting the neighbours and timing")
    p.add_argument("--gap", type=float, default=0.2,
                   help="seconds of pause before each turn (a worker's idle BLAS/OpenMP threads "
                        "spin for a while after its turn; that is not the neighbours' load)")
    p.add_argument("--neighbours", default="0,1,2", help="neighbour counts, the idle one first")
    p.add_argument("--cases", default="all",
                   help="comma-separated indices into the grid or 'all'; grid: "
                        + ", ".join(f"{i}={c}" for i, c in enumerate(CASES)))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--markdown", metavar="FILE", help="also write the table to FILE")
    p.add_argument("--json", metavar="FILE", help="write every repeat to FILE")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--cases-json", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, [tuple(c) for c in json.loads(args.cases_json)], args.seed)
        return 0
    cases = QUICK_CASES if args.quick else CASES
    if not args.quick and args.cases != "all":
        cases = [CASES[int(i)] for i in args.cases.split(",")]
    repeats = 2 if args.quick else args.repeats
    min_time = 0.02 if args.quick else args.min_time
    counts = [int(c) for c in args.neighbours.split(",")]
    # The workers run without the variables that slow NumPy's OpenBLAS here (see README).
    env = {k: v for k, v in os.environ.items() if k not in SLOW_ENV_VARS}
    removed = [k for k in SLOW_ENV_VARS if k in os.environ]

    # a kill (SIGTERM) still runs the `finally` blocks that stop the neighbours and workers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    import elman
    info = elman.threads.info()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python "
          f"{platform.python_version()}; elman's policy: {json.dumps(info)}"
          + (f"; workers run without {', '.join(removed)}" if removed else ""), flush=True)
    workers = [Worker(f, cases, args.seed, env) for f in FRAMEWORKS]
    try:
        results = measure(workers, cases, counts, repeats, min_time, args.settle, args.gap,
                          lambda s: print(s, flush=True))
    finally:
        for w in workers:
            w.close()
    head, rows = tables(results, cases, counts, FRAMEWORKS)
    text = markdown(head, rows)
    print()
    print(text)
    for line in verdict(results, cases, counts):
        print(line)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"policy": info, "cases": cases, "neighbours": counts,
                       "repeats": [{"framework": k[0], "case": cases[k[1]], "neighbours": k[2],
                                    "seconds_per_step": v} for k, v in results.items()]}, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
