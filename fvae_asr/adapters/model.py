"""Model-level adapter API: inject by module name, padding masks, the auxiliary loss, merging."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fvae_asr.adapters.config import AdapterConfig, TargetSpec
from fvae_asr.adapters.layers import ADAPTER_LAYERS, LATENTS, AdaptedLinear, FVAELoRALinear, LoRALinear

ADAPTER_STATE_ATTR = "adapter_state"


class SharedTerms(dict):
    """The FVAE layers' terms of a model's last training forward, by layer: one record shared by the layers,
    cleared by a forward pre-hook on the model (see ``_share_records``)."""


class _NewForward:
    """Forward pre-hook on the adapted model: each forward starts a fresh record of layer terms."""

    def __init__(self, recorder: SharedTerms) -> None:
        self.recorder = recorder

    def __call__(self, module: nn.Module, args: tuple) -> None:
        self.recorder.clear()


@dataclass
class AdapterState:
    """What ``inject`` did to a model, kept on it so that saving and loading need no other input."""

    config: AdapterConfig
    adapted_modules: list[str]
    trainable_modules: list[str]
    forward_hook: torch.utils.hooks.RemovableHandle | None = None


def module_matches(name: str, spec: TargetSpec) -> bool:
    """PEFT's rule: a regex must match the whole name; a list entry must equal the name or end it after a dot."""
    if isinstance(spec, str):
        return re.fullmatch(spec, name) is not None
    return any(name == s or name.endswith("." + s) for s in spec)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, module)


def has_adapters(model: nn.Module) -> bool:
    """Whether ``inject`` put adapters into the model."""
    return getattr(model, ADAPTER_STATE_ATTR, None) is not None


def adapter_state(model: nn.Module) -> AdapterState:
    """The record ``inject`` left on the model; ValueError if the model has no adapters."""
    state = getattr(model, ADAPTER_STATE_ATTR, None)
    if state is None:
        raise ValueError("the model has no adapters: call fvae_asr.inject(model, config) first")
    return state


def inject(model: nn.Module, config: AdapterConfig, layer_type: type[AdaptedLinear] | None = None) -> list[str]:
    """Wrap every ``nn.Linear`` whose name matches ``config.target_modules`` in place; freeze the rest.

    Parameters of modules matching ``config.trainable_modules`` (e.g. a CTC head) stay trainable.
    ``layer_type``, a subclass of the config's layer (e.g. another way of computing the objective, as the speed
    benchmark's peer does), wraps the targets instead. Returns the names of the adapted layers.
    """
    if has_adapters(model):
        raise ValueError("the model already has adapters; inject into a fresh model")
    default_type = ADAPTER_LAYERS[config.adapter_type]
    layer_type = layer_type or default_type
    if not (isinstance(layer_type, type) and issubclass(layer_type, default_type)):
        raise TypeError(
            f"layer_type must be a subclass of {default_type.__name__} for a "
            f"{type(config).__name__}, got {layer_type!r}"
        )
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    targets = [name for name in linears if module_matches(name, config.target_modules)]
    if not targets:
        examples = ", ".join(linears[:12]) or "none"
        raise ValueError(
            f"target_modules={config.target_modules!r} matched no nn.Linear; linear layers include: {examples}"
        )
    trainable = [name for name, _ in model.named_modules() if name and module_matches(name, config.trainable_modules)]
    if config.trainable_modules and not trainable:
        raise ValueError(f"trainable_modules={config.trainable_modules!r} matched no module")

    model.requires_grad_(False)
    _call_projections_as_modules(model)
    for name in targets:
        base = model.get_submodule(name)
        _set_submodule(model, name, layer_type(base, config, name).train(base.training))  # eval stays eval
    for name in trainable:
        model.get_submodule(name).requires_grad_(True)
    for layer in adapter_layers(model):
        layer.requires_grad_(True)
        layer.base.requires_grad_(any(layer.adapter_name.startswith(t + ".") for t in trainable))
    hook = _share_records(model, _fvae_layers(model))
    setattr(model, ADAPTER_STATE_ATTR, AdapterState(config, targets, trainable, hook))
    return targets


