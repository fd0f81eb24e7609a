"""Registries of families: name → (config class, implementation), one per kind (tasks, models).

A family's module defines its config class (with ``name``) and its implementation side by side; one line in the
kind's package registers them, e.g. in `iclab/tasks/__init__.py`::

    TASKS.register(SparseLinearConfig, SparseLinearTask)

Everything else — the CLI's choices, JSON loading, `task_config(name)`, error messages listing the valid names —
reads the registry, so a name is written once (`docs/families.md`: how to add a family).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from iclab.validation import check_choice

__all__ = ["Registry"]

C = TypeVar("C")
I = TypeVar("I")


class Registry(Generic[C, I]):
    """The families of one kind ("task" or "model"), in registration order."""

    def __init__(self, kind: str):
        self.kind = kind
        self._families: dict[str, tuple[type[C], type[I]]] = {}

    def register(self, config: type[C], implementation: type[I]) -> None:
        """Add a family under ``config.name``; a name already taken is an error."""
        name: Any = getattr(config, "name", "")
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} family config {config.__name__} has no name")
        if name in self._families:
            raise ValueError(f"{self.kind} family {name!r} is already registered")
        self._families[name] = (config, implementation)

    def unregister(self, name: str) -> None:
        """Remove a family (tests that register a temporary one)."""
        del self._families[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._families)

    def __iter__(self) -> Iterator[str]:
        return iter(self._families)

    def __len__(self) -> int:
        return len(self._families)

    def __contains__(self, name: object) -> bool:
        return name in self._families

    def _entry(self, name: str) -> tuple[type[C], type[I]]:
        check_choice(f"{self.kind}.name", name, self.names())
        return self._families[name]

    def config_class(self, name: str) -> type[C]:
        """The config class of family `name`; ConfigError listing the names otherwise."""
        return self._entry(name)[0]

    def implementation(self, name: str) -> type[I]:
        """The task or model class of family `name`; ConfigError listing the names otherwise."""
        return self._entry(name)[1]
