"""Time to quality: ddpmkit, denoising-diffusion-pytorch and diffusers, same data, same clock.

Back to back on this machine, each library trains for the same wall-clock budget (default 3
minutes of training; sampling and scoring are timed apart) on the bundled 8x8 digits (1347
training images, 17 levels), then draws 1797 samples with 20 network calls with its own
recommended fast sampler, scored by the Frechet distance in the feature space of ddpmkit's
bundled digits classifier (FD; the real data's own FD, test vs train, is the floor). ddpmkit's
model also gets its test-split bits/dim (stratified ELBO estimator, the demo's setting).

- ddpmkit: the ``ddpmkit demo`` recipe (``DemoConfig``; U-Net ch 32, mult (1, 2, 2), 1 res block,
  mid attention, Fourier input features; v output, ``elbo`` weighting with t drawn by the
  weight, the default ``logsnr_linear`` chain, T = 1000; AdamW lr 1e-3, 200 warm-up steps,
  clip 1, EMA 0.999, batch 128), trained for the wall clock here instead of the demo's 1000
  steps; ``ddpmkit sample``'s default sampler: UniPC, 20 network calls, x0_hat clipped.
- denoising-diffusion-pytorch: ``Unet(dim, dim_mults=(1, 2, 2), channels=1)`` (runs on 8x8 as
  it is: a downsample factor of 4 divides 8), ``dim`` chosen for the parameter count nearest
  ours, and ``GaussianDiffusion`` with its defaults (v prediction, sigmoid chain, T = 1000, no
  loss weighting); its DDIM sampler (eta 0), 20 steps, x0 clipped; inputs in [0, 1] (its
  convention) and samples mapped back.
- diffusers: the recipe of its ``examples/unconditional_image_generation/train_unconditional.py``
  written out here: ``DDPMScheduler(num_train_timesteps=1000)`` (linear betas, epsilon),
  ``F.mse_loss(unet(add_noise(x, eps, t), t).sample, eps)`` with t uniform on 0..999, on a
  ``UNet2DModel`` with our net's layout (the same blocks and widths, its own defaults for the
  rest, so that the recipes differ and the nets do not); ``DPMSolverMultistepScheduler``
  (DPM-Solver++ 2M, diffusers' recommended fast sampler) from the training config, 20 steps.

``--recipes own`` (default): each peer trains with its own defaults: denoising-diffusion-pytorch
its ``Trainer``'s (Adam lr 1e-4, betas (0.9, 0.99), batch 16, clip 1, ``ema_pytorch`` EMA
0.995 every 10 steps), diffusers its example's (AdamW lr 1e-4, betas (0.95, 0.999), weight decay
1e-6, cosine schedule with 500 warm-up steps over its default 100 epochs, clip 1, ``EMAModel``
with warm-up, inv_gamma 1, power 3/4, max 0.9999, batch 16), both shuffling each epoch; neither
flips the digits (both examples' random horizontal flip would make them other shapes).
``--recipes shared``: the peers get ddpmkit's optimizer, warm-up, clip, EMA, batch and data
order, so that only the objective, the chain, the net and the sampler differ.

Every library uses ``--threads`` intra-op threads (default 1; OMP_NUM_THREADS is set to match)
and the load average is recorded before and after each phase: the machine may be shared.

    make bench-quality                                   # all three, 3 minutes each
    .venv-bench/bin/python benchmarks/time_to_quality.py --minutes 3 --threads 1
    python benchmarks/time_to_quality.py --minutes 0.02 --n 64 --bpd-limit 32 \\
        --out /tmp/ttq.json --workdir /tmp/ttq                # a smoke run, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ddpmkit.data import load_dataset
from ddpmkit.io import atomic_write_json
from ddpmkit.metrics.fd import FD_MIN_N, classify_digits, digits_fd_floor, frechet_distance
from ddpmkit.nets import count_parameters
from ddpmkit.train.ema import EMA

OUT = Path(__file__).resolve().parent / "results" / "time_to_quality.json"
LIBRARIES = ("ddpmkit", "denoising-diffusion-pytorch", "diffusers")
T = 1000
CHUNK = 512


def load_avg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def score(x: torch.Tensor) -> dict:
    """FD (bundled digits features) and the classifier's class counts of samples in [-1, 1]."""
    import numpy as np

    x = x.clamp(-1, 1)
    with warnings.catch_warnings():
        if x.shape[0] < FD_MIN_N:  # a smoke run: the number is not comparable, and is marked
            warnings.simplefilter("ignore")
        fd = frechet_distance(x)
    return {"n": int(x.shape[0]), "fd": fd, "fd_comparable": x.shape[0] >= FD_MIN_N,
            "class_counts": np.bincount(np.asarray(classify_digits(x)), minlength=10).tolist()}


