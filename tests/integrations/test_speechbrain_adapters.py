"""FVAE-LoRA and LoRA as adapter_class of SpeechBrain's own AdaptedModel: outputs, aux loss, gradients, masking,
yaml, checkpoints, on a Linear stack, SpeechBrain's Transformer encoder and its HuggingFace wav2vec2 wrapper."""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict
from pathlib import Path

import pytest
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
from speechbrain.nnet.adapters import AdaptedModel
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.epoch_loop import EpochCounter
from torch import nn

import fvae_asr
from fvae_asr import FVAELoRALinear, adapter_layers, aux_loss, aux_weight, frame_mask, loss_terms
from fvae_asr.integrations.speechbrain import FVAELoRA, LoRA, wav2vec2_frame_mask

from tiny_models import TINY_WAV2VEC2

ADAPTERS = {"fvae_lora": FVAELoRA, "lora": LoRA}
KWARGS = {"rank": 4, "lora_alpha": 8}


def linear_stack(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        OrderedDict(
            layer1=nn.Linear(8, 16),
            act=nn.ReLU(),
            layer2=nn.Linear(16, 16),
            layer3=nn.Linear(16, 4),
        )
    )


def sb_encoder(seed: int = 0, layerdrop_prob: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return TransformerEncoder(num_layers=2, nhead=2, d_ffn=32, d_model=8, layerdrop_prob=layerdrop_prob)


class Head(nn.Module):
    """Backbone output (first element for SpeechBrain's encoders, which also return attentions) -> 4 logits."""

    def __init__(self, backbone: nn.Module, width: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.out = nn.Linear(width, 4)

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        y = self.backbone(x) if padding is None else self.backbone(x, src_key_padding_mask=padding)
        return self.out(y[0] if isinstance(y, tuple) else y)


# backbone builder, AdaptedModel's target_layers, unfrozen_layers, input (batch 2, 6 frames)
BACKBONES = {
    "linear_stack": (lambda seed: linear_stack(seed), ["layer[12]"], ["layer3"], (2, 6, 8)),
    "sb_transformer": (lambda seed: Head(sb_encoder(seed), 8), ["*.pos_ffn.ffn.[03]"], ["out"], (2, 6, 8)),
}


def adapted(kind: str, adapter: str, seed: int = 0, **kwargs) -> tuple[AdaptedModel, nn.Module]:
    """(AdaptedModel with our adapters, a copy of the unadapted model)."""
    build, targets, unfrozen, _ = BACKBONES[kind]
    base = build(seed)
    reference = copy.deepcopy(base).requires_grad_(False)  # frozen as AdaptedModel freezes: torch's attention
    model = AdaptedModel(
        base, ADAPTERS[adapter], target_layers=targets, unfrozen_layers=unfrozen, adapter_kwargs={**KWARGS, **kwargs}
    )
    return model, reference


def inputs(kind: str, seed: int = 1) -> torch.Tensor:
    return torch.randn(*BACKBONES[kind][3], generator=torch.Generator().manual_seed(seed))


def task_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return (out[0] if isinstance(out, tuple) else out).square().mean()


@pytest.mark.parametrize("kind", sorted(BACKBONES))
@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_fresh_adapters_leave_eval_outputs_unchanged(kind, adapter):
    model, reference = adapted(kind, adapter)
    layers = adapter_layers(model)
    assert len(layers) == 2 * (2 if kind == "sb_transformer" else 1)
    assert all(type(layer) is ADAPTERS[adapter] and layer.config.rank == 4 for layer in layers)
    model.eval(), reference.eval()
    x = inputs(kind)
    torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)


@pytest.mark.parametrize("kind", sorted(BACKBONES))
@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_aux_loss_is_the_mean_of_the_layer_terms_and_every_trainable_parameter_learns(kind, adapter):
    model, _ = adapted(kind, adapter, aux_weight=0.5) if adapter == "fvae_lora" else adapted(kind, adapter)
    model.train()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    unfrozen = tuple(f"adapted_model.{name.replace('*', '')}" for name in BACKBONES[kind][2])
    assert trainable and all(
        n.startswith(unfrozen) or (".base." not in n and any(n.startswith(f"{name}.") for name in adapter_names(model)))
        for n in trainable
    )
    torch.manual_seed(0)
    x = inputs(kind)
    for _ in range(2):  # the second step: LoRA's B is no longer zero, so A gets a gradient too
        for p in trainable.values():
            p.grad = None
        loss = task_loss(model, x) + aux_weight(model) * aux_loss(model)
        loss.backward()
        torch.optim.SGD(trainable.values(), lr=0.1).step()
    missing = sorted(n for n, p in trainable.items() if p.grad is None or not p.grad.abs().sum() > 0)
    assert not missing, f"no gradient reached {missing}"
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)
    aux = aux_loss(model)
    if adapter == "lora":
        assert aux.item() == 0 and loss_terms(model) == {} and aux_weight(model) == 0
        return
    assert aux_weight(model) == 0.5 and torch.isfinite(aux)
    terms = [layer.last_terms for layer in adapter_layers(model)]
    assert len({id(t) for t in terms}) == len(terms)  # unnamed layers of equal shape keep their own terms
    expected = torch.stack([t["total"] for t in terms]).mean()
    torch.testing.assert_close(aux, expected)
    assert set(loss_terms(model)) == {"reconstruction", "kl_z1", "gamma", "total"}


