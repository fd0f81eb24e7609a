"""Reproductions (`iclab reproduce <paper>`) and the work behind the other commands (compare, eval, analyze).

Every reproduction is a declared `Reproduction` object (iclab.experiments.driver: scales, options, configs,
analysis, claims) run by the one driver `reproduce`, which trains its models as runs under OUT/runs/, and writes
figures, results.json and report.md/html under OUT. Scales: "smoke" (minutes on a laptop CPU, the numbers in
README.md) and "paper" (the paper's budgets, meant for a GPU). Adding a paper means writing its module and one
line in PAPERS.
"""

from __future__ import annotations

from typing import Any

from iclab.experiments.driver import Reproduction
from iclab.experiments.driver import reproduce as _run
from iclab.experiments.garg import Garg
from iclab.experiments.he import He
from iclab.experiments.von_oswald import VonOswald
from iclab.validation import check_choice

__all__ = ["PAPERS", "Reproduction", "reproduce", "reproduction"]

# paper name → its reproduction, in the order `iclab reproduce` lists them
PAPERS: dict[str, Reproduction] = {r.name: r for r in (VonOswald(), He(), Garg())}


def reproduction(paper: str) -> Reproduction:
    """The reproduction registered as `paper` (one of PAPERS); ConfigError listing them otherwise."""
    check_choice("paper", paper, tuple(PAPERS))
    return PAPERS[paper]


def reproduce(paper: str, **kwargs: Any) -> dict[str, Any]:
    """Run the reproduction `paper` (see `iclab.experiments.driver.reproduce` for the keywords)."""
    return _run(reproduction(paper), **kwargs)
