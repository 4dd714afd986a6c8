"""Generate a synthetic corpus in the real TIMIT layout (TRAIN/TEST, DR1-DR8, speaker folders, SA/SI/SX).

Speakers are eSpeak voices with their own rate and pitch; each reads SA1 and SA2 (the same two sentences
for everyone, excluded by preparation), SX sentences shared by several speakers of the same folder, and SI
sentences of their own. TRAIN and TEST never share a sentence, as in TIMIT's core test set. The TEST folder
holds real core-test and dev speaker ids, so the standard dev/test selection applies unchanged.

Every random choice is drawn from a generator keyed by the seed and the speaker/utterance it is for, and
every synthesis is independent of the ones before it, so the same options give byte-identical files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import re
import shutil
import string
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from fvae_asr.audio import SAMPLE_RATE
from fvae_asr.files import read_json
from fvae_asr.speech.data.espeak import Espeak, Synthesis
from fvae_asr.speech.data.espeak_phones import PAUSE, phone_segments
from fvae_asr.speech.data.timit import CORE_TEST_SPEAKERS, DEV_SPEAKERS, write_utterance
from fvae_asr.synthetic.domains import DomainConfig, apply_channel, get_domain
from fvae_asr.synthetic.sentences import CALIBRATION_SENTENCES, make_sentences

logger = logging.getLogger(__name__)

Segment = tuple[int, int, str]

OPTIONS_FILE = "synthetic_corpus.json"
FILES_KEY = "files"  # in OPTIONS_FILE: the size of every file written, so that a file deleted or cut short is noticed
_EDGE_SILENCE_S = (0.08, 0.25)  # silence added before and after each utterance (TIMIT's h# regions)
_SX_READERS = 7  # as in TIMIT, each SX sentence is read by up to seven speakers of the same folder
_SX_FIRST_ID, _SI_FIRST_ID = 3, 648  # TIMIT's first SX and SI sentence numbers
_N_DIALECTS = 8
_WORD = re.compile(r"[A-Za-z']+")


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: TIMIT ids and the eSpeak voice settings that make it sound like itself."""

    speaker_id: str
    split: str
    dialect: str
    voice: str
    rate: int
    pitch: int
    pitch_range: int


@dataclass(frozen=True)
class Utterance:
    """16 kHz float32 audio with its TIMIT phone and word segments (sample ranges) and its text."""

    audio: np.ndarray
    phones: list[Segment]
    words: list[Segment]
    text: str


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator that depends only on the seed and the keys, not on what was drawn before."""
    return np.random.default_rng([seed, *(zlib.crc32(key.encode()) for key in keys)])


def make_speaker(speaker_id: str, split: str, dialect: str, domain: DomainConfig, seed: int) -> Speaker:
    """Voice, rate and pitch of a speaker, drawn from the domain's pools for the gender in its id."""
    rng = _rng(seed, "speaker", speaker_id)
    variants = domain.female_variants if speaker_id.startswith("F") else domain.male_variants
    voice = f"{domain.languages[rng.integers(len(domain.languages))]}+{variants[rng.integers(len(variants))]}"
    rate, pitch, pitch_range = (
        int(rng.integers(low, high + 1)) for low, high in (domain.rate_wpm, domain.pitch, domain.pitch_range)
    )
    return Speaker(speaker_id, split, dialect, voice, rate, pitch, pitch_range)


def _start_samples(synthesis: Synthesis) -> list[tuple[int, str]]:
    """Phoneme starts; a word's first phoneme starts at the word's own start (before a stop's closure)."""
    word_starts = {word.text_position: word.sample for word in synthesis.words}
    events: list[tuple[int, str]] = []
    for phoneme in synthesis.phonemes:
        start = min(phoneme.sample, word_starts.pop(phoneme.text_position, phoneme.sample))
        events.append((max(start, events[-1][0]) if events else start, phoneme.mnemonic))
    return events


