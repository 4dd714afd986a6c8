"""Every wav2vec2-family encoder the recipe supports (wav2vec2, HuBERT, WavLM, data2vec-audio; base and large
layouts), each built from a tiny config and saved as a local Hugging Face directory: adapters on q_proj/k_proj,
padding and frame masks, CNN freezing, SpecAugment, export round trips and the recipe itself."""

from __future__ import annotations

import json
import re

import pytest
import torch
from transformers import AutoConfig, AutoModel, BertConfig, BertModel

from fvae_asr import FVAELoRAConfig, LoRAConfig
from fvae_asr.adapters import adapter_layers
from fvae_asr.recipes.timit.train import main, run
from fvae_asr.speech.models.encoder import SSLEncoder
from fvae_asr.speech.models.export import export_hf_ctc, export_model, load_recognizer
from fvae_asr.speech.models.recognizer import CTCRecognizer, init_head_from_checkpoint
from fvae_asr.speech.models.training_methods import configure_training

from conftest import HPARAMS, recipe_overrides
from tiny_models import TINY_ENCODERS

LABELS = ["<blank>", "aa", "iy", "sh", "s"]
MODEL_CLASSES = {
    "wav2vec2": "Wav2Vec2Model",
    "hubert": "HubertModel",
    "wavlm": "WavLMModel",
    "data2vec-audio": "Data2VecAudioModel",
}
ADAPTERS = {
    "lora": lambda: LoRAConfig(rank=2, target_modules=["q_proj", "k_proj"]),
    "fvae_lora": lambda: FVAELoRAConfig(rank=2, target_modules=["q_proj", "k_proj"]),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each variant randomly initialised from its config and saved with ``save_pretrained``, as a pretrained
    encoder would be on disk."""
    root = tmp_path_factory.mktemp("encoders")
    for variant, fields in TINY_ENCODERS.items():
        fields = dict(fields)
        torch.manual_seed(0)
        AutoModel.from_config(AutoConfig.for_model(fields.pop("model_type"), **fields)).save_pretrained(root / variant)
    return root


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two utterances, the second padded to the first's length (60 % of it real)."""
    wavs = torch.randn(2, 4000, generator=torch.Generator().manual_seed(1))
    wavs[1, 2400:] = 0
    return wavs, torch.tensor([1.0, 0.6])


def _recognizer(source, seed: int = 0, **encoder_options) -> CTCRecognizer:
    torch.manual_seed(seed)
    return CTCRecognizer(SSLEncoder(source, **encoder_options), n_tokens=len(LABELS)).eval()


@pytest.mark.parametrize("variant", TINY_ENCODERS)
def test_each_family_loads_as_its_own_model_with_frames_and_masks(saved, variant):
    encoder = SSLEncoder(saved / variant).eval()
    model_type = TINY_ENCODERS[variant]["model_type"]
    assert type(encoder.model).__name__ == MODEL_CLASSES[model_type]
    # transformers' feature extractors: an attention mask only for layer-normalised CNNs (data2vec-audio's always is)
    assert encoder.use_attention_mask == (TINY_ENCODERS[variant].get("feat_extract_norm", "layer") == "layer")
    wavs, lens = _batch()
    with torch.no_grad():
        hidden, frame_mask = encoder(wavs, lens)
    frames = encoder.model._get_feat_extract_output_lengths(torch.tensor([4000, 2400]))
    assert hidden.shape[:2] == frame_mask.shape and frame_mask.sum(1).tolist() == frames.tolist()
    assert not any(p.requires_grad for p in encoder.model.feature_extractor.parameters())  # CNN frozen
    assert all(p.requires_grad for p in encoder.model.encoder.parameters())


# Group-normalised CNNs get no mask (their outputs depend on the padding, as in transformers). data2vec-audio gets
# one, but its stack of positional convolutions reads the padded frames after its first layer made them non-zero
# (as in transformers and fairseq): the last real frames change, and through attention all the others a little.
@pytest.mark.parametrize("variant", ["wav2vec2", "hubert", "wavlm"])
def test_padding_does_not_change_the_frames_of_masked_families(saved, variant):
    encoder = SSLEncoder(saved / variant).eval()
    wavs, lens = _batch()
    with torch.no_grad():
        padded, _ = encoder(wavs, lens)
        alone, _ = encoder(wavs[1:, :2400], torch.ones(1))
    assert torch.allclose(padded[1, : alone.shape[1]], alone[0], atol=1e-5)


@pytest.mark.parametrize("kind", ADAPTERS)
@pytest.mark.parametrize("variant", TINY_ENCODERS)
def test_adapters_on_q_and_k_start_as_the_base_model_and_then_change_it(saved, variant, kind):
    base = _recognizer(saved / variant)
    adapted = _recognizer(saved / variant)
    assert configure_training(adapted, kind, ADAPTERS[kind]())  # q_proj/k_proj exist in every family
    adapted.eval()
    wavs, lens = _batch()
    with torch.no_grad():
        expected = base(wavs, lens)[0]
        assert torch.equal(adapted(wavs, lens)[0], expected)
        for layer in adapter_layers(adapted):
            layer.lora_B.weight.normal_()
            if kind == "fvae_lora":  # mu1 = 0 at initialisation: B alone changes nothing
                layer.encoder_z1.mean.weight.normal_()
        # Fails for WavLM if its attention reads q_proj.weight instead of calling q_proj (the adapter is skipped)
        assert not torch.allclose(adapted(wavs, lens)[0], expected, atol=1e-3)


@pytest.mark.parametrize("variant", TINY_ENCODERS)
def test_fvae_terms_see_only_real_frames_and_gradients_reach_every_adapter(saved, variant):
    model = _recognizer(saved / variant)
    configure_training(model, "fvae_lora", ADAPTERS["fvae_lora"]())
    model.train()
    wavs, lens = _batch()
    seen = []
    for layer in adapter_layers(model):
        layer.register_forward_pre_hook(lambda module, args: seen.append(module._mask_for(args[0])))
    log_probs, frames = model(wavs, lens)
    assert len(seen) == len(adapter_layers(model)) and all(torch.equal(m.sum(1), frames) for m in seen)
    (log_probs.sum() + sum(layer.last_terms["total"] for layer in adapter_layers(model))).backward()
    assert all(
        layer.lora_B.weight.grad is not None and layer.lora_B.weight.grad.abs().sum() > 0
        for layer in adapter_layers(model)
    )


@pytest.mark.parametrize("variant", ["wav2vec2", "hubert-base", "wavlm", "data2vec-audio"])
def test_specaugment_masks_frames_in_training_only(saved, variant):
    encoder = SSLEncoder(saved / variant, mask_time_prob=0.5)
    assert encoder.model.config.mask_time_prob == 0.5 and encoder.model.masked_spec_embed.requires_grad
    inputs = []
    encoder.model.encoder.register_forward_pre_hook(lambda module, args: inputs.append(args[0].clone()))
    wavs, lens = _batch()
    for training in (True, False):
        encoder.train(training)
        with torch.no_grad():
            encoder(wavs, lens)
    masked = [(frames == encoder.model.masked_spec_embed).all(-1) for frames in inputs]
    assert masked[0].any() and not masked[1].any()


@pytest.mark.parametrize("variant", ["hubert", "wavlm-base"])
@pytest.mark.parametrize("kind", ["fvae_lora", "full"])
def test_an_exported_recognizer_reloads_as_its_family_with_identical_outputs(saved, tmp_path, variant, kind):
    model = _recognizer(saved / variant, seed=3)
    configure_training(model, kind, ADAPTERS.get(kind, lambda: None)())
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:  # trained weights, not the fresh ones a silent reinitialisation would give
                param.add_(0.1 * torch.randn_like(param))
    model.eval()
    exported = export_model(model, kind, LABELS, tmp_path / "model")
    config = json.loads((exported / "backbone" / "config.json").read_text())
    assert config["model_type"] == TINY_ENCODERS[variant]["model_type"]

    reloaded, description = load_recognizer(exported)
    assert type(reloaded.encoder.model) is type(model.encoder.model) and description["method"] == kind
    wavs, lens = _batch()
    with torch.no_grad():
        assert torch.equal(reloaded(wavs, lens)[0], model(wavs, lens)[0])


@pytest.mark.parametrize("variant", ["hubert", "wavlm-base", "data2vec-audio"])
def test_a_hf_ctc_export_of_each_family_starts_the_recipe_head(saved, tmp_path, variant):
    source = _recognizer(saved / variant, seed=5)
    directory = export_hf_ctc(source, LABELS, tmp_path / "ctc")
    assert json.loads((directory / "config.json").read_text())["architectures"][0].endswith("ForCTC")
    target = _recognizer(directory, seed=6)
    assert init_head_from_checkpoint(target, directory, LABELS) == LABELS
    assert torch.equal(target.head.weight, source.head.weight)
    wavs, lens = _batch()
    with torch.no_grad():
        assert torch.equal(target(wavs, lens)[0], source(wavs, lens)[0])


def test_a_model_outside_the_family_is_refused_naming_the_families(tmp_path):
    BertModel(
        BertConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    ).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match=r"bert.*config.json.*wav2vec2, hubert, wavlm, data2vec-audio; got 'bert'"):
        SSLEncoder(tmp_path / "bert")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--wav2vec2_source=facebook/wav2vec2-base", "wav2vec2_source is now called encoder_source"),
        ("--wav2vec2_config={hidden_size: 32}", "wav2vec2_config is now called encoder_config"),
        (
            "--encoder_config={hidden_size: 32}",
            "encoder_config: model_type must be one of wav2vec2, hubert, wavlm, data2vec-audio; got None",
        ),
        ("--encoder_config={model_type: whisper}", "got 'whisper'"),
    ],
)
def test_old_key_names_and_unnamed_families_are_usage_errors_before_anything_is_written(
    tone_corpus, tmp_path, capsys, override, message
):
    output = tmp_path / "out"
    with pytest.raises(SystemExit) as stopped:
        main([str(HPARAMS), f"--data_folder={tone_corpus}", f"--output_folder={output}", "--noprogressbar", override])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not output.exists()


