"""Heun's method (Euler predictor + trapezoidal corrector) on the probability-flow ODE, written
as an exponential integrator in half-log-SNR lambda = log(alpha/sigma).

The probability-flow ODE of the VP chain, x_{k-1} = (sigma_{k-1}/sigma_k) x_k
+ sigma_{k-1} int e^lambda x0_hat(lambda) d lambda, is integrated exactly for an x0_hat that is
linear in lambda between its values at the two ends of the step (h = lambda_{k-1} - lambda_k,
phi_1 = e^{-h} - 1, phi_2 = 1 + phi_1 / h), with alpha = sqrt(alpha_bar):
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

import torch

from .common import Denoise, Grid, Noise, StepCallback, exp_euler_step


def heun(denoise: Denoise, x: torch.Tensor, grid: Grid, *, noise: Noise,
         callback: StepCallback) -> torch.Tensor:
    """Deterministic Heun sampler (2 S - 1 network calls); see the module docstring."""
    x = x.double()
    a, s, lam = grid.floats()
    for k in range(grid.S, 0, -1):
        D = denoise(x, grid.t[k])
        callback(k, x, D)
        if k == 1:  # lambda_0 = +inf: the step lands on x0_hat
            break
        h = lam[k - 1] - lam[k]
        # Euler step
        x_next = exp_euler_step(x, D, a[k - 1], s[k - 1], s[k], h)
        # Apply 2nd order correction
        D_next = denoise(x_next, grid.t[k - 1])
        x = x_next + a[k - 1] * (1.0 + math.expm1(-h) / h) * (D_next - D)
    return D
