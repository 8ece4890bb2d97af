#!/usr/bin/env python
"""elman vs torch.nn: RNN, GRU and LSTM on the CPU, float32, same weights, same input, same process.

Three frameworks per case: ``fast`` (elman with its compiled fast path, ``elman.fast.use(True)``),
``numpy`` (elman on the pure-NumPy reference path, ``elman.fast.use(False)``) and ``torch``.
A case is (cell, mode, stack, config): mode ``train`` is zero_grad + forward + backward + an Adam
step, ``infer`` a forward only; the stack is 1 or 2 layers, uni- or bidirectional. The frameworks
are timed repeat by repeat in alternation (fast, numpy, torch, fast, numpy, torch, ...) after a
warm-up that also checks that they compute the same thing; each repeat runs as many iterations as
needed to last at least ``--min-time`` seconds and the table reports the median over repeats as
sequences per second, plus the achieved GEMM GFLOP/s against the SGEMM ceiling, timed in the
GEMM-bound cases' own repeats (the machine's speed moves from minute to minute). For the
largest config the peak memory of one training step is measured in fresh subprocesses.
See benchmarks/README.md.

    python benchmarks/bench_rnn.py          # full grid: 3 cells x 2 modes x 4 stacks x 6 configs
    python benchmarks/bench_rnn.py --quick  # smoke test: one tiny config, 2 repeats
    python benchmarks/bench_rnn.py --configs 1 --cells lstm --stacks 1,2bi --repeats 5
    python benchmarks/bench_rnn.py --dry-run  # list the cases and a rough time estimate
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import types
import warnings

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
MEMORY_CONFIG = (128, 200, 256, 512)          # the largest config: peak memory per training step
CELLS = ("rnn", "gru", "lstm")
# opt-in with --cells: elman.LSTM(peephole=True) against a TorchScript peephole LSTM (torch.nn
# has none), not part of the default grid
EXTRA_CELLS = ("peephole",)
MODES = ("train", "infer")
FRAMEWORKS = ("fast", "numpy", "torch")
# stack name -> (num_layers, bidirectional)
STACKS = {"1": (1, False), "2": (2, False), "1bi": (1, True), "2bi": (2, True)}
GATES = {"rnn": 1, "gru": 3, "lstm": 4, "peephole": 4}
GEMM_BOUND_H = 256            # configs with H >= this are GEMM-bound: % of the SGEMM ceiling
CEILING_SIZE = 2048           # SGEMM ceiling: (2048 x 2048) @ (2048 x 2048), float32
STEP_GEMM = (128, 512, 2048)  # the per-step recurrent GEMM of the largest LSTM: (N x H) @ (H x 4H)
CEILING_RUNS = 7              # timed runs of each reference GEMM (the median is reported; >= 5)
LR = 1e-3
MIN_REPEATS = 5
PROBE_MARKER = "MEMORY_PROBE_RESULT "

# Environment variables that slow NumPy's OpenBLAS on the benchmark machine: if set, the script
# re-executes itself once without them (unless --keep-env). OpenBLAS reads them when it is loaded,
# so this must happen before numpy is imported.
SLOW_ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
REEXEC_MARKER = "ELMAN_BENCH_REEXECUTED"
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except None/False ones (flags, and defaults that depend on --quick)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Benchmark elman's RNN/GRU/LSTM (fast path and NumPy path) against torch.nn "
                    "on the CPU (float32).",
        formatter_class=_HelpFormatter)
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                   help="comma-separated subset of fast (elman, compiled fast path), numpy "
                        "(elman, NumPy reference path), torch; torch is always included (the "
                        "reference for the ratios)")
    p.add_argument("--cells", default=",".join(CELLS),
                   help="comma-separated subset of rnn,gru,lstm, and peephole (opt-in: "
                        "elman.LSTM(peephole=True) against a TorchScript peephole LSTM)")
    p.add_argument("--modes", default=",".join(MODES),
                   help="comma-separated subset of train (forward+backward+Adam step), "
                        "infer (forward)")
    p.add_argument("--stacks", default=",".join(STACKS),
                   help="comma-separated subset of 1, 2 (layers), 1bi, 2bi (bidirectional)")
    p.add_argument("--configs", default="all",
                   help='comma-separated indices into the grid (0-based) or "all"; grid: '
                        + ", ".join(f"{i}=(N,T,I,H)={c}" for i, c in enumerate(CONFIGS)))
    p.add_argument("--repeats", type=int, default=None,
                   help=f"timed repeats per framework (the median is reported); default "
                        f"{MIN_REPEATS} ({2} with --quick)")
    p.add_argument("--min-time", type=float, default=0.2,
                   help="minimum duration of one repeat in seconds (calibrated once per case; "
                        "one iteration when a single iteration takes longer)")
    p.add_argument("--settle", type=float, default=0.15,
                   help="seconds of pause before each framework's timed repeat: the threads of "
                        "the framework before (OpenBLAS's worker spins about 0.1 s after a "
                        "GEMM, OpenMP's a while too) go idle first, the same for every "
                        "framework (0: none, as before this option)")
    p.add_argument("--threads", type=int, default=2,
                   help="threads for torch (set_num_threads) and both OpenBLAS libraries "
                        "(NumPy's and SciPy's, through threadpoolctl)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help=f"smoke test: one tiny config {QUICK_CONFIG}, 2 repeats, short repeats, "
                        "no memory measurement")
    p.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None,
                   help="measure the peak memory of one training step for the largest config "
                        f"{MEMORY_CONFIG} (stack 1, every cell, one fresh subprocess per "
                        "framework); default: on, off with --quick")
    p.add_argument("--dry-run", action="store_true",
                   help="list the cases and a rough run-time estimate (measures only the SGEMM "
                        "ceiling), run nothing else")
    p.add_argument("--markdown", metavar="FILE", help="also write the Markdown tables to FILE")
    p.add_argument("--json", metavar="FILE", help="write the raw numbers (every repeat) to FILE")
    p.add_argument("--keep-env", action="store_true",
                   help="do not re-execute without " + " / ".join(SLOW_ENV_VARS))
    # hidden: the memory probe (run in a subprocess by --memory) and its config
    p.add_argument("--memory-probe", nargs=2, metavar=("FRAMEWORK", "CELL"),
                   help=argparse.SUPPRESS)
    p.add_argument("--memory-config", default=",".join(map(str, MEMORY_CONFIG)),
                   help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    fws = _choices(p, "--frameworks", args.frameworks, FRAMEWORKS)
    args.frameworks_note = None
    if "torch" not in fws:
        fws.append("torch")
        args.frameworks_note = "added torch to --frameworks: it is the reference for the ratios"
    args.frameworks = [f for f in FRAMEWORKS if f in fws]       # fixed order: fast, numpy, torch
    args.cells = _choices(p, "--cells", args.cells, CELLS + EXTRA_CELLS)
    args.modes = _choices(p, "--modes", args.modes, MODES)
    args.stacks = _choices(p, "--stacks", args.stacks, tuple(STACKS))
    try:
        args.memory_config = tuple(int(s) for s in args.memory_config.split(","))
        if len(args.memory_config) != 4 or min(args.memory_config) < 1:
            raise ValueError
    except ValueError:
        p.error(f"--memory-config takes N,T,I,H (4 positive integers), "
                f"got {args.memory_config!r}")
    if args.memory_probe is not None:
        fw, cell = (s.lower() for s in args.memory_probe)
        if fw not in FRAMEWORKS or cell not in CELLS + EXTRA_CELLS:
            p.error(f"--memory-probe takes FRAMEWORK CELL in {FRAMEWORKS} x "
                    f"{CELLS + EXTRA_CELLS}")
        args.memory_probe = (fw, cell)
    if args.quick:
        args.config_list = [QUICK_CONFIG]
        if args.repeats is None:
            args.repeats = 2
        args.min_time = min(args.min_time, 0.05)
        args.settle = min(args.settle, 0.01)
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
    if args.repeats is None:
        args.repeats = MIN_REPEATS
    if args.memory is None:
        args.memory = not args.quick
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.min_time <= 0:
        p.error("--min-time must be > 0")
    if args.settle < 0:
        p.error("--settle must be >= 0")
    if args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def config_indices(parser, text: str, count: int, flag: str = "--configs") -> list:
    """``"all"`` or comma-separated indices into a list of ``count`` configs, checked (an
    argparse error names the flag and the range otherwise)."""
    if text == "all":
        return list(range(count))
    try:
        indices = [int(c) for c in text.split(",")]
    except ValueError:
        indices = [-1]
    if any(not 0 <= c < count for c in indices):
        parser.error(f"{flag} takes indices 0-{count - 1} or 'all'")
    return indices


def emit(lines: list, markdown: str | None, env_note: str | None = None) -> None:
    """Print a benchmark's report and, when asked (``--markdown FILE``), write it to FILE;
    ``env_note`` (what :func:`reexec_without_slow_env` did), if any, goes under its first
    line, in parentheses."""
    if env_note:
        lines = [lines[0], f"({env_note})", *lines[1:]]
    print("\n".join(lines))
    if markdown:
        with open(markdown, "w") as f:
            f.write("\n".join(lines) + "\n")


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
# threads

def setup_threads(np, torch, elman, threads):
    """Limit torch and every BLAS to ``threads``; returns the threadpoolctl limiter.

    elman's fast path calls NumPy's own BLAS from compiled code (``elman.fast._blas``); only
    where that cannot be found does it go through numba's ``np.dot`` and SciPy's OpenBLAS, a
    second library. threadpoolctl only limits libraries that are already loaded, so numba's
    kernels (and with them whatever BLAS they use) are loaded first: one tiny fast-path forward
    and backward.
    """
    import threadpoolctl
    torch.set_num_threads(threads)
    # elman's own policy (elman.threads) then decides per GEMM, at most `threads`
    elman.set_num_threads(threads)
    if elman.fast.available:
        with elman.fast.use(True):
            tiny = elman.LSTM(2, 3, dtype=np.float32, seed=0)
            out, _ = tiny(np.zeros((2, 1, 2), np.float32))
            tiny.backward(np.zeros_like(out), None)
    return threadpoolctl.threadpool_limits(limits=threads, user_api="blas")


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


def _pool_owner(filepath):
    """Which package ships a thread pool's library (NumPy's BLAS, SciPy's BLAS, torch's OpenMP)."""
    path = (filepath or "").replace("\\", "/")
    for key, name in (("/numpy.libs/", "numpy"), ("/numpy/", "numpy"),
                      ("/scipy.libs/", "scipy"), ("/scipy/", "scipy"),
                      ("/torch/", "torch"), ("/numba", "numba")):
        if key in path:
            return name
    return None


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
            dict({k: d.get(k) for k in ("user_api", "internal_api", "prefix", "version",
                                        "architecture", "corename", "threading_layer",
                                        "num_threads", "filepath")},
                 owner=_pool_owner(d.get("filepath")))
            for d in threadpoolctl.threadpool_info()],
        "env": {k: os.environ.get(k) for k in SLOW_ENV_VARS + THREAD_ENV_VARS},
        "env_note": env_note,
    }
    try:
        import elman
        info["elman"] = getattr(elman, "__version__", "?")
        info["elman_fast_available"] = bool(elman.fast.available)
        if elman.fast.available:
            from elman.fast import _blas, _mkl, _packed
            info["elman_fast_blas"] = _blas.source
            # (a loop whose per-step GEMM runs on one thread, a row block's or a direction's,
            # packs its matrix: for MKL's packed GEMM where MKL is on, else for the kernels'
            # own micro-kernel where it runs; the threaded per-step GEMMs stay on the BLAS above)
            info["elman_one_thread_gemm"] = (
                f"MKL's packed GEMM ({os.path.basename(_mkl.library())})" if _mkl.enabled()
                else "the kernels' own packed GEMM (AVX-512)" if _packed.enabled()
                else "the BLAS above")
    except Exception:  # pragma: no cover
        info["elman"] = "?"
    for mod in ("scipy", "numba"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:
            info[mod] = None
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


def print_header(info, args, ceilings):
    print("# elman (fast path, NumPy path) vs torch.nn benchmark (CPU, float32)")
    print(f"- python {info['python']}, numpy {info['numpy']}, scipy {info.get('scipy')}, "
          f"numba {info.get('numba')}, torch {info['torch']}, elman {info['elman']}, "
          f"threadpoolctl {info['threadpoolctl']}")
    print(f"- platform {info['platform']}; CPU {info['cpu']} ({info['cpu_count']} logical CPUs)"
          + (f"; load average {', '.join(f'{x:.2f}' for x in info['loadavg'])}"
             if info["loadavg"] else ""))
    for d in info["threadpools"]:
        kernel = d.get("architecture") or d.get("corename") or "-"
        owner = f" [{d['owner']}]" if d.get("owner") else ""
        print(f"- threadpool {d['user_api']}{owner}: internal_api={d['internal_api']} "
              f"version={d['version']} kernel={kernel} num_threads={d['num_threads']} "
              f"({os.path.basename(d['filepath'] or '')})")
    n_blas = sum(1 for d in info["threadpools"] if d.get("user_api") == "blas")
    if n_blas > 1:
        print(f"- NOTE: {n_blas} BLAS thread pools are loaded; pools that take turns on the same "
              "cores slow each other down")
    print(f"- torch.get_num_threads()={info['torch_num_threads']}, torch BLAS "
          f"{info['torch_blas'] or '?'}, CPU capability {info['torch_cpu_capability'] or '?'}; "
          f"requested threads: {info['threads_requested']}")
    envs = ", ".join(f"{k}={'unset' if v is None else v}" for k, v in info["env"].items())
    print(f"- env: {envs}")
    if ceilings:
        c, s = ceilings["sgemm"], ceilings["step_gemm"]
        print(f"- SGEMM ceiling (np.matmul float32 {c['shape']}, median of {len(c['runs_s'])}): "
              f"{c['gflop_per_s']:.1f} GFLOP/s; per-step recurrent GEMM {s['shape']}: "
              f"{s['gflop_per_s']:.1f} GFLOP/s")
    if info["env_note"]:
        print(f"- NOTE: {info['env_note']}")
    if args.frameworks_note:
        print(f"- NOTE: {args.frameworks_note}")
    if "fast" in args.frameworks and not info.get("elman_fast_available"):
        print("- NOTE: elman.fast is not available (numba missing): 'fast' runs the NumPy path")
    elif info.get("elman_fast_blas"):
        print(f"- elman.fast per-step GEMMs: {info['elman_fast_blas']}; on one thread (a row "
              f"block's, a direction's): {info['elman_one_thread_gemm']}")
    if args.repeats < MIN_REPEATS:
        print(f"- NOTE: {args.repeats} repeat(s) < {MIN_REPEATS}: the medians are not reliable "
              "(smoke run)")
    if info["loadavg"] and info["loadavg"][0] > 0.5:
        print(f"- WARNING: 1-minute load average {info['loadavg'][0]:.2f}: other processes are "
              "using the CPU. Multi-threaded BLAS/OpenMP slows down badly when its threads share "
              "cores with other work; run on an idle machine for meaningful numbers.")
    print()


# --------------------------------------------------------------------------------------------
# FLOPs and the SGEMM ceiling

def gemm_flops(cell, mode, N, T, I, H, num_layers=1, bidirectional=False):
    """GEMM floating-point operations of one iteration (multiply + add = 2), analytically.

    Per layer l and direction, with I_l = I for layer 0 and D*H above and G gates:
    forward: input projection 2*T*N*I_l*G*H + recurrent 2*T*N*H*G*H; training adds
    dW_ih 2*T*N*I_l*G*H, dW_hh 2*T*N*G*H*H, dh_prev 2*T*N*G*H*H and, for layers > 0 only
    (the first layer's input gradient is not computed), dX 2*T*N*G*H*I_l.
    Element-wise work (gates, activations) and the optimizer step are not counted.
    """
    G = GATES[cell]
    D = 2 if bidirectional else 1
    total = 0
    for layer in range(num_layers):
        I_l = I if layer == 0 else D * H
        per = 2 * T * N * I_l * G * H + 2 * T * N * H * G * H
        if mode == "train":
            per += 2 * T * N * I_l * G * H + 2 * T * N * G * H * H + 2 * T * N * G * H * H
            if layer > 0:
                per += 2 * T * N * G * H * I_l
        total += D * per
    return total


def _gemm_rate(np, m, k, n, runs, min_run_s=0.02):
    """Median GFLOP/s of float32 np.matmul (m x k) @ (k x n) over ``runs`` timed runs."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    c = np.empty((m, n), np.float32)
    t0 = time.perf_counter()
    np.matmul(a, b, out=c)                                  # warm-up
    first = time.perf_counter() - t0
    reps = max(1, int(math.ceil(min_run_s / max(first, 1e-9)))) if first < min_run_s else 1
    runs_s = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(reps):
            np.matmul(a, b, out=c)
        runs_s.append((time.perf_counter() - t0) / reps)
    med = statistics.median(runs_s)
    return {"shape": f"({m} x {k}) @ ({k} x {n})", "flops": 2 * m * k * n,
            "calls_per_run": reps, "runs_s": runs_s, "median_s": med,
            "gflop_per_s": 2 * m * k * n / med / 1e9, "library": "numpy (np.matmul)"}


def measure_ceilings(np):
    n = CEILING_SIZE
    return {"sgemm": _gemm_rate(np, n, n, n, CEILING_RUNS),
            "step_gemm": _gemm_rate(np, *STEP_GEMM, CEILING_RUNS)}


_CEILING_OPERANDS = {}


def ceiling_product(np):
    """One (2048 x 2048) @ (2048 x 2048) float32 np.matmul (the SGEMM ceiling's product, its
    operands made once): what :func:`bench_case` times between a GEMM-bound case's repeats."""
    if not _CEILING_OPERANDS:
        rng = np.random.default_rng(0)
        n = CEILING_SIZE
        _CEILING_OPERANDS.update(a=rng.standard_normal((n, n), dtype=np.float32),
                                 b=rng.standard_normal((n, n), dtype=np.float32),
                                 c=np.empty((n, n), np.float32))
    a, b, c = (_CEILING_OPERANDS[k] for k in "abc")
    return lambda: np.matmul(a, b, out=c)


# --------------------------------------------------------------------------------------------
# the cases

def _classes(elman, torch, cell):
    """(elman layer class, torch module class), both called as ``cls(I, H, **kw)``."""
    if cell == "peephole":
        return (lambda *a, **kw: elman.LSTM(*a, peephole=True, **kw)), _torch_peephole(torch)
    e_cls = {"rnn": elman.RNN, "gru": elman.GRU, "lstm": elman.LSTM}[cell]
    t_cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell]
    return e_cls, t_cls


