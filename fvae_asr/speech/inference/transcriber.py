"""Phone transcription with an exported recogniser: audio files of any format/rate/channel count and any length
in, phones (optionally with times) out.

``Transcriber`` batches short files (padded with SpeechBrain, relative lengths) and transcribes long ones chunk by
chunk (see ``fvae_asr.speech.inference.chunking`` for the rule), reading only one chunk of audio at a time; phones come
from the best label of each frame, collapsed as greedy CTC decoding does (``fvae_asr.speech.inference.ctc_segments``).
``transcribe_files`` reports unreadable files one by one instead of stopping at the first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from speechbrain.utils.data_utils import batch_pad_right
from torch import Tensor

from fvae_asr.audio import AudioError, AudioReader, header_duration, load_audio
from fvae_asr.speech.inference.chunking import Chunk, FrameGeometry, frames_for, plan_chunks
from fvae_asr.speech.inference.ctc_segments import PhoneSegment, greedy_phones, phone_segments
from fvae_asr.speech.models.export import load_recognizer
from fvae_asr.speech.models.recognizer import greedy_decode

DEFAULT_CHUNK_SECONDS = 20.0
DEFAULT_CONTEXT_SECONDS = 2.0
_VARIANCE_FLOOR = 1e-7  # as the encoder's own waveform normalisation


@dataclass(frozen=True)
class FileTranscription:
    """One file's outcome: its phones (with their times when asked for) and the original file's duration in
    seconds (frames / rate as its header states, before resampling), or the reason it could not be transcribed."""

    path: str
    phones: list[str] | None = None
    error: str | None = None
    duration: float | None = None
    segments: list[PhoneSegment] | None = None


class Transcriber:
    """An exported recogniser (see ``export_model``) ready for phone transcription of files of any length.

    Files of at most ``chunk_seconds`` go through the model whole (``batch_size`` at a time); longer ones in
    chunks of ``chunk_seconds`` with ``context_seconds`` of audio either side whose frames are dropped, after
    normalising the waveform with the whole file's mean and variance (as the model does for a whole file).
    Memory for a long file is bounded by the chunk: ``chunk_seconds + 2 * context_seconds`` of audio (at the
    file's rate and channels, and at the model's rate) and the model's activations for it, plus the result (one
    label index per frame, 8 bytes: 1.4 MB per hour at wav2vec2's 50 frames a second, and the phones).

    Args:
        checkpoint: a folder written by ``export_model`` (a training run's ``<output_folder>/model``).
        device: the torch device to run on, e.g. ``cpu`` or ``cuda:0``.
        batch_size: short files transcribed together in one forward pass.
        chunk_seconds: files longer than this are transcribed chunk by chunk.
        context_seconds: audio heard either side of each chunk, whose frames are dropped.

    Attributes:
        labels: the recogniser's outputs, the blank included.
        phones: the phones it can recognise.
        sample_rate: the rate its model reads (audio of any rate is resampled to it).
    """

    def __init__(
        self,
        checkpoint: str | Path,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
        context_seconds: float = DEFAULT_CONTEXT_SECONDS,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not chunk_seconds > 0 or not math.isfinite(chunk_seconds):
            raise ValueError(f"chunk_seconds must be a positive number, got {chunk_seconds!r}")
        if not context_seconds >= 0 or not math.isfinite(context_seconds):
            raise ValueError(f"context_seconds must be a number >= 0, got {context_seconds!r}")
        self.model, self.description = load_recognizer(checkpoint, device)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.labels: list[str] = self.description["labels"]
        self.blank_index: int = self.description["blank_index"]
        self.phones = frozenset(self.labels) - {self.labels[self.blank_index]}  # what it can recognise
        self.sample_rate: int = self.description["sample_rate"]
        self.geometry = FrameGeometry.from_frame_lengths(self.model.encoder.frame_lengths)
        self.seconds_per_frame = self.geometry.hop / self.sample_rate
        self.chunk_frames = max(1, frames_for(chunk_seconds, self.sample_rate, self.geometry))
        self.context_frames = frames_for(context_seconds, self.sample_rate, self.geometry, round_up=True)

    def transcribe(self, path: str | Path, timestamps: bool = False) -> FileTranscription:
        """One file's phones (and, with ``timestamps``, each phone's start and end in seconds); raises
        ``AudioError`` naming the file when it cannot be transcribed."""
        with AudioReader(path, self.sample_rate) as reader:
            frame_ids = torch.cat([block.argmax(-1) for block in self._chunk_log_probs(reader)])
            return self._result(str(path), frame_ids, reader.samples, timestamps)

    def frame_log_probs(self, path: str | Path) -> Iterator[Tensor]:
        """A file's CTC log-probabilities as (frames, labels) blocks on the CPU, one per chunk, that together are
        its frames in order (one block for a file of at most ``chunk_seconds``)."""
        with AudioReader(path, self.sample_rate) as reader:
            yield from self._chunk_log_probs(reader)

    def transcribe_batch(self, waveforms: list[Tensor]) -> list[list[str]]:
        """Phones of each 1-D waveform (at ``sample_rate``), computed in one padded forward pass."""
        for index, wav in enumerate(waveforms):
            problem = self._unusable(wav)
            if problem:
                raise ValueError(f"waveform {index}: {problem}")
        if not waveforms:
            return []
        log_probs, frame_lens = self._forward(waveforms)
        return [[self.labels[i] for i in ids] for ids in greedy_decode(log_probs, frame_lens, self.blank_index)]

    def transcribe_files(self, paths: Iterable[str | Path], timestamps: bool = False) -> list[FileTranscription]:
        """Transcribe files (short ones in batches of similar duration, longest batch first); results in input
        order, failures reported per file."""
        paths = [str(path) for path in paths]
        results = dict(self.transcribe_each(paths, timestamps))
        return [results[i] for i in range(len(paths))]

    def transcribe_each(
        self, paths: Sequence[str | Path], timestamps: bool = False
    ) -> Iterator[tuple[int, FileTranscription]]:
        """(index in ``paths``, result) for each file as soon as it is done: short files in batches of similar
        duration, then long ones one by one, chunk by chunk.

        The batches are those of the files sorted by duration, run longest first: each later batch then fits in
        memory the allocator already holds. Run shortest first, every batch is a little larger than the last and
        the process keeps growing (on wav2vec2-base, 60 files of 1 to 5 s: 3.7 GB resident instead of 1.4 GB).
        """
        paths = [str(path) for path in paths]
        durations = [header_duration(path) for path in paths]
        order = sorted(range(len(paths)), key=durations.__getitem__)
        short = [i for i in order if not self._is_long(durations[i])]
        for start in reversed(range(0, len(short), self.batch_size)):
            group = short[start : start + self.batch_size]
            yield from zip(group, self._transcribe_group([paths[i] for i in group], timestamps))
        for i in (i for i in order if self._is_long(durations[i])):
            try:
                yield i, self.transcribe(paths[i], timestamps)
            except AudioError as err:
                yield i, FileTranscription(paths[i], error=err.reason)

    def _is_long(self, seconds: float) -> bool:
        """Whether audio of this duration is transcribed in more than one chunk."""
        return self.geometry.frames(math.ceil(seconds * self.sample_rate)) > self.chunk_frames

    def _chunk_log_probs(self, reader: AudioReader) -> Iterator[Tensor]:
        """The kept log-probabilities of each chunk of an open file."""
        chunks = plan_chunks(reader.samples, self.geometry, self.chunk_frames, self.context_frames)
        if not chunks:
            raise AudioError(reader.path, self._too_short(reader.samples))
        if len(chunks) == 1:  # the whole file in one pass, exactly as transcribe_batch would see it
            log_probs, frame_lens = self._forward([reader.segment(0, reader.samples)])
            yield log_probs[0, : frame_lens[0]].cpu()
            return
        mean, scale = self._normalization(reader)
        with self._normalizing_here():
            for chunk in chunks:
                wav = (reader.segment(chunk.start, chunk.stop) - mean) * scale
                yield self._kept(chunk, *self._forward([wav]))

    def _kept(self, chunk: Chunk, log_probs: Tensor, frame_lens: Tensor) -> Tensor:
        if frame_lens[0] < chunk.keep_to:
            raise RuntimeError(f"chunk {chunk} gave {int(frame_lens[0])} frames, fewer than planned")
        return log_probs[0, chunk.keep_from : chunk.keep_to].cpu()

    def _normalization(self, reader: AudioReader) -> tuple[float, float]:
        """Mean and 1/std of the whole file (one streaming pass, chunk-sized blocks) when the model normalises
        its input waveform, else (0, 1)."""
        if not self.description["normalize_wav"]:
            return 0.0, 1.0
        block = self.chunk_frames * self.geometry.hop
        count, mean, squares = 0, 0.0, 0.0  # running mean and sum of squared deviations (Chan et al.)
        for start in range(0, reader.samples, block):
            samples = reader.segment(start, min(reader.samples, start + block)).double()
            block_mean = samples.mean().item()
            delta, total = block_mean - mean, count + samples.numel()
            squares += (samples - block_mean).square().sum().item() + delta**2 * count * samples.numel() / total
            mean += delta * samples.numel() / total
            count = total
        return mean, 1.0 / math.sqrt(squares / count + _VARIANCE_FLOOR)

    @contextmanager
    def _normalizing_here(self) -> Iterator[None]:
        """The encoder's per-input normalisation off while chunks normalised with whole-file statistics go in."""
        encoder = self.model.encoder
        normalize_wav, encoder.normalize_wav = encoder.normalize_wav, False
        try:
            yield
        finally:
            encoder.normalize_wav = normalize_wav

    def _forward(self, waveforms: list[Tensor]) -> tuple[Tensor, Tensor]:
        """Log-probabilities (B, T, V) and frame counts (B,) of a padded batch of 1-D waveforms."""
        wavs, wav_lens = batch_pad_right([wav.to(torch.float32) for wav in waveforms])
        with torch.inference_mode():
            return self.model(wavs.to(self.device), wav_lens.to(self.device))

    def _result(self, path: str, frame_ids: Tensor, samples: int, timestamps: bool) -> FileTranscription:
        duration = header_duration(path) or samples / self.sample_rate  # the original, not the resampled length
        if not timestamps:
            found = greedy_phones(frame_ids, self.labels, self.blank_index)
            return FileTranscription(path, phones=found, duration=duration)
        segments = phone_segments(frame_ids, self.labels, self.blank_index, self.seconds_per_frame)
        return FileTranscription(path, [s.phone for s in segments], duration=duration, segments=segments)

    def _load(self, path: str | Path) -> Tensor:
        """``load_audio`` at the model's rate, also rejecting audio too short to give one encoder frame."""
        wav = load_audio(path, self.sample_rate)
        problem = self._unusable(wav)
        if problem:
            raise AudioError(path, problem)
        return wav

    def _transcribe_group(self, paths: list[str], timestamps: bool) -> list[FileTranscription]:
        """One batch: load each file, transcribe the loadable ones together, report the others."""
        loaded: list[Tensor | AudioError] = []
        for path in paths:
            try:
                loaded.append(self._load(path))
            except AudioError as err:
                loaded.append(err)
        wavs = [wav for wav in loaded if isinstance(wav, Tensor)]
        if wavs:
            log_probs, frame_lens = self._forward(wavs)
            frame_ids = iter(log_probs.argmax(-1).cpu())
            frame_counts = iter(frame_lens.tolist())
        return [
            FileTranscription(path, error=wav.reason)
            if isinstance(wav, AudioError)
            else self._result(path, next(frame_ids)[: next(frame_counts)], wav.shape[0], timestamps)
            for path, wav in zip(paths, loaded)
        ]

    def _unusable(self, wav: Tensor) -> str | None:
        """Why the model cannot take this waveform (not 1-D, or too short for one frame), or None."""
        if wav.ndim != 1:
            return f"expected a 1-D waveform, got shape {tuple(wav.shape)}"
        if self.geometry.frames(wav.shape[0]) < 1:
            return self._too_short(wav.shape[0])
        return None

    def _too_short(self, samples: int) -> str:
        return f"too short: {samples} samples give no encoder frame"
