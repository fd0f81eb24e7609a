"""Mixtures of task families (Bayesian-prism): each prompt, or each batch, comes from one of `components`."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from iclab.config import TaskConfig, task_config
from iclab.tasks.base import Draw, Prompts, Task
from iclab.validation import ConfigError, check_choice, fail

__all__ = ["MixtureConfig", "MixtureTask"]

MIX_BY = ("prompt", "batch")


@dataclass(frozen=True)
class MixtureConfig(TaskConfig):
    """A uniform mixture of task families (`MixtureTask`). Each component is its family's config with this
    config's common fields (d, inputs, w_scale, noise, …) and its own fields at their defaults."""

    name: ClassVar[str] = "mixture"

    components: tuple[str, ...] = ("linear", "quadratic")
    """the families mixed (at least two, i.i.d. inputs), each NAME or NAME:FIELD=VALUE[:FIELD=VALUE…] to set its
    own fields, e.g. sparse_linear:sparsity=1"""
    mix_by: Literal["prompt", "batch"] = "prompt"
    """draw the family per prompt or once per batch"""

    def __post_init__(self) -> None:
        super().__post_init__()
        from iclab.tasks import TASKS

        check_choice("task.mix_by", self.mix_by, MIX_BY)
        allowed = [n for n in TASKS.names() if n != self.name]
        if not isinstance(self.components, tuple | list) or len(self.components) < 2:
            fail("task.components", f"at least two of: {', '.join(allowed)}", self.components)
        for c in self.components:
            if not isinstance(c, str):
                fail("task.components", "family names (NAME or NAME:FIELD=VALUE)", c)
            check_choice("task.components", c.split(":")[0], tuple(allowed))
        configs = self.component_configs()
        own = [c.name for c in configs if not c.iid_inputs]
        if own:  # e.g. ar: inputs are windows of one sequence, not i.i.d. draws a mixture could mix
            raise ConfigError(
                f"task.components: {', '.join(own)} draw their own prompts (sequences) and cannot be mixed, "
                f"got {list(self.components)}"
            )
        if len({c.target_dim is None for c in configs}) > 1:
            vector = [c.name for c in configs if c.target_dim is not None]
            raise ConfigError(
                f"task.components: cannot mix vector-target families ({', '.join(vector)}) with scalar ones, "
                f"got {list(self.components)}"
            )

    def component_configs(self) -> tuple[TaskConfig, ...]:
        """Each component's config: its family with this config's common fields and the component's own settings."""
        common = {f.name: getattr(self, f.name) for f in dataclasses.fields(TaskConfig)}
        return tuple(_component(spec, common) for spec in self.components)

    @property
    def target_dim(self) -> int | None:
        return self.component_configs()[0].target_dim


def _component(spec: str, common: dict[str, Any]) -> TaskConfig:
    """The config of one component spec NAME[:FIELD=VALUE…]; VALUE is read as JSON where it can be (numbers,
    true/false, lists), else taken as a string."""
    name, *settings = spec.split(":")
    fields = dict(common)
    for setting in settings:
        key, eq, text = setting.partition("=")
        if not eq or not key:
            fail("task.components", "NAME or NAME:FIELD=VALUE[:FIELD=VALUE…]", spec)
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        fields[key] = tuple(value) if isinstance(value, list) else value
    return task_config(name, **fields)


class MixtureTask(Task[MixtureConfig]):
    """A uniform mixture of the families in `config.components` (C of them, repeats allowed).

    Component i is its family's config with this config's common fields (d, x distribution, noise, …) and its
    own fields at their defaults (`MixtureConfig.component_configs`). ``mix_by="prompt"`` draws each prompt's
    family uniformly; ``mix_by="batch"`` draws one family per `sample` call for the whole batch.

    Params: every component's parameters for every prompt, namespaced ``"c{i}.<name>"`` (leading dimension B), and
    ``"component"`` [B] (long), the family of each prompt. `evaluate` computes all C functions and selects one per
    prompt (C times the work of one family, but no data-dependent shapes and so no host sync). Label noise is each
    component's own (`add_noise`: Gaussian, label flips, …), applied to that component's targets. Families
    without i.i.d. inputs (sequences, `TaskConfig.iid_inputs`) cannot be mixed; those with their own `sample_x`
    can.

    A finite pool (pool_size M > 0) holds M such parameter sets with their component labels: M distinct functions
    with ``mix_by="prompt"``; with ``mix_by="batch"`` the batch's family replaces the pool's label, so each batch
    sees the M pool entries of one family.
    """

    def __init__(self, config: MixtureConfig):
        from iclab.tasks import make_task

        super().__init__(config)
        self.components: tuple[Task, ...] = tuple(make_task(c) for c in config.component_configs())

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

    def draw(self, batch: int, n: int, how: Draw) -> Prompts:
        """As `Task.sample`, with component-specific inputs (where families differ) and label noise."""
        generator, device, dtype, d_active = how
        c = self.config
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
