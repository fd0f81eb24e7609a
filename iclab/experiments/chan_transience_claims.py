"""Chan et al.'s and Singh et al.'s findings checked against iclab's measurements, and the report's tables and figures
(iclab.experiments.chan_transience).

Allowances stated here (each claim's text repeats its reason):
  COEXIST 0.4  "both strategies present": in-context and in-weights accuracy each ≥ 0.4 (chance 1/L = 0.0625 at
               smoke scale); Chan et al. report both well above chance near α = 1, not a level
  EMERGED 0.5  the transience runs must first learn in context: a logged peak ≥ 0.5
  FADED   0.5  "transient": the final in-context accuracy at most half its peak (Singh et al.: it falls back towards
               chance)
  TAKEN   0.9  in-weights accuracy at the end of the transience runs (the in-weights solution took over)
  FALLING 0.5  the held-out cross-entropy at the end at most half of its value at the ICL peak: the loss keeps
               falling while ICL fades (the logged values are on `train_eval_prompts` prompts)
Accuracies differences are judged by binomial standard errors on n_eval prompts.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from iclab import plotting
from iclab.algorithms.icl_classification import binomial_se
from iclab.experiments.reddy_claims import highest, lowest
from iclab.report import Claim, format_table

__all__ = ["chan_claims", "figures", "tables"]

COEXIST, EMERGED, FADED, TAKEN, FALLING = 0.4, 0.5, 0.5, 0.9, 0.5


def _mean(entry: dict[str, Any], key: str) -> float:
    return float(np.mean([s[key] for s in entry["seeds"]]))


def chan_claims(m: dict[str, Any], scale_name: str) -> list[Claim]:
    """The findings (module docstring of iclab.experiments.chan_transience), each for every seed."""
    st = m["setting"]
    n = st["n_eval"]
    first, last = m["alphas"][0], m["alphas"][-1]
    a0, a1 = first["alpha"], last["alpha"]
    scale = f" ({scale_name} scale, K = {st['alpha_classes']}, {st['alpha_steps']} steps)"
    claims = []

    for key, label, sign in (("icl", "ICL falls", 1), ("iwl", "IWL rises", -1)):
        diff = sign * (_mean(first, key) - _mean(last, key))
        se = math.hypot(binomial_se(_mean(first, key), n), binomial_se(_mean(last, key), n))
        what = "in-context (novel classes)" if key == "icl" else "in-weights"
        claims.append(
            Claim(
                f"{label} with the Zipf exponent",
                f"{what} accuracy at α = {a0:g} {'minus' if sign > 0 else 'subtracted from'} α = {a1:g} (seed "
                f"means); holds if > 4 SE{scale}.",
                "> 0 (Chan et al. Fig. 5)",
                diff,
                f"4 SE = {4 * se:.3g}",
                diff > 4 * se,
            )
        )
    at_one = [e for e in m["alphas"] if e["alpha"] == 1.0]
    if at_one:
        both = lowest([min(s["icl"], s["iwl"]) for s in at_one[0]["seeds"]])
        ends = [min(_mean(e, "icl"), _mean(e, "iwl")) for e in (first, last)]
        claims.append(
            Claim(
                "ICL and IWL coexist near α = 1",
                f"At α = 1: the lower of in-context and in-weights accuracy, worst seed; holds if ≥ {COEXIST} (stated: "
                f"both strategies well above chance {st['chance']:.3g}) while at α = {a0:g} and α = {a1:g} the lower "
                f"one is < {COEXIST} (measured {ends[0]:.3g}, {ends[1]:.3g}: only one strategy at the ends){scale}.",
                f"≥ {COEXIST} (Chan et al.: the 'sweet spot' at α ≈ 1)",
                both,
                "stated level",
                both >= COEXIST and highest(ends) < COEXIST,
            )
        )
    tr = m["transience"]
    tscale = (
        f" ({scale_name} scale, K = {st['transient_classes']}, B = {st['transient_burstiness']}, "
        f"p_bursty {st['p_bursty']:g}, {st['transient_steps']} steps)"
    )
    peak = lowest([t["peak_icl"] for t in tr])
    claims.append(
        Claim(
            "ICL emerges first",
            "The peak of the logged in-context accuracy, lowest seed (at steps "
            + ", ".join(f"{t['peak_step']:g}" for t in tr)
            + f"); holds if ≥ {EMERGED} (stated){tscale}.",
            f"≥ {EMERGED} (Singh et al. Fig. 1)",
            peak,
            "stated level",
            peak >= EMERGED,
        )
    )
    ratios = [t["final"]["icl"] / t["peak_icl"] if t["peak_icl"] > 0 else math.nan for t in tr]
    claims.append(
        Claim(
            "ICL is transient",
            "Final in-context accuracy (n_eval prompts) over its logged peak, highest seed; holds if each is ≤ "
            f"{FADED} (stated: it falls back towards chance {st['chance']:.3g}). Final: "
            + ", ".join(f"{t['final']['icl']:.3g}" for t in tr)
            + tscale
            + ".",
            f"≤ {FADED} (Singh et al.: ICL fades)",
            highest(ratios),
            "stated level",
            highest(ratios) <= FADED,
        )
    )
    taken = lowest([t["final"]["iwl"] for t in tr])
    claims.append(
        Claim(
            "IWL takes over",
            f"Final in-weights accuracy, lowest seed; holds if ≥ {TAKEN} (stated).",
            f"≥ {TAKEN}",
            taken,
            "stated level",
            taken >= TAKEN,
        )
    )
    falling = highest([t["final_loss"] / t["loss_at_peak"] if t["loss_at_peak"] > 0 else math.nan for t in tr])
    claims.append(
        Claim(
            "the loss keeps falling while ICL fades",
            "Held-out cross-entropy on the training distribution at the end over its value at the ICL peak, highest "
            f"seed; holds if ≤ {FALLING} (stated): the network converges to the in-weights solution, not back to "
            "a worse one.",
            f"≤ {FALLING} (Singh et al. Fig. 1)",
            falling,
            "stated level",
            falling <= FALLING,
        )
    )
    return claims


def tables(m: dict[str, Any]) -> list[tuple[str, str]]:
    """The α sweep (seed mean [min, max] of each accuracy) and the transience runs."""

    def band(entry: dict[str, Any], key: str) -> str:
        v = [s[key] for s in entry["seeds"]]
        return f"{np.mean(v):.3f} [{min(v):.3f}, {max(v):.3f}]"

    rows = [{"α": e["alpha"], "ICL (novel classes)": band(e, "icl"), "IWL": band(e, "iwl")} for e in m["alphas"]]
    trans = [
        {
            "seed": s,
            "peak ICL (logged)": t["peak_icl"],
            "at step": t["peak_step"],
            "final ICL": t["final"]["icl"],
            "final IWL": t["final"]["iwl"],
            "loss at peak": t["loss_at_peak"],
            "final loss": t["final_loss"],
        }
        for s, t in enumerate(m["transience"])
    ]
    return [
        ("In-context vs in-weights accuracy over the Zipf exponent α", format_table(rows)),
        ("Transience: in-context accuracy peaks, then fades", format_table(trans)),
    ]


def figures(fig_dir: Path, m: dict[str, Any]) -> list[Path]:
    """zipf_alpha.png (ICL and IWL over α, seeds and mean) and transience.png (the curves of every seed)."""
    st = m["setting"]
    fig = plotting.new_figure(5.5, 4.0)
    ax = fig.subplots()
    alphas = [e["alpha"] for e in m["alphas"]]
    for key, color, label in (("icl", "C0", "in-context (novel classes)"), ("iwl", "C3", "in-weights")):
        values = np.array([[s[key] for s in e["seeds"]] for e in m["alphas"]])  # [α, seed]
        ax.plot(alphas, values.mean(1), "o-", color=color, label=label)
        ax.fill_between(alphas, values.min(1), values.max(1), color=color, alpha=0.2, lw=0)
    ax.axhline(st["chance"], color="0.5", lw=0.8, ls=":", label="chance")
    plotting.style_axes(ax, xlabel="Zipf exponent α (p_k ∝ k^−α)", ylabel="accuracy")
    ax.set_title(f"K = {st['alpha_classes']}, p_bursty {st['p_bursty']:g} (band: {m['seeds']} seeds)")
    ax.legend(fontsize=8)
    paths = [plotting.save_figure(fig, fig_dir / "zipf_alpha.png")]

    fig = plotting.new_figure(10.0, 4.0)
    axes = fig.subplots(1, 2)
    for s, t in enumerate(m["transience"]):
        c, style = t["curve"], "-" if s == 0 else "--"
        axes[0].plot(c["step"], c["icl_accuracy"], style, color="C0", label=f"ICL (seed {s})")
        axes[0].plot(c["step"], c["iwl_accuracy"], style, color="C3", label=f"IWL (seed {s})")
        axes[0].plot(c["step"], c["induction_score"], style, color="C2", lw=1, label=f"induction score (seed {s})")
        axes[1].plot(c["step"], c["eval_cross_entropy"], style, color="C1", label=f"seed {s}")
    axes[0].axhline(st["chance"], color="0.5", lw=0.8, ls=":", label="chance")
    plotting.style_axes(axes[0], xlabel="step", ylabel="accuracy / attention score")
    plotting.style_axes(axes[1], xlabel="step", ylabel="held-out cross-entropy (training distribution)")
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7, ncol=2, loc="center right")
    axes[1].legend(fontsize=7)
    fig.suptitle(
        f"Transient in-context learning: K = {st['transient_classes']}, B = {st['transient_burstiness']}, "
        f"p_bursty {st['p_bursty']:g}"
    )
    paths.append(plotting.save_figure(fig, fig_dir / "transience.png"))
    return paths
