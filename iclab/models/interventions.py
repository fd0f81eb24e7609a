"""Interventions: edit named activations while a model trains or is evaluated (Singh et al. 2024's "optogenetics").

An intervention is a spec string ``KIND:HOOK[@HEAD][=TARGET[:STRENGTH]]`` on one of the model's hook points
(`model.hook_points()`, iclab.models.hooks; docs/weights.md lists them):

  zero:HOOK[@H]              replace the activation (head H's slice of it) by 0. On ``attn.hook_z`` this removes
                             head H's output (its W_O read-out of the values), the usual head ablation.
  mean:HOOK[@H]              replace it by its mean over the batch's prompts (mean ablation: the head keeps its
                             average contribution and loses what depends on the prompt)
  patch:HOOK[@H]             replace prompt b's activation by prompt b − 1's (the batch rolled by one): activation
                             patching from another prompt (resample ablation). Everything upstream of the hook is
                             each prompt's own, so the patched value is exactly the other prompt's clean activation.
                             With a *source* model (`intervene(model, specs, source=other)`, `iclab eval
                             --patch-from RUN`): the source's activation on the same inputs instead — e.g. freeze a
                             head's pattern to that of an earlier checkpoint, or graft one model's head into another
                             (Singh et al.'s "preserve pattern"). The source runs `predict` on the same arguments,
                             so it must share the hook point (and head count); training losses that do not go
                             through `predict` (the regression GPT's all-prefix loss) cannot be patched this way.
  clamp:HOOK[@H]=previous[:s]   on an ``attn.hook_pattern`` [B, H, q, k] only: the context rows attend to the
                             token before them with weight s and to themselves with 1 − s (row 0: itself). Query
                             rows keep their pattern. Singh et al.'s previous-token clamp.
  clamp:HOOK[@H]=induction[:s]  the query rows spread s over the labels of the context items of the query's class
                             and 1 − s over the other context labels, nothing on items (no matching label:
                             uniform over the labels); other rows keep their pattern. Singh et al.'s induction
                             clamp; it reads the prompts' item classes, so it runs on single models (not
                             ensembles) called through predict_prompts / training_loss (module docstring).

Per-head hooks and the dimension HEAD indexes: ``attn.hook_q/_k/_v/_z`` [B, pos, H, d_head] (dim 2),
``attn.hook_attn_scores`` / ``attn.hook_pattern`` [B, H, q, k] (dim 1); a HEAD on any other hook is refused.
The token layout of the clamps is iclab.tokens.InterleavedLayout's (item i at 2i, its label at 2i + 1, query j at
2(N + j)), the layout of every model with class labels and attention patterns (gpt, attn_only).

API: ``with intervene(model, ["zero:blocks.1.attn.hook_z@0"]): model.predict_prompts(p)``; the hooks stay while
the context is open. The clamps need to know the prompts of the forward pass (their context length, and their item
classes for the induction clamp): `Intervened` wraps the model's `predict_prompts`, `training_loss` and `predict` so
that each call binds its prompts first (`Intervened.bind`; `predict` binds the context length only), and the
wrappers go with the hooks. Training: `train.interventions` (the same strings) applies them to every training step
and every evaluation of the run; `iclab eval --intervene` applies them to evaluated runs. A run trained under an
intervention is saved without it: loading it gives the plain network.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor

from iclab.errors import SpecError

if TYPE_CHECKING:
    from iclab.models.hooks import HookedModule
    from iclab.prompts import Prompts

__all__ = ["KINDS", "TARGETS", "Intervened", "Intervention", "intervene", "parse_interventions"]

KINDS = ("zero", "mean", "patch", "clamp")
TARGETS = ("previous", "induction")
_HEAD_DIM = {"hook_q": 2, "hook_k": 2, "hook_v": 2, "hook_z": 2, "hook_attn_scores": 1, "hook_pattern": 1}
_SPEC = re.compile(r"^(?P<kind>\w+):(?P<hook>[\w.]+)(@(?P<head>\d+))?(=(?P<target>\w+)(:(?P<strength>[^:]+))?)?$")
FORMAT = (
    "KIND:HOOK[@HEAD][=TARGET[:STRENGTH]], e.g. zero:blocks.1.attn.hook_z@0 or "
    "clamp:blocks.0.attn.hook_pattern=previous"
)


@dataclass(frozen=True)
class Intervention:
    """One parsed spec (module docstring)."""

    kind: str
    hook: str
    head: int | None = None
    target: str | None = None
    strength: float = 1.0

    @classmethod
    def parse(cls, spec: str, field: str = "interventions") -> Intervention:
        """A spec string → Intervention; a malformed one raises SpecError naming `field` and the format."""
        m = _SPEC.match(spec.strip())
        if m is None:
            raise SpecError(f"{field}: {spec!r} is not {FORMAT}")
        kind, hook, target = m["kind"], m["hook"], m["target"]
        if kind not in KINDS:
            raise SpecError(f"{field}: kind {kind!r} in {spec!r}; choose from: {', '.join(KINDS)}")
        if kind == "clamp":
            if target not in TARGETS:
                raise SpecError(f"{field}: clamp needs =TARGET in {spec!r}; choose from: {', '.join(TARGETS)}")
            if not hook.endswith("hook_pattern"):
                raise SpecError(f"{field}: clamp edits attention patterns (an attn.hook_pattern), not {hook!r}")
        elif target is not None:
            raise SpecError(f"{field}: only clamp takes =TARGET, got {spec!r}")
        leaf = hook.rsplit(".", 1)[-1]
        if m["head"] is not None and leaf not in _HEAD_DIM:
            raise SpecError(f"{field}: @HEAD needs a per-head hook ({', '.join(_HEAD_DIM)}), got {hook!r}")
        strength = 1.0
        if m["strength"] is not None:
            try:
                strength = float(m["strength"])
            except ValueError:
                strength = -1.0
            if not 0.0 <= strength <= 1.0:
                raise SpecError(f"{field}: clamp strength in [0, 1], got {m['strength']!r} in {spec!r}")
        head = None if m["head"] is None else int(m["head"])
        return cls(kind, hook, head, target, strength)

    @property
    def needs_classes(self) -> bool:
        """Whether the edit reads the prompts' item classes (`Intervened.bind`)."""
        return self.target == "induction"

    def __str__(self) -> str:
        head = "" if self.head is None else f"@{self.head}"
        target = "" if self.target is None else f"={self.target}:{self.strength:g}"
        return f"{self.kind}:{self.hook}{head}{target}"

    def edit(self, act: Tensor, bound: dict[str, Any]) -> Tensor:
        """The edited activation (same shape); `bound` holds the bound prompts' classes and n_ctx for clamps, and
        the source model's activations for patches from a source (`Intervened`)."""
        dim = _HEAD_DIM.get(self.hook.rsplit(".", 1)[-1])
        index: tuple[slice, ...] = (slice(None),) * act.dim()
        if self.head is not None:
            assert dim is not None
            index = tuple(slice(self.head, self.head + 1) if i == dim else slice(None) for i in range(act.dim()))
        if self.head is not None and self.head >= act.shape[cast(int, dim)]:
            raise ValueError(f"{self}: head {self.head} of a layer with {act.shape[cast(int, dim)]} heads")
        source = None
        if self.kind == "patch" and bound.get("has_source"):
            source = bound.get("source", {}).get(self.hook)
            if source is None:  # a call that did not go through predict / predict_prefixes: no source activation
                raise ValueError(f"{self}: the source model's activation is known only in predict calls")
        if self.head is None:
            return self._edit(act, bound, source)
        new = act.clone()
        new[index] = self._edit(act[index], bound, None if source is None else source[index])
        return new

    def _edit(self, act: Tensor, bound: dict[str, Any], source: Tensor | None) -> Tensor:
        if self.kind == "zero":
            return torch.zeros_like(act)
        if self.kind == "mean":
            return act.mean(0, keepdim=True).expand_as(act)
        if self.kind == "patch":
            if source is not None:  # the source model's activation on the same inputs
                return source.to(act.dtype)
            return act.roll(1, dims=0)
        return _clamp(act, self.target, self.strength, bound)


