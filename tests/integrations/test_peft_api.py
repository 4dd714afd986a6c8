"""PEFT's verbs on our adapters (``get_fvae_model``, ``FVAEModel``), side by side with real PEFT: a LoRA script gives
the same printed counts, outputs and files on both; FVAE-LoRA adapters are added, switched, disabled and saved by
the same verbs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft import inject_adapter_in_model as peft_inject_adapter_in_model
from safetensors.torch import load_file

from fvae_asr import (
    FVAELoRAConfig,
    FVAEModel,
    LoRAConfig,
    aux_loss,
    get_fvae_model,
    inject,
    inject_adapter_in_model,
    load_adapter,
    save_adapter,
)

from tiny_models import WithHead, tiny_bert, tiny_inputs

# PEFT warns that it ignores our own config, kept under "fvae_asr" in adapter_config.json for our loader.
pytestmark = pytest.mark.filterwarnings(r"ignore:Unexpected keyword arguments \['fvae_asr'\]:UserWarning")

TARGETS = ["query", "value"]
PEFT = {"get_model": get_peft_model, "config": LoraConfig, "load": PeftModel.from_pretrained}
OURS_AND_PEFT = ("ours", "peft")
OURS = {"get_model": get_fvae_model, "config": LoRAConfig, "load": FVAEModel.from_pretrained}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _base() -> WithHead:
    return WithHead(tiny_bert(seed=0)).eval()


def _outputs(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(tiny_inputs("bert"))


def _train_step(model: torch.nn.Module) -> None:
    """One SGD step on a fixed target, over the parameters the model marks trainable."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    loss = model(tiny_inputs("bert")).square().mean()
    loss.backward()
    optimizer.step()
    model.eval()


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Move the trainable tensors off their initial values (B starts at zero: outputs would equal the base's)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            if param.requires_grad:
                param.add_(0.2 * torch.randn(param.shape, generator=generator))


def _lora_script(api: dict, folder: Path, capsys) -> dict:
    """A PEFT user's LoRA script, written once against ``api`` (PEFT's or ours); what it prints, computes and saves."""
    torch.manual_seed(11)  # the adapters' initialisation draws from the global generator, in both libraries
    config = api["config"](r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS, modules_to_save=["head"])
    model = api["get_model"](_base(), config)
    model.print_trainable_parameters()
    record = {"initial": _outputs(model)}
    _train_step(model)
    record["trained"] = _outputs(model)
    with model.disable_adapter():
        record["disabled"] = _outputs(model)
    model.add_adapter("other", api["config"](r=2, lora_alpha=4, target_modules=["key"]))
    model.set_adapter("other")
    record["active"] = model.active_adapter
    _train_step(model)
    record["other"] = _outputs(model)
    model.save_pretrained(folder)
    model.set_adapter("default")
    record["default_again"] = _outputs(model)
    record["reloaded"] = _outputs(api["load"](_base(), folder))
    record["merged"] = _outputs(model.merge_and_unload())
    record["printed"] = capsys.readouterr().out
    return record


def test_a_peft_lora_script_gives_the_same_counts_outputs_and_files_on_our_wrapper(tmp_path, capsys):
    theirs = _lora_script(PEFT, tmp_path / "peft", capsys)
    ours = _lora_script(OURS, tmp_path / "ours", capsys)

    assert ours["printed"] == theirs["printed"] and theirs["printed"].startswith("trainable params: 1,189 ||")
    for key in ("initial", "trained", "disabled", "other", "default_again", "reloaded"):
        assert torch.equal(ours[key], theirs[key]), key
    assert torch.equal(ours["merged"], theirs["merged"])
    assert ours["active"] == theirs["active"] == "other"
    assert not torch.equal(theirs["trained"], theirs["initial"]) and not torch.equal(theirs["other"], theirs["trained"])
    assert torch.equal(ours["disabled"], _outputs(_base()))

    files = {
        d: sorted(p.relative_to(tmp_path / d).as_posix() for p in (tmp_path / d).rglob("*")) for d in OURS_AND_PEFT
    }
    assert files["ours"] == files["peft"] and "other/adapter_model.safetensors" in files["peft"]
    for weights in ("adapter_model.safetensors", "other/adapter_model.safetensors"):
        saved = {folder: load_file(str(tmp_path / folder / weights)) for folder in OURS_AND_PEFT}
        assert saved["ours"].keys() == saved["peft"].keys()
        assert all(torch.equal(saved["ours"][k], saved["peft"][k]) for k in saved["peft"])


def test_each_side_loads_the_other_sides_named_adapters(tmp_path):
    model = get_fvae_model(_base(), LoRAConfig(r=4, target_modules=TARGETS, modules_to_save=["head"]))
    model.add_adapter("other", LoRAConfig(r=2, target_modules=["key"]))
    for name in ("default", "other"):
        model.set_adapter(name)
        _perturb(model, seed=len(name))
    model.save_pretrained(tmp_path)
    in_peft = PeftModel.from_pretrained(_base(), tmp_path)
    in_peft.load_adapter(tmp_path / "other", adapter_name="other")
    ours = FVAEModel.from_pretrained(_base(), tmp_path)
    ours.load_adapter(tmp_path / "other", adapter_name="other")
    for name in ("default", "other", "default"):
        for loaded in (in_peft, ours):
            loaded.set_adapter(name)
        model.set_adapter(name)
        assert torch.equal(_outputs(in_peft), _outputs(model)) and torch.equal(_outputs(ours), _outputs(model))


def test_a_loaded_adapter_is_frozen_unless_asked_trainable_as_in_peft(tmp_path):
    model = get_fvae_model(_base(), FVAELoRAConfig(r=4, target_modules=TARGETS, modules_to_save=["head"]))
    model.save_pretrained(tmp_path)
    frozen = FVAEModel.from_pretrained(_base(), tmp_path)
    assert frozen.get_nb_trainable_parameters()[0] == 0 and not frozen.training
    trainable = FVAEModel.from_pretrained(_base(), tmp_path, is_trainable=True)
    assert trainable.get_nb_trainable_parameters() == model.get_nb_trainable_parameters()


def _fvae(seed: int, **fields) -> FVAELoRAConfig:
    torch.manual_seed(seed)
    return FVAELoRAConfig(r=4, target_modules=TARGETS, modules_to_save=["head"], **fields)


def test_several_fvae_adapters_on_one_base_switch_disable_and_save(tmp_path):
    base_outputs = _outputs(_base())
    model = get_fvae_model(_base(), _fvae(1))
    model.add_adapter("deeper", FVAELoRAConfig(r=2, target_modules=["key", "value"], decoder_layers=1))
    model.add_adapter("lora", LoRAConfig(r=2, target_modules=["query"]))
    outputs = {}
    for name in ("default", "deeper", "lora"):
        model.set_adapter(name)
        assert model.active_adapter == name and model.peft_config[name] is model.get_base_model().adapter_state.config
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable and all(
            ("lora_" in n or "encoder_z" in n or "decoder" in n or ".head." in n) for n in trainable
        )
        _perturb(model, seed=len(name))
        outputs[name] = _outputs(model)
        with model.disable_adapter():
            assert torch.equal(_outputs(model), base_outputs)
        assert torch.equal(_outputs(model), outputs[name])
    assert len({tuple(o.flatten().tolist()) for o in outputs.values()}) == 3 and not torch.equal(
        outputs["default"], base_outputs
    )
    for name in ("lora", "default", "deeper"):  # switching back gives each adapter's outputs again
        model.set_adapter(name)
        assert torch.equal(_outputs(model), outputs[name])

    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "deeper" / "adapter_config.json").read_text())["decoder_layers"] == 1
    for name in ("default", "deeper", "lora"):  # each saved adapter is the plain single-adapter format
        plain = _base()
        load_adapter(plain, tmp_path if name == "default" else tmp_path / name)
        assert torch.equal(_outputs(plain), outputs[name])


