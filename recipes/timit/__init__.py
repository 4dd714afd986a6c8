"""SpeechBrain recipe for TIMIT phone recognition (``train.py``, ``hparams/train.yaml``; the demo's overrides in
``hparams/demo.yaml``). ``recipe_file`` finds its files in a checkout or an installed package alike (this folder
ships as ``fvae_asr.recipes.timit``), for ``fvae-asr train``, the demo and the studies."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def recipe_file(name: str) -> Path:
    """A file of the TIMIT recipe, e.g. ``hparams/train.yaml``.

    Args:
        name: its path inside the recipe's folder.
    """
    path = Path(str(files(__name__).joinpath(name)))
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the fvae_asr.recipes package is incomplete")
    return path
