"""Sampler quality vs network calls on gmm2d with the exact denoiser: table + plot for docs.

    .venv/bin/python benchmarks/bench_samplers.py            # full table, ~5 min on 2 cores
    .venv/bin/python benchmarks/bench_samplers.py --quick    # n = 2000, budgets 10 and 100

Writes docs/img/samplers_gmm2d.png and prints markdown tables (the numbers in docs/samplers.md):
the SW2 per schedule, sampler, spacing and budget (seed 0), the floor, and the 10-call row
repeated over 5 seeds (mean +- std).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time

import torch

from ddpmkit.calibrate import GMM2D_BUDGETS, calibrate_gmm2d
from ddpmkit.io import atomic_write_bytes


def table(res: dict) -> str:
    rows = res["rows"]
    budgets = sorted({r["budget"] for r in rows})
    out = []
    for sc in dict.fromkeys(r["schedule"] for r in rows):
        out.append(f"\n**{sc} schedule** (T = {res['T']}, n = {res['n']}, seed {res['seed']})\n")
        out.append("| sampler | spacing | " + " | ".join(f"{b} calls" for b in budgets) + " |")
        out.append("|---|---|" + "---:|" * len(budgets))
        for sa, sp in dict.fromkeys((r["sampler"], r["spacing"]) for r in rows
                                    if r["schedule"] == sc):
            cells = {r["budget"]: r for r in rows
                     if (r["schedule"], r["sampler"], r["spacing"]) == (sc, sa, sp)}
            vals = []
            for b in budgets:
                r = cells[b]
                star = "" if r["network_calls"] == b else f" ({r['network_calls']})"
                vals.append(f"{r['sw2']:.4f}{star}")
            out.append(f"| {sa} | {sp} | " + " | ".join(vals) + " |")
    out.append(f"\nfloor (perfect sampler): {res['floor_mean']:.4f} +- {res['floor_std']:.4f} "
               f"({len(res['floor'])} draws)")
    return "\n".join(out)


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = res["rows"]
    schedules = list(dict.fromkeys(r["schedule"] for r in rows))
    fig, axes = plt.subplots(1, len(schedules), figsize=(6.2 * len(schedules), 4.4), dpi=110,
                             sharey=True, squeeze=False)
    for ax, sc in zip(axes[0], schedules):
        for sa, sp in dict.fromkeys((r["sampler"], r["spacing"]) for r in rows
                                    if r["schedule"] == sc):
            pts = sorted((r["network_calls"], r["sw2"]) for r in rows
                         if (r["schedule"], r["sampler"], r["spacing"]) == (sc, sa, sp))
            ls = "-" if sp == "logsnr_clipped" else ":"
            ax.plot(*zip(*pts), ls, marker="o", ms=3, label=f"{sa} ({sp})")
        ax.axhspan(res["floor_mean"] - res["floor_std"], res["floor_mean"] + res["floor_std"],
                   color="grey", alpha=0.25, label="floor +- std")
        ax.axhline(0.030, color="k", lw=0.8, ls="--", label="0.030")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("network calls")
        ax.set_title(f"gmm2d, exact denoiser, {sc} schedule")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("sliced W2 to a fresh true sample")
    axes[0][-1].legend(fontsize=6.5, ncol=2)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--plot", default="docs/img/samplers_gmm2d.png")
    args = ap.parse_args()
    torch.set_num_threads(1)  # small tensors: threads only add contention on a shared machine
    n, budgets = (2000, (10, 100)) if args.quick else (10_000, GMM2D_BUDGETS)
    t0 = time.perf_counter()
    res = calibrate_gmm2d(budgets=budgets, n=n, seed=0, progress=sys.stderr.isatty())
    print(table(res), flush=True)
    print(f"\n(table: {time.perf_counter() - t0:.0f} s)")
    plot(res, args.plot)
    print(f"wrote {args.plot}")
    print("\n10 network calls, 5 seeds (mean +- std); floor per seed in the last column\n")
    print("| schedule | sampler | spacing | SW2 | floor |\n|---|---|---|---:|---:|")
    reps = [calibrate_gmm2d(budgets=(10,), n=n, seed=s) for s in range(5)]
    keys = [(r["schedule"], r["sampler"], r["spacing"]) for r in reps[0]["rows"]]
    fl = [r["floor_mean"] for r in reps]
    for i, (sc, sa, sp) in enumerate(keys):
        v = [r["rows"][i]["sw2"] for r in reps]
        print(f"| {sc} | {sa} | {sp} | {statistics.mean(v):.4f} +- {statistics.stdev(v):.4f} "
              f"| {statistics.mean(fl):.4f} +- {statistics.stdev(fl):.4f} |")
    print(f"\n(total: {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
