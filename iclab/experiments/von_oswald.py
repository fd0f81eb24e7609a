"""Reproduction: *Transformers learn in-context by gradient descent* (von Oswald et al.), docs/papers.md §1.

One layer: trained LSA ≈ one step of GD with the tuned step (loss, preds diff, model cos, weights ≈ the
construction up to scale, interpolation, OOD input scale). K layers: untied LSA beats K tuned GD steps and
approaches K steps of GD++; tied LSA is compared with tied GD and tied GD++ (one η, γ for every step).

Every trained model is a run under OUT/runs/<name>; OUT holds results.json, report.md/html and figures/.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iclab import plotting, theory
from iclab.algorithms.construct import construct_gd, construct_gdpp
from iclab.algorithms.gd import GD, GDPlusPlus
from iclab.algorithms.tuning import StepSizes, tune_steps
from iclab.analysis.compare import compare_learners, half_mse, interpolation_curve, ood_curves, weight_match
from iclab.config import ConfigError, ExperimentConfig, config_to_dict, preset
from iclab.experiments.common import finish, pick_scale, prepare_out, standard_error, train_run
from iclab.report import Claim, format_table
from iclab.tasks import make_task

__all__ = ["SCALES", "Scale", "reproduce_von_oswald"]


@dataclass(frozen=True)
class Scale:
    """Training budget of a reproduction scale (steps per model kind, learning rates, schedule)."""

    steps_one: int
    steps_untied: int
    steps_tied: int
    lr_one: float
    schedule: str


# smoke: the whole 1-layer reproduction in about a minute on a 2-core CPU (cosine decay reaches the GD loss
# within 1% far sooner than the constant-lr 5 000 steps of the paper). paper: the vO code's step counts and
# learning rates, with cosine decay to 0 added so the final weights are a converged point rather than a cloud of
# Adam noise around it (measured: 20 000 cosine steps already bring 2 and 3 untied layers to GD++; README).
SCALES = {
    "smoke": Scale(steps_one=1500, steps_untied=3000, steps_tied=1500, lr_one=3e-3, schedule="cosine"),
    "paper": Scale(steps_one=5000, steps_untied=50_000, steps_tied=5000, lr_one=1e-3, schedule="cosine"),
}


def _model_config(layers: int, tied: bool, scale: Scale, device: str, seed: int, progress: bool) -> ExperimentConfig:
    base = preset("von-oswald") if layers == 1 else preset(f"von-oswald-{min(layers, 3)}")
    if layers > 3:
        base = base.replace(model={"layers": layers}, train={"lr": 5e-4})
    steps = scale.steps_one if layers == 1 else (scale.steps_tied if tied else scale.steps_untied)
    lr = scale.lr_one if layers == 1 else base.train.lr
    name = f"lsa-{layers}{'-tied' if tied else ''}"
    return base.replace(
        model={"tied": tied},
        train={
            "steps": steps,
            "lr": lr,
            "schedule": scale.schedule,
            "device": device,
            "seed": seed,
            "progress": progress,
            "eval_every": max(50, steps // 40),
            "checkpoint_every": max(50, steps // 40) * 10,
        },
        name=name,
    )


def reproduce_von_oswald(
    *,
    layers: int = 1,
    device: str = "cpu",
    scale: str = "smoke",
    out: Path = Path("runs/von-oswald"),
    force: bool = False,
    resume: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the reproduction; returns {"name", "config", "metrics", "claims", "table"} (also in results.json)."""
    if layers < 1:
        raise ConfigError(f"layers: must be an integer >= 1, got {layers}")
    sc = pick_scale(SCALES, scale, device)
    for k in range(1, layers + 1):  # every config is validated (seed, device, …) before OUT is touched
        for tied in (False, True):
            _model_config(k, tied, sc, device, seed, progress)
    out = Path(out)
    prepare_out(out, force, resume)
    began = time.perf_counter()
    base = _model_config(1, False, sc, device, seed, progress)
    task = make_task(base.task)
    eval_set = None
    rows, claims, metrics, figures = [], [], {}, []

    # ---- one layer vs one GD step -------------------------------------------------------------------------
    result, run = train_run(base, out, resume)
    model, eval_set = result.model, result.eval_prompts
    gd1 = tune_steps(task, 1)
    m2, m4 = theory.input_moments(base.task.x_dist, base.task.x_scale)
    gd1_closed = theory.gd1_half_mse(
        gd1.etas[0],
        d=base.task.d,
        n=base.task.n_points,
        m2=m2,
        m4=m4,
        tau2=base.task.w_scale**2,
        sigma2=base.task.noise_var,
    )
    gd_learner = GD(gd1.etas)
    # All analysis in float64 on the CPU, on the same held-out prompts (drawn in float64 on the CPU).
    eval64 = eval_set.to("cpu", torch.float64)
    model = model.cpu().double()
    cmp1 = compare_learners(model, gd_learner, eval64)
    construction = construct_gd(base.task.d, base.task.n_points, gd1.etas)
    wm = weight_match(model, construction)[0]
    interp = interpolation_curve(model, construction, eval64)
    rows.append(
        {
            "model": "LSA 1 layer",
            "reference": "GD 1 step",
            "trained ½MSE": cmp1["model_half_mse"],
            "ref ½MSE": cmp1["reference_half_mse"],
            "GD ½MSE": f"{gd1_closed:.4g} (closed form)",
            "preds diff": cmp1["preds_diff"],
            "preds diff (norm)": cmp1["preds_diff_normalised"],
            "model cos": cmp1["model_cos"],
            "weight dist KQ/PV": f"{wm['kq_distance']:.3f}/{wm['pv_distance']:.3f}",
            "steps": base.train.steps,
            "wall s": result.wall_time_s,
        }
    )
    # The model and GD are compared on the same 10 000 held-out prompts (paired): the Monte Carlo error of a
    # 10 000-prompt estimate (≈ 1.4 % here) is larger than the 1 % tolerance, so the closed form is checked
    # separately against GD's Monte Carlo loss, within 3 standard errors.
    rel_gap = cmp1["model_half_mse"] / cmp1["reference_half_mse"] - 1
    gd_se = standard_error(gd_learner, eval64)
    metrics["one_layer"] = {
        **cmp1,
        "gd_eta": gd1.etas[0],
        "gd_half_mse_closed_form": gd1_closed,
        "relative_gap_to_gd": rel_gap,
        "gd_half_mse_standard_error": gd_se,
        "weight_match": {k: v for k, v in wm.items() if not k.startswith("W_")},
        "interpolation_half_mse": interp,
        "train_wall_s": result.wall_time_s,
    }
    claims += [
        Claim(
            "loss_matches_gd",
            "held-out ½·MSE of the trained 1-layer LSA within 1 % of one GD step with the optimal η, on the same "
            "10 000 held-out prompts",
            cmp1["reference_half_mse"],
            cmp1["model_half_mse"],
            "1 %",
            abs(rel_gap) <= 0.01,
        ),
        Claim(
            "gd_closed_form",
            "Monte Carlo ½·MSE of the tuned GD step on held-out prompts matches the closed form (docs/papers.md §6)",
            gd1_closed,
            cmp1["reference_half_mse"],
            f"3 SE = {3 * gd_se:.2g}",
            abs(cmp1["reference_half_mse"] - gd1_closed) <= 3 * gd_se,
        ),
        Claim(
            "model_cos",
            "cosine of ∂ŷ/∂x_q of LSA and GD, mean over 10 000 held-out prompts",
            1.0,
            cmp1["model_cos"],
            "≥ 0.99",
            cmp1["model_cos"] >= 0.99,
        ),
        Claim(
            "preds_diff",
            "normalised prediction difference ‖ŷ_LSA − ŷ_GD‖ / ‖ŷ_GD‖",
            0.0,
            cmp1["preds_diff_normalised"],
            "≤ 0.05",
            cmp1["preds_diff_normalised"] <= 0.05,
        ),
        Claim(
            "weights_match",
            "rescaled W_KQ and W_PV: max relative Frobenius distance to the construction",
            0.0,
            max(wm["kq_distance"], wm["pv_distance"]),
            "≤ 0.1",
            max(wm["kq_distance"], wm["pv_distance"]) <= 0.1,
        ),
    ]
    metrics_df = run.metrics()
    figures.append(
        plotting.plot_training_curve(
            metrics_df["step"].to_numpy(),
            metrics_df["eval_half_mse"].to_numpy(),
            out / "figures" / "training_curve.png",
            reference={"1 GD step (same prompts)": cmp1["reference_half_mse"], "1 GD step (closed form)": gd1_closed},
            title="1-layer LSA vs one step of GD",
        )
    )

    figures.append(
        plotting.plot_weight_heatmaps(
            {"W_KQ (rescaled)": np.array(wm["W_KQ"]), "W_PV (rescaled)": np.array(wm["W_PV"])},
            {
                "W_KQ (rescaled)": construction.weights[0].W_KQ[0].detach().numpy(),
                "W_PV (rescaled)": construction.weights[0].W_PV[0].detach().numpy(),
            },
            out / "figures" / "weights.png",
            title="trained (left) vs constructed (right)",
        )
    )
    alphas = list(base.eval.alphas)
    learners = {"LSA (1 layer)": model, "GD (1 step)": gd_learner}
    for kind, xlabel in (("input", "input scale α (x → αx)"), ("target", "target scale α (w → αw)")):
        ood = ood_curves(learners, eval64, alphas, kind=kind)
        metrics[f"ood_{kind}_scale"] = {"alphas": alphas, **ood}
        figures.append(
            plotting.plot_curves(
                np.array(alphas),
                {k: np.array(v) for k, v in ood.items()},
                out / "figures" / f"ood_{kind}_scale.png",
                xlabel=xlabel,
                ylabel="held-out ½·MSE",
                title=f"Out of distribution: {kind} scale",
            )
        )
    figures.append(
        plotting.plot_curves(
            np.linspace(0, 1, len(interp)),
            {"interpolated weights": np.array(interp)},
            out / "figures" / "interpolation.png",
            xlabel="t: (1 − t)·trained + t·constructed",
            ylabel="held-out ½·MSE",
            title="Loss along the trained → constructed line",
            logy=False,
        )
    )

    # ---- K layers ----------------------------------------------------------------------------------------------
    if layers > 1:
        curves = _multi_layer(
            layers, sc, device, seed, progress, out, resume, task, eval64, cmp1, rows, claims, metrics
        )
        ks = np.arange(1, layers + 1)
        figures.append(
            plotting.plot_curves(
                ks,
                {k: np.array(v) for k, v in curves.items()},
                out / "figures" / "loss_vs_layers.png",
                xlabel="layers / steps K",
                ylabel="held-out ½·MSE",
                title="LSA vs GD and GD++",
            )
        )

    wall = time.perf_counter() - began
    metrics["wall_time_s"] = wall
    cfg_summary = {"layers": layers, "device": device, "scale": scale, "seed": seed, "base": config_to_dict(base)}
    return finish(
        out,
        name="von-oswald",
        title=f"von Oswald et al. — LSA learns GD ({scale} scale, {layers} layer{'s' * (layers > 1)})",
        config=cfg_summary,
        metrics=metrics,
        claims=claims,
        sections=[("Results", format_table(rows))],
        figures=figures,
    )