def adapter_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, (FVAELoRA, LoRA))]


@pytest.mark.parametrize("container", [False, True])
def test_layerdrop_in_a_speechbrain_encoder_leaves_no_stale_terms(container):
    """Layers built one by one get one record cleared at each forward, also when aux_loss is given the Brain's
    ModuleDict (never run itself) instead of the AdaptedModel."""
    model = AdaptedModel(
        Head(sb_encoder(layerdrop_prob=0.5), 8),
        FVAELoRA,
        target_layers=["*.pos_ffn.ffn.[03]"],
        unfrozen_layers=["out"],
        adapter_kwargs=KWARGS,
    )
    given = nn.ModuleDict({"encoder": model}) if container else model
    model.train()
    layers = adapter_layers(model)
    ran: list[nn.Module] = []
    for layer in layers:
        layer.register_forward_hook(lambda m, i, o: ran.append(m))
    seen_partial = False
    for seed in range(12):
        ran.clear()
        torch.manual_seed(seed)
        loss = task_loss(model, inputs("sb_transformer")) + aux_loss(given)
        loss.backward()  # fails on a stale graph left by an earlier step
        assert all(layer.last_terms is None for layer in layers if layer not in ran)
        assert len({id(layer.last_terms) for layer in ran}) == len(ran)  # each its own terms (no name clash)
        if ran:
            expected = torch.stack([layer.last_terms["total"] for layer in ran]).mean()
            torch.testing.assert_close(aux_loss(given), expected)
        seen_partial |= 0 < len(ran) < len(layers)
    assert seen_partial


@pytest.mark.parametrize("kind", sorted(BACKBONES))
def test_masked_padding_does_not_enter_the_aux_loss(kind):
    model, _ = adapted(kind, "fvae_lora")
    model.train()
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 3:] = False
    # SpeechBrain's feed-forward blocks run time-first: the mask has the adapted layers' leading shape (frames, batch)
    layer_mask = mask if kind == "linear_stack" else mask.T
    clean = inputs(kind)
    junk = clean.clone()
    junk[1, 3:] = 100.0 * torch.randn(3, clean.shape[-1])

    def aux(x: torch.Tensor, layer_mask: torch.Tensor | None) -> float:
        torch.manual_seed(0)
        with frame_mask(model, layer_mask):
            # the encoder's own key padding mask keeps padded frames out of the real frames' attention
            model(x) if kind == "linear_stack" else model(x, padding=~mask)
        return aux_loss(model).item()

    assert aux(junk, layer_mask) == aux(clean, layer_mask)
    assert all(layer.frame_mask is None for layer in adapter_layers(model))  # cleared after the block
    assert aux(junk, None) != aux(clean, None)  # without a mask the padded frames count


def test_manual_insertion_adapts_the_weights_loaded_before_it():
    """manual_adapter_insertion (for SpeechBrain's Pretrainer): weights loaded first, then wrapped unchanged."""
    pretrained = linear_stack(seed=5)
    model = AdaptedModel(
        linear_stack(seed=0),
        FVAELoRA,
        target_layers=["layer[12]"],
        adapter_kwargs=KWARGS,
        manual_adapter_insertion=True,
    )
    assert not adapter_layers(model)
    model.adapted_model.load_state_dict(pretrained.state_dict())
    model.insert_adapters()
    assert len(adapter_layers(model)) == 2
    model.eval(), pretrained.eval()
    x = inputs("linear_stack")
    torch.testing.assert_close(model(x), pretrained(x), rtol=0, atol=0)


