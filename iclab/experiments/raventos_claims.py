"""Raventós et al. (docs/papers.md §3): the threshold M*, the claims, the report's tables and figures, computed from
the metrics of `iclab.experiments.raventos` (see its docstring for the definitions)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from iclab import plotting
from iclab.report import Claim, format_table

__all__ = ["PAPER_LOG2_THRESHOLD", "figures", "locate_threshold", "raventos_claims", "tables"]

# Raventós et al., Fig. 2 (d = 8, K = 16, σ² = 0.25): the model leaves dMMSE for ridge between M = 2^13 and 2^14
# (docs/papers.md §3 and the issue; read off the figure, not a number printed in the text).
PAPER_LOG2_THRESHOLD = (13.0, 14.0)

GRID_STEPS_OF_SPREAD = 2.0  # largest seed spread of log2 M* for "located" (stated: a factor 4 in M)


def locate_threshold(log2_m: np.ndarray, r: np.ndarray) -> tuple[float | None, str]:
    """The first upward zero crossing of r over the grid log2_m (increasing), linearly interpolated.

    r(M) = ln(Δ_dMMSE / Δ_ridge): < 0 while the model is closer to dMMSE, ≥ 0 once closer to ridge. Returns
    (log2 M*, "located") for a crossing between two grid points, (None, "below grid") when r ≥ 0 already at the
    smallest M, (None, "above grid") when r < 0 everywhere, (None, "undefined") when r has a non-finite value
    before any crossing.
    """
    log2_m, r = np.asarray(log2_m, dtype=float), np.asarray(r, dtype=float)
    if len(log2_m) != len(r) or len(r) == 0 or np.any(np.diff(log2_m) <= 0):
        raise ValueError("locate_threshold: log2_m must be increasing and as long as r (both non-empty)")
    for j, v in enumerate(r):
        if not math.isfinite(v):
            return None, "undefined"
        if v >= 0:
            if j == 0:
                return None, "below grid"
            x0, x1, r0 = log2_m[j - 1], log2_m[j], r[j - 1]
            return float(x0 + (x1 - x0) * (0 - r0) / (v - r0)), "located"
    return None, "above grid"


def _arr(m: dict[str, Any], *keys: str) -> np.ndarray:
    value: Any = m
    for key in keys:
        value = value[key]
    return np.asarray(value, dtype=float)


def raventos_claims(m: dict[str, Any], sc: Any, scale_name: str) -> list[Claim]:
    """The paper's findings checked against the measurements (module docstring of iclab.experiments.raventos)."""
    pools = m["log2_pool_sizes"]
    lo, hi = f"2^{pools[0]}", f"2^{pools[-1]}"
    model_fresh, model_pool = _arr(m, "fresh", "model"), _arr(m, "pool", "model")  # [seed, M, (mean, se)]
    ridge_fresh = _arr(m, "fresh", "ridge")  # (mean, se)
    dm_pool, rg_pool = _arr(m, "pool", "dmmse"), _arr(m, "pool", "ridge")  # [M, (mean, se)]
    to_dm, to_rg = _arr(m, "distance", "to_dmmse"), _arr(m, "distance", "to_ridge")  # [seed, M]
    log_se = _arr(m, "distance", "log_ratio_se")
    smoke_note = "" if scale_name == "paper" else f" ({scale_name} scale: d = {sc.d}, {sc.steps} steps)"
    claims = []

    # small M: fresh-task error ≫ ridge's (a factor ≥ 2), for every seed beyond 3 standard errors
    ratio = model_fresh[:, 0, 0] / ridge_fresh[0]
    ratio_se = ratio * np.hypot(model_fresh[:, 0, 1] / model_fresh[:, 0, 0], ridge_fresh[1] / ridge_fresh[0])
    claims.append(
        Claim(
            "small M: fresh-task error ≫ ridge",
            f"At M = {lo} the model's error on fresh tasks w ~ N(0, I) over ridge's (λ = σ², Bayes for the Gaussian "
            f"prior), mean over seeds; holds if every seed's ratio minus 3 standard errors (over prompts) is ≥ 2"
            f"{smoke_note}. Raventós Fig. 2: below the threshold the model cannot solve new tasks.",
            "≫ 1 (≥ 2; Raventós Fig. 2)",
            float(ratio.mean()),
            "3 SE over prompts",
            bool(np.all(ratio - 3 * ratio_se >= 2)),
        )
    )
    # small M: the predictions are closer to dMMSE's than to ridge's
    r0 = np.log(to_dm[:, 0] / to_rg[:, 0])
    claims.append(
        Claim(
            "small M: model tracks dMMSE",
            f"At M = {lo}, Δ_dMMSE / Δ_ridge on fresh tasks (mean squared distance / d of the model's predictions to "
            f"dMMSE's and to ridge's, same prompts), mean over seeds; holds if every seed's ln ratio + 3 SE < 0"
            f"{smoke_note}.",
            "< 1 (Raventós: the model behaves like dMMSE below the threshold)",
            float(np.exp(r0).mean()),
            "3 SE of ln ratio (delta method, paired prompts)",
            bool(np.all(r0 + 3 * log_se[:, 0] < 0)),
        )
    )
    # small M: on the pool tasks the model is near dMMSE (fraction of the dMMSE → ridge gap)
    gap = rg_pool[0, 0] - dm_pool[0, 0]
    frac = (model_pool[:, 0, 0] - dm_pool[0, 0]) / gap
    claims.append(
        Claim(
            "small M: pool-task error ≈ dMMSE",
            f"At M = {lo}, on tasks from the training pool: (model − dMMSE) / (ridge − dMMSE) errors, mean over seeds "
            f"(0: dMMSE, 1: ridge; dMMSE {dm_pool[0, 0]:.4g}, ridge {rg_pool[0, 0]:.4g}); holds if every seed is "
            f"within the allowance{smoke_note}.",
            "0 (dMMSE, Bayes for the pool prior)",
            float(frac.mean()),
            f"{sc.pool_allowance:g} (stated: {SCALE_REASONS['pool']})",
            bool(np.all(frac <= sc.pool_allowance)),
        )
    )
    # large M: fresh-task error ≈ ridge's
    ratio = model_fresh[:, -1, 0] / ridge_fresh[0]
    ratio_se = ratio * np.hypot(model_fresh[:, -1, 1] / model_fresh[:, -1, 0], ridge_fresh[1] / ridge_fresh[0])
    tol = sc.ridge_allowance + 3 * float(ratio_se.max())
    claims.append(
        Claim(
            "large M: model ≈ ridge on fresh tasks",
            f"At M = {hi}, the model's fresh-task error / ridge's − 1, mean over seeds; holds if every seed is within "
            f"the allowance plus 3 standard errors{smoke_note}.",
            "0 (Raventós Fig. 2: above the threshold the model matches ridge)",
            float(ratio.mean() - 1),
            f"{tol:.3g} = {sc.ridge_allowance:g} (stated: {SCALE_REASONS['ridge']}) + 3 SE",
            bool(np.all(np.abs(ratio - 1) <= tol)),
        )
    )
    # the threshold, per seed, with its spread
    th = m["threshold"]
    statuses, mean, spread = th["per_seed_status"], th["log2_mean"], th["log2_spread"]
    all_located = all(s == "located" for s in statuses)
    per_seed = ", ".join(
        f"{x:.2f}" if s == "located" else s for x, s in zip(th["per_seed_log2"], statuses, strict=True)
    )
    claims.append(
        Claim(
            "threshold M* located",
            f"log2 M* (first upward crossing of ln(Δ_dMMSE / Δ_ridge) on fresh tasks, interpolated in log2 M), mean "
            f"over seeds; per seed: {per_seed}; spread (max − min) {spread if spread is None else f'{spread:.2f}'}. "
            f"Holds if every seed crosses inside the grid [{lo}, {hi}] and the spread is ≤ {GRID_STEPS_OF_SPREAD:g}"
            f"{smoke_note}.",
            f"inside [{lo}, {hi}]",
            float("nan") if mean is None else float(mean),
            f"seed spread ≤ {GRID_STEPS_OF_SPREAD:g} in log2 M (stated: a factor 4 in M)",
            bool(all_located and spread is not None and spread <= GRID_STEPS_OF_SPREAD),
        )
    )
    # against the paper's d = 8 threshold
    a, b = PAPER_LOG2_THRESHOLD
    if scale_name == "paper":
        holds = mean is not None and a - 1 <= mean <= b + 1
        text = f"log2 M* within a grid step of the paper's [{a:g}, {b:g}] at d = 8"
        tolerance = "± 1 in log2 M (one grid step)"
    else:
        holds = mean is not None and mean < a
        text = (
            f"The smoke setting differs from the paper's (d = {sc.d} instead of 8, K = {sc.n_points + 1} instead "
            f"of 16, {sc.steps} steps instead of 500k), so the paper's value is not a target here; the check is the "
            f"direction the paper reports (the threshold grows with d): log2 M* below {a:g}"
        )
        tolerance = f"direction only: M* < 2^{a:g}"
    claims.append(
        Claim(
            "threshold vs the paper (d = 8)",
            f"{text}. Mean log2 M* over seeds.",
            f"2^{a:g}–2^{b:g} at d = 8 (Raventós Fig. 2)",
            float("nan") if mean is None else float(mean),
            tolerance,
            bool(holds),
        )
    )
    if scale_name != "paper":  # a claim that fails below the paper's budget says so, and why (measured)
        notes = {c.id: "" if c.holds else " " + _short_budget(c.id, scale_name, sc) for c in claims}
        claims = [dataclasses.replace(c, description=c.description + notes[c.id]) for c in claims]
    return claims


