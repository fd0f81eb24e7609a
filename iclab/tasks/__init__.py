"""Task families: name → class. Each task answers sample(batch, generator=…, device=…, dtype=…) → Prompts.

Families (the registry TASKS; each module holds the family's config class and its Task):
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
  icl_classification   Reddy's K classes → L labels, bursty / Zipfian prompts; in-context and in-weights splits
Curriculum (Garg): `Curriculum.at(step)` → (d_active, n_points), passed to `Task.sample`; `train.curriculum`.
Any family takes a finite task pool (pool_size M > 0) and every one evaluates its functions at new inputs
(`Task.targets`), so the distribution-shift suite applies to all.
"""

from __future__ import annotations

from iclab.config import TaskConfig
from iclab.registry import Registry
from iclab.tasks.base import Prompts, Task
from iclab.tasks.classification import ClassificationConfig, LinearClassificationTask
from iclab.tasks.curriculum import Curriculum
from iclab.tasks.icl_classification import ICLClassificationConfig, ICLClassificationTask
from iclab.tasks.linear import LinearConfig, LinearRegressionTask
from iclab.tasks.mixture import MixtureConfig, MixtureTask
from iclab.tasks.nonlinear import (
    DecisionTreeConfig,
    DecisionTreeTask,
    FourierConfig,
    FourierTask,
    QuadraticConfig,
    QuadraticTask,
    ReluNetConfig,
    ReluNetTask,
    SineConfig,
    SineTask,
)
from iclab.tasks.sequences import ARConfig, AutoregressiveTask, LinearDynamicsConfig, LinearDynamicsTask
from iclab.tasks.softmax_regression import SoftmaxRegressionConfig, SoftmaxRegressionTask
from iclab.tasks.sparse import SparseLinearConfig, SparseLinearTask

__all__ = ["TASKS", "Curriculum", "LinearRegressionTask", "Prompts", "Task", "make_task", "task_class"]

# One line per family: its config class (which carries the name) and its Task.
TASKS: Registry[TaskConfig, Task] = Registry("task")
TASKS.register(LinearConfig, LinearRegressionTask)
TASKS.register(SparseLinearConfig, SparseLinearTask)
TASKS.register(QuadraticConfig, QuadraticTask)
TASKS.register(ReluNetConfig, ReluNetTask)
TASKS.register(DecisionTreeConfig, DecisionTreeTask)
TASKS.register(SineConfig, SineTask)
TASKS.register(FourierConfig, FourierTask)
TASKS.register(MixtureConfig, MixtureTask)
TASKS.register(ARConfig, AutoregressiveTask)
TASKS.register(LinearDynamicsConfig, LinearDynamicsTask)
TASKS.register(SoftmaxRegressionConfig, SoftmaxRegressionTask)
TASKS.register(ClassificationConfig, LinearClassificationTask)
TASKS.register(ICLClassificationConfig, ICLClassificationTask)


def task_class(name: str) -> type[Task]:
    """The Task class of family `name`; ConfigError listing the families otherwise."""
    return TASKS.implementation(name)


def make_task(config: TaskConfig) -> Task:
    """The task of `config`'s family, configured by `config`."""
    return TASKS.implementation(config.name)(config)
