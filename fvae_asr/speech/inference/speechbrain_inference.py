"""An exported recogniser through SpeechBrain's own inference interface: ``EncoderASR.from_hparams(source=export)``.

``export_model`` writes ``hyperparams.yaml`` (what ``EncoderASR`` reads) and ``encoder.ckpt`` (the file
SpeechBrain's ``Pretrainer`` fetches for the ``encoder`` module) into each CTC export. The yaml builds the classes
below; at load, ``ExportedRecognizer`` finds the export folder through that fetched file and loads it with
``load_recognizer``, which checks every field and weight as for ``fvae-asr transcribe``. Phones come out
space-separated, decoded greedily over each utterance's own frames, as ``fvae-asr transcribe`` decodes them.

Only local folders load this way: SpeechBrain fetches single files, and the encoder needs the whole export; with
its default ``local_strategy`` (symlinks) or ``NO_LINK`` the fetched file leads back to the folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
from speechbrain.utils.checkpoints import mark_as_transfer, register_checkpoint_hooks
from torch import Tensor, nn

from fvae_asr.files import read_json
from fvae_asr.speech.models.export import SPEECHBRAIN_POINTER, SPEECHBRAIN_POINTERS, description_path, load_recognizer
from fvae_asr.speech.models.recognizer import CTCRecognizer, greedy_decode


@register_checkpoint_hooks
class ExportedRecognizer(nn.Module):
    """The ``encoder`` module of an export's ``hyperparams.yaml``: empty until SpeechBrain's ``Pretrainer`` hands it
    the export's ``encoder.ckpt``; then wavs (B, S) and relative lengths (B,) -> (CTC log-probs, frame counts)."""

    def __init__(self) -> None:
        super().__init__()
        self.recognizer: CTCRecognizer | None = None
        self.labels: list[str] = []
        self.blank_index = 0

    @mark_as_transfer
    def load_export(self, path: str | Path) -> None:
        """Load the export that ``path`` (its ``encoder.ckpt``, or a link to it) belongs to."""
        pointer = Path(path).resolve()
        if read_json(pointer, "export pointer") not in SPEECHBRAIN_POINTERS:  # this version's, or one before 0.3
            raise ValueError(f"{pointer}: not an fvae-asr export pointer (expected {SPEECHBRAIN_POINTER})")
        if not description_path(pointer.parent).is_file():
            raise FileNotFoundError(
                f"{pointer}: the rest of the export is not beside it (SpeechBrain copied this file alone): load a "
                "local export folder with from_hparams' default local_strategy (symlinks) or LocalStrategy.NO_LINK"
            )
        self.recognizer, description = load_recognizer(pointer.parent)
        self.labels, self.blank_index = description["labels"], description["blank_index"]

    def forward(self, wavs: Tensor, wav_lens: Tensor) -> tuple[Tensor, Tensor]:
        if self.recognizer is None:
            raise RuntimeError("ExportedRecognizer holds no model yet: build it with EncoderASR.from_hparams")
        return self.recognizer(wavs, wav_lens)


class ExportTokenizer:
    """The ``tokenizer`` of an export's ``hyperparams.yaml``: label ids -> space-separated phones, with the labels
    of the export the encoder loaded (one source of truth)."""

    def __init__(self, encoder: ExportedRecognizer) -> None:
        self.encoder = encoder

    def decode_ids(self, ids: list[int]) -> str:
        return " ".join(self.encoder.labels[i] for i in ids)


def greedy_ctc(encoder_out: tuple[Tensor, Tensor], wav_lens: Tensor, encoder: ExportedRecognizer) -> list[list[int]]:
    """The ``decoding_function`` of an export's ``hyperparams.yaml``: best-path CTC over each utterance's own frame
    count (from the encoder, rather than from ``wav_lens``, which can round one frame off), as ``fvae-asr
    transcribe`` decodes."""
    del wav_lens
    log_probs, frame_lens = encoder_out
    with torch.no_grad():
        return greedy_decode(log_probs, frame_lens, encoder.blank_index)
