"""The trainer: Adam(W) on ½·MSE at the queries, fixed held-out evaluation, checkpoints, bit-identical resume.

One trainer for one model or for E models at once: a model that declares `members` = E holds E independent members
on the leading dimension of every parameter, its `training_loss` returns the [E] losses and `predict_prompts`
[E, B, m] predictions. The trainer backpropagates their sum (each member's gradient is its own), clips each member's
gradient on its own, and logs every member's losses beside their means. An ordinary model is the case E = 1.

A training step does no host synchronisation: prompts are sampled on the device from the run's generator,
the loss is accumulated on the device, and metrics are pulled only every `eval_every` steps. Checkpoints are
taken at evaluation steps (so the logged train loss is never split across a resume) and hold the model,
the optimizer, the data generator's state and the step.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, cast

import torch
from torch import Tensor, nn

from iclab.config import ConfigError, ExperimentConfig, config_to_dict
from iclab.errors import CheckpointError, SpecError
from iclab.metrics import accuracy, cross_entropy, half_mse
from iclab.models import ICLModel, make_model
from iclab.models.interventions import Intervened
from iclab.progress import step_progress
from iclab.runs import (
    RunDir,
    generator_state,
    optimizer_from_tensors,
    optimizer_to_tensors,
    restore_generator,
)
from iclab.tasks import Prompts, Task, make_task
from iclab.tasks.curriculum import Curriculum
from iclab.training.distributed import DataParallel

__all__ = [
    "TrainResult",
    "TrainingDiverged",
    "check_interventions",
    "clip_grad_norm_per_member",
    "curriculum_for",
    "eval_sets_for",
    "evaluate_half_mse",
    "load_model",
    "member_half_mse",
    "member_metrics",
    "member_metrics_each",
    "resolve_device",
    "stack_batches",
    "train",
]

DTYPES = {"float32": torch.float32, "float64": torch.float64}
MODEL_PREFIX = "model/"


class TrainingDiverged(RuntimeError):
    """The loss became NaN/inf; the message names the step and the last good checkpoint."""


@dataclass
class TrainResult:
    model: ICLModel
    run: RunDir | None
    final_eval_half_mse: float
    """the last held-out ½·MSE (NaN for class-label tasks, whose loss is cross-entropy: see final_eval)"""
    steps: int
    wall_time_s: float
    eval_prompts: Prompts
    diverged: dict[int, int] = field(default_factory=dict)
    """ensemble members whose loss became non-finite: member index → step (they were stopped, the others went on)"""
    final_eval: dict[str, float] = field(default_factory=dict)
    """the last evaluation's columns, means over the living members (eval_half_mse; or eval_cross_entropy,
    eval_accuracy, icl_accuracy, iwl_accuracy, … for class labels)"""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: 'cuda' requested but no CUDA device is available; use cpu")
    return torch.device(name)


def eval_prompts_for(config: ExperimentConfig, device: torch.device, dtype: torch.dtype) -> Prompts:
    """The fixed held-out set: drawn from eval.seed on the CPU (identical on every device), then moved."""
    return eval_sets_for(config, device, dtype)["eval"]


def eval_sets_for(config: ExperimentConfig, device: torch.device, dtype: torch.dtype) -> dict[str, Prompts]:
    """Every held-out set the task declares (`Task.eval_sets`; "eval" first, the training distribution's):
    drawn from eval.seed on the CPU in float64 (identical on every device), then moved."""
    task = make_task(config.task)
    gen = torch.Generator().manual_seed(config.eval.seed)
    sets = task.eval_sets(config.eval.n_prompts, generator=gen)
    return {name: p.to(device, dtype) for name, p in sets.items()}


@torch.no_grad()
def evaluate_half_mse(model: ICLModel, prompts: Prompts, chunk: int = 8192) -> float:
    """Held-out ½·MSE at the queries (iclab.metrics' reduction: summed over vector outputs, averaged over prompts
    and queries), accumulated in float64 over chunks to bound memory; the mean over members (`member_half_mse`)."""
    return float(member_half_mse(model, prompts, chunk).mean())


@torch.no_grad()
def member_half_mse(model: ICLModel, prompts: Prompts, chunk: int = 8192) -> Tensor:
    """[members] held-out ½·MSE of each member (a model with `members` = E predicts [E, B, m] at once; [1] for an
    ordinary model), float64 on the CPU."""
    members = model.members
    total = torch.zeros(members, dtype=torch.float64)
    for start in range(0, len(prompts), chunk):
        if members == 1:  # one model: one float64 sum per chunk
            part = prompts[start : start + chunk]
            total += half_mse(model.predict_prompts(part), part.y_q, reduction="sum", dtype=torch.float64).item()
            continue
        part = prompts[start : start + chunk]
        pred = model.predict_prompts(part).reshape(members, *part.y_q.shape)  # [E, B, m(, k)]
        pointwise = half_mse(pred, part.y_q.expand_as(pred), reduction="none", dtype=torch.float64)  # [E, B, m]
        total += pointwise.reshape(members, -1).sum(1).cpu()
    return total / (len(prompts) * prompts.y_q.shape[1])


@torch.no_grad()
def member_metrics_each(model: ICLModel, per_member: list[Prompts], chunk: int = 8192) -> dict[str, Tensor]:
    """{metric: [members] float64} of each member of an ensemble on its OWN held-out prompts (per_member[e], all of
    one size and shape): one vmapped pass per chunk (`Ensemble.predict_each`), E evaluations, not E² as scoring
    every member on every member's set would be. Metrics as `member_metrics`'."""
    E, n = model.members, len(per_member[0])
    discrete = per_member[0].discrete_y
    sums: dict[str, Tensor] = {}
    for start in range(0, n, chunk):
        parts = [p[start : start + chunk] for p in per_member]
        stacked = stack_batches(parts)
        pred = cast(Any, model).predict_each(stacked)  # [E, b, m(, k | L)]
        target = torch.stack([p.y_q for p in parts])  # [E, b, m(, k)]
        if discrete:
            values = {
                "cross_entropy": cross_entropy(pred, target, reduction="none", dtype=torch.float64),
                "accuracy": accuracy(pred, target, reduction="none"),
            }
        else:
            values = {"half_mse": half_mse(pred, target, reduction="none", dtype=torch.float64)}
        for name, v in values.items():
            sums[name] = sums.get(name, 0) + v.double().reshape(E, -1).sum(1).cpu()
    count = n * per_member[0].y_q.shape[1]
    return {name: total / count for name, total in sums.items()}


@torch.no_grad()
def member_metrics(model: ICLModel, prompts: Prompts, chunk: int = 8192) -> dict[str, Tensor]:
    """{metric: [members] float64 on the CPU} of each member on held-out prompts, by what their targets are: real
    targets → {"half_mse"} (`member_half_mse`); class labels (y long) → {"cross_entropy", "accuracy"} of the
    query logits [(E,) B, m, L] against y_q (iclab.metrics), accumulated over chunks in float64."""
    if not prompts.discrete_y:
        return {"half_mse": member_half_mse(model, prompts, chunk)}
    members = model.members
    ce = torch.zeros(members, dtype=torch.float64)
    right = torch.zeros(members, dtype=torch.float64)
    for start in range(0, len(prompts), chunk):
        part = prompts[start : start + chunk]
        logits = model.predict_prompts(part).reshape(members, *part.y_q.shape, -1)  # [E, B, m, L]
        target = part.y_q.expand(members, *part.y_q.shape)  # [E, B, m]
        ce += cross_entropy(logits, target, reduction="none", dtype=torch.float64).reshape(members, -1).sum(1).cpu()
        right += accuracy(logits, target, reduction="none").reshape(members, -1).sum(1).cpu()
    count = len(prompts) * prompts.y_q.shape[1]
    return {"cross_entropy": ce / count, "accuracy": right / count}


def clip_grad_norm_per_member(params: list[nn.Parameter], max_norm: float, members: int) -> None:
    """Clip each member's gradient to global norm max_norm on its own (torch's clip_grad_norm_ for one member):
    every parameter of a model with E members carries them on its leading dimension, so member e's gradient is
    the slices p.grad[e]. No host synchronisation."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    if members == 1:
        nn.utils.clip_grad_norm_(params, max_norm)
        return
    sq = torch.stack([g.reshape(members, -1).pow(2).sum(1) for g in grads]).sum(0)  # [E]
    scale = (max_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)  # torch's formula, per member
    for g in grads:
        g.mul_(scale.view(members, *([1] * (g.dim() - 1))).to(g.dtype))


