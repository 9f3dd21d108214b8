"""Gradient checkpointing on any encoder: activations inside its blocks are recomputed in the backward pass instead
of kept from the forward pass (less memory, a slower step; the gradients are the same).

    enable_checkpointing(encoder, key)   key names the YAML setting, for the one-line error

The encoder's family is found by what it contains, so a new encoder built on one of these needs no change here:
- our own encoders declare `enable_gradient_checkpointing()` (TinyCNN, MelCNN, ResNet, TorchvisionImage): they run
  their blocks through `recompute`;
- Hugging Face models inside the encoder (`PreTrainedModel`: HFText, BertText, HFAudio, CLIP/SigLIP towers): their
  own `activation_checkpointing_enable` (older transformers: `gradient_checkpointing_enable`) with
  `use_reentrant=False`; it acts in train mode only;
- timm models: their own `set_grad_checkpointing()`.
An encoder with none of these is one line.

`recompute` is torch.utils.checkpoint (non-reentrant) plus what torch lacks: BatchNorm's running statistics are
restored after the recomputation, which runs the block in train mode a second time and would otherwise move them
twice per step. (timm's own checkpointing of its BatchNorm CNNs does move them twice; transformers use LayerNorm.)
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from crossmodal_cli.errors import CrossmodalError


def recompute(block: nn.Module, *inputs: torch.Tensor, forward: Callable | None = None, **options) -> torch.Tensor:
    """`block(*inputs)` (or `forward(*inputs)`, the block's own forward) with its activations recomputed in the
    backward pass; BatchNorm statistics of the block are updated once. The caller decides when (train mode with
    gradients on)."""
    norms = [m for m in block.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]
    return checkpoint(forward or block, *inputs, use_reentrant=False,
                      context_fn=functools.partial(_contexts, tuple(norms)), **options)


def _contexts(norms: tuple[nn.Module, ...]):
    return contextlib.nullcontext(), _statistics_kept(norms)


@contextlib.contextmanager
def _statistics_kept(norms: tuple[nn.Module, ...]):
    """Around the recomputation: the BatchNorm buffers as they were before it."""
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (mean, var, count) in zip(norms, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(count)


def run_blocks(body: nn.Sequential, x: torch.Tensor, block_size: int, active: bool) -> torch.Tensor:
    """`body(x)`; when `active`, each run of `block_size` layers (one conv block) is recomputed in the backward."""
    if not active:
        return body(x)
    for start in range(0, len(body), block_size):
        x = recompute(body[start:start + block_size], x)
    return x


class _Recomputed:
    """A block's forward that recomputes when its block trains with gradients on; installed as the instance's
    `forward`, so state-dict keys and forward hooks stay as they were (a wrapper module would rename the keys)."""

    def __init__(self, block: nn.Module):
        self.block = block

    def __call__(self, *inputs: torch.Tensor, **options) -> torch.Tensor:
        own = functools.partial(type(self.block).forward, self.block)
        if self.block.training and torch.is_grad_enabled():
            return recompute(self.block, *inputs, forward=own, **options)
        return own(*inputs, **options)


def recompute_blocks(blocks: Iterable[nn.Module]) -> None:
    """Make each of `blocks` (submodules taking tensors) recompute its activations in the backward pass."""
    for block in blocks:
        block.forward = _Recomputed(block)


def enable_checkpointing(encoder: nn.Module, key: str) -> None:
    """Turn gradient checkpointing on in `encoder` (see the module docstring), or one line when it cannot."""
    own = getattr(encoder, "enable_gradient_checkpointing", None)
    if callable(own):
        own()
        return
    from transformers import PreTrainedModel

    models = [m for m in encoder.modules() if isinstance(m, PreTrainedModel)]
    inner = {id(c) for m in models for c in m.modules() if c is not m}
    outer = [m for m in models if id(m) not in inner]  # a CLIP model holds its towers: enable it once
    if outer:
        for model in outer:
            if not model.supports_gradient_checkpointing:
                raise CrossmodalError(f"{key}=true: {type(model).__name__} does not support gradient checkpointing "
                                      f"in transformers; set {key}=false")
            enable = getattr(model, "activation_checkpointing_enable", None)  # the newer name
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return
    timm_models = [m for m in encoder.modules() if callable(getattr(m, "set_grad_checkpointing", None))]
    if timm_models:
        try:
            timm_models[0].set_grad_checkpointing(True)
        except (AssertionError, RuntimeError, AttributeError) as err:  # RuntimeError: also "not implemented"
            raise CrossmodalError(f"{key}=true: {type(timm_models[0]).__name__} cannot checkpoint its blocks "
                                  f"({str(err).strip() or type(err).__name__}); set {key}=false") from None
        return
    raise CrossmodalError(f"{key}=true: {type(encoder).__name__} has no blocks to checkpoint (neither a Hugging Face "
                          f"nor a timm model, no enable_gradient_checkpointing method); set {key}=false")
