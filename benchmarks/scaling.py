"""Training throughput (images/s) for 1 and 2 processes: `ddpmkit train` under torchrun.

Each configuration trains the same run (same data, preset, global batch, steps) and reads the
per-window ``imgs_per_s`` of log.jsonl (step time only: start-up, checkpoints and sampling are
excluded); the first window is dropped as warm-up. Configurations (by default):

  1 process  x 1 thread      python -m ddpmkit train ...            (OMP_NUM_THREADS=1)
  1 process  x 2 threads     python -m ddpmkit train ...            (OMP_NUM_THREADS=2)
  2 processes x 1 thread     torchrun --nproc_per_node=2 -m ddpmkit train ... (gloo, DDP)

On a shared machine the numbers move with the load: the load average before and after each
run is recorded, and ``--repeats`` alternates the configurations so that a load change hits all
of them alike. ``--device cuda`` measures GPUs instead (one process per GPU, NCCL).

    .venv/bin/python benchmarks/scaling.py --out benchmarks/results/scaling.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_config(nproc: int, threads: int, args: argparse.Namespace, workdir: Path) -> dict:
    """One timed training run; its throughput from log.jsonl and the machine's load."""
    out = workdir / f"run_{nproc}x{threads}_{time.monotonic_ns()}"
    train = ["-m", "ddpmkit", "train", "--data", args.data, "--out", str(out),
             "--steps", str(args.steps), "--batch-size", str(args.batch_size),
             "--log-every", str(args.log_every), "--checkpoint-every", str(args.steps),
             "--sample-every", "0", "--warmup-steps", "0", "--T", str(args.T),
             "--device", args.device, "--no-progress", "--json"]
    if args.preset:
        train += ["--preset", args.preset]
    if args.bf16:
        train.append("--bf16")
    if nproc == 1:
        cmd = [sys.executable, *train]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", *train]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}"
                         f"\n{res.stderr[-3000:]}")
    windows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    rates = [w["imgs_per_s"] for w in windows[1:] if w.get("imgs_per_s")]
    # images / total seconds over the windows = harmonic mean of equal-size windows
    ips = len(rates) / sum(1.0 / r for r in rates)
    return {"processes": nproc, "threads_per_process": threads, "imgs_per_s": ips,
            "windows": len(rates), "wall_s": wall, "loadavg_1min_before": load0[0],
            "loadavg_1min_after": load1[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="digits")
    p.add_argument("--preset", default=None, help="net preset (default: the data's)")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=64, help="global batch")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--T", type=int, default=1000)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--configs", default="1x1,1x2,2x1",
                   help="PROCESSESxTHREADS, comma separated (default 1x1,1x2,2x1)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args(argv)
    configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="ddpmkit-scaling-") as tmp:
        for rep in range(args.repeats):
            for nproc, threads in configs:
                r = run_config(nproc, threads, args, Path(tmp)) | {"repeat": rep}
                rows.append(r)
                print(f"{nproc} proc x {threads} thr: {r['imgs_per_s']:8.1f} img/s "
                      f"(load {r['loadavg_1min_before']:.1f} -> {r['loadavg_1min_after']:.1f})",
                      flush=True)
    summary = []
    for nproc, threads in configs:
        vals = [r["imgs_per_s"] for r in rows
                if (r["processes"], r["threads_per_process"]) == (nproc, threads)]
        summary.append({"processes": nproc, "threads_per_process": threads,
                        "imgs_per_s_median": statistics.median(vals),
                        "imgs_per_s_all": vals})
    import torch

    result = {
        "benchmark": "ddpmkit train throughput, 1 vs N processes",
        "command": "benchmarks/scaling.py " + " ".join(argv if argv is not None
                                                       else sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor(), "torch": torch.__version__,
                    "gpu": (torch.cuda.get_device_name(0) if args.device == "cuda" else None)},
        "summary": summary, "runs": rows,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