def test_aux_weight_of_adapted_models_that_disagree_is_an_error():
    models = nn.ModuleDict(
        {
            name: AdaptedModel(linear_stack(), FVAELoRA, all_linear=True, adapter_kwargs={**KWARGS, "aux_weight": w})
            for name, w in (("a", 0.1), ("b", 0.2))
        }
    )
    assert aux_weight(models["a"]) == 0.1
    with pytest.raises(ValueError, match=r"different aux_weight values \[0.1, 0.2\]"):
        aux_weight(models)


def test_wrong_targets_and_keywords_are_errors_naming_them():
    with pytest.raises(TypeError, match="nn.Linear layers only, got Conv1d"):
        AdaptedModel(nn.Sequential(nn.Conv1d(2, 2, 3)), FVAELoRA, all_conv=True)
    with pytest.raises(TypeError, match=r"\['target_modules'\] are chosen by AdaptedModel"):
        AdaptedModel(linear_stack(), LoRA, all_linear=True, adapter_kwargs={"target_modules": ["layer1"]})
    with pytest.raises(
        TypeError,
        match=r"unknown LoRA adapter_kwargs \['scale'\]; known: alpha, check_finite, "
        r"dropout, lora_alpha, rank, use_rslora",
    ):
        AdaptedModel(linear_stack(), LoRA, all_linear=True, adapter_kwargs={"scale": 16})
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        AdaptedModel(linear_stack(), FVAELoRA, all_linear=True, adapter_kwargs={"rank": 0})


YAML = """
encoder: !new:speechbrain.lobes.models.transformer.Transformer.TransformerEncoder
    num_layers: 2
    nhead: 2
    d_ffn: 32
    d_model: 8
model: !new:speechbrain.nnet.adapters.AdaptedModel
    model_to_adapt: !ref <encoder>
    adapter_class: !name:fvae_asr.integrations.speechbrain.FVAELoRA
    target_layers: ["*.pos_ffn.ffn.0", "*.pos_ffn.ffn.3"]
    adapter_kwargs:
        rank: 4
        lora_alpha: 4
        z2_dim: 3
        delta: 0.25
        dropout: 0.0
        aux_weight: 0.01
"""


def test_the_proposed_hyperpyyaml_builds_the_model():
    model = load_hyperpyyaml(YAML)["model"]
    layers = adapter_layers(model)
    assert adapter_names(model) == [f"adapted_model.layers.{i}.pos_ffn.ffn.{j}" for i in (0, 1) for j in (0, 3)]
    assert all(isinstance(layer, FVAELoRA) for layer in layers)
    cfg = layers[0].config
    assert (cfg.rank, cfg.lora_alpha, cfg.z2_dim, cfg.delta, cfg.dropout) == (4, 4, 3, 0.25, 0.0)
    assert aux_weight(model) == 0.01
    model.train()
    model(inputs("sb_transformer"))
    assert torch.isfinite(fvae_asr.aux_loss(model)) and fvae_asr.aux_loss(model).requires_grad


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_speechbrain_checkpointer_restores_identical_outputs(adapter, tmp_path):
    model, _ = adapted("sb_transformer", adapter)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=0.05)
    for _ in range(3):  # move every adapter weight off its initial value
        opt.zero_grad()
        (task_loss(model, inputs("sb_transformer")) + aux_loss(model)).backward()
        opt.step()
    Checkpointer(tmp_path, {"model": model}).save_checkpoint()
    trained = {n: v.clone() for n, v in model.state_dict().items()}

    fresh, _ = adapted("sb_transformer", adapter, seed=0)  # same backbone, new adapter weights
    assert any(not torch.equal(v, trained[n]) for n, v in fresh.state_dict().items())
    Checkpointer(tmp_path, {"model": fresh}).recover_if_possible()
    for name, value in fresh.state_dict().items():
        torch.testing.assert_close(value, trained[name], rtol=0, atol=0, msg=name)
    model.eval(), fresh.eval()
    torch.testing.assert_close(fresh(inputs("sb_transformer")), model(inputs("sb_transformer")), rtol=0, atol=0)


# SpeechBrain's HuggingFace wav2vec2 wrapper, from a tiny config saved locally (nothing downloaded)