def test_only_the_active_fvae_adapter_trains_and_adds_its_loss():
    model = get_fvae_model(_base(), _fvae(1))
    model.add_adapter("second", FVAELoRAConfig(r=2, target_modules=["key"]))
    model.train()
    model(tiny_inputs("bert"))
    first_loss = aux_loss(model)
    model.set_adapter("second")
    model(tiny_inputs("bert"))
    assert first_loss > 0 and aux_loss(model) > 0 and not torch.equal(aux_loss(model), first_loss)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".key." in n for n in trainable)  # the first adapter's layers are out of the model


def test_delete_adapter_falls_back_to_the_remaining_one():
    model = get_fvae_model(_base(), _fvae(1))
    model.add_adapter("second", _fvae(2))
    model.set_adapter("second")
    _perturb(model, seed=4)
    expected = _outputs(model)
    model.set_adapter("default")
    model.delete_adapter("default")
    assert model.active_adapter == "second" and list(model.peft_config) == ["second"]
    assert torch.equal(_outputs(model), expected)
    with pytest.raises(ValueError, match="no adapter named 'default'; the adapters are: 'second'"):
        model.set_adapter("default")
    with pytest.raises(ValueError, match="adapter 'second' already exists"):
        model.add_adapter("second", _fvae(3))


def test_merging_fvae_lora_is_refused_in_one_line_and_unload_gives_the_plain_model():
    model = get_fvae_model(_base(), _fvae(1))
    _perturb(model, seed=5)
    adapted = _outputs(model)
    with pytest.raises(TypeError, match=r"^adapter 'default' is FVAE-LoRA, which cannot be merged: [^\n]*$"):
        model.merge_and_unload()
    assert torch.equal(_outputs(model), adapted)  # nothing changed
    head = model.get_base_model().head
    plain = model.unload()
    assert plain.head is head  # the adapter's trained head copy stays, as in PEFT
    assert not any("lora_" in name for name, _ in plain.named_parameters())
    assert getattr(plain, "adapter_state", None) is None
    expected = _base()
    expected.head.load_state_dict(head.state_dict())
    assert torch.equal(_outputs(plain), _outputs(expected))


