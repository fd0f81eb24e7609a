"""Frozen, validated configuration composed into one `ExperimentConfig` (task, model, train, eval).

Task and model families each own their config class, in their own module beside their sampler or network
(`iclab.tasks.sparse.SparseLinearConfig`, `iclab.models.gpt.GPTConfig`, …). This module holds what every family
shares: the base classes `TaskConfig` and `ModelConfig` (the common fields; the family name is the class's ``name``,
the tag of the union), the training and evaluation sections, and the JSON round trip. The registries of
`iclab.tasks` and `iclab.models` map names to (config class, implementation); `task_config(name, **fields)` and
`model_config(name, **fields)` build a family's config by name.

Every invalid value raises `ConfigError` whose message is one line naming the dotted field and what is allowed,
e.g. ``task.d: must be an integer >= 1, got 0``. The CLI turns it into exit code 2 (see `iclab.cli`).
JSON round trip: `config_to_dict` / `config_from_dict` (unknown keys are errors, listing the valid ones); the
family is the section's ``"name"`` key.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar, cast

from iclab.validation import (
    ConfigError,
    check_bool,
    check_choice,
    check_int,
    check_positive_list,
    check_real,
    fail,
)

__all__ = [
    "ConfigError",
    "EnsembleConfig",
    "EvalConfig",
    "ExperimentConfig",
    "ModelConfig",
    "TaskConfig",
    "TrainConfig",
    "change_family",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "model_config",
    "task_config",
]

X_DISTS = ("uniform", "gaussian")
SCHEDULES = ("constant", "cosine", "warmup_cosine")
DEVICES = ("cpu", "cuda", "auto")
DTYPES = ("float32", "float64")
IMPLS = ("fast", "naive")  # iclab.models.base.IMPLS (not imported: the models import this module)
CURRICULA = ("none", "garg")


@dataclass(frozen=True)
class TaskConfig:
    """What every task family shares: inputs x, a random function f per prompt, targets y = f(x) + ε.

    x ~ U(−x_scale, x_scale)^d ("uniform", the vO code's U(−0.5, 0.5)) or N(0, x_scale²·Σ_x) ("gaussian", Σ_x =
    diag(x_cov_diag), or log-spaced eigenvalues of condition number x_condition); w_scale τ scales the function;
    ε ~ N(0, noise_var). Each prompt has n_points context pairs and n_queries queries. A family subclasses this with
    its own fields and ``name`` (docs/families.md lists them); families that draw their inputs otherwise (sequences)
    say which of these fields they ignore.
    """

    name: ClassVar[str] = ""
    """the family's registered name (the tag of the task union)"""
    iid_inputs: ClassVar[bool] = True
    """the family draws i.i.d. points through `Task.sample` (False: sequences; they cannot be mixed)"""

    d: int = 10
    """input dimension d (the order p for ar)"""
    n_points: int = 10
    """context pairs per prompt (N)"""
    n_queries: int = 1
    """queries per prompt (each sees only the context)"""
    x_dist: Literal["uniform", "gaussian"] = "uniform"
    """input distribution"""
    x_scale: float = 0.5
    """half-width a of U(-a, a), or the standard deviation of the Gaussian"""
    x_cov_diag: tuple[float, ...] | None = None
    """Gaussian input covariance diagonal (d values; times x_scale²)"""
    x_condition: float = 1.0
    """condition number κ of the Gaussian input covariance: eigenvalues log-spaced from 1 to 1/κ, mean 1"""
    w_scale: float = 1.0
    """task-parameter standard deviation τ"""
    noise_var: float = 0.0
    """label noise variance σ²"""
    pool_size: int = 0
    """finite task pool of M functions drawn once from pool_seed (0: a fresh function for every prompt)"""
    pool_seed: int = 0
    """seed of the finite task pool"""

    def __post_init__(self) -> None:
        check_int("task.d", self.d, 1)
        check_int("task.n_points", self.n_points, 1)
        check_int("task.n_queries", self.n_queries, 1)
        check_choice("task.x_dist", self.x_dist, X_DISTS)
        check_real("task.x_scale", self.x_scale, low=0.0, strict=True)
        check_real("task.x_condition", self.x_condition, low=1.0)
        check_real("task.w_scale", self.w_scale, low=0.0, strict=True)
        check_real("task.noise_var", self.noise_var, low=0.0)
        if self.x_cov_diag is not None:
            check_positive_list("task.x_cov_diag", self.x_cov_diag, self.d)
            if self.x_dist != "gaussian":
                fail("task.x_cov_diag", "unset unless task.x_dist is 'gaussian'", list(self.x_cov_diag))
        if self.x_condition != 1.0 and (self.x_dist != "gaussian" or self.x_cov_diag is not None):
            allowed = "1 unless task.x_dist is 'gaussian' and task.x_cov_diag is unset"
            fail("task.x_condition", allowed, self.x_condition)
        check_int("task.pool_size", self.pool_size, 0)
        check_int("task.pool_seed", self.pool_seed, 0)

    @property
    def target_dim(self) -> int | None:
        """k of vector targets y ∈ R^k (the model's output width); None for scalar targets."""
        return None

    @property
    def label_vocab(self) -> int | None:
        """L of discrete label targets (y holds label indices < L; the model outputs L logits and trains with
        cross-entropy); None for real targets."""
        return None


