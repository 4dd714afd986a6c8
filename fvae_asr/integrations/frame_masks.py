"""The padding masks the FVAE layers take (True on real frames), from a batch as Hugging Face models receive it:
token-level masks of text models, and sample-level masks of wav2vec2-style audio models mapped to encoder frames.
Shared by the Trainer integration and the SpeechBrain one, so neither imports the other."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

MASK_INPUTS = ("input_ids", "inputs_embeds")  # token-level inputs: their attention_mask marks the layers' frames


def token_frame_mask(inputs: dict[str, Any]) -> Tensor | None:
    """The batch's ``attention_mask`` as a bool frame mask when it is over tokens (text models), else None.

    Only token inputs (``input_ids``/``inputs_embeds``) give one mask entry per position the adapted layers see.
    """
    mask = inputs.get("attention_mask")
    if not isinstance(mask, Tensor) or mask.dim() != 2:
        return None
    token_input = next((inputs[k] for k in MASK_INPUTS if isinstance(inputs.get(k), Tensor)), None)
    if token_input is None or tuple(token_input.shape[:2]) != tuple(mask.shape):
        return None
    return mask.bool()


def audio_frame_mask(model: nn.Module, inputs: dict[str, Any]) -> Tensor | None:
    """wav2vec2-style models: the batch's sample-level ``attention_mask`` turned into the encoder's frame mask.

    Uses the model's own ``_get_feature_vector_attention_mask`` (wav2vec2, HuBERT, WavLM, data2vec-audio);
    None when the batch has no mask (checkpoints with group-norm feature extractors are fed none) or the model
    has no such method.
    """
    mask, values = inputs.get("attention_mask"), inputs.get("input_values")
    if not (isinstance(mask, Tensor) and isinstance(values, Tensor)):
        return None
    if not hasattr(model, "_get_feature_vector_attention_mask"):
        return None
    frames = int(model._get_feat_extract_output_lengths(torch.tensor(values.shape[-1]), add_adapter=False))
    return model._get_feature_vector_attention_mask(frames, mask, add_adapter=False).bool()