def _short_budget(claim: str, scale_name: str, sc: Any) -> str:
    if claim.startswith("small M: pool"):
        return (
            f"Does not hold at {scale_name} scale: after {sc.steps} CPU steps the smallest pool's models still lose "
            f"more than the allowance to dMMSE on the first positions, before the context identifies the task; the "
            f"paper's 500k steps (--scale paper) are what the claim is about."
        )
    return (
        f"Does not hold at {scale_name} scale: in {sc.steps} CPU steps the models whose pool has more than a few "
        f"tasks are still on the in-context-learning plateau (they predict ≈ the prior mean, error ≈ E‖w‖²/d ≈ 1 on "
        f"fresh tasks; measured, see the report's table), so neither dMMSE nor ridge is tracked there; the "
        f"paper's 500k steps (--scale paper) are what the claim is about."
    )


SCALE_REASONS = {
    "pool": "the first positions, before the context identifies the task, cost the model more than dMMSE",
    "ridge": "a finite training budget leaves the model above ridge even on the most diverse pool",
}


def tables(m: dict[str, Any]) -> list[tuple[str, str]]:
    """The report's sections: errors and distances per M, and the threshold per seed."""
    pools = m["log2_pool_sizes"]
    mf, mp = _arr(m, "fresh", "model"), _arr(m, "pool", "model")
    to_dm, to_rg = _arr(m, "distance", "to_dmmse"), _arr(m, "distance", "to_ridge")
    rf = m["fresh"]["ridge"][0]

    def band(v: np.ndarray) -> str:
        return f"{v.mean():.4g} [{v.min():.4g}, {v.max():.4g}]"

    rows = []
    for j, k in enumerate(pools):
        rows.append(
            {
                "M": f"2^{k}",
                "fresh: model [seeds]": band(mf[:, j, 0]),
                "fresh: dMMSE": m["fresh"]["dmmse"][j][0],
                "fresh: ridge": rf,
                "pool: model [seeds]": band(mp[:, j, 0]),
                "pool: dMMSE": m["pool"]["dmmse"][j][0],
                "pool: ridge": m["pool"]["ridge"][j][0],
                "Δ_dMMSE": band(to_dm[:, j]),
                "Δ_ridge": band(to_rg[:, j]),
                "ln(Δ_dMMSE/Δ_ridge)": band(np.log(to_dm[:, j] / to_rg[:, j])),
            }
        )
    th = m["threshold"]
    seeds = [
        {"seed": s, "log2 M*": "" if x is None else x, "M*": "" if x is None else 2**x, "status": status}
        for s, (x, status) in enumerate(zip(th["per_seed_log2"], th["per_seed_status"], strict=True))
    ]
    note = (
        f"\n(error = squared error against the noiseless target / d, mean over the {m['setting']['positions']} "
        f"positions and {m['n_eval_prompts']} prompts; model: mean over {m['seeds']} seeds [min, max]; Δ: mean squared "
        f"distance / d between the model's predictions and dMMSE's or ridge's on fresh tasks)"
    )
    return [("Errors vs task-pool size M", format_table(rows) + note), ("Threshold M* per seed", format_table(seeds))]


