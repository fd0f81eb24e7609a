"""The base class of task families (the batch contract they return, `Prompts`, lives in iclab.prompts).

A task family is three random choices and a function: inputs x (`sample_x`), the parameters of one function per
prompt (`sample_params`, e.g. w, the teacher net's weights, the tree), and the function itself (`evaluate`), plus
label noise (`add_noise`). `Task.sample` composes them; `Task.targets(x, prompts)` evaluates the prompts' own
functions at new inputs, which is what the distribution-shift suite needs. A finite task pool (`pool_size` M > 0,
Raventós et al.) draws M parameter sets once from `pool_seed` and gives every prompt one of them uniformly.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar

import torch
from torch import Tensor

from iclab.config import TaskConfig
from iclab.prompts import Prompts

if TYPE_CHECKING:
    from iclab.models.base import ICLModel

__all__ = ["Draw", "Prompts", "Task"]

C = TypeVar("C", bound=TaskConfig)


class Draw(NamedTuple):
    """How `Task.draw` draws: from `generator`, on `device`, in `dtype`, with the first `d_active` input
    coordinates active (None: all; Garg's curriculum)."""

    generator: torch.Generator
    device: torch.device
    dtype: torch.dtype
    d_active: int | None


def _move_param(t: Tensor, device, dtype) -> Tensor:
    # integer parameters (tree feature indices, mixture components) keep their dtype
    return t.to(device=device, dtype=dtype if t.is_floating_point() else None)


class Task(Generic[C]):
    """Base class of task families (generic in the family's config class C). Subclasses implement `sample_params`
    and `evaluate`; most keep the input distribution and the Gaussian label noise given here.

    Shapes: x [B, T, d]; params: dict of tensors with leading dimension B; f, y [B, T] (or [B, T, k]).
    Every random draw comes from the explicit `generator`, which lives on the target device.
    """

    def __init__(self, config: C):
        self.config: C = config
        self._cache: dict[tuple, Tensor | dict[str, Tensor]] = {}

    @property
    def d(self) -> int:
        return self.config.d

    @property
    def vector_targets(self) -> bool:
        """y is [B, T, k] (k = config.target_dim), not [B, T]."""
        return self.config.target_dim is not None

    # --- the three random choices ------------------------------------------------------------------------------
    def x_cov_diag(self) -> Tensor | None:
        """[d] float64 diagonal of the Gaussian input covariance before x_scale² (None: identity)."""
        c = self.config
        if c.x_cov_diag is not None:
            return torch.tensor(c.x_cov_diag, dtype=torch.float64)
        if c.x_condition != 1.0:  # log-spaced eigenvalues 1 … 1/κ, normalised to mean 1 (tr Σ = d)
            lam = torch.logspace(0.0, -math.log10(c.x_condition), c.d, dtype=torch.float64)
            return lam / lam.mean()
        return None

    def x_second_moment(self) -> Tensor:
        """Diagonal of E[x xᵀ], shape [d] (float64)."""
        c = self.config
        if c.x_dist == "uniform":
            return torch.full((c.d,), c.x_scale**2 / 3, dtype=torch.float64)
        diag = self.x_cov_diag()
        return (torch.ones(c.d, dtype=torch.float64) if diag is None else diag) * c.x_scale**2

    def _cached(self, key: tuple, make):
        # Built once per device and dtype: a host→device copy in every sample() would sync each training step.
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def sample_x(
        self, batch: int, n_total: int, *, generator: torch.Generator, device: torch.device, dtype: torch.dtype
    ) -> Tensor:
        """[batch, n_total, d] inputs: U(−a, a)^d or N(0, a²Σ_x)."""
        c = self.config
        shape = (batch, n_total, c.d)
        if c.x_dist == "uniform":
            return (torch.rand(shape, generator=generator, device=device, dtype=dtype) * 2 - 1) * c.x_scale
        x = torch.randn(shape, generator=generator, device=device, dtype=dtype) * c.x_scale
        if (diag := self.x_cov_diag()) is not None:
            x = x * self._cached(("x_sqrt", device, dtype), lambda: diag.sqrt().to(device, dtype))
        return x

    def sample_params(
        self, batch: int, *, generator: torch.Generator, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        """Parameters of `batch` independent functions, each tensor with leading dimension batch."""
        raise NotImplementedError

    def evaluate(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        """Noiseless targets f [B, T] (or [B, T, k]) of the functions `params` at inputs x [B, T, d]."""
        raise NotImplementedError

    def add_noise(self, f: Tensor, *, generator: torch.Generator) -> Tensor:
        """y = f + N(0, σ²) (subclasses with other label noise override)."""
        if self.config.noise_var == 0:
            return f
        noise = torch.randn(f.shape, generator=generator, device=f.device, dtype=f.dtype)
        return f + noise * self.config.noise_var**0.5

    # --- the finite task pool -----------------------------------------------------------------------------------
    def pool_params(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
        """The M parameter sets of the finite task pool (leading dimension M), drawn once from pool_seed."""
        c = self.config
        if c.pool_size < 1:
            raise ValueError("task.pool_size: this task has no finite pool (pool_size = 0)")
        device = torch.device(device)

        def draw() -> dict[str, Tensor]:
            # drawn on the CPU in float64, so the pool is the same on every device and dtype
            gen = torch.Generator().manual_seed(c.pool_seed)
            pool = self.sample_params(c.pool_size, generator=gen, device=torch.device("cpu"), dtype=torch.float64)
            return {k: _move_param(v, device, dtype) for k, v in pool.items()}

        return self._cached(("pool", device, dtype), draw)

    # --- sampling ------------------------------------------------------------------------------------------------
    def prompt_params(
        self, batch: int, *, generator: torch.Generator, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        """Parameters of `batch` prompts: fresh draws, or uniform draws from the finite pool (pool_size > 0)."""
        c = self.config
        if c.pool_size > 0:
            pool = self.pool_params(device, dtype)
            index = torch.randint(c.pool_size, (batch,), generator=generator, device=device)
            return {k: v[index] for k, v in pool.items()}
        return self.sample_params(batch, generator=generator, device=device, dtype=dtype)

    def check_d_active(self, d_active: int | None) -> int:
        """d_active validated (None: d); ValueError in one line otherwise."""
        if d_active is None:
            return self.d
        if isinstance(d_active, bool) or not isinstance(d_active, int) or not 1 <= d_active <= self.d:
            raise ValueError(f"d_active: must be an integer in [1, d = {self.d}], got {d_active!r}")
        return d_active

    def zero_inactive(self, x: Tensor, d_active: int | None) -> Tensor:
        """x [B, T, d] with coordinates >= d_active set to zero (Garg's curriculum); None: x unchanged."""
        if (d_on := self.check_d_active(d_active)) == self.d:
            return x
        inactive = torch.arange(x.shape[-1], device=x.device) >= d_on  # [d], built on the device: no host copy
        return x.masked_fill(inactive, 0.0)

    def sample(
        self,
        batch: int,
        *,
        generator: torch.Generator,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        n_points: int | None = None,
        d_active: int | None = None,
    ) -> Prompts:
        """Draw `batch` prompts: x [batch, n + m, d], y and f [batch, n + m] (or [..., k]), params.

        `n_points` overrides the configured context length (prompt-length shift, curricula). `d_active` (curricula,
        Garg et al.) zeroes the input coordinates >= d_active before the functions are evaluated.

        The prompts come from `draw`; a family that does not draw i.i.d. points (sequences) overrides `draw`.
        """
        device = generator.device if device is None else torch.device(device)
        n = self.config.n_points if n_points is None else n_points
        return self.draw(batch, n, Draw(generator, device, dtype, d_active))

    def draw(self, batch: int, n: int, how: Draw) -> Prompts:
        """`batch` prompts of n context points and the configured queries: i.i.d. inputs (`sample_x`), one function
        per prompt (`prompt_params`), noise (`add_noise`)."""
        generator, device, dtype, d_active = how
        c = self.config
        x = self.sample_x(batch, n + c.n_queries, generator=generator, device=device, dtype=dtype)
        x = self.zero_inactive(x, d_active)
        params = self.prompt_params(batch, generator=generator, device=device, dtype=dtype)
        f = self.evaluate(x, params)
        y = self.add_noise(f, generator=generator)
        return Prompts(x=x, y=y, n_ctx=n, w=params.get("w"), f=f, params=params)

    def eval_sets(self, n: int, *, generator: torch.Generator) -> dict[str, Prompts]:
        """The held-out sets a run of this family is evaluated on, n prompts each, drawn one after another from
        `generator` on its device in float64 (the trainer draws them once from eval.seed on the CPU): "eval", the
        training distribution's (`sample`), first; a family whose evaluation separates strategies adds its splits
        (icl_classification: icl, icl_permuted, iwl). The trainer scores each set by its targets and logs
        `<set>_<metric>` (iclab.training.trainer.member_metrics)."""
        return {"eval": self.sample(n, generator=generator, dtype=torch.float64)}

    def eval_measures(self, model: ICLModel, sets: dict[str, Prompts]) -> dict[str, Tensor]:
        """{column: [1]} of what the trainer logs about one `model` (an ensemble: each member, one at a time) beside
        the metrics of `sets` (this task's `eval_sets`) at every evaluation: nothing for most families;
        icl_classification logs the induction-head and previous-token scores and Reddy's progress measures
        (iclab.analysis.induction)."""
        return {}

    def targets(self, x: Tensor, prompts: Prompts) -> Tensor:
        """Noiseless targets of the prompts' own functions at new inputs x [B, T, d] → [B, T] (or [B, T, k])."""
        if prompts.params is None:
            raise ValueError("targets: the prompts carry no task parameters")
        return self.evaluate(x, prompts.params)
