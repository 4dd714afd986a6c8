"""The methods the studies compare (frozen, LoRA, FVAE-LoRA, full fine-tuning, two FVAE-LoRA ablations and two
controls, and the spurious study's one-factor controls) as recipe overrides, the adapter target settings and the
rate grid they are tuned over: one registry for the comparison study (``benchmarks.compare``) and the
spurious-correlation study (``benchmarks.spurious``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fvae_asr.speech.models.training_methods import ADAPTER_METHODS

TARGETS: dict[str, list[str]] = {
    "qk": ["q_proj", "k_proj"],
    "all_linear": ["projection", "q_proj", "k_proj", "v_proj", "out_proj", "intermediate_dense", "output_dense"],
}


SHARED = "shared"  # the targets key of frozen and full fine-tuning, which have no adapters


# method -> recipe overrides; nested keys override the arguments of the adapter config objects.
METHODS: dict[str, dict[str, Any]] = {
    "frozen": {"method": "frozen"},
    "lora": {"method": "lora"},
    "fvae_lora": {"method": "fvae_lora"},
    "full": {"method": "full"},
    "delta0": {"method": "fvae_lora", "adapter_configs": {"fvae_lora": {"delta": 0.0, "beta_z2": 1.0}}},
    "same_prior": {"method": "fvae_lora", "adapter_configs": {"fvae_lora": {"prior_mean_z2": 0.0}}},
    # Controls: the authors' LoRA-baseline clipping (norm 1 on the plain task loss), and this package's 0.1 defaults.
    "lora_task_clip": {"method": "lora", "max_grad_norm": 1.0},
    "fvae_lora_old": {
        "method": "fvae_lora",
        "max_grad_norm": 5.0,
        "fvae_lora_alpha": 16,
        "adapter_configs": {"fvae_lora": {"decoder_layers": 1, "decoder_dropout": 0.0, "logvar_clamp": 10.0}},
    },
}
# One of the authors' defaults at a time back at 0.1's value (fvae_lora_old has all of them): which of them explains
# a change between the two. The spurious study runs them at FVAE-LoRA's picked rate.
FACTOR_CONTROLS: dict[str, dict[str, Any]] = {
    "fvae_lora_clip5": {"method": "fvae_lora", "max_grad_norm": 5.0},
    "fvae_lora_scale1": {"method": "fvae_lora", "fvae_lora_alpha": 16},
    "fvae_lora_decoder1": {
        "method": "fvae_lora",
        "adapter_configs": {"fvae_lora": {"decoder_layers": 1, "decoder_dropout": 0.0}},
    },
}


LR_GRID = [0.0005, 0.001, 0.003, 0.01, 0.05]  # the rates each tuned method picks from, unless a study gives its own
# Each with its own grid; the ablations use fvae_lora's rate.
TUNED = ("frozen", "lora", "fvae_lora", "full", "lora_task_clip", "fvae_lora_old")


ABLATIONS = ("delta0", "same_prior")


CONTROLS = {"lora_task_clip": "lora", "fvae_lora_old": "fvae_lora"}  # control -> the method it varies


def targets_of(method: str, targets: Sequence[str] = tuple(TARGETS)) -> list[str]:
    """The target settings (of ``targets``) a method runs under (frozen and full have no adapters)."""
    return list(targets) if METHODS[method]["method"] in ADAPTER_METHODS else [SHARED]
