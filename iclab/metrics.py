"""Metrics in one place: `half_mse`, `mse`, `nmse`, `error_rate`, `accuracy`, `cross_entropy`, with one reduction
rule.

Shapes: predictions and targets are [B, T] for scalar targets and [B, T, k] for vector targets y ∈ R^k (the
output axis last), as `Prompts.y` and the learners' predictions are; any leading shape works for scalar targets.
`vector` says which one a tensor is; left None, a 3-D tensor is read as [B, T, k] and anything else as scalar
(pass vector=False for 3-D scalar errors such as [K, B, T]).

Pointwise, for one prediction ŷ of one target y:
  ``squared_error``  (ŷ − y)², and ‖ŷ − y‖² = Σ_j (ŷ_j − y_j)² for a vector target
  ``half_mse``       ½ · squared_error                     von Oswald's loss; iclab's training loss
  ``mse``            squared_error
  ``nmse``           squared_error / d                     Garg's "normalised squared error", d the input dimension
  ``error_rate``     1[sign ŷ ≠ sign y] (sign 0 := +1) for ±1 labels; 1[argmax ŷ ≠ argmax y] for vector targets
                     (softmax regression: the most probable class); a NaN prediction (any NaN output) is an error
                     ; for class labels (integer targets [B, T] against logits [B, T, L]): 1[argmax ŷ ≠ y]
  ``accuracy``       1 − error_rate
  ``cross_entropy``  −log softmax(ŷ)_y for logits ŷ [B, T, L] and label indices y [B, T] (natural log: uniform
                     logits score log L)

The reduction rule: the squared error is SUMMED over the k outputs of a vector target, then AVERAGED over every
other axis (prompts and queries), or over `dim` of the pointwise [B, T] errors when given. For scalar targets this is
the plain mean, so every scalar-target number (all the reproductions) is what it was. Summing over outputs makes
½·MSE the per-query loss ½‖ŷ − y‖² (a Gaussian likelihood of the whole output vector) and keeps one query one unit,
whatever k. It is what the evaluation protocol (`iclab eval`) and the trainer's held-out `eval_half_mse` already
did; the training loss of vector-target runs averaged over the outputs instead (k times smaller than the held-out
metric logged beside it) and now follows the rule.

Arithmetic happens in the inputs' dtype (the training loss stays differentiable in the model's dtype); `dtype`
casts the squares before any sum, over outputs or prompts (e.g. float64 accumulation of a float32 evaluation).
NaN predictions propagate into the squared-error metrics (the mean is NaN) and count as errors in `error_rate`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "Reduction",
    "accuracy",
    "cross_entropy",
    "error_rate",
    "half_mse",
    "misclassified",
    "mse",
    "nmse",
    "squared_error",
]

Reduction = Literal["mean", "sum", "none"]


def _is_vector(t: Tensor, vector: bool | None) -> bool:
    return t.dim() == 3 if vector is None else vector


def _reduce(values: Tensor, reduction: Reduction, dim: int | tuple[int, ...] | None):
    if reduction == "none":
        return values
    if reduction == "sum":
        return values.sum() if dim is None else values.sum(dim)
    if reduction == "mean":
        return values.mean() if dim is None else values.mean(dim)
    raise ValueError(f"reduction: unknown value {reduction!r}; choose one of: mean, sum, none")


def squared_error(
    pred: Tensor, target: Tensor, *, dtype: torch.dtype | None = None, vector: bool | None = None
) -> Tensor:
    """Pointwise (ŷ − y)², summed over the outputs of vector targets: [B, T] → [B, T], [B, T, k] → [B, T].

    pred and target broadcast (e.g. [K, N] predictions of K readouts against [N] targets); `vector` = None reads
    the broadcast shape. `dtype` casts the squares before anything is summed."""
    sq = (pred - target) ** 2
    if dtype is not None:
        sq = sq.to(dtype)
    return sq.sum(-1) if _is_vector(sq, vector) else sq


def half_mse(
    pred: Tensor,
    target: Tensor,
    *,
    reduction: Reduction = "mean",
    dim: int | tuple[int, ...] | None = None,
    dtype: torch.dtype | None = None,
    vector: bool | None = None,
) -> Tensor:
    """½·squared error, reduced by the module's rule (`reduction` "none": the pointwise [B, T] errors)."""
    return _reduce(0.5 * squared_error(pred, target, dtype=dtype, vector=vector), reduction, dim)


