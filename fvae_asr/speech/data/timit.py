"""TIMIT corpus: on-disk layout, JSON manifest preparation and 61 -> 39 phone folding.

Follows the conventions of SpeechBrain's TIMIT recipe: the 61 phones fold to 39 (``q`` removed; closures,
``epi``, ``pau`` and ``h#`` become ``sil``; runs of ``sil`` collapse), SA1/SA2 sentences are excluded, and
dev/test are the 50-speaker dev set and the 24-speaker core test set, both taken from the TEST folder.
Both the upper-case LDC layout (``TRAIN/DR1/FCJF0/SI1027.WAV``) and the lower-case one are supported.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from fvae_asr.audio import SAMPLE_RATE, AudioError, check_regular_file
from fvae_asr.files import describe_changes, file_stamps, read_json, write_json

logger = logging.getLogger(__name__)

SILENCE = "sil"

# Phones that are already members of the 39-phone set (they map to themselves).
_KEPT_PHONES = [
    "aa",
    "ae",
    "ah",
    "aw",
    "ay",
    "b",
    "ch",
    "d",
    "dh",
    "dx",
    "eh",
    "er",
    "ey",
    "f",
    "g",
    "hh",
    "ih",
    "iy",
    "jh",
    "k",
    "l",
    "m",
    "n",
    "ng",
    "ow",
    "oy",
    "p",
    "r",
    "s",
    "sh",
    "t",
    "th",
    "uh",
    "uw",
    "v",
    "w",
    "y",
    "z",
]

# Phones that fold into another one (as in Lee & Hon 1989, used by SpeechBrain's TIMIT recipe).
_FOLDED_PHONES = {
    "ao": "aa",
    "ax": "ah",
    "ax-h": "ah",
    "axr": "er",
    "el": "l",
    "em": "m",
    "en": "n",
    "eng": "ng",
    "hv": "hh",
    "ix": "ih",
    "nx": "n",
    "ux": "uw",
    "zh": "sh",
    "bcl": SILENCE,
    "dcl": SILENCE,
    "gcl": SILENCE,
    "kcl": SILENCE,
    "pcl": SILENCE,
    "tcl": SILENCE,
    "epi": SILENCE,
    "pau": SILENCE,
    "h#": SILENCE,
}

# Glottal stop: dropped entirely when folding to 39 phones.
DROPPED_PHONE = "q"

PHONE_MAP_61_TO_39: dict[str, str] = {**{phone: phone for phone in _KEPT_PHONES}, **_FOLDED_PHONES}
PHONES_61: list[str] = sorted([*PHONE_MAP_61_TO_39, DROPPED_PHONE])
PHONES_39: list[str] = sorted(set(PHONE_MAP_61_TO_39.values()))
_PHONE_SET_61 = frozenset(PHONES_61)

# The 24-speaker core test set (TEST folder).
CORE_TEST_SPEAKERS = frozenset(
    [
        "FDHC0",
        "FELC0",
        "FJLM0",
        "FMGD0",
        "FMLD0",
        "FNLP0",
        "FPAS0",
        "FPKT0",
        "MBPM0",
        "MCMJ0",
        "MDAB0",
        "MGRT0",
        "MJDH0",
        "MJLN0",
        "MJMP0",
        "MKLT0",
        "MLLL0",
        "MLNT0",
        "MNJM0",
        "MPAM0",
        "MTAS1",
        "MTLS0",
        "MWBT0",
        "MWEW0",
    ]
)

# The 50-speaker development set used by SpeechBrain's TIMIT recipes (TEST folder, disjoint from core test).
DEV_SPEAKERS = frozenset(
    [
        "FADG0",
        "FAKS0",
        "FCAL1",
        "FCMH0",
        "FDAC1",
        "FDMS0",
        "FDRW0",
        "FEDW0",
        "FGJD0",
        "FJEM0",
        "FJMG0",
        "FJSJ0",
        "FKMS0",
        "FMAH0",
        "FMML0",
        "FNMR0",
        "FREW0",
        "FSEM0",
        "MAJC0",
        "MBDG0",
        "MBNS0",
        "MBWM0",
        "MCSH0",
        "MDLF0",
        "MDLS0",
        "MDVC0",
        "MERS0",
        "MGJF0",
        "MGLB0",
        "MGWT0",
        "MJAR0",
        "MJFC0",
        "MJSW0",
        "MMDB1",
        "MMDM2",
        "MMJR0",
        "MMWH0",
        "MPDF0",
        "MRCS0",
        "MREB0",
        "MRJM4",
        "MRJR0",
        "MROA0",
        "MRTK0",
        "MRWS1",
        "MTAA0",
        "MTDT0",
        "MTEB0",
        "MTHC0",
        "MWJG0",
    ]
)

# Dialect calibration sentences, read by every speaker: excluded from all splits.
CALIBRATION_SENTENCES = frozenset({"SA1", "SA2"})

SPLITS = ("train", "dev", "test")
_OPTS_FILE = "prepare_opts.json"
# Version of the manifest entries, kept in the preparation record: manifests of an older version are rebuilt.
# 2 added ``phn_segments``; manifests of version 1 (no record of it) still train and evaluate as before.
MANIFEST_FORMAT = 2
_PHONE_SETS = (39, 61)


Segment = tuple[int, int, str]  # (start sample, end sample, label), as in .PHN files


def fold_segments_to_39(segments: Iterable[Segment]) -> list[Segment]:
    """Fold TIMIT 61-phone segments to the 39-phone set: map, drop ``q`` (its samples then belong to no segment,
    unless it sat between two silences), merge runs of ``sil`` into one segment from the first start to the last end.
    """
    folded: list[Segment] = []
    for start, end, phone in segments:
        if phone == DROPPED_PHONE:
            continue
        if phone not in PHONE_MAP_61_TO_39:
            raise ValueError(f"unknown TIMIT phone {phone!r}")
        target = PHONE_MAP_61_TO_39[phone]
        if target == SILENCE and folded and folded[-1][2] == SILENCE:
            folded[-1] = (folded[-1][0], end, SILENCE)
        else:
            folded.append((start, end, target))
    return folded


def fold_to_39(phones: Iterable[str]) -> list[str]:
    """Fold TIMIT 61-phone labels to the 39-phone set: map, drop ``q``, collapse runs of ``sil``."""
    return [label for _, _, label in fold_segments_to_39((0, 0, phone) for phone in phones)]


def _cased(name: str, uppercase: bool) -> str:
    """Spell a path component in the corpus' case convention."""
    return name.upper() if uppercase else name.lower()


