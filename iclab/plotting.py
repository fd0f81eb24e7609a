"""Figures for runs and reports: training curves, weight heatmaps, generic loss curves.

Built on matplotlib's object-oriented API (``Figure`` + Agg canvas): no pyplot, no global figure state,
safe on headless machines and in threads. Inputs are plain numpy arrays, floats and dicts, so this module
depends on nothing else in iclab. Each ``plot_*`` function writes a PNG (dpi 130, parent directories
created) with :func:`save_figure` and returns its path.

Non-finite values (NaN, ±inf) are drawn as gaps. A log y-axis that was asked for falls back to linear when the
data has no positive values or any non-positive one, rather than silently dropping points.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "DPI",
    "index_labels",
    "new_figure",
    "plot_bars",
    "plot_curves",
    "plot_training_curve",
    "plot_weight_heatmaps",
    "save_figure",
    "style_axes",
    "symmetric_limits",
]

DPI = 130
_CMAP = "RdBu_r"
_MAX_TICK_LABELS = 32  # beyond this, per-index tick labels become unreadable; fall back to matplotlib's ticks


# ---------------------------------------------------------------- shared helpers


def new_figure(width: float, height: float) -> Figure:
    """A Figure with the house style; constrained layout keeps titles, legends and colourbars inside."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas
    return fig


def style_axes(ax: Axes, *, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    ax.grid(True, which="minor", alpha=0.1)
    ax.spines[["top", "right"]].set_visible(False)


def _finish(fig: Figure, ax: Axes | None, title: str) -> Figure:
    """Figure title, and a legend on ``ax`` when it has labelled artists."""
    if title:
        fig.suptitle(title)
    if ax is not None and ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False, fontsize="small")
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (dpi 130), creating parent directories. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _as_finite(values, name: str, length: int | None = None) -> np.ndarray:
    """1-D float copy with ±inf replaced by NaN (matplotlib draws NaN as a gap)."""
    a = np.asarray(values, dtype=float).reshape(-1).copy()
    if length is not None and a.shape[0] != length:
        raise ValueError(f"{name} has {a.shape[0]} values; expected {length} (one per x value)")
    a[~np.isfinite(a)] = np.nan
    return a


def _log_ok(*arrays: np.ndarray) -> bool:
    """True when the finite values of ``arrays`` are all positive and there is at least one."""
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays]) if arrays else np.empty(0)
    return finite.size > 0 and bool(np.all(finite > 0))


def _use_integer_xticks(ax: Axes, x: np.ndarray) -> None:
    if np.issubdtype(np.asarray(x).dtype, np.integer):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def symmetric_limits(*arrays) -> float:
    """Colour limit L such that [-L, L] covers every finite entry of ``arrays``; 1.0 if none is nonzero.

    Used to give a trained and a constructed matrix one diverging colour scale centred at 0.
    """
    values = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays]) if arrays else np.empty(0)
    values = np.abs(values[np.isfinite(values)])
    peak = float(values.max()) if values.size else 0.0
    return peak if peak > 0 else 1.0


def index_labels(n: int) -> list[str]:
    """Token-coordinate labels: x1 … x(n-1) for the input block, y for the last (target) slot."""
    return [f"$x_{{{i + 1}}}$" for i in range(n - 1)] + ["$y$"]


# ---------------------------------------------------------------- training curve


def plot_training_curve(
    steps,
    losses,
    path: str | Path,
    *,
    reference: Mapping[str, float] | None = None,
    title: str = "",
    ylabel: str = "held-out ½·MSE",
) -> Path:
    """Loss vs step (log y where possible), each reference loss a labelled dashed horizontal line.

    Args:
        steps: [n_evals] training steps.
        losses: [n_evals] losses at those steps.
        reference: name → loss, e.g. ``{"1 step of GD": 0.2}``.
    """
    steps = np.asarray(steps).reshape(-1)
    y = _as_finite(losses, "losses", length=steps.shape[0])
    refs = {name: float(v) for name, v in (reference or {}).items()}
    fig = new_figure(6.0, 4.0)
    ax = fig.add_subplot()
    ax.plot(steps, y, color="C0", lw=1.8, label="model")
    for i, (name, value) in enumerate(refs.items()):
        if np.isfinite(value):
            ax.axhline(value, color=f"C{i + 1}", ls="--", lw=1.4, label=name)
    ax.set_yscale("log" if _log_ok(y, np.array(list(refs.values()))) else "linear")
    style_axes(ax, xlabel="training step", ylabel=ylabel)
    _use_integer_xticks(ax, steps)
    return save_figure(_finish(fig, ax, title), path)


# ---------------------------------------------------------------- weight heatmaps


