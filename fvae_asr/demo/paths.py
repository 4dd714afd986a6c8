"""Where the demo finds the shipped tiny backbone, in a checkout or an installed package alike."""

from __future__ import annotations

from pathlib import Path

ASSET_BACKBONE = Path(__file__).resolve().parents[1] / "assets" / "tiny_wav2vec2"


def shipped_backbone() -> str:
    """The shipped tiny backbone's folder as an absolute path, for ``demo.yaml``
    (``encoder_source: !apply:fvae_asr.demo.paths.shipped_backbone []``): the recipe then runs from any folder."""
    return str(ASSET_BACKBONE)