def curriculum_for(config: ExperimentConfig) -> Curriculum | None:
    """The training curriculum (None: every step samples the full task). Garg's schedule ends at the task's d and
    n_points (iclab counts context points; Garg's 41 points are 40 context points and the query)."""
    t, c = config.train, config.task
    if t.curriculum == "none":
        return None
    return replace(Curriculum.garg(c.d, c.n_points), every=t.curriculum_every)


def _lr_lambda(config: ExperimentConfig):
    t = config.train

    def factor(step: int) -> float:
        if t.schedule == "constant":
            return 1.0
        if t.schedule == "warmup_cosine" and step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        start = t.warmup_steps if t.schedule == "warmup_cosine" else 0
        progress = min(1.0, (step - start) / max(1, t.steps - start))
        return 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def train(
    config: ExperimentConfig, run: RunDir | None = None, *, resume: bool = False, stop_after: int | None = None
) -> TrainResult:
    """Train the configured model; with `run`, log metrics and checkpoints there (resume from its latest).

    `stop_after` ends the session after that step (as an interruption would, with a checkpoint when it is a
    checkpoint step); a later `resume=True` call continues exactly where it stopped.
    """
    check_sizes(config)
    t = config.train
    device, dtype = resolve_device(t.device), DTYPES[t.dtype]
    # one config per member: its single run's (an ordinary run is one member, seeded train.seed)
    singles = [config.member(e) for e in range(len(config.ensemble.seeds))] or [config]
    tasks = [make_task(c.task) for c in singles]
    dp = DataParallel.from_env(device)  # started by torchrun: this process's share (and GPU) of a data-parallel run
    model = build_model(config).to(device=device, dtype=dtype).set_impl(t.impl)
    intervened = _install_interventions(model, config)  # taken off again before the model is returned
    if dp is not None:
        if config.ensemble.seeds:
            raise ConfigError("ensemble.seeds: an ensemble is one pass already; train it in one process, not torchrun")
        if t.batch_size % dp.world:
            raise ConfigError(f"train.batch_size: must be a multiple of the {dp.world} torchrun processes")
    parallel_loss = dp.wrap(model, device) if dp is not None else None
    writer = run if dp is None or dp.rank == 0 else None  # the one process that writes the run
    per_member = _PerMemberSteps.of(singles, list(model.parameters()), device)
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=t.lr if per_member is None else 1.0,  # per-member lr and weight decay: applied by _PerMemberSteps
        betas=(t.beta1, t.beta2),
        weight_decay=t.weight_decay if per_member is None else 0.0,
        fused=True,  # one kernel per parameter on the CPU and CUDA (the same update as the foreach form, to rounding)
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(config))
    # one data stream per member, seeded as its single run's
    gens = [torch.Generator(device=device).manual_seed(c.train.seed + 1) for c in singles]
    eval_sets = _EvalSets(singles, device, dtype)
    eval_set = eval_sets.first
    curriculum = curriculum_for(config)

    members = model.members  # E independent members on every parameter's leading dimension
    # the step at which each member's loss became non-finite (-1: alive), on the device; a dead member is stopped
    # (its loss and gradients masked out) and reported, and the others go on
    dead_at = torch.full((members,), -1, device=device, dtype=torch.long)
    start = 0
    if resume and run is not None and run.checkpoints():
        start = _restore(run, model, opt, sched, gens, dead_at)
        if writer is not None:
            if start > 0 and writer.metrics().empty:
                print(
                    f"resume: {writer.path / 'metrics.parquet'} is missing or empty; the metrics of steps 0 to {start} "
                    "are lost (the weights, optimizer and data stream are restored)",
                    file=sys.stderr,
                )
            writer.truncate_metrics(after_step=start)
    elif writer is not None:
        if resume:
            print(f"resume: {writer.path} has no checkpoint; training from step 0", file=sys.stderr)
        writer.truncate_metrics(after_step=-1)
        _save(writer, 0, model, opt, gens, dead_at)
        writer.log_metrics([{"step": 0, **_eval_columns(eval_sets.evaluate(model)[1])}])

    began = time.perf_counter()
    running = torch.zeros(members, device=device, dtype=torch.float64)
    # First step whose loss was non-finite, tracked on the device (no sync); -1 while all are finite.
    first_bad = torch.full((), -1, device=device, dtype=torch.long)
    since_eval = 0
    # plain lines when not on a terminal; in a data-parallel run, rank 0 speaks for all
    bar = step_progress(t.steps, start, config.name, enabled=t.progress and (dp is None or dp.rank == 0))
    last_eval = math.nan
    last_columns: dict[str, float] = {}
    for step in range(start + 1, t.steps + 1):
        # the curriculum is a function of the step alone, so a resumed run continues the same schedule
        d_active, n_points = (None, None) if curriculum is None else curriculum.at(step - 1)
        batches = [
            task.sample(t.batch_size, generator=g, device=device, dtype=dtype, n_points=n_points, d_active=d_active)
            for task, g in zip(tasks if len(tasks) == len(gens) else tasks * len(gens), gens)
        ]
        prompts = batches[0] if len(batches) == 1 else stack_batches(batches)
        loss = model.training_loss(prompts) if parallel_loss is None else parallel_loss(cast(Any, dp).share(prompts))
        opt.zero_grad(set_to_none=True)
        if members == 1:
            loss.sum().backward()
        else:  # members are independent: the sum's gradient is each member's own; dead members contribute nothing
            dead_at = torch.where((dead_at < 0) & ~torch.isfinite(loss.detach()), step, dead_at)
            alive = dead_at < 0
            torch.where(alive, loss, torch.zeros_like(loss)).sum().backward()
            _zero_dead_gradients(list(model.parameters()), alive)
            loss = torch.where(alive, loss, torch.zeros_like(loss))
        if t.grad_clip > 0:
            clip_grad_norm_per_member(list(model.parameters()), t.grad_clip, members)
        lr_used = opt.param_groups[0]["lr"] * (1.0 if per_member is None else t.lr)
        if per_member is None:
            opt.step()
        else:
            per_member.step(opt)
        sched.step()
        running += loss.detach().reshape(members)
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()).all(), step, first_bad)
        since_eval += 1
        if step % t.eval_every == 0 or step == t.steps:
            train_losses = running / since_eval  # [members]
            train_losses = (train_losses if dp is None else dp.mean(train_losses)).cpu()  # the global batch's
            # [members], each on its own task's held-out set; and every column of every evaluation set ([members])
            eval_losses, eval_columns = eval_sets.evaluate(model)
            # a finite blow-up: BLOWUP times worse than predicting 0 (class labels: uniform logits) on the held-out set
            blown = eval_losses > eval_sets.blowup
            if (
                members > 1
            ):  # a member whose held-out loss is non-finite or blown up is dead too; means are the living's
                bad_eval = (~torch.isfinite(eval_losses) | blown).to(device)
                dead_at = torch.where((dead_at < 0) & bad_eval, step, dead_at)
                alive = (dead_at < 0).cpu()
                if not alive.any():
                    raise TrainingDiverged(f"train: every member's loss became non-finite (steps {dead_at.tolist()})")
                train_losses = torch.where(alive, train_losses, math.nan)
                eval_losses = torch.where(alive, eval_losses, math.nan)
                eval_columns = {k: torch.where(alive, v, math.nan) for k, v in eval_columns.items()}
            train_loss, last_eval = float(train_losses.nanmean()), float(eval_losses.nanmean())
            last_columns = {k: float(v.nanmean()) for k, v in eval_columns.items()}
            if not (math.isfinite(train_loss) and math.isfinite(last_eval)):
                good = run.latest_checkpoint() if run is not None else None
                bad = int(first_bad.item())
                where = f"at step {bad}" if bad >= 0 else f"in the evaluation after step {step}"
                raise TrainingDiverged(
                    f"train: loss became non-finite {where}; "
                    f"last good checkpoint: {good if good is not None else 'none'}"
                )
            if members == 1 and bool(blown.any()):
                good = run.latest_checkpoint() if run is not None else None
                raise TrainingDiverged(
                    f"train: held-out {eval_sets.metric_text} {last_eval:.3g} after step {step} is more than "
                    f"{BLOWUP:.0e} times that of {eval_sets.baseline_text} "
                    f"({float(eval_sets.blowup[0]) / BLOWUP:.3g}): a finite blow-up; "
                    f"last good checkpoint: {good if good is not None else 'none'}"
                )
            running.zero_()
            since_eval = 0
            bar.update(step - bar.n)
            bar.set_postfix(**{f"eval_{eval_sets.metric}": f"{last_eval:.4g}"})
            if writer is not None:
                row = {
                    "step": step,
                    f"train_{model.loss_name}": train_loss,
                    f"eval_{eval_sets.metric}": last_eval,
                    "lr": lr_used,
                    "wall_time_s": time.perf_counter() - began,
                }
                row.update(_eval_columns(eval_columns))
                if members > 1:  # each member's own losses beside their means, and where it diverged (-1: never)
                    row.update({f"train_{model.loss_name}/member{e}": float(v) for e, v in enumerate(train_losses)})
                    row.update({f"diverged_at/member{e}": float(v) for e, v in enumerate(dead_at.tolist())})
                writer.log_metrics([row])
                if step % t.checkpoint_every == 0 or step == t.steps:
                    _save(writer, step, model, opt, gens, dead_at)
        if stop_after is not None and step >= stop_after:
            break
    bar.close()
    if start >= t.steps:  # resumed at its end: the same measure as the last evaluation (the living members' mean)
        final, final_columns = eval_sets.evaluate(model)
        living = (dead_at < 0).cpu()
        last_eval = float(torch.where(living, final, math.nan).nanmean())
        last_columns = {k: float(torch.where(living, v, math.nan).nanmean()) for k, v in final_columns.items()}
    diverged = {e: s for e, s in enumerate(dead_at.tolist()) if s >= 0} if members > 1 else {}
    if dp is not None:
        dp.barrier()  # the others leave once rank 0 has written the last checkpoint
    if writer is not None and config.ensemble.seeds:
        from iclab.training.ensemble import Ensemble, export_members

        export_members(writer, config, cast(Ensemble, model), diverged)
    half = last_eval if eval_sets.metric == "half_mse" else math.nan
    wall = time.perf_counter() - began
    if intervened is not None:
        intervened.remove()  # the returned (and saved) model is the plain network
    return TrainResult(model, run, half, t.steps, wall, eval_set, diverged, last_columns)


