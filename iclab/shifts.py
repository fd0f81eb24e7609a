"""The distribution-shift suite: Garg et al.'s shifts, input/target scale, covariate shift and prompt length.

A shift takes prompts drawn from the training distribution and returns new prompts for the *same* tasks (same w,
same noise draws) with moved inputs, plus optionally queries that differ from the context stream (Garg's orthogonal,
repeated and opposite-orthant queries): prediction t sees the (shifted) points < t and answers `x_query[:, t]`.
Targets are recomputed with `task.targets(x, prompts)`, so any family that can evaluate its functions at new inputs
supports every input shift.

Shift names (``NAME`` or ``NAME:VALUE``):
  none                  the training distribution
  scale_x:α             x → αx (Garg's ×1/3 … ×3; von Oswald's α)
  scale_y:β             targets → βf (task vectors scaled), noise kept
  noisy_labels:σ        extra label noise N(0, σ²) on every y (the noiseless metric still measures against f)
  skewed                x → xA, A = U diag(1/i²) Uᵀ normalised so that E‖xA‖² = E‖x‖² (one random U, Garg)
  covariance:κ          x → x diag(λ)^{1/2}, λ log-spaced from 1 to 1/κ, mean 1 (covariate shift, condition κ)
  half_subspace         x → xP√2, P the projection on a random d/2-dimensional subspace (Garg)
  orthant               every context point and query of a prompt in one random orthant (Garg)
  opposite_orthant      context points in one random orthant, queries in the opposite one
  orthogonal_query      query t orthogonal to the span of points < t, same norm (Garg)
  repeated_query        query t is a random earlier context point (Garg)
  length:T              fresh prompts of T points (prompt-length shift)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from iclab.errors import SpecError
from iclab.tasks.base import Prompts
from iclab.tasks.sequences import haar_orthogonal

__all__ = ["SHIFTS", "Shifted", "apply_shift", "parse_shift"]

SHIFTS = (
    "none",
    "scale_x",
    "scale_y",
    "noisy_labels",
    "skewed",
    "covariance",
    "half_subspace",
    "orthant",
    "opposite_orthant",
    "orthogonal_query",
    "repeated_query",
    "length",
)
_NEEDS_VALUE = {"scale_x": "a positive factor", "scale_y": "a factor", "noisy_labels": "a noise std >= 0",
                "covariance": "a condition number >= 1", "length": "a number of points >= 1"}  # fmt: skip


@dataclass(frozen=True)
class Shifted:
    """Shifted prompts; with separate queries x_query [B, T, d] and their targets y_query, f_query [B, T(, k)]."""

    name: str
    prompts: Prompts
    x_query: Tensor | None = None
    y_query: Tensor | None = None
    f_query: Tensor | None = None

    def query_target(self, metric: str) -> Tensor | None:
        if self.x_query is None:
            return None
        return self.f_query if metric.endswith("_noiseless") else self.y_query


def parse_shift(spec: str) -> tuple[str, float | None]:
    """``"scale_x:2"`` → ("scale_x", 2.0); unknown names and bad values fail in one line."""
    name, _, value = spec.strip().partition(":")
    if name not in SHIFTS:
        raise SpecError(f"shift: unknown value {name!r}; choose one of: {', '.join(SHIFTS)}")
    if name in _NEEDS_VALUE:
        try:
            v = float(value)
        except ValueError:
            raise SpecError(f"shift {spec!r}: needs {_NEEDS_VALUE[name]}, e.g. {name}:2") from None
        ok = {
            "scale_x": v > 0,
            "scale_y": math.isfinite(v),
            "noisy_labels": v >= 0,
            "covariance": v >= 1,
            "length": v >= 1 and v == int(v),
        }[name]
        if not (ok and math.isfinite(v)):
            raise SpecError(f"shift {spec!r}: needs {_NEEDS_VALUE[name]}, got {value}")
        return name, v
    if value:
        raise SpecError(f"shift {spec!r}: {name} takes no value")
    return name, None


def _with_inputs(task, prompts: Prompts, x: Tensor) -> Prompts:
    """Same tasks and noise draws, new inputs x [B, T, d]: f = task.targets(x), y = f + (old y − old f)."""
    assert prompts.f is not None  # apply_shift requires noiseless targets
    f = task.targets(x, prompts)
    noise = prompts.y - prompts.f
    return replace(prompts, x=x, f=f, y=f + noise)


def _random_rotation(d: int, gen: torch.Generator, like: Tensor) -> Tensor:
    """[d, d] Haar-distributed orthogonal matrix, drawn on the generator's device, returned like `like`."""
    return haar_orthogonal(1, d, generator=gen, device=gen.device, dtype=torch.float64)[0].to(like)


def _queries(task, prompts: Prompts, x_query: Tensor) -> tuple[Tensor, Tensor]:
    """(y_query, f_query) of new queries: the tasks' functions at x_query plus the original noise draws."""
    assert prompts.f is not None  # apply_shift requires noiseless targets
    f_q = task.targets(x_query, prompts)
    return f_q + (prompts.y - prompts.f), f_q


