"""DPM-Solver++ multistep (Lu et al. 2022, "DPM-Solver++", Algorithm 2 and its SDE variant).

Data prediction D_k = x0_hat(x_k, tau_k) in half-log-SNR lambda = log(alpha/sigma), alpha =
sqrt(alpha_bar); from grid point k to k-1 with h = lambda_{k-1} - lambda_k and earlier steps
h_1, h_2 (r_i = h_i / h):
  1st order (= DDIM eta 0)  x_{k-1} = (sigma_{k-1}/sigma_k) x_k - alpha_{k-1} expm1(-h) D
  2M                        D = D_k + (D_k - D_{k+1}) / (2 r_1)
  3M                        the third-order multistep update (Lu et al. 2022, App. B)
  2M SDE (midpoint)         x_{k-1} = (sigma_{k-1}/sigma_k) e^{-h} x_k + alpha_{k-1}(1 - e^{-2h})
                                      (D_k + (D_k - D_{k+1}) / (2 r_1))
                                      + sigma_{k-1} sqrt(1 - e^{-2h}) z
The first step uses the orders the history allows; the last step (to tau_0 = 0, h = inf) is
x_0 = D_1. The arithmetic runs in float64; only the network runs in the model's dtype. The
first-order SDE step is exactly the ancestral step with the "small" variance.
"""

from __future__ import annotations

import math

import torch

from .common import Denoise, Grid, Noise, StepCallback, exp_euler_step, stochastic_step


def _2m(D: torch.Tensor, D_prev: torch.Tensor | None, r: float) -> torch.Tensor:
    """The 2M data prediction D_k + (D_k - D_{k+1}) / (2 r); D_k alone without a history."""
    return D if D_prev is None else D + (D - D_prev) / (2.0 * r)


def dpmpp_2m(denoise: Denoise, x: torch.Tensor, grid: Grid, *, noise: Noise,
             callback: StepCallback) -> torch.Tensor:
    """DPM-Solver++(2M), Lu et al. (2022) Algorithm 2: deterministic, one call per step."""
    x = x.double()
    a, s, lam = grid.floats()
    D_prev, h_prev = None, 0.0
    for k in range(grid.S, 0, -1):
        D = denoise(x, grid.t[k])
        callback(k, x, D)
        if k == 1:  # lambda_0 = +inf: the exact last step of every order is x_0 = D_1
            break
        h = lam[k - 1] - lam[k]
        x = exp_euler_step(x, _2m(D, D_prev, h_prev / h), a[k - 1], s[k - 1], s[k], h)
        D_prev, h_prev = D, h
    return D


def dpmpp_3m(denoise: Denoise, x: torch.Tensor, grid: Grid, *, noise: Noise,
             callback: StepCallback) -> torch.Tensor:
    """DPM-Solver++(3M), Lu et al. (2022) App. B: 2M for the first two steps, then third order."""
    x = x.double()
    a, s, lam = grid.floats()
    Ds: list[torch.Tensor] = []  # D_{k+1}, D_{k+2}: newest first
    hs: list[float] = []  # h of the steps that ended at k, k+1
    for k in range(grid.S, 0, -1):
        D = denoise(x, grid.t[k])
        callback(k, x, D)
        if k == 1:  # lambda_0 = +inf: the exact last step of every order is x_0 = D_1
            break
        h = lam[k - 1] - lam[k]
        if len(Ds) < 2:
            x = exp_euler_step(x, _2m(D, Ds[0] if Ds else None, hs[0] / h if hs else 0.0),
                               a[k - 1], s[k - 1], s[k], h)
        else:
            r0, r1 = hs[0] / h, hs[1] / h
            d1_0, d1_1 = (D - Ds[0]) / r0, (Ds[0] - Ds[1]) / r1
            D1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
            D2 = (d1_0 - d1_1) / (r0 + r1)
            phi1 = math.expm1(-h)  # e^{-h} - 1
            phi2 = phi1 / h + 1.0
            phi3 = (phi1 + h) / h**2 - 0.5
            x = s[k - 1] / s[k] * x - a[k - 1] * (phi1 * D - phi2 * D1 + phi3 * D2)
        Ds, hs = [D, *Ds[:1]], [h, *hs[:1]]
    return D


def dpmpp_2m_sde(denoise: Denoise, x: torch.Tensor, grid: Grid, *, noise: Noise,
                 callback: StepCallback) -> torch.Tensor:
    """DPM-Solver++(2M) SDE (midpoint), one N(0, I) draw per step k > 1 after x_T."""
    x = x.double()
    a, s, lam = grid.floats()
    D_prev, h_prev = None, 0.0
    for k in range(grid.S, 0, -1):
        D = denoise(x, grid.t[k])
        callback(k, x, D)
        if k == 1:  # lambda_0 = +inf: the exact last step of every order is x_0 = D_1
            break
        h = lam[k - 1] - lam[k]
        one_m_e2h = -math.expm1(-2.0 * h)  # 1 - e^{-2h}
        x = stochastic_step(x, _2m(D, D_prev, h_prev / h), s[k - 1] / s[k] * math.exp(-h),
                            a[k - 1] * one_m_e2h, s[k - 1] * one_m_e2h**0.5, noise(x))
        D_prev, h_prev = D, h
    return D
