"""Injection, train/eval behaviour, gradients, precision and merging on text, image and speech backbones."""

import logging
import math

import pytest
import torch
from torch import nn

from fvae_asr import (
    FVAELoRAConfig,
    FVAELoRALinear,
    LoRAConfig,
    LoRALinear,
    adapter_layers,
    aux_loss,
    aux_weight,
    frame_mask,
    inject,
    loss_terms,
    merge_adapters,
)
from fvae_asr.adapters.config import config_from_dict

from tiny_models import BACKBONES, TINY_ENCODERS, WithHead, tiny_inputs, tiny_wav2vec2

CONFIGS = {"fvae_lora": FVAELoRAConfig, "lora": LoRAConfig}


def _adapted(kind: str, adapter: str, seed: int = 0, **overrides) -> tuple[nn.Module, list[str]]:
    build, targets = BACKBONES[kind]
    model = WithHead(build(seed))
    cfg = CONFIGS[adapter](rank=4, target_modules=targets, trainable_modules=["head"], **overrides)
    return model, inject(model, cfg)


def _task_loss(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    return model(inputs).square().mean()


@pytest.mark.parametrize("kind", sorted(BACKBONES))
@pytest.mark.parametrize("adapter", sorted(CONFIGS))
def test_inject_adapts_exactly_the_targets(kind, adapter):
    model, names = _adapted(kind, adapter)
    suffixes = tuple(BACKBONES[kind][1])
    assert names and all(n.endswith(suffixes) for n in names)
    assert len(names) == 2 * 2  # two target projections in each of the two layers
    layer_type = FVAELoRALinear if adapter == "fvae_lora" else LoRALinear
    assert [layer.adapter_name for layer in adapter_layers(model)] == names
    assert all(isinstance(model.get_submodule(n), layer_type) for n in names)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        n
        for n, _ in model.named_parameters()
        if n.startswith("head.") or (n.startswith(tuple(f"{m}." for m in names)) and ".base." not in n)
    }


def test_inject_wraps_the_targets_in_a_given_subclass_of_the_configs_layer():
    class Variant(FVAELoRALinear):
        pass

    model = tiny_wav2vec2()
    names = inject(model, FVAELoRAConfig(rank=4, target_modules=["q_proj"]), layer_type=Variant)
    assert names and all(type(model.get_submodule(n)) is Variant for n in names)
    with pytest.raises(TypeError, match="subclass of LoRALinear for a LoRAConfig"):
        inject(tiny_wav2vec2(), LoRAConfig(rank=4, target_modules=["q_proj"]), layer_type=Variant)


@pytest.mark.parametrize("adapter", sorted(CONFIGS))
@pytest.mark.parametrize("training", [True, False])
def test_inject_keeps_the_models_train_or_eval_mode(adapter, training):
    model = tiny_wav2vec2().train(training)
    inject(model, CONFIGS[adapter](rank=4, target_modules=["q_proj", "k_proj"]))
    assert {m.training for m in model.modules()} == {training}


@pytest.mark.parametrize("adapter", sorted(CONFIGS))
def test_adapters_on_transformers_wavlm_attention_take_effect(adapter):
    # transformers' WavLMAttention reads q_proj.weight itself: unless inject routes it, an adapter there never runs
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model(**TINY_ENCODERS["wavlm"])
    torch.manual_seed(0)
    model = AutoModel.from_config(config).eval()
    wavs = torch.randn(2, 1600)
    with torch.no_grad():
        base = model(wavs).last_hidden_state
        inject(model, CONFIGS[adapter](rank=4, target_modules=["q_proj"]))
        assert torch.equal(model(wavs).last_hidden_state, base)  # a fresh adapter: the same output
        for parameter in (p for layer in adapter_layers(model) for p in layer.parameters() if p.requires_grad):
            parameter.normal_()  # the adapters only: the frozen base keeps its weights
        assert not torch.allclose(model(wavs).last_hidden_state, base)