def apply_shift(spec: str, prompts: Prompts, task, *, generator: torch.Generator) -> Shifted:
    """Apply the shift named by `spec` to prompts of `task` (x [B, T, d]); random choices come from `generator`."""
    name, v = parse_shift(spec)
    if prompts.f is None:
        raise SpecError("shift: needs prompts with noiseless targets f")
    x = prompts.x
    B, T, d = x.shape
    gen = generator
    if name == "none":
        return Shifted(spec, prompts)
    if name == "length":
        assert v is not None  # parse_shift: every shift in _NEEDS_VALUE has one
        fresh = task.sample(B, generator=gen, dtype=x.dtype, device=gen.device, n_points=int(v))
        return Shifted(spec, fresh.to(x.device))
    if name == "scale_x":
        assert v is not None  # parse_shift: every shift in _NEEDS_VALUE has one
        return Shifted(spec, _with_inputs(task, prompts, x * v))
    if name == "scale_y":
        assert v is not None  # parse_shift: every shift in _NEEDS_VALUE has one
        f = prompts.f * v
        return Shifted(spec, replace(prompts, f=f, y=f + (prompts.y - prompts.f)))
    if name == "noisy_labels":
        assert v is not None  # parse_shift: every shift in _NEEDS_VALUE has one
        noise = torch.randn(prompts.y.shape, generator=gen, device=gen.device, dtype=torch.float64).to(prompts.y) * v
        return Shifted(spec, replace(prompts, y=prompts.y + noise))
    if name == "skewed":
        u = _random_rotation(d, gen, x)
        eig = 1.0 / torch.arange(1, d + 1, dtype=x.dtype, device=x.device) ** 2
        eig = eig * math.sqrt(d / float((eig**2).sum()))  # E‖xA‖² = E‖x‖² for isotropic x
        return Shifted(spec, _with_inputs(task, prompts, x @ (u * eig) @ u.T))
    if name == "covariance":
        assert v is not None  # parse_shift: every shift in _NEEDS_VALUE has one
        lam = torch.logspace(0, -math.log10(v), d, dtype=torch.float64)
        lam = (lam / lam.mean()).to(x)
        return Shifted(spec, _with_inputs(task, prompts, x * lam.sqrt()))
    if name == "half_subspace":
        basis = _random_rotation(d, gen, x)[:, : max(1, d // 2)]  # [d, d/2]
        proj = basis @ basis.T * math.sqrt(d / basis.shape[1])
        return Shifted(spec, _with_inputs(task, prompts, x @ proj))
    signs = torch.randint(0, 2, (B, 1, d), generator=gen, device=gen.device).to(x) * 2 - 1  # one orthant per prompt
    if name == "orthant":
        return Shifted(spec, _with_inputs(task, prompts, x.abs() * signs))
    if name == "opposite_orthant":
        shifted = _with_inputs(task, prompts, x.abs() * signs)
        fresh = torch.randn(x.shape, generator=gen, device=gen.device, dtype=torch.float64).to(x)
        x_query = -fresh.abs() * signs * x.norm(dim=-1, keepdim=True) / fresh.norm(dim=-1, keepdim=True)
        return Shifted(spec, shifted, x_query, *_queries(task, prompts, x_query))
    if name == "orthogonal_query":
        x_query = _orthogonal_queries(x, gen)
        return Shifted(spec, prompts, x_query, *_queries(task, prompts, x_query))
    # repeated_query: query t is context point j < t, uniformly (t = 0 has no earlier point: its own x)
    t = torch.arange(T, device=gen.device)
    j = (torch.rand(B, T, generator=gen, device=gen.device, dtype=torch.float64) * t.clamp(min=1)).long()
    j = torch.where(t == 0, torch.zeros_like(j), j)
    x_query = torch.gather(x, 1, j.to(x.device).unsqueeze(-1).expand(B, T, d))
    return Shifted(spec, prompts, x_query, *_queries(task, prompts, x_query))


def _orthogonal_queries(x: Tensor, gen: torch.Generator) -> Tensor:
    """[B, T, d]: query t is a fresh Gaussian direction with the component in span(x_0 … x_{t−1}) removed, scaled
    to ‖x_t‖ (zero once the span is everything, t ≥ d). Gram–Schmidt over positions, batched over prompts."""
    B, T, d = x.shape
    x64 = x.double()
    fresh = torch.randn(B, T, d, generator=gen, device=gen.device, dtype=torch.float64).to(x64.device)
    basis = x64.new_zeros(B, 0, d)
    out = []
    for t in range(T):  # positions, not prompts: T steps of batched work
        q = fresh[:, t] - torch.einsum("bkd,bk->bd", basis, torch.einsum("bkd,bd->bk", basis, fresh[:, t]))
        norm = q.norm(dim=-1, keepdim=True)
        q = torch.where(norm > 1e-9, q / norm.clamp(min=1e-300), torch.zeros_like(q)) * x64[:, t].norm(
            dim=-1, keepdim=True
        )
        out.append(q)
        v = x64[:, t] - torch.einsum("bkd,bk->bd", basis, torch.einsum("bkd,bd->bk", basis, x64[:, t]))
        vn = v.norm(dim=-1, keepdim=True)
        v = torch.where(vn > 1e-9, v / vn.clamp(min=1e-300), torch.zeros_like(v))
        basis = torch.cat([basis, v.unsqueeze(1)], 1)
    return torch.stack(out, 1).to(x)
