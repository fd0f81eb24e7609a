"""Reproductions train their models as ensembles where shapes allow (iclab.training.ensemble).

Configs of one reproduction that differ only in what an ensemble member may have of its own — the seed
(train.seed), the learning rate, weight decay, noise level and task-pool size (EnsembleConfig.PER_MEMBER) — are
one *group*: the driver trains them as one ensemble run, OUT/runs/<first name>+<n - 1>/, in one pass, and each
config is then its member's run, OUT/runs/<group>/members/<label>/, with its own metrics and checkpoint. A member
equals the single run of its config (docs/architecture.md, "Ensembles"), so analyses and claims see the same
models, for the cost of about one run. Configs that differ in anything else (a shape, a step count, a family)
train one by one as before.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from iclab.config import EnsembleConfig, ExperimentConfig, config_to_dict

__all__ = ["ensemble_config", "group_configs", "member_trained"]


def _shape_key(config: ExperimentConfig) -> str:
    data = config_to_dict(config)
    data.pop("name", None)
    data["train"].pop("seed", None)
    for field, section in EnsembleConfig.PER_MEMBER.items():
        data[section].pop(field, None)
    return json.dumps(data, sort_keys=True)


def _same_run(a: ExperimentConfig, b: ExperimentConfig) -> bool:
    def plain(c: ExperimentConfig) -> dict[str, Any]:
        data = config_to_dict(c)
        data.pop("name", None)
        return data

    return plain(a) == plain(b)


def ensemble_config(configs: list[ExperimentConfig]) -> ExperimentConfig | None:
    """One ensemble config whose member e is configs[e] (up to its name), or None if they cannot be one: fewer
    than two, already ensembles, or not differing only in seeds and per-member fields."""
    if len(configs) < 2 or any(c.ensemble.seeds for c in configs):
        return None
    first = configs[0]
    per_member: dict[str, tuple[Any, ...]] = {}
    for field, section in EnsembleConfig.PER_MEMBER.items():
        values = tuple(getattr(getattr(c, section), field, None) for c in configs)  # None: not this family's
        if len(set(values)) > 1:
            per_member[field] = values
    try:
        members = EnsembleConfig(seeds=tuple(c.train.seed for c in configs), **per_member)
    except ValueError:  # two configs that are the same run: train them apart, as asked
        return None
    group = dataclasses.replace(first, ensemble=members, name=f"{first.name}+{len(configs) - 1}")
    if not all(_same_run(group.member(e), c) for e, c in enumerate(configs)):
        return None
    return group


def group_configs(configs: list[ExperimentConfig]) -> list[list[ExperimentConfig]]:
    """The configs in groups of one shape (module docstring), in the order of their first members."""
    groups: dict[str, list[ExperimentConfig]] = {}
    for config in configs:
        groups.setdefault(_shape_key(config), []).append(config)
    return list(groups.values())


def member_trained(group: ExperimentConfig, e: int, result: Any, run: Any) -> tuple[Any, Any]:
    """(TrainResult, RunDir) of member e of a trained group, as its own single run would have returned them."""
    from iclab.runs import RunDir
    from iclab.training import TrainingDiverged, TrainResult
    from iclab.training.trainer import DTYPES, eval_prompts_for, resolve_device

    single = group.member(e)
    if e in result.diverged:
        raise TrainingDiverged(f"train: {single.name}: loss became non-finite at step {result.diverged[e]}")
    member_run = RunDir.open(run.path / "members" / group.member_label(e))
    history = member_run.metrics()
    final = float(history["eval_half_mse"].iloc[-1]) if "eval_half_mse" in history else float("nan")
    eval_set = eval_prompts_for(single, resolve_device(single.train.device), DTYPES[single.train.dtype])
    model = result.model.member(e)
    return TrainResult(model, member_run, final, result.steps, result.wall_time_s, eval_set), member_run
