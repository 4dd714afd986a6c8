"""Where the demo finds the recipe and its shipped tiny backbone."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPE_DIR = REPO_ROOT / "recipes" / "timit"
ASSET_BACKBONE = Path(__file__).resolve().parents[1] / "assets" / "tiny_wav2vec2"


def recipe_file(name: str) -> Path:
    """A file of the TIMIT recipe; the demo runs the recipe users run, so it needs the source checkout."""
    path = RECIPE_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the demo from a source checkout of fvae-asr")
    return path


def shipped_backbone() -> str:
    """The shipped tiny backbone's folder as an absolute path, for ``demo.yaml``
    (``encoder_source: !apply:fvae_asr.demo.paths.shipped_backbone []``): the recipe then runs from any folder."""
    return str(ASSET_BACKBONE)