@pytest.fixture(scope="module")
def wav2vec2_dir(tmp_path_factory) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    path = tmp_path_factory.mktemp("wav2vec2")
    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(**TINY_WAV2VEC2)).save_pretrained(path)
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(path)
    return path


def sb_wav2vec2(path: Path, freeze: bool = False) -> nn.Module:
    from speechbrain.integrations.huggingface.wav2vec2 import Wav2Vec2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' notice about gradient_checkpointing_disable
        return Wav2Vec2(str(path), save_path=str(path / "save"), freeze=freeze)


WAV2VEC2_TARGETS = ["*.attention.q_proj", "*.attention.k_proj"]


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_speechbrain_wav2vec2_wrapper_with_our_adapters(adapter, wav2vec2_dir):
    base = sb_wav2vec2(wav2vec2_dir)
    reference = copy.deepcopy(base)
    model = AdaptedModel(base, ADAPTERS[adapter], target_layers=WAV2VEC2_TARGETS, adapter_kwargs=KWARGS)
    assert len(adapter_layers(model)) == 4
    wavs = torch.randn(2, 1600, generator=torch.Generator().manual_seed(3))
    wav_lens = torch.tensor([1.0, 0.5])
    model.eval(), reference.eval()
    torch.testing.assert_close(model(wavs, wav_lens), reference(wavs, wav_lens), rtol=0, atol=0)

    model.train()
    mask = wav2vec2_frame_mask(model, wavs, wav_lens)
    half_frames = base.model._get_feat_extract_output_lengths(torch.tensor(800)).item()  # wav_lens 0.5 of 1600
    assert mask.shape == (2, model(wavs, wav_lens).shape[1]) and mask[0].all()
    assert mask[1].tolist() == [i < half_frames for i in range(mask.shape[1])]
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".base." not in n for n in trainable)
    torch.manual_seed(0)
    for _ in range(2):  # zero-initialised heads (FVAE) and B (LoRA) pass gradients on from the second step
        model.zero_grad()
        with frame_mask(model, mask):
            loss = model(wavs, wav_lens).square().mean() + aux_weight(model) * aux_loss(model)
        loss.backward()
        torch.optim.SGD(trainable.values(), lr=0.1).step()
    no_grad = sorted(n for n, p in trainable.items() if p.grad is None or not p.grad.abs().sum() > 0)
    assert not no_grad, f"no gradient reached {no_grad}"
    if adapter == "fvae_lora":
        assert torch.isfinite(aux_loss(model)) and aux_loss(model) > 0


README_YAML = """
wav2vec2_hub: facebook/wav2vec2-large-lv60
save_folder: results/save
aux_weight: 0.001  # lambda: loss = ctc + lambda * FVAE loss

wav2vec2: !new:speechbrain.nnet.adapters.AdaptedModel
    model_to_adapt: !new:speechbrain.integrations.huggingface.wav2vec2.Wav2Vec2
        source: !ref <wav2vec2_hub>
        save_path: !ref <save_folder>/wav2vec2_checkpoint
        freeze: False  # True would run it under no_grad: the adapters could not learn
    adapter_class: !name:fvae_asr.integrations.speechbrain.FVAELoRA
    target_layers: ["*.attention.q_proj", "*.attention.k_proj"]
    adapter_kwargs:
        rank: 16
        lora_alpha: 16
        aux_weight: !ref <aux_weight>
"""


def test_the_readme_yaml_adapts_speechbrains_wav2vec2_wrapper(wav2vec2_dir, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        hparams = load_hyperpyyaml(README_YAML, {"wav2vec2_hub": str(wav2vec2_dir), "save_folder": str(tmp_path)})
    model = hparams["wav2vec2"]
    assert [type(layer) for layer in adapter_layers(model)] == [FVAELoRA] * 4
    assert adapter_layers(model)[0].config.rank == 16 and aux_weight(model) == 0.001
    adapters = tuple(f"{name}." for name in adapter_names(model))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith(adapters) and ".base." not in n}


def test_frozen_speechbrain_wrapper_warns_that_adapters_cannot_train(wav2vec2_dir):
    model = AdaptedModel(
        sb_wav2vec2(wav2vec2_dir, freeze=True), FVAELoRA, target_layers=WAV2VEC2_TARGETS, adapter_kwargs=KWARGS
    )
    model.train()  # as SpeechBrain's Brain does at each epoch
    with pytest.warns(UserWarning, match="set freeze: False"):
        model(torch.randn(1, 1600))
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="an fvae-asr adapter")
        model.eval()
        with torch.no_grad():
            model(torch.randn(1, 1600))  # inference under no_grad is normal: no warning