def _torch_peephole(torch):
    """A peephole LSTM for torch, which has none: elman's parameter names and equations
    (``elman.cells.peephole_lstm``), the input projection as one GEMM per layer-direction (as
    torch.nn.LSTM does it) and the time loop compiled with ``torch.jit.script``; autograd does
    the backward pass. (torch 2.13 deprecates ``torch.jit.script`` in favour of
    ``torch.compile``, which needs a C++ compiler at run time; the script still runs.)"""

    def direction(gx: torch.Tensor, W_hh: torch.Tensor, w_ci: torch.Tensor,
                  w_cf: torch.Tensor, w_co: torch.Tensor, reverse: bool):
        T, N, H = gx.size(0), gx.size(1), W_hh.size(1)
        h = gx.new_zeros(N, H)
        c = gx.new_zeros(N, H)
        W_hh_T = W_hh.t()
        outs = []
        for k in range(T):
            t = T - 1 - k if reverse else k
            i, f, g, o = torch.addmm(gx[t], h, W_hh_T).chunk(4, 1)
            i = torch.sigmoid(i + w_ci * c)
            f = torch.sigmoid(f + w_cf * c)
            c = f * c + i * torch.tanh(g)
            h = torch.sigmoid(o + w_co * c) * torch.tanh(c)
            outs.append(h)
        if reverse:
            outs.reverse()
        return torch.stack(outs), h, c

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        direction = torch.jit.script(direction)

    class TorchPeepholeLSTM(torch.nn.Module):
        def __init__(self, input_size, hidden_size, num_layers=1, bidirectional=False):
            super().__init__()
            self.num_layers, self.D = num_layers, 2 if bidirectional else 1
            G, H = 4 * hidden_size, hidden_size
            for layer in range(num_layers):
                for d in range(self.D):
                    sfx = f"_l{layer}" + ("_reverse" if d else "")
                    I = input_size if layer == 0 else self.D * H
                    for name, shape in (("weight_ih", (G, I)), ("weight_hh", (G, H)),
                                        ("bias_ih", (G,)), ("bias_hh", (G,)),
                                        ("weight_ci", (H,)), ("weight_cf", (H,)),
                                        ("weight_co", (H,))):
                        self.register_parameter(name + sfx,
                                                torch.nn.Parameter(torch.zeros(shape)))

        def forward(self, x):
            hs, cs = [], []
            for layer in range(self.num_layers):
                outs = []
                for d in range(self.D):
                    p = {n: getattr(self, n + f"_l{layer}" + ("_reverse" if d else ""))
                         for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh",
                                   "weight_ci", "weight_cf", "weight_co")}
                    gx = torch.nn.functional.linear(x, p["weight_ih"],
                                                    p["bias_ih"] + p["bias_hh"])
                    out, h, c = direction(gx, p["weight_hh"], p["weight_ci"], p["weight_cf"],
                                          p["weight_co"], bool(d))
                    outs.append(out)
                    hs.append(h)
                    cs.append(c)
                x = outs[0] if self.D == 1 else torch.cat(outs, 2)
            return x, (torch.stack(hs), torch.stack(cs))

    return TorchPeepholeLSTM


