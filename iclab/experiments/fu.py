"""Reproduction: *Transformers learn higher-order optimization methods for in-context learning: a study with linear
models* (Fu et al.), docs/papers.md §5 — which iteration of Iterative Newton and which GD step count each layer of a
trained transformer computes, on isotropic and ill-conditioned inputs, and the same read-out on LSA stacks.

For every covariance (isotropic; log-spaced eigenvalues of condition number κ, LinearConfig.x_condition) a GPT
(iclab.models.gpt, Garg's interleaved layout) and a multi-layer LSA stack (iclab.models.lsa) are trained on the same
prompts, `Options.seeds` seeds of each (one ensemble per model). iclab.analysis.alignment then fits an affine
read-out to every layer's residual stream and finds the Newton iteration (Fu et al.'s code's start M₀ = S/‖SSᵀ‖_F)
and the GD step count (η = 1/λ_max) whose prefix predictions match that layer's best (cos similarity over held-out
prompts × prefixes). Monte Carlo error: the held-out prompts are split into `Scale.blocks` disjoint blocks, each
aligned on its own (its own read-out fit and held-out half), so every fitted slope has a standard error over blocks.

Seeds are pooled (`pool_alignments`): every seed of a model is aligned on the same held-out prompts, and the model's
similarity matrices newton [K, I], gd [K, J] and read-out nmse [K] are their mean over seeds. The peaks, readable
flags, argmax, convergence caps and fits below all read the pooled matrices, and per prompt block the block's
matrices are pooled over seeds before its fit, so the SE over blocks carries both seeds and prompts. One set of claims
per model; each seed's own peaks are kept beside (metrics `per_seed`, the report's "per seed" columns). One seed is
the unpooled alignment, exactly. Why (default 2 seeds): with one seed the GPTs' three readable layers make the
log-vs-linear GD contrast a coin toss — with each seed its own model and claims (`--seeds 2` before pooling) it held
in 2 of the 4 GPT runs (isotropic seed 1: GD peaks 1, 3.13, 9.61, 19.7, R² 0.98 either way; κ = 10 seed 0: 1, 1.78,
4.57, 7.89, log R² 0.98 vs linear 1.00) while every doubling slope, Newton claim and LSA claim held. Averaging a
noisy per-seed measurement before reading it is the standard remedy; the similarities, not the peaks, are averaged so
that the peak, the argmax and the readable and convergence rules stay one rule on one matrix. Its cost: a layer
readable in one seed and not in the other is averaged with the other's noise and can fall below READABLE (measured
below: the κ = 10 GPT's layer 1).

"Best" is the *sub-grid peak* of the layer's similarity row (iclab.analysis.alignment.refined_peak): the vertex of
the parabola through the row's argmax and its two neighbours, in the coordinate where the grid is evenly spaced — the
iteration count on Newton's grid 0, 1, 2, …, log₂ of the step count on GD's doubling grid 1, 2, 4, … (the argmax
itself at a grid end, and at GD's 1 step, whose neighbour 0 has no log₂). Why not the argmax: near a flat top it is a
coin toss between near-equal neighbours, and on the doubling grid a toss is a whole doubling. Measured (smoke, seed 0):
the isotropic GPT's layer 2 matches 8 and 16 GD steps at cos 0.9433 and 0.9435, and the argmax, 16, made its layers'
GD steps 1, 2, 16, 32, which a line fits better (R² 1.00 over layers 1–3) than an exponential (0.92); the peaks are
2.43, 11.5, 40.6 (log R² 1.00 vs linear 0.92). The vertex lies within half a grid step of the argmax and moves
continuously with the similarities. The fits, the per-block fits (standard errors), the convergence cap and the LSA
monotone claim all read the peaks; the argmax is reported beside them.

Fits, over the *readable* layers (best similarity ≥ READABLE, iclab.experiments.garg: an early layer's read-out is
noise whose best match means nothing) up to the first *converged* layer (grid argmax at or beyond the first grid
iterate that is as close to least squares as the last layer's read-out is to its best iterate, `converged_at`: deeper
layers cannot show more iterations, so a plateau after convergence is not fitted):
Newton iterations vs layer (slope: iterations per layer) and log₂(GD steps) vs layer (slope: doublings per layer),
each also fitted on the other scale. Claims, per GPT covariance:

* ``gpt_<cov>_newton_linear`` — the Newton iteration grows with depth: slope > 2 block SE, and a straight line fits
  (R² ≥ 0.8; vacuous when only two layers are fitted, and the claim's text then says so; Fu et al.: ≈ 3 iterations
  per middle layer at d = 20 with 12 layers; at smoke scale, d = 4 and 4 layers, only the growth and its linearity
  are checked, not the 3);
* ``gpt_<cov>_gd_exponential`` — the GD step count grows exponentially: log₂ slope > 2 block SE and the log-linear
  fit beats the linear one (R²), the linear-vs-exponential contrast;
* ``gpt_<cov>_readout_improves`` — the last layer's read-out predicts better than the first readable layer's;

the same three per LSA covariance (``lsa_<cov>_…``), and ``lsa_<cov>_later_layers_match_more`` (the best GD step
count, its sub-grid peak, never falls with depth and grows from first to last layer; exact, no tolerance). Measured
numbers: the report and docs (below).

Scales: smoke — d = 4, 8 context points, a 4-layer GPT (width 64, 4 heads, 1 500 Adam steps of batch 128 at lr 3e-3,
warm-up + cosine) and a 4-layer LSA (2 000 steps of batch 256 at lr 1e-2) per covariance (isotropic and κ = 10; κ = 100
only at paper scale), two seeds of each: measured 4:40 wall at load ≈ 1 (one thread, 279 s CPU, analysis 15 s; 5:17
beside another job at load ≈ 2–3.7; one seed: 2:26, 145 s CPU). Why this setting (seed 0, one thread; grid argmax of
Newton per layer, measured before the sub-grid peak): a d = 3 GPT (6 layers, 2 000 steps) does all its in-context
work in its first readable layer (Newton 0 5 5 5 5 5: d = 3 converges too fast to
leave depth anything to do); d = 5 (10 points) stays on or near the loss plateau within budget (width 32, batch 64:
½·MSE 2.2 after 1 500 steps; width 64, batch 128, lr 1e-3: ½·MSE 1.2, flat Newton 0 3 3 3); d = 4 with width 32, batch
64 is undertrained (½·MSE 0.77, flat 0 4 4 4); width 64, batch 128 learns. At lr 2e-3 (½·MSE 0.22 iso, 0.36 κ = 10) its
first two layers are unreadable: iso Newton 0 3 5 8, GD 1 2 4 16; κ = 10 Newton 0 3 4 6, GD 1 4 2 8 — all 14 claims
hold, but the GPT fits rest on two layers (R² and the log-vs-linear contrast vacuous); seed 1 there: Newton 0 5 5 6 (R²
0.75, fails), seed 2: 0 4 5 8, GD 1 2 4 16 (hold). Five layers at lr 2e-3 (Newton 0 4 5 7 7, GD 1 2 4 8 8) cost 25 %
more and flatten at the end. lr 3e-3 trains further (½·MSE 0.08) and leaves only layer 0 unreadable, so three layers are
fitted: seed 1 there: Newton 0 4 7 9 (2.50 ± 0.12, R² 0.99), GD 1 4 8 16 (log R² 1.00 vs linear 0.96), both hold. The
LSA κ = 10 Newton fit depends on its training (d = 4; Newton per layer, slope, R²): 600 steps at 5e-3 2 4 3 5 (0.80,
0.64), 2 000 steps 4 5 5 8 (1.20, 0.80), 3 000 steps 4 4 4 8 (1.20, 0.60), 2 000 steps at 1e-2 4 7 7 11 (2.10, 0.89, the
smoke setting);
paper — Fu et al.'s setting (Garg's GPT-2: 12 layers, 8 heads, width 256; d = 20, 41 points, curriculum, 500 001
steps of batch 64, Adam 1e-4), covariances isotropic, κ = 10, κ = 100, and 12-layer LSA stacks (not run yet).

Measured at smoke scale (seeds 0 and 1 pooled; sub-grid peak of the pooled similarities per layer, grid argmax in
brackets, each seed's own peaks after "seeds"; slopes over the fitted layers with their block SE):
GPT isotropic Newton 0 4.13 7.38 9.89 [0 4 7 10], seeds 0 3.73 7.52 10.9 | 0 4.43 7.21 8.92 (2.88 ± 0.17 iterations
per layer, R² 0.99); GD 1 2.72 10.6 28.3 [1 2 8 32], seeds 1 2.43 11.5 40.6 | 1 3.13 9.61 19.7 (1.69 ± 0.06 doublings
per layer, log R² 0.99 vs linear 0.95; 3 of 4 blocks prefer the log); held-out ½·MSE 0.08 | 0.13, read-out nmse
0.46 → 0.19;
GPT κ = 10 Newton 0 2.55 4.53 6.33 [0 3 5 6], seeds 0 2.87 5.15 6.34 | 0 1.84 4.06 6.33 (1.80 ± 0.24, layers 2–3
only); GD 1 1.57 3.75 7.91 [1 2 4 8], seeds 1 1.78 4.57 7.89 | 1 1 3.08 7.92 (1.07 ± 0.06, layers 2–3 only): layer 1
is readable in seed 0 (best cos 0.61) but not in seed 1 (0.25), and pooled (0.43) falls below READABLE, so two layers
are fitted and the Newton R² and the GD log-vs-linear contrast are vacuous (the claims say so); only the slopes are
tested. Layer 1's pooled peaks, were it counted, would give log R² 1.00 vs linear 0.97 — not used, the rule stands;
½·MSE 0.35 | 0.32, nmse 0.39 (layer 2) → 0.26;
LSA isotropic Newton 1.45 3.77 5.66 7.52 [1 4 6 8], seeds 1.4 2.75 4.31 6.46 | 1.51 4.52 7.06 8.51 (2.01 ± 0.04, R²
1.00); GD 1 2.58 5.12 11 [1 2 4 8], seeds 1 1.77 3.08 8.23 | 1 3.73 8.74 17.2 (1.14 ± 0.02, log R² 1.00 vs linear 0.91);
LSA κ = 10 Newton 2.91 5.45 7.88 12 [3 5 8 12], seeds 3.57 6.56 7.37 12 | 2.23 4.04 8.32 12 (2.97 ± 0.12, R² 0.98); GD
1.9 4.8 13.7 74.3 [2 4 16 64], seeds 2.34 8.45 11.1 58 | 1.52 2.81 16.4 93.3 (1.74 ± 0.08, log R² 0.98 vs linear 0.73);
both LSA GD peaks rise monotonically.
14 of 14 claims hold (two of them, the κ = 10 GPT's, on their slopes only). Measured before pooling, with one seed
(seed 0; what `--seeds 1` runs): 13 of 14, gpt_kappa10_gd_exponential failing its contrast (GD 1 1.75 4.61 7.93, log
R² 0.97 vs linear 1.00).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from iclab.analysis.alignment import (
    Alignment,
    align_activations,
    gd_predictions,
    layer_activations,
    newton_predictions,
    peaks_text,
    plot_alignment,
    similarity_matrix,
)
from iclab.config import EvalConfig, ExperimentConfig, TrainConfig
from iclab.experiments.driver import Analysis, Context, Reproduction, Trained
from iclab.experiments.garg import READABLE
from iclab.models.gpt import GPTConfig
from iclab.models.lsa import LSAConfig
from iclab.plotting import new_figure, save_figure, style_axes
from iclab.report import Claim, format_table
from iclab.tasks.linear import LinearConfig
from iclab.validation import check_int

__all__ = ["SCALES", "Fu", "Options", "Scale", "layer_alignment", "line_fit", "pool_alignments"]


@dataclass(frozen=True)
class Scale:
    """A reproduction scale: the task, the GPT and LSA budgets, the covariances and the alignment's prompts."""

    d: int
    n_points: int
    conditions: tuple[float, ...]
    """condition numbers κ of the input covariance (1: isotropic)"""
    gpt_layers: int
    gpt_width: int
    gpt_heads: int
    gpt_steps: int
    gpt_batch: int
    gpt_lr: float
    lsa_layers: int
    lsa_steps: int
    lsa_lr: float
    n_align: int
    """held-out prompts of the alignment (split into `blocks` for the standard errors)"""
    blocks: int
    newton_iters: int
    """the Newton grid 0 … newton_iters"""
    curriculum: Literal["none", "garg"] = "none"


