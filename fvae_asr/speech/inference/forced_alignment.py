"""Phone boundaries from a known phone sequence: CTC forced alignment of a recogniser's log-probabilities with
``torchaudio.functional.forced_align`` (the best path through the CTC lattice that spells exactly those phones).

Rule: forced alignment gives each phone a run of frames, with blanks between; a phone starts at its run's first
frame and ends where the next phone starts (a CTC model marks a phone with a spike, so the frames up to the next
phone's onset are taken to be still that phone); the last phone ends one frame after its run. Frame ``t`` starts
at ``t * seconds_per_frame``. Greedy transcription's segments, by contrast, are the spikes alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torchaudio.functional as taf
from torch import Tensor

from fvae_asr.audio import AudioError, AudioReader
from fvae_asr.speech.inference.ctc_segments import PhoneSegment
from fvae_asr.speech.inference.transcriber import FileTranscription, Transcriber


class AlignmentError(ValueError):
    """This file cannot be aligned to its phones (unknown phones, or more phones than the model has frames)."""


def align_log_probs(
    log_probs: Tensor, phones: Sequence[str], labels: Sequence[str], blank_index: int, seconds_per_frame: float
) -> list[PhoneSegment]:
    """Each of ``phones`` with its start and end time, from (T, V) CTC log-probabilities.

    Args:
        log_probs: the model's per-frame log-probabilities over ``labels``.
        phones: the known phone sequence, in the model's inventory.
        labels: the model's labels, by index.
        blank_index: the CTC blank's index.
        seconds_per_frame: the encoder's hop in seconds.
    """
    index = {label: i for i, label in enumerate(labels) if i != blank_index}
    unknown = sorted({phone for phone in phones if phone not in index})
    if unknown:
        raise AlignmentError(f"phones outside the model's inventory: {' '.join(unknown)}")
    if not phones:
        raise AlignmentError("no phones to align")
    targets = torch.tensor([index[phone] for phone in phones], dtype=torch.int32)
    repeats = int((targets[1:] == targets[:-1]).sum())  # CTC needs a blank between two equal phones
    frames = log_probs.shape[0]
    if len(phones) + repeats > frames:
        raise AlignmentError(
            f"{len(phones)} phones ({repeats} repeated) need at least {len(phones) + repeats} "
            f"frames; the audio gives {frames}"
        )
    path, scores = taf.forced_align(log_probs[None].float(), targets[None], blank=blank_index)
    spans = taf.merge_tokens(path[0], scores[0].exp(), blank=blank_index)
    onsets = [span.start for span in spans]
    ends = [*onsets[1:], spans[-1].end]
    return [
        PhoneSegment(phone, start * seconds_per_frame, end * seconds_per_frame)
        for phone, start, end in zip(phones, onsets, ends, strict=True)
    ]


def align_file(transcriber: Transcriber, path: str | Path, phones: Sequence[str]) -> FileTranscription:
    """A file's phones with their forced-aligned times (chunked like transcription for long files); an
    unreadable file or one that cannot be aligned gives a result with its ``error``."""
    try:
        log_probs = torch.cat(list(transcriber.frame_log_probs(path)))
        segments = align_log_probs(
            log_probs, phones, transcriber.labels, transcriber.blank_index, transcriber.seconds_per_frame
        )
        with AudioReader(path, transcriber.sample_rate) as reader:
            duration = reader.duration
    except (AudioError, AlignmentError) as err:
        return FileTranscription(str(path), error=str(err))
    return FileTranscription(str(path), phones=list(phones), duration=duration, segments=segments)
