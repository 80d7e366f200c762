"""DPM-Solver++ multistep (Lu et al. 2022, "DPM-Solver++", Algorithm 2 and its SDE variant).

Data prediction D_k = x0_hat(x_k, tau_k) in half-log-SNR lambda = log(alpha/sigma); from grid
point k to k-1 with h = lambda_{k-1} - lambda_k and earlier steps h_1, h_2 (r_i = h_i / h):
  1st order (= DDIM eta 0)  x_{k-1} = (sigma_{k-1}/sigma_k) x_k - alpha_{k-1} expm1(-h) D
  2M                        D = D_k + (D_k - D_{k+1}) / (2 r_1)
  3M                        the third-order multistep update (Lu et al. 2022, App. B)
  2M SDE (midpoint)         x_{k-1} = (sigma_{k-1}/sigma_k) e^{-h} x_k + alpha_{k-1}(1 - e^{-2h})
                                      (D_k + (D_k - D_{k+1}) / (2 r_1))
                                      + sigma_{k-1} sqrt(1 - e^{-2h}) z
The first step uses the orders the history allows; the last step (to tau_0 = 0, h = inf) is
x_0 = D_1. The arithmetic runs in float64; only the network runs in ``dtype``. The first-order
SDE step is exactly the ancestral step with the "small" variance.
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


def _multistep(name: str, order: int, sde: bool, denoiser: Denoiser, shape, x_T, steps,
               spacing, clip, seed, generator, device, dtype, progress, return_trajectory,
               callback) -> SampleResult:
    check_sampler_args(steps, clip)
    device = device if device is not None else (x_T.device if x_T is not None else "cpu")
    grid = sampling_grid(denoiser.schedule, steps, spacing)
    gen = make_generator(seed, generator, device)
    x = initial_noise(shape, x_T, gen, device, dtype).double()
    a, s, lam = grid.alpha.tolist(), grid.sigma.tolist(), grid.lam.tolist()
    traj: list[Step] | None = [] if return_trajectory else None
    Ds: list[torch.Tensor] = []  # D_k, D_{k+1}, D_{k+2}: newest first
    hs: list[float] = []  # h of the steps that ended at k, k+1
    for k in progress_iter(range(grid.S, 0, -1), grid.S, progress, name):
        D0 = denoise(denoiser, x, grid.t[k], clip, dtype)
        record(k, grid.t[k], x, D0, dtype, traj, callback)
        if k == 1:  # lambda_0 = +inf: the exact last step of every order is x_0 = D_1
            x = D0
            break
        Ds = [D0, *Ds[: order - 1]]
        h = lam[k - 1] - lam[k]
        q = len(Ds)  # the order this step can afford
        if q == 1:
            D = D0
        elif q == 2 or sde:
            r1 = hs[0] / h
            D = D0 + (D0 - Ds[1]) / (2.0 * r1)
        if sde:
            e = math.exp(-h)
            x = s[k - 1] / s[k] * e * x + a[k - 1] * (-math.expm1(-2.0 * h)) * D
            z = torch.randn(x.shape, generator=gen, device=x.device, dtype=dtype)
            x = x + s[k - 1] * (-math.expm1(-2.0 * h)) ** 0.5 * z.double()
        elif q <= 2:
            x = s[k - 1] / s[k] * x - a[k - 1] * math.expm1(-h) * D
        else:
            r0, r1 = hs[0] / h, hs[1] / h
            d1_0, d1_1 = (D0 - Ds[1]) / r0, (Ds[1] - Ds[2]) / r1
            D1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
            D2 = (d1_0 - d1_1) / (r0 + r1)
            phi1 = math.expm1(-h)  # e^{-h} - 1
            phi2 = phi1 / h + 1.0
            phi3 = (phi1 + h) / h**2 - 0.5
            x = s[k - 1] / s[k] * x - a[k - 1] * (phi1 * D0 - phi2 * D1 + phi3 * D2)
        hs = [h, *hs[:1]]
    meta = base_meta(name, grid, spacing, clip, seed, grid.S) | {"order": order, "sde": sde}
    return SampleResult(x=x.to(dtype), trajectory=traj, meta=meta)


@torch.no_grad()
def sample_dpmpp_2m(denoiser: Denoiser, shape: Sequence[int] | None = None, *,
                    x_T: torch.Tensor | None = None, steps: int | None = None,
                    spacing: SamplerSpacing = "uniform", clip: ClipPolicy = "none",
                    seed: int | None = None, generator: torch.Generator | None = None,
                    device=None, dtype: torch.dtype = torch.float32, progress: bool = False,
                    return_trajectory: bool = False,
                    callback: Callback | None = None) -> SampleResult:
    """DPM-Solver++(2M), deterministic, one network call per step; see the module docstring."""
    return _multistep("dpmpp2m", 2, False, denoiser, shape, x_T, steps, spacing, clip, seed,
                      generator, device, dtype, progress, return_trajectory, callback)


@torch.no_grad()
def sample_dpmpp_3m(denoiser: Denoiser, shape: Sequence[int] | None = None, *,
                    x_T: torch.Tensor | None = None, steps: int | None = None,
                    spacing: SamplerSpacing = "uniform", clip: ClipPolicy = "none",
                    seed: int | None = None, generator: torch.Generator | None = None,
                    device=None, dtype: torch.dtype = torch.float32, progress: bool = False,
                    return_trajectory: bool = False,
                    callback: Callback | None = None) -> SampleResult:
    """DPM-Solver++(3M), deterministic, one network call per step; see the module docstring."""
    return _multistep("dpmpp3m", 3, False, denoiser, shape, x_T, steps, spacing, clip, seed,
                      generator, device, dtype, progress, return_trajectory, callback)


@torch.no_grad()
def sample_dpmpp_2m_sde(denoiser: Denoiser, shape: Sequence[int] | None = None, *,
                        x_T: torch.Tensor | None = None, steps: int | None = None,
                        spacing: SamplerSpacing = "uniform", clip: ClipPolicy = "none",
                        seed: int | None = None, generator: torch.Generator | None = None,
                        device=None, dtype: torch.dtype = torch.float32, progress: bool = False,
                        return_trajectory: bool = False,
                        callback: Callback | None = None) -> SampleResult:
    """DPM-Solver++(2M) SDE (midpoint), one N(0, I) draw per step k > 1 after x_T."""
    return _multistep("dpmpp2m_sde", 2, True, denoiser, shape, x_T, steps, spacing, clip, seed,
                      generator, device, dtype, progress, return_trajectory, callback)
