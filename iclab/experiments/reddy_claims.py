"""Reddy 2023's findings checked against iclab's measurements, and the report's tables and figures
(iclab.experiments.reddy).

Allowances stated here (each claim's text repeats its reason):
  ICL_LEVEL  0.8   "high in-context accuracy": Reddy's ICL cells reach ≈ 1; smoke training is a few thousand steps
  IWL_LEVEL  0.8   "learns in weights": the same for in-weights accuracy on i.i.d. few-class prompts
  BOTH_LEVEL 0.6   the both-strategies model must have learnt each strategy for its ablation to say anything
  LEAK       0.05  in-context accuracy left after ablating the second layer's head: the first layer's query row
                   still reads the context (measured 0.02 above chance in tests/test_interventions.py)
  ABRUPT     0.5   "abrupt": the middle half of the jump (from 25 % to 75 % of the way from the plateau to the final
                   in-context accuracy) takes at most half as long as the time before it (t_0.75 − t_0.25 ≤ 0.5 ·
                   t_0.25). The plateau is the context-label shortcut's accuracy B/N (predict one of the N/B labels in
                   the context: Reddy's slow first phase, logged as context_label_accuracy), not chance 1/L, which
                   the shortcut leaves within tens of steps. A linear ramp from step 0 scores 2, a saturating
                   exponential 3.8, a plateau followed by a step 0; timings are on the evaluation grid
Everything else is judged by binomial standard errors of accuracies on n_eval prompts, or by the evaluation interval.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iclab import plotting
from iclab.algorithms.icl_classification import binomial_se
from iclab.report import Claim, format_table

__all__ = ["figures", "highest", "lowest", "reddy_claims", "rise_steps", "tables"]

ICL_LEVEL, IWL_LEVEL, BOTH_LEVEL, LEAK, ABRUPT = 0.8, 0.8, 0.6, 0.05, 0.5


def _crossing(steps: np.ndarray, values: np.ndarray, level: float) -> float | None:
    """The first step at which `values` reaches `level`, linearly interpolated between evaluations (None: never)."""
    above = np.nonzero(values >= level)[0]
    if len(above) == 0:
        return None
    i = int(above[0])
    if i == 0:
        return float(steps[0])
    s0, s1, v0, v1 = steps[i - 1], steps[i], values[i - 1], values[i]
    return float(s0 + (level - v0) / (v1 - v0) * (s1 - s0)) if v1 != v0 else float(s1)


def rise_steps(history: pd.DataFrame, plateau: float) -> dict[str, Any]:
    """When one member's in-context accuracy jumped (module docstring of iclab.experiments.reddy): t_q for q = 0.25,
    0.5, 0.75 of the way from the `plateau` level to the final accuracy, the induction score's t_0.5 (from its first
    to its final value), and the rise over the plateau (t_0.75 − t_0.25) / t_0.25."""
    rows = history[history["icl_accuracy"].notna()].sort_values("step")
    steps = rows["step"].to_numpy(dtype=float)
    acc = rows["icl_accuracy"].to_numpy(dtype=float)
    out: dict[str, Any] = {"plateau": plateau, "final_icl": float(acc[-1])}
    gain = acc[-1] - plateau
    for q in (0.25, 0.5, 0.75):
        out[f"t{int(q * 100)}"] = _crossing(steps, acc, plateau + q * gain) if gain > 0 else None
    if "induction_score" in rows:
        score = rows["induction_score"].to_numpy(dtype=float)
        out.update(initial_induction=float(score[0]), final_induction=float(score[-1]))
        rise = score[-1] - score[0]
        out["induction_t50"] = _crossing(steps, score, score[0] + 0.5 * rise) if rise > 0 else None
    t25, t75 = out["t25"], out["t75"]
    out["rise_over_plateau"] = (t75 - t25) / t25 if t25 and t75 is not None else None
    return out


def lowest(values: list[float]) -> float:
    """The smallest value; NaN (the claim fails) if any is NaN, e.g. a diverged member's."""
    return math.nan if any(math.isnan(v) for v in values) else min(values)


def highest(values: list[float]) -> float:
    """The largest value; NaN (the claim fails) if any is NaN."""
    return math.nan if any(math.isnan(v) for v in values) else max(values)


def _cell(m: dict[str, Any], b: int, k: int) -> list[dict[str, float]]:
    for c in m["cells"]:
        if c["burstiness"] == b and c["log2_classes"] == k:
            return c["seeds"]
    raise KeyError((b, k))


def _mean(seeds: list[dict[str, float]], key: str) -> float:
    return float(np.mean([s[key] for s in seeds]))


