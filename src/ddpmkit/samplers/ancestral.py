"""Ancestral sampling: the reverse process of Ho et al. (2020), Algorithm 2, on any sub-chain.

x_{k-1} = c_xt(k) x_k + c_x0(k) x0_hat(x_k, tau_k) + sigma_k z,  z ~ N(0, I), no noise at k = 1,
with the coefficients of the (respaced) chain and sigma_k^2 = sigma_q^2(k) ("small") or
beta_k ("large").
"""

from __future__ import annotations

import torch

from .. import diffusion as D
from ..errors import InputError
from ..schedules import NoiseSchedule
from .common import Denoise, Grid, Noise, StepCallback, stochastic_step


def ancestral_step(chain: NoiseSchedule, x: torch.Tensor, x0_hat: torch.Tensor, k: int,
                   noise: torch.Tensor | None, variance: D.Variance = "small") -> torch.Tensor:
    """One reverse step from chain index k to k-1; ``noise`` is ignored (may be None) at k = 1."""
    c_xt, c_x0, _ = D.posterior_tables(chain)
    std = D.model_variance_table(chain, variance)[k].item() ** 0.5
    return stochastic_step(x, x0_hat, c_xt[k].to(x.dtype), c_x0[k].to(x.dtype), std,
                           None if k == 1 else noise)


def ancestral(denoise: Denoise, x: torch.Tensor, grid: Grid, *, noise: Noise,
              callback: StepCallback, variance: D.Variance = "small") -> torch.Tensor:
    """Ho et al. (2020), Algorithm 2, on the grid's sub-chain; ``variance`` "small" or "large".

    Unlike the other cores this one keeps its arithmetic in the model's dtype, as ddpmkit always
    did: float64 here moves a float32 model's samples by up to 0.17 after 100 steps (an
    untrained net amplifies a 1e-7 change of x_T as much), and the ancestral sampler is the
    default, so its samples stay those of earlier runs.
    """
    if variance not in D.VARIANCES:
        raise InputError(f"unknown variance {variance!r}; choose one of "
                         f"{', '.join(D.VARIANCES)}")
    c_xt, c_x0, _ = D.posterior_tables(grid.chain)
    std = [v**0.5 for v in D.model_variance_table(grid.chain, variance).tolist()]
    for k in range(grid.S, 0, -1):
        x0_hat = denoise(x, grid.t[k])
        callback(k, x, x0_hat)
        z = None if k == 1 else noise(x)
        x = stochastic_step(x, x0_hat, c_xt[k].to(x.dtype), c_x0[k].to(x.dtype), std[k], z)
    return x
