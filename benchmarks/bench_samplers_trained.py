"""Sampler quality vs network calls with TRAINED denoisers: digits FD and 2-D ring sliced W2.

    .venv/bin/python benchmarks/bench_samplers_trained.py          # all tables (hours on 1 thread)
    .venv/bin/python benchmarks/bench_samplers_trained.py --quick  # smoke run: tiny n and budgets

Digits: the demo's model (``ddpmkit demo``: runs/demo_final, EMA weights), n = 1797 samples per
cell, scored exactly as the demo scores its samples (``ddpmkit.evaluate.eval_samples``: FD of the
bundled feature net against the digits train split, x0_hat clipped to [-1, 1], seed 0, chunks of
512), at network-call budgets 10, 20, 50, 100, and the reference: ancestral sampling with all
T = 1000 steps. Then, at 10 and 20 calls, the other spacings and x0_hat policies.

Ring: an MLP denoiser trained by ``ddpmkit train --data ring`` (see docs/samplers.md), n = 10 000
samples per cell (one chunk, seed 0), sliced W2 to a fresh true ring sample of the same size;
the floor is the SW2 of fresh true samples to that reference (mean +- std over 5 draws).

Heun costs 2 steps - 1 calls: it gets the grid whose calls fit the budget (shown in brackets).
Every cell's samples are cached in --cache (keyed by the model's hash, the sampler, its actual
timesteps, the clip policy, n, seed and device; long cells are saved chunk by chunk), so a rerun
only scores them again; results go to --json and the markdown tables to stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddpmkit.calibrate import steps_for_budget
from ddpmkit.generate import assemble, generate
from ddpmkit.io import atomic_write_bytes, atomic_write_json, atomic_write_npz, finite_json
from ddpmkit.samplers import SAMPLER_NAMES, SAMPLER_SPACINGS, sampling_grid

DIGITS_BUDGETS = (10, 20, 50, 100)
RING_BUDGETS = (10, 20, 50, 100, 1000)
MAIN_SPACINGS = ("uniform", "logsnr_clipped")
EXPLORE_BUDGETS = (10, 20)
FLOOR_DRAWS = 5


# --- cells: generate (or load) the samples of one setting ------------------------------------

def cell_timesteps(loaded, sampler: str, budget: int, spacing: str) -> list[int]:
    steps = min(steps_for_budget(sampler, budget), loaded.denoiser.T)
    return sampling_grid(loaded.denoiser.schedule, steps, spacing).t[1:]


def cell_path(cache: Path, task: str, loaded, c: dict[str, Any]) -> Path:
    """The cache file of a cell. Keyed by the grid's timesteps, not the spacing's name: settings
    that visit the same timesteps (e.g. every spacing at 1000 steps) share their samples."""
    ts = cell_timesteps(loaded, c["sampler"], c["budget"], c["spacing"])
    key = json.dumps([c["sampler"], ts, c["clip"], c["n"], c["seed"], c["chunk"], c["device"]])
    h = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache / f"{task}_{loaded.model_sha256[:12]}_{c['sampler']}_{c['clip']}_n{c['n']}" \
                   f"_seed{c['seed']}_{h}.npz"


def sample_cell(loaded, c: dict[str, Any], cache: Path, task: str,
                say=print) -> tuple[torch.Tensor, dict[str, Any]]:
    """(samples, meta) of cell c: from the cache, else generated chunk by chunk as
    ``ddpmkit.generate.generate`` does (chunk i seeded by chunk_seed(seed, i)) and cached."""
    path = cell_path(cache, task, loaded, c)
    if path.is_file():
        with np.load(path) as z:
            return torch.from_numpy(z["samples"]), json.loads(str(z["meta"]))
    steps = min(steps_for_budget(c["sampler"], c["budget"]), loaded.denoiser.T)
    n, chunk = c["n"], c["chunk"]
    n_chunks = (n + chunk - 1) // chunk
    parts_dir = path.with_suffix(".parts")
    parts, meta, seconds = [], {}, 0.0
    t_start = time.perf_counter()
    for i in range(n_chunks):  # one chunk at a time, saved, so a long cell resumes
        part = parts_dir / f"chunk{i:04d}.npz"
        if part.is_file():
            with np.load(part) as z:
                parts.append(torch.from_numpy(z["x"]))
                meta, s = json.loads(str(z["meta"])), float(z["seconds"])
            seconds += s
            continue
        t0 = time.perf_counter()
        x, meta = generate(loaded.denoiser, loaded.run.data["shape"], n, sampler=c["sampler"],
                           steps=steps, spacing=c["spacing"], clip=c["clip"], seed=c["seed"],
                           chunk=chunk, device=c["device"], rank=i, world=n_chunks)
        s = time.perf_counter() - t0
        seconds += s
        parts.append(x)
        if n_chunks > 1:
            parts_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_npz(part, {"x": x.numpy(), "meta": np.array(json.dumps(meta)),
                                    "seconds": np.array(s)})
    x = assemble(parts, n, chunk)
    meta = {"sampler": c["sampler"], "spacing": c["spacing"], "clip": c["clip"],
            "steps": meta.get("steps"), "network_calls": meta.get("network_calls"),
            "timesteps": meta.get("timesteps"), "seed": c["seed"], "n": n, "chunk": chunk,
            "device": c["device"], "sample_seconds": seconds,
            "torch_threads": torch.get_num_threads(), "model_sha256": loaded.model_sha256}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_npz(path, {"samples": x.numpy().astype(np.float32),
                            "meta": np.array(json.dumps(meta))})
    for p in sorted(parts_dir.glob("chunk*.npz")) if parts_dir.is_dir() else []:
        p.unlink()
    if parts_dir.is_dir():
        parts_dir.rmdir()
    say(f"  sampled {task} {c['sampler']} {c['spacing']} clip={c['clip']} "
        f"{meta['network_calls']} calls seed {c['seed']}: {time.perf_counter() - t_start:.0f} s")
    return x, meta


# --- the two tasks -----------------------------------------------------------------------------

def digits_cells(samplers, spacings, budgets, explore: bool, T: int,
                 reference: bool = True) -> list[dict[str, Any]]:
    """The main grid (clip = "clip", the demo's policy), the reference, and the exploration at
    10 and 20 calls: the other spacings, then the other x0_hat policies."""
    cells = [dict(sampler=s, spacing=sp, clip="clip", budget=b, part="main")
             for s in samplers for sp in spacings for b in budgets]
    if reference:
        cells.append(dict(sampler="ancestral", spacing="uniform", clip="clip", budget=T,
                          part="reference"))
    if explore:
        eb = [b for b in EXPLORE_BUDGETS if b in budgets] or list(budgets[:2])
        cells += [dict(sampler=s, spacing=sp, clip="clip", budget=b, part="explore_spacing")
                  for s in samplers for sp in SAMPLER_SPACINGS if sp not in spacings
                  for b in eb]
        cells += [dict(sampler=s, spacing=sp, clip=cl, budget=b, part="explore_clip")
                  for s in samplers for sp in spacings for cl in ("none", "dynamic")
                  for b in eb]
    return cells


def run_digits(args, say=print) -> dict[str, Any]:
    from ddpmkit.evaluate import eval_samples
    from ddpmkit.metrics.fd import frechet_distance
    from ddpmkit.train import load_denoiser

    loaded = load_denoiser(args.digits_run, ema=True, device=args.device, verbose=False)
    T = loaded.denoiser.T
    budgets = [b for b in args.digits_budgets if b <= T]
    cells = digits_cells(args.samplers, args.spacings, budgets, args.explore, T,
                         reference=args.reference)
    if args.reference_only:
        cells = [c for c in cells if c["part"] == "reference"]
    rows, floor = [], None
    for c in cells:
        c = {**c, "n": args.digits_n, "seed": args.seed, "chunk": 512, "device": args.device}
        x, meta = sample_cell(loaded, c, Path(args.cache), "digits", say)
        q, _ = eval_samples(loaded, n=c["n"], sampler=c["sampler"], steps=meta["steps"],
                            clip=c["clip"], seed=c["seed"], samples=x, device=args.device)
        rows.append({**{k: c[k] for k in ("part", "sampler", "spacing", "clip", "budget",
                                           "n", "seed")},
                     "steps": meta["steps"], "network_calls": meta["network_calls"],
                     "fd": q["fd"], "class_counts": q["class_counts"],
                     "sample_seconds": meta["sample_seconds"]})
        floor = q["fd_floor"]
    from ddpmkit.data import load_dataset

    d = load_dataset("digits")
    real = torch.cat([d.train, d.test])
    ref = next((r for r in rows if r["part"] == "reference"), None)
    out = {"task": "digits", "run": str(args.digits_run), "checkpoint": str(loaded.checkpoint),
           "step": loaded.step, "ema": True, "model_sha256": loaded.model_sha256, "T": T,
           "n": args.digits_n, "seed": args.seed, "chunk": 512, "device": args.device,
           "metric": "FD (bundled digits feature net) against the digits train split "
                     "(1347 images), as the demo computes it",
           "fd_floor": floor, "fd_floor_what": "the 450 held-out test digits",
           "fd_all_real_digits": frechet_distance(real) if args.digits_n >= 1797 else None,
           "reference": {"sampler": "ancestral", "network_calls": ref["network_calls"],
                         "fd": ref["fd"]} if ref else None,
           "rows": rows}
    out["criterion"] = criterion(rows, ref["fd"]) if ref else None
    return out


def criterion(rows, ref_fd: float, max_calls: int = 20, factor: float = 1.2) -> dict[str, Any]:
    """Issue #6: some sampler at <= 20 network calls within 1.2x of the T-step ancestral FD."""
    cands = [r for r in rows if r["part"] != "reference" and r["network_calls"] <= max_calls]
    best = min(cands, key=lambda r: r["fd"]) if cands else None
    best_default = min((r for r in cands if r["part"] == "main" and r["spacing"] == "uniform"),
                       key=lambda r: r["fd"], default=None)
    pick = ("sampler", "spacing", "clip", "network_calls", "fd")
    return {"max_calls": max_calls, "factor": factor, "reference_fd": ref_fd,
            "threshold": factor * ref_fd,
            "best": {k: best[k] for k in pick} | {"ratio": best["fd"] / ref_fd} if best else None,
            "best_default_spacing": ({k: best_default[k] for k in pick}
                                     | {"ratio": best_default["fd"] / ref_fd}
                                     if best_default else None),
            "holds": bool(best and best["fd"] <= factor * ref_fd),
            "holds_at_default_spacing": bool(best_default
                                             and best_default["fd"] <= factor * ref_fd)}


def true_ring(n: int, seed: int, draw: int) -> torch.Tensor:
    """A fresh true ring sample, independent of the train/test splits (their rngs are
    default_rng([seed, split, toy]); these are default_rng([seed, 1000 + draw]))."""
    from ddpmkit.data.toys import sample_toy

    x, _ = sample_toy("ring", n, np.random.default_rng([int(seed), 1000 + int(draw)]))
    return torch.from_numpy(x)


def run_ring(args, say=print) -> dict[str, Any]:
    from ddpmkit.metrics.sliced_w2 import sliced_w2
    from ddpmkit.train import load_denoiser

    loaded = load_denoiser(args.ring_run, ema=True, device=args.device, verbose=False)
    if loaded.run.config.data != "ring":
        raise SystemExit(f"{args.ring_run} is not a ring run ({loaded.run.config.data})")
    T = loaded.denoiser.T
    budgets = sorted({min(b, T) for b in args.ring_budgets})
    n, seed = args.ring_n, args.seed
    ref = true_ring(n, seed, 0)
    floors = [sliced_w2(true_ring(n, seed, j), ref) for j in range(1, FLOOR_DRAWS + 1)]
    rows = []
    for s in args.samplers:
        for sp in args.spacings:
            for b in budgets:
                c = dict(sampler=s, spacing=sp, clip="none", budget=b, n=n, seed=seed,
                         chunk=n, device=args.device)
                x, meta = sample_cell(loaded, c, Path(args.cache), "ring", say)
                rows.append({"part": "main", "sampler": s, "spacing": sp, "clip": "none",
                             "budget": b, "n": n, "seed": seed, "steps": meta["steps"],
                             "network_calls": meta["network_calls"],
                             "sw2": sliced_w2(x.double(), ref),
                             "sample_seconds": meta["sample_seconds"]})
    cfg = loaded.run.config
    return {"task": "ring", "run": str(args.ring_run), "checkpoint": str(loaded.checkpoint),
            "step": loaded.step, "ema": True, "model_sha256": loaded.model_sha256, "T": T,
            "train": {"steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr,
                      "weighting": cfg.weighting, "parameterization": cfg.parameterization,
                      "schedule": cfg.schedule, "ema_decay": cfg.ema_decay},
            "n": n, "seed": seed, "chunk": n, "device": args.device,
            "metric": "sliced W2 (256 directions, seed 0) to a fresh true ring sample of n "
                      "points (numpy default_rng([seed, 1000]))",
            "floor": floors[0], "floor_mean": statistics.mean(floors),
            "floor_std": statistics.stdev(floors) if len(floors) > 1 else 0.0,
            "floor_draws": floors, "rows": rows}


# --- output --------------------------------------------------------------------------------

def _cell(r: dict[str, Any], key: str, fmt: str) -> str:
    extra = "" if r["network_calls"] == r["budget"] else f" ({r['network_calls']})"
    return f"{r[key]:{fmt}}{extra}"


def grid_table(rows, key: str, fmt: str, ratio_to: float | None = None) -> list[str]:
    """Rows (sampler, spacing), one column per budget; optionally the ratio to a reference."""
    budgets = sorted({r["budget"] for r in rows})
    out = ["| sampler | spacing | " + " | ".join(f"{b} calls" for b in budgets) + " |",
           "|---|---|" + "---:|" * len(budgets)]
    for sa, sp in dict.fromkeys((r["sampler"], r["spacing"]) for r in rows):
        cells = {r["budget"]: r for r in rows if (r["sampler"], r["spacing"]) == (sa, sp)}
        vals = []
        for b in budgets:
            if b not in cells:
                vals.append("")
                continue
            r = cells[b]
            v = f"{r[key]:{fmt}}"
            if ratio_to:
                v += f" ({r[key] / ratio_to:.2f}x)"
            if r["network_calls"] != b:
                v += f" ({r['network_calls']})" if not ratio_to else \
                    f" [{r['network_calls']} calls]"
            vals.append(v)
        out.append(f"| {sa} | {sp} | " + " | ".join(vals) + " |")
    return out


def digits_tables(res: dict[str, Any]) -> str:
    rows = res["rows"]
    ref = res["reference"]["fd"] if res["reference"] else None
    main = [r for r in rows if r["part"] == "main"]
    out = [f"**digits, trained** (demo model, step {res['step']}, EMA; n = {res['n']}, "
           f"seed {res['seed']}, x0_hat clipped): FD, lower is better"
           + (f"; in brackets the ratio to the {res['reference']['network_calls']}-step "
              "ancestral FD" if ref else "") + "\n"]
    out += grid_table(main, "fd", ".2f", ratio_to=ref)
    out.append((f"\nreference: ancestral, {res['reference']['network_calls']} calls: FD "
                f"{ref:.2f}; " if ref else "\n")
               + f"real-data floor ({res['fd_floor_what']}): {res['fd_floor']:.2f}"
               + (f"; all 1797 real digits (75 % are the reference): "
                  f"{res['fd_all_real_digits']:.2f}" if res.get("fd_all_real_digits") else ""))
    sp_rows = [r for r in rows if r["part"] in ("main", "explore_spacing") and r["clip"] == "clip"
               and r["budget"] in EXPLORE_BUDGETS]
    if any(r["part"] == "explore_spacing" for r in rows):
        spacings = [s for s in SAMPLER_SPACINGS if any(r["spacing"] == s for r in sp_rows)]
        for b in sorted({r["budget"] for r in sp_rows}):
            out.append(f"\n**digits, every spacing at {b} calls** (FD, clip)\n")
            out.append("| sampler | " + " | ".join(spacings) + " |")
            out.append("|---|" + "---:|" * len(spacings))
            for sa in dict.fromkeys(r["sampler"] for r in sp_rows):
                cells = {r["spacing"]: r for r in sp_rows
                         if r["sampler"] == sa and r["budget"] == b}
                out.append(f"| {sa} | " + " | ".join(
                    _cell(cells[s], "fd", ".2f") if s in cells else "" for s in spacings) + " |")
    cl_rows = [r for r in rows if r["part"] in ("main", "explore_clip")
               and r["budget"] in EXPLORE_BUDGETS]
    if any(r["part"] == "explore_clip" for r in rows):
        budgets = sorted({r["budget"] for r in cl_rows})
        clips = ("none", "clip", "dynamic")
        out.append("\n**digits, x0_hat policy** (FD; columns: policy @ calls)\n")
        out.append("| sampler | spacing | " + " | ".join(f"{cl} @ {b}" for b in budgets
                                                         for cl in clips) + " |")
        out.append("|---|---|" + "---:|" * (len(clips) * len(budgets)))
        for sa, sp in dict.fromkeys((r["sampler"], r["spacing"]) for r in cl_rows):
            cells = {(r["clip"], r["budget"]): r for r in cl_rows
                     if (r["sampler"], r["spacing"]) == (sa, sp)}
            out.append(f"| {sa} | {sp} | " + " | ".join(
                _cell(cells[(cl, b)], "fd", ".2f") if (cl, b) in cells else ""
                for b in budgets for cl in clips) + " |")
    c = res["criterion"]
    if c and c["best"]:
        b = c["best"]
        out.append(f"\ncriterion (some sampler at <= {c['max_calls']} calls within "
                   f"{c['factor']}x of the reference FD {c['reference_fd']:.2f}, i.e. <= "
                   f"{c['threshold']:.2f}): best {b['sampler']} {b['spacing']} clip={b['clip']} "
                   f"at {b['network_calls']} calls, FD {b['fd']:.2f} = {b['ratio']:.2f}x -> "
                   f"{'HOLDS' if c['holds'] else 'does NOT hold'}"
                   + (f"; at the default (uniform) spacing the best is "
                      f"{c['best_default_spacing']['sampler']} "
                      f"{c['best_default_spacing']['fd']:.2f} = "
                      f"{c['best_default_spacing']['ratio']:.2f}x"
                      if c["best_default_spacing"] else ""))
    return "\n".join(out)


def ring_table(res: dict[str, Any]) -> str:
    out = [f"**ring, trained MLP** (step {res['step']}, EMA; n = {res['n']}, seed {res['seed']}):"
           " sliced W2 to a fresh true sample, lower is better\n"]
    out += grid_table(res["rows"], "sw2", ".4f")
    out.append(f"\nfloor (true vs true): {res['floor']:.4f}; over {len(res['floor_draws'])} "
               f"draws {res['floor_mean']:.4f} +- {res['floor_std']:.4f}")
    return "\n".join(out)


def plot(results: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("digits", "ring") if k in results]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 5.2), dpi=110,
                             squeeze=False)
    samplers: list[Any] = []
    for ax, k in zip(axes[0], panels):
        res, key = results[k], ("fd" if k == "digits" else "sw2")
        main = [r for r in res["rows"] if r["part"] == "main"]
        for i, (sa, sp) in enumerate(dict.fromkeys((r["sampler"], r["spacing"]) for r in main)):
            pts = sorted((r["network_calls"], r[key]) for r in main
                         if (r["sampler"], r["spacing"]) == (sa, sp))
            line, = ax.plot(*zip(*pts), "-" if sp == "logsnr_clipped" else ":", marker="o",
                            ms=3, color=f"C{i // 2}", label=f"{sa} ({sp})")
            if ax is axes[0][0]:
                samplers.append(line)
        if k == "digits":
            ref = res["reference"]
            if ref:
                ax.axhline(ref["fd"], color="k", lw=0.9,
                           label=f"ancestral, {ref['network_calls']} calls")
                ax.axhline(1.2 * ref["fd"], color="k", lw=0.8, ls="--", label="1.2x that")
            ax.axhline(res["fd_floor"], color="grey", lw=0.9, ls="-.", label="real digits")
            ax.set_ylabel("FD to the digits train split")
            ax.set_title(f"digits, demo model (n = {res['n']})")
        else:
            ax.axhspan(res["floor_mean"] - res["floor_std"], res["floor_mean"] + res["floor_std"],
                       color="grey", alpha=0.25, label="floor +- std")
            ax.set_ylabel("sliced W2 to a fresh true sample")
            ax.set_title(f"ring, trained MLP (n = {res['n']})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("network calls")
        ax.grid(alpha=0.3, which="both")
        lines = [h for h in ax.get_lines() if h not in samplers and h.get_marker() != "o"]
        ax.legend(handles=lines + [p for p in ax.patches], fontsize=7, loc="upper right")
    fig.legend(handles=samplers, fontsize=7, ncol=min(7, len(samplers)), loc="lower center",
               title="dotted: uniform spacing, solid: logsnr_clipped", title_fontsize=7)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def _ints(s: str) -> tuple[int, ...]:
    return tuple(int(v) for v in s.split(",") if v)


def _names(choices):
    def parse(s: str) -> tuple[str, ...]:
        out = tuple(v for v in s.split(",") if v)
        bad = [v for v in out if v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(bad)}; choose from "
                                             f"{', '.join(choices)}")
        return out
    return parse


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: n 64 digits / 500 ring points, budgets 5 and 10, no "
                         "exploration; writes samplers_trained_quick.json and no plot")
    ap.add_argument("--tasks", type=_names(("digits", "ring")), default=("digits", "ring"))
    ap.add_argument("--digits-run", default="runs/demo_final")
    ap.add_argument("--ring-run", default="runs/samplers_trained/ring")
    ap.add_argument("--cache", default="runs/samplers_trained/cache")
    ap.add_argument("--json", default=None,
                    help="default benchmarks/results/samplers_trained.json "
                         "(_quick.json with --quick)")
    ap.add_argument("--plot", default=None, help="default docs/img/samplers_trained.png "
                                                 "(none with --quick)")
    ap.add_argument("--samplers", type=_names(SAMPLER_NAMES), default=SAMPLER_NAMES)
    ap.add_argument("--spacings", type=_names(SAMPLER_SPACINGS), default=MAIN_SPACINGS)
    ap.add_argument("--digits-budgets", type=_ints, default=DIGITS_BUDGETS)
    ap.add_argument("--ring-budgets", type=_ints, default=RING_BUDGETS)
    ap.add_argument("--digits-n", type=int, default=1797)
    ap.add_argument("--ring-n", type=int, default=10_000)
    ap.add_argument("--no-explore", dest="explore", action="store_false",
                    help="skip the other spacings and x0_hat policies at 10 and 20 calls")
    ap.add_argument("--no-reference", dest="reference", action="store_false",
                    help="digits: skip the T-step ancestral reference (e.g. with --seeds, to "
                         "measure the seed-to-seed spread of cheap cells)")
    ap.add_argument("--reference-only", action="store_true",
                    help="digits: only the T-step ancestral reference (the long cell)")
    ap.add_argument("--replot", action="store_true",
                    help="only redraw --plot from the results in --json")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=_ints, default=None,
                    help="several seeds, e.g. 0,1,2,3,4: the main cells per seed and a "
                         "mean +- std table (results under '<task>_seeds')")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.quick:
        args.digits_n, args.ring_n = min(args.digits_n, 64), min(args.ring_n, 500)
        args.digits_budgets, args.ring_budgets, args.explore = (5, 10), (5, 10), False
    args.seeds = args.seeds or (args.seed,)
    args.json = args.json or ("benchmarks/results/samplers_trained_quick.json" if args.quick
                              else "benchmarks/results/samplers_trained.json")
    args.plot = args.plot if args.plot is not None else (
        "" if args.quick else "docs/img/samplers_trained.png")
    return args


