"""Speech SSL encoder of the wav2vec2 family (wav2vec2, HuBERT, WavLM, data2vec-audio) from a hub id, a local HF
directory or a config dict, through transformers' Auto classes, with padding handled end to end."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import transformers
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from torch import Tensor, nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from fvae_asr.adapters import set_frame_mask
from fvae_asr.files import read_json

# transformers' model_type of each family the recipe supports (and its tests build): same CNN front end, frame
# rate and padding conventions, attention projections named q_proj/k_proj/v_proj/out_proj.
ENCODER_FAMILIES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")

# Created only when SpecAugment is on: a checkpoint saved without it legitimately lacks it.
OPTIONAL_WEIGHTS = {"masked_spec_embed"}


def is_hub_id(source: str | Path) -> bool:
    """Whether a backbone source names a Hugging Face hub repository rather than a local folder."""
    if Path(source).exists():
        return False
    try:
        validate_repo_id(str(source))
    except HFValidationError:
        return False
    return True


@contextmanager
def quiet_hf_loading() -> Iterator[None]:
    """Hugging Face's progress bars and load reports off while we load or save (errors still show); the
    caller's settings are restored after. Our loaders check what the reports would say themselves."""
    verbosity = transformers.logging.get_verbosity()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()


def check_family(model_type: object, where: str) -> None:
    """ValueError naming ``where`` unless ``model_type`` is one of ``ENCODER_FAMILIES``."""
    if model_type not in ENCODER_FAMILIES:
        raise ValueError(f"{where}: model_type must be one of {', '.join(ENCODER_FAMILIES)}; got {model_type!r}")


def check_local_family(source: str | Path) -> None:
    """For a local model folder, its ``config.json`` read as plain JSON must name one of ``ENCODER_FAMILIES``,
    before any transformers call: a folder whose config maps to its own code (``auto_map``) never gets to ask
    whether to run it. Hub ids are checked after transformers reads their config (never with remote code)."""
    folder = Path(source)
    if folder.is_dir():
        config = read_json(folder / "config.json", "model config")
        check_family(config.get("model_type"), str(folder / "config.json"))


def config_from_fields(fields: dict[str, Any], **overrides: Any) -> PretrainedConfig:
    """The config of a randomly initialised encoder from its fields, ``model_type`` naming the family."""
    fields = {**fields, **overrides}
    model_type = fields.pop("model_type", None)
    check_family(model_type, "encoder_config")
    return AutoConfig.for_model(model_type, **fields)


def load_encoder_model(
    source: str | Path, random_init_config: dict[str, Any] | None = None, **overrides: Any
) -> PreTrainedModel:
    """A pretrained encoder (``Wav2Vec2Model``, ``HubertModel``, ...) from a hub id or local directory, or, when
    ``random_init_config`` is a non-empty dict of config fields with ``model_type``, a randomly initialised one.

    ``overrides`` set config fields such as ``layerdrop`` or ``mask_time_prob``.
    """
    if random_init_config:
        return AutoModel.from_config(config_from_fields(random_init_config, **overrides))
    path = Path(source)
    if path.exists() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a Hugging Face model directory (no config.json)")
    if not path.exists() and not is_hub_id(source):
        raise FileNotFoundError(f"no backbone folder {path} (and it is not a Hugging Face hub id)")
    check_local_family(source)
    with quiet_hf_loading():
        config = AutoConfig.from_pretrained(str(source), trust_remote_code=False, **overrides)
        check_family(config.model_type, f"{source} (config.json)")
        model, info = AutoModel.from_pretrained(
            str(source), config=config, output_loading_info=True, trust_remote_code=False
        )
    missing = sorted(set(info["missing_keys"]) - OPTIONAL_WEIGHTS)
    if missing:  # transformers would initialise them randomly, with only a warning
        raise ValueError(f"{source}: the checkpoint lacks backbone weights {missing[:5]} ({len(missing)} in all)")
    return model


