"""Figures for training runs: learning curves (the figure of the Keras tutorial: training vs
validation loss and accuracy), forecast vs actual, and gradient norms through time.

matplotlib is an optional dependency (``pip install "elman[plot]"``); it is imported only when a
figure is drawn, with the non-interactive Agg backend, so these functions work on machines
without a display.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

__all__ = ["plot_history", "plot_forecast", "plot_series", "gradient_flow", "epoch_axis",
           "have_matplotlib"]


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError('plots need matplotlib: pip install "elman[plot]"') from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path) -> str:
    """Write the figure atomically (temporary file, then rename) and close it."""
    import matplotlib.pyplot as plt
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp.png")
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def plot_history(history: Mapping[str, Sequence[float]], path, title: str = "",
                 metrics: Sequence[str] | None = None,
                 ylabels: Mapping[str, str] | None = None, monitor: str = "val_loss") -> str:
    """Training vs validation curves, one panel per metric (``loss`` first), epochs from 1, every
    point marked (a one-epoch run shows its point), and the best epoch (lowest ``val_loss``)
    marked on every panel.

    ``history`` is ``History.history``: ``{"loss": [...], "val_loss": [...], "accuracy": [...],
    ...}``. ``metrics`` picks the panels (default: every key without the ``val_`` prefix, except
    the learning rate); ``ylabels`` gives a panel's axis label with its unit (default: the
    metric's name). ``monitor``: the key whose lowest value marks the best epoch.
    """
    plt = _pyplot()
    if metrics is None:
        metrics = [k for k in history if not k.startswith("val_") and k != "lr"]
        metrics.sort(key=lambda k: (k != "loss", k))
    metrics = [m for m in metrics if len(history.get(m, ())) or len(history.get("val_" + m, ()))]
    if not metrics:
        raise ValueError(f"plot_history: nothing to plot in a history with keys "
                         f"{sorted(history)}")
    watched = np.asarray(history.get(monitor, []), dtype=float)
    best = int(np.nanargmin(watched)) + 1 if np.isfinite(watched).any() else None
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    for ax, name in zip(axes[0], metrics):
        for key, style, label in ((name, "o-", "training"), ("val_" + name, "s-", "validation")):
            values = history.get(key)
            if values is not None and len(values):
                ax.plot(np.arange(1, len(values) + 1), values, style, ms=4, label=label)
        if best is not None:
            ax.axvline(best, color="gray", ls=":", lw=1.2, label=f"best epoch ({best})")
        ax.set_xlabel("epoch")
        epoch_axis(ax, max(len(history.get(name, ())), len(history.get("val_" + name, ()))))
        ax.set_ylabel((ylabels or {}).get(name, name))
        ax.set_title(f"{title}: {name}" if title else name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def epoch_axis(ax, last: int, first: int = 1) -> None:
    """Whole-number ticks (epochs) from ``first`` to ``last``, with half a step of margin: a
    single epoch is one tick, not 0.96 ... 1.04."""
    from matplotlib.ticker import MaxNLocator
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlim(first - 0.5, max(last, first) + 0.5)


def plot_forecast(x, actual, predictions: Mapping[str, np.ndarray], path, title: str = "",
                  ylabel: str = "") -> str:
    """Actual values and one line per forecaster (model and baselines) over the test period."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 4))
    ax.plot(x, actual, color="black", lw=1.6, label="actual")
    for name, values in predictions.items():
        ax.plot(x, values, lw=1.0, alpha=0.85, label=name)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(ncol=min(4, len(predictions) + 1), fontsize="small")
    fig.autofmt_xdate()
    return _save(fig, path)


def plot_series(x, series: Mapping[str, np.ndarray], path, title: str = "", xlabel: str = "",
                ylabel: str = "", logy: bool = False, hlines: Mapping[str, float] | None = None
                ) -> str:
    """Several named curves on one axis, plus optional horizontal reference lines (a baseline's
    score, say); ``logy`` for gradient norms that span orders of magnitude."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in series.items():     # (markers: a curve of one point stays visible)
        ax.plot(x, values, lw=1.2, marker="o" if len(values) < 40 else None, ms=3, label=name)
    for name, value in (hlines or {}).items():
        ax.axhline(value, ls="--", lw=1.0, color="gray")
        ax.annotate(name, (x[0] if len(x) else 0, value), textcoords="offset points",
                    xytext=(2, 3), fontsize="small", color="gray")
    if logy:
        ax.set_yscale("log")
    if len(x) and np.issubdtype(np.asarray(x).dtype, np.integer):
        epoch_axis(ax, int(np.max(x)), first=int(np.min(x)))
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize="small")
    return _save(fig, path)


def gradient_flow(flows: Mapping, path, title: str = "", ylabel: str = "mean ||dL/dh_t||_2"
                  ) -> str:
    """The gradient of the loss wrt each recurrent layer's hidden state through time, as
    :func:`elman.gradient_flow` returns it: step ``t`` on x, ``||dL/dh_t||`` on a log y axis, one
    line per layer (a bidirectional layer: its forward direction solid, its reverse dashed).

    ``flows`` is ``{name: array (T,) or (2, T)}`` (one panel), or ``{panel title: such a dict}``
    (panels side by side on one y scale, e.g. at initialisation and after training). Zeros
    (steps past every sequence's end) are left out of the log plot.
    """
    plt = _pyplot()
    if not flows:
        raise ValueError("plots.gradient_flow: no flows to draw")
    nested = all(isinstance(v, Mapping) for v in flows.values())
    panels = dict(flows) if nested else {title: flows}
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.2), squeeze=False,
                             sharey=True)
    for ax, (panel, curves) in zip(axes[0], panels.items()):
        for i, (name, values) in enumerate(curves.items()):
            values = np.asarray(values, dtype=float)
            rows = [values] if values.ndim == 1 else list(values)
            if values.ndim not in (1, 2) or len(rows) > 2:
                raise ValueError(f"plots.gradient_flow: {name!r} must be (T,) or (2, T), got "
                                 f"shape {values.shape}")
            color = f"C{i % 10}"
            for d, row in enumerate(rows):
                shown = np.where(row > 0, row, np.nan)     # log scale: zeros have no place
                label = name if len(rows) == 1 else f"{name} ({('forward', 'reverse')[d]})"
                ax.plot(np.arange(1, len(row) + 1), shown, color=color, lw=1.3,
                        ls="-" if d == 0 else "--", label=label)
        ax.set_yscale("log")
        ax.set_xlabel("time step t")
        ax.set_title(panel if nested else title)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize="small")
    axes[0][0].set_ylabel(ylabel)
    fig.tight_layout()
    return _save(fig, path)