@dataclass(frozen=True)
class ModelConfig:
    """What every model family shares. A family subclasses this with its own fields and ``name``
    (docs/families.md lists them); any model can also predict a variance (`variance_head`)."""

    name: ClassVar[str] = ""
    """the family's registered name (the tag of the model union)"""
    vector_targets: ClassVar[bool] = False
    """the family has a k-wide output head for vector targets y ∈ R^k"""
    label_targets: ClassVar[bool] = False
    """the family reads label tokens and has an L-logit classification readout (tasks with `label_vocab`)"""

    layers: int = 1
    """number of layers K"""
    heads: int = 1
    """attention heads per layer"""
    variance_head: bool = False
    """predict a variance too, trained with the Gaussian negative log-likelihood"""

    def __post_init__(self) -> None:
        check_int("model.layers", self.layers, 1)
        check_int("model.heads", self.heads, 1)
        check_bool("model.variance_head", self.variance_head)


@dataclass(frozen=True)
class TrainConfig:
    """Adam(W) on ½·MSE at the queries; evaluation every eval_every steps on a fixed held-out set."""

    steps: int = 5000
    """optimizer steps"""
    batch_size: int = 2048
    """prompts per step (fresh every step)"""
    lr: float = 1e-3
    """peak learning rate"""
    beta1: float = 0.9
    beta2: float = 0.98
    weight_decay: float = 0.0
    """AdamW decoupled weight decay"""
    grad_clip: float = 10.0
    """global gradient-norm clip (0: off)"""
    schedule: Literal["constant", "cosine", "warmup_cosine"] = "constant"
    warmup_steps: int = 0
    """linear warm-up steps (warmup_cosine only)"""
    eval_every: int = 250
    """steps between held-out evaluations (and metric rows)"""
    checkpoint_every: int = 1000
    """steps between checkpoints (a multiple of eval_every)"""
    seed: int = 0
    """seed of the initialisation and of the training prompts"""
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    """cpu, cuda, or auto (cuda when available)"""
    dtype: Literal["float32", "float64"] = "float32"
    impl: Literal["fast", "naive"] = "fast"
    """the models' implementation: fast, or naive (the definition written out: slow, a reference)"""
    progress: bool = True
    """show a progress bar"""
    curriculum: Literal["none", "garg"] = "none"
    """garg: active dimensions 5 → d (+1) and points 11 → n_points (+2) every curriculum_every steps"""
    curriculum_every: int = 2000
    """steps between curriculum increments (Garg: 2000)"""
    interventions: tuple[str, ...] = ()
    """activation edits applied at every training step and evaluation, KIND:HOOK[@HEAD][=TARGET[:STRENGTH]]
    (iclab.models.interventions: zero, mean, patch, clamp=previous|induction)"""

    def __post_init__(self) -> None:
        check_int("train.steps", self.steps, 0)
        check_int("train.batch_size", self.batch_size, 1)
        check_real("train.lr", self.lr, low=0.0, strict=True)
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, int | float) and 0.0 <= v < 1.0):
                fail(f"train.{name}", "a number in [0, 1)", v)
        check_real("train.weight_decay", self.weight_decay, low=0.0)
        check_real("train.grad_clip", self.grad_clip, low=0.0)
        check_choice("train.schedule", self.schedule, SCHEDULES)
        check_int("train.warmup_steps", self.warmup_steps, 0)
        check_int("train.eval_every", self.eval_every, 1)
        check_int("train.checkpoint_every", self.checkpoint_every, 1)
        if self.checkpoint_every % self.eval_every:
            # checkpoints are taken at evaluation steps so a resume never splits a logged train-loss window
            fail("train.checkpoint_every", f"a multiple of train.eval_every ({self.eval_every})", self.checkpoint_every)
        check_int("train.seed", self.seed, 0)
        check_choice("train.device", self.device, DEVICES)
        check_choice("train.dtype", self.dtype, DTYPES)
        check_choice("train.impl", self.impl, IMPLS)
        check_bool("train.progress", self.progress)
        check_choice("train.curriculum", self.curriculum, CURRICULA)
        check_int("train.curriculum_every", self.curriculum_every, 1)
        if not isinstance(self.interventions, tuple) or not all(isinstance(v, str) for v in self.interventions):
            fail("train.interventions", "a list of intervention specs (strings)", self.interventions)
        from iclab.models.interventions import parse_interventions  # models import config: a late import

        try:
            parse_interventions(self.interventions, "train.interventions")
        except ValueError as e:
            raise ConfigError(str(e)) from None


