"""`ddpmkit demo`: train a denoiser on the bundled digits, sample, measure, and show it.

Writes into the demo directory (default runs/demo): the run itself (config.json, log.jsonl,
checkpoints/), samples.png, trajectory.png, loss_by_t.png, metrics.json and report.html.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import InputError
from .io import atomic_write_json

MARKER = ".ddpmkit-demo"
#: ancestral steps of the trajectory picture (a respaced reverse process: 8 chains, 100 calls)
TRAJECTORY_STEPS = 100


@dataclass(frozen=True)
class DemoConfig:
    """The demo's recipe (chosen by the experiments in docs/likelihood.md and docs/weightings.md):
    the lecture's ELBO weights C_t on a v-output denoiser with the library's defaults (log-SNR
    -linear chain with end points from the bin width, t drawn by the weight on the raw output,
    Fourier features); one model for both the bound and the samples."""

    out: str = "runs/demo"
    steps: int | None = 900  # a step budget: the same model on every machine
    minutes: float | None = None
    batch_size: int = 128
    lr: float = 2e-3  # 1000 steps: 1.81-1.86 bits/dim over 3 seeds, against 1.87-1.92 at 1e-3
    weighting: str = "elbo"
    ema_decay: float = 0.999
    t_uniform_mix: float = 0.3  # uniform t mixed into the proposal: high-noise steps get trained
    net_overrides: tuple[tuple[str, Any], ...] = (("num_res_blocks", 1),)
    sampler: str = "dpmpp2m_sde"  # FD 3.5-4.8 where UniPC 10 gives 8.3 (docs/samplers.md)
    sample_steps: int = 20
    n: int = 1797
    bpd: str = "stratified"
    seed: int = 0


def prepare_out(out: Path) -> None:
    """The demo owns its directory: it replaces an earlier demo run, nothing else."""
    if out.exists():
        if not (out / MARKER).is_file():
            raise InputError(f"{out} exists and is not a demo directory; choose another --out")
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)


def train_config(cfg: DemoConfig):
    """The demo's TrainConfig: the library's defaults with the demo's budget and optimizer."""
    from .train import TrainConfig

    budget = {"minutes": cfg.minutes} if cfg.minutes is not None else {"steps": cfg.steps}
    return TrainConfig(data="digits", **budget, batch_size=cfg.batch_size, lr=cfg.lr,
                       weighting=cfg.weighting, ema_decay=cfg.ema_decay,
                       t_uniform_mix=cfg.t_uniform_mix,
                       net_overrides=dict(cfg.net_overrides), checkpoint_every=1000,
                       sample_every=0, seed=cfg.seed)