def _call_projections_as_modules(model: nn.Module) -> None:
    """transformers' ``WavLMAttention`` reads its projections' weights directly, past any adapter wrapping them:
    make it call them (the same computation; see ``fvae_asr.adapters.wavlm_attention``)."""
    if any(type(module).__name__ == "WavLMAttention" for module in model.modules()):
        from fvae_asr.adapters.wavlm_attention import route_wavlm_attention_through_modules

        route_wavlm_attention_through_modules(model)


def adapter_layers(model: nn.Module) -> list[AdaptedLinear]:
    """All adapter layers of the model, in module order."""
    return [m for m in model.modules() if isinstance(m, AdaptedLinear)]


def _fvae_layers(model: nn.Module) -> list[FVAELoRALinear]:
    return [m for m in model.modules() if isinstance(m, FVAELoRALinear)]


def _share_records(model: nn.Module, layers: list[FVAELoRALinear]) -> torch.utils.hooks.RemovableHandle:
    """Make the layers record into one ``SharedTerms`` that each forward of ``model`` clears: a layer that LayerDrop
    skips then leaves no stale terms. Terms the layers hold already are kept. Returns the pre-hook's handle."""
    shared = SharedTerms()
    for layer in layers:
        terms = layer.last_terms
        layer.recorder = shared
        if terms is not None:
            shared[layer] = terms
    return model.register_forward_pre_hook(_NewForward(shared))


def _forward_roots(module: nn.Module) -> list[nn.Module]:
    """The outermost modules under ``module`` that can run a forward: itself, or for a container (ModuleDict,
    ModuleList, which have no forward) its children's roots."""
    if type(module).forward is not nn.Module.forward:
        return [module]
    return [root for child in module.children() for root in _forward_roots(child)]


def _recording_layers(model: nn.Module) -> list[FVAELoRALinear]:
    """The model's FVAE layers, first made to share records if some do not (layers built one by one, as by
    SpeechBrain's ``AdaptedModel``, rather than by ``inject``): one record per forward root of ``model``."""
    layers = _fvae_layers(model)
    if not all(isinstance(layer.recorder, SharedTerms) for layer in layers):
        for root in _forward_roots(model):
            root_layers = _fvae_layers(root)
            if root_layers:
                _share_records(root, root_layers)
    return layers


def set_frame_mask(model: nn.Module, mask: Tensor | None) -> None:
    """Tell every FVAE layer which frames are real (True) and which are padding, or clear it with None.

    The mask's shape must equal the adapted layers' input shape without the feature dim, e.g. (batch, frames).
    """
    if mask is not None and mask.dtype != torch.bool:
        raise ValueError(f"frame mask must be a bool tensor, got dtype {mask.dtype}")
    for layer in _fvae_layers(model):
        layer.frame_mask = mask


@contextmanager
def frame_mask(model: nn.Module, mask: Tensor | None) -> Iterator[None]:
    """``set_frame_mask`` for the duration of a ``with`` block, cleared afterwards."""
    set_frame_mask(model, mask)
    try:
        yield
    finally:
        set_frame_mask(model, None)