# ---- ddpmkit ------------------------------------------------------------------------------
def run_ddpmkit(minutes: float, n: int, steps: int, seed: int, workdir: Path,
                bpd_limit: int | None) -> dict:
    """The demo recipe for ``minutes`` of training; ``ddpmkit sample``'s default sampler; the
    demo's test bits/dim (stratified)."""
    import shutil

    from ddpmkit.cli.sample import DEFAULT_SAMPLER
    from ddpmkit.demo import DemoConfig, train_config
    from ddpmkit.evaluate import eval_bpd
    from ddpmkit.generate import generate
    from ddpmkit.likelihood import ELBOEstimator
    from ddpmkit.train import load_denoiser, train

    d = dataclasses.replace(DemoConfig(), minutes=minutes, steps=None, seed=seed)
    cfg = dataclasses.replace(train_config(d), checkpoint_every=10**9)  # the demo's recipe
    run_dir = workdir / "ddpmkit_run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    load0 = load_avg()
    res = train(cfg, run_dir, progress=False)
    load1 = load_avg()
    loaded = load_denoiser(run_dir, verbose=False)
    tc = loaded.run.config
    t0 = time.perf_counter()
    x, meta = generate(loaded.denoiser, loaded.run.data["shape"], n, sampler=DEFAULT_SAMPLER,
                       steps=steps, clip="clip", seed=seed, chunk=CHUNK)
    sample_s = time.perf_counter() - t0
    bpd = eval_bpd(loaded, estimator=ELBOEstimator(method=d.bpd), seed=seed, limit=bpd_limit,
                   save_mmse=False)
    return {"name": "ddpmkit", "params": count_parameters(loaded.denoiser.net),
            "net": f"ddpmkit U-Net ch 32, mult (1,2,2), 1 res block, mid attention, Fourier "
                   f"features {tc.fourier_features}",
            "objective": f"{tc.parameterization} output, {tc.weighting} weighting, t ~ "
                         f"{tc.timesteps}, {tc.schedule} T={tc.T} (log-SNR {tc.logsnr_max:g} .. "
                         f"{tc.logsnr_min:g})",
            "recipe": f"ddpmkit demo: AdamW lr {tc.lr:g}, warm-up {tc.warmup_steps}, clip "
                      f"{tc.grad_clip:g}, EMA {tc.ema_decay:g}, batch {tc.batch_size}",
            "sampler": f"{DEFAULT_SAMPLER}, {meta['network_calls']} network calls, clip",
            "train_steps": res.step, "train_seconds": res.elapsed_s,
            "imgs_per_s": res.imgs_per_s, "sample_seconds": sample_s,
            "load_before_train": load0, "load_after_train": load1,
            "test_bpd": bpd["bpd"], "test_bpd_se": bpd["se_bpd"], "bpd_method": bpd["method"],
            "bpd_n": bpd["n"], "bpd_seconds": bpd["seconds"], **score(x)}


def ddpmkit_params() -> int:
    """The demo net's parameter count on the digits (without training it)."""
    from ddpmkit.demo import DemoConfig
    from ddpmkit.nets import build_net
    from ddpmkit.train import TrainConfig
    from ddpmkit.train.run import make_run

    d = DemoConfig()
    cfg = TrainConfig(data="digits", steps=1, net_overrides=dict(d.net_overrides))
    return count_parameters(build_net(make_run(cfg, load_dataset("digits")).net_config))


