"""Where the demo finds the recipe's hyperparameters and the shipped tiny backbone, in a checkout or an installed
package alike (the recipe's folder ships as ``fvae_asr.recipes``)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

ASSET_BACKBONE = Path(__file__).resolve().parents[1] / "assets" / "tiny_wav2vec2"


def recipe_file(name: str) -> Path:
    """A file of the TIMIT recipe, e.g. ``hparams/demo.yaml``: the demo runs the recipe users run."""
    path = Path(str(files("fvae_asr.recipes.timit").joinpath(name)))
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the fvae_asr.recipes package is incomplete")
    return path


def shipped_backbone() -> str:
    """The shipped tiny backbone's folder as an absolute path, for ``demo.yaml``
    (``encoder_source: !apply:fvae_asr.demo.paths.shipped_backbone []``): the recipe then runs from any folder."""
    return str(ASSET_BACKBONE)