@contextmanager
def latent_ablation(
    model: nn.Module, z1: bool = False, z2: bool = False, layers: Iterable[str] | None = None
) -> Iterator[list[str]]:
    """Replace z1 and/or z2 by their prior means (0 and ``prior_mean_z2``) in eval, within a ``with`` block.

    Applies to the FVAE layers named in ``layers`` (adapter names, i.e. module names; all when None) and yields
    their names. Ablating z1 removes a layer's update (y = W x); z2 never reaches the output, so ablating it
    changes only ``reconstruction``. The previous setting is restored on exit, so nested blocks combine.
    """
    fvae = {layer.adapter_name: layer for layer in _fvae_layers(model)}
    if not fvae:
        raise ValueError("the model has no FVAE-LoRA layers whose latents could be ablated")
    names = list(fvae) if layers is None else list(layers)
    unknown = [name for name in names if name not in fvae]
    if unknown:
        listed = ", ".join(list(fvae)[:8]) + (", ..." if len(fvae) > 8 else "")
        raise ValueError(f"no FVAE-LoRA layer named {', '.join(map(repr, unknown))}; the layers are: {listed}")
    ablated = frozenset(latent for latent, on in zip(LATENTS, (z1, z2)) if on)
    previous = {name: fvae[name].ablated_latents for name in names}
    try:
        for name in names:
            fvae[name].ablated_latents = previous[name] | ablated
        yield names
    finally:
        for name, setting in previous.items():
            fvae[name].ablated_latents = setting


def _layer_terms(model: nn.Module) -> list[dict[str, Tensor]]:
    """Terms of the FVAE layers that ran in the model's last training forward."""
    return [layer.last_terms for layer in _recording_layers(model) if layer.last_terms is not None]


def _zero_like_model(model: nn.Module) -> Tensor:
    param = next(model.parameters(), None)
    return torch.zeros((), device=param.device if param is not None else None)


def aux_loss(model: nn.Module) -> Tensor:
    """Mean over FVAE layers of their loss in the last (training) forward: a 0-dim tensor with gradient.

    Zero for plain LoRA and after an eval-mode forward; layers skipped by LayerDrop do not count. Works on models
    adapted by ``inject`` and on those whose layers were built one by one (SpeechBrain's ``AdaptedModel``): pass the
    module you run forward on. Weight it with ``aux_weight(model)`` (lambda).
    """
    terms = _layer_terms(model)
    if not terms:
        return _zero_like_model(model)
    return torch.stack([t["total"] for t in terms]).mean()


def aux_weight(model: nn.Module) -> float:
    """lambda of the model's adapter config: the weight of ``aux_loss`` in the total loss (0 for plain LoRA and
    for a model without adapters). Without ``inject`` (layers built one by one), the FVAE layers' common value."""
    state = getattr(model, ADAPTER_STATE_ATTR, None)
    if state is not None:
        return getattr(state.config, "aux_weight", 0.0)
    weights = sorted({layer.config.aux_weight for layer in _fvae_layers(model)})
    if len(weights) > 1:
        raise ValueError(f"the model's FVAE layers have different aux_weight values {weights}; weigh aux_loss yourself")
    return weights[0] if weights else 0.0


def loss_terms(model: nn.Module) -> dict[str, Tensor]:
    """The parts of ``aux_loss`` (reconstruction NLL, KL on z1, Gamma, ...) averaged over layers, detached."""
    terms = _layer_terms(model)
    if not terms:
        return {}
    return {key: torch.stack([t[key] for t in terms]).mean().detach() for key in terms[0]}


def merge_adapters(model: nn.Module) -> list[str]:
    """Fold plain LoRA updates into the base weights and remove the adapters; returns the merged names.

    FVAE-LoRA cannot be merged: its update s * B mu1(x) depends non-linearly on the input.
    """
    state = adapter_state(model)
    layers = adapter_layers(model)
    if not all(isinstance(layer, LoRALinear) for layer in layers):
        raise TypeError(
            "FVAE-LoRA adapters cannot be merged into the base weights: the update s * B mu1(x) is an "
            "input-dependent, nonlinear function of x, not a fixed matrix. Keep the adapter layers for inference."
        )
    with torch.no_grad():
        for layer in layers:
            layer.base.weight += layer.delta_weight().to(layer.base.weight.dtype)
            _set_submodule(model, layer.adapter_name, layer.base)
    state.forward_hook.remove()
    delattr(model, ADAPTER_STATE_ATTR)
    return state.adapted_modules
