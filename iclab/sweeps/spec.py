"""Sweep specs: a base experiment, axes over any config field, seeds — expanded into trials, validated up front.

A spec is a YAML (or JSON) mapping::

    name: small-grid                 # optional; default: the file's stem
    base:
      preset: von-oswald             # or config: path/to/config.json (relative to the spec); neither: the defaults
      overrides: {train.steps: 300}  # dotted config fields, applied to every trial
    grid:                            # every combination of these values (a cartesian product)
      task.noise_var: [0.0, 0.25, 1.0]
      model.layers: [1, 2, 3]
    zip:                             # lists of equal length, varied together (the i-th values in one cell)
      task.d: [5, 10]
      task.n_points: [10, 20]
    seeds: [0, 1]                    # or "0-4"; every cell is trained once per seed
    ensemble: true                   # the seeds of a cell train as one ensemble (iclab.training.ensemble)
    resources: {cpus: 1, gpus: 0}    # per trial (one ensemble counts as one trial) for the ray executor
    max_failures: 0                  # ray: Tune's retries of a failing trial (FailureConfig); local: none, a
                                     # failed unit is retried when the sweep is run again

A *cell* is one point of grid × zip; a *trial* is a cell with a seed; a *unit* is what one training run does: a
trial, or with ``ensemble`` the cell's seeds as one ensemble run. `expand` builds every trial's config and
validates it before anything runs: an unknown field, a bad value in any cell, or two cells that are the same
experiment is one line naming the field and the cell (SpecError, exit code 2 from the CLI).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iclab.config import ExperimentConfig, change_family, config_from_dict, config_to_dict, load_config
from iclab.errors import SpecError, UserError
from iclab.training.trainer import check_sizes

__all__ = ["SweepSpec", "Trial", "Unit", "expand", "load_spec", "parse_spec"]

_KEYS = ("name", "base", "grid", "zip", "seeds", "ensemble", "resources", "max_failures")
_SECTIONS = ("task", "model", "train", "eval")  # the config sections an axis may vary (ensemble is the sweep's)


@dataclass(frozen=True)
class SweepSpec:
    """A parsed spec (module docstring): the base config and the axes, not yet expanded."""

    name: str
    base: ExperimentConfig
    grid: dict[str, tuple[Any, ...]]
    zip: dict[str, tuple[Any, ...]]
    seeds: tuple[int, ...]
    ensemble: bool = True
    cpus: float = 1.0
    gpus: float = 0.0
    max_failures: int = 0
    source: dict[str, Any] = dataclasses.field(default_factory=dict)
    """the spec as written (recorded in OUT/sweep.json)"""

    @property
    def axes(self) -> list[str]:
        """The varied fields, grid first, in the spec's order."""
        return [*self.grid, *self.zip]


@dataclass(frozen=True)
class Trial:
    """One cell with one seed: its name, the axis values, its config and the unit that trains it."""

    name: str
    cell: str
    axes: dict[str, Any]
    seed: int
    config: ExperimentConfig
    unit: str
    member: str | None
    """the member label inside an ensemble unit (its run is UNIT/members/<member>), None for a unit of its own"""


@dataclass(frozen=True)
class Unit:
    """One training run of the sweep: a single trial, or the seeds of one cell as an ensemble."""

    name: str
    config: ExperimentConfig
    trials: tuple[str, ...]


def _fail(field: str, message: str) -> SpecError:
    return SpecError(f"sweep.{field}: {message}")


