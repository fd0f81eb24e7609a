"""Induction-head measures of attention models on in-context classification prompts (docs/papers.md §9).

The stream (iclab.tokens.InterleavedLayout) of a prompt with N context pairs and m queries is
x_1, ℓ_1, …, x_N, ℓ_N, x_q1, ℓ_q1, …: item i at token 2i, its label at 2i + 1 (0-based i), query j's item at
2(N + j). Each query is answered at its own item token; every query sees the context and nothing of the other
queries. Read from `blocks.{l}.attn.hook_pattern` [B, H, L, L] (rows: query tokens, softmax over keys), per layer
l and head h, averaged over prompts (and queries / context pairs):

  induction[l, h]       Σ_{i: class_i = class_q} pattern[q → ℓ_i]   attention the query pays to the labels of the
                        context items of its own class: the label-copying head of an induction circuit. On a
                        bursty prompt B of the N labels match; a head that looks only at them scores 1.
  match_item[l, h]      Σ_{i: class_i = class_q} pattern[q → x_i]   attention the query pays to the matching items
  label_attention[l, h] Σ_i pattern[q → ℓ_i]                        attention the query pays to every context label
  previous_token[l, h]  mean_i pattern[ℓ_i → x_i]                   attention each context label pays to its own
                        item, the token before it: the previous-token head that lets ℓ_i carry x_i forward.
  uniform               the same scores of uniform causal attention, the chance level of each score
                        (induction: B/(2N + 1) at the first query of a bursty prompt; previous_token: mean 1/(2i+2)).

Reddy 2023's circuit is a previous-token head in layer 1 followed by an induction head in layer 2 reading the
labels whose (copied-forward) item matches the query. `progress_measures` gives his progress measures under
descriptive names (his abbreviations in brackets; the formulas follow his description and the public re-implementations
of his code — docs/papers.md §9 says which parts were read where):

  item_label_attention         [ILA]  previous_token of the first layer's best head (labels attend to their items)
  target_item_label_attention  [TILA] induction of the last layer's best head: the query's attention summed over
                                      the labels of its class's items (Reddy averages it over those labels; the
                                      sum reads 1 for a perfect head at any burstiness)
  target_label_attention       [TLA]  the last layer's attention from the query to all context labels (best head)
  context_label_accuracy       [CLA]  fraction of queries whose predicted label is one of the context's labels:
                                      the early shortcut that precedes the induction head
  induction_score                     max over heads of `induction` (any layer): the run's induction-head score
  prev_token_score                    max over heads of `previous_token` in the layers before the last

The trainer logs these (columns `<name>`, and `induction_L{l}H{h}`, `prev_token_L{l}H{h}` per head) at every
evaluation on the task's in-context split (`ICLClassificationTask.eval_measures`), so the abrupt transition shows
as a curve beside the accuracies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from iclab.shapes import Float, shape_checked

if TYPE_CHECKING:
    from iclab.models.base import ICLModel
    from iclab.tasks.base import Prompts

__all__ = ["head_scores", "pattern_names", "progress_measures", "training_measures", "uniform_scores"]


def pattern_names(model: ICLModel) -> list[str]:
    """The attention-pattern hook points of an interleaved-layout model, layer by layer ([] if it has none)."""
    if getattr(model.layout, "name", None) != "interleaved":
        return []
    points = model.hook_points()
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(len(points))]
    return [n for n in names if n in points]


def _classes(prompts: Prompts) -> Tensor:
    if prompts.params is None or "classes" not in prompts.params:
        raise ValueError(
            "induction scores: the prompts carry no item classes (params['classes']); draw them from "
            "an icl_classification task"
        )
    return prompts.params["classes"]


@shape_checked
def scores_of_patterns(
    patterns: Float[Tensor, "layers batch heads tokens tokens"], classes: Tensor, n_ctx: int
) -> dict[str, Tensor]:
    """patterns [layers, B, H, L, L] of prompts whose item classes are `classes` [B, T] → {"induction",
    "match_item", "previous_token", "label_attention": [layers, H]} (module docstring), in float64."""
    n, pat = n_ctx, patterns.double()
    m = classes.shape[1] - n
    q_tok = torch.arange(m, device=pat.device) * 2 + 2 * n  # [m] the queries' item tokens
    rows = pat[:, :, :, q_tok, : 2 * n]  # [layers, B, H, m, 2N] the queries' attention on the context
    match = (classes[:, :n, None] == classes[:, None, n:]).to(pat.dtype)  # [B, N, m]
    match = match.transpose(1, 2)[None, :, None]  # [1, B, 1, m, N]
    induction = (rows[..., 1::2] * match).sum(-1).mean((1, 3))  # [layers, H]
    match_item = (rows[..., 0::2] * match).sum(-1).mean((1, 3))
    i = torch.arange(n, device=pat.device)
    previous = pat[:, :, :, 2 * i + 1, 2 * i].mean((1, 3))  # [layers, H]: ℓ_i → x_i
    label_attention = rows[..., 1::2].sum(-1).mean((1, 3))  # [layers, H]: query → all context labels
    return {
        "induction": induction,
        "match_item": match_item,
        "previous_token": previous,
        "label_attention": label_attention,
    }


@torch.no_grad()
def head_scores(model: ICLModel, prompts: Prompts, *, chunk: int = 512) -> dict[str, Tensor]:
    """{"induction", "match_item", "previous_token", "label_attention": [layers, H]} of one model (not an
    ensemble) on labelled prompts with classes (module docstring); {} for a model without interleaved attention
    patterns."""
    names = pattern_names(model)
    if not names:
        return {}
    classes, total = _classes(prompts), None
    for start in range(0, len(prompts), chunk):
        part = prompts[start : start + chunk]
        _, cache = model.run_with_cache(part, names=names, method="predict_prompts")
        patterns = torch.stack([cache[n] for n in names])  # [layers, b, H, L, L]
        scores = scores_of_patterns(patterns, classes[start : start + chunk], part.n_ctx)
        scores = {k: v * len(part) for k, v in scores.items()}
        total = scores if total is None else {k: total[k] + v for k, v in scores.items()}
    assert total is not None
    return {k: (v / len(prompts)).cpu() for k, v in total.items()}


def uniform_scores(classes: Tensor, n_ctx: int, layers: int = 1) -> dict[str, Tensor]:
    """The scores of uniform causal attention on prompts with `classes` [B, T]: the chance level ([layers, 1])."""
    m = classes.shape[1] - n_ctx
    L = 2 * (n_ctx + m)
    causal = torch.tril(torch.ones(L, L, dtype=torch.float64))
    causal[2 * n_ctx :, 2 * n_ctx :] = torch.eye(L - 2 * n_ctx, dtype=torch.float64)  # queries see only the context
    pattern = causal / causal.sum(-1, keepdim=True)
    patterns = pattern.expand(layers, classes.shape[0], 1, L, L)
    return scores_of_patterns(patterns, classes, n_ctx)


@torch.no_grad()
def progress_measures(model: ICLModel, prompts: Prompts) -> dict[str, float]:
    """Reddy's progress measures and the summary induction / previous-token scores of one model (module
    docstring), with every head's scores as `induction_L{l}H{h}` and `prev_token_L{l}H{h}`; {} for a model
    without interleaved attention patterns."""
    scores = head_scores(model, prompts)
    if not scores:
        return {}
    induction, previous = scores["induction"], scores["previous_token"]
    layers = induction.shape[0]
    logits = model.predict_prompts(prompts)  # [B, m, L]
    predicted = logits.argmax(-1)  # [B, m]
    in_context = (predicted[:, :, None] == prompts.y_ctx[:, None, :]).any(-1)  # [B, m]
    label_rows = scores["label_attention"]
    out = {
        "item_label_attention": float(previous[0].max()),
        "target_item_label_attention": float(induction[-1].max()),
        "target_label_attention": float(label_rows[-1].max()),
        "context_label_accuracy": float(in_context.double().mean()),
        "induction_score": float(induction.max()),
        "prev_token_score": float(previous[: max(layers - 1, 1)].max()),
    }
    for (layer, head), value in zip(_heads(induction), induction.flatten()):
        out[f"induction_L{layer}H{head}"] = float(value)
    for (layer, head), value in zip(_heads(previous), previous.flatten()):
        out[f"prev_token_L{layer}H{head}"] = float(value)
    return out


def _heads(scores: Tensor) -> list[tuple[int, int]]:
    return [(layer, head) for layer in range(scores.shape[0]) for head in range(scores.shape[1])]


def training_measures(model: ICLModel, prompts: Prompts, max_prompts: int = 512) -> dict[str, Tensor]:
    """{measure: [1]} of one model (an ensemble's trainer calls it member by member) on the first `max_prompts`
    prompts: what the trainer logs at each evaluation (`progress_measures`)."""
    measures = progress_measures(model, prompts[:max_prompts])
    return {k: torch.tensor([v], dtype=torch.float64) for k, v in measures.items()}