def word_segments(text: str, synthesis: Synthesis, phones: Sequence[Segment], offset: int) -> list[Segment]:
    """TIMIT word segments (lower-case words, punctuation dropped) from eSpeak word events.

    A word starts at its event (``offset`` samples later, for the added lead silence) and runs to the next
    word's start, or to a pause or the final ``h#`` if one comes first. eSpeak sometimes speaks two words
    as one (``that the``): a word without an event shares the previous one's span, in proportion to length.
    """
    tokens = [(match.start(), match.end(), match.group().lower()) for match in _WORD.finditer(text)]
    speech_start, speech_end = phones[0][1], phones[-1][0]
    starts: dict[int, int] = {0: speech_start}
    for event in reversed(synthesis.words):  # the first event of a token wins
        for i, (first, last, _) in enumerate(tokens):
            if first <= event.text_position - 1 < last:
                starts[i] = min(max(event.sample + offset, speech_start), speech_end)
    anchors = sorted(starts)
    pauses = [start for start, _, label in phones if label == PAUSE]
    segments: list[Segment] = []
    for k, anchor in enumerate(anchors):
        group = range(anchor, anchors[k + 1] if k + 1 < len(anchors) else len(tokens))
        start = max(starts[anchor], segments[-1][1] if segments else speech_start)
        following = starts[anchors[k + 1]] if k + 1 < len(anchors) else speech_end
        end = max(start, min([following, *(p for p in pauses if p > start)]))
        lengths = np.cumsum([0] + [tokens[i][1] - tokens[i][0] for i in group])
        bounds = start + (end - start) * lengths // lengths[-1]
        segments += [(int(bounds[j]), int(bounds[j + 1]), tokens[i][2]) for j, i in enumerate(group)]
    return segments


def _rescale(segments: Sequence[Segment], ratio: Fraction) -> list[Segment]:
    """Segment boundaries moved by an exact time-scale ``ratio`` (rounded down, so order is kept)."""
    return [(math.floor(start * ratio), math.floor(end * ratio), label) for start, end, label in segments]


def synthesize_utterance(
    espeak: Espeak, text: str, speaker: Speaker, domain: DomainConfig, rng: np.random.Generator
) -> Utterance:
    """Speak ``text`` as ``speaker``, add edge silence, align phones and words, then apply the channel."""
    synthesis = espeak.synthesize(
        text,
        speaker.voice,
        rate=speaker.rate,
        pitch=speaker.pitch,
        pitch_range=speaker.pitch_range,
        seed=int(rng.integers(2**31)),
    )
    lead, trail = (int(rng.uniform(*_EDGE_SILENCE_S) * SAMPLE_RATE) for _ in range(2))
    audio = np.concatenate([np.zeros(lead, np.float32), synthesis.audio, np.zeros(trail, np.float32)])
    phones = phone_segments([(start + lead, name) for start, name in _start_samples(synthesis)], len(audio))
    words = word_segments(text, synthesis, phones, lead)
    out = apply_channel(audio, domain, rng)
    if len(out) != len(audio):
        phones, words = _rescale(phones, domain.length_ratio), _rescale(words, domain.length_ratio)
        phones[-1] = (phones[-1][0], len(out), phones[-1][2])  # the final h# reaches the new end
    return Utterance(out, phones, words, text)


def _speaker_ids(count: int, rng: random.Random, taken: set[str]) -> list[str]:
    """TIMIT-style training ids: sex (F about a third of the time, as in TIMIT), 3 initials, a digit."""
    ids: list[str] = []
    while len(ids) < count:
        sex = "F" if rng.random() < 0.35 else "M"
        candidate = sex + "".join(rng.choices(string.ascii_uppercase, k=3)) + "0"
        if candidate not in taken:
            taken.add(candidate)
            ids.append(candidate)
    return ids


