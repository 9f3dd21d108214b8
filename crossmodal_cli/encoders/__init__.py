"""Encoders: one module per modality, each an `Encoder` (encoders/base.py: the interface) turning its input into
an `Encoded` of a fixed `out_dim`."""
from __future__ import annotations

from crossmodal_cli.encoders.base import Encoded, Encoder, require_encoder, stem_blocks_rest

__all__ = ["Encoded", "Encoder", "require_encoder", "stem_blocks_rest"]
