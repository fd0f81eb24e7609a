"""Garg et al.'s curriculum: the number of active input dimensions and of points grows during training.

At training step s (0-based) the prompts use ``min(start + (s // every) * step, end)`` active dimensions and points
(Garg's code adds the increment after every `every`-th update and caps it at the end). Inactive coordinates are
zero (`Task.sample(..., d_active=…)`); the point count is passed as `Task.sample(..., n_points=…)`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from iclab.config import ConfigError

__all__ = ["Curriculum"]


def _check_int(name: str, value: object, low: int, what: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"curriculum.{name}: must be an integer >= {low}{what}, got {value!r}")


@dataclass(frozen=True)
class Curriculum:
    """Active dimensions dims_start → dims_end (+dims_step) and points points_start → points_end (+points_step),
    one increment every `every` steps. A step of 0 is allowed only where start == end (a fixed value).
    """

    dims_start: int
    dims_end: int
    dims_step: int
    points_start: int
    points_end: int
    points_step: int
    every: int

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_int(f.name, getattr(self, f.name), 0)
        for kind in ("dims", "points"):
            start, end, step = (getattr(self, f"{kind}_{k}") for k in ("start", "end", "step"))
            _check_int(f"{kind}_start", start, 1)
            _check_int(f"{kind}_end", end, start, f" ({kind}_start)")
            if start < end:
                _check_int(f"{kind}_step", step, 1, f" when {kind}_start < {kind}_end")
        _check_int("every", self.every, 1)

    @classmethod
    def garg(cls, d: int = 20, n_points: int = 41) -> Curriculum:
        """Garg et al.'s schedule: 5 → d active dimensions (+1) and 11 → n_points points (+2), every 2000 steps.

        Starts are capped at the ends, so small tasks get a shorter (or no) curriculum.
        """
        return cls(
            dims_start=min(5, d),
            dims_end=d,
            dims_step=1,
            points_start=min(11, n_points),
            points_end=n_points,
            points_step=2,
            every=2000,
        )

    def at(self, step: int) -> tuple[int, int]:
        """(d_active, n_points) for training step `step` (0-based)."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step: must be an integer >= 0, got {step!r}")
        k = step // self.every  # increments so far
        return (
            min(self.dims_start + k * self.dims_step, self.dims_end),
            min(self.points_start + k * self.points_step, self.points_end),
        )

    @property
    def end_step(self) -> int:
        """The first step at which both dimensions and points have reached their ends."""
        k = 0
        for start, end, step in (
            (self.dims_start, self.dims_end, self.dims_step),
            (self.points_start, self.points_end, self.points_step),
        ):
            if start < end:
                k = max(k, -(-(end - start) // step))  # ceil((end − start) / step) increments
        return k * self.every
