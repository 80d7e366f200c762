"""Progress for long work: a tqdm bar on a terminal, a periodic one-line status in a log file.

``progress(iterable, total=..., desc=..., unit=...)`` returns an object with tqdm's small
interface (iteration, ``update``, ``set_postfix``, ``close``). When stderr is a terminal it is
a tqdm bar. Otherwise (a log file, a pipe, CI) a bar's carriage-return redraws would flood the
file, so it prints one plain line every ``every_s`` seconds (and one at the end):
``train: 500/1500 step (33%), 61 s, ~122 s left, loss=0.0123``.
``DDPMKIT_PROGRESS=bar|lines|off`` overrides the choice; ``DDPMKIT_PROGRESS_EVERY_S`` sets the
interval of the status lines (default 30 s).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

#: seconds between two status lines when stderr is not a terminal
LINE_EVERY_S = 30.0


class LineProgress:
    """tqdm's interface, printing a status line at most every ``every_s`` seconds."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None,
                 desc: str = "", unit: str = "it", initial: int = 0,
                 every_s: float | None = None, file=None, **_: Any) -> None:
        if every_s is None:
            try:
                every_s = float(os.environ.get("DDPMKIT_PROGRESS_EVERY_S", LINE_EVERY_S))
            except ValueError:
                every_s = LINE_EVERY_S
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.every_s, self.file = every_s, file or sys.stderr
        self.start = self.last = time.monotonic()
        self.start_n = initial
        self.postfix = ""
        self.closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def set_postfix(self, refresh: bool = True, **kw: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self._print(now)

    def _print(self, now: float) -> None:
        el = now - self.start
        done = self.n - self.start_n
        parts = [f"{self.desc}: {self.n}" + (f"/{self.total}" if self.total else "")
                 + f" {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{el:.0f} s")
        if self.total and done > 0 and self.n < self.total:
            parts.append(f"~{el / done * (self.total - self.n):.0f} s left")
        if self.postfix:
            parts.append(self.postfix)
        print(", ".join(parts), file=self.file, flush=True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._print(time.monotonic())


def _mode() -> str:
    forced = os.environ.get("DDPMKIT_PROGRESS", "").strip().lower()
    if forced in ("bar", "lines", "off"):
        return forced
    try:
        return "bar" if sys.stderr.isatty() else "lines"
    except (AttributeError, ValueError):
        return "lines"


class _Silent(LineProgress):
    def _print(self, now: float) -> None:
        return None


def progress(iterable: Iterable | None = None, **kw: Any):
    """A progress bar (terminal) or periodic status lines (anything else); see the module doc."""
    mode = _mode()
    if mode == "bar":
        from tqdm.auto import tqdm

        return tqdm(iterable, dynamic_ncols=True, **kw)
    if mode == "off":
        return _Silent(iterable, **kw)
    return LineProgress(iterable, **kw)
