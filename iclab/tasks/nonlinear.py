"""Non-linear regression families: Garg et al.'s quadratic, 2-layer ReLU net and decision tree; von Oswald et al.'s
sine waves; Bayesian-prism Fourier series.

None of them is linear in x, so none puts a "w" in its params: `Prompts.w` stays None, and no learner or analysis
mistakes a family's coefficients for a linear task vector. Unless a docstring says otherwise, τ = w_scale scales
the function's output and the linear-prior fields (w_prior, w_cov_diag, w_rank) are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from iclab.config import TaskConfig
from iclab.tasks.base import Task
from iclab.validation import check_int, check_pair, fail

__all__ = [
    "DecisionTreeConfig",
    "DecisionTreeTask",
    "FourierConfig",
    "FourierTask",
    "QuadraticConfig",
    "QuadraticTask",
    "ReluNetConfig",
    "ReluNetTask",
    "SineConfig",
    "SineTask",
]


@dataclass(frozen=True)
class QuadraticConfig(TaskConfig):
    """Quadratic regression (`QuadraticTask`); no fields of its own."""

    name: ClassVar[str] = "quadratic"


@dataclass(frozen=True)
class ReluNetConfig(TaskConfig):
    """Two-layer ReLU teachers (`ReluNetTask`)."""

    name: ClassVar[str] = "relu_net"

    hidden: int = 100
    """hidden units of the teacher"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("task.hidden", self.hidden, 1)


