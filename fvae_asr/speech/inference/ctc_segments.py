"""Phones with times from CTC frames: the best label of each frame, collapsed as greedy CTC decoding does.

Rule: a phone is a run of frames whose best label is that phone (runs of the same label merge, blanks separate
two phones with the same label); it starts at its first frame and ends one frame after its last, and frame ``t``
starts at ``t * seconds_per_frame`` (the encoder's hop: 320 samples, 20 ms, for wav2vec2 at 16 kHz). Blank frames
belong to no phone. The phone sequence is exactly greedy CTC decoding's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor


class PhoneSegment(NamedTuple):
    """One recognised phone and the times (seconds from the start of the file) it spans."""

    phone: str
    start: float
    end: float


def frame_runs(frame_ids: Tensor, blank_index: int) -> tuple[Tensor, Tensor, Tensor]:
    """Label, first frame and frame after the last of each run of one non-blank label in a (T,) tensor, as three
    (N,) tensors (tensors, not Python lists: an hour of frames stays small)."""
    labels, counts = torch.unique_consecutive(frame_ids, return_counts=True)
    ends = counts.cumsum(0)
    phone = labels != blank_index
    return labels[phone], (ends - counts)[phone], ends[phone]


def phone_segments(
    frame_ids: Tensor, labels: Sequence[str], blank_index: int, seconds_per_frame: float
) -> list[PhoneSegment]:
    """The phones of a (T,) tensor of per-frame best labels, each with its start and end time."""
    ids, starts, ends = frame_runs(frame_ids, blank_index)
    return [
        PhoneSegment(labels[label], start * seconds_per_frame, end * seconds_per_frame)
        for label, start, end in zip(ids.tolist(), starts.tolist(), ends.tolist())
    ]


def greedy_phones(frame_ids: Tensor, labels: Sequence[str], blank_index: int) -> list[str]:
    """The phones alone (greedy CTC decoding of the per-frame best labels)."""
    return [labels[label] for label in frame_runs(frame_ids, blank_index)[0].tolist()]
