"""Adapter-only checkpoints in PEFT's layout: ``adapter_config.json`` + ``adapter_model.safetensors``.

Also the tensor loading every checkpoint of the package uses (recognisers too): safetensors files that are
unreadable or hold non-finite weights are rejected, naming the file and the tensor.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from fvae_asr.adapters.config import config_from_dict
from fvae_asr.adapters.model import ADAPTER_STATE_ATTR, adapter_layers, adapter_state, inject
from fvae_asr.files import read_json, write_atomically, write_json

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"


def adapter_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Adapter weights (not the wrapped base layers) plus every tensor of the trainable modules."""
    state = adapter_state(model)
    keep = tuple(f"{name}." for name in state.adapted_modules + state.trainable_modules)
    skip = tuple(f"{name}.base." for name in state.adapted_modules)
    trainable = tuple(f"{name}." for name in state.trainable_modules)
    return {
        key: value
        for key, value in model.state_dict().items()
        if key.startswith(keep) and (not key.startswith(skip) or key.startswith(trainable))
    }


def base_state_dict(module: nn.Module) -> dict[str, Tensor]:
    """The state dict the module had before ``inject``: adapter weights dropped, wrapped layers unwrapped.

    Works on any submodule of an adapted model, e.g. to save the backbone in its original format.
    """
    layers = set(adapter_layers(module))
    owners = {name for name, m in module.named_modules() if m in layers}
    base_state = {}
    for key, value in module.state_dict().items():
        owner = next((name for name in owners if key.startswith(f"{name}.")), None)
        if owner is None:
            base_state[key] = value
        elif key.startswith(f"{owner}.base."):
            base_state[f"{owner}.{key[len(owner) + len('.base.'):]}"] = value
    return base_state


def check_finite(tensors: dict[str, Tensor], origin: str | Path) -> None:
    """Every floating-point tensor must be finite: NaN or infinite weights make a model output garbage."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{origin}: tensor '{name}' has non-finite (NaN or infinite) values")


def load_tensors(path: Path, what: str) -> dict[str, Tensor]:
    """A safetensors file's tensors; a missing or unreadable file, or a non-finite weight, is an error naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"cannot read {what} {path}: {err}") from err
    check_finite(tensors, path)
    return tensors


def save_adapter(model: nn.Module, directory: str | Path) -> Path:
    """Write the adapter config and weights (no base weights, no pickle) to ``directory``; returns it."""
    state = adapter_state(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in adapter_state_dict(model).items()}
    config = {**state.config.to_dict(), "adapted_modules": state.adapted_modules}
    write_atomically(directory / WEIGHTS_NAME, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    write_json(directory / CONFIG_NAME, config)
    return directory


def read_adapter_config(directory: str | Path) -> dict:
    """The saved adapter config as a dict."""
    return read_json(Path(directory) / CONFIG_NAME, "adapter config")


def load_adapter(model: nn.Module, directory: str | Path) -> list[str]:
    """Inject adapters from the saved config if the model has none, then load the saved weights strictly.

    A missing, unexpected or wrongly shaped tensor raises ValueError naming the first offending tensor.
    Returns the adapted module names.
    """
    directory = Path(directory)
    saved = read_adapter_config(directory)
    saved_modules = saved.pop("adapted_modules", None)
    try:
        config = config_from_dict(saved)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{directory / CONFIG_NAME}: {err}") from err
    if getattr(model, ADAPTER_STATE_ATTR, None) is None:
        inject(model, config)
    state = adapter_state(model)
    if saved_modules is not None and saved_modules != state.adapted_modules:
        missing = sorted(set(saved_modules) - set(state.adapted_modules))
        extra = sorted(set(state.adapted_modules) - set(saved_modules))
        raise ValueError(
            f"{directory / CONFIG_NAME}: adapted modules differ from the model's "
            f"(saved only: {missing[:5]}, model only: {extra[:5]})"
        )
    weights_path = directory / WEIGHTS_NAME
    tensors = load_tensors(weights_path, "adapter weights")
    _copy_strict(adapter_state_dict(model), tensors, weights_path)
    return state.adapted_modules


def _copy_strict(target: dict[str, Tensor], source: dict[str, Tensor], origin: Path) -> None:
    for key in sorted(set(target) | set(source)):
        if key not in source:
            raise ValueError(f"{origin}: tensor '{key}' is missing from the file (the model expects it)")
        if key not in target:
            raise ValueError(f"{origin}: unexpected tensor '{key}' (the model has no such adapter weight)")
        if source[key].shape != target[key].shape:
            raise ValueError(
                f"{origin}: tensor '{key}' has shape {tuple(source[key].shape)}, "
                f"the model expects {tuple(target[key].shape)}"
            )
    with torch.no_grad():
        for key, value in target.items():
            value.copy_(source[key])
