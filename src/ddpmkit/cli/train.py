"""`ddpmkit train`: train a denoiser on digits, a 2-D toy, an image folder or an array file."""

from __future__ import annotations

import argparse

from ..errors import InputError
from ._common import add_common, emit_json, formatter, nonneg_int, positive_float, positive_int

EXAMPLES = """examples:
  ddpmkit train --data digits --out runs/digits --minutes 3
  ddpmkit train --data ./my_pngs --image-size 32 --out runs/mine --steps 20000 --batch-size 64
  ddpmkit train --data ./cifar_pngs --preset cifar10 --conv3x3 winograd --out runs/c10 \\
      --steps 800000                             # on CPU: Winograd 3x3 convs, ~1.35x faster
  ddpmkit train --data ring --out runs/ring --steps 6000 --batch-size 256 --lr 2e-3
  ddpmkit train --out runs/digits --resume        # continue exactly where it stopped

SIGTERM or SIGINT (Ctrl-C) stop after the step in flight: its checkpoint is written, log.jsonl
says why, and the exit code is 143 (SIGTERM) or 130 (SIGINT); --resume then ends bit for bit
where an uninterrupted run would. A second signal aborts at once (no half checkpoint). One
trainer per run directory: a second one exits 2 naming the first (docs/reliability.md).
  torchrun --nproc_per_node=2 -m ddpmkit train --data digits --out runs/ddp --steps 2000
  torchrun --nproc_per_node=2 -m ddpmkit train --out runs/ddp --resume   # docs/distributed.md
"""


