"""`iclab` command line, generated from the config dataclasses by tyro.

    iclab train [--preset NAME] [--config PATH] [--out DIR] [--force|--resume] [--task.d 10 --train.steps 500 …]
    iclab compare RUN [--against gd|gd++|ols|ridge:LAMBDA] [--json PATH]
    iclab reproduce PAPER [its options] [--device cpu|cuda] [--scale smoke|paper] [--seed S] [--json PATH] [--out DIR]
          PAPER: von-oswald, he, garg, mahankali-zfb, ahn, fu, akyurek, raventos (`iclab reproduce PAPER --help`)
    iclab reproduce all [--scale smoke] [--out DIR]   (every reproduction, resumable, then iclab report)
    iclab eval [--task linear --d 20 --n-points 41 …] [--learners ols,ridge:0.25,gd:1,knn:3,RUN_DIR]
               [--shifts none,skewed] [--metric nmse] [--json PATH] [--out DIR]
    iclab learners
    iclab analyze RUN [--what implicit,probes,weights,alignment] [--n-prompts 4000] [--out DIR]
    iclab bench [--device cpu|cuda] [--repeats 10] [--threads 1] [--json PATH]
    iclab presets
    iclab sweep SPEC.yaml [--executor local|ray] [--out DIR] [--workers N] [--address ADDR] [--force]
    iclab sweep collect DIR [--x AXIS] [--hue AXIS] [--metric eval_half_mse]
    iclab sweep status DIR
    iclab report DIR [--out FILE]

Every user error (bad value, unknown field or option, existing output; iclab.errors.UserError) is one line on
stderr and exit code 2. Anything else is a bug: its traceback is saved to RUN/logs/error-<UTC time>.log (the run or
output directory of the command, once it exists) or else runs/errors/, one line on stderr says where, exit code 1.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime
import io
import json
import math
import os
import platform
import re
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, Literal, TypeVar, cast

import tyro

from iclab.config import (
    ExperimentConfig,
    TaskConfig,
    change_family,
    config_to_dict,
    load_config,
    task_config,
)
from iclab.errors import UsageError, UserError
from iclab.experiments import PAPERS
from iclab.runs import RunDir, atomic_write_bytes

__all__ = ["entrypoint", "main"]

COMMANDS = ("train", "compare", "reproduce", "eval", "analyze", "learners", "bench", "presets", "sweep", "report")


# Where a bug's traceback goes: (directory, a file that must exist in it to make it ours) set by a command once it
# knows its run / output directory; the log is written to DIRECTORY/logs/ only if that file exists by then, so a
# failed command never leaves a directory that a rerun would refuse as "not an iclab run".
_ERROR_DIR: contextvars.ContextVar[tuple[Path, str] | None] = contextvars.ContextVar("_ERROR_DIR", default=None)


def _log_errors_under(path: Path, marker: str) -> None:
    """A bug from here on logs its traceback to PATH/logs/ (if PATH/MARKER exists when it happens)."""
    _ERROR_DIR.set((Path(path), marker))


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_RULE = re.compile(r"[│|]?\s*[─-]{3,}\s*[│|]?")


def _one_line(box: str) -> str:
    """Condense tyro's boxed error message to its first paragraph on one line.

    tyro draws a UTF-8 box (title in the top border) when stdout is UTF-8, else an ASCII one (title line, rule,
    content), and adds colours on a terminal; paragraphs are separated by horizontal rules.
    """
    utf8 = "╭" in box
    paragraphs: list[list[str]] = [[]]
    for raw in _ANSI.sub("", box).splitlines():
        line = raw.strip()
        if line.startswith(("╭", "╰")):  # UTF-8 top border (with the title) and bottom border
            continue
        if _RULE.fullmatch(line):
            paragraphs.append([])
            continue
        text = line.strip("│").strip()
        if text:
            paragraphs[-1].append(text)
    paragraphs = [p for p in paragraphs if p]
    if not utf8 and len(paragraphs) > 1:  # ASCII box: the title is a paragraph of its own
        paragraphs = paragraphs[1:]
    message = " ".join(paragraphs[0]) if paragraphs else "invalid arguments"
    # "Error parsing task: task.d: must be …" → keep our own field-naming message.
    return re.sub(r"^Error parsing [\w.\-]+: (?=[\w.]+: )", "", message)


def _tyro(cls, args: list[str], *, prog: str, default=None, unknown: bool = False):
    """tyro.cli with errors turned into UsageError (one line); help goes to stdout as usual."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            if unknown:  # two calls: tyro's overloads type the result by a literal return_unknown_args
                return tyro.cli(cls, args=args, prog=prog, default=default, return_unknown_args=True)
            return tyro.cli(cls, args=args, prog=prog, default=default)
    except SystemExit as exc:
        if exc.code in (0, None):
            sys.stdout.write(err.getvalue())
            raise
        raise UsageError(_one_line(err.getvalue())) from None


