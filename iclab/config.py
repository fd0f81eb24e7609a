"""Frozen, validated configuration: one dataclass per component, composed into `ExperimentConfig`.

Every invalid value raises `ConfigError` whose message is one line naming the dotted field and what is allowed,
e.g. ``task.d: must be an integer >= 1, got 0``. The CLI turns it into exit code 2 (see `iclab.cli`).
JSON round trip: `config_to_dict` / `config_from_dict` (unknown keys are errors, listing the valid ones).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from iclab.errors import UserError

__all__ = [
    "PRESETS",
    "ConfigError",
    "EvalConfig",
    "ExperimentConfig",
    "ModelConfig",
    "TaskConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "preset",
    "target_dim",
]


class ConfigError(UserError, ValueError):
    """An invalid configuration value; the message is one line naming the field."""


def _fail(name: str, allowed: str, got: Any) -> None:
    raise ConfigError(f"{name}: must be {allowed}, got {got!r}")


def _int_at_least(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        _fail(name, f"an integer >= {low}", value)


def _real(name: str, value: Any, *, low: float = -math.inf, strict: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value > low if strict else value >= low
    if not ok:
        _fail(name, f"a finite number {'>' if strict else '>='} {low:g}", value)


def _bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        _fail(name, "true or false", value)


def _sequence(name: str, value: Any, allowed: str) -> None:
    if not isinstance(value, tuple | list):
        _fail(name, allowed, value)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}: unknown value {value!r}; choose one of: {', '.join(choices)}")


X_DISTS = ("uniform", "gaussian")
# Task families (iclab.tasks registers one class per name).
TaskName = Literal[
    "linear",
    "sparse_linear",
    "quadratic",
    "relu_net",
    "decision_tree",
    "sine",
    "fourier",
    "mixture",
    "ar",
    "linear_dynamics",
    "softmax_regression",
    "classification",
]
TASKS: tuple[str, ...] = typing.get_args(TaskName)
VECTOR_TASKS = ("linear_dynamics", "softmax_regression")  # y ∈ R^k
VECTOR_MODELS = ("gpt",)  # models with a k-dimensional output head (the others predict one value per query)
W_PRIORS = ("gaussian", "sign", "low_rank")
MIX_BY = ("prompt", "batch")
ModelName = Literal["lsa", "softmax", "gpt", "lsa_features", "separate", "lla", "ssm"]
MODELS: tuple[str, ...] = typing.get_args(ModelName)
SCHEDULES = ("constant", "cosine", "warmup_cosine")
DEVICES = ("cpu", "cuda", "auto")
DTYPES = ("float32", "float64")
CURRICULA = ("none", "garg")


@dataclass(frozen=True)
class TaskConfig:
    """A family of in-context tasks: inputs x, a random function f per prompt, targets y = f(x) + ε.

    The common fields describe the inputs and the noise; family fields are read only by their family (see
    `iclab.tasks` for each family's definition). Linear regression (the default): y = wᵀx + ε with
    x ~ U(−x_scale, x_scale)^d ("uniform", the vO code's U(−0.5, 0.5)) or N(0, x_scale²·Σ_x) ("gaussian", Σ_x =
    diag(x_cov_diag), or log-spaced eigenvalues of condition number x_condition), w ~ N(0, w_scale²·diag(w_cov_diag))
    (or another w_prior), ε ~ N(0, noise_var). Each prompt has n_points context pairs and n_queries queries.
    """

    name: TaskName = "linear"
    """task family"""
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
    """task-vector standard deviation τ"""
    w_cov_diag: tuple[float, ...] | None = None
    """task-vector covariance diagonal (d values; times w_scale²)"""
    w_prior: Literal["gaussian", "sign", "low_rank"] = "gaussian"
    """linear task prior: gaussian, sign (w ∈ {±τ}^d), low_rank (w = vec of a rank-w_rank √d×√d matrix)"""
    w_rank: int = 1
    """rank of the low_rank prior"""
    noise_var: float = 0.0
    """label noise variance σ²"""
    sparsity: int = 3
    """sparse_linear: non-zero coordinates of w"""
    hidden: int = 100
    """relu_net: hidden units of the teacher"""
    depth: int = 4
    """decision_tree: depth of the tree"""
    frequencies: int = 3
    """fourier: number of frequencies K"""
    amplitude: tuple[float, float] = (0.1, 5.0)
    """sine: amplitude range U(lo, hi)"""
    phase: tuple[float, float] = (0.0, math.pi)
    """sine: phase range U(lo, hi)"""
    spectral_radius: float = 0.9
    """ar, linear_dynamics: largest modulus of the dynamics' eigenvalues (< 1: stable)"""
    n_classes: int = 3
    """softmax_regression: output dimension k (targets softmax(Wx) ∈ R^k)"""
    flip_prob: float = 0.0
    """classification: probability that a ±1 label is flipped"""
    pool_size: int = 0
    """finite task pool of M functions drawn once from pool_seed (0: a fresh function for every prompt)"""
    pool_seed: int = 0
    """seed of the finite task pool"""
    components: tuple[str, ...] = ()
    """mixture: the families mixed (each uses this config with its own name)"""
    mix_by: Literal["prompt", "batch"] = "prompt"
    """mixture: draw the family per prompt or once per batch"""

    def __post_init__(self) -> None:
        _choice("task.name", self.name, TASKS)
        _int_at_least("task.d", self.d, 1)
        _int_at_least("task.n_points", self.n_points, 1)
        _int_at_least("task.n_queries", self.n_queries, 1)
        _choice("task.x_dist", self.x_dist, X_DISTS)
        _real("task.x_scale", self.x_scale, low=0.0, strict=True)
        _real("task.x_condition", self.x_condition, low=1.0)
        _real("task.w_scale", self.w_scale, low=0.0, strict=True)
        _real("task.noise_var", self.noise_var, low=0.0)
        for name in ("x_cov_diag", "w_cov_diag"):
            diag = getattr(self, name)
            if diag is None:
                continue
            _sequence(f"task.{name}", diag, f"a list of d = {self.d} positive numbers")
            if len(diag) != self.d:
                _fail(f"task.{name}", f"a list of d = {self.d} positive numbers", list(diag))
            for v in diag:
                _real(f"task.{name}", v, low=0.0, strict=True)
        if self.x_cov_diag is not None and self.x_dist != "gaussian":
            _fail("task.x_cov_diag", "unset unless task.x_dist is 'gaussian'", list(self.x_cov_diag))
        if self.x_condition != 1.0 and (self.x_dist != "gaussian" or self.x_cov_diag is not None):
            allowed = "1 unless task.x_dist is 'gaussian' and task.x_cov_diag is unset"
            _fail("task.x_condition", allowed, self.x_condition)
        _choice("task.w_prior", self.w_prior, W_PRIORS)
        _int_at_least("task.w_rank", self.w_rank, 1)
        if self.w_prior == "low_rank":
            side = math.isqrt(self.d)
            if side * side != self.d:
                _fail("task.d", "a perfect square (4, 9, 16, …) for task.w_prior 'low_rank'", self.d)
            if self.w_rank > side:
                _fail("task.w_rank", f"an integer in [1, √d = {side}]", self.w_rank)
        if self.w_prior != "gaussian" and self.w_cov_diag is not None:
            _fail("task.w_cov_diag", "unset unless task.w_prior is 'gaussian'", list(self.w_cov_diag))
        _int_at_least("task.sparsity", self.sparsity, 1)
        if self.name == "sparse_linear" and self.sparsity > self.d:
            _fail("task.sparsity", f"an integer in [1, d = {self.d}]", self.sparsity)
        _int_at_least("task.hidden", self.hidden, 1)
        _int_at_least("task.depth", self.depth, 1)
        _int_at_least("task.frequencies", self.frequencies, 1)
        for name, low_ok in (("amplitude", 0.0), ("phase", -math.inf)):
            pair = getattr(self, name)
            _sequence(f"task.{name}", pair, "a pair [lo, hi] with lo <= hi")
            if len(pair) != 2 or not all(isinstance(v, int | float) and math.isfinite(v) for v in pair):
                _fail(f"task.{name}", "a pair [lo, hi] of finite numbers with lo <= hi", list(pair))
            if pair[0] > pair[1] or pair[0] < low_ok:
                _fail(f"task.{name}", f"a pair [lo, hi] with {low_ok:g} <= lo <= hi", list(pair))
        if self.name in ("sine", "fourier") and self.d != 1:
            _fail("task.d", f"1 for task.name {self.name!r} (scalar inputs)", self.d)
        _real("task.spectral_radius", self.spectral_radius, low=0.0, strict=True)
        if self.spectral_radius >= 1.0:
            _fail("task.spectral_radius", "a number in (0, 1) (a stable process)", self.spectral_radius)
        _int_at_least("task.n_classes", self.n_classes, 2)
        _real("task.flip_prob", self.flip_prob, low=0.0)
        if self.flip_prob > 0.5:
            _fail("task.flip_prob", "a probability in [0, 0.5]", self.flip_prob)
        _int_at_least("task.pool_size", self.pool_size, 0)
        _int_at_least("task.pool_seed", self.pool_seed, 0)
        _sequence("task.components", self.components, "a list of task family names")
        _choice("task.mix_by", self.mix_by, MIX_BY)
        if self.name == "mixture":
            allowed = tuple(t for t in TASKS if t != "mixture")
            if len(self.components) < 2:
                _fail("task.components", f"at least two of: {', '.join(allowed)}", list(self.components))
            for c in self.components:
                _choice("task.components", c, allowed)
        elif self.components:
            _fail("task.components", "empty unless task.name is 'mixture'", list(self.components))


@dataclass(frozen=True)
class ModelConfig:
    """A sequence model (iclab.models; definitions in each class's docstring). Fields a model does not use are
    ignored by it.

    lsa            linear self-attention on the concat layout (von Oswald): layers, tied, heads, layernorm,
                   init_scale (initialisation variance · fan-in before the 1/K scaling; vO code: 0.002/K)
    softmax        multi-head softmax attention (He et al.): layers, heads, mlp, layernorm, positions
    gpt            pre-LN causal transformer on the interleaved layout (Garg): layers, heads, width, mlp_ratio
    lsa_features   an MLP embedding of x (feature_hidden → feature_dim) trained jointly, then LSA layers (vO)
    separate       separate x / (0, y) tokens with positions: a softmax copy layer, then LSA layers (vO)
    lla            local linear attention (kernel-weighted local linear regression of values on keys): lla_ridge
    ssm            an attention-free gated linear recurrence with a selective scan (Mamba-style): width, state_dim
    variance_head  any model: also predict a variance, trained with the Gaussian negative log-likelihood
    """

    name: ModelName = "lsa"
    """model family"""
    layers: int = 1
    """number of layers K"""
    tied: bool = False
    """lsa: one weight set applied K times (vO "recurrent")"""
    heads: int = 1
    """attention heads per layer"""
    layernorm: bool = False
    """lsa: pre-LayerNorm on every layer but the first; softmax: pre-LayerNorm on every layer"""
    init_scale: float = 0.002
    """lsa: initial variance · fan-in, divided by K"""
    width: int = 256
    """gpt, ssm, lla: residual-stream width d_model"""
    mlp: bool = False
    """softmax: an MLP block after each attention layer"""
    mlp_ratio: int = 4
    """gpt (and softmax with mlp): MLP hidden width / d_model"""
    positions: bool = False
    """softmax: learned positional embeddings"""
    max_points: int = 256
    """gpt, separate: the longest prompt (points) positional embeddings cover"""
    feature_hidden: int = 64
    """lsa_features: hidden units of the embedding MLP"""
    feature_dim: int = 16
    """lsa_features: learned feature dimension fed to LSA"""
    lla_ridge: float = 1e-2
    """lla: ridge regulariser of the local linear regression"""
    state_dim: int = 16
    """ssm: state size per channel"""
    variance_head: bool = False
    """predict a variance too, trained with the Gaussian negative log-likelihood"""

    def __post_init__(self) -> None:
        _choice("model.name", self.name, MODELS)
        _int_at_least("model.layers", self.layers, 1)
        _bool("model.tied", self.tied)
        _int_at_least("model.heads", self.heads, 1)
        _bool("model.layernorm", self.layernorm)
        _real("model.init_scale", self.init_scale, low=0.0, strict=True)
        _int_at_least("model.width", self.width, 1)
        if self.name == "gpt" and self.width % self.heads:
            _fail("model.width", f"a multiple of model.heads ({self.heads})", self.width)
        _bool("model.mlp", self.mlp)
        _int_at_least("model.mlp_ratio", self.mlp_ratio, 1)
        _bool("model.positions", self.positions)
        _int_at_least("model.max_points", self.max_points, 1)
        _int_at_least("model.feature_hidden", self.feature_hidden, 1)
        _int_at_least("model.feature_dim", self.feature_dim, 1)
        _real("model.lla_ridge", self.lla_ridge, low=0.0, strict=True)
        _int_at_least("model.state_dim", self.state_dim, 1)
        _bool("model.variance_head", self.variance_head)


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
    progress: bool = True
    """show a progress bar"""
    curriculum: Literal["none", "garg"] = "none"
    """garg: active dimensions 5 → d (+1) and points 11 → n_points (+2) every curriculum_every steps"""
    curriculum_every: int = 2000
    """steps between curriculum increments (Garg: 2000)"""

    def __post_init__(self) -> None:
        _int_at_least("train.steps", self.steps, 0)
        _int_at_least("train.batch_size", self.batch_size, 1)
        _real("train.lr", self.lr, low=0.0, strict=True)
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, int | float) and 0.0 <= v < 1.0):
                _fail(f"train.{name}", "a number in [0, 1)", v)
        _real("train.weight_decay", self.weight_decay, low=0.0)
        _real("train.grad_clip", self.grad_clip, low=0.0)
        _choice("train.schedule", self.schedule, SCHEDULES)
        _int_at_least("train.warmup_steps", self.warmup_steps, 0)
        _int_at_least("train.eval_every", self.eval_every, 1)
        _int_at_least("train.checkpoint_every", self.checkpoint_every, 1)
        if self.checkpoint_every % self.eval_every:
            # checkpoints are taken at evaluation steps so a resume never splits a logged train-loss window
            _fail(
                "train.checkpoint_every", f"a multiple of train.eval_every ({self.eval_every})", self.checkpoint_every
            )
        _int_at_least("train.seed", self.seed, 0)
        _choice("train.device", self.device, DEVICES)
        _choice("train.dtype", self.dtype, DTYPES)
        _bool("train.progress", self.progress)
        _choice("train.curriculum", self.curriculum, CURRICULA)
        _int_at_least("train.curriculum_every", self.curriculum_every, 1)


