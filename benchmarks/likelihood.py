"""Test bits/dim on the bundled digits: ddpmkit's ELBO recipe over seeds, beside the anchors.

For each seed this runs what a user types,

    ddpmkit train --data digits --loss elbo --steps 1500 --batch-size 128 --seed S
    ddpmkit eval RUN --bpd exact

(through the Python API, the same code; runs and evaluations are stored in the run directory
and reused), then checks the number more ways on the first ``--check-n`` test digits:
- an independent float64 ELBO written here from the lecture's formulas (its own schedule
  tables from the stored log-SNR end points, the Gaussian KL of posterior vs model mean with
  sigma_q^2, no C_t shortcut, a discretized-Gaussian decoder with scipy's normal CDF) that
  shares nothing with ddpmkit but the network's x0_hat: the bound must hold and agree within
  its standard error;
- the analytic variance (sigma_q^2 + c_x0^2 mmse_t, mmse_t fitted on the training split) and
  the exact K-level decoder in place of the discretized Gaussian.
Beside them, the anchors computed from the same 1347/450 split: uniform (log2 17), independent
per-pixel categoricals, and a fully-visible autoregressive logistic model (one multinomial
logistic regression per pixel on the pixels before it in raster order).

    make bench-likelihood                  # 3 seeds, ~30 min on 2 cores
    python benchmarks/likelihood.py --seeds 0 1 2 --steps 1500 --jobs 2

Writes benchmarks/results/likelihood.json; docs/likelihood.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results" / "likelihood.json"


# ---- anchors --------------------------------------------------------------------------------
def _levels(x: torch.Tensor, K: int) -> np.ndarray:
    return np.rint((x.numpy().reshape(len(x), -1) + 1) * (K - 1) / 2).astype(int)


def anchors(C: float = 1.0) -> dict[str, float]:
    """Bits/dim on the digits test split of three baselines fitted on the train split."""
    from sklearn.linear_model import LogisticRegression

    from ddpmkit.data import load_dataset

    d = load_dataset("digits")
    K = d.levels
    tr, te = _levels(d.train, K), _levels(d.test, K)
    D = tr.shape[1]
    # independent categoricals with add-1/2 smoothing (every level keeps some mass)
    cnt = np.stack([np.bincount(tr[:, i], minlength=K) for i in range(D)]) + 0.5
    p = cnt / cnt.sum(1, keepdims=True)
    indep = float(-np.mean(np.log2(p[np.arange(D)[None, :], te])))
    nll = np.zeros(len(te))
    for i in range(D):
        ytr, yte = tr[:, i], te[:, i]
        if i == 0 or len(np.unique(ytr)) == 1:
            nll += -np.log2(p[i, yte])
            continue
        m = LogisticRegression(C=C, max_iter=2000).fit(tr[:, :i] / (K - 1), ytr)
        pr = np.zeros((len(te), K))
        pr[:, m.classes_] = m.predict_proba(te[:, :i] / (K - 1))
        pr = 0.999 * pr + 0.001 * p[i][None, :]  # levels never seen at this pixel keep mass
        nll += -np.log2(pr[np.arange(len(te)), yte])
    return {"uniform": math.log2(K), "independent_categorical": indep,
            "autoregressive_logistic": float(nll.mean() / D)}


# ---- an independent float64 ELBO (shares only x0_hat with ddpmkit) ---------------------------
@torch.no_grad()
def independent_elbo_bpd(x0_hat, logsnr_max: float, logsnr_min: float, T: int,
                         x0: torch.Tensor, levels: int, seed: int = 123,
                         batch: int = 50) -> tuple[float, float]:
    """-ELBO in bits/dim (mean, SE over examples) with sigma_t^2 = sigma_q^2, all T terms.

    x0_hat(x_t float32 (B, ...), t int64 (B,)) -> (B, ...). The chain: lambda_t linear from
    logsnr_max (t = 1) to logsnr_min (t = T); alpha_bar_t = 1 / (1 + exp(-lambda_t)).
    """
    from scipy.special import log_ndtr

    lam = np.linspace(logsnr_max, logsnr_min, T)
    ab = np.concatenate([[1.0], 1.0 / (1.0 + np.exp(-lam))])      # alpha_bar_0..T
    omab = np.concatenate([[0.0], 1.0 / (1.0 + np.exp(lam))])     # 1 - alpha_bar
    gen = torch.Generator().manual_seed(seed)
    x = x0.double().flatten(1).numpy()
    N, D = x.shape
    total = np.zeros(N)
    # prior: KL(N(sqrt(ab_T) x0, 1 - ab_T) || N(0, 1)) per dimension
    total += (0.5 * (ab[T] * x**2 + omab[T] - 1.0 - np.log(omab[T]))).sum(1)
    for t in range(1, T + 1):
        for lo in range(0, N, batch):
            xb = x[lo:lo + batch]
            eps = torch.randn(xb.shape, generator=gen, dtype=torch.float64).numpy()
            xt = math.sqrt(ab[t]) * xb + math.sqrt(omab[t]) * eps
            tt = torch.full((len(xb),), t, dtype=torch.int64)
            xh = x0_hat(torch.from_numpy(xt).float().reshape(len(xb), *x0.shape[1:]), tt)
            xh = xh.double().flatten(1).numpy()
            if t == 1:  # decoder: discretized Gaussian, mean x0_hat, variance beta_1 = 1 - ab_1
                h, s = 1.0 / (levels - 1), math.sqrt(1.0 - ab[1])
                a, b = (xb - h - xh) / s, (xb + h - xh) / s
                lo_edge, hi_edge = xb < -1 + h / 2, xb > 1 - h / 2
                # log(Phi(b) - Phi(a)) on the side where it does not cancel
                flip = (a + b) > 0
                u, v = np.where(flip, -a, b), np.where(flip, -b, a)
                mid = log_ndtr(u) + np.log1p(-np.exp(np.minimum(log_ndtr(v) - log_ndtr(u),
                                                                -1e-300)))
                ll = np.where(lo_edge, log_ndtr(b), np.where(hi_edge, log_ndtr(-a), mid))
                total[lo:lo + batch] += -ll.sum(1)
                continue
            # posterior q(x_{t-1} | x_t, x0) and the model mean with x0_hat in x0's place
            beta = 1.0 - ab[t] / ab[t - 1]
            c_xt = omab[t - 1] * math.sqrt(1.0 - beta) / omab[t]
            c_x0 = beta * math.sqrt(ab[t - 1]) / omab[t]
            var_q = omab[t - 1] * beta / omab[t]
            mu_q, mu_p = c_xt * xt + c_x0 * xb, c_xt * xt + c_x0 * xh
            # KL(N(mu_q, var_q) || N(mu_p, var_q)) = (mu_q - mu_p)^2 / (2 var_q)
            total[lo:lo + batch] += ((mu_q - mu_p) ** 2 / (2.0 * var_q)).sum(1)
    bpd = total / (D * math.log(2.0))
    return float(bpd.mean()), float(bpd.std(ddof=1) / math.sqrt(N))


# ---- one seed ----------------------------------------------------------------------------------
def cached_eval(loaded, **settings) -> dict:
    """eval_bpd with these settings, reusing a stored result of the same model (RUN/eval)."""
    from ddpmkit.evaluate import eval_bpd, load_evals, save_eval
    from ddpmkit.likelihood import ELBOEstimator

    want = ELBOEstimator().replace(**{k: v for k, v in settings.items() if k != "limit"})
    for r in load_evals(loaded.run_dir):
        est = r.get("estimator") or {}
        same = {k: v for k, v in est.items() if k != "decoder"} == \
            {k: v for k, v in want.as_dict().items() if k != "decoder"}
        if (same and est.get("decoder", {}).get("kind") == want.decoder.kind
                and r.get("model_sha256") == loaded.model_sha256
                and r.get("limit") == settings.get("limit") and r.get("seed") == 0):
            return r
    res = eval_bpd(loaded, **settings)
    save_eval(loaded.run_dir, res)
    return res


def run_seed(seed: int, steps: int, out: str, check_n: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    from ddpmkit.data import load_dataset
    from ddpmkit.likelihood import DecoderSpec
    from ddpmkit.train import TrainConfig, load_denoiser, train

    run_dir = Path(out) / f"default_seed{seed}"  # the ablation's "default" row for seed 0
    cfg = TrainConfig(data="digits", weighting="elbo", steps=steps, batch_size=128, seed=seed,
                      sample_every=0)
    t0 = time.perf_counter()
    res = train(cfg, run_dir, resume=True, progress=False)
    loaded = load_denoiser(run_dir, verbose=False)
    exact = cached_eval(loaded, method="exact")
    small_n = cached_eval(loaded, method="exact", limit=check_n)
    analytic = cached_eval(loaded, method="exact", variance="analytic", limit=check_n)
    levels = cached_eval(loaded, method="exact", decoder=DecoderSpec(kind="levels"),
                         limit=check_n)
    test = load_dataset("digits").test[:check_n]
    c = loaded.run.config
    assert c.schedule == "logsnr_linear", "the independent check writes a log-SNR-linear chain"
    ind, ind_se = independent_elbo_bpd(loaded.denoiser.x0_hat, c.logsnr_max, c.logsnr_min,
                                       c.T, test, 17)
    return {"seed": seed, "run_dir": str(run_dir), "train_steps": res.step,
            "train_seconds": res.elapsed_s, "config": c.to_dict(),
            "exact_bpd": exact["bpd"], "exact_se": exact["se_bpd"],
            "exact_terms": exact["terms_bpd"], "exact_seconds": exact["seconds"],
            "check_n": check_n,
            "small_bpd_check_n": small_n["bpd"], "small_se_check_n": small_n["se_bpd"],
            "small_terms_check_n": small_n["terms_bpd"],
            "analytic_bpd_check_n": analytic["bpd"], "analytic_se_check_n": analytic["se_bpd"],
            "analytic_terms_check_n": analytic["terms_bpd"],
            "levels_bpd_check_n": levels["bpd"], "levels_se_check_n": levels["se_bpd"],
            "levels_terms_check_n": levels["terms_bpd"],
            "independent_bpd_check_n": ind, "independent_se_check_n": ind_se,
            "wall_seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--check-n", type=int, default=100,
                    help="test digits for the independent and analytic checks")
    ap.add_argument("--jobs", type=int, default=2, help="seeds trained at once (1 thread each)")
    ap.add_argument("--out", default="runs/bench", help="run root (shared with the ablation)")
    ap.add_argument("--results", default=str(RESULTS))
    args = ap.parse_args()
    t0 = time.perf_counter()
    anc = anchors()
    with ProcessPoolExecutor(max_workers=args.jobs) as ex:
        rows = list(ex.map(run_seed, args.seeds, [args.steps] * len(args.seeds),
                           [args.out] * len(args.seeds), [args.check_n] * len(args.seeds),
                           [1] * len(args.seeds)))
    vals = np.array([r["exact_bpd"] for r in rows])
    summary = {"mean": float(vals.mean()), "min": float(vals.min()), "max": float(vals.max()),
               "std": float(vals.std(ddof=1)) if len(vals) > 1 else None}
    out = {"command": f"python benchmarks/likelihood.py --seeds {' '.join(map(str, args.seeds))}"
                      f" --steps {args.steps} --check-n {args.check_n}",
           "anchors_bpd": anc, "seeds": rows, "exact_bpd_over_seeds": summary,
           "load_avg_1min": os.getloadavg()[0], "torch": torch.__version__,
           "seconds": time.perf_counter() - t0}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(out, indent=1))
    print("| model | test bits/dim |\n|---|---|")
    for k, v in anc.items():
        print(f"| {k.replace('_', ' ')} | {v:.3f} |")
    for r in rows:
        print(f"| ddpmkit elbo, seed {r['seed']} (exact, 450 digits) | {r['exact_bpd']:.3f} "
              f"+- {r['exact_se']:.3f} |")
    print(f"| ddpmkit elbo, {len(rows)} seeds | {summary['mean']:.3f} "
          f"(range {summary['min']:.3f}-{summary['max']:.3f}) |")
    print(f"\nchecks on the first {args.check_n} test digits (per seed):")
    for r in rows:
        print(f"  seed {r['seed']}: ddpmkit small {r['small_bpd_check_n']:.3f} +- "
              f"{r['small_se_check_n']:.3f}; independent float64 {r['independent_bpd_check_n']:.3f}"
              f" +- {r['independent_se_check_n']:.3f}; analytic variance "
              f"{r['analytic_bpd_check_n']:.3f} +- {r['analytic_se_check_n']:.3f}; K-level "
              f"decoder {r['levels_bpd_check_n']:.3f} +- {r['levels_se_check_n']:.3f}")
    print(f"(load {out['load_avg_1min']:.1f}; {out['seconds']:.0f} s; written {args.results})")


if __name__ == "__main__":
    main()
