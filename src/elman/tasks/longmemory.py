"""Long-memory benchmarks: how far back can each recurrent cell learn to look, within a fixed CPU
budget, and what its gradient through time looks like before and after training.

Tasks (synthetic, fresh training batches every step from a seeded generator; one fixed
validation set per task and length; the model reads the whole sequence and answers at its last
step through Last -> Dense):

  adding   the adding problem (Hochreiter & Schmidhuber 1997, in the form of Le et al. 2015):
           input (T, 2), a value in U(0, 1) and a marker at every step; the marker is 1 at one
           step in the first half and one in the second half; the target is the sum of the two
           marked values. Loss and error: mean squared error. Predicting 1 (the mean) scores 1/6
           = 0.167, the baseline. Solved: validation MSE at most 0.01.
  recall   remember a marked symbol: input (T, K + 1), a random one-hot symbol out of K = 8 at
           every step and a marker channel that is 1 at one step in the first tenth of the
           sequence; the target is the symbol at the marked step. Loss: cross-entropy; error:
           the validation error rate. Guessing scores 1 - 1/K = 0.875, the baseline. Solved:
           validation error rate at most 0.01.

Models (--models): rnn (tanh), gru, lstm, lstm-fb1 (LSTM with forget_bias=1), ln-lstm
(layer_norm=True), mingru, minlstm; one layer of --hidden units each, Adam (--lr), gradient
norm clipped at 1, batches of --batch-size. Every model of one task and length sees the same
training batches and the same validation set.

Budget: each run trains for at most --seconds of CPU time of this process (time.process_time:
steady on a busy machine, where wall time is not; evaluations and the gradient-flow
measurements are not counted) or --max-steps updates, and stops early once solved. The
validation error is measured every --eval-every updates. "Steps to solve" is the number of
updates at the first evaluation that met the threshold.

Gradient flow: elman.gradient_flow on the first --flow-batch validation sequences with the
task's loss, at initialisation and after training: the mean norm of dL/dh_t at every step t.

Writes into --out (default runs/longmemory): metrics.json ({"runs": [{task, length, model,
solved, steps_to_solve, cpu_seconds_to_solve, steps, cpu_seconds, val_error, baseline,
threshold, curve: [[step, cpu_seconds, val_error], ...], flow_init, flow_trained}, ...],
"config": {...}}), results.md (the table), errors_<task>.png (final validation error against
length) and flow_<task>_T<length>.png (the gradient flow of every model, at initialisation
and after training). --replot writes results.md and the figures again from metrics.json.

Examples:
  elman longmemory          # everything: 17.5 CPU min of training; 41 min on 2 busy cores
  elman longmemory --tasks adding --lengths 50,200 --models lstm,lstm-fb1,mingru --seconds 20
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import fast, plots, threads
from .._validate import CommandError
from ..gradient_flow import gradient_flow
from ..layers import Dense, Last
from ..losses import CrossEntropyLoss, MSELoss
from ..model import Sequential
from ..optim import Adam, clip_grad_norm_
from . import common

HELP = "long-memory benchmarks (adding problem, recall) for every cell, with gradient flow"

LENGTHS = (50, 200, 1000)
SYMBOLS = 8                      # the recall task's alphabet
CLIP = 1.0                       # global gradient-norm clipping


@dataclass(frozen=True)
class Task:
    name: str
    inputs: int
    outputs: int
    make: Callable                  # (rng, N, T) -> (x (N, T, inputs) float32, y)
    loss: Callable                  # () -> an elman Loss
    error: Callable                 # (prediction, y) -> the validation error
    error_name: str
    baseline: float                 # the error of the best answer that ignores the input
    threshold: float                # solved at or below this error


def _adding(rng: np.random.Generator, N: int, T: int):
    x = np.zeros((N, T, 2), np.float32)
    x[:, :, 0] = rng.random((N, T))
    half = max(T // 2, 1)
    first = rng.integers(0, half, N)
    second = rng.integers(half, T, N) if T > 1 else first
    rows = np.arange(N)
    x[rows, first, 1] = 1
    x[rows, second, 1] = 1
    y = (x[rows, first, 0] + x[rows, second, 0])[:, None]
    y[first == second] /= 2         # (T = 1: one marked value)
    return x, y.astype(np.float32)


def _recall(rng: np.random.Generator, N: int, T: int):
    symbols = rng.integers(0, SYMBOLS, (N, T))
    x = np.zeros((N, T, SYMBOLS + 1), np.float32)
    np.put_along_axis(x, symbols[:, :, None], 1.0, axis=2)
    marked = rng.integers(0, max(T // 10, 1), N)
    rows = np.arange(N)
    x[rows, marked, SYMBOLS] = 1
    return x, symbols[rows, marked]


TASKS = {
    "adding": Task("adding", 2, 1, _adding, MSELoss,
                   lambda pred, y: float(np.mean((pred - y) ** 2)), "MSE", 1 / 6, 0.01),
    "recall": Task("recall", SYMBOLS + 1, SYMBOLS, _recall, CrossEntropyLoss,
                   lambda pred, y: float(np.mean(pred.argmax(axis=1) != y)), "error rate",
                   1 - 1 / SYMBOLS, 0.01),
}

#: the models: a --cell name of the registry and its options, and a label for tables
MODELS = {
    "rnn": ("rnn", {}, "RNN (tanh)"),
    "gru": ("gru", {}, "GRU"),
    "lstm": ("lstm", {}, "LSTM"),
    "lstm-fb1": ("lstm", {"forget_bias": 1.0}, "LSTM, forget_bias=1"),
    "ln-lstm": ("lstm", {"layer_norm": True}, "LN-LSTM"),
    "mingru": ("mingru", {}, "MinGRU"),
    "minlstm": ("minlstm", {}, "MinLSTM"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to run")
    g.add_argument("--tasks", default=",".join(TASKS), help="comma-separated, of: "
                   + ", ".join(TASKS))
    g.add_argument("--lengths", default=",".join(map(str, LENGTHS)),
                   help="comma-separated sequence lengths T")
    g.add_argument("--models", default=",".join(MODELS), help="comma-separated, of: "
                   + ", ".join(MODELS))
    g = p.add_argument_group("budget and training")
    g.add_argument("--seconds", type=float, default=30.0, help="CPU seconds of training per "
                   "run (task x length x model), not counting evaluations")
    g.add_argument("--max-steps", type=int, default=0, help="also stop after this many updates "
                   "(0: no limit)")
    g.add_argument("--hidden", type=int, default=32, help="hidden units of the recurrent layer")
    g.add_argument("--batch-size", type=int, default=32, help="sequences per update")
    g.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    g.add_argument("--eval-every", type=int, default=25, help="updates between validations")
    g.add_argument("--val-size", type=int, default=256, help="validation sequences")
    g.add_argument("--flow-batch", type=int, default=32, help="validation sequences the "
                   "gradient flow is measured on")
    g.add_argument("--seed", type=int, default=0, help="seed for the data and the weights")
    g.add_argument("--out", default="runs/longmemory", help="output directory for metrics.json,"
                   " results.md and the figures")
    g.add_argument("--quiet", action="store_true", help="no per-run progress output")
    g.add_argument("--replot", action="store_true", help="no training: write results.md and "
                   "the figures again from OUT/metrics.json")
    g.add_argument("--threads", type=int, default=1, help="BLAS threads (1 keeps the CPU "
                   "budgets comparable; 0: every CPU)")


def _names(value: str, known, option: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    bad = [n for n in names if n not in known]
    if not names or bad:
        raise CommandError(f"error: {option} must be a comma-separated list of "
                           f"{', '.join(known)}; got {value!r}")
    return names


def _lengths(value: str) -> list[int]:
    try:
        lengths = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        lengths = []
    if not lengths or min(lengths) < 1:
        raise CommandError(f"error: --lengths must be a comma-separated list of positive "
                           f"integers, got {value!r}")
    return lengths


@dataclass(frozen=True, kw_only=True)
class LongMemorySettings(common.Settings):
    """``elman longmemory``'s options (see :func:`add_arguments`), checked when made; the
    comma-separated lists as given, read through :attr:`task_names`, :attr:`length_list` and
    :attr:`model_names`."""

    TASK = "longmemory"
    tasks: str = ",".join(TASKS)
    lengths: str = ",".join(map(str, LENGTHS))
    models: str = ",".join(MODELS)
    seconds: float = 30.0
    max_steps: int = 0
    hidden: int = 32
    batch_size: int = 32
    lr: float = 3e-3
    eval_every: int = 25
    val_size: int = 256
    flow_batch: int = 32
    threads: int = 1
    out: str = "runs/longmemory"
    replot: bool = False

    @property
    def task_names(self) -> list[str]:
        return _names(self.tasks, TASKS, "--tasks")

    @property
    def model_names(self) -> list[str]:
        return _names(self.models, MODELS, "--models")

    @property
    def length_list(self) -> list[int]:
        return _lengths(self.lengths)

    def validate(self) -> None:
        super().validate()
        self.task_names, self.model_names, self.length_list    # each refuses a bad list
        if not 0 < self.seconds < math.inf:
            raise CommandError(f"error: --seconds must be a positive number, got "
                               f"{self.seconds}")
        if self.max_steps < 0:
            raise CommandError(f"error: --max-steps must be 0 (no limit) or positive, got "
                               f"{self.max_steps}")
        for name in ("hidden", "batch_size", "eval_every", "val_size", "flow_batch"):
            common.positive(name, getattr(self, name))
        if not 0 < self.lr < math.inf:
            raise CommandError(f"error: --lr must be a positive number, got {self.lr}")


LongMemorySettings.ARGUMENTS = add_arguments


def build_model(task: Task, model: str, hidden: int, seed: int) -> Sequential:
    """recurrent layer (batch_first) -> Last -> Dense(task.outputs)."""
    cell, options, _ = MODELS[model]
    rnn = common.recurrent_layer(cell, task.inputs, hidden, batch_first=True, seed=seed,
                                 **options)
    return Sequential([rnn, Last(batch_first=True), Dense(hidden, task.outputs, seed=seed + 1)],
                      seed=seed)


def _predict(model: Sequential, x: np.ndarray, chunk: int = 128) -> np.ndarray:
    model.eval()
    try:
        return np.concatenate([model.forward(x[i:i + chunk]) for i in range(0, len(x), chunk)])
    finally:
        model.train()


def _flow(model, task, x, y) -> list[float]:
    flows = gradient_flow(model, x, y, loss=task.loss())
    return [float(v) for v in next(iter(flows.values()))]


def run_one(task: Task, T: int, model_name: str, settings: LongMemorySettings, val) -> dict:
    """Train one model on one task and length within the budget; the run's record."""
    seed = settings.seed
    model = common.build(lambda: build_model(task, model_name, settings.hidden, seed + 17),
                         "--hidden")
    loss = task.loss()
    opt = Adam(model.parameters(), lr=settings.lr)
    params = model.parameters()
    x_val, y_val = val
    fx, fy = x_val[:settings.flow_batch], y_val[:settings.flow_batch]
    flow_init = _flow(model, task, fx, fy)
    # the same training batches for every model of this task and length
    rng = np.random.default_rng([seed, list(TASKS).index(task.name), T])
    # compile the fast kernels (numba, cached on disk) before the clock starts
    xb, yb = task.make(np.random.default_rng(0), 2, T)
    model.backward(loss(model.forward(xb), yb)[1])
    model.zero_grad()

    cpu, steps, curve, solved_at = 0.0, 0, [], None
    error = task.error(_predict(model, x_val), y_val)
    curve.append([0, 0.0, error])
    while True:
        xb, yb = task.make(rng, settings.batch_size, T)
        start = time.process_time()
        # forward, loss, backward, clip, step
        pred = model.forward(xb)
        _, grad = loss(pred, yb)
        model.zero_grad()
        model.backward(grad)
        clip_grad_norm_(params, CLIP)
        opt.step()
        cpu += time.process_time() - start
        steps += 1
        out_of_budget = cpu >= settings.seconds or (settings.max_steps
                                                    and steps >= settings.max_steps)
        if steps % settings.eval_every == 0 or out_of_budget:
            error = task.error(_predict(model, x_val), y_val)
            curve.append([steps, cpu, error])
            if not math.isfinite(error):
                break
            if error <= task.threshold:
                solved_at = (steps, cpu)
                break
        if out_of_budget:
            break
    return dict(task=task.name, length=T, model=model_name, label=MODELS[model_name][2],
                solved=solved_at is not None,
                steps_to_solve=None if solved_at is None else solved_at[0],
                cpu_seconds_to_solve=None if solved_at is None else solved_at[1],
                steps=steps, cpu_seconds=cpu, val_error=error, error_name=task.error_name,
                baseline=task.baseline, threshold=task.threshold, curve=curve,
                flow_init=flow_init, flow_trained=_flow(model, task, fx, fy))


