"""Ensembles: E models of one family and shape trained as one run (`ensemble.seeds`).

`Ensemble` builds member e exactly as a single run with train.seed = seeds[e] builds its model, then stacks the
members' parameters on a leading member dimension (`torch.func.stack_module_state`): one optimizer steps all of
them, and since Adam(W) works element by element and the trainer clips each member on its own, member e follows
the trajectory of its single run. Each member also keeps its own data stream: the trainer samples a batch per
member from a generator seeded seeds[e] + 1, as the single run would, and hands the model the E batches stacked
along the prompt dimension ([E·B, T, d]).

The generic path, for every model family: each member's loss is the family's own `training_loss`, evaluated with
the member's weights by `torch.func.functional_call`, for all members at once under `vmap` (impl "fast") or one
member after another (impl "naive", the reference). A family may also offer a hand-written batched form,
`members_training_loss(params [E, …] by name, prompts) → [E]`, which the fast path then uses instead of vmap
(lsa: iclab.models.lsa_fast, whose weight products become E big GEMMs and whose per-prompt products one batched
product over E·B prompts). After training,
`export_members` writes every member as an ordinary run directory (RUN/members/seed-<s>/) that `iclab compare`,
`eval` and `analyze` open like any other.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pandas as pd
import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from iclab.config import ExperimentConfig, ModelConfig, config_to_dict
from iclab.models import ICLModel, make_model
from iclab.models.base import Impl
from iclab.models.hooks import HookPoint
from iclab.prompts import Prompts
from iclab.runs import RunDir

__all__ = ["Ensemble", "export_members", "member_config"]


@contextlib.contextmanager
def _no_fallback_warning() -> Iterator[None]:
    """vmap runs an op without a batching rule (scaled_dot_product_attention on the CPU) member by member, correctly,
    and warns about the speed; that is known here (`iclab bench` times the ensemble), so the warning is dropped."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="There is a performance drop because we have not yet implemented")
        yield


