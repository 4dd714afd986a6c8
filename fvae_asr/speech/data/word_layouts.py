"""Corpora with word transcripts, as they are laid out on disk: each layout lists a split's recordings with their
transcripts and where each transcript is written (file and line), and refuses, naming them, a recording without a
transcript, a transcript without a recording, an empty transcript and an utterance id given twice.

Layouts (``corpus:`` in the recipe's yaml), and what names a split (``corpus_splits``):

- ``librispeech``: ``<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` (``<id> <TEXT>`` lines) with
  ``<id>.flac`` beside it; a split is a subset folder under ``data_folder`` (``train-clean-100``).
- ``common_voice``: ``<split>.tsv`` (tab-separated, a header naming ``path`` and ``sentence``) with the clips in
  ``clips/``; a split is a TSV file under ``data_folder``. Clips no TSV names are other splits' or unvalidated
  ones, so only a transcript without its clip is an error.
- ``arctic``: festvox's ``etc/txt.done.data`` (``( arctic_a0001 "Text." )`` lines) with ``wav/<id>.wav``, or, when
  there is no ``etc/txt.done.data``, one ``<id>.txt`` beside each ``<id>.wav`` anywhere under ``data_folder``
  (``rhasspy/dataset-voice-cathy``); a split is a shell pattern over the ids (``arctic_a*``); recordings that no
  pattern matches are left out, one that two match is an error.
"""

from __future__ import annotations

import csv
import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fvae_asr.speech.data.annotations import AnnotationError

ARCTIC_PROMPTS = Path("etc") / "txt.done.data"
_FESTVOX_LINE = re.compile(r'^\(\s*(\S+)\s+"(.*)"\s*\)\s*$')


@dataclass(frozen=True)
class Transcript:
    """One recording and what is said in it, with where the text is written (for messages)."""

    utt_id: str
    audio: Path
    text: str
    source: Path
    row: str  # "line 3", or "entry" in a JSON manifest

    @property
    def where(self) -> str:
        return f"{self.source}, {self.row} (ID {self.utt_id!r})"


def librispeech(root: Path, split: str) -> list[Transcript]:
    """Transcripts of a LibriSpeech subset folder (``root / split``)."""
    folder = _folder(root / split, "LibriSpeech subset")
    transcripts = []
    for trans in sorted(folder.glob("*/*/*.trans.txt")):
        listed = set()
        for number, line in _lines(trans):
            utt_id, _, text = line.strip().partition(" ")
            transcripts.append(Transcript(utt_id, trans.parent / f"{utt_id}.flac", text, trans, f"line {number}"))
            listed.add(utt_id)
        _refuse_unlisted(trans.parent.glob("*.flac"), listed, trans)
    stray = sorted(flac for flac in folder.glob("*/*/*.flac") if not any(flac.parent.glob("*.trans.txt")))
    if stray:
        raise AnnotationError(f"{stray[0]}: a recording without a transcript (no *.trans.txt in its folder)")
    return checked_transcripts(transcripts)


def common_voice(root: Path, split: str) -> list[Transcript]:
    """Transcripts of a Common Voice TSV (``root / split``), clips in ``root / "clips"``."""
    tsv = root / split
    if not tsv.is_file():
        raise AnnotationError(f"{tsv}: no such Common Voice TSV file")
    with tsv.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [column for column in ("path", "sentence") if column not in (reader.fieldnames or [])]
        if missing:
            raise AnnotationError(f"{tsv}, line 1: no {', '.join(missing)} column (Common Voice's header names both)")
        transcripts = []
        for row in reader:
            clip = root / "clips" / row["path"]
            transcripts.append(Transcript(clip.stem, clip, row["sentence"] or "", tsv, f"line {reader.line_num}"))
    return checked_transcripts(transcripts)


def arctic(root: Path, pattern: str) -> list[Transcript]:
    """Transcripts of a festvox/CMU ARCTIC voice whose ids match ``pattern``."""
    return [transcript for transcript in arctic_voice(root) if fnmatch.fnmatchcase(transcript.utt_id, pattern)]


