"""File plumbing shared by the whole package (adapter core, speech, synthetic corpora): JSON objects read with
errors that name the file, and atomic writes that leave either the old file or the new one, never half of one."""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

ALMOST_FULL_BYTES = 1 << 20


class RepeatedKeyError(ValueError):
    """A JSON object that gives one key twice: ``json`` keeps the last silently, so which one holds is a guess."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the key {key!r} is given twice in one object (which one holds would be a guess)")
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for ``json.loads``: a key given twice in one object is an error, not the last kept."""
    content = {}
    for key, value in pairs:
        if key in content:
            raise RepeatedKeyError(key)
        content[key] = value
    return content


def read_json(path: Path, what: str) -> dict:
    """A JSON object from a file; a missing file, bad UTF-8, invalid JSON, a key given twice in one object,
    nesting too deep for Python's parser, or any other JSON value (a list, a number...) raises an error naming the
    path (and line)."""
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        content = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    except RepeatedKeyError as err:
        raise ValueError(f"{path}: {err}") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply to read ({what})") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a JSON object ({what}), got a {type(content).__name__}")
    return content


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Write through a temporary file beside ``path`` and rename, so a failure never leaves a half-written file
    behind (nor destroys the previous one); the file gets the permissions the umask gives any new file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        respect_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_file():  # (a failed write may have left nothing, or something that is not ours to remove)
            tmp.unlink()
        raise


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON, written atomically."""

    def dump(tmp: Path) -> None:
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")

    write_atomically(path, dump)


def respect_umask(path: Path) -> None:
    """Give a file the mode ``open`` would (0o666 less the umask): safetensors writers create files 0o600."""
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def is_disk_full(err: BaseException, directory: Path) -> bool:
    """Whether a failed write ran out of space: ENOSPC in the exception chain, the system's message in it
    (safetensors' SafetensorError), or (almost) no space left in ``directory`` (torch.save's RuntimeError,
    "basic_ios::clear", drops the system error). Ask before deleting what the failed write left."""
    try:
        if shutil.disk_usage(directory).free < ALMOST_FULL_BYTES:
            return True
    except OSError:
        pass
    while err is not None:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(err):
            return True
        err = err.__cause__ or err.__context__
    return False


def file_stamps(paths: Iterable[Path]) -> dict[Path, str]:
    """``"<size> <mtime_ns>"`` of every file that exists (stat() only: noticing a file replaced or rewritten in
    place costs no reading); missing files are left out, for the reader to report."""
    stamps = {}
    for path in paths:
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        stamps[path] = f"{stat.st_size} {stat.st_mtime_ns}"
    return stamps


def describe_changes(before: Mapping[str, str], now: Mapping[str, str]) -> str:
    """The files added, removed and modified between two ``file_stamps`` (keyed by name), a few named of each."""
    differences = {
        "added": sorted(now.keys() - before.keys()),
        "removed": sorted(before.keys() - now.keys()),
        "modified": sorted(path for path in now.keys() & before.keys() if now[path] != before[path]),
    }
    return "; ".join(
        f"{len(files)} {kind} ({', '.join(files[:3])}{', ...' if len(files) > 3 else ''})"
        for kind, files in differences.items()
        if files
    )
