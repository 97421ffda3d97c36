"""DDP plumbing: process group from torchrun's environment, rank helpers, feature gather.

``torchrun`` (or any launcher) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; without them everything here degrades to a
single process.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def init(device: str = "auto") -> tuple[torch.device, bool]:
    """Join the process group torchrun describes and pick this rank's device.

    Returns ``(device, initialised_here)``; the caller tears the group down with
    :func:`cleanup` only when it started it. nccl on CUDA, gloo on CPU.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    started = False
    if env_world_size() > 1 and not is_distributed():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend=backend, **kwargs)
        started = True
    return dev, started


def cleanup() -> None:
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


class _GatherKeepLocalGrad(torch.autograd.Function):
    """all_gather whose gradient flows to this rank's own slice only.

    Every rank computes the same global loss from the gathered features, so its
    gradient for its own slice is already the whole gradient for those rows (as
    open_clip's ``gather_features`` with ``local_loss=False``). DDP then averages
    parameter gradients over ranks, where the single-process gradient would be
    their sum; scaling by the world size here makes the two equal, logit scale
    included (its gradient is already complete on every rank).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.world, ctx.n = dist.get_rank(), dist.get_world_size(), len(x)
        parts = [torch.empty_like(x) for _ in range(ctx.world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n] * ctx.world


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (same shape on every rank) over ranks, in rank order.

    Keeps gradients for this rank's rows (see :class:`_GatherKeepLocalGrad`); a
    no-op in a single process.
    """
    if not is_distributed() or world_size() == 1:
        return x
    if x.requires_grad:
        return _GatherKeepLocalGrad.apply(x)
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)
