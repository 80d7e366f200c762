"""UniPC (Zhao et al. 2023): a multistep predictor (UniP) and a free corrector (UniC).

Data prediction D_k = x0_hat(x_k, tau_k) in lambda = log(alpha/sigma). From grid point k to k-1
with h = lambda_{k-1} - lambda_k, earlier points r_i = (lambda_{k+i} - lambda_k) / h < 0 and
differences dD_i = (D_{k+i} - D_k) / r_i:
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


def _update(x, D0, diffs, rhos, a_next, s_next, s_cur, h):
    """(sigma'/sigma) x - alpha' phi_1 D0 - alpha' B(h) sum rho_i dD_i, with B(h) = phi_1."""
    B_h = math.expm1(-h)
    out = s_next / s_cur * x - a_next * B_h * D0
    for rho, d in zip(rhos, diffs):
        out = out - a_next * B_h * rho * d
    return out


@torch.no_grad()
def sample_unipc(denoiser: Denoiser, shape: Sequence[int] | None = None, *,
                 x_T: torch.Tensor | None = None, steps: int | None = None,
                 spacing: SamplerSpacing = "uniform", clip: ClipPolicy = "none",
                 seed: int | None = None,
                 generator: torch.Generator | None = None, device=None,
                 dtype: torch.dtype = torch.float32, progress: bool = False,
                 return_trajectory: bool = False, callback: Callback | None = None,
                 order: int = 2, corrector: bool = True) -> SampleResult:
    """UniPC with predictor ``order`` (1..3) and the UniC corrector; one network call per step."""
    check_sampler_args(steps, clip)
    if order not in (1, 2, 3):
        raise InputError(f"UniPC order must be 1, 2 or 3; got {order!r}")
    device = device if device is not None else (x_T.device if x_T is not None else "cpu")
    grid = sampling_grid(denoiser.schedule, steps, spacing)
    gen = make_generator(seed, generator, device)
    x = initial_noise(shape, x_T, gen, device, dtype).double()
    a, s, lam = grid.alpha.tolist(), grid.sigma.tolist(), grid.lam.tolist()
    traj: list[Step] | None = [] if return_trajectory else None
    hist: list[tuple[int, torch.Tensor]] = []  # (grid index, D) newest first
    x_prev, p_prev = None, 0
    for k in progress_iter(range(grid.S, 0, -1), grid.S, progress, "unipc"):
        D = denoise(denoiser, x, grid.t[k], clip, dtype)
        if corrector and x_prev is not None and k >= 2:
            # UniC: redo the step (k+1 -> k) with D_k, evaluated at the predicted x_k
            j, D_j = hist[0]
            h = lam[k] - lam[j]
            rks = [(lam[i] - lam[j]) / h for i, _ in hist[1:p_prev]]
            diffs = [(Di - D_j) / r for (_, Di), r in zip(hist[1:p_prev], rks)]
            rhos = _rho([*rks, 1.0], h)
            x = _update(x_prev, D_j, [*diffs, D - D_j], rhos, a[k], s[k], s[j], h)
        record(k, grid.t[k], x, D, dtype, traj, callback)
        if k == 1:  # lambda_0 = +inf: the last step lands on x0_hat
            x = D
            break
        hist = [(k, D), *hist[: order]]
        p = min(order, len(hist))
        h = lam[k - 1] - lam[k]
        rks = [(lam[i] - lam[k]) / h for i, _ in hist[1:p]]
        diffs = [(Di - D) / r for (_, Di), r in zip(hist[1:p], rks)]
        rhos = _rho(rks, h) if rks else []
        x_prev, p_prev = x, p
        x = _update(x, D, diffs, rhos, a[k - 1], s[k - 1], s[k], h)
    meta = base_meta("unipc", grid, spacing, clip, seed, grid.S) | {"order": order,
                                                                     "corrector": corrector}
    return SampleResult(x=x.to(dtype), trajectory=traj, meta=meta)
