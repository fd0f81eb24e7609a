"""`iclab analyze RUN`: mechanistic analyses of a trained run, each writing a figure and a JSON summary.

Analyses (``--what``, comma-separated):
  implicit    Akyürek's implicit linear model: ŵ fitted to the model's answers at 2d + 1 probe queries, its R² and
              its agreement with OLS, ridge and one tuned GD step (iclab.analysis.implicit)
  probes      linear probes per layer for w and Xᵀy, held-out R² (iclab.analysis.probes)
  weights     KQ / OV (W_KQ / W_PV) heatmaps per layer and head, diagonal-homogeneity and zero-sum statistics
              (iclab.analysis.patterns)
  alignment   layer ↔ iteration alignment with GD steps and Newton iterations (iclab.analysis.alignment)
  induction   class-label runs (icl_classification; the only analysis they take, and their default): per layer and
              head, the attention the query pays to the context items of its own class (their labels, for the
              interleaved gpt / attn_only: iclab.analysis.induction; their tokens, which hold item and label, for
              the concat softmax), against uniform attention, on the in-context split ("icl": novel classes)
Prompts are drawn from the run's own task with `--seed` (apart from its training and held-out prompts).
Results go to RUN/analysis/ (or --out): <analysis>.json and figures/<analysis>*.png, plus summary.json.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from iclab.config import ConfigError, ExperimentConfig, config_from_dict
from iclab.runs import RunDir, atomic_write_bytes
from iclab.tasks import Prompts, make_task
from iclab.training.trainer import load_model

__all__ = ["ANALYSES", "analyze_run"]


def _implicit(model, config: ExperimentConfig, prompts: Prompts, out: Path, gen: torch.Generator) -> dict[str, Any]:
    from iclab.analysis.implicit import implicit_summary, make_references, plot_implicit

    task = make_task(config.task)
    summary, fits = implicit_summary(model, prompts, make_references(("ols", "ridge", "gd:1"), task), generator=gen)
    fig = plot_implicit(fits["model"].w, fits["ols"].w, fits["model"].r2, out / "figures" / "implicit.png",
                        reference="ols", title=f"{config.name}: implicit linear model")  # fmt: skip
    return {**summary, "figure": str(fig)}


def _probes(model, config: ExperimentConfig, prompts: Prompts, out: Path, gen: torch.Generator) -> dict[str, Any]:
    from iclab.analysis.probes import plot_probes, probe_model

    summary = probe_model(model, prompts)
    fig = plot_probes(summary, out / "figures" / "probes.png", title=f"{config.name}: linear probes")
    return {**summary, "figure": str(fig)}


def _weights(model, config: ExperimentConfig, prompts: Prompts, out: Path, gen: torch.Generator) -> dict[str, Any]:
    from iclab.analysis.patterns import attention_patterns, circuit_statistics

    inner = getattr(model, "lsa", model)  # LSA on learned features: its LSA layers
    if config.model.name not in ("lsa", "softmax", "lsa_features", "separate"):  # circuits on concat-like tokens
        raise ConfigError(
            f"what: 'weights' reads the KQ / OV circuits of lsa, softmax, lsa_features and separate models, "
            f"not of model {config.model.name!r}"
        )
    title = f"{config.name}: KQ / OV per layer and head"
    summary = circuit_statistics(inner, out / "figures" / "weights.png", title=title)
    if inner is model and hasattr(model, "blocks"):
        summary["patterns"] = attention_patterns(model, prompts[:512], out / "figures" / "patterns.png",
                                                 title=f"{config.name}: attention rows of the queries")  # fmt: skip
    return summary


def _alignment(model, config: ExperimentConfig, prompts: Prompts, out: Path, gen: torch.Generator) -> dict[str, Any]:
    from iclab.analysis.alignment import align, plot_alignment

    if config.model.name not in ("gpt", "lsa"):
        raise ConfigError(
            f"what: 'alignment' reads per-layer predictions of gpt and lsa models, not {config.model.name!r}"
        )
    if config.model.variance_head:
        raise ConfigError("what: 'alignment' reads per-layer predictions of a model without model.variance_head")
    result = align(model, prompts.x, prompts.y)
    figures = plot_alignment(result, out / "figures", title=f"{config.name}: layer ↔ iteration alignment")
    return {**result.to_dict(), "figures": {k: str(v) for k, v in figures.items()}}


@torch.no_grad()
def _concat_induction(model, prompts: Prompts) -> dict[str, Tensor]:
    """{"induction": [layers, H]} of a concat-layout label model (softmax): the query row of
    blocks.{l}.attn.hook_pattern [B, H, T, N] summed over the context tokens of the query's class (a token holds
    item and label), averaged over prompts and queries; and "uniform": [layers, 1], the same of uniform attention."""
    n = prompts.n_ctx
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(len(model.blocks))]
    _, cache = model.run_with_cache(prompts.x_ctx, prompts.y_ctx, prompts.x_q, names=names, method="predict")
    assert prompts.params is not None
    classes = prompts.params["classes"]  # [B, T]
    same = (classes[:, None, n:, None] == classes[:, None, None, :n]).double()  # [B, 1, m, N]
    induction = torch.stack([(cache[name][:, :, n:].double() * same).sum(-1).mean((0, 2)) for name in names])
    uniform = same.mean(-1).mean().expand(len(names), 1)
    return {"induction": induction, "uniform": uniform}


def _induction(model, config: ExperimentConfig, prompts: Prompts, out: Path, gen: torch.Generator) -> dict[str, Any]:
    from iclab import plotting
    from iclab.analysis.induction import head_scores, uniform_scores

    if config.label_vocab is None:
        raise ConfigError(
            f"what: 'induction' reads runs of class-label tasks (icl_classification), not task {config.task.name!r}"
        )
    sets = make_task(config.task).eval_sets(len(prompts), generator=gen)
    split = "icl" if "icl" in sets else "eval"
    icl = sets[split].to(dtype=torch.float64)
    scores = head_scores(model, icl)
    assert icl.params is not None  # the family's prompts carry their classes
    if scores:
        uniform = uniform_scores(icl.params["classes"], icl.n_ctx, scores["induction"].shape[0])
        kind = "interleaved: attention on the labels of the query's class"
    else:
        scores = _concat_induction(model, icl)
        uniform = {"induction": scores.pop("uniform")}
        kind = "concat: attention on the context tokens of the query's class"
    layers, heads = scores["induction"].shape
    groups = [f"L{layer}H{head}" for layer in range(layers) for head in range(heads)]
    values = {k: v.flatten().numpy() for k, v in scores.items() if k in ("induction", "match_item", "previous_token")}
    chance = float(uniform["induction"].mean())
    title = f"{config.name}: the query's attention, {split} split ({kind.split(':')[0]})"
    reference = {f"uniform attention ({chance:.3f})": chance}
    path = out / "figures" / "induction.png"
    fig = plotting.plot_bars(groups, values, path, ylabel="attention", reference=reference, title=title, ylim=(0, 1.05))
    best = divmod(int(scores["induction"].argmax()), heads)
    return {
        "split": split,
        "n_prompts": len(icl),
        "layout": kind,
        "scores": {k: v.tolist() for k, v in scores.items()},
        "uniform": {k: v.tolist() for k, v in uniform.items()},
        "best_head": {"layer": best[0], "head": best[1], "induction": float(scores["induction"].max())},
        "figure": str(fig),
    }


ANALYSES: dict[str, Callable[..., dict[str, Any]]] = {
    "implicit": _implicit,
    "probes": _probes,
    "weights": _weights,
    "alignment": _alignment,
    "induction": _induction,
}
LABEL_ANALYSES = ("induction",)
"""what a class-label run takes (the others read real-valued predictions)"""


def _headline(name: str, summary: dict[str, Any]) -> str:
    """One printed line per analysis."""
    if name == "implicit":
        refs = ", ".join(f"cos vs {r} {v['cos']['mean']:.4f}" for r, v in summary["references"].items())
        return f"implicit: R² {summary['r2']['mean']:.4f} (median {summary['r2_median']:.4f}); {refs}"
    if name == "probes":
        per_layer = "; ".join(f"{t} " + " ".join(f"{r:.3f}" for r in v) for t, v in summary["r2"].items())
        return f"probes: held-out R² per hook ({', '.join(summary['hooks'])}): {per_layer}"
    if name == "weights":
        rows = []
        for layer, stats in enumerate(summary["layers"]):
            kq, ov = stats["kq"], stats["ov"]
            rows.append(
                f"layer {layer}: KQ off-diagonal mass {kq['max_off_diagonal_mass']:.3f}, "
                f"OV last-row mass {ov['min_last_row_mass']:.3f}, zero-sum {ov['zero_sum']:.3f}"
            )
        return "weights: " + "; ".join(rows) + f" (figure {summary['figure']})"
    if name == "induction":
        b = summary["best_head"]
        return (
            f"induction: best head layer {b['layer']} head {b['head']} puts {b['induction']:.3f} of the query's "
            f"attention on its class ({summary['layout'].split(':')[1].strip()}; uniform "
            f"{summary['uniform']['induction'][0][0]:.3f}; {summary['split']} split, figure {summary['figure']})"
        )
    if name == "alignment":
        from iclab.analysis.alignment import peaks_text

        return (
            f"alignment: per layer, best GD steps {peaks_text(summary['refined_gd'])} (grid argmax "
            f"{summary['best_gd']}), best Newton iterations {peaks_text(summary['refined_newton'])} (grid argmax "
            f"{summary['best_newton']}), readout nmse {[round(v, 3) for v in summary['readout_nmse']]}"
        )
    return f"{name}: done"


def analyze_run(
    path: Path, what: list[str] | None = None, *, n_prompts: int = 4000, seed: int = 1, out: Path | None = None
) -> tuple[dict[str, Any], str]:
    """Run the named analyses on the run at `path` (default: implicit, probes, weights; class-label runs:
    induction); returns (summary, printable text)."""
    for name in what or ():
        if name not in ANALYSES:
            raise ConfigError(f"what: unknown analysis {name!r}; choose one of: {', '.join(ANALYSES)}")
    run = RunDir.open(path)
    config = config_from_dict(run.config())
    labels = config.label_vocab is not None
    if what is None:
        what = list(LABEL_ANALYSES) if labels else ["implicit", "probes", "weights"]
    if labels and (other := [name for name in what if name not in LABEL_ANALYSES]):
        raise ConfigError(
            f"what: {other[0]!r} reads real-valued predictions; run {str(path)!r} has class labels (task "
            f"{config.task.name!r}): choose from: {', '.join(LABEL_ANALYSES)}"
        )
    scalar_only = [name for name in what if name in ("implicit", "alignment")]
    if config.target_dim is not None and scalar_only:
        raise ConfigError(
            f"what: {scalar_only[0]!r} reads a model with one output per query; task {config.task.name!r} has "
            f"vector targets (k = {config.target_dim}); choose from: probes, weights"
        )
    model = load_model(run).double().eval()
    out = Path(path) / "analysis" if out is None else Path(out)
    task = make_task(config.task)
    prompts = task.sample(n_prompts, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed + 1)
    results: dict[str, Any] = {"run": str(path), "n_prompts": n_prompts, "seed": seed}
    lines = []
    for name in what:
        summary = ANALYSES[name](model, config, prompts, out, gen)
        atomic_write_bytes(out / f"{name}.json", json.dumps(summary, indent=2).encode())
        results[name] = summary
        lines.append(_headline(name, summary))
    atomic_write_bytes(out / "summary.json", json.dumps(results, indent=2).encode())
    lines.append(f"results: {out}")
    return results, "\n".join(lines)