# ---- the peers' training loops --------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    """Optimizer, schedule, EMA, batch and data order of a training loop."""

    name: str
    optimizer: str  # "adamw" | "adam"
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    eps: float = 1e-8
    warmup: int = 0
    lr_schedule: str = "constant"  # "constant" | "cosine" (over `horizon` steps)
    horizon: int = 0
    clip: float = 1.0
    batch_size: int = 128
    ema: str = "ddpmkit"  # "ddpmkit" | "ema_pytorch" | "diffusers"
    ema_decay: float = 0.999
    ema_every: int = 1
    data_order: str = "ddpmkit"  # "ddpmkit" (BatchOrder) | "epochs" (a DataLoader's shuffle)


def shared_recipe() -> Recipe:
    """ddpmkit's demo optimizer, warm-up, clip, EMA, batch and data order."""
    from ddpmkit.demo import DemoConfig
    from ddpmkit.train import TrainConfig

    d, tc = DemoConfig(), TrainConfig(steps=1)
    return Recipe("ddpmkit's (shared)", "adamw", d.lr, warmup=tc.warmup_steps,
                  clip=tc.grad_clip, batch_size=d.batch_size, ema="ddpmkit",
                  ema_decay=d.ema_decay)


def ddpm_pytorch_recipe() -> Recipe:
    """denoising-diffusion-pytorch's Trainer defaults."""
    return Recipe("its Trainer's defaults", "adam", 1e-4, betas=(0.9, 0.99), clip=1.0,
                  batch_size=16, ema="ema_pytorch", ema_decay=0.995, ema_every=10,
                  data_order="epochs")


def diffusers_recipe(n_train: int) -> Recipe:
    """train_unconditional.py's defaults (100 epochs set the cosine schedule's length)."""
    return Recipe("train_unconditional.py's defaults", "adamw", 1e-4, betas=(0.95, 0.999),
                  weight_decay=1e-6, warmup=500, lr_schedule="cosine",
                  horizon=100 * math.ceil(n_train / 16), clip=1.0, batch_size=16,
                  ema="diffusers", ema_decay=0.9999, data_order="epochs")


def batches(n: int, r: Recipe, seed: int) -> Iterator[torch.Tensor]:
    """Index batches forever: ddpmkit's BatchOrder, or per-epoch shuffles with a short last
    batch (a DataLoader with shuffle=True)."""
    if r.data_order == "ddpmkit":
        from ddpmkit.train.trainer import BatchOrder

        order, k = BatchOrder(n, r.batch_size, seed), 0
        while True:
            yield order.indices(k)
            k += 1
    elif r.data_order == "epochs":
        g = torch.Generator().manual_seed(seed)
        while True:
            yield from torch.randperm(n, generator=g).split(r.batch_size)
    else:
        raise ValueError(f"unknown data order {r.data_order!r}; choose ddpmkit or epochs")


def lr_at(r: Recipe, step: int) -> float:
    """The learning rate of optimizer step ``step`` (0-based).

    ``constant``: ddpmkit's warm-up lr (step + 1) / warmup, then lr. ``cosine``: diffusers'
    ``get_scheduler("cosine")``: lr step / warmup, then lr (1 + cos(pi p)) / 2 with p the
    fraction of the horizon after the warm-up."""
    if r.lr_schedule == "constant":
        return r.lr * min(1.0, (step + 1) / r.warmup) if r.warmup else r.lr
    if r.lr_schedule == "cosine":
        if step < r.warmup:
            return r.lr * step / r.warmup
        p = min(1.0, (step - r.warmup) / max(1, r.horizon - r.warmup))
        return r.lr * 0.5 * (1.0 + math.cos(math.pi * p))
    raise ValueError(f"unknown lr schedule {r.lr_schedule!r}; choose constant or cosine")


