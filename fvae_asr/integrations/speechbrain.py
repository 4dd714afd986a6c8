"""FVAE-LoRA and LoRA as ``adapter_class`` of SpeechBrain's own ``speechbrain.nnet.adapters.AdaptedModel``.

SpeechBrain builds one adapter per target layer with ``adapter_class(target_module, **adapter_kwargs)``. Our
classes take SpeechBrain's arguments with SpeechBrain's meaning, so a yaml that swaps
``speechbrain.nnet.adapters.LoRA`` for ours keeps its model: ``(target_module, rank=16, alpha=1.0)``, scale =
``alpha / rank`` (``lora_alpha`` is accepted for ``alpha``, not both). The other ``adapter_kwargs`` are the fields
of ``FVAELoRAConfig`` / ``LoRAConfig`` except the layer choice, which is ``AdaptedModel``'s (``target_layers``,
``all_linear``, ``unfrozen_layers``), and FVAE's reconstruction weight, ``FVAELoRAConfig.alpha``, which is
``reconstruction_weight`` here. ``fvae_asr.aux_loss``, ``loss_terms``, ``aux_weight`` and
``set_frame_mask``/``frame_mask`` work on the ``AdaptedModel``, and its checkpointer saves and loads the adapter
weights (they are its trainable parameters). Only ``nn.Linear`` layers are adapted (SpeechBrain's LoRA also wraps
convolutions: ours refuse them, naming the layer type). As in SpeechBrain's adapters, the wrapped layer is
``adapter.pretrained_module`` (also ``adapter.base``).

WavLM: transformers' ``WavLMAttention`` reads ``q_proj.weight`` and the other projections' weights itself, so an
adapter wrapping them would never run. ``fvae_asr.inject`` reroutes it; with ``AdaptedModel``, pass the model
through ``fvae_asr.adapters.wavlm_attention.route_wavlm_attention_through_modules`` first (it returns the model:
``model_to_adapt: !apply:fvae_asr.adapters.wavlm_attention.route_wavlm_attention_through_modules [!ref <wavlm>]``).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from fvae_asr.adapters.config import AdapterConfig, FVAELoRAConfig, LoRAConfig
from fvae_asr.adapters.layers import FVAELoRALinear, LoRALinear
from fvae_asr.integrations.frame_masks import audio_frame_mask

MODEL_LEVEL_FIELDS = ("target_modules", "trainable_modules")  # AdaptedModel's target_layers / unfrozen_layers
SPEECHBRAIN_RANK, SPEECHBRAIN_ALPHA = 16, 1.0  # the defaults of speechbrain.nnet.adapters.LoRA(target, rank, alpha)

NO_GRAD_WARNING = (
    "an fvae-asr adapter ran in training mode with gradients disabled (torch.no_grad), so its parameters get no "
    "gradient. SpeechBrain's HuggingFace wrappers run under no_grad when freeze=True: set freeze: False in the "
    "wrapper (AdaptedModel already freezes the backbone; only the adapters and unfrozen_layers train)."
)


def _layer_config(
    config_type: type[AdapterConfig],
    target_module: nn.Module,
    rank: int,
    alpha: float | None,
    adapter_kwargs: dict[str, Any],
    renamed: dict[str, str],
) -> AdapterConfig:
    """The config of one SpeechBrain-built adapter layer, SpeechBrain's ``alpha`` being the LoRA scale numerator and
    ``renamed`` mapping our boundary names to config fields; a wrong target or keyword is a one-line error naming it."""
    name = config_type.__name__.removesuffix("Config")
    if not isinstance(target_module, nn.Linear):
        raise TypeError(
            f"{name} adapts nn.Linear layers only, got {type(target_module).__name__}: choose linear layers with "
            "AdaptedModel's target_layers (or all_linear: True)"
        )
    hint = "".join(f"; {config_type.__name__}.{field} is '{key}' here" for key, field in renamed.items())
    if alpha is not None and "lora_alpha" in adapter_kwargs:
        raise TypeError(
            f"{name} got both 'alpha' and 'lora_alpha', which are the same LoRA scale numerator (scale = alpha / "
            f"rank, as in SpeechBrain's LoRA): give one{hint}"
        )
    model_level = sorted(set(adapter_kwargs) & set(MODEL_LEVEL_FIELDS))
    if model_level:
        raise TypeError(
            f"{name} adapter_kwargs {model_level} are chosen by AdaptedModel: use its target_layers, unfrozen_layers"
        )
    fields = {f.name for f in dataclasses.fields(config_type)}
    known = sorted((fields - set(MODEL_LEVEL_FIELDS) - set(renamed.values())) | set(renamed) | {"alpha"})
    unknown = sorted(set(adapter_kwargs) - set(known))
    if unknown:
        raise TypeError(f"unknown {name} adapter_kwargs {unknown}; known: {', '.join(known)}")
    lora_alpha = adapter_kwargs.pop("lora_alpha", SPEECHBRAIN_ALPHA if alpha is None else alpha)
    fields = {renamed.get(key, key): value for key, value in adapter_kwargs.items()}
    return config_type(rank=rank, lora_alpha=lora_alpha, **fields)


class _SpeechBrainAdapter:
    """Shared part of the SpeechBrain adapter classes: build from ``(target_module, **adapter_kwargs)``, freeze
    the wrapped layer as SpeechBrain's own adapters do, and warn when a training forward cannot train."""

    config_type: ClassVar[type[AdapterConfig]]
    renamed: ClassVar[dict[str, str]] = {}  # keyword here -> config field whose own name means something else here

    def __init__(
        self, target_module: nn.Module, rank: int = SPEECHBRAIN_RANK, alpha: float | None = None, **adapter_kwargs: Any
    ) -> None:
        """Args:
        target_module: the ``nn.Linear`` to adapt (frozen here).
        rank: LoRA rank r (SpeechBrain's default 16).
        alpha: scale numerator, scale = alpha / r (SpeechBrain's default 1.0; ``lora_alpha`` is the same).
        adapter_kwargs: the other config fields (FVAE's reconstruction weight is ``reconstruction_weight``).
        """
        config = _layer_config(self.config_type, target_module, rank, alpha, dict(adapter_kwargs), self.renamed)
        name = f"Linear({target_module.in_features}, {target_module.out_features})"  # AdaptedModel passes no name
        super().__init__(target_module, config, name)
        target_module.requires_grad_(False)

    @property
    def pretrained_module(self) -> nn.Module:
        """The wrapped layer, under the name SpeechBrain's own adapters give it (code written against
        ``speechbrain.nnet.adapters.LoRA`` reads it); the same module as ``base``, saved once, as ``base``."""
        return self.base

    def forward(self, x: Tensor) -> Tensor:
        if self.training and not torch.is_grad_enabled():
            warnings.warn(NO_GRAD_WARNING, stacklevel=2)
        return super().forward(x)


