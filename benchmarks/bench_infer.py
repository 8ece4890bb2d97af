#!/usr/bin/env python
"""Inference: elman against onnxruntime (the same weights, exported) and torch.nn, side by side.

A user who only runs a trained recurrent model forward would pick onnxruntime (its CPU kernels for
the ONNX RNN/GRU/LSTM operators), and elman exports to it: that is the anchor here, with torch
beside it. Per case the same weights run in

``elman``        the compiled fast path, ``eval()`` and under ``elman.no_grad()`` (nothing kept
                 for a backward);
``onnxruntime``  ``elman.to_onnx`` of that layer in an ``InferenceSession`` with its default
                 CPU provider, ``intra_op_num_threads`` = ``--threads``;
``torch``        ``torch.nn.RNN/GRU/LSTM`` under ``torch.inference_mode()``,
                 ``torch.set_num_threads(--threads)``;
``frozen``       with ``--frozen``, also ``elman.freeze`` of the elman layer (a copy whose
                 weights can never change, as an onnxruntime session's cannot), timed in the
                 same alternation, in columns of its own;

all in one process, float32, alternating repeat by repeat; medians. Two kinds of case:

``sequence``  one forward of a whole batch ``(N, T, I, H)``: the grid of ``bench_rnn.py`` (every
              stack: 1 or 2 layers, one or two directions), plus batch 1 at (1, 50, 32, 128)
              and (1, 50, 32, 256), a streaming user's whole sequence;
``step``      batch 1, one step per call with the state carried from call to call (the states
              are inputs and outputs of every call, in all three), T calls timed as one: a
              streaming user feeding one step at a time.

Before timing, each case checks that the three agree (outputs and final states).

    python benchmarks/bench_infer.py                      # everything, 5 repeats
    python benchmarks/bench_infer.py --cells lstm --stacks 1 --configs 1,6
    python benchmarks/bench_infer.py --quick              # a tiny smoke run
    python benchmarks/bench_infer.py --frozen --configs 4,6,7   # elman.freeze too
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_rnn import (CONFIGS as GRID, STACKS, SLOW_ENV_VARS, config_indices,  # noqa: E402
                       cpu_model)

# the grid of bench_rnn.py, then batch 1 at the size of the latency table, and at
# H = 256, where a batch of one's W_hh (an LSTM's: 1 MB) no longer fits one core's cache
CONFIGS = GRID + [(1, 50, 32, 128), (1, 50, 32, 256)]
STEP_CONFIG = (1, 50, 32, 128)   # (N, T calls, I, H) of the step-by-step cases
QUICK = [(2, 5, 3, 8)]
CELLS = ("rnn", "gru", "lstm")
FRAMEWORKS = ("elman", "onnxruntime", "torch")
FROZEN = "frozen"                # elman.freeze of elman's layer, with --frozen


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", default=",".join(CELLS))
    ap.add_argument("--stacks", default=",".join(STACKS))
    ap.add_argument("--configs", default="all",
                    help="comma-separated indices into " + ", ".join(
                        f"{i}={c}" for i, c in enumerate(CONFIGS)) + ', or "all"')
    ap.add_argument("--kinds", default="sequence,step", help="sequence, step or both")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=0.2, help="seconds per timed repeat")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--settle", type=float, default=0.15,
                    help="seconds of pause before each framework's timed repeat, so that the "
                         "threads of the one before have gone idle (as in bench_rnn.py)")
    ap.add_argument("--quick", action="store_true", help="one tiny config, 2 short repeats")
    ap.add_argument("--markdown", metavar="FILE", help="also write the tables to FILE")
    ap.add_argument("--json", metavar="FILE", help="also write every case (medians, all "
                    "repeats, agreement) and the environment to FILE")
    ap.add_argument("--frozen", action="store_true",
                    help="also time elman.freeze(layer), a copy whose weights can never change "
                         "(as an onnxruntime session's cannot), in columns of its own: a batch "
                         "of one then trusts its kept panels without comparing them, and a "
                         "short call keeps its compiled call's operands")
    ap.add_argument("--keep-env", action="store_true",
                    help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (else: re-run without them)")
    args = ap.parse_args(argv)
    args.cells = _subset(ap, "--cells", args.cells, CELLS)
    args.stacks = _subset(ap, "--stacks", args.stacks, tuple(STACKS))
    args.kinds = _subset(ap, "--kinds", args.kinds, ("sequence", "step"))
    args.configs = config_indices(ap, args.configs, len(CONFIGS))
    if args.repeats < 1 or args.threads < 1 or args.min_time <= 0 or args.settle < 0:
        ap.error("--repeats and --threads must be >= 1, --min-time > 0, --settle >= 0")
    return args


def _subset(ap, flag, text, allowed):
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        ap.error(f"{flag} takes a comma-separated subset of {','.join(allowed)}, got {text!r}")
    return items


# -- the three frameworks -------------------------------------------------------------------

def _models(np, torch, elman, cell, I, H, layers, bi):
    """(elman layer, torch module, onnxruntime session), one set of weights."""
    import onnxruntime as ort
    e_cls = {"rnn": elman.RNN, "gru": elman.GRU, "lstm": elman.LSTM}[cell]
    t_cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell]
    layer = e_cls(I, H, num_layers=layers, bidirectional=bi, seed=0).eval()
    module = t_cls(I, H, num_layers=layers, bidirectional=bi).eval()
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in layer.state_dict().items()})
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    proto = elman.to_onnx(layer, initial_states=True)
    session = ort.InferenceSession(proto.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return layer, module, session


def _sequence_runners(np, torch, elman, cell, layer, module, session, x, state):
    """One forward of the whole batch, from the given initial states, in each framework."""
    has_c = cell == "lstm"
    hx = state if has_c else state[0]
    xt = torch.from_numpy(x)
    hxt = tuple(torch.from_numpy(s) for s in state) if has_c else torch.from_numpy(state[0])
    feed = {"input": x, "h0": state[0]}
    if has_c:
        feed["c0"] = state[1]

    def run_elman():
        with elman.no_grad():
            out, h = layer(x, hx)
        return [out] + (list(h) if has_c else [h])

    def run_torch():
        with torch.inference_mode():
            out, h = module(xt, hxt)
        return [out.numpy()] + ([s.numpy() for s in h] if has_c else [h.numpy()])

    def run_ort():
        return session.run(None, feed)

    return {"elman": run_elman, "onnxruntime": run_ort, "torch": run_torch}


def _step_runners(np, torch, elman, cell, layer, module, session, x, state):
    """T calls of one step each, the state carried from call to call (batch 1)."""
    has_c = cell == "lstm"
    steps = [x[t:t + 1] for t in range(x.shape[0])]
    steps_t = [torch.from_numpy(s) for s in steps]

    def run_elman():
        hx = state if has_c else state[0]
        with elman.no_grad():
            for s in steps:
                out, hx = layer(s, hx)
        return [out] + (list(hx) if has_c else [hx])

    def run_torch():
        hx = tuple(torch.from_numpy(s) for s in state) if has_c else torch.from_numpy(state[0])
        with torch.inference_mode():
            for s in steps_t:
                out, hx = module(s, hx)
        return [out.numpy()] + ([s.numpy() for s in hx] if has_c else [hx.numpy()])

    def run_ort():
        h, c = state[0], (state[1] if has_c else None)
        for s in steps:
            feed = {"input": s, "h0": h}
            if has_c:
                feed["c0"] = c
            res = session.run(None, feed)
            h = res[1]
            c = res[2] if has_c else None
        return res

    return {"elman": run_elman, "onnxruntime": run_ort, "torch": run_torch}


def _agree(np, results):
    """Largest relative difference of elman's (frozen too) and onnxruntime's outputs from
    torch's."""
    worst = 0.0
    ref = results["torch"]
    for fw in [fw for fw in results if fw != "torch"]:
        for a, b in zip(results[fw], ref):
            scale = max(float(np.max(np.abs(b))), 1e-6)
            worst = max(worst, float(np.max(np.abs(np.asarray(a) - b))) / scale)
    return worst


