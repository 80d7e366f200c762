"""DDIM (Song, Meng & Ermon 2021), eq. 12, with stochasticity eta on any sub-chain.

From grid point k to k-1 (alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar) at tau_k):
  eps_hat = (x_k - alpha_k x0_hat) / sigma_k
  s_k     = eta sqrt((sigma_{k-1}^2 / sigma_k^2) (1 - alpha_k^2 / alpha_{k-1}^2))
  x_{k-1} = alpha_{k-1} x0_hat + sqrt(sigma_{k-1}^2 - s_k^2) eps_hat + s_k z
eta = 0 is the deterministic probability-flow (Euler) step; eta = 1 makes s_k^2 = sigma_q^2 of the
sub-chain and the mean c_xt x_k + c_x0 x0_hat, i.e. the ancestral step with the "small" variance.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..denoiser import Denoiser
from ..errors import InputError
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
def sample_ddim(denoiser: Denoiser, shape: Sequence[int] | None = None, *,
                x_T: torch.Tensor | None = None, steps: int | None = None,
                spacing: SamplerSpacing = "uniform", clip: ClipPolicy = "none",
                seed: int | None = None,
                generator: torch.Generator | None = None, device=None,
                dtype: torch.dtype = torch.float32, progress: bool = False,
                return_trajectory: bool = False, callback: Callback | None = None,
                eta: float = 0.0) -> SampleResult:
    """DDIM with ``steps`` network calls (default all T); ``eta`` in [0, 1] sets the noise.

    Noise order: x_T, then (eta > 0) one N(0, I) draw per step k > 1, as sample_ancestral.
    """
    check_sampler_args(steps, clip)
    if not 0.0 <= float(eta) <= 1.0:
        raise InputError(f"eta must lie in [0, 1] (0 = deterministic, 1 = ancestral); got {eta}")
    device = device if device is not None else (x_T.device if x_T is not None else "cpu")
    grid = sampling_grid(denoiser.schedule, steps, spacing)
    gen = make_generator(seed, generator, device)
    x = initial_noise(shape, x_T, gen, device, dtype).double()
    a, s = grid.alpha.tolist(), grid.sigma.tolist()
    traj: list[Step] | None = [] if return_trajectory else None
    for k in progress_iter(range(grid.S, 0, -1), grid.S, progress, "ddim"):
        x0 = denoise(denoiser, x, grid.t[k], clip, dtype)
        record(k, grid.t[k], x, x0, dtype, traj, callback)
        if k == 1:  # alpha_0 = 1, sigma_0 = 0: the step lands on x0_hat itself
            x = x0
            break
        eps = (x - a[k] * x0) / s[k]
        s_k = eta * (s[k - 1] ** 2 / s[k] ** 2 * (1.0 - a[k] ** 2 / a[k - 1] ** 2)) ** 0.5
        x = a[k - 1] * x0 + max(s[k - 1] ** 2 - s_k**2, 0.0) ** 0.5 * eps
        if eta > 0:
            z = torch.randn(x.shape, generator=gen, device=x.device, dtype=dtype)
            x = x + s_k * z.double()
    meta = base_meta("ddim", grid, spacing, clip, seed, grid.S) | {"eta": float(eta)}
    return SampleResult(x=x.to(dtype), trajectory=traj, meta=meta)
