"""Low-rank adapters on any encoder, with the `peft` library: only the adapters train, the encoder's weights stay.

    add_adapters(encoder, lora, key)   lora: the YAML node {r, alpha, dropout, target_modules, method}, r > 0
    merge_adapters(module) -> int      fold every adapter into its base weight (export), back to plain layers
    has_adapters(module) -> bool
    default_targets(encoder) -> [name] the modules adapted when target_modules is null

peft's `inject_adapter_in_model` replaces each target layer (nn.Linear [.., D_in] -> [.., D_out], nn.Conv2d) by
its adapter layer in place; the encoder keeps its class, its forward and its `architecture()`, so the factory
applies the same adapters when it rebuilds a checkpoint and the stored state dict (base weights under
`….base_layer.weight`, adapters under `….lora_A.default.weight` etc.) loads as it was saved. Each method starts
as the identity (its second factor is zero), so adding adapters does not change the encoder's outputs.

Written here, because peft lacks it: the default target modules found generically by module type (peft's defaults
are a table of Hugging Face model types: none for timm, torchvision or our own encoders, and AutoGluon's regex for
timm misses ViT's fused `qkv`), and the merge of injected layers without a `PeftModel` (peft's `merge_and_unload`
lives on the model wrapper that `inject_adapter_in_model` does not create; the layers' own `merge()` is used).
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from torch import nn

from crossmodal_cli.errors import CrossmodalError

METHODS = ("lora", "loha", "lokr")  # peft adapter types that train, checkpoint, rebuild and merge for export


def _peft_config(method: str, r: int, alpha: float, dropout: float, targets: list[str] | str):
    """The peft config of `method`; `dropout` is LoRA's dropout on the adapter input, LoHa's/LoKr's rank dropout."""
    from peft import LoHaConfig, LoKrConfig, LoraConfig

    if method == "lora":
        return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets)
    if method == "loha":
        return LoHaConfig(r=r, alpha=alpha, rank_dropout=dropout, target_modules=targets)
    return LoKrConfig(r=r, alpha=alpha, rank_dropout=dropout, target_modules=targets)


def _repeated(container: nn.Module) -> bool:
    """A ModuleList/Sequential of two or more blocks of one class (transformer layers, ViT blocks)."""
    children = list(container.children())
    return (isinstance(container, (nn.ModuleList, nn.Sequential)) and len(children) >= 2
            and len({type(c) for c in children}) == 1 and any(True for _ in children[0].parameters()))


def default_targets(encoder: nn.Module) -> list[str]:
    """The full names of the layers adapted by default: every nn.Linear inside repeated blocks (a transformer's
    attention and MLP projections: BERT's query/key/value/dense, timm ViT's qkv/proj/fc1/fc2, CLIP's
    q_proj/k_proj/v_proj/out_proj/fc1/fc2); without any, every nn.Conv2d (CNNs). The output projection of an
    nn.MultiheadAttention is left out: that module reads its weight directly, past any adapter."""
    in_blocks = {id(m) for container in encoder.modules() if _repeated(container)
                 for block in container.children() for m in block.modules()}
    direct = {id(m.out_proj) for m in encoder.modules() if isinstance(m, nn.MultiheadAttention)}
    linear = [n for n, m in encoder.named_modules()
              if isinstance(m, nn.Linear) and id(m) in in_blocks and id(m) not in direct]
    return linear or [n for n, m in encoder.named_modules() if isinstance(m, nn.Conv2d)]


def _layers(encoder: nn.Module) -> list[str]:
    """Names of the encoder's leaf modules with weights, for the error that lists what there is."""
    return [n for n, m in encoder.named_modules() if n and not list(m.children()) and any(True for _ in
                                                                                           m.parameters())]


def _format(value: Any) -> str:
    return f"[{','.join(map(str, value))}]" if isinstance(value, (list, tuple)) else str(value)


def _matches(config, names: list[str]) -> list[str]:
    from peft.tuners.tuners_utils import check_target_module_exists

    return [n for n in names if check_target_module_exists(config, n)]


def add_adapters(encoder: nn.Module, lora: Mapping[str, Any], key: str) -> nn.Module:
    """Inject `lora["method"]` adapters of rank `lora["r"]` (> 0) into `encoder` in place and freeze everything else
    in it; `key` ("encoder.text.lora") names the settings in one-line errors."""
    from peft import inject_adapter_in_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    method, r, given = lora["method"], lora["r"], lora["target_modules"]
    if method not in METHODS:
        raise CrossmodalError(f"{key}.method={method}: use one of {', '.join(METHODS)}")
    if not isinstance(r, int) or r < 0:
        raise CrossmodalError(f"{key}.r={r}: must be a whole number >= 0 (0 = no adapters)")
    if isinstance(given, str):
        try:
            re.compile(given)
        except re.error as err:
            raise CrossmodalError(f"{key}.target_modules={given}: not a regular expression ({err})") from None
    what = type(encoder).__name__
    targets = list(given) if isinstance(given, (list, tuple)) else given
    if targets is None:
        targets = default_targets(encoder)
        if not targets:
            raise CrossmodalError(f"{key}.target_modules=null: {what} has no nn.Linear in repeated blocks and no "
                                  f"nn.Conv2d to adapt; name its layers, e.g. {key}.target_modules=[{','.join(_layers(encoder)[:3])}]")
    config = _peft_config(method, r, float(lora["alpha"]), float(lora["dropout"]), targets)
    names = [n for n, _ in encoder.named_modules() if n]
    if not _matches(config, names):
        found = _layers(encoder)
        raise CrossmodalError(f"{key}.target_modules={_format(given)}: matches no module of {what}; modules found: "
                              f"{', '.join(found[:6])}{', …' if len(found) > 6 else ''} ({len(found)} in all)")
    try:
        inject_adapter_in_model(config, encoder)
    except (ValueError, TypeError, RuntimeError) as err:
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CrossmodalError(f"{key}.target_modules={_format(given)}: {method} cannot adapt a module of {what} "
                              f"({detail}); name nn.Linear or nn.Conv2d layers") from None
    adapters = {id(p) for layer in encoder.modules() if isinstance(layer, BaseTunerLayer)
                for name in layer.adapter_layer_names for p in getattr(layer, name).parameters()}
    for p in encoder.parameters():
        p.requires_grad_(id(p) in adapters)
    encoder.train(encoder.training)  # the new layers (their dropout) in the encoder's mode
    return encoder


def has_adapters(module: nn.Module) -> bool:
    """Whether any peft adapter layer is inside `module`."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in module.modules())


def merge_adapters(module: nn.Module) -> int:
    """Fold each adapter into its base layer's weight (W + scale x ΔW) and put the base layer back in its place, so
    the module holds plain nn.Linear/nn.Conv2d layers again (an ONNX graph without adapter operations). Returns
    the number of layers merged."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [(name, m) for name, m in module.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in layers:
        layer.merge()
        module.set_submodule(name, layer.get_base_layer())
    return len(layers)
