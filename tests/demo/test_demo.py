"""The offline demo: its command line, its hparams, and the whole run at a tiny size (the full-size run is
`make demo`)."""

import glob
import json
import re
import shlex

import pytest

from fvae_asr.demo import size
from fvae_asr.demo.__main__ import main, parse_args
from fvae_asr.demo.paths import ASSET_BACKBONE
from fvae_asr.recipes.timit import recipe_file
from fvae_asr.speech.training.hparams import load_hparams

from conftest import REPO
from warm_python import run_python


def getting_started_demo_commands() -> list[list[str]]:
    """The getting-started page's commands on the demo's output (``demo_out/``), continuations joined."""
    text = (REPO / "docs" / "getting-started.md").read_text()
    lines = [
        line
        for block in re.findall(r"```bash\n(.*?)```", text, re.S)
        for line in block.replace("\\\n", " ").splitlines()
    ]
    return [
        shlex.split(line.split("#")[0])
        for line in lines
        if line.startswith(".venv/bin/fvae-asr") and "demo_out/" in line
    ]


@pytest.mark.slow
def test_demo_writes_a_complete_summary(tmp_path):
    assert (ASSET_BACKBONE / "config.json").is_file(), "the tiny pretrained backbone ships with the repository"
    assert main(["--out", str(tmp_path), "--train-speakers", "3", "--sentences-per-speaker", "2", "--epochs", "1"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["per_after"] >= 0 and summary["per_before"] >= 0 and summary["seconds"] > 0
    assert summary["trainable_parameters"]["frozen"] < summary["trainable_parameters"]["fvae_lora"]
    assert summary["transcription"]["reference"] and summary["transcription"]["utterance"]
    nll = summary["reconstruction_nll"]  # the VAE's, before any update and over the last epoch
    assert set(nll) == {"before_training", "last_epoch"} and all(abs(v) < 1e6 for v in nll.values())
    assert (tmp_path / "fvae_lora" / "model" / "adapter_model.safetensors").is_file()
    settings = summary["settings"]  # what the demo ran with, and why
    assert settings["lr"] == size.LEARNING_RATES and settings["epochs"] == 1 and settings["train_utterances"] == 6
    assert (
        settings["target_modules"]
        == ["projection", "q_proj", "k_proj", "v_proj", "out_proj", "intermediate_dense", "output_dense"]
        and "study" in settings["why"]
    )
    commands = getting_started_demo_commands()  # a new user's first transcription and scoring, as documented
    assert [command[1] for command in commands] == ["transcribe", "evaluate"]
    for command in commands:
        args = [arg.replace("demo_out", str(tmp_path)) for arg in command[1:]]
        args = [found for arg in args for found in (sorted(glob.glob(arg)) if "*" in arg else [arg])]
        done = run_python(["-m", "fvae_asr", *args])
        assert done.returncode == 0, done.stderr
        if command[1] == "transcribe":
            sentences = glob.glob(str(tmp_path / "corpus" / "TEST" / "DR*" / "*" / "SA1.WAV"))
            assert len(done.stdout.splitlines()) == len(sentences) >= 2
            assert all(len(line.split("\t")[1].split()) > 3 for line in done.stdout.splitlines())
        else:
            assert re.search(r"^PER \d+\.\d+%", done.stdout, re.M)


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
        trained = [rate for rate in size.RATE_GRID if dev_per[f"{rate:g}"] is not None]  # None: the run diverged
        assert lr == entries[kind]["lr"] == min(trained, key=lambda rate: (dev_per[f"{rate:g}"], rate)), kind


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