class Averager:
    """The recipe's weight average behind one interface: update() after each step, model()."""

    def __init__(self, model: nn.Module, r: Recipe) -> None:
        self.kind, self.model_ = r.ema, model
        if r.ema == "ddpmkit":
            self.ema = EMA(model, r.ema_decay)
        elif r.ema == "ema_pytorch":
            from ema_pytorch import EMA as PeerEMA

            self.ema = PeerEMA(model, beta=r.ema_decay, update_every=r.ema_every)
        elif r.ema == "diffusers":
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(model.parameters(), decay=r.ema_decay, use_ema_warmup=True,
                                inv_gamma=1.0, power=3 / 4)
        else:
            raise ValueError(f"unknown EMA {r.ema!r}; choose ddpmkit, ema_pytorch or diffusers")

    def update(self) -> None:
        if self.kind == "ddpmkit":
            self.ema.update(self.model_)
        elif self.kind == "ema_pytorch":
            self.ema.update()
        else:
            self.ema.step(self.model_.parameters())

    def model(self) -> nn.Module:
        if self.kind == "ddpmkit":
            return self.ema.shadow.eval()
        if self.kind == "ema_pytorch":
            return self.ema.ema_model.eval()
        avg = copy.deepcopy(self.model_)
        self.ema.copy_to(avg.parameters())
        return avg.eval()


def train_for(model: nn.Module, loss_fn: Callable[[torch.Tensor], torch.Tensor],
              data: torch.Tensor, r: Recipe, seconds: float, seed: int) -> dict:
    """Train ``model`` on ``loss_fn(batch)`` for ``seconds`` of wall clock with recipe ``r``."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cls = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}[r.optimizer]
    opt = opt_cls(params, lr=r.lr, betas=r.betas, weight_decay=r.weight_decay, eps=r.eps)
    avg = Averager(model, r)
    it = batches(data.shape[0], r, seed)
    model.train()
    load0, t0, step, images = load_avg(), time.perf_counter(), 0, 0
    while time.perf_counter() - t0 < seconds:
        for g in opt.param_groups:
            g["lr"] = lr_at(r, step)
        idx = next(it)
        loss = loss_fn(data[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if r.clip > 0:
            torch.nn.utils.clip_grad_norm_(params, r.clip)
        opt.step()
        avg.update()
        step += 1
        images += idx.numel()
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"{r.name}: the loss diverged at step {step}")
    train_s = time.perf_counter() - t0
    return {"averaged": avg.model(), "train_steps": step, "train_seconds": train_s,
            "imgs_per_s": images / train_s, "load_before_train": load0,
            "load_after_train": load_avg(), "recipe": describe(r)}


def describe(r: Recipe) -> str:
    opt = (f"{'AdamW' if r.optimizer == 'adamw' else 'Adam'} lr {r.lr:g}, betas {r.betas}"
           + (f", wd {r.weight_decay:g}" if r.weight_decay else ""))
    if r.lr_schedule == "cosine":
        sched = f"cosine over {r.horizon} steps after {r.warmup} warm-up"
    else:
        sched = f"warm-up {r.warmup}" if r.warmup else "no warm-up"
    ema = {"ddpmkit": f"ddpmkit EMA {r.ema_decay:g}",
           "ema_pytorch": f"ema_pytorch {r.ema_decay:g} every {r.ema_every}",
           "diffusers": f"EMAModel warm-up, max {r.ema_decay:g}"}[r.ema]
    return f"{r.name}: {opt}, {sched}, clip {r.clip:g}, {ema}, batch {r.batch_size}"


# ---- denoising-diffusion-pytorch ----------------------------------------------------------
def peer_unet(target_params: int):
    """denoising-diffusion-pytorch's Unet on 8x8 digits with the parameter count nearest ours."""
    from denoising_diffusion_pytorch import Unet

    best = None
    for dim in range(8, 129, 4):
        p = count_parameters(Unet(dim=dim, dim_mults=(1, 2, 2), channels=1))
        if best is None or abs(p - target_params) < abs(best[1] - target_params):
            best = (dim, p)
        if p > target_params:
            break
    assert best is not None
    return Unet(dim=best[0], dim_mults=(1, 2, 2), channels=1), best[0]


