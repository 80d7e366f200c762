"""Ancestral sampling: the reverse process of Ho et al. (2020), Algorithm 2, on any sub-chain.

x_{k-1} = c_xt(k) x_k + c_x0(k) x0_hat(x_k, tau_k) + sigma_k z,  z ~ N(0, I), no noise at k = 1,
with the coefficients of the (respaced) chain and sigma_k^2 = sigma_q^2(k) ("small") or
beta_k ("large").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import diffusion as D
from ..denoiser import Denoiser
from ..errors import InputError
from ..schedules import NoiseSchedule, respace
from .common import (
    Callback,
    ClipPolicy,
    SampleResult,
    SamplerSpacing,
    Step,
    apply_x0_policy,
    check_sampler_args,
    initial_noise,
    make_generator,
    progress_iter,
    sampling_grid,
)


def ancestral_step(chain: NoiseSchedule, x: torch.Tensor, x0_hat: torch.Tensor, k: int,
                   noise: torch.Tensor | None, variance: D.Variance = "small") -> torch.Tensor:
    """One reverse step from chain index k to k-1; ``noise`` is ignored (may be None) at k = 1."""
    kk = torch.full((x.shape[0],), k, dtype=torch.int64, device=x.device)
    mean = D.posterior_mean(chain, x, x0_hat, kk)
    if k == 1:
        return mean
    var = D.model_variance_table(chain, variance)[k].item()
    return mean + var**0.5 * noise


@torch.no_grad()
def sample_ancestral(denoiser: Denoiser, shape: Sequence[int] | None = None, *,
                     x_T: torch.Tensor | None = None, steps: int | None = None,
                     spacing: SamplerSpacing = "uniform", variance: D.Variance = "small",
                     clip: ClipPolicy = "none", seed: int | None = None,
                     generator: torch.Generator | None = None, device=None,
                     dtype: torch.dtype = torch.float32, progress: bool = False,
                     return_trajectory: bool = False,
                     callback: Callback | None = None) -> SampleResult:
    """Sample by running the reverse chain with ``steps`` network calls (default: all T).

    Args: shape of the batch (B, ...) or an initial ``x_T``; ``steps`` respaces the chain with
    ``spacing``; ``variance`` is "small" (sigma_q^2) or "large" (beta); ``clip`` is the x0_hat
    policy; noise comes from ``generator`` or a new one seeded with ``seed``.
    """
    check_sampler_args(steps, clip)
    if variance not in D.VARIANCES:
        raise InputError(f"unknown variance {variance!r}; choose one of "
                         f"{', '.join(D.VARIANCES)}")
    device = device if device is not None else (x_T.device if x_T is not None else "cpu")
    gen = make_generator(seed, generator, device)
    T = denoiser.T
    kept = sampling_grid(denoiser.schedule, steps, spacing).t[1:]
    chain = denoiser.schedule if len(kept) == T else respace(denoiser.schedule, kept)
    x = initial_noise(shape, x_T, gen, device, dtype)
    traj: list[Step] | None = [] if return_trajectory else None
    ks = range(chain.T, 0, -1)
    for k in progress_iter(ks, chain.T, progress, "ancestral"):
        t = int(chain.timesteps[k])
        x0_hat = apply_x0_policy(denoiser.x0_hat(x, t), clip)
        if traj is not None or callback is not None:
            step = Step(k=k, t=t, x_t=x, x0_hat=x0_hat)
            if traj is not None:
                traj.append(step)
            if callback is not None:
                callback(step)
        noise = None if k == 1 else torch.randn(x.shape, generator=gen, device=x.device,
                                                dtype=x.dtype)
        x = ancestral_step(chain, x, x0_hat, k, noise, variance)
    meta = {"sampler": "ancestral", "steps": chain.T, "spacing": spacing, "variance": variance,
            "clip": clip, "seed": seed, "network_calls": chain.T,
            "timesteps": chain.timesteps[1:].tolist()}
    return SampleResult(x=x, trajectory=traj, meta=meta)
