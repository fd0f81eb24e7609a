"""`iclab eval`: error vs number of in-context examples for a list of learners (algorithms and trained runs) on the
same prompts, under the training distribution and any shifts; prints a table, draws the curves, writes JSON.

On a class-label task (`TaskConfig.label_vocab`, e.g. icl_classification) the question is another: accuracy (and
cross-entropy, for learners with logits) on each of the task's held-out splits (`Task.eval_sets`: eval, icl,
icl_permuted, iwl), one table, one bar chart and the JSON (iclab.evaluation_labels). Learners, runs and metrics
that do not fit the task's targets are refused in one line.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iclab import plotting
from iclab.algorithms.icl_classification import LEARNERS as LABEL_LEARNERS
from iclab.algorithms.registry import LearnerSpecError, make_learner, parse_spec, split_learner_list
from iclab.config import TaskConfig, config_from_dict, config_to_dict
from iclab.errors import SpecError
from iclab.evaluation import METRICS, curves_table, error_curves
from iclab.evaluation_labels import LABEL_METRICS, plot_split_scores, split_scores, split_table
from iclab.report import format_table
from iclab.runs import RunDir, atomic_write_bytes
from iclab.shifts import apply_shift, parse_shift
from iclab.tasks import Prompts, make_task

__all__ = ["default_learners", "default_metric", "eval_prompts", "resolve_learners", "run_eval"]


def _targets(k: int | None) -> str:
    return "scalar targets" if k is None else f"vector targets (k = {k})"


def _kind(labels: int | None) -> str:
    return "real targets" if labels is None else f"class labels (L = {labels})"


def default_learners(task_config: TaskConfig) -> str:
    """Garg's baselines for real targets; the induction head, the class-mean lookup and chance for class labels."""
    return (
        "ols,ridge:0.1,averaging,knn:3,gd:1,newton:5" if task_config.label_vocab is None else "induction,lookup,chance"
    )


def default_metric(task_config: TaskConfig) -> str:
    """nmse (Garg's) for real targets, accuracy for class labels."""
    return "nmse" if task_config.label_vocab is None else "accuracy"


def _check_metric(metric: str, task_config: TaskConfig) -> None:
    labels = task_config.label_vocab
    allowed = METRICS if labels is None else LABEL_METRICS
    if metric in allowed:
        return
    other = LABEL_METRICS if labels is None else METRICS
    if metric in other:
        what = "scores class labels" if labels is None else "measures real-valued predictions"
        raise SpecError(
            f"metric: {metric!r} {what}; task {task_config.name!r} has {_kind(labels)}: choose one of: "
            f"{', '.join(allowed)}"
        )
    raise SpecError(f"metric: unknown value {metric!r}; choose one of: {', '.join(allowed)}")


def _check_run(spec: str, config, task) -> None:
    """A run fits the task: its d, its kind of targets (real, vector, labels) and its L."""
    if config.task.d != task.d:
        raise LearnerSpecError(
            f"learners: run {spec!r} was trained with d = {config.task.d}, the task has d = {task.d}"
        )
    if config.target_dim != task.config.target_dim:
        raise LearnerSpecError(
            f"learners: run {spec!r} was trained on {_targets(config.target_dim)}, the task "
            f"{task.config.name!r} has {_targets(task.config.target_dim)}"
        )
    ran, has = config.label_vocab, task.config.label_vocab
    if ran != has:
        raise LearnerSpecError(
            f"learners: run {spec!r} was trained on {_kind(ran)}, the task {task.config.name!r} has {_kind(has)}"
        )


def _check_learner(spec: str, task) -> None:
    """A registry learner fits the task's targets: label learners for label tasks, the others for real ones."""
    name = parse_spec(spec)[0]
    labels = task.config.label_vocab
    if name in LABEL_LEARNERS and labels is None:
        raise LearnerSpecError(
            f"learners: {spec!r} predicts class labels; task {task.config.name!r} has real targets "
            "(see `iclab learners`)"
        )
    if name not in LABEL_LEARNERS and labels is not None:
        raise LearnerSpecError(
            f"learners: {spec!r} predicts real values; task {task.config.name!r} has {_kind(labels)}: choose "
            f"from {', '.join(LABEL_LEARNERS)} (induction:centroid, chance:L) or a run trained on class labels"
        )