def check_interventions(config: ExperimentConfig) -> None:
    """ConfigError (one line, naming train.interventions) unless every intervention's hook point and head exist
    in the configured model; builds the model once (on the CPU) to see them."""
    if config.train.interventions:
        intervened = _install_interventions(build_model(config), config)
        if intervened is not None:
            intervened.remove()


def _install_interventions(model: ICLModel, config: ExperimentConfig) -> Intervened | None:
    """`train.interventions` installed on the model (iclab.models.interventions), or None when there are none."""
    specs = config.train.interventions
    if not specs:
        return None
    try:
        intervened = Intervened(model, specs, field="train.interventions")
    except SpecError as e:
        raise ConfigError(str(e)) from None
    problem = None
    if intervened.needs_classes and model.members > 1:
        problem = "clamp=induction reads each prompt's classes and runs on single models; train the seeds as "
        problem += "separate runs (no ensemble.seeds)"
    elif intervened.needs_classes and not hasattr(config.task, "n_classes"):
        problem = f"clamp=induction reads each prompt's item classes; task {config.task.name!r} has none"
    if problem is not None:
        intervened.remove()
        raise ConfigError(f"train.interventions: {problem}")
    return intervened


BLOWUP = 1e8  # a held-out loss this many times that of predicting 0 is a divergence, finite or not