def _multi_layer(layers, sc, device, seed, progress, out, resume, task, eval64, cmp1, rows, claims, metrics):
    """Train untied and tied LSA for k = 2..K; tune GD / GD++ (untied and tied); compare; add claims."""
    curves: dict[str, list[float]] = {
        "LSA untied": [cmp1["model_half_mse"]],
        "LSA tied": [cmp1["model_half_mse"]],
        "GD": [],
        "GD tied": [],
        "GD++": [],
        "GD++ tied": [],
    }
    per_k = {}
    for k in range(1, layers + 1):
        tuned: dict[str, StepSizes] = {
            "GD": tune_steps(task, k),
            "GD tied": tune_steps(task, k, tied=True),
            "GD++": tune_steps(task, k, plus_plus=True),
            "GD++ tied": tune_steps(task, k, plus_plus=True, tied=True),
        }
        learners = {name: (GDPlusPlus(s.etas, s.gammas) if "++" in name else GD(s.etas)) for name, s in tuned.items()}
        losses = {name: half_mse(lr, eval64) for name, lr in learners.items()}
        for name, loss in losses.items():
            curves[name].append(loss)
        entry = {"tuned": {n: {"etas": s.etas, "gammas": s.gammas} for n, s in tuned.items()}, "ref": losses}
        if k > 1:
            for tied in (False, True):
                cfg = _model_config(k, tied, sc, device, seed, progress)
                result, _ = train_run(cfg, out, resume)
                model = result.model.cpu().double()
                loss = half_mse(model, eval64)
                curves["LSA tied" if tied else "LSA untied"].append(loss)
                ref_name = "GD++ tied" if tied else "GD++"
                cmp = compare_learners(model, learners[ref_name], eval64)
                steps_ref = tuned[ref_name]
                construction = construct_gdpp(task.d, task.config.n_points, steps_ref.etas, steps_ref.gammas, tied=tied)
                wm = weight_match(model, construction)
                dist = " ".join(f"{r['kq_distance']:.3f}/{r['pv_distance']:.3f}" for r in wm)
                gd_name = "GD tied" if tied else "GD"
                rows.append(
                    {
                        "model": f"LSA {k} layers{' tied' if tied else ''}",
                        "reference": f"{ref_name} {k} steps",
                        "trained ½MSE": loss,
                        "ref ½MSE": losses[ref_name],
                        "GD ½MSE": f"{losses[gd_name]:.4g} ({gd_name}, K steps)",
                        "preds diff": cmp["preds_diff"],
                        "preds diff (norm)": cmp["preds_diff_normalised"],
                        "model cos": cmp["model_cos"],
                        "weight dist KQ/PV": dist,
                        "steps": cfg.train.steps,
                        "wall s": result.wall_time_s,
                    }
                )
                entry["tied" if tied else "untied"] = {
                    "half_mse": loss,
                    **cmp,
                    "weight_match_to_gdpp": [{k: v for k, v in r.items() if not k.startswith("W_")} for r in wm],
                    "train_wall_s": result.wall_time_s,
                }
                if k == layers:
                    _claims_k(k, tied, loss, losses, claims)
        per_k[k] = entry
    metrics["layers"] = per_k
    return curves


