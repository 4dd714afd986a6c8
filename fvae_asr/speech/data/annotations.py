"""Phone-labelled corpora described by annotation files, read and checked before a run starts.

An annotation is a SpeechBrain CSV (columns ``ID``, ``duration``, ``wav``, ``phn``; more columns are ignored) or a
JSON manifest (``{id: {"duration": ..., "wav": ..., "phn": ...}}``, the format TIMIT preparation writes). ``phn`` is
a space-separated phone string. In ``wav``, SpeechBrain's placeholder for the corpus root (``$data_root`` in a
CSV, ``{data_root}`` in JSON) is replaced by the recipe's ``data_folder``; a path that is still relative is taken
relative to the annotation file's folder, so a corpus folder with its CSVs can be moved as a whole.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from speechbrain.dataio.encoder import DEFAULT_BLANK
from torch import Tensor

from fvae_asr.audio import SAMPLE_RATE, AudioError, check_regular_file, header_duration
from fvae_asr.files import file_stamps, read_json
from fvae_asr.speech.data.timit import PHONES_39, PHONES_61, corpus_files

# The recipe's keys of the three annotations, by split (SpeechBrain's names; "valid" is the recipe's dev split).
ANNOTATION_KEYS = {"train": "train_annotation", "dev": "valid_annotation", "test": "test_annotation"}
INVENTORY_KEY = "phone_inventory"
ANNOTATION_FIELDS = ("duration", "wav", "phn")  # what a training annotation gives for every utterance
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")  # soundfile's sample formats that can hold NaN
SCORING_FIELDS = ("wav", "phn")  # what scoring or aligning a recogniser needs of a manifest
WORD_ANNOTATION_FIELDS = ("duration", "wav", "wrd")  # a corpus with word transcripts (speech.data.word_corpus)
DATA_ROOT = "data_root"  # the one placeholder of wav paths: data_folder
TIMIT_INVENTORIES = {39: PHONES_39, 61: PHONES_61}  # by phn_set
_PLACEHOLDERS = {".csv": re.compile(r"\$([\w.]+)"), ".json": re.compile(r"\{([\w.]+)\}")}  # SpeechBrain's syntax


class AnnotationError(ValueError):
    """An annotation or phone inventory file that cannot be used; the message names the file and the row."""


@dataclass(frozen=True)
class Annotation:
    """One split's utterances: ``entries`` maps an id to ``wav`` (absolute path), ``duration`` (s) and ``phn``."""

    path: Path
    entries: dict[str, dict]
    rows: dict[str, str]  # id -> where it is written ("line 3", "entry"), for messages

    def where(self, utt_id: str) -> str:
        return f"{self.path}, {self.rows[utt_id]} (ID {utt_id!r})"


@dataclass(frozen=True)
class Corpus:
    """A run's phone inventory (sorted) and, for a corpus given by annotations, its three splits; ``splits`` is
    None for TIMIT, whose manifests the recipe prepares. ``settings`` joins the run's recorded settings."""

    phones: list[str]
    splits: dict[str, Annotation] | None
    settings: dict[str, object]


def corpus_of(settings: Mapping) -> Corpus:
    """The corpus a run's (flat, resolved) settings name: the three annotations, read and their phones checked
    against the inventory (audio is checked by ``check_audio``), or TIMIT when none is given.

    ``settings`` of the result: ``n_tokens`` (the inventory and the blank) and the SHA-256 of every file read, so
    a resumed run whose annotations or inventory changed in place is refused like any changed setting.
    """
    given = {split: settings.get(key) for split, key in ANNOTATION_KEYS.items()}
    inventory_file = settings.get(INVENTORY_KEY)
    files = {key: Path(settings[key]) for key in (*ANNOTATION_KEYS.values(), INVENTORY_KEY) if settings.get(key)}
    splits = None
    if any(given.values()):
        data_root = settings.get("data_folder")
        splits = {split: read_annotation(path, data_root) for split, path in given.items()}
    if inventory_file:
        phones = read_inventory(inventory_file)
    elif splits is not None:
        phones = phones_of(splits["train"])
    else:
        phones = TIMIT_INVENTORIES[settings["phn_set"]]
    if splits is not None:
        check_phones(splits, phones, inventory_file or f"the phones of {splits['train'].path}")
    recorded = {f"{key}<sha256>": _sha256(path) for key, path in files.items()}
    return Corpus(phones=phones, splits=splits, settings={"n_tokens": len(phones) + 1, **recorded})