def test_a_yaml_with_the_old_key_names_is_a_usage_error(tone_corpus, tmp_path, capsys):
    old = HPARAMS.read_text().replace("encoder_source", "wav2vec2_source").replace("encoder_config", "wav2vec2_config")
    (tmp_path / "old.yaml").write_text(old)
    with pytest.raises(SystemExit) as stopped:
        main([str(tmp_path / "old.yaml"), f"--data_folder={tone_corpus}", f"--output_folder={tmp_path / 'out'}"])
    assert stopped.value.code == 2 and "wav2vec2_source is now called encoder_source" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.e2e
@pytest.mark.parametrize("variant", ["hubert", "wavlm-base", "data2vec-audio"])
def test_the_recipe_adapts_each_family_from_a_local_directory(tone_corpus, saved, tmp_path, variant):
    overrides = recipe_overrides(
        tone_corpus,
        tmp_path,
        encoder_source=str(saved / variant),
        encoder_config={},
        number_of_epochs=1,
        mask_time_prob=0.05,
    )
    result = run(HPARAMS, {"noprogressbar": True}, overrides)
    assert result["target_modules"] == ["q_proj", "k_proj"] and result["test"]["utterances"] == 4
    assert "train gamma" in (tmp_path / "train_log.txt").read_text()
    model, description = load_recognizer(result["export"])
    assert type(model.encoder.model).__name__ == MODEL_CLASSES[TINY_ENCODERS[variant]["model_type"]]
    assert {layer.adapter_name.rsplit(".", 1)[1] for layer in adapter_layers(model)} == {"q_proj", "k_proj"}


