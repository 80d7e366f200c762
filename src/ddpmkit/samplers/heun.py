"""Heun's method (Euler predictor + trapezoidal corrector) on the probability-flow ODE, written
as an exponential integrator in half-log-SNR lambda = log(alpha/sigma).

The probability-flow ODE of the VP chain, x_{k-1} = (sigma_{k-1}/sigma_k) x_k
+ sigma_{k-1} int e^lambda x0_hat(lambda) d lambda, is integrated exactly for an x0_hat that is
linear in lambda between its values at the two ends of the step (h = lambda_{k-1} - lambda_k,
phi_1 = e^{-h} - 1, phi_2 = 1 + phi_1 / h):
  x'      = (sigma_{k-1}/sigma_k) x_k - alpha_{k-1} phi_1 D_k           (Euler step, = DDIM)
  D'      = x0_hat(x', tau_{k-1})                                      (2nd evaluation)
  x_{k-1} = x' + alpha_{k-1} phi_2 (D' - D_k)                          (trapezoidal correction)
For small h this is Karras et al.'s (2022) Heun step, d x/d sigma averaged over both ends. Their
form in sigma/alpha space diverges when one step spans decades of sigma (the first steps of the
cosine schedule, sigma_T / alpha_T ~ 2e4); this one does not. The last step, to lambda = +inf, is
x_0 = D_1. ``steps`` grid points cost 2 steps - 1 network calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..denoiser import Denoiser
from .common import (
    Callback,
    ClipPolicy,
    SampleResult,
    SamplerSpacing,
    Step,
    base_meta,
    check_sampler_args,
    denoise,
    initial_noise,
    make_generator,
    progress_iter,
    record,
    sampling_grid,
)


@torch.no_grad()
def sample_heun(denoiser: Denoiser, shape: Sequence[int] | None = None, *,
                x_T: torch.Tensor | None = None, steps: int | None = None,
                spacing: SamplerSpacing = "uniform", clip: ClipPolicy = "none",
                seed: int | None = None,
                generator: torch.Generator | None = None, device=None,
                dtype: torch.dtype = torch.float32, progress: bool = False,
                return_trajectory: bool = False,
                callback: Callback | None = None) -> SampleResult:
    """Deterministic Heun sampler over ``steps`` grid points (2 steps - 1 network calls)."""
    check_sampler_args(steps, clip)
    device = device if device is not None else (x_T.device if x_T is not None else "cpu")
    grid = sampling_grid(denoiser.schedule, steps, spacing)
    gen = make_generator(seed, generator, device)
    x = initial_noise(shape, x_T, gen, device, dtype).double()
    a, s, lam = grid.alpha.tolist(), grid.sigma.tolist(), grid.lam.tolist()
    traj: list[Step] | None = [] if return_trajectory else None
    calls = 0
    for k in progress_iter(range(grid.S, 0, -1), grid.S, progress, "heun"):
        D = denoise(denoiser, x, grid.t[k], clip, dtype)
        calls += 1
        record(k, grid.t[k], x, D, dtype, traj, callback)
        if k == 1:  # lambda_0 = +inf: the step lands on x0_hat
            x = D
            break
        h = lam[k - 1] - lam[k]
        phi1 = math.expm1(-h)
        phi2 = 1.0 + phi1 / h
        # Euler step
        x_next = s[k - 1] / s[k] * x - a[k - 1] * phi1 * D
        # Apply 2nd order correction
        D_next = denoise(denoiser, x_next, grid.t[k - 1], clip, dtype)
        calls += 1
        x = x_next + a[k - 1] * phi2 * (D_next - D)
    meta = base_meta("heun", grid, spacing, clip, seed, calls)
    return SampleResult(x=x.to(dtype), trajectory=traj, meta=meta)
