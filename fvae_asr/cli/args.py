"""Argument types shared by the command-line tools: a bad value is a one-line usage error (exit 2), found
before anything is loaded or written."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def positive_int(text: str) -> int:
    """A count such as ``--batch-size``."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def torch_device(text: str) -> str:
    """A device torch can allocate on here (``cpu``, ``cuda:0``...): checked by allocating an empty tensor."""
    try:
        torch.empty(0, device=torch.device(text))
    except (RuntimeError, AssertionError, ValueError) as err:  # bad string, no such backend, no such index
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise argparse.ArgumentTypeError(f"{text!r} is not a usable torch device here: {reason}") from err
    return text


def output_file(text: str) -> Path:
    """A file to write: its folder must exist and it must not be a folder itself."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a directory, not a file")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"folder {path.parent} does not exist")
    return path
