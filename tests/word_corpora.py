"""Tiny corpora with word transcripts, spoken by eSpeak NG, in each layout the recipe prepares (LibriSpeech,
Common Voice, festvox/CMU ARCTIC and its one-.txt-per-recording variant, word annotations), with the phone targets
written by hand from CMUdict's first pronunciations and the recipe's folds (docs/corpora.md)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import soundfile as sf

from fvae_asr.audio import SAMPLE_RATE
from fvae_asr.speech.data.espeak import Espeak

# (transcript as a corpus writes it, normalised words, phones by hand). "blue-water" is not in CMUdict: its parts
# are; "Zorblat" is in no dictionary: eSpeak NG says z-aw-r-b-l-a-t, folded as any eSpeak phone (O@ -> ao r -> aa r).
SENTENCES = [
    ("She had your dark suit.", "she had your dark suit", "sh iy hh ae d y aa r d aa r k s uw t"),
    ("The cat sat on a mat!", "the cat sat on a mat", "dh ah k ae t s ae t aa n ah m ae t"),
    ("Good morning, my friend.", "good morning my friend", "g uh d m aa r n ih ng m ay f r eh n d"),
    ("We like blue-water Zorblat.", "we like blue-water zorblat", "w iy l ay k b l uw w aa t er z aa r b l ae t"),
    ("Her pleasure was GREAT", "her pleasure was great", "hh er p l eh sh er w aa z g r ey t"),
    ("\u201cDon\u2019t go home\u201d", "don't go home", "d ow n t g ow hh ow m"),
]
SPLIT_SENTENCES = {"train": [0, 1, 2, 3], "dev": [4], "test": [5]}
ESPEAK_WORDS = {"zorblat": "z aa r b l ae t"}
LAYOUTS = ("librispeech", "common_voice", "arctic", "arctic_txt", "word_annotations")
CV_HEADER = ["client_id", "path", "sentence", "up_votes", "down_votes", "age", "gender", "accents", "locale", "segment"]


def spoken(espeak: Espeak, text: str) -> np.ndarray:
    """``text`` spoken by eSpeak NG's American voice, at 16 kHz."""
    return espeak.synthesize(text, "en-us", rate=190).audio


def make_word_corpus(root: Path, layout: str) -> Path:
    """Write the corpus in ``layout`` under ``root`` (the recipe's ``data_folder``) and return ``root``."""
    root.mkdir(parents=True)
    with Espeak() as espeak:
        for split, indices in SPLIT_SENTENCES.items():
            for index in indices:
                _write(root, layout, split, index, SENTENCES[index][0], spoken(espeak, SENTENCES[index][0]))
    return root


def expected_manifests(root: Path, layout: str) -> dict[str, dict[str, tuple[str, str]]]:
    """split -> id -> (wrd, phn) of the corpus ``make_word_corpus`` writes."""
    return {split: {utt_id(layout, split, i): SENTENCES[i][1:] for i in ids} for split, ids in SPLIT_SENTENCES.items()}


def utt_id(layout: str, split: str, index: int) -> str:
    """The utterance id of sentence ``index`` in ``layout``."""
    if layout == "librispeech":
        return f"19-198-{index:04d}"
    if layout == "common_voice":
        return f"common_voice_en_{index}"
    number = {"train": index + 1, "dev": 1, "test": 2}[split]  # arctic_b: odd prompts dev, even prompts test
    prompt = f"arctic_{'a' if split == 'train' else 'b'}{number:04d}"
    return f"{prompt}_159274857{index}" if layout == "arctic_txt" else prompt


def recipe_layout(layout: str) -> str:
    """The recipe's ``corpus`` for a test layout (both ARCTIC variants are ``arctic``)."""
    return "arctic" if layout == "arctic_txt" else layout


def audio_path(root: Path, layout: str, split: str, index: int) -> Path:
    """Where ``make_word_corpus`` writes sentence ``index``'s recording."""
    name = utt_id(layout, split, index)
    return {
        "librispeech": root / _LIBRISPEECH_SUBSETS[split] / "19" / "198" / f"{name}.flac",
        "common_voice": root / "clips" / f"{name}.mp3",
        "arctic": root / "wav" / f"{name}.wav",
        "arctic_txt": root / "data" / f"{name}.wav",
        "word_annotations": root / "wavs" / f"{name}.wav",
    }[layout]


_LIBRISPEECH_SUBSETS = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}


def _write(root: Path, layout: str, split: str, index: int, text: str, audio: np.ndarray) -> None:
    name, path = utt_id(layout, split, index), audio_path(root, layout, split, index)
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "librispeech":
        sf.write(path, audio, SAMPLE_RATE, format="FLAC")
        with (path.parent / "19-198.trans.txt").open("a", encoding="utf-8") as handle:
            handle.write(f"{name} {text.upper().replace('.', '').replace(',', '')}\n")
    elif layout == "common_voice":
        sf.write(path, audio, SAMPLE_RATE, format="MP3")
        tsv = root / f"{split}.tsv"
        new = not tsv.exists()
        with tsv.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
            if new:
                writer.writerow(CV_HEADER)
            writer.writerow(["c1", path.name, text, 2, 0, "", "", "", "en", ""])
    elif layout == "arctic":
        sf.write(path, audio, SAMPLE_RATE)
        (root / "etc").mkdir(exist_ok=True)
        with (root / "etc" / "txt.done.data").open("a", encoding="utf-8") as handle:
            handle.write(f'( {name} "{text}" )\n')
    elif layout == "arctic_txt":  # as rhasspy/dataset-voice-cathy: stereo, a .txt beside each recording
        sf.write(path, np.stack([audio, audio], axis=1), SAMPLE_RATE)
        path.with_suffix(".txt").write_text(text + "\n", encoding="utf-8")
    else:  # a CSV for train and dev, a JSON manifest for test, with wrd and no phn
        sf.write(path, audio, SAMPLE_RATE)
        duration = len(audio) / SAMPLE_RATE
        if split == "test":
            manifest = {name: {"wav": str(path), "duration": duration, "wrd": text}}
            (root / "test.json").write_text(json.dumps(manifest), encoding="utf-8")
            return
        csv_path = root / f"{split}.csv"
        new = not csv_path.exists()
        with csv_path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            if new:
                writer.writerow(["ID", "duration", "wav", "wrd"])
            writer.writerow([name, f"{duration:.4f}", f"$data_root/wavs/{path.name}", text])


def word_settings(root: Path, layout: str, save_folder: Path) -> dict:
    """The flat settings ``word_corpus_of`` reads for the corpus ``make_word_corpus`` wrote."""
    settings = {"corpus": recipe_layout(layout), "data_folder": str(root), "save_folder": str(save_folder)}
    if layout == "word_annotations":
        files = {"train_annotation": "train.csv", "valid_annotation": "dev.csv", "test_annotation": "test.json"}
        settings.update({key: str(root / name) for key, name in files.items()})
    return settings
