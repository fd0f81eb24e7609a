"""Reproduction: Zipfian class frequencies (Chan et al., NeurIPS 2022, *Data distributional properties drive emergent
in-context learning in transformers*) and the transience of in-context learning (Singh et al., NeurIPS 2023, *The
transient nature of emergent in-context learning in transformers*), on Reddy's synthetic task (docs/papers.md §9).

Two experiments, each one ensemble (iclab.experiments.grouping; zipf_alpha and the seed are per-member fields):

* **Zipf exponent α** (Chan et al. Fig. 5; Reddy's code sweeps it too): K classes with p_k ∝ k^(−α), a fraction
  0.9 of the training prompts bursty (Chan et al.'s p_bursty), α ∈ `alphas`. In-context accuracy on novel classes
  and in-weights accuracy (the query's class drawn from p, absent from the context) at the end of training.
  Chan et al.: uniform frequencies give in-context learning and little in-weights learning, strongly skewed ones
  the reverse, and near α = 1 a transformer does both (their "sweet spot").
* **Transience** (Singh et al.): fewer classes (K = 2^`transient_log2_classes`), p_bursty 0.9, trained
  `transient_factor` times longer. In-context learning appears first and then fades while in-weights learning takes
  over and the held-out loss on the training distribution keeps falling (Singh et al. Fig. 1: ICL is transient; the
  network converges to the in-weights solution, which also answers the bursty prompts of trained classes).

Measured per member on `n_eval` held-out prompts of its own task (binomial standard errors), and from its logged
curves (icl_accuracy, iwl_accuracy, eval_cross_entropy at every evaluation). Claims (tolerances: standard errors
or allowances stated with their reasons in `iclab.experiments.chan_transience_claims`): ICL falls and IWL rises
with α; both coexist at α = 1 and not at the ends of the α range; in the transience runs ICL peaks, then falls to
at most half its peak while IWL rises to ≥ 0.9 and the loss keeps falling.

Scales: smoke — D = 32, N = 8, L = 16, B = 2, ε = 0.1, `attn_only` at width 64, Adam 3e-3, batch 64, K = 2^10 and
2 000 steps for α ∈ {0, 0.5, 1, 1.5, 2}; K = 2^8, B = 4 and 4 000 steps for transience; 2 seeds. Paper — Reddy's
D = 63, L = 32, width 128 (Chan et al. and Singh et al. train on Omniglot with a ResNet embedder and a 12-layer
transformer; iclab's synthetic version keeps their data properties, not their images). results.json "metrics":
{"setting", "alphas", "transience"}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from iclab.config import ExperimentConfig
from iclab.experiments.chan_transience_claims import chan_claims, figures, tables
from iclab.experiments.driver import Analysis, Context, Reproduction
from iclab.experiments.reddy import attn_only_run, logged_curves, split_accuracies
from iclab.report import Claim
from iclab.tasks.icl_classification import ICLClassificationConfig
from iclab.validation import check_int

__all__ = ["SCALES", "ChanOptions", "ChanTransience", "Scale"]


@dataclass(frozen=True)
class Scale:
    """A reproduction scale: the task, the network, the α sweep and the transience runs."""

    d: int
    n_points: int
    n_labels: int
    noise: float
    p_bursty: float
    width: int
    batch_size: int
    lr: float
    alphas: tuple[float, ...]
    alpha_log2_classes: int
    alpha_burstiness: int
    alpha_steps: int
    transient_log2_classes: int
    transient_burstiness: int
    transient_steps: int
    eval_every: int
    n_eval: int
    train_eval_prompts: int


# smoke, measured on the loaded 2-core machine: the α sweep (8 members, α ≤ 1.5, 2 000 steps) took 211 s and gave ICL
# 0.97 / 0.96 / 0.91 / 0.39 and IWL 0.09 / 0.17 / 0.58 / 0.93 at α = 0 / 0.5 / 1 / 1.5 (seed means); at K = 2^8, B = 4,
# p_bursty 0.9, ICL peaked at 0.80 near step 800 and was back at 0.09 by step 4 000 with IWL 0.99 (6 000-step probe
# with K ∈ {2^7, 2^8}, B ∈ {2, 4}, p_bursty ∈ {0.8, 0.9}: every K = 2^8 member transient, K = 2^7 went to IWL
# directly; with p_bursty = 1 ICL persisted for 6 000 steps).
SCALES = {
    "smoke": Scale(
        d=32,
        n_points=8,
        n_labels=16,
        noise=0.1,
        p_bursty=0.9,
        width=64,
        batch_size=64,
        lr=3e-3,
        alphas=(0.0, 0.5, 1.0, 1.5, 2.0),
        alpha_log2_classes=10,
        alpha_burstiness=2,
        alpha_steps=2000,
        transient_log2_classes=8,
        transient_burstiness=4,
        transient_steps=4000,
        eval_every=100,
        n_eval=2000,
        train_eval_prompts=256,
    ),
    "paper": Scale(
        d=63,
        n_points=8,
        n_labels=32,
        noise=0.1,
        p_bursty=0.9,
        width=128,
        batch_size=128,
        lr=1e-3,
        alphas=(0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0),
        alpha_log2_classes=11,
        alpha_burstiness=2,
        alpha_steps=50_000,
        transient_log2_classes=9,
        transient_burstiness=4,
        transient_steps=200_000,
        eval_every=1000,
        n_eval=10_000,
        train_eval_prompts=1000,
    ),
    # for tests: seconds on a CPU; no claim is expected to hold
    "tiny": Scale(
        d=8,
        n_points=4,
        n_labels=4,
        noise=0.1,
        p_bursty=0.9,
        width=8,
        batch_size=8,
        lr=3e-3,
        alphas=(0.0, 1.0, 2.0),
        alpha_log2_classes=4,
        alpha_burstiness=2,
        alpha_steps=4,
        transient_log2_classes=3,
        transient_burstiness=2,
        transient_steps=6,
        eval_every=2,
        n_eval=32,
        train_eval_prompts=16,
    ),
}


@dataclass(frozen=True)
class ChanOptions:
    """`iclab reproduce chan-transience` options: --seeds N (models per setting; the claims hold for each)."""

    seeds: int = 2

    def __post_init__(self) -> None:
        check_int("seeds", self.seeds, 1)


def _config(sc: Scale, name: str, seed: int, *, log2_k: int, burstiness: int, alpha: float, steps: int):
    task = ICLClassificationConfig(
        d=sc.d,
        n_points=sc.n_points,
        n_labels=sc.n_labels,
        n_classes=2**log2_k,
        within_class_noise=sc.noise,
        burstiness=burstiness,
        p_bursty=sc.p_bursty,
        zipf_alpha=alpha,
    )
    return attn_only_run(task, name, seed, sc, steps)


def alpha_name(alpha: float, seed: int) -> str:
    return f"chan-alpha{alpha:g}-seed{seed}"


def transient_name(seed: int) -> str:
    return f"singh-transience-seed{seed}"


class ChanTransience(Reproduction):
    """Chan et al.'s Zipf-exponent trade-off and Singh et al.'s transient in-context learning."""

    name = "chan-transience"
    summary = "Zipfian classes let ICL and IWL coexist; ICL is transient (Chan et al. 2022, Singh et al. 2023)"
    scales = SCALES
    Options = ChanOptions

    def title(self, ctx: Context) -> str:
        return f"Chan et al. 2022 and Singh et al. 2023 — Zipfian classes and transient ICL ({ctx.scale_name} scale)"

    def configs(self, scale: Scale, options: ChanOptions) -> list[ExperimentConfig]:
        alphas = [
            _config(
                scale,
                alpha_name(a, s),
                s,
                log2_k=scale.alpha_log2_classes,
                burstiness=scale.alpha_burstiness,
                alpha=a,
                steps=scale.alpha_steps,
            )
            for s in range(options.seeds)
            for a in scale.alphas
        ]
        transient = [
            _config(
                scale,
                transient_name(s),
                s,
                log2_k=scale.transient_log2_classes,
                burstiness=scale.transient_burstiness,
                alpha=0.0,
                steps=scale.transient_steps,
            )
            for s in range(options.seeds)
        ]
        return alphas + transient

    def analyse(self, ctx: Context) -> Analysis:
        sc: Scale = ctx.scale
        seeds = ctx.options.seeds
        alphas = [
            {"alpha": a, "seeds": [split_accuracies(ctx, alpha_name(a, s), sc.n_eval) for s in range(seeds)]}
            for a in sc.alphas
        ]
        transience = []
        for s in range(seeds):
            curve = logged_curves(ctx.trained[transient_name(s)].run.metrics())
            final = split_accuracies(ctx, transient_name(s), sc.n_eval)
            transience.append({"curve": curve, "final": final, **_peak(curve)})
        metrics: dict[str, Any] = {
            "setting": {
                "d": sc.d,
                "n_points": sc.n_points,
                "n_labels": sc.n_labels,
                "within_class_noise": sc.noise,
                "p_bursty": sc.p_bursty,
                "width": sc.width,
                "chance": 1.0 / sc.n_labels,
                "alpha_classes": 2**sc.alpha_log2_classes,
                "alpha_burstiness": sc.alpha_burstiness,
                "alpha_steps": sc.alpha_steps,
                "transient_classes": 2**sc.transient_log2_classes,
                "transient_burstiness": sc.transient_burstiness,
                "transient_steps": sc.transient_steps,
                "n_eval": sc.n_eval,
                "train_eval_prompts": sc.train_eval_prompts,
            },
            "alphas": alphas,
            "transience": transience,
            "seeds": seeds,
        }
        return Analysis(metrics, tables(metrics), figures(ctx.figures, metrics))

    def claims(self, analysis: Analysis, ctx: Context) -> list[Claim]:
        return chan_claims(analysis.metrics, ctx.scale_name)


def _peak(curve: dict[str, list[float]]) -> dict[str, float]:
    """The logged in-context accuracy's peak (value, step) and the held-out cross-entropy there and at the end."""
    acc = np.asarray(curve["icl_accuracy"])
    i = int(np.argmax(acc))
    ce = curve["eval_cross_entropy"]
    return {"peak_icl": float(acc[i]), "peak_step": curve["step"][i], "loss_at_peak": ce[i], "final_loss": ce[-1]}
