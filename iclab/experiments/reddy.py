"""Reproduction: *The mechanistic basis of data dependence and abrupt learning in an in-context classification task*
(Reddy, ICLR 2024), docs/papers.md §9.

Setting (iclab.tasks.icl_classification): K classes of items x = (μ_k + εη)/√(1 + ε²) in D dimensions, each class
mapped to one of L labels; a prompt is N item–label pairs and a query. Bursty prompts hold N/B classes B times each
and the query's class; B = 0 is Reddy's "no burstiness": every item i.i.d. (p_bursty = 0; the in-context split then
uses B = N/2, as his code does). The network is Reddy's two-layer attention-only transformer with an MLP classifier
(`attn_only`), trained with cross-entropy at the query.

What is trained (one ensemble: every cell and seed is a member, iclab.experiments.grouping):

* the **(B, K) phase diagram** — B ∈ `burstiness` × K ∈ 2^`log2_classes`, p_novel = 0 (Reddy's Fig. 2 trade-off
  runs use no novel-class prompts);
* the **both-strategies model** — i.i.d. prompts of K = 2^`both_log2_classes` classes mixed with novel-class bursty
  prompts (p_novel = ½, Reddy's p_C): it must learn in weights and in context at once, so ablating its induction
  head can show one strategy go and the other stay.

Measured per member on `n_eval` held-out prompts of its own task: accuracy on the in-context split ("icl": novel
classes, labels only in the context) and the in-weights split ("iwl": the query's class absent from the context),
with binomial standard errors. The training curves (metrics.parquet of each member) give the transition. Reddy's
learning has two phases: a slow one in which the network learns to answer with one of the context's labels (the
context-label shortcut, accuracy B/N on bursty prompts; `context_label_accuracy` near 1), a plateau, then an abrupt
jump when the induction head forms. t_q is the first evaluation step at which icl accuracy has covered the fraction
q of its rise from that plateau B/N to its final value (linearly interpolated between evaluations); the middle of
the jump (t_0.75 − t_0.25) against the time before it (t_0.25) says how abrupt it is, and the same t_0.5 of the
induction-head score (iclab.analysis.induction, logged at every evaluation) says whether the head forms when the
accuracy jumps. Ablation (iclab.models.interventions): the second
layer's head zeroed (``zero:blocks.1.attn.hook_z@0``) on the both-strategies and the flagship models.

Claims (tolerances: binomial standard errors of the accuracies, the evaluation interval for timings, or an
allowance stated with its reason in `reddy_claims`): in-context learning emerges with bursty prompts and many
classes (the flagship cell), in-weights learning with i.i.d. prompts and few classes; ICL grows with B and K and IWL
falls with K (the trade-off of Reddy's Fig. 2); the transition is abrupt and the induction score rises with it
(Reddy's Fig. 3–4); ablating the induction head takes ICL to chance and leaves IWL (Reddy's circuit).

Scales: smoke — D = 32, N = 8, L = 16, ε = 0.1, width 64, Adam 3e-3, batch 64, 1 200 steps, B ∈ {0, 1, 2, 4} ×
K ∈ {2^5, 2^7, 2^9, 2^11}, 2 seeds (34 members, one ensemble run); paper — Reddy's D = 63, N = 8, L = 32,
ε = 0.1, width 128, batch 128, K up to 2^13 (his code trains SGD lr 0.01 for 150 000 steps; iclab trains Adam,
so the paper scale's step count is a GPU budget, not his). Sources of the settings: docs/papers.md §9.

results.json "metrics": {"setting", "cells", "both", "transition", "ablation"}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch

from iclab.config import EvalConfig, ExperimentConfig, TrainConfig
from iclab.experiments.driver import Analysis, Context, Reproduction
from iclab.experiments.reddy_claims import figures, reddy_claims, rise_steps, tables
from iclab.metrics import accuracy
from iclab.models.attn_only import AttnOnlyConfig
from iclab.models.interventions import intervene
from iclab.report import Claim
from iclab.tasks import make_task
from iclab.tasks.icl_classification import ICLClassificationConfig, ICLClassificationTask
from iclab.validation import check_int

__all__ = ["ABLATE", "SCALES", "Reddy", "ReddyOptions", "Scale", "attn_only_run", "logged_curves", "split_accuracies"]

ABLATE = "zero:blocks.1.attn.hook_z@0"
"""the induction head of Reddy's two-layer network: the second layer's (only) head, its output removed"""


@dataclass(frozen=True)
class Scale:
    """A reproduction scale: the task, the network, its training, the grid and the evaluation."""

    d: int
    n_points: int
    n_labels: int
    noise: float
    width: int
    steps: int
    batch_size: int
    lr: float
    eval_every: int
    burstiness: tuple[int, ...]
    """B values (0: i.i.d. prompts)"""
    log2_classes: tuple[int, ...]
    flagship: tuple[int, int]
    """(B, log2 K) of the cell whose transition is analysed"""
    both_log2_classes: int
    n_eval: int
    """held-out prompts per split and member in the analysis"""
    train_eval_prompts: int
    """the trainer's own held-out prompts per split (its curves)"""


