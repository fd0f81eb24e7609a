"""The ray executor: one Ray Tune trial per unit of the sweep (`pip install 'iclab[ray]'`).

Tune does the scheduling (each trial asks for the spec's ``resources``: CPUs, GPUs), the retries of a failing
trial (``FailureConfig(max_failures)``) and the restore of an interrupted experiment (``Tuner.restore`` on
OUT/ray/tune, resuming errored trials); iclab does not re-implement them. Each Tune trial runs
`iclab.sweeps.execute.run_unit`, so the unit's run directory, checkpoints and outcome are the same as with the
local executor, and reports a Tune checkpoint that is only a pointer to iclab's own run directory and its latest
checkpoint (pointer.json), not a copy of it. Without ``address`` a local Ray runtime is started with this
machine's cores (or `num_cpus`); with one, the sweep joins that cluster (OUT must then be on storage the workers
share).

The Tune experiment always holds every unit of the sweep: a unit that already has an outcome returns it at once,
so the experiment a restore finds is the one that was started, whichever units finished in between.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from iclab.errors import UsageError
from iclab.progress import SweepProgress
from iclab.sweeps.execute import run_unit
from iclab.sweeps.store import FINISHED, SweepDir

__all__ = ["ray_executor"]


def _trial(config: dict[str, Any]) -> None:
    """A Tune function trainable: run (or look up) one unit, raise if it failed (so Tune retries it), report."""
    from ray import tune

    out, name, threads = config["out"], config["unit"], config["threads"]
    sweep = SweepDir(out)
    finished = sweep.outcome(name) if sweep.finished(name) else None
    outcome = finished if finished is not None else run_unit(out, name, threads=threads)
    if outcome["state"] not in FINISHED:
        raise RuntimeError(f"unit {name} failed: {outcome.get('error')}")
    run = sweep.unit_path(name)
    checkpoints = sorted((run / "checkpoints").glob("step_*.safetensors"))
    with tempfile.TemporaryDirectory() as tmp:
        pointer = {"run": str(run), "checkpoint": str(checkpoints[-1]) if checkpoints else None}
        Path(tmp, "pointer.json").write_text(json.dumps(pointer))
        metrics = {"state": outcome["state"], "final_eval_half_mse": outcome.get("final_eval_half_mse", float("nan"))}
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))


def _watch(sweep: SweepDir, todo: list[str], progress: SweepProgress, stop: threading.Event) -> None:
    """Move the progress counts as the units' run directories and outcome files appear (Tune trials run in other
    processes); an outcome older than this call (a failure being retried) does not count until it is rewritten."""
    before = {name: (sweep.outcome(name) or {}).get("time") for name in todo}
    state = dict.fromkeys(todo, "pending")
    while True:
        stopping = stop.is_set()  # one more pass after the experiment ends: its last outcomes count too
        for name in todo:
            outcome = sweep.outcome(name)
            if outcome is not None and outcome.get("time") != before[name]:
                new = str(outcome.get("state"))
            elif state[name] == "pending" and (sweep.unit_path(name) / "metrics.parquet").exists():
                new = "running"
            else:
                new = state[name]
            if new != state[name]:
                progress.move(state[name], new, outcome.get("wall_time_s") if outcome else None)
                state[name] = new
        if stopping:
            return
        stop.wait(1.0)


def ray_executor(
    out: Path,
    todo: list[str],
    progress: SweepProgress,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    **_: Any,
) -> None:
    """Run the sweep in `out` on Ray Tune (module docstring); `todo` are the units not finished yet."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise UsageError("executor: ray is not installed; pip install 'iclab[ray]' or use --executor local") from None
    sweep = SweepDir(out)
    record = sweep.record()
    cpus, gpus = float(record["resources"]["cpus"]), float(record["resources"]["gpus"])
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False)
    trainable = tune.with_resources(_trial, {"cpu": cpus, "gpu": gpus})
    storage = (out / "ray").absolute()
    experiment = storage / "tune"
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(sweep, todo, progress, stop), daemon=True)
    watcher.start()
    try:
        if tune.Tuner.can_restore(str(experiment)):
            tuner = tune.Tuner.restore(str(experiment), trainable, resume_errored=True)
        else:
            threads = max(1, int(cpus))
            space = {"out": str(out.absolute()), "threads": threads, "unit": tune.grid_search(sweep.unit_names())}
            tuner = tune.Tuner(
                trainable,
                param_space=space,
                tune_config=tune.TuneConfig(num_samples=1),
                run_config=tune.RunConfig(
                    name="tune",
                    storage_path=str(storage),
                    failure_config=tune.FailureConfig(max_failures=int(record["max_failures"])),
                    verbose=0,
                ),
            )
        results = tuner.fit()
    finally:
        stop.set()
        watcher.join()
    for result in cast(Iterable[Any], results):  # a trial that died before run_unit could record it (a killed worker)
        name = (result.config or {}).get("unit")
        if name and result.error is not None and sweep.outcome(name) is None:
            sweep.write_outcome(name, {"state": "failed", "error": f"ray trial: {result.error}"})