def reddy_claims(m: dict[str, Any], scale_name: str) -> list[Claim]:
    """Reddy's findings (module docstring of iclab.experiments.reddy), each for every seed."""
    st = m["setting"]
    n, chance, every = st["n_eval"], st["chance"], st["eval_every"]
    bs = sorted({c["burstiness"] for c in m["cells"]})
    ks = sorted({c["log2_classes"] for c in m["cells"]})
    fb, fk = st["flagship"]["burstiness"], st["flagship"]["log2_classes"]
    scale = f" ({scale_name} scale, {st['steps']} steps)"
    claims = []

    flag = _cell(m, fb, fk)
    low = lowest([s["icl"] for s in flag])
    claims.append(
        Claim(
            "bursty prompts, many classes → in-context learning",
            f"In-context accuracy (novel classes) of every seed at B = {fb}, K = 2^{fk}; holds if each is ≥ "
            f"{ICL_LEVEL} (stated: Reddy's ICL cells reach ≈ 1, smoke training is short){scale}.",
            f"≥ {ICL_LEVEL} (Reddy Fig. 2: ≈ 1)",
            low,
            "stated level",
            low >= ICL_LEVEL,
        )
    )
    iid = _cell(m, 0, ks[0])
    iwl_low = lowest([s["iwl"] for s in iid])
    icl_high = highest([s["icl"] for s in iid])
    holds = iwl_low >= IWL_LEVEL and icl_high - chance <= 4 * binomial_se(chance, n)
    claims.append(
        Claim(
            "i.i.d. prompts, few classes → in-weights learning",
            f"At B = 0 (i.i.d. prompts), K = 2^{ks[0]}: every seed's in-weights accuracy ≥ {IWL_LEVEL} (stated) and "
            f"in-context accuracy within 4 binomial SE of chance 1/L = {chance:.4g} (measured: the seeds' lowest IWL; "
            f"highest ICL {icl_high:.3g}){scale}.",
            f"IWL ≥ {IWL_LEVEL}, ICL ≈ chance",
            iwl_low,
            f"ICL ≤ chance + {4 * binomial_se(chance, n):.3g}",
            bool(holds),
        )
    )
    grow_b = _mean(_cell(m, bs[-1], fk), "icl") - _mean(_cell(m, 0, fk), "icl")
    se_b = math.hypot(binomial_se(_mean(_cell(m, bs[-1], fk), "icl"), n), binomial_se(_mean(_cell(m, 0, fk), "icl"), n))
    claims.append(
        Claim(
            "ICL grows with burstiness",
            f"In-context accuracy at K = 2^{fk}: B = {bs[-1]} minus B = 0 (seed means); holds if > 4 SE.",
            "> 0 (Reddy Fig. 2)",
            grow_b,
            f"4 SE = {4 * se_b:.3g}",
            grow_b > 4 * se_b,
        )
    )
    a, b_ = _mean(_cell(m, fb, fk), "icl"), _mean(_cell(m, fb, ks[0]), "icl")
    se_k = math.hypot(binomial_se(a, n), binomial_se(b_, n))
    claims.append(
        Claim(
            "ICL grows with the number of classes",
            f"In-context accuracy at B = {fb}: K = 2^{fk} minus K = 2^{ks[0]} (seed means); holds if > 4 SE.",
            "> 0 (Reddy Fig. 2)",
            a - b_,
            f"4 SE = {4 * se_k:.3g}",
            a - b_ > 4 * se_k,
        )
    )
    a, b_ = _mean(_cell(m, 0, ks[0]), "iwl"), _mean(_cell(m, 0, ks[-1]), "iwl")
    se_w = math.hypot(binomial_se(a, n), binomial_se(b_, n))
    claims.append(
        Claim(
            "IWL falls with the number of classes",
            f"In-weights accuracy at B = 0: K = 2^{ks[0]} minus K = 2^{ks[-1]} (seed means); holds if > 4 SE (each "
            "class is seen less often as K grows).",
            "> 0 (Reddy Fig. 2)",
            a - b_,
            f"4 SE = {4 * se_w:.3g}",
            a - b_ > 4 * se_w,
        )
    )
    ratios = [t["rise_over_plateau"] for t in m["transition"]]
    worst = max((r for r in ratios if r is not None), default=math.nan)  # NaN: not measured (no transition)
    plateau = m["transition"][0]["plateau"]
    claims.append(
        Claim(
            "the transition is abrupt",
            f"At B = {fb}, K = 2^{fk}: (t_0.75 − t_0.25)/t_0.25 of in-context accuracy for every seed, t_q the step at "
            f"which it covered q of its rise from the context-label plateau B/N = {plateau:.3g} to its final value "
            f"(on the evaluation grid, every {every} steps); holds if each is ≤ {ABRUPT} (stated: the middle half of "
            "the jump at most half as long as the plateau before it; a linear ramp scores 2). Seeds: "
            + ", ".join("—" if r is None else f"{r:.2f}" for r in ratios),
            f"≤ {ABRUPT} (Reddy Fig. 3: a plateau, then a jump)",
            worst,
            "evaluation grid",
            all(r is not None and r <= ABRUPT for r in ratios),
        )
    )
    gaps = [
        None if t["t50"] is None or t.get("induction_t50") is None else abs(t["induction_t50"] - t["t50"])
        for t in m["transition"]
    ]
    worst_gap = max((g for g in gaps if g is not None), default=math.nan)  # NaN: not measured (no transition)
    claims.append(
        Claim(
            "the induction head forms when ICL jumps",
            f"|t_0.5(induction score) − t_0.5(in-context accuracy)| at B = {fb}, K = 2^{fk} for every seed "
            f"(the induction score: the query's attention on its class's labels, best head); holds if each is within "
            f"two evaluation intervals ({2 * every} steps).",
            "0 (Reddy Fig. 4)",
            worst_gap,
            f"{2 * every} steps",
            all(g is not None and g <= 2 * every for g in gaps),
        )
    )
    both = m["both"]
    learnt = lowest([min(s["icl"], s["iwl"]) for s in both])
    claims.append(
        Claim(
            "one network learns both strategies",
            f"The both-strategies model (K = 2^{st['both_log2_classes']}, i.i.d. prompts mixed with ½ novel-class "
            f"bursty prompts): the lower of its in-context and in-weights accuracies, over seeds; holds if ≥ "
            f"{BOTH_LEVEL} (stated: the ablation below needs both).",
            f"≥ {BOTH_LEVEL}",
            learnt,
            "stated level",
            learnt >= BOTH_LEVEL,
        )
    )
    ablated = [s["icl_ablated"] for s in both] + [s["icl_ablated"] for s in m["flagship_ablation"]]
    claims.append(
        Claim(
            "ablating the induction head → ICL at chance",
            f"In-context accuracy with the second layer's head zeroed ({st['ablation']}), both-strategies and "
            f"flagship models, every seed (highest shown); holds if each ≤ chance {chance:.4g} + {LEAK} (stated: the "
            "first layer's query row still reads the context).",
            f"chance {chance:.4g}",
            highest(ablated),
            f"+ {LEAK}",
            highest(ablated) <= chance + LEAK,
        )
    )
    drops = [s["iwl"] - s["iwl_ablated"] - 4 * binomial_se(s["iwl"], n) for s in both]
    claims.append(
        Claim(
            "ablating the induction head leaves IWL",
            "In-weights accuracy of the both-strategies model with the induction head zeroed minus without it, every "
            "seed (lowest shown); holds if no seed loses more than 4 SE.",
            "≥ 0",
            lowest([s["iwl_ablated"] - s["iwl"] for s in both]),
            "4 SE",
            all(d <= 0 for d in drops),
        )
    )
    return claims


