"""``fvae-asr <command>`` (= ``python -m fvae_asr``): one command line that runs each command's own main."""

import importlib

import pytest

from fvae_asr.cli import main as cli
from fvae_asr.recipes.timit import recipe_file

from warm_python import run_python


def test_every_command_resolves_to_its_main():
    for name in cli.COMMANDS:
        assert callable(cli._command_function(name)), name
    assert set(cli.COMMANDS) == {"train", "transcribe", "evaluate", "align", "latents", "demo", "synthetic"}


@pytest.mark.e2e
def test_python_m_fvae_asr_lists_the_commands_and_refuses_an_unknown_one():
    listed = run_python(["-m", "fvae_asr", "--help"])
    assert listed.returncode == 0
    assert all(name in listed.stdout for name in cli.COMMANDS)
    unknown = run_python(["-m", "fvae_asr", "nope"])
    assert unknown.returncode == 2 and "invalid choice: 'nope'" in unknown.stderr


def test_train_runs_the_packaged_recipe_unless_told_otherwise(monkeypatch):
    calls = []
    monkeypatch.setattr("fvae_asr.recipes.timit.train.main", lambda argv: calls.append(argv) or {})
    assert cli.main(["train", "--data_folder=/data/TIMIT", "--method=lora"]) == 0
    assert cli.main(["train", "--hparams", "mine.yaml", "--method=lora"]) == 0
    assert calls == [
        [str(recipe_file("hparams/train.yaml")), "--data_folder=/data/TIMIT", "--method=lora"],
        ["mine.yaml", "--method=lora"],
    ]


def test_a_command_gets_the_arguments_after_its_name(monkeypatch):
    seen = []
    monkeypatch.setattr("fvae_asr.cli.evaluate.main", lambda argv: seen.append(list(argv)) or 3)
    assert cli.main(["evaluate", "--checkpoint", "m", "--manifest", "t.json"]) == 3
    assert seen == [["--checkpoint", "m", "--manifest", "t.json"]]
    with pytest.raises(SystemExit) as usage:
        cli.main([])
    assert usage.value.code == 2


@pytest.mark.parametrize("command", ["evaluate", "align"])
def test_data_folder_takes_the_command_lines_spelling_and_the_recipes(command):
    parse_args = importlib.import_module(f"fvae_asr.cli.{command}").parse_args
    base = (
        ["--checkpoint", "m", "--manifest", "t.json", "--format", "ctm"]
        if command == "align"
        else ["--checkpoint", "m", "--manifest", "t.json"]
    )
    for spelling in ("--data-folder", "--data_folder"):
        assert parse_args([*base, spelling, "/corpus"]).data_folder == "/corpus"


@pytest.mark.e2e
def test_latents_help_describes_the_command_in_full():
    shown = run_python(["-m", "fvae_asr", "latents", "--help"])
    assert shown.returncode == 0
    assert "--manifest test.json --out DIR" in shown.stdout and "exits 1 on a bad checkpoint" in shown.stdout
