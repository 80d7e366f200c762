"""The lecture's identity, checked numerically for every t of a schedule.

For t >= 2 and model variance sigma_t^2 = sigma_q^2,
  KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t))
    = ||mu_q(x_t, x_0) - mu_theta(x_t)||^2 / (2 sigma_q^2)       (the KL of two Gaussians)
    = C_t ||x0_hat(x_t, t) - x_0||^2                              (mu_theta written like mu_q)
with C_t = c_x0^2 / (2 sigma_q^2) = (snr_{t-1} - snr_t) / 2. The left side is computed the
long way: two means from the posterior formula, then the general Gaussian KL, elementwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import diffusion as D
from .schedules import NoiseSchedule


@dataclass
class EquivalenceResult:
    max_rel_diff: float
    t_checked: int
    C_t: list[float | None]
    kl: list[float]
    weighted_mse: list[float]
    C_t_from_snr_max_rel_diff: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def check_equivalence(schedule: NoiseSchedule, batch: int = 16, dims: int = 64,
                      seed: int = 0) -> EquivalenceResult:
    """KL form vs C_t * MSE form for every t = 2..T on random float64 data.

    x_0 ~ N(0, I), x_t ~ q(x_t | x_0), and x0_hat = x_0 + N(0, I) (any function of x_t would do:
    the identity holds pointwise). Returns the largest relative difference over t of the
    batch-summed KL, and the same for C_t computed as c_x0^2/(2 sigma_q^2) vs (snr_{t-1}-snr_t)/2.
    """
    gen = torch.Generator().manual_seed(seed)
    T = schedule.T
    c_xt, c_x0, var_q = D.posterior_coefficients(schedule)
    C = D.consistency_weight(schedule)
    C_direct = c_x0**2 / (2.0 * var_q)
    kls, mses, rels = [], [], []
    for t_val in range(2, T + 1):
        x0 = torch.randn(batch, dims, generator=gen, dtype=torch.float64)
        noise = torch.randn(batch, dims, generator=gen, dtype=torch.float64)
        x0_hat = x0 + torch.randn(batch, dims, generator=gen, dtype=torch.float64)
        t = torch.full((batch,), t_val, dtype=torch.int64)
        x_t = D.q_sample(schedule, x0, t, noise)
        mu_q = D.posterior_mean(schedule, x_t, x0, t)
        mu_theta = D.mu_from_x0(schedule, x_t, x0_hat, t)
        v = var_q[t_val]
        kl = float(D.gaussian_kl(mu_q, v, mu_theta, v).sum())
        wmse = float(C[t_val] * ((x0_hat - x0) ** 2).sum())
        kls.append(kl)
        mses.append(wmse)
        rels.append(abs(kl - wmse) / abs(wmse))
    c_rel = ((C_direct[2:] - C[2:]).abs() / C[2:]).max().item() if T >= 2 else 0.0
    return EquivalenceResult(
        max_rel_diff=max(rels) if rels else 0.0, t_checked=len(rels),
        C_t=[None, None] + C[2:].tolist(), kl=kls, weighted_mse=mses,
        C_t_from_snr_max_rel_diff=c_rel,
    )
