"""The evaluation of class-label tasks: accuracy (and cross-entropy) per held-out split, for every learner alike.

A label task (`TaskConfig.label_vocab` L, e.g. icl_classification) has no error-versus-k curve: its question is
which strategy a learner uses, and the task's held-out splits (`Task.eval_sets`: "eval", the training
distribution, and for icl_classification "icl", "icl_permuted", "iwl") each answer one part of it. Every learner
answers the queries of every split from the same prompts through `predict(x_ctx, y_ctx, x_q)`: reference learners
(iclab.algorithms.icl_classification) return label indices [B, m], models logits [B, m, L].

Metrics (iclab.metrics):
  ``accuracy``       fraction of queries whose predicted label (argmax of the logits) is y_q
  ``cross_entropy``  −log softmax(logits)_y, natural log (uniform logits: log L); only for learners with logits
Standard errors are over prompts, the independent units: the standard deviation of the per-prompt mean divided by
√B. With one query per prompt (the default n_queries) the accuracy's is the binomial √(p(1 − p)/B).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from iclab import metrics, plotting
from iclab.errors import SpecError
from iclab.tasks.base import Prompts

__all__ = ["LABEL_METRICS", "SplitScore", "plot_split_scores", "split_scores", "split_table"]

LABEL_METRICS = ("accuracy", "cross_entropy")


@dataclass(frozen=True)
class SplitScore:
    """One learner on one split: accuracy and (for logits) cross-entropy, each with its standard error."""

    learner: str
    split: str
    n_prompts: int
    n_queries: int
    accuracy: float
    accuracy_se: float
    cross_entropy: float = math.nan  # NaN: the learner predicts labels, not logits
    cross_entropy_se: float = math.nan

    def value(self, metric: str) -> tuple[float, float]:
        """(mean, standard error) of `metric` (one of LABEL_METRICS)."""
        return getattr(self, metric), getattr(self, f"{metric}_se")

    def to_dict(self) -> dict[str, float | int | str | None]:
        def finite(v: float) -> float | None:
            return v if math.isfinite(v) else None

        return {
            "learner": self.learner,
            "split": self.split,
            "n_prompts": self.n_prompts,
            "n_queries": self.n_queries,
            "accuracy": self.accuracy,
            "accuracy_se": self.accuracy_se,
            "cross_entropy": finite(self.cross_entropy),
            "cross_entropy_se": finite(self.cross_entropy_se),
        }


def _mean_se(per_prompt: Tensor) -> tuple[float, float]:
    """per_prompt [B] float64 → (mean, standard deviation / √B) (population std: binomial for 0/1 values)."""
    mean = float(per_prompt.mean())
    return mean, float(per_prompt.std(correction=0)) / math.sqrt(per_prompt.shape[0])


def score(learner: object, name: str, split: str, prompts: Prompts) -> SplitScore:
    """`learner` (anything with predict) on the queries of `prompts` (y label indices) → its SplitScore."""
    with torch.no_grad():
        if hasattr(learner, "predict_prompts"):  # a model: its prompts-level call (interventions bind the prompts)
            pred = learner.predict_prompts(prompts)
        else:
            pred = learner.predict(prompts.x_ctx, prompts.y_ctx, prompts.x_q)  # type: ignore[attr-defined]
    y_q = prompts.y_q  # [B, m] long
    logits = pred.is_floating_point()
    if (logits and pred.shape[:-1] != y_q.shape) or (not logits and pred.shape != y_q.shape):
        raise SpecError(
            f"learners: {name!r} answered {tuple(pred.shape)} ({pred.dtype}) for {tuple(y_q.shape)} label queries; "
            "a learner of class labels returns label indices [B, m] or logits [B, m, L]"
        )
    right = 1.0 - metrics.misclassified(pred, y_q)  # [B, m] float64
    acc, acc_se = _mean_se(right.mean(1))
    ce = ce_se = math.nan
    if logits:
        ce, ce_se = _mean_se(metrics.cross_entropy(pred, y_q, reduction="none", dtype=torch.float64).mean(1))
    B, m = y_q.shape
    return SplitScore(name, split, B, m, acc, acc_se, ce, ce_se)


def split_scores(learners: Mapping[str, object], sets: Mapping[str, Prompts]) -> dict[str, dict[str, SplitScore]]:
    """Every learner on every split, the same prompts for all: split → learner name → SplitScore."""
    for p in sets.values():
        p.check_finite()
    return {split: {name: score(lr, name, split, p) for name, lr in learners.items()} for split, p in sets.items()}


def split_table(scores: Mapping[str, Mapping[str, SplitScore]], metric: str) -> list[dict[str, object]]:
    """Printable rows: one per learner, `metric` ± one standard error per split ("—" where it has none)."""
    if metric not in LABEL_METRICS:
        raise SpecError(f"metric: unknown value {metric!r}; choose one of: {', '.join(LABEL_METRICS)}")
    learners = list(next(iter(scores.values())))
    rows = []
    for name in learners:
        row: dict[str, object] = {"learner": name}
        for split, by_learner in scores.items():
            mean, se = by_learner[name].value(metric)
            row[split] = f"{mean:.4f} ± {se:.4f}" if math.isfinite(mean) else "—"
        rows.append(row)
    return rows


def plot_split_scores(
    scores: Mapping[str, Mapping[str, SplitScore]],
    metric: str,
    path: str | Path,
    *,
    n_labels: int,
    title: str = "",
) -> Path:
    """Bars of `metric` per split (groups) and learner (bars), ± one standard error; chance 1/L (accuracy) or
    uniform logits log L (cross-entropy) as a dashed line."""
    splits = list(scores)
    learners = list(next(iter(scores.values())))
    values = {n: np.array([scores[s][n].value(metric)[0] for s in splits]) for n in learners}
    errors = {n: np.array([scores[s][n].value(metric)[1] for s in splits]) for n in learners}
    if metric == "accuracy":
        reference, ylim = {f"chance 1/L = {1 / n_labels:.3g}": 1 / n_labels}, (0.0, 1.05)
    else:
        values = {n: v for n, v in values.items() if np.isfinite(v).any()}  # learners without logits have none
        reference, ylim = {f"uniform logits log L = {math.log(n_labels):.3g}": math.log(n_labels)}, None
    return plotting.plot_bars(
        splits, values, path, ylabel=metric.replace("_", "-"), errors=errors, reference=reference, title=title,
        ylim=ylim,
    )  # fmt: skip
