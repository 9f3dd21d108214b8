"""The real console scripts, run as a user would, from a folder outside the repository, on tiny demo data."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pictures import assert_picture

from console import console

FAST = ["trainer.num_workers=0", "trainer.progress_bar=false"]


def run(command: str, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([*console(command), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=1800)
    if check and proc.returncode != 0:
        raise AssertionError(f"{command} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One cmtrain run on the demo data (all three modalities, 6 epochs), shared by the tests below."""
    work = tmp_path_factory.mktemp("work")
    proc = run("cmtrain", "trainer.max_epochs=6", "hydra.run.dir=run", *FAST, cwd=work)
    (work / "cmtrain.out").write_text(proc.stdout + proc.stderr)
    return work / "run"


def test_cmtrain_writes_the_run_folder(trained):
    for name in (".hydra/config.yaml", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "metrics.jsonl",
                 "metrics.json", "train.log", "labels.json", "data_report.json", "curves.png",
                 "tokenizer/tokenizer.json"):
        assert (trained / name).is_file(), name
    assert list((trained / "tensorboard").glob("events.out.tfevents.*"))
    epochs = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4, 5, 6]
    for key in ("step", "train/loss", "val/accuracy", "val/f1_macro", "val/loss", "seconds", "samples_per_second",
                "data_wait_fraction"):
        assert key in epochs[0], key
    metrics = json.loads((trained / "metrics.json").read_text())
    assert set(metrics["val"]) >= {"accuracy", "f1_macro", "loss"} and set(metrics["test"]) >= {"accuracy"}
    assert metrics["val"]["accuracy"] == max(e["val/accuracy"] for e in epochs)
    last = (trained.parent / "cmtrain.out").read_text().strip().splitlines()[-1]
    assert f"run folder {trained.resolve()}" in last and str((trained / "checkpoints/best.ckpt").resolve()) in last
    assert_picture(trained / "curves.png", (900, 350))


