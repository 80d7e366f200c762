"""UniPC (Zhao et al. 2023): a multistep predictor (UniP) and a free corrector (UniC).

Data prediction D_k = x0_hat(x_k, tau_k) in lambda = log(alpha/sigma), alpha = sqrt(alpha_bar).
From grid point k to k-1 with h = lambda_{k-1} - lambda_k, earlier points
r_i = (lambda_{k+i} - lambda_k) / h < 0 and differences dD_i = (D_{k+i} - D_k) / r_i:
  UniP  x_{k-1} = (sigma_{k-1}/sigma_k) x_k - alpha_{k-1} phi_1 D_k
                  - alpha_{k-1} B(h) sum_i rho^p_i dD_i
  UniC  the same from x_k with one more difference dD_0 = D_{k-1} - D_k (r_0 = 1), where
        D_{k-1} is the network output at the predicted x_{k-1}, the one the next step needs
        anyway, so the corrector costs no network call and raises the order by one.
phi_1 = e^{-h} - 1; the rho solve R rho = b with R_{ji} = r_i^j and b_j = j! phi_{j+1}(h) / B(h)
(Zhao et al. 2023, Algorithms 2-3; rho = 1/2 for the one-difference case, as in the "bh2" variant).
The last step (lambda_0 = +inf) is x_0 = D_1, so no correction is made at k - 1 = 1.
"""

from __future__ import annotations

import math

import torch

from ..errors import InputError
from .common import Denoise, Grid, Noise, StepCallback, exp_euler_step


def _rho(rks: list[float], h: float) -> list[float]:
    """Weights of the differences: solve R rho = b, R_{ji} = r_i^j, b_j = j! phi_{j+1}(h) / B(h).

    One difference uses rho = 1/2 (the "bh2" choice of Zhao et al.).
    """
    n = len(rks)
    if n == 1:
        return [0.5]
    hh = -h
    B_h = math.expm1(hh)
    h_phi_k, fact = B_h / hh - 1.0, 1.0
    R, b = [], []
    for j in range(1, n + 1):
        R.append([r ** (j - 1) for r in rks])
        b.append(h_phi_k * fact / B_h)
        fact *= j + 1
        h_phi_k = h_phi_k / hh - 1.0 / fact
    return torch.linalg.solve(torch.tensor(R, dtype=torch.float64),
                              torch.tensor(b, dtype=torch.float64)).tolist()


def _update(x: torch.Tensor, hist: list[tuple[int, torch.Tensor]], n: int, k_to: int,
            grid_floats, D_to: torch.Tensor | None = None) -> torch.Tensor:
    """UniP (D_to None) or UniC (D_to = D at k_to) from hist[0]'s point j to k_to, with the
    differences to hist[1:n]: (sigma'/sigma) x - alpha' B(h) (D_j + sum_i rho_i dD_i)."""
    a, s, lam = grid_floats
    j, D_j = hist[0]
    h = lam[k_to] - lam[j]
    rks = [(lam[i] - lam[j]) / h for i, _ in hist[1:n]]
    diffs = [(Di - D_j) / r for (_, Di), r in zip(hist[1:n], rks)]
    if D_to is not None:
        rks, diffs = [*rks, 1.0], [*diffs, D_to - D_j]
    B_h = math.expm1(-h)
    out = exp_euler_step(x, D_j, a[k_to], s[k_to], s[j], h)
    for rho, d in zip(_rho(rks, h) if rks else [], diffs):
        out = out - a[k_to] * B_h * rho * d
    return out


def unipc(denoise: Denoise, x: torch.Tensor, grid: Grid, *, noise: Noise,
          callback: StepCallback, order: int = 2, corrector: bool = True) -> torch.Tensor:
    """UniPC with predictor ``order`` (1..3) and the UniC corrector; one network call per step."""
    if order not in (1, 2, 3):
        raise InputError(f"UniPC order must be 1, 2 or 3; got {order!r}")
    x = x.double()
    floats = grid.floats()
    hist: list[tuple[int, torch.Tensor]] = []  # (grid index, D) newest first
    x_prev, n_prev = None, 0
    for k in range(grid.S, 0, -1):
        D = denoise(x, grid.t[k])
        if corrector and x_prev is not None and k >= 2:
            # UniC: redo the step (k+1 -> k) with D_k, evaluated at the predicted x_k
            x = _update(x_prev, hist, n_prev, k, floats, D)
        callback(k, x, D)
        if k == 1:  # lambda_0 = +inf: the last step lands on x0_hat
            break
        hist = [(k, D), *hist[:order]]
        x_prev, n_prev = x, min(order, len(hist))
        x = _update(x, hist, n_prev, k - 1, floats)
    return D
