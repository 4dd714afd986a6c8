"""Adapter-only checkpoints: bit-exact round trips, no base weights, no pickle, clear mismatch errors."""

import dataclasses
import json
import os
import re
import warnings

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import Wav2Vec2Config, Wav2Vec2Model

from fvae_asr import FVAELoRAConfig, LoRAConfig, adapter_layers, aux_loss, inject, load_adapter, save_adapter

from tiny_models import TINY_WAV2VEC2, WithHead, tiny_inputs, tiny_wav2vec2


def _trained(config, steps: int = 2) -> WithHead:
    model = WithHead(tiny_wav2vec2(seed=0))
    inject(model, config)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        (model(tiny_inputs("wav2vec2")).square().mean() + aux_loss(model)).backward()
        opt.step()
    return model.eval()


CONFIGS = [
    FVAELoRAConfig(rank=4, trainable_modules=["head"]),
    LoRAConfig(rank=4, trainable_modules=["head"], use_rslora=True),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.adapter_type)
def test_round_trip_is_bit_exact_and_adapter_only(tmp_path, config):
    model = _trained(config)
    save_adapter(model, tmp_path)
    saved = load_file(str(tmp_path / "adapter_model.safetensors"))
    meta = json.loads((tmp_path / "adapter_config.json").read_text())
    if config.adapter_type == "lora":  # LoRA is written in PEFT's format: its names, our config inside
        assert all(k.startswith("base_model.model.") for k in saved)
        saved = {k.removeprefix("base_model.model."): v for k, v in saved.items()}
        assert meta["peft_type"] == "LORA" and meta["r"] == 4
        meta = meta["fvae_asr"]
    assert saved and not any(".base." in k for k in saved)
    assert {k for k in saved if k.startswith("head.")} == {"head.weight", "head.bias"}
    assert not any(k.startswith("backbone.feature_extractor") for k in saved)
    assert meta["adapter_type"] == config.adapter_type and meta["rank"] == 4

    fresh = WithHead(tiny_wav2vec2(seed=0))  # same base weights, head re-initialised differently
    torch.nn.init.zeros_(fresh.head.weight)
    assert load_adapter(fresh, tmp_path) == model.adapter_state.adapted_modules
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(tiny_inputs("wav2vec2")), model(tiny_inputs("wav2vec2")))
    assert type(fresh.adapter_state.config) is type(config)


def test_a_lora_checkpoint_in_the_format_before_peft_names_still_loads(tmp_path):
    """LoRA checkpoints written before LoRA moved to PEFT's format: our flat config, our tensor names."""
    model = _trained(CONFIGS[1])
    save_adapter(model, tmp_path)
    config_path, weights_path = tmp_path / "adapter_config.json", tmp_path / "adapter_model.safetensors"
    config_path.write_text(json.dumps(json.loads(config_path.read_text())["fvae_asr"]))
    save_file(
        {k.removeprefix("base_model.model."): v for k, v in load_file(str(weights_path)).items()}, str(weights_path)
    )
    fresh = WithHead(tiny_wav2vec2(seed=0))
    torch.nn.init.zeros_(fresh.head.weight)
    load_adapter(fresh, tmp_path)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(tiny_inputs("wav2vec2")), model(tiny_inputs("wav2vec2")))


def test_loading_into_a_different_rank_is_named(tmp_path):
    save_adapter(_trained(CONFIGS[0], steps=0), tmp_path)
    other = WithHead(tiny_wav2vec2())
    inject(other, FVAELoRAConfig(rank=8, trainable_modules=["head"]))
    with pytest.raises(ValueError, match=r"saved rank = 4, but the model's adapters have rank = 8"):
        load_adapter(other, tmp_path)


def test_missing_and_unexpected_tensors_are_named(tmp_path):
    save_adapter(_trained(CONFIGS[0], steps=0), tmp_path)
    path = tmp_path / "adapter_model.safetensors"
    tensors = load_file(str(path))
    victim = sorted(tensors)[0]
    del tensors[victim]
    save_file(tensors, str(path))
    with pytest.raises(ValueError, match=f"'{victim}' is missing"):
        load_adapter(WithHead(tiny_wav2vec2()), tmp_path)
    tensors[victim + "_extra"] = torch.zeros(1)
    tensors[victim] = torch.zeros(1)
    save_file(tensors, str(path))
    with pytest.raises(ValueError, match="has shape|unexpected"):
        load_adapter(WithHead(tiny_wav2vec2()), tmp_path)


