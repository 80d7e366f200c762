"""What every sampler shares: the x0_hat policy, initial noise, progress, and the result type.

Every sampler is a plain function over a :class:`~ddpmkit.denoiser.Denoiser` (x_t, t in,
x0_hat out) with the same keyword interface (see ``samplers/ancestral.py``); adding a sampler
touches one file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..errors import InputError

ClipPolicy = Literal["none", "clip", "dynamic"]
CLIP_POLICIES: tuple[str, ...] = ("none", "clip", "dynamic")


@dataclass
class Step:
    """One point of a trajectory: the chain index, the original t, x_t and x0_hat(x_t, t)."""

    k: int
    t: int
    x_t: torch.Tensor
    x0_hat: torch.Tensor


@dataclass
class SampleResult:
    """x: the samples (B, ...); trajectory: list of Step (on request); meta: settings used."""

    x: torch.Tensor
    trajectory: list[Step] | None = None
    meta: dict = field(default_factory=dict)


def apply_x0_policy(x0: torch.Tensor, policy: ClipPolicy = "none",
                    percentile: float = 0.995) -> torch.Tensor:
    """The explicit x0_hat policy: ``none``; ``clip`` to [-1, 1]; ``dynamic`` thresholding.

    ``dynamic`` (Saharia et al. 2022): s = max(1, quantile_p(|x0_hat|)) per example, then
    clamp to [-s, s] and divide by s.
    """
    if policy == "none":
        return x0
    if policy == "clip":
        return x0.clamp(-1.0, 1.0)
    if policy == "dynamic":
        s = torch.quantile(x0.detach().flatten(1).abs().float(), percentile, dim=1)
        s = s.clamp(min=1.0).to(x0.dtype).reshape(-1, *([1] * (x0.dim() - 1)))
        return x0.clamp(-s, s) / s
    raise InputError(f"unknown clip policy {policy!r}; choose one of {', '.join(CLIP_POLICIES)}")


def make_generator(seed: int | None, generator: torch.Generator | None,
                   device: torch.device | str) -> torch.Generator:
    """The generator to draw all noise from: the given one, else a fresh one seeded."""
    if generator is not None:
        return generator
    gen = torch.Generator(device=device)
    gen.manual_seed(0 if seed is None else int(seed))
    return gen


def initial_noise(shape: Sequence[int] | None, x_T: torch.Tensor | None,
                  generator: torch.Generator, device, dtype) -> torch.Tensor:
    """x_T ~ N(0, I) of ``shape`` (or the given x_T)."""
    if x_T is not None:
        return x_T.to(device=device, dtype=dtype)
    if shape is None:
        raise InputError("give either shape or x_T")
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)


def progress_iter(items: Iterable, total: int, progress: bool, desc: str) -> Iterable:
    if not progress:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc=desc, unit="step", leave=False)


Callback = Callable[[Step], None]
