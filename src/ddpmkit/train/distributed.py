"""torchrun support: read RANK / WORLD_SIZE / LOCAL_RANK, pick the backend, place the device.

``torchrun --nproc_per_node=N -m ddpmkit train ...`` starts N processes with those variables
set; gloo is used on CPU and NCCL on CUDA. Without them this is a single process (world 1).
"""

from __future__ import annotations

import os

import torch

from ..errors import InputError
from .trainer import Dist


def init_from_env(device: str = "auto") -> tuple[Dist, str]:
    """(Dist, device string) for this process; initialises torch.distributed when needed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if world <= 1:
        return Dist(), device
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    import torch.distributed as td

    if device.startswith("cuda"):
        if torch.cuda.device_count() <= local:
            raise InputError(f"LOCAL_RANK {local} has no GPU ({torch.cuda.device_count()} "
                             "visible); use --nproc_per_node <= the GPU count or --device cpu")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
        backend = "nccl"
    else:
        backend = "gloo"
    if not td.is_initialized():
        td.init_process_group(backend=backend)
    return Dist(rank=rank, world=world, backend=backend), device