def _write_segments(path: Path, segments: Sequence[tuple[int, int, str]]) -> None:
    """Write TIMIT ``start end label`` lines (.PHN / .WRD)."""
    path.write_text("".join(f"{start} {end} {label}\n" for start, end, label in segments), encoding="utf-8")


def write_utterance(
    corpus_root: str | os.PathLike,
    split: str,
    dialect: str,
    speaker: str,
    utterance: str,
    audio: np.ndarray,
    phones: Sequence[tuple[int, int, str]],
    words: Sequence[tuple[int, int, str]],
    text: str,
    uppercase: bool = True,
) -> Path:
    """Write one utterance in TIMIT layout (NIST SPHERE .WAV, .PHN, .WRD, .TXT) and return the audio path.

    Used by the synthetic-corpus generator and test fixtures. ``uppercase`` only affects file and folder
    names (``TRAIN/DR1/FCJF0/SI1027.WAV`` vs ``train/dr1/fcjf0/si1027.wav``); labels are written as given.
    """
    if split.upper() not in ("TRAIN", "TEST"):
        raise ValueError(f"split must be 'TRAIN' or 'TEST', got {split!r}")
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {samples.shape}")
    folder = Path(corpus_root).joinpath(*(_cased(part, uppercase) for part in (split, dialect, speaker)))
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / _cased(utterance, uppercase)
    wav_path = stem.with_suffix(_cased(".wav", uppercase))
    sf.write(wav_path, np.clip(samples, -1.0, 1.0), SAMPLE_RATE, format="NIST", subtype="PCM_16")
    _write_segments(stem.with_suffix(_cased(".phn", uppercase)), phones)
    _write_segments(stem.with_suffix(_cased(".wrd", uppercase)), words)
    stem.with_suffix(_cased(".txt", uppercase)).write_text(f"0 {len(samples)} {text}\n", encoding="utf-8")
    return wav_path