@dataclass(frozen=True)
class EvalConfig:
    """Held-out evaluation: a fixed set of prompts (seeded apart from training) and the OOD scales."""

    n_prompts: int = 10_000
    """held-out prompts (fixed set)"""
    seed: int = 12345
    alphas: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
    """input / target scales of the OOD curves"""

    def __post_init__(self) -> None:
        check_int("eval.n_prompts", self.n_prompts, 1)
        check_int("eval.seed", self.seed, 0)
        allowed = "a non-empty list of positive numbers"
        if not isinstance(self.alphas, tuple | list) or len(self.alphas) == 0:
            fail("eval.alphas", allowed, self.alphas if not isinstance(self.alphas, tuple) else list(self.alphas))
        for a in self.alphas:
            check_real("eval.alphas", a, low=0.0, strict=True)


@dataclass(frozen=True)
class EnsembleConfig:
    """Many models as one run, trained in one pass (iclab.training.ensemble): one member per entry of `seeds`.

    Member e equals the single run with train.seed = seeds[e] and, for each per-member field that is set (a list as
    long as `seeds`), that field's e-th value in place of the base config's: train.lr, train.weight_decay,
    task.noise_var, task.pool_size, and icl_classification's n_classes, burstiness, p_bursty, zipf_alpha,
    p_novel (fields that change no tensor shape). Members must differ (as runs)."""

    seeds: tuple[int, ...] = ()
    """one member per seed (empty: one model, seeded train.seed)"""
    lr: tuple[float, ...] = ()
    """per-member train.lr (empty: train.lr for all)"""
    weight_decay: tuple[float, ...] = ()
    """per-member train.weight_decay"""
    noise_var: tuple[float, ...] = ()
    """per-member task.noise_var"""
    pool_size: tuple[int, ...] = ()
    """per-member task.pool_size"""
    n_classes: tuple[int, ...] = ()
    """per-member task.n_classes (icl_classification)"""
    burstiness: tuple[int, ...] = ()
    """per-member task.burstiness (icl_classification)"""
    p_bursty: tuple[float, ...] = ()
    """per-member task.p_bursty (icl_classification)"""
    zipf_alpha: tuple[float, ...] = ()
    """per-member task.zipf_alpha (icl_classification)"""
    p_novel: tuple[float, ...] = ()
    """per-member task.p_novel (icl_classification)"""

    PER_MEMBER: ClassVar[dict[str, str]] = {
        "lr": "train",
        "weight_decay": "train",
        "noise_var": "task",
        "pool_size": "task",
        "n_classes": "task",
        "burstiness": "task",
        "p_bursty": "task",
        "zipf_alpha": "task",
        "p_novel": "task",
    }  # per-member field → the config section it overrides (fields that change no shape)
    INTEGER: ClassVar[tuple[str, ...]] = ("pool_size", "n_classes", "burstiness")

    def __post_init__(self) -> None:
        if not isinstance(self.seeds, tuple | list):
            fail("ensemble.seeds", "a list of integers >= 0", self.seeds)
        for s in self.seeds:
            check_int("ensemble.seeds", s, 0)
        for name in self.PER_MEMBER:
            values = getattr(self, name)
            if not isinstance(values, tuple | list) or (values and len(values) != len(self.seeds)):
                fail(f"ensemble.{name}", f"empty or one value per seed ({len(self.seeds)})", values)
            for v in values:
                if name in self.INTEGER:
                    check_int(f"ensemble.{name}", v, 0)
                else:
                    check_real(f"ensemble.{name}", v, low=0.0, strict=name == "lr")
        members = list(zip(self.seeds, *(getattr(self, n) or [None] * len(self.seeds) for n in self.PER_MEMBER)))
        if len(set(members)) != len(members):
            fail(
                "ensemble.seeds",
                "distinct seeds, unless a per-member field tells members apart",
                list(self.seeds),
            )

    def overrides(self, e: int) -> dict[str, dict[str, Any]]:
        """Member e's per-member values by section: {"train": {"seed": …, "lr": …}, "task": {"noise_var": …}}."""
        out: dict[str, dict[str, Any]] = {"train": {"seed": self.seeds[e]}, "task": {}}
        for name, section in self.PER_MEMBER.items():
            if getattr(self, name):
                out[section][name] = getattr(self, name)[e]
        return out


