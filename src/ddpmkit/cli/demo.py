"""`ddpmkit demo`: the README's first command."""

from __future__ import annotations

from ._common import add_common, emit_json, formatter, positive_float, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", formatter_class=formatter, help="train on the bundled digits, sample, report",
        description="Train a denoiser on the bundled 8x8 digits with the ELBO's own weights "
                    "(900 steps, about 3 minutes on 2 CPU cores in all), "
                    "sample 1797 digits with the reverse process (DPM-Solver++ 2M SDE, 20 "
                    "network calls), measure the test bits/dim, and write samples.png, "
                    "trajectory.png, loss_by_t.png, metrics.json (test bits/dim, FD and its "
                    "real-data floor, the time split) and report.html into --out.",
        epilog="examples:\n  ddpmkit demo\n  ddpmkit demo --minutes 1 --out runs/quick --json",
    )
    p.add_argument("--out", default="runs/demo", help="demo directory (default runs/demo)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=positive_int, default=None,
                        help="training steps (default 900)")
    budget.add_argument("--minutes", type=positive_float, default=None,
                        help="a wall-clock training budget instead of --steps")
    p.add_argument("--n", type=positive_int, default=None,
                   help="samples for the FD (default 1797; FD is only comparable at 1797)")
    p.add_argument("--bpd", choices=("exact", "stratified"), default=None,
                   help="test bits/dim method (default stratified: 50 strata, with its "
                        "standard error; exact = all T terms, ~20x the network calls)")
    p.add_argument("--no-progress", action="store_true")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import dataclasses

    from ..demo import DemoConfig, run_demo, summary_lines

    over = {k: v for k, v in {"out": args.out, "steps": args.steps, "n": args.n,
                              "bpd": args.bpd, "seed": args.seed}.items() if v is not None}
    if args.minutes is not None:
        over |= {"minutes": args.minutes, "steps": None}
    cfg = dataclasses.replace(DemoConfig(), **over)
    quiet = args.json
    m = run_demo(cfg, device=args.device, progress=not (args.no_progress or quiet),
                 say=(lambda s: None) if quiet else print)
    if args.json:
        emit_json(m)
    else:
        print("\n".join(summary_lines(m, cfg.out)))
    return 0
