"""Tables, figures and claims of `iclab reproduce ahn` (iclab.experiments.ahn), from its metrics alone.

What is claimed (Ahn et al. for the setting trained): iclab's LSA has every block of KQ and OV free, Ahn et al.'s
*full* parametrisation, whose L-layer stationary points are GD++ (value x-block ∝ I, key-query x-block ∝ I on
isotropic inputs; on x ~ N(0, Σ) the change of variables z = Σ^{-1/2}x makes the key-query block ∝ Σ⁻¹: GD++
preconditioned by Σ⁻¹). Their "A_l ∝ Σ⁻¹ preconditioned GD" result is for the restricted (value x-block 0) form,
which is not trained here; so beyond one layer the claims are the full-parametrisation ones — every A_l ∝ Σ⁻¹, the
model *is* Σ⁻¹-preconditioned GD++ with its own per-layer numbers (projected onto that form it keeps its loss), and
it beats optimised L-step PGD (not "≈ PGD"). At one layer the two forms coincide: LSA = optimised 1-step PGD.

Tolerances: losses are compared on the same 10 000 held-out prompts (paired); a gap's standard error adds the
prompts' Monte Carlo error of the seed-mean difference and the spread over seeds in quadrature; on top, 2 % of the
reference is allowed for what a finite Adam run leaves (stated, not derived). The projection test allows 3 paired
SE + 5 % of the model's loss (stated: the off-form entries a finite run leaves change an L = 3 model's loss, ~3e-4,
by a few per cent: −3.5 % … +0.3 % at smoke scale). Shape tolerances (cosine ≥ 0.99, steps within 10 %) are stated
thresholds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from iclab import plotting
from iclab.report import Claim, format_table

__all__ = ["ahn_claims", "figures", "tables"]

PGD, GD, GDPP = "PGD (optimised A_l)", "GD", "GD++ (Σ⁻¹-preconditioned)"
TARGET = {"iso": "I", "sigma": "Σ⁻¹"}
SLACK = 0.02  # relative allowance for a finite training run
PROJ_SLACK = 0.05  # relative allowance for the off-form entries a finite run leaves (stated)


def _fmt(values: list[float]) -> str:
    return " / ".join(f"{v:.3g}" for v in values)


def _seed_mean(members: list[dict[str, Any]], field: str) -> list[float]:
    """Per-layer seed mean of alignment[l][field]."""
    return [float(np.mean([m["alignment"][l][field] for m in members])) for l in range(len(members[0]["alignment"]))]


def tables(metrics: dict[str, Any], sc: Any) -> list[tuple[str, str]]:
    sections = []
    for key, m in metrics["tasks"].items():
        rows = []
        for k in sc.layers:
            ref, tr = m["references"][str(k)], m["trained"][str(k)]
            losses, members = ref["half_mse"], tr["members"]
            rows.append(
                {
                    "L": k,
                    "LSA ½MSE": f"{tr['half_mse_mean']:.4g} ± {tr['half_mse_seed_se']:.2g}",
                    "LSA → GD++ form": float(np.mean([mm["projection_half_mse"] for mm in members])),
                    "PGD opt.": losses[PGD],
                    "GD": losses[GD],
                    "GD++ (Σ⁻¹)": losses[GDPP],
                    "LSA / PGD": tr["half_mse_mean"] / losses[PGD],
                    f"cos(A_l, {TARGET[key]})": _fmt(_seed_mean(members, "cos")),
                    "off-diag": _fmt(_seed_mean(members, "off_diagonal")),
                    "η_l LSA": _fmt(_seed_mean(members, "eta")),
                    "η_l PGD": _fmt([a["eta"] for a in ref["pgd_alignment"]]),
                    "x-block LSA": _fmt([float(np.mean([mm["xblock_ratio"][l] for mm in members])) for l in range(k)]),
                    "x-block GD++": _fmt(ref["gdpp_xblock_ratio"]),
                }
            )
        title = "isotropic x ~ N(0, I)" if key == "iso" else "x ~ N(0, Σ), Σ = diag(1, 1, 1/4, 1/16, 1), w ~ N(0, Σ⁻¹)"
        note = (
            "\n(½·MSE on the same held-out prompts, LSA: mean ± SE over seeds; LSA → GD++ form: the trained model "
            f"projected onto {TARGET[key]}-preconditioned GD++ with its own per-layer numbers (ahn.gdpp_projection); "
            "η_l: best scalar fit of A_l onto "
            f"{TARGET[key]}; x-block: ‖OV_xx‖/(√d·|OV_yy|), GD++: γ_l·N/η_l)"
        )
        sections.append((f"Task {key}: {title}", format_table(rows) + note))
    return sections


def figures(out: Path, metrics: dict[str, Any], sc: Any) -> list[Path]:
    figs = []
    ks = np.array(sc.layers)
    for key, m in metrics["tasks"].items():
        tr, refs = m["trained"], m["references"]
        mean = np.array([tr[str(k)]["half_mse_mean"] for k in ks])
        se = np.array([tr[str(k)]["half_mse_seed_se"] for k in ks])
        lsa = "LSA trained (seed mean ± 2 SE)"
        curves = {
            lsa: mean,
            **{name: np.array([refs[str(k)]["half_mse"][name] for k in ks]) for name in (PGD, GD, GDPP)},
        }
        figs.append(
            plotting.plot_curves(
                ks, curves, out / f"loss_vs_layers_{key}.png", xlabel="layers L / steps", ylabel="held-out ½·MSE",
                title=f"Loss vs layers ({key})", bands={lsa: (mean - 2 * se, mean + 2 * se)},
            )
        )  # fmt: skip
    sigma = np.array(metrics["setting"]["sigma_diag"])
    deep = str(max(sc.layers))
    members = metrics["tasks"]["sigma"]["trained"][deep]["members"]
    a = np.array(members[0]["preconds"])  # [L, d, d], seed 0
    etas = [al["eta"] for al in members[0]["alignment"]]
    figs.append(_heatmaps(a, etas, sigma, out / "preconditioners_sigma.png"))
    eig = {
        f"A_{l + 1} / η_{l + 1} (L = {deep})": np.sort(np.linalg.eigvalsh((a[l] + a[l].T) / 2) / etas[l])
        for l in range(len(a))
    }
    one = np.array(metrics["tasks"]["sigma"]["trained"][str(sc.layers[0])]["members"][0]["preconds"][0])
    eta1 = metrics["tasks"]["sigma"]["trained"][str(sc.layers[0])]["members"][0]["alignment"][0]["eta"]
    eig[f"A_1 / η_1 (L = {sc.layers[0]})"] = np.sort(np.linalg.eigvalsh((one + one.T) / 2) / eta1)
    eig["Σ⁻¹"] = np.sort(1 / sigma)
    figs.append(
        plotting.plot_curves(
            np.arange(1, len(sigma) + 1), eig, out / "eigenvalues_sigma.png", xlabel="eigenvalue index (sorted)",
            ylabel="eigenvalue", title="Eigenvalues of the learned A_l (rescaled) vs Σ⁻¹",
        )
    )  # fmt: skip
    return figs


def _heatmaps(a: np.ndarray, etas: list[float], sigma: np.ndarray, path: Path) -> Path:
    """Row 1: the trained A_l of the deepest model (seed 0); row 2: η_l·Σ⁻¹, the best scalar fit; one colour scale."""
    layers = len(a)
    fits = [eta * np.diag(1 / sigma) for eta in etas]
    limit = plotting.symmetric_limits(a, *fits)
    fig = plotting.new_figure(max(2.6 * layers + 1.0, 7.0), 5.4)
    axes = fig.subplots(2, layers, squeeze=False)
    images = []
    for l in range(layers):
        for row, (mat, label) in enumerate(((a[l], f"trained A_{l + 1}"), (fits[l], f"{etas[l]:.3g}·Σ⁻¹"))):
            ax = axes[row][l]
            images.append(ax.imshow(mat, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest"))
            ax.set_title(label, fontsize="medium")
            ax.set_xticks(range(len(sigma)))
            ax.set_yticks(range(len(sigma)))
    fig.colorbar(images[-1], ax=axes.ravel().tolist(), shrink=0.8)
    fig.suptitle(f"{layers}-layer LSA, x ~ N(0, Σ): A_l (top) vs fit η_l·Σ⁻¹ (bottom)", fontsize="medium")
    return plotting.save_figure(fig, path)


def ahn_claims(metrics: dict[str, Any], sc: Any, seeds: int, scale_name: str = "smoke") -> list[Claim]:
    claims: list[Claim] = []

    def add(cid: str, text: str, ref: float | str, measured: float, tol: float | str, holds: bool) -> None:
        note = "" if holds else f" — does not hold at {scale_name} scale"
        claims.append(Claim(cid, text + note, ref, float(measured), tol, bool(holds)))

    closed = metrics["tasks"]["sigma"]["pgd1_closed_form"]
    if closed["tuned_rel_distance"] is not None:
        add(
            "pgd1_closed_form",
            "the numerically optimised 1-step preconditioner on x ~ N(0, Σ) equals the closed-form A* of the linear "
            "family (docs/papers.md §6; = N/(N + d + 1)·Σ⁻¹): relative Frobenius distance",
            0.0, closed["tuned_rel_distance"], "≤ 0.05 (Monte Carlo error of the tuning prompts)",
            closed["tuned_rel_distance"] <= 0.05,
        )  # fmt: skip
    for key, m in metrics["tasks"].items():
        tr, refs = m["trained"], m["references"]
        first = sc.layers[0]
        if first == 1:
            t1, pgd1 = tr["1"], refs["1"]["half_mse"][PGD]
            tol = 3 * t1["gap_to_pgd_se"] + SLACK * pgd1
            # every seed too, within its prompts' Monte Carlo error: a seed left at a saddle widens the seed SE
            # enough to hide itself in the seed-mean test
            seed_tol = 3 * t1["half_mse_prompt_se"] + SLACK * pgd1
            gaps = [m["gap_to_pgd"] for m in t1["members"]]
            add(
                f"{key}_one_layer_matches_pgd",
                f"1-layer LSA ({key}) ½·MSE equals optimised 1-step PGD (seed mean, same prompts, and every seed "
                f"within 3 prompt SE + 2 % = {seed_tol:.2g}); gaps per seed " + ", ".join(f"{g:+.3g}" for g in gaps),
                pgd1, t1["half_mse_mean"], f"3 SE + 2 % = {tol:.2g}",
                abs(t1["gap_to_pgd_mean"]) <= tol and max(abs(g) for g in gaps) <= seed_tol,
            )  # fmt: skip
        deep = [k for k in sc.layers if k > 1]
        if deep:
            ratios = {k: tr[str(k)]["half_mse_mean"] / refs[str(k)]["half_mse"][PGD] for k in deep}
            # below PGD by more than 3 SE: the full parametrisation's free x-block is GD++'s data transform, which
            # PGD lacks (Ahn et al.'s full-parametrisation stationary points are GD++, not PGD, beyond one layer)
            ok = all(tr[str(k)]["gap_to_pgd_mean"] < -3 * tr[str(k)]["gap_to_pgd_se"] for k in deep)
            worst = max(ratios, key=lambda k: ratios[k])
            pp_ratio = {k: refs[str(k)]["half_mse"][GDPP] / refs[str(k)]["half_mse"][PGD] for k in deep}
            add(
                f"{key}_deep_beats_pgd",
                f"L ≥ 2-layer LSA ({key}, full parametrisation) beats optimised L-step PGD by more than 3 SE (its "
                "free x-block adds GD++'s data transform); LSA/PGD ratios "
                + ", ".join(f"L={k}: {r:.3g}" for k, r in ratios.items())
                + "; tuned GD++ (Σ⁻¹) / PGD: "
                + ", ".join(f"L={k}: {pp_ratio[k]:.3g}" for k in deep),
                "< 1", ratios[worst], "gap < −3 SE", ok,
            )  # fmt: skip
        if len(sc.layers) > 1:
            pairs = list(zip(sc.layers, sc.layers[1:]))
            drops = []
            for a, b in pairs:
                ta, tb = tr[str(a)], tr[str(b)]
                se = np.hypot(np.hypot(ta["half_mse_seed_se"], tb["half_mse_seed_se"]),
                              np.hypot(ta["half_mse_prompt_se"], tb["half_mse_prompt_se"]))  # fmt: skip
                drops.append(
                    (tb["half_mse_mean"] / ta["half_mse_mean"], ta["half_mse_mean"] - tb["half_mse_mean"] > 2 * se)
                )
            add(
                f"{key}_loss_drops_with_layers",
                f"LSA ({key}) ½·MSE falls with every added layer (each drop > 2 SE); ratios "
                + ", ".join(f"L={b}/L={a}: {r:.3f}" for (a, b), (r, _) in zip(pairs, drops)),
                "< 1", max(r for r, _ in drops), "drop > 2 SE", all(ok for _, ok in drops),
            )  # fmt: skip
        cos = [c for k in sc.layers for mm in tr[str(k)]["members"] for c in (al["cos"] for al in mm["alignment"])]
        off = [
            c for k in sc.layers for mm in tr[str(k)]["members"] for c in (al["off_diagonal"] for al in mm["alignment"])
        ]
        add(
            f"{key}_preconditioner_aligned",
            f"every layer's A_l ∝ {TARGET[key]} ({key}): smallest cosine with {TARGET[key]} over layers, L and seeds "
            f"(largest off-diagonal mass in Σ's eigenbasis {max(off):.3f})",
            1.0, min(cos), "cos ≥ 0.99", min(cos) >= 0.99,
        )  # fmt: skip

        def deviations(k: int, ref_etas: list[float], tr: dict[str, Any] = tr) -> list[float]:
            trained_eta = _seed_mean(tr[str(k)]["members"], "eta")
            return [abs(t / r - 1) for t, r in zip(trained_eta, ref_etas)]

        if sc.layers[0] == 1:
            dev = deviations(1, [a["eta"] for a in refs["1"]["pgd_alignment"]])[0]
            add(
                f"{key}_one_layer_step_matches_pgd",
                f"the 1-layer LSA's step η (scalar fit of A onto {TARGET[key]}, seed mean) equals optimised 1-step "
                "PGD's (N/(N + d + 1) here): relative deviation",
                0.0, dev, "≤ 10 %", dev <= 0.10,
            )  # fmt: skip
        # every trained model is Σ⁻¹-preconditioned GD++ with its own per-layer numbers: the model projected onto
        # that form (KQ_l = κ_l·blockdiag(Σ⁻¹, 0), OV_l = blockdiag(ρ_l·I, OV_l[y, y]), the rest 0; ahn.gdpp_projection)
        # predicts as well as the model, within 3 paired SE + PROJ_SLACK of the model's loss
        rel, ok_all = [], True
        for k in sc.layers:
            for mm in tr[str(k)]["members"]:
                rel.append(mm["projection_gap"] / mm["half_mse"])
                ok_all &= abs(mm["projection_gap"]) <= 3 * mm["projection_gap_se"] + PROJ_SLACK * mm["half_mse"]
        worst_rel = max(rel, key=abs)
        add(
            f"{key}_is_gdpp_own_steps",
            f"every trained LSA ({key}, every L and seed) is Σ⁻¹-preconditioned GD++ with the per-layer steps read "
            "from its weights: the model projected onto that form (KQ_l[x, x] → κ_l·" + TARGET[key] + ", OV_l[x, x] → "
            "ρ_l·I, other blocks → 0) has its loss; largest relative change (projection − model)/model",
            0.0, worst_rel, f"3 paired SE + {PROJ_SLACK:.0%} of the model's loss", ok_all,
        )  # fmt: skip
    return claims
