"""crossmodal_cli/config/requeue.py: only the same submitit job, started again in its own folder, continues a run there."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from crossmodal_cli.config.requeue import requeued_run

SUBMITIT = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def job_folder(folder: Path, job_id: str, last: bool = True) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra/hydra.yaml").write_text(f"hydra:\n  job:\n    name: train\n    id: '{job_id}'\n")
    if last:
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints/last.ckpt").write_bytes(b"x")
    return folder


def hydra_cfg(job_id: str, launcher: str = SUBMITIT):
    return OmegaConf.create({"launcher": {"_target_": launcher}, "job": {"id": job_id}})


def test_the_same_submitit_job_started_again_continues(tmp_path):
    assert requeued_run(job_folder(tmp_path / "0", "4242_0"), hydra_cfg("4242_0"))


def test_a_new_command_into_a_folder_with_a_run_is_not_a_requeue(tmp_path):
    folder = job_folder(tmp_path / "0", "4242_0")
    assert not requeued_run(folder, hydra_cfg("5151_0"))  # a user's new sweep: a new job id
    assert not requeued_run(folder, hydra_cfg("4242_0", "hydra._internal.core_plugins.basic_launcher.BasicLauncher"))


def test_a_job_stopped_before_its_first_checkpoint_starts_afresh(tmp_path):
    assert not requeued_run(job_folder(tmp_path / "0", "4242_0", last=False), hydra_cfg("4242_0"))
