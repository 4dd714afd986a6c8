"""Linear probes: how well a multinomial logistic regression reads a label off features, against chance.

Held-out sets are whole groups (speakers, utterances) so that a probe is never tested on frames of a group it
was trained on: neighbouring frames are near copies of each other, and frame-level splits would leak.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

UNLABELED = -1  # a frame without a label (e.g. no phone segment covers it): in no probe's data


@dataclass(frozen=True)
class ProbeSettings:
    """Full-batch LBFGS on standardised features from zero weights (deterministic: no random start)."""

    l2: float = 1e-3  # on the weights (not the biases), added to the mean cross-entropy
    max_iter: int = 200
    held_out_fraction: float = 0.25
    seed: int = 0  # of the held-out choice


def held_out_groups(groups: Sequence[str], fraction: float, seed: int, strata: Sequence[str] | None = None) -> set[str]:
    """The groups to hold out: ``fraction`` of them (at least one, never all), chosen with ``seed``.

    With ``strata`` (one per group, e.g. the speaker of each utterance) the choice is made within each stratum
    that has two groups or more, so that every stratum is seen in training (a speaker probe must know the voice).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"held-out fraction must be between 0 and 1, got {fraction}")
    by_stratum: dict[str, list[str]] = {}
    for index, group in enumerate(groups):
        stratum = strata[index] if strata is not None else ""
        if group not in by_stratum.setdefault(stratum, []):
            by_stratum[stratum].append(group)
    rng = random.Random(seed)
    held_out: set[str] = set()
    for stratum in sorted(by_stratum):
        members = sorted(by_stratum[stratum])
        if len(members) < 2:
            continue
        count = min(len(members) - 1, max(1, round(fraction * len(members))))
        held_out.update(rng.sample(members, count))
    if not held_out:
        raise ValueError("too few groups to hold any out: a probe needs at least two speakers (or utterances)")
    return held_out


def majority_rate(labels: Tensor) -> float:
    """Chance level: the accuracy of always answering the most frequent label of ``labels``."""
    return Counter(labels.tolist()).most_common(1)[0][1] / len(labels)


def probe_accuracy(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, settings: ProbeSettings) -> float:
    """Held-out accuracy of a multinomial logistic regression trained on (train_x, train_y).

    Features are standardised with the training set's statistics; labels are class indices (held-out classes
    never seen in training count as errors).
    """
    mean, std = train_x.mean(0), train_x.std(0, correction=0).clamp_min(1e-6)
    train, test = ((x.double() - mean) / std for x in (train_x, test_x))
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    weight = torch.zeros(train.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=settings.max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(train @ weight + bias, train_y) + settings.l2 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return ((test @ weight + bias).argmax(1) == test_y).double().mean().item()


@dataclass(frozen=True)
class ProbeTask:
    """One label to probe for: a class index per frame (``UNLABELLED`` where none) and which frames are held out."""

    name: str
    classes: list[str]  # label index -> name
    labels: Tensor  # (frames,) long
    held_out: Tensor  # (frames,) bool
    split: str  # what is held out, in words (e.g. "speakers")

    def __post_init__(self) -> None:
        labeled = self.labels != UNLABELED
        for part, frames in (("training", labeled & ~self.held_out), ("held-out", labeled & self.held_out)):
            if not frames.any():
                raise ValueError(f"probe '{self.name}': no labelled {part} frames")

    def summary(self) -> dict:
        """Sizes and chance level of this task."""
        labeled = self.labels != UNLABELED
        test_y = self.labels[labeled & self.held_out]
        return {
            "held_out": self.split,
            "train_frames": int((labeled & ~self.held_out).sum()),
            "held_out_frames": len(test_y),
            "classes": len(set(self.labels[labeled].tolist())),
            "chance": majority_rate(test_y),
        }

    def accuracy(self, features: Tensor, settings: ProbeSettings) -> float:
        """Held-out accuracy of a probe on ``features`` (frames, dim)."""
        labeled = self.labels != UNLABELED
        train, test = labeled & ~self.held_out, labeled & self.held_out
        return probe_accuracy(features[train], self.labels[train], features[test], self.labels[test], settings)
