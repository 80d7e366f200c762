"""What every sampler core shares: the grid it walks, the x0_hat policy, the result types, and
the two steps several cores take.

A core is ``core(denoise, x, grid, *, noise, callback, **its_options) -> x_0``:
``denoise(x, t)`` is x0_hat(x_t, t) under the clip policy, with the network in the model's dtype
and the result in x's dtype; ``noise(x)`` draws z ~ N(0, I) shaped like x (in the model's dtype,
from the one generator that also drew x_T); ``callback(k, x_k, x0_hat)`` is called once per grid
point k = S..1. :func:`ddpmkit.samplers.sample` builds all of these once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from ..errors import InputError
from ..schedules import SPACINGS, NoiseSchedule, Spacing, spaced_timesteps

ClipPolicy = Literal["none", "clip", "dynamic"]
CLIP_POLICIES: tuple[str, ...] = ("none", "clip", "dynamic")
#: the spacings a sampler accepts: those of :func:`ddpmkit.schedules.spaced_timesteps`
SamplerSpacing = Spacing
SAMPLER_SPACINGS: tuple[str, ...] = SPACINGS


@dataclass
class Step:
    """One point of a trajectory: the grid index k, the original t, x_t and x0_hat(x_t, t)."""

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


Callback = Callable[[Step], None]
Denoise = Callable[[torch.Tensor, int], torch.Tensor]
Noise = Callable[[torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


@dataclass(frozen=True, eq=False)
class Grid:
    """The timesteps a sampler visits and their float64 coefficients, index k = 0..S.

    ``t[k]`` = tau_k of the original chain (t[0] = 0, t[S] = tau_S <= T);
    ``sqrt_alpha_bar[k]`` = sqrt(alpha_bar_{tau_k}), ``sigma[k]`` = sqrt(1 - alpha_bar_{tau_k})
    (1 and 0 at k = 0), ``lam[k]`` = log(sqrt_alpha_bar / sigma) = log snr_{tau_k} / 2
    (lam[0] = +inf); ``chain`` is the sub-chain over tau_1..tau_S (``respace``), whose
    posterior tables the ancestral step uses.
    """

    t: list[int]
    sqrt_alpha_bar: torch.Tensor
    sigma: torch.Tensor
    lam: torch.Tensor
    chain: NoiseSchedule

    @property
    def S(self) -> int:
        """Number of grid points with t >= 1 (one network call each for first-order samplers)."""
        return len(self.t) - 1

    def floats(self) -> tuple[list[float], list[float], list[float]]:
        """(sqrt_alpha_bar, sigma, lam) as Python floats, for the cores' scalar arithmetic."""
        return self.sqrt_alpha_bar.tolist(), self.sigma.tolist(), self.lam.tolist()


def sampling_grid(schedule: NoiseSchedule, steps: int | None = None,
                  spacing: SamplerSpacing = "uniform") -> Grid:
    """The grid 0 = tau_0 < tau_1 < ... < tau_S of ``steps`` kept steps (default all T).

    Raises InputError for an unknown spacing or steps outside 1..T, whatever ``steps`` is.
    """
    steps = schedule.T if steps is None else steps
    return grid_from_timesteps(schedule, spaced_timesteps(schedule, steps, spacing))


def grid_from_timesteps(schedule: NoiseSchedule, kept: Sequence[int]) -> Grid:
    """The grid over explicit original-chain timesteps 1 <= tau_1 < ... < tau_S <= T."""
    chain = schedule.respace(list(kept))
    idx = torch.tensor([0, *kept], dtype=torch.int64)
    ab, omab = schedule.alpha_bar[idx], schedule.one_minus_alpha_bar[idx]
    lam = 0.5 * (torch.log(ab) - torch.log(omab))
    return Grid(t=idx.tolist(), sqrt_alpha_bar=ab.sqrt(), sigma=omab.sqrt(), lam=lam,
                chain=chain)


def logsnr_clipped_timesteps(schedule: NoiseSchedule, steps: int) -> list[int]:
    """``spaced_timesteps(schedule, steps, "logsnr_clipped")`` (clipped at LOGSNR_CLIP)."""
    return spaced_timesteps(schedule, steps, "logsnr_clipped")


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


def progress_iter(items: Iterable, total: int, progress: bool, desc: str) -> Iterable:
    """``items``, under a progress bar (status lines off a terminal) when ``progress``."""
    if not progress:
        return items
    from ..progress import progress as progress_bar

    return progress_bar(items, total=total, desc=desc, unit="step", leave=False)


# ---- the steps several cores share ---------------------------------------------------------
def exp_euler_step(x: torch.Tensor, D: torch.Tensor, a_next: float, s_next: float, s_cur: float,
                   h: float) -> torch.Tensor:
    """The first-order step of the probability-flow ODE in lambda (= DDIM with eta 0):
    x_{k-1} = (sigma_{k-1}/sigma_k) x_k - alpha_{k-1} expm1(-h) D, h = lam_{k-1} - lam_k."""
    return s_next / s_cur * x - a_next * math.expm1(-h) * D


def stochastic_step(x: torch.Tensor, D: torch.Tensor, c_x: float, c_D: float, std: float,
                    z: torch.Tensor | None) -> torch.Tensor:
    """x_{k-1} = c_x x_k + c_D D + std z (no noise where z is None), in x's dtype.

    The ancestral step (c_xt, c_x0 and sigma of the sub-chain) and the DPM-Solver++ SDE step
    (the same coefficients written in lambda, with D extrapolated) are this one step.
    """
    x = c_x * x + c_D * D
    return x if z is None else x + std * z