@dataclass(frozen=True)
class DecisionTreeConfig(TaskConfig):
    """Random decision trees (`DecisionTreeTask`)."""

    name: ClassVar[str] = "decision_tree"

    depth: int = 4
    """depth of the tree"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("task.depth", self.depth, 1)


def _check_scalar_inputs(config: TaskConfig) -> None:
    if config.d != 1:
        fail("task.d", f"1 for task.name {config.name!r} (scalar inputs)", config.d)


@dataclass(frozen=True)
class SineConfig(TaskConfig):
    """Sine waves A sin(x + φ) (`SineTask`); d = 1."""

    name: ClassVar[str] = "sine"

    d: int = 1
    """input dimension (1: scalar inputs)"""
    amplitude: tuple[float, float] = (0.1, 5.0)
    """amplitude range U(lo, hi)"""
    phase: tuple[float, float] = (0.0, math.pi)
    """phase range U(lo, hi)"""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_scalar_inputs(self)
        check_pair("task.amplitude", self.amplitude, low=0.0)
        check_pair("task.phase", self.phase)


@dataclass(frozen=True)
class FourierConfig(TaskConfig):
    """Random Fourier series (`FourierTask`); d = 1."""

    name: ClassVar[str] = "fourier"

    d: int = 1
    """input dimension (1: scalar inputs)"""
    frequencies: int = 3
    """number of frequencies K"""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_scalar_inputs(self)
        check_int("task.frequencies", self.frequencies, 1)


def _uniform(
    lo: float, hi: float, shape: tuple[int, ...], generator: torch.Generator, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """U(lo, hi) draws of the given shape."""
    return lo + (hi - lo) * torch.rand(shape, generator=generator, device=device, dtype=dtype)


class QuadraticTask(Task[QuadraticConfig]):
    """y = (x ⊙ x)ᵀw / √3 + ε with w ~ N(0, τ²I_d) (Garg et al.'s quadratic regression).

    The 1/√3 makes E y² = τ²d for x ~ N(0, I) (E x⁴ = 3), the scale of linear regression; in general
    E f² = (τ²/3) Σ_i E x_i⁴ (for U(−a, a) inputs E x⁴ = a⁴/5). params: {"w_sq": [B, d]} (coefficients of x ⊙ x).
    """

    def sample_params(
        self, batch: int, *, generator: torch.Generator, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        w = torch.randn((batch, self.d), generator=generator, device=device, dtype=dtype) * self.config.w_scale
        return {"w_sq": w}

    def evaluate(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return torch.einsum("btd,bd->bt", x * x, params["w_sq"]) / math.sqrt(3.0)  # [B, T]


class ReluNetTask(Task[ReluNetConfig]):
    """y = τ √(2/H) Σ_h a_h relu(w_hᵀx) + ε, w_h ~ N(0, I_d), a_h ~ N(0, 1), H = hidden (Garg et al.'s 2-layer net).

    √(2/H) gives E f² = τ² E‖x‖² (E relu(g)² = Var g / 2 for centred Gaussian g), so τ²d for x ~ N(0, I), the
    scale of linear regression. τ is folded into a: params {"W": [B, H, d] (rows w_h), "a": [B, H] ~ N(0, τ²)}.
    """

    def sample_params(
        self, batch: int, *, generator: torch.Generator, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        c = self.config
        W = torch.randn((batch, c.hidden, c.d), generator=generator, device=device, dtype=dtype)
        a = torch.randn((batch, c.hidden), generator=generator, device=device, dtype=dtype) * c.w_scale
        return {"W": W, "a": a}

    def evaluate(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        W, a = params["W"], params["a"]
        h = torch.relu(torch.einsum("btd,bhd->bth", x, W))  # [B, T, H]
        return torch.einsum("bth,bh->bt", h, a) * math.sqrt(2.0 / W.shape[1])  # [B, T]


class DecisionTreeTask(Task[DecisionTreeConfig]):
    """A complete binary tree of depth D = depth per prompt (Garg et al.): f(x) = the leaf that x reaches.

    Nodes are numbered heap-style: the root is 0, node n has children 2n + 1 (taken when x_i ≤ 0) and 2n + 2
    (x_i > 0), where i is the node's coordinate, uniform on {0, …, d − 1}; thresholds are 0. Internal nodes are
    0 … 2^D − 2, leaves 2^D − 1 … 2^{D+1} − 2 with values ~ N(0, τ²) (τ = 1: Garg's N(0, 1)).
    params: {"feature": int64 [B, 2^D − 1] (coordinate of each internal node), "leaf": [B, 2^D] (leaf values)}.
    """

    def sample_params(
        self, batch: int, *, generator: torch.Generator, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        c = self.config
        n_leaves = 2**c.depth
        feature = torch.randint(c.d, (batch, n_leaves - 1), generator=generator, device=device)
        leaf = torch.randn((batch, n_leaves), generator=generator, device=device, dtype=dtype) * c.w_scale
        return {"feature": feature, "leaf": leaf}

    @staticmethod
    def paths(x: Tensor, params: dict[str, Tensor]) -> Tensor:
        """Heap indices of the nodes visited from the root to the leaf: int64 [B, T, D + 1] for x [B, T, d]."""
        feature = params["feature"]  # [B, 2^D − 1]
        depth = int(math.log2(feature.shape[1] + 1))
        node = torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)  # [B, T], all at the root
        visited = [node]
        for _ in range(depth):  # one gather per level: the node's coordinate, then x at that coordinate
            coord = feature.gather(1, node)  # [B, T]
            right = x.gather(2, coord.unsqueeze(-1)).squeeze(-1) > 0  # [B, T]
            node = 2 * node + 1 + right.long()
            visited.append(node)
        return torch.stack(visited, dim=-1)  # [B, T, D + 1]

    def evaluate(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        leaf = params["leaf"]  # [B, 2^D]
        index = self.paths(x, params)[..., -1] - (leaf.shape[1] - 1)  # [B, T] leaf number 0 … 2^D − 1
        return leaf.gather(1, index)  # [B, T]


class SineTask(Task[SineConfig]):
    """y = A sin(x + φ) + ε, A ~ U(amplitude), φ ~ U(phase), d = 1 (von Oswald et al.; MAML's ranges by default:
    A ∈ [0.1, 5], φ ∈ [0, π]). The vO preset uses x ~ U(−5, 5) (x_dist uniform, x_scale 5).

    A and φ are drawn independently. The vO code derives both from one random key (so they are dependent, a quirk
    we do not copy). w_scale is ignored (the amplitude range sets the scale). params: {"amplitude": [B], "phase": [B]}.
    """

    def sample_params(
        self, batch: int, *, generator: torch.Generator, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        c = self.config
        amplitude = _uniform(*c.amplitude, (batch,), generator, device, dtype)
        phase = _uniform(*c.phase, (batch,), generator, device, dtype)
        return {"amplitude": amplitude, "phase": phase}

    def evaluate(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        amplitude, phase = params["amplitude"].unsqueeze(1), params["phase"].unsqueeze(1)  # [B, 1]
        return amplitude * torch.sin(x[..., 0] + phase)  # [B, T]


class FourierTask(Task[FourierConfig]):
    """y = a_0 + Σ_{k=1..K} [a_k cos(kπx/L) + b_k sin(kπx/L)] + ε, K = frequencies, L = x_scale, d = 1.

    The basic period 2L spans the input range [−L, L] (uniform inputs). All 2K + 1 coefficients are i.i.d.
    N(0, τ²/(K + 1)), so E f(x)² = τ² at every x (cos² + sin² = 1), whatever K. Bayesian-prism's Fourier series
    (Panwar et al.; L = 5, x ~ U(−5, 5)) draw N(0, 1) coefficients, i.e. E f² = K + 1: set w_scale² = K + 1 for
    their scale. params: {"a": [B, K + 1] (a_0 … a_K), "b": [B, K] (b_1 … b_K)}.
    """

    def sample_params(
        self, batch: int, *, generator: torch.Generator, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        K = self.config.frequencies
        std = self.config.w_scale / math.sqrt(K + 1)
        coef = torch.randn((batch, 2 * K + 1), generator=generator, device=device, dtype=dtype) * std
        return {"a": coef[:, : K + 1], "b": coef[:, K + 1 :]}

    def features(self, x: Tensor) -> Tensor:
        """[B, T, 2K + 1] Fourier features (1, cos(kπx/L) for k = 1…K, sin(kπx/L) for k = 1…K) of x [B, T, 1]."""
        K, L = self.config.frequencies, self.config.x_scale
        k = torch.arange(1, K + 1, device=x.device, dtype=x.dtype)  # [K]
        angle = x * (k * (math.pi / L))  # [B, T, 1] * [K] → [B, T, K]
        return torch.cat([torch.ones_like(x), angle.cos(), angle.sin()], dim=-1)  # [B, T, 2K + 1]

    def evaluate(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        coef = torch.cat([params["a"], params["b"]], dim=-1)  # [B, 2K + 1], the order of `features`
        return torch.einsum("btk,bk->bt", self.features(x), coef)  # [B, T]
