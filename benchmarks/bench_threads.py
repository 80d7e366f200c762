"""Threads that never collapse: training speed with and without a competing process.

On a 2-core machine with one other busy single-threaded process, torch's default of one
intra-op thread per core can be many times slower than one thread: OpenMP workers spin-wait for
a core that is taken. This script times ``ddpmkit train --data digits --steps N`` (its own
img/s, the startup excluded) for each thread setting, first on the machine as it is, then with
one competing busy process (a Python loop) pinned to nothing in particular:

- ``torch default``: nothing in the environment, ``--threads 0`` (torch picks: one per core);
- ``1 thread``: ``--threads 1``;
- ``2 threads, active`` / ``passive``: ``--threads 2`` with OMP_WAIT_POLICY=ACTIVE (workers
  spin) or PASSIVE (workers sleep);
- ``2 threads, spin 10k``: ``--threads 2`` with GOMP_SPINCOUNT=10000 (spin briefly, then sleep);
- ``ddpmkit default``: nothing set (``--threads auto``: the cores idle at start, at least 1).

Three conditions: a quiet machine; one competing process running before the command starts
(what ``auto`` sees); and one that starts a few seconds after it (what ``auto`` cannot see).

    python benchmarks/bench_threads.py --steps 40 --reps 2

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
CONDITIONS = ("quiet", "busy", "busy later")
VARIANTS = {
    "torch default": (["--threads", "0"], {}),
    "1 thread": (["--threads", "1"], {}),
    "2 threads, active": (["--threads", "2"], {"OMP_WAIT_POLICY": "ACTIVE"}),
    "2 threads, passive": (["--threads", "2"], {"OMP_WAIT_POLICY": "PASSIVE"}),
    "2 threads, spin 10k": (["--threads", "2"], {"GOMP_SPINCOUNT": "10000"}),
    "ddpmkit default": ([], {}),
}


#: seconds after the command starts that the late competing process starts (after ``auto``
#: has looked, before training ends)
LATE_S = 3.0


def start_hog() -> subprocess.Popen:
    """A busy single-threaded process."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def run_train(args: list[str], env_extra: dict[str, str], steps: int,
              timeout: float, late_hog: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS",
                        "GOMP_SPINCOUNT")}
    env |= env_extra
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "ddpmkit", "train", "--data", "digits", "--steps",
               str(steps), "--out", f"{d}/run", "--sample-every", "0", "--json", *args]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
        hog = None
        if late_hog:
            time.sleep(LATE_S)
            hog = start_hog()
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return {"timed_out": True, "wall_s": timeout, "steps_per_s": 0.0}
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
        if proc.returncode != 0:
            raise RuntimeError(stderr[-2000:])
        out = json.loads(stdout)
        return {"wall_s": time.perf_counter() - t0, "steps_per_s": steps / out["elapsed_s"],
                "threads": out.get("threads"), "timed_out": False}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    rows = []
    for condition in CONDITIONS:
        hog = start_hog() if condition == "busy" else None
        if hog is not None:
            time.sleep(1.0)
        try:
            for name, (flags, env) in VARIANTS.items():
                runs = [run_train(flags, env, args.steps, args.timeout,
                                  late_hog=condition == "busy later")
                        for _ in range(args.reps)]
                best = max(runs, key=lambda r: r["steps_per_s"])
                rows.append({"variant": name, "condition": condition,
                             "steps_per_s": best["steps_per_s"], "runs": runs,
                             "threads": best.get("threads")})
                print(f"{condition:10} {name:20} "
                      f"{best['steps_per_s']:.2f} steps/s (threads {best.get('threads')})",
                      flush=True)
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
    for r in rows:
        one = next(b for b in rows if b["variant"] == "1 thread"
                   and b["condition"] == r["condition"])
        r["vs_1_thread"] = r["steps_per_s"] / one["steps_per_s"] if one["steps_per_s"] else None
    out = {"rows": rows, "steps": args.steps, "cpus": os.cpu_count(),
           "load_avg_1min_end": os.getloadavg()[0],
           "command": f"python benchmarks/bench_threads.py --steps {args.steps} --reps {args.reps}"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print("\n| setting | " + " | ".join(f"{c}: steps/s (vs 1 thread)" for c in CONDITIONS)
          + " |\n|---|" + "---|" * len(CONDITIONS))
    for name in VARIANTS:
        cells = []
        for c in CONDITIONS:
            r = next(r for r in rows if r["variant"] == name and r["condition"] == c)
            cells.append(f"{r['steps_per_s']:.2f} ({r['vs_1_thread']:.2f}x, "
                         f"{r['threads']} threads)")
        print(f"| {name} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
