"""`ddpmkit equivalence`: the lecture's identity, checked for every t."""

from __future__ import annotations

from ._common import add_common, emit_json, formatter, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "equivalence", formatter_class=formatter,
        help="check KL(q || p_theta) = C_t ||x0_hat - x0||^2 for every t",
        description="Evaluate, for every t >= 2, the KL between q(x_{t-1}|x_t,x_0) and "
                    "p_theta(x_{t-1}|x_t) built from a random x0_hat, and the C_t * MSE form; "
                    "print the largest relative difference.",
        epilog="example:\n  ddpmkit equivalence --schedule cosine --T 1000 --json\n"
               "  ddpmkit equivalence --plot weights.png",
    )
    p.add_argument("--schedule", choices=("linear", "cosine", "sigmoid"), default="linear")
    p.add_argument("--T", type=positive_int, default=1000, help="number of steps (default 1000)")
    p.add_argument("--plot", metavar="F.png", help="also plot C_t and the weights of simple, "
                   "snr, min_snr, p2 and v on the x0-MSE")
    add_common(p)
    p.set_defaults(func=run_equivalence)


def run_equivalence(args) -> int:
    from ..equivalence import check_equivalence
    from ..schedules import make_schedule

    sched = make_schedule(args.schedule, args.T)
    res = check_equivalence(sched, seed=args.seed)
    if args.plot:
        from ..figures import all_weights_png, save

        save(all_weights_png(sched), args.plot)
    out = {"schedule": args.schedule, "T": args.T, **res.as_dict()}
    if args.json:
        emit_json(out)
    else:
        print(f"schedule {args.schedule}, T = {args.T}: checked t = 2..{args.T} "
              f"({res.t_checked} terms)")
        print(f"  max relative difference KL vs C_t*MSE: {res.max_rel_diff:.3e}")
        print(f"  C_t as c_x0^2/(2 sigma_q^2) vs (snr_(t-1) - snr_t)/2: "
              f"{res.C_t_from_snr_max_rel_diff:.3e}")
        c = res.C_t
        print(f"  C_2 = {c[2]:.4g}, C_{args.T // 2} = {c[args.T // 2]:.4g}, "
              f"C_T = {c[-1]:.4g}" if args.T >= 4 else "")
        if args.plot:
            print(f"  wrote {args.plot}")
    return 0