# smoke: measured at 600 steps on the loaded 2-core machine (163 s): ICL rises with B (at K = 2^9: 0.24 / 0.87 /
# 0.89 for B = 1 / 2 / 4) and IWL falls with K (B = 0: 1.0 → 0.2–0.3 from K = 2^5 to 2^11); at K = 2^11 the
# transition had not happened yet by step 600, hence 1 200 steps.
SCALES = {
    "smoke": Scale(
        d=32,
        n_points=8,
        n_labels=16,
        noise=0.1,
        width=64,
        steps=1200,
        batch_size=64,
        lr=3e-3,
        eval_every=50,
        burstiness=(0, 1, 2, 4),
        log2_classes=(5, 7, 9, 11),
        flagship=(2, 9),
        both_log2_classes=6,
        n_eval=2000,
        train_eval_prompts=256,
    ),
    "paper": Scale(
        d=63,
        n_points=8,
        n_labels=32,
        noise=0.1,
        width=128,
        steps=100_000,
        batch_size=128,
        lr=1e-3,
        eval_every=1000,
        burstiness=(0, 1, 2, 4),
        log2_classes=(7, 8, 9, 11, 13),
        flagship=(2, 11),
        both_log2_classes=7,
        n_eval=10_000,
        train_eval_prompts=1000,
    ),
    # for tests: seconds on a CPU; no claim is expected to hold
    "tiny": Scale(
        d=8,
        n_points=4,
        n_labels=4,
        noise=0.1,
        width=8,
        steps=4,
        batch_size=8,
        lr=3e-3,
        eval_every=2,
        burstiness=(0, 2),
        log2_classes=(3, 4),
        flagship=(2, 4),
        both_log2_classes=3,
        n_eval=32,
        train_eval_prompts=16,
    ),
}


@dataclass(frozen=True)
class ReddyOptions:
    """`iclab reproduce reddy` options: --seeds N (models per cell; the claims hold for each)."""

    seeds: int = 2

    def __post_init__(self) -> None:
        check_int("seeds", self.seeds, 1)


def _task(sc: Scale, burstiness: int, log2_k: int, p_novel: float = 0.0) -> ICLClassificationConfig:
    return ICLClassificationConfig(
        d=sc.d,
        n_points=sc.n_points,
        n_labels=sc.n_labels,
        n_classes=2**log2_k,
        within_class_noise=sc.noise,
        burstiness=burstiness or sc.n_points // 2,  # B = 0: i.i.d. prompts, the icl split at B = N/2 (Reddy's code)
        p_bursty=1.0 if burstiness else 0.0,
        p_novel=p_novel,
    )


def attn_only_run(task: ICLClassificationConfig, name: str, seed: int, sc: Any, steps: int) -> ExperimentConfig:
    """One run of Reddy's network (`attn_only`, classifier as wide as the stream) on a label task, `steps` Adam steps
    with the scale `sc`'s width, batch_size and lr, evaluated (with the induction scores) every sc.eval_every steps on
    sc.train_eval_prompts prompts per split, one checkpoint at the end. Shared by the classification reproductions
    (reddy, chan-transience), whose scales carry those fields."""
    return ExperimentConfig(
        task=task,
        model=AttnOnlyConfig(width=sc.width, classifier_hidden=sc.width, max_points=task.n_points + 1),
        train=TrainConfig(
            steps=steps,
            batch_size=sc.batch_size,
            lr=sc.lr,
            eval_every=sc.eval_every,
            checkpoint_every=steps,
            seed=seed,
        ),
        eval=EvalConfig(n_prompts=sc.train_eval_prompts),
        name=name,
    )


def _config(sc: Scale, task: ICLClassificationConfig, name: str, seed: int) -> ExperimentConfig:
    return attn_only_run(task, name, seed, sc, sc.steps)


def cell_name(burstiness: int, log2_k: int, seed: int) -> str:
    return f"reddy-b{burstiness}-k2e{log2_k}-seed{seed}"


def both_name(seed: int) -> str:
    return f"reddy-both-seed{seed}"


