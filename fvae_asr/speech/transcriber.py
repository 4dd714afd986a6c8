"""Phone transcription with an exported recogniser: audio files of any format/rate/channel count in, phones out.

``Transcriber`` batches waveforms (padded with SpeechBrain, relative lengths) and greedy-decodes the CTC output;
``transcribe_files`` reports unreadable files one by one instead of stopping at the first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from speechbrain.utils.data_utils import batch_pad_right
from torch import Tensor

from fvae_asr.audio import AudioError, header_duration, load_audio
from fvae_asr.speech.export import load_recognizer
from fvae_asr.speech.recognizer import greedy_decode


@dataclass(frozen=True)
class FileTranscription:
    """One file's outcome: its phones, or the reason it could not be transcribed."""

    path: str
    phones: list[str] | None = None
    error: str | None = None


class Transcriber:
    """An exported recogniser (see ``export_recognizer``) ready for batched greedy phone transcription."""

    def __init__(self, checkpoint: str | Path, device: str | torch.device = "cpu", batch_size: int = 8) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model, self.description = load_recognizer(checkpoint, device)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.labels: list[str] = self.description["labels"]
        self.blank_index: int = self.description["blank_index"]
        self.phones = frozenset(self.labels) - {self.labels[self.blank_index]}  # what it can recognise
        self.sample_rate: int = self.description["sample_rate"]

    def transcribe_batch(self, waveforms: list[Tensor]) -> list[list[str]]:
        """Phones of each 1-D waveform (at ``sample_rate``), computed in one padded forward pass."""
        for index, wav in enumerate(waveforms):
            problem = self._unusable(wav)
            if problem:
                raise ValueError(f"waveform {index}: {problem}")
        if not waveforms:
            return []
        wavs, wav_lens = batch_pad_right([wav.to(torch.float32) for wav in waveforms])
        with torch.inference_mode():
            log_probs, frame_lens = self.model(wavs.to(self.device), wav_lens.to(self.device))
        return [[self.labels[i] for i in ids] for ids in greedy_decode(log_probs, frame_lens, self.blank_index)]

    def transcribe_files(self, paths: Iterable[str | Path]) -> list[FileTranscription]:
        """Transcribe files in batches of similar duration; results in input order, failures reported per file."""
        paths = [str(path) for path in paths]
        order = sorted(range(len(paths)), key=lambda i: header_duration(paths[i]))
        results: dict[int, FileTranscription] = {}
        for start in range(0, len(order), self.batch_size):
            group = order[start : start + self.batch_size]
            results.update(zip(group, self._transcribe_group([paths[i] for i in group])))
        return [results[i] for i in range(len(paths))]

    def _load(self, path: str | Path) -> Tensor:
        """``load_audio`` at the model's rate, also rejecting audio too short to give one encoder frame."""
        wav = load_audio(path, self.sample_rate)
        problem = self._unusable(wav)
        if problem:
            raise AudioError(path, problem)
        return wav

    def _transcribe_group(self, paths: list[str]) -> list[FileTranscription]:
        """One batch: load each file, transcribe the loadable ones together, report the others."""
        loaded: list[Tensor | AudioError] = []
        for path in paths:
            try:
                loaded.append(self._load(path))
            except AudioError as err:
                loaded.append(err)
        phones = iter(self.transcribe_batch([wav for wav in loaded if isinstance(wav, Tensor)]))
        return [
            FileTranscription(path, error=wav.reason)
            if isinstance(wav, AudioError)
            else FileTranscription(path, phones=next(phones))
            for path, wav in zip(paths, loaded)
        ]

    def _unusable(self, wav: Tensor) -> str | None:
        """Why the model cannot take this waveform (not 1-D, or too short for one frame), or None."""
        if wav.ndim != 1:
            return f"expected a 1-D waveform, got shape {tuple(wav.shape)}"
        if self.model.encoder.frame_lengths(torch.tensor(wav.shape[0])) < 1:
            return f"too short: {wav.shape[0]} samples give no encoder frame"
        return None

