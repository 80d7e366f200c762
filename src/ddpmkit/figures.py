"""Every figure of ddpmkit, as PNG bytes (matplotlib with the Agg backend, or PIL for grids).

``save(png, path)`` writes one atomically. Figures come in two looks, each set for the one
figure it draws (so drawing one never changes another): matplotlib's own, for the pictures a
run, the demo and ``equivalence --plot`` write, and the report's (a light grid, no top or right
spines, its palette, cropped to the drawing). :func:`preview` draws the ancestral samples (and
trajectory) that the trainer, the report and the demo show.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .io import atomic_write_bytes
from .schedules import NoiseSchedule

PALETTE = ["#3b5bdb", "#e8590c", "#2b8a3e", "#c2255c", "#5f3dc4", "#868e96", "#0b7285"]
REPORT_RC = {"axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
             "grid.alpha": 0.25, "font.size": 9, "axes.titlesize": 10,
             "axes.titleweight": "bold"}
WEIGHT_LABEL = "weight on ||x0_hat - x0||^2"


def save(png: bytes, path) -> None:
    """Write PNG bytes to ``path`` atomically."""
    atomic_write_bytes(path, png)


# --- matplotlib -----------------------------------------------------------------------------

@contextmanager
def _pyplot(report: bool = False) -> Iterator[Any]:
    """pyplot on the Agg backend, in the report's look or matplotlib's own for this figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rc = REPORT_RC | {"axes.prop_cycle": plt.cycler(color=PALETTE)} if report else {}
    with plt.rc_context(rc):
        yield plt


def _png(fig, crop: bool = False) -> bytes:
    """The figure as PNG bytes (at 110 dpi cropped to the drawing, or at the figure's dpi);
    the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    if crop:
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    else:
        fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


# --- samples --------------------------------------------------------------------------------

def image_grid(x, nrow: int | None = None, scale: int | None = None, pad: int | None = None):
    """(N, C, H, W) in [-1, 1] -> a uint8 (rows, cols, C) grid (numpy), upscaled if small.

    Cells are separated by mid-grey bars (small digits touch their borders)."""
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


def array_png(array) -> bytes:
    """A uint8 array (H, W) or (H, W, 3) as PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def samples_png(x, kind: str = "image") -> bytes:
    """Samples as PNG: an image grid, or a scatter plot for 2-D vectors."""
    if kind == "image":
        return array_png(image_grid(x))
    with _pyplot() as plt:
        fig, ax = plt.subplots(figsize=(4, 4), dpi=110)
        pts = x.detach().float().cpu().numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5)
        ax.set_aspect("equal")
        ax.set_title(f"{len(pts)} samples")
        fig.tight_layout()
        return _png(fig)


def trajectory_png(steps, n_show: int = 8, n_cols: int = 9) -> bytes:
    """Rows of x_t and x0_hat(x_t, t) at ``n_cols`` t's of a trajectory (list of samplers.Step)."""
    import numpy as np

    idx = np.unique(np.linspace(0, len(steps) - 1, n_cols).round().astype(int))
    chosen = [steps[i] for i in idx]
    h = 2 * n_show
    with _pyplot() as plt:
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
        fig.suptitle("The denoiser at work: x_t (noisy input) and x0_hat(x_t, t) (its "
                     "estimate)", fontsize=9)
        fig.tight_layout()
        return _png(fig)


@dataclass
class Preview:
    """The PNG pictures of :func:`preview`."""

    samples: bytes  # an image grid, or a scatter plot of 2-D vectors
    trajectory: bytes | None  # x_t and x0_hat of the first samples (on request; images)


def preview(denoiser, kind: str, data_shape: Sequence[int], *, n: int = 64,
            steps: int | None = None, seed: int = 0, device: str = "cpu",
            trajectory: bool = False, n_show: int = 8) -> Preview:
    """``n`` ancestral samples with ``steps`` network calls (all T if None), seeded, x0_hat
    clipped to [-1, 1] for images; with ``trajectory``, x_t / x0_hat of the first ``n_show``."""
    from .samplers import sample
    from .samplers.common import Step

    shape = (n, *data_shape)
    res = sample(denoiser, shape, sampler="ancestral", steps=steps, seed=seed, device=device,
                 clip="clip" if kind == "image" else "none", return_trajectory=trajectory)
    traj = None
    if trajectory:
        traj = trajectory_png([Step(k=s.k, t=s.t, x_t=s.x_t[:n_show], x0_hat=s.x0_hat[:n_show])
                               for s in res.trajectory], n_show=n_show)
    return Preview(samples_png(res.x.cpu(), kind=kind), traj)


