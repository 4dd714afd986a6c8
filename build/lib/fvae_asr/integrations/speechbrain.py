"""FVAE-LoRA and LoRA as ``adapter_class`` of SpeechBrain's own ``speechbrain.nnet.adapters.AdaptedModel``.

SpeechBrain builds one adapter per target layer with ``adapter_class(target_module, **adapter_kwargs)``; the
``adapter_kwargs`` are the fields of ``FVAELoRAConfig`` / ``LoRAConfig`` except the layer choice, which is
``AdaptedModel``'s (``target_layers``, ``all_linear``, ``unfrozen_layers``). ``fvae_asr.aux_loss``,
``loss_terms``, ``aux_weight`` and ``set_frame_mask``/``frame_mask`` work on the ``AdaptedModel``, and its
checkpointer saves and loads the adapter weights (they are its trainable parameters).

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

MODEL_LEVEL_FIELDS = ("target_modules", "trainable_modules")  # AdaptedModel's target_layers / unfrozen_layers
SPEECHBRAIN_NAMES = {"alpha": "lora_alpha"}  # SpeechBrain's LoRA kwarg -> ours, for the error message

NO_GRAD_WARNING = (
    "an fvae-asr adapter ran in training mode with gradients disabled (torch.no_grad), so its parameters get no "
    "gradient. SpeechBrain's HuggingFace wrappers run under no_grad when freeze=True: set freeze: False in the "
    "wrapper (AdaptedModel already freezes the backbone; only the adapters and unfrozen_layers train)."
)


def _layer_config(
    config_type: type[AdapterConfig], target_module: nn.Module, adapter_kwargs: dict[str, Any]
) -> AdapterConfig:
    """The config of one SpeechBrain-built adapter layer; a wrong target or keyword is an error naming it."""
    name = config_type.__name__.removesuffix("Config")
    if not isinstance(target_module, nn.Linear):
        raise TypeError(
            f"{name} adapts nn.Linear layers only, got {type(target_module).__name__}: choose linear layers with "
            "AdaptedModel's target_layers (or all_linear: True)"
        )
    model_level = sorted(set(adapter_kwargs) & set(MODEL_LEVEL_FIELDS))
    if model_level:
        raise TypeError(
            f"{name} adapter_kwargs {model_level} are chosen by AdaptedModel: use its target_layers, unfrozen_layers"
        )
    known = sorted({f.name for f in dataclasses.fields(config_type)} - set(MODEL_LEVEL_FIELDS))
    unknown = sorted(set(adapter_kwargs) - set(known))
    if unknown:
        hints = "".join(f" (SpeechBrain's '{k}' is our '{SPEECHBRAIN_NAMES[k]}')" for k in unknown
                        if k in SPEECHBRAIN_NAMES)  # fmt: skip
        raise TypeError(f"unknown {name} adapter_kwargs {unknown}{hints}; known: {', '.join(known)}")
    return config_type(**adapter_kwargs)


class _SpeechBrainAdapter:
    """Shared part of the SpeechBrain adapter classes: build from ``(target_module, **adapter_kwargs)``, freeze
    the wrapped layer as SpeechBrain's own adapters do, and warn when a training forward cannot train."""

    config_type: ClassVar[type[AdapterConfig]]

    def __init__(self, target_module: nn.Module, **adapter_kwargs: Any) -> None:
        config = _layer_config(self.config_type, target_module, adapter_kwargs)
        name = f"Linear({target_module.in_features}, {target_module.out_features})"  # AdaptedModel passes no name
        super().__init__(target_module, config, name)
        target_module.requires_grad_(False)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and not torch.is_grad_enabled():
            warnings.warn(NO_GRAD_WARNING, stacklevel=2)
        return super().forward(x)


class FVAELoRA(_SpeechBrainAdapter, FVAELoRALinear):
    """FVAE-LoRA on one ``nn.Linear``, built by ``speechbrain.nnet.adapters.AdaptedModel``.

    ``adapter_kwargs`` are ``FVAELoRAConfig`` fields (rank, lora_alpha, dropout, z2_dim, alpha, beta, delta,
    aux_weight, ...); ``alpha`` is the weight of the reconstruction term here, the LoRA scale is ``lora_alpha``
    (SpeechBrain's own LoRA calls its scale ``alpha``). In yaml::

        model: !new:speechbrain.nnet.adapters.AdaptedModel
            model_to_adapt: !ref <wav2vec2>
            adapter_class: !name:fvae_asr.integrations.speechbrain.FVAELoRA
            target_layers: ["*.q_proj", "*.k_proj"]
            adapter_kwargs: {rank: 16, lora_alpha: 16, aux_weight: 0.001}

    and in ``compute_objectives``: ``loss = ctc + fvae_asr.aux_weight(model) * fvae_asr.aux_loss(model)``, with
    ``model`` the ``AdaptedModel`` that ran forward. Padded frames: ``with fvae_asr.frame_mask(model, mask):``
    around the forward, ``mask`` True on real frames, shaped as the adapted layers' input without its last dim:
    (batch, frames) in the HuggingFace wrappers (``wav2vec2_frame_mask`` builds it), (frames, batch) in the
    feed-forward blocks of SpeechBrain's own Transformer, which run time-first.

    SpeechBrain's HuggingFace wrappers (Wav2Vec2, WavLM, ...) with ``freeze: True`` run under ``torch.no_grad``,
    which silently stops the adapters' gradients: give the wrapper ``freeze: False`` (``AdaptedModel`` freezes
    every backbone parameter itself). A training forward with gradients disabled warns.
    """

    config_type = FVAELoRAConfig


class LoRA(_SpeechBrainAdapter, LoRALinear):
    """Plain LoRA (PEFT's maths, rsLoRA optional) on one ``nn.Linear``, built by SpeechBrain's ``AdaptedModel``.

    ``adapter_kwargs`` are ``LoRAConfig`` fields: rank, lora_alpha (SpeechBrain's LoRA calls it ``alpha``),
    dropout, use_rslora. Same use as ``FVAELoRA`` (``adapter_class: !name:fvae_asr.integrations.speechbrain.LoRA``);
    its ``aux_loss`` is 0. The same ``freeze: False`` rule applies to SpeechBrain's HuggingFace wrappers.
    """

    config_type = LoRAConfig


def wav2vec2_frame_mask(wrapper: nn.Module, wavs: Tensor, wav_lens: Tensor) -> Tensor:
    """The encoder-frame mask (batch, frames), True on real frames, of a batch with SpeechBrain's relative lengths,
    for SpeechBrain's HuggingFace Wav2Vec2/HuBERT/WavLM wrapper or an ``AdaptedModel`` around one."""
    from speechbrain.integrations.huggingface.huggingface import make_padding_masks

    from fvae_asr.integrations.transformers import audio_frame_mask

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
