"""Gradient variance of the ELBO loss under each way of drawing t (issue: the ELBO that works).

The loss is the lecture's bound, E_t[w_t ||x0_hat - x_0||^2] with w_t = C_t (t >= 2) and the
decoder weight at t = 1, estimated on a batch with t drawn from a proposal q(t) and importance
weights 1/(T q(t)) (ddpmkit.losses.TimestepSampler). Every proposal has the same expected
gradient; what differs is its variance, tr Cov(g) = E||g - E g||^2 over independent batches
(data, t and noise redrawn each time). A digits denoiser (v output) is first trained briefly so
that the gradients are those of a model in training, then R batch gradients are taken per
proposal with the same weights.

    python benchmarks/bench_grad_variance.py [--reps 48] [--warm-steps 300] [--threads 1]

Writes benchmarks/results/grad_variance.json and prints the table of docs/likelihood.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from ddpmkit import nets
from ddpmkit.data import load_dataset
from ddpmkit.denoiser import Denoiser
from ddpmkit.losses import diffusion_loss, loss_weights, make_timestep_sampler
from ddpmkit.schedules import make_schedule

RESULTS = Path(__file__).parent / "results" / "grad_variance.json"


def flat_grad(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])


def batch_grad(den, x_all, sampler, weights, norm, B, gen) -> torch.Tensor:
    idx = torch.randint(0, x_all.shape[0], (B,), generator=gen)
    t, imp = sampler.sample(B, gen)
    noise = torch.randn((B, *x_all.shape[1:]), generator=gen)
    den.net.zero_grad(set_to_none=True)
    out = diffusion_loss(den, x_all[idx], weights, t, noise, imp, norm)
    out.loss.backward()
    return flat_grad(den.net).double()


def warm_up(den, x_all, weights, norm, steps: int, B: int, seed: int) -> None:
    """A short ELBO training run (logsnr t, stratified) so the gradients are mid-training ones."""
    opt = torch.optim.AdamW(den.net.parameters(), lr=1e-3)
    sampler = make_timestep_sampler("weight", den.schedule, weights, "v", stratified=True)
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = 1e-3 * min(1.0, (step + 1) / 100)
        batch_grad(den, x_all, sampler, weights, norm, B, gen)
        torch.nn.utils.clip_grad_norm_(den.net.parameters(), 1.0)
        opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=48, help="batch gradients per proposal")
    ap.add_argument("--warm-steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("digits")
    x_all = data.train
    rows = []
    t_start = time.perf_counter()
    for shape in ("logsnr_linear", "cosine"):
        sched = make_schedule(shape, 1000, logsnr_max=7.7424, logsnr_min=-9.0)
        torch.manual_seed(args.seed)
        net = nets.build_net(nets.preset("digits", T=1000))
        den = Denoiser(net, sched, "v")
        weights = loss_weights(sched, "elbo")
        norm = float(weights[1:].mean())
        warm_up(den, x_all, weights, norm, args.warm_steps, args.batch_size, args.seed)
        proposals = [("uniform", False), ("uniform", True), ("logsnr", False), ("logsnr", True),
                     ("weight", False), ("weight", True), ("importance", False)]
        for kind, strat in proposals:
            sampler = make_timestep_sampler(kind, sched, weights, "v", stratified=strat)
            if kind == "importance":  # fill its loss history first (its warm-up is uniform)
                hist_gen = torch.Generator().manual_seed(args.seed + 7)
                with torch.no_grad():
                    while bool((sampler.counts[1:] < sampler.history).any()):
                        idx = torch.randint(0, x_all.shape[0], (1000,), generator=hist_gen)
                        t = torch.arange(1, sched.T + 1)
                        noise = torch.randn((1000, *x_all.shape[1:]), generator=hist_gen)
                        out = diffusion_loss(den, x_all[idx], weights, t, noise, None, norm)
                        sampler.update(t, out.per_example)
            gen = torch.Generator().manual_seed(args.seed + 1)
            gs = torch.stack([batch_grad(den, x_all, sampler, weights, norm, args.batch_size,
                                         gen) for _ in range(args.reps)])
            mean = gs.mean(0)
            var = float(((gs - mean) ** 2).sum(1).mean() * args.reps / (args.reps - 1))
            rows.append({"schedule": f"{shape}[7.74,-9]", "proposal": kind,
                         "stratified": strat, "trace_cov": var,
                         "mean_grad_norm2": float((mean**2).sum())})
            print(f"{shape:14} {kind:10} stratified={strat!s:5} tr Cov(g) = {var:.4g}",
                  flush=True)
    for r in rows:
        base = next(b for b in rows if b["schedule"] == r["schedule"]
                    and b["proposal"] == "uniform" and not b["stratified"])
        r["variance_ratio_vs_uniform"] = r["trace_cov"] / base["trace_cov"]
    load = os.getloadavg()[0]
    out = {"rows": rows, "reps": args.reps, "warm_steps": args.warm_steps,
           "batch_size": args.batch_size, "threads": args.threads, "load_avg_1min": load,
           "seconds": time.perf_counter() - t_start,
           "command": "python benchmarks/bench_grad_variance.py "
                      f"--reps {args.reps} --warm-steps {args.warm_steps}"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print("\n| schedule | t proposal | stratified | tr Cov(g) | vs uniform |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['schedule']} | {r['proposal']} | {'yes' if r['stratified'] else 'no'} | "
              f"{r['trace_cov']:.3g} | {r['variance_ratio_vs_uniform']:.2f}x |")
    print(f"(machine load {load:.1f}; {out['seconds']:.0f} s; written {args.out})")


if __name__ == "__main__":
    main()
