"""Argument types shared by the command lines (the CLI's commands and the demo): a bad value is a one-line usage
error (exit 2), found before anything is loaded or written."""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable
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
    _check_parent(path)
    return path


def output_dir(text: str) -> Path:
    """A folder to write into: an existing folder, or a new one whose parent exists."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} exists and is not a directory")
    if not path.exists():
        _check_parent(path)
    return path


def _check_parent(path: Path) -> None:
    """The folder a new file or folder goes into must be an existing folder (not a file)."""
    if path.parent.exists() and not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"{path.parent} is a file, not a folder (for {path})")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"folder {path.parent} does not exist")


def outputs_among_inputs(outputs: Iterable[Path], inputs: Iterable[str | Path]) -> str | None:
    """Why writing would replace one of the command's inputs (an output that is an input file, by path or as the
    same file through a link), or None: every command checks this before it starts."""
    read = {_identity(Path(path)) for path in inputs}
    for output in outputs:
        if _identity(output) in read:
            return f"{output} is one of the inputs: writing it would replace what is being read"
    return None


def _identity(path: Path) -> tuple:
    """What makes two paths one file: device and inode when it exists, else its absolute path."""
    try:
        stat = path.stat()
    except OSError:
        return ("path", str(path.absolute().resolve()))
    return ("inode", stat.st_dev, stat.st_ino)


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


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value
