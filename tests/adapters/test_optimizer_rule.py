"""The authors' optimiser set-up in our units: eps follows the clipping norm, their weight-decay groups, the raw
decoder std, and one rule shared by the recipe's Brain, the spurious study and FVAETrainer."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch import nn

from fvae_asr import FVAELoRAConfig, LoRAConfig, aux_loss, inject
from fvae_asr.adapters.optimizer import adam_eps, authors_adamw, no_decay_parameter_names, weight_decay_groups
from fvae_asr.speech.training.resumable_brain import ResumableBrain

from tiny_models import tiny_wav2vec2


class _Toy(nn.Module):
    """Two adapted projections of frames, mean-pooled into a classifier (their image model's shape, in small)."""

    def __init__(self, features: int = 12, classes: int = 3) -> None:
        super().__init__()
        self.query, self.value = nn.Linear(features, features), nn.Linear(features, features)
        self.norm = nn.LayerNorm(features)
        self.classifier = nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, d) -> (B, classes)
        return self.classifier(self.norm(self.query(x) + self.value(x)).mean(1))


def _adapted_toy(seed: int = 0) -> _Toy:
    torch.manual_seed(seed)
    model = _Toy().double()
    inject(model, FVAELoRAConfig(rank=4, target_modules=["query", "value"], trainable_modules=["classifier", "norm"]))
    return model


def test_eps_is_the_authors_at_their_clipping_norm_scaled_to_ours():
    assert adam_eps(1.0) == 1e-8  # theirs: clip 1 on 1000 * task + aux
    assert adam_eps(1e-3) == pytest.approx(1e-11, rel=1e-12)  # ours: clip 1e-3 on task + 1e-3 * aux
    with pytest.raises(ValueError, match="max_grad_norm"):
        adam_eps(0.0)


def _train(model: _Toy, steps: int, task_weight: float, aux_weight: float, clip: float, eps: float) -> _Toy:
    """AdamW over the authors' groups on task_weight * CE + aux_weight * aux, clipped at clip; same data and noise
    at every step whatever the units."""
    optimizer = torch.optim.AdamW(weight_decay_groups(model, 0.01), lr=5e-3, eps=eps)
    data = torch.Generator().manual_seed(1)
    for step in range(steps):
        x = torch.randn(4, 6, 12, generator=data, dtype=torch.float64)
        y = torch.randint(0, 3, (4,), generator=data)
        torch.manual_seed(100 + step)  # the VAE's noise and dropout masks
        logits = model(x)
        loss = task_weight * nn.functional.cross_entropy(logits, y) + aux_weight * aux_loss(model)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], clip)
        optimizer.step()
    return model


def _largest_relative_difference(a: nn.Module, b: nn.Module) -> float:
    pairs = zip(a.parameters(), b.parameters(), strict=True)
    return max(((p - q).abs().max() / q.abs().max().clamp_min(1e-12)).item() for p, q in pairs if q.requires_grad)


def test_our_units_with_the_rule_take_the_authors_steps_and_their_eps_in_our_units_does_not():
    theirs = _train(_adapted_toy(), 30, task_weight=1000.0, aux_weight=1.0, clip=1.0, eps=1e-8)
    ours = _train(_adapted_toy(), 30, task_weight=1.0, aux_weight=1e-3, clip=1e-3, eps=adam_eps(1e-3))
    # The residual is clip_grad_norm_'s +1e-6 on the norm, 1000 times larger relative to our gradients.
    assert _largest_relative_difference(ours, theirs) < 1e-5
    unscaled = _train(_adapted_toy(), 30, task_weight=1.0, aux_weight=1e-3, clip=1e-3, eps=1e-8)
    assert _largest_relative_difference(unscaled, theirs) > 1e-2  # 0.2's eps: another trajectory


def test_weight_decay_skips_biases_and_normalization_weights_and_decays_the_rest():
    model = _adapted_toy()
    exempt = no_decay_parameter_names(model)
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    assert exempt == {name for name in trainable if name.endswith(".bias") or name.startswith("norm.")}
    decayed = trainable - exempt
    for name in ("query.decoder_std", "query.lora_B.weight", "value.encoder_z1.mean.weight", "classifier.weight"):
        assert name in decayed
    groups = weight_decay_groups(model, 0.01)
    assert [group["weight_decay"] for group in groups] == [0.01, 0.0]
    names = {id(param): name for name, param in model.named_parameters()}
    assert {names[id(p)] for p in groups[0]["params"]} == decayed
    assert {names[id(p)] for p in groups[1]["params"]} == exempt  # frozen base weights in neither


def test_full_fine_tuning_of_a_wav2vec2_exempts_its_layer_norms():
    model = tiny_wav2vec2()
    exempt = no_decay_parameter_names(model)
    norms = {n for n, m in model.named_modules() if isinstance(m, nn.LayerNorm)}
    assert norms and all(f"{n}.weight" in exempt and f"{n}.bias" in exempt for n in norms)
    assert "encoder.layers.0.attention.q_proj.weight" not in exempt


