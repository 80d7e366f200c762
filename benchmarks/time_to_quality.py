"""Time to quality: ddpmkit vs denoising-diffusion-pytorch, same data, same wall clock.

Back to back on this machine, each trains for the same wall-clock budget (default 3 minutes of
training; sampling and scoring are timed apart) on the bundled 8x8 digits (1347 training
images, 17 levels), then draws 1797 samples with 20 network calls and scores them with the
Frechet distance in the feature space of ddpmkit's bundled digits classifier (FD; the real
data's own FD, test vs train, is the floor).

- ddpmkit: the ``ddpmkit demo`` recipe (U-Net ch 32, mult (1, 2, 2), 1 res block, mid attention;
  x0 parameterization, min_snr weighting, cosine schedule T = 1000, AdamW lr 2e-3 with 200
  warm-up steps, grad clip 1, EMA 0.995, batch 128); DPM-Solver++(2M), 20 steps, clip.
- denoising-diffusion-pytorch (``Unet`` + ``GaussianDiffusion``): its Unet runs on 8x8 as it is
  (``dim_mults=(1, 2, 2)`` has a downsample factor 4, which divides 8; no padding), ``dim``
  chosen so that its parameter count is the closest to ours; its defaults (pred_v, sigmoid
  schedule, T = 1000) plus min-SNR weighting (gamma 5, as ours); the same optimizer, warm-up,
  clip, EMA, batch and data order; its DDIM sampler (eta 0) with 20 steps, x0 clipped.

Both use ``--threads`` intra-op threads (default 1; OMP_NUM_THREADS is set to match) and the
load average is recorded before and after each phase: the machine may be shared.

    make bench-quality                                   # both, 3 minutes each
    .venv-bench/bin/python benchmarks/time_to_quality.py --minutes 3 --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

from ddpmkit.data import load_dataset
from ddpmkit.io import atomic_write_json
from ddpmkit.metrics.fd import classify_digits, digits_fd_floor, frechet_distance
from ddpmkit.nets import count_parameters
from ddpmkit.train.ema import EMA

OUT = Path(__file__).resolve().parent / "results" / "time_to_quality.json"


def load_avg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def class_counts(x: torch.Tensor) -> list[int]:
    import numpy as np

    return np.bincount(np.asarray(classify_digits(x)), minlength=10).tolist()


def run_ddpmkit(minutes: float, n: int, steps: int, seed: int, workdir: Path) -> dict:
    """Train with the demo recipe for ``minutes``, sample n with dpmpp2m, score."""
    import shutil

    from ddpmkit.demo import DemoConfig
    from ddpmkit.generate import generate
    from ddpmkit.train import TrainConfig, load_denoiser, train

    d = DemoConfig()
    cfg = TrainConfig(data="digits", minutes=minutes, batch_size=d.batch_size, lr=d.lr,
                      weighting=d.weighting, schedule=d.schedule, T=d.T,
                      ema_decay=d.ema_decay, net_overrides=dict(d.net_overrides),
                      checkpoint_every=10**9, sample_every=0, seed=seed)
    run_dir = workdir / "ddpmkit_run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    load0 = load_avg()
    res = train(cfg, run_dir, progress=False)
    load1 = load_avg()
    loaded = load_denoiser(run_dir, verbose=False)
    t0 = time.perf_counter()
    x, meta = generate(loaded.denoiser, loaded.run.data["shape"], n, sampler="dpmpp2m",
                       steps=steps, clip="clip", seed=seed, chunk=512)
    sample_s = time.perf_counter() - t0
    return {"name": "ddpmkit", "params": count_parameters(loaded.denoiser.net),
            "net": "ddpmkit U-Net ch 32, mult (1,2,2), 1 res block, mid attention",
            "objective": "x0, min_snr (gamma 5), cosine T=1000",
            "sampler": f"dpmpp2m, {meta['network_calls']} network calls, clip",
            "train_steps": res.step, "train_seconds": res.elapsed_s,
            "imgs_per_s": res.imgs_per_s, "sample_seconds": sample_s,
            "load_before_train": load0, "load_after_train": load1, **score(x)}


def score(x: torch.Tensor) -> dict:
    x = x.clamp(-1, 1)
    return {"n": int(x.shape[0]), "fd": frechet_distance(x), "class_counts": class_counts(x)}


def peer_unet(target_params: int):
    """denoising-diffusion-pytorch's Unet on 8x8 digits with the parameter count nearest ours."""
    from denoising_diffusion_pytorch import Unet

    best = None
    for dim in range(8, 129, 4):
        net = Unet(dim=dim, dim_mults=(1, 2, 2), channels=1)
        p = count_parameters(net)
        if best is None or abs(p - target_params) < abs(best[1] - target_params):
            best = (dim, p)
        if p > target_params:
            break
    assert best is not None
    return Unet(dim=best[0], dim_mults=(1, 2, 2), channels=1), best[0]