def test_other_target_modules_are_reported(tmp_path):
    save_adapter(_trained(CONFIGS[0], steps=0), tmp_path)
    other = WithHead(tiny_wav2vec2())
    inject(other, FVAELoRAConfig(rank=4, target_modules=["v_proj"], trainable_modules=["head"]))
    with pytest.raises(ValueError, match="adapted modules differ"):
        load_adapter(other, tmp_path)


def test_bad_config_file_is_named(tmp_path):
    (tmp_path / "adapter_config.json").write_text('{"adapter_type": "fvae_lora", "rank": 0}')
    with pytest.raises(ValueError, match="adapter_config.json.*rank"):
        load_adapter(WithHead(tiny_wav2vec2()), tmp_path)
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="adapter_config.json: invalid JSON at line 1"):
        load_adapter(WithHead(tiny_wav2vec2()), tmp_path)
    with pytest.raises(FileNotFoundError, match="no adapter config"):
        load_adapter(WithHead(tiny_wav2vec2()), tmp_path / "missing")


def test_saving_a_model_without_adapters_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match="no adapters"):
        save_adapter(WithHead(tiny_wav2vec2()), tmp_path)


def test_base_state_dict_is_the_state_before_injection():
    reference = tiny_wav2vec2(seed=0).state_dict()
    model = WithHead(tiny_wav2vec2(seed=0))
    inject(model, FVAELoRAConfig(rank=4))
    base = __import__("fvae_asr").base_state_dict(model.backbone)
    assert base.keys() == reference.keys()
    assert all(torch.equal(base[k], reference[k]) for k in reference)


def test_non_finite_weights_are_rejected_naming_file_and_tensor(tmp_path):
    save_adapter(_trained(CONFIGS[0], steps=0), tmp_path)
    path = tmp_path / "adapter_model.safetensors"
    tensors = load_file(str(path))
    victim = sorted(tensors)[-1]
    tensors[victim][..., 0] = float("inf")
    save_file(tensors, str(path))
    with pytest.raises(ValueError, match=f"adapter_model.safetensors: tensor '{victim}' has non-finite"):
        load_adapter(WithHead(tiny_wav2vec2()), tmp_path)


@pytest.mark.parametrize("content", ["[]", '"fvae_lora"', "3"])
def test_a_config_that_is_not_an_object_is_named(tmp_path, content):
    save_adapter(_trained(CONFIGS[0], steps=0), tmp_path)
    (tmp_path / "adapter_config.json").write_text(content)
    with pytest.raises(ValueError, match="adapter_config.json: expected a JSON object"):
        load_adapter(WithHead(tiny_wav2vec2()), tmp_path)


def test_saved_files_get_the_umask_permissions(tmp_path):
    old = os.umask(0o027)
    try:
        save_adapter(_trained(CONFIGS[0], steps=0), tmp_path)
    finally:
        os.umask(old)
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in tmp_path.iterdir()}
    assert modes == {"adapter_config.json": "0o640", "adapter_model.safetensors": "0o640"}


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    save_adapter(_trained(CONFIGS[0], steps=0), tmp_path)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    (tmp_path / f".adapter_model.safetensors.{os.getpid()}.tmp").mkdir()  # the weights cannot be written
    with pytest.raises((OSError, SafetensorError), match="directory"):
        save_adapter(_trained(CONFIGS[0], steps=1), tmp_path)
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir() if path.is_file()} == before


def test_an_adapter_written_before_the_authors_defaults_loads_as_it_trained(tmp_path):
    """A 0.1 file: scale 1 (lora_alpha 16), a 1-layer decoder without dropout, clamp 10, and no decoder_dropout
    field. It loads with its own numbers, not today's defaults: same eval output, same training loss."""
    old = FVAELoRAConfig(
        rank=4, lora_alpha=16, decoder_layers=1, decoder_dropout=0.0, logvar_clamp=10.0, trainable_modules=["head"]
    )
    model = _trained(old)
    save_adapter(model, tmp_path)
    config_path = tmp_path / "adapter_config.json"
    written = json.loads(config_path.read_text())
    del written["decoder_dropout"]  # the field did not exist in 0.1
    config_path.write_text(json.dumps(written))

    fresh = WithHead(tiny_wav2vec2(seed=0))
    load_adapter(fresh, tmp_path)
    loaded = fresh.adapter_state.config
    assert (loaded.lora_alpha, loaded.decoder_layers, loaded.decoder_dropout, loaded.logvar_clamp) == (16, 1, 0.0, 10.0)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(tiny_inputs("wav2vec2")), model(tiny_inputs("wav2vec2")))
        for trained, reloaded in zip(adapter_layers(model), adapter_layers(fresh), strict=True):
            x = torch.randn(2, 5, trained.in_features)
            terms = []
            for layer in (trained, reloaded):  # the same noise and dropout masks
                torch.manual_seed(7)
                layer.train()(x)
                terms.append(layer.last_terms["total"])
            assert torch.equal(*terms)


