#!/usr/bin/env python
"""Packing the per-step GEMM's matrix (MKL's or the kernels' own) and the row blocks, on or off.

OpenBLAS repacks ``W_hh`` at every step's GEMM. The compiled loops can pack it once per pass
where a loop's GEMM runs on one thread, with MKL (the ``mkl`` wheel, ``elman[mkl]``,
``elman.fast._mkl``) or into their own panels for their own micro-kernel (a CPU with AVX-512,
``elman.fast._packed``), and a unidirectional gated layer runs its batch as two row blocks at
once, each on one thread (``elman.timeloop.split_rows``). This script measures four ways on the
same layer in the same process, alternating repeat by repeat, each repeat after a pause
(``--settle``), for the stacks 1 (row blocks) and 1bi (each direction's loop on one thread) of
``bench_rnn.py``'s grid:

``mkl``      MKL on (its packed GEMM and one-thread products), row blocks by the rule
``packed``   MKL off, the kernels' own packing on, row blocks by the rule (only where it can
             run: AVX-512)
``openblas`` both off: OpenBLAS at every step, row blocks where this CPU's rule gives them
``whole``    both off and no row blocks: the whole batch on two OpenBLAS threads

and the modes

``train``  forward + backward (parameter and input gradients) of ``elman.RNN/GRU/LSTM``
``infer``  ``eval()`` forward under ``elman.no_grad()``

``--cells`` also takes ``ln-rnn``, ``ln-gru`` and ``ln-lstm``: the same layers with
``layer_norm=True`` (not run unless named).

It reports medians (ms), each way's speed-up over ``whole`` (> 1: faster than the whole batch
on OpenBLAS), and what the shipped settings do at that size on this CPU (``blocks``,
``packed (mkl)``, ``packed (own)`` or ``neither``).

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
    """What the shipped settings do for this layer and input: one forward, watched."""
    from elman import timeloop
    from elman.fast import _mkl, _packed
    packs = {"mkl": [], "own": []}
    originals = _mkl.pack, _packed.pack

    def counting(module, name):
        def pack(*args, **kwargs):
            packs[name].append(1)
            return originals[module is _packed](*args, **kwargs)
        return pack
    _mkl.pack, _packed.pack = counting(_mkl, "mkl"), counting(_packed, "own")
    try:
        layer.train()
        layer(x)
        blocks = any(isinstance(c, timeloop.RowSplit) for c in layer._cache["caches"])
        layer._release_cache()
    finally:
        _mkl.pack, _packed.pack = originals
    done = [("blocks", blocks), ("packed (mkl)", packs["mkl"]), ("packed (own)", packs["own"])]
    return ", ".join(name for name, did in done if did) or "neither"


@contextlib.contextmanager
def _way(name: str):
    """The settings of one way (see the docstring)."""
    from elman import timeloop
    from elman.fast import _mkl, _packed
    rows = timeloop.SPLIT_MIN_ROWS
    try:
        if name == "whole":
            timeloop.SPLIT_MIN_ROWS = 1 << 62
        with _mkl.use(name == "mkl"), _packed.use(name == "packed"):
            yield
    finally:
        timeloop.SPLIT_MIN_ROWS = rows


def main(argv=None) -> int:
    args = parse_args(argv, __doc__, cells=CELLS + LAYER_NORM, default=CELLS)
    env_note = reexec_without_slow_env(args)     # (they slow NumPy's OpenBLAS: bench_rnn.py)
    import numpy as np

    import elman
    from elman import threads
    from elman.fast import _cpu, _mkl, _packed

    ways = [name for name, can in (("mkl", _mkl.available), ("packed", _packed.available),
                                   ("openblas", True), ("whole", True)) if can]
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
                    times = {name: [] for name in ways}
                    for _ in range(repeats):
                        for name in ways:
                            with _way(name):
                                times[name].append(_time(run, min_time, settle))
                    med = {k: statistics.median(v) for k, v in times.items()}
                    rows.append((cell, stack, mode, (N, T, I, H), mflop, med, rule))
                    print(f"{cell:4s} {stack:3s} {mode:5s} {(N, T, I, H)} {mflop:9.2f} MFLOP: "
                          + ", ".join(f"{k} {v * 1e3:9.3f} ms" for k, v in med.items())
                          + "; whole / " + ", ".join(f"{k} {med['whole'] / v:.2f}"
                                                     for k, v in med.items() if k != "whole")
                          + f" ({rule})", flush=True)
    faster = [name for name in ways if name != "whole"]
    lines = [f"elman {elman.__version__}, one layer, float32, {threads.get_num_threads()} "
             f"threads; {cpu_model()} ({_cpu.vendor() or 'vendor unknown'}, MKL on by "
             f"default: {_mkl.DEFAULT_ON}, the kernels' own packing: {_packed.available}); "
             f"MKL {os.path.basename(_mkl.library() or 'not installed')}; medians of "
             f"{repeats} alternating repeats, each after a {settle:g} s pause; benchmark time "
             f"{time.perf_counter() - started:.0f} s", "",
             "Speed-ups over `whole` (the whole batch on two OpenBLAS threads, nothing packed); "
             "> 1: faster. `mkl`: MKL's packing and products; `packed`: the kernels' own "
             "packing; `openblas`: neither, row blocks where this CPU's rule gives them.", "",
             "| cell | stack | mode | N, T, I, H | recurrent MFLOP per direction | "
             + " | ".join(f"{name} ms" for name in ways) + " | "
             + " | ".join(f"whole / {name}" for name in faster) + " | shipped settings |",
             "|---|---|---|---|--:|" + "--:|" * (len(ways) + len(faster)) + "---|"]
    for cell, stack, mode, cfg, mflop, med, rule in rows:
        lines.append(f"| {cell} | {stack} | {mode} | {', '.join(map(str, cfg))} | {mflop:.1f} | "
                     + " | ".join(f"{med[name] * 1e3:.3f}" for name in ways) + " | "
                     + " | ".join(f"{med['whole'] / med[name]:.2f}" for name in faster)
                     + f" | {rule} |")
    emit(lines, args.markdown, env_note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
