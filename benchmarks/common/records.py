"""What the studies keep of a run and say of their results: each run's record (found again only when it was made
with the same settings), what the code and backbone were, the command, and the mean and spread over seeds."""

from __future__ import annotations

import hashlib
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fvae_asr.files import read_json, write_json

REPO = Path(__file__).resolve().parents[2]  # the checkout whose commit the records name


def record_path(out: Path, task: Any) -> Path:
    """Where a run's record lives: ``out/records/<task.key>.json``."""
    return out / "records" / f"{task.key}.json"


def read_record(out: Path, task: Any, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The finished run's record if it was made with exactly these settings."""
    path = record_path(out, task)
    if not path.is_file():
        return None
    record = read_json(path, "run record")
    return record if record.get("settings") == settings else None


def write_record(out: Path, task: Any, record: dict[str, Any]) -> None:
    """Write a finished run's record (atomically, its folder made as needed)."""
    path = record_path(out, task)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record)


def source_commit() -> str:
    """The commit this code runs on (with ``+changes`` when the package, the recipe or the benchmarks differ from
    it: results written under docs/ do not count), for the records."""

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--untracked-files=no", "--", "fvae_asr", "recipes", "benchmarks")
    return commit + ("+changes" if changed else "")


def backbone_digest(backbone: Path) -> str:
    """Identifies the backbone's weights, so that records stay valid wherever the study's folders live."""
    digest = hashlib.sha256()
    for pattern in ("*.json", "*.safetensors", "*.bin"):  # (.bin: weights a local encoder may hold instead)
        for path in sorted(backbone.glob(pattern)):
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def study_command(module: str, argv: Sequence[str] | None) -> str:
    """The command line that ran a study, ``python -m <module> ARGS``, for its reports: ``argv`` when ``main`` was
    given one, else this process's arguments."""
    return " ".join([f"python -m {module}", *(sys.argv[1:] if argv is None else argv)])


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (None where undefined)."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None
