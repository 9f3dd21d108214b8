"""`cmtrain -m hparams_search=optuna` (crossmodal_cli/search/): real trials, the monitored value optimised, pruning,
a study that survives Ctrl-C and a killed sweeper, and two processes sharing one study."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from console import console

# Searches on a task whose metric is minimised (maximise is the default; every task's direction is checked without
# running trials in tests/config/test_search.py).
REGRESSION = ["data=csv", "data.csv=colours/data.csv", "data.image_size=32", "task=regression",
              "data.columns.label=value", "trainer.progress_bar=false"]
ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}


@pytest.fixture
def colours(tmp_path):
    from crossmodal_cli.data.colours import write_colours

    write_colours(tmp_path / "colours")
    return tmp_path


def search(folder: Path, *args: str) -> list[str]:
    return [*console("cmtrain"), "-m", "hparams_search=optuna", *REGRESSION, *args, "hydra.sweep.dir=search"]


def study_of(folder: Path) -> optuna.Study:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(folder / "search/optuna.journal")))
    return optuna.load_study(study_name="crossmodal", storage=storage)


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 240) -> None:
    end = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, f"the search ended before {path} appeared: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < end, f"{path} did not appear"
        time.sleep(0.2)


def overrides(job: Path) -> dict[str, str]:
    return dict(o.split("=", 1) for o in yaml.safe_load((job / ".hydra/overrides.yaml").read_text()))


@pytest.mark.slow
def test_a_search_optimises_the_monitored_metric_and_prunes_a_hopeless_trial(colours):
    proc = subprocess.run(search(colours, "hydra.sweeper.n_trials=4", "trainer.max_epochs=2",
                                 "hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=1",
                                 "hydra.sweeper.pruner.n_warmup_steps=0"),
                          cwd=colours, capture_output=True, text=True, timeout=900, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p for p in (colours / "search").iterdir() if p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    finished, pruned = [], []
    for job in jobs:
        values = overrides(job)
        assert 1e-4 <= float(values["optimizer.lr"]) <= 3e-3
        assert 0 <= float(values["fusion.dropout"]) <= 0.3
        assert values["fusion"] in {"concat", "sum", "product", "gated", "bilinear"}
        assert values["trainer.batch_size"] in {"16", "32", "64"}
        metrics = json.loads((job / "metrics.json").read_text())
        epochs = len((job / "metrics.jsonl").read_text().splitlines())
        if "pruned_at_epoch" in metrics:
            assert metrics["pruned_at_epoch"] == epochs == 1  # stopped after its first epoch
            pruned.append(int(job.name))
        else:
            assert epochs == 2
            finished.append(metrics["val"]["mae"])
    study = study_of(colours)
    assert pruned and [t.number for t in study.trials if t.state == TrialState.PRUNED] == pruned
    result = yaml.safe_load((colours / "search/optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(min(finished))  # each trial's value is its monitored val/mae
    best = overrides(Path(result["best_folder"]))  # the searched values, as overrides for the same command
    assert {k: best[k] for k in result["best_params"]} == dict(o.split("=", 1) for o in result["best_overrides"])
    assert set(result["importances"]) == {"optimizer.lr", "optimizer.weight_decay", "fusion", "fusion.dropout",
                                          "trainer.batch_size"}
    assert "sweep finished: 4 job folders in search; compare them with: cmsweep search" in proc.stdout
    table = subprocess.run([*console("cmsweep"), "search"], cwd=colours, capture_output=True, text=True,
                           check=True).stdout
    assert len([line for line in table.splitlines() if line.startswith("| ") and "| pruned |" in line]) == len(pruned)


@pytest.mark.slow
def test_a_search_stopped_by_ctrl_c_and_then_killed_continues_with_no_trial_lost_or_repeated(colours):
    args = search(colours, "hydra.sweeper.n_trials=4", "trainer.max_epochs=3", "hydra.sweeper.grace_seconds=2",
                  "hydra.sweeper.heartbeat_seconds=0.5")
    run = lambda: subprocess.Popen(args, cwd=colours, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=ENV)
    first = run()  # Ctrl-C while trial 1 trains: it saves last.ckpt, the sweeper gives the trial back
    wait_for(colours / "search/1/checkpoints/last.ckpt", first)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err[-2000:]
    assert "continue with: the same cmtrain -m command" in err

    second = run()  # trial 1 again, from its checkpoint; then killed outright while trial 3 trains
    wait_for(colours / "search/3/checkpoints/last.ckpt", second)
    second.kill()
    second.communicate(timeout=60)
    time.sleep(2.5)  # the killed sweeper's lease runs out (grace_seconds=2)

    third = subprocess.run(args, cwd=colours, capture_output=True, text=True, timeout=900, env=ENV)
    assert third.returncode == 0, third.stderr[-3000:]
    study = study_of(colours)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    assert len(done) == 4 and [t.number for t in failed] == [1, 3]
    retries = {t.user_attrs["crossmodal:retry_of"]: t for t in done if "crossmodal:retry_of" in t.user_attrs}
    assert set(retries) == {1, 3}
    for number, retry in retries.items():  # the same parameters, in the interrupted trial's folder, resumed
        assert retry.params == study.trials[number].params
        assert retry.user_attrs["crossmodal:folder"] == str(number)
        assert "resuming" in (colours / f"search/{number}/train.log").read_text()
        assert len((colours / f"search/{number}/metrics.jsonl").read_text().splitlines()) == 3  # no epoch twice
    folders = sorted(t.user_attrs["crossmodal:folder"] for t in done)
    assert len(set(folders)) == 4 and all((colours / "search" / f / "metrics.json").is_file() for f in folders)
    assert sorted(p.name for p in (colours / "search").iterdir() if p.name.isdigit()) == folders
    result = yaml.safe_load((colours / "search/optimization_results.yaml").read_text())
    assert result["trials"] == {"complete": 4, "interrupted and run again": 2}


@pytest.mark.slow
def test_two_processes_share_one_study_and_run_n_trials_between_them(colours):
    args = search(colours, "hydra.sweeper.n_trials=5", "trainer.max_epochs=2")
    first = subprocess.Popen(args, cwd=colours, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    wait_for(colours / "search/0/.hydra", first)
    second = subprocess.Popen([*args, "hydra.sweeper.sampler.seed=7"], cwd=colours, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=ENV)
    outputs = [p.communicate(timeout=900) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], [e[-2000:] for _, e in outputs]
    study = study_of(colours)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5
    ran = [{int(line.split()[3]) for line in out.splitlines() if "[HYDRA] trial " in line and " in " in line}
           for out, _ in outputs]
    assert ran[0] and ran[1] and not ran[0] & ran[1] and ran[0] | ran[1] == set(range(5))
    assert sorted(p.name for p in (colours / "search").iterdir() if p.name.isdigit()) == list("01234")