def add_parser(sub) -> None:
    from ..diffusion import PARAMETERIZATIONS
    from ..losses import TIMESTEP_SAMPLINGS, WEIGHTINGS
    from ..nets import PRESETS
    from ..schedules import SCHEDULE_NAMES

    p = sub.add_parser(
        "train", formatter_class=formatter, help="train a denoiser (writes a run directory)",
        description="Train x0_hat(x_t, t) with the weighted x0-regression (the ELBO's "
                    "consistency terms are C_t ||x0_hat - x0||^2). Writes config.json, "
                    "log.jsonl, checkpoints/ and samples/ into --out. An existing --out is "
                    "refused unless --resume, which continues from its newest valid "
                    "checkpoint and ends exactly where an uninterrupted run would.",
        epilog=EXAMPLES,
    )
    p.add_argument("--data", help="digits | ring | moons | swissroll | mnist | DIR | FILE.npz "
                                  "(default: from the run's config.json with --resume, "
                                  "else digits)")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory")
    p.add_argument("--image-size", type=positive_int, help="resize + centre-crop images")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=positive_int, help="optimizer steps")
    budget.add_argument("--minutes", type=positive_float, help="wall-clock budget")
    p.add_argument("--batch-size", type=positive_int, help="global batch (default 128)")
    p.add_argument("--loss", choices=WEIGHTINGS, help="loss weighting on the x0-MSE "
                   "(default elbo: the lecture's C_t, the bound itself; min_snr for the best "
                   "samples at a worse bound, docs/weightings.md)")
    p.add_argument("--gamma", type=positive_float, help="gamma of min_snr (default 5)")
    p.add_argument("--param", choices=PARAMETERIZATIONS,
                   help="what the network outputs; x0_hat is computed from it exactly "
                        "(default v; x0 = the raw output, which loses the ELBO at small t)")
    p.add_argument("--sigma-data", type=positive_float,
                   help="data std for --param edm (default: measured on the training split)")
    p.add_argument("--timesteps", choices=TIMESTEP_SAMPLINGS,
                   help="how t is drawn, with importance weights 1/(T q(t)) that keep the loss "
                        "unbiased: weight (q ~ the loss weight on the net's raw output, so every "
                        "draw's raw error counts the same; default), logsnr (q ~ the log-SNR "
                        "step), uniform, or importance (iDDPM's loss-second-moment sampler)")
    p.add_argument("--t-uniform-mix", type=float, metavar="M",
                   help="share of uniform t mixed into the weight/logsnr proposal (default 0; "
                        "the demo uses 0.3: better samples at the same bound)")
    p.add_argument("--stratified-t", action=argparse.BooleanOptionalAction, default=None,
                   help="one t per 1/B of q's mass within each batch (default on)")
    p.add_argument("--fourier-features", metavar="auto|none|F1,F2",
                   help="U-Net input features sin/cos(2 pi f x) (VDM): auto = f = 1/bin and "
                        "2/bin for images on K levels (8,16 for the digits), none, or a list")
    p.add_argument("--schedule", choices=SCHEDULE_NAMES,
                   help="noise schedule shape (default logsnr_linear)")
    p.add_argument("--logsnr-max", type=logsnr_value, metavar="L|auto|native",
                   help="log snr_1, the smallest noise (default auto: 2 ln(3/bin) for data on K "
                        "levels, bin = 2/(K-1): 6.36 for the digits, 11.9 for 8-bit; 10 for "
                        "continuous data); native = the shape's own ends (both flags)")
    p.add_argument("--logsnr-min", type=logsnr_value, metavar="L|auto|native",
                   help="log snr_T, the largest noise (default auto: -9, prior term < 1e-4 "
                        "bits/dim)")
    p.add_argument("--T", type=positive_int, help="diffusion steps (default 1000)")
    p.add_argument("--preset", choices=PRESETS, help="network preset (default from the data)")
    p.add_argument("--lr", type=positive_float, help="peak learning rate (default 1e-3)")
    p.add_argument("--lr-schedule", choices=("constant", "cosine"))
    p.add_argument("--warmup-steps", type=nonneg_int)
    p.add_argument("--ema-decay", type=float)
    p.add_argument("--grad-clip", type=float)
    p.add_argument("--checkpoint-every", type=positive_int, help="steps between checkpoints")
    p.add_argument("--sample-every", type=nonneg_int, help="steps between sample grids (0 = off)")
    p.add_argument("--log-every", type=positive_int)
    p.add_argument("--bf16", action="store_true", default=None, help="bf16 autocast")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the net")
    p.add_argument("--conv3x3", choices=("direct", "winograd"),
                   help="U-Net 3x3 convs: direct (default) or winograd (F(4x4,3x3) on CPU, "
                        "fp32, where measured faster: >= 128 channels on maps >= 8x8)")
    p.add_argument("--nonfinite", choices=("stop", "skip"),
                   help="on a NaN/Inf loss or gradient: stop (default) or skip the step")
    p.add_argument("--conditional", action="store_true", default=None,
                   help="class-conditional denoiser x0_hat(x_t, t, y) on the data's labels "
                        "(digits, mnist, image subfolders, .npz labels); sample a class with "
                        "'ddpmkit sample RUN --class K [--guidance w]'")
    p.add_argument("--cond-drop", type=float, metavar="P",
                   help="with --conditional: probability that a label is dropped to 'no "
                        "class' in training, for classifier-free guidance (default 0.1)")
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR")
    p.add_argument("--allow-world-change", action="store_true",
                   help="with --resume: accept a checkpoint written by another number of "
                        "processes (continues equal only to float rounding, not bit-exact)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common(p)
    p.set_defaults(func=run)


FLAG_TO_FIELD = {
    "data": "data", "image_size": "image_size", "steps": "steps", "minutes": "minutes",
    "batch_size": "batch_size", "loss": "weighting", "gamma": "gamma",
    "param": "parameterization", "timesteps": "timesteps", "schedule": "schedule", "T": "T",
    "sigma_data": "sigma_data", "stratified_t": "t_stratified", "logsnr_max": "logsnr_max",
    "logsnr_min": "logsnr_min", "fourier_features": "fourier_features",
    "conditional": "conditional", "cond_drop": "cond_drop", "t_uniform_mix": "t_uniform_mix",
    "preset": "preset", "lr": "lr", "lr_schedule": "lr_schedule",
    "warmup_steps": "warmup_steps", "ema_decay": "ema_decay", "grad_clip": "grad_clip",
    "checkpoint_every": "checkpoint_every", "sample_every": "sample_every",
    "log_every": "log_every", "bf16": "bf16", "compile": "compile", "nonfinite": "nonfinite",
}


def logsnr_value(text: str) -> float | str:
    """A --logsnr-max/--logsnr-min value: a number, "auto", or "native" (kept as "native")."""
    if text in ("auto", "native"):
        return text
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number, auto or native; got {text!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number; got {text!r}")
    return v


def config_from_args(args: argparse.Namespace):
    """A TrainConfig from the flags given; with --resume, the run's config.json is the base."""
    from pathlib import Path

    from ..train import TrainConfig, read_run

    given = {f: getattr(args, a) for a, f in FLAG_TO_FIELD.items() if getattr(args, a) is not None}
    for end in ("logsnr_max", "logsnr_min"):  # "native" = the shape's own end points (None)
        if given.get(end) == "native":
            given[end] = None
    if args.conv3x3 is not None:  # a net option: goes to the net config via net_overrides
        given["net_overrides"] = {"conv3x3": args.conv3x3}
    if args.resume and (Path(args.out) / "config.json").is_file():
        base = read_run(args.out).config
        changed = sorted(k for k, v in given.items() if getattr(base, k) != v and k != "seed")
        if changed:
            flag = {f: a for a, f in FLAG_TO_FIELD.items()} | {"net_overrides": "conv3x3"}
            names = ", ".join("--" + flag.get(c, c).replace("_", "-") for c in changed)
            raise InputError(f"--resume continues {args.out} with its own settings; drop "
                             f"{names} or train into a new --out")
        return base
    if "steps" not in given and "minutes" not in given:
        raise InputError("give a budget: --steps N or --minutes M")
    given.setdefault("data", "digits")
    return TrainConfig(seed=args.seed, **given)


def run(args) -> int:
    import signal
    import sys

    from ..distributed import init_from_env
    from ..train import train
    from ..train.signals import StopRequested

    cfg = config_from_args(args)
    dist, device = init_from_env(args.device)
    try:
        res = train(cfg, args.out, resume=args.resume, device=device,
                    progress=not args.no_progress and not args.json, dist=dist,
                    allow_world_change=args.allow_world_change)
    except StopRequested as e:  # SIGTERM/SIGINT: the checkpoint of that step is written
        if dist.is_main:
            if args.json:
                emit_json({"run_dir": str(args.out), "stopped": True, "step": e.step,
                           "signal": signal.Signals(e.signum).name, "exit_code": e.exit_code})
            print(f"ddpmkit train: stopped by {signal.Signals(e.signum).name} after step "
                  f"{e.step}; its checkpoint is written; continue with 'ddpmkit train --out "
                  f"{args.out} --resume'", file=sys.stderr, flush=True)
        return e.exit_code
    finally:
        dist.close()
    if not dist.is_main:
        return 0
    out = {"run_dir": str(res.run_dir), "step": res.step, "elapsed_s": res.elapsed_s,
           "imgs_per_s": res.imgs_per_s, "last_loss": res.last_loss,
           "checkpoint": str(res.checkpoint) if res.checkpoint else None,
           "device": str(device), "world_size": dist.world, "backend": dist.backend,
           "threads": args.threads}
    if args.json:
        emit_json(out)
    else:
        where = f" on {device}" + (f", {dist.world} processes ({dist.backend})"
                                   if dist.world > 1 else "")
        print(f"trained {res.step} steps in {res.elapsed_s:.0f} s ({res.imgs_per_s:.0f} img/s)"
              f"{where}; checkpoint {res.checkpoint}")
        print(f"next: ddpmkit sample {res.run_dir} --out {res.run_dir}/samples.png")
    return 0
