"""torchaudio.functional.resample (windowed-sinc, Hann window, lowpass_filter_width=6, rolloff=0.99) in numpy, so the
runtime resamples a clip as training did without torch. Hand-written because no torch-free library computes the same
kernel: a different resampler (scipy, soxr) changes every sample and so the model's inputs."""
from __future__ import annotations

import math

import numpy as np

WIDTH, ROLLOFF = 6, 0.99  # torchaudio's defaults, which modalities.load_audio uses


def _kernel(orig: int, new: int) -> tuple[np.ndarray, int]:
    base = min(orig, new) * ROLLOFF
    width = math.ceil(WIDTH * orig / base)
    idx = np.arange(-width, width + orig, dtype=np.float32)[None, :] / np.float32(orig)
    t = (np.arange(0, -new, -1, dtype=np.float32)[:, None] / np.float32(new) + idx) * np.float32(base)
    t = np.clip(t, -WIDTH, WIDTH)
    window = np.cos(t * np.float32(math.pi / WIDTH / 2)) ** 2
    t = t * np.float32(math.pi)
    with np.errstate(invalid="ignore", divide="ignore"):
        kernels = np.where(t == 0, np.float32(1.0), np.sin(t) / t)
    return (kernels * window * np.float32(base / orig)).astype(np.float32), width


def resample(wave: np.ndarray, orig: int, new: int) -> np.ndarray:
    """A mono float32 waveform [N] from rate `orig` to rate `new`."""
    if orig == new:
        return wave
    gcd = math.gcd(orig, new)
    orig, new = orig // gcd, new // gcd
    kernels, width = _kernel(orig, new)                        # [new, K]
    padded = np.pad(wave.astype(np.float32), (width, width + orig))
    steps = (len(padded) - kernels.shape[1]) // orig + 1
    frames = np.lib.stride_tricks.sliding_window_view(padded, kernels.shape[1])[::orig][:steps]  # [steps, K]
    out = (frames @ kernels.T).reshape(-1)                     # [steps * new], interleaved as torchaudio's
    return out[:math.ceil(new * len(wave) / orig)].astype(np.float32)