def resolve_learners(
    specs: list[str], task, intervene: tuple[str, ...] = (), patch_from: Path | None = None
) -> dict[str, Any]:
    """Learner names (registry specs) and run directories (a path holding config.json) → name → learner. With
    `intervene` (iclab.models.interventions specs) every trained run is evaluated under those edits, named
    "<run> [<specs>]", its patches taking the activations of the run `patch_from` on the same inputs when given;
    SpecError if no learner is a trained run, a hook is not the run's, or patch_from is not a run."""
    from iclab.models.interventions import Intervened
    from iclab.training.trainer import load_model

    source = None
    if patch_from is not None:
        if not intervene:
            raise SpecError("patch_from: the source of patch interventions; give --intervene patch:HOOK[@HEAD]")
        if not (Path(patch_from) / "config.json").is_file():
            raise SpecError(f"patch_from: {str(patch_from)!r} is not a run directory (no config.json)")
        source_run = RunDir.open(patch_from)
        _check_run(str(patch_from), config_from_dict(source_run.config()), task)  # same d, targets, labels
        source = load_model(source_run).eval()
    learners: dict[str, Any] = {}
    for spec in specs:
        path = Path(spec)
        if (path / "config.json").is_file():
            run = RunDir.open(path)
            config = config_from_dict(run.config())
            _check_run(spec, config, task)
            model = load_model(run)
            name = path.name or spec
            if intervene:
                # stays on: the model lives for this evaluation
                Intervened(model, intervene, field="intervene", source=source)
                origin = "" if source is None else f" from {Path(str(patch_from)).name}"
                name = f"{name} [{'; '.join(intervene)}{origin}]"
            learners[name] = model
        else:
            _check_learner(spec, task)
            learners[spec] = make_learner(spec, task)
    if intervene and not any(isinstance(v, torch.nn.Module) for v in learners.values()):
        raise SpecError("intervene: edits trained runs' activations; give a run directory among --learners")
    return learners


