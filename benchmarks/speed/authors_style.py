"""The speed benchmark's peer: FVAE-LoRA's objective computed in the style of the authors' published layer (their
reconstruction through ``MultivariateNormal``), and the check that its loss equals ours under the same noise."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn
from torch.distributions import MultivariateNormal

from fvae_asr import FVAELoRAConfig, FVAELoRALinear


class AuthorsStyleFVAELoRALinear(FVAELoRALinear):
    """The benchmark's peer: FVAE-LoRA's objective computed in the style of the authors' published layer.

    An implementation in the authors' style, written from docs/method.md and a reading of their layer,
    not their code: the same frozen Linear, the same parameters (names and shapes; the config's decoder, by default
    three hidden layers with dropout, its scale and its log-variance clamp) and the same objective as
    ``FVAELoRALinear`` (equal losses under equal noise, see ``same_objective_gap``), computed their way:
    the reconstruction NLL by ``MultivariateNormal`` with ``scale_tril = diag(scale)`` (a d x d triangular solve,
    O(d^2) per frame), KL on z1 from the variances, the repulsion as means of squares with weight 1
    (= delta * rank / 2), no padding mask, and the whole objective computed in eval mode as well, where the output
    then uses mu1. Left out, so that if anything it runs faster than theirs: the terms they compute with weight
    zero (KL on z2, an orthogonality penalty), their 1e-5 * I added to the scale, and our finite-input check.
    """

    def __init__(self, base: nn.Linear, config: FVAELoRAConfig, name: str) -> None:
        super().__init__(base, config, name)
        if config.z2_dim != config.rank or config.beta_z2 != 0:
            raise ValueError("the authors' objective has z2_dim == rank and no KL on z2 (beta_z2 = 0)")

    def forward(self, x: Tensor) -> Tensor:
        terms, mu1, z1 = self._authors_style_objective(x)
        self._record(terms if self.training else None)
        latent = z1 if self.training else mu1
        return self.base(x) + self.config.scaling * self.lora_B(latent.to(x.dtype))

    def _authors_style_objective(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """The loss terms, mu1 and the sampled z1, scored in float32 like ours (autocast-safe)."""
        cfg = self.config
        mu1, logvar1 = self.encoder_z1(x)
        mu2, logvar2 = self.encoder_z2(x)
        mu1, mu2 = mu1.float(), mu2.float()
        var1 = logvar1.float().clamp(-cfg.logvar_clamp, cfg.logvar_clamp).exp()
        var2 = logvar2.float().clamp(-cfg.logvar_clamp, cfg.logvar_clamp).exp()
        kl_z1 = 0.5 * (mu1.square().sum(-1) + var1.sum(-1) - cfg.rank - var1.log().sum(-1))
        z1 = mu1 + var1.sqrt() * torch.randn_like(mu1)
        z2 = mu2 + var2.sqrt() * torch.randn_like(mu2)
        z1_l2 = z1.square().mean()
        z2_l2 = (z2 - cfg.prior_mean_z2).square().mean()
        recon_mean = self.decoder(torch.cat([z1, z2], dim=-1).to(x.dtype))
        scale_tril = torch.diag_embed(self.decoder_scale().float())
        normal = MultivariateNormal(loc=recon_mean.float(), scale_tril=scale_tril, validate_args=False)
        reconstruction = -normal.log_prob(x.float()).mean()
        kl_mean = kl_z1.mean()
        total = cfg.alpha * reconstruction + cfg.beta * kl_mean + cfg.delta * cfg.rank / 2 * (z2_l2 - z1_l2)
        return {"reconstruction": reconstruction, "kl_z1": kl_mean, "total": total}, mu1, z1


def same_objective_gap(config: FVAELoRAConfig, features: int, frames: int, seed: int) -> float:
    """Relative gap between our layer's training loss and the peer's, same weights and noise, dropout off.

    The encoders' dropout is switched off because our layer draws their two masks in one call (another layout
    of the same noise); the decoder's dropout stays on (both draw its masks in the same order after z1, z2).
    Every parameter is perturbed away from its zero init.
    """
    config = replace(config, dropout=0.0)
    torch.manual_seed(seed)
    ours = FVAELoRALinear(nn.Linear(features, features), config, "layer").train()
    with torch.no_grad():
        for parameter in ours.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    peer = AuthorsStyleFVAELoRALinear(nn.Linear(features, features), config, "layer").train()
    peer.load_state_dict(ours.state_dict())
    x = torch.randn(2, frames, features)
    losses = []
    for layer in (ours, peer):
        torch.manual_seed(seed)
        layer(x)
        losses.append(layer.last_terms["total"].item())
    return abs(losses[0] - losses[1]) / max(abs(losses[0]), 1e-12)
