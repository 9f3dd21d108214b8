"""The torch-free runtime of an exported bundle (cmexport): `load_bundle(DIR).predict(rows)` and `.embed(rows)`.

It needs only onnxruntime, numpy, pillow, tokenizers and soundfile (and pandas for the tables): importing it never
imports torch, transformers or Hydra (an import-linter contract and tests/test_runtime.py check it). The image,
text and audio preparation is the training pipeline's own (data/decoding.py, the stored tokenizer.json, a numpy
port of the resampler), so the bundle's predictions equal cmpredict's.
"""
from crossmodal_cli.runtime.bundle import Bundle, load_bundle

__all__ = ["Bundle", "load_bundle"]
