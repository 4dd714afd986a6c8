"""The package's layers: every import arrow points down, from a layer to a lower one, never up or sideways. The
adapter core imports no speech code, the speech models no training code, the demo and the recipe no CLI code."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Lowest first. A module may import its own group and the groups of lower layers only.
LAYERS = [
    ["fvae_asr.files", "fvae_asr.audio", "fvae_asr.library_logs", "fvae_asr.argument_types"],
    ["fvae_asr.tensor_files"],
    ["fvae_asr.adapters"],
    ["fvae_asr.integrations", "fvae_asr.speech.data", "fvae_asr.speech.metrics"],
    ["fvae_asr.speech.models", "fvae_asr.synthetic"],
    ["fvae_asr.speech.inference"],
    ["fvae_asr.speech.training", "fvae_asr.analysis"],
    ["fvae_asr.recipes"],
    ["fvae_asr.demo"],
    ["fvae_asr.cli"],
    ["fvae_asr.__main__", "benchmarks"],
]
RANK = {group: rank for rank, groups in enumerate(LAYERS) for group in groups}
# The public API's re-exports: ``import fvae_asr`` and ``fvae_asr.speech`` name what lies below them.
FACADES = {"fvae_asr", "fvae_asr.speech"}
SOURCES = {"fvae_asr": "fvae_asr", "recipes": "fvae_asr.recipes", "benchmarks": "benchmarks"}  # folder -> package


def group_of(module: str) -> str | None:
    """The longest group that ``module`` is or lies in."""
    found = [group for group in RANK if module == group or module.startswith(f"{group}.")]
    return max(found, key=len, default=None)


def modules(root: Path) -> dict[str, Path]:
    """Every module of ours under ``root``, by its dotted name."""
    found = {}
    for folder, package in SOURCES.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            found[".".join([package, *parts]).removesuffix(".__init__")] = path
    return found


def imports_of(path: Path) -> set[str]:
    """The modules of ours that ``path`` imports, at its top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name for name in names if name.split(".")[0] in ("fvae_asr", "benchmarks")}


def upward_arrows(root: Path) -> list[str]:
    arrows = []
    for module, path in modules(root).items():
        if module in FACADES:
            continue
        source = group_of(module)
        assert source is not None, f"{module} is in no layer: add its group to LAYERS"
        for imported in sorted(imports_of(path)):
            target = group_of(imported)
            if target is not None and target != source and RANK[target] >= RANK[source]:
                arrows.append(f"{module} ({source}) imports {imported} ({target})")
    return arrows


def test_every_import_points_to_a_lower_layer():
    assert upward_arrows(REPO) == []


def test_an_upward_import_is_found(tmp_path):
    """The check itself: a speech model importing a training module, inside a function, is an upward arrow."""
    for folder in SOURCES:
        (tmp_path / folder).mkdir()
    models = tmp_path / "fvae_asr" / "speech" / "models"
    models.mkdir(parents=True)
    (models / "export.py").write_text("def save():\n    from fvae_asr.speech.training.resume import Checkpointer\n")
    assert upward_arrows(tmp_path) == [
        "fvae_asr.speech.models.export (fvae_asr.speech.models) imports fvae_asr.speech.training.resume "
        "(fvae_asr.speech.training)"
    ]