class Runner:
    """One framework's model for one case.

    ``iterate()`` is one timed iteration (train: zero_grad, forward, backward, Adam step; infer:
    forward). ``first()`` is the same without the optimizer step, returning the output (for the
    correctness check, before any step has changed the weights); ``step()`` is the step alone;
    ``grads()`` the parameter gradients by name.
    """

    def __init__(self, iterate, first, step, grads, forget=lambda: None):
        self.iterate, self.first, self.step, self.grads = iterate, first, step, grads
        self.forget = forget      # drop what the model keeps between iterations (memory probe)


def _elman_runner(np, elman, layer, mode, x, dout, fast):
    if mode == "train":
        layer.train()
        opt = elman.Adam(layer.parameters(), lr=LR)

        def first():
            with elman.fast.use(fast):
                layer.zero_grad()
                out, _ = layer(x)
                # x is data, as torch's input without requires_grad: neither computes dx
                layer.backward(dout, None, input_grad=False)
            return out

        def step():
            opt.step()

        def iterate():
            with elman.fast.use(fast):
                layer.zero_grad()
                out, _ = layer(x)
                layer.backward(dout, None, input_grad=False)
                opt.step()
            return out

        def grads():
            return {name: p.grad for name, p in layer.named_parameters()}
    else:
        layer.eval()

        def iterate():
            with elman.fast.use(fast), elman.no_grad():   # as torch's inference_mode
                out, _ = layer(x)
            return out

        first, step, grads = iterate, (lambda: None), (lambda: {})
    return Runner(iterate, first, step, grads, forget=layer.clear_workspace)


