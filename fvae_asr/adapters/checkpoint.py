"""Adapter-only checkpoints in PEFT's layout: ``adapter_config.json`` + ``adapter_model.safetensors``.

LoRA adapters are written in PEFT's own format (``peft.PeftModel.from_pretrained`` reads them) and PEFT LoRA
adapters load here; FVAE-LoRA adapters, which PEFT has no layers for, keep our format.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import regex
import torch
from torch import Tensor, nn

from fvae_asr.adapters.config import AdapterConfig, LoRAConfig, TargetSpec, config_from_dict
from fvae_asr.adapters.layers import ADAPTER_LAYERS, AdaptedLinear, upgrade_legacy_tensors
from fvae_asr.adapters.model import adapter_layers, adapter_state, has_adapters, inject, module_matches
from fvae_asr.adapters.peft_format import (
    OWN_CONFIG_KEY,
    PEFT_NAMES,
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

    Reads our checkpoints and PEFT LoRA adapters (``save_pretrained`` output). A missing, unexpected, wrongly
    shaped or non-floating tensor raises ValueError naming the first offending tensor. A model that already has
    adapters must have the saved config's settings (those that change what it computes or trains): a difference
    is a ValueError naming the field, never a silent mix. Returns the adapted module names.

    The files are not trusted: the adapters go exactly on the modules the weights belong to (a saved pattern is
    never run against the model's names), and every size in the config is checked against the saved tensors on
    the meta device before any memory is allocated. Saved ``target_modules`` that also match layers the file has
    no weights for (a file from a shallower model) leave those layers without adapters, with a warning naming them.
    """
    directory = Path(directory)
    saved = read_adapter_config(directory)
    config, saved_modules = _saved_config(saved, directory / CONFIG_NAME)
    weights_path = directory / WEIGHTS_NAME
    tensors = upgrade_legacy_tensors(load_tensors(weights_path, "adapter weights"))
    if is_peft_config(saved):
        try:
            tensors = from_peft_names(tensors)
        except ValueError as err:
            raise ValueError(f"{weights_path}: {err}") from err
        _check_linear_owners(model, lora_owners(tensors), weights_path)
    if has_adapters(model):
        _check_same_config(adapter_state(model).config, config, directory / CONFIG_NAME)
    else:
        inject(model, _config_for_saved_weights(model, config, tensors, directory))
        _warn_unweighted_targets(model, config, directory)
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
        peft_config = config_from_peft(saved) if is_peft_config(saved) else None
        if own is None:
            return peft_config, None
        own = dict(own)
        saved_modules = own.pop("adapted_modules", None)
        config = config_from_dict(own)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{origin}: {err}") from err
    if peft_config is not None:
        _check_peft_copy(peft_config, config, origin)
    return config, saved_modules


def _check_peft_copy(peft_config: LoRAConfig, own: AdapterConfig, origin: Path) -> None:
    """PEFT's fields and our copy (under ``OWN_CONFIG_KEY``) must describe one model: PEFT computes with its own,
    we with ours, so an edit to one of them would make the one file two different models."""
    if not isinstance(own, LoRAConfig):
        raise ValueError(f"{origin}: PEFT's fields describe a LoRA, but {OWN_CONFIG_KEY} holds a {type(own).__name__}")
    for field, peft_name in PEFT_NAMES.items():
        if getattr(own, field) != getattr(peft_config, field):
            raise ValueError(
                f"{origin}: PEFT's '{peft_name}' is {getattr(peft_config, field)!r} but {OWN_CONFIG_KEY}.{field} is "
                f"{getattr(own, field)!r}: PEFT and fvae-asr would compute different models from this file"
            )


def _check_same_config(current: AdapterConfig, saved: AdapterConfig, origin: Path) -> None:
    """Loading into a model that already has adapters: they must have been made with the saved settings."""
    if type(current) is not type(saved):
        raise ValueError(
            f"{origin}: saved {saved.adapter_type} adapters, but the model carries {current.adapter_type} adapters"
        )
    ignored = {"target_modules", "trainable_modules", "check_finite", *type(saved).computation_only}
    for field in dataclasses.fields(saved):
        if field.name not in ignored and getattr(current, field.name) != getattr(saved, field.name):
            raise ValueError(
                f"{origin}: saved {field.name} = {getattr(saved, field.name)!r}, but the model's adapters have "
                f"{field.name} = {getattr(current, field.name)!r}: load into a model without adapters (the saved "
                "config is then applied) or inject the saved config"
            )


def _warn_unweighted_targets(model: nn.Module, config: AdapterConfig, directory: Path) -> None:
    """Warn when the saved ``target_modules`` match linear layers that the file has no weights for (they stay
    without adapters). A saved regex is matched with a time limit: a file's pattern may be built to hang."""
    adapted = set(adapter_state(model).adapted_modules)
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name not in adapted]
    try:
        unweighted = [name for name in linears if _matches_in_time(name, config.target_modules)]
    except TimeoutError:
        warnings.warn(
            f"{directory / CONFIG_NAME}: target_modules {config.target_modules!r} took too long to match; the "
            "layers it may name beyond the saved weights were not checked",
            stacklevel=3,
        )
        return
    if unweighted:
        warnings.warn(
            f"{directory / CONFIG_NAME}: target_modules {config.target_modules!r} also match {len(unweighted)} "
            f"layer(s) that {WEIGHTS_NAME} has no weights for ({', '.join(unweighted[:5])}"
            f"{', ...' if len(unweighted) > 5 else ''}); they stay without adapters (saved from a smaller model?)",
            stacklevel=3,
        )


def _matches_in_time(name: str, spec: TargetSpec, seconds: float = 0.1) -> bool:
    """``module_matches`` with a time limit for a regex (``regex``'s timeout; ``re`` has none)."""
    if not isinstance(spec, str):
        return module_matches(name, spec)
    return regex.fullmatch(spec, name, timeout=seconds) is not None


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
    for name in trainable:
        _check_whole_module(model, name, tensors, directory / WEIGHTS_NAME)
    return dataclasses.replace(config, target_modules=targets, trainable_modules=trainable)


def _check_whole_module(model: nn.Module, name: str, tensors: dict[str, Tensor], origin: Path) -> None:
    """A tensor that is no adapter weight belongs to a trainable module saved whole: a file holding only part of
    a module's state has an extra tensor (named as such), not a missing one."""
    present = sorted(key for key in tensors if key.rsplit(".", 1)[0] == name)
    try:
        expected = {f"{name}.{key}" for key in model.get_submodule(name).state_dict(keep_vars=True)}
    except AttributeError:
        raise ValueError(f"{origin}: unexpected tensor '{present[0]}' (the model has no module '{name}')") from None
    missing = sorted(expected - set(tensors))
    if missing:
        raise ValueError(
            f"{origin}: unexpected tensor '{present[0]}': no adapter weight, and not a trainable module saved "
            f"whole (the file lacks '{missing[0]}' of module '{name}')"
        )


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
        if target[key].is_floating_point() and not source[key].is_floating_point():
            raise ValueError(
                f"{origin}: tensor '{key}' is stored as {source[key].dtype}; the model's weight is floating point "
                f"({target[key].dtype}), and copying would round it to whole numbers"
            )
        if source[key].shape != target[key].shape:
            raise ValueError(
                f"{origin}: tensor '{key}' has shape {tuple(source[key].shape)}, "
                f"the model expects {tuple(target[key].shape)}"
            )
    with torch.no_grad():
        for key, value in target.items():
            value.copy_(source[key])
