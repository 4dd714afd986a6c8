"""Adapter layers that wrap a frozen ``nn.Linear``: plain LoRA and FVAE-LoRA."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from fvae_asr.adapters.config import AdapterConfig, FVAELoRAConfig, LoRAConfig
from fvae_asr.adapters.objective import (
    gaussian_nll,
    kl_to_unit_gaussian,
    masked_frame_means,
    repulsive_gamma,
)


def _all_finite(x: Tensor) -> bool:
    """No NaN or Inf in x: one min/max reduction (NaN propagates to both) instead of a full-size isfinite mask."""
    if x.numel() == 0:
        return True
    low, high = torch.aminmax(x)
    return bool(torch.isfinite(low) & torch.isfinite(high))


class AdaptedLinear(nn.Module):
    """Common part of the adapter layers: the frozen base layer, its name, and the input checks."""

    def __init__(self, base: nn.Linear, config: AdapterConfig, name: str) -> None:
        super().__init__()
        self.base = base
        self.config = config
        self.adapter_name = name

    @property
    def weight(self) -> Tensor:
        """The base weight, for code that inspects ``layer.weight`` (dtype, device, shape)."""
        return self.base.weight

    @property
    def bias(self) -> Tensor | None:
        return self.base.bias

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def _check_input(self, x: Tensor) -> None:
        if self.config.check_finite and not _all_finite(x):
            raise FloatingPointError(f"non-finite input (NaN or Inf) reached adapted layer '{self.adapter_name}'")

    def extra_repr(self) -> str:
        return f"name={self.adapter_name!r}, rank={self.config.rank}, scaling={self.config.scaling:g}"


class LoRALinear(AdaptedLinear):
    """y = W x + s * B A dropout(x), with PEFT's initialisation; mergeable into W."""

    def __init__(self, base: nn.Linear, config: LoRAConfig, name: str) -> None:
        super().__init__(base, config, name)
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Linear(base.in_features, config.rank, bias=False, **factory)
        self.lora_B = nn.Linear(config.rank, base.out_features, bias=False, **factory)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        return self.base(x) + self.config.scaling * self.lora_B(self.lora_A(self.dropout(x)))

    def delta_weight(self) -> Tensor:
        """s * B A, the (out, in) update that merging adds to W."""
        return self.config.scaling * (self.lora_B.weight @ self.lora_A.weight)


class GaussianEncoder(nn.Module):
    """x -> (mu, logvar) through Linear -> ReLU -> Dropout -> two zero-initialised heads (mu = 0, var = 1)."""

    def __init__(self, in_features: int, hidden: int, latent: int, dropout: float, **factory) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_features, hidden, **factory)
        self.dropout = nn.Dropout(dropout)
        self.mean = nn.Linear(hidden, latent, **factory)
        self.logvar = nn.Linear(hidden, latent, **factory)
        for head in (self.mean, self.logvar):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def features(self, x: Tensor) -> Tensor:
        return self.dropout(F.relu(self.hidden(x)))

    def forward(
        self, x: Tensor, features: Tensor | None = None, with_logvar: bool = True
    ) -> tuple[Tensor, Tensor | None]:
        """(mu, logvar) of q(z | x); ``features`` are this encoder's hidden features of x when the caller has
        them already, and ``with_logvar=False`` skips the log-variance head (None in its place)."""
        h = self.features(x) if features is None else features
        return self.mean(h), self.logvar(h) if with_logvar else None


def _decoder(latent: int, hidden: int, layers: int, out_features: int, dropout: float, **factory) -> nn.Sequential:
    """concat(z1, z2) -> [Linear -> ReLU -> Dropout] * layers -> Linear(hidden -> d): the mean of p(x | z1, z2).

    ReLU and Dropout sit in one parameterless block, so the Linear layers keep the indices 0, 2, 4, ... that
    checkpoints name, with or without dropout.
    """
    blocks: list[nn.Module] = []
    width = latent
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden, **factory), nn.Sequential(nn.ReLU(), nn.Dropout(dropout))]
        width = hidden
    blocks.append(nn.Linear(width, out_features, **factory))
    return nn.Sequential(*blocks)


LATENTS = ("z1", "z2")
DECODER_STD_EPS = 1e-5  # the authors' scale_tril + 1e-5 I: the std's floor in the reconstruction NLL
LEGACY_LOG_SCALE = "decoder_log_scale"  # 0.2's parameter, log(std); read and converted, never written


