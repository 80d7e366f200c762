"""Make the figures of docs/theory.md from ddpmkit's own functions.

    python examples/theory_figures.py                    # weights figures (seconds)
    python examples/theory_figures.py --trajectory RUN   # x_t and x0_hat from a trained run

RUN is a digits run directory, e.g. from ``ddpmkit train --data digits --out RUN --minutes 10``.

Writes docs/img/theory_weights.png (``ddpmkit.figures.all_weights_png``),
docs/img/theory_parameterizations.png (the unweighted MSE of each parameterization as a weight
on the x0-MSE, against the ELBO's C_t) and, with ``--trajectory``, docs/img/theory_trajectory.png
(x_t and x0_hat(x_t, t) side by side during ancestral sampling of a trained digits model).
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Sequence
from pathlib import Path

import torch

from ddpmkit import diffusion as D
from ddpmkit.denoiser import Denoiser
from ddpmkit.figures import all_weights_png, save
from ddpmkit.io import atomic_write_bytes
from ddpmkit.losses import loss_weights
from ddpmkit.samplers import sample_ancestral
from ddpmkit.schedules import NoiseSchedule, cosine, linear

IMG = Path(__file__).resolve().parents[1] / "docs" / "img"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())


def parameterization_weights(schedule: NoiseSchedule) -> dict[str, torch.Tensor]:
    """w(t) on ||x0_hat - x_0||^2 of each unweighted MSE, float64 (T+1,); index 0 unused.

    x0-MSE: 1; eps-MSE: snr_t (eq. 22); v-MSE: snr_t + 1 (eq. 23); mu-MSE: c_x0(t)^2 (eq. 24);
    ELBO: C_t = (snr_{t-1} - snr_t)/2 for t >= 2 (eq. 16).
    """
    c_x0 = D.posterior_coefficients(schedule)[1]
    elbo = loss_weights(schedule, "elbo")
    elbo[1] = float("nan")  # the decoder's weight depends on sigma_1^2; not a C_t
    return {
        "ELBO: C_t": elbo,
        "x0-MSE: 1": torch.ones_like(c_x0),
        "eps-MSE (Ho's simple): snr_t": loss_weights(schedule, "simple"),
        "v-MSE: snr_t + 1": loss_weights(schedule, "v"),
        "mu-MSE: c_x0(t)^2": c_x0**2,
    }


def figure_parameterizations(path: Path) -> None:
    """Two panels (linear, cosine, T = 1000): the weights of parameterization_weights."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), dpi=110, sharey=True)
    styles = {"ELBO: C_t": dict(color="k", lw=2.4)}
    for ax, sched in zip(axes, (linear(1000), cosine(1000))):
        t = torch.arange(1, sched.T + 1)
        for name, w in parameterization_weights(sched).items():
            ax.plot(t.numpy(), w[1:].numpy(), label=name, **styles.get(name, {}))
        ax.set_yscale("log")
        ax.set_xlabel("t")
        ax.set_title(f"{sched.name} schedule, T = {sched.T}")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("weight on ||x0_hat - x0||^2")
    axes[0].legend(fontsize=8)
    fig.suptitle("Each parameterization's unweighted MSE is a weighted x0-MSE")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def figure_trajectory(denoiser: Denoiser, shape: Sequence[int], path: Path,
                      show_t: Sequence[int] = (1000, 900, 750, 600, 450, 300, 150, 50, 1),
                      seed: int = 0) -> None:
    """x_t (upper row) and x0_hat(x_t, t) (lower row) for each sample, at the steps ``show_t``.

    ``shape`` is (N, C, H, W) with C = 1; ancestral sampling on the full chain, small variance.
    """
    T = denoiser.T
    show = sorted({min(max(int(s), 1), T) for s in show_t}, reverse=True)
    result = sample_ancestral(denoiser, shape, seed=seed, return_trajectory=True)
    by_t = {step.t: step for step in result.trajectory}
    n = shape[0]
    plt = _plt()
    fig, axes = plt.subplots(2 * n, len(show), figsize=(1.1 * len(show), 2.2 * n), dpi=110,
                             squeeze=False)
    for j, t in enumerate(show):
        step = by_t[t]
        for i in range(n):
            xt = step.x_t[i, 0].float().numpy()
            axes[2 * i, j].imshow(xt, cmap="gray", vmin=float(xt.min()), vmax=float(xt.max()))
            axes[2 * i + 1, j].imshow(step.x0_hat[i, 0].float().clamp(-1, 1).numpy(), cmap="gray",
                                      vmin=-1, vmax=1)
        axes[0, j].set_title(f"t = {t}", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for i in range(n):
        axes[2 * i, 0].set_ylabel("x_t", fontsize=8)
        axes[2 * i + 1, 0].set_ylabel("x0_hat", fontsize=8)
    fig.suptitle("Ancestral sampling: x_t and the denoiser's x0_hat(x_t, t)", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def load_trained_denoiser(run: str) -> Denoiser:
    """The EMA denoiser of the newest valid checkpoint of a run written by ``ddpmkit train``."""
    try:
        from ddpmkit.train import load_denoiser
    except ImportError as err:  # the trainer is newer than this figure script
        raise SystemExit("the trajectory figure needs ddpmkit.train (the trainer)") from err
    return load_denoiser(run, ema=True).denoiser


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=IMG, help="folder for the PNG files")
    ap.add_argument("--trajectory", metavar="RUN_DIR",
                    help="also draw x_t / x0_hat from this trained digits run")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    save(all_weights_png(linear(1000)), args.out / "theory_weights.png")
    figure_parameterizations(args.out / "theory_parameterizations.png")
    print(f"wrote theory_weights.png and theory_parameterizations.png in {args.out}")
    if args.trajectory:
        den = load_trained_denoiser(args.trajectory)
        figure_trajectory(den, (3, 1, 8, 8), args.out / "theory_trajectory.png", seed=args.seed)
        print(f"wrote {args.out / 'theory_trajectory.png'}")


if __name__ == "__main__":
    main()
