"""Distributed data parallel pieces: the sharded epoch order, the rank helpers, and the training loop in two gloo
processes (forked here; the real command under torchrun is tests/e2e/test_ddp.py)."""
from __future__ import annotations

import json
import os
import socket
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from crossmodal_cli.data.dataset import EpochSampler, make_loader
from crossmodal_cli.engine import distributed
from crossmodal_cli.engine.checkpoint import Checkpointer, load_checkpoint
from crossmodal_cli.engine.evaluation import evaluate
from crossmodal_cli.engine.loop import Trainer
from crossmodal_cli.engine.reporting import RunReporter
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.tasks.classification import Classification
from tests.engine.test_loop import Points, Toy, collate, settings


def shards(size: int, world: int, epoch: int = 3, start: int = 0, **kwargs) -> list[list[int]]:
    """Each rank's rows of one epoch."""
    out = []
    for rank in range(world):
        sampler = EpochSampler(size, shuffle=True, seed=7, rank=rank, world_size=world, **kwargs)
        sampler.set_epoch(epoch, start=start)
        rows = [i for _, i in sampler]
        assert len(rows) == len(sampler)
        out.append(rows)
    return out


def global_batches(size: int, world: int, batch: int, start: int = 0, **kwargs) -> list[set[int]]:
    """The rows of each global batch: the k-th per-process batch of every rank together (drop_last, as the
    training loader: alone, the loader drops the last incomplete batch; sharded, the sampler already did)."""
    local = batch // world
    per_rank = [[rows[k:k + local] for k in range(0, len(rows) - local + 1, local)]
                for rows in shards(size, world, start=start, **kwargs)]
    return [set().union(*(set(r[k]) for r in per_rank)) for k in range(len(per_rank[0]))]


def test_one_process_gets_the_whole_permutation_as_before():
    alone = EpochSampler(23, shuffle=True, seed=7)
    alone.set_epoch(3)
    expected = torch.randperm(23, generator=torch.Generator().manual_seed(7 * 100003 + 3)).tolist()
    assert [i for _, i in alone] == expected == shards(23, 1)[0]


@pytest.mark.parametrize("world", [2, 3, 4])
def test_training_shards_cover_the_permutation_evenly(world):
    whole = shards(23, 1)[0]
    padded = shards(23, world, pad=True)
    assert len({len(rows) for rows in padded}) == 1                       # every rank as many batches
    assert sorted(set().union(*map(set, padded))) == list(range(23))
    assert sum(map(len, padded)) - 23 < world                              # padding: fewer than one row per rank
    cut = shards(23, world, whole_batches=4 * world)                       # drop_last: whole global batches
    assert sum(map(len, cut)) == 23 // (4 * world) * 4 * world
    assert sorted(sum(cut, [])) == sorted(whole[:sum(map(len, cut))])


def test_evaluation_shards_are_disjoint_without_padding():
    parts = [[i for _, i in EpochSampler(22, shuffle=False, seed=0, rank=r, world_size=3)] for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(22)) and {len(p) for p in parts} == {7, 8}


@pytest.mark.parametrize("world", [2, 4])
def test_a_global_batch_holds_the_rows_of_one_process_batch(world):
    assert global_batches(50, world, 8, whole_batches=8) == global_batches(50, 1, 8)
    assert len(global_batches(50, world, 8, whole_batches=8)) == 50 // 8


@pytest.mark.parametrize("saved_with,resumed_with", [(2, 1), (1, 2), (2, 4), (4, 2)])
def test_a_position_saved_with_one_world_size_resumes_with_another(saved_with, resumed_with):
    """The position in an epoch is counted in global samples: batch 3 of 8 rows = position 24 for any world size,
    and the rest of the epoch is the same global batches."""
    uninterrupted = global_batches(50, saved_with, 8, whole_batches=8)
    resumed = global_batches(50, resumed_with, 8, start=3 * 8, whole_batches=8)
    assert resumed == uninterrupted[3:]


def test_a_position_inside_a_processes_stride_is_refused():
    with pytest.raises(ValueError, match="multiple of the 2 processes"):
        EpochSampler(10, shuffle=True, seed=0, rank=0, world_size=2).set_epoch(1, start=3)


def test_helpers_alone_are_constants():
    assert not distributed.is_distributed() and distributed.is_main() and distributed.world_size() == 1
    assert distributed.local_batch(15) == 15 and distributed.agree([0, 2], torch.device("cpu")) == [0, 2]
    model = Toy()
    assert distributed.wrap(model, torch.device("cpu")) is model
    assert distributed.broadcast("x") == "x" and distributed.gather(3) == [3]
    assert distributed.Silent().epoch({"epoch": 1}, 3) is None
    assert distributed.hydra_overrides(["-m"]) == []


