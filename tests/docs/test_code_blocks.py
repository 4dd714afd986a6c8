"""Every Python code block of the README and the docs runs, through the pytest-markdown-docs plugin (so no snippet
can rot). A block that cannot run offline (it needs a trained recogniser, or elides arguments with ``...``) says so
with the plugin's own mark, ```` ```{.python notest} ````, which the docs' superfences also read; they are few. What a
block takes from the reader's set-up (``base``, ``batch``, an export) it names as ``{.python fixture:NAME}``, made
tiny by markdown_fixtures.py."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARKDOWN = [ROOT / "README.md", ROOT / "docs"]


@pytest.mark.slow
def test_every_python_block_of_the_readme_and_the_docs_runs(tmp_path):
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--markdown-docs",
            "--markdown-docs-syntax=superfences",
            "-p",
            "no:cacheprovider",
            "-p",
            "markdown_fixtures",
            "-q",
            *map(str, MARKDOWN),
        ],
        cwd=tmp_path,  # what a block writes (the snippet's my_adapter/) lands here
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(map(str, (ROOT, ROOT / "tests", ROOT / "tests" / "docs"))),
            "HF_HUB_OFFLINE": "1",
        },
    )
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-2000:]
    passed = int(re.search(r"(\d+) passed", ran.stdout)[1])
    assert passed >= 1 and "failed" not in ran.stdout
    assert (tmp_path / "my_adapter" / "adapter_model.safetensors").is_file()  # the snippet ran to its end
    fixtured = sum(path.read_text().count("{.python fixture:") for path in (ROOT / "docs").rglob("*.md"))
    assert fixtured >= 3 and passed >= fixtured  # the blocks that use fixtures ran too


def test_few_blocks_are_exempt():
    exempt = sum(path.read_text().count("{.python notest}") for path in (ROOT / "docs").rglob("*.md"))
    assert exempt <= 3