# --- the weights ----------------------------------------------------------------------------

def all_weights_png(schedule: NoiseSchedule, gamma: float = 5.0) -> bytes:
    """C_t and the implied weights w(t) on the x0-MSE of every weighting, log scale."""
    from .losses import WEIGHTINGS, loss_weights

    with _pyplot() as plt:
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        t = list(range(1, schedule.T + 1))
        for name in WEIGHTINGS:
            w = loss_weights(schedule, name, gamma=gamma)
            if name == "elbo":
                ax.plot(t[1:], w[2:].tolist(), label="elbo: C_t (t>=2)", lw=2.2, color="k")
            else:
                ax.plot(t, w[1:].tolist(), label=name)
        _weights_axes(ax, f"Loss weightings on the x0-MSE ({schedule.name}, T = {schedule.T})")
        ax.grid(alpha=0.3, which="both")
        fig.tight_layout()
        return _png(fig)


def weights_png(schedule: NoiseSchedule, weighting: str, gamma: float) -> bytes:
    """C_t (the ELBO weight on ||x0_hat - x0||^2) and the run's weighting, both per unit mean
    (the report's look)."""
    import numpy as np

    from .losses import loss_weights

    c = loss_weights(schedule, "elbo").numpy()
    w = loss_weights(schedule, weighting, gamma=gamma).numpy()
    T = schedule.T
    with _pyplot(report=True) as plt:
        fig, ax = plt.subplots(figsize=(7.2, 3.4))
        ax.plot(np.arange(2, T + 1), c[2:], color="k", lw=2,
                label="C_t = (snr_{t-1} - snr_t) / 2  (ELBO)")
        if weighting != "elbo":
            ax.plot(np.arange(1, T + 1), w[1:] * (c[2:].mean() / w[1:].mean()), lw=1.6,
                    color=PALETTE[1], label=f"w(t) of '{weighting}' (scaled to C_t's mean)")
        _weights_axes(ax, f"{schedule.name} schedule, T = {T}")
        fig.tight_layout()
        return _png(fig, crop=True)


def _weights_axes(ax, title: str) -> None:
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel(WEIGHT_LABEL)
    ax.set_title(title)
    ax.legend(fontsize=8)


# --- training and the ELBO ------------------------------------------------------------------

def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            xs.append(r["step"])
            ys.append(float(v))
    return xs, ys


def training_curves_png(records: list[dict]) -> bytes:
    """Loss (log), gradient norm, learning rate and throughput against the step."""
    specs = [("loss", "training loss (weighted x0-MSE / mean weight)", True),
             ("grad_norm", "gradient norm (before clipping)", True),
             ("lr", "learning rate", False), ("imgs_per_s", "throughput (examples / s)", False)]
    with _pyplot(report=True) as plt:
        fig, axes = plt.subplots(1, 4, figsize=(13, 2.9))
        for ax, (key, title, log) in zip(axes, specs):
            xs, ys = _series(records, key)
            if xs:
                ax.plot(xs, ys, lw=1.3, color=PALETTE[0], marker="o" if len(xs) < 20 else None,
                        ms=3)
                if log and min(ys) > 0:
                    ax.set_yscale("log")
            else:
                ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("step")
        fig.tight_layout()
        return _png(fig, crop=True)


