"""Images beyond plain 8-bit RGB: 16-bit and float pixels, EXIF orientation, other modes, very large images; the
file check (probe_image) and the loader (load_image) agree on every one."""
from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.conftest import write_dataset
from crossmodal_cli.data import decoding, validation
from crossmodal_cli.data.modalities import load_image
from crossmodal_cli.pipeline.labels import read_labelled
from crossmodal_cli.tasks.classification import Classification
from crossmodal_cli.data.probes import probe_image
from crossmodal_cli.data.validation import check_inputs
from crossmodal_cli.errors import CrossmodalError

COLUMNS = {"image": "image_path", "text": "text", "audio": "audio_path", "label": "label", "split": "split"}
GRADIENT = np.arange(65536, dtype=np.uint16).reshape(256, 256)  # every 16-bit value once


def loaded(path, size: int = 256) -> np.ndarray:
    """load_image as [H, W, 3] uint8, with every Python warning turned into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load_image(str(path), size).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("name, make", [
    ("g16.png", lambda: Image.fromarray(GRADIENT)),                                    # mode I;16
    ("g32.tif", lambda: Image.fromarray(GRADIENT.astype(np.int32))),                   # mode I
    ("unit.tif", lambda: Image.fromarray((GRADIENT / 65535).astype(np.float32))),      # mode F in [0, 1]
    ("byte.tif", lambda: Image.fromarray((GRADIENT / 257).astype(np.float32))),        # mode F in [0, 255]
])
def test_high_bit_depth_images_are_scaled_to_8_bits_not_clipped_to_white(tmp_path, name, make):
    make().save(tmp_path / name)
    pixels = loaded(tmp_path / name)
    assert (pixels == 255).mean() < 0.01 and (pixels == 0).mean() < 0.01
    assert pixels.mean() == pytest.approx(127.5, abs=1)
    assert (pixels[..., 0] == pixels[..., 2]).all()  # grey stays grey


def test_16_bit_values_keep_their_top_8_bits(tmp_path):
    Image.fromarray(np.full((8, 8), 0x8A3F, np.uint16)).save(tmp_path / "v.png")
    assert (loaded(tmp_path / "v.png", 8) == 0x8A).all()


@pytest.mark.parametrize("mode", ["LA", "P", "CMYK", "1", "RGBA"])
def test_other_modes_still_load_without_warnings(tmp_path, mode):
    image = Image.new("RGB", (20, 20), (200, 30, 30)).convert(mode)
    if mode == "P":
        image.info["transparency"] = 0  # a palette with a transparent entry: Pillow warns on a direct RGB convert
    name = "x.jpg" if mode == "CMYK" else "x.png"
    image.save(tmp_path / name, **({"transparency": 0} if mode == "P" else {}))
    assert loaded(tmp_path / name, 16).shape == (16, 16, 3)


def test_exif_orientation_is_applied_before_resizing(tmp_path):
    stored = np.zeros((40, 80, 3), np.uint8)
    stored[:, 40:] = 255  # stored: dark left half, bright right half
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # orientation 6: show it turned 90 degrees clockwise, so the left half is on top
    image.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    pixels = loaded(tmp_path / "phone.jpg", 32).astype(float)
    assert pixels[:16].mean() < 30 and pixels[16:].mean() > 225
    Image.fromarray(stored).save(tmp_path / "plain.jpg", quality=95)
    plain = loaded(tmp_path / "plain.jpg", 32).astype(float)
    assert plain[:, :16].mean() < 30 and plain[:, 16:].mean() > 225


def test_an_unreadable_exif_block_leaves_the_image_as_stored(tmp_path, monkeypatch):
    Image.new("RGB", (10, 10), "blue").save(tmp_path / "x.jpg")

    def broken(image, **kw):
        raise SyntaxError("bad EXIF")
    monkeypatch.setattr(decoding.ImageOps, "exif_transpose", broken)
    assert loaded(tmp_path / "x.jpg", 8)[..., 2].mean() > 200


@pytest.fixture
def small_limit(monkeypatch):
    """Image.MAX_IMAGE_PIXELS lowered to 1,000: 40x40 is over the warning size, 50x50 over Pillow's hard limit."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)


def test_images_over_the_hard_limit_are_unusable_with_a_clear_reason(tmp_path, small_limit):
    Image.new("RGB", (50, 50)).save(tmp_path / "huge.png")
    reason = "image too large to decode (over 2 x PIL.Image.MAX_IMAGE_PIXELS = 2,000 pixels); downscale it"
    assert probe_image(str(tmp_path / "huge.png")) == (reason, False)
    with pytest.raises(CrossmodalError) as err:
        loaded(tmp_path / "huge.png", 16)
    assert str(err.value) == f"{tmp_path / 'huge.png'}: cannot read image ({reason})"


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_images_between_the_two_limits_load_without_warnings(tmp_path, small_limit, suffix):
    Image.new("RGB", (40, 40), "green").save(tmp_path / f"big.{suffix}")
    assert probe_image(str(tmp_path / f"big.{suffix}")) == (None, True)
    assert loaded(tmp_path / f"big.{suffix}", 16)[..., 1].mean() > 100


def test_check_inputs_counts_large_images_in_one_line_and_rejects_huge_ones(tmp_path, small_limit, caplog):
    csv = write_dataset(tmp_path, n=12)
    for i in (1, 2):
        Image.new("RGB", (40, 40)).save(tmp_path / "img" / f"{i}.png")
    Image.new("RGB", (50, 50)).save(tmp_path / "img" / "3.png")
    table = read_labelled(Classification(), csv=str(csv), columns=COLUMNS, modalities=["image", "text"],
                          val_fraction=0.25, test_fraction=0.25, seed=0)
    with warnings.catch_warnings(), caplog.at_level(logging.INFO, logger="crossmodal_cli.data.validation"):
        warnings.simplefilter("error")
        with pytest.raises(CrossmodalError, match=r"column 'image_path': 1 row \(line 5\) with unusable image input, "
                                                  r"e.g. line 5: .*3.png: image too large to decode"):
            check_inputs(table, COLUMNS, "error", workers=2)
    large = [r.getMessage() for r in caplog.records if "MAX_IMAGE_PIXELS" in r.getMessage()]
    assert large == ["2 image files have more than PIL.Image.MAX_IMAGE_PIXELS (1,000) pixels: they are used, but "
                     "decoding them is slow; downscale them to speed up loading"]


def truncated(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("name, make", [
    ("ok.png", lambda p: Image.new("RGB", (30, 30)).save(p)),
    ("g16.png", lambda p: Image.fromarray(GRADIENT).save(p)),
    ("f.tif", lambda p: Image.fromarray(np.ones((9, 9), np.float32)).save(p)),
    ("big.jpg", lambda p: Image.new("RGB", (40, 40)).save(p)),
    ("huge.jpg", lambda p: Image.new("RGB", (50, 50)).save(p)),
    ("cut.jpg", lambda p: (Image.new("RGB", (300, 200), "red").save(p, quality=90), truncated(p))),
    ("cut.png", lambda p: (Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 60, 3), np.uint8))
                           .save(p), truncated(p))),
    ("text.png", lambda p: p.write_text("not an image")),
])
def test_the_file_check_and_the_loader_agree(tmp_path, small_limit, name, make):
    make(tmp_path / name)
    reason, _ = validation.PROBES["image"](str(tmp_path / name))
    try:
        loaded(tmp_path / name, 16)
        loads = True
    except CrossmodalError:
        loads = False
    assert loads == (reason is None), reason