def _describe(r: dict) -> str:
    if r["solved"]:
        return (f"solved at step {r['steps_to_solve']} ({r['cpu_seconds_to_solve']:.1f} CPU s), "
                f"val {r['error_name']} {r['val_error']:.4f}")
    return (f"not solved: {r['steps']} steps in {r['cpu_seconds']:.1f} CPU s, val "
            f"{r['error_name']} {r['val_error']:.4f}")


def results_table(runs: list[dict], lengths: list[int]) -> str:
    """Markdown: per task, one row per model, one column per length: the steps to solve, or
    the final validation error when the budget ran out first; then how much gradient reached
    the first step, before and after training."""
    lines = []
    for task in dict.fromkeys(r["task"] for r in runs):
        t = TASKS[task]
        lines += _table(runs, task, lengths, _outcome,
                        f"**{task}** (solved: validation {t.error_name} <= {t.threshold}; "
                        f"baseline {t.baseline:.3f}). Cells: updates to solve (CPU seconds), or "
                        f"the final {t.error_name} / updates done when the budget ran out.")
        lines += _table(runs, task, lengths,
                        lambda r: f"{_reach(r['flow_init'])} -> {_reach(r['flow_trained'])}",
                        f"**{task}**: how much gradient reaches the first step, ||dL/dh_1|| / "
                        f"||dL/dh_T|| (gradient_flow), at initialisation -> after training (0: "
                        f"below float32's range).")
    return "\n".join(lines)


