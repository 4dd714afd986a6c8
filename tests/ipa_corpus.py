"""A small corpus of another language's phones, written as any corpus would be: 22.05 kHz stereo audio, CSV
annotations with relative and ``$data_root`` paths, and a JSON manifest (used by the corpus and packaging tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 22050  # not the models' 16 kHz
IPA_PHONES = ["ʃ", "iː", "æ", "s", "ɑː", "n"]  # not TIMIT's labels
ROWS = {"train": 12, "dev": 4, "test": 4}


def _tone_utterance(rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """Silence, 3 to 5 phones (a sine of its own pitch each), silence: stereo at ``RATE``."""
    phones = [str(p) for p in rng.choice(IPA_PHONES, int(rng.integers(3, 6)))]
    pieces = [np.zeros(2000)]
    for phone in phones:
        t = np.arange(int(rng.integers(1600, 2600))) / RATE
        pieces.append(0.5 * np.sin(2 * np.pi * (300 + 150 * IPA_PHONES.index(phone)) * t))
    pieces.append(np.zeros(2000))
    mono = np.concatenate(pieces) + 0.01 * rng.standard_normal(sum(map(len, pieces)))
    return np.stack([mono, 0.8 * mono], axis=1).astype(np.float32), phones


def make_ipa_corpus(root: Path, seed: int = 0) -> Path:
    """``wavs/`` (22.05 kHz stereo) and ``train.csv`` (relative wav paths), ``dev.csv`` ($data_root paths),
    ``test.json`` (a JSON manifest with absolute paths)."""
    rng = np.random.default_rng(seed)
    (root / "wavs").mkdir(parents=True)
    for split, count in ROWS.items():
        rows = {}
        for i in range(count):
            audio, phones = _tone_utterance(rng)
            sf.write(root / "wavs" / f"{split}{i}.wav", audio, RATE)
            rows[f"{split}{i}"] = (len(audio) / RATE, f"wavs/{split}{i}.wav", " ".join(phones))
        if split == "test":
            manifest = {utt: {"duration": d, "wav": str(root / wav), "phn": p} for utt, (d, wav, p) in rows.items()}
            (root / "test.json").write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
        else:
            prefix = "$data_root/" if split == "dev" else ""
            lines = ["ID, duration, wav, phn, spk_id"] + [
                f"{utt}, {d:.4f}, {prefix}{wav}, {p}, spk{i % 2}" for i, (utt, (d, wav, p)) in enumerate(rows.items())
            ]
            (root / f"{split}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
