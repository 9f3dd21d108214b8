"""The study on disk, and the lease a sweeper process holds on the trials it runs.

Storage: `hydra.sweeper.storage` null keeps the study in `SWEEP_DIR/optuna.journal` (Optuna's journal file: an
append-only log that several processes, also on several machines over NFS, can share through its file lock); a path
ending in `.journal` names another journal file; a URL (`sqlite:///…`, `postgresql://…`) names a database.

Leases, hand-written because Optuna's own heartbeat exists only for database storage and only inside
`study.optimize`, which a Hydra sweeper cannot use (the launcher runs the trials): every sweeper process writes the
time into each trial it is running every `heartbeat_seconds`. A RUNNING trial whose time is older than
`grace_seconds` belongs to a process that died (a crash, SIGKILL, a lost node); the next sweeper that starts marks it
failed and enqueues its parameters again, so the interrupted trial is retried (and counted once). A sweeper stopped by
Ctrl-C or SIGTERM does this for its own trials before it exits.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BEAT = "crossmodal:heartbeat"       # trial system attribute: when its sweeper last said it is alive
RETRY_OF = "crossmodal:retry_of"    # user attribute of a retried trial: the number of the trial it repeats


def storage(spec: str | None, sweep_dir: Path) -> Any:
    """The Optuna storage named by `hydra.sweeper.storage` (see the module docstring)."""
    from optuna.storages import RDBStorage
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if spec is None or not str(spec).strip() or (str(spec).endswith(".journal") and "://" not in str(spec)):
        path = Path(spec).expanduser() if spec else sweep_dir / "optuna.journal"
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    return RDBStorage(str(spec))


def retry_stale(study, grace_seconds: float) -> list[int]:
    """Mark failed the RUNNING trials whose lease has run out and enqueue their parameters again; returns their
    numbers. A trial with no heartbeat yet counts from its start."""
    from optuna.trial import TrialState

    now = time.time()
    stale = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        beat = trial.system_attrs.get(BEAT) or (trial.datetime_start.timestamp() if trial.datetime_start else now)
        if now - beat > grace_seconds:
            stale.append(trial)
    for trial in stale:
        give_back(study, trial.number, trial.params, "its sweeper stopped without a word")
    return [t.number for t in stale]


def give_back(study, number: int, params: dict, why: str) -> None:
    """Fail trial `number` (unless it has finished meanwhile) and enqueue its parameters for the next ask."""
    from optuna.trial import TrialState

    frozen = study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
    if frozen.state == TrialState.FAIL:
        study.enqueue_trial(params, user_attrs={RETRY_OF: number})
        log.warning("trial %d (%s) was interrupted (%s): it will run again", number, params, why)


class Lease:
    """A thread that writes the time into the trials this process runs, every `seconds`, until stopped."""

    def __init__(self, storage, seconds: float):
        self.storage, self.seconds = storage, seconds
        self.trials: dict[int, int] = {}  # number -> trial id
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="optuna-lease", daemon=True)

    def __enter__(self) -> "Lease":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def hold(self, trial) -> None:
        with self._lock:
            self.trials[trial.number] = trial._trial_id
        self.beat(trial._trial_id)

    def release(self, number: int) -> None:
        with self._lock:
            self.trials.pop(number, None)

    def beat(self, trial_id: int) -> None:
        try:
            self.storage.set_trial_system_attr(trial_id, BEAT, time.time())
        except Exception as err:  # the trial finished meanwhile (a finished trial's attributes are frozen)
            log.debug("heartbeat of trial id %d: %s", trial_id, err)

    def _run(self) -> None:
        while not self._stop.wait(self.seconds):
            with self._lock:
                ids = list(self.trials.values())
            for trial_id in ids:
                self.beat(trial_id)