def audio_files(settings: Mapping, corpus: Corpus) -> dict[str, str]:
    """What identifies the audio a run trains and tests on: ``"<size> <mtime_ns>"`` of every audio file of the
    annotations (by absolute path), or of every file TIMIT preparation reads (by its path under ``data_folder``),
    so that a corpus regenerated or replaced in place is noticed as TIMIT preparation notices it."""
    if corpus.splits is None:
        try:
            return corpus_files(settings["data_folder"])
        except OSError as err:  # no TIMIT there
            raise AnnotationError(str(err)) from None
    wavs = {entry["wav"] for annotation in corpus.splits.values() for entry in annotation.entries.values()}
    return {str(path): stamp for path, stamp in file_stamps(Path(wav) for wav in sorted(wavs)).items()}


def read_annotation(
    path: str | Path, data_root: str | None = None, required: Sequence[str] = ANNOTATION_FIELDS
) -> Annotation:
    """Read a CSV or JSON annotation (or manifest) with the same rules for both formats; raises
    ``AnnotationError`` naming the file and row of the first problem: a missing column or field, an empty or
    repeated ID, a ``wav`` or ``phn`` that is not a string, a duration that is not a non-negative number, a
    placeholder other than ``data_root`` (or ``data_root`` without a ``data_folder``).

    Every field of a row is kept (``wav`` made absolute, ``duration`` a float, ``phn`` with single spaces); an empty
    ``phn`` is read, for the user to refuse (training) or to report (scoring). The one reader of the recipe,
    ``evaluate``, ``align`` and the latent analysis.

    Args:
        path: a ``.csv`` (SpeechBrain's annotation) or a ``.json`` manifest (``{id: {field: value}}``).
        data_root: what ``$data_root`` (CSV) or ``{data_root}`` (JSON) stands for in ``wav``.
        required: the fields every row must have (training needs ``duration``, ``wav`` and ``phn``; scoring
            ``wav`` and ``phn``).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _PLACEHOLDERS:
        raise AnnotationError(f"{path}: an annotation must be a .csv or a .json file")
    if not path.is_file():
        raise AnnotationError(f"{path}: no such annotation file")
    try:
        raw = list(_csv_rows(path, required) if suffix == ".csv" else _json_rows(path, required))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise AnnotationError(f"{path}: cannot read it as UTF-8 {suffix[1:].upper()} ({err})") from None
    entries, rows = {}, {}
    for row, utt_id, fields in raw:
        where = f"{path}, {row} (ID {utt_id!r})"
        if not utt_id.strip():
            raise AnnotationError(f"{where}: empty ID")
        if utt_id in entries:
            raise AnnotationError(f"{where}: the ID is used twice ({rows[utt_id]} too)")
        entries[utt_id] = _checked_fields(fields, path, data_root, where)
        rows[utt_id] = row
    if not entries:
        raise AnnotationError(f"{path}: no utterances")
    return Annotation(path=path, entries=entries, rows=rows)


def _checked_fields(fields: Mapping[str, Any], path: Path, data_root: str | None, where: str) -> dict[str, Any]:
    """A row's fields with ``wav``, ``duration`` and ``phn`` (those it has) checked and normalised."""
    checked = dict(fields)
    for name in ("wav", "phn", "wrd"):
        if name in fields and not isinstance(fields[name], str):
            raise AnnotationError(f"{where}: '{name}' must be a string, got {fields[name]!r}")
    if "wav" in fields:
        checked["wav"] = resolve_wav(fields["wav"], path, data_root, where)
    if "duration" in fields:
        checked["duration"] = _duration(fields["duration"], where)
    if "phn" in fields:
        checked["phn"] = " ".join(fields["phn"].split())
    return checked


