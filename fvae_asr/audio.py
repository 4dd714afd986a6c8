"""Audio plumbing shared by preparation, training, transcription and the synthetic corpus: the models' sample
rate and one way to read a file (any format soundfile reads, any rate, any channel count), whole or piece by
piece."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional
from torch import Tensor

SAMPLE_RATE = 16000  # wav2vec2-family encoders, TIMIT and the synthetic corpus
# torchaudio's resampler reads lowpass_filter_width=6 zero crossings either side; 8 leaves room to spare.
_RESAMPLING_ZERO_CROSSINGS = 8


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
    with AudioReader(path, sample_rate) as reader:
        return reader.segment(0, reader.samples)


class AudioReader:
    """An open audio file read in pieces at ``sample_rate`` (mono), so that an hour of audio never has to be in
    memory at once: ``segment(start, stop)`` is ``load_audio(path)[start:stop]``, read from the file with a margin
    of a few source samples either side so that resampling a piece gives what resampling the whole file gives
    (the resampler works on blocks of ``rate / gcd`` samples; pieces start on a block).
    """

    def __init__(self, path: str | Path, sample_rate: int = SAMPLE_RATE) -> None:
        self.path = str(path)
        self._file = _open(path)
        self.file_rate: int = self._file.samplerate
        self.sample_rate = sample_rate
        self.file_frames: int = self._file.frames
        if self.file_frames <= 0:
            self._file.close()
            raise AudioError(path, "no audio samples")
        gcd = math.gcd(self.file_rate, sample_rate)
        self._block_in, self._block_out = self.file_rate // gcd, sample_rate // gcd  # resampler's block sizes
        width = _RESAMPLING_ZERO_CROSSINGS * self._block_in / min(self._block_in, self._block_out)
        self._margin_blocks = math.ceil(width / self._block_in) + 1
        # torchaudio's output length for the whole file
        self.samples: int = math.ceil(self._block_out * self.file_frames / self._block_in)

    @property
    def duration(self) -> float:
        """Seconds of audio in the file (at its own rate)."""
        return self.file_frames / self.file_rate

    def segment(self, start: int, stop: int) -> Tensor:
        """Samples ``[start, stop)`` at ``sample_rate`` as float32 mono; non-finite samples are an AudioError."""
        if not 0 <= start < stop <= self.samples:
            raise ValueError(f"{self.path}: segment [{start}, {stop}) outside the {self.samples} samples")
        if self.file_rate == self.sample_rate:
            return self._read_mono(start, stop)
        first_block = max(0, start // self._block_out - self._margin_blocks)
        last_block = math.ceil(stop / self._block_out) + self._margin_blocks
        begin = first_block * self._block_in
        mono = self._read_mono(begin, min(self.file_frames, last_block * self._block_in))
        resampled = torchaudio.functional.resample(mono, self.file_rate, self.sample_rate)
        offset = first_block * self._block_out
        return resampled[start - offset : stop - offset]

    def _read_mono(self, begin: int, end: int) -> Tensor:
        """File frames ``[begin, end)`` with channels averaged."""
        try:
            self._file.seek(begin)
            frames = self._file.read(end - begin, dtype="float32", always_2d=True)
        except (sf.SoundFileError, RuntimeError) as err:
            raise AudioError(self.path, f"cannot read audio: {getattr(err, 'error_string', err)}") from err
        if not np.isfinite(frames).all():
            raise AudioError(self.path, "non-finite (NaN or infinite) samples")
        return torch.from_numpy(frames).mean(dim=1)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def check_regular_file(path: str | Path) -> None:
    """AudioError unless ``path`` is a regular file (links followed): a directory or a missing file is named as
    such, and a FIFO, socket or device is refused before anything opens it (reading one could block forever)."""
    path = Path(path)
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    if not path.exists():
        raise AudioError(path, "no such file")
    if not path.is_file():
        raise AudioError(path, "is not a regular file (a FIFO, socket or device): refused, as reading it could block")


def _open(path: str | Path) -> sf.SoundFile:
    """Open a file for reading; soundfile's failures become AudioError."""
    check_regular_file(path)
    try:
        return sf.SoundFile(str(path))
    except sf.SoundFileError as err:
        raise AudioError(path, f"cannot read audio: {getattr(err, 'error_string', err)}") from err
    except TypeError as err:  # headerless (RAW) audio: soundfile wants a rate and channel count
        raise AudioError(path, f"cannot read audio: {err}") from err


def header_duration(path: str | Path) -> float:
    """Duration in seconds from the file's header (0.0 when it cannot be read, or is no regular file), e.g. to sort
    files by length."""
    try:
        check_regular_file(path)
        return sf.info(str(path)).duration
    except (AudioError, sf.SoundFileError, TypeError):
        return 0.0
