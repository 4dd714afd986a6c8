"""Phone boundaries from a known phone sequence: CTC forced alignment of a recogniser's log-probabilities with
``torchaudio.functional.forced_align`` (the best path through the CTC lattice that spells exactly those phones).

Rule: forced alignment gives each phone a run of frames, with blanks between; a phone starts at its run's first
frame and ends where the next phone starts (a CTC model marks a phone with a spike, so the frames up to the next
phone's onset are taken to be still that phone); the last phone ends one frame after its run. Frame ``t`` starts
at ``t * seconds_per_frame``. Greedy transcription's segments, by contrast, are the spikes alone.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as taf
from torch import Tensor

from fvae_asr.audio import AudioError, AudioReader
from fvae_asr.speech.inference.ctc_segments import PhoneSegment
from fvae_asr.speech.inference.transcriber import FileTranscription, Transcriber


class AlignmentError(ValueError):
    """This file cannot be aligned to its phones (unknown phones, or more phones than the model has frames)."""


def align_log_probs(
    log_probs: Tensor,
    phones: Sequence[str],
    labels: Sequence[str],
    blank_index: int,
    seconds_per_frame: float,
    window_frames: int | None = None,
) -> list[PhoneSegment]:
    """Each of ``phones`` with its start and end time, from (T, V) CTC log-probabilities.

    Args:
        log_probs: the model's per-frame log-probabilities over ``labels``.
        phones: the known phone sequence, in the model's inventory.
        labels: the model's labels, by index.
        blank_index: the CTC blank's index.
        seconds_per_frame: the encoder's hop in seconds.
        window_frames: when there are more than twice as many frames, find the same best path in blocks of this
            many frames (``_blockwise_onsets``: memory of phones x blocks, not phones x frames); None aligns the
            whole sequence with torchaudio at once, in memory of frames x phones.
    """
    index = {label: i for i, label in enumerate(labels) if i != blank_index}
    unknown = sorted({phone for phone in phones if phone not in index})
    if unknown:
        raise AlignmentError(f"phones outside the model's inventory: {' '.join(unknown)}")
    if not phones:
        raise AlignmentError("no phones to align")
    targets = torch.tensor([index[phone] for phone in phones], dtype=torch.int32)
    frames = log_probs.shape[0]
    needed = _frames_needed(targets)
    if needed > frames:
        raise AlignmentError(
            f"{len(phones)} phones ({needed - len(phones)} repeated) need at least {needed} "
            f"frames; the audio gives {frames}"
        )
    if window_frames is None or frames <= 2 * window_frames:
        onsets, last_end = _onsets(log_probs.float(), targets, blank_index)
    else:
        _check_memory(frames, len(targets), window_frames)
        onsets, last_end = _blockwise_onsets(log_probs.float(), targets, blank_index, window_frames)
    ends = [*onsets[1:], last_end]
    return [
        PhoneSegment(phone, start * seconds_per_frame, end * seconds_per_frame)
        for phone, start, end in zip(phones, onsets, ends, strict=True)
    ]


def _frames_needed(targets: Tensor) -> int:
    """CTC's minimum frame count: one per phone, one more (a blank) between two equal phones."""
    return len(targets) + int((targets[1:] == targets[:-1]).sum())


def _onsets(log_probs: Tensor, targets: Tensor, blank_index: int) -> tuple[list[int], int]:
    """torchaudio's forced alignment: each phone's first frame, and the frame after the last phone's run."""
    path, scores = taf.forced_align(log_probs[None], targets[None], blank=blank_index)
    spans = taf.merge_tokens(path[0], scores[0].exp(), blank=blank_index)
    return [span.start for span in spans], spans[-1].end


def _check_memory(frames: int, phones: int, block: int) -> None:
    """Refuse, in one line, a block-wise alignment whose path scores and back-pointers would not fit in the memory
    free now (``_blockwise_onsets``: 4 bytes per state at each block's end, 1 per state and frame of one block)."""
    states = 2 * phones + 1
    needed = states * (4 * (math.ceil(frames / block) + 1) + block)
    free = free_memory()
    if needed > free:
        raise AlignmentError(
            f"aligning {phones} phones over {frames} frames needs about {needed / 2**20:.0f} MiB, more than the "
            f"{free / 2**20:.0f} MiB free: split the file (and its phones) into shorter ones"
        )