def _time(runners, repeats, min_time, settle=0.0):
    """({framework: median seconds per call}, {framework: every repeat's seconds}); ``settle``
    seconds of pause before each timed repeat."""
    for fn in runners.values():             # warm-up: compilation, allocations, first calls
        fn()
        fn()
    iters = {}
    for fw, fn in runners.items():          # iterations per repeat: at least min_time long
        start, count = time.perf_counter(), 0
        while time.perf_counter() - start < min_time / 4:
            fn()
            count += 1
        iters[fw] = max(1, round(count * 4 * min_time / (time.perf_counter() - start) / 4))
    times = {fw: [] for fw in runners}
    for _ in range(repeats):
        for fw, fn in runners.items():      # alternating, repeat by repeat
            time.sleep(settle)
            start = time.perf_counter()
            for _ in range(iters[fw]):
                fn()
            times[fw].append((time.perf_counter() - start) / iters[fw])
    return {fw: statistics.median(t) for fw, t in times.items()}, times


THREADS = 2


def main(argv=None) -> int:
    global THREADS
    args = parse_args(argv)
    present = [k for k in SLOW_ENV_VARS if os.environ.get(k)]
    if present and not args.keep_env:
        # they slow NumPy's OpenBLAS on this machine (see bench_rnn.py): both go together
        env = {k: v for k, v in os.environ.items() if k not in SLOW_ENV_VARS}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    THREADS = args.threads

    import numpy as np
    import threadpoolctl
    import torch

    import elman
    torch.set_num_threads(args.threads)
    elman.set_num_threads(args.threads)
    import onnxruntime as ort
    warnings.simplefilter("ignore")          # onnx export notes, torch's user warnings
    blas = ", ".join(f"{i['internal_api']} {i.get('architecture') or ''}".strip()
                     for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas")
    configs = QUICK if args.quick else [CONFIGS[i] for i in args.configs]
    repeats = 2 if args.quick else args.repeats
    min_time = 0.02 if args.quick else args.min_time
    rows = {"sequence": [], "step": []}
    rng = np.random.default_rng(0)
    plan = []
    if "sequence" in args.kinds:
        plan += [("sequence", cell, cfg, stack) for cfg in configs for cell in args.cells
                 for stack in args.stacks]
    if "step" in args.kinds:
        step_cfg = QUICK[0] if args.quick else STEP_CONFIG
        plan += [("step", cell, step_cfg, "1") for cell in args.cells]
    started = time.perf_counter()
    records = []
    load_before = os.getloadavg()
    for kind, cell, (N, T, I, H), stack in plan:
        layers, bi = STACKS[stack]
        if kind == "step":
            N = 1
        D = 2 if bi else 1
        layer, module, session = _models(np, torch, elman, cell, I, H, layers, bi)
        x = rng.standard_normal((T, N, I), dtype=np.float32)
        state = [0.5 * rng.standard_normal((layers * D, N, H), dtype=np.float32)
                 for _ in range(2 if cell == "lstm" else 1)]
        make = _sequence_runners if kind == "sequence" else _step_runners
        runners = make(np, torch, elman, cell, layer, module, session, x, state)
        if args.frozen:          # (the same runner on the frozen copy: its elman entry)
            runners[FROZEN] = make(np, torch, elman, cell, elman.freeze(layer), module,
                                   session, x, state)["elman"]
        worst = _agree(np, {fw: fn() for fw, fn in runners.items()})
        med, every = _time(runners, repeats, min_time, 0.0 if args.quick else args.settle)
        rows[kind].append((cell, stack, (N, T, I, H), med, worst))
        records.append(dict(kind=kind, cell=cell, stack=stack, N=N, T=T, I=I, H=H,
                            median_s=med, repeats_s=every, max_rel_err=worst))
        print(f"{kind:8s} {cell:4s} {stack:3s} {(N, T, I, H)}: "
              + ", ".join(f"{fw} {med[fw] * 1e3:.3f} ms" for fw in runners)
              + f"  (agree to {worst:.1e})", flush=True)
    lines = _tables(rows, repeats, args, blas, ort, torch, elman,
                    time.perf_counter() - started, load_before, os.getloadavg())
    print("\n".join(lines))
    if args.json:
        environment = dict(cpu=cpu_model(), threads=args.threads, blas=blas,
                           elman_frozen=args.frozen,
                           elman=elman.__version__, onnxruntime=ort.__version__,
                           torch=torch.__version__, numpy=np.__version__,
                           loadavg_before=load_before, loadavg_after=os.getloadavg())
        with open(args.json, "w") as f:
            json.dump(dict(environment=environment, repeats=repeats, results=records), f,
                      indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


def _tables(rows, repeats, args, blas, ort, torch, elman, seconds, load_before, load_after):
    mode = "eval, no_grad; frozen: elman.freeze of it" if args.frozen else "eval, no_grad"
    lines = [f"elman {elman.__version__} (compiled path, {mode}) vs onnxruntime "
             f"{ort.__version__} (CPUExecutionProvider) vs torch {torch.__version__} "
             f"(inference_mode); float32, {args.threads} threads each; {cpu_model()}, NumPy's "
             f"BLAS: {blas}; 1-minute load average {load_before[0]:.2f} before, "
             f"{load_after[0]:.2f} after; medians of {repeats} alternating repeats, each after "
             f"a {0 if args.quick else args.settle:g} s pause; benchmark "
             f"time {seconds:.0f} s", ""]
    head = ("| cell | stack | N, T, I, H | elman ms | onnxruntime ms | torch ms | "
            "onnxruntime/elman | torch/elman |")
    rule = "|---|---|---|--:|--:|--:|--:|--:|"
    if args.frozen:
        head = head.replace(" onnxruntime ms |", " frozen ms | onnxruntime ms |") \
            + " onnxruntime/frozen |"
        rule += "--:|--:|"
    for kind, title in (("sequence", "One forward of a batch of sequences (ms per forward)"),
                        ("step", "One step per call, batch 1, the state carried (ms per T "
                                 "calls)")):
        if not rows[kind]:
            continue
        lines += [f"{title}; ratios > 1: elman faster.", "", head, rule]
        for cell, stack, cfg, med, _ in rows[kind]:
            e, o, t = med["elman"], med["onnxruntime"], med["torch"]
            f = med.get(FROZEN)
            frozen = "" if f is None else f"{f * 1e3:.3f} | "
            lines.append(f"| {cell} | {stack} | {', '.join(map(str, cfg))} | {e * 1e3:.3f} | "
                         f"{frozen}{o * 1e3:.3f} | {t * 1e3:.3f} | {_mark(o / e)} | "
                         f"{_mark(t / e)} |" + ("" if f is None else f" {_mark(o / f)} |"))
        lines.append("")
    worst = max((r[4] for k in rows for r in rows[k]), default=0.0)
    lines.append(f"Largest relative difference from torch's outputs and final states over all "
                 f"cases: {worst:.1e}. **Bold**: elman slower (ratio < 1).")
    return lines


def _mark(ratio):
    return f"{ratio:.2f}" if ratio >= 1 else f"**{ratio:.2f}**"


if __name__ == "__main__":
    raise SystemExit(main())
