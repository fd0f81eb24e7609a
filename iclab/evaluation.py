"""The evaluation protocol: error versus number of in-context examples, for trained models and algorithms alike.

Every learner is asked the same questions on the *same* prompts: for a prompt of T points, prediction t uses the
points before t as its context and x_t (or a shifted query, see `iclab.shifts`) as its query, t = 0 … T − 1. So
"k in-context examples" is position k. Learners that predict every prefix in one pass (causal models, cumulative
algorithms) use their own `predict_prefixes`; any other learner is evaluated on one masked problem per prefix,
batched over prompts and prefixes (`iclab.algorithms.base.expand_prefixes`), never in a Python loop over prompts.

Metric names say what they measure (docs/conventions.md §1; computed by `iclab.metrics`, whose docstring states the
one reduction rule: squared errors summed over the outputs of vector targets, averaged over prompts and queries):
  ``half_mse``   ½(ŷ − y)²                   von Oswald's loss
  ``mse``        (ŷ − y)²                     summed over output coordinates for vector targets
  ``nmse``       (ŷ − y)² / d                 Garg's "normalised squared error" (d = input dimension)
  ``error_rate`` 1[sign ŷ ≠ sign y] (sign 0 := +1) for ±1 labels (classification); for vector targets,
                 1[argmax ŷ ≠ argmax y] (softmax regression: the most probable class); a NaN prediction is an error
  ``…_noiseless``  the same against the noiseless target f (Raventós)
Confidence bands are percentile bootstrap intervals over prompts (the prompts are the independent units).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from iclab import metrics
from iclab.algorithms.base import expand_prefixes
from iclab.errors import SpecError
from iclab.tasks.base import Prompts

__all__ = [
    "METRICS",
    "Curve",
    "accepts_mask",
    "bootstrap_band",
    "curves_table",
    "error_curves",
    "pointwise_errors",
    "prefix_predictions",
]

_BASE_METRICS = ("half_mse", "mse", "nmse", "error_rate")
METRICS = _BASE_METRICS + tuple(f"{m}_noiseless" for m in _BASE_METRICS)


@dataclass(frozen=True)
class Curve:
    """Mean error at each number of in-context examples k = 0 … T − 1, with a bootstrap band over prompts."""

    learner: str
    metric: str
    k: np.ndarray  # [T]
    mean: np.ndarray  # [T]
    lo: np.ndarray  # [T]
    hi: np.ndarray  # [T]
    n_prompts: int

    def to_dict(self) -> dict:
        return {
            "learner": self.learner,
            "metric": self.metric,
            "n_prompts": self.n_prompts,
            "k": self.k.tolist(),
            "mean": self.mean.tolist(),
            "lo": self.lo.tolist(),
            "hi": self.hi.tolist(),
        }


def accepts_mask(learner) -> bool:
    """Whether learner.predict takes a context mask (then absent points are masked, not zero tokens): the
    learner's declared `takes_mask` (iclab.algorithms.base); a learner that declares nothing takes none."""
    return bool(getattr(learner, "takes_mask", False))


def has_prefix_predictions(learner) -> bool:
    """Whether the learner declares `predicts_prefixes` (iclab.algorithms.base)."""
    return bool(getattr(learner, "predicts_prefixes", False))


