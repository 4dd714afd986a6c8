"""Phone targets from word transcripts: the lexicon's rules, each corpus layout's targets against hand-written
ones, and every kind of bad input refused, naming file and line, before anything is written."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from word_corpora import (
    ESPEAK_WORDS,
    LAYOUTS,
    SPLIT_SENTENCES,
    audio_path,
    expected_manifests,
    make_word_corpus,
    utt_id,
    word_settings,
)

from fvae_asr.speech.data.annotations import AnnotationError
from fvae_asr.speech.data.corpora import corpus_for
from fvae_asr.speech.data.lexicon import ARPABET_TO_39, LexiconError, Pronouncer, cmudict_version, normalize
from fvae_asr.speech.data.timit import PHONES_39
from fvae_asr.speech.data.word_corpus import RECORD_NAME, word_corpus_of, write_manifests


@pytest.fixture(scope="module", params=LAYOUTS)
def corpus(request, tmp_path_factory) -> tuple[str, Path]:
    """Each layout's corpus, written once per module (copy it before breaking it)."""
    layout = request.param
    return layout, make_word_corpus(tmp_path_factory.mktemp(layout) / "corpus", layout)


def _copy(corpus: tuple[str, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(corpus[1], tmp_path / "corpus"))


# --- the lexicon ---------------------------------------------------------------------------------------


def test_arpabet_table_folds_as_timit_and_lands_in_the_39_set():
    assert len(ARPABET_TO_39) == 39  # every CMUdict phoneme
    assert ARPABET_TO_39["AO"] == "aa" and ARPABET_TO_39["ZH"] == "sh" and ARPABET_TO_39["HH"] == "hh"
    assert set(ARPABET_TO_39.values()) == set(PHONES_39) - {"sil", "dx"}


@pytest.mark.parametrize(
    "text, words",
    [
        ("Hello, WORLD!", ["hello", "world"]),
        ("\u201cDon\u2019t\u201d -- well-known caf\u00e9", ["don't", "well-known", "cafe"]),
        ("'quoted' James' -hyphen-", ["quoted", "james", "hyphen"]),
        ("In 1908 and/or (maybe)", ["in", "1908", "and", "or", "maybe"]),
    ],
)
def test_normalize_case_punctuation_apostrophes_hyphens(text, words):
    assert normalize(text) == words


@pytest.mark.parametrize("text, char", [("Привет", "П"), ("5% off", "%"), ("salt & pepper", "&"), ("$5", "$")])
def test_normalize_refuses_characters_outside_the_language(text, char):
    with pytest.raises(LexiconError, match=f"character {re.escape(repr(char))}"):
        normalize(text)


def test_first_dictionary_pronunciation_stress_removed_and_espeak_for_the_rest():
    spoken = []

    def espeak(word):
        spoken.append(word)
        return ["z", "'O@", "r", "b", "l", "a", "t#"]  # eSpeak mnemonics: stress, an r-coloured vowel and r, a flap

    pronouncer = Pronouncer({"the": [["DH", "AH0"], ["DH", "IY0"]], "blue": [["B", "L", "UW1"]]}, espeak)
    phones = pronouncer.transcribe(["the", "blue-zorblat", "zorblat"])
    assert " ".join(phones) == "dh ah b l uw z aa r b l ae t z aa r b l ae t"
    assert spoken == ["zorblat"]  # spoken once, remembered
    assert pronouncer.espeak_parts("blue-zorblat") == ["zorblat"]


def test_a_possessive_the_dictionary_lacks_is_its_base_with_the_english_ending():
    dictionary = {
        "brodie": [["B", "R", "OW1", "D", "IY0"]],
        "pearce": [["P", "IH1", "R", "S"]],
        "thorpe": [["TH", "AO1", "R", "P"]],
    }
    pronouncer = Pronouncer({**dictionary, "john's": [["JH", "AA1", "N", "Z"]]}, espeak=lambda word: [])
    assert pronouncer.phones("brodie's") == ["b", "r", "ow", "d", "iy", "z"]
    assert pronouncer.phones("pearce's") == ["p", "ih", "r", "s", "ih", "z"]
    assert pronouncer.phones("thorpe's") == ["th", "aa", "r", "p", "s"]  # AO -> aa
    assert pronouncer.espeak_parts("brodie's") == [] and pronouncer.espeak_parts("smith's") == ["smith's"]


def test_a_word_neither_source_can_pronounce_is_an_error():
    pronouncer = Pronouncer({}, lambda word: ["_:", "_"])  # eSpeak gives pauses only
    with pytest.raises(LexiconError, match="neither CMUdict nor eSpeak NG can pronounce 'xq'"):
        pronouncer.phones("xq")


@pytest.mark.e2e
def test_real_espeak_pronounces_an_unknown_word():
    pronouncer = Pronouncer()
    try:
        assert " ".join(pronouncer.phones("zorblat")) == ESPEAK_WORDS["zorblat"]
    finally:
        pronouncer.close()


# --- layouts -------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_targets_of_each_layout_match_the_hand_written_ones(corpus, tmp_path):
    layout, root = corpus
    prepared = word_corpus_of(word_settings(root, layout, tmp_path / "save"))
    got = {
        split: {utt: (entry["wrd"], entry["phn"]) for utt, entry in annotation.entries.items()}
        for split, annotation in prepared.splits.items()
    }
    assert got == expected_manifests(root, layout)
    assert prepared.record["espeak_words"] == {"count": 1, "words": ESPEAK_WORDS}
    assert prepared.record["cmudict"] == cmudict_version()
    assert prepared.phones == PHONES_39 and prepared.settings["n_tokens"] == 40
    entry = prepared.splits["dev"].entries[utt_id(layout, "dev", 4)]
    assert 0.5 < entry["duration"] < 5 and entry["wav"] == str(audio_path(root, layout, "dev", 4))
    assert not (tmp_path / "save").exists()  # nothing written yet


@pytest.mark.e2e
def test_manifests_are_written_once_and_again_when_they_change(corpus, tmp_path):
    layout, root = corpus
    save = tmp_path / "save"
    prepared = word_corpus_of(word_settings(root, layout, save))
    write_manifests(prepared, save)
    manifest = json.loads((save / "train.json").read_text())
    assert set(manifest) == {utt_id(layout, "train", i) for i in SPLIT_SENTENCES["train"]}
    record = json.loads((save / RECORD_NAME).read_text())
    assert record["espeak_words"]["words"] == ESPEAK_WORDS and record["utterances"] == {"train": 4, "dev": 1, "test": 1}
    os.utime(save / "train.json", ns=(1, 1))
    write_manifests(word_corpus_of(word_settings(root, layout, save)), save)
    assert (save / "train.json").stat().st_mtime_ns == 1  # the same targets: not rewritten
    changed = {**prepared.record, "targets_sha256": "0"}
    write_manifests(type(prepared)(prepared.phones, prepared.splits, prepared.settings, changed), save)
    assert (save / "train.json").stat().st_mtime_ns != 1


# --- bad input, refused before anything is written --------------------------------------------------------


def _transcript_file(root: Path, layout: str, split: str, index: int) -> Path:
    audio = audio_path(root, layout, split, index)
    return {
        "librispeech": audio.parent / "19-198.trans.txt",
        "common_voice": root / f"{split}.tsv",
        "arctic": root / "etc" / "txt.done.data",
        "arctic_txt": audio.with_suffix(".txt"),
        "word_annotations": root / "dev.csv",
    }[layout]


def _refused(root: Path, layout: str, tmp_path: Path, match: str) -> None:
    save = tmp_path / "save"
    with pytest.raises(AnnotationError, match=match):
        corpus_for(word_settings(root, layout, save))
    assert not save.exists()


# The dev sentence's line in its transcript file: LibriSpeech's subsets and ARCTIC's per-recording files hold it
# alone, Common Voice's TSV and the CSV after their header, festvox's prompt file after the 4 training prompts.
DEV_LINE = {"librispeech": 1, "common_voice": 2, "arctic": 5, "arctic_txt": 1, "word_annotations": 2}


@pytest.mark.e2e
def test_transcript_without_recording(corpus, tmp_path):
    layout, root = corpus[0], _copy(corpus, tmp_path)
    audio_path(root, layout, "dev", 4).unlink()
    source = _transcript_file(root, layout, "dev", 4)
    if layout == "arctic_txt":  # the .txt itself is the transcript
        _refused(root, layout, tmp_path, f"{source}: a transcript without a recording")
    else:
        _refused(root, layout, tmp_path, f"{source}, line {DEV_LINE[layout]} .*a transcript without a recording")


@pytest.mark.e2e
@pytest.mark.parametrize("layout", ["librispeech", "arctic", "arctic_txt"])
def test_recording_without_transcript(layout, tmp_path):
    root = make_word_corpus(tmp_path / "corpus", layout)
    extra = audio_path(root, layout, "train", 0).with_name(
        "19-198-0099.flac" if layout == "librispeech" else "arctic_a0099.wav"
    )
    shutil.copy(audio_path(root, layout, "train", 0), extra)
    _refused(root, layout, tmp_path, f"{extra}: a recording without a transcript")


def _rewrite(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")


@pytest.mark.e2e
def test_empty_transcript_and_characters_outside_the_language(corpus, tmp_path):
    layout, root = corpus[0], _copy(corpus, tmp_path)
    source = _transcript_file(root, layout, "dev", 4)
    spelled = "HER PLEASURE WAS GREAT" if layout == "librispeech" else "Her pleasure was GREAT"
    where = f"{source}, line {DEV_LINE[layout]} "
    _rewrite(source, spelled, "Her pleasure was \u0432\u0435\u043b\u0438\u043a\u0430")
    _refused(root, layout, tmp_path, f"{where}.*character '\u0432' .* is outside English")
    _rewrite(source, "Her pleasure was \u0432\u0435\u043b\u0438\u043a\u0430", "")
    _refused(root, layout, tmp_path, f"{where}.*empty")
    if layout == "arctic_txt":
        source.write_text("?! --\n", encoding="utf-8")
        _refused(root, layout, tmp_path, f"{where}.*no words")


@pytest.mark.e2e
def test_an_unpronounceable_word_names_its_line(corpus, tmp_path):
    layout, root = corpus
    pronouncer = Pronouncer(espeak=lambda word: [])
    with pytest.raises(AnnotationError, match="line .*neither CMUdict nor eSpeak NG can pronounce 'zorblat'"):
        word_corpus_of(word_settings(root, layout, tmp_path / "save"), pronouncer)