class _Call(nn.Module):
    """Calls a method of the wrapped model, so that `functional_call` can run any method with given weights."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, method: str, *args: Any) -> Any:
        return getattr(self.inner, method)(*args)


class Ensemble(ICLModel):
    """E members of one model family; parameters [E, …] (module docstring). `predict_prompts` → [E, B, m]."""

    _call: _Call  # the skeleton the members' weights are plugged into (not a submodule: not trained)
    _skeleton: ICLModel  # a model of the family, copied by `member`

    def __init__(
        self, config: ModelConfig, d: int, seeds: Sequence[int], *, k: int | None = None, n_labels: int | None = None
    ):
        super().__init__()
        models = [
            make_model(config, d, k=k, n_labels=n_labels, generator=torch.Generator().manual_seed(s)) for s in seeds
        ]
        params, buffers = stack_module_state(models)
        self.names = list(params)
        self.stacked = nn.ParameterList(nn.Parameter(params[n].detach().clone()) for n in self.names)
        for name, buffer in buffers.items():
            self.register_buffer("buffer__" + name.replace(".", "__"), buffer)
        self._buffer_names = list(buffers)
        object.__setattr__(self, "_call", _Call(copy.deepcopy(models[0])))
        object.__setattr__(self, "_skeleton", models[0])
        self.config, self.d, self.members, self.seeds = config, d, len(seeds), tuple(seeds)
        self.layout = models[0].layout
        self.n_labels = n_labels
        self.loss_name_ = models[0].loss_name

    @property
    def loss_name(self) -> str:
        return self.loss_name_

    def member_state(self, e: int) -> dict[str, Tensor]:
        """Member e's weights and buffers under the family's own names (a state_dict of one model)."""
        state = {n: p[e] for n, p in zip(self.names, self.stacked)}
        for name in self._buffer_names:
            state[name] = getattr(self, "buffer__" + name.replace(".", "__"))[e]
        return state

    def _run(self, e: int, method: str, *args: Any) -> Any:
        weights = {f"inner.{n}": v for n, v in self.member_state(e).items()}
        return functional_call(self._call, weights, (method, *args))

    impl: Impl = "fast"  # "fast": one vmap over the members; "naive": a Python loop over them (the reference)

    def training_loss(self, prompts: Prompts) -> Tensor:
        """[E] losses: member e's on its own batch, rows e·B … (e + 1)·B − 1 of the stacked prompts."""
        hooked = any(p._forward_hooks for p in self.hook_points().values())  # interventions run under vmap
        batched = self._skeleton.batched_members and not self._buffer_names and not hooked
        if self.impl != "naive" and batched:  # the family's hand-written batched form
            return self._skeleton.members_training_loss(dict(zip(self.names, self.stacked)), prompts)
        return self._each("training_loss", prompts)

    def _each(self, method: str, prompts: Prompts) -> Tensor:
        """The skeleton's `method` (training_loss or predict_prompts) with member e's weights on rows e·B … (e + 1)·B
        − 1 of the stacked prompts, for every member: one vmap (impl "fast") or a loop (impl "naive"); stacked
        [E, …]."""
        E = self.members
        B = len(prompts) // E
        if self.impl == "naive":
            return torch.stack([self._run(e, method, prompts[e * B : (e + 1) * B]) for e in range(E)])
        n_ctx = prompts.n_ctx

        def one(weights: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
            return functional_call(self._call, weights, (method, Prompts(x=x, y=y, n_ctx=n_ctx)))

        x = prompts.x.reshape(E, B, *prompts.x.shape[1:])  # [E, B, T, d]
        y = prompts.y.reshape(E, B, *prompts.y.shape[1:])  # [E, B, T(, k)]
        with _no_fallback_warning():
            return torch.func.vmap(one)(self._stacked_weights(), x, y)

    def _stacked_weights(self) -> dict[str, Tensor]:
        """Every member's weights and buffers, [E, …] each, under the skeleton's names."""
        weights = {f"inner.{n}": p for n, p in zip(self.names, self.stacked)}
        for name in self._buffer_names:
            weights[f"inner.{name}"] = getattr(self, "buffer__" + name.replace(".", "__"))
        return weights

    def predict_prompts(self, prompts: Prompts) -> Tensor:
        """[E, B, m] (or [E, B, m, k]): every member's predictions for the same prompts."""
        if self.impl == "naive":
            return torch.stack([self._run(e, "predict_prompts", prompts) for e in range(self.members)])
        n_ctx = prompts.n_ctx

        def one(weights: dict[str, Tensor]) -> Tensor:
            return functional_call(
                self._call, weights, ("predict_prompts", Prompts(x=prompts.x, y=prompts.y, n_ctx=n_ctx))
            )

        with _no_fallback_warning():
            return torch.func.vmap(one)(self._stacked_weights())

    def predict_each(self, prompts: Prompts) -> Tensor:
        """[E, B, m] (or [E, B, m, k | L]): member e's predictions for its own prompts, rows e·B … (e + 1)·B − 1 of
        the stacked prompts (members evaluated on held-out sets of their own tasks)."""
        return self._each("predict_prompts", prompts)

    def hook_points(self) -> dict[str, HookPoint]:
        """The family's hook points, on the skeleton every member's forward runs through (under vmap a hook sees
        one member's activations; iclab.models.interventions edits them member by member)."""
        return cast(ICLModel, self._call.inner).hook_points()

    def member(self, e: int) -> ICLModel:
        """Member e as an ordinary model (a copy with its weights)."""
        first = self.stacked[0]
        model = copy.deepcopy(self._skeleton).to(device=first.device, dtype=first.dtype)
        model.load_state_dict({n: v.detach().clone() for n, v in self.member_state(e).items()})
        return model


def member_config(config: ExperimentConfig, e: int) -> ExperimentConfig:
    """The config of the single run that ensemble member e equals (`ExperimentConfig.member`)."""
    return config.member(e)


def export_members(
    run: RunDir, config: ExperimentConfig, model: Ensemble, diverged: dict[int, int] | None = None
) -> list[Path]:
    """Write every member as an ordinary run RUN/members/<label>/ (`ExperimentConfig.member_label`: seed-<s>, and
    its per-member values if any): its config (`member_config`), its metrics (the
    member's columns of the ensemble's) and a checkpoint of its weights at the last step. A member that diverged
    (`diverged`: member → step) gets diverged.json instead of a checkpoint. Returns the paths."""
    import json

    from iclab.runs import atomic_write_bytes

    diverged = diverged or {}
    from iclab.training.trainer import MODEL_PREFIX

    history = run.metrics()
    paths = []
    for e in range(model.members):
        member_run = RunDir.create(
            run.path / "members" / config.member_label(e),
            config_to_dict(member_config(config, e)),
            force=True,
            lock=False,
        )
        columns = {"step": history["step"]}
        for column in history.columns:
            if column.endswith(f"/member{e}"):
                columns[column.removesuffix(f"/member{e}")] = history[column]
        member_run.log_metrics(pd.DataFrame(columns).to_dict("records"))
        if e in diverged:
            message = {"diverged_at_step": diverged[e], "reason": "its training loss became non-finite"}
            atomic_write_bytes(member_run.path / "diverged.json", json.dumps(message).encode())
            paths.append(member_run.path)
            continue
        step = int(history["step"].iloc[-1]) if len(history) else 0
        tensors = {MODEL_PREFIX + n: v.detach().cpu().contiguous() for n, v in model.member(e).state_dict().items()}
        member_run.save_checkpoint(step, tensors, {"step": step, "ensemble_member": e})
        paths.append(member_run.path)
    return paths