# ----------------------------------------------------------------------------------------- families by name


def task_config(name: str, **fields: Any) -> TaskConfig:
    """The config of task family `name` (see `iclab.tasks.TASKS`) with `fields` set, e.g.
    ``task_config("sparse_linear", d=20, sparsity=3)``."""
    from iclab.tasks import TASKS

    return _build(TASKS.config_class(name), fields, "task")


def model_config(name: str, **fields: Any) -> ModelConfig:
    """The config of model family `name` (see `iclab.models.MODELS`) with `fields` set, e.g.
    ``model_config("gpt", layers=4, width=128)``."""
    from iclab.models import MODELS

    return _build(MODELS.config_class(name), fields, "model")


_C = TypeVar("_C")


def _build(cls: type[_C], fields: dict[str, Any], section: str) -> _C:
    names = [f.name for f in dataclasses.fields(cast(Any, cls))]
    for key in fields:
        if key not in names:
            raise ConfigError(
                f"{section}.{key}: not a field of {section} {cast(Any, cls).name!r}; allowed: {', '.join(names)}"
            )
    return cls(**fields)


def change_family(config: _C, name: str) -> _C:
    """`config` (a TaskConfig or ModelConfig) as family `name`, keeping every field the two families share that
    was set away from the old family's default, and taking the new family's defaults for the rest; unchanged when it
    already is that family. (A field left at the old default takes the new family's own: `--task.name
    icl_classification` gets Reddy's d = 63, not the linear task's d = 10; a `--task.d 5` given or preset is kept.)"""
    if cast(Any, config).name == name:
        return config
    if isinstance(config, TaskConfig):
        from iclab.tasks import TASKS as registry
    else:
        from iclab.models import MODELS as registry  # type: ignore[assignment]
    cls = registry.config_class(name)
    new = {f.name for f in dataclasses.fields(cls)}
    old_defaults = type(config)()
    kept = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(cast(Any, config))
        if f.name in new and getattr(config, f.name) != getattr(old_defaults, f.name)
    }
    return cast(_C, cls(**kept))


# ------------------------------------------------------------------------------------------ the whole config

TaskT = TypeVar("TaskT", bound=TaskConfig)
ModelT = TypeVar("ModelT", bound=ModelConfig)


def _default_task() -> Any:
    return task_config("linear")


def _default_model() -> Any:
    return model_config("lsa")