def run_ddpm_pytorch(minutes: float, n: int, steps: int, seed: int, target_params: int,
                     recipe: Recipe) -> dict:
    """GaussianDiffusion + Unet with their defaults for ``minutes``; its DDIM sampler."""
    from denoising_diffusion_pytorch import GaussianDiffusion

    torch.manual_seed(seed)
    unet, dim = peer_unet(target_params)
    diffusion = GaussianDiffusion(unet, image_size=8, timesteps=T, sampling_timesteps=steps)
    data = load_dataset("digits").train.add(1).div(2)  # its inputs are in [0, 1]
    tr = train_for(diffusion, diffusion, data, recipe, minutes * 60.0, seed)
    model = tr.pop("averaged")
    torch.manual_seed(seed)
    t1 = time.perf_counter()
    with torch.inference_mode(), contextlib.redirect_stderr(io.StringIO()):  # its tqdm bar
        parts = [model.sample(batch_size=min(CHUNK, n - i)) for i in range(0, n, CHUNK)]
    sample_s = time.perf_counter() - t1
    x = torch.cat(parts).float().mul(2).sub(1)  # back to [-1, 1]
    return {"name": "denoising-diffusion-pytorch", "params": count_parameters(unet),
            "net": f"Unet(dim={dim}, dim_mults=(1, 2, 2), channels=1)",
            "objective": "its defaults: pred_v, no loss weighting, sigmoid T=1000",
            "sampler": f"DDIM eta 0, {steps} network calls, x0 clipped",
            "sample_seconds": sample_s, **tr, **score(x)}


# ---- diffusers ----------------------------------------------------------------------------
def diffusers_unet(seed: int):
    """UNet2DModel with the layout of ddpmkit's demo net (blocks, widths, attention), its own
    defaults for everything else (time embedding, no input features)."""
    from diffusers import UNet2DModel

    from ddpmkit.demo import DemoConfig
    from ddpmkit.nets import preset

    cfg = preset("digits", **dict(DemoConfig().net_overrides))
    levels = range(len(cfg.ch_mult))
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1,
        block_out_channels=tuple(cfg.ch * m for m in cfg.ch_mult),
        layers_per_block=cfg.num_res_blocks,
        down_block_types=tuple("AttnDownBlock2D" if i in cfg.attn_levels else "DownBlock2D"
                               for i in levels),
        up_block_types=tuple("AttnUpBlock2D" if i in cfg.attn_levels else "UpBlock2D"
                             for i in reversed(levels)),
        attention_head_dim=None, norm_num_groups=cfg.norm_groups, add_attention=cfg.mid_attn)


