#!/usr/bin/env python
"""elman vs torch.nn: RNN, GRU and LSTM on the CPU, float32, same weights, same input, same process.

For every (cell, mode, config) the two frameworks are timed repeat by repeat in alternation
(elman, torch, elman, torch, ...) after a warm-up that also checks that both compute the same
thing; each repeat runs as many iterations as needed to last at least ``--min-time`` seconds
(calibrated once; a single iteration when one already takes that long) and the table reports the
median over repeats as sequences per second. See benchmarks/README.md.

    python benchmarks/bench_rnn.py                  # the full grid (3 cells x 2 modes x 6 configs)
    python benchmarks/bench_rnn.py --quick          # smoke test: one tiny config, 2 repeats
    python benchmarks/bench_rnn.py --configs 1 --cells lstm --repeats 3
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

# (N, T, I, H): batch size, sequence length, input size, hidden size
CONFIGS = [
    (32, 50, 16, 64),
    (64, 100, 32, 128),
    (64, 100, 128, 256),
    (128, 200, 256, 512),
    (1, 3, 3, 64),
    (32, 500, 32, 32),
]
QUICK_CONFIG = (4, 10, 8, 16)
CELLS = ("rnn", "gru", "lstm")
MODES = ("train", "infer")

# Environment variables that slow NumPy's OpenBLAS on the benchmark machine: if set, the script
# re-executes itself once without them (unless --keep-env). OpenBLAS reads them when it is loaded,
# so this must happen before numpy is imported.
SLOW_ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
REEXEC_MARKER = "ELMAN_BENCH_REEXECUTED"
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Benchmark elman's RNN/GRU/LSTM against torch.nn on the CPU (float32).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--cells", default=",".join(CELLS),
                   help="comma-separated subset of rnn,gru,lstm")
    p.add_argument("--modes", default=",".join(MODES),
                   help="comma-separated subset of train (forward+backward), infer (forward)")
    p.add_argument("--configs", default="all",
                   help='comma-separated indices into the grid (0-based) or "all"; grid: '
                        + ", ".join(f"{i}=(N,T,I,H)={c}" for i, c in enumerate(CONFIGS)))
    p.add_argument("--repeats", type=int, default=5,
                   help="timed repeats per framework (the median is reported)")
    p.add_argument("--min-time", type=float, default=0.2,
                   help="minimum duration of one repeat in seconds (calibrated once per case; "
                        "one iteration when a single iteration takes longer)")
    p.add_argument("--threads", type=int, default=2,
                   help="threads for torch (set_num_threads) and NumPy's BLAS (threadpoolctl)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: one tiny config {QUICK_CONFIG}, 2 repeats, short repeats")
    p.add_argument("--markdown", metavar="FILE", help="also write the Markdown table to FILE")
    p.add_argument("--json", metavar="FILE", help="write the raw numbers (every repeat) to FILE")
    p.add_argument("--keep-env", action="store_true",
                   help="do not re-execute without " + " / ".join(SLOW_ENV_VARS))
    args = p.parse_args(argv)

    args.cells = _choices(p, "--cells", args.cells, CELLS)
    args.modes = _choices(p, "--modes", args.modes, MODES)
    if args.quick:
        args.config_list = [QUICK_CONFIG]
        args.repeats = 2
        args.min_time = min(args.min_time, 0.05)
    elif args.configs.strip().lower() == "all":
        args.config_list = list(CONFIGS)
    else:
        try:
            idx = [int(s) for s in args.configs.split(",") if s.strip()]
        except ValueError:
            p.error(f'--configs takes indices 0..{len(CONFIGS) - 1} or "all", got {args.configs!r}')
        bad = [i for i in idx if not 0 <= i < len(CONFIGS)]
        if bad or not idx:
            p.error(f"--configs indices must be in 0..{len(CONFIGS) - 1}, got {args.configs!r}")
        args.config_list = [CONFIGS[i] for i in idx]
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.min_time <= 0:
        p.error("--min-time must be > 0")
    if args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def _choices(parser, flag, text, allowed):
    items = [s.strip().lower() for s in text.split(",") if s.strip()]
    bad = [s for s in items if s not in allowed]
    if bad or not items:
        parser.error(f"{flag} takes a comma-separated subset of {','.join(allowed)}, got {text!r}")
    return list(dict.fromkeys(items))


def reexec_without_slow_env(args):
    """Re-execute this process once with SLOW_ENV_VARS removed from the environment.

    Returns a line for the header describing what happened (or None when nothing was set).
    """
    present = {k: os.environ[k] for k in SLOW_ENV_VARS if k in os.environ}
    if REEXEC_MARKER in os.environ:
        removed = os.environ[REEXEC_MARKER]
        if present:   # should not happen; never loop
            return (f"re-executed once already (removed {removed}) but {', '.join(present)} "
                    "is set again; keeping it")
        return f"re-executed without {removed} (they slow NumPy's OpenBLAS; --keep-env keeps them)"
    if not present:
        return None
    if args.keep_env:
        return ("kept " + ", ".join(f"{k}={v}" for k, v in present.items())
                + " (--keep-env); they can slow NumPy's OpenBLAS")
    env = {k: v for k, v in os.environ.items() if k not in SLOW_ENV_VARS}
    env[REEXEC_MARKER] = ", ".join(f"{k}={v}" for k, v in present.items())
    print(f"# {', '.join(present)} set: re-executing without them", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    argv = [sys.executable] + list(getattr(sys, "orig_argv", [sys.executable] + sys.argv)[1:])
    os.execve(sys.executable, argv, env)
    return None  # not reached


# --------------------------------------------------------------------------------------------
# environment header

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(np, torch, threadpoolctl, env_note, threads):
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "numpy": np.__version__,
        "torch": torch.__version__,
        "threadpoolctl": threadpoolctl.__version__,
        "threads_requested": threads,
        "torch_num_threads": torch.get_num_threads(),
        "torch_blas": _torch_blas(torch),
        "torch_cpu_capability": _safe(lambda: torch.backends.cpu.get_cpu_capability()),
        "threadpools": [
            {k: d.get(k) for k in ("user_api", "internal_api", "prefix", "version",
                                   "architecture", "corename", "threading_layer",
                                   "num_threads", "filepath")}
            for d in threadpoolctl.threadpool_info()],
        "env": {k: os.environ.get(k) for k in SLOW_ENV_VARS + THREAD_ENV_VARS},
        "env_note": env_note,
    }
    try:
        import elman
        info["elman"] = getattr(elman, "__version__", "?")
    except Exception:  # pragma: no cover
        info["elman"] = "?"
    return info


def _safe(fn):
    try:
        return fn()
    except Exception:  # pragma: no cover
        return None


def _torch_blas(torch):
    try:
        cfg = torch.__config__.show()
    except Exception:  # pragma: no cover
        return None
    for line in cfg.splitlines():
        line = line.strip()
        if line.startswith("- BLAS_INFO") or "BLAS_INFO=" in line:
            for part in line.replace(",", " ").split():
                if part.startswith("BLAS_INFO="):
                    return part.split("=", 1)[1]
    return None


def print_header(info):
    print("# elman vs torch.nn benchmark (CPU, float32)")
    print(f"- python {info['python']}, numpy {info['numpy']}, torch {info['torch']}, "
          f"elman {info['elman']}, threadpoolctl {info['threadpoolctl']}")
    print(f"- platform {info['platform']}; CPU {info['cpu']} ({info['cpu_count']} logical CPUs)"
          + (f"; load average {', '.join(f'{x:.2f}' for x in info['loadavg'])}"
             if info["loadavg"] else ""))
    for d in info["threadpools"]:
        kernel = d.get("architecture") or d.get("corename") or "-"
        print(f"- threadpool {d['user_api']}: internal_api={d['internal_api']} "
              f"version={d['version']} kernel={kernel} num_threads={d['num_threads']} "
              f"({os.path.basename(d['filepath'] or '')})")
    print(f"- torch.get_num_threads()={info['torch_num_threads']}, torch BLAS "
          f"{info['torch_blas'] or '?'}, CPU capability {info['torch_cpu_capability'] or '?'}; requested threads: {info['threads_requested']}")
    envs = ", ".join(f"{k}={'unset' if v is None else v}" for k, v in info["env"].items())
    print(f"- env: {envs}")
    if info["env_note"]:
        print(f"- NOTE: {info['env_note']}")
    if info["loadavg"] and info["loadavg"][0] > 0.5:
        print(f"- WARNING: 1-minute load average {info['loadavg'][0]:.2f}: other processes are "
              "using the CPU. Multi-threaded BLAS/OpenMP slows down badly when its threads share "
              "cores with other work; run on an idle machine for meaningful numbers.")
    print()


# --------------------------------------------------------------------------------------------
# the cases

def make_case(np, torch, elman, cell, mode, cfg, seed):
    """Build an elman layer and its torch twin with the same weights, input and dout.

    Returns (run_elman, run_torch, check): run_* do one iteration; check() does one iteration of
    each, compares them and returns (relative errors by name, elman seconds, torch seconds).
    """
    N, T, I, H = cfg
    e_cls = {"rnn": elman.RNN, "gru": elman.GRU, "lstm": elman.LSTM}[cell]
    t_cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell]
    layer = e_cls(I, H, dtype=np.float32, seed=seed)
    model = t_cls(I, H)
    model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32))
                           for k, v in layer.state_dict().items()})
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((T, N, I), dtype=np.float32)
    dout = rng.standard_normal((T, N, H), dtype=np.float32)
    xt = torch.from_numpy(x.copy())                 # requires_grad=False
    doutt = torch.from_numpy(dout.copy())

    if mode == "train":
        layer.train()
        model.train()

        def run_elman():
            layer.zero_grad()
            out, _ = layer(x)
            # x is data, as torch's input without requires_grad: neither computes dx
            layer.backward(dout, None, input_grad=False)
            return out

        def run_torch():
            model.zero_grad(set_to_none=True)
            out, _ = model(xt)
            (out * doutt).sum().backward()
            return out

        def check():
            t0 = time.perf_counter()
            out_e = run_elman()
            t1 = time.perf_counter()
            out_t = run_torch()
            t2 = time.perf_counter()
            diffs = {"out": _rel_err(np, out_e, out_t.detach().numpy())}
            tgrads = {k: p.grad.numpy() for k, p in model.named_parameters()}
            for name, p in layer.named_parameters():
                diffs[name] = _rel_err(np, p.grad, tgrads[name])
            return diffs, t1 - t0, t2 - t1
    else:
        layer.eval()
        model.eval()

        def run_elman():
            out, _ = layer(x)
            return out

        def run_torch():
            with torch.inference_mode():
                out, _ = model(xt)
            return out

        def check():
            t0 = time.perf_counter()
            out_e = run_elman()
            t1 = time.perf_counter()
            out_t = run_torch()
            t2 = time.perf_counter()
            return {"out": _rel_err(np, out_e, out_t.numpy())}, t1 - t0, t2 - t1

    return run_elman, run_torch, check


def _rel_err(np, a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    scale = max(float(np.max(np.abs(b))), 1e-6)
    return float(np.max(np.abs(a - b))) / scale


def calibrate(fn, min_time, first_time):
    """Iterations per repeat so that one repeat lasts >= min_time (at least 1).

    ``first_time`` is the warm-up iteration's duration. When it is far above ``min_time`` the
    answer is 1 without running anything more (so the big configs cost no extra iteration); when
    it is merely above, one more iteration is timed, since the first call can carry one-off costs.
    """
    if first_time >= 3 * min_time:
        return 1
    k, per = 1, first_time
    while True:
        t0 = time.perf_counter()
        for _ in range(k):
            fn()
        el = time.perf_counter() - t0
        per = el / k
        if el >= min_time / 4 or per >= min_time:
            break
        k = max(k * 2, int(math.ceil(min_time / 4 / max(per, 1e-9))))
    return max(1, int(math.ceil(min_time / max(per, 1e-12))))


def timed(fn, iters):
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return time.perf_counter() - t0


def bench_case(np, torch, elman, cell, mode, cfg, args):
    N = cfg[0]
    run_e, run_t, check = make_case(np, torch, elman, cell, mode, cfg, args.seed)
    # warm-up: one iteration each, which is also a correctness check and a first timing
    diffs, first_e, first_t = check()
    worst = max(diffs.values())
    # calibrate each framework once
    it_e = calibrate(run_e, args.min_time, first_e)
    it_t = calibrate(run_t, args.min_time, first_t)
    te, tt = [], []
    for _ in range(args.repeats):          # alternate: elman, torch, elman, torch, ...
        te.append(timed(run_e, it_e))
        tt.append(timed(run_t, it_t))
    sps_e = [N * it_e / t for t in te]
    sps_t = [N * it_t / t for t in tt]
    med_e, med_t = statistics.median(sps_e), statistics.median(sps_t)
    return {
        "cell": cell, "mode": mode, "N": cfg[0], "T": cfg[1], "I": cfg[2], "H": cfg[3],
        "elman_seq_per_s": med_e, "torch_seq_per_s": med_t, "ratio": med_e / med_t,
        "elman_iters_per_repeat": it_e, "torch_iters_per_repeat": it_t,
        "elman_repeat_s": te, "torch_repeat_s": tt,
        "elman_seq_per_s_all": sps_e, "torch_seq_per_s_all": sps_t,
        "warmup_s": [first_e, first_t], "max_rel_err": worst, "rel_err": diffs,
    }


# --------------------------------------------------------------------------------------------
# output

HEAD = ("cell", "mode", "N", "T", "I", "H", "elman seq/s", "torch seq/s", "ratio")


def _fmt_rate(x):
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def table_row(r):
    return (r["cell"], r["mode"], str(r["N"]), str(r["T"]), str(r["I"]), str(r["H"]),
            _fmt_rate(r["elman_seq_per_s"]), _fmt_rate(r["torch_seq_per_s"]), f"{r['ratio']:.2f}")


def markdown_table(rows):
    cells = [HEAD] + [table_row(r) for r in rows]
    w = [max(len(c[i]) for c in cells) for i in range(len(HEAD))]
    right = [False, False] + [True] * (len(HEAD) - 2)

    def line(c):
        return "| " + " | ".join(s.rjust(w[i]) if right[i] else s.ljust(w[i])
                                 for i, s in enumerate(c)) + " |"

    sep = "|" + "|".join(("-" * (w[i] + 1) + ":") if right[i] else ("-" * (w[i] + 2))
                         for i in range(len(HEAD))) + "|"
    return "\n".join([line(HEAD), sep] + [line(c) for c in cells[1:]])


def main(argv=None):
    args = parse_args(argv)
    env_note = reexec_without_slow_env(args)

    # heavy imports only now, after the environment is final
    import numpy as np
    import threadpoolctl
    import torch
    import elman

    torch.set_num_threads(args.threads)
    limiter = threadpoolctl.threadpool_limits(limits=args.threads, user_api="blas")
    try:
        info = environment(np, torch, threadpoolctl, env_note, args.threads)
        print_header(info)
        n_cases = len(args.cells) * len(args.modes) * len(args.config_list)
        print(f"{n_cases} case(s), {args.repeats} repeat(s) each, >= {args.min_time:g} s per "
              "repeat, alternating elman/torch; ratio = elman/torch (> 1: elman faster)\n",
              flush=True)
        rows = []
        t_start = time.perf_counter()
        for cfg in args.config_list:
            for cell in args.cells:
                for mode in args.modes:
                    t0 = time.perf_counter()
                    r = bench_case(np, torch, elman, cell, mode, cfg, args)
                    r["case_s"] = time.perf_counter() - t0
                    rows.append(r)
                    warn = ("  WARNING: outputs/gradients differ" if r["max_rel_err"] > 1e-3
                            else "")
                    print(f"  {cell:4s} {mode:5s} N={cfg[0]} T={cfg[1]} I={cfg[2]} H={cfg[3]}: "
                          f"elman {_fmt_rate(r['elman_seq_per_s'])} seq/s "
                          f"(x{r['elman_iters_per_repeat']}), torch "
                          f"{_fmt_rate(r['torch_seq_per_s'])} seq/s "
                          f"(x{r['torch_iters_per_repeat']}), ratio {r['ratio']:.2f}, "
                          f"max rel err {r['max_rel_err']:.1e}, {r['case_s']:.1f} s{warn}",
                          flush=True)
        total = time.perf_counter() - t_start
        info["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        table = markdown_table(rows)
        print()
        print(table)
        print(f"\nmedian of {args.repeats} repeats; ratio = elman/torch (> 1: elman faster); "
              f"total {total:.1f} s")
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(table + "\n")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"environment": info,
                           "settings": {"repeats": args.repeats, "min_time_s": args.min_time,
                                        "threads": args.threads, "seed": args.seed,
                                        "quick": args.quick},
                           "total_s": total, "results": rows}, f, indent=2)
                f.write("\n")
    finally:
        limiter.restore_original_limits()
    return 0


if __name__ == "__main__":
    sys.exit(main())
