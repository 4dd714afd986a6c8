"""``make lint``'s Markdown linter (pymarkdownlnt, configured in pyproject.toml) passes on the README and the docs,
and catches what Python-Markdown would render as text: a list or a heading glued to the line before it."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def lint(*paths: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pymarkdown", "scan", *map(str, paths)], cwd=ROOT, capture_output=True, text=True
    )


@pytest.mark.e2e
def test_the_readme_and_the_docs_pass():
    done = lint("-r", "README.md", "docs")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.e2e
def test_a_list_or_heading_glued_to_a_paragraph_is_reported(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\nTwo latents:\n- z1\n- z2\n\n## Section\nText.\n")
    done = lint(page)
    assert done.returncode != 0
    assert f"{page}:4:1: MD032" in done.stdout and f"{page}:7:1: MD022" in done.stdout