def eval_prompts(task, n_prompts: int, seed: int, dtype: torch.dtype) -> Prompts:
    """n_prompts prompts of exactly task.config.n_points points (k = 0 … n_points − 1), drawn from `seed`."""
    prompts = task.sample(n_prompts, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    T = task.config.n_points
    cut = lambda t: None if t is None else t[:, :T]  # noqa: E731
    return replace(prompts, x=cut(prompts.x), y=cut(prompts.y), f=cut(prompts.f), n_ctx=T).to(dtype=dtype)


def _axis_limits(curves) -> dict:
    """Garg-style axes: linear, from 0 to 1.25× the error with no context (the zero predictor's error at k = 0,
    the same for every learner that predicts the prior mean), so estimators' blow-ups at small k are clipped."""
    start = max(float(c.mean[0]) for c in curves.values())
    if not (start > 0 and np.isfinite(start)):
        return {}
    return {"logy": False, "ylim": (0.0, 1.25 * start)}


def run_eval(
    task_config: TaskConfig,
    learners: str,
    *,
    metric: str | None = None,
    shifts: str = "none",
    n_prompts: int = 1280,
    seed: int = 0,
    n_boot: int = 1000,
    dtype: torch.dtype = torch.float32,
    out: Path | None = None,
    intervene: tuple[str, ...] = (),
    patch_from: Path | None = None,
) -> tuple[dict[str, Any], str]:
    """Returns (JSON-ready results, printable text). Figures go to out/ when given. `metric` defaults to
    `default_metric(task_config)`; a class-label task is evaluated per split (`run_label_eval`). `intervene`:
    activation edits applied to every trained run (`resolve_learners`)."""
    metric = default_metric(task_config) if metric is None else metric
    _check_metric(metric, task_config)
    if task_config.label_vocab is not None:
        return run_label_eval(
            task_config,
            learners,
            metric=metric,
            shifts=shifts,
            n_prompts=n_prompts,
            seed=seed,
            dtype=dtype,
            out=out,
            intervene=intervene,
            patch_from=patch_from,
        )
    task = make_task(task_config)
    shift_specs = split_learner_list(shifts)  # same comma grammar
    for s in shift_specs:
        parse_shift(s)
    resolved = resolve_learners(split_learner_list(learners), task, intervene, patch_from)
    prompts = eval_prompts(task, n_prompts, seed, dtype)
    results: dict[str, Any] = {"task": config_to_dict(task_config), "metric": metric, "n_prompts": n_prompts,
                               "seed": seed, "shifts": {}}  # fmt: skip
    text = []
    for spec in shift_specs:
        began = time.perf_counter()
        shifted = apply_shift(spec, prompts, task, generator=torch.Generator().manual_seed(seed + 1))
        curves = error_curves(
            resolved,
            shifted.prompts,
            metric=metric,
            x_query=shifted.x_query,
            target=shifted.query_target(metric),
            n_boot=n_boot,
            seed=seed,
        )
        seconds = time.perf_counter() - began
        results["shifts"][spec] = {"seconds": seconds, "curves": {n: c.to_dict() for n, c in curves.items()}}
        text.append(f"shift {spec}: {metric} vs number of in-context examples k (mean [95% bootstrap band])")
        text.append(format_table(curves_table(curves)))
        text.append(
            f"({len(curves)} learners × {len(prompts)} prompts × {prompts.x.shape[1]} prefixes in {seconds:.2f} s)"
        )
        if out is not None:
            fig = plotting.plot_curves(
                next(iter(curves.values())).k,
                {n: c.mean for n, c in curves.items()},
                out / "figures" / f"eval_{spec.replace(':', '_')}.png",
                xlabel="in-context examples k",
                ylabel=metric,
                title=f"{task_config.name}, d = {task.d}, shift: {spec}",
                bands={n: (c.lo, c.hi) for n, c in curves.items()},
                markers=False,
                **_axis_limits(curves),
            )
            text.append(f"figure: {fig}")
    if out is not None:
        atomic_write_bytes(out / "results.json", json.dumps(results, indent=2).encode())
    return results, "\n".join(text)


def _other_classes_note(task_config: TaskConfig, specs: list[str]) -> list[str]:
    """A line per run trained on other classes than the task's (n_classes, class_seed, …): its in-weights split
    then asks about classes it never saw."""
    lines = []
    # the fields that make the classes and their labels (how prompts are drawn from them — burstiness, p_bursty,
    # zipf_alpha, p_novel, n_points — does not change what the model could have memorised)
    world = ("d", "n_classes", "n_labels", "within_class_noise", "class_seed")
    own = {k: v for k, v in config_to_dict(task_config).items() if k in world}
    for spec in specs:
        if (Path(spec) / "config.json").is_file():
            ran = config_to_dict(config_from_dict(RunDir.open(Path(spec)).config()).task)
            differ = sorted(k for k in own if k in ran and ran[k] != own[k])
            if differ:
                fields = ", ".join(differ)
                lines.append(
                    f"note: run {spec!r} was trained with other task fields ({fields}): it is scored here on "
                    "classes and labels it may never have seen"
                )
    return lines


def run_label_eval(
    task_config: TaskConfig,
    learners: str,
    *,
    metric: str = "accuracy",
    shifts: str = "none",
    n_prompts: int = 1280,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    out: Path | None = None,
    intervene: tuple[str, ...] = (),
    patch_from: Path | None = None,
) -> tuple[dict[str, Any], str]:
    """A class-label task: every learner's accuracy (and cross-entropy) on each held-out split the task declares
    (`Task.eval_sets`, n_prompts each, drawn from `seed`); returns (JSON-ready results, printable text) and draws
    out/figures/eval_splits.png (the bars of `metric`, ± one standard error) when out is given."""
    _check_metric(metric, task_config)
    if [s for s in split_learner_list(shifts) if s != "none"]:
        raise SpecError(
            f"shifts: task {task_config.name!r} has class labels; its held-out splits (eval, icl, icl_permuted, iwl) "
            "take the place of shifts: give none"
        )
    task = make_task(task_config)
    specs = split_learner_list(learners)
    resolved = resolve_learners(specs, task, intervene, patch_from)
    resolved = {n: lr.to(dtype) if isinstance(lr, torch.nn.Module) else lr for n, lr in resolved.items()}
    began = time.perf_counter()
    sets = {
        n: p.to(dtype=dtype)
        for n, p in task.eval_sets(n_prompts, generator=torch.Generator().manual_seed(seed)).items()
    }
    scores = split_scores(resolved, sets)
    seconds = time.perf_counter() - began
    L = task_config.label_vocab
    assert L is not None
    splits = {s: {n: sc.to_dict() for n, sc in by.items()} for s, by in scores.items()}
    results: dict[str, Any] = {
        "task": config_to_dict(task_config),
        "metric": metric,
        "n_prompts": n_prompts,
        "seed": seed,
        "n_labels": L,
        "seconds": seconds,
        "splits": splits,
    }
    text = [
        f"{task_config.name}: accuracy per held-out split (± one standard error over {n_prompts} prompts; "
        f"chance 1/L = {1 / L:.4g})",
        format_table(split_table(scores, "accuracy")),
    ]
    if any(math.isfinite(sc.cross_entropy) for by in scores.values() for sc in by.values()):
        text.append(f"cross-entropy (learners with logits; uniform logits log L = {math.log(L):.4g})")
        rows = [
            r for r in split_table(scores, "cross_entropy") if any(v != "—" for k, v in r.items() if k != "learner")
        ]
        text.append(format_table(rows))
    text += _other_classes_note(task_config, specs)
    text.append(f"({len(resolved)} learners × {len(sets)} splits × {n_prompts} prompts in {seconds:.2f} s)")
    if out is not None:
        title = f"{task_config.name}, d = {task.d}, L = {L}: {metric} per split"
        fig = plot_split_scores(scores, metric, out / "figures" / "eval_splits.png", n_labels=L, title=title)
        text.append(f"figure: {fig}")
        atomic_write_bytes(out / "results.json", json.dumps(results, indent=2).encode())
    return results, "\n".join(text)
