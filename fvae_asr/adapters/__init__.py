"""Modality-agnostic adapter core: FVAE-LoRA and LoRA layers, injection, the FVAE objective, checkpoints.

Nothing here imports speech code: the same core adapts text, image and speech transformers.
"""

from fvae_asr.adapters.checkpoint import adapter_state_dict, base_state_dict, load_adapter, save_adapter
from fvae_asr.adapters.config import AdapterConfig, FVAELoRAConfig, LoRAConfig
from fvae_asr.adapters.layers import FVAELoRALinear, LoRALinear
from fvae_asr.adapters.model import (
    adapter_layers,
    aux_loss,
    aux_weight,
    frame_mask,
    has_adapters,
    inject,
    latent_ablation,
    loss_terms,
    merge_adapters,
    set_frame_mask,
)
from fvae_asr.adapters.optimizer import adam_eps, authors_adamw, weight_decay_groups
from fvae_asr.adapters.peft_api import FVAEModel, get_fvae_model, inject_adapter_in_model

__all__ = [
    "AdapterConfig",
    "FVAELoRAConfig",
    "FVAELoRALinear",
    "FVAEModel",
    "LoRAConfig",
    "LoRALinear",
    "adapter_layers",
    "adam_eps",
    "adapter_state_dict",
    "aux_loss",
    "authors_adamw",
    "aux_weight",
    "base_state_dict",
    "frame_mask",
    "get_fvae_model",
    "has_adapters",
    "inject",
    "inject_adapter_in_model",
    "latent_ablation",
    "load_adapter",
    "loss_terms",
    "merge_adapters",
    "save_adapter",
    "set_frame_mask",
    "weight_decay_groups",
]
