"""The claims of `iclab reproduce he` (iclab.experiments.he) and their tolerances: loss against the debiased-GD
optimum, the circuits of the active heads, the implied step, and softmax against LSA at other prompt lengths."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from iclab.report import Claim

if TYPE_CHECKING:
    from iclab.experiments.he import Scale

__all__ = ["active_heads", "he_claims", "length_claim"]

# Claim tolerances, about twice the worst of smoke scale seeds 0–2 (tests/test_he.py has the measurements). The KQ
# ones are set by the 4-head model, whose weaker split heads are less clean at this budget (2 heads: off-diagonal
# mass ≤ 0.004, cv ≤ 0.03; 4 heads: ≤ 0.076, ≤ 0.15); a random 5×5 matrix has off-diagonal mass ≈ 0.8.
WITHIN_OPTIMUM = 0.05  # H ≥ 2 heads: |loss / optimum − 1| (the 5 %; measured ≤ 1.3 %)
ONE_HEAD_ABOVE = 1.2  # one head: loss / optimum at least this (measured 1.66–1.69)
KQ_OFF_DIAGONAL, KQ_DIAGONAL_CV = 0.15, 0.3
OV_LAST_ENTRY, OV_ZERO_SUM = 0.99, 0.05  # measured ≥ 0.9958, ≤ 0.008
ACTIVE_GAIN = 0.1  # circuit claims read the heads with |head gain| ≥ this × the largest (`active_heads`)
STEP_TOLERANCE = 0.10  # implied step within 10 % of 1/(L + d + σ²/τ²) (the issue's; measured ≤ 1.4 %)


def active_heads(layer: dict[str, Any]) -> dict[str, Any]:
    """Circuit statistics over the active heads: those with |head gain| ≥ ACTIVE_GAIN × the largest. A head that
    writes (almost) nothing has noise for a KQ / OV pattern (measured: one of 4 heads at gain 0.006 vs 0.44)."""
    kq, ov, gain = layer["kq"], layer["ov"], np.abs(layer["head_gain"])
    heads = [h for h, g in enumerate(gain) if g >= ACTIVE_GAIN * gain.max()]
    means = np.array(kq["diagonal_mean"])[heads]
    return {
        "heads": heads,
        "off_diagonal_mass": max(kq["off_diagonal_mass"][h] for h in heads),
        "diagonal_cv": max(kq["diagonal_cv"][h] for h in heads),
        "last_entry_mass": min(ov["last_entry_mass"][h] for h in heads),
        "opposite_signs": bool((means > 0).any() and (means < 0).any()),
        "signs": "".join(("+" if b > 0 else "−") if h in heads else "·" for h, b in enumerate(kq["diagonal_mean"])),
    }


def he_claims(sc: Scale, per_head, mc: float, se: float, closed: float, step_opt: float) -> list[Claim]:
    multi = [h for h in sc.heads if h >= 2]
    claims = [
        Claim(
            "optimum_closed_form",
            "Monte Carlo ½·MSE of debiased GD (optimal step) on the held-out prompts agrees with the closed form "
            "½(excess risk + σ²) (docs/papers.md §6–7)",
            closed,
            mc,
            f"3 SE = {3 * se:.2g}",
            abs(mc - closed) <= 3 * se,
        )
    ]
    for h in multi:
        ratio = per_head[str(h)]["ratio"]
        claims.append(
            Claim(
                f"heads_{h}_within_5pct",
                f"{h} heads: held-out ½·MSE within {WITHIN_OPTIMUM:.0%} (either side) of debiased GD with the optimal "
                f"step, on the same held-out prompts; ratio {ratio:.3f}",
                mc,
                per_head[str(h)]["half_mse"],
                f"±{WITHIN_OPTIMUM:.0%}",
                abs(ratio - 1) <= WITHIN_OPTIMUM,
            )
        )
    if 1 in sc.heads:
        ratio = per_head["1"]["ratio"]
        claims.append(
            Claim(
                "one_head_worse",
                f"1 head is markedly worse: held-out ½·MSE at least {ONE_HEAD_ABOVE - 1:.0%} above the debiased-GD "
                f"optimum; ratio {ratio:.3f}",
                mc,
                per_head["1"]["half_mse"],
                f"≥ {ONE_HEAD_ABOVE:g}x",
                ratio >= ONE_HEAD_ABOVE,
            )
        )
    if not multi:  # a scale without multi-head models has no circuits to compare
        return claims
    act = [per_head[str(h)]["active"] for h in multi]
    off, cv = max(a["off_diagonal_mass"] for a in act), max(a["diagonal_cv"] for a in act)
    last, zero = min(a["last_entry_mass"] for a in act), max(per_head[str(h)]["ov"]["zero_sum"] for h in multi)
    signs = all(a["opposite_signs"] for a in act)
    idle = sum(h - len(a["heads"]) for h, a in zip(multi, act))
    steps = [per_head[str(h)]["implied_step_ratio"] for h in multi]
    worst_step = max(steps, key=lambda r: abs(r - 1))
    heads_str = ", ".join(map(str, multi))
    claims += [
        Claim(
            "kq_diagonal_homogeneous",
            f"KQ x-blocks of every active head diagonal and homogeneous, with opposite signs across heads "
            f"({idle} idle head(s), |gain| < {ACTIVE_GAIN:g}× the largest, left out): worst off-diagonal mass / "
            "diagonal cv per head count: "
            + "; ".join(f"{h} heads {a['off_diagonal_mass']:.2g} / {a['diagonal_cv']:.2g}" for h, a in zip(multi, act))
            + f"; opposite signs: {signs}",
            0.0,
            off,
            f"≤ {KQ_OFF_DIAGONAL} (and cv ≤ {KQ_DIAGONAL_CV})",
            off <= KQ_OFF_DIAGONAL and cv <= KQ_DIAGONAL_CV and signs,
        ),
        Claim(
            "ov_last_entry_zero_sum",
            f"OV ({heads_str} heads): the rows of the active heads that write the prediction are last-entry-only "
            f"(min y→y mass {last:.4f}, ≥ {OV_LAST_ENTRY}) and the y→y entries of all heads cancel (max "
            f"|Σ_h OV_h[y,y]| / Σ_h |OV_h[y,y]| = {zero:.2g}, ≤ {OV_ZERO_SUM})",
            0.0,
            zero,
            f"≤ {OV_ZERO_SUM} (and last entry ≥ {OV_LAST_ENTRY})",
            last >= OV_LAST_ENTRY and zero <= OV_ZERO_SUM,
        ),
        Claim(
            "implied_step_matches",
            f"implied debiased-GD step Σ_h g_h / L within {STEP_TOLERANCE:.0%} of the optimal 1/(L + d + σ²/τ²) "
            f"= {step_opt:.4g} for {heads_str} heads; ratios " + ", ".join(f"{r:.3f}" for r in steps),
            1.0,
            worst_step,
            f"±{STEP_TOLERANCE:.0%}",
            abs(worst_step - 1) <= STEP_TOLERANCE,
        ),
    ]
    return claims


def length_claim(per_head, lsa: dict[str, Any], L: int, lengths: tuple[int, ...]) -> Claim:
    """Softmax (every H ≥ 2) below LSA at every test length L' ≠ L. Robust by construction: LSA's fixed per-point
    step is L'/L times the right size, while softmax averages (smoke seeds 0–2: worst softmax / LSA ratio 0.78, at
    L' = 20; tests/test_he.py)."""
    others = [i for i, n in enumerate(lengths) if n != L]
    ratios = [
        m["length_half_mse"][i] / lsa["length_half_mse"][i] for h, m in per_head.items() if int(h) >= 2 for i in others
    ]
    worst = max(ratios)
    return Claim(
        "softmax_length_generalises",
        "at every test length L' ≠ L ("
        + ", ".join(str(lengths[i]) for i in others)
        + f") every softmax model with ≥ 2 heads has a lower ½·MSE than the one-layer LSA trained at L = {L}; "
        "measured: the largest softmax / LSA loss ratio",
        "< 1",
        worst,
        "< 1",
        worst < 1,
    )
