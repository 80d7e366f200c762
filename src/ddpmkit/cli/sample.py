"""`ddpmkit sample`: draw samples from a trained run with any sampler."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ._common import add_common, emit_json, formatter, positive_int

EXAMPLES = """examples:
  ddpmkit sample runs/digits --out samples.png --n 64         # DPM-Solver++ 2M SDE, 20 calls
  ddpmkit sample runs/digits --n 1797 --out samples.npz
  ddpmkit sample runs/digits --sampler ancestral --out s.npz   # Ho's reverse process, all T
  ddpmkit sample runs/digits/checkpoints/step_0002000 --sampler dpmpp2m --steps 10 --out s.npz
  torchrun --nproc_per_node=2 -m ddpmkit sample runs/digits --num-samples 4096 --out s.npz
  ddpmkit sample runs/cond --class 7 --n 64 --out sevens.png           # a --conditional run
  ddpmkit sample runs/cond --classes 0,1,2,3,4,5,6,7,8,9 --n 100 --guidance 2 --out grid.png
"""


#: the default sampler and its network calls (docs/samplers.md, "Trained denoisers")
DEFAULT_SAMPLER, DEFAULT_STEPS = "dpmpp2m_sde", 20


def add_parser(sub) -> None:
    from ..samplers import CLIP_POLICIES, SAMPLER_NAMES, SAMPLER_SPACINGS

    p = sub.add_parser(
        "sample", formatter_class=formatter, help="sample from a trained run",
        description="Run the reverse process with the run's (EMA) denoiser. .npz output holds "
                    "'images' (N, C, H, W) float32 in [-1, 1] (or 'samples' (N, d) for vector "
                    "data) and 'meta' (a JSON string of the settings); .png is a grid.",
        epilog=EXAMPLES,
    )
    p.add_argument("path", metavar="RUN_DIR|CKPT", help="run directory or checkpoint folder")
    p.add_argument("--sampler", choices=SAMPLER_NAMES, default=DEFAULT_SAMPLER,
                   help=f"default {DEFAULT_SAMPLER} (DPM-Solver++ 2M SDE): on the ELBO-trained "
                        "demo model it matches 1000-step ancestral's FD at 20 calls, where the "
                        "ODE solvers (unipc, dpmpp2m) are 1.6x worse (docs/samplers.md)")
    p.add_argument("--steps", type=positive_int,
                   help=f"network calls (default {DEFAULT_STEPS}; all T for ancestral)")
    p.add_argument("--spacing", choices=SAMPLER_SPACINGS, default="uniform",
                   help="step spacing (default uniform; docs/samplers.md: logsnr_clipped suits "
                        "10-call runs on low-dim data; uniform or logsnr for images)")
    p.add_argument("--clip", choices=CLIP_POLICIES, default=None,
                   help="x0_hat policy (default: clip for images, none for vectors)")
    # --num-samples: torchrun's own parser rejects "--n" as an ambiguous prefix of its options
    p.add_argument("--n", "--num-samples", dest="n", type=positive_int, default=64,
                   help="number of samples (default 64; write --num-samples under torchrun)")
    p.add_argument("--batch-size", type=positive_int, default=256,
                   help="samples per chunk (default 256)")
    cls = p.add_mutually_exclusive_group()
    cls.add_argument("--class", dest="cls", type=int, metavar="K",
                     help="a class-conditional run: every sample of class K")
    cls.add_argument("--classes", metavar="K1,K2,...",
                     help="a class-conditional run: n/len samples of each class, in this order "
                          "(a .png shows one class per row when n/len is the row length); "
                          "default for conditional runs: all classes")
    p.add_argument("--guidance", type=float, default=0.0, metavar="W",
                   help="classifier-free guidance w >= 0: x0 = x0(y) + w (x0(y) - x0(none)) "
                        "(default 0: the model of p(x | y), whose bound the likelihood uses)")
    p.add_argument("--out", required=True, metavar="F.npz|F.png")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    p.add_argument("--no-progress", action="store_true")
    add_common(p)
    p.set_defaults(func=run)


def sample_labels(args, loaded):
    """The class of each of the n samples (None for an unconditional run without --class)."""
    import torch

    k = int(loaded.run.data.get("num_classes", 0) or 0)
    if args.cls is None and args.classes is None:
        if not k:
            if args.guidance:
                raise InputError("--guidance needs a class-conditional run (train with "
                                 "--conditional) and a --class or --classes")
            return None
        classes = list(range(k))
    elif not k:
        raise InputError(f"{loaded.run_dir} is unconditional: it cannot draw a class; train one "
                         "with 'ddpmkit train --conditional'")
    elif args.cls is not None:
        classes = [args.cls]
    else:
        try:
            classes = [int(c) for c in args.classes.split(",")]
        except ValueError:
            raise InputError(f"--classes {args.classes!r} must be class numbers like 0,3,7") \
                from None
    bad = [c for c in classes if not 0 <= c < k]
    if bad:
        names = loaded.run.data.get("class_names") or []
        raise InputError(f"class {bad[0]} is not one of this run's {k} classes 0..{k - 1}"
                         + (f" ({', '.join(names[:10])})" if names else ""))
    if not args.guidance >= 0:
        raise InputError(f"--guidance must be >= 0; got {args.guidance}")
    per = -(-args.n // len(classes))
    return torch.tensor(classes).repeat_interleave(per)[:args.n]


def run(args) -> int:
    import json

    import numpy as np

    from ..distributed import generate_sharded, init_from_env
    from ..figures import samples_png, save
    from ..io import atomic_write_npz
    from ..train import load_denoiser

    out = Path(args.out)
    if out.suffix not in (".npz", ".png"):
        raise InputError(f"--out {out} must end in .npz or .png")
    if not out.parent.exists() and str(out.parent):
        raise InputError(f"cannot write {out}: folder {out.parent} does not exist")
    dist, device = init_from_env(args.device)
    try:
        loaded = load_denoiser(args.path, ema=not args.no_ema, device=device,
                               verbose=dist.is_main)
        kind = loaded.run.data["kind"]
        clip = args.clip or ("clip" if kind == "image" else "none")
        if args.steps is None and args.sampler != "ancestral":
            args.steps = min(DEFAULT_STEPS, loaded.denoiser.T)
        if args.steps and args.steps > loaded.denoiser.T:
            raise InputError(f"--steps {args.steps} exceeds the model's T = {loaded.denoiser.T}")
        labels = sample_labels(args, loaded)
        x, meta = generate_sharded(
            loaded.denoiser, loaded.run.data["shape"], args.n, dist, sampler=args.sampler,
            steps=args.steps, spacing=args.spacing, clip=clip, seed=args.seed,
            chunk=args.batch_size, device=device,
            progress=not args.no_progress and not args.json, labels=labels,
            guidance=args.guidance)
    finally:
        dist.close()
    if not dist.is_main:
        return 0
    meta |= {"checkpoint": str(loaded.checkpoint), "step": loaded.step, "ema": loaded.ema,
             "model_sha256": loaded.model_sha256, "clip": clip}
    if out.suffix == ".npz":
        key = "images" if kind == "image" else "samples"
        arr = x.clamp(-1, 1) if kind == "image" else x
        arrays = {key: arr.numpy().astype(np.float32), "meta": np.array(json.dumps(meta))}
        if labels is not None:
            arrays["labels"] = labels.numpy()
        atomic_write_npz(out, arrays)
    else:
        save(samples_png(x, kind=kind), out)
    result = {"out": str(out), "n": int(x.shape[0]), **meta}
    if args.json:
        emit_json(result)
    else:
        print(f"wrote {x.shape[0]} samples to {out} ({args.sampler}, "
              f"{meta.get('network_calls', '?')} network calls, step {loaded.step})")
    return 0
