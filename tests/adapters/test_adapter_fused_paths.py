"""The faster FVAE-LoRA paths keep the numbers: fused encoder matmul, one masked reduction, lean eval, addmm."""

import pytest
import torch
from torch import nn

from fvae_asr import FVAELoRAConfig, FVAELoRALinear
from fvae_asr.adapters.objective import masked_frame_means, masked_mean


def _layer(seed: int = 0, **overrides) -> FVAELoRALinear:
    torch.manual_seed(seed)
    cfg = FVAELoRAConfig(rank=4, dropout=0.0, encoder_hidden=6, decoder_hidden=16, **overrides)
    layer = FVAELoRALinear(nn.Linear(12, 10), cfg, "layer")
    with torch.no_grad():  # away from the zero init, so that every path carries non-trivial numbers
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return layer


def test_masked_frame_means_equal_one_masked_mean_per_column():
    torch.manual_seed(0)
    values = torch.randn(3, 5, 4)
    mask = torch.rand(3, 5) > 0.4
    expected = torch.stack([masked_mean(values[..., k], mask) for k in range(4)])
    torch.testing.assert_close(masked_frame_means(values, mask), expected)
    torch.testing.assert_close(masked_frame_means(values, None), values.reshape(-1, 4).mean(0))
    assert masked_frame_means(values, torch.zeros(3, 5, dtype=torch.bool)).abs().max() == 0


@pytest.mark.parametrize("overrides", [{}, {"delta": 0.0, "beta_z2": 1.0}, {"z2_dim": 3}])
def test_training_gradients_equal_the_separate_encoders_recomputation(overrides):
    """Loss and every gradient equal those of the plain recipe: each encoder on its own, one masked mean per term."""
    layer = _layer(**overrides).train()
    cfg = layer.config
    x = torch.randn(2, 5, 12, requires_grad=True)
    mask = torch.tensor([[True] * 5, [True] * 2 + [False] * 3])
    layer.frame_mask = mask
    torch.manual_seed(7)
    y = layer(x)
    fused = torch.autograd.grad((y.square().mean() + layer.last_terms["total"]), [x, *layer.parameters()])

    torch.manual_seed(7)
    mu1, logvar1 = layer.encoder_z1(x)
    mu2, logvar2 = layer.encoder_z2(x)
    z1 = mu1 + (0.5 * logvar1).exp() * torch.randn_like(mu1)
    z2 = mu2 + (0.5 * logvar2).exp() * torch.randn_like(mu2)
    recon = layer.decoder(torch.cat([z1, z2], -1))
    std = layer.decoder_std + 1e-5
    z = (x - recon) / std
    nll = 0.5 * z.square().sum(-1) + std.log().sum() + 0.5 * 12 * torch.log(torch.tensor(2 * torch.pi))
    kl1 = 0.5 * (mu1.square() + logvar1.exp() - 1 - logvar1).sum(-1)
    gamma = (
        -0.5 * (z2 - 1.5).square().sum(-1)
        + 0.5 * z1.square().sum(-1)
        + 0.5 * (z1.shape[-1] - z2.shape[-1]) * (torch.log(torch.tensor(2 * torch.pi)))
    )
    per_frame = cfg.alpha * nll + cfg.beta * kl1 - cfg.delta * gamma
    if cfg.beta_z2:
        per_frame = per_frame + cfg.beta_z2 * 0.5 * ((mu2 - 1.5).square() + logvar2.exp() - 1 - logvar2).sum(-1)
    total = per_frame[mask].mean()
    y_plain = layer.base(x) + cfg.scaling * layer.lora_B(z1)
    plain = torch.autograd.grad(y_plain.square().mean() + total, [x, *layer.parameters()])

    torch.testing.assert_close(layer.last_terms["total"], total, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, y_plain)
    for got, want in zip(fused, plain, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_eval_runs_no_log_variance_head_and_equals_the_plain_formula():
    layer = _layer().eval()
    logvar_calls = []
    layer.encoder_z1.logvar.register_forward_hook(lambda *_: logvar_calls.append(1))
    x = torch.randn(3, 7, 12)
    with torch.inference_mode():
        y = layer(x)
    mu1 = layer.encoder_z1.mean(layer.encoder_z1.features(x))
    torch.testing.assert_close(y, layer.base(x) + layer.config.scaling * layer.lora_B(mu1))
    assert logvar_calls == []


def test_checkpoint_names_are_unchanged():
    names = set(_layer().state_dict())
    parts = ("hidden", "mean", "logvar")
    encoders = {f"encoder_z{i}.{part}.{p}" for i in (1, 2) for part in parts for p in ("weight", "bias")}
    decoder = {f"decoder.{i}.{p}" for i in (0, 2, 4, 6) for p in ("weight", "bias")}  # 3 hidden layers + output
    assert names == encoders | decoder | {"decoder_std", "lora_B.weight", "base.weight", "base.bias"}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_masked_frame_means_stay_float32_under_autocast(dtype):
    """The loss terms are averaged in float32 even inside autocast (a matmul there would round them to 16 bits)."""
    torch.manual_seed(0)
    values = 1000 * torch.randn(40, 3) + 1e-3 * torch.randn(40, 3)
    mask = torch.rand(40) > 0.3
    plain = masked_frame_means(values, mask)
    with torch.autocast("cpu", dtype=dtype):
        inside = masked_frame_means(values, mask)
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, plain, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_finite_check_catches_every_non_finite_value_and_passes_empty_input(bad, dtype):
    layer = _layer().eval().to(dtype)
    x = torch.randn(2, 3, 12, dtype=dtype)
    layer(x)
    x[1, 2, 5] = bad
    with pytest.raises(FloatingPointError, match="'layer'"):
        layer(x)
    assert layer(torch.empty(0, 12, dtype=dtype)).shape == (0, 10)
