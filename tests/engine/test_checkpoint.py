"""Checkpoints: round trip, atomic replacement, one-line errors for damaged files, and no code execution on load."""
from __future__ import annotations

import io
import os
import pathlib
import pickle
import random

import pytest
import torch

from crossmodal_cli.engine.checkpoint import FORMAT, VERSION, load_checkpoint, save_checkpoint
from crossmodal_cli.errors import CrossmodalError


def sample_state() -> dict:
    return {"model": {"encoder.weight": torch.randn(3, 4), "head.bias": torch.zeros(2, dtype=torch.float16),
                      "steps": torch.tensor(7, dtype=torch.int64)},
            "optimizer": {"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": [{"lr": 1e-3, "params": [0]}]},
            "classes": ["cat", "dog", "ünïcode, with comma"], "config": "data:\n  csv: x.csv\n", "tokenizer": None,
            "epoch": 3, "best": 0.875, "finished": False, "nested": [[1, 2.5, None], {"deep": [torch.arange(3)]}]}


def assert_same(a, b) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b and type(a) is type(b)


def assert_one_line_error_naming(path, err: pytest.ExceptionInfo) -> None:
    message = str(err.value)
    assert str(path) in message and len(message.splitlines()) == 1


def leftovers(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_round_trip_keeps_tensors_and_plain_values(tmp_path):
    state = sample_state()
    save_checkpoint(state, tmp_path / "sub" / "last.ckpt")  # the folder is created
    loaded = load_checkpoint(tmp_path / "sub" / "last.ckpt")
    assert loaded["format"] == FORMAT and loaded["version"] == VERSION
    assert_same(state, {k: v for k, v in loaded.items() if k not in ("format", "version")})
    assert leftovers(tmp_path / "sub") == []


@pytest.mark.parametrize("crash", [OSError("No space left on device"), KeyboardInterrupt()])
def test_a_crash_mid_write_leaves_the_previous_checkpoint_and_no_temporary_file(tmp_path, monkeypatch, crash):
    path = tmp_path / "last.ckpt"
    save_checkpoint({"epoch": 1, "weights": torch.ones(1000)}, path)
    real_save = torch.save

    def half_then_crash(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
        f.flush()
        raise crash

    monkeypatch.setattr(torch, "save", half_then_crash)
    with pytest.raises(type(crash)):
        save_checkpoint({"epoch": 2, "weights": torch.zeros(1000)}, path)
    monkeypatch.setattr(torch, "save", real_save)
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["weights"], torch.ones(1000))
    assert leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_saving_again_replaces_the_file(tmp_path):
    path = tmp_path / "best.ckpt"
    save_checkpoint({"epoch": 1}, path)
    save_checkpoint({"epoch": 2}, path)
    assert load_checkpoint(path)["epoch"] == 2 and leftovers(tmp_path) == []




@pytest.mark.parametrize("damage", ["first half", "second half", "random bytes", "text", "empty"])
def test_damaged_files_give_a_one_line_error_naming_the_file(tmp_path, damage):
    path = tmp_path / "last.ckpt"
    save_checkpoint(sample_state(), path)
    data = path.read_bytes()
    damaged = {"first half": data[:len(data) // 2], "second half": data[len(data) // 2:],
               "random bytes": random.Random(0).randbytes(4096), "text": b"epoch: 3\nmodel: none\n",
               "empty": b""}[damage]
    path.write_bytes(damaged)
    with pytest.raises(CrossmodalError) as err:
        load_checkpoint(path)
    assert_one_line_error_naming(path, err)


def test_missing_file(tmp_path):
    with pytest.raises(CrossmodalError, match="checkpoint not found") as err:
        load_checkpoint(tmp_path / "nope.ckpt")
    assert_one_line_error_naming(tmp_path / "nope.ckpt", err)


class TouchOnLoad:
    """Unpickling this calls Path.touch(marker): the shape of a code-execution payload."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


class ShellOnLoad:
    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def write_torch(obj, path):
    torch.save(obj, path)


def write_torch_legacy(obj, path):
    torch.save(obj, path, _use_new_zipfile_serialization=False)


def write_pickle(obj, path):
    with open(path, "wb") as f:
        pickle.dump(obj, f)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("payload", [TouchOnLoad, ShellOnLoad])
@pytest.mark.parametrize("writer", [write_torch, write_torch_legacy, write_pickle])
def test_a_crafted_pickle_is_refused_without_running_its_code(tmp_path, payload, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    writer({"format": FORMAT, "version": VERSION, "model": payload(marker)}, path)
    with pytest.raises(CrossmodalError) as err:
        load_checkpoint(path)
    assert_one_line_error_naming(path, err)
    assert not marker.exists()
    with open(path, "rb") as f:  # the payload is real: an unsafe load runs it
        pickle.load(f) if writer is write_pickle else torch.load(f, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("content", [
    {"format": "something-else", "version": 1, "model": {}},
    {"version": 1, "model": {}},
    ["format", FORMAT],
    "crossmodal-checkpoint",
    None,
])
def test_a_file_that_is_not_a_crossmodal_checkpoint_is_refused(tmp_path, content):
    path = tmp_path / "other.ckpt"
    torch.save(content, path)
    with pytest.raises(CrossmodalError, match="not a crossmodal checkpoint") as err:
        load_checkpoint(path)
    assert_one_line_error_naming(path, err)


def test_a_newer_checkpoint_version_is_refused(tmp_path):
    path = tmp_path / "future.ckpt"
    torch.save({"format": FORMAT, "version": VERSION + 1}, path)
    with pytest.raises(CrossmodalError, match=f"version {VERSION + 1} is newer") as err:
        load_checkpoint(path)
    assert_one_line_error_naming(path, err)


def test_a_version_that_is_not_a_number_is_refused(tmp_path):
    path = tmp_path / "odd.ckpt"
    torch.save({"format": FORMAT, "version": "2"}, path)
    with pytest.raises(CrossmodalError) as err:
        load_checkpoint(path)
    assert_one_line_error_naming(path, err)


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"),
                                     RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64")])
def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, failure):
    from crossmodal_cli.engine.checkpoint import Checkpointer

    run = tmp_path / "run"
    checkpointer = Checkpointer(run / "checkpoints", keep_last_k=0, extra={"config": "x"})
    checkpointer.save({"epoch": 1, "weights": torch.ones(10)}, best=True)

    def disk_full(obj, f, *args, **kwargs):
        raise failure

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CrossmodalError) as err:
        checkpointer.save({"epoch": 2, "weights": torch.zeros(10)})
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"cannot write {run / 'checkpoints' / 'last.ckpt'} (")
    assert message.endswith(f"the checkpoints written before are intact; free some space and continue with: "
                            f"cmtrain resume={run}")
    monkeypatch.undo()
    assert load_checkpoint(run / "checkpoints" / "last.ckpt")["epoch"] == 1


def test_best_is_a_link_that_survives_the_next_save(tmp_path):
    from crossmodal_cli.engine.checkpoint import Checkpointer

    checkpointer = Checkpointer(tmp_path, keep_last_k=2, extra={})
    checkpointer.save({"epoch": 1, "weights": torch.ones(10)}, best=True, epoch_end=1)
    assert os.path.samefile(tmp_path / "last.ckpt", tmp_path / "best.ckpt")  # written once
    checkpointer.save({"epoch": 2, "weights": torch.zeros(10)}, epoch_end=2)
    assert load_checkpoint(tmp_path / "best.ckpt")["epoch"] == 1
    assert load_checkpoint(tmp_path / "epoch-001.ckpt")["epoch"] == 1
    assert load_checkpoint(tmp_path / "last.ckpt")["epoch"] == 2
    assert load_checkpoint(tmp_path / "epoch-002.ckpt")["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "epoch-001.ckpt", "epoch-002.ckpt",
                                                          "last.ckpt"]


def test_a_kill_between_the_writes_of_a_best_epoch_never_leaves_last_without_best(tmp_path, monkeypatch):
    """best.ckpt is written before last.ckpt: a process killed in between leaves the previous last.ckpt (resumed
    from the epoch before), never a last.ckpt naming a best epoch whose best.ckpt does not exist."""
    from crossmodal_cli.engine import checkpoint

    checkpointer = checkpoint.Checkpointer(tmp_path, keep_last_k=0, extra={})
    checkpointer.save({"epoch": 1}, best=False)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands in for SIGKILL after the first write

    monkeypatch.setattr(checkpoint, "_same_file", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save({"epoch": 2}, best=True)
    assert load_checkpoint(tmp_path / "best.ckpt")["epoch"] == 2
    assert load_checkpoint(tmp_path / "last.ckpt")["epoch"] == 1
