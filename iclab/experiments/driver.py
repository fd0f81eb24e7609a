"""A reproduction is a declared object; one driver (`reproduce`) runs every one of them.

A paper's module defines a `Reproduction` subclass that declares

* ``name``, ``summary`` — the CLI name (``iclab reproduce <name>``) and a one-line description;
* ``scales`` — name → the paper's own scale record ("smoke": minutes on a laptop CPU, "paper": the paper's budget);
* ``Options`` — a frozen dataclass of paper-specific options, validated in ``__post_init__``; the CLI generates its
  flags from it (``iclab reproduce von-oswald --layers 3``);
* ``configs(scale, options)`` — every model to train, as ExperimentConfigs with distinct names;
* ``analyse(ctx)`` — what to measure on the trained runs: metrics (JSON), tables, figures, and data for the claims;
* ``claims(analysis, ctx)`` — the paper's findings checked against the measurements, in one place.

The driver owns everything else: choosing the scale and device, validating every config before the output
directory is touched, the directory itself (never overwritten without ``force``, resumable with ``resume``),
training each config as the run OUT/runs/<name> (configs of one shape as one ensemble run, each config its
member's run: iclab.experiments.grouping), the wall time of each phase, results.json and the report.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from iclab.config import ExperimentConfig, config_to_dict
from iclab.experiments.common import finish, pick_scale, prepare_out, train_run
from iclab.experiments.grouping import ensemble_config, group_configs, member_trained
from iclab.report import Claim
from iclab.runs import RunDir
from iclab.training import TrainResult
from iclab.training.trainer import resolve_device
from iclab.validation import ConfigError

__all__ = ["Analysis", "Context", "NoOptions", "Reproduction", "Trained", "reproduce"]


@dataclass(frozen=True)
class NoOptions:
    """A reproduction without options of its own."""


@dataclass(frozen=True)
class Trained:
    """One trained model of a reproduction: its config, the training result and its run directory."""

    config: ExperimentConfig
    result: TrainResult
    run: RunDir


@dataclass(frozen=True)
class Context:
    """What `analyse` and `claims` see: the trained runs by config name, the scale record and its name, the
    options, the output directory (figures go to OUT/figures) and the run settings."""

    trained: dict[str, Trained]
    scale: Any
    scale_name: str
    options: Any
    out: Path
    device: str
    seed: int

    @property
    def figures(self) -> Path:
        return self.out / "figures"


@dataclass
class Analysis:
    """What `analyse` returns. `metrics` go to results.json; `sections` are (heading, table) pairs of the report
    and the CLI's output; `data` holds whatever `claims` needs beyond the metrics (arrays, fitted objects)."""

    metrics: dict[str, Any]
    sections: list[tuple[str, str]]
    figures: list[Path]
    data: dict[str, Any] = field(default_factory=dict)


class Reproduction:
    """Base class of the declared reproductions (see the module docstring)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    scales: ClassVar[Mapping[str, Any]]
    Options: ClassVar[type] = NoOptions

    def title(self, ctx: Context) -> str:
        """The report's title."""
        return f"{self.summary} ({ctx.scale_name} scale)"

    def out_name(self, scale_name: str, options: Any) -> str:
        """The default output directory under runs/."""
        return f"reproduce-{self.name}-{scale_name}"

    def configs(self, scale: Any, options: Any) -> list[ExperimentConfig]:
        """Every model this reproduction trains (device, seed and progress are set by the driver)."""
        raise NotImplementedError

    def analyse(self, ctx: Context) -> Analysis:
        raise NotImplementedError

    def claims(self, analysis: Analysis, ctx: Context) -> list[Claim]:
        raise NotImplementedError


def make_options(repro: Reproduction, options: Mapping[str, Any]) -> Any:
    """repro.Options from keyword options; an unknown option is a one-line error naming the allowed ones."""
    names = [f.name for f in dataclasses.fields(repro.Options)]
    for key in options:
        if key not in names:
            allowed = ", ".join(names) if names else "none"
            raise ConfigError(f"{key}: not an option of `iclab reproduce {repro.name}`; its options: {allowed}")
    return repro.Options(**options)


def reproduce(
    repro: Reproduction,
    *,
    scale: str = "smoke",
    device: str = "cpu",
    out: Path | str | None = None,
    force: bool = False,
    resume: bool = False,
    seed: int = 0,
    progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Run `repro`: train its models under OUT/runs, analyse, check the claims, write results.json, figures and
    report.md/html under OUT. Returns {"name", "config", "metrics", "claims", "table"}.

    `options` are the reproduction's own (`repro.Options`). Every config is built and validated before OUT is
    touched; ``resume`` continues the runs of an interrupted reproduction from their checkpoints.
    """
    opts = make_options(repro, options)
    sc = pick_scale(repro.scales, scale, device)
    # `seed` offsets each config's own train.seed (0 unless a reproduction trains several seeds of one model)
    configs = [
        cfg.replace(train={"device": device, "seed": seed + cfg.train.seed, "progress": progress})
        for cfg in repro.configs(sc, opts)
    ]  # validated here
    names = [cfg.name for cfg in configs]
    if len(set(names)) != len(names):
        raise ValueError(f"{repro.name}: two configs share a run name: {names}")
    out = Path(out) if out is not None else Path("runs") / repro.out_name(scale, opts)
    prepare_out(out, force, resume)

    began = time.perf_counter()
    trained = {}
    for group in group_configs(configs):  # configs of one shape train as one ensemble (iclab.experiments.grouping)
        ensemble = ensemble_config(group)
        if ensemble is None:
            for cfg in group:
                result, run = train_run(cfg, out, resume)
                trained[cfg.name] = Trained(cfg, result, run)
            continue
        result, run = train_run(ensemble, out, resume)
        for e, cfg in enumerate(group):
            trained[cfg.name] = Trained(cfg, *member_trained(ensemble, e, result, run))
    trained = {name: trained[name] for name in names}  # in the order the reproduction declared them
    run_times: dict[str, float] = {}
    for t in trained.values():
        run_name = t.run.path.name if t.run.path.parent.name != "members" else t.run.path.parent.parent.name
        run_times[run_name] = t.result.wall_time_s
    trained_at = time.perf_counter()
    ctx = Context(trained, sc, scale, opts, out, device, seed)
    analysis = repro.analyse(ctx)
    claims = repro.claims(analysis, ctx)
    done = time.perf_counter()
    metrics = {
        **analysis.metrics,
        "wall_time_s": done - began,
        "phase_wall_time_s": {
            "train": trained_at - began,
            "analyse": done - trained_at,
            # one entry per training run: an ensemble group once, under its run's name (its members share it)
            "per_run_train": run_times,
        },
    }
    from iclab.bench import machine

    config = {
        "scale": scale,
        "device": device,
        "seed": seed,
        "machine": machine(resolve_device(device)),
        **dataclasses.asdict(opts),
        "runs": {name: config_to_dict(t.config) for name, t in trained.items()},
    }
    return finish(
        out,
        name=repro.name,
        title=repro.title(ctx),
        config=config,
        metrics=metrics,
        claims=claims,
        sections=analysis.sections,
        figures=analysis.figures,
    )
