"""Sliced Wasserstein-2 distance between two point clouds (low-dimensional data).

SW2(P, Q) = sqrt( E_theta W2^2(theta^T P, theta^T Q) ), theta uniform on the unit sphere. Each
1-D W2^2 between empirical measures is exact: the integral over u in (0, 1) of
(F^{-1}(u) - G^{-1}(u))^2, both quantile functions being step functions (for n = m it is the mean
squared difference of the sorted projections). The expectation over theta is a Monte Carlo mean
over ``projections`` directions drawn from a seeded generator, so the value is reproducible.
"""

from __future__ import annotations

import torch

from ..errors import InputError


def _as_points(x, name: str) -> torch.Tensor:
    x = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if x.dim() != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise InputError(f"{name} must be a 2-D array (n, d) of points; got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise InputError(f"{name} holds NaN or Inf; sliced W2 needs finite points")
    return x


def random_directions(d: int, projections: int, seed: int = 0) -> torch.Tensor:
    """(projections, d) float64 unit vectors, uniform on the sphere, from a seeded generator."""
    g = torch.Generator().manual_seed(int(seed))
    theta = torch.randn(projections, d, generator=g, dtype=torch.float64)
    return theta / theta.norm(dim=1, keepdim=True)


def w2_squared_1d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact W2^2 between the empirical measures of the rows of a (L, n) and b (L, m) -> (L,)."""
    a, b = a.sort(dim=1).values, b.sort(dim=1).values
    n, m = a.shape[1], b.shape[1]
    if n == m:
        return ((a - b) ** 2).mean(dim=1)
    # both quantile functions are constant between consecutive breakpoints i/n and j/m
    u = torch.cat([torch.arange(1, n + 1, dtype=torch.float64) / n,
                   torch.arange(1, m + 1, dtype=torch.float64) / m]).unique()
    width = torch.diff(torch.cat([torch.zeros(1, dtype=torch.float64), u]))
    mid = u - 0.5 * width
    ia = (mid * n).floor().long().clamp(max=n - 1)
    ib = (mid * m).floor().long().clamp(max=m - 1)
    return (((a[:, ia] - b[:, ib]) ** 2) * width).sum(dim=1)


def sliced_w2(x, y, projections: int = 256, seed: int = 0) -> float:
    """SW2 between point clouds x (n, d) and y (m, d), in the data's units.

    Same ``projections`` and ``seed`` give the same directions, so two calls compare fairly.
    """
    x, y = _as_points(x, "x"), _as_points(y, "y")
    if x.shape[1] != y.shape[1]:
        raise InputError(f"x and y must have the same dimension; got {x.shape[1]} and {y.shape[1]}")
    if isinstance(projections, bool) or not isinstance(projections, int) or projections < 1:
        raise InputError(f"projections must be an integer >= 1; got {projections!r}")
    theta = random_directions(x.shape[1], projections, seed)
    return float(w2_squared_1d(theta @ x.T, theta @ y.T).mean().sqrt())
