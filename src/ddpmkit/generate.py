"""Draw many samples in fixed chunks, reproducibly, optionally sharded across processes.

Chunk i (of ``chunk`` samples) always uses the generator seeded with ``chunk_seed(seed, i)``,
so the set of samples depends only on (seed, n, chunk, sampler settings): not on how many
processes share the work (rank r takes chunks i = r, r + world, ...) nor on the order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .denoiser import Denoiser
from .errors import InputError
from .samplers import get_sampler, sample


def chunk_seed(seed: int, i: int) -> int:
    return (seed * 1_000_003 + i) % (2**63 - 1)


def generate(denoiser: Denoiser, data_shape: Sequence[int], n: int, *,
             sampler: str = "ancestral", steps: int | None = None, spacing: str = "uniform",
             clip: str = "none", seed: int = 0, chunk: int = 256, device: str = "cpu",
             progress: bool = False, rank: int = 0, world: int = 1,
             labels: torch.Tensor | None = None, guidance: float = 0.0,
             **sampler_kwargs: Any) -> tuple[torch.Tensor, dict[str, Any]]:
    """(samples (n_local, *data_shape) on CPU, meta). n_local = n when world = 1.

    With world > 1 each rank returns its own chunks, in chunk order; gather them with
    :func:`assemble` to get the same tensor as one process would. ``labels`` (n,): the class of
    each sample, for a class-conditional denoiser, with classifier-free ``guidance`` w
    (:class:`ddpmkit.denoiser.GuidedDenoiser`); the chunks see their slice of them.
    """
    if n < 1:
        raise InputError(f"n must be >= 1; got {n}")
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.shape != (n,):
            raise InputError(f"{labels.numel()} labels for {n} samples")
        denoiser.conditioned(labels[:1], guidance)  # bad classes fail before any work
    get_sampler(sampler)  # an unknown name fails before any work, on every rank
    n_chunks = (n + chunk - 1) // chunk
    mine = list(range(rank, n_chunks, world))
    out, meta = [], {}
    it = mine
    if progress:
        from .progress import progress as progress_bar

        it = progress_bar(mine, desc=f"sampling ({sampler})", unit="chunk")
    for i in it:
        size = min(chunk, n - i * chunk)
        gen = torch.Generator(device=device).manual_seed(chunk_seed(seed, i))
        den = denoiser if labels is None else denoiser.conditioned(
            labels[i * chunk:i * chunk + size], guidance)
        res = sample(den, (size, *data_shape), sampler=sampler, steps=steps,
                     spacing=spacing, clip=clip, generator=gen, device=device, **sampler_kwargs)
        out.append(res.x.detach().float().cpu())
        meta = res.meta
    meta = {**meta, "seed": seed, "n": n, "chunk": chunk}
    if labels is not None:
        meta |= {"guidance": guidance, "classes": sorted(set(labels.tolist()))}
    if not out:
        return torch.empty(0, *data_shape), meta
    return torch.cat(out), meta


def assemble(parts: list[torch.Tensor], n: int, chunk: int) -> torch.Tensor:
    """Interleave per-rank outputs of :func:`generate` back into chunk order."""
    world = len(parts)
    pieces, cursors = [], [0] * world
    n_chunks = (n + chunk - 1) // chunk
    for i in range(n_chunks):
        r = i % world
        size = min(chunk, n - i * chunk)
        pieces.append(parts[r][cursors[r]:cursors[r] + size])
        cursors[r] += size
    return torch.cat(pieces)
