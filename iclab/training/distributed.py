"""Data-parallel training of one run over several processes (`torchrun --nproc_per_node P -m iclab train …`).

torchrun starts P processes with RANK, WORLD_SIZE and a rendezvous address in their environment; `DataParallel
.from_env` joins them into one process group (gloo on the CPU, NCCL on CUDA). The model is wrapped in PyTorch's
DistributedDataParallel, which averages the gradients over the processes during backward.

Every process draws the whole global batch of train.batch_size prompts from the run's one data stream and keeps
its own contiguous share (batch_size / P prompts), so the data of a step is exactly the data a single process
would draw, and the average of the shares' mean-loss gradients is the gradient of the global mean loss: the run
equals one process with the same global batch up to the order of floating-point sums (tests/test_distributed.py
states the tolerance). Drawing the whole batch in every process costs sampling time, which is small beside the
forward and backward of the models this is for.

Rank 0 alone writes the run (config, metrics, checkpoints, lock); the others read its checkpoint on resume. The
held-out evaluation runs in every process on identical weights, so every process takes the same decisions
(divergence, the end). Ensembles are not split over processes (an ensemble is already one pass).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from iclab.prompts import Prompts

__all__ = ["DataParallel"]


class _Loss(nn.Module):
    """A model whose forward is its training loss, the call DistributedDataParallel needs to wrap."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, prompts: Prompts) -> Tensor:
        return self.model.training_loss(prompts)  # type: ignore[operator]


@dataclass(frozen=True)
class DataParallel:
    """This process's place in a data-parallel run: its rank among `world` processes."""

    rank: int
    world: int

    @classmethod
    def from_env(cls, device: torch.device) -> DataParallel | None:
        """The run's process group when started by torchrun (WORLD_SIZE > 1), joined on first use; else None."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        import torch.distributed as dist

        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group(backend)
        return cls(dist.get_rank(), dist.get_world_size())

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """`model`'s training loss as a DistributedDataParallel module: calling it on this process's share gives
        the share's loss, and its backward leaves the gradient averaged over the processes in `model`'s .grad."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" and device.index is not None else None
        return DistributedDataParallel(_Loss(model), device_ids=ids)

    def share(self, prompts: Prompts) -> Prompts:
        """This process's contiguous share of the global batch: prompts [B] → [B / world]."""
        size = len(prompts) // self.world
        return prompts[self.rank * size : (self.rank + 1) * size]

    def mean(self, value: Tensor) -> Tensor:
        """The mean of `value` over the processes (every process gets it)."""
        import torch.distributed as dist

        total = value.detach().clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total / self.world

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()
