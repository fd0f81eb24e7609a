"""Task families: name → class registry. Each task answers sample(batch, generator=…, device=…, dtype=…)."""

from __future__ import annotations

from iclab.config import ConfigError, TaskConfig
from iclab.tasks.base import Prompts
from iclab.tasks.linear import LinearRegressionTask

__all__ = ["TASKS", "LinearRegressionTask", "Prompts", "make_task"]

TASKS = {"linear": LinearRegressionTask}


def make_task(config: TaskConfig) -> LinearRegressionTask:
    if config.name not in TASKS:
        raise ConfigError(f"task.name: unknown value {config.name!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[config.name](config)
