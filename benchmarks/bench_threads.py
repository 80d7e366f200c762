"""Threads that never collapse: training speed with and without a competing process.

On a 2-core machine with one other busy single-threaded process, torch's default of one
intra-op thread per core can be many times slower than one thread: OpenMP workers spin-wait for
a core that is taken. This script times ``ddpmkit train --data digits --steps N`` (its own
img/s, the startup excluded) for each thread setting, first on the machine as it is, then with
one competing busy process (a Python loop) pinned to nothing in particular:

- ``torch default``: OMP_NUM_THREADS unset, ``--threads 0`` (torch picks, one per core), and
  OMP_WAIT_POLICY=ACTIVE (libgomp's spinning, what torch does without ddpmkit's default);
- ``1 thread``: ``--threads 1``;
- ``2 threads``: ``--threads 2`` with the active wait policy;
- ``2 threads, passive``: ``--threads 2`` and OMP_WAIT_POLICY=PASSIVE (ddpmkit's default policy);
- ``ddpmkit default``: nothing set (``--threads auto``: the idle cores at start, at least 1,
  with the passive wait policy).

    python benchmarks/bench_threads.py --steps 30 --reps 2

Writes benchmarks/results/threads.json; docs/benchmarks.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "threads.json"
VARIANTS = {
    "torch default": (["--threads", "0"], {"OMP_WAIT_POLICY": "ACTIVE"}),
    "1 thread": (["--threads", "1"], {}),
    "2 threads": (["--threads", "2"], {"OMP_WAIT_POLICY": "ACTIVE"}),
    "2 threads, passive": (["--threads", "2"], {"OMP_WAIT_POLICY": "PASSIVE"}),
    "ddpmkit default": ([], {}),
}


def run_train(args: list[str], env_extra: dict[str, str], steps: int,
              timeout: float) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS")}
    env |= env_extra
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "ddpmkit", "train", "--data", "digits", "--steps",
               str(steps), "--out", f"{d}/run", "--sample-every", "0", "--json", *args]
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"timed_out": True, "wall_s": timeout, "steps_per_s": 0.0}
        if p.returncode != 0:
            raise RuntimeError(p.stderr[-2000:])
        out = json.loads(p.stdout)
        return {"wall_s": time.perf_counter() - t0, "steps_per_s": steps / out["elapsed_s"],
                "threads": out.get("threads"), "timed_out": False}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    rows = []
    for competing in (False, True):
        hog = None
        if competing:
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(1.0)
        try:
            for name, (flags, env) in VARIANTS.items():
                runs = [run_train(flags, env, args.steps, args.timeout) for _ in range(args.reps)]
                best = max(runs, key=lambda r: r["steps_per_s"])
                rows.append({"variant": name, "competing_process": competing,
                             "steps_per_s": best["steps_per_s"], "runs": runs,
                             "threads": best.get("threads")})
                print(f"{'busy' if competing else 'quiet':5} {name:20} "
                      f"{best['steps_per_s']:.2f} steps/s (threads {best.get('threads')})",
                      flush=True)
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
    for r in rows:
        one = next(b for b in rows if b["variant"] == "1 thread"
                   and b["competing_process"] == r["competing_process"])
        r["vs_1_thread"] = r["steps_per_s"] / one["steps_per_s"] if one["steps_per_s"] else None
    out = {"rows": rows, "steps": args.steps, "cpus": os.cpu_count(),
           "load_avg_1min_end": os.getloadavg()[0],
           "command": f"python benchmarks/bench_threads.py --steps {args.steps} --reps {args.reps}"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print("\n| setting | quiet: steps/s (vs 1 thread) | one competing process: steps/s "
          "(vs 1 thread) |\n|---|---|---|")
    for name in VARIANTS:
        q = next(r for r in rows if r["variant"] == name and not r["competing_process"])
        b = next(r for r in rows if r["variant"] == name and r["competing_process"])
        print(f"| {name} | {q['steps_per_s']:.2f} ({q['vs_1_thread']:.2f}x) | "
              f"{b['steps_per_s']:.2f} ({b['vs_1_thread']:.2f}x) |")


if __name__ == "__main__":
    main()
