"""A CTC phone recogniser: a wav2vec2-family encoder + linear head, its head started from a CTC checkpoint, and
greedy decoding."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from speechbrain.decoders.ctc import ctc_greedy_decode
from torch import Tensor, nn
from transformers import AutoModelForCTC
from transformers.utils import cached_file

from fvae_asr.files import read_json
from fvae_asr.speech.models.encoder import SSLEncoder, check_local_family, quiet_hf_loading

HEAD_NAME = "head"


class CTCRecognizer(nn.Module):
    """wavs (B, S), relative lengths (B,) -> CTC log-probabilities (B, T, V) in float32 and frame counts (B,)."""

    def __init__(self, encoder: SSLEncoder, n_tokens: int, head_dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(encoder.output_size, n_tokens)

    def forward(self, wavs: Tensor, wav_lens: Tensor) -> tuple[Tensor, Tensor]:
        hidden, frame_mask = self.encoder(wavs, wav_lens)
        logits = self.head(self.dropout(hidden))
        return logits.float().log_softmax(-1), frame_mask.sum(-1)


def init_head_from_checkpoint(
    model: CTCRecognizer, source: str | Path, labels: Sequence[str], blank_index: int = 0
) -> list[str]:
    """Start the head from the CTC head (``lm_head``) of a CTC checkpoint (``Wav2Vec2ForCTC``, ``HubertForCTC``,
    ``WavLMForCTC``, ...), row by row for the labels its ``vocab.json`` shares with ``labels``; its pad token is
    the CTC blank, as in Hugging Face.

    Adapting a recogniser to a new domain then starts from what it already knows instead of a random head.
    Returns the labels initialised (the others keep their fresh initialisation).
    """
    check_local_family(source)
    with quiet_hf_loading():
        ctc, info = AutoModelForCTC.from_pretrained(str(source), output_loading_info=True, trust_remote_code=False)
    if {"lm_head.weight", "lm_head.bias"} & set(info["missing_keys"]):
        raise ValueError(f"{source}: the checkpoint has no CTC head (lm_head) to start the head from")
    vocab_file = cached_file(str(source), "vocab.json", _raise_exceptions_for_missing_entries=False)
    if vocab_file is None:
        raise ValueError(f"{source}: no vocab.json naming the rows of its CTC head")
    vocab = read_json(Path(vocab_file), "vocab")
    weight, bias = ctc.lm_head.weight, ctc.lm_head.bias  # (V_source, C), (V_source,)
    if weight.shape[1] != model.head.in_features:
        raise ValueError(
            f"{source}: CTC head takes {weight.shape[1]} features, the encoder gives {model.head.in_features}"
        )
    rows = {i: ctc.config.pad_token_id if i == blank_index else vocab.get(label) for i, label in enumerate(labels)}
    rows = {i: row for i, row in rows.items() if row is not None and 0 <= row < weight.shape[0]}
    if not any(i != blank_index for i in rows):
        raise ValueError(f"{source}: its vocab.json shares no label with ours ({', '.join(labels[:5])}, ...)")
    with torch.no_grad():
        for i, row in rows.items():
            model.head.weight[i] = weight[row]
            model.head.bias[i] = bias[row]
    return [labels[i] for i in sorted(rows)]


def greedy_decode(log_probs: Tensor, frame_lens: Tensor, blank_index: int) -> list[list[int]]:
    """Best-path CTC decoding (SpeechBrain's) over the real frames of each utterance."""
    return ctc_greedy_decode(log_probs, frame_lens.float() / log_probs.shape[1], blank_id=blank_index)
