"""Chunked inference over long recordings: where each chunk of audio starts and stops, and which of its encoder
frames are kept, so that the kept frames of all chunks are the file's frames, each exactly once, in order.

Rule: the file's frames are cut into runs of ``chunk_frames``; a chunk's input is its run plus ``context_frames``
either side (fewer at the file's ends) plus, on the right, the samples the convolutions need to compute its last
frame. Frame ``g`` of the file is then frame ``g - first_frame`` of its chunk, computed from the same samples: a
model whose output at a frame depends on no more than ``context_frames`` frames either side gives exactly the
whole-file frames; wav2vec2's transformer attends to the whole input, so there chunking only approximates it
(and so does the group-normalised first convolution of wav2vec2-base, which normalises over the whole input).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

_PROBE_SAMPLES = 1 << 16  # wav2vec2's convolutions span 400 samples with a 320-sample stride: far below this


@dataclass(frozen=True)
class FrameGeometry:
    """Where an encoder's frames lie in its input: frame ``t`` is computed from samples ``[t * hop, t * hop +
    receptive_field)``, so an input of ``n`` samples gives ``(n - receptive_field) // hop + 1`` frames."""

    hop: int
    receptive_field: int

    @classmethod
    def from_frame_lengths(cls, frame_lengths: Callable[[Tensor], Tensor]) -> FrameGeometry:
        """Read hop and receptive field off an encoder's sample-count -> frame-count function (a stack of
        strided convolutions); anything that does not follow that rule is an error rather than wrong times."""
        samples = torch.arange(1, _PROBE_SAMPLES + 1)
        frames = frame_lengths(samples)
        firsts = [int(torch.searchsorted(frames, count).item()) + 1 for count in (1, 2)]  # first n giving 1, 2
        if firsts[1] > _PROBE_SAMPLES:
            raise ValueError(f"the encoder gives fewer than 2 frames for {_PROBE_SAMPLES} samples")
        geometry = cls(hop=firsts[1] - firsts[0], receptive_field=firsts[0])
        if not torch.equal(frames.clamp(min=0), geometry.frames(samples)):
            raise ValueError("the encoder's frame counts do not follow a strided convolution's rule")
        return geometry

    def frames(self, samples: Tensor | int) -> Tensor | int:
        """Frames computed from ``samples`` input samples (0 when too short for one)."""
        if isinstance(samples, Tensor):
            return ((samples - self.receptive_field).div(self.hop, rounding_mode="floor") + 1).clamp(min=0)
        return max(0, (samples - self.receptive_field) // self.hop + 1)


@dataclass(frozen=True)
class Chunk:
    """Samples ``[start, stop)`` of the file go into the model; its frames ``[keep_from, keep_to)`` are kept and
    are the file's frames ``first_frame + keep_from ...``."""

    start: int
    stop: int
    first_frame: int
    keep_from: int
    keep_to: int


def plan_chunks(samples: int, geometry: FrameGeometry, chunk_frames: int, context_frames: int) -> list[Chunk]:
    """The chunks covering a file of ``samples`` samples (one chunk when it has at most ``chunk_frames`` frames)."""
    if chunk_frames < 1 or context_frames < 0:
        raise ValueError(f"need chunk_frames >= 1 and context_frames >= 0, got {chunk_frames}, {context_frames}")
    total = geometry.frames(samples)
    chunks = []
    for keep_start in range(0, total, chunk_frames):
        keep_stop = min(total, keep_start + chunk_frames)
        first = max(0, keep_start - context_frames)
        last = min(total, keep_stop + context_frames)  # exclusive
        stop = min(samples, (last - 1) * geometry.hop + geometry.receptive_field)
        chunks.append(Chunk(first * geometry.hop, stop, first, keep_start - first, keep_stop - first))
    return chunks


def frames_for(seconds: float, sample_rate: int, geometry: FrameGeometry, round_up: bool = False) -> int:
    """A duration as a whole number of frames (nearest, or rounded up)."""
    exact = seconds * sample_rate / geometry.hop
    return math.ceil(exact - 1e-9) if round_up else round(exact)
