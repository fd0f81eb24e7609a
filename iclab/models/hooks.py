"""Named hook points and an activation cache (TransformerLens-style, ~50 lines of our own).

A `HookPoint` is an identity module placed where an activation is worth reading or editing; its qualified
module name (e.g. ``blocks.0.attn.hook_pattern``) is the activation's name. `HookedModule.run_with_cache` runs the
model once and returns its output and a dict name → tensor for every hook point (or a chosen subset).

Shapes follow TransformerLens, in every model (each hook point's shape is written beside it, docs/weights.md has
the table): per-head activations ``attn.hook_q`` / ``hook_k`` / ``hook_v`` / ``hook_z`` are [batch, pos, head,
d_head]; scores and patterns ``attn.hook_attn_scores`` / ``hook_pattern`` are [batch, head, query_pos, key_pos];
residual-stream hooks (``hook_attn_out``, ``hook_resid_post``, …) are [batch, pos, d_model]. Keys and values of the
concat-layout models cover the context tokens only (pos = key_pos ≤ N).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor, nn

__all__ = ["HookPoint", "HookedModule"]


class HookPoint(nn.Module):
    """Identity; forward hooks registered on it see (and may replace) the activation."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class HookedModule(nn.Module):
    """Mixin: hook discovery, `run_with_cache` and temporary hooks."""

    def hook_points(self) -> dict[str, HookPoint]:
        return {name: m for name, m in self.named_modules() if isinstance(m, HookPoint)}

    def run_with_cache(
        self,
        *args: Any,
        names: Iterable[str] | None = None,
        detach: bool = True,
        method: str = "forward",
        **kwargs: Any,
    ) -> tuple[Any, dict[str, Tensor]]:
        """Run forward(*args, **kwargs) — or another method, e.g. method="predict" with (x_ctx, y_ctx, x_q), the
        one call signature every model shares; return (output, cache). Unknown names fail listing the valid ones."""
        points = self.hook_points()
        wanted = list(points) if names is None else list(names)
        unknown = [n for n in wanted if n not in points]
        if unknown:
            raise ValueError(f"unknown hook point {unknown[0]!r}; choose from: {', '.join(points)}")
        cache: dict[str, Tensor] = {}

        def saver(name: str) -> Callable[[nn.Module, Any, Tensor], None]:
            def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
                cache[name] = output.detach() if detach else output

            return hook

        handles = [points[n].register_forward_hook(saver(n)) for n in wanted]
        try:
            out = self(*args, **kwargs) if method == "forward" else getattr(self, method)(*args, **kwargs)
        finally:
            for h in handles:
                h.remove()
        return out, cache

    def run_with_hooks(self, *args: Any, hooks: dict[str, Callable[[Tensor], Tensor]], **kwargs: Any) -> Any:
        """Run forward with activation edits: hooks maps a hook name to fn(activation) → new activation."""
        points = self.hook_points()
        handles = []
        try:
            for name, fn in hooks.items():
                if name not in points:
                    raise ValueError(f"unknown hook point {name!r}; choose from: {', '.join(points)}")
                handles.append(points[name].register_forward_hook(lambda _m, _i, out, fn=fn: fn(out)))
            return self(*args, **kwargs)
        finally:
            for h in handles:
                h.remove()
