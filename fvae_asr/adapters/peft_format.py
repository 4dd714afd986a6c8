"""PEFT's LoRA file format: the config fields and tensor names ``peft.PeftModel.from_pretrained`` reads.

Our LoRA computes exactly what PEFT's LoRA computes, so a LoRA adapter is saved in PEFT's format (with our own
config kept under ``OWN_CONFIG_KEY``) and a PEFT LoRA adapter loads into a plain model. FVAE-LoRA layers have
no PEFT counterpart: they keep our own format.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from fvae_asr.adapters.config import LoRAConfig

PEFT_PREFIX = "base_model.model."  # PeftModel wraps the model as base_model (LoraModel) -> model
OWN_CONFIG_KEY = "fvae_asr"  # our config (and adapted modules) inside a PEFT adapter_config.json
# Our LoRAConfig's fields that PEFT computes with, by their PEFT names: in a saved file, ours must equal PEFT's.
PEFT_NAMES = {
    "rank": "r",
    "lora_alpha": "lora_alpha",
    "dropout": "lora_dropout",
    "use_rslora": "use_rslora",
    "target_modules": "target_modules",
}

# The PEFT LoraConfig fields we read, and those that never change a trained adapter's outputs (metadata, how fresh
# weights are initialised, settings of features that are off unless another field turns them on). Any other field
# that is set (not null, false or empty) is refused: an allow-list, so a feature PEFT adds later is named, not ignored.
READ_FIELDS = (
    "peft_type",
    "r",
    "lora_alpha",
    "target_modules",
    "lora_dropout",
    "use_rslora",
    "bias",
    "modules_to_save",
)
FIELDS_WITHOUT_EFFECT = (
    "task_type",
    "auto_mapping",
    "peft_version",
    "base_model_name_or_path",
    "revision",
    "inference_mode",
    "init_lora_weights",
    "loftq_config",
    "eva_config",
    "corda_config",
    "lora_ga_config",
    "megatron_core",  # the module megatron_config's layers come from; megatron_config itself is refused when set
    "qalora_group_size",  # read only with use_qalora, which is refused when set
    OWN_CONFIG_KEY,
)


def is_peft_config(fields: dict[str, Any]) -> bool:
    """Whether an adapter_config.json was written in PEFT's format (by PEFT or by ``save_adapter`` for LoRA)."""
    return "peft_type" in fields


def peft_fields(config: LoRAConfig, adapted: list[str], trainable: list[str]) -> dict[str, Any]:
    """PEFT's LoraConfig fields for our LoRA, plus our own config under ``OWN_CONFIG_KEY``.

    ``modules_to_save`` lists the trainable modules by full name (PEFT cannot read our regex form); modules
    inside another listed module are left to their parent.
    """
    outermost = [name for name in trainable if not any(name.startswith(f"{other}.") for other in trainable)]
    return {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": None,
        "r": config.rank,
        "lora_alpha": config.lora_alpha,
        "target_modules": config.target_modules,
        "lora_dropout": config.dropout,
        "use_rslora": config.use_rslora,
        "bias": "none",
        "modules_to_save": outermost or None,
        "init_lora_weights": True,
        "inference_mode": True,
        OWN_CONFIG_KEY: {**config.to_dict(), "adapted_modules": adapted},
    }


def config_from_peft(fields: dict[str, Any]) -> LoRAConfig:
    """Our LoRAConfig from a PEFT LoRA config; a PEFT feature our LoRA lacks is a ValueError naming the field."""
    if fields.get("peft_type") != "LORA":
        raise ValueError(f"peft_type {fields.get('peft_type')!r} is not supported; only 'LORA' adapters load")
    for name in sorted(set(fields) - set(READ_FIELDS) - set(FIELDS_WITHOUT_EFFECT)):
        if fields[name]:
            raise ValueError(f"field '{name}' = {fields[name]!r} is not supported (our LoRA has no such feature)")
    if fields.get("bias", "none") != "none":
        raise ValueError(f"field 'bias' = {fields['bias']!r} is not supported; only 'none'")
    if fields.get("target_modules") is None:
        raise ValueError("field 'target_modules' is missing or null (PEFT's per-model default is not known here)")
    if "r" not in fields:
        raise ValueError("field 'r' is missing")
    return LoRAConfig(
        rank=fields["r"],
        lora_alpha=fields.get("lora_alpha", 8),
        target_modules=fields["target_modules"],
        trainable_modules=fields.get("modules_to_save") or [],
        dropout=fields.get("lora_dropout", 0.0),
        use_rslora=fields.get("use_rslora", False),
    )


def to_peft_names(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our tensor names (``<module>.lora_A.weight``, ``head.weight``) as PEFT saves them."""
    return {f"{PEFT_PREFIX}{key}": value for key, value in tensors.items()}


def from_peft_names(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """PEFT's saved tensor names as ours; a name without PEFT's prefix is a ValueError naming it."""
    outside = sorted(key for key in tensors if not key.startswith(PEFT_PREFIX))
    if outside:
        raise ValueError(f"tensor '{outside[0]}' does not start with PEFT's prefix '{PEFT_PREFIX}'")
    return {key[len(PEFT_PREFIX) :]: value for key, value in tensors.items()}


def lora_owners(tensors: dict[str, Tensor]) -> set[str]:
    """Names of the modules that PEFT adapter tensors (``<module>.lora_*``) belong to."""
    return {key.rsplit(".lora_", 1)[0] for key in tensors if ".lora_" in key}