@pytest.mark.parametrize(
    "saved, loaded, field",
    [
        (LoRAConfig(rank=4, lora_alpha=8), LoRAConfig(rank=4, lora_alpha=32), "lora_alpha"),
        (FVAELoRAConfig(rank=4, aux_weight=1e-3), FVAELoRAConfig(rank=4, aux_weight=0.1), "aux_weight"),
        (FVAELoRAConfig(rank=4, delta=0.1), FVAELoRAConfig(rank=4, delta=0.2), "delta"),
    ],
    ids=["lora-alpha", "aux-weight", "delta"],
)
def test_loading_into_an_adapted_model_with_other_settings_names_the_field(tmp_path, saved, loaded, field):
    save_adapter(_trained(saved, steps=0), tmp_path)
    adapted = WithHead(tiny_wav2vec2())
    inject(adapted, loaded)
    with pytest.raises(ValueError, match=rf"adapter_config\.json: saved {field} = .*the model's adapters have {field}"):
        load_adapter(adapted, tmp_path)
    same = WithHead(tiny_wav2vec2())
    inject(same, dataclasses.replace(saved, check_finite=False))  # a setting that computes the same is no mix
    assert load_adapter(same, tmp_path) == same.adapter_state.adapted_modules


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(lora_alpha=32), "PEFT's 'lora_alpha' is 32 but fvae_asr.lora_alpha is 8"),
        (lambda c: c["fvae_asr"].update(lora_alpha=32), "PEFT's 'lora_alpha' is 8 but fvae_asr.lora_alpha is 32"),
        (lambda c: c.update(r=8), "PEFT's 'r' is 8 but fvae_asr.rank is 4"),
        (lambda c: c.update(lora_alpha=float("nan")), "lora_alpha must be a finite number"),
    ],
    ids=["peft-alpha", "own-alpha", "rank", "nan"],
)
def test_peft_fields_and_our_copy_must_agree(tmp_path, edit, message):
    save_adapter(_trained(LoRAConfig(rank=4, lora_alpha=8), steps=0), tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    edit(config)
    (tmp_path / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        load_adapter(WithHead(tiny_wav2vec2()), tmp_path)


def test_adapter_tensors_stored_as_integers_are_refused(tmp_path):
    save_adapter(_trained(CONFIGS[0]), tmp_path)
    path = tmp_path / "adapter_model.safetensors"
    tensors = load_file(str(path))
    victim = next(key for key in sorted(tensors) if ".lora_" in key or "lora_B" in key)
    tensors[victim] = (tensors[victim] * 1000).to(torch.int64)
    save_file(tensors, str(path))
    with pytest.raises(ValueError, match=rf"tensor '{victim}' is stored as torch.int64"):
        load_adapter(WithHead(tiny_wav2vec2()), tmp_path)


def test_saved_patterns_matching_layers_without_weights_warn_naming_them(tmp_path):
    shallow = tiny_wav2vec2()
    inject(shallow, FVAELoRAConfig(rank=4, target_modules=["q_proj"]))
    save_adapter(shallow, tmp_path)
    deeper = Wav2Vec2Model(Wav2Vec2Config(**{**TINY_WAV2VEC2, "num_hidden_layers": 4})).eval()
    with pytest.warns(UserWarning, match=r"also match 2 layer\(s\).*layers\.2\.attention\.q_proj, .*layers\.3\."):
        adapted = load_adapter(deeper, tmp_path)
    assert adapted == [f"encoder.layers.{i}.attention.q_proj" for i in (0, 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the model the file was saved from: nothing to warn about
        load_adapter(tiny_wav2vec2(), tmp_path)


def test_an_extra_base_tensor_in_an_fvae_adapter_file_is_the_tensor_named(tmp_path):
    save_adapter(_trained(CONFIGS[0], steps=0), tmp_path)
    path = tmp_path / "adapter_model.safetensors"
    tensors = load_file(str(path))
    base = WithHead(tiny_wav2vec2()).state_dict()
    extra = "backbone.feature_projection.layer_norm.weight"
    tensors[extra] = base[extra]
    save_file(tensors, str(path))
    with pytest.raises(ValueError, match=rf"unexpected tensor '{re.escape(extra)}'"):
        load_adapter(WithHead(tiny_wav2vec2()), tmp_path)
