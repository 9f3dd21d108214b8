"""How one image or audio file becomes a tensor, and how texts become token ids.

An image or audio `source` is a path or an in-memory cell of a DataFrame (encoded bytes, or a PIL image:
`cells.py`); bytes decode exactly as the same file would.

Images stay uint8 until they reach the model (4x less to copy than float32; the image encoder normalises on the
device). The decoding itself is torch-free (decoding.py, shared with the file checks and the exported runtime);
audio is then a float32 mono waveform at a fixed rate and length; the audio encoder computes the spectrogram.
Text is tokenised once per batch by a Hugging Face fast tokenizer (see `Collate` in dataset.py).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torchaudio.functional as AF
from PIL import Image
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from crossmodal_cli.data.cells import describe_cell
from crossmodal_cli.data.decoding import AUDIO_ERRORS, image_pixels, read_audio
from crossmodal_cli.errors import CrossmodalError

SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                  "mask_token": "[MASK]"}


def load_image(source: str | bytes | Image.Image, size: int, resize: str = "squash") -> torch.Tensor:
    """`decoding.image_pixels` as a tensor: uint8 [3, size, size]."""
    return torch.from_numpy(image_pixels(source, size, resize))


def load_audio(source: str | bytes, sample_rate: int, seconds: float,
               rng: np.random.Generator | None = None) -> torch.Tensor:
    """Mono waveform at sample_rate, cropped or zero-padded to `seconds`: float32 [sample_rate * seconds].

    With `rng` (training) a long clip is cropped at a random offset, else from its start. A file that does not
    decode in full (`read_audio`) is an error, never a shorter or silent clip.
    """
    try:
        data, rate = read_audio(source)
    except AUDIO_ERRORS as err:
        raise CrossmodalError(f"{describe_cell(source)}: cannot read audio ({err})") from None
    wave = torch.from_numpy(data.mean(axis=1))
    if rate != sample_rate:
        wave = AF.resample(wave, rate, sample_rate)
    length = int(round(sample_rate * seconds))
    if wave.numel() > length:
        start = int(rng.integers(0, wave.numel() - length + 1)) if rng is not None else 0
        wave = wave[start:start + length]
    elif wave.numel() < length:
        wave = torch.nn.functional.pad(wave, (0, length - wave.numel()))
    return wave.contiguous()


def train_wordpiece(texts: Iterable[str], vocab_size: int, lowercase: bool) -> PreTrainedTokenizerFast:
    """A BERT-style WordPiece tokenizer ([CLS] text [SEP]) whose vocabulary is built from `texts` (the training
    split): the special tokens, every character seen (word-initial and ##continuation, so any word can be spelled),
    then the most frequent words, ties broken alphabetically.

    Built here rather than with tokenizers' WordPieceTrainer because that trainer's result depends on hash-map
    order and differs from process to process, which would make seeded runs irreproducible and resumed runs differ.
    """
    normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter(word for text in texts
                                  for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    pieces: Counter[str] = Counter()
    for word, count in words.items():
        pieces[word[0]] += count
        for char in word[1:]:
            pieces["##" + char] += count
    ranked = [*sorted(pieces, key=lambda t: (-pieces[t], t)),
              *sorted((w for w in words if len(w) > 1), key=lambda w: (-words[w], w))]
    vocab = list(SPECIAL_TOKENS.values()) + ranked[:max(vocab_size - len(SPECIAL_TOKENS), 0)]
    tok = Tokenizer(models.WordPiece(vocab={t: i for i, t in enumerate(vocab)}, unk_token=SPECIAL_TOKENS["unk_token"]))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    cls, sep = SPECIAL_TOKENS["cls_token"], SPECIAL_TOKENS["sep_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}", special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)


def load_pretrained_tokenizer(folder: str, key: str = "data.text.tokenizer") -> PreTrainedTokenizerBase:
    """A Hugging Face fast tokenizer from a local folder (never from the hub)."""
    if not Path(folder, "tokenizer.json").is_file() and not Path(folder, "vocab.txt").is_file():
        raise CrossmodalError(f"{key}={folder}: no tokenizer.json or vocab.txt in that folder (a local Hugging Face "
                              f"model or tokenizer folder is needed; no model hub is reached)")
    return AutoTokenizer.from_pretrained(folder, local_files_only=True, use_fast=True)


def tokenizer_to_json(tokenizer: PreTrainedTokenizerBase) -> str:
    """The tokenizer as one JSON string (safe to store in a checkpoint): its tokenizer.json plus special tokens."""
    return json.dumps({"tokenizer": tokenizer.backend_tokenizer.to_str(),
                       "special_tokens": {k: getattr(tokenizer, k) for k in SPECIAL_TOKENS}})


def tokenizer_from_json(text: str) -> PreTrainedTokenizerFast:
    stored = json.loads(text)
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(stored["tokenizer"]),
                                   **{k: v for k, v in stored["special_tokens"].items() if v is not None})