def takes_attention_mask(config: PretrainedConfig) -> bool:
    """Whether the encoder gets an attention mask over padded samples. As in Hugging Face's feature extractors:
    yes for layer-normalised CNNs (wav2vec2-large-lv60, HuBERT/WavLM large, data2vec-audio, which has no
    ``feat_extract_norm`` as its CNN is always layer-normalised); no for group-normalised ones (wav2vec2-base,
    HuBERT base, WavLM base/base+), which were trained on zero padding without a mask."""
    return getattr(config, "feat_extract_norm", "layer") == "layer"


class SSLEncoder(nn.Module):
    """wavs (B, S) + relative lengths (B,) -> hidden states (B, T, C) and the valid-frame mask (B, T).

    The frame mask is handed to the FVAE adapters so that padded frames enter no loss term.
    LayerDrop is off by default: a skipped layer gets no gradient, which breaks DDP.
    """

    def __init__(
        self,
        source: str | Path,
        random_init_config: dict[str, Any] | None = None,
        freeze_feature_encoder: bool = True,
        normalize_wav: bool = True,
        layerdrop: float = 0.0,
        mask_time_prob: float | None = None,
    ) -> None:
        super().__init__()
        local = Path(source)
        self.source = str(local.resolve()) if local.exists() else str(source)  # hub ids stay as given
        self.random_init_config = dict(random_init_config or {})
        overrides = {"layerdrop": layerdrop}
        if mask_time_prob is not None:  # None keeps the backbone's own SpecAugment setting
            overrides["mask_time_prob"] = mask_time_prob
        self.model = load_encoder_model(source, random_init_config, **overrides)
        self.normalize_wav = normalize_wav
        self.freeze_feature_encoder = freeze_feature_encoder
        if freeze_feature_encoder:
            self.freeze_cnn()
        self.use_attention_mask = takes_attention_mask(self.model.config)

    @property
    def output_size(self) -> int:
        return self.model.config.hidden_size

    def freeze_cnn(self) -> None:
        """Freeze the CNN feature encoder, as transformers' ``freeze_feature_encoder`` (which ``HubertModel``
        lacks) does in every family."""
        self.model.feature_extractor._freeze_parameters()

    def sample_lengths(self, wavs: Tensor, wav_lens: Tensor) -> Tensor:
        """Relative lengths -> absolute sample counts (B,)."""
        return torch.round(wav_lens * wavs.shape[1]).long().clamp(1, wavs.shape[1])

    def frame_lengths(self, samples: Tensor) -> Tensor:
        """Absolute sample counts -> numbers of encoder frames (B,)."""
        return self.model._get_feat_extract_output_lengths(samples).long()

    def forward(self, wavs: Tensor, wav_lens: Tensor) -> tuple[Tensor, Tensor]:
        samples = self.sample_lengths(wavs, wav_lens)
        sample_mask = torch.arange(wavs.shape[1], device=wavs.device)[None, :] < samples[:, None]
        if self.normalize_wav:
            wavs = _normalize_valid(wavs, sample_mask)
        frames = self.frame_lengths(samples)
        n_frames = int(self.frame_lengths(torch.tensor(wavs.shape[1])).item())
        frame_mask = torch.arange(n_frames, device=wavs.device)[None, :] < frames[:, None]
        set_frame_mask(self.model, frame_mask)
        try:
            out = self.model(wavs, attention_mask=sample_mask.long() if self.use_attention_mask else None)
        finally:
            set_frame_mask(self.model, None)
        return out.last_hidden_state, frame_mask


def _normalize_valid(wavs: Tensor, mask: Tensor) -> Tensor:
    """Zero-mean, unit-variance per utterance over its real samples (as HF's feature extractor); padding stays 0."""
    weights = mask.to(wavs.dtype)
    count = weights.sum(1, keepdim=True)
    mean = (wavs * weights).sum(1, keepdim=True) / count
    var = ((wavs - mean).square() * weights).sum(1, keepdim=True) / count
    return (wavs - mean) * torch.rsqrt(var + 1e-7) * weights