def figures(fig_dir: Path, m: dict[str, Any]) -> list[Path]:
    """errors_vs_pool_size.png (pool and fresh tasks) and distance_vs_pool_size.png, M* marked on both."""
    pools = np.asarray(m["log2_pool_sizes"], dtype=float)
    M = 2.0**pools
    mf, mp = _arr(m, "fresh", "model")[..., 0], _arr(m, "pool", "model")[..., 0]  # [seed, M]
    th = m["threshold"]
    located = [x for x, s in zip(th["per_seed_log2"], th["per_seed_status"], strict=True) if s == "located"]

    def mark(ax: Any) -> None:
        if located:
            ax.axvspan(2 ** min(located), 2 ** max(located), color="0.85", zorder=0, label="M* (seed range)")
            ax.axvline(2 ** float(np.mean(located)), color="0.3", ls="--", lw=1, label="M* (mean)")

    fig = plotting.new_figure(10.0, 4.0)
    axes = fig.subplots(1, 2, sharey=True)
    panels = [
        ("pool tasks (from the training pool)", mp, _arr(m, "pool", "dmmse")[:, 0], _arr(m, "pool", "ridge")[:, 0]),
        (
            "fresh tasks (w ~ N(0, I))",
            mf,
            _arr(m, "fresh", "dmmse")[:, 0],
            np.full(len(M), m["fresh"]["ridge"][0]),
        ),
    ]
    for ax, (title, model, dm, rg) in zip(axes, panels, strict=True):
        mark(ax)
        ax.fill_between(M, model.min(0), model.max(0), color="C0", alpha=0.25, lw=0)
        ax.plot(M, model.mean(0), "o-", color="C0", label=f"GPT (mean, band: {len(model)} seeds)")
        ax.plot(M, dm, "s--", color="C1", label="dMMSE (Bayes, pool prior)")
        ax.plot(M, rg, "^:", color="C2", label="ridge λ = σ² (Bayes, Gaussian prior)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(title)
        plotting.style_axes(ax, xlabel="task-pool size M", ylabel="error / d (noiseless target)")
    axes[1].legend(frameon=False, fontsize="small")
    fig.suptitle(f"Error vs task diversity (d = {m['setting']['d']})")
    paths = [plotting.save_figure(fig, fig_dir / "errors_vs_pool_size.png")]

    to_dm, to_rg = _arr(m, "distance", "to_dmmse"), _arr(m, "distance", "to_ridge")
    fig = plotting.new_figure(6.0, 4.0)
    ax = fig.subplots()
    mark(ax)
    for name, v, c in (("Δ to dMMSE", to_dm, "C1"), ("Δ to ridge", to_rg, "C2")):
        ax.fill_between(M, v.min(0), v.max(0), color=c, alpha=0.25, lw=0)
        ax.plot(M, v.mean(0), "o-", color=c, label=f"GPT {name} (seed band)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    plotting.style_axes(ax, xlabel="task-pool size M", ylabel="mean squared distance / d, fresh tasks")
    ax.legend(frameon=False, fontsize="small")
    fig.suptitle("Distance of the GPT's predictions to dMMSE and to ridge")
    paths.append(plotting.save_figure(fig, fig_dir / "distance_vs_pool_size.png"))
    return paths
