#!/usr/bin/env python
"""The two directions of a bidirectional layer at once, or one after the other: an A/B.

``elman.timeloop.run_directions`` runs the two directions of a bidirectional layer on two
threads at once (NumPy's BLAS at one thread each) when a direction's recurrent GEMMs have at least
``timeloop.OVERLAP_MIN_FLOPS`` floating-point operations; below that it runs them in turn,
each with the BLAS threads its GEMMs earn. This script measures both on the same layer in the
same process, alternating repeat by repeat (``overlap``: the threshold set to 0; ``in turn``:
set to infinity), for one bidirectional layer of each cell on the grid of ``bench_rnn.py``:

``train``  forward + backward (parameter and input gradients) of ``elman.RNN/GRU/LSTM``
``infer``  ``eval()`` forward under ``elman.no_grad()``

It reports medians (ms) and their ratio (in turn / overlap: > 1 means running the directions at
once is faster), with a direction's recurrent GEMM work in MFLOP: the evidence for the
threshold.

    python benchmarks/bench_bidirectional.py                   # the grid, 5 repeats
    python benchmarks/bench_bidirectional.py --configs 0,1 --cells lstm --size 1,50,32,128
    python benchmarks/bench_bidirectional.py --quick           # a smoke run
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_rnn import (CONFIGS, GATES, config_indices, cpu_model, emit,  # noqa: E402
                       reexec_without_slow_env)

CELLS = ("rnn", "gru", "lstm")
MODES = ("train", "infer")
QUICK = [(8, 6, 4, 16)]


def parse_args(argv=None, doc: str = __doc__, cells: tuple = CELLS, default: tuple = CELLS,
               configs: str = "all"):
    """The command line of this script, ``bench_mkl.py`` and ``bench_model.py`` (``doc``: the
    script's own docstring, whose first paragraph is the ``--help`` description; ``cells``: the
    names ``--cells`` takes, ``default`` those it runs unless told; ``configs``: the default
    of ``--configs``)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--cells", default=",".join(default),
                    help=f"comma-separated, of {', '.join(cells)}")
    ap.add_argument("--configs", default=configs,
                    help="comma-separated indices into " + ", ".join(
                        f"{i}={c}" for i, c in enumerate(CONFIGS)) + ', or "all"')
    ap.add_argument("--size", action="append", default=[], metavar="N,T,I,H",
                    help="a further (N, T, I, H) to measure (may be repeated)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.2, help="seconds per timed repeat")
    ap.add_argument("--settle", type=float, default=0.15,
                    help="seconds of pause before each timed repeat (as in bench_rnn.py)")
    ap.add_argument("--quick", action="store_true", help="one tiny config, 2 short repeats")
    ap.add_argument("--markdown", metavar="FILE", help="also write the table to FILE")
    ap.add_argument("--keep-env", action="store_true",
                    help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (else: re-run without them)")
    args = ap.parse_args(argv)
    args.cells = [c for c in args.cells.split(",") if c]
    if any(c not in cells for c in args.cells):
        ap.error(f"--cells takes a comma-separated subset of {', '.join(cells)}")
    args.configs = config_indices(ap, args.configs, len(CONFIGS))
    try:
        args.size = [tuple(int(v) for v in text.split(",")) for text in args.size]
    except ValueError:
        args.size = [()]
    if any(len(size) != 4 or min(size) < 1 for size in args.size):
        ap.error("--size takes four positive integers N,T,I,H")
    if args.repeats < 1:
        ap.error(f"--repeats must be at least 1, got {args.repeats}")
    return args


def run_settings(args) -> tuple:
    """(sizes, repeats, seconds per repeat, pause before each) of a run, ``--quick`` applied."""
    if args.quick:
        return QUICK, 2, 0.02, 0.0
    return [CONFIGS[i] for i in args.configs] + args.size, args.repeats, args.min_time, \
        args.settle


def _runner(np, elman, layer, mode, x, dout):
    if mode == "infer":
        layer.eval()

        def run():
            with elman.no_grad():
                layer(x)
        return run
    layer.train()

    def run():
        layer.zero_grad()
        layer(x)
        layer.backward(dout)
    return run


def _time(fn, min_time, settle=0.0):
    """Seconds per call: as many calls as last ``min_time`` seconds, averaged, after one
    untimed call and a pause of ``settle`` seconds (the threads of what ran before, as
    OpenBLAS's worker, which spins about 0.1 s after a GEMM, go idle)."""
    fn()
    time.sleep(settle)
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / calls


def main(argv=None) -> int:
    args = parse_args(argv)
    env_note = reexec_without_slow_env(args)     # (they slow NumPy's OpenBLAS: bench_rnn.py)
    import numpy as np

    import elman
    from elman import threads, timeloop

    shipped = timeloop.OVERLAP_MIN_FLOPS
    configs, repeats, min_time, settle = run_settings(args)
    classes = {"rnn": elman.RNN, "gru": elman.GRU, "lstm": elman.LSTM}
    rng = np.random.default_rng(0)
    rows = []
    started = time.perf_counter()
    for N, T, I, H in configs:
        for cell in args.cells:
            layer = classes[cell](I, H, bidirectional=True, seed=0)
            x = rng.standard_normal((T, N, I), dtype=np.float32)
            dout = rng.standard_normal((T, N, 2 * H), dtype=np.float32)
            mflop = 2.0 * T * N * GATES[cell] * H * H / 1e6     # one direction's recurrent GEMMs
            for mode in MODES:
                run = _runner(np, elman, layer, mode, x, dout)
                times = {"overlap": [], "in turn": []}
                for _ in range(repeats):
                    for name, threshold in (("overlap", 0.0), ("in turn", float("inf"))):
                        timeloop.OVERLAP_MIN_FLOPS = threshold
                        times[name].append(_time(run, min_time, settle))
                timeloop.OVERLAP_MIN_FLOPS = shipped
                med = {k: statistics.median(v) for k, v in times.items()}
                ratio = med["in turn"] / med["overlap"]
                used = mflop * 1e6 >= shipped
                rows.append((cell, mode, (N, T, I, H), mflop, med, ratio, used))
                print(f"{cell:4s} {mode:5s} {(N, T, I, H)} {mflop:9.2f} MFLOP: "
                      f"overlap {med['overlap'] * 1e3:9.3f} ms, in turn "
                      f"{med['in turn'] * 1e3:9.3f} ms, ratio {ratio:.2f}"
                      f"{'' if used else ' (below the threshold: runs in turn)'}", flush=True)
    lines = [f"elman {elman.__version__}, one bidirectional layer, float32, "
             f"{threads.get_num_threads()} threads; {cpu_model()}; medians of {repeats} "
             f"alternating repeats, each after a {settle:g} s pause; threshold OVERLAP_MIN_FLOPS = {shipped:.3g}; benchmark "
             f"time {time.perf_counter() - started:.0f} s", "",
             "| cell | mode | N, T, I, H | recurrent MFLOP per direction | overlap ms | in turn ms | "
             "in turn / overlap | shipped rule |",
             "|---|---|---|--:|--:|--:|--:|---|"]
    for cell, mode, cfg, mflop, med, ratio, used in rows:
        lines.append(f"| {cell} | {mode} | {', '.join(map(str, cfg))} | {mflop:.1f} | "
                     f"{med['overlap'] * 1e3:.3f} | {med['in turn'] * 1e3:.3f} | {ratio:.2f} | "
                     f"{'overlap' if used else 'in turn'} |")
    emit(lines, args.markdown, env_note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