def plot_weight_heatmaps(
    trained: Mapping[str, np.ndarray],
    constructed: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """One row per matrix name (e.g. ``W_KQ``, ``W_PV``): trained | constructed, one colour scale per row.

    Both dicts must have the same keys and each pair the same 2-D shape. The diverging scale is symmetric
    around 0 and shared within a row, so equal colours mean equal values. Ticks name token coordinates
    (x1 … xd, y for the last index), which assumes matrices over (x, y) tokens.
    """
    if set(trained) != set(constructed) or not trained:
        raise ValueError(
            f"trained and constructed must name the same, non-empty set of matrices; got {sorted(trained)} "
            f"and {sorted(constructed)}"
        )
    pairs = {}
    for name in trained:
        a, b = np.asarray(trained[name], dtype=float), np.asarray(constructed[name], dtype=float)
        if a.ndim != 2 or a.shape != b.shape:
            raise ValueError(f"{name}: need two 2-D arrays of one shape; got {a.shape} and {b.shape}")
        pairs[name] = (a, b)

    fig = new_figure(7.5, 3.4 * len(pairs))
    axes = fig.subplots(len(pairs), 2, squeeze=False)
    for row, (name, (a, b)) in zip(axes, pairs.items()):
        limit = symmetric_limits(a, b)
        for ax, matrix, kind in zip(row, (a, b), ("trained", "constructed")):
            # NaN/inf entries are masked: they show as the axes background, a hole rather than a colour.
            image = ax.imshow(
                np.ma.masked_invalid(matrix), cmap=_CMAP, vmin=-limit, vmax=limit, interpolation="nearest"
            )
            ax.set_title(f"{name} — {kind}", fontsize="medium")
            for axis, n in ((ax.yaxis, matrix.shape[0]), (ax.xaxis, matrix.shape[1])):
                if 1 < n <= _MAX_TICK_LABELS:
                    axis.set_ticks(range(n), index_labels(n), fontsize="x-small")
        fig.colorbar(image, ax=list(row), shrink=0.9)
    return save_figure(_finish(fig, None, title), path)


# ---------------------------------------------------------------- generic curves


def plot_curves(
    x,
    curves: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logy: bool = True,
    logx: bool = False,
    bands: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    markers: bool = True,
    ylim: tuple[float, float] | None = None,
) -> Path:
    """Named curves over a shared x: loss vs input scale α, vs target scale, vs layers K, interpolation.

    Args:
        x: [n] x values; an integer array gets integer ticks (e.g. number of layers K).
        curves: name → [n] y values.
        bands: name → ([n] lower, [n] upper), shaded in the colour of the curve of that name.
        logy: log y-axis unless some finite curve value is ≤ 0 (then linear). On a log axis a band's
            non-positive bounds are drawn at the smallest positive value plotted.
        logx: log x-axis (e.g. α on a geometric grid), unless some x is ≤ 0.
        ylim: (bottom, top) of the y-axis; curves beyond it are clipped (e.g. error vs k, where an estimator's
            first few points can be far above the no-context error).
    """
    xs = np.asarray(x).reshape(-1)
    n = xs.shape[0]
    ys = {name: _as_finite(v, f"curve {name!r}", length=n) for name, v in curves.items()}
    if unknown := sorted(set(bands or {}) - set(ys)):
        raise ValueError(f"bands {unknown} name no curve; curves are {sorted(ys)}")
    lohi = {
        name: tuple(_as_finite(b, f"band {name!r} {side}", length=n) for b, side in zip(pair, ("lower", "upper")))
        for name, pair in (bands or {}).items()
    }
    log_y = logy and _log_ok(*ys.values())
    if log_y and lohi:
        # A mean ± std band often dips below 0; on a log axis draw it down to the lowest positive value shown.
        plotted = [*ys.values(), *(bound for pair in lohi.values() for bound in pair)]
        floor = min(float(a[a > 0].min()) for a in plotted if np.any(a > 0))
        lohi = {name: tuple(np.where(b <= 0, floor, b) for b in pair) for name, pair in lohi.items()}

    fig = new_figure(6.0, 4.0)
    ax = fig.add_subplot()
    for i, (name, y) in enumerate(ys.items()):
        color = f"C{i % 10}"
        ax.plot(xs, y, color=color, lw=1.6, marker="o" if markers else None, ms=4, label=name)
        if name in lohi:
            lo, hi = lohi[name]
            ax.fill_between(xs, lo, hi, color=color, alpha=0.2, lw=0)
    ax.set_yscale("log" if log_y else "linear")
    if ylim is not None:
        ax.set_ylim(*ylim)
    if logx and _log_ok(xs.astype(float)):
        ax.set_xscale("log")
    style_axes(ax, xlabel=xlabel, ylabel=ylabel)
    _use_integer_xticks(ax, xs)
    return save_figure(_finish(fig, ax, title), path)


def plot_bars(
    groups: list[str],
    values: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    ylabel: str,
    errors: Mapping[str, np.ndarray] | None = None,
    reference: Mapping[str, float] | None = None,
    title: str = "",
    ylim: tuple[float, float] | None = None,
) -> Path:
    """Grouped bars: one group per name in `groups` (e.g. evaluation splits), one bar per series in each.

    Args:
        values: series name → [len(groups)] heights; NaN leaves the bar out.
        errors: series name → [len(groups)] error-bar half-widths (e.g. one standard error).
        reference: label → y of a dashed horizontal line (e.g. chance 1/L).
    """
    n = len(groups)
    ys = {name: np.asarray(v, dtype=float).reshape(-1) for name, v in values.items()}
    for name, y in ys.items():
        if y.shape[0] != n:
            raise ValueError(f"series {name!r}: {y.shape[0]} values for {n} groups")
    fig = new_figure(max(6.0, 0.5 * n * max(len(ys), 1) + 2.0), 4.0)
    ax = fig.add_subplot()
    width = 0.8 / max(len(ys), 1)
    xs = np.arange(n)
    for i, (name, y) in enumerate(ys.items()):
        err = None if errors is None or name not in errors else np.asarray(errors[name], dtype=float)
        ax.bar(xs + (i - (len(ys) - 1) / 2) * width, y, width, yerr=err, capsize=3, color=f"C{i % 10}", label=name)
    for j, (label, y_ref) in enumerate((reference or {}).items()):
        ax.axhline(y_ref, color=f"{0.3 + 0.2 * (j % 3):.1f}", ls="--", lw=1.0, label=label)
    ax.set_xticks(xs, groups)
    if ylim is not None:
        ax.set_ylim(*ylim)
    style_axes(ax, xlabel="", ylabel=ylabel)
    ax.grid(False, axis="x")
    return save_figure(_finish(fig, ax, title), path)