def _torch_runner(torch, model, mode, xt, doutt):
    if mode == "train":
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=LR)   # torch's default implementation

        def first():
            model.zero_grad(set_to_none=True)
            out, _ = model(xt)
            (out * doutt).sum().backward()
            return out.detach().numpy()

        def step():
            opt.step()

        def iterate():
            model.zero_grad(set_to_none=True)
            out, _ = model(xt)
            (out * doutt).sum().backward()
            opt.step()
            return out

        def grads():
            return {k: p.grad.numpy() for k, p in model.named_parameters()}

        return Runner(iterate, first, step, grads)
    model.eval()

    def iterate():
        with torch.inference_mode():
            out, _ = model(xt)
        return out

    return Runner(iterate, lambda: iterate().numpy(), lambda: None, lambda: {})


def make_case(np, torch, elman, cell, mode, cfg, stack, frameworks, seed):
    """Build one model per framework, all with the same weights, plus the input and dout.

    Returns {framework: Runner}. fast and numpy get separate elman layers (and optimizers), so
    their states are independent; torch gets elman's initial weights.
    """
    N, T, I, H = cfg
    L, bi = STACKS[stack]
    D = 2 if bi else 1
    e_cls, t_cls = _classes(elman, torch, cell)
    kw = dict(num_layers=L, bidirectional=bi, dtype=np.float32)
    weights = e_cls(I, H, seed=seed, **kw).state_dict()
    rng = np.random.default_rng(seed + 1)
    for name in weights:
        if name.startswith("weight_c"):         # peepholes start at zero: make them count
            weights[name] = rng.uniform(-0.5, 0.5, weights[name].shape).astype(np.float32)
    x = rng.standard_normal((T, N, I), dtype=np.float32)
    dout = rng.standard_normal((T, N, D * H), dtype=np.float32)
    runners = {}
    for fw in frameworks:
        if fw == "torch":
            model = t_cls(I, H, num_layers=L, bidirectional=bi)
            model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32))
                                   for k, v in weights.items()})
            xt = torch.from_numpy(x.copy())                 # requires_grad=False
            doutt = torch.from_numpy(dout.copy())
            runners[fw] = _torch_runner(torch, model, mode, xt, doutt)
            if cell in EXTRA_CELLS:
                # TorchScript's profiling executor optimises a graph only after its first
                # runs: give it those before anything is timed (no optimizer step here)
                for _ in range(3):
                    runners[fw].first()
        else:
            layer = e_cls(I, H, seed=seed, **kw)
            layer.load_state_dict(weights)
            runners[fw] = _elman_runner(np, elman, layer, mode, x, dout, fast=(fw == "fast"))
    return runners


