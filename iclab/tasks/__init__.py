"""Task families: name → class. Each task answers sample(batch, generator=…, device=…, dtype=…) → Prompts.

Families (TaskConfig.name; definitions in each class's docstring):
  linear               y = wᵀx + ε; Gaussian / sign / low-rank priors; isotropic, diagonal or ill-conditioned x
  sparse_linear        w with `sparsity` non-zero coordinates (Garg)
  quadratic            y = (x ⊙ x)ᵀw / √3 (Garg)
  relu_net             2-layer ReLU teacher with `hidden` units (Garg)
  decision_tree        depth-`depth` tree on random coordinates, thresholds 0, N(0, 1) leaves (Garg)
  sine, fourier        y = A sin(x + φ) (vO, MAML ranges); Fourier series with `frequencies` terms (d = 1)
  mixture              each prompt (or batch) from one of `components`
  ar, linear_dynamics  next value of an AR(p) sequence; x_{t+1} = W x_t systems (vector targets)
  softmax_regression   probability vectors softmax(W x) ∈ R^{n_classes} (vector targets)
  classification       ±1 labels sign(wᵀx), flipped with probability flip_prob
Curriculum (Garg): `Curriculum.at(step)` → (d_active, n_points), passed to `Task.sample`; `train.curriculum`.
Any family takes a finite task pool (pool_size M > 0) and every one evaluates its functions at new inputs
(`Task.targets`), so the distribution-shift suite applies to all.
"""

from __future__ import annotations

import importlib

from iclab.config import ConfigError, TaskConfig
from iclab.tasks.base import Prompts, Task
from iclab.tasks.curriculum import Curriculum
from iclab.tasks.linear import LinearRegressionTask

__all__ = ["TASKS", "Curriculum", "LinearRegressionTask", "Prompts", "Task", "make_task", "task_class"]

# name → "module:Class", imported on first use
TASKS = {
    "linear": "iclab.tasks.linear:LinearRegressionTask",
    "sparse_linear": "iclab.tasks.sparse:SparseLinearTask",
    "quadratic": "iclab.tasks.nonlinear:QuadraticTask",
    "relu_net": "iclab.tasks.nonlinear:ReluNetTask",
    "decision_tree": "iclab.tasks.nonlinear:DecisionTreeTask",
    "sine": "iclab.tasks.nonlinear:SineTask",
    "fourier": "iclab.tasks.nonlinear:FourierTask",
    "mixture": "iclab.tasks.mixture:MixtureTask",
    "ar": "iclab.tasks.sequences:AutoregressiveTask",
    "linear_dynamics": "iclab.tasks.sequences:LinearDynamicsTask",
    "softmax_regression": "iclab.tasks.softmax_regression:SoftmaxRegressionTask",
    "classification": "iclab.tasks.classification:LinearClassificationTask",
}


def task_class(name: str) -> type[Task]:
    if name not in TASKS:
        raise ConfigError(f"task.name: unknown value {name!r}; choose one of: {', '.join(TASKS)}")
    module, _, cls = TASKS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def make_task(config: TaskConfig) -> Task:
    """The task family named by config.name, configured by `config`."""
    return task_class(config.name)(config)