def mse(
    pred: Tensor,
    target: Tensor,
    *,
    reduction: Reduction = "mean",
    dim: int | tuple[int, ...] | None = None,
    dtype: torch.dtype | None = None,
    vector: bool | None = None,
) -> Tensor:
    """Squared error, reduced by the module's rule."""
    return _reduce(squared_error(pred, target, dtype=dtype, vector=vector), reduction, dim)


def nmse(
    pred: Tensor,
    target: Tensor,
    d: int,
    *,
    reduction: Reduction = "mean",
    dim: int | tuple[int, ...] | None = None,
    dtype: torch.dtype | None = None,
    vector: bool | None = None,
) -> Tensor:
    """mse / d, d the input dimension (Garg et al.'s normalisation: the zero predictor scores τ² on a linear task)."""
    return mse(pred, target, reduction=reduction, dim=dim, dtype=dtype, vector=vector) / d


def misclassified(pred: Tensor, target: Tensor, *, vector: bool | None = None) -> Tensor:
    """Pointwise 1.0 where the predicted class is wrong (or the prediction is NaN), else 0.0: [B, T] (float64).

    Scalar ±1 labels: sign ŷ ≠ sign y, with sign 0 := +1. Vector targets [B, T, k]: argmax ŷ ≠ argmax y.
    Class labels (integer target [B, T], logits pred [B, T, L]): argmax ŷ ≠ y; predicted label indices (integer
    pred [B, T], the reference learners'): ŷ ≠ y.
    """
    if not target.is_floating_point() and not pred.is_floating_point():
        wrong = pred != target
    elif not target.is_floating_point():
        wrong = (pred.argmax(-1) != target) | pred.isnan().any(-1)
    elif _is_vector(target, vector):
        wrong = (pred.argmax(-1) != target.argmax(-1)) | pred.isnan().any(-1)
    else:
        wrong = ((pred >= 0) != (target >= 0)) | pred.isnan()
    return wrong.double()


def error_rate(
    pred: Tensor,
    target: Tensor,
    *,
    reduction: Reduction = "mean",
    dim: int | tuple[int, ...] | None = None,
    vector: bool | None = None,
) -> Tensor:
    """Fraction of wrong classes (see `misclassified`), averaged by the module's rule."""
    return _reduce(misclassified(pred, target, vector=vector), reduction, dim)


def accuracy(
    pred: Tensor,
    target: Tensor,
    *,
    reduction: Reduction = "mean",
    dim: int | tuple[int, ...] | None = None,
    vector: bool | None = None,
) -> Tensor:
    """1 − error_rate: the fraction of right classes (a NaN prediction is never right)."""
    return _reduce(1.0 - misclassified(pred, target, vector=vector), reduction, dim)


def cross_entropy(
    logits: Tensor,
    labels: Tensor,
    *,
    reduction: Reduction = "mean",
    dim: int | tuple[int, ...] | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """−log softmax(logits)[label] for logits [..., L] and integer labels [...] (natural log), reduced by the
    module's rule over every axis but the logits' (`reduction` "none": the pointwise [...] losses). `dtype` casts
    the logits first (float64 accumulation of a float32 evaluation)."""
    if dtype is not None:
        logits = logits.to(dtype)
    # F.cross_entropy wants the classes on axis 1; flattening keeps any leading shape
    flat = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none")
    return _reduce(flat.reshape(labels.shape), reduction, dim)