def check(np, runners):
    """The warm-up: one iteration of each framework, compared with torch before any optimizer
    step; then each framework's step. Returns ({framework: {name: rel err}}, {framework: s})."""
    outs, grads, secs = {}, {}, {}
    for fw, r in runners.items():
        t0 = time.perf_counter()
        outs[fw] = np.array(r.first(), dtype=np.float64)
        secs[fw] = time.perf_counter() - t0
        grads[fw] = {k: np.array(v, dtype=np.float64) for k, v in r.grads().items()}
    for fw, r in runners.items():          # only now change the weights
        t0 = time.perf_counter()
        r.step()
        secs[fw] += time.perf_counter() - t0
    diffs = {}
    for fw in runners:
        if fw == "torch":
            continue
        d = {"out": _rel_err(np, outs[fw], outs["torch"])}
        for name, g in grads[fw].items():
            d[name] = _rel_err(np, g, grads["torch"][name])
        diffs[fw] = d
    return diffs, secs


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


def calibration_times(runners, first, min_time):
    """The first iteration's time of each framework as :func:`calibrate` should see it. The
    warm-up iteration of the compiled path compiles numba's kernels when its cache is cold
    (seconds), and from ``3 * min_time`` :func:`calibrate` settles on one iteration per
    repeat without running more: a case of a millisecond was then timed one iteration a
    repeat (measured, a cold cache: the RNN at (32, 50, 16, 64), training, 20,753 sequences
    per second against 37,963 warm). So a framework that JIT-compiles gets its iteration
    timed once more there (the NumPy path and torch compile nothing; an extra iteration of a
    large case costs its seconds)."""
    times = dict(first)
    if "fast" in runners and first["fast"] >= 3 * min_time:
        t0 = time.perf_counter()
        runners["fast"].iterate()
        times["fast"] = time.perf_counter() - t0
    return times


def timed(fn, iters):
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return time.perf_counter() - t0


