"""`ddpmkit calibrate`: closed-form ground truth (gaussian: the ELBO; gmm2d: the samplers)."""

from __future__ import annotations

from ..errors import InputError
from ._common import add_common, emit_json, formatter, positive_int

CALIBRATE_CASES: tuple[str, ...] = ("gaussian", "gmm2d")


def add_parser(sub) -> None:
    from ..samplers import SAMPLER_NAMES, SAMPLER_SPACINGS

    p = sub.add_parser(
        "calibrate", formatter_class=formatter,
        help="closed-form ground truth: the ELBO vs the true NLL, sampler quality",
        description="Data whose exact denoiser is known in closed form. 'gaussian': the true "
                    "NLL, the expected -ELBO in closed form and a Monte Carlo -ELBO from the "
                    "likelihood code, per schedule, T and model variance. 'gmm2d': 8 Gaussians "
                    "(std 0.08) on the unit circle; every sampler, with the exact denoiser, per "
                    "network-call budget: sliced W2 to a fresh true sample, and the floor (what "
                    "a perfect sampler scores) with its spread.",
        epilog="example:\n  ddpmkit calibrate --case gaussian --json\n"
               "  ddpmkit calibrate --case gaussian --T 1000 --n 5000\n"
               "  ddpmkit calibrate --case gmm2d                      # full table, ~2-4 min\n"
               "  ddpmkit calibrate --case gmm2d --sampler unipc --steps 10 "
               "--spacing logsnr_clipped --out s.npz",
    )
    p.add_argument("--case", choices=CALIBRATE_CASES, default="gaussian")
    p.add_argument("--schedule", choices=("linear", "cosine", "sigmoid", "logsnr_linear"),
                   action="append",
                   help="schedule(s) to check (repeatable; default linear and cosine)")
    p.add_argument("--T", type=positive_int, action="append",
                   help="step count(s) (repeatable; default gaussian 100, 1000, 4000; "
                        "gmm2d 1000, first value only)")
    p.add_argument("--n", type=positive_int, default=None,
                   help="examples (default gaussian 2000, gmm2d 10000)")
    p.add_argument("--sampler", choices=SAMPLER_NAMES, action="append",
                   help="gmm2d: sampler(s) (repeatable; default all)")
    p.add_argument("--steps", type=positive_int, action="append",
                   help="gmm2d: network-call budget(s) (repeatable; default 10 20 50 100 1000)")
    p.add_argument("--spacing", choices=SAMPLER_SPACINGS, action="append",
                   help="gmm2d: step spacing(s) (repeatable; default uniform, logsnr_clipped)")
    p.add_argument("--out", metavar="F.npz", help="write the result arrays to F.npz (gmm2d: "
                   "'samples' (n, 2) of the single or the best row, and the table)")
    add_common(p)
    p.set_defaults(func=run_calibrate)


def run_calibrate(args) -> int:
    if args.case == "gaussian":
        return _run_gaussian(args)
    if args.case == "gmm2d":
        return _run_gmm2d(args)
    raise InputError(f"unknown case {args.case!r}; choose one of {', '.join(CALIBRATE_CASES)}")


def _run_gaussian(args) -> int:
    from ..calibrate import calibrate_gaussian

    schedules = args.schedule or ["linear", "cosine"]
    Ts = args.T or [100, 1000, 4000]
    n = 2000 if args.n is None else args.n
    if n < 2:
        raise InputError("--n must be >= 2 to estimate a standard error")
    rows = calibrate_gaussian(schedules=schedules, Ts=Ts, n=n, seed=args.seed)
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


def _run_gmm2d(args) -> int:
    import sys

    from ..calibrate import GMM2D_BUDGETS, calibrate_gmm2d

    n = 10_000 if args.n is None else args.n
    if n < 2:
        raise InputError("--n must be >= 2 for a sliced W2")
    T = args.T[0] if args.T else 1000
    if args.out and not args.out.endswith(".npz"):
        raise InputError(f"--out {args.out} must end in .npz")
    res = calibrate_gmm2d(samplers=args.sampler, budgets=sorted(set(args.steps or GMM2D_BUDGETS)),
                          schedules=args.schedule or ("linear", "cosine"),
                          spacings=args.spacing or ("uniform", "logsnr_clipped"), T=T, n=n,
                          seed=args.seed, keep_samples=bool(args.out),
                          progress=sys.stderr.isatty())
    rows = res["rows"]
    if args.out:
        _write_gmm2d_npz(args.out, res)
    out = {k: v for k, v in res.items() if k != "rows"}
    out["rows"] = [{k: v for k, v in r.items() if k != "samples"} for r in rows]
    best = min(out["rows"], key=lambda r: r["sw2"])
    out["best"] = best
    if args.json:
        emit_json(out)
        return 0
    print(f"gmm2d: 8 Gaussians (radius 1, std 0.08), exact denoiser, T = {T}, n = {n}; "
          "sliced W2 to a fresh true sample (lower is better)")
    budgets = sorted({r["budget"] for r in rows})
    head = "".join(f"{b:>9}" for b in budgets)
    for sc in dict.fromkeys(r["schedule"] for r in rows):
        print(f"\nschedule {sc}: network calls ->\n{'sampler':13}{'spacing':16}{head}")
        for sa, sp in dict.fromkeys((r["sampler"], r["spacing"]) for r in rows
                                    if r["schedule"] == sc):
            cells = {r["budget"]: r for r in rows
                     if (r["schedule"], r["sampler"], r["spacing"]) == (sc, sa, sp)}
            line = "".join(f"{cells[b]['sw2']:>9.4f}" for b in budgets)
            print(f"{sa:13}{sp:16}{line}")
    print(f"\nfloor (perfect sampler, {len(res['floor'])} draws): {res['floor_mean']:.4f} "
          f"+- {res['floor_std']:.4f}")
    print(f"best: {best['sampler']} ({best['spacing']}, {best['schedule']}) "
          f"{best['sw2']:.4f} at {best['network_calls']} network calls")
    if args.out:
        print(f"wrote {args.out}")
    return 0


def _write_gmm2d_npz(path: str, res: dict) -> None:
    import numpy as np

    from ..io import atomic_write_npz

    rows = res["rows"]
    best = min(range(len(rows)), key=lambda i: rows[i]["sw2"])
    arrays = {"samples": rows[best]["samples"].numpy(),
              "all_samples": np.stack([r["samples"].numpy() for r in rows]),
              "floor": np.array(res["floor"])}
    for k in ("schedule", "sampler", "spacing", "budget", "steps", "network_calls", "sw2"):
        arrays[k] = np.array([r[k] for r in rows])
    atomic_write_npz(path, arrays)


def _write_rows_npz(path: str, rows: list[dict]) -> None:
    import numpy as np

    from ..io import atomic_write_npz

    keys = [k for k, v in rows[0].items() if isinstance(v, (int, float, str))]
    atomic_write_npz(path, {k: np.array([r[k] for r in rows]) for k in keys})
