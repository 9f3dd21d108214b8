"""Graceful stop on SIGINT/SIGTERM: the loop finishes its optimizer step, saves last.ckpt and exits.

In a job that submitit started (`hydra/launcher=slurm|submitit_slurm|submitit_local`) the signal submitit sends
before a SLURM pre-emption or time limit (SIGUSR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise) is caught the same
way; once last.ckpt is saved, `hand_over` gives it to submitit's own handler, which requeues the job.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time

log = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
    """Raised by the loop after it saved last.ckpt in response to SIGINT/SIGTERM."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def preemption_signal() -> int | None:
    """The signal submitit sends before pre-emption or the time limit, when this process is a submitit job."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)


def hand_over(signum: int) -> None:
    """After last.ckpt is saved: give submitit's pre-emption signal to the handler it installed before training
    (it requeues the job and exits); any other signal, or no such handler, returns."""
    handler = signal.getsignal(signum)
    if signum == preemption_signal() and callable(handler):
        log.warning("%s: last.ckpt saved; handing over to submitit to requeue this job", signal.Signals(signum).name)
        handler(signum, None)


ECHO_SECONDS = 2.0  # under torchrun: a repeat of the same signal this soon is the same request


class StopSignal:
    """Context manager: the first SIGINT/SIGTERM (or submitit's pre-emption signal) sets `requested`; a second one
    stops at once (default handler).

    Under torchrun (WORLD_SIZE > 1) a terminal's Ctrl-C reaches every worker twice, directly and once more from
    torchrun, which passes on what it receives: a repeat of the same signal within ECHO_SECONDS is taken as that
    echo, not as a second request."""

    def __init__(self):
        self.requested: int | None = None
        self._at = 0.0
        self._previous: dict[int, object] = {}

    def _echo(self, signum: int) -> bool:
        return (signum == self.requested and time.monotonic() - self._at < ECHO_SECONDS
                and int(os.environ.get("WORLD_SIZE", 1)) > 1)

    def _handle(self, signum, frame) -> None:
        if self._echo(signum):
            return
        if self.requested is not None:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)
            return
        self.requested, self._at = signum, time.monotonic()
        log.warning("%s received: finishing the current step and saving a checkpoint (send again to stop at once)",
                    signal.Signals(signum).name)

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM, preemption_signal()):
                if signum is not None:
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
