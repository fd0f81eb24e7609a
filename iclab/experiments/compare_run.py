"""`iclab compare RUN --against ALG`: a trained run against a reference learner on the run's held-out prompts.

A run of a class-label task (icl_classification) is compared with the label references instead — the ideal
induction head, the in-weights class-mean lookup and chance (iclab.algorithms.icl_classification), all of them
unless --against names some — by accuracy (and the run's cross-entropy) on each of the run's own held-out splits
(`eval_sets_for`: eval, icl, icl_permuted, iwl from eval.seed), the sets the trainer logged.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

import torch

from iclab.algorithms.base import MaskedLearner
from iclab.algorithms.construct import construct_gd, construct_gdpp
from iclab.algorithms.gd import GD, GDPlusPlus
from iclab.algorithms.least_squares import OLS, Ridge
from iclab.algorithms.tuning import tune_steps
from iclab.analysis.compare import compare_learners, half_mse, weight_match
from iclab.config import ConfigError, config_from_dict
from iclab.models.lsa import LSA, LSAConfig
from iclab.report import format_table
from iclab.runs import RunDir
from iclab.tasks import make_task
from iclab.training.trainer import eval_prompts_for, eval_sets_for, load_model

__all__ = ["LABEL_REFERENCES", "REFERENCES", "compare_label_run", "compare_run"]

REFERENCES = ("gd", "gd++", "ols", "ridge:LAMBDA")
LABEL_REFERENCES = ("induction", "induction:centroid", "lookup", "chance")


def _reference(name: str, task, layers: int, tied: bool):
    """(learner, construction or None, description) for a reference name."""
    if name in ("gd", "gd++"):
        steps = tune_steps(task, layers, plus_plus=name == "gd++", tied=tied)
        learner: MaskedLearner
        if name == "gd":
            learner, construction = GD(steps.etas), construct_gd(task.d, task.config.n_points, steps.etas)
        else:
            learner = GDPlusPlus(steps.etas, steps.gammas)
            construction = construct_gdpp(task.d, task.config.n_points, steps.etas, steps.gammas)
        return learner, construction, f"{name} ({layers} step{'s' * (layers > 1)}, {steps.method})"
    if name == "ols":
        return OLS(), None, "ols"
    if name.startswith("ridge:"):
        try:
            lam = float(name.split(":", 1)[1])
        except ValueError:
            lam = -1.0
        if not (math.isfinite(lam) and lam > 0):
            raise ConfigError(f"against: ridge needs a positive lambda (ridge:0.25), got {name!r}")
        return Ridge(lam), None, name
    raise ConfigError(f"against: unknown value {name!r}; choose one of: {', '.join(REFERENCES)}")


def compare_label_run(path: Path, against: str | None = None) -> tuple[dict[str, Any], str]:
    """A class-label run against the label references (comma-separated `against`, default all of
    LABEL_REFERENCES) on its own held-out splits: (summary dict, printable tables)."""
    from iclab.algorithms.registry import make_learner, parse_spec, split_learner_list
    from iclab.evaluation_labels import split_scores, split_table

    run = RunDir.open(path)
    config = config_from_dict(run.config())
    task = make_task(config.task)
    names = list(LABEL_REFERENCES) if against is None else split_learner_list(against)
    for name in names:
        if parse_spec(name)[0] not in ("induction", "lookup", "chance"):
            raise ConfigError(
                f"against: run {str(path)!r} was trained on class labels (task {config.task.name!r}); "
                f"{name!r} is not a label reference; choose from: {', '.join(LABEL_REFERENCES)}"
            )
    sets = eval_sets_for(config, torch.device("cpu"), torch.float64)
    label = Path(path).name or str(path)
    learners: dict[str, Any] = {label: load_model(run).double().eval()}
    learners.update({name: make_learner(name, task) for name in names})
    scores = split_scores(learners, sets)
    L = config.label_vocab
    assert L is not None
    summary: dict[str, Any] = {
        "run": str(path),
        "against": names,
        "n_prompts": config.eval.n_prompts,
        "n_labels": L,
        "splits": {s: {n: sc.to_dict() for n, sc in by.items()} for s, by in scores.items()},
    }
    n = config.eval.n_prompts
    text = [
        f"accuracy per held-out split (the run's eval sets, {n} prompts each, ± one standard error; chance 1/L = "
        f"{1 / L:.4g})",
        format_table(split_table(scores, "accuracy")),
        f"cross-entropy of the run (uniform logits log L = {math.log(L):.4g})",
        format_table(split_table(scores, "cross_entropy")[:1]),
    ]
    return summary, "\n".join(text)


def compare_run(path: Path, against: str | None = None) -> tuple[dict[str, Any], str]:
    """Returns (summary dict, printable table). Uses the run's own held-out set (eval.seed). `against` defaults to
    gd; a class-label run goes to `compare_label_run`."""
    run = RunDir.open(path)
    config = config_from_dict(run.config())
    if config.label_vocab is not None:
        return compare_label_run(path, against)
    against = "gd" if against is None else against
    if config.target_dim is not None:
        raise ConfigError(
            f"run: {str(path)!r} was trained on vector targets (task {config.task.name!r}, k = {config.target_dim}); "
            f"the references ({', '.join(REFERENCES)}) predict one value per query; use iclab eval --learners"
        )
    model = load_model(run).double()
    task = make_task(config.task)
    tied = isinstance(config.model, LSAConfig) and config.model.tied
    learner, construction, description = _reference(against, task, config.model.layers, tied)
    prompts = eval_prompts_for(config, torch.device("cpu"), torch.float64)
    metrics = compare_learners(model, learner, prompts)
    summary: dict[str, Any] = {"run": str(path), "against": description, **metrics}
    row = {"run": Path(path).name, "against": description, **metrics}
    # The constructions are LSA weights: only a plain LSA run has weights of their shape to match.
    plain_lsa = type(config.model) is LSAConfig and config.model.heads == 1 and not config.model.layernorm
    if construction is not None and plain_lsa:
        wm = weight_match(cast(LSA, model), construction)  # an LSA (or its variance wrapper, which delegates)
        summary["weight_match"] = [{k: v for k, v in r.items() if not k.startswith("W_")} for r in wm]
        row["weight dist KQ/PV"] = " ".join(f"{r['kq_distance']:.3f}/{r['pv_distance']:.3f}" for r in wm)
    return summary, format_table([row])


def draw_training_curve(path: Path) -> Path:
    """figures/training_curve.png of a run: held-out ½·MSE over steps, with K tuned GD steps as a reference line."""
    from iclab import plotting

    run = RunDir.open(path)
    config = config_from_dict(run.config())
    metrics = run.metrics()
    reference = {}
    if type(config.model) is LSAConfig:
        task = make_task(config.task)
        m = config.model
        steps = tune_steps(task, m.layers, tied=m.tied)
        prompts = eval_prompts_for(config, torch.device("cpu"), torch.float64)
        name = f"GD, {m.layers} step{'s' * (m.layers > 1)}{' (tied)' * m.tied}"
        reference[name] = half_mse(GD(steps.etas), prompts)
    if config.label_vocab is not None:  # class labels: held-out cross-entropy, uniform logits (log L) for scale
        return plotting.plot_training_curve(
            metrics["step"].to_numpy(),
            metrics["eval_cross_entropy"].to_numpy(),
            run.figure_path("training_curve.png"),
            reference={"uniform logits (log L)": math.log(config.label_vocab)},
            title=config.name,
            ylabel="held-out cross-entropy",
        )
    return plotting.plot_training_curve(
        metrics["step"].to_numpy(),
        metrics["eval_half_mse"].to_numpy(),
        run.figure_path("training_curve.png"),
        reference=reference,
        title=config.name,
    )