def test_no_match_lists_existing_linear_layers():
    model = tiny_wav2vec2()
    with pytest.raises(ValueError, match=r"matched no nn.Linear.*encoder.layers.0.attention.k_proj"):
        inject(model, FVAELoRAConfig(target_modules=["query"]))


def test_regex_targets_and_double_injection():
    model = tiny_wav2vec2()
    names = inject(model, FVAELoRAConfig(rank=2, target_modules=r"encoder\.layers\.1\.attention\.(q|v)_proj"))
    assert sorted(names) == ["encoder.layers.1.attention.q_proj", "encoder.layers.1.attention.v_proj"]
    with pytest.raises(ValueError, match="already has adapters"):
        inject(model, FVAELoRAConfig(rank=2))


def test_unmatched_trainable_modules_raise():
    with pytest.raises(ValueError, match="trainable_modules"):
        inject(tiny_wav2vec2(), FVAELoRAConfig(trainable_modules=["ctc_head"]))


@pytest.mark.parametrize("kind", sorted(BACKBONES))
@pytest.mark.parametrize("adapter", sorted(CONFIGS))
def test_fresh_adapter_keeps_eval_output_and_one_step_changes_it(kind, adapter):
    inputs = tiny_inputs(kind)
    base = WithHead(BACKBONES[kind][0](0))
    base.head.load_state_dict(WithHead(BACKBONES[kind][0](0)).head.state_dict())
    torch.manual_seed(0)
    reference_model = WithHead(BACKBONES[kind][0](0)).eval()
    with torch.no_grad():
        reference = reference_model(inputs)
    torch.manual_seed(0)
    model, _ = _adapted(kind, adapter)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(inputs), reference)

    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = _task_loss(model, inputs) + 1e-3 * aux_loss(model)
    loss.backward()
    opt.step()
    model.eval()
    # Exclude the head so that the change is the adapter's.
    model.head.load_state_dict(reference_model.head.state_dict())
    with torch.no_grad():
        assert not torch.allclose(model(inputs), reference)