def seeds_table(runs: list[dict[str, Any]]) -> str:
    """The same cells over several seeds: mean +- std, and (digits) the ratio to the same seed's
    T-step ancestral FD, and how often the <= 20-call criterion holds."""
    task = runs[0]["task"]
    key, fmt = ("fd", ".2f") if task == "digits" else ("sw2", ".4f")
    seeds = [r["seed"] for r in runs]
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for res in runs:
        for r in res["rows"]:
            if r["part"] == "main":
                cells.setdefault((r["sampler"], r["spacing"], r["budget"]), []).append(
                    {**r, "ref": (res["reference"] or {}).get("fd")})
    budgets = sorted({k[2] for k in cells})
    out = [f"**{task}, {len(runs)} seeds** ({', '.join(map(str, seeds))}; device "
           f"{runs[0]['device']}): {key} mean +- std"
           + (" and mean ratio to the same seed's ancestral reference" if runs[0].get("reference")
              else "") + "\n",
           "| sampler | spacing | " + " | ".join(f"{b} calls" for b in budgets) + " |",
           "|---|---|" + "---:|" * len(budgets)]
    for sa, sp in dict.fromkeys(k[:2] for k in cells):
        vals = []
        for b in budgets:
            rs = cells.get((sa, sp, b), [])
            if not rs:
                vals.append("")
                continue
            v = [r[key] for r in rs]
            txt = f"{statistics.mean(v):{fmt}} +- {statistics.stdev(v):{fmt}}"
            if rs[0]["ref"]:
                txt += f" ({statistics.mean(r[key] / r['ref'] for r in rs):.2f}x)"
            if rs[0]["network_calls"] != b:
                txt += f" [{rs[0]['network_calls']} calls]"
            vals.append(txt)
        out.append(f"| {sa} | {sp} | " + " | ".join(vals) + " |")
    if task == "digits" and runs[0]["reference"]:
        refs = [r["reference"]["fd"] for r in runs]
        out.append(f"\nreference (ancestral, {runs[0]['reference']['network_calls']} calls): "
                   f"{statistics.mean(refs):.2f} +- {statistics.stdev(refs):.2f} "
                   f"(per seed {', '.join(f'{v:.2f}' for v in refs)}); floor "
                   f"{runs[0]['fd_floor']:.2f}")
        ok = [r["criterion"]["holds"] for r in runs]
        best = [r["criterion"]["best"] for r in runs]
        out.append(f"criterion holds for {sum(ok)} of {len(ok)} seeds; best <= 20-call cell per "
                   "seed: " + "; ".join(f"{b['sampler']} {b['spacing']} {b['network_calls']} "
                                        f"calls {b['ratio']:.2f}x" for b in best))
    elif task == "ring":
        out.append("\nfloor per seed: " + ", ".join(f"{r['floor_mean']:.4f}" for r in runs))
    return "\n".join(out)


