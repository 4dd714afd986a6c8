"""A recipe's ``--help``: its yaml's top-level settings with their defaults and one-line meanings, read from the
yaml and its comments when asked (so the help never drifts from the file), then a pointer to SpeechBrain's own
run options (``--device``, ``--precision``, ...), which every recipe also takes.

A setting's meaning is its inline comment, else the first sentence of the comment block right above it. Objects
(``!new:``, ``!name:``), nested mappings and private keys (``__set_seed``) are left out: they are set in a yaml
of one's own (``extends:``, docs/hparams.md). A file that extends another shows its base's settings with its own
values.
"""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import speechbrain as sb

from fvae_asr.speech.training.hparams import EXTENDS_KEY

HELP_FLAGS = ("-h", "--help")
SPEECHBRAIN_HELP_FLAG = "--speechbrain-help"
_KEY_LINE = re.compile(r"^(?P<key>[A-Za-z][A-Za-z0-9_]*):(?P<rest>.*)$")
_SECTION_HEADER = re.compile(r"-{4}|#{4}")
_OBJECT_TAGS = ("!new:", "!name:")
_WIDTH = 100


@dataclass
class Setting:
    """One top-level setting of a recipe yaml: its name, its value as written and its one-line meaning."""

    key: str
    default: str
    meaning: str


def _split_comment(text: str) -> tuple[str, str]:
    """``value  # comment`` -> (value, comment); a ``#`` inside quotes is part of the value."""
    quote = None
    for i, char in enumerate(text):
        if char in "'\"":
            quote = None if quote == char else (quote or char)
        elif char == "#" and quote is None and (i == 0 or text[i - 1].isspace()):
            return text[:i].strip(), text[i + 1 :].strip()
    return text.strip(), ""


def _first_sentence(lines: Sequence[str]) -> str:
    """The first sentence of a comment block, without its section headers (``# ---- data ----``)."""
    text = " ".join(line.strip() for line in lines if not _SECTION_HEADER.search(line)).strip()
    match = re.search(r"(?<=[a-z0-9)])(?<!e\.g)(?<!i\.e)\. ", text)
    return text[: match.start() + 1] if match else text


def read_settings(hparams_file: str | Path) -> list[Setting]:
    """The top-level scalar and list settings of a recipe yaml, in file order (a base's first, for ``extends:``)."""
    path = Path(hparams_file)
    settings: dict[str, Setting] = {}
    base: Path | None = None
    block: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            block.append(line.lstrip("#"))
            continue
        match = _KEY_LINE.match(line)
        if match is None:
            block = []  # blank or indented lines end a comment block
            continue
        key = match["key"]
        value, comment = _split_comment(match["rest"])
        meaning = comment or _first_sentence(block)
        block = []
        if key == EXTENDS_KEY:
            base = (path.parent / value).resolve()
        elif value and not value.startswith(_OBJECT_TAGS):
            settings[key] = Setting(key, value, meaning)
    if base is None:
        return list(settings.values())
    merged = {s.key: s for s in read_settings(base)}
    for key, own in settings.items():
        kept = merged.get(key)
        merged[key] = Setting(key, own.default, own.meaning or (kept.meaning if kept else ""))
    return list(merged.values())


def recipe_help(hparams_file: str | Path, usage: str) -> str:
    """The help text: usage, every setting of ``hparams_file`` (``--key=value`` overrides it), then where SpeechBrain's
    run options are described."""
    lines = [
        f"usage: {usage}",
        "",
        f"Settings of {Path(hparams_file).name}, with their defaults as the yaml writes them; --key=value overrides",
        "any of them:",
        "",
    ]
    for setting in read_settings(hparams_file):
        lines.append(f"  --{setting.key}={setting.default}")
        if setting.meaning:
            lines += textwrap.wrap(setting.meaning, _WIDTH, initial_indent=" " * 6, subsequent_indent=" " * 6)
    lines += [
        "",
        "Objects and nested settings (adapter_configs, dataloader options, ...) are changed in a yaml of your own that",
        "extends this one (`extends: train.yaml`; see docs/hparams.md).",
        "",
        "SpeechBrain's run options (--device, --precision, --data_parallel_backend, --debug, --noprogressbar, ...) are",
        f"accepted too; {SPEECHBRAIN_HELP_FLAG} lists them.",
    ]
    return "\n".join(lines)


def answer_help(argv: Sequence[str], default_hparams: Path, usage: str) -> int | None:
    """Print the help that ``argv`` asks for and return the exit code, or None when ``argv`` is a run.

    No arguments at all prints the recipe's help and returns 2 (a usage error); ``-h``/``--help`` prints the help of
    the yaml given first (else ``default_hparams``) and returns 0; ``--speechbrain-help`` prints SpeechBrain's.
    """
    if SPEECHBRAIN_HELP_FLAG in argv:
        try:
            sb.parse_arguments(["--help"])
        except SystemExit as done:
            return int(done.code or 0)
    asked = any(flag in argv for flag in HELP_FLAGS)
    if argv and not asked:
        return None
    hparams = Path(argv[0]) if argv and not argv[0].startswith("-") else default_hparams
    print(recipe_help(hparams, usage), file=sys.stdout if asked else sys.stderr)
    return 0 if asked else 2
