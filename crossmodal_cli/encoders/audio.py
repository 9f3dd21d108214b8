"""Audio encoders. Input: float waveform [B, N] at `sample_rate`.

Output: Encoded(pooled [B, D], tokens [B, frames, D]), one token per (downsampled) time frame.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torchaudio
from torch import nn

from crossmodal_cli.encoders import Encoded


class MelCNN(nn.Module):
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

    def log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, N] -> [B, 1, n_mels, frames], computed in fp32 even under autocast."""
        with torch.autocast(device_type=wave.device.type, enabled=False):
            return torch.log(self.mel(wave.float()) + 1e-6).unsqueeze(1)

    def forward(self, wave: torch.Tensor) -> Encoded:
        features = self.body(self.norm(self.log_mel(wave)))  # [B, C, f, t]
        tokens = features.mean(dim=2).transpose(1, 2)       # [B, t, C]
        return Encoded(pooled=tokens.mean(dim=1), tokens=tokens)