@dataclass(frozen=True)
class EvalConfig:
    """Held-out evaluation: a fixed set of prompts (seeded apart from training) and the OOD scales."""

    n_prompts: int = 10_000
    """held-out prompts (fixed set)"""
    seed: int = 12345
    alphas: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0)
    """input / target scales of the OOD curves"""

    def __post_init__(self) -> None:
        _int_at_least("eval.n_prompts", self.n_prompts, 1)
        _int_at_least("eval.seed", self.seed, 0)
        _sequence("eval.alphas", self.alphas, "a non-empty list of positive numbers")
        if len(self.alphas) == 0:
            _fail("eval.alphas", "a non-empty list of positive numbers", list(self.alphas))
        for a in self.alphas:
            _real("eval.alphas", a, low=0.0, strict=True)


def target_dim(task: TaskConfig) -> int | None:
    """k of vector targets y ∈ R^k: n_classes for softmax_regression, d for linear_dynamics; None for scalar."""
    return {"softmax_regression": task.n_classes, "linear_dynamics": task.d}.get(task.name)


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a run; stored resolved in the run's config.json."""

    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    name: str = "experiment"

    def __post_init__(self) -> None:
        # The name is the default run directory (runs/<name>): one plain path component.
        n = self.name
        if not isinstance(n, str) or not n or "/" in n or "\\" in n or n in (".", ".."):
            _fail("name", "a non-empty name without '/' or '\\' (it names the run directory)", n)
        if self.train.seed + 1 == self.eval.seed:
            # the trainer's data stream is seeded train.seed + 1 and the held-out set eval.seed: equal seeds would
            # make the first training prompts the held-out ones
            _fail(
                "train.seed",
                f"a seed other than eval.seed − 1 = {self.eval.seed - 1} (its training prompts would be the held-out "
                "ones)",
                self.train.seed,
            )
        if self.task.name in VECTOR_TASKS and (self.model.name not in VECTOR_MODELS or self.model.variance_head):
            what = "with a variance head " if self.model.name in VECTOR_MODELS else ""
            raise ConfigError(
                f"task.name: {self.task.name!r} has vector targets and model {self.model.name!r} {what}predicts one "
                f"value per query; choose a scalar task ({', '.join(t for t in TASKS if t not in VECTOR_TASKS)}) "
                f"or model {', '.join(VECTOR_MODELS)} (no variance head)"
            )

    @property
    def target_dim(self) -> int | None:
        """k of the task's vector targets y ∈ R^k (the model's output head), None for scalar targets."""
        return target_dim(self.task)

    def replace(self, **sections: Any) -> ExperimentConfig:
        """Copy with sections replaced by dicts of field overrides, e.g. replace(train={"steps": 10})."""
        updates = {}
        for key, overrides in sections.items():
            current = getattr(self, key)
            updates[key] = dataclasses.replace(current, **overrides) if isinstance(overrides, dict) else overrides
        return dataclasses.replace(self, **updates)