def _claims_k(k, tied, loss, losses, claims):
    if not tied:
        claims.append(
            Claim(
                f"untied_{k}_beats_gd",
                f"{k} untied LSA layers beat {k} tuned GD steps",
                losses["GD"],
                loss,
                "<",
                loss < losses["GD"],
            )
        )
        gap = loss / losses["GD++"] - 1
        claims.append(
            Claim(
                f"untied_{k}_matches_gdpp",
                f"{k} untied LSA layers within 5 % (either side) of {k} GD++ steps (η, γ tuned per step); "
                f"relative gap {gap:+.1%}",
                losses["GD++"],
                loss,
                "±5 %",
                abs(gap) <= 0.05,
            )
        )
    else:
        # The issue asks which of the two tied algorithms the tied model matches; both gaps are stated.
        gaps = {name: loss / losses[name] - 1 for name in ("GD tied", "GD++ tied")}
        best = min(gaps, key=lambda n: abs(gaps[n]))
        claims.append(
            Claim(
                f"tied_{k}_matches",
                f"{k} tied LSA layers within 5 % of tied GD or tied GD++ (one η, γ for all steps); gaps: "
                + ", ".join(f"{n} {g:+.1%}" for n, g in gaps.items())
                + f"; closest: {best}",
                losses[best],
                loss,
                "±5 %",
                abs(gaps[best]) <= 0.05,
            )
        )
