"""Tables, figures and claims of `iclab reproduce ahn` (iclab.experiments.ahn), from its metrics alone.

What is claimed (Ahn et al. for the setting trained): iclab's LSA has every block of KQ and OV free, Ahn et al.'s
*full* parametrisation, whose L-layer stationary points are GD++ (value x-block ∝ I, key-query x-block ∝ I on
isotropic inputs; on x ~ N(0, Σ) the change of variables z = Σ^{-1/2}x makes the key-query block ∝ Σ⁻¹: GD++
preconditioned by Σ⁻¹). Their "A_l ∝ Σ⁻¹ preconditioned GD" result is for the restricted (value x-block 0) form,
which is not trained here; so beyond one layer the claims are the full-parametrisation ones — every A_l ∝ Σ⁻¹, the
model *is* Σ⁻¹-preconditioned GD++ with its own per-layer numbers (projected onto that form it keeps its loss), and
it beats optimised L-step PGD (not "≈ PGD"). At one layer the two forms coincide: LSA = optimised 1-step PGD.

Converged seeds, judged against the other seeds of the same (task, L), not against a reference: a seed has
*converged* when its held-out ½·MSE is at most CONVERGED_FACTOR (1.5, stated) times the lowest ½·MSE among that
(task, L)'s seeds (converged_seeds; a NaN loss never converges; a lone seed is its own best, so it converges). At
the smoke budget some deep sigma seeds stall at a saddle with nearly dead layers, far off the best seed (--seeds 4:
L = 2 at 0.373, 0.319 against the best seed's 0.0272, 11.7–13.7x, and 0.08–0.29, 3–11x, in other runs; L = 3 at
0.0992 against 0.000287, 346x), while the seeds that reach the solution agree within 3.4 % (L = 1: 0.5653–0.5663;
L = 2: 0.02723–0.02780; L = 3: 0.000287–0.000297), so a factor of 1.5 separates the two with room on both sides. A
saddle is not the solution whose form is claimed, so the claims on the trained solution's form and loss read the
converged seeds (and fail, saying so, where none converged: only when every loss of an L is NaN), and
`{task}_seeds_converge` counts them: at least half at every L (a stated threshold), listing each unconverged seed
with its loss and the limit. Because the rule uses no reference loss, those claims test the converged solution on
their own: the deep-vs-PGD, layer-drop, alignment and projection claims can fail on converged seeds (if every seed
stalls alike, all count as converged and the claims fail on their merits). What this shares with mahankali-zfb is
the reporting — a convergence count beside claims on the converged seeds — not the rule: mahankali-zfb's is paired
against a closed form, which a deep model here lacks (the L-step GD++ reference is tuned, and at L = 3 its 0.0007 is
2.4x the 0.00029 the LSA reaches).

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

__all__ = [
    "CONVERGED_FACTOR",
    "MIN_CONVERGED",
    "ahn_claims",
    "converged_seeds",
    "convergence_limit",
    "figures",
    "tables",
]

PGD, GD, GDPP = "PGD (optimised A_l)", "GD", "GD++ (Σ⁻¹-preconditioned)"
TARGET = {"iso": "I", "sigma": "Σ⁻¹"}
SLACK = 0.02  # relative allowance for a finite training run
PROJ_SLACK = 0.05  # relative allowance for the off-form entries a finite run leaves (stated)
# a converged seed's ½·MSE is at most this many times the best seed's of its (task, L) (stated: stalled seeds sit
# 3–350x above the best, converged ones within 3.4 % of it at smoke scale; module docstring)
CONVERGED_FACTOR = 1.5
# the fraction of seeds that must converge at every L (stated: Ahn et al. train 5 seeds and report their spread; at
# the smoke budget with --seeds 4, 5 of the 8 deep sigma (L, seed) runs converged, 3 stalled)
MIN_CONVERGED = 0.5


def convergence_limit(half_mses: list[float]) -> float:
    """The largest held-out ½·MSE a converged seed of one (task, L) may have: CONVERGED_FACTOR times the lowest
    finite ½·MSE among its seeds (`half_mses`); NaN when none is finite."""
    finite = [v for v in half_mses if np.isfinite(v)]
    return CONVERGED_FACTOR * min(finite) if finite else float("nan")


def converged_seeds(half_mses: list[float]) -> list[bool]:
    """Which seeds of one (task, L) have converged, from their held-out ½·MSEs on the same prompts: those at most
    convergence_limit (CONVERGED_FACTOR × the best seed's), judged against each other, not against a reference. A NaN
    loss never converges; a lone (finite) seed is its own best, so it converges."""
    limit = convergence_limit(half_mses)
    return [bool(v <= limit) for v in half_mses]  # False for NaN (either side)


def _fmt(values: list[float]) -> str:
    return " / ".join(f"{v:.3g}" for v in values)


def _seed_mean(members: list[dict[str, Any]], field: str, layers: int) -> list[float]:
    """Per-layer seed mean of alignment[l][field] (NaN without members)."""
    if not members:
        return [float("nan")] * layers
    return [float(np.mean([m["alignment"][l][field] for m in members])) for l in range(layers)]


def _converged(t: dict[str, Any]) -> list[dict[str, Any]]:
    """The converged members of one (task, L)."""
    return [m for m, ok in zip(t["members"], t["converged"]) if ok]


def _counts(tr: dict[str, Any], layers: Any) -> str:
    """'L=1: 2 of 2, L=2: 1 of 2 seeds converged'."""
    return ", ".join(f"L={k}: {tr[str(k)]['n_converged']} of {len(tr[str(k)]['members'])}" for k in layers) + (
        " seeds converged"
    )


def _worst(values: list[float], largest: bool = True) -> float:
    """max (or min) of values; NaN if any is NaN or there are none."""
    if not values or any(not np.isfinite(v) for v in values):
        return float("nan")
    return float(max(values) if largest else min(values))


def tables(metrics: dict[str, Any], sc: Any) -> list[tuple[str, str]]:
    sections = []
    for key, m in metrics["tasks"].items():
        rows = []
        for k in sc.layers:
            ref, tr = m["references"][str(k)], m["trained"][str(k)]
            losses, members, conv = ref["half_mse"], _converged(tr), tr["converged_stats"]
            rows.append(
                {
                    "L": k,
                    "converged": f"{tr['n_converged']}/{len(tr['members'])}",
                    "LSA ½MSE": f"{conv['half_mse_mean']:.4g} ± {conv['half_mse_seed_se']:.2g}",
                    "LSA all seeds": tr["half_mse_mean"],
                    "LSA → GD++ form": float(np.mean([mm["projection_half_mse"] for mm in members]))
                    if members
                    else float("nan"),
                    "PGD opt.": losses[PGD],
                    "GD": losses[GD],
                    "GD++ (Σ⁻¹)": losses[GDPP],
                    "LSA / PGD": conv["half_mse_mean"] / losses[PGD],
                    f"cos(A_l, {TARGET[key]})": _fmt(_seed_mean(members, "cos", k)),
                    "off-diag": _fmt(_seed_mean(members, "off_diagonal", k)),
                    "η_l LSA": _fmt(_seed_mean(members, "eta", k)),
                    "η_l PGD": _fmt([a["eta"] for a in ref["pgd_alignment"]]),
                    "x-block LSA": _fmt(
                        [
                            float(np.mean([mm["xblock_ratio"][l] for mm in members])) if members else float("nan")
                            for l in range(k)
                        ]
                    ),
                    "x-block GD++": _fmt(ref["gdpp_xblock_ratio"]),
                }
            )
        title = "isotropic x ~ N(0, I)" if key == "iso" else "x ~ N(0, Σ), Σ = diag(1, 1, 1/4, 1/16, 1), w ~ N(0, Σ⁻¹)"
        note = (
            f"\n(½·MSE on the same held-out prompts; converged: seeds whose ½·MSE is at most {CONVERGED_FACTOR:g} × "
            "the lowest among that L's seeds (ahn_claims.converged_seeds; no reference loss); LSA: "
            "mean ± SE over the converged seeds, as are LSA → GD++ form, LSA / PGD and the LSA weight columns; LSA "
            "all seeds: mean over every seed; LSA → GD++ form: the "
            f"trained model projected onto {TARGET[key]}-preconditioned GD++ with its own per-layer numbers "
            f"(ahn.gdpp_projection); η_l: best scalar fit of A_l onto {TARGET[key]}; x-block: ‖OV_xx‖/(√d·|OV_yy|), "
            "GD++: γ_l·N/η_l)"
        )
        sections.append((f"Task {key}: {title}", format_table(rows) + note))
    return sections


def figures(out: Path, metrics: dict[str, Any], sc: Any) -> list[Path]:
    figs = []
    ks = np.array(sc.layers)
    for key, m in metrics["tasks"].items():
        tr, refs = m["trained"], m["references"]
        mean = np.array([tr[str(k)]["converged_stats"]["half_mse_mean"] for k in ks])
        se = np.array([tr[str(k)]["converged_stats"]["half_mse_seed_se"] for k in ks])
        lsa = "LSA trained (mean ± 2 SE over the converged seeds)"
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
    seed, member = _shown(metrics["tasks"]["sigma"]["trained"][deep])
    a = np.array(member["preconds"])  # [L, d, d]
    etas = [al["eta"] for al in member["alignment"]]
    figs.append(_heatmaps(a, etas, sigma, out / "preconditioners_sigma.png", seed))
    eig = {
        f"A_{l + 1} / η_{l + 1} (L = {deep}, seed {seed})": np.sort(np.linalg.eigvalsh((a[l] + a[l].T) / 2) / etas[l])
        for l in range(len(a))
    }
    seed1, member1 = _shown(metrics["tasks"]["sigma"]["trained"][str(sc.layers[0])])
    one = np.array(member1["preconds"][0])
    eta1 = member1["alignment"][0]["eta"]
    eig[f"A_1 / η_1 (L = {sc.layers[0]}, seed {seed1})"] = np.sort(np.linalg.eigvalsh((one + one.T) / 2) / eta1)
    eig["Σ⁻¹"] = np.sort(1 / sigma)
    figs.append(
        plotting.plot_curves(
            np.arange(1, len(sigma) + 1), eig, out / "eigenvalues_sigma.png", xlabel="eigenvalue index (sorted)",
            ylabel="eigenvalue", title="Eigenvalues of the learned A_l (rescaled) vs Σ⁻¹",
        )
    )  # fmt: skip
    return figs


def _shown(t: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The seed whose weights a figure shows: the first converged one (seed 0 if none converged)."""
    seed = next((s for s, ok in enumerate(t["converged"]) if ok), 0)
    return seed, t["members"][seed]


def _heatmaps(a: np.ndarray, etas: list[float], sigma: np.ndarray, path: Path, seed: int) -> Path:
    """Row 1: the trained A_l of the deepest model (seed `seed`); row 2: η_l·Σ⁻¹, the best scalar fit; one colour
    scale."""
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
    fig.suptitle(f"{layers}-layer LSA (seed {seed}), x ~ N(0, Σ): A_l (top) vs fit η_l·Σ⁻¹ (bottom)", fontsize="medium")
    return plotting.save_figure(fig, path)


def ahn_claims(metrics: dict[str, Any], sc: Any, seeds: int, scale_name: str = "smoke") -> list[Claim]:
    """The claims. Those on the trained solution's form and loss read the converged seeds (converged_seeds: within
    CONVERGED_FACTOR of the best seed of their (task, L)), each for its own reason (below); `{task}_seeds_converge`
    counts them. The rule uses no reference loss, so each of these claims can fail on converged seeds."""
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
        missing = [k for k in sc.layers if tr[str(k)]["n_converged"] == 0]
        none_note = f"; no seed converged at L = {', '.join(map(str, missing))}" if missing else ""
        first = sc.layers[0]
        if first == 1:
            # Over the converged seeds: the two-sided test against optimised PGD (full matrix, tuned on other
            # prompts) — the converged seeds' mean, and no converged seed better or worse than it beyond its own
            # prompts' Monte Carlo error (half_mse_se). A seed at the saddle (A = 0, ½·MSE ~3.7x the best seed's)
            # is not a 1-layer solution of another form: it is counted by {key}_seeds_converge.
            t1, pgd1 = tr["1"], refs["1"]["half_mse"][PGD]
            c1, conv = t1["converged_stats"], _converged(t1)
            tol = 3 * c1["gap_to_pgd_se"] + SLACK * pgd1
            gaps = [mm["gap_to_pgd"] for mm in conv]
            every = all(abs(mm["gap_to_pgd"]) <= 3 * mm["half_mse_se"] + SLACK * pgd1 for mm in conv)
            add(
                f"{key}_one_layer_matches_pgd",
                f"1-layer LSA ({key}) ½·MSE equals optimised 1-step PGD (seed mean over the converged seeds, "
                f"{t1['n_converged']} of {len(t1['members'])}, same prompts; and every converged seed within 3 of its "
                "prompt SEs + 2 %); gaps per converged seed " + (", ".join(f"{g:+.3g}" for g in gaps) or "none"),
                pgd1, c1["half_mse_mean"], f"3 SE + 2 % = {tol:.2g}",
                bool(conv) and abs(c1["gap_to_pgd_mean"]) <= tol and every,
            )  # fmt: skip
        deep = [k for k in sc.layers if k > 1]
        if deep:
            # Over the converged seeds: the claim is about the solution training reaches, not a saddle some seeds
            # stall at (at smoke scale sigma L = 2's stalled seeds sit at 0.08–0.37, the best seed at 0.027, PGD at
            # 0.184). Converged is judged against the other seeds, not PGD or GD++, so converged seeds that all sit
            # above PGD fail this claim.
            cs = {k: tr[str(k)]["converged_stats"] for k in deep}
            ratios = {k: cs[k]["half_mse_mean"] / refs[str(k)]["half_mse"][PGD] for k in deep}
            # below PGD by more than 3 SE: the full parametrisation's free x-block is GD++'s data transform, which
            # PGD lacks (Ahn et al.'s full-parametrisation stationary points are GD++, not PGD, beyond one layer)
            ok = all(cs[k]["gap_to_pgd_mean"] < -3 * cs[k]["gap_to_pgd_se"] for k in deep)  # False on NaN
            pp_ratio = {k: refs[str(k)]["half_mse"][GDPP] / refs[str(k)]["half_mse"][PGD] for k in deep}
            add(
                f"{key}_deep_beats_pgd",
                f"L ≥ 2-layer LSA ({key}, full parametrisation) beats optimised L-step PGD by more than 3 SE (its "
                "free x-block adds GD++'s data transform; seed mean over the converged seeds, "
                + _counts(tr, deep) + none_note + "); LSA/PGD ratios "
                + ", ".join(f"L={k}: {r:.3g}" for k, r in ratios.items())
                + "; tuned GD++ (Σ⁻¹) / PGD: "
                + ", ".join(f"L={k}: {pp_ratio[k]:.3g}" for k in deep),
                "< 1", _worst(list(ratios.values())), "gap < −3 SE", ok,
            )  # fmt: skip
        if len(sc.layers) > 1:
            # Over the converged seeds: the loss of the solution at each depth; a stalled deep seed is a training
            # failure, counted by {key}_seeds_converge, not a deeper model that does worse
            pairs = list(zip(sc.layers, sc.layers[1:]))
            drops = []
            for a, b in pairs:
                ta, tb = tr[str(a)]["converged_stats"], tr[str(b)]["converged_stats"]
                se = np.hypot(np.hypot(ta["half_mse_seed_se"], tb["half_mse_seed_se"]),
                              np.hypot(ta["half_mse_prompt_se"], tb["half_mse_prompt_se"]))  # fmt: skip
                drops.append(
                    (tb["half_mse_mean"] / ta["half_mse_mean"], ta["half_mse_mean"] - tb["half_mse_mean"] > 2 * se)
                )
            add(
                f"{key}_loss_drops_with_layers",
                f"LSA ({key}) ½·MSE falls with every added layer (each drop > 2 SE; seed means over the converged "
                f"seeds, {_counts(tr, sc.layers)}{none_note}); ratios "
                + ", ".join(f"L={b}/L={a}: {r:.3f}" for (a, b), (r, _) in zip(pairs, drops)),
                "< 1", _worst([r for r, _ in drops]), "drop > 2 SE", all(ok for _, ok in drops),
            )  # fmt: skip
        # Over the converged seeds: a stalled seed's dead layers (A_l ≈ 0) have no direction to align, and a layer
        # left on a plateau is not at the stationary point whose form Ahn et al. derive
        conv_members = [mm for k in sc.layers for mm in _converged(tr[str(k)])]
        cos = [al["cos"] for mm in conv_members for al in mm["alignment"]]
        off = [al["off_diagonal"] for mm in conv_members for al in mm["alignment"]]
        add(
            f"{key}_preconditioner_aligned",
            f"every layer's A_l ∝ {TARGET[key]} ({key}): smallest cosine with {TARGET[key]} over layers, L and the "
            f"converged seeds ({_counts(tr, sc.layers)}{none_note}; largest off-diagonal mass in Σ's eigenbasis "
            f"{_worst(off):.3f})",
            1.0, _worst(cos, largest=False), "cos ≥ 0.99", not missing and _worst(cos, largest=False) >= 0.99,
        )  # fmt: skip

        if sc.layers[0] == 1:
            # Over the converged seeds: a seed at the saddle has A ≈ 0, not a step of another size
            t1 = tr["1"]
            trained_eta = _seed_mean(_converged(t1), "eta", 1)[0]
            dev = abs(trained_eta / refs["1"]["pgd_alignment"][0]["eta"] - 1)
            add(
                f"{key}_one_layer_step_matches_pgd",
                f"the 1-layer LSA's step η (scalar fit of A onto {TARGET[key]}, mean over the converged seeds, "
                f"{t1['n_converged']} of {len(t1['members'])}) equals optimised 1-step PGD's (N/(N + d + 1) here): "
                "relative deviation",
                0.0, dev, "≤ 10 %", bool(dev <= 0.10),
            )  # fmt: skip
        # every converged model is Σ⁻¹-preconditioned GD++ with its own per-layer numbers: the model projected onto
        # that form (KQ_l = κ_l·blockdiag(Σ⁻¹, 0), OV_l = blockdiag(ρ_l·I, OV_l[y, y]), the rest 0;
        # ahn.gdpp_projection) predicts as well as the model, within 3 paired SE + PROJ_SLACK of the model's loss.
        # Over the converged seeds: the claim is the form of the stationary point training reaches; a stalled seed
        # sits at another (at smoke scale one with dead layers 2–3, whose projection changes its loss 7-fold)
        rel, ok_all = [], not missing
        for mm in conv_members:
            rel.append(mm["projection_gap"] / mm["half_mse"])
            ok_all &= abs(mm["projection_gap"]) <= 3 * mm["projection_gap_se"] + PROJ_SLACK * mm["half_mse"]
        add(
            f"{key}_is_gdpp_own_steps",
            f"every converged LSA ({key}, every L; {_counts(tr, sc.layers)}{none_note}) is Σ⁻¹-preconditioned GD++ "
            "with the per-layer steps read from its weights: the model projected onto that form (KQ_l[x, x] → κ_l·"
            + TARGET[key] + ", OV_l[x, x] → ρ_l·I, other blocks → 0) has its loss; largest relative change "
            "(projection − model)/model",
            0.0, max(rel, key=abs) if rel else float("nan"), f"3 paired SE + {PROJ_SLACK:.0%} of the model's loss",
            bool(ok_all),
        )  # fmt: skip
        # how many seeds reach that solution: a stated threshold, at least MIN_CONVERGED of them at every L
        fractions = {k: tr[str(k)]["n_converged"] / len(tr[str(k)]["members"]) for k in sc.layers}
        stalled = []
        for k in sc.layers:
            losses = [mm["half_mse"] for mm in tr[str(k)]["members"]]
            limit = convergence_limit(losses)
            stalled += [
                f"L={k} seed {s} (½·MSE {loss:.3g} > {CONVERGED_FACTOR:g} × {limit / CONVERGED_FACTOR:.3g} = "
                f"{limit:.3g})"
                if np.isfinite(loss) and np.isfinite(limit)
                else f"L={k} seed {s} (½·MSE {loss:.3g})"
                for s, (loss, ok) in enumerate(zip(losses, tr[str(k)]["converged"]))
                if not ok
            ]
        worst_fraction = _worst(list(fractions.values()), largest=False)
        add(
            f"{key}_seeds_converge",
            f"at every L at least half of the {key} seeds converge — ½·MSE at most {CONVERGED_FACTOR:g} × the lowest "
            "among that L's seeds (stated; at smoke scale a seed stalled at a saddle sits 3–350x above it): "
            + _counts(tr, sc.layers)
            + "; not converged: "
            + (", ".join(stalled) or "none")
            + "; measured: the smallest converged fraction over L",
            MIN_CONVERGED, worst_fraction, f"≥ {MIN_CONVERGED:g} at every L (stated)",
            bool(worst_fraction >= MIN_CONVERGED),
        )  # fmt: skip
    return claims
