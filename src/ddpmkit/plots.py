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


def _save_figure(plt, fig, path) -> None:
    """Render a figure to PNG in memory, close it, and write the file atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


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
    _save_figure(plt, fig, path)


def image_grid(x, nrow: int | None = None, scale: int | None = None, pad: int | None = None):
    """(N, C, H, W) in [-1, 1] -> a uint8 (rows, cols, C) grid (numpy), upscaled if small.

    Cells are separated by mid-grey bars (small digits touch their borders)."""
    import math

    import numpy as np

    x = x.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to("cpu").numpy()
    x = x.astype(np.uint8)
    n, c, h, w = x.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    ncol = int(math.ceil(n / nrow))
    scale = scale or max(1, 64 // max(h, w))
    H, W = h * scale, w * scale
    pad = pad if pad is not None else max(2, scale)
    grid = np.full((ncol * (H + pad) + pad, nrow * (W + pad) + pad, c), 128, dtype=np.uint8)
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
    _save_figure(plt, fig, path)


def plot_trajectory(steps, path, n_show: int = 8, n_cols: int = 9) -> None:
    """Rows of x_t and x0_hat(x_t, t) at ``n_cols`` t's of a trajectory (list of samplers.Step)."""
    import numpy as np

    idx = np.unique(np.linspace(0, len(steps) - 1, n_cols).round().astype(int))
    chosen = [steps[i] for i in idx]
    plt = _figure()
    h = 2 * n_show
    fig, axes = plt.subplots(h, len(chosen), figsize=(1.1 * len(chosen), 0.55 * h + 0.6),
                             dpi=110, squeeze=False)
    for j, st in enumerate(chosen):
        for i in range(n_show):
            for r, (img, label) in enumerate(((st.x_t, "x_t"), (st.x0_hat, "x0_hat"))):
                ax = axes[2 * i + r, j]
                ax.imshow(img[i, 0].detach().float().cpu().clamp(-1.5, 1.5).numpy(),
                          cmap="gray", vmin=-1, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    ax.set_ylabel(label, fontsize=7, rotation=0, labelpad=18)
        axes[0, j].set_title(f"t = {st.t}", fontsize=8)
    fig.suptitle("The denoiser at work: x_t (noisy input) and x0_hat(x_t, t) (its estimate)",
                 fontsize=9)
    fig.tight_layout()
    _save_figure(plt, fig, path)


def plot_loss_by_t(records: list[dict], by_t_bpd: list[float] | None, C_t, path) -> None:
    """Training x0-MSE per t bucket (early and late in training) and the test ELBO by t."""
    import numpy as np

    plt = _figure()
    ncols = 2 if by_t_bpd is not None else 1
    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 3.8), dpi=110, squeeze=False)
    ax = axes[0, 0]
    recs = [r for r in records if r.get("mse_by_t")]
    if recs:
        nb = len(recs[0]["mse_by_t"])
        centers = (np.arange(nb) + 0.5) / nb
        picks = sorted({0, len(recs) // 4, len(recs) // 2, len(recs) - 1})
        for k in picks:
            y = [np.nan if v is None else v for v in recs[k]["mse_by_t"]]
            ax.plot(centers, y, marker="o", ms=3, label=f"step {recs[k]['step']}")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.set_xlabel("t / T")
    ax.set_ylabel("x0-MSE per dimension")
    ax.set_title("Training error of the denoiser by t", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    if by_t_bpd is not None:
        ax = axes[0, 1]
        t = np.arange(len(by_t_bpd))
        ax.plot(t[2:], np.asarray(by_t_bpd)[2:], lw=1, label="test L_t (bits/dim)")
        ax.set_yscale("log")
        ax.set_xlabel("t")
        ax.set_title("Test ELBO consistency terms L_t = C_t E||x0_hat - x0||^2", fontsize=9)
        ax2 = ax.twinx()
        ax2.plot(t[2:], np.asarray(C_t)[2:], color="k", lw=0.8, ls="--", label="C_t")
        ax2.set_yscale("log")
        ax2.set_ylabel("C_t")
        ax.legend(loc="upper right", fontsize=7)
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    _save_figure(plt, fig, path)