def test_wav2vec2_frame_mask_rejects_other_models():
    with pytest.raises(TypeError, match="Sequential is not a SpeechBrain HuggingFace wav2vec2-style wrapper"):
        wav2vec2_frame_mask(linear_stack(), torch.zeros(1, 100), torch.ones(1))


def test_an_injected_layer_is_not_relinked_by_aux_loss():
    """inject's shared record stays the one aux_loss reads (the SpeechBrain path must not change inject's)."""
    base = linear_stack()
    fvae_asr.inject(base, fvae_asr.FVAELoRAConfig(rank=2, target_modules=["layer1", "layer2"]))
    recorders = {id(layer.recorder) for layer in adapter_layers(base)}
    base.train()
    base(inputs("linear_stack"))
    aux_loss(nn.ModuleDict({"m": base}))
    assert {id(layer.recorder) for layer in adapter_layers(base)} == recorders and len(recorders) == 1
    assert isinstance(adapter_layers(base)[0], FVAELoRALinear)


class RecipeBrain(sb.Brain):
    """A minimal SpeechBrain recipe with the lines the README proposes: mask around the forward, aux in the loss."""

    def compute_forward(self, batch, stage):
        x, mask = batch
        with fvae_asr.frame_mask(self.modules.model, mask.T):  # SpeechBrain's Transformer FFN runs time-first
            return self.modules.model(x, padding=~mask)

    def compute_objectives(self, predictions, batch, stage):
        loss = predictions.square().mean()
        if stage == sb.Stage.TRAIN:
            loss = loss + fvae_asr.aux_weight(self.modules.model) * fvae_asr.aux_loss(self.modules.model)
        return loss


@pytest.mark.e2e
def test_a_speechbrain_brain_trains_only_the_adapters(tmp_path):
    model, _ = adapted("sb_transformer", "fvae_lora", aux_weight=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.randn(8, 6, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(8, 6, dtype=torch.bool)
    mask[::2, 4:] = False
    batches = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, mask), batch_size=4)
    brain = RecipeBrain(
        modules={"model": model},
        opt_class=lambda params: torch.optim.Adam(params, lr=0.01),
        run_opts={"device": "cpu"},
        checkpointer=Checkpointer(tmp_path, {"model": model}),
    )
    brain.fit(EpochCounter(2), batches, batches)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(".base." in n for n in changed)


# SpeechBrain's arguments with SpeechBrain's meaning: (target_module, rank, alpha), scale = alpha / rank


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_speechbrains_own_lora_doctests_pass_with_our_class(adapter):
    """The examples of speechbrain.nnet.adapters.LoRA run with our class substituted; its Conv1d one is refused."""
    import doctest
    import re

    import speechbrain.nnet.adapters as sb_adapters

    cls = ADAPTERS[adapter]
    text = re.sub(r"\bLoRA\(", f"{cls.__name__}(", sb_adapters.LoRA.__doc__)
    examples = doctest.DocTestParser().get_examples(text)
    first_conv = next(i for i, ex in enumerate(examples) if "Conv" in ex.source)
    assert first_conv >= 4 and any(cls.__name__ in ex.source for ex in examples[:first_conv])
    globs = {"torch": torch, "nn": nn, cls.__name__: cls}
    test = doctest.DocTest(examples[:first_conv], globs, "speechbrain LoRA (linear)", None, 0, text)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    torch.manual_seed(0)
    assert runner.run(test, out=lambda s: None) == doctest.TestResults(failed=0, attempted=first_conv)
    for example in examples[first_conv:]:  # Conv1d: refused, with the reason
        if cls.__name__ in example.source:
            with pytest.raises(TypeError, match="adapts nn.Linear layers only, got Conv1d"):
                exec(example.source, globs)
            break
        exec(example.source, globs)
    else:
        pytest.fail("SpeechBrain's LoRA docstring has no Conv1d adapter example")


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
@pytest.mark.parametrize(
    ("args", "kwargs", "scale"),
    [
        ((), {}, 1 / 16),
        ((2,), {}, 0.5),
        ((64, 4), {}, 4 / 64),
        ((), {"rank": 2, "alpha": 16}, 8.0),
        ((4,), {"lora_alpha": 2}, 0.5),
    ],
)
def test_scale_is_alpha_over_rank_as_in_speechbrains_lora(adapter, args, kwargs, scale):
    from speechbrain.nnet.adapters import LoRA as SpeechBrainLoRA

    sb_kwargs = {("alpha" if k == "lora_alpha" else k): v for k, v in kwargs.items()}
    reference = SpeechBrainLoRA(nn.Linear(8, 6), *args, **sb_kwargs)
    ours = ADAPTERS[adapter](nn.Linear(8, 6), *args, **kwargs)
    assert ours.config.scaling == reference.scaling == scale
    assert ours.config.rank == reference.adapter_down_proj.out_features
    if adapter == "lora":  # same weights: same output as SpeechBrain's
        torch.manual_seed(0)
        base = nn.Linear(8, 6)
        reference, ours = SpeechBrainLoRA(base, *args, **sb_kwargs), LoRA(copy.deepcopy(base), *args, **kwargs)
        nn.init.normal_(reference.adapter_up_proj.weight)
        ours.lora_A.weight.data.copy_(reference.adapter_down_proj.weight)
        ours.lora_B.weight.data.copy_(reference.adapter_up_proj.weight)
        x = inputs("linear_stack")
        torch.testing.assert_close(ours(x), reference(x))


