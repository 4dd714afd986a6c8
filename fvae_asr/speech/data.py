"""SpeechBrain data pipelines: manifests -> datasets yielding audio, phone labels and their CTC targets."""

from __future__ import annotations

from pathlib import Path

import speechbrain as sb
import torch
from speechbrain.dataio.dataio import read_audio
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.encoder import CTCTextEncoder

from fvae_asr.speech.timit import PHONES_39, PHONES_61


def phone_encoder(path: str | Path, phn_set: int) -> CTCTextEncoder:
    """The phone inventory with the CTC blank at index 0, created once and reloaded (DDP-safe)."""
    encoder = CTCTextEncoder()
    phones = PHONES_39 if phn_set == 39 else PHONES_61
    encoder.load_or_create(
        path=str(path), from_iterables=[[phones]], sequence_input=True, special_labels={"blank_label": 0}
    )
    encoder.expect_len(len(phones) + 1)
    return encoder


def labels_of(encoder: CTCTextEncoder) -> list[str]:
    """Index -> label list, as stored with exported recognisers."""
    return [encoder.ind2lab[i] for i in range(len(encoder))]


SORTINGS = ("ascending", "descending", "random")


def dataio_prepare(
    manifests: dict[str, str | Path], encoder: CTCTextEncoder, train_sorting: str = "ascending"
) -> dict[str, DynamicItemDataset]:
    """Datasets with ``sig``, ``phn_list``, ``phn_encoded``; eval splits sorted by duration (less padding).

    ``train_sorting`` is ``ascending``/``descending`` by duration, or ``random`` (then shuffle in the loader).
    """
    if train_sorting not in SORTINGS:
        raise ValueError(f"train_sorting must be one of {SORTINGS}, got {train_sorting!r}")
    datasets = {split: DynamicItemDataset.from_json(json_path=str(path)) for split, path in manifests.items()}
    for split, dataset in datasets.items():
        if split != "train" or train_sorting != "random":
            reverse = split == "train" and train_sorting == "descending"
            datasets[split] = dataset.filtered_sorted(sort_key="duration", reverse=reverse)

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav: str) -> torch.Tensor:
        return read_audio(wav)

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