class FVAELoRA(_SpeechBrainAdapter, FVAELoRALinear):
    """FVAE-LoRA on one ``nn.Linear``, built by ``speechbrain.nnet.adapters.AdaptedModel``.

    Arguments as SpeechBrain's LoRA, ``(target_module, rank=16, alpha=1.0)`` with scale ``alpha / rank`` (the
    authors' scale 0.5 at rank 16 is ``alpha: 8``), plus ``FVAELoRAConfig`` fields as ``adapter_kwargs`` (dropout,
    z2_dim, beta, delta, aux_weight, ...), its reconstruction weight ``FVAELoRAConfig.alpha`` being
    ``reconstruction_weight`` here. In yaml::

        model: !new:speechbrain.nnet.adapters.AdaptedModel
            model_to_adapt: !ref <wav2vec2>
            adapter_class: !name:fvae_asr.integrations.speechbrain.FVAELoRA
            target_layers: ["*.q_proj", "*.k_proj"]
            adapter_kwargs: {rank: 16, alpha: 8, aux_weight: 0.001}

    and in ``compute_objectives``: ``loss = ctc + fvae_asr.aux_weight(model) * fvae_asr.aux_loss(model)``, with
    ``model`` the ``AdaptedModel`` that ran forward. Padded frames: ``with fvae_asr.frame_mask(model, mask):``
    around the forward, ``mask`` True on real frames, shaped as the adapted layers' input without its last dim:
    (batch, frames) in the HuggingFace wrappers (``wav2vec2_frame_mask`` builds it), (frames, batch) in the
    feed-forward blocks of SpeechBrain's own Transformer, which run time-first.

    SpeechBrain's HuggingFace wrappers (Wav2Vec2, WavLM, ...) with ``freeze: True`` run under ``torch.no_grad``,
    which silently stops the adapters' gradients: give the wrapper ``freeze: False`` (``AdaptedModel`` freezes
    every backbone parameter itself). A training forward with gradients disabled warns.

    Args:
        target_module: the ``nn.Linear`` to adapt (``AdaptedModel`` passes it).
        rank: r, the size of z1.
        alpha: the update's scale is ``alpha / rank`` (``lora_alpha`` is accepted instead).
        **adapter_kwargs: ``FVAELoRAConfig``'s other fields, with ``reconstruction_weight`` for its ``alpha``.
    """

    config_type = FVAELoRAConfig
    renamed = {"reconstruction_weight": "alpha"}