def _clamp(pattern: Tensor, target: str | None, s: float, bound: dict[str, Any]) -> Tensor:
    """pattern [B, H, L, L] → the clamped pattern (module docstring)."""
    if "n_ctx" not in bound:
        raise ValueError("clamp: bind the prompts first (Intervened.bind), so the context length is known")
    n, L = bound["n_ctx"], pattern.shape[-1]
    new = pattern.clone()
    if target == "previous":
        rows = torch.arange(1, 2 * n, device=pattern.device)
        new[..., : 2 * n, :] = 0.0
        new[..., 0, 0] = 1.0
        new[..., rows, rows - 1] = s
        new[..., rows, rows] = 1.0 - s
        return new
    classes: Tensor = bound["classes"]  # [B, T]
    if classes.shape[0] != pattern.shape[0]:
        raise ValueError(f"clamp: {pattern.shape[0]} prompts in the forward pass, {classes.shape[0]} bound")
    m = min(classes.shape[1] - n, (L - 2 * n + 1) // 2)  # the queries whose item token is in this pass
    hit = (classes[:, n : n + m, None] == classes[:, None, :n]).to(pattern.dtype)  # [B, m, N]
    k = hit.sum(-1, keepdim=True)  # [B, m, 1] matching labels
    miss = 1.0 - hit
    misses = miss.sum(-1, keepdim=True)
    on_hits = torch.where(misses > 0, s, 1.0)  # every label matches: all the weight on them
    row = torch.where(
        k > 0,
        on_hits * hit / k.clamp_min(1) + (1 - on_hits) * miss / misses.clamp_min(1),
        torch.full_like(hit, 1.0 / n),
    )  # [B, m, N] over the context labels, each row summing to 1
    q_tok = 2 * (n + torch.arange(m, device=pattern.device))  # [m] the queries' item tokens
    labels = torch.arange(1, 2 * n, 2, device=pattern.device)  # [N] the context labels' tokens
    new[..., q_tok, :] = 0.0
    new[..., q_tok[:, None], labels[None, :]] = row[:, None]  # [B, 1, m, N] over the heads
    return new


def parse_interventions(specs: Sequence[str], field: str = "interventions") -> list[Intervention]:
    """Spec strings → Interventions (SpecError naming `field` on the first bad one)."""
    return [Intervention.parse(s, field) for s in specs]


class Intervened:
    """The interventions installed on a model's hook points as forward hooks, until `remove` (or the end of the
    `intervene` context). Unknown hook names and heads out of range raise SpecError naming `field`."""

    def __init__(
        self,
        model: HookedModule,
        specs: Sequence[str | Intervention],
        field: str = "interventions",
        source: HookedModule | None = None,
    ):
        self.items = [s if isinstance(s, Intervention) else Intervention.parse(s, field) for s in specs]
        self.bound: dict[str, Any] = {"has_source": source is not None}
        self.source = source  # patches take this model's activations on the same inputs (None: the previous prompt's)
        if any(name in model.__dict__ for name in _WRAPPED):
            raise SpecError(f"{field}: this model already has interventions installed; remove them first")
        layout = getattr(getattr(model, "layout", None), "name", None)
        if any(i.kind == "clamp" for i in self.items) and layout != "interleaved":
            raise SpecError(
                f"{field}: clamps are written for the interleaved token layout (gpt, attn_only); this model's is "
                f"{layout!r}"
            )
        self.patched = [i.hook for i in self.items if i.kind == "patch"]
        if source is not None:
            if not self.patched:
                raise SpecError(f"{field}: a source model is only read by patch interventions; none given")
            missing = [h for h in self.patched if h not in source.hook_points()]
            if missing:
                raise SpecError(f"{field}: the source model has no hook point {missing[0]!r}")
        points = model.hook_points()
        self.handles = []
        for item in self.items:
            if item.hook not in points:
                raise SpecError(f"{field}: unknown hook point {item.hook!r}; choose from: {', '.join(points)}")
            heads = _heads_of(model, item.hook)
            if item.head is not None and heads is not None and item.head >= heads:
                raise SpecError(f"{field}: head {item.head} of {item.hook!r}; the layer has {heads} heads")
        for item in self.items:
            hook = points[item.hook].register_forward_hook(lambda _m, _i, out, item=item: item.edit(out, self.bound))
            self.handles.append(hook)
        self.model, self.wrapped = model, [name for name in _WRAPPED if callable(getattr(model, name, None))]
        for name in self.wrapped:  # every call binds its prompts first (an instance attribute shadows the method)
            object.__setattr__(model, name, self._binding(name, getattr(model, name)))

    def _binding(self, name: str, method: Any) -> Any:
        if name in ("predict", "predict_prefixes"):

            def call(x: Tensor, *args: Any, **kwargs: Any) -> Any:
                # predict(x_ctx, …): the context is x_ctx; predict_prefixes(x, y): every point is context.
                # Classes (if bound) stay: predict_prompts bound them.
                self.bound["n_ctx"] = x.shape[1]
                if self.source is not None:  # the source's activations on the same inputs, for the patches
                    self.source.to(device=x.device, dtype=x.dtype)  # follows the model (a no-op when it does)
                    with torch.no_grad():
                        _, cache = self.source.run_with_cache(x, *args, names=self.patched, method=name, **kwargs)
                    self.bound["source"] = cache
                try:
                    return method(x, *args, **kwargs)
                finally:
                    self.bound.pop("source", None)  # never reused by a later call

            return call

        def call_prompts(prompts: Prompts, *args: Any, **kwargs: Any) -> Any:
            self.bind(prompts)
            return method(prompts, *args, **kwargs)

        return call_prompts

    @property
    def needs_classes(self) -> bool:
        return any(i.needs_classes for i in self.items)

    def bind(self, prompts: Prompts) -> None:
        """The prompts of the next forward pass (their n_ctx, and their item classes where a clamp needs them)."""
        self.bound = {"n_ctx": prompts.n_ctx, "has_source": self.source is not None}
        if self.needs_classes:
            if prompts.params is None or "classes" not in prompts.params:
                raise ValueError("clamp=induction: the prompts carry no item classes (an icl_classification task)")
            self.bound["classes"] = prompts.params["classes"]

    def remove(self) -> None:
        """Take the hooks and the binding wrappers off the model."""
        for h in self.handles:
            h.remove()
        self.handles = []
        for name in self.wrapped:
            self.model.__dict__.pop(name, None)
        self.wrapped = []


_WRAPPED = ("predict_prompts", "training_loss", "predict", "predict_prefixes", "predict_each")
"""the model's calls that bind their prompts before the forward pass (instance attributes shadowing the methods)"""


def _heads_of(model: HookedModule, hook: str) -> int | None:
    """The head count of the attention layer that owns `hook`: its module's `heads`, else the model config's
    (ensembles: the family's config; a runtime check in `Intervention.edit` backs it up), None when neither says."""
    owner = hook.rsplit(".", 1)[0]
    module = dict(model.named_modules()).get(owner)
    heads = getattr(module, "heads", None)
    return heads if heads is not None else getattr(getattr(model, "config", None), "heads", None)


@contextmanager
def intervene(
    model: HookedModule, specs: Sequence[str | Intervention], source: HookedModule | None = None
) -> Iterator[Intervened]:
    """Install `specs` on `model` for the duration of the block (module docstring); with `source`, patches take
    that model's activations on the same inputs."""
    installed = Intervened(model, specs, source=source)
    try:
        yield installed
    finally:
        installed.remove()