@dataclass(frozen=True)
class ExperimentConfig(Generic[TaskT, ModelT]):
    """Everything that defines a run; stored resolved in the run's config.json.

    Generic in the task and model families so that the generated CLI (`iclab.cli`) shows the chosen families'
    fields: ``ExperimentConfig[SparseLinearConfig, GPTConfig]``.
    """

    task: TaskT = field(default_factory=_default_task)
    """the task family and its fields (--task.name chooses the family)"""
    model: ModelT = field(default_factory=_default_model)
    """the model family and its fields (--model.name chooses the family)"""
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    name: str = "experiment"
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    """train several seeds as one run (--ensemble.seeds 0 1 2 …)"""

    def __post_init__(self) -> None:
        # The name is the default run directory (runs/<name>): one plain path component.
        n = self.name
        if not isinstance(n, str) or not n or "/" in n or "\\" in n or n in (".", ".."):
            fail("name", "a non-empty name without '/' or '\\' (it names the run directory)", n)
        for section, base in (("task", TaskConfig), ("model", ModelConfig)):
            if not isinstance(getattr(self, section), base) or type(getattr(self, section)) is base:
                fail(section, f"a registered {section} family config", getattr(self, section))
        for seed in self.ensemble.seeds:
            if seed + 1 == self.eval.seed:
                fail(
                    "ensemble.seeds",
                    f"seeds other than eval.seed − 1 = {self.eval.seed - 1}",
                    list(self.ensemble.seeds),
                )
        task_fields = {f.name for f in dataclasses.fields(self.task)}
        for name, section in EnsembleConfig.PER_MEMBER.items():
            if section == "task" and getattr(self.ensemble, name) and name not in task_fields:
                fail(
                    f"ensemble.{name}",
                    f"empty: task {self.task.name!r} has no field {name}",
                    getattr(self.ensemble, name),
                )
        for e in range(len(self.ensemble.seeds)):  # each member must be a valid run (e.g. its task's noise_var)
            member = self.member(e)
            if (member.task.target_dim, member.task.label_vocab) != (self.task.target_dim, self.task.label_vocab):
                changed = [
                    n for n, sec in EnsembleConfig.PER_MEMBER.items() if sec == "task" and getattr(self.ensemble, n)
                ]
                fail(
                    f"ensemble.{changed[0] if changed else 'seeds'}",
                    f"values that keep task {self.task.name!r}'s output shape (members are one model family and shape)",
                    getattr(self.ensemble, changed[0]) if changed else self.ensemble.seeds,
                )
        if self.train.seed + 1 == self.eval.seed:
            # the trainer's data stream is seeded train.seed + 1 and the held-out set eval.seed: equal seeds would
            # make the first training prompts the held-out ones
            fail(
                "train.seed",
                f"a seed other than eval.seed − 1 = {self.eval.seed - 1} (its training prompts would be the held-out "
                "ones)",
                self.train.seed,
            )
        if self.task.target_dim is not None and not (self.model.vector_targets and not self.model.variance_head):
            from iclab.models import MODELS
            from iclab.tasks import TASKS

            vector_models = [n for n in MODELS.names() if MODELS.config_class(n).vector_targets]
            scalar_tasks = [n for n in TASKS.names() if TASKS.config_class(n)().target_dim is None]
            what = "with a variance head " if self.model.vector_targets else ""
            raise ConfigError(
                f"task.name: {self.task.name!r} has vector targets and model {self.model.name!r} {what}predicts one "
                f"value per query; choose a scalar task ({', '.join(scalar_tasks)}) "
                f"or model {', '.join(vector_models)} (no variance head)"
            )

        if self.task.label_vocab is not None and not (self.model.label_targets and not self.model.variance_head):
            from iclab.models import MODELS

            label_models = [n for n in MODELS.names() if MODELS.config_class(n).label_targets]
            what = " with a variance head" if self.model.label_targets else ""
            raise ConfigError(
                f"model.name: task {self.task.name!r} has class-label targets and model {self.model.name!r}{what} "
                f"cannot read labels or output logits; choose one of: {', '.join(label_models)} (no variance head)"
            )

    @property
    def target_dim(self) -> int | None:
        """k of the task's vector targets y ∈ R^k (the model's output head), None for scalar targets."""
        return self.task.target_dim

    @property
    def label_vocab(self) -> int | None:
        """L of the task's class-label targets (the model's L logits), None for real targets."""
        return self.task.label_vocab

    def member_label(self, e: int) -> str:
        """Ensemble member e's name: seed-<s>, then each per-member value (seed-0-lr-0.003-noise_var-0.25)."""
        parts = [f"seed-{self.ensemble.seeds[e]}"]
        for name, values in ((n, getattr(self.ensemble, n)) for n in EnsembleConfig.PER_MEMBER):
            if values:
                parts.append(f"{name}-{values[e]:g}")
        return "-".join(parts)

    def member(self, e: int) -> ExperimentConfig:
        """The config of the single run that ensemble member e equals (EnsembleConfig); validated as any config."""
        single = dataclasses.replace(self, ensemble=EnsembleConfig(), name=f"{self.name}-{self.member_label(e)}")
        overrides = self.ensemble.overrides(e)
        return single.replace(train=overrides["train"], task=overrides["task"])

    def replace(self, **sections: Any) -> ExperimentConfig:
        """Copy with sections replaced by dicts of field overrides, e.g. replace(train={"steps": 10}); a task or
        model dict may name another family (``replace(model={"name": "gpt", "width": 64})``), and a section may be
        a whole config object."""
        updates = {}
        for key, overrides in sections.items():
            current = getattr(self, key)
            if isinstance(overrides, dict):
                overrides = dict(overrides)
                if key in ("task", "model") and "name" in overrides:
                    current = change_family(current, overrides.pop("name"))
                updates[key] = dataclasses.replace(current, **overrides)
            else:
                updates[key] = overrides
        return dataclasses.replace(self, **updates)


