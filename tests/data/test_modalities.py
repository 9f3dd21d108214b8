"""Loading one image or audio file, with the one-line errors for unreadable ones."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from crossmodal_cli.data.modalities import load_audio, load_image
from crossmodal_cli.errors import CrossmodalError


def test_image_is_rgb_uint8_resized(tmp_path):
    Image.fromarray(np.full((30, 50), 200, np.uint8), mode="L").save(tmp_path / "g.png")
    Image.fromarray(np.zeros((40, 40, 4), np.uint8), mode="RGBA").save(tmp_path / "a.png")
    Image.fromarray(np.full((60, 80, 3), 90, np.uint8)).save(tmp_path / "c.jpg", quality=95)
    for name in ("g.png", "a.png", "c.jpg"):
        image = load_image(str(tmp_path / name), 24)
        assert image.shape == (3, 24, 24) and image.dtype == torch.uint8
    assert load_image(str(tmp_path / "g.png"), 24).float().mean() == pytest.approx(200, abs=1)


def test_unreadable_image_names_the_file(tmp_path):
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(CrossmodalError, match=r"bad.png: cannot read image"):
        load_image(str(tmp_path / "bad.png"), 24)


def test_audio_is_mono_resampled_and_padded_or_cropped(tmp_path):
    t = np.arange(16000) / 16000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], 1).astype("float32")
    sf.write(tmp_path / "s.wav", stereo, 16000)
    wave = load_audio(str(tmp_path / "s.wav"), 8000, 0.5)
    assert wave.shape == (4000,) and wave.abs().max() <= 0.51  # mono mix halves the left channel
    padded = load_audio(str(tmp_path / "s.wav"), 8000, 2.0)
    assert padded.shape == (16000,) and padded[8000:].abs().max() == 0
    a = load_audio(str(tmp_path / "s.wav"), 8000, 0.5, np.random.default_rng(1))
    b = load_audio(str(tmp_path / "s.wav"), 8000, 0.5, np.random.default_rng(1))
    assert torch.equal(a, b) and a.shape == (4000,)


def test_unreadable_audio_names_the_file(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"RIFF")
    with pytest.raises(CrossmodalError, match=r"x.wav: cannot read audio"):
        load_audio(str(tmp_path / "x.wav"), 8000, 0.5)


def test_trained_tokenizer_is_identical_across_processes():
    """Seeded runs must be reproducible, so the vocabulary may not depend on hash-map order in a process."""
    import subprocess
    import sys

    code = ("from crossmodal_cli.data.modalities import train_wordpiece, tokenizer_to_json;"
            "texts = [f'the {c} thing number {i} is {w}' for i in range(40) for c in ('red', 'blue', 'teal')"
            " for w in ('here', 'there', 'nowhere')];"
            "print(tokenizer_to_json(train_wordpiece(texts, 45, True)))")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
               for _ in range(3)}
    assert len(outputs) == 1


def test_trained_tokenizer_spells_unseen_words_with_known_characters():
    from crossmodal_cli.data.modalities import train_wordpiece

    tok = train_wordpiece(["a red thing", "the blue one"], vocab_size=100, lowercase=True)
    pieces = tok.convert_ids_to_tokens(tok("Red BLUED")["input_ids"])
    assert pieces == ["[CLS]", "red", "blue", "##d", "[SEP]"]  # ##d seen in "red"


@pytest.mark.parametrize("size", [(500, 300), (300, 500)])
def test_shorter_side_center_crop_keeps_the_aspect_ratio(tmp_path, size):
    """A 500x300 photo: its shorter side is scaled to 32, then the centred 32x32 square is cut, so a centred circle
    stays round; squash would make it an ellipse."""
    from PIL import ImageDraw

    width, height = size
    image = Image.new("RGB", size, "black")
    r = min(width, height) // 2 - 10
    ImageDraw.Draw(image).ellipse((width // 2 - r, height // 2 - r, width // 2 + r, height // 2 + r), fill="white")
    path = tmp_path / "photo.png"
    image.save(path)
    crop = load_image(str(path), 32, "shorter_side_center_crop")[0].numpy() > 127
    squash = load_image(str(path), 32, "squash")[0].numpy() > 127
    rows, cols = crop.any(axis=1).sum(), crop.any(axis=0).sum()
    assert crop.shape == (32, 32) and abs(int(rows) - int(cols)) <= 1           # round
    srows, scols = squash.any(axis=1).sum(), squash.any(axis=0).sum()
    assert abs(int(srows) - int(scols)) >= 6                                      # squashed into an ellipse
