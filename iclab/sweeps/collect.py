"""`iclab sweep collect DIR`: one tidy table of a sweep — a row per trial with its axes, seed, outcome, final
metrics and run path — saved as OUT/results.parquet, a summary over seeds, and the standard figure: a metric
against one axis, seeds as a band (min–max) around their mean, one line per value of a second axis.

Final metrics are the last logged row of each trial's own run (a member of an ensemble unit has its own
metrics.parquet); a trial whose unit failed or has not finished has its state and error and no metrics.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iclab import plotting
from iclab.errors import SpecError
from iclab.report import format_table
from iclab.runs import RunDir, atomic_write_bytes
from iclab.sweeps.store import SweepDir

__all__ = ["collect", "plot_sweep", "summarise"]


def _final_metrics(path: Path) -> dict[str, float]:
    try:
        metrics = RunDir.open(path).metrics()
    except (OSError, ValueError):
        return {}
    if metrics.empty:
        return {}
    last = metrics.iloc[-1]
    return {str(k): float(v) for k, v in last.items() if "/member" not in str(k) and k not in ("wall_time_s", "lr")}


def collect(out: str | Path, *, write: bool = True) -> pd.DataFrame:
    """The table of the sweep in `out` (module docstring), also written to OUT/results.parquet. Columns: "trial",
    "cell", one per axis (its dotted name), "seed", "state", "error", then the final metrics ("step",
    "eval_half_mse", "train_…") and "path". `write=False` only returns it."""
    sweep = SweepDir(out)
    record = sweep.record()
    rows = []
    # an axis with list values (x_cov_diag, …) is kept as text, all of its values, so that cells stay hashable
    textual = {k for t in record["trials"] for k, v in t["axes"].items() if isinstance(v, list | dict)}
    for trial in record["trials"]:
        outcome = sweep.outcome(trial["unit"]) or {}
        state = outcome.get("state", "pending")
        path = sweep.trial_path(trial)
        axes = {k: (str(v) if k in textual else v) for k, v in trial["axes"].items()}
        row: dict[str, Any] = {"trial": trial["name"], "cell": trial["cell"], **axes, "seed": trial["seed"]}
        row["state"] = state
        row["error"] = outcome.get("error", "")
        if state == "done" and trial["member"] is not None and (path / "diverged.json").exists():
            row["state"] = "diverged"  # a member stopped inside an ensemble that finished
        row.update(_final_metrics(path) if state == "done" else {})
        row["path"] = str(path)
        rows.append(row)
    table = pd.DataFrame(rows)
    if write:
        buf = io.BytesIO()
        table.to_parquet(buf, index=False)
        atomic_write_bytes(Path(out) / "results.parquet", buf.getvalue())
    return table


def summarise(table: pd.DataFrame, axes: list[str], metric: str = "eval_half_mse") -> str:
    """Mean, standard deviation, min, max and count over seeds of `metric`, per cell (a printable table)."""
    if metric not in table:
        return "(no finished trials yet)"
    rows = []
    for key, group in table.groupby(axes, sort=False, dropna=False) if axes else [((), table)]:
        values = group[metric].dropna().to_numpy(dtype=float)
        cell = dict(zip(axes, key if isinstance(key, tuple) else (key,)))
        rows.append(
            {
                **cell,
                f"{metric} mean": float(values.mean()) if len(values) else math.nan,
                "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
                "min": float(values.min()) if len(values) else math.nan,
                "max": float(values.max()) if len(values) else math.nan,
                "seeds": f"{len(values)}/{len(group)}",
            }
        )
    return format_table(rows)


def plot_sweep(
    table: pd.DataFrame, x: str, hue: str | None, path: str | Path, *, metric: str = "eval_half_mse"
) -> Path:
    """`metric` against axis `x`: the mean over seeds as a line, min–max over seeds as a band, one line per value
    of axis `hue` (None: one line). Trials without the metric (failed, unfinished) are left out."""
    for name, what in ((x, "--x"), (hue, "--hue")):
        if name is not None and name not in table:
            axes = [c for c in table.columns if "." in c]
            raise SpecError(f"{what}: {name!r} is not an axis of this sweep; axes: {', '.join(axes)}")
    if metric not in table:
        raise SpecError(f"metric: no finished trial has {metric!r}")
    data = table.dropna(subset=[metric])
    fig = plotting.new_figure(6.0, 4.0)
    ax = fig.add_subplot()
    groups = data.groupby(hue, sort=True) if hue else [(None, data)]
    numeric = pd.api.types.is_numeric_dtype(data[x])
    for value, group in groups:
        stats = group.groupby(x, sort=True)[metric].agg(["mean", "min", "max"])
        xs = stats.index.to_numpy() if numeric else np.arange(len(stats))
        label = None if hue is None else f"{hue} = {value}"
        (line,) = ax.plot(xs, stats["mean"].to_numpy(), marker="o", label=label)
        ax.fill_between(xs, stats["min"].to_numpy(), stats["max"].to_numpy(), color=line.get_color(), alpha=0.2)
        if not numeric:
            ax.set_xticks(xs, [str(v) for v in stats.index])
    if (data[metric] > 0).all():
        ax.set_yscale("log")
    if numeric and (data[x] > 0).all() and data[x].max() / data[x].min() >= 100:
        ax.set_xscale("log")
    plotting.style_axes(ax, xlabel=x, ylabel=metric)
    seeds = data["seed"].nunique()
    fig = plotting._finish(fig, ax, f"{metric} vs {x} (mean over {seeds} seed{'s' * (seeds > 1)}, band: min–max)")
    return plotting.save_figure(fig, path)
