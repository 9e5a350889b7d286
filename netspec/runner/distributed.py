"""Training on several processes with DDP, launched by `torchrun` (or `netspec run --nproc N`). The spec's batch
size is that of all processes: each takes every N-th sample; rank 0 alone writes, evaluates and reports."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from netspec.errors import RunError


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes training one run."""

    size: int = 1
    rank: int = 0
    backend: str | None = None  # None: not launched by torchrun

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def part(self) -> tuple[int, int]:
        return self.rank, self.size

    def record(self) -> dict:
        return {"processes": self.size, "backend": self.backend}


SINGLE = Ranks()


def join(device: torch.device) -> tuple[Ranks, torch.device]:
    """The process group of a torchrun launch, joined (once), and this process's device (its own GPU)."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:  # not started by torchrun
        return SINGLE, device
    size, rank, local = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise RunError(f"process {rank} of {size} wants GPU {local}; this machine has {torch.cuda.device_count()}")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Ranks(size, rank, backend), device


def leave(ranks: Ranks) -> None:
    if ranks.backend is not None and dist.is_initialized():
        dist.destroy_process_group()


def from_main(ranks: Ranks, value):
    """Rank 0's `value` on every rank (the run folder's path, chosen there)."""
    box = [value]
    if ranks.size > 1:
        dist.broadcast_object_list(box, src=0)
    return box[0]


def settle(ranks: Ranks) -> None:
    """Wait for every process (rank 0 writing the finished folder)."""
    if ranks.size > 1:
        dist.barrier()


def summed(ranks: Ranks, *values: torch.Tensor) -> list[torch.Tensor]:
    """Copies of per-process tensors summed over all processes (the originals stay local)."""
    if ranks.size == 1:
        return list(values)
    stacked = torch.stack([v.detach().double() for v in values])
    dist.all_reduce(stacked)
    return list(stacked)


def least(ranks: Ranks, value: torch.Tensor) -> torch.Tensor:
    if ranks.size == 1:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.MIN)
    return out


def peer_left(e: RuntimeError) -> bool:
    """Whether a collective failed because another process of the group is gone: interrupted, not failed."""
    text = str(e).lower()
    return any(w in text for w in ("connection closed", "connection reset", "broken pipe", "gloo", "nccl"))


def wrap(net: torch.nn.Module, ranks: Ranks, device: torch.device, sync_batchnorm: bool = False) -> torch.nn.Module:
    """DDP around the network when there are several processes (its BatchNorm layers SyncBatchNorm with
    `sync_batchnorm`, sharing their parameters: the model saved is the one trained)."""
    if ranks.size == 1:
        return net
    from torch.nn.parallel import DistributedDataParallel

    if sync_batchnorm:  # on GPUs (the runner refuses it elsewhere); a net without BatchNorm is left as it is
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    return DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
