"""The package as users install it: the wheel holds every package folder and the recipe's hyperparameters, and
the demo and the command lines run from it, away from any checkout."""

from __future__ import annotations

import email.parser
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement

from conftest import REPO, recipe_overrides
from ipa_corpus import make_ipa_corpus
from tiny_models import TINY_ENCODERS

NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "results", "demo_out", "build", "*.egg-info", "__pycache__", "docs"
)


def _package_names(folder: str, package: str) -> set[str]:
    """Every folder under REPO/folder that holds files (code, or data such as yaml and weights), as a dotted name
    under ``package``, the name REPO/folder installs as; caches and links out of the folder aside."""
    root = REPO / folder
    holders = {
        p.parent
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.resolve().is_relative_to(root.resolve())
    }
    return {".".join([package, *holder.relative_to(root).parts]) for holder in holders}


def test_the_package_list_names_every_package_folder():
    """Code and data folders alike (a data folder setuptools is not told of is shipped with a warning)."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = _package_names("fvae_asr", "fvae_asr") | _package_names("recipes", "fvae_asr.recipes")
    assert listed == found


PIP = [sys.executable, "-m", "pip", "--quiet", "--disable-pip-version-check"]


@dataclass
class Installed:
    """The wheel built from a copy of the checkout's sources, and installed (without dependencies) into ``site``."""

    source: Path
    wheel: Path
    site: Path


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    root = tmp_path_factory.mktemp("packaging")
    source, wheels, site = root / "source", root / "wheels", root / "site"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    subprocess.run([*PIP, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)], check=True)
    (wheel,) = wheels.glob("fvae_asr-*.whl")
    subprocess.run([*PIP, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    return Installed(source, wheel, site)


@pytest.mark.e2e
def test_a_plain_install_of_the_wheel_brings_what_the_demo_and_the_figures_need(installed):
    """pip installs a wheel's requirements that no extra marks: eSpeak NG's loader (the demo's corpus) and
    matplotlib (the figures of latents and the studies) must be among them."""
    with zipfile.ZipFile(installed.wheel) as wheel:
        (metadata,) = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
        message = email.parser.Parser().parsestr(wheel.read(metadata).decode())
    requirements = [Requirement(text) for text in message.get_all("Requires-Dist")]
    plain = {req.name for req in requirements if req.marker is None}
    assert {"espeakng-loader", "matplotlib", "torch", "speechbrain"} <= plain


@pytest.mark.e2e
def test_the_demo_without_espeak_ng_fails_in_one_line_before_writing_anything(installed, tmp_path):
    """An environment that lacks the loader anyway (installed with --no-deps, or removed) gets one line, not a
    traceback, and no half-made output folder."""
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "espeakng_loader.py").write_text("raise ImportError('espeakng_loader is blocked by the test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocked), str(installed.site)])}
    demo = subprocess.run(
        [sys.executable, "-m", "fvae_asr.demo", "--out", "demo0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert demo.returncode == 1
    notice = "torchvision is not available - cannot save figures"  # SpeechBrain's, at import, on every command
    assert [line for line in demo.stderr.strip().splitlines() if line != notice] == [
        "error: the demo's corpus needs eSpeak NG: eSpeak NG needs the 'espeakng-loader' package: pip install "
        "espeakng-loader (fvae-asr installs it; see docs/installation.md)"
    ]
    assert not (tmp_path / "demo0").exists()


EVERY_HELP = """\
import contextlib, io, json, sys
import fvae_asr, fvae_asr.recipes
from fvae_asr.cli.main import main
from fvae_asr.integrations.speechbrain import FVAELoRA, LoRA
helps = {}
for command in sys.argv[1:]:
    usage = io.StringIO()
    with contextlib.redirect_stdout(usage):
        try:
            code = main([command, "--help"])  # the console script exits with what main returns
        except SystemExit as stop:
            code = stop.code
    helps[command] = (code or 0, usage.getvalue())
print(json.dumps([[fvae_asr.__file__, FVAELoRA.__module__], helps]))
"""


@pytest.mark.slow
def test_the_installed_wheel_runs_the_demo_and_the_commands_outside_the_checkout(installed, tmp_path):
    source, site, elsewhere = installed.source, installed.site, tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "OMP_NUM_THREADS": "1"}

    def python(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=elsewhere, env=env, capture_output=True, text=True)

    demo = python(
        "-m", "fvae_asr.demo", "--out", "out", "--train-speakers", "2", "--sentences-per-speaker", "2", "--epochs", "1"
    )
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert (elsewhere / "out" / "summary.json").is_file() and not (source / "results").exists()
    wav = json.loads((elsewhere / "out" / "summary.json").read_text())["transcription"]["wav"]
    console_script = [site / "bin" / "fvae-asr", "transcribe", "--checkpoint", "out/fvae_lora/model"]
    grid = subprocess.run([*console_script, "--format", "textgrid", wav], cwd=elsewhere, env=env, capture_output=True)
    assert grid.returncode == 0 and grid.stdout.startswith(b'File type = "ooTextFile"'), grid.stderr[-2000:]
    # The recipe from the package, on a CSV corpus at 22.05 kHz stereo, with a HuBERT encoder
    corpus = make_ipa_corpus(tmp_path / "ipa")
    overrides = recipe_overrides(
        corpus,
        elsewhere / "hubert",
        encoder_config=TINY_ENCODERS["hubert"],
        number_of_epochs=1,
        train_annotation=str(corpus / "train.csv"),
        valid_annotation=str(corpus / "dev.csv"),
        test_annotation=str(corpus / "test.json"),
    )
    recipe = python(
        "-m",
        "fvae_asr.recipes.timit.train",
        str(site / "fvae_asr" / "recipes" / "timit" / "hparams" / "train.yaml"),
        *(f"--{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in overrides.items()),
        "--noprogressbar",
    )
    assert recipe.returncode == 0, recipe.stderr[-3000:]
    assert (
        json.loads((elsewhere / "hubert" / "model" / "backbone" / "config.json").read_text())["model_type"] == "hubert"
    )
    # In one process (each imports torch and SpeechBrain again: seconds apiece), where the package and its
    # SpeechBrain adapters load from, and every command's help
    commands = ("train", "transcribe", "evaluate", "align", "latents", "demo", "synthetic")
    helps = python("-c", EVERY_HELP, *commands)
    assert helps.returncode == 0, helps.stderr[-2000:]
    located, answered = json.loads(helps.stdout.splitlines()[-1])
    assert located == [str(site / "fvae_asr" / "__init__.py"), "fvae_asr.integrations.speechbrain"]
    assert list(answered) == list(commands)
    for command, (code, usage) in answered.items():
        assert code == 0 and usage.startswith(f"usage: fvae-asr {command}"), (command, usage[-2000:])