def prefix_predictions(learner, x: Tensor, y: Tensor, x_query: Tensor | None = None, chunk: int = 1 << 24) -> Tensor:
    """Predictions for every prefix: x [B, T, d], y [B, T] (or [B, T, k]) → [B, T] (or [B, T, k]).

    Prediction t sees points < t and answers query x_query[:, t] (default x[:, t]). A learner's own
    `predict_prefixes` is used when the queries are the prompt's own points; otherwise each prefix becomes one
    masked problem. A learner whose `predict` takes no mask sees the absent points as zero tokens (for linear
    attention exactly "not there": a zero token adds nothing to any sum).
    """
    if x_query is None and has_prefix_predictions(learner):
        return learner.predict_prefixes(x, y)
    B, T, d = x.shape
    if y.dim() == 3:  # vector targets: per output coordinate, folded into the batch
        k = y.shape[-1]

        def rep(t: Tensor) -> Tensor:  # [B, ...] → [B·k, ...]
            return t.unsqueeze(1).expand(B, k, *t.shape[1:]).reshape(B * k, *t.shape[1:])

        x_query_rep = None if x_query is None else rep(x_query)
        out = prefix_predictions(learner, rep(x), y.permute(0, 2, 1).reshape(B * k, T), x_query_rep, chunk)
        return out.reshape(B, k, T).permute(0, 2, 1)
    takes_mask = accepts_mask(learner)
    step = max(1, chunk // (T * max(T - 1, 1) * max(d, 1)))
    parts = []
    for s in range(0, B, step):
        x_ctx, y_ctx, x_q, mask = expand_prefixes(x[s : s + step], y[s : s + step])
        if x_query is not None:
            x_q = x_query[s : s + step].reshape(-1, 1, d)
        pred = learner.predict(x_ctx, y_ctx, x_q, mask) if takes_mask else learner.predict(x_ctx, y_ctx, x_q)
        parts.append(pred.reshape(-1, T))
    return torch.cat(parts)


def pointwise_errors(pred: Tensor, prompts: Prompts, metric: str, target: Tensor | None = None) -> Tensor:
    """[B, T] errors of predictions [B, T] (or [B, T, k]) under `metric` (see the module docstring), float64."""
    if metric not in METRICS:
        raise SpecError(f"metric: unknown value {metric!r}; choose one of: {', '.join(METRICS)}")
    noiseless = metric.endswith("_noiseless")
    if target is None:
        target = prompts.f if noiseless else prompts.y
        if target is None:
            raise SpecError(f"metric: {metric!r} needs the noiseless targets f, which this task does not provide")
    base = metric.removesuffix("_noiseless")
    if base == "error_rate":
        return metrics.misclassified(pred, target)  # a NaN prediction is an error
    pred, target = pred.double(), target.double()
    if base == "half_mse":
        return metrics.half_mse(pred, target, reduction="none")
    if base == "nmse":
        return metrics.nmse(pred, target, prompts.x.shape[-1], reduction="none")
    return metrics.mse(pred, target, reduction="none")


def bootstrap_band(errors: Tensor, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Percentile bootstrap band of the mean over prompts: errors [B, T] → (lo [T], hi [T]).

    Resampling prompts with replacement is a multinomial count vector per replicate, so all replicates are one
    matrix product counts [n_boot, B] @ errors [B, T].
    """
    B = errors.shape[0]
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(B, (n_boot, B), generator=gen)
    counts = torch.zeros(n_boot, B, dtype=torch.float64).scatter_add_(
        1, idx, torch.ones(n_boot, B, dtype=torch.float64)
    )
    means = counts @ errors.double().cpu() / B  # [n_boot, T]
    alpha = (1 - level) / 2
    q = torch.tensor([alpha, 1 - alpha], dtype=torch.float64)
    lo, hi = torch.quantile(means, q, dim=0)
    return lo, hi


def error_curves(
    learners: Mapping[str, object],
    prompts: Prompts,
    *,
    metric: str = "nmse",
    x_query: Tensor | None = None,
    target: Tensor | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, Curve]:
    """Error vs number of in-context examples for every learner on the same prompts.

    Args:
        learners: display name → learner (anything with predict, optionally predict_prefixes).
        prompts: x [B, T, d], y [B, T] (all T points are used; n_ctx is ignored).
        x_query: [B, T, d] shifted queries (prediction t answers x_query[:, t]); target then gives their
            targets [B, T] (noisy or noiseless, as the metric says).
    Returns:
        name → Curve over k = 0 … T − 1.
    """
    if (x_query is None) != (target is None):
        raise ValueError("x_query and target: give both (shifted queries with their targets) or neither")
    prompts.check_finite()
    for name, value in (("x_query", x_query), ("target", target)):
        if value is not None and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name}: holds non-finite values (NaN or inf); give finite inputs")
    curves = {}
    for name, learner in learners.items():
        with torch.no_grad():
            pred = prefix_predictions(learner, prompts.x, prompts.y, x_query)
        errors = pointwise_errors(pred, prompts, metric, target)  # [B, T]
        lo, hi = bootstrap_band(errors, n_boot=n_boot, level=level, seed=seed)
        curves[name] = Curve(
            learner=name,
            metric=metric,
            k=np.arange(errors.shape[1]),
            mean=errors.mean(0).cpu().numpy(),
            lo=lo.numpy(),
            hi=hi.numpy(),
            n_prompts=errors.shape[0],
        )
    return curves


def curves_table(curves: Mapping[str, Curve], ks: list[int] | None = None) -> list[dict[str, object]]:
    """Rows for a printed table: one per learner, the mean error [band] at a few k (default ~6 spread out)."""
    T = len(next(iter(curves.values())).k)
    if ks is None:
        ks = sorted({int(v) for v in np.unique(np.linspace(0, T - 1, num=min(T, 6)).round())})
    rows = []
    for name, c in curves.items():
        row: dict[str, object] = {"learner": name}
        for k in ks:
            row[f"k={k}"] = f"{c.mean[k]:.4g} [{c.lo[k]:.3g}, {c.hi[k]:.3g}]"
        rows.append(row)
    return rows
