"""A polite stop: SIGTERM / SIGINT ask the trainer to stop after the step in flight.

``with StopOnSignal() as stop:`` installs handlers that only record the signal; the training
loop checks ``stop.requested`` between steps, writes a checkpoint of that exact step and a log
record, and exits with ``EXIT_CODES[signal]`` (143 for SIGTERM, 130 for SIGINT: the shell's
128 + signal number, so schedulers and scripts read it as "stopped by that signal").

A second signal aborts at once (KeyboardInterrupt, exit 130), also while the checkpoint is
being written: it is written to a temporary directory and renamed into place, so the abort
leaves the previous checkpoints as they were and no half-written one. Handlers can only be
installed in the main thread; elsewhere (a library user's worker thread) signals keep their
defaults.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}


class StopRequested(Exception):
    """Raised by the trainer after it saved the checkpoint of the step a signal stopped."""

    def __init__(self, signum: int, step: int) -> None:
        self.signum, self.step = signum, step
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}; the "
                         "checkpoint of that step is written: continue with --resume")

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 1)


class StopOnSignal:
    """Records SIGTERM/SIGINT instead of dying; restores the previous handlers on exit."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self.signals = signals
        self.requested: int | None = None
        self._old: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt  # the second signal: stop now (no checkpoint is half-made)
        self.requested = signum

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)  # type: ignore[arg-type]
        self._old.clear()
