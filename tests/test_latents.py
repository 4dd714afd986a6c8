"""A look inside the latents: the ablation switch, the probes, frame labelling, and ``python -m fvae_asr.latents``."""

from __future__ import annotations

import copy

import pytest
import torch

from fvae_asr import FVAELoRAConfig, FVAELoRALinear, LoRAConfig, adapter_layers, inject, latent_ablation
from tiny_models import WithHead, tiny_inputs, tiny_wav2vec2

TARGETS = ["q_proj", "k_proj", "v_proj"]


def _nudged(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Trainable weights moved off their initial values (zero heads would make every latent mean 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.3 * torch.randn(param.shape, generator=generator))
    return model


def _fvae_model(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """An FVAE-adapted tiny wav2vec2 with a head (eval mode) and a copy of it without adapters."""
    plain = WithHead(tiny_wav2vec2(seed)).eval()
    model = copy.deepcopy(plain)
    inject(model, FVAELoRAConfig(rank=4, target_modules=TARGETS, trainable_modules=["head"]))
    _nudged(model)
    plain.head.load_state_dict(model.head.state_dict())
    return model.eval(), plain


def test_ablation_of_z1_everywhere_gives_the_base_model_and_is_undone_bit_exactly():
    model, plain = _fvae_model()
    inputs = tiny_inputs("wav2vec2")
    with torch.no_grad():
        before = model(inputs)
        with latent_ablation(model, z1=True) as names:
            ablated = model(inputs)
        after = model(inputs)
        base = plain(inputs)
    assert names == [layer.adapter_name for layer in adapter_layers(model)] and len(names) == 6
    assert torch.equal(before, after)  # bit for bit
    assert not torch.allclose(before, ablated, atol=1e-3)  # the adapters did change the output
    torch.testing.assert_close(ablated, base, rtol=0, atol=1e-6)  # y = W x in every layer
    assert all(layer.ablated_latents == frozenset() for layer in adapter_layers(model))


def test_ablation_of_one_layer_and_of_z2():
    model, _ = _fvae_model()
    inputs = tiny_inputs("wav2vec2")
    layer = adapter_layers(model)[2]
    x = torch.randn(3, 5, layer.in_features)
    with torch.no_grad():
        before, recon = model(inputs), layer.reconstruction(x)
        with latent_ablation(model, z2=True):
            assert torch.equal(model(inputs), before)  # z2 never reaches the output
            mu1, mu2 = layer.latent_means(x)
            assert torch.equal(mu2, torch.full_like(mu2, 1.5)) and mu1.abs().min() > 0
            assert not torch.allclose(layer.reconstruction(x), recon)
        with latent_ablation(model, z1=True, layers=[layer.adapter_name]):
            one = model(inputs)
            with latent_ablation(model, z2=True):  # nested blocks combine, and unwind one at a time
                assert layer.ablated_latents == {"z1", "z2"}
                assert adapter_layers(model)[0].ablated_latents == {"z2"}
            assert layer.ablated_latents == {"z1"} and adapter_layers(model)[0].ablated_latents == frozenset()
        assert torch.equal(model(inputs), before) and torch.equal(layer.reconstruction(x), recon)
    assert not torch.allclose(one, before, atol=1e-4)


def test_ablation_errors():
    model, plain = _fvae_model()
    with pytest.raises(ValueError, match="no FVAE-LoRA layer named 'backbone.nope'; the layers are: backbone"):
        with latent_ablation(model, z1=True, layers=["backbone.nope"]):
            pass
    lora = copy.deepcopy(plain)
    inject(lora, LoRAConfig(rank=4, target_modules=TARGETS))
    for other in (plain, lora):
        with pytest.raises(ValueError, match="no FVAE-LoRA layers"):
            with latent_ablation(other, z1=True):
                pass
    with latent_ablation(model.train(), z1=True), pytest.raises(RuntimeError, match="inference only"):
        model(tiny_inputs("wav2vec2"))
    assert isinstance(adapter_layers(model)[0], FVAELoRALinear)