class Reddy(Reproduction):
    """Reddy 2023: the (B, K) phase diagram of ICL vs IWL, the abrupt induction-head transition, and ablation."""

    name = "reddy"
    summary = "in-context vs in-weights classification: the (B, K) phase diagram and the induction head (Reddy 2023)"
    scales = SCALES
    Options = ReddyOptions

    def title(self, ctx: Context) -> str:
        return f"Reddy 2023 — data dependence and abrupt in-context learning ({ctx.scale_name} scale)"

    def configs(self, scale: Scale, options: ReddyOptions) -> list[ExperimentConfig]:
        cells = [
            _config(scale, _task(scale, b, k), cell_name(b, k, s), s)
            for s in range(options.seeds)
            for b in scale.burstiness
            for k in scale.log2_classes
        ]
        both = [
            _config(scale, _task(scale, 0, scale.both_log2_classes, p_novel=0.5), both_name(s), s)
            for s in range(options.seeds)
        ]
        return cells + both

    def analyse(self, ctx: Context) -> Analysis:
        sc: Scale = ctx.scale
        seeds = ctx.options.seeds
        chance = 1.0 / sc.n_labels
        cells = []
        for b in sc.burstiness:
            for k in sc.log2_classes:
                per_seed = [split_accuracies(ctx, cell_name(b, k, s), sc.n_eval) for s in range(seeds)]
                cells.append({"burstiness": b, "log2_classes": k, "seeds": per_seed})
        both = [split_accuracies(ctx, both_name(s), sc.n_eval, ablate=True) for s in range(seeds)]
        fb, fk = sc.flagship
        plateau = fb / sc.n_points  # the context-label shortcut: one of the N/B context labels at random
        transition = [rise_steps(ctx.trained[cell_name(fb, fk, s)].run.metrics(), plateau) for s in range(seeds)]
        flagship_ablation = [split_accuracies(ctx, cell_name(fb, fk, s), sc.n_eval, ablate=True) for s in range(seeds)]
        curves = {str(s): logged_curves(ctx.trained[cell_name(fb, fk, s)].run.metrics()) for s in range(seeds)}
        metrics: dict[str, Any] = {
            "setting": {
                "d": sc.d,
                "n_points": sc.n_points,
                "n_labels": sc.n_labels,
                "within_class_noise": sc.noise,
                "width": sc.width,
                "steps": sc.steps,
                "chance": chance,
                "flagship": {"burstiness": fb, "log2_classes": fk},
                "both_log2_classes": sc.both_log2_classes,
                "ablation": ABLATE,
                "n_eval": sc.n_eval,
                "eval_every": sc.eval_every,
            },
            "cells": cells,
            "both": both,
            "transition": transition,
            "flagship_ablation": flagship_ablation,
            "curves": curves,
            "seeds": seeds,
        }
        return Analysis(metrics, tables(metrics), figures(ctx.figures, metrics))

    def claims(self, analysis: Analysis, ctx: Context) -> list[Claim]:
        return reddy_claims(analysis.metrics, ctx.scale_name)


@torch.no_grad()
def split_accuracies(ctx: Context, name: str, n: int, ablate: bool = False) -> dict[str, float]:
    """Accuracy on the icl, icl_permuted and iwl splits of the member's own task (n prompts each, seeded apart from
    training), and with `ABLATE` applied when `ablate`."""
    trained = ctx.trained[name]
    model = trained.result.model.eval().to("cpu", torch.float64)
    task = cast(ICLClassificationTask, make_task(trained.config.task))
    out: dict[str, float] = {}
    for split, key in (("icl_novel", "icl"), ("icl_permuted", "icl_permuted"), ("iwl", "iwl")):
        prompts = task.split(split, n, generator=torch.Generator().manual_seed(ctx.seed + 777), dtype=torch.float64)
        out[key] = _accuracy(model, prompts)
        if ablate:
            with intervene(model, [ABLATE]):
                out[f"{key}_ablated"] = _accuracy(model, prompts)
    return out


def _accuracy(model: Any, prompts: Any) -> float:
    return float(accuracy(model.predict_prompts(prompts), prompts.y_q))


def logged_curves(history: Any) -> dict[str, list[float]]:
    """The logged curves of one member: step, icl/iwl accuracy, eval cross-entropy, induction and previous-token
    scores, context-label accuracy (rows of evaluations only)."""
    rows = history[history["icl_accuracy"].notna()]
    keys = [
        "step",
        "icl_accuracy",
        "iwl_accuracy",
        "eval_cross_entropy",
        "induction_score",
        "prev_token_score",
        "context_label_accuracy",
    ]
    return {k: [float(v) for v in np.asarray(rows[k])] for k in keys if k in rows}
