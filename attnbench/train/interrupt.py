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


class GracefulStop:
    """Context manager; `.requested` is the name of the first signal received, or None."""

    def __init__(self) -> None:
        self.requested: Optional[str] = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        name = signal.Signals(signum).name
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not self.requested:
            log.warning("%s received: stopping after this step and saving a checkpoint", name)
        self.requested = self.requested or name

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)  # None: set outside Python
        self._old.clear()
