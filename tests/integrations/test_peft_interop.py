"""PEFT interoperability of the LoRA baseline: our LoRA adapters load in PEFT and PEFT's load here, with
bit-identical outputs; FVAE-LoRA adapters keep our format; PEFT features our LoRA lacks are named errors."""

import json

import pytest
import torch
from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model
from safetensors.torch import load_file

from fvae_asr import FVAELoRAConfig, LoRAConfig, inject, load_adapter, save_adapter

from tiny_models import WithHead, tiny_bert, tiny_inputs

# PEFT warns that it ignores our own config, kept under "fvae_asr" in adapter_config.json for our loader.
pytestmark = pytest.mark.filterwarnings(r"ignore:Unexpected keyword arguments \['fvae_asr'\]:UserWarning")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """PEFT gets local folders only; it must never reach for the hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _fresh() -> WithHead:
    """The same base weights as every other model here, with a zero head: only a loaded head can match."""
    model = WithHead(tiny_bert(seed=0))
    torch.nn.init.zeros_(model.head.weight)
    return model.eval()


def _perturb(model: torch.nn.Module) -> None:
    """Move every trainable tensor off its initial value (B starts at zero, so outputs would equal the base's)."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.2 * torch.randn(param.shape, generator=generator))


def _outputs(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(tiny_inputs("bert"))


def _ours(config: LoRAConfig) -> WithHead:
    model = WithHead(tiny_bert(seed=0))
    inject(model, config)
    _perturb(model)
    return model.eval()


def _peft(config: LoraConfig) -> PeftModel:
    model = get_peft_model(WithHead(tiny_bert(seed=0)), config)
    _perturb(model)
    return model.eval()


@pytest.mark.parametrize("use_rslora", [False, True], ids=["lora", "rslora"])
@pytest.mark.parametrize("targets", [["query", "value"], r".*\.(query|value)"], ids=["suffixes", "regex"])
def test_our_lora_adapter_loads_in_peft_with_identical_outputs(tmp_path, use_rslora, targets):
    ours = _ours(
        LoRAConfig(rank=4, lora_alpha=8, target_modules=targets, trainable_modules=["head"], use_rslora=use_rslora)
    )
    save_adapter(ours, tmp_path)
    expected = _outputs(ours)
    assert not torch.equal(expected, _outputs(_fresh()))  # the adapter and the head change the outputs

    in_peft = PeftModel.from_pretrained(_fresh(), tmp_path)
    assert in_peft.peft_config["default"].use_rslora is use_rslora
    assert torch.equal(_outputs(in_peft), expected)


@pytest.mark.parametrize("use_rslora", [False, True], ids=["lora", "rslora"])
@pytest.mark.parametrize("targets", [["query", "value"], r".*\.(query|value)"], ids=["suffixes", "regex"])
def test_a_peft_lora_adapter_loads_here_with_identical_outputs_and_saves_back(tmp_path, use_rslora, targets):
    peft_model = _peft(
        LoraConfig(r=4, lora_alpha=8, target_modules=targets, modules_to_save=["head"], use_rslora=use_rslora)
    )
    peft_model.save_pretrained(tmp_path / "peft")
    expected = _outputs(peft_model)
    assert not torch.equal(expected, _outputs(_fresh()))

    ours = _fresh()
    adapted = load_adapter(ours, tmp_path / "peft")
    assert len(adapted) == 4 and all(name.endswith(("query", "value")) for name in adapted)
    assert ours.adapter_state.config.use_rslora is use_rslora
    assert torch.equal(_outputs(ours), expected)

    save_adapter(ours, tmp_path / "ours")  # and back to PEFT, unchanged
    assert torch.equal(_outputs(PeftModel.from_pretrained(_fresh(), tmp_path / "ours")), expected)


def test_saved_names_match_what_peft_itself_saves(tmp_path):
    """The same adapter saved by PEFT and by us holds the same tensors under the same names."""
    peft_model = _peft(LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], modules_to_save=["head"]))
    peft_model.save_pretrained(tmp_path / "peft")
    ours = _fresh()
    load_adapter(ours, tmp_path / "peft")
    save_adapter(ours, tmp_path / "ours")
    theirs, mine = (load_file(str(tmp_path / d / "adapter_model.safetensors")) for d in ("peft", "ours"))
    assert theirs.keys() == mine.keys() and any(k.endswith("head.weight") for k in mine)
    assert all(torch.equal(theirs[k], mine[k]) for k in theirs)


def test_an_fvae_lora_adapter_keeps_our_format_and_peft_refuses_it(tmp_path):
    model = WithHead(tiny_bert(seed=0))
    inject(model, FVAELoRAConfig(rank=4, target_modules=["query", "value"], trainable_modules=["head"]))
    _perturb(model)
    save_adapter(model, tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert "peft_type" not in saved and saved["adapter_type"] == "fvae_lora"
    with pytest.raises(TypeError, match="missing required keys: {'peft_type'}"):  # PEFT has no FVAE-LoRA layers
        PeftConfig.from_pretrained(str(tmp_path))
    with pytest.raises(KeyError, match="peft_type"):
        PeftModel.from_pretrained(_fresh(), tmp_path)

    fresh = _fresh()
    load_adapter(fresh, tmp_path)
    assert type(fresh.adapter_state.config) is FVAELoRAConfig
    assert torch.equal(_outputs(fresh), _outputs(model))


@pytest.mark.parametrize(
    "field, value",
    [
        ("use_dora", True),
        ("bias", "all"),
        ("rank_pattern", {"query": 8}),
        ("alpha_pattern", {"query": 2}),
        ("layers_to_transform", [0]),
        ("peft_type", "IA3"),
        ("a_later_peft_feature", {"query": "changes the maths"}),  # a field PEFT adds later is refused, not ignored
    ],
)
def test_peft_features_our_lora_lacks_are_errors_naming_the_field(tmp_path, field, value):
    _peft(LoraConfig(r=4, target_modules=["query", "value"])).save_pretrained(tmp_path)
    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), field: value}))
    model = _fresh()
    with pytest.raises(ValueError, match=f"adapter_config.json: .*'?{field}'?") as caught:
        load_adapter(model, tmp_path)
    assert repr(value) in str(caught.value) and getattr(model, "adapter_state", None) is None


def test_a_peft_adapter_on_a_layer_that_is_not_linear_is_named(tmp_path):
    _peft(LoraConfig(r=4, target_modules=["word_embeddings", "query"])).save_pretrained(tmp_path)
    model = _fresh()
    with pytest.raises(ValueError, match="targets 'backbone.embeddings.word_embeddings', a Embedding"):
        load_adapter(model, tmp_path)
    assert getattr(model, "adapter_state", None) is None
