"""Learners by name: ``"ols"``, ``"ridge:0.25"``, ``"gd:3"``, ``"newton:5"``, ``"lasso:0.1"``, ``"knn:3"``.

Grammar: ``NAME[:ARG[:ARG…]]`` where an ARG is a value (positional) or ``key=value``, e.g. ``gd:3:eta=0.1``
(colons, so that a list of learners can be written with commas: ``--learners ols,ridge:0.25,knn:3``).
Each algorithm module declares what it offers in a module-level ``LEARNERS: dict[str, LearnerSpec]``; this
module merges them, so a new learner is registered next to its code. Factories receive the parsed arguments
and the task (learners tuned to the task distribution, such as ``gd:3`` without a step, need it).

Unknown names fail listing the valid ones; bad arguments fail naming the learner and its usage.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from iclab.errors import SpecError

__all__ = [
    "LearnerSpec",
    "LearnerSpecError",
    "check_args",
    "learner_names",
    "make_learner",
    "parse_dtype",
    "parse_int",
    "parse_real",
    "parse_spec",
    "spec_string",
    "split_learner_list",
]

# Modules that declare LEARNERS, imported on the first registry look-up.
MODULES = (
    "iclab.algorithms.least_squares",
    "iclab.algorithms.gd",
    "iclab.algorithms.newton",
    "iclab.algorithms.sparse",
    "iclab.algorithms.local",
    "iclab.algorithms.bayes",
    "iclab.algorithms.nets",
    "iclab.algorithms.trees",
    "iclab.algorithms.icl_classification",
)


class LearnerSpecError(SpecError):
    """A bad learner name or argument; one line, naming the learner and what is allowed."""


@dataclass(frozen=True)
class LearnerSpec:
    """factory(args, kwargs, task) → learner; usage like ``"ridge:LAMBDA"``; help is one line."""

    factory: Callable[[tuple[str, ...], dict[str, str], Any], Any]
    usage: str
    help: str


def parse_spec(spec: str) -> tuple[str, tuple[str, ...], dict[str, str]]:
    """``"gd:3:eta=0.1"`` → ("gd", ("3",), {"eta": "0.1"})."""
    spec = spec.strip()
    name, _, rest = spec.partition(":")
    args: list[str] = []
    kwargs: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(":"))) if rest else ():
        if "=" in part:
            key, _, value = part.partition("=")
            kwargs[key.strip()] = value.strip()
        else:
            if kwargs:
                raise LearnerSpecError(f"learner {spec!r}: positional arguments must come before key=value ones")
            args.append(part)
    return name.strip().lower(), tuple(args), kwargs


def split_learner_list(text: str) -> list[str]:
    """``"ols, ridge:0.25,knn:3"`` → ["ols", "ridge:0.25", "knn:3"] (empty items are errors)."""
    items = [t.strip() for t in text.split(",")]
    if not items or any(not t for t in items):
        raise LearnerSpecError(f"learners: a comma-separated list of learner names, got {text!r}")
    return items


def spec_string(name: str, args: tuple[str, ...], kwargs: dict[str, str]) -> str:
    """The spec a learner was made from, for its `.name`: ("gd", ("3",), {"eta": "0.1"}) → "gd:3:eta=0.1"."""
    parts = [*args, *(f"{k}={v}" for k, v in kwargs.items())]
    return f"{name}:{':'.join(parts)}" if parts else name


def check_args(args: tuple[str, ...], kwargs: dict[str, str], n_args: int, keys: Sequence[str] = ()) -> None:
    """ValueError unless there are at most `n_args` positional arguments and only `keys` as key=value ones."""
    if len(args) > n_args:
        raise ValueError(f"takes at most {n_args} positional argument(s), got {len(args)}")
    extra = sorted(set(kwargs) - set(keys))
    if extra:
        allowed = ", ".join(keys) or "none"
        raise ValueError(f"unknown key(s) {', '.join(extra)}; allowed: {allowed}")


def parse_real(what: str, value: str, *, low: float = -math.inf, strict: bool = False) -> float:
    """A finite float > low (strict) or >= low, else ValueError naming `what`."""
    try:
        out = float(value)
    except ValueError:
        out = math.nan
    if not math.isfinite(out) or out < low or (strict and out == low):
        raise ValueError(f"{what}: must be a finite number {'>' if strict else '>='} {low:g}, got {value!r}")
    return out


def parse_int(what: str, value: str, *, low: int = 1) -> int:
    """An integer >= low, else ValueError naming `what`."""
    try:
        out = int(value)
    except ValueError:
        out = low - 1
    if out < low:
        raise ValueError(f"{what}: must be an integer >= {low}, got {value!r}")
    return out


def parse_dtype(kwargs: dict[str, str]) -> torch.dtype | None:
    """The `float64` flag (1/true/yes or 0/false/no): torch.float64 or None (compute in the input dtype)."""
    value = kwargs.get("float64", "0").lower()
    if value not in ("1", "true", "yes", "0", "false", "no"):
        raise ValueError(f"float64: must be 1/true/yes or 0/false/no, got {value!r}")
    return torch.float64 if value in ("1", "true", "yes") else None


def _all_specs() -> dict[str, LearnerSpec]:
    specs: dict[str, LearnerSpec] = {}
    for module in MODULES:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:  # a module not written yet is simply not offered
                continue
            raise
        specs.update(getattr(mod, "LEARNERS", {}))
    return specs


def learner_names() -> dict[str, LearnerSpec]:
    """Every registered learner name → its spec (usage and help)."""
    return dict(sorted(_all_specs().items()))


def make_learner(spec: str, task: Any = None) -> Any:
    """The learner named by `spec` (see the module docstring); `task` is needed by task-tuned learners."""
    name, args, kwargs = parse_spec(spec)
    specs = _all_specs()
    if name not in specs:
        raise LearnerSpecError(f"learner {spec!r}: unknown name {name!r}; choose one of: {', '.join(sorted(specs))}")
    entry = specs[name]
    try:
        learner = entry.factory(args, kwargs, task)
    except LearnerSpecError:
        raise
    except (ValueError, TypeError) as exc:
        raise LearnerSpecError(f"learner {spec!r}: {exc} (usage: {entry.usage})") from None
    if getattr(learner, "name", None) in (None, "learner"):
        learner.name = spec
    return learner
