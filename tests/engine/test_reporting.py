"""metrics.jsonl, the curves plot, the metrics table and resume truncation."""
from __future__ import annotations

import json
import math

from PIL import Image

from crossmodal_cli.engine.reporting import RunReporter, metrics_table, write_json


def record(epoch: int) -> dict:
    return {"epoch": epoch, "step": 10 * epoch, "train/loss": 1.0 / epoch, "val/loss": 1.1 / epoch,
            "val/accuracy": 0.5 + 0.1 * epoch, "seconds": 1.0, "samples_per_second": 100.0}


def test_epochs_go_to_jsonl_tensorboard_and_a_plot(tmp_path):
    reporter = RunReporter(tmp_path)
    for epoch in (1, 2, 3):
        reporter.epoch(record(epoch))
    reporter.close()
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    with Image.open(tmp_path / "curves.png") as img:
        assert img.size[0] > 500


def test_resuming_drops_records_written_after_the_checkpoint(tmp_path):
    reporter = RunReporter(tmp_path, tensorboard=False)
    for epoch in (1, 2, 3):
        reporter.epoch(record(epoch))
    RunReporter(tmp_path, tensorboard=False, resume_epoch=2)
    assert [json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1]


def test_json_is_strict_and_the_table_lists_every_split(tmp_path):
    write_json(tmp_path / "m.json", {"val": {"loss": math.nan, "accuracy": 0.5}})
    assert json.loads((tmp_path / "m.json").read_text()) == {"val": {"loss": None, "accuracy": 0.5}}
    table = metrics_table({"val": {"accuracy": 0.5, "loss": 1.0}, "test": {"accuracy": 0.25, "loss": 2.0}, "x": None})
    assert table.splitlines()[0].split() == ["metric", "val", "test"]
    assert table.splitlines()[1].split() == ["accuracy", "0.5000", "0.2500"]
    assert table.splitlines()[2].split() == ["loss", "1.0000", "2.0000"] and len(table.splitlines()) == 3


def test_the_epoch_line_fits_a_terminal():
    from crossmodal_cli.engine.reporting import epoch_line

    record = {"epoch": 3, "step": 78, "train/loss": 0.512345678, "val/accuracy": 0.91234567, "val/f1_macro": 0.9012345,
              "val/loss": 0.4987654, "lr": 0.000912345, "skipped_steps": 0, "seconds": 38.6735123,
              "samples_per_second": 68.2345}
    line = epoch_line(record, 10)
    assert line == "epoch 3/10 train 0.5123 | val accuracy 0.9123 f1_macro 0.9012 loss 0.4988 | lr 9.12e-04 38.7 s 68/s"
    assert len(line) <= 100
