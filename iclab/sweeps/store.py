"""A sweep directory: what was asked (sweep.json), one run per unit, one outcome file per finished unit.

Layout of OUT::

    sweep.json            {"name", "spec", "axes", "seeds", "trials": [...], "units": [...], iclab version, git SHA}
    units/<unit>/         an ordinary run directory (an ensemble unit has members/<label>/ runs inside)
    outcomes/<unit>.json  {"state": "done" | "diverged" | "failed", "error", "wall_time_s", "attempts", ...}
    logs/<unit>.log       the traceback of a failed unit
    results.parquet       written by `iclab sweep collect`
    figures/

A unit is *finished* when its outcome says done or diverged (divergence is a result: the same config diverges
again); a failed unit is retried by the next run of the sweep, an interrupted one (no outcome) resumes from its
last checkpoint. Every file is written atomically; one process at a time writes a sweep (iclab.locks).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from iclab import locks
from iclab.config import config_from_dict, config_to_dict
from iclab.errors import RunExistsError, RunNotFoundError, SpecError
from iclab.runs import _git_sha, _iclab_version, _now, atomic_write_bytes
from iclab.sweeps.spec import SweepSpec, Trial, Unit

__all__ = ["FINISHED", "SweepDir"]

FINISHED = ("done", "diverged")


class SweepDir:
    """The directory of one sweep (module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def record_file(self) -> Path:
        return self.path / "sweep.json"

    def exists(self) -> bool:
        return self.record_file.is_file()

    def create(self, spec: SweepSpec, trials: list[Trial], units: list[Unit], *, force: bool = False) -> None:
        """Write sweep.json for a new sweep, or check that an existing one is the same sweep (then it continues).
        A different sweep in OUT needs `force` (which deletes it); a non-sweep directory is never touched."""
        record = {
            "name": spec.name,
            "spec": spec.source,
            "axes": spec.axes,
            "seeds": list(spec.seeds),
            "resources": {"cpus": spec.cpus, "gpus": spec.gpus},
            "max_failures": spec.max_failures,
            "trials": [
                {"name": t.name, "cell": t.cell, "axes": t.axes, "seed": t.seed, "unit": t.unit, "member": t.member}
                for t in trials
            ],
            "units": [{"name": u.name, "config": config_to_dict(u.config), "trials": list(u.trials)} for u in units],
        }
        if self.exists():
            old = self.record()
            same = {k: old.get(k) for k in ("trials", "units")} == json.loads(
                json.dumps({k: record[k] for k in ("trials", "units")})
            )
            if same and not force:
                for key in ("resources", "max_failures"):  # what a restored Ray Tune experiment would keep
                    if json.loads(json.dumps(record[key])) != old.get(key):
                        raise SpecError(
                            f"sweep.{key}: this sweep was started with {old.get(key)!r}, the spec now says "
                            f"{record[key]!r}; a rerun continues it as started, so keep the spec's {key} or pass "
                            "--force to start again"
                        )
                return
            if not force:
                raise RunExistsError(
                    f"out: {self.path} holds another sweep ({old.get('name')}); pass --force to replace it or "
                    "choose another --out"
                )
            locks.clear_except_lock(self.path)
        elif self.path.exists() and (
            not self.path.is_dir() or any(p.name != locks.LOCK_NAME for p in self.path.iterdir())
        ):
            raise RunExistsError(f"out: {self.path} exists and is not an iclab sweep (no sweep.json)")
        record.update({"iclab_version": _iclab_version(), "git_sha": _git_sha(), "created": _now()})
        atomic_write_bytes(self.record_file, json.dumps(record, indent=2).encode())

    def record(self) -> dict[str, Any]:
        if not self.exists():
            raise RunNotFoundError(f"no iclab sweep at {self.path} (missing sweep.json)")
        try:
            data = json.loads(self.record_file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise SpecError(f"sweep: {self.record_file} is not valid JSON; not an iclab sweep") from None
        if not isinstance(data, dict) or "units" not in data or "trials" not in data:
            raise SpecError(f"sweep: {self.record_file} is not an iclab sweep record")
        return data

    def unit_names(self) -> list[str]:
        return [u["name"] for u in self.record()["units"]]

    def unit_config(self, name: str):
        for unit in self.record()["units"]:
            if unit["name"] == name:
                return config_from_dict(unit["config"])
        raise SpecError(f"sweep: no unit {name!r} in {self.path}")

    def unit_path(self, name: str) -> Path:
        return self.path / "units" / name

    def trial_path(self, trial: dict[str, Any]) -> Path:
        """The run directory of a trial: its unit's, or the member's inside an ensemble unit."""
        unit = self.unit_path(trial["unit"])
        return unit if trial["member"] is None else unit / "members" / trial["member"]

    def _outcome_file(self, name: str) -> Path:
        return self.path / "outcomes" / f"{name}.json"

    def outcome(self, name: str) -> dict[str, Any] | None:
        """The unit's outcome, or None while it has not finished or failed (pending, running, interrupted)."""
        try:
            data = json.loads(self._outcome_file(name).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def write_outcome(self, name: str, outcome: dict[str, Any]) -> None:
        atomic_write_bytes(self._outcome_file(name), json.dumps({**outcome, "time": _now()}, indent=2).encode())

    def finished(self, name: str) -> bool:
        outcome = self.outcome(name)
        return outcome is not None and outcome.get("state") in FINISHED

    def log_file(self, name: str) -> Path:
        return self.path / "logs" / f"{name}.log"
