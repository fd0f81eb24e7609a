"""Reproductions (`iclab reproduce <paper>`) and the work behind the other commands (compare, eval, analyze).

Every reproduction is a declared `Reproduction` object (iclab.experiments.driver: scales, options, configs,
analysis, claims) run by the one driver `reproduce`, which trains its models as runs under OUT/runs/, and writes
figures, results.json and report.md/html under OUT. Scales: "smoke" (minutes on a laptop CPU, the numbers in
README.md) and "paper" (the paper's budgets, meant for a GPU). Adding a paper means writing its module and one
line in PAPERS.
"""

from __future__ import annotations

from typing import Any

from iclab.experiments.ahn import Ahn
from iclab.experiments.akyurek import Akyurek
from iclab.experiments.chan_transience import ChanTransience
from iclab.experiments.driver import Reproduction
from iclab.experiments.driver import reproduce as _run
from iclab.experiments.fu import Fu
from iclab.experiments.garg import Garg
from iclab.experiments.he import He
from iclab.experiments.mahankali_zfb import MahankaliZFB
from iclab.experiments.raventos import Raventos
from iclab.experiments.reddy import Reddy
from iclab.experiments.von_oswald import VonOswald
from iclab.validation import check_choice

__all__ = ["PAPERS", "Reproduction", "reproduce", "reproduce_all", "reproduction"]

# paper name → its reproduction, in the order `iclab reproduce` lists them
PAPERS: dict[str, Reproduction] = {
    r.name: r
    for r in (
        VonOswald(),
        He(),
        Garg(),
        Fu(),
        MahankaliZFB(),
        Raventos(),
        Akyurek(),
        Ahn(),
        Reddy(),
        ChanTransience(),
    )
}


def reproduction(paper: str) -> Reproduction:
    """The reproduction registered as `paper` (one of PAPERS); ConfigError listing them otherwise."""
    check_choice("paper", paper, tuple(PAPERS))
    return PAPERS[paper]


def reproduce(paper: str, **kwargs: Any) -> dict[str, Any]:
    """Run the reproduction `paper` (see `iclab.experiments.driver.reproduce` for the keywords)."""
    return _run(reproduction(paper), **kwargs)


def reproduce_all(
    *,
    scale: str = "smoke",
    device: str = "cpu",
    out: Any = None,
    seed: int = 0,
    progress: bool = True,
    echo: Any = print,
) -> dict[str, Any]:
    """Every registered reproduction (its default options) under OUT/<its directory name>, then `iclab report OUT`.

    Resumable: a reproduction whose results.json exists is skipped, an interrupted one resumes its runs. A
    reproduction that fails is reported and the others still run. Returns {"report": path, "done": [names],
    "skipped": [names], "failed": {name: error}, "counts": the report's counts}.
    """
    import dataclasses
    import json
    from pathlib import Path

    from iclab.report_all import report_all

    out = Path(out) if out is not None else Path("runs") / f"reproduce-all-{scale}"
    done, skipped, failed = [], [], {}
    for name, repro in PAPERS.items():
        options = repro.Options()
        paper_out = out / repro.out_name(scale, options)
        try:
            finished = {"claims"} <= set(json.loads((paper_out / "results.json").read_text()))
        except (OSError, ValueError):
            finished = False
        if finished:
            skipped.append(name)
            echo(f"{name}: finished before, skipped ({paper_out})")
            continue
        echo(f"{name}: {repro.summary} ...")
        try:
            results = _run(
                repro,
                scale=scale,
                device=device,
                out=paper_out,
                resume=paper_out.exists(),
                seed=seed,
                progress=progress,
                **dataclasses.asdict(options),
            )
        except Exception as exc:  # one paper's failure is reported; the others still run
            failed[name] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            echo(f"{name}: FAILED ({failed[name]})")
            continue
        held = sum(bool(c["holds"]) for c in results["claims"])
        echo(f"{name}: {held}/{len(results['claims'])} claims hold ({results['metrics']['wall_time_s']:.0f} s)")
        done.append(name)
    path, counts = report_all(out)
    return {"report": path, "done": done, "skipped": skipped, "failed": failed, "counts": counts}
