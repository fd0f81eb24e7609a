"""Reference learners of in-context classification (Reddy 2023; `iclab.tasks.icl_classification`).

They take the usual `predict(x_ctx [B, n, D], y_ctx [B, n] long, x_q [B, m, D], mask [B, n] | None)` with *label
indices* as targets and return predicted label indices [B, m] (long); `accuracy` scores them against `y_q`.

* `InductionHead` — the ideal induction head: copy the label of the context item nearest to the query
  (Euclidean; mode "neighbour"), or of the nearest per-label context centroid (mode "centroid"). It reads only the
  context, so it is right on every in-context split whenever the query's class is the nearest (ε small), and on
  the in-weights split (query's class absent from the context) right only when the copied class shares the
  query's label: chance.
* `ClassMeanLookup` — the in-weights lookup: the label of the trained class whose centre E[x | k] = μ_k/√(1 + ε²)
  is nearest to the query (a nearest-class-mean classifier fitted to the task's class means; the context is
  ignored). Right on the in-weights split, chance on the in-context ones (novel classes, permuted labels).
* `Chance` — a uniformly random label (its own seeded generator): accuracy 1/L on any split.

Registry names: ``induction`` (``induction:centroid``), ``lookup`` and ``chance`` (both need the task, for its class
means or its L; ``chance:L`` without one).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from iclab.algorithms.registry import LearnerSpec, check_args, parse_int, spec_string
from iclab.shapes import Bool, Float, Int, shape_checked

__all__ = ["LEARNERS", "Chance", "ClassMeanLookup", "InductionHead", "binomial_se"]


def _check_labels(y_ctx: Tensor) -> None:
    if y_ctx.is_floating_point() or y_ctx.dim() != 2:
        raise ValueError(f"y_ctx: class labels [B, n] (integer) expected, got {tuple(y_ctx.shape)} of {y_ctx.dtype}")


def binomial_se(p: float, n: int) -> float:
    """Monte Carlo standard error √(p(1 − p)/n) of an accuracy p measured on n independent queries."""
    return math.sqrt(max(p * (1 - p), 0.0) / max(n, 1))


class InductionHead:
    """Copy the label of the nearest context item ("neighbour") or nearest per-label context centroid
    ("centroid"): the ideal induction head. Masked (absent) context points are never copied; an empty context
    predicts label 0."""

    takes_mask: ClassVar[bool] = True
    predicts_prefixes: ClassVar[bool] = False
    MODES: ClassVar[tuple[str, ...]] = ("neighbour", "centroid")

    def __init__(self, mode: str = "neighbour"):
        if mode not in self.MODES:
            raise ValueError(f"mode: one of {', '.join(self.MODES)}, got {mode!r}")
        self.mode = mode
        self.name = "induction" if mode == "neighbour" else "induction:centroid"

    @shape_checked
    def predict(
        self,
        x_ctx: Float[Tensor, "batch n_ctx d"],
        y_ctx: Int[Tensor, "batch n_ctx"],
        x_q: Float[Tensor, "batch n_q d"],
        mask: Bool[Tensor, "batch n_ctx"] | None = None,
    ) -> Int[Tensor, "batch n_q"]:
        """[B, m] predicted labels."""
        _check_labels(y_ctx)
        present = torch.ones(y_ctx.shape, dtype=torch.bool, device=y_ctx.device) if mask is None else mask
        if self.mode == "neighbour":
            dist = torch.cdist(x_q, x_ctx).masked_fill(~present.unsqueeze(1), math.inf)  # [B, m, n]
            nearest = dist.argmin(-1)  # [B, m]
            return torch.where(present.any(-1, keepdim=True), y_ctx.gather(1, nearest), 0)
        n_labels = int(y_ctx.max()) + 1 if y_ctx.numel() else 1
        onehot = torch.nn.functional.one_hot(y_ctx, n_labels).to(x_ctx.dtype) * present.unsqueeze(-1)  # [B, n, L]
        counts = onehot.sum(1)  # [B, L]
        centroids = torch.einsum("bnl,bnd->bld", onehot, x_ctx) / counts.clamp_min(1).unsqueeze(-1)  # [B, L, D]
        dist = torch.cdist(x_q, centroids).masked_fill((counts == 0).unsqueeze(1), math.inf)  # [B, m, L]
        return dist.argmin(-1)

    def __repr__(self) -> str:
        return f"<InductionHead {self.name}>"


class ClassMeanLookup:
    """The label of the nearest trained class centre (centres [K, D], labels [K] long); ignores the context."""

    takes_mask: ClassVar[bool] = True
    predicts_prefixes: ClassVar[bool] = False

    def __init__(self, centres: Tensor, labels: Tensor, chunk: int = 1 << 22):
        self.centres = centres
        self.labels = labels
        self.chunk = chunk
        self.name = "lookup"

    @classmethod
    def from_task(cls, task: Any) -> ClassMeanLookup:
        """The lookup of an `ICLClassificationTask`'s classes."""
        if not hasattr(task, "class_centres"):
            raise ValueError("needs an icl_classification task (its class means)")
        return cls(task.class_centres(), task.class_labels())

    @shape_checked
    def predict(
        self,
        x_ctx: Float[Tensor, "batch n_ctx d"],
        y_ctx: Int[Tensor, "batch n_ctx"],
        x_q: Float[Tensor, "batch n_q d"],
        mask: Bool[Tensor, "batch n_ctx"] | None = None,
    ) -> Int[Tensor, "batch n_q"]:
        """[B, m] predicted labels: ℓ(argmin_k |x_q − c_k|)."""
        _check_labels(y_ctx)
        centres = self.centres.to(x_q.device, x_q.dtype)
        labels = self.labels.to(x_q.device)
        q = x_q.reshape(-1, x_q.shape[-1])  # [B·m, D]
        step = max(1, self.chunk // centres.shape[0])
        # |x − c|² = |x|² − 2xᵀc + |c|²; |x|² is the same for every class, so it is left out of the argmin
        sq = (centres * centres).sum(-1)  # [K]
        nearest = torch.cat([(sq - 2 * q[s : s + step] @ centres.T).argmin(-1) for s in range(0, q.shape[0], step)])
        return labels[nearest].reshape(x_q.shape[:2])

    def __repr__(self) -> str:
        return f"<ClassMeanLookup K={self.centres.shape[0]}>"


class Chance:
    """A uniformly random label in {0, …, L−1} per query, from its own generator (seed): accuracy 1/L."""

    takes_mask: ClassVar[bool] = True
    predicts_prefixes: ClassVar[bool] = False

    def __init__(self, n_labels: int, seed: int = 0):
        self.n_labels = n_labels
        self.generator = torch.Generator().manual_seed(seed)
        self.name = "chance"

    def predict(self, x_ctx: Tensor, y_ctx: Tensor, x_q: Tensor, mask: Tensor | None = None) -> Tensor:
        """[B, m] uniformly random labels (drawn on the CPU, then moved: the same labels on every device)."""
        _check_labels(y_ctx)
        return torch.randint(self.n_labels, x_q.shape[:2], generator=self.generator).to(x_q.device)


# ----------------------------------------------------------------------------------------------------------------
# registry


def _induction(args: tuple[str, ...], kwargs: dict[str, str], task: Any) -> InductionHead:
    check_args(args, kwargs, 1)
    learner = InductionHead(args[0] if args else "neighbour")
    learner.name = spec_string("induction", args, kwargs)
    return learner


def _lookup(args: tuple[str, ...], kwargs: dict[str, str], task: Any) -> ClassMeanLookup:
    check_args(args, kwargs, 0)
    return ClassMeanLookup.from_task(task)


def _chance(args: tuple[str, ...], kwargs: dict[str, str], task: Any) -> Chance:
    check_args(args, kwargs, 1, ("seed",))
    if args:
        n_labels = parse_int("L", args[0], low=1)
    elif task is not None and hasattr(task, "config") and hasattr(task.config, "n_labels"):
        n_labels = task.config.n_labels
    else:
        raise ValueError("L: the number of labels is required without an icl_classification task (chance:32)")
    learner = Chance(n_labels, parse_int("seed", kwargs.get("seed", "0"), low=0))
    learner.name = spec_string("chance", args, kwargs)
    return learner


LEARNERS: dict[str, LearnerSpec] = {
    "induction": LearnerSpec(
        _induction, "induction[:centroid]", "copy the nearest context item's (or label centroid's) label (Reddy)"
    ),
    "lookup": LearnerSpec(_lookup, "lookup", "label of the nearest trained class mean; ignores the context (Reddy)"),
    "chance": LearnerSpec(_chance, "chance[:L][:seed=S]", "a uniformly random label of L (accuracy 1/L)"),
}
