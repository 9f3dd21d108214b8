"""Dataset items, batch collation with one tokenizer call per batch, seeded per-item randomness."""
from __future__ import annotations

import torch

from crossmodal_cli.data.dataset import AudioSettings, Collate, EpochSampler, TableDataset, make_loader
from crossmodal_cli.data.modalities import tokenizer_from_json, tokenizer_to_json, train_wordpiece
from crossmodal_cli.pipeline.labels import read_labelled
from crossmodal_cli.tasks.classification import Classification

COLUMNS = {"image": "image_path", "text": "text", "audio": "audio_path", "label": "label", "split": "split"}


def dataset(csv, train=True, augment=True, frame=None):
    table = read_labelled(Classification(), csv=str(csv), columns=COLUMNS, modalities=None, val_fraction=0.25,
                          test_fraction=0.25, seed=0)
    frame = table.splits["train"] if frame is None else frame
    return TableDataset(frame, table.modalities, 16, AudioSettings(8000, 0.25), train=train, augment=augment, seed=3)


def test_items_have_fixed_shapes_and_dtypes(dataset_csv):
    item = dataset(dataset_csv)[(1, 0)]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, 16, 16)
    assert item["audio"].shape == (2000,) and item["audio"].dtype == torch.float32
    assert isinstance(item["text"], str) and item["present"] == {"image": True, "text": True, "audio": True}


def test_random_augmentation_depends_only_on_seed_epoch_and_row(dataset_csv):
    ds = dataset(dataset_csv)
    torch.manual_seed(0)
    a = ds[(1, 2)]
    torch.manual_seed(99)
    b = ds[(1, 2)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["audio"], b["audio"])
    epochs = [ds[(e, 2)]["image"] for e in range(2, 8)]
    assert any(not torch.equal(a["image"], img) for img in epochs)
    before = torch.get_rng_state()
    ds[(1, 2)]
    assert torch.equal(before, torch.get_rng_state())  # no draw from the global RNG


def test_missing_inputs_become_zeros_and_are_flagged(dataset_csv):
    ds = dataset(dataset_csv, train=False)
    ds.present["image"][0] = False
    item = ds[(0, 0)]
    assert item["present"]["image"] is False and item["image"].sum() == 0


def test_collate_tokenises_a_whole_batch_in_one_call(dataset_csv):
    ds = dataset(dataset_csv, train=False)
    tok = train_wordpiece(["caption number one two three"] * 5, vocab_size=60, lowercase=True)
    calls = []

    def counting(texts, **kw):
        calls.append(len(texts))
        return tok(texts, **kw)

    loader = make_loader(ds, Collate(counting, max_length=8), batch_size=3, shuffle=False, num_workers=0, seed=0,
                         pin_memory=False)
    batches = list(loader)
    assert calls == [len(b["target"]) for b in batches]
    first = batches[0]
    assert first["inputs"]["image"].shape == (3, 3, 16, 16) and first["inputs"]["audio"].shape == (3, 2000)
    assert first["inputs"]["text"]["input_ids"].shape[0] == 3 and first["present"]["text"].dtype == torch.bool


def test_tokenizer_round_trips_through_json():
    tok = train_wordpiece(["a red thing", "the blue one"], vocab_size=50, lowercase=True)
    again = tokenizer_from_json(tokenizer_to_json(tok))
    assert again("a blue thing")["input_ids"] == tok("a blue thing")["input_ids"]
    assert again.pad_token_id == tok.pad_token_id == 0


def test_epoch_sampler_resumes_mid_epoch():
    sampler = EpochSampler(10, shuffle=True, seed=1)
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.set_epoch(3, start=4)
    assert list(sampler) == full[4:] and len(sampler) == 6
    sampler.set_epoch(4)
    assert [i for _, i in sampler] != [i for _, i in full]
