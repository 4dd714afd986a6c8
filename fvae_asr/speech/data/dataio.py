"""SpeechBrain data pipelines: manifests -> datasets yielding audio, phone labels and their CTC targets."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import speechbrain as sb
import torch
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.encoder import DEFAULT_BLANK, CTCTextEncoder

from fvae_asr.audio import load_audio


def phone_encoder(path: str | Path, phones: list[str]) -> CTCTextEncoder:
    """The CTC labels of a phone inventory, written to ``path`` once and reloaded (DDP-safe).

    The order depends on the inventory alone, as SpeechBrain builds it from the sorted phones: the blank at index
    0 and the phones in sorted order, except the first, which the blank's insertion moves to the end. A file
    that lists other labels (left by an earlier run) is an error naming it.
    """
    encoder = CTCTextEncoder()
    encoder.load_or_create(
        path=str(path), from_iterables=[[sorted(phones)]], sequence_input=True, special_labels={"blank_label": 0}
    )
    encoder.expect_len(len(set(phones)) + 1)  # SpeechBrain's own size check, which also ends its warning
    expected = {*phones, DEFAULT_BLANK}
    if set(encoder.lab2ind) != expected or encoder.lab2ind[DEFAULT_BLANK] != 0:
        extra, missing = sorted(set(encoder.lab2ind) - expected), sorted(expected - set(encoder.lab2ind))
        raise ValueError(
            f"{path}: lists other labels than this run's phone inventory (extra: {' '.join(extra) or '-'}; missing: "
            f"{' '.join(missing) or '-'}); it belongs to another run: pass --restart=True or choose another "
            "output_folder"
        )
    return encoder


def labels_of(encoder: CTCTextEncoder) -> list[str]:
    """Index -> label list, as stored with exported recognisers."""
    return [encoder.ind2lab[i] for i in range(len(encoder))]


SORTINGS = ("ascending", "descending", "random")


def dataio_prepare(
    splits: Mapping[str, Mapping[str, dict]], encoder: CTCTextEncoder, train_sorting: str = "ascending"
) -> dict[str, DynamicItemDataset]:
    """Datasets with ``sig``, ``phn_list``, ``phn_encoded`` from each split's entries (id -> ``wav``,
    ``duration``, ``phn``, as ``annotations.read_annotation`` gives them); eval splits sorted by duration (less
    padding). Audio of any sample rate and channel count is downmixed and resampled to the models' 16 kHz.

    ``train_sorting`` is ``ascending``/``descending`` by duration, or ``random`` (then shuffle in the loader).
    """
    if train_sorting not in SORTINGS:
        raise ValueError(f"train_sorting must be one of {SORTINGS}, got {train_sorting!r}")
    datasets = {split: DynamicItemDataset(dict(entries)) for split, entries in splits.items()}
    for split, dataset in datasets.items():
        if split != "train" or train_sorting != "random":
            reverse = split == "train" and train_sorting == "descending"
            datasets[split] = dataset.filtered_sorted(sort_key="duration", reverse=reverse)

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav: str) -> torch.Tensor:
        return load_audio(wav)

    @sb.utils.data_pipeline.takes("phn")
    @sb.utils.data_pipeline.provides("phn_list", "phn_encoded")
    def label_pipeline(phn: str):
        phones = phn.split()
        yield phones
        yield torch.LongTensor(encoder.encode_sequence(phones))

    sb.dataio.dataset.add_dynamic_item(list(datasets.values()), audio_pipeline)
    sb.dataio.dataset.add_dynamic_item(list(datasets.values()), label_pipeline)
    sb.dataio.dataset.set_output_keys(list(datasets.values()), ["id", "sig", "phn_list", "phn_encoded"])
    return datasets