class _EvalSets:
    """The held-out sets of an ensemble's members: one group per distinct task config (members that differ in
    task.noise_var or task.pool_size are each evaluated on their own task, as their single runs are).

    A group is the task's `eval_sets` (`Task.eval_sets`): "eval", the held-out prompts of the training
    distribution, and whatever further splits the family declares (icl_classification: icl, icl_permuted, iwl).
    Each set is scored by what its targets are (`member_metrics`): real targets by ½·MSE, class labels by
    cross-entropy and accuracy; the column of set s and metric q is `s_q` (eval_half_mse, eval_cross_entropy,
    icl_accuracy, iwl_accuracy, …). The run's held-out loss, the one blow-ups and divergence are judged by, is the
    "eval" set's first metric: `metric` (half_mse or cross_entropy)."""

    def __init__(self, singles: list[ExperimentConfig], device: torch.device, dtype: torch.dtype):
        self.sets: list[dict[str, Prompts]] = []
        self.tasks: list[Task] = []  # each group's task, whose `eval_measures` add columns
        self.which: list[int] = []  # member → index into sets
        index: dict[str, int] = {}
        for c in singles:
            key = json.dumps(config_to_dict(c.task), sort_keys=True)
            if key not in index:
                index[key] = len(self.sets)
                self.sets.append(eval_sets_for(c, device, dtype))
                self.tasks.append(make_task(c.task))
            self.which.append(index[key])
        self.first = self.sets[0]["eval"]
        self.interventions = singles[0].train.interventions  # applied to the member copies the measures read
        labels = singles[0].label_vocab
        self.metric = "half_mse" if labels is None else "cross_entropy"
        self.metric_text = "½·MSE" if labels is None else "cross-entropy"
        self.baseline_text = "predicting 0" if labels is None else "uniform logits"
        if labels is None:
            # [E] the blow-up level of each member: BLOWUP times the ½·MSE of predicting 0 on its held-out set
            zero = [
                half_mse(torch.zeros_like(p["eval"].y_q), p["eval"].y_q, dtype=torch.float64).cpu().clamp_min(1e-30)
                for p in self.sets
            ]
            self.blowup = BLOWUP * torch.stack([zero[j] for j in self.which])
        else:  # uniform logits score log L on every prompt
            self.blowup = torch.full((len(singles),), BLOWUP * math.log(labels), dtype=torch.float64)

    def losses(self, model: ICLModel) -> Tensor:
        """[E] held-out loss (`metric`) of each member on its own "eval" set."""
        return self.evaluate(model, only_loss=True)[0]

    def evaluate(self, model: ICLModel, only_loss: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        """([E] held-out loss of each member, {column: [E] value of each member}) over every set of its group."""
        columns: dict[str, Tensor] = {}
        for name in self.sets[0]:
            if only_loss and name != "eval":
                continue
            if len(self.sets) == 1:
                values = member_metrics(model, self.sets[0][name])
            else:  # each member on its own group's set, in one pass
                values = member_metrics_each(model, [self.sets[j][name] for j in self.which])
            columns.update({f"{name}_{metric}": v for metric, v in values.items()})
        measures = any(type(t).eval_measures is not Task.eval_measures for t in self.tasks)
        if not only_loss and measures:  # what the task measures beyond the metrics (induction-head scores, …)
            if model.members == 1:
                columns.update(self.tasks[0].eval_measures(model, self.sets[0]))
            else:  # member by member, each on its own group's sets and under the run's interventions
                each = [self._member_measures(model, e, j) for e, j in enumerate(self.which)]
                columns.update({k: torch.cat([m[k] for m in each]) for k in each[0]})
        return columns[f"eval_{self.metric}"], columns

    def _member_measures(self, model: ICLModel, e: int, group: int) -> dict[str, Tensor]:
        member = cast(Any, model).member(e)  # an ordinary model with member e's weights (no hooks of its own)
        if self.interventions:
            Intervened(member, self.interventions)  # the copy is dropped after this evaluation
        return self.tasks[group].eval_measures(member, self.sets[group])


class _PerMemberSteps:
    """Per-member learning rates and weight decays (ensemble.lr, ensemble.weight_decay) on one optimizer.

    The optimizer runs with lr 1 (times the schedule's factor λ) and no weight decay, which gives each member its
    Adam direction −λ·u; then every member's slice becomes p ← p − lr_e·λ·u − lr_e·λ·wd_e·p, exactly AdamW's
    update with that member's lr_e and wd_e (decay on the weights before the step, as torch's AdamW), to rounding.
    """

    def __init__(self, params: list[nn.Parameter], lr: Tensor, wd: Tensor):
        self.params, self.lr, self.wd = params, lr, wd

    @classmethod
    def of(
        cls, singles: list[ExperimentConfig], params: list[nn.Parameter], device: torch.device
    ) -> _PerMemberSteps | None:
        lrs, wds = [c.train.lr for c in singles], [c.train.weight_decay for c in singles]
        if len(set(lrs)) <= 1 and len(set(wds)) <= 1:
            return None
        as_tensor = partial(torch.tensor, device=device, dtype=torch.float64)
        return cls(params, as_tensor(lrs), as_tensor(wds))

    @torch.no_grad()
    def step(self, opt: torch.optim.Optimizer) -> None:
        lam = opt.param_groups[0]["lr"]
        before = [p.detach().clone() for p in self.params]
        opt.step()
        for p, old in zip(self.params, before):
            shape = (-1,) + (1,) * (p.dim() - 1)
            lr = self.lr.to(p.dtype).view(shape)
            decay = (lam * self.lr * self.wd).to(p.dtype).view(shape)
            p.copy_(old + lr * (p - old) - decay * old)


def _eval_columns(values: dict[str, Tensor]) -> dict[str, float]:
    """The metric columns of held-out values {column: [members]}: their means, and each member's when there are
    several."""
    columns = {}
    for name, v in values.items():
        columns[name] = float(v.nanmean())  # NaN: a stopped member
        if len(v) > 1:
            columns.update({f"{name}/member{e}": float(x) for e, x in enumerate(v)})
    return columns


MAX_ELEMENTS = 2**31  # 8 GiB of float32: beyond this a size is a typo, not an experiment on one machine


def check_sizes(config: ExperimentConfig) -> None:
    """Refuse sizes no machine trains, before anything is allocated: a batch of training or held-out prompts, or a
    model, of more than MAX_ELEMENTS numbers is a one-line ConfigError naming the field (the model's parameters are
    counted on the meta device, which allocates nothing)."""
    t = config.task
    per_prompt = (t.n_points + t.n_queries) * (t.d + 1 + (t.target_dim or 1))
    members = max(len(config.ensemble.seeds), 1)
    for name, prompts in (
        ("train.batch_size", config.train.batch_size * members),
        ("eval.n_prompts", config.eval.n_prompts),
    ):
        if prompts * per_prompt > MAX_ELEMENTS:
            raise ConfigError(
                f"{name}: {prompts} prompts of {t.n_points + t.n_queries} points in d = {t.d} are "
                f"{prompts * per_prompt:.3g} numbers, more than {MAX_ELEMENTS:.3g}; lower it, task.d or task.n_points"
            )
    with torch.device("meta"):
        try:  # one member's model, counted once per member
            one = make_model(config.model, t.d, k=config.target_dim, n_labels=config.label_vocab)
            n = sum(p.numel() for p in one.parameters()) * members
        except (RuntimeError, ValueError, OverflowError) as exc:
            raise ConfigError(f"model: cannot build a {config.model.name!r} of these sizes ({exc})") from None
    if n > MAX_ELEMENTS:
        raise ConfigError(
            f"model: {n:.3g} parameters (model.{config.model.name} with task.d = {t.d}), more than "
            f"{MAX_ELEMENTS:.3g}; lower model.width, model.layers or task.d"
        )


def build_model(config: ExperimentConfig) -> ICLModel:
    """The run's model, initialised from train.seed; with ensemble.seeds, an `Ensemble` of one member per seed."""
    k = config.target_dim
    if config.ensemble.seeds:
        from iclab.training.ensemble import Ensemble

        return Ensemble(config.model, config.task.d, config.ensemble.seeds, k=k, n_labels=config.label_vocab)
    return make_model(
        config.model,
        config.task.d,
        k=k,
        n_labels=config.label_vocab,
        generator=torch.Generator().manual_seed(config.train.seed),
    )


def stack_batches(batches: list[Prompts]) -> Prompts:
    """E batches of B prompts → one of E·B (member e's rows e·B … (e + 1)·B − 1), as `Ensemble` reads them."""
    first = batches[0]

    def cat(name: str) -> Tensor | None:
        parts = [getattr(b, name) for b in batches]
        return None if parts[0] is None else torch.cat(parts)

    params = None
    if first.params is not None:
        params = {k: torch.cat([cast(dict, b.params)[k] for b in batches]) for k in first.params}
    x, y = torch.cat([b.x for b in batches]), torch.cat([b.y for b in batches])
    return Prompts(x=x, y=y, n_ctx=first.n_ctx, w=cat("w"), f=cat("f"), params=params, y_vocab=first.y_vocab)


def _zero_dead_gradients(params: list[nn.Parameter], alive: Tensor) -> None:
    """Set the gradient slices of dead members (alive [E] False) to 0: a non-finite loss can leave NaN there even
    when it is masked out (0·inf), and Adam must not carry it into the member's state."""
    for p in params:
        if p.grad is not None:
            p.grad.copy_(torch.where(alive.view(-1, *([1] * (p.grad.dim() - 1))), p.grad, 0.0))


def _rng_key(e: int, gens: list[torch.Generator]) -> str:
    return "rng/data" if len(gens) == 1 else f"rng/data/{e}"


def _save(
    run: RunDir, step: int, model: nn.Module, opt: torch.optim.Optimizer, gens: list[torch.Generator], dead_at: Tensor
) -> None:
    optim_tensors, optim_meta = optimizer_to_tensors(opt.state_dict())
    tensors = {MODEL_PREFIX + k: v for k, v in model.state_dict().items()}
    tensors.update(optim_tensors)
    for e, gen in enumerate(gens):
        tensors[_rng_key(e, gens)] = generator_state(gen)
    if len(dead_at) > 1:
        tensors["members/dead_at"] = dead_at.cpu()
    run.save_checkpoint(step, tensors, {"optim": optim_meta, "step": step})


def _restore(run: RunDir, model: nn.Module, opt, sched, gens: list[torch.Generator], dead_at: Tensor) -> int:
    path, tensors, meta, refused = run.resume_checkpoint()
    for reason in refused:  # newer checkpoints that failed their check: said, never loaded
        print(f"resume: {reason}; resuming from {path.name} instead", file=sys.stderr)
    try:
        if "members/dead_at" in tensors:
            dead_at.copy_(tensors["members/dead_at"])
        _load_weights(model, tensors, path)
        opt.load_state_dict(optimizer_from_tensors(tensors, meta["optim"]))
        for e, gen in enumerate(gens):
            restore_generator(gen, tensors[_rng_key(e, gens)])
    except (KeyError, ValueError, RuntimeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint: {path} does not fit this run ({_first_line(exc)})") from None
    step = int(meta["step"])
    sched.last_epoch = step
    for group, lr0 in zip(opt.param_groups, sched.base_lrs):
        group["lr"] = lr0 * sched.lr_lambdas[0](step)
    return step


def load_model(run: RunDir) -> ICLModel:
    """The model of a run at its latest checkpoint (on the CPU, in the run's dtype)."""
    from iclab.config import config_from_dict

    config = config_from_dict(run.config())
    # built in the run's dtype before the weights are loaded: a float64 checkpoint copied into float32 parameters
    # would lose its precision
    model = build_model(config).to(DTYPES[config.train.dtype])
    tensors, _ = run.load_checkpoint()
    _load_weights(model, tensors, run.latest_checkpoint())
    return model


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2])[:300] or type(exc).__name__


def _load_weights(model: nn.Module, tensors: dict[str, Tensor], path: object) -> None:
    """The checkpoint's model weights into `model`; a checkpoint of another shape or family (another config, another
    iclab version) is a CheckpointError naming the file and the first mismatch, not a state-dict traceback."""
    weights = {k[len(MODEL_PREFIX) :]: v for k, v in tensors.items() if k.startswith(MODEL_PREFIX)}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint: {path} does not fit this run's model ({_first_line(exc)})") from None
