"""Analyses that explain a trained model by the algorithm it behaves like."""

from iclab.analysis.compare import (
    compare_learners,
    half_mse,
    implicit_linear_map,
    interpolation_curve,
    ood_curves,
    weight_match,
)

__all__ = [
    "compare_learners",
    "half_mse",
    "implicit_linear_map",
    "interpolation_curve",
    "ood_curves",
    "weight_match",
]