def manifest_paths(save_folder: str | os.PathLike) -> tuple[Path, Path, Path]:
    """Where ``prepare_timit`` writes the train, dev and test manifests."""
    return tuple(Path(save_folder) / f"{split}.json" for split in SPLITS)


def prepare_timit(
    data_folder: str | os.PathLike,
    save_folder: str | os.PathLike,
    phn_set: int = 39,
    uppercase: bool | None = None,
    skip_prep: bool = False,
) -> tuple[Path, Path, Path]:
    """Write ``train.json``, ``dev.json`` and ``test.json`` manifests for a TIMIT corpus; return their paths.

    Each manifest maps an utterance id (``FCJF0_SI1027``, always upper-case whatever the layout) to ``wav``
    (absolute path), ``duration`` (s), ``spk_id`` (upper-case), ``phn`` and ``wrd`` (space-separated) and
    ``phn_segments``, the ``[start, end, label]`` sample spans of the phones of ``phn``, one per phone, in the
    same phone set (SpeechBrain's TIMIT preparation keeps the ends as ``ground_truth_phn_ends``).
    ``phn_set=39`` folds phones as SpeechBrain does; ``phn_set=61`` keeps TIMIT's own 61 labels untouched
    (``h#`` and ``q`` included, no collapsing; SpeechBrain's "60" set renames ``h#`` to ``sil`` instead).
    ``uppercase=None`` detects the layout. Manifests are reused when ``prepare_opts.json`` records the same
    options and the same corpus files (path, size and modification time of every file read); otherwise they
    are rebuilt, with a warning saying why. ``skip_prep=True`` returns the paths without touching anything.
    """
    if phn_set not in _PHONE_SETS:
        raise ValueError(f"phn_set must be one of {_PHONE_SETS}, got {phn_set!r}")
    save_dir = Path(save_folder)
    paths = manifest_paths(save_dir)
    if skip_prep:
        logger.info("TIMIT preparation skipped (skip_prep=True)")
        return paths
    root = _timit_root(data_folder)
    uppercase = _detect_uppercase(root) if uppercase is None else uppercase
    split_wavs = _split_wavs(root, uppercase)
    record = {
        "data_folder": str(root),
        "phn_set": phn_set,
        "uppercase": uppercase,
        "manifest_format": MANIFEST_FORMAT,
        "corpus_files": _corpus_files(root, [wav for wavs in split_wavs for wav in wavs], uppercase),
    }
    reason = _why_prepare(paths, save_dir / _OPTS_FILE, record)
    if reason is None:
        logger.info("TIMIT manifests in %s already prepared for %s; skipping", save_dir, root)
        return paths
    manifests = [_manifest(wavs, uppercase, phn_set) for wavs in split_wavs]
    if (save_dir / _OPTS_FILE).is_file():
        logger.warning("Rebuilding the TIMIT manifests in %s: %s", save_dir, reason)
    else:
        logger.info("Preparing TIMIT manifests in %s from %s", save_dir, root)
    save_dir.mkdir(parents=True, exist_ok=True)
    # Invalidate the old record first, so an interrupted rewrite is never mistaken for a finished one.
    (save_dir / _OPTS_FILE).unlink(missing_ok=True)
    for path, manifest in zip(paths, manifests):
        write_json(path, manifest)
        logger.info("Wrote %s (%d utterances)", path, len(manifest))
    write_json(save_dir / _OPTS_FILE, record)
    return paths


