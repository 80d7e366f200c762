"""One writer per run directory: an exclusive ``fcntl.flock`` on RUN_DIR/.lock.

The trainer holds the lock for the whole run. A second trainer on the same directory gets one
line naming the holder (pid, host, since when) and exit 2. The lock belongs to the open file
description, so the kernel drops it when the holder dies, however it dies (kill -9, a crash,
a reboot): a stale lock file never blocks ``--resume``, there is nothing to clean up by hand.
Readers (sample, eval, report) take no lock: checkpoints are renamed into place complete, so a
reader only ever sees whole ones.

On a network file system without working flock (some NFS setups) the lock cannot protect
anything; ``DDPMKIT_NO_LOCK=1`` skips it there (say so in the job script).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from ..errors import InputError

LOCK_NAME = ".lock"


class RunLock:
    """``with RunLock(run_dir): ...`` holds RUN_DIR/.lock exclusively (or raises InputError)."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        if os.environ.get("DDPMKIT_NO_LOCK", "") not in ("", "0"):
            return self
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(fd)
            os.close(fd)
            raise InputError(f"{self.path.parent} is being trained by {holder}; wait for it to "
                             "finish, stop it, or train into another --out") from None
        except OSError as e:
            os.close(fd)
            raise InputError(f"cannot lock {self.path} ({e.strerror}); on a file system without "
                             "flock set DDPMKIT_NO_LOCK=1 and make sure one trainer runs") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _describe(fd: int) -> str:
    """'pid 123 on host h (since ...)' from the holder's lock file, or 'another process'."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on {info['host']} (since {info['since']})"
    except (ValueError, KeyError, OSError, UnicodeDecodeError):
        return "another process"
