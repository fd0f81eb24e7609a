"""Reproductions (`iclab reproduce <paper>`) and the work behind the other commands (compare, eval, analyze).

Every reproduction is a function `reproduce_<paper>(*, device, scale, out, force, resume, seed, progress, ...)`
that trains its models as runs under OUT/runs/, writes figures, results.json and report.md/html under OUT
(`iclab.experiments.common`), and returns {"name", "config", "metrics", "claims", "table"}. Scales: "smoke"
(minutes on a laptop CPU, the numbers in README.md) and "paper" (the paper's budgets, meant for a GPU).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["PAPERS", "reproduction"]

# paper name → (module, function, one-line description); modules are imported on use (they pull in plotting).
PAPERS: dict[str, tuple[str, str, str]] = {
    "von-oswald": ("von_oswald", "reproduce_von_oswald", "LSA learns gradient descent (1 layer: GD; K layers: GD++)"),
    "he": ("he", "reproduce_he", "multi-head softmax attention learns debiased GD (He et al.)"),
    "garg": ("garg", "reproduce_garg", "a GPT learns linear regression in context like least squares (Garg et al.)"),
}


def reproduction(paper: str) -> Callable[..., dict[str, Any]]:
    """The reproduce function of `paper` (one of PAPERS)."""
    if paper not in PAPERS:
        from iclab.config import ConfigError

        raise ConfigError(f"paper: unknown value {paper!r}; choose one of: {', '.join(PAPERS)}")
    module, function, _ = PAPERS[paper]
    return getattr(importlib.import_module(f"iclab.experiments.{module}"), function)