@dataclass(frozen=True)
class TrainOptions:
    """Options of `iclab train`; every ExperimentConfig field is also an option (--task.d, --train.lr, …)."""

    preset: str | None = None
    """start from a named preset (see `iclab presets`)"""
    config: Path | None = None
    """start from a JSON config (an ExperimentConfig, or a run's config.json)"""
    out: Path | None = None
    """run directory (default runs/<name>)"""
    force: bool = False
    """overwrite an existing run directory"""
    resume: bool = False
    """continue an existing run from its latest checkpoint"""


def _cmd_train(args: list[str]) -> int:
    from iclab.experiments.compare_run import draw_training_curve
    from iclab.experiments.presets import preset
    from iclab.training import train
    from iclab.training.distributed import DataParallel
    from iclab.training.trainer import check_interventions, check_sizes, resolve_device

    help_asked = "-h" in args or "--help" in args
    opts, rest = _tyro(TrainOptions, [a for a in args if a not in ("-h", "--help")], prog="iclab train", unknown=True)
    if opts.preset is not None and opts.config is not None:
        raise UsageError("preset: give either --preset or --config, not both")
    base = preset(opts.preset) if opts.preset else load_config(opts.config) if opts.config else ExperimentConfig()
    rest, families = _pop_family_names(rest, ("task", "model"))
    base = base.replace(**{section: change_family(getattr(base, section), name) for section, name in families.items()})
    if help_asked:  # the run options, the families, then every field of the chosen ones (--task.d, …)
        with contextlib.suppress(SystemExit):
            _tyro(TrainOptions, ["--help"], prog="iclab train")
        print(_families_help(base))
        with contextlib.suppress(SystemExit):
            _tyro(_experiment_type(base), ["--help"], prog="iclab train", default=base)
        return 0
    _check_family_fields(rest, base)
    cfg = _tyro(_experiment_type(base), rest, prog="iclab train", default=base)
    resolve_device(cfg.train.device)  # e.g. cuda without a GPU: fail before creating the run directory
    check_sizes(cfg)  # absurd sizes: one line, before anything is allocated or written
    check_interventions(cfg)  # hook names and heads exist in this model: before the run directory is made
    out = opts.out or Path("runs") / cfg.name
    dp = DataParallel.from_env(resolve_device(cfg.train.device))  # under torchrun: one of several processes
    if dp is None or dp.rank == 0:  # the one process that creates, locks and writes the run
        run = RunDir.create(out, config_to_dict(cfg), force=opts.force, resume=opts.resume)
    if dp is not None:
        dp.barrier()
        if dp.rank > 0:
            run = RunDir.open(out)  # read-only here: the checkpoint to resume from
    _log_errors_under(run.path, "config.json")
    result = train(cfg, run, resume=opts.resume)
    if dp is not None and dp.rank > 0:
        return 0
    draw_training_curve(run.path)
    if cfg.label_vocab is None:
        held_out = f"held-out ½·MSE {result.final_eval_half_mse:.5g}"
    else:  # class labels: the loss and what each accuracy measures
        held_out = ", ".join(f"{k} {v:.4g}" for k, v in result.final_eval.items() if k.endswith("accuracy"))
        held_out = f"held-out cross-entropy {result.final_eval.get('eval_cross_entropy', math.nan):.4g}, {held_out}"
    print(f"trained {cfg.name}: {held_out} after {result.steps} steps ({result.wall_time_s:.1f} s); run: {run.path}")
    for e, step in result.diverged.items():
        print(f"member {cfg.member_label(e)} diverged at step {step} and was stopped; the others went on")
    return 0


