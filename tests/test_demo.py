"""The offline demo end to end, at a tiny size (the full-size run is `make demo`)."""

import json

import pytest

from fvae_asr.demo.__main__ import main
from fvae_asr.demo.paths import ASSET_BACKBONE


@pytest.mark.slow
def test_demo_writes_a_complete_summary(tmp_path):
    assert (ASSET_BACKBONE / "config.json").is_file(), "the tiny pretrained backbone ships with the repository"
    assert main(["--out", str(tmp_path), "--train-speakers", "3", "--sentences-per-speaker", "2", "--epochs", "1"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 0 <= summary["per_after"] and 0 <= summary["per_before"] and summary["seconds"] > 0
    assert summary["trainable_parameters"]["frozen"] < summary["trainable_parameters"]["fvae_lora"]
    assert summary["transcription"]["reference"] and summary["transcription"]["utterance"]
    assert (tmp_path / "fvae_lora" / "model" / "adapter_model.safetensors").is_file()