def arctic_voice(root: Path) -> list[Transcript]:
    """Every transcript of a festvox/CMU ARCTIC voice: ``etc/txt.done.data`` with ``wav/``, or a ``.txt`` per
    recording."""
    root = _folder(root, "ARCTIC voice")
    prompts = root / ARCTIC_PROMPTS
    if prompts.is_file():
        transcripts = []
        for number, line in _lines(prompts):
            match = _FESTVOX_LINE.match(line.strip())
            if not match:
                raise AnnotationError(f'{prompts}, line {number}: expected ( <id> "<text>" ), got {line.strip()!r}')
            wav = root / "wav" / f"{match[1]}.wav"
            transcripts.append(Transcript(match[1], wav, match[2], prompts, f"line {number}"))
        _refuse_unlisted((root / "wav").glob("*.wav"), {t.utt_id for t in transcripts}, prompts)
        return checked_transcripts(transcripts)
    wavs = {wav.with_suffix(""): wav for wav in root.rglob("*.wav")}
    texts = {txt.with_suffix(""): txt for txt in root.rglob("*.txt")}
    for stem in sorted(set(texts) - set(wavs)):
        raise AnnotationError(f"{texts[stem]}: a transcript without a recording (no {stem.name}.wav beside it)")
    transcripts = []
    for stem in sorted(wavs):
        if stem not in texts:
            raise AnnotationError(f"{wavs[stem]}: a recording without a transcript (no {stem.name}.txt beside it)")
        text = " ".join(line for _, line in _lines(texts[stem]))
        transcripts.append(Transcript(stem.name, wavs[stem], text, texts[stem], "line 1"))
    if not transcripts:
        raise AnnotationError(f"{root}: no ARCTIC voice there: neither {ARCTIC_PROMPTS} nor .wav files with a .txt")
    return checked_transcripts(transcripts)


LAYOUTS: dict[str, Callable[[Path, str], list[Transcript]]] = {
    "librispeech": librispeech,
    "common_voice": common_voice,
    "arctic": arctic,
}
# What a split is, by layout, when corpus_splits does not say: LibriSpeech's and Common Voice's own splits, and
# for ARCTIC the prompts of set A for training and set B's odd and even prompts for dev and test.
DEFAULT_SPLITS: dict[str, dict[str, str]] = {
    "librispeech": {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"},
    "common_voice": {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"},
    "arctic": {"train": "arctic_a*", "dev": "arctic_b???[13579]*", "test": "arctic_b???[02468]*"},
}


def split_transcripts(layout: str, root: str | Path, splits: Mapping[str, str]) -> dict[str, list[Transcript]]:
    """Each split's transcripts in ``layout``; a split with none, or a recording in two splits, is an error."""
    by_split = {split: LAYOUTS[layout](Path(root), spec) for split, spec in splits.items()}
    seen: dict[Path, str] = {}
    for split, transcripts in by_split.items():
        if not transcripts:
            raise AnnotationError(f"{layout} corpus at {root}: split {split!r} ({splits[split]!r}) has no utterances")
        for transcript in transcripts:
            if seen.setdefault(transcript.audio, split) != split:
                raise AnnotationError(
                    f"{transcript.where}: {transcript.audio} is in both {seen[transcript.audio]!r} and {split!r}"
                )
    return by_split


def _folder(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise AnnotationError(f"{path}: no such {what} folder")
    return path


def _lines(path: Path) -> Iterable[tuple[int, str]]:
    """(number, line) of a UTF-8 text file's non-blank lines."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise AnnotationError(f"{path}: cannot read it as UTF-8 text ({err})") from None
    return [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]


def _refuse_unlisted(recordings: Iterable[Path], listed: set[str], transcripts: Path) -> None:
    for recording in sorted(recordings):
        if recording.stem not in listed:
            raise AnnotationError(f"{recording}: a recording without a transcript (not in {transcripts})")


def checked_transcripts(transcripts: list[Transcript]) -> list[Transcript]:
    """Refuse an empty transcript, a missing recording or a repeated id, naming the file and line."""
    first: dict[str, Transcript] = {}
    for transcript in transcripts:
        if not transcript.text.strip():
            raise AnnotationError(f"{transcript.where}: empty transcript")
        if not transcript.audio.is_file():
            raise AnnotationError(f"{transcript.where}: a transcript without a recording (no {transcript.audio})")
        if transcript.utt_id in first:
            raise AnnotationError(f"{transcript.where}: the ID is used twice ({first[transcript.utt_id].where} too)")
        first[transcript.utt_id] = transcript
    return transcripts