# smoke: ~5 minutes on an idle 2-core CPU with the default two seeds (module docstring: why d = 4 and 4 layers,
# measured numbers);
# paper: Fu et al. (their §4 reuses Garg et al.'s GPT-2 and training: 12 layers, 8 heads, width 256, d = 20,
# 41 points (40 in context), curriculum, 500 001 steps of batch 64, Adam 1e-4) with κ = 10 and 100, and LSA stacks
# of equal depth.
SCALES = {
    "smoke": Scale(
        d=4,
        n_points=8,
        conditions=(1.0, 10.0),
        gpt_layers=4,
        gpt_width=64,
        gpt_heads=4,
        gpt_steps=1500,
        gpt_batch=128,
        gpt_lr=3e-3,
        lsa_layers=4,
        lsa_steps=2000,
        lsa_lr=1e-2,
        n_align=1200,
        blocks=4,
        newton_iters=12,
    ),
    "tiny": Scale(
        d=3,
        n_points=6,
        conditions=(1.0, 10.0),
        gpt_layers=2,
        gpt_width=16,
        gpt_heads=2,
        gpt_steps=20,
        gpt_batch=16,
        gpt_lr=1e-3,
        lsa_layers=2,
        lsa_steps=20,
        lsa_lr=1e-3,
        n_align=80,
        blocks=2,
        newton_iters=4,
    ),
    "paper": Scale(
        d=20,
        n_points=40,
        conditions=(1.0, 10.0, 100.0),
        gpt_layers=12,
        gpt_width=256,
        gpt_heads=8,
        gpt_steps=500_001,
        gpt_batch=64,
        gpt_lr=1e-4,
        lsa_layers=12,
        lsa_steps=20_000,
        lsa_lr=5e-4,
        n_align=4000,
        blocks=8,
        newton_iters=24,
        curriculum="garg",
    ),
}


