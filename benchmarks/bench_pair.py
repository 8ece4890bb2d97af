#!/usr/bin/env python
"""Two threads on every step of one sequence (``elman.fast._pair``) against the path the same
call takes without them, side by side: the measurement behind ``elman.timeloop``'s
``PAIR_MIN_BYTES``/``PAIR_MAX_BYTES``/``PAIR_MEASURED_MIN_BYTES`` and the README's table
("Two threads on every step of one sequence").

Each row is one layer under ``elman.no_grad()``, batch 1, float32, timed in steady use: calls
back to back for ``--min-time`` seconds after ``--warm`` seconds untimed, the pair allowed
(its size rule lifted), refused (the rule raised out of reach) and as shipped (the rule as it
is: ``pair`` always, ``measure`` where the layer times both ways as its calls run and takes
the faster, ``no``) in turn, ``--repeats`` times, in one process; medians and their ratios.
The first two ways never run a bidirectional layer's directions at once on the two threads
(``timeloop.PAIR_DIRECTIONS_MAX_FLOPS`` set to 0); as shipped does, where that applies (the
rule column then says ``directions``).
Rows the rule itself refuses show what it refuses. (No PyTorch column: this is elman against elman; ``bench_infer.py`` has onnxruntime
and torch.)

    python benchmarks/bench_pair.py                        # the default rows, 11 repeats
    python benchmarks/bench_pair.py --rows lstm:256:2      # cell:H[:layers[:bi]]
    python benchmarks/bench_pair.py --quick                # a tiny smoke run
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_rnn import reexec_without_slow_env  # noqa: E402

ROWS = ("lstm:96", "gru:128", "lstm:128", "gru:160", "lstm:192", "lstm:256", "lstm:256:2",
        "gru:256", "gru:256:2", "lstm:320", "gru:384", "lstm:384", "gru:448", "rnn:384",
        "rnn:512", "rnn:512:2", "lstm:128:1:bi", "lstm:256:1:bi")
T, I = 50, 32


def _row(text: str):
    parts = text.split(":")
    if len(parts) < 2 or parts[0] not in ("rnn", "gru", "lstm"):
        raise ValueError(f"--rows: cell:H[:layers[:bi]] with cell rnn, gru or lstm, got {text!r}")
    return parts[0], int(parts[1]), int(parts[2]) if len(parts) > 2 else 1, \
        len(parts) > 3 and parts[3] == "bi"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--min-time", type=float, default=0.2)
    ap.add_argument("--warm", type=float, default=0.1)
    ap.add_argument("--quick", action="store_true", help="two small rows, 2 short repeats")
    ap.add_argument("--keep-env", action="store_true",
                    help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (else: re-run without them)")
    args = ap.parse_args(argv)
    note = reexec_without_slow_env(args)
    import numpy as np
    import elman
    from elman import fast, timeloop
    rows = [_row(r) for r in ("lstm:32", "gru:32:2") if args.quick] or \
        [_row(r) for r in args.rows.split(",")]
    repeats, min_time, warm = (2, 0.01, 0.01) if args.quick else \
        (args.repeats, args.min_time, args.warm)
    names = ("PAIR_MIN_BYTES", "PAIR_BIDIRECTIONAL_MIN_BYTES", "PAIR_MAX_BYTES",
             "PAIR_MEASURED_MIN_BYTES", "PAIR_DIRECTIONS_MAX_FLOPS")
    rule = {name: getattr(timeloop, name) for name in names}
    print(f"# {note}" if note else "# environment as given")
    untimed = "never" if rule["PAIR_MIN_BYTES"] > rule["PAIR_MAX_BYTES"] else \
        f"from {rule['PAIR_MIN_BYTES'] >> 10} KB"
    print(f"# pair supported here: {fast.pair_supported()}; rule: W_hh up to "
          f"{rule['PAIR_MAX_BYTES'] >> 10} KB, one direction both ways timed as the calls run "
          f"from {rule['PAIR_MEASURED_MIN_BYTES'] >> 10} KB (taken without timing: {untimed}), "
          f"bidirectional from {rule['PAIR_BIDIRECTIONAL_MIN_BYTES'] >> 10} KB; "
          f"T = {T}, I = {I}, batch 1, float32; medians of {repeats}")
    print("| layer | W_hh | rule | pair us | without us | as shipped us | without / pair | "
          "without / as shipped |")
    print("|---|--:|---|--:|--:|--:|--:|--:|")

    def timed(f, seconds):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            f()
            count += 1
        return (time.perf_counter() - start) / count * 1e6

    for cell, H, layers, bi in rows:
        model = getattr(elman, cell.upper())(I, H, num_layers=layers, bidirectional=bi).eval()
        x = np.random.default_rng(0).standard_normal((T, 1, I)).astype(np.float32)

        def call():
            with elman.no_grad():
                model(x)
        size = {"rnn": 1, "gru": 3, "lstm": 4}[cell] * H * H * 4
        kernels = fast.kernels_for(model.eq, model.dtype)
        taken = timeloop.pair_rule(model.eq, kernels, T, 1, H, model.dtype, 2 if bi else 1) if \
            fast.pair_supported() else None
        if bi and timeloop.pairs_directions(kernels, T, 1, model.eq.recurrent_gates * H, H):
            taken = "directions"
        ways = {"pair": [], "without": [], "as shipped": []}

        def allow(way):
            for name, value in rule.items():            # as shipped
                setattr(timeloop, name, value)
            if way != "as shipped":                     # always, or never
                lifted = way == "pair"
                timeloop.PAIR_MIN_BYTES = 0 if lifted else 1 << 62
                timeloop.PAIR_BIDIRECTIONAL_MIN_BYTES = 0 if lifted else 1 << 62
                timeloop.PAIR_MAX_BYTES = 1 << 62
                timeloop.PAIR_MEASURED_MIN_BYTES = 1 << 62
                timeloop.PAIR_DIRECTIONS_MAX_FLOPS = 0
        try:
            for way in ways:                            # compile every way, untimed
                allow(way)
                call()
            for _ in range(repeats):
                for way in ways:                        # alternating, repeat by repeat
                    allow(way)
                    timed(call, warm)
                    ways[way].append(timed(call, min_time))
        finally:
            allow("as shipped")
        pair, without, shipped = (statistics.median(t) for t in ways.values())
        name = f"{cell.upper()} H = {H}, {layers} layer{'s' if layers > 1 else ''}" + \
            (", bidirectional" if bi else "")
        print(f"| {name} | {size >> 10} KB | {taken or 'no'} | {pair:.1f} | {without:.1f} | "
              f"{shipped:.1f} | {without / pair:.2f}x | {without / shipped:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