# ---------------------------------------------------------------------------------------------- JSON round trip


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain JSON-ready dict (tuples become lists); a task or model section starts with its family ``"name"``."""
    if isinstance(cfg, TaskConfig | ModelConfig):
        return json.loads(json.dumps({"name": cfg.name, **dataclasses.asdict(cfg)}))
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, EnsembleConfig) and value == EnsembleConfig():
            continue  # a single-model run's config.json reads as before ensembles existed
        out[f.name] = config_to_dict(value) if dataclasses.is_dataclass(value) else value
    return json.loads(json.dumps(out))


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Turn JSON values into the annotated types (lists → tuples); reject nested dicts where not expected."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        annotation = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            fail(name, "a list of numbers", value)
        return tuple(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        fail(name, "a single value, not an object", value)
    return value


# Fields of the one flat TaskConfig / ModelConfig of iclab before families owned their configs, with their
# defaults. A run written then stores every family's fields; a field another family owns is dropped on load when
# it holds that default (the family never read it), and is an error otherwise.
_LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {
    "task": {
        "w_cov_diag": None, "w_prior": "gaussian", "w_rank": 1, "sparsity": 3, "hidden": 100, "depth": 4,
        "frequencies": 3, "amplitude": [0.1, 5.0], "phase": [0.0, 3.141592653589793], "spectral_radius": 0.9,
        "n_classes": 3, "flip_prob": 0.0, "components": [], "mix_by": "prompt",
    },
    "model": {
        "tied": False, "layernorm": False, "init_scale": 0.002, "width": 256, "mlp": False, "mlp_ratio": 4,
        "positions": False, "max_points": 256, "feature_hidden": 64, "feature_dim": 16, "lla_ridge": 0.01,
        "state_dim": 16,
    },
}  # fmt: skip


def _from_dict(cls: Any, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        fail(prefix or "config", "an object", data)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    legacy = _LEGACY_DEFAULTS.get(prefix, {})
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in names:
            if key in legacy and json.loads(json.dumps(value)) == legacy[key]:
                continue
            allowed = ["name", *names] if prefix in ("task", "model") else names
            raise ConfigError(f"{dotted}: unknown field{_owner(prefix, cls)}; allowed: {', '.join(allowed)}")
        hint = hints[key]
        if key in ("task", "model") and not prefix:
            kwargs[key] = _family_from_dict(key, value)
        elif dataclasses.is_dataclass(hint):
            kwargs[key] = _from_dict(hint, value, dotted)
        else:
            kwargs[key] = _coerce(dotted, value, hint)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # e.g. a wrong type tyro would have caught; keep it one line
        raise ConfigError(f"{prefix or 'config'}: {exc}") from None


def _owner(prefix: str, cls: Any) -> str:
    return f" of {prefix} {cls.name!r}" if prefix in ("task", "model") else ""


def _family_from_dict(section: str, data: Any) -> Any:
    if not isinstance(data, dict):
        fail(section, "an object", data)
    data = dict(data)
    default = "linear" if section == "task" else "lsa"
    name = data.pop("name", default)
    if section == "task":
        from iclab.tasks import TASKS as registry
    else:
        from iclab.models import MODELS as registry  # type: ignore[assignment]
    if not isinstance(name, str):
        fail(f"{section}.name", f"one of: {', '.join(registry.names())}", name)
    return _from_dict(registry.config_class(name), data, section)


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """Inverse of `config_to_dict`; missing fields take their defaults, unknown fields are errors."""
    return _from_dict(ExperimentConfig, data, "")


def load_config(path: str | Path) -> ExperimentConfig:
    """Read an ExperimentConfig from JSON (a run's config.json with a top-level "config" key also works)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config: file {str(path)!r} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config: {str(path)!r} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config: {str(path)!r} is not valid JSON (not UTF-8 text)") from None
    except OSError as exc:  # a directory, no permission, …
        raise ConfigError(f"config: cannot read {str(path)!r} ({exc.strerror or exc})") from None
    if isinstance(data, dict) and "config" in data and "task" not in data:
        data = data["config"]
    return config_from_dict(data)