@dataclass(frozen=True)
class Options:
    """Options of `iclab reproduce fu`."""

    seeds: int = 2
    """seeds per model, trained as one ensemble; their layer similarities are averaged before the peaks and fits
    (2 by default: one seed's three readable GPT layers make the GD log-vs-linear contrast a coin toss)"""

    def __post_init__(self) -> None:
        check_int("seeds", self.seeds, 1)


_Options = Options  # the class attribute Fu.Options shadows the name inside the class body


def _cov_name(kappa: float) -> str:
    return "iso" if kappa == 1.0 else f"kappa{kappa:g}"


def _cov_text(kappa: float) -> str:
    return "isotropic" if kappa == 1.0 else f"κ = {kappa:g}"


def _model_name(cfg: ExperimentConfig) -> str:
    """The model a run is a seed of (gpt-iso, lsa-kappa10, …): its name without the seed suffix."""
    return f"{'gpt' if isinstance(cfg.model, GPTConfig) else 'lsa'}-{_cov_name(cfg.task.x_condition)}"


def _per_seed_text(per_seed: list[dict[str, Any]], key: str) -> str:
    """Each seed's peaks per layer: "s0: 0 3.73 7.52 10.9; s1: 0 4.43 7.21 8.92"."""
    return "; ".join(f"s{row.get('seed', i)}: {peaks_text(row[key])}" for i, row in enumerate(per_seed))