class LoRA(_SpeechBrainAdapter, LoRALinear):
    """Plain LoRA (PEFT's maths, rsLoRA optional) on one ``nn.Linear``, built by SpeechBrain's ``AdaptedModel``.

    Arguments as SpeechBrain's LoRA, ``(target_module, rank=16, alpha=1.0)`` with scale ``alpha / rank`` (the same
    output as ``speechbrain.nnet.adapters.LoRA`` with the same weights), plus ``LoRAConfig``'s dropout and use_rslora
    (scale ``alpha / sqrt(rank)``) as ``adapter_kwargs``. Same use as ``FVAELoRA`` (``adapter_class:
    !name:fvae_asr.integrations.speechbrain.LoRA``); its ``aux_loss`` is 0. The same ``freeze: False`` rule applies to
    SpeechBrain's HuggingFace wrappers.

    Args:
        target_module: the ``nn.Linear`` to adapt (``AdaptedModel`` passes it).
        rank: r, the inner dimension of ``B A``.
        alpha: the update's scale is ``alpha / rank`` (``lora_alpha`` is accepted instead).
        **adapter_kwargs: ``LoRAConfig``'s ``dropout`` and ``use_rslora``.
    """

    config_type = LoRAConfig


def wav2vec2_frame_mask(wrapper: nn.Module, wavs: Tensor, wav_lens: Tensor) -> Tensor:
    """The encoder-frame mask (batch, frames), True on real frames, of a batch with SpeechBrain's relative lengths,
    for SpeechBrain's HuggingFace Wav2Vec2/HuBERT/WavLM wrapper or an ``AdaptedModel`` around one."""
    from speechbrain.integrations.huggingface.huggingface import make_padding_masks

    hf_model = getattr(wrapper, "model", None)
    mask = None
    if isinstance(hf_model, nn.Module):
        sample_mask = make_padding_masks(wavs, wav_len=wav_lens)
        mask = audio_frame_mask(hf_model, {"input_values": wavs, "attention_mask": sample_mask})
    if mask is None:
        raise TypeError(
            f"{type(wrapper).__name__} is not a SpeechBrain HuggingFace wav2vec2-style wrapper (its .model must be "
            "a Wav2Vec2/HuBERT/WavLM model): build the frame mask from your encoder's frame lengths"
        )
    return mask
