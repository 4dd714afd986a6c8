"""Audio plumbing shared by preparation, training, transcription and the synthetic corpus: the models' sample
rate and one way to read a file (any format soundfile reads, any rate, any channel count)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional
from torch import Tensor

SAMPLE_RATE = 16000  # wav2vec2-family encoders, TIMIT and the synthetic corpus


class AudioError(ValueError):
    """Audio that cannot be used; ``reason`` says why without repeating ``path``."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """A file soundfile can read (wav, flac, NIST SPHERE...) as a 1-D float32 tensor: channels averaged to
    mono, resampled to ``sample_rate``. Raises ``AudioError`` naming the file when it is unusable.
    """
    samples, rate = _read(path)
    if samples.shape[0] == 0:
        raise AudioError(path, "no audio samples")
    if not np.isfinite(samples).all():
        raise AudioError(path, "non-finite (NaN or infinite) samples")
    mono = torch.from_numpy(samples).mean(dim=1)
    return mono if rate == sample_rate else torchaudio.functional.resample(mono, rate, sample_rate)


def _read(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a file to (frames, channels) float32 and its sample rate; soundfile's failures become AudioError."""
    if Path(path).is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    if not Path(path).is_file():
        raise AudioError(path, "no such file")
    try:
        return sf.read(str(path), dtype="float32", always_2d=True)
    except sf.SoundFileError as err:
        raise AudioError(path, f"cannot read audio: {getattr(err, 'error_string', err)}") from err
    except TypeError as err:  # headerless (RAW) audio: soundfile wants a rate and channel count
        raise AudioError(path, f"cannot read audio: {err}") from err


def header_duration(path: str | Path) -> float:
    """Duration in seconds from the file's header (0.0 when it cannot be read), e.g. to sort files by length."""
    try:
        return sf.info(str(path)).duration
    except (sf.SoundFileError, TypeError):
        return 0.0