# ---- two gloo processes ----------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _trainer(folder, rank: int, world: int, nan_rows=frozenset()) -> Trainer:
    """The toy trainer of test_loop.py (global batch 8), sharded over `world` processes; rank 0 reports."""
    s = settings(batch_size=8, max_epochs=2)
    train = make_loader(Points(nan_rows=nan_rows), collate, batch_size=8 // world, shuffle=True, num_workers=0,
                        seed=0, pin_memory=False, drop_last=True, rank=rank, world_size=world, even=True)
    val = make_loader(Points(30), collate, batch_size=4, shuffle=False, num_workers=0, seed=0, pin_memory=False,
                      rank=rank, world_size=world)
    model = Toy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    reporter = RunReporter(folder, tensorboard=False) if rank == 0 else distributed.Silent()
    return Trainer(model, Classification.with_classes(2), train, val, optimizer, scheduler, reporter=reporter,
                   checkpointer=Checkpointer(folder / "checkpoints", 0, {}), **s)


def _worker(rank: int, world: int, port: int, root, nan_rows) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        folder = root / f"rank{rank}"  # each rank its own folder: rank 1's must stay empty
        folder.mkdir()
        trainer = _trainer(folder, rank, world, nan_rows)
        progress = trainer.fit()
        val, outputs = evaluate(trainer.model, trainer.val_loader, trainer.task, torch.device("cpu"), "fp32",
                                keep_outputs=True)
        with pytest.raises(CrossmodalError, match="divide evenly among the 2 processes"):
            distributed.local_batch(7)
        torch.save({"weights": trainer.model.state_dict(), "val": val, "skipped": progress.skipped_steps,
                    "indices": sorted(outputs.indices.tolist())}, root / f"result{rank}.pt")
        dist.barrier()  # both ranks done before either tears the group down
    finally:
        dist.destroy_process_group()


def run_ranks(worker, args: tuple, results: list, limit: float = 600, teardown: float = 30) -> None:
    """Fork two ranks of `worker` and wait for them; a rank raising fails the test. Once every rank has written its
    result, a rank still inside gloo's teardown after `teardown` seconds is ended: without the barrier before
    destroy_process_group in `_worker`, rank 0 (the store's host) was often left waiting there after both ranks had
    saved their results (2 of 3 runs here on 2026-12-04; once it hung make test for 20 minutes). The barrier fixed
    it (5 of 5 runs in 6 s); this bound keeps a recurrence from hanging the suite."""
    context = mp.start_processes(worker, args=args, nprocs=2, start_method="fork", join=False)
    started, finished = time.monotonic(), None
    while not context.join(timeout=1):
        now = time.monotonic()
        if finished is None and all(path.exists() for path in results):
            finished = now
        if finished is not None and now - finished > teardown:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            return
        assert now - started < limit, f"the ranks did not finish within {limit} s"


def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    """Same weights and validation metrics (to float rounding: tolerance 1e-5) as one process, a non-finite loss in
    one rank's shard skips the step on both, every val row counted once, and rank 1 writes nothing."""
    nan_rows = frozenset({5})
    (tmp_path / "alone").mkdir()
    alone = _trainer(tmp_path / "alone", 0, 1, nan_rows)
    progress = alone.fit()
    reference, _ = evaluate(alone.model, alone.val_loader, alone.task, torch.device("cpu"), "fp32")

    run_ranks(_worker, (2, _free_port(), tmp_path, nan_rows), [tmp_path / f"result{r}.pt" for r in range(2)])
    results = [torch.load(tmp_path / f"result{r}.pt", weights_only=False) for r in range(2)]
    for result in results:
        for key, value in alone.model.state_dict().items():
            torch.testing.assert_close(result["weights"][key], value, rtol=0, atol=1e-5)
        assert result["val"] == pytest.approx(reference, abs=1e-5)
        assert result["skipped"] == progress.skipped_steps == 2   # row 5, once an epoch: skipped on both ranks
        assert result["indices"] == list(range(30))
    assert sorted(p.name for p in (tmp_path / "rank1").iterdir()) == []
    records = [json.loads(line) for line in (tmp_path / "rank0/metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert load_checkpoint(tmp_path / "rank0/checkpoints/last.ckpt")["rng_ranks"][1] is not None


def test_under_torchrun_a_repeated_signal_at_once_is_the_echo_of_the_first(monkeypatch):
    """A terminal's Ctrl-C reaches each worker directly and again through torchrun: one request, not two."""
    import signal

    from crossmodal_cli.engine.interrupt import StopSignal

    stop = StopSignal()
    stop._handle(signal.SIGINT, None)
    assert stop.requested == signal.SIGINT
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert stop._echo(signal.SIGINT) and not stop._echo(signal.SIGTERM)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not stop._echo(signal.SIGINT)  # alone, a second Ctrl-C still stops at once


def test_world_size_without_torchrun_is_one_line(monkeypatch):
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(CrossmodalError, match="WORLD_SIZE=2: cannot join the other processes .*start cmtrain with "
                                              "torchrun, or unset WORLD_SIZE"):
        distributed.setup()
    assert not distributed.is_distributed()
