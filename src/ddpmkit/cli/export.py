"""`ddpmkit export`: a trained run as a diffusers folder (UNet2DModel + DDPMScheduler)."""

from __future__ import annotations

from ._common import add_common, emit_json, formatter

EXAMPLES = """examples:
  ddpmkit export runs/digits out/digits-diffusers --format diffusers
  ddpmkit export runs/digits/checkpoints/step_0002000 out/d --format diffusers --no-ema

Then, in Python (offline, nothing downloaded):
  from diffusers import DDPMPipeline, UNet2DModel, DDPMScheduler
  pipe = DDPMPipeline.from_pretrained("out/digits-diffusers")
  unet = UNet2DModel.from_pretrained("out/digits-diffusers/unet")

diffusers' timestep k is ddpmkit's t - 1 (the exported UNet embeds t = k + 1 exactly);
prediction_type: eps -> epsilon, v -> v_prediction, x0 -> sample; the scheduler holds a float32
copy of the betas (trained_betas). mu/edm outputs, Fourier input features and chains whose
float32 copy is no chain are refused (exit 2). `ddpmkit eval --diffusers OUT --data digits`
evaluates the folder with ddpmkit's exact ELBO.
"""


def add_parser(sub) -> None:
    from ..interop import TIME_EMBEDDINGS

    p = sub.add_parser(
        "export", formatter_class=formatter, help="write a run as a diffusers folder",
        description="Write a run's (EMA) denoiser as OUT/unet (diffusers UNet2DModel, "
                    "safetensors) and OUT/scheduler (DDPMScheduler), with model_index.json "
                    "(DDPMPipeline) and OUT/ddpmkit_export.json (provenance, the float32 "
                    "chain's error). diffusers itself is not needed to export.",
        epilog=EXAMPLES,
    )
    p.add_argument("path", metavar="RUN_DIR|CKPT", help="run directory or checkpoint folder")
    p.add_argument("out", metavar="OUT", help="new folder to write (never overwritten)")
    p.add_argument("--format", choices=("diffusers",), required=True,
                   help="what to write: diffusers (UNet2DModel + DDPMScheduler)")
    p.add_argument("--time-embedding", choices=TIME_EMBEDDINGS, default="auto",
                   help="auto (default): positional sinusoids when T = 1000 (every diffusers "
                        "scheduler), else learned (a table of ddpmkit's embedding of t = k + 1; "
                        "integer timesteps only)")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights, not the EMA")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..interop import export_diffusers

    info = export_diffusers(args.path, args.out, ema=not args.no_ema,
                            time_embedding=args.time_embedding)
    if args.json:
        emit_json(info)
        return 0
    ch = info["float32_chain"]
    print(f"wrote {info['out']}: UNet2DModel ({info['parameters'] / 1e6:.2f}M parameters, "
          f"{info['time_embedding']} time embedding) + DDPMScheduler (prediction_type "
          f"{info['prediction_type']}, T = {info['T']}, float32 betas: log-SNR off by at most "
          f"{ch['max_abs_err_log_snr']:.1e} at t = {ch['argmax_t_log_snr']})")
    print(f"  from {info['checkpoint']} (step {info['step']}, ema={info['ema']}); load with "
          f"DDPMPipeline.from_pretrained({info['out']!r})")
    if ch["max_abs_err_log_snr"] > 1e-2:
        print(f"  note: diffusers' float32 alpha_bar moves log-SNR by "
              f"{ch['max_abs_err_log_snr']:.2g} at t = {ch['argmax_t_log_snr']} (1 - alpha_bar has "
              "few float32 digits there); ddpmkit eval --diffusers uses float64")
    return 0
