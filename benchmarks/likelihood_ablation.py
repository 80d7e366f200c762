"""What each design choice of the ELBO recipe buys, one change at a time (docs/likelihood.md).

Every row trains the default digits denoiser with the lecture's C_t weights (``--loss elbo``)
for the same 1500 steps at batch 128 (equal compute) and reports test bits/dim (stratified,
50 strata, all 450 test digits) with its terms. The rows differ in one setting each: the raw
output (x0 vs v), how t is drawn (uniform, proportional to the log-SNR step, proportional to
the weight on the raw output), the Fourier input features, and the schedule's end point
log snr_max. ``--by-t`` adds an exact evaluation of the first 100 test digits for the x0 and v
rows, whose per-t terms make the figure in docs/theory.md.

    python benchmarks/likelihood_ablation.py --jobs 2          # ~30 min on 2 cores
    python benchmarks/likelihood_ablation.py --only x0_new_chain v_logsnr_ff --by-t

Runs live in runs/bench/<name> (reused when present: train resumes, a finished run only
evaluates); results in benchmarks/results/likelihood_ablation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "likelihood_ablation.json"

#: name -> (what changes, TrainConfig fields beyond the common ones)
ROWS: dict[str, tuple[str, dict]] = {
    "before": ("x0 output, native cosine chain, uniform t (ddpmkit before this change)",
               {"parameterization": "x0", "schedule": "cosine", "logsnr_max": None,
                "logsnr_min": None, "timesteps": "uniform", "t_stratified": False,
                "fourier_features": "none"}),
    "x0_new_chain": ("x0 output on the new chain (log-SNR-linear, auto ends, Fourier), t ~ "
                     "log-SNR step", {"parameterization": "x0", "timesteps": "logsnr"}),
    "v_logsnr_ff": ("v output, t ~ log-SNR step, Fourier features",
                    {"timesteps": "logsnr"}),
    "v_logsnr": ("v output, t ~ log-SNR step, no Fourier features",
                 {"timesteps": "logsnr", "fourier_features": "none"}),
    "v_weight": ("v output, t ~ weight on the raw output, no Fourier features",
                 {"fourier_features": "none"}),
    "default": ("v output, t ~ weight on the raw output, Fourier features (the default)", {}),
    "default_unstratified": ("the default without stratified t in the batch",
                             {"t_stratified": False}),
    "lmax_6.36": ("the default with log snr_max = 6.36 (sigma_min = bin / 3)",
                  {"logsnr_max": 6.3561}),
    "lmax_9": ("the default with log snr_max = 9 (sigma_min = bin / 11)", {"logsnr_max": 9.0}),
    "decoder_share_0.01": ("the default with the decoder's share of the t draws set to 1 % "
                           "(instead of ~1/8 under q proportional to the weight)",
                           {"t_decoder_share": 0.01}),
}
BY_T = ("x0_new_chain", "v_logsnr_ff")


def run_row(name: str, steps: int, root: str, by_t: bool, seed: int) -> dict:
    import torch

    torch.set_num_threads(1)
    from ddpmkit.evaluate import eval_bpd
    from ddpmkit.train import TrainConfig, load_denoiser, train

    what, fields = ROWS[name]
    cfg = TrainConfig(data="digits", weighting="elbo", steps=steps, batch_size=128, seed=seed,
                      sample_every=0, **fields)
    run_dir = Path(root) / f"{name}_seed{seed}"
    res = train(cfg, run_dir, resume=True, progress=False)
    loaded = load_denoiser(run_dir, verbose=False)
    strat = eval_bpd(loaded, method="stratified")
    out = {"name": name, "what": what, "fields": fields, "seed": seed, "steps": res.step,
           "train_seconds": res.elapsed_s, "run_dir": str(run_dir),
           "config": loaded.run.config.to_dict(),
           "bpd": strat["bpd"], "se": strat["se_bpd"], "terms": strat["terms_bpd"]}
    if by_t and name in BY_T:
        ex = eval_bpd(loaded, method="exact", limit=100)
        out |= {"exact_n100_bpd": ex["bpd"], "exact_n100_se": ex["se_bpd"],
                "by_t_bpd_n100": ex["by_t_bpd"],
                "log_snr": loaded.denoiser.schedule.log_snr[1:].tolist()}
    return out


def plot_by_t(rows: dict, path: Path) -> None:
    """Per-t bits of the exact bound (first 100 test digits) against log-SNR, x0 vs v output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, label, color in (("x0_new_chain", "raw x0 output", "C3"),
                               ("v_logsnr_ff", "v output", "C0")):
        r = rows.get(name)
        if r is None or "by_t_bpd_n100" not in r:
            continue
        lam = np.array(r["log_snr"])
        by_t = np.array(r["by_t_bpd_n100"][1:])
        by_t[0] = np.nan  # t = 1 is the decoder, shown in the legend
        # bits per unit of log-SNR, so that the area under the curve is the consistency term
        dlam = np.abs(np.gradient(lam))
        ax.plot(lam, by_t / dlam, color=color,
                label=f"{label}: {r['exact_n100_bpd']:.2f} bits/dim (decoder "
                      f"{r['terms']['decoder']:.2f})")
        ax2.plot(lam, np.nancumsum(by_t[::-1])[::-1], color=color, label=label)
    ax.set_xlabel("log-SNR of step t (t = 1 at the left)")
    ax.set_ylabel("bits/dim per unit log-SNR")
    ax.set_yscale("log")
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    ax.set_title("L_t of the exact bound, per unit log-SNR", fontsize=9)
    ax2.set_xlabel("log-SNR")
    ax2.set_ylabel("sum of L_s for s >= t (bits/dim)")
    ax2.invert_xaxis()
    ax2.legend(fontsize=8)
    ax2.set_title("consistency bits accumulated from t = T down", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--by-t", action="store_true")
    ap.add_argument("--root", default="runs/bench")
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--plot", action="store_true",
                    help="draw docs/img/likelihood_by_t.png from the stored results and stop")
    args = ap.parse_args()
    rpath = Path(args.results)
    if args.plot:
        plot_by_t(json.loads(rpath.read_text())["rows"],
                  Path(__file__).parents[1] / "docs" / "img" / "likelihood_by_t.png")
        return
    old = json.loads(rpath.read_text()).get("rows", {}) if rpath.exists() else {}
    t0 = time.perf_counter()
    n = len(args.only)
    with ProcessPoolExecutor(max_workers=args.jobs) as ex:
        rows = list(ex.map(run_row, args.only, [args.steps] * n, [args.root] * n,
                           [args.by_t] * n, [args.seed] * n))
    merged = old | {r["name"]: r for r in rows}
    out = {"command": "python benchmarks/likelihood_ablation.py --by-t", "steps": args.steps,
           "rows": merged, "load_avg_1min": os.getloadavg()[0],
           "seconds": time.perf_counter() - t0}
    rpath.parent.mkdir(parents=True, exist_ok=True)
    rpath.write_text(json.dumps(out, indent=1))
    print("| row | what | test bits/dim | decoder | consistency |\n|---|---|---|---|---|")
    for name in ROWS:
        if name in merged:
            r = merged[name]
            print(f"| {name} | {r['what']} | {r['bpd']:.3f} +- {r['se']:.3f} | "
                  f"{r['terms']['decoder']:.3f} | {r['terms']['consistency']:.3f} |")


if __name__ == "__main__":
    main()
