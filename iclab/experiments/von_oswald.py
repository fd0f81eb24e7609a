"""Reproduction: *Transformers learn in-context by gradient descent* (von Oswald et al.), docs/papers.md §1.

One layer: trained LSA ≈ one step of GD with the tuned step (loss, preds diff, model cos, weights ≈ the
construction up to scale, interpolation, OOD input scale). K layers: untied LSA beats K tuned GD steps and
approaches K steps of GD++; tied LSA is compared with tied GD and tied GD++ (one η, γ for every step).

Every trained model is a run under OUT/runs/<name>; OUT holds results.json, report.md/html and figures/.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import torch

from iclab import plotting, theory
from iclab.algorithms.construct import construct_gd, construct_gdpp
from iclab.algorithms.gd import GD, GDPlusPlus
from iclab.algorithms.tuning import StepSizes, tune_steps
from iclab.analysis.compare import Learner, compare_learners, half_mse, interpolation_curve, ood_curves, weight_match
from iclab.config import ExperimentConfig, TrainConfig
from iclab.experiments.common import standard_error
from iclab.experiments.driver import Analysis, Context, Reproduction
from iclab.models.features import FeatureLSAConfig
from iclab.models.lsa import LSA, LSAConfig
from iclab.models.separate import SeparateConfig
from iclab.report import Claim, format_table
from iclab.tasks import make_task
from iclab.tasks.linear import LinearConfig
from iclab.tasks.nonlinear import SineConfig
from iclab.validation import check_int

__all__ = ["PRESETS", "SCALES", "Options", "Scale", "VonOswald"]


def _von_oswald(layers: int, tied: bool) -> ExperimentConfig:
    # vO code: x ~ U(-0.5, 0.5), d = N = 10, noiseless, Adam lr 1e-3 (5e-4 beyond 3 layers), beta2 = 0.98,
    # batch 2048, init variance 0.002 / K; 5 000 steps tied, 50 000 untied.
    steps = 5000 if (tied or layers == 1) else 50_000
    return ExperimentConfig(
        task=LinearConfig(),
        model=LSAConfig(layers=layers, tied=tied),
        train=TrainConfig(steps=steps, lr=1e-3 if layers <= 3 else 5e-4),
        name=f"von-oswald-{layers}{'-tied' if tied else ''}",
    )


# vO's deep representations (sine regression, LSA on learned MLP features) and separate x / (0, y) tokens (a
# softmax copy layer, then LSA); budgets of tests/test_features.py and tests/test_separate.py.
_SINE = ExperimentConfig(
    task=SineConfig(d=1, n_points=15, x_dist="uniform", x_scale=5.0),
    model=FeatureLSAConfig(feature_dim=16),
    train=TrainConfig(steps=1000, batch_size=256, lr=3e-3, schedule="cosine", eval_every=250),
    name="von-oswald-sine",
)
_SEPARATE = ExperimentConfig(
    task=LinearConfig(d=3, n_points=10),
    model=SeparateConfig(max_points=11),
    train=TrainConfig(steps=1200, batch_size=256, lr=1e-2, schedule="cosine", eval_every=300, checkpoint_every=1200),
    name="von-oswald-separate",
)

# Named settings of this paper (`iclab train --preset NAME`, `iclab presets`).
PRESETS: dict[str, ExperimentConfig] = {
    "von-oswald": _von_oswald(1, False),
    "von-oswald-2": _von_oswald(2, False),
    "von-oswald-3": _von_oswald(3, False),
    "von-oswald-2-tied": _von_oswald(2, True),
    "von-oswald-3-tied": _von_oswald(3, True),
    "von-oswald-sine": _SINE,
    "von-oswald-separate": _SEPARATE,
}


@dataclass(frozen=True)
class Scale:
    """Training budget of a reproduction scale (steps per model kind, learning rates, schedule)."""

    steps_one: int
    steps_untied: int
    steps_tied: int
    lr_one: float
    schedule: str
    lr_untied: float | None = None
    """learning rate of 2 untied layers (None: the paper's, 1e-3 up to 3 layers, 5e-4 beyond)"""
    lr_untied_deep: float | None = None
    """learning rate of 3 or more untied layers (None: the paper's)"""
    lr_tied: float | None = None
    """learning rate of tied layers (None: the paper's)"""


# smoke: the whole 1-layer reproduction in about a minute on a 2-core CPU (cosine decay reaches the GD loss
# within 1% far sooner than the constant-lr 5 000 steps of the paper). Several layers at this budget need larger
# steps than the paper's 1e-3 (measured, batch 2048, cosine, held-out ½·MSE against GD++): 2 untied layers, 3 000
# steps: lr 1e-3 0.133, 3e-3 0.0958 (GD++ 0.0957); 3 untied layers, 3 000 steps: 1e-3 0.100, 3e-3 0.0616, 5e-3
# 0.0497, 1e-2 0.0464 (GD++ 0.0471); 3 tied layers, 1 500 steps: 1e-3 0.129, 3e-3 0.0807 (tied GD++ 0.0809).
# paper: the vO code's step counts and learning rates, with cosine decay to 0 added so the final weights are a
# converged point rather than a cloud of Adam noise around it
# (measured: 20 000 cosine steps already bring 2 and 3 untied layers to GD++; README).
SCALES = {
    "smoke": Scale(
        steps_one=1500,
        steps_untied=3000,
        steps_tied=1500,
        lr_one=3e-3,
        schedule="cosine",
        lr_untied=3e-3,
        lr_untied_deep=1e-2,
        lr_tied=3e-3,
    ),
    "paper": Scale(steps_one=5000, steps_untied=50_000, steps_tied=5000, lr_one=1e-3, schedule="cosine"),
}


def _model_config(layers: int, tied: bool, scale: Scale) -> ExperimentConfig:
    base = PRESETS["von-oswald"] if layers == 1 else PRESETS[f"von-oswald-{min(layers, 3)}"]
    if layers > 3:
        base = base.replace(model={"layers": layers}, train={"lr": 5e-4})
    steps = scale.steps_one if layers == 1 else (scale.steps_tied if tied else scale.steps_untied)
    multi = scale.lr_tied if tied else (scale.lr_untied if layers == 2 else scale.lr_untied_deep)
    lr = scale.lr_one if layers == 1 else (multi if multi is not None else base.train.lr)
    name = f"lsa-{layers}{'-tied' if tied else ''}"
    return base.replace(
        model={"tied": tied},
        train={
            "steps": steps,
            "lr": lr,
            "schedule": scale.schedule,
            "eval_every": max(50, steps // 40),
            "checkpoint_every": max(50, steps // 40) * 10,
        },
        name=name,
    )


@dataclass(frozen=True)
class Options:
    """Options of `iclab reproduce von-oswald`."""

    layers: int = 1
    """K: train LSA with 1..K layers (tied and untied) against K steps of GD and GD++"""

    def __post_init__(self) -> None:
        check_int("layers", self.layers, 1)


_Options = Options  # the class attribute VonOswald.Options shadows the name inside the class body


class VonOswald(Reproduction):
    """von Oswald et al.: one LSA layer against one GD step (loss, predictions, implicit model, weights against the
    construction, interpolation, OOD scales); with layers K > 1, untied and tied LSA against K steps of GD / GD++."""

    name = "von-oswald"
    summary = "LSA learns gradient descent (1 layer: GD; K layers: GD++)"
    scales = SCALES
    Options = Options

    def title(self, ctx: Context) -> str:
        k = ctx.options.layers
        return f"von Oswald et al. — LSA learns GD ({ctx.scale_name} scale, {k} layer{'s' * (k > 1)})"

    def out_name(self, scale_name: str, options: _Options) -> str:
        return f"reproduce-{self.name}-{options.layers}-{scale_name}"

    def configs(self, scale: Scale, options: _Options) -> list[ExperimentConfig]:
        return [_model_config(1, False, scale)] + [
            _model_config(k, tied, scale) for k in range(2, options.layers + 1) for tied in (False, True)
        ]

    def analyse(self, ctx: Context) -> Analysis:
        layers = ctx.options.layers
        base = ctx.trained["lsa-1"].config
        task = make_task(base.task)
        rows, metrics, figures = [], {}, []
        out = ctx.out

        # ---- one layer vs one GD step -------------------------------------------------------------------------
        result, run = ctx.trained["lsa-1"].result, ctx.trained["lsa-1"].run
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
        model = cast(LSA, model.cpu().double())  # the "lsa-1" run
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
        metrics_df = run.metrics()
        figures.append(
            plotting.plot_training_curve(
                metrics_df["step"].to_numpy(),
                metrics_df["eval_half_mse"].to_numpy(),
                out / "figures" / "training_curve.png",
                reference={
                    "1 GD step (same prompts)": cmp1["reference_half_mse"],
                    "1 GD step (closed form)": gd1_closed,
                },
                title="1-layer LSA vs one step of GD",
            )
        )

        figures.append(
            plotting.plot_weight_heatmaps(
                {"W_KQ (rescaled)": np.array(wm["W_KQ"]), "W_PV (rescaled)": np.array(wm["W_PV"])},
                {
                    "W_KQ (rescaled)": construction.layer_weights(0).KQ[0].detach().numpy(),
                    "W_PV (rescaled)": construction.layer_weights(0).OV[0].detach().numpy(),
                },
                out / "figures" / "weights.png",
                title="trained (left) vs constructed (right)",
            )
        )
        alphas = list(base.eval.alphas)
        learners: dict[str, Learner] = {"LSA (1 layer)": model, "GD (1 step)": gd_learner}
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
            curves = _multi_layer(layers, ctx, task, eval64, cmp1, rows, metrics)
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
        return Analysis(metrics, [("Results", format_table(rows))], figures)

    def claims(self, analysis: Analysis, ctx: Context) -> list[Claim]:
        one = analysis.metrics["one_layer"]
        wm = one["weight_match"]
        claims = [
            Claim(
                "loss_matches_gd",
                "held-out ½·MSE of the trained 1-layer LSA within 1 % of one GD step with the optimal η, on the same "
                "10 000 held-out prompts",
                one["reference_half_mse"],
                one["model_half_mse"],
                "1 %",
                abs(one["relative_gap_to_gd"]) <= 0.01,
            ),
            Claim(
                "gd_closed_form",
                "Monte Carlo ½·MSE of the tuned GD step on the held-out prompts agrees with the closed form "
                "(docs/papers.md §6)",
                one["gd_half_mse_closed_form"],
                one["reference_half_mse"],
                f"3 SE = {3 * one['gd_half_mse_standard_error']:.2g}",
                abs(one["reference_half_mse"] - one["gd_half_mse_closed_form"])
                <= 3 * one["gd_half_mse_standard_error"],
            ),
            Claim(
                "model_cos",
                "cosine of ∂ŷ/∂x_q of LSA and GD, mean over 10 000 held-out prompts",
                1.0,
                one["model_cos"],
                "≥ 0.99",
                one["model_cos"] >= 0.99,
            ),
            Claim(
                "preds_diff",
                "normalised prediction difference ‖ŷ_LSA − ŷ_GD‖ / ‖ŷ_GD‖",
                0.0,
                one["preds_diff_normalised"],
                "≤ 0.05",
                one["preds_diff_normalised"] <= 0.05,
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
        k = ctx.options.layers
        if k > 1:
            last = analysis.metrics["layers"][k]
            for tied in (False, True):
                _claims_k(k, tied, last["tied" if tied else "untied"]["half_mse"], last["ref"], claims)
        return claims


def _multi_layer(layers, ctx, task, eval64, cmp1, rows, metrics):
    """Untied and tied LSA for k = 2..K against GD / GD++ tuned for k steps (untied and tied): rows and metrics."""
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
                trained = ctx.trained[f"lsa-{k}{'-tied' if tied else ''}"]
                cfg, result = trained.config, trained.result
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
