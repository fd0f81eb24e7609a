"""Mixtures of task families (Bayesian-prism): each prompt, or each batch, comes from one of `components`."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from iclab.config import ConfigError, TaskConfig
from iclab.tasks import task_class
from iclab.tasks.base import Prompts, Task

__all__ = ["MixtureTask"]


class MixtureTask(Task):
    """A uniform mixture of the families in `config.components` (C of them, repeats allowed).

    Component i is its family built from this config with ``name=components[i]``, so every family field (d, x
    distribution, noise, sparsity, …) is shared. ``mix_by="prompt"`` draws each prompt's family uniformly;
    ``mix_by="batch"`` draws one family per `sample` call for the whole batch.

    Params: every component's parameters for every prompt, namespaced ``"c{i}.<name>"`` (leading dimension B), and
    ``"component"`` [B] (long), the family of each prompt. `evaluate` computes all C functions and selects one per
    prompt (C times the work of one family, but no data-dependent shapes and so no host sync). Label noise is each
    component's own (`add_noise`: Gaussian, label flips, …), applied to that component's targets. Families that
    override `Task.sample` (sequences) cannot be mixed; families with their own `sample_x` can.

    A finite pool (pool_size M > 0) holds M such parameter sets with their component labels: M distinct functions
    with ``mix_by="prompt"``; with ``mix_by="batch"`` the batch's family replaces the pool's label, so each batch
    sees the M pool entries of one family.
    """

    def __init__(self, config: TaskConfig):
        super().__init__(config)
        self.components: tuple[Task, ...] = tuple(
            task_class(name)(dataclasses.replace(config, name=name, components=())) for name in config.components
        )
        own = [n for n, t in zip(config.components, self.components) if type(t).sample is not Task.sample]
        if own:  # e.g. ar: inputs are windows of one sequence, not i.i.d. draws this class could mix
            raise ConfigError(
                f"task.components: {', '.join(own)} draw their own prompts (sequences) and cannot be mixed, "
                f"got {list(config.components)}"
            )
        kinds = {bool(t.vector_targets) for t in self.components}
        if len(kinds) > 1:
            vector = [n for n, t in zip(config.components, self.components) if t.vector_targets]
            raise ConfigError(
                f"task.components: cannot mix vector-target families ({', '.join(vector)}) with scalar ones, "
                f"got {list(config.components)}"
            )
        self.vector_targets = kinds.pop()

    @property
    def n_components(self) -> int:
        return len(self.components)

    @staticmethod
    def component_params(params: dict[str, Tensor], i: int) -> dict[str, Tensor]:
        """Component i's parameters with the ``"c{i}."`` prefix removed."""
        prefix = f"c{i}."
        return {k[len(prefix) :]: v for k, v in params.items() if k.startswith(prefix)}

    def sample_x(
        self, batch: int, n_total: int, *, generator: torch.Generator, device: torch.device, dtype: torch.dtype
    ) -> Tensor:
        """[batch, n_total, d] inputs of the first component (`sample` draws per component where they differ)."""
        return self.components[0].sample_x(batch, n_total, generator=generator, device=device, dtype=dtype)

    def sample_params(
        self, batch: int, *, generator: torch.Generator, device: torch.device, dtype: torch.dtype
    ) -> dict[str, Tensor]:
        """Every component's parameters ("c{i}.…") and a uniform component label "component" [batch] (long)."""
        params: dict[str, Tensor] = {}
        for i, task in enumerate(self.components):
            sub = task.sample_params(batch, generator=generator, device=device, dtype=dtype)
            params.update({f"c{i}.{k}": v for k, v in sub.items()})
        params["component"] = torch.randint(self.n_components, (batch,), generator=generator, device=device)
        return params

    def _select(self, per_component: list[Tensor], component: Tensor) -> Tensor:
        """[B, …] entries of per_component[component[b]] for each prompt b (a list of C tensors [B, …])."""
        shapes = {tuple(t.shape) for t in per_component}
        if len(shapes) > 1:
            raise ConfigError(
                f"task.components: families with different target shapes cannot be mixed, got "
                f"{list(self.config.components)} with shapes {sorted(shapes)}"
            )
        stacked = torch.stack(per_component, dim=1)  # [B, C, …]
        rows = torch.arange(stacked.shape[0], device=stacked.device)
        return stacked[rows, component]  # [B, …]

    def _component_targets(self, x: Tensor, params: dict[str, Tensor]) -> list[Tensor]:
        """C tensors [B, T] (or [B, T, k]): every component's function at x [B, T, d]."""
        return [task.evaluate(x, self.component_params(params, i)) for i, task in enumerate(self.components)]

    def evaluate(self, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        return self._select(self._component_targets(x, params), params["component"])

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
        """As `Task.sample`, with component-specific inputs (where families differ) and label noise."""
        c = self.config
        device = generator.device if device is None else torch.device(device)
        n = c.n_points if n_points is None else n_points
        shape = (batch, n + c.n_queries)
        samplers = {type(t).sample_x for t in self.components}
        if len(samplers) == 1:
            x = self.sample_x(*shape, generator=generator, device=device, dtype=dtype)
        else:  # e.g. sequences and i.i.d. inputs: draw each family's inputs, pick below
            xs = [t.sample_x(*shape, generator=generator, device=device, dtype=dtype) for t in self.components]
        params = self.prompt_params(batch, generator=generator, device=device, dtype=dtype)
        if c.mix_by == "batch":  # one draw for the whole batch, kept on the device
            one = torch.randint(self.n_components, (1,), generator=generator, device=device)
            params["component"] = one.expand(batch).clone()
        component = params["component"]
        if len(samplers) > 1:
            x = self._select(xs, component)
        x = self.zero_inactive(x, d_active)
        fs = self._component_targets(x, params)
        ys = [task.add_noise(f, generator=generator) for task, f in zip(self.components, fs)]
        f, y = self._select(fs, component), self._select(ys, component)
        return Prompts(x=x, y=y, n_ctx=n, w=params.get("w"), f=f, params=params)
