"""FVAELoRAConfig.recompute_scoring: the scoring branch recomputed in backward gives the stored path's loss and
gradients (same noise and dropout masks), respects the frame mask, and leaves eval alone."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from fvae_asr import FVAELoRAConfig
from fvae_asr.adapters.config import config_from_dict
from fvae_asr.adapters.layers import FVAELoRALinear


def _twin_layers(seed: int = 0) -> tuple[FVAELoRALinear, FVAELoRALinear]:
    """The same perturbed weights (every parameter away from its zero init), stored and recomputed scoring."""
    config = FVAELoRAConfig(rank=4, decoder_hidden=16, dropout=0.3, decoder_dropout=0.3)
    torch.manual_seed(seed)
    stored = FVAELoRALinear(nn.Linear(12, 10), config, "layer")
    with torch.no_grad():
        for parameter in stored.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    recomputed = FVAELoRALinear(nn.Linear(12, 10), replace(config, recompute_scoring=True), "layer")
    recomputed.load_state_dict(stored.state_dict())
    return stored, recomputed


def _train_step(layer: FVAELoRALinear, x: torch.Tensor, mask: torch.Tensor | None, seed: int):
    layer.train()
    layer.frame_mask = mask
    x = x.clone().requires_grad_(True)
    torch.manual_seed(seed)
    out = layer(x)
    loss = out.square().mean() + layer.last_terms["total"]
    loss.backward()
    grads = {name: p.grad.clone() for name, p in layer.named_parameters() if p.grad is not None}
    return out.detach(), loss.detach(), grads, x.grad.clone()


@pytest.mark.parametrize("masked", [False, True])
def test_recomputed_scoring_gives_the_stored_loss_and_gradients_under_the_same_noise(masked: bool) -> None:
    stored, recomputed = _twin_layers()
    x = torch.randn(3, 7, 12)
    mask = torch.arange(7)[None, :] < torch.tensor([7, 5, 2])[:, None] if masked else None
    out_a, loss_a, grads_a, x_grad_a = _train_step(stored, x, mask, seed=1)
    out_b, loss_b, grads_b, x_grad_b = _train_step(recomputed, x, mask, seed=1)
    torch.testing.assert_close(out_b, out_a)
    torch.testing.assert_close(loss_b, loss_a)
    assert grads_a.keys() == grads_b.keys() and "decoder.0.weight" in grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], msg=name)
    torch.testing.assert_close(x_grad_b, x_grad_a)


def test_recomputed_scoring_leaves_padded_frames_out_of_the_loss() -> None:
    _, recomputed = _twin_layers()
    x = torch.randn(2, 6, 12)
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    _train_step(recomputed, x, mask, seed=2)
    masked_loss = recomputed.last_terms["total"].item()
    x_changed = x.clone()
    x_changed[1, 3:] = 100.0  # padded frames: no effect on the loss
    _train_step(recomputed, x_changed, mask, seed=2)
    assert recomputed.last_terms["total"].item() == pytest.approx(masked_loss, rel=1e-6)


def test_recomputed_scoring_leaves_eval_output_unchanged() -> None:
    stored, recomputed = _twin_layers()
    x = torch.randn(2, 5, 12)
    with torch.no_grad():
        torch.testing.assert_close(recomputed.eval()(x), stored.eval()(x), rtol=0, atol=0)
    assert recomputed.last_terms is None


def test_recompute_scoring_must_be_a_bool_and_defaults_off_for_old_files() -> None:
    with pytest.raises(ValueError, match="recompute_scoring must be a bool"):
        FVAELoRAConfig(recompute_scoring=1)
    old = FVAELoRAConfig().to_dict()
    old.pop("recompute_scoring")
    assert config_from_dict(old).recompute_scoring is False
    assert config_from_dict(FVAELoRAConfig(recompute_scoring=True).to_dict()).recompute_scoring is True