def bench_case(np, torch, elman, cell, mode, cfg, stack, args, ceilings):
    N, T, I, H = cfg
    L, bi = STACKS[stack]
    runners = make_case(np, torch, elman, cell, mode, cfg, stack, args.frameworks, args.seed)
    # warm-up: one iteration each, which is also a correctness check and a first timing
    diffs, first = check(np, runners)
    worst = max((e for d in diffs.values() for e in d.values()), default=0.0)
    seen = calibration_times(runners, first, args.min_time)
    iters = {fw: calibrate(r.iterate, args.min_time, seen[fw]) for fw, r in runners.items()}
    times = {fw: [] for fw in runners}
    # A GEMM-bound case times the SGEMM ceiling's product in its own repeats too: this
    # machine's speed moves from minute to minute (its ceiling measured 158 to 351 GFLOP/s
    # in one week, and 290 against 158-205 within one day), so a share of the ceiling
    # measured at the run's start compared the case with another minute's machine
    bound = "fast" in runners and H >= GEMM_BOUND_H and ceilings
    steps = dict(runners)
    if bound:
        product = ceiling_product(np)
        start = time.perf_counter()
        product()
        steps["sgemm"] = types.SimpleNamespace(iterate=product)
        iters["sgemm"] = calibrate(product, args.min_time, time.perf_counter() - start)
        times["sgemm"] = []
    for _ in range(args.repeats):          # alternate: fast, numpy, torch, fast, numpy, ...
        for fw, r in steps.items():
            if args.settle:
                # the last framework's spinning threads would take CPU from this one's start
                time.sleep(args.settle)
            times[fw].append(timed(r.iterate, iters[fw]))
    flops = gemm_flops(cell, mode, N, T, I, H, L, bi)
    res = {}
    for fw in runners:
        sps = [N * iters[fw] / t for t in times[fw]]
        med = statistics.median(sps)
        res[fw] = {"seq_per_s": med, "gflop_per_s": flops * med / N / 1e9,
                   "iters_per_repeat": iters[fw], "repeat_s": times[fw],
                   "seq_per_s_all": sps, "warmup_s": first[fw],
                   "max_rel_err": max(diffs[fw].values()) if fw in diffs else 0.0}
    t_rate = res["torch"]["seq_per_s"]
    ratios = {f"{fw}/torch": res[fw]["seq_per_s"] / t_rate for fw in res if fw != "torch"}
    pct = pct_run = case_ceiling = None
    if bound:
        # the share of each repeat's ceiling, measured next to it; the median of those
        sgemm = [2.0 * CEILING_SIZE ** 3 * iters["sgemm"] / t / 1e9 for t in times["sgemm"]]
        fast = [flops * iters["fast"] / t / 1e9 for t in times["fast"]]
        pct = 100.0 * statistics.median(f / c for f, c in zip(fast, sgemm))
        pct_run = 100.0 * res["fast"]["gflop_per_s"] / ceilings["sgemm"]["gflop_per_s"]
        case_ceiling = {"gflop_per_s": statistics.median(sgemm), "gflop_per_s_all": sgemm,
                        "calls_per_repeat": iters["sgemm"]}
    return {
        "cell": cell, "mode": mode, "stack": stack, "num_layers": L, "bidirectional": bi,
        "N": N, "T": T, "I": I, "H": H, "flops_per_iter": flops,
        "frameworks": res, "ratios": ratios, "fast_pct_of_sgemm_ceiling": pct,
        "fast_pct_of_run_start_ceiling": pct_run, "case_sgemm_ceiling": case_ceiling,
        "max_rel_err": worst, "rel_err": diffs,
    }


# --------------------------------------------------------------------------------------------
# peak memory per training step (one fresh subprocess per framework and cell)

def _proc_status_kib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])          # "VmRSS:   123456 kB"
    except (OSError, ValueError, IndexError):
        return None
    return None