def line_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares line y ≈ a + b·x: (slope b, R²); R² = 1 for a perfect fit (and for constant y, 0 slope)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2:
        return float("nan"), float("nan")
    b, a = np.polyfit(x, y, 1)
    ss_res = float(((y - (a + b * x)) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return float(b), 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0


class Fu(Reproduction):
    """Fu et al.: a GPT and an LSA stack per input covariance, each layer against Newton iterations and GD steps."""

    name = "fu"
    summary = "transformer layers track Iterative Newton linearly, GD exponentially (Fu et al.)"
    scales = SCALES
    Options = Options

    def title(self, ctx: Context) -> str:
        return f"Fu et al. — layers of a trained transformer as Newton iterations ({ctx.scale_name} scale)"

    def configs(self, scale: Scale, options: _Options) -> list[ExperimentConfig]:
        configs = []
        for kappa in scale.conditions:
            task = LinearConfig(d=scale.d, n_points=scale.n_points, x_dist="gaussian", x_scale=1.0, x_condition=kappa)
            gpt = ExperimentConfig(
                task=task,
                model=GPTConfig(
                    layers=scale.gpt_layers,
                    heads=scale.gpt_heads,
                    width=scale.gpt_width,
                    mlp_ratio=2 if scale.gpt_width < 256 else 4,
                    max_points=max(64, scale.n_points + 1),
                ),
                train=TrainConfig(
                    steps=scale.gpt_steps,
                    batch_size=scale.gpt_batch,
                    lr=scale.gpt_lr,
                    schedule="warmup_cosine",
                    warmup_steps=max(1, scale.gpt_steps // 10),
                    curriculum=scale.curriculum,
                    eval_every=max(1, scale.gpt_steps // 10),
                    checkpoint_every=max(1, scale.gpt_steps // 2),
                ),
                eval=EvalConfig(n_prompts=scale.n_align),
                name=f"gpt-{_cov_name(kappa)}",
            )
            lsa = ExperimentConfig(
                task=task,
                model=LSAConfig(layers=scale.lsa_layers),
                train=TrainConfig(
                    steps=scale.lsa_steps,
                    batch_size=256,
                    lr=scale.lsa_lr,
                    schedule="cosine",
                    eval_every=max(1, scale.lsa_steps // 5),
                    checkpoint_every=scale.lsa_steps,
                ),
                eval=EvalConfig(n_prompts=scale.n_align),
                name=f"lsa-{_cov_name(kappa)}",
            )
            for cfg in (gpt, lsa):  # a model's seeds: runs <model>-s0, -s1, … (the model's name with one seed)
                configs += [
                    cfg.replace(train={"seed": s}, name=f"{cfg.name}-s{s}" if options.seeds > 1 else cfg.name)
                    for s in range(options.seeds)
                ]
        return configs

    def analyse(self, ctx: Context) -> Analysis:
        sc: Scale = ctx.scale
        seeds_of: dict[str, list[Trained]] = {}  # model (gpt-iso, …) → its seeds' runs, in declared order
        for trained in ctx.trained.values():
            seeds_of.setdefault(_model_name(trained.config), []).append(trained)
        per_model: dict[str, dict[str, Any]] = {}
        figures: list[Path] = []
        for name, runs in seeds_of.items():
            models = [copy.deepcopy(t.result.model).cpu().double().eval() for t in runs]
            prompts = runs[0].result.eval_prompts[: sc.n_align].to("cpu", torch.float64)
            for t in runs[1:]:  # eval.seed, not train.seed, draws the held-out set: every seed sees the same prompts
                other = t.result.eval_prompts[: sc.n_align].to("cpu", torch.float64)
                if not (torch.equal(other.x, prompts.x) and torch.equal(other.y, prompts.y)):
                    raise RuntimeError(f"fu: the seeds of {name} were evaluated on different held-out prompts")
            pooled, summary = layer_alignment(models, prompts.x, prompts.y, sc.newton_iters, sc.blocks)
            for row, t in zip(summary["per_seed"], runs, strict=True):
                row["seed"] = t.config.train.seed
                row["final_eval_half_mse"] = t.result.final_eval_half_mse
            kind, cov = name.split("-")[0].upper(), _cov_text(runs[0].config.task.x_condition)
            per_model[name] = {
                "kind": kind,
                "x_condition": runs[0].config.task.x_condition,
                "runs": [t.config.name for t in runs],
                "alignment": pooled.to_dict(),
                **summary,
                "final_eval_half_mse": float(np.mean([t.result.final_eval_half_mse for t in runs])),
                # the seeds of one model train as one ensemble run, whose wall time each member reports
                "train_wall_s": max(t.result.wall_time_s for t in runs),
            }
            pooled_text = f" (mean of {len(runs)} seeds)" if len(runs) > 1 else ""
            figures += list(
                plot_alignment(
                    pooled, ctx.figures / name, title=f"{kind}, {cov}: layer ↔ iteration{pooled_text}"
                ).values()
            )
        figures.insert(0, plot_iterations(per_model, ctx.figures / "iterations_vs_layer.png"))
        n_seeds = max(len(runs) for runs in seeds_of.values())
        rows = []
        for name, m in per_model.items():
            a = m["alignment"]
            row = {
                "model": name,
                "Newton peak / layer": peaks_text(a["refined_newton"]),
                "Newton argmax": peaks_text(a["best_newton"]),
                "GD peak / layer": peaks_text(a["refined_gd"]),
                "GD argmax": peaks_text(a["best_gd"]),
            }
            if n_seeds > 1:
                row["Newton peak per seed"] = _per_seed_text(m["per_seed"], "refined_newton")
                row["GD peak per seed"] = _per_seed_text(m["per_seed"], "refined_gd")
            rows.append(
                {
                    **row,
                    "readable": " ".join("y" if r else "n" for r in m["readable"]),
                    "Newton slope (SE)": f"{m['newton_slope']:.2f} ({m['newton_slope_se']:.2f})",
                    "Newton R² lin / log": f"{m['newton_r2']:.2f} / {m['newton_r2_log']:.2f}",
                    "log2 GD slope (SE)": f"{m['gd_log2_slope']:.2f} ({m['gd_log2_slope_se']:.2f})",
                    "GD R² lin / log": f"{m['gd_r2_linear']:.2f} / {m['gd_r2']:.2f}",
                    "readout nmse first → last": f"{m['readout_first']:.3f} → {m['readout_last']:.3f}",
                }
            )
        pooling = (
            f"; each model's {n_seeds} seeds pooled: their similarity matrices and read-out nmse averaged before the "
            "peaks, fits and per-block fits (per seed: each seed's own peaks, for the spread)"
            if n_seeds > 1
            else ""
        )
        sections = [
            (
                f"Layer ↔ iteration (cos similarity, {sc.n_align} held-out prompts in {sc.blocks} blocks; best "
                "match per layer: sub-grid peak, the parabola's vertex through the argmax and its neighbours, and "
                f"the grid argmax; slopes of the peaks over the fitted layers, SE over blocks{pooling})",
                format_table(rows),
            )
        ]
        metrics = {
            "setting": {"d": sc.d, "n_points": sc.n_points, "conditions": list(sc.conditions), "seeds": n_seeds},
            **per_model,
        }
        return Analysis(metrics, sections, figures)

    def claims(self, analysis: Analysis, ctx: Context) -> list[Claim]:
        claims = []
        for name, m in analysis.metrics.items():
            if name == "setting":
                continue
            claims += fu_claims(name, m, ctx.scale_name)
        return claims


CONVERGED = 0.999  # an iterate whose predictions have cos ≥ this with least squares' has converged


def converged_at(
    x: torch.Tensor, y: torch.Tensor, grid: list[int], kind: str, ceiling: float = CONVERGED, min_prefix: int = 2
) -> int:
    """The first Newton iteration / GD step count of `grid` (kind "newton" / "gd") whose prefix predictions on
    x [B, T, d], y [B, T] (prefixes ≥ min_prefix) have cos ≥ min(CONVERGED, ceiling) with least squares' (Newton at
    4·max(grid) iterations); the grid's last value if none does. `ceiling`: the best similarity a layer read-out
    reaches (the last layer's) — iterates closer than that to least squares cannot be told apart by a read-out, so a
    layer matched at or beyond the returned value reads "converged" and deeper layers cannot show more iterations.
    Pooled over prefixes, the cos converges slowly (prefixes with t ≈ d are ill-conditioned), hence the ceiling."""
    ls = newton_predictions(x, y, [4 * max(grid)])[:, :, min_prefix:].reshape(1, -1)
    preds = newton_predictions(x, y, grid) if kind == "newton" else gd_predictions(x, y, grid)
    cos = similarity_matrix(preds[:, :, min_prefix:].reshape(len(grid), -1), ls)[:, 0].numpy()
    done = np.flatnonzero(cos >= min(CONVERGED, ceiling))
    return int(grid[done[0]]) if len(done) else int(grid[-1])


def _fit_layers(argmax: np.ndarray, sims: np.ndarray, cap: int) -> np.ndarray:
    """The layers a fit uses: readable ones (best similarity sims ≥ READABLE), up to the first whose grid argmax is
    at or beyond `cap` (a grid value: converged, `converged_at`; later layers cannot read more). The argmax, not the
    sub-grid peak, meets the cap: a layer whose best grid point is the converged one may have its peak up to half a
    grid step below it, and would let a later plateau layer into the fit."""
    idx = np.flatnonzero(sims >= READABLE)
    at_cap = idx[argmax[idx] >= cap]
    return idx[idx <= at_cap[0]] if len(at_cap) else idx


def _fits(best_newton, best_gd, layers_n, layers_g) -> dict[str, float]:
    """The four line fits (module docstring) of the per-layer best matches [K] (sub-grid peaks) over the layers'
    indices layers_n (Newton) and layers_g (GD)."""
    gd = np.maximum(best_gd[layers_g].astype(float), 0.5)  # GD 0 steps drawn at ½ on the log scale
    newton = best_newton[layers_n].astype(float)
    n_slope, n_r2 = line_fit(layers_n, newton)
    _, n_r2_log = line_fit(layers_n, np.log2(np.maximum(newton, 0.5)))
    g_slope, g_r2 = line_fit(layers_g, np.log2(gd))
    _, g_r2_lin = line_fit(layers_g, gd)
    return {
        "newton_slope": n_slope, "newton_r2": n_r2, "newton_r2_log": n_r2_log,
        "gd_log2_slope": g_slope, "gd_r2": g_r2, "gd_r2_linear": g_r2_lin,
    }  # fmt: skip


def pool_alignments(alignments: Sequence[Alignment]) -> Alignment:
    """The seed average of one model's alignments on the same prompts: the mean similarity matrices newton [K, I],
    gd [K, J] and read-out nmse [K] over the seeds (layers, grids and similarity must agree). Its peaks
    (`Alignment.refined_newton`, …) are those of the mean similarities, not the mean of the seeds' peaks. One
    alignment is returned as it is."""
    first = alignments[0]
    if len(alignments) == 1:
        return first
    same = lambda a: (a.layers, a.newton_iters, a.gd_steps, a.similarity, a.gd_eta)  # noqa: E731
    if any(same(a) != same(first) for a in alignments[1:]):
        raise ValueError("pool_alignments: the alignments differ in layers, grids or similarity")
    mean = lambda f: np.mean([getattr(a, f) for a in alignments], axis=0)  # noqa: E731
    return dataclasses.replace(
        first,
        newton=mean("newton"),
        gd=mean("gd"),
        readout_nmse=mean("readout_nmse"),
        meta={**first.meta, "seeds_pooled": len(alignments)},
    )


def layer_alignment(
    models: Sequence[Any], x: torch.Tensor, y: torch.Tensor, newton_iters: int, blocks: int
) -> tuple[Alignment, dict[str, Any]]:
    """Align the layers of one model's seeds `models` on the same prompts x [B, T, d], y [B, T] (Newton 0 …
    newton_iters, the default GD grid) and pool them (`pool_alignments`): the pooled alignment on all prompts, and
    its fits of the sub-grid peaks (module docstring) with standard errors over `blocks` disjoint blocks of prompts,
    each block aligned on its own for every seed and pooled over the seeds before its fit (the fitted layers are
    chosen once, on all prompts and seeds). One model: today's unpooled alignment, exactly."""
    iters = tuple(range(newton_iters + 1))
    chunks = np.array_split(np.arange(x.shape[0]), blocks)
    seeds: list[Alignment] = []
    seed_blocks: list[list[Alignment]] = []  # [seed][block]
    for model in models:
        names, acts = layer_activations(model, x, y)  # [K, B, T, D]
        seeds.append(align_activations(acts, x, y, names, newton_iters=iters))
        seed_blocks.append([align_activations(acts[:, c], x[c], y[c], names, newton_iters=iters) for c in chunks])
    full = pool_alignments(seeds)
    best_n, best_g = full.refined_newton, full.refined_gd  # sub-grid peaks (module docstring: why not the argmax)
    cap_n = converged_at(x, y, list(iters), "newton", float(full.newton.max(1)[-1]))
    cap_g = converged_at(x, y, list(full.gd_steps), "gd", float(full.gd.max(1)[-1]))
    layers_n = _fit_layers(full.best_newton, full.newton.max(1), cap_n)
    layers_g = _fit_layers(full.best_gd, full.gd.max(1), cap_g)
    fits = _fits(best_n, best_g, layers_n, layers_g)
    per_block = []
    for b in range(blocks):
        a = pool_alignments([block[b] for block in seed_blocks])
        per_block.append(_fits(a.refined_newton, a.refined_gd, layers_n, layers_g))
    se = {
        f"{k}_se": float(np.std([b[k] for b in per_block], ddof=1) / np.sqrt(blocks)) if blocks > 1 else float("nan")
        for k in ("newton_slope", "gd_log2_slope")
    }
    readable = full.newton.max(1) >= READABLE
    first = int(np.flatnonzero(readable)[0]) if readable.any() else 0
    summary = {
        **fits,
        **se,
        "readable": readable.tolist(),
        "newton_converged_at": cap_n,
        "gd_converged_at": cap_g,
        "fit_layers_newton": layers_n.tolist(),
        "fit_layers_gd": layers_g.tolist(),
        "per_block": per_block,
        "readout_first": float(full.readout_nmse[first]),
        "readout_last": float(full.readout_nmse[-1]),
        "per_seed": [  # each seed's own best matches and read-out, unpooled: the spread behind the pooled peaks
            {
                "refined_newton": a.refined_newton.tolist(),
                "refined_gd": a.refined_gd.tolist(),
                "best_newton": a.best_newton.tolist(),
                "best_gd": a.best_gd.tolist(),
                "readout_nmse": a.readout_nmse.tolist(),
            }
            for a in seeds
        ],
    }
    return full, summary


SMOKE_CAVEAT = (
    " — smoke scale: a 4-layer GPT whose layer 0 is unreadable, so at most three layers are fitted and one layer "
    "decides a three-point contrast"
)


def fu_claims(name: str, m: dict[str, Any], scale_name: str = "paper") -> list[Claim]:
    """The claims of one model's alignment summary `m` (`layer_alignment`'s, pooled over its seeds; module
    docstring): the same three fits for GPT and LSA, and for LSA also the monotone GD step count."""
    a = m["alignment"]
    cov = "isotropic" if m["x_condition"] == 1.0 else f"κ = {m['x_condition']:g}"
    per_seed = m.get("per_seed", [])
    listed_n, listed_g = (
        f"sub-grid peak estimates {peaks_text(a[f'refined_{k}'], ', ')}; grid argmax {peaks_text(a[f'best_{k}'], ', ')}"
        + (
            f"; of the mean similarity over {len(per_seed)} seeds, each seed's own peaks "
            f"{_per_seed_text(per_seed, f'refined_{k}')}"
            if len(per_seed) > 1
            else ""
        )
        for k in ("newton", "gd")
    )
    key = name.replace("-", "_")
    kind = "GPT" if m["kind"] == "GPT" else "LSA stack"
    caveat = SMOKE_CAVEAT if scale_name == "smoke" and m["kind"] == "GPT" else ""
    caveat_g = caveat
    if caveat and m["fit_layers_gd"]:  # how close the deepest fitted layer is to where more GD steps stop showing
        last = a["refined_gd"][m["fit_layers_gd"][-1]]
        caveat_g += (
            f"; the last fitted layer matches {peaks_text([last])} GD steps, and GD converges (as far as a read-out "
            f"can tell, `converged_at`) at {m['gd_converged_at']}"
        )
    n_ok = bool(m["newton_slope"] > 2 * m["newton_slope_se"] and m["newton_r2"] >= 0.8)
    g_ok = bool(m["gd_log2_slope"] > 2 * m["gd_log2_slope_se"] and m["gd_r2"] >= m["gd_r2_linear"])
    # two fitted layers: any line fits them, so R² and the log-vs-linear contrast test nothing; only the slopes do
    two_n = "; two fitted layers: R² is vacuous, only the slope is tested" if len(m["fit_layers_newton"]) == 2 else ""
    two_g = (
        "; two fitted layers: the log-vs-linear contrast is vacuous, only the doubling slope is tested"
        if len(m["fit_layers_gd"]) == 2
        else ""
    )
    claims = [
        Claim(
            f"{key}_newton_linear",
            f"{kind}, {cov}: best Newton iteration per layer ({listed_n}) grows linearly over the fitted layers "
            f"{m['fit_layers_newton']} (slope = iterations per layer; R² {m['newton_r2']:.2f}{two_n})"
            + ("" if n_ok else caveat),
            "≈ 3 per middle layer (Fu et al., d = 20, 12 layers)",
            m["newton_slope"],
            f"> 2 SE = {2 * m['newton_slope_se']:.2g} (SE over prompt blocks), R² ≥ 0.8",
            n_ok,
        ),
        Claim(
            f"{key}_gd_exponential",
            f"{kind}, {cov}: best GD step count per layer ({listed_g}) grows exponentially over the fitted layers "
            f"{m['fit_layers_gd']} (slope of log₂ steps = doublings per layer; R² log {m['gd_r2']:.2f} vs linear "
            f"{m['gd_r2_linear']:.2f}{two_g})" + ("" if g_ok else caveat_g),
            "exponentially many steps per layer (Fu et al.)",
            m["gd_log2_slope"],
            f"> 2 SE = {2 * m['gd_log2_slope_se']:.2g}, log fit ≥ linear fit",
            g_ok,
        ),
        Claim(
            f"{key}_readout_improves",
            f"{kind}, {cov}: held-out nmse of the last layer's read-out below the first readable layer's",
            m["readout_first"],
            m["readout_last"],
            "<",
            bool(m["readout_last"] < m["readout_first"]),
        ),
    ]
    if m["kind"] == "LSA":
        best = np.asarray(a["refined_gd"])
        claims.append(
            Claim(
                f"{key}_later_layers_match_more",
                f"LSA stack, {cov}: best-matching GD step count (sub-grid peak) never falls with depth and grows "
                f"from the first to the last layer (GD: {listed_g}; Newton: {listed_n})",
                "non-decreasing, last > first",
                float(best[-1]),
                "monotone (exact)",
                bool(np.all(np.diff(best) >= 0) and best[-1] > best[0]),
            )
        )
    return claims


def plot_iterations(per_model: dict[str, dict[str, Any]], path: Path) -> Path:
    """Best Newton iteration vs layer (linear axis) and best GD steps vs layer (log axis), one line per model: the
    sub-grid peaks of its (seed-pooled) similarities (unreadable layers drawn hollow), the grid argmax as small faint
    dashes, and with several seeds each seed's own peaks as small faint dots."""
    several = any(len(m.get("per_seed", [])) > 1 for m in per_model.values())
    fig = new_figure(11.0, 4.2)
    ax_n, ax_g = fig.subplots(1, 2)
    for name, m in per_model.items():
        a = m["alignment"]
        layers = np.arange(len(a["layers"]))
        readable = np.asarray(m["readable"])
        for ax, k in ((ax_n, "newton"), (ax_g, "gd")):
            peak = np.maximum(np.asarray(a[f"refined_{k}"], dtype=float), 0.5 if k == "gd" else -np.inf)
            argmax = np.maximum(np.asarray(a[f"best_{k}"], dtype=float), 0.5 if k == "gd" else -np.inf)
            (line,) = ax.plot(layers, peak, "-", label=name, alpha=0.8)
            ax.plot(layers[readable], peak[readable], "o", color=line.get_color())
            ax.plot(layers[~readable], peak[~readable], "o", mfc="none", color=line.get_color())
            ax.plot(layers, argmax, "_", ms=9, alpha=0.4, color=line.get_color())
            for row in m.get("per_seed", []) if several else []:  # each seed's own peaks
                own = np.maximum(np.asarray(row[f"refined_{k}"], dtype=float), 0.5 if k == "gd" else -np.inf)
                ax.plot(layers, own, ".", ms=4, alpha=0.35, color=line.get_color())
    style_axes(ax_n, xlabel="layer", ylabel="best-matching Newton iteration")
    style_axes(ax_g, xlabel="layer", ylabel="best-matching GD steps (0 drawn at 0.5)")
    ax_g.set_yscale("log", base=2)
    ax_n.legend(frameon=False, fontsize="small")
    fig.suptitle(
        "Layer ↔ iteration: sub-grid peak of the best-matching Newton iteration and GD steps\n(hollow: unreadable "
        f"layer; dashes: grid argmax{'; small dots: each seed’s own peak' if several else ''})",
        fontsize="medium",
    )
    return save_figure(fig, path)
