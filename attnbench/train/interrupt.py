"""Graceful stop on Ctrl-C, SIGTERM and SLURM's pre-timeout SIGUSR1.

The handler only records the request; the training loop finishes the current
step, saves a checkpoint and returns an `interrupted` result. After the last step
(the final evaluation) there is no step to finish: a signal then stops at once
(`GracefulStop.at_once`). A second Ctrl-C raises KeyboardInterrupt at once (the
user insists). Handlers can only be installed from the main thread; elsewhere this
is a no-op and Ctrl-C behaves as Python's default.

Scopes nest: a SLURM attempt runs inside `AttemptScope` (sweep/slurm_launcher.py), the job
inside `RaiseOnStop` (job.py), training inside `GracefulStop`. AttemptScope replaces submitit's
own handlers (its USR1 handler would requeue the job by itself, beside attnbench's decision):
a signal before the job's scope is honoured when that scope opens; after it (the continuation
decision is made, W&B closes) it is logged and changes nothing.
"""
from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Any, Iterator, Optional

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
        self._at_once = False

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        name = signal.Signals(signum).name
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if not self.requested:
            log.warning("%s received: %s", name, "stopping now" if self._at_once else
                        "stopping after this step and saving a checkpoint")
        self.requested = self.requested or name
        if self._at_once:
            raise StopRequested(name)

    @contextmanager
    def at_once(self) -> Iterator[None]:
        """Inside, a signal raises StopRequested at once (the final evaluation: training is over and
        checkpointed, no step to finish); one already received raises on entry."""
        self._at_once = True
        try:
            if self.requested:
                raise StopRequested(self.requested)
            yield
        finally:
            self._at_once = False


class StopRequested(BaseException):
    """SIGTERM / SIGUSR1 outside the training loop (setup, bench): the job unwinds and records `interrupted`.
    A BaseException, like KeyboardInterrupt, so the bench's per-point `except Exception` does not swallow it."""


class RaiseOnStop(_SignalScope):
    """SIGTERM and SIGUSR1 raise StopRequested, so a job killed during the bench still writes its
    results.json and closes its W&B run. Ctrl-C keeps Python's KeyboardInterrupt; the training loop
    installs GracefulStop on top of this (finish the step, checkpoint) and restores it after."""

    signals = tuple(s for s in SIGNALS if s != signal.SIGINT)

    def __enter__(self):
        super().__enter__()
        if _ATTEMPT["early"]:  # AttemptScope received it before this job's own scope opened
            early, _ATTEMPT["early"] = _ATTEMPT["early"], None
            self.__exit__()  # `with` calls __exit__ only after __enter__ returned
            raise StopRequested(early)
        return self

    def __exit__(self, *exc: Any) -> None:
        _ATTEMPT["job_ended"] = True
        super().__exit__(*exc)

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        raise StopRequested(signal.Signals(signum).name)


# What AttemptScope saw: a signal before the job's RaiseOnStop opened; whether that scope has closed.
_ATTEMPT: dict = {"early": None, "job_ended": False}


class AttemptScope(_SignalScope):
    """Around one SLURM attempt (sweep/slurm_launcher.py): SIGTERM and SIGUSR1 outside the job's own
    scopes are attnbench's, not submitit's. Before the job opened RaiseOnStop, the signal is kept and
    the job stops as soon as it does; after the job's scope closed (its result written, the
    continuation decided, W&B closing) it is only logged: SLURM ends the process when it must."""

    signals = RaiseOnStop.signals

    def __init__(self, restore: bool = True) -> None:
        super().__init__()
        self.restore = restore  # False: the process ends after the attempt; submitit's handlers stay off

    def __enter__(self):
        _ATTEMPT.update(early=None, job_ended=False)
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        _ATTEMPT["job_ended"] = True
        if self.restore:
            super().__exit__(*exc)

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        name = signal.Signals(signum).name
        if _ATTEMPT["job_ended"]:
            log.warning("%s received after the job ended: its result stands", name)
        elif not _ATTEMPT["early"]:
            log.warning("%s received before the job started: it stops when it starts", name)
            _ATTEMPT["early"] = name
