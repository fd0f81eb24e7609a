"""`iclab eval`: error vs number of in-context examples for a list of learners (algorithms and trained runs) on the
same prompts, under the training distribution and any shifts; prints a table, draws the curves, writes JSON.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iclab import plotting
from iclab.algorithms.registry import LearnerSpecError, make_learner, split_learner_list
from iclab.config import TaskConfig, config_from_dict, config_to_dict
from iclab.errors import SpecError
from iclab.evaluation import METRICS, curves_table, error_curves
from iclab.report import format_table
from iclab.runs import RunDir, atomic_write_bytes
from iclab.shifts import apply_shift, parse_shift
from iclab.tasks import Prompts, make_task

__all__ = ["eval_prompts", "resolve_learners", "run_eval"]


def _targets(k: int | None) -> str:
    return "scalar targets" if k is None else f"vector targets (k = {k})"


def resolve_learners(specs: list[str], task) -> dict[str, Any]:
    """Learner names (registry specs) and run directories (a path holding config.json) → name → learner."""
    from iclab.training.trainer import load_model

    learners: dict[str, Any] = {}
    for spec in specs:
        path = Path(spec)
        if (path / "config.json").is_file():
            run = RunDir.open(path)
            config = config_from_dict(run.config())
            if config.task.d != task.d:
                raise LearnerSpecError(
                    f"learners: run {spec!r} was trained with d = {config.task.d}, the task has d = {task.d}"
                )
            if config.target_dim != task.config.target_dim:
                raise LearnerSpecError(
                    f"learners: run {spec!r} was trained on {_targets(config.target_dim)}, the task "
                    f"{task.config.name!r} has {_targets(task.config.target_dim)}"
                )
            learners[path.name or spec] = load_model(run)
        else:
            learners[spec] = make_learner(spec, task)
    return learners


def eval_prompts(task, n_prompts: int, seed: int, dtype: torch.dtype) -> Prompts:
    """n_prompts prompts of exactly task.config.n_points points (k = 0 … n_points − 1), drawn from `seed`."""
    prompts = task.sample(n_prompts, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    T = task.config.n_points
    cut = lambda t: None if t is None else t[:, :T]  # noqa: E731
    return replace(prompts, x=cut(prompts.x), y=cut(prompts.y), f=cut(prompts.f), n_ctx=T).to(dtype=dtype)


def _axis_limits(curves) -> dict:
    """Garg-style axes: linear, from 0 to 1.25× the error with no context (the zero predictor's error at k = 0,
    the same for every learner that predicts the prior mean), so estimators' blow-ups at small k are clipped."""
    start = max(float(c.mean[0]) for c in curves.values())
    if not (start > 0 and np.isfinite(start)):
        return {}
    return {"logy": False, "ylim": (0.0, 1.25 * start)}


def run_eval(
    task_config: TaskConfig,
    learners: str,
    *,
    metric: str = "nmse",
    shifts: str = "none",
    n_prompts: int = 1280,
    seed: int = 0,
    n_boot: int = 1000,
    dtype: torch.dtype = torch.float32,
    out: Path | None = None,
) -> tuple[dict[str, Any], str]:
    """Returns (JSON-ready results, printable text). Figures go to out/ when given."""
    if metric not in METRICS:
        raise SpecError(f"metric: unknown value {metric!r}; choose one of: {', '.join(METRICS)}")
    task = make_task(task_config)
    shift_specs = split_learner_list(shifts)  # same comma grammar
    for s in shift_specs:
        parse_shift(s)
    resolved = resolve_learners(split_learner_list(learners), task)
    prompts = eval_prompts(task, n_prompts, seed, dtype)
    results: dict[str, Any] = {"task": config_to_dict(task_config), "metric": metric, "n_prompts": n_prompts,
                               "seed": seed, "shifts": {}}  # fmt: skip
    text = []
    for spec in shift_specs:
        began = time.perf_counter()
        shifted = apply_shift(spec, prompts, task, generator=torch.Generator().manual_seed(seed + 1))
        curves = error_curves(
            resolved,
            shifted.prompts,
            metric=metric,
            x_query=shifted.x_query,
            target=shifted.query_target(metric),
            n_boot=n_boot,
            seed=seed,
        )
        seconds = time.perf_counter() - began
        results["shifts"][spec] = {"seconds": seconds, "curves": {n: c.to_dict() for n, c in curves.items()}}
        text.append(f"shift {spec}: {metric} vs number of in-context examples k (mean [95% bootstrap band])")
        text.append(format_table(curves_table(curves)))
        text.append(
            f"({len(curves)} learners × {len(prompts)} prompts × {prompts.x.shape[1]} prefixes in {seconds:.2f} s)"
        )
        if out is not None:
            fig = plotting.plot_curves(
                next(iter(curves.values())).k,
                {n: c.mean for n, c in curves.items()},
                out / "figures" / f"eval_{spec.replace(':', '_')}.png",
                xlabel="in-context examples k",
                ylabel=metric,
                title=f"{task_config.name}, d = {task.d}, shift: {spec}",
                bands={n: (c.lo, c.hi) for n, c in curves.items()},
                markers=False,
                **_axis_limits(curves),
            )
            text.append(f"figure: {fig}")
    if out is not None:
        atomic_write_bytes(out / "results.json", json.dumps(results, indent=2).encode())
    return results, "\n".join(text)