def _table(runs, task, lengths, cell, caption) -> list[str]:
    """One markdown table: a row per model of ``task``, ``cell(run)`` per length."""
    lines = [caption, "", "| model | " + " | ".join(f"T = {T}" for T in lengths) + " |",
             "|---|" + "---:|" * len(lengths)]
    for model in dict.fromkeys(r["model"] for r in runs if r["task"] == task):
        found = {r["length"]: r for r in runs if (r["task"], r["model"]) == (task, model)}
        lines.append(f"| {MODELS[model][2]} | " + " | ".join(
            cell(found[T]) if T in found else "" for T in lengths) + " |")
    return lines + [""]


def _outcome(r: dict) -> str:
    if r["solved"]:
        return f"**{r['steps_to_solve']}** ({r['cpu_seconds_to_solve']:.0f} s)"
    error = math.nan if r["val_error"] is None else r["val_error"]   # (NaN: null in JSON)
    return f"{error:.3f} / {r['steps']}"


def _reach(flow) -> str:
    """||dL/dh_1|| / ||dL/dh_T|| of a gradient-flow curve, short."""
    first, last = flow[0] or 0.0, flow[-1] or 0.0
    if not last:
        return "n/a"
    return "0" if not first else f"{first / last:.0e}"


def _figures(runs: list[dict], out_dir: str) -> list[str]:
    written = []
    for task in dict.fromkeys(r["task"] for r in runs):
        for T in dict.fromkeys(r["length"] for r in runs if r["task"] == task):
            mine = [r for r in runs if (r["task"], r["length"]) == (task, T)]
            path = os.path.join(out_dir, f"flow_{task}_T{T}.png")
            plots.gradient_flow(
                {f"{task}, T = {T}: at initialisation": {r["label"]: r["flow_init"]
                                                         for r in mine},
                 f"after training ({_budget_words(mine)})": {
                     r["label"] + (f" (solved, step {r['steps_to_solve']})" if r["solved"]
                                   else ""): r["flow_trained"] for r in mine}}, path)
            written.append(os.path.basename(path))
    tasks = list(dict.fromkeys(r["task"] for r in runs))
    for task in tasks:
        mine = [r for r in runs if r["task"] == task]
        lengths = sorted({r["length"] for r in mine})
        series = {}
        for model in dict.fromkeys(r["model"] for r in mine):
            series[MODELS[model][2]] = [next((r["val_error"] for r in mine if
                                              (r["model"], r["length"]) == (model, T)), np.nan)
                                        for T in lengths]
        t = TASKS[task]
        path = os.path.join(out_dir, f"errors_{task}.png")
        plots.plot_series(np.asarray(lengths, float), series, path,
                          title=f"{task}: validation {t.error_name} at the end of each run",
                          xlabel="sequence length T (steps)",
                          ylabel=f"validation {t.error_name}", logy=True,
                          hlines={"baseline": t.baseline, "solved": t.threshold})
        written.append(os.path.basename(path))
    return written