def corpus_files(data_folder: str | os.PathLike) -> dict[str, str]:
    """``"<size> <mtime_ns>"`` of every file TIMIT preparation reads under ``data_folder`` (as its record keeps
    them), keyed by the path under it; a folder that is not a TIMIT corpus is an error naming it."""
    root = _timit_root(data_folder)
    uppercase = _detect_uppercase(root)
    return _corpus_files(root, [wav for wavs in _split_wavs(root, uppercase) for wav in wavs], uppercase)


def _timit_root(data_folder: str | os.PathLike) -> Path:
    root = Path(data_folder).resolve()
    if not root.exists():
        raise FileNotFoundError(f"TIMIT data folder not found: {root}")
    if not root.is_dir():
        raise NotADirectoryError(f"TIMIT data folder {root} is a file, not a folder")
    return root


def _corpus_files(root: Path, wavs: Iterable[Path], uppercase: bool) -> dict[str, str]:
    """``file_stamps`` of every file the manifests are made from (audio, .PHN, .WRD), keyed by its path under
    ``root`` (a missing label file is reported when the manifests are built)."""
    suffixes = [_cased(".phn", uppercase), _cased(".wrd", uppercase)]
    paths = [path for wav in wavs for path in (wav, *(wav.with_suffix(suffix) for suffix in suffixes))]
    return {path.relative_to(root).as_posix(): stamp for path, stamp in file_stamps(paths).items()}


def _why_prepare(paths: Iterable[Path], record_path: Path, record: dict) -> str | None:
    """Why the manifests must be (re)built, or None when every one exists and the record matches ``record``."""
    if not record_path.is_file():
        return "no finished preparation there"
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        return f"{', '.join(missing)} missing"
    try:
        earlier = read_json(record_path, "preparation record")
    except ValueError as err:
        return f"its record is unreadable ({err})"
    changed = [
        f"{key} was {earlier.get(key)!r}, now {value!r}"
        for key, value in record.items()
        if key != "corpus_files" and earlier.get(key) != value
    ]
    if changed:
        return "; ".join(changed)
    before, now = earlier.get("corpus_files"), record["corpus_files"]
    if not isinstance(before, dict):
        return "its record lists no corpus files"
    if before == now:
        return None
    return "the corpus changed since they were written: " + describe_changes(before, now)


def _detect_uppercase(root: Path) -> bool:
    """Tell the upper-case LDC layout (TRAIN/TEST) from the lower-case one (train/test)."""
    for uppercase in (True, False):
        if any((root / _cased(split, uppercase)).is_dir() for split in ("train", "test")):
            return uppercase
    raise FileNotFoundError(
        f"no TIMIT audio found under {root}: expected TRAIN/ and TEST/ (or train/ and test/); it holds: {_holds(root)}"
    )


def _holds(folder: Path) -> str:
    """What a folder holds, for error messages."""
    names = sorted(path.name for path in folder.iterdir())
    return ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") if names else "nothing"


def _split_wavs(root: Path, uppercase: bool) -> tuple[list[Path], list[Path], list[Path]]:
    """Audio files of the train, dev and test splits; a missing folder or an empty split is an error."""
    folders = [root / _cased(name, uppercase) for name in ("train", "test")]
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"no {folder.name} folder under {root} (it holds: {_holds(root)})")
    train_wavs, test_wavs = (_list_wavs(folder, uppercase) for folder in folders)
    if not train_wavs:
        raise FileNotFoundError(f"TIMIT train split is empty: no {_cased('*.wav', uppercase)} under {folders[0]}")
    splits = [train_wavs]
    for split, speakers, description in (("dev", DEV_SPEAKERS, "dev"), ("test", CORE_TEST_SPEAKERS, "core test")):
        splits.append([wav for wav in test_wavs if _speaker(wav) in speakers])
        if not splits[-1]:
            raise FileNotFoundError(
                f"TIMIT {split} split is empty: {folders[1]} holds none of the {len(speakers)} {description} "
                f"speakers (SA1/SA2 do not count)"
            )
    return splits[0], splits[1], splits[2]


