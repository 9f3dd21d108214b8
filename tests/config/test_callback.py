"""SweepReport: a failed job's exception goes into its log as one ERROR line; the end of a sweep names cmsweep."""
from __future__ import annotations

import logging

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from crossmodal_cli.config.callback import SweepReport


def test_a_failed_job_gets_one_error_line_in_its_log(caplog):
    job = JobReturn()
    job.status, job._return_value = JobStatus.FAILED, RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")
    with caplog.at_level(logging.ERROR):
        SweepReport().on_job_end(OmegaConf.create({}), job)
    assert [r.getMessage() for r in caplog.records] == ["job failed: RuntimeError: CUDA out of memory."]


def test_the_end_of_a_sweep_prints_the_cmsweep_command(tmp_path, capsys):
    for n in (0, 1):
        (tmp_path / f"sweep dir/{n}/.hydra").mkdir(parents=True)
        (tmp_path / f"sweep dir/{n}/.hydra/overrides.yaml").write_text("- seed=1\n")
    SweepReport().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep dir")}}}))
    assert capsys.readouterr().out == (f"sweep finished: 2 job folders in {tmp_path / 'sweep dir'}; compare them with: "
                                       f"cmsweep '{tmp_path / 'sweep dir'}'\n")
