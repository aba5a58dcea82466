"""Several processes, GPUs or machines through `torchrun` and DistributedDataParallel.

`torchrun --nproc-per-node N -m efficientformer train ...` sets RANK, WORLD_SIZE and LOCAL_RANK; the
trainer then joins the process group (NCCL on GPUs, gloo on CPUs), wraps the model in DDP, gives each
process its own slice of every global batch, and only rank 0 writes logs, checkpoints and the model.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    """Where this process runs: its rank among `world_size` processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """"auto" -> this process's CUDA device when there is one, else the CPU; otherwise `torch.device(name)`."""
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); a plain run gets rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return DistContext(rank, world, local, dev)


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum `tensor` over all processes in place (no-op for one process)."""
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(module: torch.nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every process, so all hold the same model."""
    if ctx.distributed:
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)


def replicas_identical(modules: Iterable[torch.nn.Module], ctx: DistContext) -> bool:
    """Whether every process holds bitwise the parameters of rank 0: the SHA-256 of each process's, compared
    through one all-reduce (the maximum of the digest's bytes and of their negatives: all equal iff max == min).

    DDP keeps the replicas equal by construction; this checks it at the end of a run, so that a rank that
    drifted (a skipped step, a non-deterministic reduction, a bad resume) is seen instead of silently averaged
    away. Every process must call it. Buffers are left out: BatchNorm statistics are each process's own
    until `broadcast_buffers` copies rank 0's.
    """
    if not ctx.distributed:
        return True
    digest = hashlib.sha256()
    for module in modules:
        for name, param in module.named_parameters():
            digest.update(name.encode())
            digest.update(param.detach().reshape(-1).contiguous().view(torch.uint8).cpu().numpy().tobytes())
    values = torch.tensor(list(digest.digest()), dtype=torch.int64, device=ctx.device)
    both = torch.cat([values, -values])
    dist.all_reduce(both, op=dist.ReduceOp.MAX)
    return bool(torch.equal(both[:len(values)], -both[len(values):]))


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def cleanup(ctx: DistContext) -> None:
    """Leave the process group if this run joined one."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
