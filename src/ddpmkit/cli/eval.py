"""`ddpmkit eval`: bits/dim on a split (exact or stratified) and sample quality (FD, sliced W2)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from ._common import add_common, emit_json, formatter, on_main, positive_int

EXAMPLES = """examples:
  ddpmkit eval runs/demo --bpd exact                # all T terms: matches the demo's metrics.json
  ddpmkit eval runs/demo --bpd stratified --json    # 50 strata x 1 draw: ~20x fewer calls
  ddpmkit eval runs/demo --fd --n 1797 --sampler unipc --steps 10
  ddpmkit eval runs/ring --sw2                      # sliced W2 for a 2-D toy
  ddpmkit eval runs/mnist --bpd stratified --strata 20 --batch-size 500
  torchrun --nproc_per_node=2 -m ddpmkit eval runs/demo --bpd exact --fd --num-samples 1797
  ddpmkit eval --diffusers out/unet-and-scheduler --data digits --bpd exact   # a diffusers folder

Results are stored in RUN_DIR/eval/*.json (one file per setting; --no-save to skip) with what
they depend on: checkpoint, model hash, EMA, split, method, seed, sampler, steps, clip, n.
`ddpmkit report RUN_DIR` shows them, and compares exact with stratified when both exist.
--diffusers DIR (a local UNet2DModel + DDPMScheduler folder, safetensors) evaluates it on
--data with the same estimator: diffusers' timestep k = t - 1, the scheduler's float32 betas as
ddpmkit's float64 chain (docs/evaluation.md); its results are printed, not stored.
Under torchrun the batches (--bpd) and sample chunks (--fd/--sw2) are split over the processes
and gathered: the numbers are those of one process with the same seed; rank 0 writes and prints.
"""


def add_parser(sub) -> None:
    from ..diffusion import VARIANCES
    from ..likelihood import PROPOSALS, ELBOEstimator
    from ..samplers import CLIP_POLICIES, SAMPLER_NAMES
    from .sample import DEFAULT_SAMPLER, DEFAULT_STEPS

    EST = ELBOEstimator()  # the one set of defaults

    p = sub.add_parser(
        "eval", formatter_class=formatter, help="bits/dim and sample quality of a trained run",
        description="Evaluate a run's (EMA) denoiser.\n"
                    "--bpd: the negative ELBO in bits/dim on a data split, with the prior / "
                    "consistency / decoder\nterms, consistency by t-bucket (exact) and the rate "
                    "/ distortion split. exact evaluates every t\n(T network calls per example); "
                    "stratified draws t in equal strata of 2..T (unbiased, with a\nstandard "
                    "error, strata x per-stratum + 1 calls per example).\n"
                    "--fd (digits) / --sw2 (2-D toys): sample n and score them.\n"
                    "Without --bpd, --fd or --sw2: --bpd stratified.",
        epilog=EXAMPLES,
    )
    p.add_argument("path", metavar="RUN_DIR|CKPT", nargs="?",
                   help="run directory or checkpoint folder")
    p.add_argument("--diffusers", metavar="DIR", default=None,
                   help="evaluate a local diffusers folder (unet/ + scheduler/) instead of a run")
    p.add_argument("--data", metavar="SPEC", default=None,
                   help="with --diffusers: digits, mnist, a folder or an array file")
    p.add_argument("--bpd", choices=("exact", "stratified"), default=None,
                   help="negative ELBO in bits/dim with this method")
    p.add_argument("--split", choices=("test", "train"), default="test",
                   help="data split for --bpd (default test)")
    p.add_argument("--limit", type=positive_int, default=None,
                   help="evaluate only the first N examples of the split")
    p.add_argument("--strata", type=positive_int, default=None,
                   help=f"strata of t = 2..T for --bpd stratified (default {EST.strata})")
    p.add_argument("--per-stratum", type=positive_int, default=None,
                   help=f"t draws per stratum and example (default {EST.per_stratum})")
    p.add_argument("--proposal", choices=PROPOSALS, default=None,
                   help="how t is drawn inside a stratum: weight = with probability "
                        "proportional to the KL's weight on the network's raw squared error "
                        "(default; C_t for an x0 output), uniform")
    p.add_argument("--variance", choices=VARIANCES, default=None,
                   help="reverse variance sigma_t^2: small = sigma_q^2 (default), large = "
                        "beta_t, analytic = sigma_q^2 + c_x0^2 mmse_t with the model's own "
                        "error measured on the training split (cached in RUN_DIR/eval/mmse)")
    p.add_argument("--decoder", choices=("discrete", "levels"), default=None,
                   help="t = 1 decoder for data on K levels: discrete = discretized Gaussian "
                        "around x0_hat (default), levels = the exact K-level decoder "
                        "q(x_1|x_0) normalised over the K values (VDM)")
    p.add_argument("--unconditional", action="store_true",
                   help="a class-conditional run: evaluate -log p(x) with the null class "
                        "instead of -log p(x | y) with the true labels (the default)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help=f"examples per batch for --bpd (default {EST.batch_size}, as the demo; "
                        "the random draws depend on it)")
    p.add_argument("--max-batch", type=positive_int, default=None,
                   help=f"examples per network call for --bpd exact (default {EST.max_batch})")
    p.add_argument("--fd", action="store_true",
                   help="Frechet distance of n samples (digits; bundled feature net)")
    p.add_argument("--sw2", action="store_true",
                   help="sliced Wasserstein-2 of n samples to the test split (2-D toys)")
    # --num-samples: torchrun's own parser rejects "--n" as an ambiguous prefix of its options
    p.add_argument("--n", "--num-samples", dest="n", type=positive_int, default=1797,
                   help="samples for --fd/--sw2 (default 1797; FD is comparable only at 1797; "
                        "write --num-samples under torchrun)")
    p.add_argument("--sample-batch-size", type=positive_int, default=512,
                   help="samples per chunk for --fd/--sw2 (default 512; chunk i is drawn from "
                        "the seed (seed, i), so the samples depend on it; under torchrun the "
                        "chunks are shared out between the processes)")
    p.add_argument("--sampler", choices=SAMPLER_NAMES, default=DEFAULT_SAMPLER,
                   help=f"sampler for --fd/--sw2 (default {DEFAULT_SAMPLER}, as `ddpmkit sample` "
                        "and the demo)")
    p.add_argument("--steps", type=positive_int,
                   help=f"sampler network calls (default {DEFAULT_STEPS}; all T for ancestral)")
    p.add_argument("--clip", choices=CLIP_POLICIES, default=None,
                   help="x0_hat policy (default: clip for images, none for vectors)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights, not the EMA")
    p.add_argument("--no-save", action="store_true",
                   help="do not store the results in RUN_DIR/eval/")
    p.add_argument("--no-progress", action="store_true")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..distributed import init_from_env

    dist, device = init_from_env(args.device)
    try:
        return _run(args, dist, device)
    finally:
        dist.close()


def _load(args, dist, device: str):
    """The run (or the diffusers folder) to evaluate, with the flags checked against it."""
    from ..train import load_denoiser
    from .sample import DEFAULT_STEPS

    if (args.path is None) == (args.diffusers is None):
        raise InputError("give a run directory or --diffusers DIR (one of them)")
    if args.diffusers is not None:
        from ..interop import load_diffusers

        if args.data is None:
            raise InputError("--diffusers needs --data (digits, mnist, a folder or a file)")
        loaded = load_diffusers(args.diffusers, data=args.data, device=device)
        args.no_save = True  # the folder is not a ddpmkit run: print, do not store
    elif args.data is not None:
        raise InputError("--data is for --diffusers; a run evaluates on its own data")
    else:
        loaded = load_denoiser(args.path, ema=not args.no_ema, device=device,
                               verbose=not args.json and dist.is_main)
    kind = loaded.run.data["kind"]
    data = loaded.run.config.data
    if args.fd and data != "digits":
        raise InputError(f"--fd uses the bundled digits feature net; this run is on {data!r}"
                         + ("; use --sw2 for 2-D data" if kind == "vector" else
                            "; use --bpd for it"))
    if args.sw2 and kind != "vector":
        raise InputError(f"--sw2 is for 2-D vector data; this run is on {data!r}"
                         + ("; use --fd" if data == "digits" else "; use --bpd"))
    if args.steps is None and args.sampler != "ancestral":
        args.steps = min(DEFAULT_STEPS, loaded.denoiser.T)
    if args.steps and args.steps > loaded.denoiser.T:
        raise InputError(f"--steps {args.steps} exceeds the model's T = {loaded.denoiser.T}")
    return loaded


def _run(args, dist, device: str) -> int:
    import torch

    from ..evaluate import compare_bpd, eval_bpd, eval_samples, load_evals, save_eval

    loaded = _load(args, dist, device)
    save = not args.no_save
    # only rank 0 writes: its answer holds for every rank
    writable = dist.broadcast(torch.tensor([int(save and os.access(loaded.run_dir, os.W_OK))]))
    if save and not bool(writable.item()):
        raise InputError(f"cannot store results in {loaded.run_dir}/eval (not writable); "
                         "add --no-save")
    method = args.bpd or (None if (args.fd or args.sw2) else "stratified")
    progress = not (args.json or args.no_progress)
    out: dict = {"run_dir": str(loaded.run_dir)}
    if method is not None:
        res = eval_bpd(loaded, split=args.split, estimator=estimator_from_args(args, method),
                       seed=args.seed, device=device, progress=progress, limit=args.limit,
                       dist=dist, save_mmse=args.diffusers is None,
                       condition=False if args.unconditional else None)

        def store_bpd() -> None:
            if save:
                res["file"] = str(save_eval(loaded.run_dir, res))
            out["bpd"] = res
            other = "stratified" if method == "exact" else "exact"
            same = [r for r in load_evals(loaded.run_dir)
                    if r.get("method") == other and r.get("model_sha256") == res["model_sha256"]
                    and r.get("split") == res["split"] and r.get("n") == res["n"]]
            if same:
                pair = (res, same[-1]) if method == "exact" else (same[-1], res)
                out["comparison"] = compare_bpd(*pair)

        if code := on_main(dist, store_bpd):
            return code
    if args.fd or args.sw2:
        res_s, _ = eval_samples(loaded, n=args.n, sampler=args.sampler, steps=args.steps,
                                clip=args.clip, seed=args.seed, device=device,
                                progress=progress, chunk=args.sample_batch_size, dist=dist)

        def store_samples() -> None:
            if save:
                res_s["file"] = str(save_eval(loaded.run_dir, res_s))
            out["samples"] = res_s

        if code := on_main(dist, store_samples):
            return code

    def show() -> None:
        if args.json:
            emit_json(out)
        else:
            print("\n".join(summary_lines(out)))

    return on_main(dist, show)


def estimator_from_args(args, method: str):
    """The ELBOEstimator of the flags given (its own defaults for the others)."""
    from ..likelihood import DecoderSpec, ELBOEstimator

    given = {k: getattr(args, k) for k in ("strata", "per_stratum", "proposal", "variance",
                                           "batch_size", "max_batch")
             if getattr(args, k) is not None}
    if args.decoder is not None:
        given["decoder"] = DecoderSpec(kind=args.decoder)
    return ELBOEstimator(method=method, **given)


def summary_lines(out: dict) -> list[str]:
    """Human-readable lines for an eval result (see ``run``)."""
    lines = []
    b = out.get("bpd")
    if b is not None:
        how = (f"{b['strata']} strata x {b['per_stratum']}, t ~ {b['proposal']}"
               if b["method"] == "stratified" else "all T terms")
        how += f"; variance {b.get('variance', 'small')}, decoder {b['decoder']['kind']}"
        if b.get("conditional"):
            how += "; -log p(x | y) with the true labels"
        elif b.get("run_conditional"):
            how += "; -log p(x) with the null class"
        t = b["terms_bpd"]
        lines += [
            f"{b['split']} bits/dim: {b['bpd']:.4f} +- {b['se_bpd']:.4f} ({b['method']}, {how}; "
            f"n = {b['n']}, {b['network_calls_per_example']} calls/example, "
            f"{b['seconds']:.1f} s)",
            f"  prior {t['prior']:.4f} + consistency {t['consistency']:.4f} + decoder "
            f"{t['decoder']:.4f}; rate {b['rate_bpd']:.4f} / distortion {b['distortion_bpd']:.4f}",
        ]
        for r in b.get("consistency_by_bucket", []):
            lines.append(f"    L_t for t in {r['t_lo']:>4}..{r['t_hi']:<4}: {r['bpd']:.4f}")
        lines.append(f"  checkpoint {b['checkpoint']} (ema={b['ema']}, sha256 "
                     f"{b['model_sha256'][:12]}, seed {b['seed']})")
    c = out.get("comparison")
    if c is not None:
        r, rs = c["calls_ratio_equal_se"], c["seconds_ratio_equal_se"]
        cheaper = (f"stratified needs {r:.1f}x fewer network calls ({rs:.1f}x less time)"
                   if r >= 1 else f"stratified needs {1 / r:.1f}x more network calls")
        lines.append(f"exact vs stratified: differ by {c['diff_bpd']:+.4f} = {c['z']:.2f} SE "
                     f"(of stratified); at equal SE {cheaper}")
    s = out.get("samples")
    if s is not None:
        calls = s.get("network_calls") or s["steps"]
        head = f"{s['n']} samples ({s['sampler']}, {calls} network calls, clip {s['clip']}, " \
               f"seed {s['seed']}, {s['sample_seconds']:.1f} s)"
        if "fd" in s:
            lines.append(f"{head}: FD {s['fd']:.3f} (real data {s['fd_floor']:.3f}; ratio "
                         f"{s['fd_ratio']:.2f}); per class {s['class_counts']}")
        elif "sliced_w2" in s:
            lines.append(f"{head}: sliced W2 {s['sliced_w2']:.4f} (test halves "
                         f"{s['sliced_w2_floor']:.4f})")
    for r in (b, s):
        if r is not None and "file" in r:
            lines.append(f"stored: {Path(r['file'])}")
    return lines