@pytest.mark.e2e
def test_a_run_recorded_under_the_old_names_resumes(tone_corpus, saved, tmp_path):
    overrides = recipe_overrides(
        tone_corpus, tmp_path, encoder_source=str(saved / "wav2vec2"), encoder_config={}, number_of_epochs=1
    )
    run(HPARAMS, {"noprogressbar": True}, overrides)
    record = tmp_path / "save" / "run_config.json"  # as the recipe wrote it before the rename
    modules_before = {
        "models.encoder": "encoder",
        "models.recognizer": "recognizer",
        "models.export": "export",
        "training.resume": "checkpointing",
        "training.train_logger": "train_logger",
    }  # 0.1's layout

    def as_recorded_in_0_1(value):
        if not isinstance(value, str):
            return value
        value = value.replace("speech.training.resume.TrainableWeights", "speech.models.export.TrainableWeights")
        for new, old in modules_before.items():
            value = value.replace(f"fvae_asr.speech.{new}.", f"fvae_asr.speech.{old}.")
        return value.replace("SSLEncoder", "Wav2Vec2Encoder")

    old = {
        {"method": "adapter"}.get(key, key)
        .replace("encoder_source", "wav2vec2_source")
        .replace("encoder_config", "wav2vec2_config"): as_recorded_in_0_1(value)
        for key, value in json.loads(record.read_text()).items()
    }
    assert old["adapter"] == "fvae_lora" and "method" not in old  # 0.2's name of the method
    assert "wav2vec2_source" in old and "!new:fvae_asr.speech.encoder.Wav2Vec2Encoder" in old.values()
    assert "!new:fvae_asr.speech.checkpointing.AtomicCheckpointer" in old.values()
    assert "!new:fvae_asr.speech.export.TrainableWeights" in old.values()
    record.write_text(json.dumps(old))
    run(HPARAMS, {"noprogressbar": True}, {**overrides, "number_of_epochs": 2})
    assert re.findall(r"^epoch: (\d+)", (tmp_path / "train_log.txt").read_text(), re.M) == ["1", "2"]