def test_inject_adapter_in_model_takes_peft_arguments_in_peft_order():
    theirs = peft_inject_adapter_in_model(LoraConfig(r=4, target_modules=TARGETS), _base())
    ours = inject_adapter_in_model(LoRAConfig(r=4, target_modules=TARGETS), _base())
    assert ours.adapter_state.adapted_modules == sorted(
        name.removesuffix(".lora_A.default") for name, _ in theirs.named_modules() if name.endswith("lora_A.default")
    )
    with pytest.raises(ValueError, match="a bare model holds one adapter"):
        inject_adapter_in_model(LoRAConfig(r=4, target_modules=TARGETS), _base(), adapter_name="other")


def test_configs_take_peft_field_names():
    peft_named = FVAELoRAConfig(r=8, lora_dropout=0.2, modules_to_save=["head"])
    assert peft_named == FVAELoRAConfig(rank=8, dropout=0.2, trainable_modules=["head"])
    assert (peft_named.r, peft_named.lora_dropout, peft_named.modules_to_save) == (8, 0.2, ["head"])
    with pytest.raises(TypeError, match="LoRAConfig got both 'r' .* and 'rank'"):
        LoRAConfig(r=4, rank=8)


def test_a_peft_config_given_to_our_wrapper_is_named():
    with pytest.raises(TypeError, match="must be an fvae_asr FVAELoRAConfig or LoRAConfig, got LoraConfig"):
        get_fvae_model(_base(), LoraConfig(r=4, target_modules=TARGETS))


def test_wrapping_a_model_that_has_adapters_is_refused():
    model = _base()
    inject(model, LoRAConfig(r=4, target_modules=TARGETS))
    with pytest.raises(ValueError, match="already has adapters"):
        get_fvae_model(model, LoRAConfig(r=4, target_modules=TARGETS))


def test_a_failed_load_leaves_the_wrapper_as_it_was(tmp_path):
    model = get_fvae_model(_base(), _fvae(1))
    _perturb(model, seed=6)
    expected = _outputs(model)
    other = _base()
    inject(other, LoRAConfig(r=4, target_modules=TARGETS))
    save_adapter(other, tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="adapter_model.safetensors"):
        model.load_adapter(tmp_path, "broken")
    assert list(model.peft_config) == ["default"] and torch.equal(_outputs(model), expected)


@pytest.mark.e2e
def test_fvae_trainer_trains_and_saves_the_wrapped_model(tmp_path):
    pytest.importorskip("accelerate")
    from fvae_asr.integrations.transformers import FVAETrainer

    from trainer_task import ParityTask, pad_collate, tiny_bert_base, training_args

    config = FVAELoRAConfig(r=4, target_modules=["query", "key"], modules_to_save=["classifier"], aux_weight=0.5)
    model = get_fvae_model(tiny_bert_base(), config)
    model.add_adapter("idle", LoRAConfig(r=2, target_modules=["value"]))
    model.set_adapter("idle")
    idle = {n: p.detach().clone() for n, p in model.get_base_model().named_parameters() if "lora_" in n}
    model.set_adapter("default")
    trainer = FVAETrainer(
        model=model,
        args=training_args(tmp_path, eval_strategy="steps", eval_steps=3),
        train_dataset=ParityTask(),
        eval_dataset=ParityTask(size=8, seed=1),
        data_collator=pad_collate,
    )
    assert trainer.label_names == ["labels"]
    before = _classifier_outputs(model)
    trainer.train()
    logs = trainer.state.log_history
    assert all({"fvae_total", "fvae_gamma"} <= set(entry) for entry in logs if "loss" in entry)
    assert any("eval_loss" in entry for entry in logs)  # the labels were found behind the wrapper
    trained = _classifier_outputs(model)
    assert not torch.equal(trained, before)
    trainer.save_model(tmp_path / "saved")
    reloaded = FVAEModel.from_pretrained(tiny_bert_base(), tmp_path / "saved")
    assert torch.equal(_classifier_outputs(reloaded), trained)
    model.set_adapter("idle")  # the inactive adapter did not train
    assert all(torch.equal(p, idle[n]) for n, p in model.get_base_model().named_parameters() if "lora_" in n)


def _classifier_outputs(model: torch.nn.Module) -> torch.Tensor:
    from trainer_task import ParityTask, pad_collate

    batch = pad_collate([ParityTask(size=4, seed=5)[i] for i in range(4)])
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_dtype_and_mode_changes_reach_the_adapters_kept_aside():
    model = get_fvae_model(_base(), _fvae(1))
    model.add_adapter("second", FVAELoRAConfig(r=2, target_modules=["key"], modules_to_save=["head"]))
    model.double().train()
    model.set_adapter("second")
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert all(m.training for m in model.modules())
    model.eval()
    model.set_adapter("default")
    assert not any(m.training for m in model.modules())
    assert model(tiny_inputs("bert")).dtype == torch.float64
    with model.disable_adapter():  # the base head, displaced by the adapters' copies, followed too
        assert model.get_base_model().head.weight.dtype == torch.float64