def _malloc_trim():
    """Give free heap memory back to the OS (glibc), so that pages the warm-up freed but malloc
    kept do not hide the step's allocations from VmHWM. True when it ran."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        return True
    except (OSError, AttributeError):
        return False


def memory_probe(args):
    """Run in a fresh process: the peak memory of one training iteration above the baseline.

    Builds model, data and optimizer, runs one full training iteration (compiles numba, creates
    the Adam state), frees what elman keeps between calls (its workspace), gc.collect() and
    malloc_trim(0), reads VmRSS (the baseline), resets the peak
    (VmHWM) through /proc/self/clear_refs, runs one training iteration and reads VmHWM. Prints
    one JSON line.
    """
    fw, cell = args.memory_probe
    cfg = args.memory_config
    import numpy as np
    import torch
    import elman
    limiter = setup_threads(np, torch, elman, args.threads)
    try:
        runners = make_case(np, torch, elman, cell, "train", cfg, "1", [fw], args.seed)
        run = runners[fw].iterate
        run()                                                 # warm-up
        # elman keeps its gates/cell-state arrays for the next call (timeloop.Workspace): free
        # them, so that the measured step allocates everything it needs, as torch's does
        runners[fw].forget()
        gc.collect()
        trimmed = _malloc_trim()
        result = {"framework": fw, "cell": cell, "config": list(cfg), "stack": "1",
                  "malloc_trim": trimmed}
        baseline = _proc_status_kib("VmRSS")
        if baseline is None:
            result.update(peak_mib=None, baseline_mib=None,
                          method="unavailable: no /proc/self/status (not Linux?)")
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")                              # resets VmHWM to the current RSS
                reset = True
            except OSError as e:
                reset = False
                reset_error = f"{type(e).__name__}: {e}"
            if reset:
                run()
                hwm = _proc_status_kib("VmHWM")
                method = "VmHWM after reset through /proc/self/clear_refs, minus VmRSS"
                if not trimmed:
                    method += " (no malloc_trim: freed heap pages may hide some of the peak)"
            else:
                # fall back: sample VmRSS from a thread while the iteration runs (a lower bound)
                peak = [baseline]
                stop = threading.Event()

                def sample():
                    while not stop.is_set():
                        v = _proc_status_kib("VmRSS")
                        if v is not None and v > peak[0]:
                            peak[0] = v
                        time.sleep(0.001)

                th = threading.Thread(target=sample, daemon=True)
                th.start()
                run()
                stop.set()
                th.join()
                hwm = peak[0]
                method = ("VmRSS sampled every ~1 ms (a lower bound): /proc/self/clear_refs not "
                          f"writable ({reset_error})")
            result.update(baseline_mib=baseline / 1024, peak_mib=(hwm - baseline) / 1024,
                          hwm_mib=hwm / 1024, method=method)
    finally:
        limiter.restore_original_limits()
    print(PROBE_MARKER + json.dumps(result), flush=True)
    return 0


def measure_memory(args):
    """Run the memory probe for every (cell, framework) in a fresh subprocess each."""
    cfg = ",".join(map(str, args.memory_config))
    rows, notes = [], set()
    script = os.path.abspath(__file__)
    for cell in args.cells:
        row = {"cell": cell, "config": list(args.memory_config), "stack": "1"}
        for fw in args.frameworks:
            cmd = [sys.executable, script, "--memory-probe", fw, cell, "--memory-config", cfg,
                   "--threads", str(args.threads), "--seed", str(args.seed), "--keep-env"]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            secs = time.perf_counter() - t0
            found = [ln[len(PROBE_MARKER):] for ln in proc.stdout.splitlines()
                     if ln.startswith(PROBE_MARKER)]
            if proc.returncode != 0 or not found:
                err = (proc.stderr.strip().splitlines() or ["?"])[-1]
                row[fw] = {"peak_mib": None, "error": f"exit {proc.returncode}: {err}",
                           "probe_s": secs}
                notes.add(f"{fw} {cell}: probe failed ({err})")
            else:
                r = json.loads(found[-1])
                r["probe_s"] = secs
                row[fw] = r
                notes.add(r["method"])
        rows.append(row)
        print(f"  memory {cell:4s} N,T,I,H={cfg}: " + ", ".join(
            f"{fw} {_fmt_mib(row[fw].get('peak_mib'))} MiB" for fw in args.frameworks),
            flush=True)
    return {"config": list(args.memory_config), "stack": "1", "rows": rows,
            "notes": sorted(notes)}


# --------------------------------------------------------------------------------------------
# output

HEAD = ("cell", "mode", "stack", "N", "T", "I", "H", "fast seq/s", "numpy seq/s", "torch seq/s",
        "fast/torch", "numpy/torch", "fast GFLOP/s", "SGEMM ceiling GFLOP/s",
        "% of SGEMM ceiling")


def _fmt_rate(x):
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _fmt_mib(x):
    return "-" if x is None else f"{x:,.1f}"


def table_row(r):
    fw = r["frameworks"]

    def rate(name):
        return _fmt_rate(fw[name]["seq_per_s"]) if name in fw else "-"

    def ratio(name):
        v = r["ratios"].get(f"{name}/torch")
        return "-" if v is None else f"{v:.2f}"

    pct, ceiling = r["fast_pct_of_sgemm_ceiling"], r.get("case_sgemm_ceiling")
    return (r["cell"], r["mode"], r["stack"], str(r["N"]), str(r["T"]), str(r["I"]), str(r["H"]),
            rate("fast"), rate("numpy"), rate("torch"), ratio("fast"), ratio("numpy"),
            _fmt_rate(fw["fast"]["gflop_per_s"]) if "fast" in fw else "-",
            "" if ceiling is None else _fmt_rate(ceiling["gflop_per_s"]),
            "" if pct is None else f"{pct:.0f}%")


def _markdown(head, rows, left):
    cells = [tuple(head)] + [tuple(r) for r in rows]
    w = [max(len(c[i]) for c in cells) for i in range(len(head))]
    right = [i >= left for i in range(len(head))]

    def line(c):
        return "| " + " | ".join(s.rjust(w[i]) if right[i] else s.ljust(w[i])
                                 for i, s in enumerate(c)) + " |"

    sep = "|" + "|".join(("-" * (w[i] + 1) + ":") if right[i] else ("-" * (w[i] + 2))
                         for i in range(len(head))) + "|"
    return "\n".join([line(head), sep] + [line(c) for c in cells[1:]])


def markdown_table(rows):
    return _markdown(HEAD, [table_row(r) for r in rows], left=3)


def memory_table(mem, frameworks):
    head = ["cell"] + [f"{fw} MiB" for fw in frameworks] + [
        f"{fw}/torch" for fw in frameworks if fw != "torch"]
    rows = []
    for row in mem["rows"]:
        peaks = {fw: row[fw].get("peak_mib") for fw in frameworks}
        t = peaks.get("torch")
        rows.append([row["cell"]] + [_fmt_mib(peaks[fw]) for fw in frameworks] + [
            "-" if peaks[fw] is None or not t else f"{peaks[fw] / t:.2f}"
            for fw in frameworks if fw != "torch"])
    return _markdown(head, rows, left=1)


def predict_case_s(flops, n_frameworks, args, rate_flops):
    """A rough duration of one case: warm-up + calibration + repeats, per framework, with one
    iteration taking max(flops / rate, a small overhead)."""
    per_iter = max(flops / rate_flops, 1e-3)
    per_repeat = max(args.min_time, per_iter)
    calib = 0 if per_iter >= 3 * args.min_time else args.min_time / 2 + per_iter
    return n_frameworks * (per_iter + calib + args.repeats * (per_repeat + args.settle))


def case_list(args):
    return [(cfg, stack, cell, mode) for cfg in args.config_list for stack in args.stacks
            for cell in args.cells for mode in args.modes]


def main(argv=None):
    args = parse_args(argv)
    env_note = reexec_without_slow_env(args)
    if args.memory_probe is not None:
        return memory_probe(args)

    # heavy imports only now, after the environment is final
    import numpy as np
    import threadpoolctl
    import torch
    import elman

    torch_threads = torch.get_num_threads()      # restored at the end (main() may be imported)
    limiter = setup_threads(np, torch, elman, args.threads)
    try:
        info = environment(np, torch, threadpoolctl, env_note, args.threads)
        ceilings = measure_ceilings(np)
        print_header(info, args, ceilings)
        cases = case_list(args)
        # rough model for the time estimate: GEMM work at half the SGEMM ceiling
        rate_guess = 0.5 * ceilings["sgemm"]["gflop_per_s"] * 1e9
        predicted = [predict_case_s(gemm_flops(cell, mode, *cfg, *STACKS[stack]),
                                    len(args.frameworks), args, rate_guess)
                     for cfg, stack, cell, mode in cases]
        if args.dry_run:
            for (cfg, stack, cell, mode), p in zip(cases, predicted):
                print(f"  {cell:4s} {mode:5s} {stack:3s} N={cfg[0]} T={cfg[1]} I={cfg[2]} "
                      f"H={cfg[3]}: {gemm_flops(cell, mode, *cfg, *STACKS[stack]) / 1e9:.3g} "
                      f"GFLOP/iter, ~{p:.0f} s")
            print(f"\n{len(cases)} case(s); rough estimate {sum(predicted) / 60:.0f} min "
                  "(GEMM work at 50% of the SGEMM ceiling, overhead ignored)"
                  + ("; plus the memory probes" if args.memory else ""))
            return 0
        print(f"{len(cases)} case(s), frameworks {', '.join(args.frameworks)}, {args.repeats} "
              f"repeat(s) each, >= {args.min_time:g} s per repeat, {args.settle:g} s pause "
              f"before each, alternating "
              f"{'/'.join(args.frameworks)}; x/torch = x seq/s / torch seq/s (> 1: x faster)\n",
              flush=True)
        rows = []
        t_start = time.perf_counter()
        for k, (cfg, stack, cell, mode) in enumerate(cases, 1):
            t0 = time.perf_counter()
            r = bench_case(np, torch, elman, cell, mode, cfg, stack, args, ceilings)
            r["case_s"] = time.perf_counter() - t0
            rows.append(r)
            fw = r["frameworks"]
            warn = "  WARNING: outputs/gradients differ" if r["max_rel_err"] > 1e-3 else ""
            rates = ", ".join(f"{f} {_fmt_rate(v['seq_per_s'])} (x{v['iters_per_repeat']})"
                              for f, v in fw.items())
            ratios = ", ".join(f"{k2} {v:.2f}" for k2, v in r["ratios"].items())
            gf = (f", fast {_fmt_rate(fw['fast']['gflop_per_s'])} GFLOP/s" if "fast" in fw
                  else "")
            print(f"  [{k}/{len(cases)}] {cell:4s} {mode:5s} {stack:3s} N={cfg[0]} T={cfg[1]} "
                  f"I={cfg[2]} H={cfg[3]}: {rates} seq/s; {ratios}{gf}; max rel err "
                  f"{r['max_rel_err']:.1e}; {r['case_s']:.1f} s{warn}", flush=True)
            if k == 3 and k < len(cases) or (k > 3 and k < len(cases)
                                               and cases[k][0] != cfg):
                done = time.perf_counter() - t_start
                scale = done / max(sum(predicted[:k]), 1e-9)
                left = scale * sum(predicted[k:])
                print(f"  (estimated time left: ~{left / 60:.1f} min, rough: the flop model "
                      "scaled by the cases so far)", flush=True)
        total = time.perf_counter() - t_start
        memory = None
        if args.memory:
            print("\npeak memory per training step (fresh subprocess per framework):",
                  flush=True)
            memory = measure_memory(args)
        info["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        table = markdown_table(rows)
        foot = (f"median of {args.repeats} repeats, each after a {args.settle:g} s pause; x/torch = x seq/s / torch seq/s (> 1: x "
                f"faster); GFLOP/s from the analytic GEMM flops of one iteration; for H >= "
                f"{GEMM_BOUND_H} the SGEMM ceiling (np.matmul float32 {CEILING_SIZE}^3) timed "
                f"in the case's own repeats, between the frameworks', and the fast path's share of "
                f"it (the median of the repeats' shares); at the run's start the ceiling measured "
                f"{ceilings['sgemm']['gflop_per_s']:.1f} GFLOP/s; benchmark time {total:.1f} s")
        print()
        print(table)
        print("\n" + foot)
        mem_md = None
        if memory is not None:
            mem_md = memory_table(memory, args.frameworks)
            n, t, i, h = memory["config"]
            mem_head = (f"peak memory of one training step above the baseline, MiB "
                        f"((N,T,I,H) = ({n},{t},{i},{h}), 1 layer; method: "
                        + "; ".join(memory["notes"]) + ")")
            print("\n" + mem_head + "\n")
            print(mem_md)
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(table + "\n\n" + foot + "\n")
                if mem_md is not None:
                    f.write("\n" + mem_head + "\n\n" + mem_md + "\n")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"environment": info,
                           "settings": {"frameworks": args.frameworks, "cells": args.cells,
                                        "modes": args.modes, "stacks": args.stacks,
                                        "configs": args.config_list,
                                        "repeats": args.repeats, "min_time_s": args.min_time,
                                        "settle_s": args.settle,
                                        "threads": args.threads, "seed": args.seed,
                                        "quick": args.quick, "lr": LR,
                                        "optimizers": "elman.Adam / torch.optim.Adam "
                                                      "(default implementation)"},
                           "ceilings": ceilings, "total_s": total, "results": rows,
                           "memory": memory}, f, indent=2)
                f.write("\n")
    finally:
        limiter.restore_original_limits()
        torch.set_num_threads(torch_threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