def _check_mapping(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(field, f"must be a mapping of dotted config fields to values, got {value!r}")
    return dict(value)


def _check_key(key: Any, field: str) -> str:
    if not isinstance(key, str) or key.count(".") != 1 or key.split(".")[0] not in _SECTIONS:
        raise _fail(field, f"{key!r} is not a config field; write section.field with section one of {_SECTIONS}")
    return key


def _values(value: Any, field: str) -> tuple[Any, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise _fail(field, f"must be a non-empty list of values, got {value!r}")
    return tuple(value)


def _seeds(value: Any) -> tuple[int, ...]:
    if value is None:
        return (0,)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", value)
        if not m or int(m[1]) > int(m[2]):
            raise _fail("seeds", f"must be a list of integers >= 0 or a range like '0-4', got {value!r}")
        return tuple(range(int(m[1]), int(m[2]) + 1))
    if isinstance(value, bool) or not isinstance(value, list | tuple | int):
        raise _fail("seeds", f"must be a list of integers >= 0 or a range like '0-4', got {value!r}")
    seeds = (value,) if isinstance(value, int) else tuple(value)
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
        raise _fail("seeds", f"must be a non-empty list of integers >= 0, got {value!r}")
    if len(set(seeds)) != len(seeds):
        raise _fail("seeds", f"must be distinct, got {list(seeds)}")
    return seeds


def _number(value: Any, field: str, *, low: float, integer: bool) -> Any:
    ok = isinstance(value, int if integer else int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < low:
        kind = "an integer" if integer else "a number"
        raise _fail(field, f"must be {kind} >= {low:g}, got {value!r}")
    return value


def apply_overrides(config: ExperimentConfig, overrides: Mapping[str, Any]) -> ExperimentConfig:
    """`config` with dotted fields set ({"train.lr": 1e-3, "model.name": "gpt"}); a family change ("task.name",
    "model.name") happens first, so the other fields are checked against the new family. ConfigError (one line,
    naming the field) for an unknown field or a bad value."""
    for section in ("task", "model"):
        name = overrides.get(f"{section}.name")
        if name is not None:
            from iclab.config import _family_from_dict

            _family_from_dict(section, {"name": name})  # an unknown family: one line listing the known ones
            config = dataclasses.replace(config, **{section: change_family(getattr(config, section), name)})
    data = config_to_dict(config)
    for key, value in overrides.items():
        section, field = key.split(".")
        if field != "name" or section not in ("task", "model"):
            data.setdefault(section, {})[field] = value
    return config_from_dict(data)


def parse_spec(raw: Any, *, name: str = "sweep", root: Path | None = None) -> SweepSpec:
    """A SweepSpec from the loaded YAML/JSON mapping `raw`; `root` resolves base.config paths. SpecError (one line
    naming the field) for anything malformed; the cells are checked by `expand`."""
    if not isinstance(raw, Mapping):
        raise SpecError(f"sweep: a spec must be a mapping with keys {', '.join(_KEYS)}; got {type(raw).__name__}")
    for key in raw:
        if key not in _KEYS:
            raise _fail(str(key), f"unknown key; allowed: {', '.join(_KEYS)}")
    spec_name = raw.get("name", name)
    if not isinstance(spec_name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", spec_name):
        raise _fail("name", f"must be a name of letters, digits, '_', '.', '-', got {spec_name!r}")
    base_raw = _check_mapping(raw.get("base"), "base")
    for key in base_raw:
        if key not in ("preset", "config", "overrides"):
            raise _fail(f"base.{key}", "unknown key; allowed: preset, config, overrides")
    if "preset" in base_raw and "config" in base_raw:
        raise _fail("base", "give either preset or config, not both")
    if "preset" in base_raw:
        from iclab.experiments.presets import preset

        if not isinstance(base_raw["preset"], str):
            raise _fail("base.preset", f"must be a preset name, got {base_raw['preset']!r}")
        try:
            base = preset(base_raw["preset"])
        except UserError as exc:
            raise SpecError(f"sweep.base.{exc}") from None
    elif "config" in base_raw:
        path = Path(str(base_raw["config"]))
        try:
            base = load_config(path if path.is_absolute() or root is None else root / path)
        except UserError as exc:
            raise SpecError(f"sweep.base.{exc}") from None
    else:
        base = ExperimentConfig()
    overrides = {_check_key(k, "base.overrides"): v for k, v in _check_mapping(base_raw.get("overrides"), "").items()}
    try:
        base = apply_overrides(base, overrides)
    except UserError as exc:
        raise SpecError(f"sweep.base.overrides: {exc}") from None
    grid = {_check_key(k, "grid"): _values(v, f"grid.{k}") for k, v in _check_mapping(raw.get("grid"), "grid").items()}
    zipped = {_check_key(k, "zip"): _values(v, f"zip.{k}") for k, v in _check_mapping(raw.get("zip"), "zip").items()}
    if len({len(v) for v in zipped.values()}) > 1:
        raise _fail("zip", f"lists must have equal lengths, got { ({k: len(v) for k, v in zipped.items()}) }")
    for key in set(grid) & set(zipped):
        raise _fail("zip", f"{key} is also a grid axis; vary each field in one place")
    for key in (*grid, *zipped):
        if key == "train.seed":
            raise _fail("grid", "train.seed: give seeds under 'seeds', not as an axis")
    ensemble = raw.get("ensemble", True)
    if not isinstance(ensemble, bool):
        raise _fail("ensemble", f"must be true or false, got {ensemble!r}")
    resources = _check_mapping(raw.get("resources"), "resources")
    for key in resources:
        if key not in ("cpus", "gpus"):
            raise _fail(f"resources.{key}", "unknown key; allowed: cpus, gpus")
    cpus = _number(resources.get("cpus", 1), "resources.cpus", low=0.0, integer=False)
    gpus = _number(resources.get("gpus", 0), "resources.gpus", low=0.0, integer=False)
    if cpus <= 0:
        raise _fail("resources.cpus", f"must be a number > 0, got {cpus!r}")
    max_failures = _number(raw.get("max_failures", 0), "max_failures", low=0, integer=True)
    source = json.loads(json.dumps(raw, default=str))
    return SweepSpec(
        spec_name,
        base,
        grid,
        zipped,
        _seeds(raw.get("seeds")),
        ensemble,
        float(cpus),
        float(gpus),
        max_failures,
        source,
    )


def _loader() -> Any:
    """PyYAML's SafeLoader, except that exponent floats without a dot (1e-3, 5E4) are numbers, as in YAML 1.2 and
    JSON, not strings."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    number = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", number, list("-+0123456789"))
    return Loader


def load_spec(path: str | Path) -> SweepSpec:
    """Read and parse a YAML (or JSON) spec file; SpecError naming the file for unreadable or invalid YAML."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"sweep: spec file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"sweep: cannot read spec file {str(path)!r} ({exc})") from None
    try:
        raw = yaml.load(text, Loader=_loader())  # a SafeLoader that also reads 1e-3 as a number
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise SpecError(f"sweep: {str(path)!r} is not valid YAML{line}") from None
    return parse_spec(raw, name=path.stem, root=path.parent)


def _label(value: Any) -> str:
    """A value as a piece of a directory name: numbers as written, lists and long values cut to 24 characters
    plus a short digest (a directory name has at most 255 bytes)."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    text = re.sub(r"[^A-Za-z0-9_.+-]", "_", text)
    if len(text) > 24:
        text = text[:16] + "-" + hashlib.sha256(text.encode()).hexdigest()[:7]
    return text


def _cells(spec: SweepSpec) -> list[dict[str, Any]]:
    grid = [dict(zip(spec.grid, combo)) for combo in itertools.product(*spec.grid.values())] or [{}]
    n_zip = len(next(iter(spec.zip.values()))) if spec.zip else 1
    zipped = [{k: v[i] for k, v in spec.zip.items()} for i in range(n_zip)]
    return [{**g, **z} for g in grid for z in zipped]


def _short_names(keys: list[str]) -> dict[str, str]:
    """model.layers → layers, unless two axes share the field name (then the dotted key with '-')."""
    fields = [k.split(".")[1] for k in keys]
    return {k: (f if fields.count(f) == 1 else k.replace(".", "-")) for k, f in zip(keys, fields)}


def expand(spec: SweepSpec) -> tuple[list[Trial], list[Unit]]:
    """Every trial and unit of `spec`, each config built and validated (module docstring)."""
    short = _short_names(spec.axes)
    trials: list[Trial] = []
    units: list[Unit] = []
    seen: dict[str, str] = {}
    for i, cell in enumerate(_cells(spec)):
        label = "_".join(f"{short[k]}={_label(v)}" for k, v in cell.items()) or "base"
        cell_name = f"c{i:03d}-{label}"
        where = f"cell {cell_name} ({', '.join(f'{k}={v!r}' for k, v in cell.items()) or 'the base'})"
        try:
            config = apply_overrides(spec.base, cell)
            check_sizes(config)
        except UserError as exc:
            raise SpecError(f"sweep: {where}: {exc}") from None
        key = json.dumps({**config_to_dict(config), "name": None}, sort_keys=True)
        if key in seen:
            raise SpecError(f"sweep: {where} is the same experiment as {seen[key]}; every cell must differ")
        seen[key] = cell_name
        cell_trials = []
        for seed in spec.seeds:
            single = dataclasses.replace(config.replace(train={"seed": seed}), name=f"{cell_name}-seed{seed}")
            cell_trials.append((seed, single))
        if spec.ensemble and len(spec.seeds) > 1:
            try:
                group = dataclasses.replace(config, name=cell_name).replace(ensemble={"seeds": spec.seeds})
            except UserError as exc:
                raise SpecError(f"sweep: {where}: {exc}") from None
            units.append(Unit(cell_name, group, tuple(c.name for _, c in cell_trials)))
            for e, (seed, single) in enumerate(cell_trials):
                trials.append(Trial(single.name, cell_name, cell, seed, single, cell_name, group.member_label(e)))
        else:
            for seed, single in cell_trials:
                units.append(Unit(single.name, single, (single.name,)))
                trials.append(Trial(single.name, cell_name, cell, seed, single, single.name, None))
    return trials, units
