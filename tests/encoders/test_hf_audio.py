"""HFAudio: a pretrained Hugging Face waveform model (here a tiny wav2vec2 saved to a temporary folder)."""
from __future__ import annotations

import json

import pytest
import torch

from crossmodal_cli.encoders.audio import HFAudio
from crossmodal_cli.errors import CrossmodalError


def waves(batch: int = 2, samples: int = 4000) -> torch.Tensor:
    """Clips with different offsets and loudness, so per-clip normalisation matters."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, samples, generator=generator) * torch.tensor([[0.05], [0.5]]) + torch.tensor([[0.1], [0.0]])


def reference(model, extractor, wave: torch.Tensor) -> torch.Tensor:
    """The original model on the feature extractor's output: last hidden state [B, frames, D]."""
    inputs = extractor(list(wave.numpy()), sampling_rate=extractor.sampling_rate, return_tensors="pt")
    with torch.no_grad():
        return model(inputs["input_values"]).last_hidden_state


def test_outputs_equal_the_original_model_on_the_feature_extractor_output(wav2vec2_folder):
    folder, model, extractor = wav2vec2_folder
    encoder = HFAudio(pretrained=folder, pooling="mean", sample_rate=16000).eval()
    wave = waves()
    with torch.no_grad():
        out = encoder(wave)
    expected = reference(model, extractor, wave)
    assert encoder.out_dim == 32 and out.mask is None
    assert out.tokens.shape == expected.shape == (2, 399, 32)  # 4000 samples / 10 (two strided convs)
    assert torch.allclose(out.tokens, expected, atol=1e-5)
    assert torch.allclose(out.pooled, expected.mean(1), atol=1e-5)


def test_no_normalisation_when_the_extractor_does_none(tmp_path, make_wav2vec2):
    model, extractor = make_wav2vec2(tmp_path, do_normalize=False)
    encoder = HFAudio(pretrained=str(tmp_path), pooling="mean", sample_rate=16000).eval()
    wave = waves()
    with torch.no_grad():
        assert torch.allclose(encoder(wave).tokens, reference(model, extractor, wave), atol=1e-5)


def test_normalisation_runs_in_fp32_under_autocast(wav2vec2_folder):
    encoder = HFAudio(pretrained=wav2vec2_folder[0], pooling="mean", sample_rate=16000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert encoder.normalise(waves().bfloat16()).dtype == torch.float32


def test_wrong_sample_rate_is_one_line(wav2vec2_folder):
    with pytest.raises(CrossmodalError) as err:
        HFAudio(pretrained=wav2vec2_folder[0], pooling="mean", sample_rate=8000)
    assert str(err.value) == (f"data.audio.sample_rate=8000: {wav2vec2_folder[0]} was trained on 16000 Hz audio; "
                              f"set data.audio.sample_rate=16000")


def test_architecture_round_trip_rebuilds_without_the_folder(wav2vec2_folder):
    encoder = HFAudio(pretrained=wav2vec2_folder[0], pooling="mean", sample_rate=16000).eval()
    architecture = json.loads(json.dumps(encoder.architecture()))
    assert architecture["feature_extractor"] == {"sampling_rate": 16000, "do_normalize": True}
    rebuilt = HFAudio(pretrained="/gone", pooling="mean", sample_rate=16000, architecture=architecture).eval()
    rebuilt.load_state_dict(encoder.state_dict())
    wave = waves()
    with torch.no_grad():
        assert torch.equal(rebuilt(wave).tokens, encoder(wave).tokens)
    with pytest.raises(CrossmodalError, match="set data.audio.sample_rate=16000"):
        HFAudio(pretrained="/gone", pooling="mean", sample_rate=22050, architecture=architecture)


def test_unsupported_models_and_folders_are_one_line(tmp_path, minilm_folder, make_wav2vec2):
    with pytest.raises(CrossmodalError, match="model type bert is not supported; HFAudio takes waveform models: "
                                              "wav2vec2, wav2vec2-conformer, hubert, wavlm, data2vec-audio"):
        HFAudio(pretrained=minilm_folder, pooling="mean", sample_rate=16000)
    with pytest.raises(CrossmodalError, match="encoder.audio.pretrained=facebook/wav2vec2-base: not a local folder"):
        HFAudio(pretrained="facebook/wav2vec2-base", pooling="mean", sample_rate=16000)
    make_wav2vec2(tmp_path)
    (tmp_path / "preprocessor_config.json").unlink()
    with pytest.raises(CrossmodalError, match="no preprocessor_config.json"):
        HFAudio(pretrained=str(tmp_path), pooling="mean", sample_rate=16000)
    with pytest.raises(CrossmodalError, match="pooling=cls: use mean"):
        HFAudio(pretrained=str(tmp_path), pooling="cls", sample_rate=16000)
