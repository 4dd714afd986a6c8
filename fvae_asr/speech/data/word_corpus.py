"""The recipe's manifests from a corpus with word transcripts: every transcript normalised and pronounced
(``fvae_asr.speech.data.lexicon``), checked before anything is written, then written once into ``save_folder``
as ``train.json``, ``dev.json`` and ``test.json`` (``wav``, ``duration``, ``wrd``, ``phn``) with a preparation
record (the dictionary's version, the words eSpeak NG pronounced); written again only when they change.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from fvae_asr.audio import AudioError, check_regular_file
from fvae_asr.files import read_json, write_json
from fvae_asr.speech.data.annotations import (
    ANNOTATION_KEYS,
    INVENTORY_KEY,
    WORD_ANNOTATION_FIELDS,
    Annotation,
    AnnotationError,
    Corpus,
    check_phones,
    read_annotation,
    read_inventory,
)
from fvae_asr.speech.data.lexicon import LexiconError, Pronouncer, cmudict_version, normalize
from fvae_asr.speech.data.timit import PHONES_39, SPLITS, manifest_paths
from fvae_asr.speech.data.word_layouts import (
    DEFAULT_SPLITS,
    LAYOUTS,
    Transcript,
    checked_transcripts,
    split_transcripts,
)

logger = logging.getLogger(__name__)

WORD_ANNOTATIONS = "word_annotations"  # the three annotations with a wrd column instead of phn
WORD_LAYOUTS = (*LAYOUTS, WORD_ANNOTATIONS)
RECORD_NAME = "words_prepare.json"  # in save_folder, beside the manifests
MANIFEST_FORMAT = 1
SPLIT_KEYS = {split: f"corpus_splits.{split}" for split in SPLITS}  # flat settings of the yaml's corpus_splits


@dataclass(frozen=True)
class WordCorpus(Corpus):
    """A corpus with word transcripts, pronounced: ``Corpus`` plus the preparation record its manifests need."""

    record: dict = field(default_factory=dict)


def word_corpus_of(settings: Mapping, pronouncer: Pronouncer | None = None) -> WordCorpus:
    """The corpus that ``corpus`` (a layout of ``WORD_LAYOUTS``), ``data_folder`` and ``corpus_splits`` (or the
    three annotations) name, every transcript pronounced; ``AnnotationError`` naming the file and line of the first
    one that cannot be used. Nothing is written (``write_manifests`` does it).

    ``settings`` of the result: ``n_tokens`` and the SHA-256 of the targets, so a resumed run whose transcripts,
    audio list or pronunciations changed is refused like any changed setting.
    """
    layout = settings["corpus"]
    transcripts = _transcripts(layout, settings)
    pronouncer = pronouncer or _shared_pronouncer()
    manifests = {split: {} for split in SPLITS}
    sources = {split: {} for split in SPLITS}
    espeak_words: dict[str, str] = {}
    for split, utterances in transcripts.items():
        for utterance, duration in utterances:
            try:
                words = normalize(utterance.text)
                if not words:
                    raise LexiconError("no words (punctuation only)")
                phones = pronouncer.transcribe(words)
            except LexiconError as err:
                raise AnnotationError(f"{utterance.where}: {err}") from None
            spoken = (part for word in words for part in pronouncer.espeak_parts(word))
            espeak_words.update({part: " ".join(pronouncer.espeak_words[part]) for part in spoken})
            manifests[split][utterance.utt_id] = {
                "wav": str(utterance.audio),
                "duration": duration,
                "wrd": " ".join(words),
                "phn": " ".join(phones),
            }
            sources[split][utterance.utt_id] = f"entry (from {utterance.where})"
    targets = hashlib.sha256(json.dumps(manifests, sort_keys=True).encode()).hexdigest()
    record = {
        "corpus": layout,
        "data_folder": str(settings.get("data_folder")),
        "manifest_format": MANIFEST_FORMAT,
        "cmudict": cmudict_version(),
        "espeakng_loader": importlib.metadata.version("espeakng-loader"),
        "targets_sha256": targets,
        "utterances": {split: len(entries) for split, entries in manifests.items()},
        "espeak_words": {"count": len(espeak_words), "words": dict(sorted(espeak_words.items()))},
    }
    paths = dict(zip(SPLITS, manifest_paths(settings["save_folder"])))
    splits = {split: Annotation(paths[split], manifests[split], sources[split]) for split in SPLITS}
    inventory_file = settings.get(INVENTORY_KEY)
    phones = read_inventory(inventory_file) if inventory_file else PHONES_39
    check_phones(splits, phones, inventory_file or "the 39-phone set")
    if espeak_words:
        logger.info("%d words not in CMUdict pronounced by eSpeak NG (listed in %s)", len(espeak_words), RECORD_NAME)
    recorded = {"n_tokens": len(phones) + 1, "word_targets<sha256>": targets, "cmudict": record["cmudict"]}
    return WordCorpus(phones=phones, splits=splits, settings=recorded, record=record)


def write_manifests(corpus: WordCorpus, save_folder: str | Path) -> None:
    """Write the manifests and the preparation record into ``save_folder``, unless they are already there with
    the same targets; the record goes last (and the old one first), so an interrupted write is never mistaken for
    a finished one."""
    save_dir = Path(save_folder)
    record_path = save_dir / RECORD_NAME
    annotations = corpus.splits.values()
    if record_path.is_file() and all(annotation.path.is_file() for annotation in annotations):
        try:
            if read_json(record_path, "preparation record") == corpus.record:
                logger.info("Manifests in %s already prepared from %s; skipping", save_dir, corpus.record["corpus"])
                return
        except ValueError:
            pass  # unreadable: rewritten below
    save_dir.mkdir(parents=True, exist_ok=True)
    record_path.unlink(missing_ok=True)
    for annotation in annotations:
        write_json(annotation.path, annotation.entries)
        logger.info("Wrote %s (%d utterances)", annotation.path, len(annotation.entries))
    write_json(record_path, corpus.record)


def _transcripts(layout: str, settings: Mapping) -> dict[str, list[tuple[Transcript, float]]]:
    """Each split's transcripts with their recordings' durations (from the audio headers)."""
    if layout == WORD_ANNOTATIONS:
        return {split: _annotated(settings, key) for split, key in ANNOTATION_KEYS.items()}
    given = {split: settings.get(key) for split, key in SPLIT_KEYS.items()}
    splits = {split: given[split] or DEFAULT_SPLITS[layout][split] for split in SPLITS}
    by_split = split_transcripts(layout, settings["data_folder"], splits)
    return {split: [(t, _duration(t)) for t in transcripts] for split, transcripts in by_split.items()}


def _annotated(settings: Mapping, key: str) -> list[tuple[Transcript, float]]:
    path = settings.get(key)
    if not path:
        raise AnnotationError(f"corpus {WORD_ANNOTATIONS} needs {', '.join(ANNOTATION_KEYS.values())}; {key} is unset")
    annotation = read_annotation(path, settings.get("data_folder"), required=WORD_ANNOTATION_FIELDS)
    transcripts = [
        Transcript(utt_id, Path(entry["wav"]), entry["wrd"], annotation.path, annotation.rows[utt_id])
        for utt_id, entry in annotation.entries.items()
    ]
    durations = [entry["duration"] for entry in annotation.entries.values()]
    return list(zip(checked_transcripts(transcripts), durations, strict=True))


def _duration(transcript: Transcript) -> float:
    try:
        check_regular_file(transcript.audio)
        return sf.info(str(transcript.audio)).duration
    except AudioError as err:
        raise AnnotationError(f"{transcript.where}: {transcript.audio}: {err.reason}") from None
    except (sf.SoundFileError, TypeError, RuntimeError) as err:
        raise AnnotationError(f"{transcript.where}: {transcript.audio}: cannot read audio ({err})") from None


_PRONOUNCER: list[Pronouncer] = []


def _shared_pronouncer() -> Pronouncer:
    """One pronouncer per process: the dictionary loads once, and each eSpeak word is spoken once."""
    if not _PRONOUNCER:
        _PRONOUNCER.append(Pronouncer())
    return _PRONOUNCER[0]