def run_peer(minutes: float, n: int, steps: int, seed: int, target_params: int) -> dict:
    """Train denoising-diffusion-pytorch for ``minutes`` of wall clock, sample n with DDIM."""
    from denoising_diffusion_pytorch import GaussianDiffusion

    from ddpmkit.demo import DemoConfig
    from ddpmkit.train.trainer import BatchOrder

    d = DemoConfig()
    torch.manual_seed(seed)
    unet, dim = peer_unet(target_params)
    diffusion = GaussianDiffusion(unet, image_size=8, timesteps=1000, sampling_timesteps=steps,
                                  min_snr_loss_weight=True, min_snr_gamma=5)
    data = load_dataset("digits").train.add(1).div(2)  # their inputs are in [0, 1]
    opt = torch.optim.AdamW(diffusion.parameters(), lr=d.lr, weight_decay=0.0)
    ema = EMA(diffusion, d.ema_decay)
    order = BatchOrder(data.shape[0], d.batch_size, seed)
    warmup = 200
    budget = minutes * 60.0
    load0 = load_avg()
    t0 = time.perf_counter()
    step = 0
    diffusion.train()
    while time.perf_counter() - t0 < budget:
        for g in opt.param_groups:
            g["lr"] = d.lr * min(1.0, (step + 1) / warmup)
        loss = diffusion(data[order.indices(step)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
        opt.step()
        ema.update(diffusion)
        step += 1
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"denoising-diffusion-pytorch diverged at step {step}")
    train_s = time.perf_counter() - t0
    load1 = load_avg()
    model = ema.shadow.eval()
    torch.manual_seed(seed)
    t1 = time.perf_counter()
    with torch.inference_mode(), contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar
        parts = [model.sample(batch_size=min(512, n - i)) for i in range(0, n, 512)]
    sample_s = time.perf_counter() - t1
    x = torch.cat(parts).float().mul(2).sub(1)  # back to [-1, 1]
    return {"name": "denoising-diffusion-pytorch", "params": count_parameters(unet),
            "net": f"Unet(dim={dim}, dim_mults=(1, 2, 2), channels=1)",
            "objective": "pred_v, min_snr (gamma 5), sigmoid T=1000 (its defaults + min-SNR)",
            "sampler": f"DDIM eta 0, {steps} network calls, x0 clipped",
            "train_steps": step, "train_seconds": train_s,
            "imgs_per_s": step * d.batch_size / train_s, "sample_seconds": sample_s,
            "load_before_train": load0, "load_after_train": load1, **score(x)}


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    try:
        from importlib.metadata import version

        out["denoising_diffusion_pytorch"] = version("denoising-diffusion-pytorch")
        out["ddpmkit"] = version("ddpmkit")
    except Exception:  # noqa: BLE001 - versions are informative only
        pass
    return out


def markdown(res: dict) -> str:
    rows = ["| | params | train steps in budget | img/s | FD (1797 samples) | "
            "sample s | load avg (1 min) before / after training |",
            "|---|---:|---:|---:|---:|---:|---|"]
    for r in res["runs"]:
        fd = f"**{r['fd']:.2f}**" if r["name"] == res["winner"] else f"{r['fd']:.2f}"
        rows.append(f"| {r['name']} | {r['params'] / 1e6:.2f} M | {r['train_steps']} | "
                    f"{r['imgs_per_s']:.0f} | {fd} | {r['sample_seconds']:.0f} | "
                    f"{r['load_before_train'][0]} / {r['load_after_train'][0]} |")
    rows.append(f"| real data (test vs train) | | | | {res['fd_floor']:.2f} | | |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=3.0, help="training budget per library")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for both")
    p.add_argument("--n", type=int, default=1797, help="samples per library")
    p.add_argument("--steps", type=int, default=20, help="sampler network calls")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--workdir", default="runs/time_to_quality")
    args = p.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"time to quality: {args.minutes:g} min each, {args.threads} thread(s), "
          f"load {load_avg()}", flush=True)
    ours = run_ddpmkit(args.minutes, args.n, args.steps, args.seed, workdir)
    print(f"ddpmkit: {ours['train_steps']} steps, FD {ours['fd']:.3f}", flush=True)
    peer = run_peer(args.minutes, args.n, args.steps, args.seed, ours["params"])
    print(f"denoising-diffusion-pytorch: {peer['train_steps']} steps, FD {peer['fd']:.3f}",
          flush=True)
    res = {"minutes": args.minutes, "threads": args.threads, "n": args.n,
           "sampler_steps": args.steps, "seed": args.seed, "fd_floor": digits_fd_floor(),
           "cpu_count": os.cpu_count(), "machine": platform.machine(),
           "command": "python benchmarks/time_to_quality.py " + " ".join(sys.argv[1:]),
           "versions": versions(), "runs": [ours, peer],
           "winner": min((ours, peer), key=lambda r: r["fd"])["name"]}
    atomic_write_json(args.out, res)
    print(markdown(res))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