def _pop_family_names(args: list[str], sections: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """Take ``--<section>.name NAME`` (or ``=NAME``) out of args: the family decides which fields the rest may set.
    Returns the other args and {section: NAME}; a missing or unknown NAME is a one-line error."""
    from iclab.models import MODELS
    from iclab.registry import Registry
    from iclab.tasks import TASKS

    registries: dict[str, Registry[Any, Any]] = {"task": TASKS, "model": MODELS}
    names: dict[str, str] = {}
    out: list[str] = []
    i = 0
    while i < len(args):
        key, eq, value = args[i].partition("=")
        section = next((s for s in sections if key in (f"--{s}.name", f"--{s}")), None)
        if section is None:
            out.append(args[i])
            i += 1
            continue
        if not eq:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise UsageError(
                    f"{section}.name: expected a {section} family: {', '.join(registries[section].names())}"
                )
            value = args[i + 1]
            i += 1
        registries[section].config_class(value)  # ConfigError listing the families
        names[section] = value
        i += 1
    return out, names


def _check_family_fields(args: list[str], cfg: ExperimentConfig) -> None:
    """A --task.FIELD / --model.FIELD that the chosen family lacks is a one-line error naming the family and its
    fields (tyro would only say "unrecognized option")."""
    for arg in args:
        section, dot, name = arg.partition("=")[0].removeprefix("--").partition(".")
        if not dot or section not in ("task", "model") or name.startswith("no-"):
            continue
        family = getattr(cfg, section)
        fields = [f.name for f in dataclasses.fields(family)]
        if name.replace("-", "_") not in fields:
            raise UsageError(
                f"{section}.{name.replace('-', '_')}: not a field of {section} {family.name!r} "
                f"(--{section}.name chooses another family); its fields: {', '.join(fields)}"
            )


def _experiment_type(cfg: ExperimentConfig) -> Any:
    """ExperimentConfig specialised to cfg's task and model families, so tyro shows and parses their fields."""
    return ExperimentConfig[type(cfg.task), type(cfg.model)]  # type: ignore[misc]


def _families_help(cfg: ExperimentConfig) -> str:
    from iclab.models import MODELS
    from iclab.tasks import TASKS

    return (
        f"\nfamilies: --task.name {{{','.join(TASKS.names())}}} (now {cfg.task.name})\n"
        f"          --model.name {{{','.join(MODELS.names())}}} (now {cfg.model.name})\n"
        "The fields below are those of the chosen families; give --task.name / --model.name first to see another's.\n"
    )


@dataclass(frozen=True)
class CompareOptions:
    """Compare a trained run with a reference algorithm on its held-out prompts."""

    run: tyro.conf.Positional[Path]
    """run directory"""
    against: str | None = None
    """reference: gd (K tuned steps; the default), gd++ (K tuned steps), ols, ridge:LAMBDA; a class-label run:
    comma-separated induction, induction:centroid, lookup, chance (default all)"""
    json: Path | None = None
    """also write the metrics as JSON here"""


def _cmd_compare(args: list[str]) -> int:
    from iclab.experiments.compare_run import compare_run

    opts = _tyro(CompareOptions, args, prog="iclab compare")
    _log_errors_under(opts.run, "config.json")
    summary, table = compare_run(opts.run, opts.against)
    print(table)
    if opts.json is not None:
        atomic_write_bytes(opts.json, json.dumps(summary, indent=2).encode())
    return 0


@dataclass(frozen=True)
class ReproduceOptions:
    """Reproduce a paper's headline result: prints the table and claims, writes figures and a report. A paper's own
    options (e.g. von-oswald's --layers) follow its name; `iclab reproduce PAPER --help` lists them."""

    paper: tyro.conf.Positional[
        Annotated[
            Literal[tuple(PAPERS)],  # type: ignore[valid-type]  # the registry's names, so they cannot drift
            tyro.conf.arg(help="which paper: " + "; ".join(f"{k} — {r.summary}" for k, r in PAPERS.items())),
        ]
    ]
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    scale: Literal["smoke", "paper"] = "smoke"
    """smoke: minutes on a laptop CPU; paper: the paper's training budgets"""
    json: Path | None = None
    """write {"name", "config", "metrics", "claims"} here"""
    out: Path | None = None
    """output directory (default runs/reproduce-<paper>-<scale>, von-oswald: …-<layers>-<scale>)"""
    force: bool = False
    """overwrite an existing output directory"""
    resume: bool = False
    """resume the trained runs of an interrupted reproduction"""
    seed: int = 0
    progress: bool = True


@dataclass(frozen=True)
class ReproduceAllOptions:
    """Run every registered reproduction (its default options), resumably, and end with `iclab report`."""

    device: Literal["cpu", "cuda", "auto"] = "cpu"
    scale: Literal["smoke", "paper"] = "smoke"
    out: Path | None = None
    """where every reproduction goes (default runs/reproduce-all-<scale>)"""
    seed: int = 0
    progress: bool = True


def _cmd_reproduce_all(args: list[str]) -> int:
    from iclab.experiments import reproduce_all

    opts = _tyro(ReproduceAllOptions, args, prog="iclab reproduce all")
    summary = reproduce_all(scale=opts.scale, device=opts.device, out=opts.out, seed=opts.seed, progress=opts.progress)
    counts = summary["counts"]
    print(f"{counts['holding']}/{counts['claims']} claims hold; report: {summary['report']}")
    if summary["failed"]:
        names = ", ".join(summary["failed"])
        print(f"error: {len(summary['failed'])} reproduction(s) failed: {names}", file=sys.stderr)
        return 1
    return 0


def _cmd_reproduce(args: list[str]) -> int:
    from iclab.experiments import reproduce, reproduction

    if args and args[0] == "all":
        return _cmd_reproduce_all(args[1:])
    from iclab.experiments.common import MARKER
    from iclab.report import Claim, claims_table

    help_asked = "-h" in args or "--help" in args
    given = [a for a in args if a not in ("-h", "--help")]
    if help_asked and not [a for a in given if not a.startswith("-")]:
        _tyro(ReproduceOptions, ["--help"], prog="iclab reproduce")
    opts, rest = _tyro(ReproduceOptions, given, prog="iclab reproduce", unknown=True)
    repro = reproduction(opts.paper)
    prog = f"iclab reproduce {opts.paper}"
    if help_asked:
        with contextlib.suppress(SystemExit):
            _tyro(ReproduceOptions, ["--help"], prog="iclab reproduce")
        if dataclasses.fields(repro.Options):
            print(f"\nOptions of {opts.paper}:")
            with contextlib.suppress(SystemExit):
                _tyro(repro.Options, ["--help"], prog=prog)
        return 0
    if rest and not dataclasses.fields(repro.Options):
        raise UsageError(f"{rest[0].lstrip('-').split('=')[0]}: `{prog}` has no options of its own")
    own = _tyro(repro.Options, rest, prog=prog)
    options = dataclasses.asdict(own)
    out = opts.out or Path("runs") / repro.out_name(opts.scale, own)
    _log_errors_under(out, MARKER)
    results = reproduce(
        opts.paper,
        device=opts.device,
        scale=opts.scale,
        out=out,
        force=opts.force,
        resume=opts.resume,
        seed=opts.seed,
        progress=opts.progress,
        **options,
    )
    claims = [Claim(**c) for c in results["claims"]]
    print(results["table"])
    print()
    print(claims_table(claims))
    print(f"\n{sum(c.holds for c in claims)}/{len(claims)} claims hold; report: {out / 'report.html'}")
    if opts.json is not None:
        payload = {k: results[k] for k in ("name", "config", "metrics", "claims")}
        atomic_write_bytes(opts.json, json.dumps(payload, indent=2).encode())
    return 0


def _garg_task() -> Any:
    # Garg et al.'s linear setting: x, w ~ N(0, I_20), 41 points per prompt.
    return task_config("linear", d=20, n_points=41, x_dist="gaussian", x_scale=1.0)


TaskT = TypeVar("TaskT", bound=TaskConfig)


@dataclass(frozen=True)
class EvalOptions(Generic[TaskT]):
    """Error vs number of in-context examples for learners (algorithms and trained runs) on the same prompts."""

    learners: str | None = None
    """comma-separated learner names (see `iclab learners`) and run directories (default
    ols,ridge:0.1,averaging,knn:3,gd:1,newton:5; class-label tasks: induction,lookup,chance)"""
    task: TaskT = dataclasses.field(default_factory=_garg_task)
    """the task; its fields are also accepted without the prefix (--d 20, --n-points 41, --task linear)"""
    metric: str | None = None
    """half_mse, mse, nmse (= mse/d), error_rate (classification; argmax for vector targets), each also _noiseless
    (default nmse); class-label tasks (icl_classification): accuracy (default) or cross_entropy, per held-out split"""
    shifts: str = "none"
    """comma-separated shifts (iclab.shifts): none, scale_x:2, skewed, orthant, orthogonal_query, length:60, …"""
    n_prompts: int = 1280
    seed: int = 0
    n_boot: int = 1000
    """bootstrap replicates for the confidence bands"""
    dtype: Literal["float32", "float64"] = "float32"
    json: Path | None = None
    """also write the results (curves with bands) as JSON here"""
    out: Path | None = None
    """directory for figures and results.json (default runs/eval-<task>-d<d>-<metric>)"""
    force: bool = False
    """overwrite an existing output directory"""
    intervene: tuple[str, ...] = ()
    """activation edits applied to every trained run among the learners, KIND:HOOK[@HEAD][=TARGET[:STRENGTH]]
    (iclab.models.interventions), e.g. zero:blocks.1.attn.hook_z@0"""
    patch_from: Path | None = None
    """a run whose activations the patch interventions take, on the same inputs (default: the previous prompt's)"""


def _flat_task_args(args: list[str], task: TaskConfig) -> list[str]:
    """Accept the task family's fields without their prefix: --d 20 → --task.d 20."""
    fields = {f.name.replace("_", "-") for f in dataclasses.fields(task)} | {f.name for f in dataclasses.fields(task)}
    own = {f.name.replace("_", "-") for f in dataclasses.fields(EvalOptions)} - {"task"}
    out = []
    for arg in args:
        key, eq, value = arg.partition("=")
        if key.startswith("--") and key[2:] in fields and key[2:] not in own:
            out.append(f"--task.{key[2:]}{eq}{value}")
        else:
            out.append(arg)
    return out


def _cmd_eval(args: list[str]) -> int:
    import torch

    from iclab.experiments.eval_run import default_learners, default_metric, run_eval
    from iclab.tasks import TASKS

    args, families = _pop_family_names(args, ("task",))
    family = families.get("task", "linear")
    if family in TASKS.names() and TASKS.config_class(family)().label_vocab is not None:
        task = task_config(family)  # a label task starts from its own defaults (Reddy's), not Garg's 41 points
    else:
        task = change_family(_garg_task(), family)
    default = EvalOptions(task=task)
    options_class = cast(Any, EvalOptions)[type(task)]  # specialised at run time to the task's config class
    opts = _tyro(options_class, _flat_task_args(args, task), prog="iclab eval", default=default)
    for name in ("n_prompts", "n_boot"):
        if getattr(opts, name) < 1:
            raise UsageError(f"{name}: must be an integer >= 1, got {getattr(opts, name)}")
    metric = opts.metric or default_metric(opts.task)
    out = opts.out or Path("runs") / f"eval-{opts.task.name}-d{opts.task.d}-{metric}"
    if out.exists() and any(out.iterdir()) and not opts.force:
        raise UsageError(f"out: {str(out)!r} exists; pass --force to overwrite it or choose another --out")
    _log_errors_under(out, ".")  # out is eval's once it exists (empty or --force, checked above)
    results, text = run_eval(
        opts.task,
        opts.learners or default_learners(opts.task),
        metric=metric,
        shifts=opts.shifts,
        n_prompts=opts.n_prompts,
        seed=opts.seed,
        n_boot=opts.n_boot,
        dtype=getattr(torch, opts.dtype),
        out=out,
        intervene=tuple(opts.intervene),
        patch_from=opts.patch_from,
    )
    print(text)
    if opts.json is not None:
        atomic_write_bytes(opts.json, json.dumps(results, indent=2).encode())
    return 0


def _cmd_learners(_args: list[str]) -> int:
    from iclab.algorithms.registry import learner_names

    specs = learner_names().values()
    width = max(len(spec.usage) for spec in specs)
    for spec in specs:
        print(f"{spec.usage:{width}s}  {spec.help}")
    return 0


@dataclass(frozen=True)
class AnalyzeOptions:
    """Mechanistic analyses of a trained run; each writes a figure and a JSON summary (RUN/analysis/)."""

    run: tyro.conf.Positional[Path]
    """the run directory"""
    what: str | None = None
    """comma-separated analyses: implicit, probes, weights, alignment (GD and Newton per layer); default
    implicit,probes,weights; class-label runs: induction (the query's attention on its class, the default)"""
    n_prompts: int = 4000
    """prompts drawn from the run's task"""
    seed: int = 1
    out: Path | None = None
    """output directory (default RUN/analysis)"""


def _cmd_analyze(args: list[str]) -> int:
    from iclab.experiments.analyze_run import analyze_run

    opts = _tyro(AnalyzeOptions, args, prog="iclab analyze")
    if opts.n_prompts < 20:
        raise UsageError(
            f"n_prompts: must be an integer >= 20 (probes split it in train/validation/test), got {opts.n_prompts}"
        )
    what = None if opts.what is None else [w.strip() for w in opts.what.split(",") if w.strip()]
    _log_errors_under(opts.run, "config.json")
    _, text = analyze_run(opts.run, what, n_prompts=opts.n_prompts, seed=opts.seed, out=opts.out)
    print(text)
    return 0


@dataclass(frozen=True)
class BenchOptions:
    """Time fast paths against their naive references in one run; prints the ratios."""

    device: Literal["cpu", "cuda", "auto"] = "cpu"
    repeats: int = 10
    """timed repetitions of each path (median reported)"""
    batch: int = 2048
    """prompts per training step"""
    eval_prompts: int = 1280
    """prompts of the evaluation-protocol case (Garg's 1 280)"""
    threads: int = 1
    """CPU threads for torch (1: steady ratios on a shared machine; 0: torch's default)"""
    json: Path | None = None
    """also write the results as JSON here"""


def _cmd_bench(args: list[str]) -> int:
    from iclab.bench import machine, run_benchmarks, target_lines
    from iclab.report import format_table
    from iclab.training.trainer import resolve_device

    opts = _tyro(BenchOptions, args, prog="iclab bench")
    for name in ("repeats", "batch", "eval_prompts"):
        if getattr(opts, name) < 1:
            raise UsageError(f"{name}: must be an integer >= 1, got {getattr(opts, name)}")
    if opts.threads < 0:
        raise UsageError(f"threads: must be an integer >= 0, got {opts.threads}")
    if opts.threads:
        import torch

        torch.set_num_threads(opts.threads)
    results = run_benchmarks(resolve_device(opts.device), opts.repeats, opts.batch, opts.eval_prompts)
    rows = [
        {"case": r.case, "fast ms": r.fast_ms, "naive ms": r.naive_ms, "speed-up": f"{r.speedup:.1f}x"} for r in results
    ]
    print(format_table(rows))
    for line in target_lines(results) if resolve_device(opts.device).type == "cpu" else []:
        print(line)
    info = machine(resolve_device(opts.device))
    print(f"machine: {info['cpu']} ({info['cpu_cores']} cores), {info['torch_threads']} torch threads, "
          f"torch {info['torch']}" + (f", {info['gpu']}" if "gpu" in info else ""))  # fmt: skip
    if opts.json is not None:
        cases = [{"case": r.case, "fast_ms": r.fast_ms, "naive_ms": r.naive_ms, "speedup": r.speedup} for r in results]
        atomic_write_bytes(opts.json, json.dumps({"machine": info, "cases": cases}, indent=2).encode())
    return 0


def _cmd_presets(_args: list[str]) -> int:
    from iclab.experiments.presets import PRESETS

    for name, cfg in PRESETS.items():
        t, m = cfg.task, cfg.model
        print(
            f"{name:20s} {m.name:13s} {t.name:8s} d={t.d} n={t.n_points} x~{t.x_dist}({t.x_scale:g}) "
            f"noise={t.noise_var:g} layers={m.layers}{' tied' if getattr(m, 'tied', False) else ''} heads={m.heads} "
            f"steps={cfg.train.steps}"
        )
    return 0


@dataclass(frozen=True)
class SweepOptions:
    """Run a sweep spec (YAML): every cell of its grid for every seed; rerunning continues it (docs/sweeps.md).
    Also `iclab sweep status DIR` (where it stands) and `iclab sweep collect DIR` (table, summary, figure)."""

    spec: tyro.conf.Positional[Path]
    """the sweep spec (examples/*.yaml)"""
    executor: Literal["local", "ray"] = "local"
    """local: this machine (ensembles, --workers processes); ray: one Ray Tune trial per unit"""
    out: Path | None = None
    """sweep directory (default runs/sweeps/<name>)"""
    force: bool = False
    """replace another sweep found in --out"""
    workers: int = 1
    """local executor: units trained at once, each in its own process"""
    address: str | None = None
    """ray executor: join this running Ray cluster instead of starting a local runtime"""
    num_cpus: int | None = None
    """ray executor: CPUs of the local Ray runtime (default: all cores)"""


@dataclass(frozen=True)
class SweepCollectOptions:
    """Gather a sweep's trials into DIR/results.parquet, print a summary over seeds and draw the figure."""

    dir: tyro.conf.Positional[Path]
    """the sweep directory"""
    x: str | None = None
    """the axis on the x-axis (default: the first axis)"""
    hue: str | None = None
    """one line per value of this axis (default: the second axis, if any)"""
    metric: str = "eval_half_mse"
    """the final metric plotted and summarised"""


@dataclass(frozen=True)
class SweepStatusOptions:
    """Say where a sweep stands: units pending, running (or interrupted), done, diverged, failed."""

    dir: tyro.conf.Positional[Path]
    """the sweep directory"""


def _cmd_sweep(args: list[str]) -> int:
    from iclab.sweeps import collect, plot_sweep, print_status, run_sweep, summarise, sweep_status
    from iclab.sweeps.store import SweepDir

    if args and args[0] == "status":
        status_opts = _tyro(SweepStatusOptions, args[1:], prog="iclab sweep status")
        print_status(sweep_status(status_opts.dir))
        return 0
    if args and args[0] == "collect":
        opts_c = _tyro(SweepCollectOptions, args[1:], prog="iclab sweep collect")
        axes = SweepDir(opts_c.dir).record()["axes"]
        table = collect(opts_c.dir)
        x = opts_c.x or (axes[0] if axes else None)
        hue = opts_c.hue if opts_c.hue is not None else (axes[1] if len(axes) > 1 and axes[1] != x else None)
        print(summarise(table, axes, opts_c.metric))
        states = table["state"].value_counts().to_dict()
        print("trials: " + ", ".join(f"{n} {state}" for state, n in states.items()))
        print(f"table: {Path(opts_c.dir) / 'results.parquet'}")
        if x is not None:
            name = f"{opts_c.metric}_vs_{x}" + (f"_by_{hue}" if hue else "")
            figure = plot_sweep(table, x, hue, Path(opts_c.dir) / "figures" / f"{name}.png", metric=opts_c.metric)
            print(f"figure: {figure}")
        return 0
    opts = _tyro(SweepOptions, args, prog="iclab sweep")
    status = run_sweep(
        opts.spec,
        out=opts.out,
        executor=opts.executor,
        force=opts.force,
        workers=opts.workers,
        address=opts.address,
        num_cpus=opts.num_cpus,
    )
    print_status(status)
    failed = status["counts"].get("failed", 0)
    if failed:
        print(f"error: {failed} unit(s) failed (errors above, tracebacks under logs/); rerun to retry them",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


@dataclass(frozen=True)
class ReportOptions:
    """Gather every reproduction and sweep under DIR into one self-contained HTML page."""

    dir: tyro.conf.Positional[Path]
    """where to look (recursively) for reproductions (results.json) and sweeps (sweep.json)"""
    out: Path | None = None
    """the page to write (default DIR/iclab-report.html)"""


def _cmd_report(args: list[str]) -> int:
    from iclab.report_all import report_all

    opts = _tyro(ReportOptions, args, prog="iclab report")
    path, counts = report_all(opts.dir, opts.out)
    skipped = f"; {counts['skipped']} damaged one(s) skipped (listed in the page)" if counts["skipped"] else ""
    print(
        f"{counts['reproductions']} reproduction(s), {counts['sweeps']} sweep(s); "
        f"{counts['holding']}/{counts['claims']} claims hold{skipped}; report: {path}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (2 for user errors)."""
    from iclab.training import TrainingDiverged

    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    handlers = {
        "train": _cmd_train,
        "compare": _cmd_compare,
        "reproduce": _cmd_reproduce,
        "eval": _cmd_eval,
        "analyze": _cmd_analyze,
        "learners": _cmd_learners,
        "bench": _cmd_bench,
        "presets": _cmd_presets,
        "sweep": _cmd_sweep,
        "report": _cmd_report,
    }
    token = _ERROR_DIR.set(None)
    try:
        if command not in handlers:
            raise UsageError(f"command: unknown value {command!r}; choose one of: {', '.join(COMMANDS)}")
        return handlers[command](rest)
    except SystemExit as exc:  # --help
        if exc.code in (0, None):
            return 0
        raise
    except UserError as exc:  # bad option or value, unknown name, missing / existing / mismatched run, …
        print(f"error: {_one_line_message(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # an output path that cannot be written (a file where a directory belongs, …)
        print(f"error: {exc.filename or 'path'}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: keep the traceback, say where in one line
        log = _save_traceback(exc, argv)
        where = f"traceback in {log}" if log is not None else "could not save the traceback (printed above)"
        what = _one_line_message(exc, limit=300)
        print(f"error: internal error in iclab {command} ({type(exc).__name__}: {what}); {where}", file=sys.stderr)
        return 1
    finally:
        _ERROR_DIR.reset(token)


def _one_line_message(exc: BaseException, *, limit: int | None = None) -> str:
    """The exception's message on one line (its lines joined, cut at `limit` characters); never raises."""
    try:
        text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    except Exception:  # a __str__ that fails
        text = ""
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text or type(exc).__name__


def _error_log_dirs() -> list[Path]:
    """Where to try to save a traceback, in order: the command's run / output directory, runs/errors, the temp dir."""
    dirs = []
    registered = _ERROR_DIR.get()
    if registered is not None:
        path, marker = registered
        with contextlib.suppress(OSError):
            if path.is_dir() and (path / marker).exists():
                dirs.append(path / "logs")
    dirs.append(Path("runs") / "errors")
    dirs.append(Path(tempfile.gettempdir()) / "iclab-errors")
    return dirs


def _save_traceback(exc: BaseException, argv: list[str]) -> Path | None:
    """Write exc's traceback (with the command line and versions) to a new log file; its path, or None if no
    directory would take it, in which case the traceback goes to stderr. Never raises."""
    try:
        now = datetime.datetime.now(datetime.UTC)
        header = [
            f"command: iclab {' '.join(argv)}",
            f"time: {now.isoformat(timespec='seconds')}",
            f"cwd: {os.getcwd()}",
            f"python {platform.python_version()} on {platform.platform()}",
        ]
        with contextlib.suppress(Exception):
            import torch

            header.append(f"torch {torch.__version__}")
        text = "\n".join(header) + "\n\n" + "".join(traceback.format_exception(exc))
    except Exception:  # the header failed (e.g. the working directory is gone): the traceback alone
        now = None
        try:
            text = "".join(traceback.format_exception(exc))
        except Exception:
            text = f"{type(exc).__name__} (its traceback could not be formatted)\n"
    stamp = now.strftime("%Y%m%dT%H%M%SZ") if now is not None else "unknown-time"
    for directory in _error_log_dirs():
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for n in range(100):
                path = directory / f"error-{stamp}{f'-{n}' if n else ''}.log"
                try:
                    with open(path, "x", encoding="utf-8") as f:
                        f.write(text)
                    return path
                except FileExistsError:
                    continue
        except Exception:  # unwritable, a file in the way, …: try the next place
            continue
    with contextlib.suppress(Exception):
        sys.stderr.write(text)
    return None


def entrypoint() -> None:
    sys.exit(main())
