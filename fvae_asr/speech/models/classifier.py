"""An utterance classifier: wav2vec2 hidden states averaged over the real (non-padded) frames, then a linear head.

It has the ``encoder`` and ``head`` attributes of the CTC recogniser, so ``configure_training`` sets what trains
(adapters + head, everything but the CNN, or the head only) the same way for both.
"""

from __future__ import annotations

from torch import Tensor, nn

from fvae_asr.speech.models.encoder import SSLEncoder


def masked_mean_pool(hidden: Tensor, frame_mask: Tensor) -> Tensor:
    """(B, T, C) hidden states and a (B, T) bool mask of real frames -> (B, C) means over each row's real frames."""
    weights = frame_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class PooledClassifier(nn.Module):
    """wavs (B, S), relative lengths (B,) -> class logits (B, K) in float32."""

    def __init__(self, encoder: SSLEncoder, n_classes: int, head_dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(encoder.output_size, n_classes)

    def pooled(self, wavs: Tensor, wav_lens: Tensor) -> Tensor:
        """The (B, C) utterance embeddings the head reads."""
        hidden, frame_mask = self.encoder(wavs, wav_lens)
        return masked_mean_pool(hidden, frame_mask)

    def forward(self, wavs: Tensor, wav_lens: Tensor) -> Tensor:
        return self.head(self.dropout(self.pooled(wavs, wav_lens))).float()