def run_demo(cfg: DemoConfig, *, device: str = "cpu", progress: bool = True,
             say=print) -> dict[str, Any]:
    from .evaluate import eval_bpd, eval_samples
    from .figures import loss_by_t_png, preview, samples_png, save
    from .likelihood import ELBOEstimator
    from .losses import loss_weights
    from .train import load_denoiser, read_log, train

    t_start = time.perf_counter()
    out = Path(cfg.out)
    prepare_out(out)
    tcfg = train_config(cfg)
    what = f"{cfg.minutes:g} min" if cfg.minutes is not None else f"{cfg.steps} steps"
    say(f"[1/4] training a denoiser on the digits for {what} ({tcfg.weighting} weighting, "
        f"{tcfg.parameterization} output, t ~ {tcfg.timesteps}, {tcfg.schedule} T={tcfg.T})")
    res = train(tcfg, out, progress=progress, device=device)
    (out / MARKER).write_text("made by ddpmkit demo; the next demo replaces this folder\n")
    loaded = load_denoiser(out, device=device, verbose=False)

    say(f"[2/4] sampling {cfg.n} digits ({cfg.sampler}, {cfg.sample_steps} network calls)")
    quality, samples = eval_samples(loaded, n=cfg.n, sampler=cfg.sampler,
                                    steps=cfg.sample_steps, seed=cfg.seed, device=device,
                                    progress=progress)
    save(samples_png(samples[:100]), out / "samples.png")
    t_traj = time.perf_counter()
    traj = preview(loaded.denoiser, "image", loaded.run.data["shape"], n=8, seed=cfg.seed + 1,
                   steps=TRAJECTORY_STEPS, device=device, trajectory=True).trajectory
    save(traj, out / "trajectory.png")
    trajectory_s = time.perf_counter() - t_traj

    T = loaded.denoiser.T
    say(f"[3/4] test-split bits/dim ({cfg.bpd}, all T = {T} terms)" if cfg.bpd == "exact"
        else f"[3/4] test-split bits/dim ({cfg.bpd})")
    bpd = eval_bpd(loaded, estimator=ELBOEstimator(method=cfg.bpd), device=device,
                   progress=progress, seed=cfg.seed)
    records = read_log(out)
    C_t = loss_weights(loaded.denoiser.schedule, "elbo")
    save(loss_by_t_png(records, bpd.get("by_t_bpd"), C_t.tolist()), out / "loss_by_t.png")

    metrics = demo_metrics(cfg, res, quality, bpd, trajectory_s, device)
    atomic_write_json(out / "metrics.json", metrics)
    say("[4/4] writing the report")
    from .report import write_report

    write_report(out)
    # the split adds up: what is not training, sampling or the bound is setup, scoring and
    # pictures (the trajectory's own sampling among them)
    metrics["total_seconds"] = time.perf_counter() - t_start
    metrics["other_seconds"] = metrics["total_seconds"] - (
        metrics["train_seconds"] + metrics["sample_seconds"] + metrics["bpd_seconds"])
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def demo_metrics(cfg: DemoConfig, res, quality: dict[str, Any], bpd: dict[str, Any],
                 trajectory_s: float, device: str) -> dict[str, Any]:
    """metrics.json: the bound with its terms, the FD, the times, the model and the recipe."""
    return {
        "test_bpd": bpd["bpd"], "test_bpd_se": bpd["se_bpd"], "bpd_method": bpd["method"],
        "bpd_terms": bpd["terms_bpd"], "rate_bpd": bpd["rate_bpd"],
        "distortion_bpd": bpd["distortion_bpd"], "bpd_seconds": bpd["seconds"],
        "fd": quality["fd"], "fd_floor": quality["fd_floor"], "fd_ratio": quality["fd_ratio"],
        "class_counts": quality["class_counts"], "n_samples": cfg.n, "sampler": cfg.sampler,
        "sample_steps": cfg.sample_steps, "sample_seconds": quality["sample_seconds"],
        "train_seconds": res.elapsed_s, "train_steps": res.step,
        "train_imgs_per_s": res.imgs_per_s, "checkpoint": quality["checkpoint"],
        "model_sha256": quality["model_sha256"], "ema": True, "seed": cfg.seed,
        "trajectory_seconds": trajectory_s,
        "torch_threads": torch.get_num_threads(), "device": device,
        "demo_config": {k: (dict(v) if k == "net_overrides" else v)
                        for k, v in cfg.__dict__.items()},
    }


def summary_lines(m: dict[str, Any], out: str) -> list[str]:
    return [
        f"trained {m['train_steps']} steps in {m['train_seconds']:.0f} s "
        f"({m['train_imgs_per_s']:.0f} img/s)",
        f"test bits/dim: {m['test_bpd']:.3f} +- {m['test_bpd_se']:.3f} ({m['bpd_method']}; "
        f"rate {m['rate_bpd']:.3f} + distortion {m['distortion_bpd']:.3f})",
        f"FD of {m['n_samples']} samples: {m['fd']:.2f} (real data: {m['fd_floor']:.2f}; "
        f"ratio {m['fd_ratio']:.2f}) with {m['sampler']} in {m['sample_steps']} steps",
        f"samples per class: {m['class_counts']}",
        f"pictures: {out}/samples.png, {out}/trajectory.png, {out}/loss_by_t.png",
        f"time: train {m['train_seconds']:.0f} s + sample {m['sample_seconds']:.0f} s + "
        f"bits/dim {m['bpd_seconds']:.0f} s + setup, scoring, pictures and report "
        f"{m['other_seconds']:.0f} s = {m['total_seconds']:.0f} s",
    ]