@dataclass(frozen=True)
class _Folder:
    """One TIMIT folder (TRAIN or TEST): its speakers and how many SX/SI sentences each reads."""

    split: str
    speaker_ids: list[str]
    per_speaker: int

    @property
    def n_sx(self) -> int:
        return max(1, round(self.per_speaker * 5 / 8))  # TIMIT: 5 SX and 3 SI out of 8

    @property
    def n_si(self) -> int:
        return self.per_speaker - self.n_sx

    @property
    def sx_pool(self) -> int:
        """Number of distinct SX texts: each is read by up to ``_SX_READERS`` speakers."""
        return max(self.n_sx, math.ceil(len(self.speaker_ids) * self.n_sx / _SX_READERS))

    @property
    def n_texts(self) -> int:
        return self.sx_pool + len(self.speaker_ids) * self.n_si

    def scripts(self, texts: Sequence[str], first_sx: int, first_si: int) -> dict[str, list[tuple[str, str]]]:
        """Per speaker, its (utterance id, text) pairs: SA1, SA2, its SI sentences, its SX sentences."""
        scripts = {}
        for s, speaker_id in enumerate(self.speaker_ids):
            sx = [(s * self.n_sx + j) % self.sx_pool for j in range(self.n_sx)]
            si = [s * self.n_si + j for j in range(self.n_si)]
            scripts[speaker_id] = [
                *((f"SA{k + 1}", text) for k, text in enumerate(CALIBRATION_SENTENCES)),
                *((f"SI{first_si + i}", texts[self.sx_pool + i]) for i in si),
                *((f"SX{first_sx + i}", texts[i]) for i in sx),
            ]
        return scripts


def _plan(seed: int, n_train: int, n_test: int, per_speaker: int) -> list[tuple[_Folder, dict]]:
    """TEST and TRAIN folders with their scripts. TEST speakers are real TIMIT ids, half (rounded up) from
    the core test set and the rest from the dev set. Nothing here depends on the acoustic domain."""
    n_core = (n_test + 1) // 2
    if n_train < 1 or per_speaker < 1:
        raise ValueError("need at least one training speaker and one sentence per speaker")
    if not (n_test >= 2 and n_core <= len(CORE_TEST_SPEAKERS) and n_test - n_core <= len(DEV_SPEAKERS)):
        raise ValueError(f"n_test_speakers must be in [2, {2 * len(CORE_TEST_SPEAKERS)}], got {n_test}")
    rng = random.Random(f"{seed}/speakers")
    core, dev = rng.sample(sorted(CORE_TEST_SPEAKERS), n_core), rng.sample(sorted(DEV_SPEAKERS), n_test - n_core)
    test = _Folder("TEST", sorted(core) + sorted(dev), per_speaker)
    train = _Folder("TRAIN", _speaker_ids(n_train, rng, set(CORE_TEST_SPEAKERS | DEV_SPEAKERS)), per_speaker)
    test_texts = make_sentences(test.n_texts, f"{seed}/test", exclude=CALIBRATION_SENTENCES)
    train_texts = make_sentences(train.n_texts, f"{seed}/train", exclude={*CALIBRATION_SENTENCES, *test_texts})
    # Sentence numbers are unique across the corpus: TRAIN's continue after TEST's.
    return [
        (test, test.scripts(test_texts, _SX_FIRST_ID, _SI_FIRST_ID)),
        (train, train.scripts(train_texts, _SX_FIRST_ID + test.sx_pool, _SI_FIRST_ID + test.n_texts - test.sx_pool)),
    ]


class OutputFolderTaken(FileExistsError):
    """The output folder holds something other than the requested corpus; ``overwrite`` would replace it."""

    def __init__(self, folder: Path, holds: str) -> None:
        self.folder, self.holds = folder, holds
        super().__init__(self.message("overwrite=True"))

    def message(self, overwrite_option: str) -> str:
        """The error, telling to pass ``overwrite_option`` (spelled as the caller can type it, e.g. ``--overwrite``)."""
        return f"{self.folder} {self.holds} (pass {overwrite_option} to replace it)"


def _prepare_output(out: Path, options: dict, overwrite: bool) -> bool:
    """True when ``out`` already holds this exact corpus. Otherwise make sure it can be written: an
    existing non-empty folder is refused unless ``overwrite``, which removes only the corpus folders."""
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output folder {out} is a file, not a folder")
    holds = _what_it_holds(out, options)
    if holds is None:
        return True
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise OutputFolderTaken(out, holds)
        (out / OPTIONS_FILE).unlink(missing_ok=True)
        for name in ("TRAIN", "TEST", "train", "test"):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
    out.mkdir(parents=True, exist_ok=True)
    return False


