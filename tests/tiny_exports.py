"""Tiny exported recognisers for the inference tests: a tiny wav2vec2 folder and exports of each training kind."""

from __future__ import annotations

from pathlib import Path

import torch

from fvae_asr import FVAELoRAConfig, LoRAConfig
from fvae_asr.speech.models.encoder import SSLEncoder
from fvae_asr.speech.models.export import export_model
from fvae_asr.speech.models.recognizer import CTCRecognizer
from fvae_asr.speech.models.training_methods import configure_training

from tiny_models import tiny_wav2vec2


def save_tiny_wav2vec2(directory: Path) -> Path:
    """A tiny wav2vec2 saved as a local Hugging Face folder: reloads give the same weights in any process."""
    tiny_wav2vec2().save_pretrained(directory)
    return directory


def export_tiny_recognizer(directory: Path, kind: str, backbone: Path, labels: list[str], step: float = 0.1) -> Path:
    """Export a tiny recogniser of the given kind, its trainable weights moved off their start by ``step`` times
    seeded noise (a fresh adapter's B is zero: it would say what the base says)."""
    torch.manual_seed(0)
    model = CTCRecognizer(SSLEncoder(backbone), n_tokens=len(labels))
    configure_training(model, kind, {"fvae_lora": FVAELoRAConfig(rank=4), "lora": LoRAConfig(rank=4)}.get(kind))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(step * torch.randn(param.shape, generator=generator))
    return export_model(model, kind, labels, directory)