# ---------------------------------------------------------------------------------------------- JSON round trip


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


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
            _fail(name, "a list of numbers", value)
        return tuple(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        _fail(name, "a single value, not an object", value)
    return value


def _from_dict(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        _fail(prefix or "config", "an object", data)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in names:
            raise ConfigError(f"{dotted}: unknown field; allowed: {', '.join(names)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _from_dict(hint, value, dotted)
        else:
            kwargs[key] = _coerce(dotted, value, hint)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # e.g. a wrong type tyro would have caught; keep it one line
        raise ConfigError(f"{prefix or 'config'}: {exc}") from None


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


# ----------------------------------------------------------------------------------------------------- presets


def _von_oswald(layers: int, tied: bool) -> ExperimentConfig:
    # vO code: x ~ U(-0.5, 0.5), d = N = 10, noiseless, Adam lr 1e-3 (5e-4 beyond 3 layers), beta2 = 0.98,
    # batch 2048, init variance 0.002 / K; 5 000 steps tied, 50 000 untied.
    steps = 5000 if (tied or layers == 1) else 50_000
    return ExperimentConfig(
        task=TaskConfig(),
        model=ModelConfig(layers=layers, tied=tied),
        train=TrainConfig(steps=steps, lr=1e-3 if layers <= 3 else 5e-4),
        name=f"von-oswald-{layers}{'-tied' if tied else ''}",
    )


def _gaussian(d: int, n: int, noise_var: float) -> ExperimentConfig:
    return ExperimentConfig(
        task=TaskConfig(d=d, n_points=n, x_dist="gaussian", x_scale=1.0, noise_var=noise_var),
        model=ModelConfig(layers=1),
        train=TrainConfig(steps=4000, lr=2e-3, schedule="cosine"),
        name=f"gaussian-d{d}-n{n}-s{noise_var:g}",
    )


def _he(heads: int) -> ExperimentConfig:
    # He et al.: one softmax-attention layer; d = 5, 40 context points, σ² = 0.1, w ~ N(0, I/d); batch 256.
    # 1 000 steps at lr 1e-2 with cosine decay reach the debiased-GD optimum within 1 % (tests/test_softmax.py).
    return ExperimentConfig(
        task=TaskConfig(d=5, n_points=40, x_dist="gaussian", x_scale=1.0, w_scale=0.2**0.5, noise_var=0.1),
        model=ModelConfig(name="softmax", heads=heads),
        train=TrainConfig(steps=1000, batch_size=256, lr=1e-2, schedule="cosine", eval_every=250),
        name=f"he-{heads}-head{'s' * (heads > 1)}",
    )


def _garg(small: bool) -> ExperimentConfig:
    # Garg et al.: GPT-2 (12 layers, 8 heads, width 256) on d = 20 with 41 points (40 context + 1 query), Adam 1e-4,
    # batch 64, 500 001 steps, curriculum 5 → 20 dimensions and 11 → 41 points: a GPU budget. The small variant
    # (d = 5, 10 context points; `iclab reproduce garg`) is a CPU budget of ~15 minutes on one core. Measured on the
    # way to it (seed 0, nmse gap to least squares at k < d / largest at k ≥ d): width 64, 3 layers, batch 128, lr 1e-3:
    # 1 000 steps 0.27 / 0.36, 6 000 steps 0.12 / 0.21 (batch 64, 10 000 steps: worse; lr 3e-3: stuck on the
    # plateau); width 128, 4 layers, lr 5e-4: 3 000 steps 0.2-level, 6 000 steps 0.04 / 0.11.
    if small:
        return ExperimentConfig(
            task=TaskConfig(d=5, n_points=10, x_dist="gaussian", x_scale=1.0),
            model=ModelConfig(name="gpt", layers=4, heads=4, width=128, mlp_ratio=2, max_points=64),
            train=TrainConfig(
                steps=6000,
                batch_size=128,
                lr=5e-4,
                schedule="warmup_cosine",
                warmup_steps=500,
                eval_every=500,
                checkpoint_every=3000,
            ),
            eval=EvalConfig(n_prompts=2000),
            name="garg-linear-small",
        )
    return ExperimentConfig(
        task=TaskConfig(d=20, n_points=40, x_dist="gaussian", x_scale=1.0),
        model=ModelConfig(name="gpt", layers=12, heads=8, width=256, max_points=64),
        train=TrainConfig(
            steps=500_001,
            batch_size=64,
            lr=1e-4,
            curriculum="garg",
            eval_every=2000,
            checkpoint_every=20_000,
            device="auto",
        ),
        eval=EvalConfig(n_prompts=1280),
        name="garg-linear",
    )


def _von_oswald_views(kind: str) -> ExperimentConfig:
    # vO's deep representations (sine regression, LSA on learned MLP features) and separate x / (0, y) tokens
    # (a softmax copy layer, then LSA); budgets of tests/test_features.py and tests/test_separate.py.
    if kind == "sine":
        return ExperimentConfig(
            task=TaskConfig(name="sine", d=1, n_points=15, x_dist="uniform", x_scale=5.0),
            model=ModelConfig(name="lsa_features", feature_dim=16),
            train=TrainConfig(steps=1000, batch_size=256, lr=3e-3, schedule="cosine", eval_every=250),
            name="von-oswald-sine",
        )
    return ExperimentConfig(
        task=TaskConfig(d=3, n_points=10),
        model=ModelConfig(name="separate", max_points=11),
        train=TrainConfig(
            steps=1200, batch_size=256, lr=1e-2, schedule="cosine", eval_every=300, checkpoint_every=1200
        ),
        name="von-oswald-separate",
    )


PRESETS: dict[str, ExperimentConfig] = {
    "von-oswald": _von_oswald(1, False),
    "von-oswald-2": _von_oswald(2, False),
    "von-oswald-3": _von_oswald(3, False),
    "von-oswald-2-tied": _von_oswald(2, True),
    "von-oswald-3-tied": _von_oswald(3, True),
    "gaussian": _gaussian(10, 20, 0.25),
    "von-oswald-sine": _von_oswald_views("sine"),
    "von-oswald-separate": _von_oswald_views("separate"),
    "he-1-head": _he(1),
    "he-2-heads": _he(2),
    "garg-linear-small": _garg(small=True),
    "garg-linear": _garg(small=False),
}


def preset(name: str) -> ExperimentConfig:
    """The named preset; unknown names list the valid ones."""
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown value {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]
