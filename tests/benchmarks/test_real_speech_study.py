"""benchmarks.compare on corpora with word transcripts: the real-speech study's preset is its protocol
(docs/real-speech.md), and the LibriSpeech preset runs offline at smoke size on a tiny corpus in LibriSpeech's
layout, resuming from its records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from word_corpora import make_word_corpus

from benchmarks.compare import cli
from benchmarks.compare.report import markdown_tables
from benchmarks.compare.study import Study
from benchmarks.compare.training import Task
from fvae_asr.demo.paths import ASSET_BACKBONE

from tiny_models import tiny_wav2vec2

ALL = ["frozen", "lora", "fvae_lora", "full", "delta0", "same_prior"]


@pytest.fixture(scope="module")
def arctic_voice(tmp_path_factory) -> Path:
    return make_word_corpus(tmp_path_factory.mktemp("arctic") / "cathy", "arctic_txt")


@pytest.fixture(scope="module")
def librispeech(tmp_path_factory) -> Path:
    return make_word_corpus(tmp_path_factory.mktemp("librispeech") / "LibriSpeech", "librispeech")


@pytest.fixture(scope="module")
def local_encoder(tmp_path_factory) -> Path:
    """A tiny random wav2vec2 saved as a Hugging Face directory: --encoder_source in place of the hub's."""
    folder = tmp_path_factory.mktemp("encoder") / "tiny"
    tiny_wav2vec2().save_pretrained(folder)
    return folder


def _finish(study: Study, task: Task, dev_per: float) -> None:
    study.records[task] = {"seed": task.seed, "dev_per": [dev_per], "test_per": 50.0, "seconds_per_epoch": 1.0}


@pytest.mark.e2e
def test_the_real_speech_preset_is_the_protocol(arctic_voice, tmp_path):
    args = cli.parse_args(["--preset", "real_speech", "--data_folder", str(arctic_voice), "--work", str(tmp_path)])
    size = args.size
    assert (args.encoder_source, size["recipe"], size["corpus"]) == (str(ASSET_BACKBONE), "hparams/demo.yaml", "arctic")
    assert size["encoder_source"] == "fvae_asr/assets/tiny_wav2vec2"  # as the report names it: no machine path
    assert (size["methods"], size["targets"], size["seeds"]) == (ALL, ["qk", "all_linear"], [0, 1, 2])
    assert (size["lr_grid"], size["lr_grids"], size["epochs"], size["batch_size"]) == (
        [0.001, 0.003, 0.01, 0.03],
        {},
        10,
        8,
    )
    assert args.corpus["overrides"] == {"corpus": "arctic", "data_folder": str(arctic_voice.resolve())}
    assert args.corpus["identity"]["utterances"] == {"train": 4, "dev": 1, "test": 1}  # split by prompt

    study = Study(size)
    first = study.due()
    assert {(t.method, t.targets) for t in first} == {
        ("frozen", "shared"),
        ("full", "shared"),
        *((m, t) for m in ("lora", "fvae_lora", "delta0", "same_prior") for t in ("qk", "all_linear")),
    }  # the ablations tune their own rate from the first
    assert len(first) == 10 * 4 and {t.seed for t in first} == {0}
    for task in first:  # each method's best dev rate: a different one per method
        best = {"frozen": 0.03, "full": 0.001, "delta0": 0.003}.get(task.method, 0.01)
        _finish(study, task, 10.0 if task.lr == best else 20.0)
    due = study.due()
    assert len(due) == 60  # the protocol's cost: 10 settings x (4 rates + 2 more seeds)
    picked = {(t.method, t.targets): t.lr for t in due if t.seed == 2}
    assert picked[("frozen", "shared")] == 0.03 and picked[("delta0", "qk")] == 0.003
    assert picked[("same_prior", "all_linear")] == 0.01 and picked[("full", "shared")] == 0.001


@pytest.mark.e2e
def test_a_word_corpus_study_refuses_bad_flags_before_writing(librispeech, tmp_path, capsys):
    for argv, message in (
        (["--preset", "librispeech"], "--corpus librispeech needs --data_folder"),
        (
            ["--preset", "real_speech", "--data_folder", str(librispeech)],
            "19-198.trans.txt: a transcript without a recording",
        ),
        (["--corpus", "arctic"], "--corpus: only with --preset"),
    ):
        with pytest.raises(SystemExit) as exit_:
            cli.main([*argv, "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")])
        assert exit_.value.code == 2 and message in capsys.readouterr().err
        assert not (tmp_path / "out").exists()


