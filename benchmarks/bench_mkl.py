#!/usr/bin/env python
"""MKL's packed per-step GEMM and the row blocks, on or off: an A/B/C.

With the ``mkl`` wheel installed (``elman[mkl]``) the compiled loops can pack ``W_hh`` once per
pass where a loop's GEMM runs on one thread, and a unidirectional layer runs its batch as two
row blocks at once, each on one thread (``elman.fast._mkl``, ``elman.timeloop.split_rows``):
with its GEMMs packed where MKL is on; where it is off, on OpenBLAS's GEMM on a CPU where MKL
is off by default (not an Intel one, ``elman.fast._mkl.DEFAULT_ON``), and not at all on an
Intel one. This script measures three ways on the same layer in the same process, alternating
repeat by repeat, each repeat after a pause (``--settle``), for the stacks 1 (row blocks) and
1bi (each direction's loop on one thread) of ``bench_rnn.py``'s grid:

``mkl``      ``elman.fast._mkl.use(True)``: packed, and row blocks by the rule
``openblas`` ``use(False)``: OpenBLAS, row blocks where this CPU's rule gives them
``whole``    ``use(False)`` and no row blocks: the whole batch on two OpenBLAS threads

and the modes

``train``  forward + backward (parameter and input gradients) of ``elman.RNN/GRU/LSTM``
``infer``  ``eval()`` forward under ``elman.no_grad()``

``--cells`` also takes ``ln-rnn``, ``ln-gru`` and ``ln-lstm``: the same layers with
``layer_norm=True`` (not run unless named).

It reports medians (ms), the ratios openblas / mkl and whole / mkl (> 1: MKL's way faster),
and what the shipped rules do at that size on this CPU (``blocks``, ``packed`` or
``neither``; ``blocks, packed`` where both apply).

    python benchmarks/bench_mkl.py                   # the grid, 5 repeats
    python benchmarks/bench_mkl.py --configs 2,3 --cells lstm
    python benchmarks/bench_mkl.py --configs 1,2 --cells ln-gru,ln-lstm
    python benchmarks/bench_mkl.py --quick           # a smoke run
"""
from __future__ import annotations

import os
import contextlib
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_bidirectional import (CELLS, MODES, _runner, _time, parse_args,  # noqa: E402
                                 run_settings)
from bench_rnn import GATES, cpu_model, emit, reexec_without_slow_env  # noqa: E402

STACKS = ("1", "1bi")
LAYER_NORM = ("ln-rnn", "ln-gru", "ln-lstm")     # the cells with layer_norm=True


def _rule(np, elman, layer, x) -> str:
    """What the shipped rules do for this layer and input: one forward, watched."""
    from elman import timeloop
    from elman.fast import _mkl
    packs = []
    original = _mkl.pack

    def counting(*args, **kwargs):
        packs.append(1)
        return original(*args, **kwargs)
    _mkl.pack = counting
    try:
        layer.train()
        layer(x)
        blocks = any(isinstance(c, timeloop.RowSplit) for c in layer._cache["caches"])
        layer._release_cache()
    finally:
        _mkl.pack = original
    return ", ".join([name for name, done in (("blocks", blocks), ("packed", packs)) if done]) \
        or "neither"


@contextlib.contextmanager
def _way(name: str):
    """The settings of one way: ``mkl``, ``openblas`` or ``whole`` (see the docstring)."""
    from elman import timeloop
    from elman.fast import _mkl
    rows = timeloop.SPLIT_MIN_ROWS
    try:
        if name == "whole":
            timeloop.SPLIT_MIN_ROWS = 1 << 62
        with _mkl.use(name == "mkl"):
            yield
    finally:
        timeloop.SPLIT_MIN_ROWS = rows


WAYS = ("mkl", "openblas", "whole")


def main(argv=None) -> int:
    args = parse_args(argv, __doc__, cells=CELLS + LAYER_NORM, default=CELLS)
    env_note = reexec_without_slow_env(args)     # (they slow NumPy's OpenBLAS: bench_rnn.py)
    import numpy as np

    import elman
    from elman import threads
    from elman.fast import _cpu, _mkl

    if not _mkl.available:
        print("bench_mkl.py needs the mkl wheel: pip install -e '.[mkl]'", file=sys.stderr)
        return 2
    configs, repeats, min_time, settle = run_settings(args)
    classes = {"rnn": elman.RNN, "gru": elman.GRU, "lstm": elman.LSTM}
    rng = np.random.default_rng(0)
    rows = []
    started = time.perf_counter()
    for N, T, I, H in configs:
        for stack in STACKS:
            bi = stack == "1bi"
            for cell in args.cells:
                base = cell.removeprefix("ln-")
                layer = classes[base](I, H, bidirectional=bi, layer_norm=cell != base, seed=0)
                x = rng.standard_normal((T, N, I), dtype=np.float32)
                dout = rng.standard_normal((T, N, (2 if bi else 1) * H), dtype=np.float32)
                rule = _rule(np, elman, layer, x)
                mflop = 2.0 * T * N * GATES[base] * H * H / 1e6    # a direction's recurrence
                for mode in MODES:
                    run = _runner(np, elman, layer, mode, x, dout)
                    times = {name: [] for name in WAYS}
                    for _ in range(repeats):
                        for name in WAYS:
                            with _way(name):
                                times[name].append(_time(run, min_time, settle))
                    med = {k: statistics.median(v) for k, v in times.items()}
                    rows.append((cell, stack, mode, (N, T, I, H), mflop, med, rule))
                    print(f"{cell:4s} {stack:3s} {mode:5s} {(N, T, I, H)} {mflop:9.2f} MFLOP: "
                          + ", ".join(f"{k} {v * 1e3:9.3f} ms" for k, v in med.items())
                          + f"; openblas / mkl {med['openblas'] / med['mkl']:.2f}, whole / mkl "
                          f"{med['whole'] / med['mkl']:.2f} ({rule})", flush=True)
    lines = [f"elman {elman.__version__}, one layer, float32, {threads.get_num_threads()} "
             f"threads; {cpu_model()} ({_cpu.vendor() or 'vendor unknown'}, MKL on by "
             f"default: {_mkl.DEFAULT_ON}); MKL {os.path.basename(_mkl.library())}; medians of "
             f"{repeats} alternating repeats, each after a {settle:g} s pause; benchmark time "
             f"{time.perf_counter() - started:.0f} s", "",
             "Ratios > 1: MKL's way faster. `openblas`: MKL off, row blocks on OpenBLAS where "
             "this CPU's rule gives them; `whole`: MKL off, no row blocks.", "",
             "| cell | stack | mode | N, T, I, H | recurrent MFLOP per direction | MKL ms | "
             "OpenBLAS ms | whole ms | openblas / mkl | whole / mkl | shipped rule |",
             "|---|---|---|---|--:|--:|--:|--:|--:|--:|---|"]
    for cell, stack, mode, cfg, mflop, med, rule in rows:
        lines.append(f"| {cell} | {stack} | {mode} | {', '.join(map(str, cfg))} | {mflop:.1f} | "
                     f"{med['mkl'] * 1e3:.3f} | {med['openblas'] * 1e3:.3f} | "
                     f"{med['whole'] * 1e3:.3f} | {med['openblas'] / med['mkl']:.2f} | "
                     f"{med['whole'] / med['mkl']:.2f} | {rule} |")
    emit(lines, args.markdown, env_note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