def tables(m: dict[str, Any]) -> list[tuple[str, str]]:
    """The report's sections: the ICL and IWL phase diagrams (B rows, K columns; seed mean [min, max]), the
    transition per seed and the ablation."""
    bs = sorted({c["burstiness"] for c in m["cells"]})
    ks = sorted({c["log2_classes"] for c in m["cells"]})

    def band(seeds: list[dict[str, float]], key: str) -> str:
        v = [s[key] for s in seeds]
        return f"{np.mean(v):.3f} [{min(v):.3f}, {max(v):.3f}]"

    sections = []
    for key, label in (("icl", "in-context accuracy (novel classes)"), ("iwl", "in-weights accuracy")):
        rows = [{"B": b or "0 (i.i.d.)", **{f"K = 2^{k}": band(_cell(m, b, k), key) for k in ks}} for b in bs]
        sections.append((f"Phase diagram: {label}, seed mean [min, max]", format_table(rows)))
    rows = []
    for s, t in enumerate(m["transition"]):
        rows.append({"seed": s, **{k: "—" if v is None else v for k, v in t.items()}})
    sections.append(("Transition at the flagship cell (steps)", format_table(rows)))
    rows = [{"model": f"both-strategies, seed {s}", **v} for s, v in enumerate(m["both"])]
    rows += [{"model": f"flagship, seed {s}", **v} for s, v in enumerate(m["flagship_ablation"])]
    sections.append((f"Ablation ({m['setting']['ablation']})", format_table(rows)))
    return sections


