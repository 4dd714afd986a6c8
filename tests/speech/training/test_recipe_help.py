"""The recipe's help lists its yaml's settings, defaults and comments as the file has them (never a copy)."""

import re
from pathlib import Path

import pytest
import ruamel.yaml

from fvae_asr.cli import main as cli
from fvae_asr.speech.training.recipe_help import read_settings, recipe_help

from warm_python import run_python

RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "timit"
TRAIN_YAML = RECIPE / "hparams" / "train.yaml"


def _scalar_keys(path: Path) -> list[str]:
    """Top-level keys of a yaml whose value is neither an object, a mapping nor private, read by a yaml parser."""
    tree = ruamel.yaml.YAML().load(path.read_text())
    tagged = {
        key
        for key, value in tree.items()
        if str(getattr(getattr(value, "tag", None), "value", "")).startswith(("!new:", "!name:"))
    }
    nested = {key for key, value in tree.items() if isinstance(value, dict) and value}  # encoder_config: {} is a value
    return [k for k in tree if not k.startswith("_") and k not in nested and k not in tagged]


def test_every_setting_of_the_recipe_is_listed_with_its_inline_comment():
    settings = {s.key: s for s in read_settings(TRAIN_YAML)}
    assert list(settings) == _scalar_keys(TRAIN_YAML)
    for line in TRAIN_YAML.read_text().splitlines():
        match = re.match(r"^(\w+): (.+?)  # (.+)$", line)
        if match and match[1] in settings:
            assert settings[match[1]].default == match[2], line
            assert settings[match[1]].meaning == match[3], line
    assert settings["rank"].default == "16"
    assert settings["normalize_wav"].meaning == "Zero mean, unit variance per utterance."  # the block above it


def test_help_follows_the_file(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(
        "# ---- section ----\n# The first sentence. The second one.\nalpha: 1\nbeta: [a, b]  # two names\n"
        "gamma: !new:torch.nn.Identity\nnested:\n    x: 1\n__private: !apply:print []\n"
    )
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nalpha: 2  # changed here\ndelta: 3\n")
    assert [(s.key, s.default, s.meaning) for s in read_settings(base)] == [
        ("alpha", "1", "The first sentence."),
        ("beta", "[a, b]", "two names"),
    ]
    child = read_settings(tmp_path / "child.yaml")
    assert [(s.key, s.default, s.meaning) for s in child] == [
        ("alpha", "2", "changed here"),
        ("beta", "[a, b]", "two names"),
        ("delta", "3", ""),
    ]
    text = recipe_help(base, "x.py HPARAMS")
    assert "  --alpha=1\n      The first sentence.\n" in text and "--speechbrain-help" in text
    assert "--gamma" not in text and "--nested" not in text and "__private" not in text


@pytest.mark.e2e
def test_train_py_without_arguments_prints_the_settings_and_exits_2():
    done = run_python([str(RECIPE / "train.py")])
    assert done.returncode == 2
    assert "--data_folder=!PLACEHOLDER" in done.stderr and "--method=fvae_lora" in done.stderr
    assert "Run a SpeechBrain experiment" not in done.stderr + done.stdout


def test_fvae_asr_train_help_lists_the_packaged_recipe_then_speechbrain_options(capsys):
    assert cli.main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    for setting in read_settings(TRAIN_YAML):
        assert f"  --{setting.key}={setting.default}\n" in out
    assert "Run a SpeechBrain experiment" not in out
    assert cli.main(["train", "--speechbrain-help"]) == 0
    assert "Run a SpeechBrain experiment" in capsys.readouterr().out
    assert cli.main(["train"]) == 2  # nothing to run: the settings, as a usage error
