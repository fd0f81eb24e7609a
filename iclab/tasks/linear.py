"""In-context linear regression (von Oswald et al.; Garg et al.; the theory of docs/papers.md §6) and its priors."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from iclab.config import TaskConfig
from iclab.tasks.base import Task
from iclab.validation import check_choice, check_int, check_positive_list, fail

__all__ = ["LinearConfig", "LinearRegressionTask"]

W_PRIORS = ("gaussian", "sign", "low_rank")


@dataclass(frozen=True)
class LinearConfig(TaskConfig):
    """Linear regression y = wᵀx + ε; the prior of w (see `LinearRegressionTask`)."""

    name: ClassVar[str] = "linear"

    w_prior: Literal["gaussian", "sign", "low_rank"] = "gaussian"
    """gaussian, sign (w ∈ {±τ}^d), low_rank (w = vec of a rank-w_rank √d×√d matrix)"""
    w_cov_diag: tuple[float, ...] | None = None
    """task-vector covariance diagonal (d values; times w_scale²)"""
    w_rank: int = 1
    """rank of the low_rank prior"""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("task.w_prior", self.w_prior, W_PRIORS)
        check_int("task.w_rank", self.w_rank, 1)
        if self.w_cov_diag is not None:
            check_positive_list("task.w_cov_diag", self.w_cov_diag, self.d)
            if self.w_prior != "gaussian":
                fail("task.w_cov_diag", "unset unless task.w_prior is 'gaussian'", list(self.w_cov_diag))
        if self.w_prior == "low_rank":
            side = math.isqrt(self.d)
            if side * side != self.d:
                fail("task.d", "a perfect square (4, 9, 16, …) for task.w_prior 'low_rank'", self.d)
            if self.w_rank > side:
                fail("task.w_rank", f"an integer in [1, √d = {side}]", self.w_rank)


class LinearRegressionTask(Task[LinearConfig]):
    """y = wᵀx + ε with x ~ U(−a, a)^d or N(0, a²Σ_x), ε ~ N(0, σ²) and w from `w_prior`:

    * ``gaussian``  w ~ N(0, τ²·diag(w_cov_diag)) (identity when unset);
    * ``sign``      w uniform on {−τ, +τ}^d (Bayesian-prism sign-vector regression);
    * ``low_rank``  w = vec(W), W = U Vᵀ/√r a √d×√d matrix of rank r = w_rank with U, V ~ N(0, 1) entries,
                    times τ: E‖w‖² = τ²d as for the Gaussian prior (Bayesian-prism low-rank regression).
    """

    def w_second_moment(self) -> Tensor:
        """Diagonal of E[w wᵀ], shape [d] (float64); every prior has E[w wᵀ] diagonal."""
        c = self.config
        diag = torch.ones(c.d, dtype=torch.float64) if c.w_cov_diag is None else torch.tensor(c.w_cov_diag)
        return diag.double() * c.w_scale**2

    def sample_params(
        self, batch: int, *, generator: torch.Generator, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        c = self.config
        if c.w_prior == "sign":
            w = (torch.randint(0, 2, (batch, c.d), generator=generator, device=device).to(dtype) * 2 - 1) * c.w_scale
        elif c.w_prior == "low_rank":
            side, r = math.isqrt(c.d), c.w_rank
            u = torch.randn((batch, side, r), generator=generator, device=device, dtype=dtype)
            v = torch.randn((batch, side, r), generator=generator, device=device, dtype=dtype)
            w = (u @ v.transpose(1, 2)).reshape(batch, c.d) * (c.w_scale / math.sqrt(r))  # [batch, d]
        else:
            w = torch.randn((batch, c.d), generator=generator, device=device, dtype=dtype) * c.w_scale
            if c.w_cov_diag is not None:
                diag = lambda: torch.tensor(c.w_cov_diag, dtype=torch.float64).sqrt().to(device, dtype)  # noqa: E731
                w = w * self._cached(("w_sqrt", device, dtype), diag)
        return {"w": w}

    def evaluate(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return torch.einsum("btd,bd->bt", x, params["w"])  # [B, T]
