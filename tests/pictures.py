"""Checks of the PNG files the commands write (imported by the tests as `pictures`)."""
from __future__ import annotations

import numpy as np
from PIL import Image


def assert_picture(path, min_size=(300, 300)) -> np.ndarray:
    """A PNG of at least min_size pixels with real content (many colours, not one flat fill)."""
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape[1] >= min_size[0] and image.shape[0] >= min_size[1], image.shape
    assert image.std() > 20 and len(np.unique(image.reshape(-1, 3), axis=0)) > 50
    return image
