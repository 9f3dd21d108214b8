"""Audio encoders. Input: float waveform [B, N] at `sample_rate`.

Output: Encoded(pooled [B, D], tokens [B, frames, D]), one token per (downsampled) time frame.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torchaudio
from torch import nn

from crossmodal_cli.encoders.base import Encoded, Encoder, stem_blocks_rest
from crossmodal_cli.encoders.checkpointing import run_blocks
from crossmodal_cli.encoders.weights import (config_dict, first_line, folder_and_config, hf_blocks,
                                             hf_model)
from crossmodal_cli.errors import CrossmodalError

# Hugging Face model types that take a raw waveform (spectrogram models such as AST or Whisper do not)
WAVEFORM_MODEL_TYPES = ("wav2vec2", "wav2vec2-conformer", "hubert", "wavlm", "data2vec-audio", "unispeech",
                        "unispeech-sat", "sew", "sew-d")


class MelCNN(Encoder):
    """Log-mel spectrogram (fp32, on the model's device, batched) followed by Conv-BN-ReLU blocks.

    Each block halves time and frequency; the frequency axis is averaged out at the end, giving time tokens.
    """

    def __init__(self, *, sample_rate: int, n_mels: int, n_fft: int, hop_ms: float, channels: Sequence[int]):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels,
                                                        hop_length=max(1, int(sample_rate * hop_ms / 1000)))
        layers, c_in = [], 1
        for c_out in channels:
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2, ceil_mode=True)]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.norm = nn.BatchNorm2d(1)
        self.out_dim = c_in
        self.checkpointing = False

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each conv block's activations in the backward pass (encoders/checkpointing.py)."""
        self.checkpointing = True

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, N] -> [B, 1, n_mels, frames], computed in fp32 even under autocast."""
        with torch.autocast(device_type=wave.device.type, enabled=False):
            return torch.log(self.mel(wave.float()) + 1e-6).unsqueeze(1)

    def forward(self, wave: torch.Tensor) -> Encoded:
        active = self.checkpointing and self.training and torch.is_grad_enabled()
        features = run_blocks(self.body, self.norm(self.log_mel(wave)), 4, active)  # [B, C, f, t]
        tokens = features.mean(dim=2).transpose(1, 2)       # [B, t, C]
        return Encoded(pooled=tokens.mean(dim=1), tokens=tokens)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """[input norm, conv block 1, …, conv block n]."""
        blocks = [list(self.body[i:i + 4].parameters()) for i in range(0, len(self.body), 4)]
        return [list(self.norm.parameters()), *blocks]


class HFAudio(Encoder):
    """A pretrained Hugging Face waveform model (wav2vec2, HuBERT, WavLM, data2vec-audio, …) from a local folder.

    `AutoModel` + `AutoFeatureExtractor` with `local_files_only=True`. The feature extractor's normalisation
    (zero mean, unit variance per clip, when its do_normalize is set) runs here in fp32, on the model's device.
    tokens = the last hidden state [B, frames, D] (about 50 frames per second); pooled = their mean [B, D].
    In training mode the model applies its own SpecAugment masking and LayerDrop, as its config says.
    `architecture` (a stored `architecture()`): build the same model with random weights, read no file.
    """

    def __init__(self, *, pretrained: str, pooling: str, sample_rate: int, architecture: dict | None = None):
        super().__init__()
        key = "encoder.audio.pretrained"
        if pooling != "mean":
            raise CrossmodalError(f"encoder.audio.pooling={pooling}: use mean (waveform models have no [CLS] frame)")
        folder, architecture, config = folder_and_config(pretrained, architecture, key)
        if config.model_type not in WAVEFORM_MODEL_TYPES:
            raise CrossmodalError(f"{key}={pretrained}: model type {config.model_type} is not supported; HFAudio "
                                  f"takes waveform models: {', '.join(WAVEFORM_MODEL_TYPES)}")
        extractor = architecture["feature_extractor"] if architecture is not None else _extractor_settings(folder, key)
        if sample_rate != extractor["sampling_rate"]:
            raise CrossmodalError(f"data.audio.sample_rate={sample_rate}: {pretrained} was trained on "
                                  f"{extractor['sampling_rate']} Hz audio; set data.audio.sample_rate="
                                  f"{extractor['sampling_rate']}")
        self.model = hf_model(folder, config, key)
        self.extractor = dict(extractor)
        self.out_dim = int(config.hidden_size)

    def normalise(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, N] -> [B, N] fp32; per clip (x - mean) / sqrt(var + 1e-7) as the feature extractor does."""
        with torch.autocast(device_type=wave.device.type, enabled=False):
            wave = wave.float()
            if not self.extractor["do_normalize"]:
                return wave
            mean = wave.mean(dim=1, keepdim=True)
            var = wave.var(dim=1, correction=0, keepdim=True)
            return (wave - mean) / torch.sqrt(var + 1e-7)

    def forward(self, wave: torch.Tensor) -> Encoded:
        tokens = self.model(self.normalise(wave)).last_hidden_state  # [B, frames, D]
        return Encoded(pooled=tokens.mean(dim=1), tokens=tokens)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """[conv feature encoder + projection + positional conv, transformer layer 1, …, layer n, the rest]."""
        return stem_blocks_rest(self, hf_blocks(self.model))

    def architecture(self) -> dict | None:
        """{"model": config.to_dict(), "feature_extractor": {"sampling_rate", "do_normalize"}}, plain values."""
        return {"model": config_dict(self.model.config), "feature_extractor": dict(self.extractor)}


def _extractor_settings(folder, key: str) -> dict:
    """The settings of the folder's feature extractor (preprocessor_config.json) that forward() follows."""
    from transformers import AutoFeatureExtractor

    if not (folder / "preprocessor_config.json").is_file():
        raise CrossmodalError(f"{key}={folder}: no preprocessor_config.json (the feature extractor) in that folder")
    try:
        extractor = AutoFeatureExtractor.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as err:
        raise CrossmodalError(f"{key}={folder}: cannot read its feature extractor ({first_line(err)})") from None
    return {"sampling_rate": int(extractor.sampling_rate), "do_normalize": bool(getattr(extractor, "do_normalize",
                                                                                          False))}
