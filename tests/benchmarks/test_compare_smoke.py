"""benchmarks/compare: the study's bookkeeping (grid, picked rates, seeds, ablations, pairing) on
hand-made records, and a --quick smoke run on a tiny random wav2vec2 + CTC head saved as a Hugging Face
directory (no dependence on the shipped backbone)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.common import methods
from benchmarks.common.records import backbone_digest
from benchmarks.compare import cli, sizes, training
from benchmarks.compare import results as study_results
from benchmarks.compare import study as schedule
from fvae_asr.speech.data.timit import PHONES_39
from fvae_asr.speech.models.encoder import SSLEncoder
from fvae_asr.speech.models.export import export_hf_ctc
from fvae_asr.speech.models.recognizer import CTCRecognizer

from tiny_models import tiny_wav2vec2

SIZE = {
    "shifts": ["target"],
    "lr_grid": [0.001, 0.01, 0.05],
    "seeds": [0, 1],
    "methods": ["frozen", "lora", "fvae_lora", "full", "delta0", "same_prior", "lora_task_clip", "fvae_lora_old"],
    "targets": ["qk", "all_linear"],
}


def _finish(study, task, dev_per, test_per=50.0):
    study.records[task] = {
        "seed": task.seed,
        "dev_per": dev_per,
        "test_per": test_per,
        "seconds_per_epoch": 1.0,
        "trainable_params_train": 10,
        "params_inference": 5,
        "total_params": 20,
    }


def test_each_method_runs_its_seeds_at_its_own_best_rate_and_ablations_at_fvae_lora_s():
    study = schedule.Study(SIZE)
    first = study.due()
    assert {t.seed for t in first} == {0} and {t.method for t in first} == set(methods.TUNED)
    assert {(t.method, t.targets) for t in first if t.method in ("frozen", "full")} == {
        ("frozen", "shared"),
        ("full", "shared"),
    }  # no adapters: one grid per shift, not one per target setting
    # lr grid x (frozen, full, then lora, fvae_lora and their two controls on 2 target settings each)
    assert len(first) == 3 * (2 + 4 * 2)

    dev = {0.001: [60.0, 40.0], 0.01: [45.0, 41.0], 0.05: [39.0, 70.0]}  # best epoch decides: 0.05 (39.0)
    for task in study.grid("target", "fvae_lora", "qk"):
        _finish(study, task, dev[task.lr])
    for task in study.grid("target", "lora", "qk"):
        _finish(study, task, [50.0])  # a tie everywhere: the lowest rate wins
    assert study.picked_lr("target", "fvae_lora", "qk") == 0.05
    assert study.picked_lr("target", "lora", "qk") == 0.001
    assert study.picked_lr("target", "lora", "all_linear") is None  # its grid has not run
    due = set(study.due()) - set(first)
    Task = training.Task
    assert due == {
        Task("target", "fvae_lora", "qk", 0.05, 1),
        Task("target", "lora", "qk", 0.001, 1),
        *(Task("target", m, "qk", 0.05, s) for m in methods.ABLATIONS for s in (0, 1)),
    }

    for task in due:
        _finish(study, task, [30.0], test_per={"lora": 40.0, "fvae_lora": 35.0}.get(task.method, 30.0) + task.seed)
    entries = study_results.results_entries(study)
    fvae = next(e for e in entries if (e["method"], e["targets"]) == ("fvae_lora", "qk"))
    assert (
        fvae["lr"] == 0.05
        and fvae["seeds"] == [0, 1]
        and fvae["dev_per_by_lr"] == {"0.001": 40.0, "0.01": 41.0, "0.05": 39.0}
    )
    assert fvae["test_per"] == [50.0, 36.0]  # seed 0 is the grid run at the picked rate
    delta0 = next(e for e in entries if (e["method"], e["targets"]) == ("delta0", "qk"))
    assert delta0["lr"] == 0.05 and delta0["lr_from"] == "fvae_lora" and delta0["dev_per_by_lr"] == {}
    (pair,) = [p for p in study_results.paired_differences(entries) if p["targets"] == "qk"]
    assert (pair["mean"], pair["min"], pair["max"]) == (pytest.approx(-2.5), -5.0, 0.0)  # [50-50, 36-41]


def test_a_diverged_run_is_never_picked_and_its_seed_is_named_not_averaged():
    study = schedule.Study(SIZE)
    grid = study.grid("target", "fvae_lora", "qk")
    for task, dev in zip(grid, ([45.0], [41.0], None)):
        _finish(study, task, dev)
        if dev is None:  # the highest rate's loss went non-finite: its record says so and holds no PER
            study.records[task] = {"seed": task.seed, "diverged": "the training loss is nan at epoch 2"}
    assert study.picked_lr("target", "fvae_lora", "qk") == 0.01
    Task = training.Task
    _finish(study, Task("target", "fvae_lora", "qk", 0.01, 1), [40.0], test_per=44.0)
    study.records[Task("target", "fvae_lora", "qk", 0.01, 1)] = {"seed": 1, "diverged": "nan at epoch 1"}
    fvae = next(e for e in study_results.results_entries(study) if (e["method"], e["targets"]) == ("fvae_lora", "qk"))
    assert fvae["dev_per_by_lr"] == {"0.001": 45.0, "0.01": 41.0, "0.05": None}
    assert (fvae["seeds"], fvae["test_per"], fvae["diverged_seeds"]) == ([0], [50.0], [1])


def test_the_report_of_a_study_with_a_diverged_rate_compares_the_controls_over_the_rates_that_trained():
    study = schedule.Study(SIZE)
    for method, devs in (("fvae_lora", ([45.0], [41.0], None)), ("fvae_lora_old", ([44.0], [42.0], [39.0]))):
        for task, dev in zip(study.grid("target", method, "qk"), devs):
            _finish(study, task, dev)
            if dev is None:  # FVAE-LoRA's highest rate diverged (the corrected optimiser's, on the real grid)
                study.records[task] = {"seed": task.seed, "diverged": "the training loss is nan at epoch 2"}
    (effect,) = study_results.control_effects(study_results.results_entries(study))
    assert (effect["method"], effect["control"]) == ("fvae_lora", "fvae_lora_old")
    assert (effect["dev_per_recipe"], effect["dev_per_control"], effect["recipe_helped"]) == (41.0, 39.0, False)


def test_a_study_of_some_methods_and_targets_plans_only_those():
    study = schedule.Study(sizes.SIZES["demo"])  # the demo's runs, and LoRA beside them, on all linears
    demo = [("frozen", "shared"), ("lora", "all_linear"), ("fvae_lora", "all_linear")]
    assert {(t.method, t.targets) for t in study.due()} == set(demo)
    for task in study.due():
        _finish(study, task, [40.0 - task.lr], test_per=30.0 + task.lr * (task.method == "fvae_lora"))
    assert study.due() == [task for method, targets in demo for task in study.grid("target", method, targets)]
    top = max(sizes.SIZES["demo"]["lr_grid"])  # the highest rate wins
    entries = study_results.results_entries(study)
    assert [(e["method"], e["targets"], e["lr"]) for e in entries] == [
        (method, "all_linear", top) for method, _ in demo
    ]
    (pair,) = study_results.paired_differences(entries)
    assert (pair["targets"], pair["seeds"], pair["mean"]) == ("all_linear", 1, pytest.approx(top))


@pytest.mark.e2e
def test_quick_study_writes_the_results_schema_and_never_reruns_a_finished_run(tmp_path: Path, capsys) -> None:
    tiny_wav2vec2().save_pretrained(tmp_path / "wav2vec2")
    labels = ["<blank>", *PHONES_39]  # a CTC checkpoint like the shipped one: demo.yaml starts from its head
    recognizer = CTCRecognizer(SSLEncoder(tmp_path / "wav2vec2"), len(labels))
    backbone = export_hf_ctc(recognizer, labels, tmp_path / "backbone")
    out = tmp_path / "out"
    argv = ["--quick", "--jobs", "2", "--out", str(out), "--work", str(tmp_path / "work"), "--backbone", str(backbone)]
    returned = cli.main(argv)

    results = json.loads((out / "results.json").read_text())
    assert results == json.loads(json.dumps(returned))
    entries = results["results"]
    assert {(e["method"], e["targets"], e["shift"]) for e in entries} == {
        (m, t, "target") for m in methods.METHODS for t in ("qk", "all_linear")
    }
    for e in entries:
        assert {
            "method",
            "targets",
            "shift",
            "lr_grid",
            "dev_per_by_lr",
            "lr",
            "seeds",
            "test_per",
            "trainable_params_train",
            "params_inference",
            "seconds_per_epoch",
        } <= set(e)
        assert e["lr_grid"] == [0.003, 0.05] and e["lr"] in e["lr_grid"] and e["seeds"] == [0]
        assert len(e["test_per"]) == 1 and e["test_per"][0] >= 0
        if e["method"] in methods.TUNED:
            assert set(e["dev_per_by_lr"]) == {"0.003", "0.05"}
    by = {(e["method"], e["targets"]): e for e in entries}
    assert by[("frozen", "qk")]["test_per"] == by[("frozen", "all_linear")]["test_per"]  # one shared run
    assert by[("fvae_lora", "qk")]["params_inference"] < by[("fvae_lora", "qk")]["total_params"]  # z2 side idle
    assert by[("lora", "qk")]["params_inference"] == by[("lora", "qk")]["total_params"]
    assert by[("lora", "qk")]["trainable_params_train"] < by[("lora", "all_linear")]["trainable_params_train"]
    assert by[("delta0", "all_linear")]["lr"] == by[("fvae_lora", "all_linear")]["lr"]
    assert (out / "dev_per.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "test_per.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "results.md").read_text() in capsys.readouterr().out

    assert {(c["method"], c["control"]) for c in results["controls"]} == {
        ("lora", "lora_task_clip"),
        ("fvae_lora", "fvae_lora_old"),
    }
    assert results["commit"] and results["command"].startswith("python -m benchmarks.compare --quick")

    records = sorted((out / "records").rglob("*.json"))
    assert len(records) == 2 * 10 + 2 * 2  # the grid of 10 settings, then 2 ablations x 2 target settings
    by_path = {str(r.relative_to(out / "records")): json.loads(r.read_text()) for r in records}
    old = by_path["target/qk/fvae_lora_old/lr0.003/seed0.json"]["settings"]
    new = by_path["target/qk/fvae_lora/lr0.003/seed0.json"]["settings"]
    assert (new["max_grad_norm"], new["adapter_config"]["decoder_layers"], new["adapter_config"]["lora_alpha"]) == (
        0.001,
        3,
        8,
    )
    assert (old["max_grad_norm"], old["adapter_config"]["decoder_layers"], old["adapter_config"]["lora_alpha"]) == (
        5.0,
        1,
        16,
    )
    assert by_path["target/shared/frozen/lr0.003/seed0.json"]["settings"]["adapter_config"] is None
    assert by_path["target/qk/lora_task_clip/lr0.003/seed0.json"]["settings"]["max_grad_norm"] == 1.0
    assert all(record["commit"] == results["commit"] for record in by_path.values())
    stamps = [r.stat().st_mtime_ns for r in records]
    again = cli.main(argv)
    assert [r.stat().st_mtime_ns for r in records] == stamps  # nothing ran again
    assert again["results"] == returned["results"]

    # A record made under another default (here the decoder's depth) is not this run's: it would run again.
    task = training.Task("target", "fvae_lora", "qk", 0.003, 0)
    study_settings = results["settings"]
    assert training.read_task_record(out, task, study_settings) is not None
    path = out / "records" / f"{task.key}.json"
    record = json.loads(path.read_text())
    record["settings"]["adapter_config"]["decoder_layers"] = 1
    path.write_text(json.dumps(record))
    assert training.read_task_record(out, task, study_settings) is None


def test_missing_backbone_is_a_clear_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--out", str(tmp_path), "--backbone", str(tmp_path / "nowhere")])
    assert "python -m fvae_asr.demo.backbone" in capsys.readouterr().err


def test_dev_per_parsing_keeps_the_last_line_of_each_epoch(tmp_path: Path) -> None:
    log = tmp_path / "train_log.txt"
    log.write_text(
        "epoch: 1, lr: 1.00e-03 - train loss: 3.1 - valid loss: 2.9, valid PER: 90.0\n"
        "epoch: 1, lr: 1.00e-03 - train loss: 3.0 - valid loss: 2.8, valid PER: 80.5\n"
        "epoch: 2, lr: 5.00e-04 - train loss: 2.0 - valid loss: 1.9, valid PER: 60.25\n"
        "epoch loaded: 2 - test loss: 1.9, test PER: 61.0\n"
    )
    assert training.dev_per_by_epoch(log, 2) == [80.5, 60.25]
    assert training.epochs_logged(log) == 2
    with pytest.raises(RuntimeError, match="epochs \\[3\\]"):
        training.dev_per_by_epoch(log, 3)


# ---- the paper's TIMIT table: --preset paper_timit on a real (here: TIMIT-layout tone) corpus ----------------------


@pytest.fixture(scope="module")
def large_layout_encoder(tmp_path_factory) -> Path:
    """A tiny random wav2vec2 in wav2vec2-large-lv60's layout (layer-normalised CNN, stable layer norm), saved as a
    local Hugging Face directory: what --encoder_source takes."""
    model = tiny_wav2vec2()
    assert model.config.do_stable_layer_norm and model.config.feat_extract_norm == "layer"
    folder = tmp_path_factory.mktemp("encoder") / "wav2vec2-large-layout"
    model.save_pretrained(folder)
    return folder


def _preset_argv(corpus: Path, encoder: Path, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--preset",
        "paper_timit",
        "--data_folder",
        str(corpus),
        "--encoder_source",
        str(encoder),
        "--out",
        str(tmp_path / "out"),
        "--work",
        str(tmp_path / "work"),
        *extra,
    ]


def test_paper_timit_preset_is_the_paper_s_setting_through_the_recipe_s_own_hparams(tone_corpus, tmp_path):
    args = cli.parse_args(["--preset", "paper_timit", "--data_folder", str(tone_corpus), "--work", str(tmp_path)])
    size = args.size
    assert (size["recipe"], size["encoder_source"], size["methods"], size["targets"], size["seeds"]) == (
        "hparams/train.yaml",
        "facebook/wav2vec2-large-lv60",
        ["full", "lora", "fvae_lora"],
        ["qk"],
        [0, 1, 2],
    )
    assert (size["epochs"], size["batch_size"]) == (20, 8)  # hparams/train.yaml's, read from the file
    assert (size["device"], size["precision"], size["processes"]) == ("cpu", "fp32", 1)
    study = schedule.Study(size)
    grids = {
        (method, targets): [t.lr for t in study.grid("timit", method, targets)]
        for method, targets in {(t.method, t.targets) for t in study.due()}
    }
    assert grids == {
        ("full", "shared"): [2.5e-5, 1e-4, 4e-4],
        ("lora", "qk"): [5e-4, 2e-3, 5e-3],
        ("fvae_lora", "qk"): [5e-4, 2e-3, 5e-3],
    }  # each method its own grid
    assert {t.shift for t in study.due()} == {"timit"}
    fvae = training.recipe_settings(
        "fvae_lora", "qk", "hparams/train.yaml"
    )  # the authors' settings, the package's defaults
    config = fvae["adapter_config"]
    assert (config["rank"], config["target_modules"], config["lora_alpha"], config["decoder_layers"]) == (
        16,
        ["q_proj", "k_proj"],
        8,
        3,
    )
    assert (config["prior_mean_z2"], config["delta"], config["aux_weight"], fvae["max_grad_norm"]) == (
        1.5,
        2 / 16,
        1e-3,
        1e-3,
    )
    assert training.recipe_settings("lora", "qk", "hparams/train.yaml")["adapter_config"]["lora_alpha"] == 16
    assert training.recipe_settings("full", "shared", "hparams/train.yaml")["adapter_config"] is None

    fixed = cli.parse_args(
        [
            "--preset",
            "paper_timit",
            "--data_folder",
            str(tone_corpus),
            "--work",
            str(tmp_path),
            "--lr-grid",
            "0.001",
            "--method-lr-grid",
            "full=1e-4",
            "--batch-size",
            "4",
        ]
    ).size
    assert fixed["lr_grid"] == [0.001] and fixed["lr_grids"] == {"full": [1e-4]}  # a fixed rate per method
    assert fixed["batch_size"] == 4  # e.g. 4 per process on 2 GPUs: the effective batch of 8 on one


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data_folder", "X"], "--data_folder: only with --preset"),
        (["--preset", "paper_timit"], "--preset needs a corpus"),
        (["--preset", "paper_timit", "--data_folder", "NOWHERE"], "TIMIT data folder not found"),
        (["--preset", "paper_timit", "--train_annotation", "a.csv"], "--valid_annotation, --test_annotation not given"),
        (["--preset", "paper_timit", "--data_folder", "CORPUS", "--backbone", "B"], "--backbone: only for the"),
        (["--preset", "paper_timit", "--data_folder", "CORPUS", "--launcher", "torchrun", "--jobs", "2"], "drop"),
        (["--preset", "paper_timit", "--data_folder", "CORPUS", "--nproc_per_node", "2"], "only with --launcher"),
        (["--preset", "paper_timit", "--data_folder", "CORPUS", "--encoder_source", "./no/such/dir"], "neither a"),
        (["--method-lr-grid", "full=fast"], "--method-lr-grid full=fast: expected METHOD=RATE"),
    ],
)
def test_a_real_corpus_study_refuses_bad_flags_before_writing(tone_corpus, tmp_path, capsys, argv, message):
    argv = [
        str(tone_corpus) if item == "CORPUS" else str(tmp_path / item) if item == "NOWHERE" else item for item in argv
    ]
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.e2e
def test_preset_quick_trains_through_the_recipe_keys_records_by_corpus_and_encoder_and_resumes(
    tone_corpus, large_layout_encoder, tmp_path, capsys
):
    argv = _preset_argv(tone_corpus, large_layout_encoder, tmp_path, "--quick", "--jobs", "2")
    returned = cli.main(argv)
    out = tmp_path / "out"
    results = json.loads((out / "results.json").read_text())
    assert results == json.loads(json.dumps(returned))
    by = {e["method"]: e for e in results["results"]}
    assert set(by) == {"full", "lora", "fvae_lora"} and {e["targets"] for e in by.values()} == {"qk"}
    assert by["full"]["lr_grid"] == [1e-4] and by["lora"]["lr_grid"] == [0.002, 0.005]
    for e in by.values():
        assert e["shift"] == "timit" and e["seeds"] == [0, 1] and len(e["test_per"]) == 2
        assert all(per >= 0 for per in e["test_per"]) and len(e["dev_per_curves"][0]) == 1  # (insertions: > 100)
    assert by["lora"]["trainable_params_train"] < by["fvae_lora"]["trainable_params_train"]
    assert by["lora"]["trainable_params_train"] < by["full"]["trainable_params_train"]
    (pair,) = results["fvae_minus_lora"]
    assert pair["seeds"] == 2 and pair["min"] <= pair["mean"] <= pair["max"]
    table = (out / "results.md").read_text()
    assert "on timit with " in table and "on cpu, processes per run: 1" in table and table in capsys.readouterr().out
    assert (out / "dev_per.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "test_per.png").read_bytes().startswith(b"\x89PNG")

    records = sorted((out / "records").rglob("*.json"))
    assert len(records) == 2 + 3 + 3  # full: 1 rate + 1 seed; lora and fvae_lora: 2 rates + 1 seed
    record = json.loads((out / "records/timit/qk/fvae_lora/lr0.002/seed0.json").read_text())
    settings = record["settings"]
    assert (settings["recipe"], settings["epochs"], settings["batch_size"], settings["precision"]) == (
        "hparams/train.yaml",
        1,
        8,
        "fp32",
    )
    assert settings["corpus"]["name"] == "timit" and settings["corpus"]["utterances"]["train"] == 12
    assert settings["backbone"] == backbone_digest(large_layout_encoder)
    assert settings["adapter_config"]["target_modules"] == ["q_proj", "k_proj"]
    stamps = [r.stat().st_mtime_ns for r in records]
    assert cli.main(argv)["results"] == returned["results"]
    assert [r.stat().st_mtime_ns for r in records] == stamps  # nothing ran again

    # Records are keyed by what the runs depend on: another precision or process count is another study.
    task = training.Task("timit", "fvae_lora", "qk", 0.002, 0)
    assert training.read_task_record(out, task, results["settings"]) is not None
    for changed in ({"precision": "bf16"}, {"processes": 2}, {"corpus": {**settings["corpus"], "sha256": "0"}}):
        assert training.read_task_record(out, task, {**results["settings"], **changed}) is None


@pytest.mark.slow
def test_preset_runs_each_recipe_run_under_torchrun_on_two_processes(tone_corpus, large_layout_encoder, tmp_path):
    """--launcher torchrun: each run is recipe_process.py under torchrun (DDP with gloo on 2 CPU processes)."""
    argv = _preset_argv(
        tone_corpus,
        large_layout_encoder,
        tmp_path,
        "--quick",
        "--methods",
        "lora",
        "--seeds",
        "0",
        "--lr-grid",
        "0.005",
        "--launcher",
        "torchrun",
        "--nproc_per_node",
        "2",
    )
    results = cli.main(argv)
    ((entry,),) = [[e for e in results["results"] if e["method"] == "lora"]]
    assert entry["seeds"] == [0] and entry["test_per"][0] >= 0
    folder = tmp_path / "work/runs/timit/qk/lora/lr0.005/seed0"
    assert json.loads((folder / "save/run_config.json").read_text())["world_size"] == 2
    assert json.loads((folder / "recipe_result.json").read_text())["test"]["per"] == entry["test_per"][0]
    assert results["settings"]["processes"] == 2


def test_a_corpus_given_by_annotations_is_identified_by_its_content_wherever_it_lives(tmp_path):
    from ipa_corpus import make_ipa_corpus

    def corpus_of(root: Path) -> dict:
        annotations = [
            f"--{key}={root / name}"
            for key, name in (
                ("train_annotation", "train.csv"),
                ("valid_annotation", "dev.csv"),
                ("test_annotation", "test.json"),
            )
        ]
        args = cli.parse_args(
            ["--preset", "paper_timit", "--data_folder", str(root), *annotations, "--work", str(tmp_path / "work")]
        )
        return args.corpus

    first = corpus_of(make_ipa_corpus(tmp_path / "a"))
    assert first["name"] == "annotations" and first["identity"]["utterances"] == {"train": 12, "dev": 4, "test": 4}
    assert first["overrides"]["data_folder"] == str((tmp_path / "a").resolve())  # the CSVs' $data_root
    assert first["overrides"]["train_annotation"] == str((tmp_path / "a" / "train.csv").resolve())
    assert corpus_of(make_ipa_corpus(tmp_path / "b"))["identity"] == first["identity"]  # same content elsewhere
    train = tmp_path / "b" / "train.csv"
    lines = train.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].rsplit(",", 1)[0] + ", spk9"  # another column: not what trains
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert corpus_of(tmp_path / "b")["identity"] == first["identity"]
    lines[1] = lines[1].replace(", spk9", " ʃ, spk9")  # one more phone in one utterance
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert corpus_of(tmp_path / "b")["identity"]["sha256"] != first["identity"]["sha256"]


def test_a_run_whose_loss_goes_non_finite_is_recorded_as_diverged(tmp_path, monkeypatch):
    from fvae_asr.speech.training.resume import NonFiniteTrainingError

    def diverge(*args, **kwargs):
        raise NonFiniteTrainingError("the training loss is nan at epoch 2, step 44")

    monkeypatch.setattr(training, "run", diverge)
    task = training.Task("target", "fvae_lora", "all_linear", 0.1, 0)
    settings = {**sizes.SIZES["quick"], "epochs": 1}
    paths = {"work": str(tmp_path), "data": {"target": {}}, "backbone": "unused", "torchrun": None}
    record = training.run_task(task, settings, {**paths, "run_opts": {}, "commit": "abc"}, tmp_path / "out")
    assert record["diverged"].startswith("the training loss is nan") and "test_per" not in record
    assert training.read_task_record(tmp_path / "out", task, settings) == record  # finished: not run again
    assert training.dev_score(record) == float("inf")
