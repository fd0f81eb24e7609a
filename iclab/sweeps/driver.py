"""`iclab sweep SPEC`: expand and validate the spec, take the sweep's lock, skip finished units, run the rest on the
chosen executor, and say where the sweep stands (`sweep_status`, also `iclab sweep status DIR`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from iclab import locks
from iclab.errors import RunExistsError, UsageError
from iclab.progress import SweepProgress
from iclab.report import format_table
from iclab.sweeps.execute import EXECUTORS
from iclab.sweeps.spec import SweepSpec, expand, load_spec
from iclab.sweeps.store import SweepDir

__all__ = ["run_sweep", "sweep_status"]


def run_sweep(
    spec: SweepSpec | str | Path,
    *,
    out: str | Path | None = None,
    executor: str = "local",
    force: bool = False,
    workers: int = 1,
    address: str | None = None,
    num_cpus: int | None = None,
    stream: TextIO | None = None,
) -> dict[str, Any]:
    """Run every unfinished unit of the sweep `spec` (a SweepSpec or a spec file) into `out` (default
    runs/sweeps/<name>); rerunning continues it. Returns `sweep_status(out)`."""
    if executor not in EXECUTORS:
        raise UsageError(f"executor: unknown value {executor!r}; choose one of: {', '.join(EXECUTORS)}")
    if not isinstance(workers, int) or workers < 1:
        raise UsageError(f"workers: must be an integer >= 1, got {workers!r}")
    if num_cpus is not None and (not isinstance(num_cpus, int) or num_cpus < 1):
        raise UsageError(f"num_cpus: must be an integer >= 1, got {num_cpus!r}")
    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    trials, units = expand(spec)  # every cell validated before anything is written
    out = Path(out) if out is not None else Path("runs") / "sweeps" / spec.name
    if out.exists() and not out.is_dir():
        raise RunExistsError(f"out: {out} is a file, not a directory")
    if out.exists() and not (out / "sweep.json").exists() and any(p.name != locks.LOCK_NAME for p in out.iterdir()):
        raise RunExistsError(f"out: {out} exists and is not an iclab sweep (no sweep.json)")  # before any lock file
    locks.hold(out, "sweep")
    sweep = SweepDir(out)
    sweep.create(spec, trials, units, force=force)
    todo = [u.name for u in units if not sweep.finished(u.name)]
    parallel = workers if executor == "local" else max(1, int((num_cpus or 2) // max(spec.cpus, 1e-9)))
    progress = SweepProgress(len(units), parallel=parallel, stream=stream)
    for unit in units:
        if unit.name not in todo:
            progress.move("pending", str((sweep.outcome(unit.name) or {}).get("state")))
    if todo:
        EXECUTORS[executor](out, todo, progress, workers=workers, address=address, num_cpus=num_cpus)
    progress.show(final=True)
    return sweep_status(out)


def sweep_status(out: str | Path) -> dict[str, Any]:
    """Where the sweep in `out` stands: {"name", "counts": state → units, "units": [{name, state, trials, error,
    wall_time_s}], "table": a printable table}. A unit without an outcome is "running" if its run has begun
    (an interrupted one included: the next run resumes it), else "pending"."""
    sweep = SweepDir(out)
    record = sweep.record()
    rows = []
    counts = dict.fromkeys(SweepProgress.STATES, 0)
    for unit in record["units"]:
        outcome = sweep.outcome(unit["name"])
        begun = (sweep.unit_path(unit["name"]) / "config.json").exists()
        state = outcome["state"] if outcome else ("running" if begun else "pending")
        counts[state] = counts.get(state, 0) + 1
        rows.append(
            {
                "unit": unit["name"],
                "state": state,
                "trials": len(unit["trials"]),
                "eval ½MSE": (outcome or {}).get("final_eval_half_mse", ""),
                "wall s": (outcome or {}).get("wall_time_s", ""),
                "error": (outcome or {}).get("error", ""),
            }
        )
    return {"name": record["name"], "counts": counts, "units": rows, "table": format_table(rows)}


def print_status(status: dict[str, Any], stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    counts = ", ".join(f"{n} {state}" for state, n in status["counts"].items() if n)
    stream.write(f"sweep {status['name']}: {counts}\n{status['table']}\n")
