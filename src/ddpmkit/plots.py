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
