"""Hugging Face CTC export (``export_hf_ctc``) and starting the CTC head from such a checkpoint, by label."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2ForCTC

from fvae_asr import FVAELoRAConfig
from fvae_asr.recipes.timit.train import run
from fvae_asr.speech.data.timit import PHONES_39
from fvae_asr.speech.models.encoder import SSLEncoder
from fvae_asr.speech.models.export import export_hf_ctc
from fvae_asr.speech.models.recognizer import CTCRecognizer, init_head_from_checkpoint
from fvae_asr.speech.models.training_methods import configure_training

from conftest import HPARAMS, recipe_overrides
from tiny_models import TINY_ENCODERS, tiny_wav2vec2

LABELS = ["<blank>", *PHONES_39]


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("backbone")
    tiny_wav2vec2().save_pretrained(directory)
    return directory


def _recognizer(backbone: Path, labels: list[str], seed: int) -> CTCRecognizer:
    torch.manual_seed(seed)
    return CTCRecognizer(SSLEncoder(backbone), n_tokens=len(labels)).eval()


@pytest.fixture(scope="module")
def ctc_checkpoint(tmp_path_factory, backbone) -> tuple[Path, CTCRecognizer]:
    model = _recognizer(backbone, LABELS, seed=1)
    return export_hf_ctc(model, LABELS, tmp_path_factory.mktemp("ctc")), model


def test_hf_ctc_export_gives_the_recognizers_outputs_in_transformers(ctc_checkpoint):
    directory, model = ctc_checkpoint
    wav = torch.sin(torch.arange(8000.0) / 7).unsqueeze(0)
    with torch.no_grad():
        ours, _ = model(wav, torch.ones(1))
        normalized = (wav - wav.mean()) / torch.sqrt(wav.var(unbiased=False) + 1e-7)  # the encoder's own step
        theirs = Wav2Vec2ForCTC.from_pretrained(directory).eval()(normalized).logits.log_softmax(-1)
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)
    assert json.loads((directory / "vocab.json").read_text()) == {label: i for i, label in enumerate(LABELS)}
    tokenizer = Wav2Vec2CTCTokenizer.from_pretrained(directory)
    assert tokenizer.pad_token == "<blank>" and tokenizer.pad_token_id == 0
    assert Wav2Vec2ForCTC.from_pretrained(directory).config.pad_token_id == 0


def test_head_rows_are_matched_by_label(ctc_checkpoint, backbone):
    directory, source = ctc_checkpoint
    labels = ["<blank>", "xx", *reversed(PHONES_39)]  # another order and a label the checkpoint lacks
    model = _recognizer(backbone, labels, seed=2)
    fresh_unknown = model.head.weight[1].clone()

    shared = init_head_from_checkpoint(model, directory, labels)

    assert shared == ["<blank>", *reversed(PHONES_39)]
    for i, label in enumerate(labels):
        if label != "xx":
            assert torch.equal(model.head.weight[i], source.head.weight[LABELS.index(label)]), label
            assert torch.equal(model.head.bias[i], source.head.bias[LABELS.index(label)]), label
    assert torch.equal(model.head.weight[1], fresh_unknown)


def test_head_init_refuses_checkpoints_it_cannot_use(ctc_checkpoint, backbone, tmp_path):
    directory, _ = ctc_checkpoint
    model = _recognizer(backbone, LABELS, seed=3)
    with pytest.raises(ValueError, match="no CTC head"):
        init_head_from_checkpoint(model, backbone, LABELS)  # a plain Wav2Vec2Model directory
    with pytest.raises(ValueError, match="shares no label"):
        init_head_from_checkpoint(model, directory, ["<blank>", "one", "two"])
    no_vocab = tmp_path / "no_vocab"
    Wav2Vec2ForCTC.from_pretrained(directory).save_pretrained(no_vocab)
    with pytest.raises(ValueError, match="no vocab.json"):
        init_head_from_checkpoint(model, no_vocab, LABELS)


def test_hf_ctc_export_refuses_adapted_models(backbone, tmp_path):
    model = _recognizer(backbone, LABELS, seed=4)
    configure_training(model, "fvae_lora", FVAELoRAConfig(rank=2))
    with pytest.raises(ValueError, match="export_model"):
        export_hf_ctc(model, LABELS, tmp_path)


@pytest.mark.e2e
def test_recipe_starts_the_head_from_the_checkpoint(tone_corpus, ctc_checkpoint, backbone, tmp_path):
    directory, source = ctc_checkpoint
    overrides = recipe_overrides(
        tone_corpus,
        tmp_path,
        method="frozen",
        number_of_epochs=1,
        lr=0.0,
        encoder_config={},
        encoder_source=str(directory),
        init_head_from_checkpoint=True,
    )
    result = run(HPARAMS, {"noprogressbar": True}, overrides)
    head = load_file(str(Path(result["export"]) / "trainable_model.safetensors"))  # lr 0: the head never moved
    recipe_labels = json.loads((Path(result["export"]) / "model.json").read_text())["labels"]
    assert recipe_labels != LABELS and sorted(recipe_labels) == sorted(LABELS)  # SpeechBrain's order differs
    rows = [LABELS.index(label) for label in recipe_labels]
    assert torch.equal(head["head.weight"], source.head.weight[rows]) and torch.equal(
        head["head.bias"], source.head.bias[rows]
    )

    with pytest.raises(ValueError, match="no CTC head .*set it to False"):
        run(
            HPARAMS,
            {"noprogressbar": True},
            {**overrides, "encoder_source": str(backbone), "output_folder": str(tmp_path / "plain")},
        )
    with pytest.raises(ValueError, match="encoder_config is set"):
        run(
            HPARAMS,
            {"noprogressbar": True},
            {**overrides, "encoder_config": TINY_ENCODERS["wav2vec2"], "output_folder": str(tmp_path / "random_init")},
        )