def _what_it_holds(out: Path, options: dict) -> str | None:
    """None when ``out`` holds the corpus generated with ``options``, else what it holds instead."""
    marker = out / OPTIONS_FILE
    if not marker.is_file():
        return "is not empty and holds no synthetic corpus"
    try:
        recorded = read_json(marker, "synthetic corpus record")
    except ValueError as err:
        return f"holds an unreadable {OPTIONS_FILE} ({err})"
    files = recorded.pop(FILES_KEY, None)  # absent from records written before 0.3
    differing = sorted(key for key in options.keys() | recorded.keys() if recorded.get(key) != options.get(key))
    if differing:
        return f"holds a synthetic corpus generated with other options: {', '.join(differing)}"
    changed = sorted(set(files.items()) - set(_corpus_files(out).items())) if isinstance(files, dict) else []
    if changed:
        named = ", ".join(name for name, _ in changed[:3]) + (", ..." if len(changed) > 3 else "")
        return (
            f"holds a synthetic corpus with {len(changed)} file(s) missing or changed since it was generated ({named})"
        )
    return None


def _corpus_files(out: Path) -> dict[str, int]:
    """Size of every file of a generated corpus, by its path under ``out`` (the record itself left out)."""
    return {
        path.relative_to(out).as_posix(): path.stat().st_size
        for path in sorted(out.rglob("*"))
        if path.is_file() and path.name != OPTIONS_FILE
    }


def generate_corpus(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    n_train_speakers: int = 24,
    n_test_speakers: int = 8,
    sentences_per_speaker: int = 8,
    domain: str | DomainConfig = "source",
    uppercase: bool = True,
    overwrite: bool = False,
    espeak: Espeak | None = None,
) -> Path:
    """Write a synthetic TIMIT-layout corpus under ``out_dir`` and return its path.

    Each speaker reads SA1, SA2 and ``sentences_per_speaker`` SI/SX sentences. ``domain`` is ``"source"``,
    ``"target"`` or a :class:`DomainConfig`. The same options always give byte-identical files; when
    ``out_dir`` already holds the corpus for these options (recorded in ``synthetic_corpus.json``, written
    last, with every file's size) nothing is redone; a file missing or changed since is refused like other
    content (``overwrite`` regenerates). ``espeak`` lets several calls share one synthesiser.
    """
    config = get_domain(domain)
    out = Path(out_dir)
    options = dict(
        seed=seed,
        n_train_speakers=n_train_speakers,
        n_test_speakers=n_test_speakers,
        sentences_per_speaker=sentences_per_speaker,
        uppercase=uppercase,
        domain=dataclasses.asdict(config),
    )
    options = json.loads(json.dumps(options))  # tuples -> lists, as they read back from the file
    plan = _plan(seed, n_train_speakers, n_test_speakers, sentences_per_speaker)
    if _prepare_output(out, options, overwrite):
        logger.info("Synthetic corpus in %s already generated with these options", out)
        return out
    started, count = time.perf_counter(), 0
    synthesiser = espeak or Espeak()
    try:
        for folder, scripts in plan:
            for s, speaker_id in enumerate(folder.speaker_ids):
                speaker = make_speaker(speaker_id, folder.split, f"DR{s % _N_DIALECTS + 1}", config, seed)
                for utterance_id, text in scripts[speaker_id]:
                    rng = _rng(seed, "utterance", speaker_id, utterance_id)
                    utterance = synthesize_utterance(synthesiser, text, speaker, config, rng)
                    write_utterance(
                        out,
                        folder.split,
                        speaker.dialect,
                        speaker_id,
                        utterance_id,
                        utterance.audio,
                        utterance.phones,
                        utterance.words,
                        text,
                        uppercase=uppercase,
                    )
                    count += 1
    finally:
        if espeak is None:
            synthesiser.close()
    record = {**options, FILES_KEY: _corpus_files(out)}
    (out / OPTIONS_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    elapsed = time.perf_counter() - started
    logger.info(
        "Wrote %d utterances (%s domain) to %s in %.1f s (%.1f utt/s)",
        count,
        config.name,
        out,
        elapsed,
        count / elapsed,
    )
    return out
