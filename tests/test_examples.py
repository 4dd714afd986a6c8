"""The runnable examples (examples/*.py) end to end on their offline tiny models and synthetic tasks."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from safetensors import safe_open

from fvae_asr.adapters.peft_format import PEFT_PREFIX

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CHANCE = 0.25  # both synthetic tasks have four balanced classes
QUICK = ["--train_size", "64", "--epochs", "1"]  # the flow only; the default sizes are for learning


def load_example(name: str) -> ModuleType:
    """Load examples/<name>.py as a script would run it (its own folder resolves the shared module)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(name: str, out: Path, *argv: str) -> dict:
    assert load_example(name).main(["--output_dir", str(out), *argv]) == 0
    return json.loads((out / "eval_results.json").read_text())


def saved_keys(out: Path) -> list[str]:
    """Tensor names of the saved adapter (LoRA files carry PEFT's prefix, dropped here)."""
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        return sorted(key.removeprefix(PEFT_PREFIX) for key in f.keys())  # noqa: SIM118 (safe_open is no mapping)


def assert_adapter_only(out: Path, projections: tuple[str, str]) -> None:
    """Adapter weights of the two adapted projections and the classifier head, and no base weight at all."""
    assert (out / "adapter_config.json").is_file()
    assert not (out / "model.safetensors").exists()
    keys = saved_keys(out)
    adapter = re.compile(rf"\.({'|'.join(projections)})\.(lora_[AB]|encoder_z[12]|decoder)")
    assert [k for k in keys if not (k.startswith("classifier.") or adapter.search(k))] == []
    assert any(k.startswith("classifier.") for k in keys)
    for projection in projections:
        assert any(f".{projection}.lora_B" in k for k in keys)


@pytest.mark.e2e
@pytest.mark.parametrize(
    "name, projections", [("text_classification", ("query", "key")), ("image_classification", ("q_proj", "k_proj"))]
)
def test_fvae_lora_learns_the_synthetic_task_and_saves_only_its_adapter(tmp_path, name, projections):
    results = run_example(name, tmp_path / "out")
    assert results["method"] == "fvae_lora"
    assert results["eval_accuracy"] >= CHANCE + 0.35, results
    assert_adapter_only(tmp_path / "out", projections)
    assert json.loads((tmp_path / "out" / "adapter_config.json").read_text())["adapter_type"] == "fvae_lora"


@pytest.mark.e2e
def test_lora_saves_only_its_adapter_with_the_chosen_targets(tmp_path):
    results = run_example("image_classification", tmp_path / "out", "--method", "lora", "--targets", "qv", *QUICK)
    assert results["method"] == "lora" and 0 <= results["eval_accuracy"] <= 1
    assert_adapter_only(tmp_path / "out", ("q_proj", "v_proj"))
    saved = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert (saved["peft_type"], saved["r"], saved["target_modules"]) == ("LORA", 16, ["q_proj", "v_proj"])  # PEFT's
    config = saved["fvae_asr"]  # ours, beside PEFT's fields
    assert (config["adapter_type"], config["rank"], config["target_modules"]) == ("lora", 16, ["q_proj", "v_proj"])
    assert (config["lora_alpha"], config["dropout"]) == (16.0, 0.1)  # the paper's LoRA settings


@pytest.mark.e2e
def test_fvae_lora_config_takes_rank_and_lambda(tmp_path):
    run_example("text_classification", tmp_path / "out", "--rank", "4", "--aux_weight", "0.01", *QUICK)
    config = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert (config["rank"], config["aux_weight"], config["target_modules"]) == (4, 0.01, ["query", "key"])
    assert config["trainable_modules"] == ["classifier"]


