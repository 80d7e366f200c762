"""How many intra-op threads: fast on a quiet machine, no collapse on one busy at start.

torch's default is one OpenMP thread per core. With another busy process on the machine, its
threads spin-wait for a core that is taken, and a run can be 10x slower than with one thread
(docs/benchmarks.md, "Threads"). ddpmkit therefore

- picks ``--threads auto`` (every command's default) as the cores that are idle when the
  command starts, at least 1, at most the cores this process may run on, divided among the
  processes torchrun starts on this node (LOCAL_WORLD_SIZE).

It does not set a passive OpenMP wait policy: measured, that costs 40 % on a quiet machine.
A competitor that starts after the command still slows a multi-thread run; ``--threads 1``
is the setting for a machine known to be shared.

``--threads N`` forces N; ``--threads 0`` leaves torch's own choice; with OMP_NUM_THREADS set
in the environment, ``auto`` follows it.
"""

from __future__ import annotations

import os
import time

#: how long the idle-core measurement looks at /proc/stat
IDLE_SAMPLE_S = 0.25


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask), else os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_times() -> tuple[float, float] | None:
    """(idle, total) jiffies over all cores from /proc/stat, or None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return idle, sum(fields[:8])


def idle_cores(sample_s: float = IDLE_SAMPLE_S) -> float | None:
    """How many cores were idle over the last ``sample_s`` seconds (None: cannot tell)."""
    a = _cpu_times()
    if a is None:
        return None
    time.sleep(sample_s)
    b = _cpu_times()
    if b is None or b[1] <= a[1]:
        return None
    return (b[0] - a[0]) / (b[1] - a[1]) * (os.cpu_count() or 1)


def auto_threads() -> int:
    """Idle cores at start (rounded), at least 1, at most the usable cores, shared among the
    node's torchrun processes."""
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    cap = max(1, usable_cores() // local)
    idle = idle_cores()
    if idle is None:
        return cap
    return max(1, min(cap, int(idle / local + 0.3)))


def apply_threads(spec: str | int) -> int:
    """Set torch's intra-op threads from ``--threads`` (``auto``, 0 = torch's choice, or N);
    returns the number in use."""
    import torch

    if spec in ("auto", None):
        if not os.environ.get("OMP_NUM_THREADS"):  # an explicit setting wins over auto
            torch.set_num_threads(auto_threads())
    elif int(spec) > 0:
        torch.set_num_threads(int(spec))
    return torch.get_num_threads()
