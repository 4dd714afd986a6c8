"""benchmarks/spurious/: the exact group plan (training correlation, balanced test), determinism by seed, the
masked mean pooling of the classifier, the study's bookkeeping, and a --quick smoke run writing the schema."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.common.methods import METHODS, TARGETS
from benchmarks.spurious.cli import main, parse_args
from benchmarks.spurious.corpus import (
    NOISES,
    WORDS,
    correlated_groups,
    load_split,
    plan_split,
    split_groups,
    synthesize_split,
)
from benchmarks.spurious.results import fvae_minus_lora, results_entries
from benchmarks.spurious.study import AT_FVAE_RATE, STUDY_METHODS, STUDY_SIZE, TUNED, Study
from benchmarks.spurious.training import (
    SPURIOUS_METHODS,
    Task,
    adapter_config,
    build_model,
    correct_predictions,
    group_accuracies,
    max_grad_norm,
)
from fvae_asr.adapters import FVAELoRALinear, LoRALinear, adapter_layers
from fvae_asr.adapters.model import adapter_state
from fvae_asr.adapters.optimizer import OPTIMIZER_RULE
from fvae_asr.audio import load_audio
from fvae_asr.demo.paths import ASSET_BACKBONE
from fvae_asr.speech.models.classifier import PooledClassifier, masked_mean_pool
from fvae_asr.speech.models.encoder import SSLEncoder
from fvae_asr.speech.models.export import load_exported
from fvae_asr.synthetic import Espeak

from tiny_models import TINY_ENCODERS


def test_training_groups_hold_the_correlation_rate_exactly_and_test_groups_are_balanced():
    groups = split_groups({"train_per_class": 240, "val_per_class": 60, "test_per_group": 30, "rate": 0.9})
    train = Counter(plan_split(groups["train"], seed=0, split="train"))
    for c in range(4):
        assert train[(c, c)] == 216  # 90 % of 240 with the class's own noise
        assert [train[(c, n)] for n in range(4) if n != c] == [8, 8, 8]  # the other 24 spread evenly
    assert sum(train.values()) == 960
    val = Counter(plan_split(groups["val"], seed=0, split="val"))
    assert [val[(c, c)] for c in range(4)] == [54] * 4 and val[(0, 1)] == 2
    test = Counter(plan_split(groups["test"], seed=0, split="test"))
    assert len(test) == 16 and set(test.values()) == {30}


@pytest.mark.parametrize("per_class, rate", [(100, 0.9), (241, 0.9), (40, 0.95)])
def test_sizes_that_do_not_split_into_whole_groups_are_refused(per_class, rate, capsys):
    with pytest.raises(ValueError, match=f"{per_class} utterances per class at rate {rate}"):
        correlated_groups(per_class, rate)
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--train-per-class", str(per_class), "--rate", str(rate)])
    assert exit_info.value.code == 2 and "do not split into whole groups" in capsys.readouterr().err


def test_the_plan_is_deterministic_by_seed():
    groups = correlated_groups(60, 0.9)
    assert plan_split(groups, 3, "train") == plan_split(groups, 3, "train")
    assert plan_split(groups, 3, "train") != plan_split(groups, 4, "train")
    assert sorted(plan_split(groups, 3, "train")) == sorted(plan_split(groups, 4, "train"))


@pytest.mark.e2e
def test_the_audio_is_deterministic_by_seed():
    pytest.importorskip("espeakng_loader")
    plan = [(0, 0), (1, 3), (2, 1)]
    with Espeak() as espeak:
        first = synthesize_split(espeak, plan, seed=0, split="train")
        again = synthesize_split(espeak, plan, seed=0, split="train")
        other = synthesize_split(espeak, plan, seed=1, split="train")
    for key in ("audio", "lengths", "label", "nuisance"):
        assert np.array_equal(first[key], again[key])
    assert first["label"].tolist() == [0, 1, 2] and first["nuisance"].tolist() == [0, 3, 1]
    assert first["lengths"].sum() == len(first["audio"])
    assert not np.array_equal(first["audio"][: len(other["audio"])], other["audio"][: len(first["audio"])])


def test_masked_mean_pool_averages_only_the_real_frames():
    hidden = torch.arange(12.0).reshape(2, 3, 2)
    mask = torch.tensor([[True, True, True], [True, False, False]])
    pooled = masked_mean_pool(hidden, mask)
    assert torch.equal(pooled, torch.tensor([[2.0, 3.0], [6.0, 7.0]]))  # row 2: frame 0 only


def test_a_padded_utterance_pools_as_it_does_alone():
    torch.manual_seed(0)
    model = PooledClassifier(SSLEncoder("unused", random_init_config=TINY_ENCODERS["wav2vec2"]), 4).eval()
    short, long = torch.randn(1, 1600), torch.randn(1, 4000)
    batch = torch.zeros(2, 4000)
    batch[0, :1600], batch[1] = short, long
    with torch.no_grad():
        alone = model.pooled(short, torch.ones(1))
        padded = model.pooled(batch, torch.tensor([0.4, 1.0]))
        hidden, frame_mask = model.encoder(batch, torch.tensor([0.4, 1.0]))
        logits_alone, logits_padded = model(short, torch.ones(1)), model(batch, torch.tensor([0.4, 1.0]))
    assert torch.allclose(padded[0], alone[0], atol=1e-5)
    assert torch.allclose(logits_padded[0], logits_alone[0], atol=1e-5)
    assert not frame_mask[0].all() and not torch.allclose(hidden[0].mean(0), alone[0], atol=1e-3)  # padding excluded


def test_methods_reuse_the_comparison_study_definitions():
    models = {m: build_model(m, str(ASSET_BACKBONE), seed=0) for m in METHODS}
    trainable = {m: {n for n, p in model.named_parameters() if p.requires_grad} for m, model in models.items()}
    assert trainable["frozen"] == {"head.weight", "head.bias"}
    assert not any("feature_extractor" in n for n in trainable["full"]) and len(trainable["full"]) > 20
    assert all(isinstance(layer, LoRALinear) for layer in adapter_layers(models["lora"]))
    configs = {m: adapter_state(models[m]).config for m in ("fvae_lora", "delta0", "same_prior")}
    assert all(isinstance(layer, FVAELoRALinear) for layer in adapter_layers(models["fvae_lora"]))
    assert configs["fvae_lora"].target_modules == TARGETS["all_linear"]
    assert (configs["delta0"].delta, configs["delta0"].beta_z2) == (0.0, 1.0)
    assert configs["same_prior"].prior_mean_z2 == 0.0 and configs["fvae_lora"].prior_mean_z2 == 1.5


def test_each_control_puts_back_its_own_0_1_default_and_nothing_else():
    fvae = adapter_config("fvae_lora").to_dict()
    changed = {
        method: ({k: v for k, v in adapter_config(method).to_dict().items() if fvae[k] != v}, max_grad_norm(method))
        for method in ("fvae_lora_clip5", "fvae_lora_scale1", "fvae_lora_decoder1", "fvae_lora_old")
    }
    assert changed["fvae_lora_clip5"] == ({}, 5.0)
    assert changed["fvae_lora_scale1"] == ({"lora_alpha": 16}, 1e-3)
    assert changed["fvae_lora_decoder1"] == ({"decoder_layers": 1, "decoder_dropout": 0.0}, 1e-3)
    assert changed["fvae_lora_old"] == (
        {"lora_alpha": 16, "decoder_layers": 1, "decoder_dropout": 0.0, "logvar_clamp": 10.0},
        5.0,
    )
    assert max_grad_norm("lora") == max_grad_norm("full") == 1e-3 and set(SPURIOUS_METHODS) >= set(STUDY_METHODS)


def _finish(study, task, val_acc, avg=80.0, worst=40.0):
    study.records[task] = {
        "seed": task.seed,
        "val_acc": val_acc,
        "avg_acc": avg + task.seed,
        "worst_group_acc": worst + task.seed,
        "trainable_params": 10,
    }


def test_each_method_runs_its_seeds_at_its_best_validation_rate_and_ablations_at_fvae_lora_s():
    study = Study({**STUDY_SIZE, "lr_grid": [0.001, 0.01, 0.05], "seeds": [0, 1]})
    first = study.due()
    assert {(t.method, t.seed) for t in first} == {(m, 0) for m in TUNED} and len(first) == 12
    assert TUNED == ("frozen", "lora", "fvae_lora", "full")
    for task in first:
        _finish(study, task, {0.001: 90.0, 0.01: 95.0, 0.05: 95.0}[task.lr] if task.method != "full" else 50.0)
    assert study.picked_lr("fvae_lora") == 0.01  # a tie with 0.05: the lower rate
    assert study.picked_lr("full") == 0.001 and study.picked_lr("delta0") == 0.01
    ablations = {Task(m, 0.01, s) for m in AT_FVAE_RATE for s in (0, 1)}  # the controls too
    seeds = {*(Task(m, 0.01, 1) for m in ("frozen", "lora", "fvae_lora")), Task("full", 0.001, 1)}
    assert set(study.due()) - set(first) == seeds | ablations
    for task in study.due():
        if task not in study.records:
            _finish(study, task, 0.0)
    entries = {e["method"]: e for e in results_entries(study)}
    assert entries["fvae_lora"]["avg_acc"] == [80.0, 81.0] and entries["fvae_lora"]["gap"] == [40.0, 40.0]
    assert entries["fvae_lora"]["val_acc_by_lr"] == {"0.001": 90.0, "0.01": 95.0, "0.05": 95.0}
    assert entries["delta0"]["lr"] == 0.01 and entries["delta0"]["val_acc_by_lr"] == {}
    entries["lora"]["worst_group_acc"] = [45.0, 30.0]
    assert fvae_minus_lora(list(entries.values())) == {"avg_acc": [0.0, 0.0], "worst_group_acc": [-5.0, 11.0]}


@pytest.mark.slow
def test_quick_study_writes_the_schema_and_never_reruns_a_finished_run(tmp_path: Path, capsys) -> None:
    pytest.importorskip("espeakng_loader")
    out = tmp_path / "out"
    argv = ["--quick", "--out", str(out), "--work", str(tmp_path / "work")]
    returned = main(argv)

    results = json.loads((out / "results.json").read_text())
    assert results == json.loads(json.dumps(returned))
    assert [e["method"] for e in results["results"]] == STUDY_METHODS  # the recipe's LoRA control is not run
    assert STUDY_METHODS == [
        "frozen",
        "lora",
        "fvae_lora",
        "full",
        "delta0",
        "same_prior",
        "fvae_lora_old",
        "fvae_lora_clip5",
        "fvae_lora_scale1",
        "fvae_lora_decoder1",
    ]
    for e in results["results"]:
        assert {"method", "lr", "seeds", "avg_acc", "worst_group_acc"} <= set(e)
        assert e["seeds"] == [0] and e["lr"] == 0.01
        assert len(e["avg_acc"]) == len(e["worst_group_acc"]) == 1
        assert 0 <= e["worst_group_acc"][0] <= e["avg_acc"][0] <= 100
    (corpus,) = (tmp_path / "work" / "corpus").iterdir()
    with np.load(corpus / "test.npz") as test:
        assert set(Counter(zip(test["label"].tolist(), test["nuisance"].tolist())).values()) == {1}
        assert len(test["label"]) == 16
    with np.load(corpus / "train.npz") as train:  # --quick: 6 per word at rate 0.5
        counts = Counter(zip(train["label"].tolist(), train["nuisance"].tolist()))
        assert all(counts[(c, n)] == (3 if c == n else 1) for c in range(4) for n in range(4))
    assert (out / "accuracy.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "results.md").read_text() in capsys.readouterr().out

    records = sorted((out / "records").rglob("*.json"))
    assert len(records) == 10
    fvae = json.loads((out / "records" / "fvae_lora" / "lr0.01" / "seed0.json").read_text())
    assert fvae["settings"]["max_grad_norm"] == 1e-3 and fvae["settings"]["adapter_config"]["decoder_layers"] == 3
    assert fvae["settings"]["optimizer_rule"] == OPTIMIZER_RULE  # a record of 0.2's optimiser runs again
    terms = fvae["train_fvae_terms"]  # per epoch: whether the VAE trained
    assert {"reconstruction", "kl_z1", "gamma", "aux"} <= set(terms) and all(len(v) == 1 for v in terms.values())
    lora = json.loads((out / "records" / "lora" / "lr0.01" / "seed0.json").read_text())
    assert lora["train_fvae_terms"] == {} and len(lora["train_loss"]) == 1
    assert fvae["commit"] == results["commit"] and "--quick" in results["command"]
    stamps = [r.stat().st_mtime_ns for r in records]
    again = main(argv)
    assert [r.stat().st_mtime_ns for r in records] == stamps  # nothing ran again
    assert again["results"] == returned["results"]

    (out / "records" / "same_prior" / "lr0.01" / "seed0.json").unlink()
    partial = {e["method"]: e for e in main([*argv, "--report-only"])["results"]}
    assert not (out / "records" / "same_prior" / "lr0.01" / "seed0.json").exists()  # nothing ran
    assert partial["same_prior"]["seeds"] == [] and partial["delta0"]["seeds"] == [0]
    assert "| same_prior | 0.01 | (fvae_lora's) | 0 | n/a |" in (out / "results.md").read_text()


@pytest.mark.slow
def test_export_keeps_each_runs_classifier_and_writes_the_test_manifest(tmp_path: Path) -> None:
    pytest.importorskip("espeakng_loader")
    out, exports = tmp_path / "out", tmp_path / "exports"
    argv = [
        "--quick",
        "--methods",
        "fvae_lora",
        "--out",
        str(out),
        "--work",
        str(tmp_path / "work"),
        "--export",
        str(exports),
    ]
    [record] = main(argv)["runs"]
    manifest = json.loads((exports / "test.json").read_text())
    (corpus,) = (tmp_path / "work" / "corpus").iterdir()
    test = load_split(corpus, "test")
    assert [(e["label"], e["nuisance"]) for e in manifest.values()] == [
        (WORDS[w], list(NOISES)[n]) for w, n in zip(test["label"].tolist(), test["nuisance"].tolist())
    ]
    assert all(torch.equal(load_audio(e["wav"]), wav) for e, wav in zip(manifest.values(), test["wavs"]))
    # The exported model is the run's: the same test accuracy, group by group.
    model, description = load_exported(exports / "fvae_lora" / "lr0.01" / "seed0")
    assert description["task"] == "classification" and description["labels"] == list(WORDS)
    correct = correct_predictions(model, test, 8)
    assert group_accuracies(correct, test) == record["test_group_acc"]
    # A finished run with its export never runs again; one whose export is gone does.
    stamp = (out / "records" / "fvae_lora" / "lr0.01" / "seed0.json").stat().st_mtime_ns
    main(argv)
    assert (out / "records" / "fvae_lora" / "lr0.01" / "seed0.json").stat().st_mtime_ns == stamp
    (exports / "fvae_lora" / "lr0.01" / "seed0" / "model.json").unlink()
    main(argv)
    assert (out / "records" / "fvae_lora" / "lr0.01" / "seed0.json").stat().st_mtime_ns != stamp
    assert (exports / "fvae_lora" / "lr0.01" / "seed0" / "model.json").is_file()
