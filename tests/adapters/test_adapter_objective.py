"""Closed-form checks of the FVAE objective against torch.distributions and a manual recomputation."""

import math

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from fvae_asr import FVAELoRAConfig, FVAELoRALinear, adapter_layers, aux_loss, inject
from fvae_asr.adapters.objective import (
    gaussian_nll,
    kl_to_unit_gaussian,
    masked_mean,
    repulsive_gamma,
    unit_gaussian_log_prob,
)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def test_gaussian_nll_matches_torch_distributions(gen):
    x, mean, log_scale = (torch.randn(4, 5, 12, generator=gen, dtype=torch.float64) for _ in range(3))
    expected = -Independent(Normal(mean, log_scale.exp()), 1).log_prob(x)
    torch.testing.assert_close(gaussian_nll(x, mean, log_scale.exp()), expected)


@pytest.mark.parametrize("prior_mean", [0.0, 1.5])
def test_kl_matches_torch_distributions(gen, prior_mean):
    mu, logvar = (torch.randn(3, 7, 6, generator=gen, dtype=torch.float64) for _ in range(2))
    q = Normal(mu, (0.5 * logvar).exp())
    p = Normal(torch.full_like(mu, prior_mean), torch.ones_like(mu))
    torch.testing.assert_close(kl_to_unit_gaussian(mu, logvar, prior_mean), kl_divergence(q, p).sum(-1))


@pytest.mark.parametrize("r1,r2", [(6, 6), (6, 3)])
def test_gamma_is_log_p2_minus_log_p1(gen, r1, r2):
    z1 = torch.randn(10, r1, generator=gen, dtype=torch.float64)
    z2 = torch.randn(10, r2, generator=gen, dtype=torch.float64)
    log_p2 = Normal(torch.full_like(z2, 1.5), 1.0).log_prob(z2).sum(-1)
    log_p1 = Normal(torch.zeros_like(z1), 1.0).log_prob(z1).sum(-1)
    torch.testing.assert_close(repulsive_gamma(z1, z2, 1.5), log_p2 - log_p1)
    torch.testing.assert_close(unit_gaussian_log_prob(z1, 0.0), log_p1)
    if r1 == r2:  # the design note's form: normalising constants cancel
        closed = -0.5 * (z2 - 1.5).square().sum(-1) + 0.5 * z1.square().sum(-1)
        torch.testing.assert_close(repulsive_gamma(z1, z2, 1.5), closed)


def test_masked_mean_ignores_masked_values():
    values = torch.tensor([[1.0, 2.0, 100.0], [3.0, -50.0, 7.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert masked_mean(values, mask).item() == pytest.approx((1 + 2 + 3) / 3)
    assert masked_mean(values, None).item() == pytest.approx(values.mean().item())


def _layer(seed=0, **overrides):
    torch.manual_seed(seed)
    base = torch.nn.Linear(12, 10)
    cfg = FVAELoRAConfig(rank=4, dropout=0.0, encoder_hidden=8, decoder_hidden=16, **overrides)
    layer = FVAELoRALinear(base, cfg, "layer").train()
    with torch.no_grad():  # leave the zero init so that the terms exercise non-trivial means and variances
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return layer


@pytest.mark.parametrize("overrides", [{}, {"alpha": 2.0, "beta": 10.0, "delta": 0.5}, {"delta": 0.0, "beta_z2": 1.0}])
def test_layer_loss_equals_manual_recomputation(overrides):
    layer = _layer(**overrides)
    cfg = layer.config
    x = torch.randn(3, 5, 12)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] + [False] * 4])
    layer.frame_mask = mask
    torch.manual_seed(123)
    y = layer(x)
    terms = layer.last_terms

    torch.manual_seed(123)  # same noise, in the same order: eps1 then eps2
    mu1, logvar1 = layer.encoder_z1(x)
    mu2, logvar2 = layer.encoder_z2(x)
    z1 = mu1 + (0.5 * logvar1).exp() * torch.randn_like(mu1)
    z2 = mu2 + (0.5 * logvar2).exp() * torch.randn_like(mu2)
    recon = layer.decoder(torch.cat([z1, z2], -1))
    dist_x = Independent(Normal(recon, layer.decoder_std + 1e-5), 1)  # the authors' raw std and its floor
    nll = -dist_x.log_prob(x)
    kl1 = kl_divergence(Normal(mu1, (0.5 * logvar1).exp()), Normal(0.0, 1.0)).sum(-1)
    gamma = Normal(1.5, 1.0).log_prob(z2).sum(-1) - Normal(0.0, 1.0).log_prob(z1).sum(-1)
    per_frame = cfg.alpha * nll + cfg.beta * kl1 - cfg.delta * gamma
    if cfg.beta_z2:
        kl2 = kl_divergence(Normal(mu2, (0.5 * logvar2).exp()), Normal(1.5, 1.0)).sum(-1)
        per_frame = per_frame + cfg.beta_z2 * kl2
    expected = per_frame[mask].mean()

    torch.testing.assert_close(terms["total"], expected, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(terms["reconstruction"], nll[mask].mean(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(y, layer.base(x) + cfg.scaling * layer.lora_B(z1))
    assert ("kl_z2" in terms) == bool(cfg.beta_z2)


def test_padded_frames_do_not_change_the_loss():
    layer = _layer()
    x = torch.randn(2, 6, 12)
    mask = torch.tensor([[True] * 6, [True] * 2 + [False] * 4])
    layer.frame_mask = mask
    torch.manual_seed(5)
    layer(x)
    clean = layer.last_terms["total"].item()
    x_padded = x.clone()
    x_padded[1, 2:] = 1e3 * torch.randn(4, 12)
    torch.manual_seed(5)
    layer(x_padded)
    assert layer.last_terms["total"].item() == clean
    layer.frame_mask = None  # without the mask the junk frames do enter the loss
    torch.manual_seed(5)
    layer(x_padded)
    assert not math.isclose(layer.last_terms["total"].item(), clean, rel_tol=1e-3)


def test_mask_shape_mismatch_names_the_layer():
    layer = _layer()
    layer.frame_mask = torch.ones(2, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="'layer'"):
        layer(torch.randn(2, 6, 12))


def test_default_aux_loss_is_reconstruction_plus_kl_minus_two_over_rank_gamma():
    """With today's defaults (the authors' 3-layer decoder with dropout, scale 0.5), the model's aux loss is still
    the mean over layers of ``reconstruction + kl_z1 - (2 / rank) * gamma``."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(40, 40), torch.nn.Tanh(), torch.nn.Linear(40, 24))
    config = FVAELoRAConfig(target_modules=["0", "2"])
    inject(model, config)
    with torch.no_grad():  # away from the zero init, so every term is non-trivial
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    model.train()(torch.randn(3, 7, 40))
    per_layer = [layer.last_terms for layer in adapter_layers(model)]
    expected = torch.stack([t["reconstruction"] + t["kl_z1"] - (2 / config.rank) * t["gamma"] for t in per_layer])
    torch.testing.assert_close(aux_loss(model), expected.mean())
    assert all(t["gamma"].abs() > 0 and t["kl_z1"] > 0 for t in per_layer)
