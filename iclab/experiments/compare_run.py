"""`iclab compare RUN --against ALG`: a trained run against a reference learner on the run's held-out prompts."""

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
from iclab.training.trainer import eval_prompts_for, load_model

__all__ = ["REFERENCES", "compare_run"]

REFERENCES = ("gd", "gd++", "ols", "ridge:LAMBDA")


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


def compare_run(path: Path, against: str) -> tuple[dict[str, Any], str]:
    """Returns (summary dict, printable table). Uses the run's own held-out set (eval.seed)."""
    run = RunDir.open(path)
    config = config_from_dict(run.config())
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
