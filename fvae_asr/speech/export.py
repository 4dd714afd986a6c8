"""Saving and loading trained recognisers: small, pickle-free safetensors files plus a JSON description.

A recogniser directory holds ``recognizer.json`` (backbone source, training kind, labels, encoder options) and
either an adapter checkpoint (``adapter_config.json`` + ``adapter_model.safetensors``, adapters + head) or,
for ``full``/``frozen``, ``trainable_model.safetensors`` with the weights that were trained.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from speechbrain.utils.checkpoints import mark_as_loader, mark_as_saver, register_checkpoint_hooks
from torch import nn
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2ForCTC

from fvae_asr.adapters import adapter_layers, base_state_dict, load_adapter, save_adapter
from fvae_asr.adapters.checkpoint import read_json
from fvae_asr.speech.encoder import Wav2Vec2Encoder
from fvae_asr.speech.model import CTCRecognizer, configure_training

DESCRIPTION_NAME = "recognizer.json"
TRAINABLE_NAME = "trainable_model.safetensors"
BACKBONE_DIR = "backbone"


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train (adapters, head, or all of a fully fine-tuned model), detached on CPU."""
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def save_trainable(model: nn.Module, path: Path) -> None:
    save_file(trainable_state(model), str(path), metadata={"format": "pt"})


def load_trainable(model: nn.Module, path: Path) -> None:
    """Load ``save_trainable`` output strictly: a missing, extra or misshapen tensor is an error naming it."""
    tensors = load_file(str(path))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for name in sorted(set(params) | set(tensors)):
        if name not in tensors or name not in params or tensors[name].shape != params[name].shape:
            raise ValueError(f"{path}: tensor '{name}' does not match the model (missing, unexpected or misshapen)")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(tensors[name])


@register_checkpoint_hooks
class TrainableWeights:
    """SpeechBrain recoverable that checkpoints only the trainable weights (adapter-sized for adapters)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @mark_as_saver
    def save(self, path: str | Path) -> None:
        save_trainable(self.model, Path(path))

    @mark_as_loader
    def load(self, path: str | Path, end_of_epoch: bool) -> None:
        del end_of_epoch
        load_trainable(self.model, Path(path))


def export_recognizer(model: CTCRecognizer, kind: str, labels: list[str], directory: str | Path) -> Path:
    """Write a self-contained recogniser directory for transcription and evaluation."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    encoder = model.encoder
    description = {
        "backbone": _save_random_init_backbone(encoder, directory) if encoder.random_init_config else encoder.source,
        "adapter": kind,
        "labels": labels,
        "blank_index": 0,
        "sample_rate": 16000,
        "normalize_wav": encoder.normalize_wav,
        "freeze_feature_encoder": encoder.freeze_feature_encoder,
    }
    if kind in ("fvae_lora", "lora"):
        save_adapter(model, directory)
    else:
        save_trainable(model, directory / TRAINABLE_NAME)
    (directory / DESCRIPTION_NAME).write_text(json.dumps(description, indent=2) + "\n")
    return directory


def _save_random_init_backbone(encoder: Wav2Vec2Encoder, directory: Path) -> str:
    """A randomly initialised backbone cannot be rebuilt from its config: save its base weights beside the
    adapters, as a Hugging Face directory; returns its path relative to ``directory``."""
    target = directory / BACKBONE_DIR
    encoder.model.config.save_pretrained(str(target))
    tensors = {k: v.detach().contiguous().cpu() for k, v in base_state_dict(encoder.model).items()}
    save_file(tensors, str(target / "model.safetensors"), metadata={"format": "pt"})
    return BACKBONE_DIR


def export_hf_ctc(model: CTCRecognizer, labels: list[str], directory: str | Path, blank_index: int = 0) -> Path:
    """Save a recogniser without adapters as a Hugging Face ``Wav2Vec2ForCTC`` directory (config, weights, CTC
    tokenizer vocabulary with the blank as pad token), loadable by transformers and by the recipe's
    ``init_head_from_checkpoint``."""
    if adapter_layers(model):
        raise ValueError("export_hf_ctc saves plain wav2vec2 + head; use export_recognizer for adapted models")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.encoder.model.config.to_dict()
    config.update(vocab_size=len(labels), pad_token_id=blank_index, bos_token_id=None, eos_token_id=None)
    ctc = Wav2Vec2ForCTC(type(model.encoder.model.config).from_dict(config))
    ctc.wav2vec2.load_state_dict(model.encoder.model.state_dict())
    ctc.lm_head.load_state_dict(model.head.state_dict())
    ctc.save_pretrained(str(directory))
    vocab_file = directory / "vocab.json"
    vocab_file.write_text(json.dumps({label: i for i, label in enumerate(labels)}, indent=2) + "\n")
    tokenizer = Wav2Vec2CTCTokenizer(str(vocab_file), pad_token=labels[blank_index], unk_token=None,
                                     bos_token=None, eos_token=None, word_delimiter_token=None)
    tokenizer.save_pretrained(str(directory))
    return directory


def read_description(directory: str | Path) -> dict[str, Any]:
    """The ``recognizer.json`` of an exported recogniser."""
    return read_json(Path(directory) / DESCRIPTION_NAME, "recogniser description (written by export_recognizer)")


def load_recognizer(directory: str | Path, device: str | torch.device = "cpu") -> tuple[CTCRecognizer, dict]:
    """Rebuild an exported recogniser (in eval mode) and return it with its description."""
    directory = Path(directory)
    description = read_description(directory)
    saved_inside = directory / description["backbone"]  # a relative path points inside the export
    encoder = Wav2Vec2Encoder(
        saved_inside if saved_inside.is_dir() else description["backbone"],
        freeze_feature_encoder=description["freeze_feature_encoder"],
        normalize_wav=description["normalize_wav"],
    )
    model = CTCRecognizer(encoder, n_tokens=len(description["labels"]))
    kind = description["adapter"]
    if kind in ("fvae_lora", "lora"):
        load_adapter(model, directory)
    else:
        configure_training(model, kind)
        load_trainable(model, directory / TRAINABLE_NAME)
    return model.to(device).eval(), description
