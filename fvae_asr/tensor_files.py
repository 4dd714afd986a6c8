"""Safetensors files of the whole package (adapter checkpoints, exports, training checkpoints): written atomically
with no pickle, and read back with the file's faults named: a missing or unreadable file, or a non-finite weight,
is an error naming the file and the tensor."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from fvae_asr.files import write_atomically


def check_finite(tensors: dict[str, Tensor], origin: str | Path) -> None:
    """Every floating-point tensor must be finite: NaN or infinite weights make a model output garbage."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{origin}: tensor '{name}' has non-finite (NaN or infinite) values")


def load_tensors(path: Path, what: str) -> dict[str, Tensor]:
    """A safetensors file's tensors; a missing or unreadable file, or a non-finite weight, is an error naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as err:
        raise ValueError(f"cannot read {what} {path}: {err}") from err
    check_finite(tensors, path)
    return tensors


def save_tensors(tensors: dict[str, Tensor], path: Path) -> None:
    """A safetensors file written atomically (no pickle), readable by ``load_tensors``."""
    write_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
