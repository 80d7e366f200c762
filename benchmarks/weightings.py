"""Which loss weighting gives the best likelihood, which the best samples? (docs/weightings.md)

Trains the default digits denoiser (v output, log-SNR-linear chain with end points from the bin
width, t drawn by the weight on the raw output, Fourier features) with each weighting for the
same number of steps at batch 128 (equal compute: the weighting does not change the cost of a
step), then reports test bits/dim (stratified, 50 strata, all 450 test digits; ``--exact`` for
all T terms) and the FD of 1797 samples (UniPC 10 calls and DPM-Solver++ 2M 20 calls) against
the real-data floor, with the samples per class.

    python benchmarks/weightings.py --steps 1500 --jobs 2      # ~25 min on 2 cores

The ``elbo`` run is runs/bench/default_seed0, the same run as the likelihood benchmark's seed 0
(runs are reused when present). Results: benchmarks/results/weightings.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

WEIGHTINGS = ("elbo", "simple", "snr", "min_snr", "p2", "v")
SAMPLERS = (("unipc", 10, "uniform"), ("dpmpp2m", 20, "uniform"))  # uniform in t = in log-SNR here


def run_one(name: str, steps: int, root: str, exact: bool) -> dict:
    import torch

    torch.set_num_threads(1)
    from ddpmkit.evaluate import eval_bpd, eval_samples
    from ddpmkit.train import TrainConfig, load_denoiser, train

    run_dir = Path(root) / ("default_seed0" if name == "elbo" else f"w_{name}_seed0")
    cfg = TrainConfig(data="digits", weighting=name, steps=steps, batch_size=128, seed=0,
                      sample_every=0)
    t0 = time.perf_counter()
    res = train(cfg, run_dir, resume=True, progress=False)
    loaded = load_denoiser(run_dir, verbose=False)
    bpd = eval_bpd(loaded, method="exact" if exact else "stratified")
    out = {"weighting": name, "run_dir": str(run_dir), "steps": res.step,
           "train_seconds": res.elapsed_s, "test_bpd": bpd["bpd"], "test_bpd_se": bpd["se_bpd"],
           "bpd_method": bpd["method"], "terms_bpd": bpd["terms_bpd"], "samples": {}}
    for sampler, n_steps, spacing in SAMPLERS:
        q, _ = eval_samples(loaded, n=1797, sampler=sampler, steps=n_steps)
        out["samples"][f"{sampler}_{n_steps}"] = {
            "fd": q["fd"], "fd_floor": q["fd_floor"], "fd_ratio": q["fd_ratio"],
            "class_counts": q["class_counts"], "spacing": spacing}
    out["wall_seconds"] = time.perf_counter() - t0
    return out


def paired_difference(run_a: str, run_b: str, seed: int = 0) -> dict:
    """-ELBO of b minus a on the same 450 test digits with the same random draws (the same
    seed, and the same proposal: both runs share the chain and the output), per example:
    the mean difference and its standard error, which the paired draws make far smaller than
    either model's own SE."""
    import math

    import torch

    from ddpmkit.data import load_dataset
    from ddpmkit.evaluate import data_estimator
    from ddpmkit.likelihood import ELBOEstimator
    from ddpmkit.train import load_denoiser

    data = load_dataset("digits")
    est = data_estimator(ELBOEstimator(method="stratified"), data)
    dens = [load_denoiser(r, verbose=False).denoiser for r in (run_a, run_b)]
    gens = [torch.Generator().manual_seed(seed) for _ in dens]
    diffs = []
    for i in range(0, data.test.shape[0], est.batch_size):
        x0 = data.test[i:i + est.batch_size]
        ta, tb = (est.terms(d, x0, generator=g).total for d, g in zip(dens, gens))
        diffs.append(tb - ta)
    d = torch.cat(diffs) / (data.num_dims * math.log(2.0))
    return {"mean_bpd": float(d.mean()), "se_bpd": float(d.std()) / math.sqrt(d.numel())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--only", nargs="*", default=list(WEIGHTINGS), choices=WEIGHTINGS)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--exact", action="store_true", help="exact bits/dim (all T terms)")
    ap.add_argument("--root", default="runs/bench")
    ap.add_argument("--results", default="benchmarks/results/weightings.json")
    args = ap.parse_args()
    rpath = Path(args.results)
    old = {}
    if rpath.exists():
        prev = json.loads(rpath.read_text())
        old = prev.get("runs", {}) if prev.get("recipe") == "v-logsnr-weight-ff" else {}
    n = len(args.only)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as ex:
        rows = list(ex.map(run_one, args.only, [args.steps] * n, [args.root] * n,
                           [args.exact] * n))
    runs = old | {r["weighting"]: r for r in rows}
    for name, r in runs.items():  # paired against elbo: the same digits, the same draws
        if name != "elbo" and "elbo" in runs:
            r["paired_vs_elbo"] = paired_difference(runs["elbo"]["run_dir"], r["run_dir"])
    rpath.parent.mkdir(parents=True, exist_ok=True)
    rpath.write_text(json.dumps({
        "command": f"python benchmarks/weightings.py --steps {args.steps}"
                   + (" --exact" if args.exact else ""),
        "recipe": "v-logsnr-weight-ff", "load_avg_1min": os.getloadavg()[0],
        "seconds": time.perf_counter() - t0, "runs": runs}, indent=1))
    print("| weighting | test bits/dim | minus elbo's, paired | FD unipc 10 (ratio) | "
          "FD dpmpp2m 20 (ratio) | fewest / most samples of a class |\n|---|---|---|---|---|---|")
    for name in WEIGHTINGS:
        if name not in runs:
            continue
        r = runs[name]
        u, d = r["samples"]["unipc_10"], r["samples"]["dpmpp2m_20"]
        pv = r.get("paired_vs_elbo")
        paired = f"{pv['mean_bpd']:+.4f} +- {pv['se_bpd']:.4f}" if pv else "0"
        print(f"| {name} | {r['test_bpd']:.3f} +- {r['test_bpd_se']:.3f} | {paired} | "
              f"{u['fd']:.2f} "
              f"({u['fd_ratio']:.2f}) | {d['fd']:.2f} ({d['fd_ratio']:.2f}) | "
              f"{min(u['class_counts'])} / {max(u['class_counts'])} |")


if __name__ == "__main__":
    main()