def _csv_rows(path: Path, required: Sequence[str]):
    """(row, id, fields) of a SpeechBrain CSV, read as SpeechBrain's ``load_data_csv`` reads it."""
    columns = ("ID", *required)
    with path.open(newline="", encoding="utf-8-sig") as handle:  # a byte order mark (Excel's) is no part of "ID"
        reader = csv.DictReader(handle, skipinitialspace=True)
        header = reader.fieldnames or []
        repeated = sorted({column for column in header if header.count(column) > 1})
        if repeated:
            raise AnnotationError(
                f"{path}, line 1: the header names {', '.join(repeated)} twice (which one holds "
                "the data would be a guess)"
            )
        missing = [column for column in columns if column not in header]
        if missing:
            raise AnnotationError(
                f"{path}, line 1: no {', '.join(missing)} column (the header has {', '.join(reader.fieldnames or [])}"
                f"; needed: {', '.join(columns)})"
            )
        for fields in reader:
            row = f"line {reader.line_num}"
            if any(fields.get(column) is None for column in header):
                raise AnnotationError(f"{path}, {row}: fewer fields than the header's {len(reader.fieldnames)}")
            if None in fields:  # DictReader's key for the fields past the header's
                raise AnnotationError(
                    f"{path}, {row} (ID {fields['ID']!r}): more fields than the header's "
                    f"{len(header)} (an unquoted comma? quote a field that holds one)"
                )
            utt_id = fields.pop("ID")
            yield row, utt_id, fields


def _json_rows(path: Path, required: Sequence[str]):
    """(row, id, fields) of a JSON manifest (an ID given twice is refused, as in a CSV)."""
    try:
        manifest = read_json(path, "annotation")
    except ValueError as err:
        raise AnnotationError(str(err)) from None
    for utt_id, fields in manifest.items():
        row = "entry"
        if not isinstance(fields, dict):
            raise AnnotationError(f"{path}, {row} (ID {utt_id!r}): not a JSON object")
        for field in required:
            if field not in fields:
                raise AnnotationError(f"{path}, {row} (ID {utt_id!r}): no '{field}' field")
        yield row, utt_id, fields


def resolve_wav(wav: str, annotation: Path, data_root: str | None, where: str) -> str:
    """The audio path with ``data_root`` put in (``$data_root`` in a CSV, ``{data_root}`` in JSON), absolute:
    relative paths start at the annotation's folder. The one rule for the recipe, ``evaluate`` and the others."""

    def substitute(match: re.Match) -> str:
        if match[1] != DATA_ROOT:
            raise AnnotationError(f"{where}: unknown placeholder {match[0]!r} in wav (only {DATA_ROOT} is replaced)")
        if not data_root:
            raise AnnotationError(f"{where}: wav uses {match[0]} but data_folder is not set")
        return str(data_root)

    if not wav.strip():
        raise AnnotationError(f"{where}: empty wav")
    resolved = Path(_PLACEHOLDERS[annotation.suffix.lower()].sub(substitute, wav.strip()))
    return str(resolved if resolved.is_absolute() else (annotation.parent / resolved).resolve())


def _duration(value: object, where: str) -> float:
    try:
        duration = float(value)
    except (TypeError, ValueError):
        duration = math.nan
    if not math.isfinite(duration) or duration < 0 or isinstance(value, bool):
        raise AnnotationError(f"{where}: duration must be a non-negative number of seconds, got {value!r}")
    return duration