def test_tensorboard_has_throughput_final_metrics_and_hparams(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags, plugins = set(), set()
    for folder in {p.parent for p in (trained / "tensorboard").rglob("events.out.tfevents.*")}:
        events = EventAccumulator(str(folder)).Reload()
        tags |= set(events.Tags()["scalars"])
        plugins |= set(events.PluginTagToContent("hparams") or {})
    assert {"train/loss", "train/samples_per_second", "train/lr", "val/accuracy", "val/loss",
            "final/test/accuracy", "final/val/ece"} <= tags
    assert "_hparams_/experiment" in plugins and "_hparams_/session_start_info" in plugins


def test_fusion_beats_chance_on_the_demo(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["val"]["accuracy"] > 0.6 and metrics["test"]["accuracy"] > 0.6  # chance is 1/3


def test_cmeval_rebuilds_the_model_from_the_checkpoint_alone(trained, tmp_path):
    """Run from another folder, cmeval writes beside the checkpoint's run: RUN/eval-DATE_TIME/."""
    proc = run("cmeval", f"ckpt={trained / 'checkpoints/best.ckpt'}", *FAST[:1], cwd=tmp_path)
    out = proc.stdout + proc.stderr
    [folder] = trained.glob("eval-*")
    assert not (tmp_path / "outputs").exists() and str(folder) in out
    assert out.index("metric") < out.index("balanced_accuracy") < out.index("without")  # the compact tables
    evaluated = json.loads((folder / "metrics.json").read_text())["test"]
    trained_test = json.loads((trained / "metrics.json").read_text())["test"]
    assert evaluated["accuracy"] == pytest.approx(trained_test["accuracy"])
    assert evaluated["loss"] == pytest.approx(trained_test["loss"], rel=1e-4)
    assert {"ece", "balanced_accuracy", "auroc_macro", "f1_weighted", "precision_macro"} <= set(evaluated)
    assert set(evaluated) == set(trained_test)  # cmtrain's final evaluation and cmeval: one code path
    predictions = pd.read_csv(folder / "predictions.csv")
    assert list(predictions.columns) == ["row", "source", "line", "image", "text", "audio", "label", "predicted",
                                         "prob_alpha", "prob_beta", "prob_gamma"]
    assert len(predictions) == 180  # 15% of 1200
    assert predictions.filter(like="prob_").sum(axis=1).round(4).eq(1).all()
    assert (predictions["label"] == predictions["predicted"]).mean() == pytest.approx(evaluated["accuracy"])

    matrix = pd.read_csv(folder / "confusion_matrix.csv", index_col=0)
    assert int(matrix.to_numpy().sum()) == 180 and list(matrix.index) == ["alpha", "beta", "gamma"]
    assert np.trace(matrix.to_numpy()) == (predictions["label"] == predictions["predicted"]).sum()
    report = (folder / "report.txt").read_text().splitlines()
    assert [line.split()[0] for line in report[2:5]] == ["alpha", "beta", "gamma"]
    assert sum(int(line.split()[-1]) for line in report[2:5]) == 180
    for name in ("confusion_matrix.png", "calibration.png", "modality_importance.png"):
        assert_picture(folder / name)

    # modality importance on the demo: the label needs the image's shape and the colour (named by the text AND
    # the audio), so without the image the model is at chance; the text alone is redundant with the audio
    importance = json.loads((folder / "modality_importance.json").read_text())
    removed = importance["removed"]
    assert list(removed) == ["image", "text", "audio", "image+text", "image+audio", "text+audio"]
    assert removed["image"]["metrics"]["accuracy"] < 0.5 and removed["text+audio"]["metrics"]["accuracy"] < 0.5
    assert removed["image"]["drop"]["accuracy"] == pytest.approx(
        evaluated["accuracy"] - removed["image"]["metrics"]["accuracy"])
    assert importance["trained_with_missing"] is False and "modality_dropout=0" in out


def test_cmeval_on_another_csv(trained, tmp_path):
    demo = trained.parent / "data/demo"
    frame = pd.read_csv(demo / "demo.csv")
    other = frame[frame["split"] == "val"].drop(columns="split")
    for column in ("image_path", "audio_path"):  # absolute paths: the CSV lives elsewhere
        other[column] = [str(demo / p) for p in other[column]]
    other.to_csv(tmp_path / "other.csv", index=False)
    outside = run("cmeval", f"ckpt={trained / 'checkpoints/best.ckpt'}", "data.test_csv=other.csv",
                  "hydra.run.dir=ev", *FAST[:1], cwd=tmp_path, check=False)
    assert outside.returncode == 2 and "outside data.root" in outside.stderr  # the CSV points elsewhere
    run("cmeval", f"ckpt={trained / 'checkpoints/best.ckpt'}", "data.test_csv=other.csv",
        "data.allow_outside_root=true", "hydra.run.dir=ev", *FAST[:1], cwd=tmp_path)
    evaluated = json.loads((tmp_path / "ev/metrics.json").read_text())
    assert evaluated["rows"] == len(other)
    trained_val = json.loads((trained / "metrics.json").read_text())["val"]
    assert evaluated["test"]["accuracy"] == pytest.approx(trained_val["accuracy"])

    # the same rows with other column names: mapped with data.columns.* (the rest as in training)
    other.rename(columns={"image_path": "picture", "text": "caption", "label": "class"}).to_csv(
        tmp_path / "renamed.csv", index=False)
    run("cmeval", f"ckpt={trained / 'checkpoints/best.ckpt'}", "data.test_csv=renamed.csv", "data.allow_outside_root=true",
        "data.columns.image=picture", "data.columns.text=caption", "data.columns.label=class", "hydra.run.dir=ev2",
        *FAST[:1], cwd=tmp_path)
    renamed = json.loads((tmp_path / "ev2/metrics.json").read_text())
    assert renamed["test"]["accuracy"] == pytest.approx(evaluated["test"]["accuracy"])


def test_checkpoint_holds_everything_to_rebuild_the_model(trained):
    state = torch.load(trained / "checkpoints/best.ckpt", weights_only=True)
    assert state["task"]["classes"] == ["alpha", "beta", "gamma"] and state["modalities"] == ["image", "text", "audio"]
    assert "fusion:" in state["config"] and json.loads(state["tokenizer"])["tokenizer"]


def test_user_mistakes_end_in_one_line_without_traceback(tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("image_path,caption,label\nimg/a.png,hello,cat\n")
    proc = run("cmtrain", "data=csv", f"data.csv={csv}", "modalities=[image,text]", *FAST, "hydra.run.dir=r",
               cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {csv}: column 'text' (data.columns.text) not found; the CSV has columns: "
                      "image_path, caption, label"]
    proc = run("cmeval", f"ckpt={tmp_path / 'nope.ckpt'}", "hydra.run.dir=e", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "nope.ckpt: checkpoint not found" in proc.stderr


def test_a_finished_run_is_never_overwritten(trained):
    before = (trained / "checkpoints/best.ckpt").read_bytes()
    config = (trained / ".hydra/config.yaml").read_text()
    proc = run("cmtrain", f"hydra.run.dir={trained}", *FAST, cwd=trained.parent, check=False)
    assert proc.returncode == 2
    assert f"error: {trained} already holds a run (checkpoints/last.ckpt): continue it with resume={trained}" \
        in proc.stderr
    assert (trained / "checkpoints/best.ckpt").read_bytes() == before
    assert (trained / ".hydra/config.yaml").read_text() == config


def test_unimodal_run_on_the_demo_stays_near_chance(tmp_path):
    run("cmtrain", "modalities=[image]", "trainer.max_epochs=4", "hydra.run.dir=run", *FAST, cwd=tmp_path)
    metrics = json.loads((tmp_path / "run/metrics.json").read_text())
    assert metrics["val"]["accuracy"] < 0.5


def test_multirun_jobs_are_compared_and_never_overwritten(tmp_path):
    small = ["data.demo.num_samples=150", "trainer.max_epochs=1", *FAST]
    run("cmtrain", "-m", "fusion=concat,weighted", "hydra.sweep.dir=sweep", *small, cwd=tmp_path)
    jobs = [json.loads((tmp_path / f"sweep/{n}/metrics.json").read_text()) for n in (0, 1)]
    for job in jobs:
        counts = job["parameters"]
        parts = {k: v for k, v in counts.items() if k not in ("total", "trainable", "encoders")}
        assert counts["total"] == sum(parts.values()) == counts["trainable"]  # nothing frozen
        assert {f"encoder/{m}": c["total"] for m, c in counts["encoders"].items()} == {
            k: v for k, v in parts.items() if k.startswith("encoder/")}
    assert jobs[0]["parameters"]["fusion"] != jobs[1]["parameters"]["fusion"]
    assert set(jobs[1]["fusion"]) == {"weight/image", "weight/text", "weight/audio"}

    proc = run("cmsweep", str(tmp_path / "sweep"), "--compact", cwd=tmp_path)
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| `fusion` | val accuracy |")
    assert [row.split(" | ")[0] for row in rows[2:]] == ["| concat", "| weighted"]
    assert f"{jobs[1]['val']['accuracy']:.3f}" in rows[3] and "weight/image" in rows[3]

    record = (tmp_path / "sweep/0/.hydra/overrides.yaml").read_text()
    again = run("cmtrain", "-m", "fusion=concat", "seed=3", "hydra.sweep.dir=sweep", *small, cwd=tmp_path,
                check=False)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert (tmp_path / "sweep/0/.hydra/overrides.yaml").read_text() == record  # the job's record is kept
    assert list((tmp_path / "sweep/0/.hydra").glob("rerun-*/overrides.yaml"))


def test_cmsweep_names_an_unreadable_job_file(tmp_path):
    (tmp_path / "sweep/0/.hydra").mkdir(parents=True)
    (tmp_path / "sweep/0/.hydra/overrides.yaml").write_text("- fusion=concat\n")
    (tmp_path / "sweep/0/metrics.json").write_text("{not json")
    proc = run("cmsweep", str(tmp_path / "sweep"), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: {tmp_path / 'sweep/0/metrics.json'}: not a readable cmtrain file")
    missing = run("cmsweep", str(tmp_path / "nope"), cwd=tmp_path, check=False)
    assert missing.returncode == 2 and missing.stderr.strip().endswith("no such folder; pass the hydra.sweep.dir "
                                                                        "of a cmtrain -m run")
