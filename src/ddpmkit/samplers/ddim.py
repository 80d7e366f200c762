"""DDIM (Song, Meng & Ermon 2021), eq. 12, with stochasticity eta on any sub-chain.

From grid point k to k-1 (a = sqrt(alpha_bar), s = sqrt(1 - alpha_bar) at tau_k):
  eps_hat = (x_k - a_k x0_hat) / s_k
  s_k     = eta sqrt((s_{k-1}^2 / s_k^2) (1 - a_k^2 / a_{k-1}^2))
  x_{k-1} = a_{k-1} x0_hat + sqrt(s_{k-1}^2 - s_k^2) eps_hat + s_k z
eta = 0 is the deterministic probability-flow (Euler) step; eta = 1 makes s_k^2 = sigma_q^2 of the
sub-chain and the mean c_xt x_k + c_x0 x0_hat, i.e. the ancestral step with the "small" variance.
"""

from __future__ import annotations

import torch

from ..errors import InputError
from .common import Denoise, Grid, Noise, StepCallback


def ddim(denoise: Denoise, x: torch.Tensor, grid: Grid, *, noise: Noise,
         callback: StepCallback, eta: float = 0.0) -> torch.Tensor:
    """DDIM, Song et al. (2021) eq. 12; ``eta`` in [0, 1] (0: deterministic, 1: = ancestral).

    Noise order: x_T, then (eta > 0) one N(0, I) draw per step k > 1, as the ancestral sampler.
    """
    if not 0.0 <= float(eta) <= 1.0:
        raise InputError(f"eta must lie in [0, 1] (0 = deterministic, 1 = ancestral); got {eta}")
    x = x.double()
    a, s, _ = grid.floats()
    for k in range(grid.S, 0, -1):
        x0 = denoise(x, grid.t[k])
        callback(k, x, x0)
        if k == 1:  # a_0 = 1, s_0 = 0: the step lands on x0_hat itself
            break
        eps = (x - a[k] * x0) / s[k]
        s_k = eta * (s[k - 1] ** 2 / s[k] ** 2 * (1.0 - a[k] ** 2 / a[k - 1] ** 2)) ** 0.5
        x = a[k - 1] * x0 + max(s[k - 1] ** 2 - s_k**2, 0.0) ** 0.5 * eps
        if eta > 0:
            x = x + s_k * noise(x)
    return x0