def read_inventory(path: str | Path) -> list[str]:
    """A phone inventory file: one phone per line (blank lines ignored), returned sorted; a line with spaces, a
    repeated phone or the CTC blank's name is an error naming the line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{path}: cannot read the phone inventory ({err})") from None
    phones: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        phone = line.strip()
        if not phone:
            continue
        if len(phone.split()) > 1 or phone == DEFAULT_BLANK or phone in phones:
            problem = (
                "holds more than one phone"
                if len(phone.split()) > 1
                else f"{DEFAULT_BLANK} is the CTC blank, not a phone"
                if phone == DEFAULT_BLANK
                else f"repeats line {phones.get(phone)}"
            )
            raise AnnotationError(f"{path}, line {number}: {problem} ({line!r})")
        phones[phone] = number
    if not phones:
        raise AnnotationError(f"{path}: no phones (one phone per line)")
    return sorted(phones)


def phones_of(annotation: Annotation) -> list[str]:
    """Every phone of an annotation, sorted (the inventory a training annotation implies)."""
    phones = sorted({phone for entry in annotation.entries.values() for phone in entry["phn"].split()})
    if DEFAULT_BLANK in phones:
        utt_id = next(i for i, e in annotation.entries.items() if DEFAULT_BLANK in e["phn"].split())
        raise AnnotationError(f"{annotation.where(utt_id)}: {DEFAULT_BLANK} is the CTC blank, not a phone")
    return phones


def check_phones(splits: Mapping[str, Annotation], phones: list[str], source: str | Path) -> None:
    """Every utterance of every split must have phones, all in the inventory; the first that has none or one
    outside it is an error naming its row."""
    known = set(phones)
    for annotation in splits.values():
        for utt_id, entry in annotation.entries.items():
            if not entry["phn"]:
                raise AnnotationError(f"{annotation.where(utt_id)}: empty phn (no phones)")
            unknown = [phone for phone in entry["phn"].split() if phone not in known]
            if unknown:
                listed = " ".join(phones[:60]) + (" ..." if len(phones) > 60 else "")
                raise AnnotationError(
                    f"{annotation.where(utt_id)}: phone {unknown[0]!r} is not in the inventory ({source}: {listed})"
                )


def check_ctc_lengths(annotation: Annotation, frame_lengths: Callable[[Tensor], Tensor]) -> None:
    """Every utterance must give at least as many encoder frames as CTC needs for its phones (one per phone, one
    more between two equal phones): a shorter one would train with a CTC loss of zero (torch's ``zero_infinity``),
    silently. Raises ``AnnotationError`` naming the first one, its audio and the minimum duration its phones need.

    Args:
        annotation: the utterances (``wav``, whose header gives the length, and ``phn``) and where each is written.
        frame_lengths: the encoder's sample counts -> frame counts (at ``SAMPLE_RATE``).
    """
    for utt_id, entry in annotation.entries.items():
        phones = entry["phn"].split()
        needed = len(phones) + sum(a == b for a, b in zip(phones, phones[1:]))
        samples = math.ceil(header_duration(entry["wav"]) * SAMPLE_RATE)
        frames = int(frame_lengths(torch.tensor([samples]))[0])
        if frames < needed:
            shortest = next(
                n for n in itertools.count(samples, 16) if int(frame_lengths(torch.tensor([n]))[0]) >= needed
            )
            raise AnnotationError(
                f"{annotation.where(utt_id)}: {entry['wav']} lasts {samples / SAMPLE_RATE:.3f} s, {frames} encoder "
                f"frames, fewer than the {needed} its {len(phones)} phones need for CTC (at least "
                f"{shortest / SAMPLE_RATE:.3f} s); leave it out of the training set"
            )


def check_finite_samples(annotation: Annotation) -> None:
    """Every sample of every file stored as floating point must be finite (integer PCM cannot hold NaN): a NaN
    would stop training at its batch, mid-epoch. Raises ``AnnotationError`` naming the first such file's row."""
    for utt_id, entry in annotation.entries.items():
        try:
            if sf.info(entry["wav"]).subtype not in FLOAT_SUBTYPES:
                continue
            finite = all(np.isfinite(block).all() for block in sf.blocks(entry["wav"], blocksize=1 << 18))
        except (sf.SoundFileError, RuntimeError) as err:
            raise AnnotationError(f"{annotation.where(utt_id)}: {entry['wav']}: cannot read audio ({err})") from None
        if not finite:
            raise AnnotationError(
                f"{annotation.where(utt_id)}: {entry['wav']} has non-finite (NaN or infinite) samples; repair it or "
                "leave it out"
            )


def check_audio(splits: Mapping[str, Annotation]) -> None:
    """Every ``wav`` must be an audio file soundfile reads (its header is read, not its samples); the first that
    is missing or unreadable is an error naming the annotation row."""
    for annotation in splits.values():
        for utt_id, entry in annotation.entries.items():
            wav = Path(entry["wav"])
            if not wav.exists():
                raise AnnotationError(f"{annotation.where(utt_id)}: {wav}: no such audio file")
            try:
                check_regular_file(wav)
            except AudioError as err:
                raise AnnotationError(f"{annotation.where(utt_id)}: {wav}: {err.reason}") from None
            try:
                sf.info(str(wav))
            except (sf.SoundFileError, TypeError, RuntimeError) as err:
                raise AnnotationError(f"{annotation.where(utt_id)}: {wav}: cannot read audio ({err})") from None


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as err:
        raise AnnotationError(f"{path}: cannot read ({err.strerror or err})") from None
