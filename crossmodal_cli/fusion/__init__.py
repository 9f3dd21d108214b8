"""Fusion strategies: one module per file, one interface.

`Fusion(in_dims={modality: width}, **options)`; `forward(encoded: dict[str, Encoded]) -> [B, out_dim]`;
attribute `out_dim`. Modalities are iterated in sorted order so parameters line up across runs.
"""
