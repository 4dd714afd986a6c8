"""The benchmarks package: every study and benchmark runs as ``python -m benchmarks.<name>`` from the repository
root."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO

COMMANDS = [
    "alignment",
    "compare",
    "faithfulness",
    "speed.adapter_speed",
    "speed.layer_speed",
    "speed.transcribe_speed",
    "spurious",
]


@pytest.mark.e2e
@pytest.mark.parametrize("name", COMMANDS)
def test_each_script_runs_as_a_module_of_the_package_from_the_repository_root(name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: ")


@pytest.mark.e2e
def test_the_spurious_study_names_its_module_in_usage_errors() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.spurious", "--epochs", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "python -m benchmarks.spurious: error: --epochs, --jobs and --test-per-group must be at least 1"
    )
