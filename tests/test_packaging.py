"""The package as users install it: the wheel holds every package folder and the recipe's hyperparameters, and
the demo and the command lines run from it, away from any checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib

import pytest

from conftest import REPO, recipe_overrides
from test_corpus import make_ipa_corpus
from tiny_models import TINY_ENCODERS

NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "results", "demo_out", "build", "*.egg-info", "__pycache__", "docs")


def _package_names(folder: str, package: str) -> set[str]:
    """Every folder under REPO/folder that holds files (code, or data such as yaml and weights), as a dotted name
    under ``package``, the name REPO/folder installs as; caches and links out of the folder aside."""
    root = REPO / folder
    holders = {p.parent for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
               and p.resolve().is_relative_to(root.resolve())}  # fmt: skip
    return {".".join([package, *holder.relative_to(root).parts]) for holder in holders}


def test_the_package_list_names_every_package_folder():
    """Code and data folders alike (a data folder setuptools is not told of is shipped with a warning)."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = _package_names("fvae_asr", "fvae_asr") | _package_names("recipes", "fvae_asr.recipes")
    assert listed == found


@pytest.mark.slow
def test_the_installed_wheel_runs_the_demo_and_the_commands_outside_the_checkout(tmp_path):
    source, wheels, site, elsewhere = (tmp_path / name for name in ("source", "wheels", "site", "elsewhere"))
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    pip = [sys.executable, "-m", "pip", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)], check=True)
    (wheel,) = wheels.glob("fvae_asr-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}

    def python(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=elsewhere, env=env, capture_output=True, text=True)

    located = python("-c", "import fvae_asr, fvae_asr.recipes; print(fvae_asr.__file__)")
    assert located.stdout.strip() == str(site / "fvae_asr" / "__init__.py"), located.stderr
    demo = python("-m", "fvae_asr.demo", "--out", "out", "--train-speakers", "2", "--sentences-per-speaker", "2",
                  "--epochs", "1")  # fmt: skip
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert (elsewhere / "out" / "summary.json").is_file() and not (source / "results").exists()
    wav = json.loads((elsewhere / "out" / "summary.json").read_text())["transcription"]["wav"]
    grid = python("-m", "fvae_asr.transcribe", "--checkpoint", "out/fvae_lora/model", "--format", "textgrid", wav)
    assert grid.returncode == 0 and grid.stdout.startswith('File type = "ooTextFile"'), grid.stderr[-2000:]
    # The recipe from the package, on a CSV corpus at 22.05 kHz stereo, with a HuBERT encoder
    corpus = make_ipa_corpus(tmp_path / "ipa")
    overrides = recipe_overrides(corpus, elsewhere / "hubert", encoder_config=TINY_ENCODERS["hubert"],
                                 number_of_epochs=1, train_annotation=str(corpus / "train.csv"),
                                 valid_annotation=str(corpus / "dev.csv"), test_annotation=str(corpus / "test.json"))
    recipe = python("-m", "fvae_asr.recipes.timit.train", str(site / "fvae_asr" / "recipes" / "timit" / "hparams.yaml"),
                    *(f"--{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in overrides.items()),
                    "--noprogressbar")  # fmt: skip
    assert recipe.returncode == 0, recipe.stderr[-3000:]
    assert json.loads((elsewhere / "hubert" / "model" / "backbone" / "config.json").read_text())["model_type"] == "hubert"
    adapters = python("-c", "from fvae_asr.integrations.speechbrain import FVAELoRA, LoRA; print(FVAELoRA.__module__)")
    assert adapters.stdout.strip() == "fvae_asr.integrations.speechbrain", adapters.stderr[-2000:]
    for script in ("fvae-asr-transcribe", "fvae-asr-evaluate", "fvae-asr-latents", "fvae-asr-demo", "fvae-asr-synthetic"):
        usage = subprocess.run([site / "bin" / script, "--help"], cwd=elsewhere, env=env, capture_output=True, text=True)
        assert usage.returncode == 0 and usage.stdout.startswith("usage:"), (script, usage.stderr[-2000:])