def _count_calls(module: nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_training_samples_z1_and_eval_runs_only_the_z1_path():
    model, _ = _adapted("wav2vec2", "fvae_lora")
    layers = [m for m in adapter_layers(model)]
    z1_calls = [_count_calls(layer.encoder_z1) for layer in layers]
    z2_calls = [_count_calls(layer.encoder_z2) for layer in layers]
    dec_calls = [_count_calls(layer.decoder) for layer in layers]
    inputs = tiny_inputs("wav2vec2")

    model.eval()
    with torch.no_grad():
        first, second = model(inputs), model(inputs)
    assert torch.equal(first, second)  # eval uses mu1: deterministic
    assert all(c == [2] for c in z1_calls)
    assert all(c == [0] for c in z2_calls + dec_calls)
    assert aux_loss(model).item() == 0.0 and loss_terms(model) == {}

    model.train()
    for m in model.modules():  # switch dropout off: the remaining randomness is the sampling of z1
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    with torch.no_grad():
        torch.manual_seed(1)
        a = model(inputs)
        torch.manual_seed(2)
        b = model(inputs)
    assert not torch.allclose(a, b)
    assert all(c == [2] for c in z2_calls) and all(c == [2] for c in dec_calls)


@pytest.mark.parametrize("adapter", sorted(CONFIGS))
def test_every_trainable_parameter_gets_a_gradient(adapter):
    model, _ = _adapted("wav2vec2", adapter)
    model.train()
    inputs = tiny_inputs("wav2vec2")
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.SGD(params.values(), lr=0.05)
    for _ in range(2):  # after one step the zero-initialised heads (and LoRA's B) are no longer zero
        opt.zero_grad()
        loss = _task_loss(model, inputs) + model_aux_weight(model) * aux_loss(model)
        loss.backward()
        missing = [n for n, p in params.items() if p.grad is None]
        assert not missing, f"no gradient reached {missing}"
        opt.step()
    zero = [n for n, p in params.items() if p.grad.abs().sum() == 0]
    assert not zero, f"zero gradient for {zero}"
    assert all(p.grad is None for n, p in model.named_parameters() if not p.requires_grad)


def test_layerdrop_skipped_layers_leave_no_stale_terms():
    model, _ = _adapted("wav2vec2", "fvae_lora")
    model.backbone.config.layerdrop = 0.5
    model.train()
    inputs = tiny_inputs("wav2vec2")
    layers = adapter_layers(model)
    ran: list[str] = []
    for layer in layers:
        layer.register_forward_hook(lambda m, i, o: ran.append(m.adapter_name))
    seen_partial = False
    for seed in range(12):
        ran.clear()
        torch.manual_seed(seed)
        loss = _task_loss(model, inputs) + aux_loss(model)
        loss.backward()  # would fail on a stale graph from an earlier step
        expected = [layer.last_terms["total"] for layer in layers if layer.adapter_name in ran]
        assert all(layer.last_terms is None for layer in layers if layer.adapter_name not in ran)
        if expected:
            torch.testing.assert_close(aux_loss(model), torch.stack(expected).mean())
        seen_partial |= 0 < len(ran) < len(layers)
    assert seen_partial


def model_aux_weight(model: nn.Module) -> float:
    return getattr(model.adapter_state.config, "aux_weight", 0.0)


def test_aux_loss_ignores_padded_frames_in_a_speech_batch():
    model, _ = _adapted("wav2vec2", "fvae_lora")
    model.train()
    wavs = tiny_inputs("wav2vec2")
    frames = model.backbone._get_feat_extract_output_lengths(torch.tensor(wavs.shape[1])).item()
    mask = torch.ones(2, frames, dtype=torch.bool)
    mask[1, frames // 2 :] = False

    def run(inputs: torch.Tensor) -> float:
        torch.manual_seed(0)
        with frame_mask(model, mask):
            model(inputs)
        return aux_loss(model).item()

    # Junk in the padded tail changes what reaches those frames, but no masked frame may enter the loss.
    layer = adapter_layers(model)[0]
    captured = []
    layer.register_forward_hook(lambda m, i, o: captured.append(i[0].detach()))
    clean = run(wavs)
    noisy_input = captured[-1].clone()
    noisy_input[1, frames // 2 :] += 100.0
    torch.manual_seed(0)
    layer.frame_mask = mask
    layer(captured[-1])
    before = layer.last_terms["total"].item()
    torch.manual_seed(0)
    layer(noisy_input)
    assert layer.last_terms["total"].item() == before
    assert clean > 0 and layer.frame_mask is mask


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_training_stays_finite(dtype):
    model, _ = _adapted("wav2vec2", "fvae_lora")
    model.train()
    with torch.autocast("cpu", dtype=dtype):
        loss = _task_loss(model, tiny_inputs("wav2vec2")) + 1e-3 * aux_loss(model)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert all(torch.isfinite(v) for v in loss_terms(model).values())


@pytest.mark.parametrize("adapter", sorted(CONFIGS))
def test_non_finite_input_raises_naming_the_layer(adapter):
    model, names = _adapted("bert", adapter)
    model.train()
    layer = model.get_submodule(names[0])
    bad = torch.randn(2, 3, 32)
    bad[0, 1, 2] = float("nan")
    with pytest.raises(FloatingPointError, match=names[0]):
        layer(bad)


def test_lora_merges_and_fvae_refuses():
    model, names = _adapted("vit", "lora")
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    _task_loss(model, tiny_inputs("vit")).backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        before = model(tiny_inputs("vit"))
        assert merge_adapters(model) == names
        after = model(tiny_inputs("vit"))
    assert all(type(model.get_submodule(n)) is nn.Linear for n in names)
    assert not adapter_layers(model)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)

    fvae, _ = _adapted("vit", "fvae_lora")
    with pytest.raises(TypeError, match="input-dependent"):
        merge_adapters(fvae)


@pytest.mark.parametrize(
    "field,value",
    [
        ("rank", 0),
        ("z2_dim", -1),
        ("dropout", 1.0),
        ("beta", -1.0),
        ("aux_weight", "x"),
        ("decoder_layers", 0),
        ("decoder_dropout", 1.0),
        ("decoder_dropout", -0.1),
        ("target_modules", []),
        ("target_modules", "("),
        ("logvar_clamp", 0),
    ],
)
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        FVAELoRAConfig(**{field: value})


@pytest.mark.parametrize(
    "field,value",
    [
        ("beta", math.inf),
        ("alpha", math.nan),
        ("delta", math.inf),
        ("aux_weight", math.inf),
        ("prior_mean_z2", math.nan),
        ("prior_mean_z2", -math.inf),
        ("lora_alpha", math.inf),
        ("b_init_std", math.nan),
    ],
)
def test_non_finite_config_values_are_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        FVAELoRAConfig(**{field: value})


def test_config_defaults_follow_the_authors_released_code():
    cfg = FVAELoRAConfig()
    assert (cfg.rank, cfg.z2_dim, cfg.lora_alpha, cfg.scaling) == (16, 16, 8.0, 0.5)  # their default lora_alpha 8
    assert (cfg.encoder_hidden, cfg.decoder_hidden, cfg.decoder_layers) == (16, 128, 3)
    assert (cfg.dropout, cfg.decoder_dropout, cfg.logvar_clamp) == (0.1, 0.1, 20.0)
    assert (cfg.prior_mean_z2, cfg.alpha, cfg.beta, cfg.delta, cfg.aux_weight) == (1.5, 1.0, 1.0, 2 / 16, 1e-3)
    lora = LoRAConfig()  # their LoRA baseline passes lora_alpha 16, as PEFT's convention at rank 16
    assert (lora.rank, lora.lora_alpha, lora.scaling) == (16, 16.0, 1.0)
    assert LoRAConfig(rank=16, lora_alpha=16, use_rslora=True).scaling == 4.0
    small = FVAELoRAConfig(rank=4)  # delta and the encoder width follow the rank unless given
    assert (small.delta, small.encoder_hidden, small.z2_dim, small.scaling) == (0.5, 4, 4, 2.0)
    assert (
        FVAELoRAConfig(rank=4, delta=1.0, encoder_hidden=32).delta,
        FVAELoRAConfig(encoder_hidden=32).encoder_hidden,
    ) == (1.0, 32)
    assert config_from_dict(small.to_dict()) == small


def test_default_layer_has_the_authors_structure():
    """Encoders Linear -> ReLU -> Dropout(0.1) -> zero heads; decoder 3 x [Linear(128) -> ReLU -> Dropout(0.1)]
    -> Linear(d); scale 0.5; the decoder's Linear layers keep the checkpoint names decoder.0, .2, .4, .6."""
    layer = FVAELoRALinear(torch.nn.Linear(40, 24), FVAELoRAConfig(), "q")
    linears = [
        (name, m.in_features, m.out_features)
        for name, m in layer.decoder.named_children()
        if isinstance(m, torch.nn.Linear)
    ]
    assert linears == [("0", 32, 128), ("2", 128, 128), ("4", 128, 128), ("6", 128, 40)]
    blocks = [m for m in layer.decoder if not isinstance(m, torch.nn.Linear)]
    assert len(blocks) == 3
    for block in blocks:
        relu, dropout = block
        assert isinstance(relu, torch.nn.ReLU) and isinstance(dropout, torch.nn.Dropout) and dropout.p == 0.1
    assert [layer.encoder_z1.hidden.out_features, layer.encoder_z2.hidden.out_features] == [16, 16]
    assert layer.encoder_z1.dropout.p == layer.encoder_z2.dropout.p == 0.1
    assert layer.config.scaling == 0.5 and "scaling=0.5" in repr(layer)
    paper_table = FVAELoRALinear(torch.nn.Linear(40, 24), FVAELoRAConfig(decoder_layers=1, decoder_dropout=0.0), "q")
    assert [k for k in paper_table.state_dict() if k.startswith("decoder.")] == [
        "decoder.0.weight",
        "decoder.0.bias",
        "decoder.2.weight",
        "decoder.2.bias",
    ]  # the names of 0.1 files


def test_decoder_dropout_acts_in_training_only():
    torch.manual_seed(0)
    layer = FVAELoRALinear(torch.nn.Linear(12, 10), FVAELoRAConfig(rank=4, decoder_dropout=0.5), "q")
    latents = torch.randn(64, 8)
    layer.train()
    assert not torch.equal(layer.decoder(latents), layer.decoder(latents))  # fresh masks each call
    layer.eval()
    first = layer.decoder(latents)
    assert torch.equal(first, layer.decoder(latents))
    no_dropout = FVAELoRALinear(torch.nn.Linear(12, 10), FVAELoRAConfig(rank=4, decoder_dropout=0.0), "q")
    no_dropout.load_state_dict(layer.state_dict())
    assert torch.equal(first, no_dropout.train().decoder(latents))  # eval = the decoder without dropout


def test_a_degenerate_delta_logs_why(caplog):
    with caplog.at_level(logging.WARNING, logger="fvae_asr.adapters.config"):
        FVAELoRAConfig()
        FVAELoRAConfig(delta=0.0, beta_z2=1.0)
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="fvae_asr.adapters.config"):
        FVAELoRAConfig(delta=1.0, beta=1.0)
    (record,) = caplog.records
    assert "delta" in record.message and "variance" in record.message


@pytest.mark.parametrize("rank", [4, 16])
def test_default_aux_loss_is_the_authors_weighting(rank):
    model = tiny_wav2vec2()
    inject(model, FVAELoRAConfig(rank=rank, target_modules=["q_proj", "k_proj"]))
    model.train()
    model(tiny_inputs("wav2vec2"))
    parts = loss_terms(model)
    expected = parts["reconstruction"] + parts["kl_z1"] - (2 / rank) * parts["gamma"]
    torch.testing.assert_close(aux_loss(model).detach(), expected, rtol=1e-6, atol=1e-5)


def _train_mode_spread_before_and_after_aux_training(**config) -> tuple[float, float]:
    """Mean squared distance of train-mode outputs (z1 sampled) from the eval output (mu1), before and after
    300 aux-only Adam steps: it measures the z1 variance from the outside, through s * B."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 16))
    inject(model, FVAELoRAConfig(rank=4, dropout=0.0, target_modules=["0"], **config))
    x = torch.randn(256, 32) @ torch.randn(32, 32) / 4

    def spread() -> float:
        with torch.no_grad():
            reference = model.eval()(x)
            model.train()
            return torch.stack([(model(x) - reference).square().sum(-1).mean() for _ in range(8)]).mean().item()

    before = spread()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    for _ in range(300):
        model(x)
        optimizer.zero_grad()
        aux_loss(model).backward()
        optimizer.step()
    return before, spread()


def test_aux_only_training_keeps_the_z1_variance_bounded_with_the_defaults():
    before, after = _train_mode_spread_before_and_after_aux_training()
    assert after <= 2 * before
    before, after = _train_mode_spread_before_and_after_aux_training(delta=1.0)  # delta = beta: degenerate
    assert after >= 20 * before


def test_aux_weight_is_lambda_for_fvae_and_zero_otherwise():
    assert aux_weight(nn.Linear(2, 2)) == 0.0
    for config, expected in (
        (FVAELoRAConfig(aux_weight=0.25, target_modules=["0"]), 0.25),
        (LoRAConfig(target_modules=["0"]), 0.0),
    ):
        model = nn.Sequential(nn.Linear(4, 4))
        inject(model, config)
        assert aux_weight(model) == expected
