"""What every `iclab reproduce <paper>` shares: the output directory, trained runs inside it, and the results.

A reproduction directory OUT holds `runs/<name>/` (one run per trained model, resumable), `figures/`,
`results.json` ({"name", "config", "metrics", "claims", "table"}) and `report.md` / `report.html`. Reproductions
never overwrite an existing OUT without `force` and never delete a directory they did not create (MARKER).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from iclab import locks
from iclab.config import ConfigError, ExperimentConfig, config_to_dict
from iclab.report import Claim, write_report
from iclab.runs import RunDir, atomic_write_bytes
from iclab.training import TrainResult, train
from iclab.training.trainer import resolve_device

__all__ = ["MARKER", "finish", "pick_scale", "prepare_out", "standard_error", "train_run"]


def pick_scale(scales: Mapping[str, Any], scale: str, device: str) -> Any:
    """scales[scale], after checking the scale's name and that `device` exists (a missing GPU fails here, before
    anything is written)."""
    if scale not in scales:
        raise ConfigError(f"scale: unknown value {scale!r}; choose one of: {', '.join(scales)}")
    resolve_device(device)
    return scales[scale]


MARKER = ".iclab-reproduction"  # written into every OUT this code creates; `force` deletes only such directories


def prepare_out(out: Path, force: bool, resume: bool) -> None:
    """Create OUT/figures; refuse an existing non-empty OUT unless `force` (wipe it: only a directory this code
    created, marked by MARKER) or `resume` (reuse it). Call it after every config is built and validated."""
    if force and resume:
        raise ConfigError("force: give either --force (start again) or --resume (continue), not both")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out: {out} is a file, not a directory")
    if out.exists() and any(p.name != locks.LOCK_NAME for p in out.iterdir()):
        if not (force or resume):
            raise ConfigError(f"out: {out} already exists; pass --force to overwrite or --resume to continue")
        if not _is_reproduction(out):
            raise ConfigError(f"out: {out} is not a reproduction directory (no {MARKER}); refusing to touch it")
    # one process per reproduction directory, held until it exits; --force then clears it under the lock, so a
    # reproduction still running there is refused instead of having its runs deleted
    locks.hold(out, "reproduction")
    if force:
        locks.clear_except_lock(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / MARKER).touch()


def _is_reproduction(out: Path) -> bool:
    """OUT was made by a reproduction: it has MARKER, or (made before MARKER existed) a results.json with claims."""
    if (out / MARKER).exists():
        return True
    try:
        return {"name", "claims"} <= set(json.loads((out / "results.json").read_text()))
    except (OSError, ValueError, TypeError):
        return False


def train_run(cfg: ExperimentConfig, out: Path, resume: bool) -> tuple[TrainResult, RunDir]:
    """Train `cfg` as the run OUT/runs/<cfg.name> (continuing its latest checkpoint with `resume`)."""
    run = RunDir.create(out / "runs" / cfg.name, config_to_dict(cfg), resume=resume)
    return train(cfg, run, resume=resume), run


def standard_error(learner, prompts) -> float:
    """Standard error of a held-out ½·MSE estimate (per-prompt losses, queries averaged within a prompt)."""
    from iclab.analysis.compare import per_prompt_half_mse

    return (per_prompt_half_mse(learner, prompts).std() / len(prompts) ** 0.5).item()


def finish(
    out: Path,
    *,
    name: str,
    title: str,
    config: dict[str, Any],
    metrics: dict[str, Any],
    claims: list[Claim],
    sections: list[tuple[str, str]],
    figures: list[Path],
) -> dict[str, Any]:
    """Write OUT/results.json and the report; return the results ({"name", "config", "metrics", "claims",
    "table"}, where "table" — what the CLI prints — is the only section's table, or every section under its
    heading)."""
    table = "\n\n".join(f"{heading}\n{body}" for heading, body in sections) if len(sections) > 1 else sections[0][1]
    results = {
        "name": name,
        "config": config,
        "metrics": metrics,
        "claims": [c.to_dict() for c in claims],
        "table": table,
    }
    atomic_write_bytes(out / "results.json", json.dumps(results, indent=2).encode())
    write_report(out, title, sections, claims, figures)
    return results