def free_memory() -> int:
    """Bytes of memory free now (Linux and macOS report it; elsewhere no limit is known)."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return sys.maxsize


def _blockwise_onsets(log_probs: Tensor, targets: Tensor, blank_index: int, block: int) -> tuple[list[int], int]:
    """The best CTC path through all the frames (what ``taf.forced_align`` finds) in memory bounded by blocks of
    ``block`` frames (the transcription's chunks) instead of frames x states: a forward pass keeps the path scores
    at each block's end; then each block, from the last, is run again keeping its back-pointers, and traced back.
    Memory: states x (frames / block) scores and states x block back-pointers (1 byte); time: two forward passes.
    """
    frames = log_probs.shape[0]
    emissions = log_probs.numpy()
    states = np.full(2 * len(targets) + 1, blank_index)
    states[1::2] = targets.numpy()  # even states are blanks, odd ones the phones in order
    skip = np.full(len(states) - 2, -np.inf, dtype=np.float32)  # 0 where a phone follows the phone two states back
    skip[1::2][targets[1:].numpy() != targets[:-1].numpy()] = 0.0
    before = np.full(len(states), -np.inf, dtype=np.float32)
    before[0] = 0.0  # a blank before the first frame: the path starts in the first blank or the first phone
    checkpoints = [before]  # path scores before each block's first frame
    for first in range(0, frames, block):
        checkpoints.append(_viterbi_block(checkpoints[-1], emissions[first : first + block], states, skip)[0])
    final = checkpoints.pop()
    state = len(states) - 1 if final[-1] >= final[-2] else len(states) - 2  # ends in the last phone or blank
    path = np.empty(frames, dtype=np.int64)
    for first in reversed(range(0, frames, block)):
        pointers = _viterbi_block(checkpoints.pop(), emissions[first : first + block], states, skip, keep=True)[1]
        for t in range(len(pointers) - 1, -1, -1):
            path[first + t] = state
            state -= int(pointers[t, state])
    entered = np.ones(frames, dtype=bool)
    entered[1:] = path[1:] != path[:-1]
    onsets = np.flatnonzero(entered & (path % 2 == 1)).tolist()
    return onsets, int(np.flatnonzero(path == len(states) - 2)[-1]) + 1


def _viterbi_block(
    scores: np.ndarray, emissions: np.ndarray, states: np.ndarray, skip: np.ndarray, keep: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """The CTC path scores after a block's frames, from those before it; with ``keep``, each frame's
    back-pointers (how many states back the best predecessor lies: 0, 1 or 2)."""
    candidates = np.full((3, len(states)), -np.inf, dtype=np.float32)
    pointers = np.empty((len(emissions), len(states)), dtype=np.int8) if keep else None
    for t in range(len(emissions)):
        candidates[0] = scores
        candidates[1, 1:] = scores[:-1]
        np.add(scores[:-2], skip, out=candidates[2, 2:])
        if keep:
            pointers[t] = candidates.argmax(0)
        scores = candidates.max(0) + emissions[t, states]
    return scores, pointers


def align_file(transcriber: Transcriber, path: str | Path, phones: Sequence[str]) -> FileTranscription:
    """A file's phones with their forced-aligned times; an unreadable file or one that cannot be aligned gives a
    result with its ``error``. A long file is read and recognised chunk by chunk (the transcriber's chunks) and
    aligned in windows of two chunks (``align_log_probs``), so memory stays bounded whatever its length."""
    try:
        log_probs = torch.cat(list(transcriber.frame_log_probs(path)))
        segments = align_log_probs(
            log_probs,
            phones,
            transcriber.labels,
            transcriber.blank_index,
            transcriber.seconds_per_frame,
            window_frames=transcriber.chunk_frames,
        )
        with AudioReader(path, transcriber.sample_rate) as reader:
            duration = reader.duration
    except (AudioError, AlignmentError) as err:
        return FileTranscription(str(path), error=str(err))
    return FileTranscription(str(path), phones=list(phones), duration=duration, segments=segments)
