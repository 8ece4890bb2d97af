#!/usr/bin/env python
"""Two versions of elman, A/B: one model's training steps (or forwards) timed under each, in
alternating processes, and the ratio of each pair.

The README's and ``HISTORY.md``'s "old and new code in alternating processes" measurements,
as a command anyone can re-run. Each version is a git revision, checked out into a worktree
of its own (``git worktree add``, removed afterwards), or the working tree as it is now
(``.``). Each timing is a fresh Python process that imports elman from that version's
``src``: the same model, seed and input for both, ``--min-time`` seconds of back-to-back
steps after a warm-up, its median. Processes alternate A, B, B, A, A, B, ... (so a neighbour
that comes and goes, or a machine whose speed drifts, meets both alike), ``--pairs`` pairs;
the result is the median of the pairs' ratios A/B (> 1: B is faster). Before the pairs each
version runs once untimed, so that numba compiles its kernels into that version's own
cache outside the timings, and saves its first step's output and gradients: the script
prints how far B's are from A's (a change meant only for speed leaves them at rounding).

    python benchmarks/bench_ab.py HEAD~1 .                      # the last commit's change
    python benchmarks/bench_ab.py main . --cell GRU --size 64,100,128,256 --layers 2
    python benchmarks/bench_ab.py v1 v2 --option layer_norm=True --mode infer --pairs 11

Only what the two versions share can be timed: the model is built with keyword arguments
both accept (``--option`` takes Python literals: ``layer_norm=True``, ``zoneout=0.1``).
As the other benchmarks, it re-runs the timing processes without ``OPENBLAS_CORETYPE`` and
``OPENBLAS_L2_SIZE`` (``--keep-env`` keeps them). Time with no other work on the machine:
the ratio is what it says only when both sides meet the same conditions.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
SLOW_ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")   # as bench_rnn.py's
CELLS = ("RNN", "GRU", "LSTM")
MODES = ("train", "infer")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time one model under two versions of elman (git revisions, or '.' for the "
                    "working tree) in alternating processes; print each pair's ratio A/B and "
                    "their median (> 1: B is faster).")
    parser.add_argument("a", help="version A: a git revision, or '.' (the working tree)")
    parser.add_argument("b", nargs="?", default=".", help="version B (default: '.')")
    parser.add_argument("--cell", default="LSTM", choices=CELLS)
    parser.add_argument("--size", default="64,100,32,128", help="N,T,I,H (default: %(default)s)")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--bidirectional", action="store_true")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a further keyword argument of the layer, VALUE a Python literal "
                             "(repeatable), e.g. layer_norm=True")
    parser.add_argument("--mode", default="train", choices=MODES,
                        help="train: zero_grad, forward, backward (no input gradient), Adam "
                             "step; infer: a forward in eval() under elman.no_grad()")
    parser.add_argument("--path", default="fast", choices=("fast", "numpy"),
                        help="elman's compiled path or its NumPy reference path")
    parser.add_argument("--pairs", type=int, default=9)
    parser.add_argument("--min-time", type=float, default=0.5,
                        help="seconds of timed steps per process (after a warm-up)")
    parser.add_argument("--keep-env", action="store_true",
                        help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE in the timing processes")
    parser.add_argument("--json", metavar="FILE", help="also write every timing to FILE")
    parser.add_argument("--child", metavar="SRC", help=argparse.SUPPRESS)
    parser.add_argument("--record", metavar="NPZ", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        size = tuple(int(v) for v in args.size.split(","))
    except ValueError:
        size = ()
    if len(size) != 4 or min(size) < 1:
        parser.error(f"--size: expected four positive integers N,T,I,H, got {args.size!r}")
    args.size = size
    args.options = {}
    for item in args.option:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.isidentifier():
                raise ValueError
            args.options[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parser.error(f"--option: expected NAME=VALUE with VALUE a Python literal, got "
                         f"{item!r}")
    for name, value, low in (("--pairs", args.pairs, 1), ("--layers", args.layers, 1)):
        if value < low:
            parser.error(f"{name}: expected an integer >= {low}, got {value}")
    if not args.min_time > 0:
        parser.error(f"--min-time: expected seconds > 0, got {args.min_time}")
    return args


# -- one timing process ---------------------------------------------------------------------------

def child(args) -> dict:
    """Build the model from the version at ``args.child`` (its ``src``), time it, return the
    result (printed as JSON by :func:`main`)."""
    import time

    import numpy as np

    import elman
    where = pathlib.Path(elman.__file__).resolve()
    if pathlib.Path(args.child).resolve() not in where.parents:
        raise SystemExit(f"bench_ab: elman came from {where}, not from {args.child}")
    N, T, I, H = args.size
    layer = getattr(elman, args.cell)(I, H, num_layers=args.layers,
                                      bidirectional=args.bidirectional, seed=0, **args.options)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, N, I)).astype(np.float32)
    results = {}                                   # the first step's, for --record
    if args.mode == "train":
        layer.train()
        opt = elman.Adam(layer.parameters(), lr=1e-3)
        dout = None

        def step():
            nonlocal dout
            layer.zero_grad()
            out, _ = layer(x)
            if dout is None:
                dout = rng.standard_normal(out.shape).astype(out.dtype)
            layer.backward(dout, None, input_grad=False)
            if not results:
                results["output"] = out.copy()
                results.update((f"grad {name}", p.grad.copy())
                               for name, p in layer.named_parameters())
            opt.step()
    else:
        layer.eval()

        def step():
            with elman.no_grad():
                out, _ = layer(x)
            results.setdefault("output", out)
    times = []
    with elman.fast.use(args.path == "fast"):
        for _ in range(2):                         # warm-up: compiles, workspaces, caches
            step()
        if args.record:
            np.savez(args.record, **results)
        start = time.perf_counter()
        while not times or time.perf_counter() - start < args.min_time:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    return {"ms": 1e3 * statistics.median(times), "steps": len(times), "elman": str(where)}


# -- the driver -----------------------------------------------------------------------------------

@contextlib.contextmanager
def checkouts(revisions):
    """``{revision: directory}``: '.' the repository itself, any other revision a detached
    worktree in a temporary directory, removed on the way out."""
    root = pathlib.Path(tempfile.mkdtemp(prefix="elman-ab-"))
    made, where = [], {}
    try:
        for rev in dict.fromkeys(revisions):
            if rev == ".":
                where[rev] = REPO
                continue
            target = root / f"v{len(made)}"
            done = subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach",
                                   str(target), rev], capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"bench_ab: cannot check out revision {rev!r}: "
                                 f"{done.stderr.strip()}")
            made.append(target)
            where[rev] = target
        yield where
    finally:
        for target in made:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                            str(target)], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def child_argv(args, src: pathlib.Path) -> list:
    argv = [sys.executable, str(pathlib.Path(__file__).resolve()), ".", "--child", str(src),
            "--cell", args.cell, "--size", ",".join(map(str, args.size)),
            "--layers", str(args.layers), "--mode", args.mode, "--path", args.path,
            "--min-time", str(args.min_time)]
    if args.bidirectional:
        argv.append("--bidirectional")
    for item in args.option:
        argv += ["--option", item]
    return argv


def time_once(args, version: pathlib.Path, record: pathlib.Path | None = None) -> dict:
    """One timing process of ``version``; ``record``: where it saves its first step's output
    and gradients (:func:`agreement`)."""
    src = version / "src"
    env = dict(os.environ)
    if not args.keep_env:
        for name in SLOW_ENV_VARS:
            env.pop(name, None)
    env["PYTHONPATH"] = str(src) + os.pathsep + env.get("PYTHONPATH", "")
    argv = child_argv(args, src) + ([] if record is None else ["--record", str(record)])
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"bench_ab: the timing process for {version} failed:\n"
                         f"{done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def agreement(a: pathlib.Path, b: pathlib.Path) -> tuple:
    """``(largest difference, its array's name, names only one side has)``: the two versions'
    first steps (the output, and in training every parameter's gradient, from the same
    weights, input and output gradient) compared array by array, each difference relative to
    the largest magnitude of A's array (at least 1). A change meant only for speed should
    leave these at rounding (float32: 1e-6 or so); a difference of 1e-3 is a different
    computation."""
    import numpy as np

    with np.load(a, allow_pickle=False) as ra, np.load(b, allow_pickle=False) as rb:
        worst, where = 0.0, None
        for name in sorted(set(ra.files) & set(rb.files)):
            x, y = ra[name].astype(np.float64), rb[name].astype(np.float64)
            if x.shape != y.shape:
                return float("inf"), name, []
            scale = max(1.0, float(np.abs(x).max()) if x.size else 1.0)
            diff = float(np.abs(x - y).max()) / scale if x.size else 0.0
            if diff > worst or where is None:
                worst, where = diff, name
        return worst, where, sorted(set(ra.files) ^ set(rb.files))


def describe(args) -> str:
    N, T, I, H = args.size
    extra = "".join(f", {k}={v!r}" for k, v in args.options.items())
    stack = f"num_layers={args.layers}" + (", bidirectional=True" if args.bidirectional else "")
    return (f"{args.cell}({I}, {H}, {stack}{extra}), N={N}, T={T}, {args.mode}, "
            f"{args.path} path")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    print(f"# {describe(args)}: A = {args.a}, B = {args.b}; {args.pairs} pairs of alternating "
          f"processes, {args.min_time} s of steps each, medians")
    rows = []
    with checkouts([args.a, args.b]) as where, tempfile.TemporaryDirectory() as scratch:
        records = [pathlib.Path(scratch) / "a.npz", pathlib.Path(scratch) / "b.npz"]
        for version, record in zip((where[args.a], where[args.b]), records):
            time_once(args, version, record)       # compiled into its cache, untimed
        worst, name, one_sided = agreement(*records)
        print(f"# first step's results, B against A: largest difference {worst:.2g} (relative, "
              f"{name})" + (f"; only one side has {', '.join(one_sided)}" if one_sided else ""))
        for k in range(args.pairs):
            if k % 2:                              # B first in every other pair: a drift
                b = time_once(args, where[args.b])  # (a machine warming up, a neighbour
                a = time_once(args, where[args.a])  # leaving) favours neither side
            else:
                a = time_once(args, where[args.a])
                b = time_once(args, where[args.b])
            rows.append((a, b))
            print(f"pair {k + 1}: A {a['ms']:.3f} ms  B {b['ms']:.3f} ms  A/B "
                  f"{a['ms'] / b['ms']:.3f}", flush=True)
    ratios = [a["ms"] / b["ms"] for a, b in rows]
    ms_a = statistics.median(a["ms"] for a, _ in rows)
    ms_b = statistics.median(b["ms"] for _, b in rows)
    print(f"median: A {ms_a:.3f} ms, B {ms_b:.3f} ms a step; A/B {statistics.median(ratios):.3f} "
          f"(pairs {min(ratios):.3f}-{max(ratios):.3f}; > 1: B is faster)")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(
            {"case": describe(args), "a": args.a, "b": args.b, "pairs": rows,
             "ratios": ratios, "median_ratio": statistics.median(ratios),
             "max_rel_difference": worst, "differs_most": name}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