@pytest.mark.e2e
def test_full_fine_tuning_saves_the_whole_model(tmp_path):
    results = run_example("text_classification", tmp_path / "out", "--method", "full", *QUICK)
    assert results["method"] == "full"
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert not (tmp_path / "out" / "adapter_config.json").exists()
    # every parameter trains: far more than the adapters and head of the LoRA run
    lora = run_example("text_classification", tmp_path / "lora", "--method", "lora", *QUICK)
    assert results["trainable_parameters"] > 5 * lora["trainable_parameters"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset", "imdb"], "--dataset needs --model"),
        (["--model", "some/model", "--dataset", "imdb"], "pip install datasets"),
        (["--rank", "0"], "--rank must be a positive integer"),
        (["--method", "dora"], "invalid choice"),
    ],
)
def test_usage_errors_exit_2_before_writing(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if `datasets` were not installed
    with pytest.raises(SystemExit) as exit_info:
        load_example("text_classification").main(["--output_dir", str(tmp_path / "out"), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.e2e
@pytest.mark.parametrize("name, build", [("text_classification", "tiny_bert"), ("image_classification", "tiny_vit")])
def test_model_from_a_local_directory(tmp_path, name, build):
    example = load_example(name)
    getattr(example, build)(num_labels=2, seed=3).save_pretrained(tmp_path / "model")  # a checkpoint, 2 labels
    results = run_example(name, tmp_path / "out", "--model", str(tmp_path / "model"), "--method", "lora", *QUICK)
    assert 0 <= results["eval_accuracy"] <= 1
    with safe_open(str(tmp_path / "out" / "adapter_model.safetensors"), "pt") as f:
        assert f.get_tensor(f"{PEFT_PREFIX}classifier.weight").shape[0] == 4  # re-headed for the 4 synthetic classes


@pytest.fixture
def offline_datasets(tmp_path, monkeypatch):
    """No network and the `datasets` cache inside tmp_path; `datasets` reads these at import, so its config too."""
    import datasets.config

    cache = tmp_path / "hf_datasets_cache"
    for name, value in (("HF_HUB_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"), ("HF_DATASETS_CACHE", str(cache))):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", cache / "downloads")
    monkeypatch.setattr(datasets.config, "EXTRACTED_DATASETS_PATH", cache / "downloads" / "extracted")
    return cache


WORDS = ("good", "great", "fine", "bad", "awful", "poor", "the", "film", "was", "plot")


def save_tiny_bert_with_tokenizer(example: ModuleType, directory: Path) -> None:
    """The example's tiny BERT and a word-level BertTokenizerFast over its vocabulary, saved as a checkpoint."""
    from transformers import BertTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # [PAD] 0 and [CLS] 2 as the tiny BERT expects
    vocab = specials + list(WORDS)
    vocab_file = directory.parent / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    example.tiny_bert(num_labels=2, seed=3).save_pretrained(directory)
    BertTokenizerFast(vocab_file=str(vocab_file), model_max_length=example.MAX_LENGTH).save_pretrained(directory)


def sentiment_rows(n: int) -> list[tuple[str, int]]:
    """Short reviews whose label (1 positive, 0 negative) is which kind of adjective they hold."""
    rows = []
    for i in range(n):
        label = i % 2
        adjective = WORDS[i % 3] if label else WORDS[3 + i % 3]
        rows.append((f"the {WORDS[7 + i % 3]} was {adjective}", label))
    return rows


@pytest.mark.e2e
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_text_example_on_a_local_data_file(tmp_path, offline_datasets, suffix):
    example = load_example("text_classification")
    save_tiny_bert_with_tokenizer(example, tmp_path / "model")
    rows = sentiment_rows(40)
    data = tmp_path / f"reviews{suffix}"
    if suffix == ".csv":
        words = ("negative", "positive")  # labels as words in the CSV, as class indices in the JSON lines
        data.write_text("review,sentiment\n" + "".join(f"{text},{words[label]}\n" for text, label in rows))
    else:
        data.write_text("".join(json.dumps({"review": text, "sentiment": label}) + "\n" for text, label in rows))
    results = run_example(
        "text_classification",
        tmp_path / "out",
        "--model",
        str(tmp_path / "model"),
        "--dataset",
        str(data),
        "--text_column",
        "review",
        "--label_column",
        "sentiment",
        "--max_length",
        str(example.MAX_LENGTH),
        "--epochs",
        "1",
        "--batch_size",
        "8",
    )
    assert results["method"] == "fvae_lora" and 0 <= results["eval_accuracy"] <= 1
    assert_adapter_only(tmp_path / "out", ("query", "key"))
    with safe_open(str(tmp_path / "out" / "adapter_model.safetensors"), "pt") as f:
        assert f.get_tensor("classifier.weight").shape[0] == 2  # the file's two labels
    assert offline_datasets.is_dir()  # the `datasets` cache went to tmp_path


@pytest.mark.e2e
def test_image_example_on_a_local_image_folder(tmp_path, offline_datasets):
    from PIL import Image
    from transformers import ViTImageProcessor

    example = load_example("image_classification")
    example.tiny_vit(num_labels=2, seed=3).save_pretrained(tmp_path / "model")
    size = {"height": example.IMAGE_SIZE, "width": example.IMAGE_SIZE}
    ViTImageProcessor(size=size).save_pretrained(tmp_path / "model")
    rng = np.random.default_rng(0)
    for class_index, color in enumerate(("red", "green", "blue")):
        (tmp_path / "images" / color).mkdir(parents=True)
        for i in range(8):
            pixels = rng.integers(0, 64, size=(20, 24, 3), dtype=np.uint8)  # not the model's size: resized
            pixels[..., class_index] = 200
            Image.fromarray(pixels).save(tmp_path / "images" / color / f"{i}.png")
    results = run_example(
        "image_classification",
        tmp_path / "out",
        "--model",
        str(tmp_path / "model"),
        "--dataset",
        str(tmp_path / "images"),
        "--epochs",
        "1",
        "--batch_size",
        "8",
    )
    assert results["method"] == "fvae_lora" and 0 <= results["eval_accuracy"] <= 1
    assert_adapter_only(tmp_path / "out", ("q_proj", "k_proj"))
    with safe_open(str(tmp_path / "out" / "adapter_model.safetensors"), "pt") as f:
        assert f.get_tensor("classifier.weight").shape[0] == 3  # one class per sub-folder
    assert offline_datasets.is_dir()


@pytest.mark.parametrize("names", [("negative", "positive"), (1, 2)])
def test_labels_that_are_not_class_indices_are_numbered_in_sorted_order(tmp_path, offline_datasets, names):
    """A data file's labels may be words or integers that do not start at 0: both splits number them alike."""
    common = load_example("text_classification").sys.modules["common"]
    rows = [{"text": text, "label": names[label]} for text, label in sentiment_rows(40)]
    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    args = common.argparse.Namespace(dataset=str(data), dataset_config=None, seed=0)
    train, evaluation, num_labels = common.load_dataset(args, "label")
    assert num_labels == 2
    by_text = {row["text"]: names.index(row["label"]) for row in rows}
    for split in (train, evaluation):
        assert [by_text[text] for text in split["text"]] == list(split["label"])


def test_an_eval_label_missing_from_train_is_a_clear_error(tmp_path, offline_datasets):
    common = load_example("text_classification").sys.modules["common"]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.csv").write_text("text,label\nthe film was good,pos\nthe plot was bad,neg\n")
    (tmp_path / "data" / "validation.csv").write_text("text,label\nthe film was fine,neutral\n")
    args = common.argparse.Namespace(dataset=str(tmp_path / "data"), dataset_config=None, seed=0)
    with pytest.raises(SystemExit, match=r"labels \['neutral'\] in column 'label' are not in the training split"):
        common.load_dataset(args, "label")
