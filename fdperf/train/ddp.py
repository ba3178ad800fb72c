"""torchrun support for end-to-end training: process group, each rank's share of a batch, and an
all-gather whose backward sums the gradient over ranks (see `EndToEnd.forward`)."""

from __future__ import annotations

import datetime
import os

import numpy as np
import torch
import torch.distributed as dist


def env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def start(device: torch.device) -> bool:
    """Joins torchrun's process group (NCCL on CUDA, gloo on the CPU); True when this call
    started it (False: not under torchrun, or a group already exists)."""
    if env()[1] == 1 or dist.is_initialized():
        return False
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(hours=2))
    return True


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world() -> tuple[int, int]:
    """(rank, world size) of the running group; (0, 1) without one."""
    if not dist.is_initialized():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        rank, size = world()
        ctx.rank, ctx.rows = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every rank's gradient for these rows (all ranks hold the same loss)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather(x: torch.Tensor) -> torch.Tensor:
    """Rows of every rank concatenated in rank order (equal row counts); x itself without a group."""
    return _Gather.apply(x) if world()[1] > 1 else x


def shares(batch: int, size: int) -> tuple[list[np.ndarray], int]:
    """The pairs of a batch per rank (contiguous, sizes differ by one) and the padded share size."""
    parts = np.array_split(np.arange(batch), size)
    return parts, max(len(p) for p in parts)


def layout(batch: int, size: int, device) -> torch.Tensor:
    """Rows of the gathered [rank0: q.., e..; rank1: q.., e..] that give [all queries; all exemplars]
    of the global batch (padding rows are never selected)."""
    parts, m = shares(batch, size)
    q = [r * 2 * m + i for r, p in enumerate(parts) for i in range(len(p))]
    e = [r * 2 * m + m + i for r, p in enumerate(parts) for i in range(len(p))]
    return torch.tensor(q + e, dtype=torch.long, device=device)


def local_pairs(batch: int) -> np.ndarray:
    """Positions in the batch of this rank's pairs, padded to the common share size by repeating
    its first pair (or pair 0: a rank without pairs still runs the step DistributedDataParallel
    expects)."""
    rank, size = world()
    parts, m = shares(batch, size)
    own = parts[rank]
    pad = np.full(m - len(own), own[0] if len(own) else 0, dtype=np.int64)
    return np.concatenate([own, pad]).astype(np.int64)
