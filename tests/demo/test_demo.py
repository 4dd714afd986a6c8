"""The offline demo: its command line, its hparams, and the whole run at a tiny size (the full-size run is
`make demo`)."""

import json

import pytest

from fvae_asr.demo import size
from fvae_asr.demo.__main__ import main, parse_args
from fvae_asr.demo.paths import ASSET_BACKBONE
from fvae_asr.recipes.timit import recipe_file
from fvae_asr.speech.training.hparams import load_hparams

from conftest import REPO


@pytest.mark.slow
def test_demo_writes_a_complete_summary(tmp_path):
    assert (ASSET_BACKBONE / "config.json").is_file(), "the tiny pretrained backbone ships with the repository"
    assert main(["--out", str(tmp_path), "--train-speakers", "3", "--sentences-per-speaker", "2", "--epochs", "1"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["per_after"] >= 0 and summary["per_before"] >= 0 and summary["seconds"] > 0
    assert summary["trainable_parameters"]["frozen"] < summary["trainable_parameters"]["fvae_lora"]
    assert summary["transcription"]["reference"] and summary["transcription"]["utterance"]
    assert (tmp_path / "fvae_lora" / "model" / "adapter_model.safetensors").is_file()
    settings = summary["settings"]  # what the demo ran with, and why
    assert settings["lr"] == size.LEARNING_RATES and settings["epochs"] == 1 and settings["train_utterances"] == 6
    assert (
        settings["target_modules"]
        == ["projection", "q_proj", "k_proj", "v_proj", "out_proj", "intermediate_dense", "output_dense"]
        and "study" in settings["why"]
    )


def test_the_demo_trains_at_the_rates_its_dev_grid_picked():
    """The demo's size and rates are those of its committed rate study (docs/demo_rates), and each rate is the
    one with the lowest dev PER there (the study's test PERs play no part)."""
    study = json.loads((REPO / "docs" / "demo_rates" / "results.json").read_text())
    ran = study["size"]
    assert (ran["train_speakers"], ran["sentences_per_speaker"], ran["epochs"], ran["lr_grid"]) == (
        size.TRAIN_SPEAKERS,
        size.SENTENCES_PER_SPEAKER,
        size.EPOCHS,
        size.RATE_GRID,
    )
    entries = {entry["method"]: entry for entry in study["results"]}
    for kind, lr in size.LEARNING_RATES.items():
        dev_per = entries[kind]["dev_per_by_lr"]
        assert sorted(map(float, dev_per)) == size.RATE_GRID, kind
        assert lr == entries[kind]["lr"] == min(size.RATE_GRID, key=lambda rate: (dev_per[f"{rate:g}"], rate)), kind


def test_demo_hparams_find_the_shipped_backbone_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hparams = load_hparams(recipe_file("hparams/demo.yaml"), {"data_folder": str(tmp_path)})
    assert hparams["encoder_source"] == str(ASSET_BACKBONE) and hparams["encoder"].source == str(ASSET_BACKBONE)
    # run directly (python recipes/timit/train.py .../demo.yaml), the yaml trains FVAE-LoRA as the demo does
    assert (hparams["number_of_epochs"], hparams["lr"]) == (size.EPOCHS, size.LEARNING_RATES["fvae_lora"])


def test_demo_usage_names_the_command_and_explains_every_option(capsys):
    with pytest.raises(SystemExit) as caught:
        parse_args(["--help"])
    assert caught.value.code == 0
    usage = capsys.readouterr().out
    assert usage.startswith("usage: fvae-asr demo ")
    options = usage[usage.index("options:") :].split("\n  -")[1:]
    assert len(options) == 6 and all(len(option.split()) > 3 for option in options), options
