"""The CTC label encoder of a phone inventory, and the training orders the recipe's datasets offer (the recipe's
``dataio_prepare`` builds the datasets)."""

from __future__ import annotations

from pathlib import Path

from speechbrain.dataio.encoder import DEFAULT_BLANK, CTCTextEncoder


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
