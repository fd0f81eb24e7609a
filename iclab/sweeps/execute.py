"""Running a sweep's units: one function trains a unit and records its outcome; two executors decide where.

`run_unit(out, name)` is the whole life of one unit: take its run (resuming from the last checkpoint if a former
attempt was interrupted), train it, and write its outcome — done, diverged (a non-finite loss: a result, the same
config diverges again) or failed (any other error, with the traceback in OUT/logs/<unit>.log). It never raises for
a unit's own failure, so one bad trial never stops the others.

Executors differ only in where `run_unit` runs:

* ``local`` — in this process one unit after another, or in a pool of `workers` processes;
* ``ray`` — one Ray Tune trial per unit (`ray_executor`), on a local Ray runtime or a cluster (`address`).

Both train the same units (an ensemble unit is one trial on both), so the same spec gives the same numbers.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from iclab import locks
from iclab.progress import SweepProgress
from iclab.sweeps.store import SweepDir

__all__ = ["EXECUTORS", "local_executor", "run_unit"]


def run_unit(out: str | Path, name: str, *, threads: int | None = None) -> dict[str, Any]:
    """Train unit `name` of the sweep in `out` and record its outcome (module docstring); returns the outcome."""
    import torch

    from iclab.config import config_to_dict
    from iclab.runs import RunDir
    from iclab.training import TrainingDiverged, train

    sweep = SweepDir(out)
    if threads:
        torch.set_num_threads(threads)
    previous = sweep.outcome(name) or {}
    attempts = int(previous.get("attempts", 0)) + 1
    began = time.perf_counter()
    try:
        config = sweep.unit_config(name).replace(train={"progress": False})
        run = RunDir.create(sweep.unit_path(name), config_to_dict(config), resume=True)
        result = train(config, run, resume=bool(run.checkpoints()))  # an interrupted attempt continues
        outcome = {
            "state": "done",
            "final_eval_half_mse": result.final_eval_half_mse,
            "diverged_members": {str(e): s for e, s in result.diverged.items()},
        }
    except TrainingDiverged as exc:
        outcome = {"state": "diverged", "error": str(exc)}
    except Exception as exc:  # a failure of this unit, not of the sweep: recorded, the others go on
        log = sweep.log_file(name)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(traceback.format_exc())
        message = " ".join(str(exc).split()) or type(exc).__name__
        outcome = {"state": "failed", "error": f"{type(exc).__name__}: {message}", "log": str(log)}
    finally:
        locks.release(sweep.unit_path(name))  # a long sweep holds one run lock at a time, not one per unit
    outcome.update({"wall_time_s": time.perf_counter() - began, "attempts": attempts})
    sweep.write_outcome(name, outcome)
    return outcome


def local_executor(out: Path, todo: list[str], progress: SweepProgress, *, workers: int = 1, **_: Any) -> None:
    """Run the units `todo` here: one after another (workers = 1) or in a pool of `workers` fresh processes, each
    with torch on (cores // workers) threads."""
    if workers <= 1:
        for name in todo:
            progress.move("pending", "running")
            outcome = run_unit(out, name)
            progress.move("running", outcome["state"], outcome.get("wall_time_s"))
        return
    threads = max(1, (multiprocessing.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")  # no inherited torch threads, locks or CUDA state
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        futures: dict[concurrent.futures.Future[dict[str, Any]], str] = {}
        for name in todo:
            futures[pool.submit(run_unit, str(out), name, threads=threads)] = name
        for _slot in range(min(workers, len(todo))):
            progress.move("pending", "running")
        for future in concurrent.futures.as_completed(futures):
            try:
                outcome = future.result()
            except Exception as exc:  # the worker died (killed, out of memory); the pool then fails its other units
                recorded = SweepDir(out).outcome(futures[future])
                if recorded is not None and recorded.get("state") in ("done", "diverged"):
                    outcome = recorded  # it finished before the pool broke: keep its result
                else:  # not finished: recorded as failed, so the next run of the sweep retries it
                    outcome = {"state": "failed", "error": f"worker process died: {type(exc).__name__}: {exc}"}
                    SweepDir(out).write_outcome(futures[future], outcome)
            progress.move("running", outcome["state"], outcome.get("wall_time_s"))
            if progress.counts["pending"]:
                progress.move("pending", "running")


def _ray(out: Path, todo: list[str], progress: SweepProgress, **options: Any) -> None:
    from iclab.sweeps.ray_executor import ray_executor

    ray_executor(out, todo, progress, **options)


EXECUTORS: dict[str, Callable[..., None]] = {"local": local_executor, "ray": _ray}
