"""Graceful stop on SIGINT/SIGTERM: the loop finishes its optimizer step, saves last.ckpt and exits."""
from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
    """Raised by the loop after it saved last.ckpt in response to SIGINT/SIGTERM."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignal:
    """Context manager: the first SIGINT/SIGTERM sets `requested`; a second one stops at once (default handler)."""

    def __init__(self):
        self.requested: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested is not None:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        self.requested = signum
        log.warning("%s received: finishing the current step and saving a checkpoint (send again to stop at once)",
                    signal.Signals(signum).name)

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
