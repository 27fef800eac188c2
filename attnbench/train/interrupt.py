"""Graceful stop on Ctrl-C, SIGTERM and SLURM's pre-timeout SIGUSR1.

The handler only records the request; the training loop finishes the current
step, saves a checkpoint and returns an `interrupted` result. A second Ctrl-C
raises KeyboardInterrupt at once (the user insists). Handlers can only be
installed from the main thread; elsewhere this is a no-op and Ctrl-C behaves as
Python's default.
"""
from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any, Optional

log = logging.getLogger(__name__)

# SIGUSR1 is what `sbatch --signal=USR1@90` sends before the time limit (absent on Windows).
SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGUSR1")) if s is not None)


class _SignalScope:
    """Installs `self._handle` for `signals` on enter (main thread only) and restores the old handlers on exit."""

    signals: tuple = SIGNALS

    def __init__(self) -> None:
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        raise NotImplementedError

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)  # None: set outside Python
        self._old.clear()


class GracefulStop(_SignalScope):
    """Context manager; `.requested` is the name of the first signal received, or None."""

    def __init__(self) -> None:
        super().__init__()
        self.requested: Optional[str] = None

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        name = signal.Signals(signum).name
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not self.requested:
            log.warning("%s received: stopping after this step and saving a checkpoint", name)
        self.requested = self.requested or name


class StopRequested(BaseException):
    """SIGTERM / SIGUSR1 outside the training loop (setup, bench): the job unwinds and records `interrupted`.
    A BaseException, like KeyboardInterrupt, so the bench's per-point `except Exception` does not swallow it."""


class RaiseOnStop(_SignalScope):
    """SIGTERM and SIGUSR1 raise StopRequested, so a job killed during the bench still writes its
    results.json and closes its W&B run. Ctrl-C keeps Python's KeyboardInterrupt; the training loop
    installs GracefulStop on top of this (finish the step, checkpoint) and restores it after."""

    signals = tuple(s for s in SIGNALS if s != signal.SIGINT)

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        raise StopRequested(signal.Signals(signum).name)