def main(argv=None) -> int:
    import warnings

    args = parse_args(argv)
    torch.set_num_threads(1)  # a shared 2-core machine: one thread, one process
    if args.device.startswith("cuda"):  # the same float32 arithmetic as on the CPU
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    warnings.filterwarnings("ignore", message=".*FD.*")  # small-n warnings in --quick
    t0 = time.perf_counter()
    path = Path(args.json)
    results: dict[str, Any] = {}
    if path.is_file():
        results = json.loads(path.read_text())
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if args.replot:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
        return 0
    results["command"] = "python benchmarks/bench_samplers_trained.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    results["torch"] = torch.__version__
    for task in args.tasks:
        runs = []
        for seed in args.seeds:
            args.seed = seed
            res = run_digits(args, say) if task == "digits" else run_ring(args, say)
            runs.append(res)
            if len(args.seeds) > 1:  # progress survives an interrupted run
                results[f"{task}_seeds"] = runs
                atomic_write_json(path, finite_json(results))
            else:
                results[task] = res
                atomic_write_json(path, finite_json(results))
                print(digits_tables(res) if task == "digits" else ring_table(res), flush=True)
                print()
        if len(args.seeds) > 1:
            print(seeds_table(runs), flush=True)
            print()
    print(f"wrote {path} ({time.perf_counter() - t0:.0f} s)")
    if args.plot and all(k in results for k in ("digits", "ring")):
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
