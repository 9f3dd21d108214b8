"""Tiny, randomly initialised CLIP and SigLIP folders as `save_pretrained` writes them (model, tokenizer, image
processor), for the tests of encoders/clip.py, retrieval and zero-shot (imported by the tests as `clip_folders`).
Nothing is downloaded: the tokenizer is a word-level one built here."""
from __future__ import annotations

from pathlib import Path

import torch

WORDS = ("a photo of the an and with on in red green blue circle square triangle shape colour picture caption "
         "number cat dog 0 1 2 3 4 5 6 7 8 9").split()
SPECIAL = ["<pad>", "<unk>", "<s>", "</s>"]


def tiny_tokenizer(max_length: int):
    """A lowercasing word-level fast tokenizer: <s> words </s>, padding with <pad> (id 0), unknown words <unk>."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(SPECIAL + WORDS)}, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", model_max_length=max_length)


def tiny_folder(folder: Path, family: str = "clip", seed: int = 0, positions: int = 16):
    """A 2-layer, 32-wide CLIP (projection 24) or SigLIP (32 px images, 8 px patches) saved into `folder` with its
    tokenizer and image processor; returns the model in eval mode."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, SiglipConfig, SiglipImageProcessor, SiglipModel

    torch.manual_seed(seed)
    layers = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    text = dict(vocab_size=len(SPECIAL + WORDS), max_position_embeddings=positions, **layers)
    vision = dict(image_size=32, patch_size=8, **layers)
    if family == "clip":
        model = CLIPModel(CLIPConfig(text_config={**text, "eos_token_id": 3, "bos_token_id": 2, "pad_token_id": 0},
                                     vision_config=vision, projection_dim=24))
        processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    else:
        model = SiglipModel(SiglipConfig(text_config={**text, "pad_token_id": 0, "eos_token_id": 3},
                                         vision_config=vision))
        with torch.no_grad():
            model.logit_scale.fill_(2.3)
            model.logit_bias.fill_(-3.0)
        processor = SiglipImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5, 0.4, 0.3],
                                         image_std=[0.2, 0.3, 0.4])
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    tiny_tokenizer(positions).save_pretrained(folder)
    return model
