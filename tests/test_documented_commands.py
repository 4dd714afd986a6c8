"""Every ``python -m <module>`` and ``python <script>.py`` of ours that the documentation or a docstring shows runs
something: a module or script without a ``__main__`` entry would exit 0 having done nothing."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("fvae_asr", "benchmarks")
MODULE = re.compile(r"\bpython3? -m ([A-Za-z_][\w.]*\w)(?![\w.<])")  # not a placeholder: benchmarks.<name>
SCRIPT = re.compile(r"\bpython3? ((?:[\w.-]+/)*[\w-]+\.py)\b")
MAIN_GUARD = re.compile(r"""^if __name__ == ["']__main__["']:""", re.MULTILINE)


def documentation() -> list[Path]:
    """What a user reads: the README, the docs site, the READMEs and the sources' docstrings (the changelog keeps
    old commands as history)."""
    pages = [REPO / "README.md"]
    for folder in ("docs", "recipes", "benchmarks", "examples", "fvae_asr"):
        files = (REPO / folder).rglob("*")
        pages += sorted(p for p in files if p.suffix in (".md", ".py") and "records" not in p.parts)
    return pages


def documented(pattern: re.Pattern[str]) -> list[tuple[Path, str]]:
    return [(page, found) for page in documentation() for found in sorted(set(pattern.findall(page.read_text())))]


def case_id(value: object) -> str:
    return str(value.relative_to(REPO)) if isinstance(value, Path) else str(value)


def runs_something(source: Path) -> bool:
    return bool(MAIN_GUARD.search(source.read_text()))


def test_the_documentation_shows_commands_of_ours():
    modules = [name for _, name in documented(MODULE) if name.split(".")[0] in OURS]
    assert {"benchmarks.compare", "benchmarks.spurious", "fvae_asr.demo.backbone"} <= set(modules)
    assert any(script.endswith("train.py") for _, script in documented(SCRIPT))


@pytest.mark.parametrize(
    "page, module", [(p, m) for p, m in documented(MODULE) if m.split(".")[0] in OURS], ids=case_id
)
def test_a_documented_module_has_a_main(page, module):
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"{page.relative_to(REPO)}: python -m {module}: no such module"
    if spec.submodule_search_locations is not None:  # a package runs its __main__
        spec = importlib.util.find_spec(f"{module}.__main__")
        assert spec is not None, f"{page.relative_to(REPO)}: python -m {module}: the package has no __main__"
    else:
        assert runs_something(Path(spec.origin)), f"{page.relative_to(REPO)}: python -m {module} runs nothing"


@pytest.mark.parametrize("page, script", documented(SCRIPT), ids=case_id)
def test_a_documented_script_exists_and_has_a_main(page, script):
    # a path is the repository root's, or, in a folder's README, that folder's (``python train.py``)
    candidates = [REPO / script, page.parent / script]
    found = next((path for path in candidates if path.is_file()), None)
    assert found is not None, f"{page.relative_to(REPO)}: python {script}: no such file"
    assert runs_something(found), f"{page.relative_to(REPO)}: python {script} runs nothing"