def _list_wavs(folder: Path, uppercase: bool) -> list[Path]:
    """Audio files of one split folder (``<split>/<DR>/<speaker>/<utt>.WAV``), calibration sentences excluded."""
    wavs = folder.glob(f"*/*/*{_cased('.wav', uppercase)}")
    return sorted(wav for wav in wavs if wav.stem.upper() not in CALIBRATION_SENTENCES)


def _speaker(wav: Path) -> str:
    """Speaker id (upper-case) from the folder holding the utterance."""
    return wav.parent.name.upper()


def _manifest(wavs: Iterable[Path], uppercase: bool, phn_set: int) -> dict[str, dict]:
    """Manifest entries keyed by ``<SPEAKER>_<UTTERANCE>``."""
    return {f"{_speaker(wav)}_{wav.stem.upper()}": _entry(wav, uppercase, phn_set) for wav in wavs}


def _entry(wav: Path, uppercase: bool, phn_set: int) -> dict:
    """One manifest entry: audio path, duration, speaker, phones, their segments and words (all inside the audio)."""
    phn_path = wav.with_suffix(_cased(".phn", uppercase))
    wrd_path = wav.with_suffix(_cased(".wrd", uppercase))
    n_samples = _n_samples(wav)
    phones = _convert_phones(_read_labels(phn_path, wav, n_samples), phn_path, phn_set)
    return {
        "wav": str(wav),
        "duration": n_samples / SAMPLE_RATE,
        "spk_id": _speaker(wav),
        "phn": " ".join(label for _, _, label in phones),
        "wrd": " ".join(label for _, (_, _, label) in _read_labels(wrd_path, wav, n_samples)),
        "phn_segments": [list(segment) for segment in phones],
    }


def _n_samples(wav: Path) -> int:
    """Number of samples from the header (no decoding); checks the sample rate. libsndfile caps the count
    at what the file really holds, so a truncated file reports its shorter length."""
    try:
        check_regular_file(wav)
    except AudioError as err:
        raise ValueError(str(err)) from None
    try:
        info = sf.info(str(wav))
    except sf.SoundFileError as err:
        raise ValueError(f"cannot read audio file {wav}: {err}") from err
    if info.samplerate != SAMPLE_RATE:
        raise ValueError(f"{wav}: sample rate {info.samplerate} Hz, expected {SAMPLE_RATE} Hz")
    return info.frames


def _read_labels(path: Path, wav: Path, n_samples: int) -> list[tuple[int, Segment]]:
    """Segments of a ``start end label`` file with their line numbers; rejects malformed lines and segments
    that end beyond the ``n_samples`` of ``wav`` (a truncated audio file)."""
    if not path.is_file():
        raise FileNotFoundError(f"TIMIT label file not found: {path}")
    labels = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                segment = parse_label_line(line, path, number)
                if segment[1] > n_samples:
                    raise ValueError(
                        f"{path}, line {number}: end {segment[1]} is beyond the {n_samples} samples of {wav} "
                        "(truncated?)"
                    )
                labels.append((number, segment))
    return labels


def parse_label_line(line: str, path: Path, number: int) -> Segment:
    """One ``start end label`` line of a TIMIT label file (``.PHN``, ``.WRD``) as a segment; a malformed line is an
    error naming the file and line."""
    fields = line.split()
    if len(fields) != 3:
        raise ValueError(f"{path}, line {number}: expected 'start end label', got {line.strip()!r}")
    try:
        start, end = int(fields[0]), int(fields[1])
    except ValueError:
        raise ValueError(f"{path}, line {number}: non-integer sample index in {line.strip()!r}") from None
    if end < start:
        raise ValueError(f"{path}, line {number}: end {end} is before start {start}")
    return start, end, fields[2]


def _convert_phones(phones: list[tuple[int, Segment]], path: Path, phn_set: int) -> list[Segment]:
    """Check every phone is a TIMIT phone, then fold the segments to 39 when asked."""
    for number, (_, _, phone) in phones:
        if phone not in _PHONE_SET_61:
            raise ValueError(f"{path}, line {number}: unknown TIMIT phone {phone!r}")
    segments = [segment for _, segment in phones]
    return segments if phn_set == 61 else fold_segments_to_39(segments)