def run_diffusers(minutes: float, n: int, steps: int, seed: int, recipe: Recipe) -> dict:
    """train_unconditional.py's objective for ``minutes``; DPM-Solver++(2M) with 20 calls."""
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

    unet = diffusers_unet(seed)
    sched = DDPMScheduler(num_train_timesteps=T)
    data = load_dataset("digits").train  # [-1, 1], as its Normalize([0.5], [0.5]) gives
    g = torch.Generator().manual_seed(seed + 1)

    def loss_fn(clean: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(clean.shape, generator=g)
        k = torch.randint(0, T, (clean.shape[0],), generator=g)
        pred = unet(sched.add_noise(clean, noise, k), k).sample
        return F.mse_loss(pred.float(), noise.float())

    tr = train_for(unet, loss_fn, data, recipe, minutes * 60.0, seed)
    model = tr.pop("averaged")
    solver = DPMSolverMultistepScheduler.from_config(sched.config)
    t1 = time.perf_counter()
    parts = []
    with torch.inference_mode():
        for i in range(0, n, CHUNK):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
            x = torch.randn(min(CHUNK, n - i), 1, 8, 8, generator=gen)
            solver.set_timesteps(steps)
            for k in solver.timesteps:
                x = solver.step(model(x, k).sample, k, x).prev_sample
            parts.append(x)
    sample_s = time.perf_counter() - t1
    return {"name": "diffusers", "params": count_parameters(unet),
            "net": "UNet2DModel, ddpmkit's demo layout (no Fourier features)",
            "objective": "train_unconditional.py: epsilon MSE, t uniform, linear betas T=1000",
            "sampler": f"DPMSolverMultistepScheduler (DPM-Solver++ 2M), {steps} network calls",
            "sample_seconds": sample_s, **tr, **score(torch.cat(parts))}


# ---- the run ------------------------------------------------------------------------------
def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("ddpmkit", "denoising-diffusion-pytorch", "diffusers", "ema-pytorch"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def markdown(res: dict) -> str:
    rows = [f"| | params | recipe | train steps | img/s | FD ({res['n']} samples) | "
            "test bits/dim | sample s | load avg (1 min) before / after training |",
            "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in res["runs"]:
        fd = f"**{r['fd']:.2f}**" if r["name"] == res["winner"] else f"{r['fd']:.2f}"
        bpd = (f"{r['test_bpd']:.3f} ± {r['test_bpd_se']:.3f}" if "test_bpd" in r else "")
        rows.append(f"| {r['name']} | {r['params'] / 1e6:.2f} M | {r['recipe']} | "
                    f"{r['train_steps']} | {r['imgs_per_s']:.0f} | {fd} | {bpd} | "
                    f"{r['sample_seconds']:.0f} | {r['load_before_train'][0]} / "
                    f"{r['load_after_train'][0]} |")
    rows.append(f"| real data (test vs train) | | | | | {res['fd_floor']:.2f} | | | |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=3.0,
                   help="training budget per library (a smoke run: 0.02)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads for all")
    p.add_argument("--n", type=int, default=1797, help="samples per library (FD: 1797)")
    p.add_argument("--steps", type=int, default=20, help="sampler network calls")
    p.add_argument("--bpd-limit", type=int, default=None,
                   help="ddpmkit's bits/dim on the first N test images (default all 450)")
    p.add_argument("--libraries", nargs="+", choices=LIBRARIES, default=list(LIBRARIES))
    p.add_argument("--recipes", choices=("own", "shared"), default="own",
                   help="own: each peer's own optimizer/EMA/batch defaults; shared: ddpmkit's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--workdir", default="runs/time_to_quality")
    args = p.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"time to quality: {args.minutes:g} min each, {args.threads} thread(s), "
          f"load {load_avg()}, {args.recipes} recipes", flush=True)
    n_train = load_dataset("digits").train.shape[0]
    runs: list[dict] = []
    ours_params = None
    for lib in args.libraries:
        if lib == "ddpmkit":
            r = run_ddpmkit(args.minutes, args.n, args.steps, args.seed, workdir,
                            args.bpd_limit)
            ours_params = r["params"]
        elif lib == "denoising-diffusion-pytorch":
            if ours_params is None:  # its size is matched to ours
                ours_params = ddpmkit_params()
            rec = shared_recipe() if args.recipes == "shared" else ddpm_pytorch_recipe()
            r = run_ddpm_pytorch(args.minutes, args.n, args.steps, args.seed, ours_params, rec)
        elif lib == "diffusers":
            rec = shared_recipe() if args.recipes == "shared" else diffusers_recipe(n_train)
            r = run_diffusers(args.minutes, args.n, args.steps, args.seed, rec)
        else:
            raise ValueError(f"unknown library {lib!r}; choose from {', '.join(LIBRARIES)}")
        runs.append(r)
        extra = f", test {r['test_bpd']:.3f} bits/dim" if "test_bpd" in r else ""
        print(f"{lib}: {r['train_steps']} steps, FD {r['fd']:.3f}{extra}", flush=True)
    res = {"minutes": args.minutes, "threads": args.threads, "n": args.n,
           "sampler_steps": args.steps, "seed": args.seed, "recipes": args.recipes,
           "fd_floor": digits_fd_floor(), "cpu_count": os.cpu_count(),
           "machine": platform.machine(),
           "command": "python benchmarks/time_to_quality.py " + " ".join(sys.argv[1:]),
           "versions": versions(), "runs": runs,
           "recipe_settings": {"shared": asdict(shared_recipe()),
                               "denoising-diffusion-pytorch": asdict(ddpm_pytorch_recipe()),
                               "diffusers": asdict(diffusers_recipe(n_train))},
           "winner": min(runs, key=lambda r: r["fd"])["name"]}
    atomic_write_json(args.out, res)
    print(markdown(res))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
