"""Tiny randomly initialised backbones (speech, text, image) built from configs: no downloads."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers import BertConfig, BertModel, ViTConfig, ViTModel, Wav2Vec2Config, Wav2Vec2Model

TINY_WAV2VEC2 = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    # 80 samples a frame, 200 frames a second (wav2vec2: 320 and 50): room for CTC's every phone, while attention
    # over a few seconds of audio stays cheap in the end-to-end tests (its cost grows with the frames squared)
    conv_dim=(16, 16, 16),
    conv_stride=(5, 4, 4),
    conv_kernel=(10, 8, 4),
    num_conv_pos_embeddings=8,
    num_conv_pos_embedding_groups=2,
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
    layerdrop=0.0,  # LayerDrop skips layers at random; test_layerdrop_* covers it explicitly
)

_GROUP_NORM = dict(feat_extract_norm="group", do_stable_layer_norm=False)  # the base models' CNN and encoder
# Recipe encoder_config of each wav2vec2-family variant the recipe supports, as tiny as TINY_WAV2VEC2: the
# large-model layout (layer-normalised CNN, stable layer norm: wav2vec2-large-lv60, HuBERT/WavLM large) and the
# base layout (group-normalised CNN: wav2vec2-base, HuBERT base, WavLM base/base+); data2vec-audio has one layout.
TINY_ENCODERS = {
    "wav2vec2": {"model_type": "wav2vec2", **TINY_WAV2VEC2},
    "wav2vec2-base": {"model_type": "wav2vec2", **TINY_WAV2VEC2, **_GROUP_NORM},
    "hubert": {"model_type": "hubert", **TINY_WAV2VEC2},
    "hubert-base": {"model_type": "hubert", **TINY_WAV2VEC2, **_GROUP_NORM},
    "wavlm": {"model_type": "wavlm", **TINY_WAV2VEC2, "num_buckets": 16, "max_bucket_distance": 32},
    "wavlm-base": {"model_type": "wavlm", **TINY_WAV2VEC2, **_GROUP_NORM, "num_buckets": 16, "max_bucket_distance": 32},
    "data2vec-audio": {
        "model_type": "data2vec-audio",
        **{
            k: v
            for k, v in TINY_WAV2VEC2.items()
            if k not in ("feat_extract_norm", "do_stable_layer_norm", "num_conv_pos_embeddings")
        },
        "num_conv_pos_embeddings": 2,
        "conv_pos_kernel_size": 5,
    },
}


def tiny_wav2vec2(seed: int = 0) -> Wav2Vec2Model:
    torch.manual_seed(seed)
    return Wav2Vec2Model(Wav2Vec2Config(**TINY_WAV2VEC2)).eval()


def tiny_bert(seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    return BertModel(cfg, add_pooling_layer=False).eval()


def tiny_vit(seed: int = 0) -> ViTModel:
    torch.manual_seed(seed)
    cfg = ViTConfig(
        image_size=16,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_channels=3,
    )
    return ViTModel(cfg, add_pooling_layer=False).eval()


class WithHead(nn.Module):
    """A backbone plus a linear head, so tests can name a trainable module as a recipe would."""

    def __init__(self, backbone: nn.Module, hidden: int = 32, classes: int = 5) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden, classes)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.head(self.backbone(inputs).last_hidden_state)


def tiny_inputs(kind: str, batch: int = 2, seed: int = 1) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "wav2vec2":
        return torch.randn(batch, 1600, generator=g)
    if kind == "bert":
        return torch.randint(0, 50, (batch, 7), generator=g)
    return torch.randn(batch, 3, 16, 16, generator=g)


BACKBONES = {
    "wav2vec2": (tiny_wav2vec2, ["q_proj", "k_proj"]),
    "bert": (tiny_bert, ["query", "key"]),
    # transformers 5 names ViT's projections q_proj/k_proj (BERT keeps query/key).
    "vit": (tiny_vit, ["q_proj", "k_proj"]),
}