def _error_lines(ax, recs: list[dict], **line) -> None:
    """x0-MSE per dimension by t bucket (log) at the first, 1/4, 1/2 and last record."""
    import numpy as np

    nb = len(recs[0]["mse_by_t"])
    centers = (np.arange(nb) + 0.5) / nb
    for k in sorted({0, len(recs) // 4, len(recs) // 2, len(recs) - 1}):
        y = np.array([np.nan if v is None else v for v in recs[k]["mse_by_t"]], dtype=float)
        ax.plot(centers, y, marker="o", ms=3, label=f"step {recs[k]['step']}", **line)
    ax.set_yscale("log")


def error_by_t_png(records: list[dict]) -> bytes | None:
    """x0-MSE per dimension by t-bucket over training (heat map) and at a few steps (lines)."""
    import numpy as np

    recs = [r for r in records if r.get("mse_by_t")]
    if not recs:
        return None
    nb = len(recs[0]["mse_by_t"])
    grid = np.array([[np.nan if v is None else v for v in r["mse_by_t"]] for r in recs
                     if len(r["mse_by_t"]) == nb], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        lg = np.log10(grid)
    s0, s1 = recs[0]["step"], recs[-1]["step"]
    if s1 == s0:  # a single record: give the one column a width
        s0, s1 = s0 - 0.5, s1 + 0.5
    with _pyplot(report=True) as plt:
        fig, (a0, a1) = plt.subplots(1, 2, figsize=(12, 3.4),
                                     gridspec_kw={"width_ratios": [1.4, 1]})
        im = a0.imshow(lg.T, aspect="auto", origin="lower", cmap="viridis",
                       interpolation="nearest", extent=(s0, s1, 0, 1))
        a0.set_xlabel("step")
        a0.set_ylabel("t / T")
        a0.grid(False)
        a0.set_title("log10 x0-MSE per dimension, by t bucket, during training")
        fig.colorbar(im, ax=a0, fraction=0.04)
        _error_lines(a1, recs, lw=1.2)
        a1.set_xlabel("t / T")
        a1.set_ylabel("x0-MSE per dimension")
        a1.set_title("the denoiser's error by t")
        a1.legend(fontsize=8)
        fig.tight_layout()
        return _png(fig, crop=True)


def loss_by_t_png(records: list[dict], by_t_bpd: list[float] | None, C_t) -> bytes:
    """Training x0-MSE per t bucket (early and late in training) and the test ELBO by t."""
    import numpy as np

    ncols = 2 if by_t_bpd is not None else 1
    with _pyplot() as plt:
        fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 3.8), dpi=110, squeeze=False)
        ax = axes[0, 0]
        recs = [r for r in records if r.get("mse_by_t")]
        if recs:
            _error_lines(ax, recs)
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
        return _png(fig)


def elbo_by_t_png(res: dict[str, Any], buckets: list[dict[str, Any]]) -> bytes:
    """L_t in bits/dim against t (log), and the -ELBO split into prior, t-buckets (``buckets``:
    t_lo, t_hi, bpd), decoder, from an exact evaluation's result."""
    import numpy as np

    by_t = np.asarray(res["by_t_bpd"], dtype=float)
    t = np.arange(len(by_t))
    terms = res["terms_bpd"]
    labels = ["prior L_T"] + [f"t {b['t_lo']}-{b['t_hi']}" for b in buckets] + ["decoder L_1"]
    vals = [terms["prior"]] + [b["bpd"] for b in buckets] + [terms["decoder"]]
    colors = [PALETTE[5]] + [PALETTE[0]] * len(buckets) + [PALETTE[1]]
    y = np.arange(len(vals))[::-1]
    with _pyplot(report=True) as plt:
        fig, (a0, a1) = plt.subplots(1, 2, figsize=(12, 3.4),
                                     gridspec_kw={"width_ratios": [1.3, 1]})
        a0.plot(t[2:], by_t[2:], lw=1, color=PALETTE[0])
        a0.set_yscale("log")
        a0.set_xlabel("t")
        a0.set_ylabel("bits/dim")
        a0.set_title("consistency terms L_t = C_t E||x0_hat - x0||^2 (+ D m_t)")
        a1.barh(y, vals, color=colors)
        a1.set_yticks(y, labels, fontsize=7)
        a1.set_xlabel("bits/dim")
        a1.set_title(f"-ELBO = {res['bpd']:.3f} bits/dim, term by term")
        a1.grid(axis="y", alpha=0)
        fig.tight_layout()
        return _png(fig, crop=True)
