"""`ddpmkit calibrate`: closed-form ground truth."""

from __future__ import annotations

from ..errors import InputError
from ._common import add_common, emit_json, formatter, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "calibrate", formatter_class=formatter,
        help="closed-form ground truth: the ELBO vs the true NLL, sampler quality",
        description="Data whose exact denoiser is known in closed form. 'gaussian': the true "
                    "NLL, the expected -ELBO in closed form and a Monte Carlo -ELBO from the "
                    "likelihood code, per schedule, T and model variance.",
        epilog="example:\n  ddpmkit calibrate --case gaussian --json\n"
               "  ddpmkit calibrate --case gaussian --T 1000 --n 5000",
    )
    p.add_argument("--case", choices=CALIBRATE_CASES, default="gaussian")
    p.add_argument("--schedule", choices=("linear", "cosine", "sigmoid"), action="append",
                   help="schedule(s) to check (repeatable; default linear and cosine)")
    p.add_argument("--T", type=positive_int, action="append",
                   help="step count(s) (repeatable; default 100, 1000, 4000)")
    p.add_argument("--n", type=positive_int, default=2000,
                   help="Monte Carlo examples (default 2000)")
    p.add_argument("--out", metavar="F.npz", help="write the result arrays to F.npz")
    add_common(p)
    p.set_defaults(func=run_calibrate)


CALIBRATE_CASES: tuple[str, ...] = ("gaussian",)


def run_calibrate(args) -> int:
    from ..calibrate import calibrate_gaussian

    schedules = args.schedule or ["linear", "cosine"]
    Ts = args.T or [100, 1000, 4000]
    if args.case == "gaussian":
        if args.n < 2:
            raise InputError("--n must be >= 2 to estimate a standard error")
        rows = calibrate_gaussian(schedules=schedules, Ts=Ts, n=args.n, seed=args.seed)
        if args.out:
            _write_rows_npz(args.out, rows)
        if args.json:
            emit_json(rows)
            return 0
        print("Gaussian data in d = 4 (exact denoiser), -ELBO vs true NLL in bits/dim")
        print(f"{'schedule':9}{'T':>6} {'variance':9}{'true NLL':>10}{'-ELBO':>10}"
              f"{'MC -ELBO':>10}{'+-SE':>8}{'z':>7}{'gap':>9}")
        for r in rows:
            print(f"{r['schedule']:9}{r['T']:>6} {r['variance']:9}{r['true_nll_bpd']:>10.4f}"
                  f"{r['neg_elbo_bpd']:>10.4f}{r['neg_elbo_mc_bpd']:>10.4f}"
                  f"{r['neg_elbo_mc_se_bpd']:>8.4f}{r['mc_z']:>7.2f}{r['gap_bpd']:>9.4f}")
        print("MC agrees with the closed form when |z| <= 3; the gap is -ELBO - NLL >= 0.")
        return 0
    raise InputError(f"unknown case {args.case!r}; choose one of {', '.join(CALIBRATE_CASES)}")


def _write_rows_npz(path: str, rows: list[dict]) -> None:
    import numpy as np

    from ..io import atomic_write_npz

    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float, str))]
    atomic_write_npz(path, {k: np.array([r[k] for r in rows]) for k in keys})


