"""One-line validation of user-facing values: every check raises `ConfigError` naming the dotted field and what is
allowed, e.g. ``task.d: must be an integer >= 1, got 0``. Config dataclasses of every family call these from their
``__post_init__``; the CLI turns a `ConfigError` into exit code 2 (`iclab.cli`).
"""

from __future__ import annotations

import math
from typing import Any, NoReturn

from iclab.errors import UserError

__all__ = [
    "ConfigError",
    "check_bool",
    "check_choice",
    "check_int",
    "check_pair",
    "check_positive_list",
    "check_real",
    "fail",
]


class ConfigError(UserError, ValueError):
    """An invalid configuration value; the message is one line naming the field (a user error: exit code 2)."""


def fail(name: str, allowed: str, got: Any) -> NoReturn:
    """Raise ``ConfigError("<name>: must be <allowed>, got <got>")``."""
    raise ConfigError(f"{name}: must be {allowed}, got {got!r}")


def check_int(name: str, value: Any, low: int) -> None:
    """An integer (not a bool) >= low."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        fail(name, f"an integer >= {low}", value)


def check_real(name: str, value: Any, *, low: float = -math.inf, strict: bool = False) -> None:
    """A finite number >= low (> low with strict)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value > low if strict else value >= low
    if not ok:
        fail(name, f"a finite number {'>' if strict else '>='} {low:g}", value)


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        fail(name, "true or false", value)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    """One of `choices` (the message lists them)."""
    if value not in choices:
        raise ConfigError(f"{name}: unknown value {value!r}; choose one of: {', '.join(choices)}")


def check_sequence(name: str, value: Any, allowed: str) -> None:
    if not isinstance(value, tuple | list):
        fail(name, allowed, value)


def check_positive_list(name: str, value: Any, length: int) -> None:
    """A list of `length` finite numbers > 0."""
    allowed = f"a list of d = {length} positive numbers"
    check_sequence(name, value, allowed)
    if len(value) != length:
        fail(name, allowed, list(value))
    for v in value:
        check_real(name, v, low=0.0, strict=True)


def check_pair(name: str, pair: Any, low: float = -math.inf) -> None:
    """A pair [lo, hi] of finite numbers with low <= lo <= hi."""
    check_sequence(name, pair, "a pair [lo, hi] with lo <= hi")
    if len(pair) != 2 or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in pair
    ):
        fail(name, "a pair [lo, hi] of finite numbers with lo <= hi", list(pair))
    if pair[0] > pair[1] or pair[0] < low:
        fail(name, f"a pair [lo, hi] with {low:g} <= lo <= hi", list(pair))
