"""The claims and figures of `iclab reproduce mahankali-zfb` (iclab.experiments.mahankali_zfb) and their tolerances.

Monte Carlo tolerances are 3 standard errors over the held-out prompts (of the seed-mean loss; prompts are shared
by the seeds). Tolerances on weights are stated: Adam with a finite batch stops at a point a little off the optimum,
a gap that no number of held-out prompts shrinks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from iclab import plotting
from iclab.report import Claim

__all__ = ["A_TOLERANCE", "CONVERGED_REL", "claims", "figures"]

# A seed has converged when its held-out ½·MSE is at most this far (relative) above A*'s on the same prompts, plus
# 3 paired SE. Converged seeds end ≈ 0.03 % above A*; a seed at a saddle (Â = 0, or rank one along the largest
# direction of Λ) ends ≥ 30 % above it, so the verdict does not hinge on the value.
CONVERGED_REL = 0.02
# ‖Â − A*‖_F / ‖A*‖_F (and ‖Γ̂ − Γ‖/‖Γ‖) of converged seeds: stated. Smoke measurement: ≤ 0.01 (isotropic and
# Σ/Σ⁻¹), ≤ 0.02 (Λ); Adam's noise floor at batch 256 and lr → 0 by cosine decay.
A_TOLERANCE = 0.05


def _loss_claim(cid: str, text: str, c: dict[str, Any], closed: float) -> Claim:
    mean, se = c["converged_half_mse"], c["converged_half_mse_se"]
    ok = bool(np.isfinite(mean) and abs(mean - closed) <= 3 * se)
    return Claim(
        cid,
        f"{text}: held-out ½·MSE of the converged seeds ({c['converged']}/{len(c['seeds'])}, seed mean) equals the "
        f"closed form ½(excess risk + σ²) within 3 SE over prompts",
        closed,
        mean,
        f"3 SE = {3 * se:.2g}",
        ok,
    )


def _matrix_claim(cid: str, text: str, c: dict[str, Any]) -> Claim:
    worst = c["worst_A_rel_error"]
    return Claim(
        cid,
        f"{text}: worst relative Frobenius distance ‖Â − A*‖/‖A*‖ over the converged seeds ({c['converged']}/"
        f"{len(c['seeds'])}); Â = −n(c Mᵀ + b aᵀ) read from the weights (read_preconditioner)",
        0.0,
        worst,
        f"≤ {A_TOLERANCE} (stated: Adam noise floor)",
        bool(np.isfinite(worst) and worst <= A_TOLERANCE),
    )


def claims(m: dict[str, Any], scale_name: str) -> list[Claim]:
    s = m["setting"]
    iso, pre, an = m["isotropic"], m["precond"], m["anisotropic"]
    out = [
        _matrix_claim(
            "isotropic_preconditioner", f"isotropic: Â ≈ n/(n + d + 1 + σ²/τ²)·I = {iso['alpha']:.4g}·I", iso
        ),
        _loss_claim("isotropic_loss", "isotropic", iso, iso["half_mse_closed_form"]),
        _matrix_claim("precond_preconditioner", f"x ~ N(0, Σ), w ~ N(0, Σ⁻¹): Â ≈ {pre['alpha']:.4g}·Σ⁻¹", pre),
        _loss_claim("precond_loss", "x ~ N(0, Σ), w ~ N(0, Σ⁻¹)", pre, pre["half_mse_closed_form"]),
    ]
    S = s["seeds"]
    default = an["default"]
    failed = S - default["converged"]
    modes = ", ".join(f"rank {r['A_rank']} (½·MSE {r['half_mse']:.3g})" for r in default["seeds"] if not r["converged"])
    band = np.sqrt(S)  # 2 binomial SE of a count at p = ½: 2·√(S/4)
    out.append(
        Claim(
            "default_init_failures",
            f"default initialisation on anisotropic Λ: about half of the seeds end away from A* (issue 12: rank-one "
            f"solutions, ½·MSE ≈ 1.1 vs ≈ 0.62). Measured {failed}/{S} seeds not converged"
            + (f" — {modes}" if modes else "")
            + f"; A* ½·MSE {an['half_mse_closed_form']:.3g}, predicting 0: {an['zero_predictor_half_mse']:.3g}",
            S / 2,
            failed,
            f"±{band:.2g} (2 binomial SE at p = ½)",
            bool(abs(failed - S / 2) <= band),
        )
    )
    if "zfb" in an:
        z = an["zfb"]
        out.append(
            Claim(
                "zfb_init_converges",
                f"Zhang–Frei–Bartlett's initialisation reaches the global optimum A* (their theorem, gradient flow): "
                f"seeds converged (½·MSE within {CONVERGED_REL:.0%} + 3 paired SE of A*'s), of {S}",
                S,
                z["converged"],
                "all seeds",
                z["converged"] == S,
            )
        )
        out.append(_matrix_claim("aniso_preconditioner", "anisotropic Λ, ZFB init: Â ≈ A* (optimal_preconditioner)", z))
        out.append(
            _loss_claim("aniso_loss", "anisotropic Λ, both initialisations", _pooled(an), an["half_mse_closed_form"])
        )
    zfb = m["zfb"]
    worst_gamma = max(max(by["gamma_rel_errors"]) for by in zfb["by_N"].values())  # every seed, converged or not
    out.append(
        Claim(
            "zfb_gamma",
            "Γ̂ = Â⁻¹ read from every ZFB-initialised model equals Γ = (1 + 1/N)Λ + (tr Λ/N)·I (zfb_gamma), for N = "
            + ", ".join(zfb["by_N"])
            + "; worst relative Frobenius distance over seeds",
            0.0,
            worst_gamma,
            f"≤ {A_TOLERANCE} (stated: Adam noise floor)",
            worst_gamma <= A_TOLERANCE,
        )
    )
    zs, margins = [], []
    for by in zfb["by_N"].values():
        for cells in by["cells"].values():
            for c in cells:
                # what training left is computed exactly from the read-out Γ̂ (not Monte Carlo): it widens the band
                margin = 3 * c["se"] + abs(c["readout_exact"] - c["closed_form"])
                zs.append(abs(c["half_mse"] - c["closed_form"]) / margin)
                margins.append(margin)
    conv = [by["converged"] for by in zfb["by_N"].values()]
    worst = max(zs) if zs and all(conv) else float("nan")
    out.append(
        Claim(
            "zfb_lengths_and_shift",
            f"ZFB's model (trained at N, 1/M normalisation) on prompts of length M ∈ {zfb['test_lengths']} with "
            "x ~ N(0, Λ) and under covariate shift (x ~ N(0, Λ reversed)) has ½·MSE ½·zfb_excess_risk(Λ, N, M, "
            f"Λ_test) in each of {len(zs)} cells (seed mean over the converged seeds: "
            + ", ".join(f"N = {N}: {c}" for N, c in zip(zfb["by_N"], conv))
            + "); measured: the worst |measured − closed form| / tolerance, tolerance 3 SE over prompts + |exact "
            "risk of the read-out Γ̂ − closed form| (what training left, computed exactly)",
            "≤ 1",
            worst,
            f"3 SE + training gap (largest {max(margins, default=float('nan')):.2g})",
            bool(worst <= 1),
        )
    )
    if scale_name != "paper":
        for i, c in enumerate(out):
            if not c.holds:
                out[i] = Claim(
                    c.id,
                    c.description + f" — does not hold at {scale_name} scale",
                    c.reference,
                    c.measured,
                    c.tolerance,
                    c.holds,
                )
    return out


def _pooled(an: dict[str, Any]) -> dict[str, Any]:
    """The converged seeds of both initialisations as one sample: their seed-weighted mean and its SE (the prompts
    are shared, so the SEs of the two seed means are nearly fully correlated: take the larger)."""
    parts = [an[k] for k in ("default", "zfb") if an[k]["converged"]]
    if not parts:
        return {**an["default"], "converged_half_mse": float("nan")}
    w = np.array([p["converged"] for p in parts], dtype=float)
    mean = float(np.dot(w, [p["converged_half_mse"] for p in parts]) / w.sum())
    return {
        "converged_half_mse": mean,
        "converged_half_mse_se": max(p["converged_half_mse_se"] for p in parts),
        "converged": int(w.sum()),
        "seeds": an["default"]["seeds"] + an["zfb"]["seeds"],
    }


def figures(root: Path, m: dict[str, Any], curves: dict[str, np.ndarray], steps: np.ndarray) -> list[Path]:
    figs = [_eigen_figure(root / "preconditioner_eigenvalues.png", m), _seed_figure(root / "seed_losses.png", m)]
    figs.append(_curves_figure(root / "training_curves_anisotropic.png", curves, steps))
    zfb = m["zfb"]
    for N, by in zfb["by_N"].items():
        if not by["cells"]:  # no converged seed at this N
            continue
        M = np.array(zfb["test_lengths"])
        series, bands = {}, {}
        for shift, label in (("none", "Λ"), ("reversed", "Λ reversed")):
            cells = by["cells"][shift]
            mean = np.array([c["half_mse"] for c in cells])
            se = np.array([c["se"] for c in cells])
            series[f"trained, test x ~ N(0, {label}) (±2 SE)"] = mean
            bands[f"trained, test x ~ N(0, {label}) (±2 SE)"] = (mean - 2 * se, mean + 2 * se)
            series[f"ZFB closed form, {label}"] = np.array([c["closed_form"] for c in cells])
        figs.append(
            plotting.plot_curves(
                M,
                series,
                root / f"zfb_lengths_N{N}.png",
                xlabel=f"test context length M (trained at N = {N})",
                ylabel="½·MSE",
                title="ZFB: error at other lengths and under covariate shift",
                logx=True,
                bands=bands,
            )
        )
    return figs


def _eigen_figure(path: Path, m: dict[str, Any]) -> Path:
    an = m["anisotropic"]
    panels = [
        ("1 isotropic", m["isotropic"], m["isotropic"]["A_star"]),
        ("2 Σ / Σ⁻¹", m["precond"], m["precond"]["A_star"]),
    ]
    panels += [(f"3 Λ, {init} init", an[init], an["A_star"]) for init in ("default", "zfb") if init in an]
    fig = plotting.new_figure(3.2 * len(panels), 3.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, c, A_star) in zip(axes, panels):
        ref = np.sort(np.linalg.eigvalsh(np.array(A_star)))
        idx = np.arange(1, len(ref) + 1)
        for k, s in enumerate(c["seeds"]):
            ev = np.sort(s["A_singular_values"])
            ax.plot(
                idx + 0.08 * (k - len(c["seeds"]) / 2),
                ev,
                "o",
                ms=4,
                alpha=0.7,
                color="C0" if s["converged"] else "C3",
                label=("trained seeds" if k == 0 else None),
            )
        ax.plot(idx, ref, "_", ms=18, mew=2, color="k", label="optimal A*")
        ax.set_title(title, fontsize="medium")
        plotting.style_axes(ax, xlabel="index (ascending)", ylabel="singular values of Â" if ax is axes[0] else "")
    axes[0].legend(frameon=False, fontsize="small")
    fig.suptitle("Singular values of the trained Â (blue: converged seed, red: not) and of the optimal A*")
    return plotting.save_figure(fig, path)


def _seed_figure(path: Path, m: dict[str, Any]) -> Path:
    an = m["anisotropic"]
    inits = [k for k in ("default", "zfb") if k in an]
    fig = plotting.new_figure(5.0, 3.6)
    ax = fig.subplots()
    for i, init in enumerate(inits):
        seeds = an[init]["seeds"]
        losses = np.array([s["half_mse"] for s in seeds])
        colours = ["C0" if s["converged"] else "C3" for s in seeds]
        ax.scatter(i + np.linspace(-0.15, 0.15, len(seeds)), losses, c=colours, s=25, zorder=3)
    ax.axhline(an["half_mse_closed_form"], color="k", lw=1, label="optimal A* (closed form)")
    ax.axhline(an["zero_predictor_half_mse"], color="grey", ls="--", lw=1, label="predicting 0")
    ax.set_xticks(range(len(inits)), [f"{k} init" for k in inits])
    ax.set_yscale("log")
    plotting.style_axes(ax, xlabel="initialisation", ylabel="held-out ½·MSE per seed")
    ax.legend(frameon=False, fontsize="small")
    fig.suptitle("Anisotropic Λ: final loss of every seed (red: not converged)")
    return plotting.save_figure(fig, path)


def _curves_figure(path: Path, curves: dict[str, np.ndarray], steps: np.ndarray) -> Path:
    fig = plotting.new_figure(5.5, 3.8)
    ax = fig.subplots()
    for k, (init, c) in enumerate(curves.items()):
        for s, curve in enumerate(c):
            ax.plot(
                steps,
                curve,
                color=f"C{k}",
                alpha=0.7,
                lw=1.2,
                label=f"{init} init ({len(c)} seeds)" if s == 0 else None,
            )
    ax.set_yscale("log")
    plotting.style_axes(ax, xlabel="training step", ylabel="held-out ½·MSE (2 000 prompts)")
    ax.legend(frameon=False, fontsize="small")
    fig.suptitle("Anisotropic Λ: training curve of every seed")
    return plotting.save_figure(fig, path)
