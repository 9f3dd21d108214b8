"""What the encoders read, decided once per run: the image size and resize mode, the audio sample rate and the
tokenizer. An encoder's YAML declares its input (encoder.image.image_size / resize, encoder.audio.sample_rate);
data.image_size / data.resize / data.audio.sample_rate override it."""
from __future__ import annotations

import dataclasses
import logging
from typing import Sequence

from crossmodal_cli.data.modalities import load_pretrained_tokenizer, train_wordpiece
from crossmodal_cli.encoders.clip import folder_input_spec
from crossmodal_cli.errors import CrossmodalError
from crossmodal_cli.settings.run import RunSettings

log = logging.getLogger(__name__)


def image_input(cfg: RunSettings) -> tuple[int, str]:
    """(size, resize mode) the images are prepared with: what the image encoder declares (encoder.image.image_size,
    encoder.image.resize; an encoder that declares neither but has a `pretrained` folder, as encoder/image=clip: its
    preprocessor_config.json), unless data.image_size / data.resize say otherwise."""
    encoder = cfg.encoder["image"]
    declared = (encoder.get("image_size"), encoder.get("resize"))
    if declared == (None, None) and encoder.get("pretrained"):
        declared = folder_input_spec(encoder["pretrained"], "encoder.image.pretrained")
    size = cfg.data.image_size if cfg.data.image_size is not None else declared[0]
    resize = cfg.data.resize or declared[1]
    if size is None or resize is None:
        raise CrossmodalError("data.image_size / data.resize: null means 'as the image encoder declares', but "
                              f"encoder.image ({encoder.get('_target_')}) declares no image_size / resize; set them")
    return int(size), str(resize)


def pin_image_input(cfg: RunSettings) -> RunSettings:
    """`cfg` with the image input an encoder takes from its folder written into encoder.image (image_size,
    resize), so the stored config rebuilds the run's inputs without that folder (cmeval, cmpredict, cmexport)."""
    encoder = cfg.encoder["image"]
    if "image" not in (cfg.modalities or ["image"]) or "image_size" in encoder or not encoder.get("pretrained"):
        return cfg
    size, resize = folder_input_spec(encoder["pretrained"], "encoder.image.pretrained")
    pinned = {**encoder, "image_size": size, "resize": resize}
    return dataclasses.replace(cfg, encoder=dataclasses.replace(cfg.encoder, image=pinned))


def audio_rate(cfg: RunSettings) -> int:
    """The sample rate clips are resampled to: what the audio encoder declares (encoder.audio.sample_rate),
    unless data.audio.sample_rate says otherwise."""
    rate = cfg.data.audio.sample_rate
    rate = rate if rate is not None else cfg.encoder["audio"].get("sample_rate")
    if rate is None:
        raise CrossmodalError(f"data.audio.sample_rate: null means 'as the audio encoder declares', but encoder.audio "
                              f"({cfg.encoder['audio'].get('_target_')}) declares no sample_rate; set it")
    return int(rate)


def build_tokenizer(cfg: RunSettings, train_texts: Sequence[str]):
    """The text encoder's own tokenizer (from its `pretrained` folder), else data.text.tokenizer (a local folder),
    else a WordPiece tokenizer trained on the training texts."""
    pretrained = cfg.encoder.text.get("pretrained")
    if pretrained:
        log.info("tokenizer: the text encoder's own, from %s", pretrained)
        return load_pretrained_tokenizer(pretrained, key="encoder.text.pretrained")
    text = cfg.data.text
    if text.tokenizer:
        log.info("tokenizer: %s (data.text.tokenizer)", text.tokenizer)
        return load_pretrained_tokenizer(text.tokenizer)
    log.info("tokenizer: WordPiece built from the training texts (data.text.vocab_size=%d%s)",
             text.vocab_size, ", lowercase" if text.lowercase else "")
    return train_wordpiece(train_texts, vocab_size=text.vocab_size, lowercase=text.lowercase)
