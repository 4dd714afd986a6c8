"""The study's corpus: which of K words an utterance holds, in one of K noise colours; word and noise go together
at a fixed rate in training and validation, every (word, noise) group equally often in test. Generated once from the
exact plan, read back as waveforms."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from fvae_asr.audio import SAMPLE_RATE
from fvae_asr.files import read_json, write_atomically, write_json
from fvae_asr.synthetic import SOURCE, Espeak, make_speaker, synthesize_utterance

logger = logging.getLogger("fvae_asr.spurious")

WORDS = ("apple", "window", "ladder", "pencil")  # the classes
NOISES = {"blue": -1.0, "white": 0.0, "pink": 1.0, "brown": 2.0}  # the nuisance: noise colour -> spectral slope
SNR_DB = 10.0
SPLITS = ("train", "val", "test")


# ---- the groups ---------------------------------------------------------------------------------------------


def correlated_groups(per_class: int, rate: float, n_classes: int = len(WORDS)) -> dict[tuple[int, int], int]:
    """Counts per (class, nuisance) group: class k gets ``rate * per_class`` with nuisance k and the rest spread
    evenly over the other nuisances. ValueError unless every count is a whole number."""
    if not 0 < rate < 1:
        raise ValueError(f"the correlation rate must be in (0, 1), got {rate}")
    majority = Fraction(per_class) * Fraction(rate).limit_denominator(10**6)
    minority = (per_class - majority) / (n_classes - 1)
    if majority.denominator != 1 or minority.denominator != 1:
        raise ValueError(
            f"{per_class} utterances per class at rate {rate} do not split into whole groups: "
            f"{float(majority):g} with the class's own nuisance and {float(minority):g} with each of "
            f"the other {n_classes - 1}"
        )
    return {(c, n): int(majority if c == n else minority) for c in range(n_classes) for n in range(n_classes)}


def balanced_groups(per_group: int, n_classes: int = len(WORDS)) -> dict[tuple[int, int], int]:
    """Every (class, nuisance) group ``per_group`` times."""
    return {(c, n): per_group for c in range(n_classes) for n in range(n_classes)}


def split_groups(size: dict[str, Any]) -> dict[str, dict[tuple[int, int], int]]:
    """The planned group counts of each split (train and val correlated, test balanced)."""
    return {
        "train": correlated_groups(size["train_per_class"], size["rate"]),
        "val": correlated_groups(size["val_per_class"], size["rate"]),
        "test": balanced_groups(size["test_per_group"]),
    }


def plan_split(groups: dict[tuple[int, int], int], seed: int, split: str) -> list[tuple[int, int]]:
    """The (class, nuisance) of each utterance of a split, in an order shuffled by the seed."""
    plan = [group for group, count in sorted(groups.items()) for _ in range(count)]
    random.Random(f"{seed}/{split}/order").shuffle(plan)
    return plan


# ---- the corpus ---------------------------------------------------------------------------------------------


def noise_domain(noise: str):
    """The source domain's voices through a channel that adds the named noise colour at ``SNR_DB``."""
    return dataclasses.replace(SOURCE, name=f"source_{noise}_noise", snr_db=SNR_DB, noise_slope=NOISES[noise])


def synthesize_split(espeak: Espeak, plan: list[tuple[int, int]], seed: int, split: str) -> dict[str, np.ndarray]:
    """Audio of a split: utterance i is the word of its class spoken by its own speaker, in its noise."""
    domains = [noise_domain(noise) for noise in NOISES]
    audio, lengths = [], []
    for i, (word, noise) in enumerate(plan):
        speaker = make_speaker(f"{'MF'[i % 2]}{split.upper()}{i:05d}", split, "DR1", SOURCE, seed)
        rng = np.random.default_rng([seed, SPLITS.index(split), i])
        utterance = synthesize_utterance(espeak, f"{WORDS[word].capitalize()}.", speaker, domains[noise], rng)
        audio.append(utterance.audio)
        lengths.append(len(utterance.audio))
    return {
        "audio": np.concatenate(audio),
        "lengths": np.array(lengths, dtype=np.int64),
        "label": np.array([w for w, _ in plan], dtype=np.int64),
        "nuisance": np.array([n for _, n in plan], dtype=np.int64),
    }


def corpus_options(size: dict[str, Any], seed: int) -> dict[str, Any]:
    """Everything the corpus depends on (its fingerprint)."""
    return {
        "seed": seed,
        "words": list(WORDS),
        "noises": NOISES,
        "snr_db": SNR_DB,
        "voices": dataclasses.asdict(SOURCE),
        **{key: size[key] for key in ("train_per_class", "val_per_class", "test_per_group", "rate")},
    }


def prepare_corpus(work: Path, size: dict[str, Any], seed: int) -> Path:
    """Generate the three splits once under ``work/corpus/<fingerprint>`` (``corpus.json`` is written last, so a
    folder without it is regenerated); return the folder."""
    options = json.loads(json.dumps(corpus_options(size, seed)))
    fingerprint = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:12]
    folder = work / "corpus" / fingerprint
    marker = folder / "corpus.json"
    if marker.is_file() and read_json(marker, "spurious corpus record") == options:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    groups = split_groups(size)
    with Espeak() as espeak:
        for split in SPLITS:
            arrays = synthesize_split(espeak, plan_split(groups[split], seed, split), seed, split)
            write_atomically(folder / f"{split}.npz", lambda tmp, a=arrays: save_npz(tmp, a))
    write_json(marker, options)
    logger.info("generated the corpus in %s in %.1f s", folder, time.perf_counter() - started)
    return folder


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Arrays into one .npz file at exactly ``path`` (numpy would append .npz to a name without it)."""
    with path.open("wb") as handle:
        np.savez(handle, **arrays)


def load_split(folder: Path, split: str) -> dict[str, Any]:
    """A split as a list of waveforms with their labels and nuisances."""
    with np.load(folder / f"{split}.npz") as data:
        ends = np.cumsum(data["lengths"])
        wavs = [torch.from_numpy(w) for w in np.split(data["audio"], ends[:-1])]
        return {"wavs": wavs, "label": torch.from_numpy(data["label"]), "nuisance": torch.from_numpy(data["nuisance"])}


def write_test_manifest(corpus: Path, directory: Path) -> Path:
    """The test split as wav files in ``directory/test_wavs`` and a manifest ``directory/test.json`` naming each
    utterance's word (``label``) and noise colour (``nuisance``); returns the manifest's path."""
    split = load_split(corpus, "test")
    wav_dir = directory / "test_wavs"
    wav_dir.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for i, wav in enumerate(split["wavs"]):
        utt_id = f"test{i:04d}"
        path = (wav_dir / f"{utt_id}.wav").resolve()
        # float samples: the model hears exactly the audio it was tested on (16-bit PCM would round it)
        write_atomically(path, lambda tmp, w=wav: sf.write(tmp, w.numpy(), SAMPLE_RATE, format="WAV", subtype="FLOAT"))
        manifest[utt_id] = {
            "wav": str(path),
            "duration": len(wav) / SAMPLE_RATE,
            "label": WORDS[int(split["label"][i])],
            "nuisance": list(NOISES)[int(split["nuisance"][i])],
        }
    write_json(directory / "test.json", manifest)
    return directory / "test.json"
