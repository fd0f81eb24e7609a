"""In-context linear regression (von Oswald et al.; Garg et al.; the theory of REFERENCE §6)."""

from __future__ import annotations

import torch

from iclab.config import TaskConfig
from iclab.tasks.base import Prompts

__all__ = ["LinearRegressionTask"]


class LinearRegressionTask:
    """y = wᵀx + ε with x ~ U(−a, a)^d or N(0, a²·diag(x_cov_diag)), w ~ N(0, τ²·diag(w_cov_diag)), ε ~ N(0, σ²).

    Sampling runs on the requested device from an explicit generator (which must live on that device).
    """

    def __init__(self, config: TaskConfig):
        self.config = config
        self._sqrt_diag: dict[tuple[str, torch.device, torch.dtype], torch.Tensor] = {}

    def _sqrt(self, name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        # Built once per device and dtype: a host→device copy in every sample() would sync each training step.
        key = (name, device, dtype)
        if key not in self._sqrt_diag:
            values = getattr(self.config, name)
            self._sqrt_diag[key] = torch.tensor(values, dtype=torch.float64).sqrt().to(device=device, dtype=dtype)
        return self._sqrt_diag[key]

    @property
    def d(self) -> int:
        return self.config.d

    def x_second_moment(self) -> torch.Tensor:
        """Diagonal of E[x xᵀ], shape [d] (float64)."""
        c = self.config
        if c.x_dist == "uniform":
            return torch.full((c.d,), c.x_scale**2 / 3, dtype=torch.float64)
        diag = torch.ones(c.d, dtype=torch.float64) if c.x_cov_diag is None else torch.tensor(c.x_cov_diag)
        return diag.double() * c.x_scale**2

    def w_second_moment(self) -> torch.Tensor:
        """Diagonal of E[w wᵀ], shape [d] (float64)."""
        c = self.config
        diag = torch.ones(c.d, dtype=torch.float64) if c.w_cov_diag is None else torch.tensor(c.w_cov_diag)
        return diag.double() * c.w_scale**2

    def sample(
        self,
        batch: int,
        *,
        generator: torch.Generator,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        n_points: int | None = None,
    ) -> Prompts:
        """Draw `batch` prompts: x [batch, n + m, d], y, f [batch, n + m], w [batch, d].

        `n_points` overrides the configured context length (prompt-length shift).
        """
        c = self.config
        device = generator.device if device is None else torch.device(device)
        n = c.n_points if n_points is None else n_points
        total = n + c.n_queries
        shape = (batch, total, c.d)
        if c.x_dist == "uniform":
            x = (torch.rand(shape, generator=generator, device=device, dtype=dtype) * 2 - 1) * c.x_scale
        else:
            x = torch.randn(shape, generator=generator, device=device, dtype=dtype) * c.x_scale
            if c.x_cov_diag is not None:
                x = x * self._sqrt("x_cov_diag", device, dtype)
        w = torch.randn((batch, c.d), generator=generator, device=device, dtype=dtype) * c.w_scale
        if c.w_cov_diag is not None:
            w = w * self._sqrt("w_cov_diag", device, dtype)
        f = torch.einsum("btd,bd->bt", x, w)  # [batch, total]
        y = f
        if c.noise_var > 0:
            y = f + torch.randn(f.shape, generator=generator, device=device, dtype=dtype) * c.noise_var**0.5
        return Prompts(x=x, y=y, n_ctx=n, w=w, f=f)
