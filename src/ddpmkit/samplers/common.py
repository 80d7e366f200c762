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


@dataclass(frozen=True, eq=False)
class Grid:
    """The timesteps a sampler visits and their float64 coefficients, index k = 0..S.

    ``t[k]`` = tau_k of the original chain (t[0] = 0, t[S] = tau_S <= T); ``alpha[k]`` =
    sqrt(alpha_bar_{tau_k}), ``sigma[k]`` = sqrt(1 - alpha_bar_{tau_k}) (alpha[0] = 1,
    sigma[0] = 0) and ``lam[k]`` = log(alpha/sigma) = log snr_{tau_k} / 2 (lam[0] = +inf).
    """

    t: list[int]
    alpha: torch.Tensor
    sigma: torch.Tensor
    lam: torch.Tensor

    @property
    def S(self) -> int:
        """Number of grid points with t >= 1 (one network call each for first-order samplers)."""
        return len(self.t) - 1


#: Spacings a sampler accepts: the schedule's (``ddpmkit.schedules.SPACINGS``) and
#: ``logsnr_clipped``: log-SNR-uniform from log snr_1 down to max(log snr_T, LOGSNR_CLIP), then
#: one step from T. Below snr = e^-2 (12 % of x_t's variance is signal for unit-scale data) the
#: denoiser barely changes, so steps spent there are wasted; plain ``logsnr`` on the cosine
#: schedule (log snr_T = -20) puts half its steps there.
SamplerSpacing = Literal["uniform", "quadratic", "trailing", "logsnr", "logsnr_clipped"]
SAMPLER_SPACINGS: tuple[str, ...] = ("uniform", "quadratic", "trailing", "logsnr",
                                     "logsnr_clipped")
LOGSNR_CLIP = -2.0


def sampling_grid(schedule, steps: int | None = None, spacing: str = "uniform") -> Grid:
    """The grid 0 = tau_0 < tau_1 < ... < tau_S of ``steps`` kept steps (default all T).

    Raises InputError for an unknown spacing or steps outside 1..T, whatever ``steps`` is.
    """
    from ..schedules import spaced_timesteps

    if spacing not in SAMPLER_SPACINGS:
        raise InputError(f"unknown spacing {spacing!r}; choose one of "
                         f"{', '.join(SAMPLER_SPACINGS)}")
    steps = schedule.T if steps is None else steps
    if spacing == "logsnr_clipped":
        spaced_timesteps(schedule, steps, "uniform")  # the same checks of steps
        kept = logsnr_clipped_timesteps(schedule, steps)
    else:
        kept = spaced_timesteps(schedule, steps, spacing)
    return grid_from_timesteps(schedule, kept)


def logsnr_clipped_timesteps(schedule, steps: int, clip: float = LOGSNR_CLIP) -> list[int]:
    """tau_S = T and tau_1..tau_{S-1} nearest to log snr evenly spaced from log snr_1 down to
    max(log snr_T, clip); strictly increasing (neighbours pushed apart where they collide)."""
    T = schedule.T
    if steps >= T:
        return list(range(1, T + 1))
    if steps == 1:
        return [T]
    ls = schedule.log_snr[1:]
    lo = max(float(ls[-1]), clip)
    targets = torch.linspace(float(ls[0]), lo, steps - 1, dtype=torch.float64)
    raw = [int(torch.argmin((ls - v).abs())) + 1 for v in targets.tolist()] + [T]
    out: list[int] = []
    for i, v in enumerate(sorted(raw)):
        lo_i = out[-1] + 1 if out else 1
        out.append(min(max(v, lo_i), T - (steps - 1 - i)))
    return out


def grid_from_timesteps(schedule, kept: Sequence[int]) -> Grid:
    """The grid over explicit original-chain timesteps 1 <= tau_1 < ... < tau_S <= T."""
    idx = torch.tensor([0, *kept], dtype=torch.int64)
    ab, omab = schedule.alpha_bar[idx], schedule.one_minus_alpha_bar[idx]
    lam = 0.5 * (torch.log(ab) - torch.log(omab))
    return Grid(t=idx.tolist(), alpha=ab.sqrt(), sigma=omab.sqrt(), lam=lam)


def denoise(denoiser, x: torch.Tensor, t: int, clip: ClipPolicy, dtype: torch.dtype):
    """x0_hat(x, t) under the clip policy: the network runs in ``dtype``, the result is float64."""
    return apply_x0_policy(denoiser.x0_hat(x.to(dtype), t), clip).double()


def record(k: int, t: int, x: torch.Tensor, x0_hat: torch.Tensor, dtype: torch.dtype,
           traj: list[Step] | None, callback: Callback | None) -> None:
    """Append Step(k, t, x_t, x0_hat) to the trajectory and hand it to the callback."""
    if traj is None and callback is None:
        return
    step = Step(k=k, t=t, x_t=x.to(dtype), x0_hat=x0_hat.to(dtype))
    if traj is not None:
        traj.append(step)
    if callback is not None:
        callback(step)


def check_sampler_args(steps, clip: str) -> None:
    """One-line InputErrors for a bad step count or clip policy, before any work is done."""
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise InputError(f"steps must be an integer >= 1; got {steps!r}")
    if clip not in CLIP_POLICIES:
        raise InputError(f"unknown clip policy {clip!r}; choose one of {', '.join(CLIP_POLICIES)}")


def base_meta(name: str, grid: Grid, spacing: str, clip: str, seed, network_calls: int) -> dict:
    """The metadata every sampler records."""
    return {"sampler": name, "steps": grid.S, "network_calls": network_calls,
            "spacing": spacing, "clip": clip, "seed": seed, "timesteps": grid.t[1:]}
