"""Plots of the maths (matplotlib, Agg backend, written atomically as PNG)."""

from __future__ import annotations

import io

from .io import atomic_write_bytes
from .schedules import NoiseSchedule


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_weights(schedule: NoiseSchedule, path: str, gamma: float = 5.0) -> None:
    """C_t and the implied weights w(t) on the x0-MSE of every weighting, log scale, to PNG."""
    from .losses import WEIGHTINGS, loss_weights

    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    t = list(range(1, schedule.T + 1))
    for name in WEIGHTINGS:
        w = loss_weights(schedule, name, gamma=gamma)
        if name == "elbo":
            ax.plot(t[1:], w[2:].tolist(), label="elbo: C_t (t>=2)", lw=2.2, color="k")
        else:
            ax.plot(t, w[1:].tolist(), label=name)
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("weight on ||x0_hat - x0||^2")
    ax.set_title(f"Loss weightings on the x0-MSE ({schedule.name}, T = {schedule.T})")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def image_grid(x, nrow: int | None = None, scale: int | None = None, pad: int = 1):
    """(N, C, H, W) in [-1, 1] -> a uint8 (rows, cols, C) grid (numpy), upscaled if small."""
    import math

    import numpy as np

    x = x.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to("cpu").numpy()
    x = x.astype(np.uint8)
    n, c, h, w = x.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    ncol = int(math.ceil(n / nrow))
    scale = scale or max(1, 64 // max(h, w))
    H, W = h * scale, w * scale
    grid = np.full((ncol * (H + pad) + pad, nrow * (W + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        img = x[i].transpose(1, 2, 0).repeat(scale, 0).repeat(scale, 1)
        top, left = pad + r * (H + pad), pad + q * (W + pad)
        grid[top:top + H, left:left + W] = img
    return grid if c != 1 else grid[:, :, 0]


def save_png(array, path) -> None:
    """Write a uint8 array (H, W) or (H, W, 3) as PNG, atomically."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def save_samples(x, path, kind: str = "image") -> None:
    """Samples to PNG: an image grid, or a scatter plot for 2-D vectors."""
    if kind == "image":
        save_png(image_grid(x), path)
        return
    plt = _figure()
    fig, ax = plt.subplots(figsize=(4, 4), dpi=110)
    pts = x.detach().float().cpu().numpy()
    ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
    ax.set_aspect("equal")
    ax.set_title(f"{len(pts)} samples")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