def figures(fig_dir: Path, m: dict[str, Any]) -> list[Path]:
    """phase_diagram.png (ICL and IWL over B × K), transition.png (the flagship's curves per seed: accuracies,
    induction and previous-token scores, context-label accuracy CLA; held-out cross-entropy) and ablation.png."""
    return [_phase_diagram(fig_dir, m), _transition(fig_dir, m), _ablation(fig_dir, m)]


def _phase_diagram(fig_dir: Path, m: dict[str, Any]) -> Path:
    bs = sorted({c["burstiness"] for c in m["cells"]})
    ks = sorted({c["log2_classes"] for c in m["cells"]})
    fig = plotting.new_figure(10.0, 4.2)
    axes = fig.subplots(1, 2)
    for ax, (key, title) in zip(axes, (("icl", "in-context accuracy"), ("iwl", "in-weights accuracy")), strict=True):
        grid = np.array([[_mean(_cell(m, b, k), key) for k in ks] for b in bs])
        image = ax.imshow(grid, origin="lower", vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for i in range(len(bs)):
            for j in range(len(ks)):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", color="w" if grid[i, j] < 0.6 else "k")
        ax.set_xticks(range(len(ks)), [f"$2^{{{k}}}$" for k in ks])
        ax.set_yticks(range(len(bs)), [str(b) if b else "0 (iid)" for b in bs])
        plotting.style_axes(ax, xlabel="classes K", ylabel="burstiness B")
        ax.set_title(f"{title} (mean of {m['seeds']} seeds)")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(f"ICL vs IWL over burstiness and classes (chance {m['setting']['chance']:.3g})")
    return plotting.save_figure(fig, fig_dir / "phase_diagram.png")


def _transition(fig_dir: Path, m: dict[str, Any]) -> Path:
    st = m["setting"]
    fig = plotting.new_figure(10.0, 4.0)
    axes = fig.subplots(1, 2)
    for s, curve in m["curves"].items():
        steps = curve["step"]
        style = "-" if s == "0" else "--"
        axes[0].plot(steps, curve["icl_accuracy"], style, color="C0", label=f"ICL accuracy (seed {s})")
        axes[0].plot(steps, curve["iwl_accuracy"], style, color="C3", label=f"IWL accuracy (seed {s})")
        axes[0].plot(steps, curve["induction_score"], style, color="C2", label=f"induction score (seed {s})")
        axes[0].plot(steps, curve["prev_token_score"], style, color="C4", lw=1, label=f"previous-token (seed {s})")
        if "context_label_accuracy" in curve:
            axes[0].plot(steps, curve["context_label_accuracy"], style, color="0.6", lw=1, label=f"CLA (seed {s})")
        axes[1].plot(steps, curve["eval_cross_entropy"], style, color="C1", label=f"seed {s}")
    axes[0].axhline(st["chance"], color="0.5", lw=0.8, ls=":", label="chance")
    plotting.style_axes(axes[0], xlabel="step", ylabel="accuracy / attention score")
    plotting.style_axes(axes[1], xlabel="step", ylabel="held-out cross-entropy")
    axes[0].legend(fontsize=6, ncol=2, loc="center right")
    axes[1].legend(fontsize=7)
    flag = st["flagship"]
    fig.suptitle(f"Abrupt in-context learning: B = {flag['burstiness']}, K = 2^{flag['log2_classes']}")
    return plotting.save_figure(fig, fig_dir / "transition.png")


def _ablation(fig_dir: Path, m: dict[str, Any]) -> Path:
    fig = plotting.new_figure(8.0, 3.8)
    ax = fig.subplots()
    models = [("both", s, v) for s, v in enumerate(m["both"])] + [
        ("flagship", s, v) for s, v in enumerate(m["flagship_ablation"])
    ]
    labels = [f"{kind} s{s}" for kind, s, _ in models]
    x = np.arange(len(models))
    bars = [("icl", "ICL"), ("icl_ablated", "ICL, head ablated"), ("iwl", "IWL"), ("iwl_ablated", "IWL, head ablated")]
    for i, (key, name) in enumerate(bars):
        ax.bar(x + (i - 1.5) * 0.2, [v[key] for _, _, v in models], 0.2, label=name)
    ax.axhline(m["setting"]["chance"], color="0.3", lw=0.8, ls=":", label="chance")
    ax.set_xticks(x, labels)
    plotting.style_axes(ax, xlabel="model", ylabel="accuracy")
    ax.legend(fontsize=7)
    ax.set_title(f"Ablating the induction head ({m['setting']['ablation']})")
    return plotting.save_figure(fig, fig_dir / "ablation.png")
