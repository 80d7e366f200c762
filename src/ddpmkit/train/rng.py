"""The training run's random states, as saved in a checkpoint's state.json (base64 text).

- ``train_generator``: the one generator that draws t and the noise of the whole global batch
  (the same on every rank);
- ``torch_cpu`` / ``torch_cuda``: torch's global RNG, which only dropout uses. Rank 0 keeps the
  seed's stream; rank r >= 1 gets its own (ranks must not share dropout masks), and a
  checkpoint of several processes keeps every rank's state in ``rng_ranks``.
"""

from __future__ import annotations

from typing import Any

import torch

from ..distributed import Dist
from .checkpoint import decode_tensor, encode_tensor


def rng_state(gen: torch.Generator, device: str) -> dict[str, str]:
    """This process's states: the batch generator and torch's global RNG (CPU, and CUDA)."""
    st = {"train_generator": encode_tensor(gen.get_state()),
          "torch_cpu": encode_tensor(torch.get_rng_state())}
    if torch.device(device).type == "cuda":
        st["torch_cuda"] = encode_tensor(torch.cuda.get_rng_state(device))
    return st


def set_rng_state(gen: torch.Generator, st: dict[str, str], device: str) -> None:
    gen.set_state(decode_tensor(st["train_generator"]))
    torch.set_rng_state(decode_tensor(st["torch_cpu"]))
    if torch.device(device).type == "cuda" and "torch_cuda" in st:
        torch.cuda.set_rng_state(decode_tensor(st["torch_cuda"]), device)


def dropout_seed(seed: int, rank: int, step: int = 0) -> int:
    """Seed of torch's global RNG (dropout) on rank >= 1: ranks must not share dropout masks."""
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729) % (2**63 - 1)


def rank_rng_states(dist: Dist, device: str) -> list[dict[str, str]] | None:
    """Every rank's global RNG states (dropout), gathered on all ranks (None on one process)."""
    if dist.world == 1:
        return None
    cpu = dist.all_gather(torch.get_rng_state()[None])
    out = [{"torch_cpu": encode_tensor(s)} for s in cpu]
    if torch.device(device).type == "cuda":
        for o, s in zip(out, dist.all_gather(torch.cuda.get_rng_state(device)[None])):
            o["torch_cuda"] = encode_tensor(s)
    return out


def restore_rng(gen: torch.Generator, state: dict[str, Any], step: int, seed: int, dist: Dist,
                device: str) -> None:
    """Set the RNG states saved at ``step``: this rank's own if the checkpoint has one for it,
    else (another number of processes) a fresh dropout stream for rank >= 1."""
    set_rng_state(gen, state["rng"], device)
    ranks = state.get("rng_ranks")
    if dist.rank > 0 and ranks and len(ranks) == dist.world:
        set_rng_state(gen, state["rng"] | ranks[dist.rank], device)
    elif dist.rank > 0:
        torch.manual_seed(dropout_seed(seed, dist.rank, step))
