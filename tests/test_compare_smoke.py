"""Smoke test of benchmarks/compare_methods.py: two methods, one seed, one epoch, a tiny synthetic corpus and a
tiny random wav2vec2 + CTC head saved as a Hugging Face directory (no dependence on the shipped backbone)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import load_script
from fvae_asr.speech.encoder import Wav2Vec2Encoder
from fvae_asr.speech.export import export_hf_ctc
from fvae_asr.speech.model import CTCRecognizer
from fvae_asr.speech.timit import PHONES_39
from tiny_models import tiny_wav2vec2


def test_two_methods_one_seed_write_results_table_and_plot(tmp_path: Path, capsys) -> None:
    compare = load_script("compare_methods")
    tiny_wav2vec2().save_pretrained(tmp_path / "wav2vec2")
    labels = ["<blank>", *PHONES_39]  # a CTC checkpoint like the shipped one: demo.yaml starts from its head
    recognizer = CTCRecognizer(Wav2Vec2Encoder(tmp_path / "wav2vec2"), len(labels))
    backbone = export_hf_ctc(recognizer, labels, tmp_path / "backbone")
    out = tmp_path / "out"
    argv = ["--out", str(out), "--methods", "frozen", "fvae_lora", "--seeds", "0", "--epochs", "1",
            "--backbone", str(backbone), "--train-speakers", "3", "--sentences-per-speaker", "2",
            "--test-speakers", "2"]  # fmt: skip
    returned = compare.main(argv)

    results = json.loads((out / "results.json").read_text())
    assert results == json.loads(json.dumps(returned))
    assert set(results) == {"settings", "runs", "aggregate"}
    assert [(r["method"], r["seed"]) for r in results["runs"]] == [("frozen", 0), ("fvae_lora", 0)]
    for record in results["runs"]:
        assert {"test_per", "insertions", "deletions", "substitutions", "trainable_parameters", "train_seconds",
                "seconds_per_epoch", "dev_per"} <= set(record)  # fmt: skip
        assert record["test_per"] >= 0 and len(record["dev_per"]) == 1 and record["seconds_per_epoch"] > 0
        assert (out / "runs" / record["method"] / "seed0" / "run.json").is_file()
    frozen, fvae = results["runs"]
    assert frozen["trainable_parameters"] < fvae["trainable_parameters"]
    summary = results["aggregate"]
    assert summary["time_reference"] == "fvae_lora"
    assert summary["methods"]["fvae_lora"]["time_ratio"] == pytest.approx(1.0)
    assert summary["methods"]["frozen"]["test_per_std"] is None  # one seed: no std

    table = (out / "results.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert [row.split("|")[1].strip() for row in rows[1:]] == ["frozen", "fvae_lora"]
    assert "vs fvae_lora" in rows[0]
    assert table in capsys.readouterr().out
    assert (out / "dev_per.png").read_bytes().startswith(b"\x89PNG")

    again = compare.main(argv)  # finished runs are skipped: the same records come back
    assert again["runs"] == returned["runs"]


def test_missing_backbone_is_a_clear_error(tmp_path: Path, capsys) -> None:
    compare = load_script("compare_methods")
    with pytest.raises(SystemExit):
        compare.main(["--out", str(tmp_path), "--backbone", str(tmp_path / "nowhere")])
    assert "python -m fvae_asr.demo.backbone" in capsys.readouterr().err


def test_dev_per_parsing_keeps_the_last_line_of_each_epoch(tmp_path: Path) -> None:
    compare = load_script("compare_methods")
    log = tmp_path / "train_log.txt"
    log.write_text("epoch: 1, lr: 1.00e-03 - train loss: 3.1 - valid loss: 2.9, valid PER: 90.0\n"
                   "epoch: 1, lr: 1.00e-03 - train loss: 3.0 - valid loss: 2.8, valid PER: 80.5\n"
                   "epoch: 2, lr: 5.00e-04 - train loss: 2.0 - valid loss: 1.9, valid PER: 60.25\n"
                   "epoch loaded: 2 - test loss: 1.9, test PER: 61.0\n")  # fmt: skip
    assert compare.dev_per_by_epoch(log, 2) == [80.5, 60.25]
    assert compare.epochs_logged(log) == 2
    with pytest.raises(RuntimeError, match="epochs \\[3\\]"):
        compare.dev_per_by_epoch(log, 3)
