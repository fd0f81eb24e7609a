"""Analyses that explain a trained model by the algorithm it behaves like.

compare.py    preds diff, model cos, weight match to a construction, interpolation, OOD curves
implicit.py   Akyürek's implicit linear model from probe queries (R², agreement with OLS / ridge / GD)
probes.py     linear probes per layer on frozen activations (held-out R²)
patterns.py   KQ / OV circuits per head and layer, He et al.'s statistics, attention rows
alignment.py  Fu et al.'s layer ↔ iteration alignment with GD steps and Newton iterations
Each analysis returns a JSON-ready summary and draws its figure; `iclab analyze RUN` runs them on a trained run.
"""

from iclab.analysis.alignment import Alignment, align, align_activations, plot_alignment
from iclab.analysis.compare import (
    compare_learners,
    half_mse,
    implicit_linear_map,
    interpolation_curve,
    ood_curves,
    weight_match,
)
from iclab.analysis.implicit import fit_implicit, implicit_summary, make_references, plot_implicit
from iclab.analysis.patterns import attention_patterns, circuit_statistics, circuits
from iclab.analysis.probes import plot_probes, probe_model, probe_targets

__all__ = [
    "Alignment",
    "align",
    "align_activations",
    "attention_patterns",
    "circuit_statistics",
    "circuits",
    "compare_learners",
    "fit_implicit",
    "half_mse",
    "implicit_linear_map",
    "implicit_summary",
    "interpolation_curve",
    "make_references",
    "ood_curves",
    "plot_alignment",
    "plot_implicit",
    "plot_probes",
    "probe_model",
    "probe_targets",
    "weight_match",
]