def test_a_yaml_swapping_speechbrains_lora_for_ours_keeps_its_model():
    """adapter_kwargs written for speechbrain.nnet.adapters.LoRA mean the same with our classes."""
    kwargs = {"rank": 2, "alpha": 16}
    for cls in (FVAELoRA, LoRA):
        model = AdaptedModel(linear_stack(), cls, target_layers=["layer[12]"], adapter_kwargs=dict(kwargs))
        configs = [layer.config for layer in adapter_layers(model)]
        assert [(c.rank, c.lora_alpha, c.scaling) for c in configs] == [(2, 16, 8.0)] * 2
    fvae = adapter_layers(AdaptedModel(linear_stack(), FVAELoRA, all_linear=True, adapter_kwargs=kwargs))[0].config
    assert fvae.alpha == 1.0  # the reconstruction weight keeps its default: alpha is the LoRA scale here


def test_fvae_reconstruction_weight_has_its_own_name_at_the_speechbrain_boundary():
    layer = FVAELoRA(nn.Linear(8, 6), 4, 2, reconstruction_weight=0.25, beta=0.5)
    assert (layer.config.alpha, layer.config.lora_alpha, layer.config.beta, layer.config.scaling) == (0.25, 2, 0.5, 0.5)


@pytest.mark.parametrize(
    ("adapter", "kwargs", "message"),
    [
        (
            "fvae_lora",
            {"alpha": 16, "lora_alpha": 16},
            r"both 'alpha' and 'lora_alpha'.*; FVAELoRAConfig.alpha is "
            r"'reconstruction_weight' here",
        ),
        ("lora", {"alpha": 16, "lora_alpha": 8}, r"both 'alpha' and 'lora_alpha'"),
        ("lora", {"reconstruction_weight": 1.0}, r"unknown LoRA adapter_kwargs \['reconstruction_weight'\]"),
        (
            "fvae_lora",
            {"recon_weight": 1.0},
            r"unknown FVAELoRA adapter_kwargs \['recon_weight'\]; known: .*"
            r"reconstruction_weight",
        ),
    ],
)
def test_ambiguous_speechbrain_kwargs_are_refused_in_one_line(adapter, kwargs, message):
    with pytest.raises(TypeError, match=message) as error:
        AdaptedModel(linear_stack(), ADAPTERS[adapter], all_linear=True, adapter_kwargs=kwargs)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_the_wrapped_layer_is_pretrained_module_as_in_speechbrains_adapters(adapter):
    from speechbrain.nnet.adapters import LoRA as SpeechBrainLoRA

    target = nn.Linear(8, 6)
    ours, theirs = ADAPTERS[adapter](target, rank=2), SpeechBrainLoRA(copy.deepcopy(target), rank=2)
    assert ours.pretrained_module is target and type(theirs.pretrained_module) is nn.Linear
    x = torch.randn(3, 8)
    assert torch.equal(ours.pretrained_module(x), theirs.pretrained_module(x))  # the base layer, not the adapter
    assert not any(p.requires_grad for p in ours.pretrained_module.parameters())
    assert not any(key.startswith("pretrained_module.") for key in ours.state_dict())  # saved once, as base