def _librispeech_argv(corpus: Path, encoder: Path, tmp_path: Path) -> list[str]:
    return [
        *("--preset", "librispeech", "--data_folder", str(corpus), "--encoder_source", str(encoder)),
        *("--quick", "--methods", "frozen", "fvae_lora", "delta0", "--targets", "all_linear", "--jobs", "2"),
        *("--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")),
    ]


@pytest.mark.e2e
def test_librispeech_preset_quick_runs_offline_and_resumes(librispeech, local_encoder, tmp_path):
    argv = _librispeech_argv(librispeech, local_encoder, tmp_path)
    returned = cli.main(argv)
    by = {e["method"]: e for e in returned["results"]}
    assert set(by) == {"frozen", "fvae_lora", "delta0"}
    assert by["delta0"]["lr_from"] == "delta0" and set(by["delta0"]["dev_per_by_lr"]) == {"0.002", "0.005"}
    for entry in by.values():
        assert entry["shift"] == "librispeech" and entry["seeds"] == [0, 1] and len(entry["test_per"]) == 2
        assert entry["trainable_params_train"] > 0
    assert by["frozen"]["trainable_params_train"] < by["fvae_lora"]["trainable_params_train"]
    settings = returned["settings"]
    assert settings["recipe"] == "hparams/train.yaml" and settings["epochs"] == 1
    assert settings["corpus"]["name"] == "librispeech" and settings["corpus"]["utterances"]["train"] == 4
    table = (tmp_path / "out" / "results.md").read_text()
    assert "on librispeech with " in table and "trainable params (train)" in table
    records = sorted((tmp_path / "out" / "records").rglob("*.json"))
    assert len(records) == 3 * 3  # each: 2 rates + 1 more seed
    run_folder = tmp_path / "work" / "runs" / "librispeech" / "all_linear" / "delta0" / "lr0.002" / "seed0"
    manifest = json.loads((run_folder / "save" / "train.json").read_text())
    assert {entry["wrd"] for entry in manifest.values()} >= {"she had your dark suit"}
    stamps = [record.stat().st_mtime_ns for record in records]
    assert cli.main(argv)["results"] == returned["results"]
    assert [record.stat().st_mtime_ns for record in records] == stamps  # nothing ran again


@pytest.mark.slow
def test_real_speech_preset_quick_runs_every_method_on_an_arctic_voice(arctic_voice, tmp_path):
    argv = ["--preset", "real_speech", "--data_folder", str(arctic_voice), "--quick", "--jobs", "2"]
    argv += ["--lr-grid", "0.005"]  # one rate: picking among rates is the LibriSpeech preset's test
    returned = cli.main([*argv, "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")])
    entries = returned["results"]
    assert {e["method"] for e in entries} == set(ALL) and {e["targets"] for e in entries} == {"qk", "all_linear"}
    assert all(len(e["test_per"]) == 2 and e["lr_from"] == e["method"] for e in entries)
    assert all(e["lr"] == 0.005 and e["trainable_params_train"] > 0 for e in entries)
    assert (tmp_path / "out" / "test_per.png").read_bytes().startswith(b"\x89PNG")
    table = (tmp_path / "out" / "results.md").read_text()
    assert "on arctic with fvae_asr/assets/tiny_wav2vec2 (batch 8 per process" in table
    assert "each method and ablation at its own rate" in table and "use FVAE-LoRA's" not in table


@pytest.mark.parametrize(
    ("tune_ablations", "said"),
    [(True, "each method and ablation at its own rate"), (False, "the ablations use FVAE-LoRA's")],
)
def test_the_report_says_whose_rate_the_ablations_ran_at(tune_ablations, said):
    size = {"corpus": "arctic", "encoder_source": "enc", "batch_size": 8, "processes": 1, "precision": "fp32"}
    size |= {"epochs": 10, "shifts": [], "targets": [], "device": "cpu", "tune_ablations": tune_ablations}
    header = markdown_tables([], [], size, []).splitlines()[0]
    assert said in header
