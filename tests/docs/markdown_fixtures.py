"""Fixtures for the docs' code blocks (a pytest plugin that test_code_blocks loads with ``-p``): what a snippet
takes from the reader's own set-up (a pretrained classifier and its batch, a recogniser export and its audio), made
tiny and offline, so the snippet runs as printed. A block names them with ``{.python fixture:NAME}``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import BertConfig, BertForSequenceClassification

from tiny_exports import export_tiny_recognizer, save_tiny_wav2vec2

RATE = 16000  # the tiny wav2vec2's sampling rate
TINY_BERT = BertConfig(
    vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=2
)


def _classifier() -> BertForSequenceClassification:
    """The same tiny random classifier on every call, standing in for ``from_pretrained(...)``."""
    torch.manual_seed(0)
    return BertForSequenceClassification(TINY_BERT).eval()


@pytest.fixture
def base() -> BertForSequenceClassification:
    return _classifier()


@pytest.fixture
def fresh_base() -> BertForSequenceClassification:
    return _classifier()


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    """A tokenised batch of two sentences of 8 tokens."""
    generator = torch.Generator().manual_seed(1)
    return {"input_ids": torch.randint(0, 50, (2, 8), generator=generator), "attention_mask": torch.ones(2, 8).long()}


@pytest.fixture
def timit_export(tmp_path, monkeypatch) -> Path:
    """``runs/timit/export`` (a tiny FVAE-LoRA recogniser export) and ``speech.wav`` in the snippet's folder."""
    monkeypatch.chdir(tmp_path)
    backbone = save_tiny_wav2vec2(tmp_path / "backbone")
    labels = ["<blank>", "sil", "dh", "ax", "k", "ae", "t"]
    export = export_tiny_recognizer(tmp_path / "runs" / "timit" / "export", "fvae_lora", backbone, labels, step=0.5)
    samples = 0.3 * np.random.default_rng(3).standard_normal(RATE).astype(np.float32)
    sf.write("speech.wav", samples, RATE, "FLOAT")
    return export


@pytest.fixture
def wavs() -> torch.Tensor:
    """Two waveforms at 16 kHz, the second padded from 0.6 s to the first's 1 s: (batch, samples)."""
    noise = 0.3 * torch.randn(2, RATE, generator=torch.Generator().manual_seed(4))
    noise[1, int(0.6 * RATE) :] = 0.0
    return noise


@pytest.fixture
def wav_lens() -> torch.Tensor:
    return torch.tensor([1.0, 0.6])