def _budget_words(runs) -> str:
    solved = sum(r["solved"] for r in runs)
    return f"until solved or the budget ran out; {solved} of {len(runs)} solved"


def _replot(settings: LongMemorySettings) -> int:
    path = os.path.join(settings.out, "metrics.json")
    if not os.path.exists(path):
        raise CommandError(f"error: --replot: no {path} to read")
    with open(path) as f:
        runs = json.load(f)["runs"]
    if not runs:
        raise CommandError(f"error: --replot: {path} holds no runs")
    lengths = sorted({r["length"] for r in runs})
    with common.atomic_text(os.path.join(settings.out, "results.md")) as f:
        f.write(results_table(runs, lengths))
    figures = _figures(runs, settings.out)
    print(f"wrote {settings.out}/: results.md" + "".join(f", {f}" for f in figures))
    return 0


def run(args) -> int:
    settings = LongMemorySettings.from_args(args)
    if settings.replot:
        return _replot(settings)
    tasks, lengths, models = settings.task_names, settings.length_list, settings.model_names
    if "ln-lstm" in models:      # asked for: no warning about its NumPy steps
        warnings.filterwarnings("ignore", category=fast.FastPathWarning)
    if settings.threads:
        threads.set_num_threads(settings.threads)
    out_dir = common.prepare_out_dir(settings.out, resume=False)
    runs, total, k = [], len(tasks) * len(lengths) * len(models), 0
    wall = time.perf_counter()
    for name in tasks:
        task = TASKS[name]
        for T in lengths:
            val = task.make(np.random.default_rng([settings.seed, 1000 + list(TASKS).index(name),
                                                   T]), settings.val_size, T)
            for model in models:
                k += 1
                r = run_one(task, T, model, settings, val)
                runs.append(r)
                if not settings.quiet:
                    print(f"[{k}/{total}] {name} T={T} {model}: {_describe(r)}", flush=True)
                # metrics after every run: an interrupted benchmark keeps what it measured
                common.write_metrics(out_dir, {"runs": runs,
                                               "config": {"settings": settings.to_dict()}})
    table = results_table(runs, lengths)
    with common.atomic_text(os.path.join(out_dir, "results.md")) as f:
        f.write(table)
    figures = _figures(runs, out_dir) if plots.have_matplotlib() else []
    if not settings.quiet:
        print()
        print(table)
    print(f"wrote {out_dir}/: metrics.json, results.md"
          + "".join(f", {f}" for f in figures)
          + f" ({time.perf_counter() - wall:.0f} s)")
    return 0


