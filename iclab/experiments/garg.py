"""Reproduction: *What can transformers learn in-context? A case study of simple function classes* (Garg et al.),
linear regression, with Fu et al.'s layer ↔ iteration alignment read out of the trained model (docs/papers.md §2, §5).

A GPT-style causal transformer (iclab.models.gpt) trained on interleaved prompts x₁, y₁, …, x_T, y_T with a loss on
every prefix; its error vs the number k of in-context examples is compared with least squares (the Bayes-optimal
predictor for noiseless Gaussian w: min-norm interpolation, closed form (d − k)/d before k = d and 0 after), the best
single GD step (Mahankali et al., (d + 1)/(k + d + 1)), averaging and 3-NN, on the same held-out prompts with 95 %
bootstrap bands. Then the alignment analysis (iclab.analysis.alignment) finds, for every layer, the GD step count
and the Newton iteration whose predictions its read-out matches best.

Scales: smoke — d = 5 and 10 context points, a 4-layer GPT of width 128 trained for 6 000 steps (7 minutes on
two idle CPU cores, README.md has its numbers); paper — Garg's
setting (d = 20, 40 context points, GPT-2 with 12 layers, width 256, 8 heads, curriculum, 500 001 steps of batch 64),
a GPU budget of hours.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iclab import plotting, theory
from iclab.algorithms.least_squares import OLS
from iclab.algorithms.local import KNN, Averaging
from iclab.analysis.alignment import align, peaks_text, plot_alignment
from iclab.config import EvalConfig, ExperimentConfig, TrainConfig
from iclab.evaluation import Curve, error_curves
from iclab.experiments.driver import Analysis, Context, NoOptions, Reproduction
from iclab.models.gpt import GPTConfig
from iclab.report import Claim, format_table
from iclab.tasks.linear import LinearConfig

__all__ = ["PRESETS", "SCALES", "Garg", "Scale"]


def _garg(small: bool) -> ExperimentConfig:
    # Garg et al.: GPT-2 (12 layers, 8 heads, width 256) on d = 20 with 41 points (40 context + 1 query), Adam 1e-4,
    # batch 64, 500 001 steps, curriculum 5 → 20 dimensions and 11 → 41 points: a GPU budget. The small variant
    # (d = 5, 10 context points; `iclab reproduce garg`) is a CPU budget of ~15 minutes on one core. Measured on the
    # way to it (seed 0, nmse gap to least squares at k < d / largest at k ≥ d): width 64, 3 layers, batch 128, lr 1e-3:
    # 1 000 steps 0.27 / 0.36, 6 000 steps 0.12 / 0.21 (batch 64, 10 000 steps: worse; lr 3e-3: stuck on the
    # plateau); width 128, 4 layers, lr 5e-4: 3 000 steps 0.2-level, 6 000 steps 0.04 / 0.11.
    if small:
        return ExperimentConfig(
            task=LinearConfig(d=5, n_points=10, x_dist="gaussian", x_scale=1.0),
            model=GPTConfig(layers=4, heads=4, width=128, mlp_ratio=2, max_points=64),
            train=TrainConfig(
                steps=6000,
                batch_size=128,
                lr=5e-4,
                schedule="warmup_cosine",
                warmup_steps=500,
                eval_every=500,
                checkpoint_every=3000,
            ),
            eval=EvalConfig(n_prompts=2000),
            name="garg-linear-small",
        )
    return ExperimentConfig(
        task=LinearConfig(d=20, n_points=40, x_dist="gaussian", x_scale=1.0),
        model=GPTConfig(layers=12, heads=8, width=256, max_points=64),
        train=TrainConfig(
            steps=500_001,
            batch_size=64,
            lr=1e-4,
            curriculum="garg",
            eval_every=2000,
            checkpoint_every=20_000,
            device="auto",
        ),
        eval=EvalConfig(n_prompts=1280),
        name="garg-linear",
    )


# Named settings of this paper (`iclab train --preset NAME`, `iclab presets`).
PRESETS: dict[str, ExperimentConfig] = {"garg-linear-small": _garg(small=True), "garg-linear": _garg(small=False)}


@dataclass(frozen=True)
class Scale:
    """A reproduction scale: the preset trained (with `steps` if given), the held-out prompts and the tolerances of
    the claims (largest nmse gap to least squares below and from k = d on)."""

    preset: str
    steps: int | None
    n_eval: int
    n_align: int
    tol_below_d: float
    tol_beyond_d: float
    newton_iters: int = 10
    """Newton iterations 0 … newton_iters in the alignment (d = 5 converges by 10; d = 20 at k ≈ d needs more)"""


# smoke: preset garg-linear-small, ~7 minutes on two idle cores. Measured (seeds 0 / 1): largest gap to least squares
# below d 0.038 / 0.031, from k = d on 0.112 / 0.113 (at k = d, where X is square and least squares is at its most
# ill-conditioned; 0.014 at k = 2d); the tolerances leave ~40 % margin. paper: Garg's full budget; the tolerances
# are Garg's Figure 2 read off (the trained model is on the least-squares curve to within the line width; k = d
# itself, where the smoke model is furthest off, given 0.1) and have not been measured by iclab (no GPU run so far).
SCALES = {
    "smoke": Scale("garg-linear-small", None, 2000, 1000, tol_below_d=0.06, tol_beyond_d=0.15),
    "paper": Scale("garg-linear", None, 1280, 640, tol_below_d=0.05, tol_beyond_d=0.1, newton_iters=20),
}


class Garg(Reproduction):
    """Garg et al. with Fu et al.'s alignment: one GPT, its error curve against least squares and the other
    learners, and its layers against GD steps and Newton iterations."""

    name = "garg"
    summary = "a GPT learns linear regression in context like least squares (Garg et al.)"
    scales = SCALES

    def title(self, ctx: Context) -> str:
        d = PRESETS[ctx.scale.preset].task.d
        return f"Garg et al. — a GPT learns linear regression in context ({ctx.scale_name} scale, d = {d})"

    def configs(self, scale: Scale, options: NoOptions) -> list[ExperimentConfig]:
        base = PRESETS[scale.preset]
        train = {} if scale.steps is None else {"steps": scale.steps}
        return [base.replace(train=train, name=f"gpt-d{base.task.d}")]

    def analyse(self, ctx: Context) -> Analysis:
        sc: Scale = ctx.scale
        (trained,) = ctx.trained.values()
        cfg, result = trained.config, trained.result
        model = result.model.eval().cpu().float()
        d = cfg.task.d

        # The run's fixed held-out prompts (n_points context pairs and the query: the curve runs over k = 0 … n_points).
        prompts = result.eval_prompts[: sc.n_eval].to("cpu", torch.float32)
        learners = {"GPT": model, "least squares": OLS(), "averaging": Averaging(), "3-NN": KNN(3)}
        curves = error_curves(learners, prompts, metric="nmse")
        k = curves["GPT"].k
        tau2 = cfg.task.w_scale**2
        # Noiseless isotropic closed forms (nmse = excess risk / d): min-norm least squares τ²(d − k)/d before k = d
        # and 0 after (docs/papers.md §6; theory.min_norm_excess_risk is the noisy form, undefined at k = 0 and
        # k = d − 1);
        # the best single GD step (Mahankali) τ²(d + 1)/(k + d + 1), τ² at k = 0.
        closed_ls = tau2 * np.clip(d - k, 0, None) / d
        one_step = np.array([theory.mahankali_excess_risk(d, int(i), 0.0, tau2) / d if i else tau2 for i in k])

        # Alignment in float64 (on a copy) on held-out prompts.
        x, y = prompts.x[: sc.n_align].double(), prompts.y[: sc.n_align].double()
        alignment = align(copy.deepcopy(model).double(), x, y, newton_iters=tuple(range(sc.newton_iters + 1)))

        gap = curves["GPT"].mean - curves["least squares"].mean
        metrics = {
            "k": k.tolist(),
            "curves": {name: c.to_dict() for name, c in curves.items()},
            "least_squares_closed_form": closed_ls.tolist(),
            "one_gd_step_closed_form": one_step.tolist(),
            "max_gap_to_least_squares_below_d": float(gap[k < d].max()),
            "max_gap_to_least_squares_beyond_d": float(gap[k >= d].max()),
            "alignment": alignment.to_dict(),
            "train_wall_s": result.wall_time_s,
            "final_eval_half_mse": result.final_eval_half_mse,
        }
        figures = [_plot_curves(curves, closed_ls, one_step, d, ctx.figures / "error_vs_k.png")]
        figures += list(plot_alignment(alignment, ctx.figures, title=f"GPT on d = {d}: layer ↔ iteration").values())
        history = trained.run.metrics()
        figures.append(
            plotting.plot_training_curve(
                history["step"].to_numpy(),
                history["eval_half_mse"].to_numpy(),
                ctx.figures / "training_curve.png",
                title="GPT: held-out ½·MSE at the query",
            )
        )
        align_rows = [
            {
                "layer": name,
                "readout nmse": float(alignment.readout_nmse[i]),
                "GD steps: peak (argmax)": f"{peaks_text([alignment.refined_gd[i]])} ({int(alignment.best_gd[i])})",
                "GD similarity": float(alignment.gd.max(1)[i]),
                "Newton iters: peak (argmax)": (
                    f"{peaks_text([alignment.refined_newton[i]])} ({int(alignment.best_newton[i])})"
                ),
                "Newton similarity": float(alignment.newton.max(1)[i]),
            }
            for i, name in enumerate(alignment.layers)
        ]
        sections = [
            (
                f"nmse vs in-context examples k (d = {d}, {sc.n_eval} held-out prompts, 95 % bootstrap bands)",
                format_table(_curve_rows(curves, closed_ls, one_step, d)),
            ),
            (
                "Layer ↔ iteration alignment (cos similarity of each layer's read-out with GD / Newton)",
                format_table(align_rows),
            ),
        ]
        data = {"curves": curves, "closed_ls": closed_ls, "one_step": one_step, "d": d, "tau2": tau2}
        return Analysis(metrics, sections, figures, {**data, "alignment": alignment})

    def claims(self, analysis: Analysis, ctx: Context) -> list[Claim]:
        a = analysis.data
        return _claims(a["curves"], a["closed_ls"], a["one_step"], a["d"], a["tau2"], ctx.scale) + _alignment_claims(
            a["alignment"]
        )


def _curve_rows(curves: dict[str, Curve], closed_ls, one_step, d: int) -> list[dict[str, Any]]:
    """One row per shown k: a spread of k below d, k = d − 1, d, d + 1 and the last."""
    last = len(closed_ls) - 1
    ks = sorted({0, 1, d // 2, d - 1, d, min(d + 1, last), last} | set(range(0, last + 1, max(1, last // 8))))
    rows = []
    for i in ks:
        row: dict[str, Any] = {"k": i}
        for name, c in curves.items():
            row[name] = f"{c.mean[i]:.3f} [{c.lo[i]:.3f}, {c.hi[i]:.3f}]"
        row["least squares (closed form)"] = float(closed_ls[i])
        row["best 1 GD step (closed form)"] = float(one_step[i])
        rows.append(row)
    return rows


def _claims(curves: dict[str, Curve], closed_ls, one_step, d: int, tau2: float, sc: Scale) -> list[Claim]:
    gpt, ls = curves["GPT"].mean, curves["least squares"].mean
    k = curves["GPT"].k
    below, beyond = k < d, k >= d
    gap = gpt - ls
    # Monte Carlo check of the evaluator: least squares within 4 exact standard errors of its closed form at every
    # k. Below d its error is (x_qᵀPw)²/d with P the projection on the r = d − k dimensional null space of X, and
    # (Pw, Px_q) independent standard normals in r dimensions, so E = r/d and Var = (2r² + 6r)/d² (times τ⁴): a
    # heavy tail (r = 1: a product of two χ²₁) that a bootstrap band underestimates. From k = d on it is 0 exactly.
    r = np.clip(d - k, 0, None)
    se = tau2 * np.sqrt((2 * r**2 + 6 * r) / curves["least squares"].n_prompts) / d
    ls_z = np.abs(ls - closed_ls) / np.maximum(se, 1e-12)
    ls_ok = bool(np.all(np.where(r > 0, ls_z <= 4, np.abs(ls) < 1e-6)))
    others = np.minimum(curves["averaging"].mean, curves["3-NN"].mean)
    return [
        Claim(
            "least_squares_closed_form",
            "the evaluator: Monte Carlo least squares equals its closed form (d − k)/d within 4 exact SE (k < d) and 0 "
            "(k ≥ d); measured: the largest |z|",
            "closed form",
            float(ls_z[r > 0].max()),
            "≤ 4 SE",
            ls_ok,
        ),
        Claim(
            "tracks_least_squares_below_d",
            f"GPT nmse minus least squares, largest over k < d = {d}",
            0.0,
            float(gap[below].max()),
            f"≤ {sc.tol_below_d}",
            float(gap[below].max()) <= sc.tol_below_d,
        ),
        Claim(
            "tracks_least_squares_beyond_d",
            f"GPT nmse minus least squares (exact: 0), largest over k ≥ d = {d}",
            0.0,
            float(gap[beyond].max()),
            f"≤ {sc.tol_beyond_d}",
            float(gap[beyond].max()) <= sc.tol_beyond_d,
        ),
        Claim(
            "beats_averaging_and_knn",
            "GPT below both averaging and 3-NN at every k ≥ 1 (largest ratio GPT / the better of the two)",
            1.0,
            float((gpt[1:] / others[1:]).max()),
            "< 1",
            bool(np.all(gpt[1:] < others[1:])),
        ),
        Claim(
            "beats_one_gd_step",
            "GPT below the best single GD step (Mahankali, (d + 1)/(k + d + 1)) at every k ≥ d (largest ratio)",
            1.0,
            float((gpt[beyond] / one_step[beyond]).max()),
            "< 1",
            bool(np.all(gpt[beyond] < one_step[beyond])),
        ),
    ]


READABLE = 0.5  # a layer whose best similarity with any iterate is below this holds no prediction to match


def _alignment_claims(alignment) -> list[Claim]:
    """Fu et al.: later layers compute more iterations — a few more Newton iterations per layer, exponentially more
    GD steps. Claimed, over the layers whose read-out is readable (best similarity ≥ READABLE; an untrained or
    early layer's row is flat noise whose argmax means nothing): the best-matching Newton iteration and GD step
    count — each layer's sub-grid peak (iclab.analysis.alignment.refined_peak, as in `iclab reproduce fu`: on a flat
    top the grid's argmax is a coin toss between neighbours) — never fall with depth and grow from the first
    readable layer to the last, and the last layer's read-out predicts better than the first layer's. The Newton
    grid ends at Scale.newton_iters (10 at smoke scale, where Newton has converged on these problems, so a best match
    of 10 reads "converged"). Measured at smoke scale (grid argmax, before the peaks),
    Newton started as in Fu et al.'s code (seeds 0 / 1): Newton 2, 4, 8, 10 / 2, 4, 9, 10; GD 1, 2, 16, 64 for both;
    layer 0 unreadable (similarity ≤ 0.15). With the start 2/‖SSᵀ‖_F (seeds 0 / 1): Newton 0, 6, 7, 10 / 0, 6, 8, 10."""
    readout = alignment.readout_nmse
    claims = []
    for kind, best, sims in (
        ("newton_iterations", alignment.refined_newton, alignment.newton.max(1)),
        ("gd_steps", alignment.refined_gd, alignment.gd.max(1)),
    ):
        readable = best[sims >= READABLE]
        grows = bool(len(readable) >= 2 and np.all(np.diff(readable) >= 0) and readable[-1] > readable[0])
        what = "Newton iteration" if kind == "newton_iterations" else "GD step count"
        listed = ", ".join(peaks_text([b]) if s >= READABLE else f"({peaks_text([b])})" for b, s in zip(best, sims))
        claims.append(
            Claim(
                f"later_layers_match_more_{kind}",
                f"best-matching {what} per layer never falls with depth and grows from the first to the last "
                f"readable layer (sub-grid peaks; similarity ≥ {READABLE}; unreadable in brackets): {listed}",
                "non-decreasing, last > first",
                float(best[-1]),
                "≥ 2 readable layers, monotone",
                grows,
            )
        )
    claims.append(
        Claim(
            "readout_improves_with_depth",
            "held-out nmse of the last layer's read-out below the first layer's",
            float(readout[0]),
            float(readout[-1]),
            "<",
            bool(readout[-1] < readout[0]),
        )
    )
    return claims


def _plot_curves(curves: dict[str, Curve], closed_ls, one_step, d: int, path: Path) -> Path:
    k = curves["GPT"].k
    lines = {name: c.mean for name, c in curves.items()}
    lines["least squares (closed form)"] = closed_ls
    lines["best 1 GD step (closed form)"] = one_step
    bands = {name: (c.lo, c.hi) for name, c in curves.items()}
    return plotting.plot_curves(
        k,
        lines,
        path,
        xlabel="in-context examples k",
        ylabel="nmse (MSE / d)",
        title=f"Linear regression, d = {d}: GPT vs least squares",
        bands=bands,
        logy=False,
        ylim=(0.0, 1.25),
    )