def upgrade_legacy_tensors(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Tensors saved by fvae-asr 0.2 (``*.decoder_log_scale``, the log of the std) in today's names: the raw
    ``*.decoder_std`` that gives the same std, ``exp(log_scale) - DECODER_STD_EPS``. Other tensors pass as they are."""
    upgraded = {}
    for key, value in tensors.items():
        owner, _, leaf = key.rpartition(".")
        if leaf == LEGACY_LOG_SCALE:
            key = f"{owner}.decoder_std" if owner else "decoder_std"
            value = value.exp() - DECODER_STD_EPS
        upgraded[key] = value
    return upgraded


class FVAELoRALinear(AdaptedLinear):
    """y = W x + s * B z1, where z1 is the task-salient latent of a two-latent VAE over x.

    Training samples z1 and records the per-layer FVAE loss (see ``last_terms``); eval uses mu1 and runs only
    the z1 encoder and B. Padded frames (``frame_mask`` false) enter no loss term. Latents named in
    ``ablated_latents`` (set by ``latent_ablation``) are replaced by their prior mean in eval.
    """

    def __init__(self, base: nn.Linear, config: FVAELoRAConfig, name: str) -> None:
        super().__init__(base, config, name)
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        d, r, r2 = base.in_features, config.rank, config.z2_dim
        self.encoder_z1 = GaussianEncoder(d, config.encoder_hidden, r, config.dropout, **factory)
        self.encoder_z2 = GaussianEncoder(d, config.encoder_hidden, r2, config.dropout, **factory)
        self.decoder = _decoder(
            r + r2, config.decoder_hidden, config.decoder_layers, d, config.decoder_dropout, **factory
        )
        # The decoder's learned diagonal std, raw as in the authors' code (their ``scale_tril``, init 1): the
        # optimiser and weight decay see the same variable as theirs. The NLL uses decoder_std + DECODER_STD_EPS.
        self.decoder_std = nn.Parameter(torch.ones(d, **factory))
        self.lora_B = nn.Linear(r, base.out_features, bias=False, **factory)
        nn.init.normal_(self.lora_B.weight, std=config.b_init_std)
        self.frame_mask: Tensor | None = None  # (...,) bool over x's leading dims; set by set_frame_mask
        self.ablated_latents: frozenset[str] = frozenset()  # of LATENTS; set by latent_ablation, eval only
        # Terms of the model's last training forward, by layer (not by name: layers built one by one, as by
        # SpeechBrain's AdaptedModel, have no unique name); inject() shares one dict across layers.
        self.recorder: dict[nn.Module, dict[str, Tensor]] = {}
        self.register_load_state_dict_pre_hook(_upgrade_legacy_state)

    @property
    def last_terms(self) -> dict[str, Tensor] | None:
        """This layer's loss terms from the last training forward (None after eval or if skipped)."""
        return self.recorder.get(self)

    def _record(self, terms: dict[str, Tensor] | None) -> None:
        # A layer that already has terms means a new forward began: drop every entry of the previous one, so
        # layers skipped this time (LayerDrop) contribute nothing stale.
        if self in self.recorder:
            self.recorder.clear()
        if terms is not None:
            self.recorder[self] = terms

    def forward(self, x: Tensor) -> Tensor:  # x: (..., d)
        self._check_input(x)
        if not self.training:
            self._record(None)
            mu1, _ = self.encoder_z1(x, with_logvar=False)
            return self._add_update(self.base(x), self._prior_if_ablated("z1", mu1))
        if self.ablated_latents:
            raise RuntimeError(
                f"adapted layer '{self.adapter_name}': latents are ablated for inference only; "
                "call model.eval() inside latent_ablation"
            )
        if self.config.recompute_scoring:  # backward reruns the branch with the same RNG state (noise, dropout)
            z1, terms = checkpoint(self._sample_and_score, x, self._mask_for(x), use_reentrant=False)
        else:
            z1, terms = self._sample_and_score(x, self._mask_for(x))
        self._record(terms)
        return self._add_update(self.base(x), z1)

    def prior_mean(self, latent: str) -> float:
        """The mean of a latent's prior: 0 for z1, ``prior_mean_z2`` for z2."""
        return {"z1": 0.0, "z2": self.config.prior_mean_z2}[latent]

    def _prior_if_ablated(self, latent: str, mu: Tensor) -> Tensor:
        return torch.full_like(mu, self.prior_mean(latent)) if latent in self.ablated_latents else mu

    def latent_means(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(mu1, mu2) of x, each replaced by its prior mean where ablated: what the latents carry (use in eval)."""
        mu1, _, mu2, _ = self._encode_both(x)
        return self._prior_if_ablated("z1", mu1), self._prior_if_ablated("z2", mu2)

    def reconstruction(self, x: Tensor) -> Tensor:
        """The decoder's mean of x from (mu1, mu2), prior means where ablated (use in eval)."""
        return self.decoder(torch.cat(self.latent_means(x), dim=-1))

    def decoder_scale(self) -> Tensor:
        """The std of p(x | z1, z2) per dimension, (d,): the raw parameter plus the authors' 1e-5."""
        return self.decoder_std + DECODER_STD_EPS

    def _add_update(self, base_out: Tensor, latent: Tensor) -> Tensor:
        """base_out + s * B latent as one addmm: one new (..., out) tensor instead of three (mm, scale, add)."""
        out = torch.addmm(
            base_out.reshape(-1, base_out.shape[-1]),
            latent.reshape(-1, latent.shape[-1]),
            self.lora_B.weight.t(),
            alpha=self.config.scaling,
        )
        return out.view(base_out.shape)

    def _mask_for(self, x: Tensor) -> Tensor | None:
        mask = self.frame_mask
        if mask is not None and mask.shape != x.shape[:-1]:
            raise ValueError(
                f"frame mask of shape {tuple(mask.shape)} does not match the input of adapted layer "
                f"'{self.adapter_name}' with leading shape {tuple(x.shape[:-1])}"
            )
        return mask

    def _sample_and_score(self, x: Tensor, mask: Tensor | None) -> tuple[Tensor, dict[str, Tensor]]:
        """Sample z1 and z2 and compute the layer's FVAE loss terms in float32 at least (autocast-safe)."""
        cfg = self.config
        mu1, logvar1, mu2, logvar2 = self._encode_both(x)
        exact = torch.promote_types(x.dtype, torch.float32)  # float32 under autocast's half types, float64 kept
        mu1, mu2 = mu1.to(exact), mu2.to(exact)
        logvar1 = logvar1.to(exact).clamp(-cfg.logvar_clamp, cfg.logvar_clamp)
        logvar2 = logvar2.to(exact).clamp(-cfg.logvar_clamp, cfg.logvar_clamp)
        z1 = mu1 + torch.exp(0.5 * logvar1) * torch.randn_like(mu1)
        z2 = mu2 + torch.exp(0.5 * logvar2) * torch.randn_like(mu2)
        recon_mean = self.decoder(torch.cat([z1, z2], dim=-1).to(x.dtype))

        per_frame = {
            "reconstruction": gaussian_nll(x.to(exact), recon_mean.to(exact), self.decoder_scale().to(exact)),
            "kl_z1": kl_to_unit_gaussian(mu1, logvar1),
            "gamma": repulsive_gamma(z1, z2, cfg.prior_mean_z2),
        }
        if cfg.beta_z2 > 0:
            per_frame["kl_z2"] = kl_to_unit_gaussian(mu2, logvar2, cfg.prior_mean_z2)
        means = masked_frame_means(torch.stack(list(per_frame.values()), dim=-1), mask)
        terms = dict(zip(per_frame, means.unbind()))
        total = cfg.alpha * terms["reconstruction"] + cfg.beta * terms["kl_z1"] - cfg.delta * terms["gamma"]
        if cfg.beta_z2 > 0:
            total = total + cfg.beta_z2 * terms["kl_z2"]
        terms["total"] = total
        return z1.to(x.dtype), terms

    def _encode_both(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """mu1, logvar1, mu2, logvar2, with both encoders' first layers run as one matmul.

        x is read once, and backward gets both encoders' input gradient from one matmul instead of two and a sum.
        The weights stay two parameters (the checkpoint's names). Both encoders have the same dropout rate; their
        masks come from one draw, the same distribution as two draws but not the same numbers under one seed.
        """
        enc1, enc2 = self.encoder_z1, self.encoder_z2
        weight = torch.cat([enc1.hidden.weight, enc2.hidden.weight])
        bias = torch.cat([enc1.hidden.bias, enc2.hidden.bias])
        hidden = enc1.dropout(F.relu(F.linear(x, weight, bias)))
        h1, h2 = hidden.split([enc1.hidden.out_features, enc2.hidden.out_features], dim=-1)
        mu1, logvar1 = enc1(x, features=h1)
        mu2, logvar2 = enc2(x, features=h2)
        return mu1, logvar1, mu2, logvar2


def _upgrade_legacy_state(module: nn.Module, state_dict: dict[str, Tensor], prefix: str, *args: object) -> None:
    """``load_state_dict`` of a 0.2 state (log-scale decoder std) into today's layer: converted in place."""
    legacy = f"{prefix}{LEGACY_LOG_SCALE}"
    if legacy in state_dict:
        state_dict.update(upgrade_legacy_tensors({legacy: state_dict.pop(legacy)}))


ADAPTER_LAYERS: dict[str, type[AdaptedLinear]] = {"lora": LoRALinear, "fvae_lora": FVAELoRALinear}
