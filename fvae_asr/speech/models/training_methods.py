"""The four ways of training a recogniser or classifier that the recipe compares, and what trains in each:
adapters + head (``fvae_lora``, ``lora``), everything but the CNN (``full``), the head only (``frozen``)."""

from __future__ import annotations

import dataclasses

from torch import nn

from fvae_asr.adapters import AdapterConfig, inject
from fvae_asr.speech.models.recognizer import HEAD_NAME

TRAINING_METHODS = ("fvae_lora", "lora", "full", "frozen")  # the recipe's ``method`` (formerly ``adapter``)
ADAPTER_METHODS = ("fvae_lora", "lora")  # the methods that train adapters (and save an adapter checkpoint)


def configure_training(model: nn.Module, method: str, adapter_config: AdapterConfig | None = None) -> list[str]:
    """Set what trains in a model with an ``encoder`` and a ``head`` (``CTCRecognizer``, ``PooledClassifier``):
    adapters + head (``fvae_lora``, ``lora``), everything but the CNN (``full``), the head only (``frozen``).
    Returns the adapted module names (empty without adapters).
    """
    if method not in TRAINING_METHODS:
        raise ValueError(f"method must be one of {', '.join(TRAINING_METHODS)}; got {method!r}")
    if method in ADAPTER_METHODS:
        if adapter_config is None or adapter_config.adapter_type != method:
            raise ValueError(f"method '{method}' needs a matching adapter config, got {adapter_config!r}")
        trainable = adapter_config.trainable_modules
        if isinstance(trainable, list) and HEAD_NAME not in trainable:
            adapter_config = dataclasses.replace(adapter_config, trainable_modules=[*trainable, HEAD_NAME])
        return inject(model, adapter_config)
    model.requires_grad_(method == "full")
    model.head.requires_grad_(True)
    if method == "full":
        if model.encoder.freeze_feature_encoder:
            model.encoder.freeze_cnn()
        embed = getattr(model.encoder.model, "masked_spec_embed", None)
        if embed is not None:
            # Only SpecAugment uses this embedding, and not on every batch: left trainable it would sometimes
            # get no gradient (DDP breaks) and would be saved with models that never use it at inference.
            embed.requires_grad_(False)
    return []


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
