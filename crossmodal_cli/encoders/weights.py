"""Pretrained weights and configs from local files, for the encoders; nothing here reaches a model hub.

Two kinds of source:
- a Hugging Face model folder (config.json + weights), read with `local_files_only=True`;
- a state-dict file (.pth / .pt / .bin via `torch.load(weights_only=True)`, or .safetensors).

On the meta device (the start-up dry build in `build.check_buildable`) files are checked but not read.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from crossmodal_cli.errors import CrossmodalError

STATE_DICT_WRAPPERS = ("state_dict", "model", "model_state_dict")  # {"state_dict": {...}} as training scripts save


def on_meta_device() -> bool:
    """True inside `with torch.device("meta")`: build the module, read no weights."""
    return torch.empty(0).device.type == "meta"


def hf_folder(pretrained: str, key: str) -> Path:
    """The local Hugging Face model folder `pretrained`, or one line saying how to get one (no hub is reached)."""
    folder = Path(pretrained).expanduser()
    if not (folder / "config.json").is_file():
        raise CrossmodalError(f"{key}={pretrained}: not a local folder with a Hugging Face model (config.json); "
                              f"download it once (e.g. huggingface-cli download {pretrained} --local-dir DIR) "
                              f"and pass {key}=DIR")
    return folder


def hf_config(folder: Path | None, architecture: dict | None, key: str):
    """The model's `PretrainedConfig`: from `architecture` (a stored `config.to_dict()`) when given, else from
    the folder's config.json."""
    from transformers import CONFIG_MAPPING, AutoConfig

    if architecture is not None:
        architecture = plain(architecture)
        model_type = architecture.get("model_type")
        if model_type not in CONFIG_MAPPING:
            raise CrossmodalError(f"{key}: the stored architecture names an unknown model_type={model_type}")
        return CONFIG_MAPPING[model_type].from_dict(architecture)
    try:
        return AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as err:
        raise CrossmodalError(f"{key}={folder}: cannot read its config.json ({first_line(err)})") from None


def folder_and_config(pretrained: str, architecture: dict | None, key: str) -> tuple[Path | None, Any, Any]:
    """(the model folder, or None when a stored `architecture` rebuilds it; that architecture as plain values;
    the Hugging Face config read from the folder or from the architecture's "model" entry)."""
    folder = hf_folder(pretrained, key) if architecture is None else None
    architecture = plain(architecture)
    return folder, architecture, hf_config(folder, None if architecture is None else architecture["model"], key)


def plain(value: Any) -> Any:
    """`value` as plain dicts and lists: Hydra's instantiate hands run-time kwargs (a stored architecture) over
    as DictConfig, which transformers' configs do not expect."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


def config_dict(config) -> dict:
    """`config.to_dict()` as plain JSON values, without the machine-local `_name_or_path`."""
    values = {k: v for k, v in config.to_dict().items() if k != "_name_or_path"}
    return json.loads(json.dumps(values, default=str))


def hf_model(folder: Path | None, config, key: str, ignore_missing: Sequence[str] = ()) -> nn.Module:
    """`AutoModel` in fp32: random weights from `config` when `folder` is None or on the meta device, else the
    folder's weights; parameters the folder lacks (other than those starting with `ignore_missing`) are one line."""
    from transformers import AutoModel

    if folder is None or on_meta_device():
        return AutoModel.from_config(config, dtype=torch.float32)
    try:
        with _no_progress_bars():
            model, info = AutoModel.from_pretrained(str(folder), config=config, local_files_only=True,
                                                    dtype=torch.float32, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as err:
        raise CrossmodalError(f"{key}={folder}: cannot load the model's weights ({first_line(err)})") from None
    missing = sorted(k for k in info["missing_keys"] if not k.startswith(tuple(ignore_missing)))
    if missing:
        raise CrossmodalError(f"{key}={folder}: its weights lack {len(missing)} of the model's parameters "
                              f"({_few(missing)}); is it a complete {config.model_type} model folder?")
    return model


@contextlib.contextmanager
def _no_progress_bars():
    """transformers draws a "Loading weights" bar on stderr; library code prints nothing (DESIGN.md)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def hf_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated transformer blocks of a Hugging Face model, input to output: the first of the usual places
    (BERT's encoder.layer, wav2vec2's encoder.layers, DistilBERT's transformer.layer, …), else its largest
    ModuleList; [] when it has none."""
    for path in ("encoder.layer", "encoder.layers", "transformer.layer", "layers", "layer", "h", "encoder.block"):
        try:
            blocks = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(blocks, nn.ModuleList):
            return list(blocks)
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    return list(max(lists, key=lambda m: sum(p.numel() for p in m.parameters()))) if lists else []


def read_state_dict(path: str, key: str) -> dict[str, torch.Tensor] | None:
    """A state dict from a local file: .safetensors, or anything `torch.load(weights_only=True)` reads. A dict
    wrapping it under one of STATE_DICT_WRAPPERS is unwrapped, and a `module.` prefix (DDP) is removed.
    On the meta device the file is checked, not read: None."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise CrossmodalError(f"{key}={path}: no such file (a local .pth, .pt or .safetensors state dict)")
    if on_meta_device():
        return None
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(file), device="cpu")
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip, safetensors header errors: all mean "not a readable state dict"
        raise CrossmodalError(f"{key}={path}: cannot read it as a state dict ({first_line(err)}); "
                              f"save model.state_dict() with torch.save or safetensors") from None
    for wrapper in STATE_DICT_WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CrossmodalError(f"{key}={path}: not a state dict (a mapping of parameter names to tensors)")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_state(module: nn.Module, state: dict[str, torch.Tensor], source: str, what: str,
               drop: Iterable[str] = ()) -> None:
    """Load `state` into `module` strictly, after dropping the keys under the prefixes `drop` (the removed
    classifier head). Missing, unexpected or wrongly shaped keys are one line (`source: does not fit WHAT: …`)."""
    prefixes = tuple(drop)
    state = {k: v for k, v in state.items() if not any(k == p or k.startswith(p + ".") for p in prefixes)}
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    problems = [f"{len(keys)} {kind} keys ({_few(keys)})" for kind, keys in
                (("missing", missing), ("unexpected", unexpected), ("wrongly shaped", shapes)) if keys]
    if problems:
        raise CrossmodalError(f"{source}: does not fit {what}: {'; '.join(problems)}")
    module.load_state_dict(state)


def _few(keys: Sequence[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", …" if len(keys) > n else "")


def first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:200]
