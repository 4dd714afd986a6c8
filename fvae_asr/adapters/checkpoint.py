"""Adapter-only checkpoints in PEFT's layout: ``adapter_config.json`` + ``adapter_model.safetensors``.

LoRA adapters are written in PEFT's own format (``peft.PeftModel.from_pretrained`` reads them) and PEFT LoRA
adapters load here; FVAE-LoRA adapters, which PEFT has no layers for, keep our format.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import Tensor, nn

from fvae_asr.adapters.config import AdapterConfig, LoRAConfig, config_from_dict
from fvae_asr.adapters.layers import ADAPTER_LAYERS, AdaptedLinear
from fvae_asr.adapters.model import adapter_layers, adapter_state, has_adapters, inject
from fvae_asr.adapters.peft_format import (
    OWN_CONFIG_KEY,
    config_from_peft,
    from_peft_names,
    is_peft_config,
    lora_owners,
    peft_fields,
    to_peft_names,
)
from fvae_asr.files import read_json, write_json
from fvae_asr.tensor_files import load_tensors, save_tensors

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
            base_state[f"{owner}.{key[len(owner) + len('.base.') :]}"] = value
    return base_state


def save_adapter(model: nn.Module, directory: str | Path) -> Path:
    """Write the adapter config and weights (no base weights, no pickle) to ``directory``; returns it.

    LoRA is written in PEFT's format (PEFT's config fields and tensor names, our config kept inside it);
    FVAE-LoRA in our own.
    """
    state = adapter_state(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in adapter_state_dict(model).items()}
    if isinstance(state.config, LoRAConfig):
        config = peft_fields(state.config, state.adapted_modules, state.trainable_modules)
        tensors = to_peft_names(tensors)
    else:
        config = {**state.config.to_dict(), "adapted_modules": state.adapted_modules}
    save_tensors(tensors, directory / WEIGHTS_NAME)
    write_json(directory / CONFIG_NAME, config)
    return directory


def read_adapter_config(directory: str | Path) -> dict:
    """The saved adapter config as a dict."""
    return read_json(Path(directory) / CONFIG_NAME, "adapter config")


def load_adapter(model: nn.Module, directory: str | Path) -> list[str]:
    """Inject adapters from the saved config if the model has none, then load the saved weights strictly.

    Reads our checkpoints and PEFT LoRA adapters (``save_pretrained`` output). A missing, unexpected or
    wrongly shaped tensor raises ValueError naming the first offending tensor. Returns the adapted module names.

    The files are not trusted: the adapters go exactly on the modules the weights belong to (a saved pattern is
    never run against the model's names), and every size in the config is checked against the saved tensors on
    the meta device before any memory is allocated.
    """
    directory = Path(directory)
    saved = read_adapter_config(directory)
    config, saved_modules = _saved_config(saved, directory / CONFIG_NAME)
    weights_path = directory / WEIGHTS_NAME
    tensors = load_tensors(weights_path, "adapter weights")
    if is_peft_config(saved):
        try:
            tensors = from_peft_names(tensors)
        except ValueError as err:
            raise ValueError(f"{weights_path}: {err}") from err
        _check_linear_owners(model, lora_owners(tensors), weights_path)
    if not has_adapters(model):
        inject(model, _config_for_saved_weights(model, config, tensors, directory))
    state = adapter_state(model)
    if saved_modules is not None and saved_modules != state.adapted_modules:
        missing = sorted(set(saved_modules) - set(state.adapted_modules))
        extra = sorted(set(state.adapted_modules) - set(saved_modules))
        raise ValueError(
            f"{directory / CONFIG_NAME}: adapted modules differ from the model's "
            f"(saved only: {missing[:5]}, model only: {extra[:5]})"
        )
    _copy_strict(adapter_state_dict(model), tensors, weights_path)
    return state.adapted_modules


def _saved_config(saved: dict, origin: Path) -> tuple[AdapterConfig, list[str] | None]:
    """The config and adapted-module names of an adapter_config.json: ours, ours inside PEFT's, or PEFT's own."""
    own = saved.get(OWN_CONFIG_KEY) if is_peft_config(saved) else saved
    try:
        if own is None:
            return config_from_peft(saved), None
        own = dict(own)
        saved_modules = own.pop("adapted_modules", None)
        return config_from_dict(own), saved_modules
    except (TypeError, ValueError) as err:
        raise ValueError(f"{origin}: {err}") from err


def _config_for_saved_weights(
    model: nn.Module, config: AdapterConfig, tensors: dict[str, Tensor], directory: Path
) -> AdapterConfig:
    """``config`` with the modules the saved weights belong to named one by one, once the config's sizes are
    known to fit those weights (checked on the meta device: nothing is allocated for a config that does not)."""
    targets = sorted(lora_owners(tensors))
    if not targets:
        raise ValueError(f"{directory / WEIGHTS_NAME}: holds no adapter weights (no '<module>.lora_*' tensor)")
    for name in targets:
        try:
            base = model.get_submodule(name)
        except AttributeError:
            raise ValueError(
                f"{directory / WEIGHTS_NAME}: adapter weights for '{name}', which the model lacks"
            ) from None
        if not isinstance(base, nn.Linear):
            raise ValueError(
                f"{directory / WEIGHTS_NAME}: adapter weights for '{name}', a {type(base).__name__}; "
                "only nn.Linear layers carry adapters"
            )
        _check_sizes(base, config, name, tensors, directory)
    owned = tuple(f"{name}." for name in targets)
    trainable = sorted({key.rsplit(".", 1)[0] for key in tensors if not key.startswith(owned)})
    return dataclasses.replace(config, target_modules=targets, trainable_modules=trainable)


def _check_sizes(
    base: nn.Linear, config: AdapterConfig, name: str, tensors: dict[str, Tensor], directory: Path
) -> None:
    """The adapter layer the config describes, built on the meta device, must have the saved tensors' shapes."""
    with torch.device("meta"):
        shadow = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None)
        layer = ADAPTER_LAYERS[config.adapter_type](shadow, config, name)
    for key, value in layer.state_dict().items():
        if key.startswith("base."):
            continue
        saved = tensors.get(f"{name}.{key}")
        if saved is None:
            raise ValueError(
                f"{directory / WEIGHTS_NAME}: tensor '{name}.{key}' is missing from the file (the model expects it)"
            )
        if saved.shape != value.shape:
            sizes = f"rank {config.rank}"
            if config.adapter_type == "fvae_lora":
                sizes += (
                    f", z2_dim {config.z2_dim}, encoder_hidden {config.encoder_hidden}, decoder_hidden "
                    f"{config.decoder_hidden}, decoder_layers {config.decoder_layers}"
                )
            raise ValueError(
                f"{directory / CONFIG_NAME}: its sizes ({sizes}) need tensor '{name}.{key}' of shape "
                f"{tuple(value.shape)}, but {WEIGHTS_NAME} has {tuple(saved.shape)}"
            )


def _check_linear_owners(model: nn.Module, owners: set[str], origin: Path) -> None:
    """PEFT can adapt embeddings and convolutions; our LoRA adapts only ``nn.Linear``: name the first other."""
    for name in sorted(owners):
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue  # the strict copy names the tensor the model lacks
        if not isinstance(module, (nn.Linear, AdaptedLinear)):
            raise ValueError(
                f"{origin}: the adapter targets '{name}', a {type(module).__name__}; only nn.Linear layers "
                "can carry our LoRA"
            )


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