def test_authors_adamw_is_the_rule_with_its_groups():
    model = _adapted_toy()
    optimizer = authors_adamw(model, lr=5e-3)
    assert [g["eps"] for g in optimizer.param_groups] == [adam_eps(1e-3)] * 2
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]


def _brain(model: nn.Module, **opt) -> ResumableBrain:
    return ResumableBrain(
        modules={"model": model},
        opt_class=functools.partial(torch.optim.AdamW, lr=5e-3, weight_decay=0.01, **opt),
        run_opts={"device": "cpu", "max_grad_norm": 1e-3},
    )


def test_the_recipe_brain_builds_the_same_optimizer_and_clips_every_group_at_once():
    model, reference = _adapted_toy(), _adapted_toy()
    brain = _brain(model)
    brain.init_optimizers()
    assert [g["eps"] for g in brain.optimizer.param_groups] == [adam_eps(1e-3)] * 2
    assert [g["weight_decay"] for g in brain.optimizer.param_groups] == [0.01, 0.0]
    expected = authors_adamw(reference, lr=5e-3)
    gradients = torch.Generator().manual_seed(3)
    for param, twin in zip(model.parameters(), reference.parameters(), strict=True):
        if param.requires_grad:
            param.grad = torch.randn(param.shape, generator=gradients, dtype=param.dtype)
            twin.grad = param.grad.clone()
    brain.optimizers_step()
    torch.nn.utils.clip_grad_norm_([p for p in reference.parameters() if p.requires_grad], 1e-3)
    expected.step()
    for param, twin in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(param, twin, rtol=1e-12, atol=1e-15)


def test_an_eps_set_in_the_yaml_wins_over_the_rule():
    brain = _brain(_adapted_toy(), eps=1e-6)
    brain.init_optimizers()
    assert [g["eps"] for g in brain.optimizer.param_groups] == [1e-6, 1e-6]


# ---- the decoder's std, raw as theirs; 0.2's log-scale files still load ----


def test_the_decoder_std_is_a_raw_parameter_initialized_to_one():
    layer = _adapted_toy().query
    assert torch.equal(layer.decoder_std, torch.ones(12, dtype=torch.float64))
    torch.testing.assert_close(layer.decoder_scale(), torch.full((12,), 1 + 1e-5, dtype=torch.float64))
    assert not hasattr(layer, "decoder_log_scale")


def _as_saved_by_0_2(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state as 0.2 wrote it: the decoder's std as its log, with 0.2's meaning (no 1e-5 floor)."""
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("decoder_std"):
            key, value = key.replace("decoder_std", "decoder_log_scale"), value.log()
        state[key] = value.clone()
    return state


def _perturbed(model: nn.Module) -> nn.Module:
    """Every trainable parameter moved off its initialisation (the std kept positive)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.requires_grad:
                param.add_(0.1 * torch.randn_like(param))
                if "decoder_std" in name:
                    param.abs_()
    return model


def test_a_state_saved_by_0_2_loads_with_the_same_outputs_and_the_same_std():
    old = _perturbed(_adapted_toy(seed=3))
    legacy = _as_saved_by_0_2(old)
    fresh = _adapted_toy(seed=4)
    fresh.load_state_dict(legacy)
    x = torch.randn(2, 5, 12, dtype=torch.float64)
    old.eval(), fresh.eval()
    torch.testing.assert_close(fresh(x), old(x), rtol=0, atol=0)
    for layer in ("query", "value"):
        std_0_2 = legacy[f"{layer}.decoder_log_scale"].exp()
        torch.testing.assert_close(getattr(fresh, layer).decoder_scale(), std_0_2, rtol=1e-12, atol=0)


def test_an_adapter_folder_saved_by_0_2_loads_with_the_same_outputs(tmp_path):
    from safetensors.torch import load_file, save_file

    from fvae_asr import load_adapter, save_adapter
    from fvae_asr.adapters.checkpoint import WEIGHTS_NAME

    old = _perturbed(_adapted_toy(seed=3)).float()
    save_adapter(old, tmp_path)
    saved = load_file(tmp_path / WEIGHTS_NAME)
    legacy = {
        k.replace("decoder_std", "decoder_log_scale"): (v + 1e-5).log() if k.endswith("decoder_std") else v
        for k, v in saved.items()
    }
    save_file(legacy, tmp_path / WEIGHTS_NAME)
    torch.manual_seed(3)
    fresh = _Toy().double().float()  # the base model old was adapted from
    load_adapter(fresh, tmp_path)
    x = torch.randn(2, 5, 12)
    old.eval(), fresh.eval()
    torch.testing.assert_close(fresh(x), old(x), rtol=0, atol=0)
    torch.testing.assert_close(fresh.query.decoder_scale(), old.query.decoder_scale(), rtol=1e-6, atol=0)


def test_lora_has_no_decoder_and_its_groups_follow_the_same_rule():
    torch.manual_seed(0)
    model = _Toy()
    inject(model, LoRAConfig(rank=4, target_modules=["query", "value"], trainable_modules=["classifier"]))
    groups = weight_decay_groups(copy.deepcopy(model), 0.01)
    assert len(groups[0]["params"]) == 5 and len(groups[1]["params"]) == 1  # 4 LoRA matrices + head; head bias
