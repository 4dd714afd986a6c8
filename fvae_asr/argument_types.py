"""Argument types shared by the command lines (the CLI's commands and the demo): a bad value is a one-line usage
error (exit 2), found before anything is loaded or written."""

from __future__ import annotations

import argparse
import math
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


def positive_float(text: str) -> float:
    """A length of time such as ``--chunk-seconds``."""
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A length of time that may be zero, such as ``--context-seconds``."""
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


def output_dir(text: str) -> Path:
    """A folder to write into: an existing folder, or a new one whose parent exists."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} exists and is not a directory")
    if not path.exists() and not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"folder {path.parent} does not exist")
    return path


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value
