"""`ddpmkit report`: a static, self-contained HTML page of a run."""

from __future__ import annotations

from ._common import add_common, emit_json, formatter

EXAMPLES = """examples:
  ddpmkit report runs/demo                 # writes runs/demo/report.html
  ddpmkit report runs/digits --out /tmp/digits.html --no-draw
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report", formatter_class=formatter, help="write RUN_DIR/report.html",
        description="Write a static HTML page (images embedded as base64, no scripts, no "
                    "network) with samples, the x_t / x0_hat trajectory, training curves from "
                    "log.jsonl, the error and the ELBO terms by t, the C_t weight beside the "
                    "weighting used, and every stored eval result (RUN_DIR/eval/*.json, "
                    "metrics.json) with its settings. Pictures the run lacks (samples.png, "
                    "trajectory.png) are drawn from the newest checkpoint (100 ancestral steps).",
        epilog=EXAMPLES,
    )
    p.add_argument("path", metavar="RUN_DIR", help="run directory")
    p.add_argument("--out", default=None, help="output file (default RUN_DIR/report.html)")
    p.add_argument("--no-draw", action="store_true",
                   help="do not sample from the checkpoint (use only stored pictures)")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..report import write_report

    path = write_report(args.path, out=args.out, device=args.device, draw=not args.no_draw,
                        seed=args.seed)
    if args.json:
        emit_json({"report": str(path), "bytes": path.stat().st_size})
    else:
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB); open it in a browser")
    return 0
