"""WavLM self-attention that calls its projections as modules, so that adapters on them take effect.

transformers' ``WavLMAttention`` hands ``q_proj.weight``, ``k_proj.weight``, ... to
``F.multi_head_attention_forward``: an adapter wrapping ``q_proj`` would never be called and the model would
train and run as if it had none. The same computation through ``q_proj(x)``, ``k_proj(x)``, ... fixes that;
the weights and their names stay as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.models.wavlm.modeling_wavlm import WavLMAttention


class WavLMAttentionThroughModules(WavLMAttention):
    """``WavLMAttention`` with ``torch_multi_head_self_attention`` computed from the projection modules' outputs
    (same masking, gated relative position bias, dropout and returned weights as transformers' version)."""

    def torch_multi_head_self_attention(
        self,
        hidden_states: Tensor,
        attention_mask: Tensor | None,
        gated_position_bias: Tensor,
        output_attentions: bool = True,  # passed by transformers 4, which returns the weights only when asked
    ) -> tuple[Tensor, Tensor]:
        del output_attentions  # the weights are computed anyway; returning them costs nothing
        batch, length, _ = hidden_states.shape

        def heads(x: Tensor) -> Tensor:  # (B, T, C) -> (B, H, T, C / H)
            return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

        query = heads(self.q_proj(hidden_states)) * self.scaling
        key, value = heads(self.k_proj(hidden_states)), heads(self.v_proj(hidden_states))
        bias = gated_position_bias.view(batch, self.num_heads, length, length)
        if attention_mask is not None:  # 1 for real frames, as transformers' key_padding_mask = mask.ne(1)
            bias = bias.masked_fill(attention_mask.ne(1)[:, None, None, :], float("-inf"))
        weights = torch.softmax(bias + query @ key.transpose(-1, -2), dim=-1)
        weights = F.dropout(weights, self.dropout, self.training)
        output = (weights @ value).transpose(1, 2).reshape(batch, length, self.embed_dim)
        # transformers returns the head-averaged weights broadcast over the heads
        return self.out_proj(output), weights.mean(1, keepdim=True).expand_as(weights)


def route_wavlm_attention_through_modules(model: nn.Module) -> nn.Module:
    """Make every ``WavLMAttention`` of ``model`` a ``WavLMAttentionThroughModules`` (in place; parameters,
    buffers and names unchanged); other models are returned as they are."""
    for module in model.modules():
        if type(module) is WavLMAttention:
            module.__class__ = WavLMAttentionThroughModules
    return model
