"""What a run folder holds stays one run's: a save folder is never shared with another run, an export is never
half old and half new, a restart leaves no earlier result behind, and a run never resumes on changed audio."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from speechbrain.utils.checkpoints import Checkpointer

from fvae_asr.recipes.timit.train import run
from fvae_asr.speech.models import export
from fvae_asr.speech.models.export import load_recognizer
from fvae_asr.speech.training.run_folder import (
    RunFolderInUse,
    RunSettingsError,
    check_resumable,
    plan_run,
    record_settings,
    run_folder_lock,
)

from conftest import HPARAMS, make_tone_corpus, recipe_overrides

QUIET = {"noprogressbar": True}


class Crash(Exception):
    """Stands for a process dying at a chosen point."""


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _epochs_logged(output: Path) -> list[str]:
    return re.findall(r"^epoch: (\d+)", (output / "train_log.txt").read_text(), re.M)


# ---- a save folder belongs to one run ----------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_save_folder_holding_another_runs_checkpoints_is_refused(tone_corpus, tmp_path):
    shared = tmp_path / "shared_save"
    first = recipe_overrides(tone_corpus, tmp_path / "a", save_folder=str(shared), number_of_epochs=1)
    run(HPARAMS, QUIET, first)
    before = _snapshot(shared)
    second = recipe_overrides(tone_corpus, tmp_path / "b", save_folder=str(shared), number_of_epochs=2)
    for restart in (False, True):
        with pytest.raises(
            RunSettingsError,
            match=f"{re.escape(str(shared))} holds the checkpoints of the run in {re.escape(str(tmp_path / 'a'))}",
        ):
            run(HPARAMS, QUIET, {**second, "restart": restart})
    after = _snapshot(shared)
    assert [name for name in before.keys() | after.keys() if before.get(name) != after.get(name)] in ([], ["run.lock"])
    assert not (tmp_path / "b" / "train_log.txt").exists()
    run(HPARAMS, QUIET, {**first, "number_of_epochs": 2})  # the owner still resumes
    assert _epochs_logged(tmp_path / "a") == ["1", "2"]


def test_a_save_folder_in_use_by_another_run_is_refused(tone_corpus, tmp_path):
    shared = tmp_path / "shared_save"
    with run_folder_lock(shared):  # another run, with another output folder, is training there
        with pytest.raises(RunFolderInUse, match=re.escape(str(shared))):
            run(HPARAMS, QUIET, recipe_overrides(tone_corpus, tmp_path / "b", save_folder=str(shared)))
    assert not list(shared.glob("CKPT+*")) and not (shared / "run_config.json").exists()


@pytest.mark.e2e
def test_a_run_folder_moved_as_a_whole_resumes(tone_corpus, tmp_path):
    run(HPARAMS, QUIET, recipe_overrides(tone_corpus, tmp_path / "a", number_of_epochs=1))
    (tmp_path / "a").rename(tmp_path / "moved")
    run(HPARAMS, QUIET, recipe_overrides(tone_corpus, tmp_path / "moved", number_of_epochs=2))
    assert _epochs_logged(tmp_path / "moved") == ["1", "2"]


# ---- exports and restarts ------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_an_export_killed_before_its_description_leaves_the_previous_export_whole(tone_corpus, tmp_path, monkeypatch):
    overrides = recipe_overrides(tone_corpus, tmp_path, number_of_epochs=1)
    run(HPARAMS, QUIET, overrides)
    before = _snapshot(tmp_path / "model")

    def crash(path, data):
        raise Crash

    monkeypatch.setattr(export, "write_json", crash)  # model.json, written last
    with pytest.raises(Crash):
        run(HPARAMS, QUIET, {**overrides, "number_of_epochs": 2})  # trains on, then exports new weights
    monkeypatch.undo()
    assert _snapshot(tmp_path / "model") == before
    load_recognizer(tmp_path / "model")
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.e2e
def test_a_restart_removes_the_previous_results_before_it_trains(tone_corpus, tmp_path, monkeypatch):
    overrides = recipe_overrides(tone_corpus, tmp_path, number_of_epochs=1)
    run(HPARAMS, QUIET, overrides)
    results = ("model", "test_results.json", "test_alignments.txt")
    assert all((tmp_path / name).exists() for name in results)

    def crash(*args, **kwargs):
        raise Crash

    monkeypatch.setattr(Checkpointer, "save_and_keep_only", crash)
    with pytest.raises(Crash):  # the restarted run dies at its first checkpoint
        run(HPARAMS, QUIET, {**overrides, "lr": 0.01, "restart": True})
    assert [name for name in results if (tmp_path / name).exists()] == []


def test_an_export_never_replaces_a_folder_of_other_files(tone_corpus, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "notes.txt").write_text("mine")
    with pytest.raises(OSError, match="holds files that are no part of an export \\(notes.txt\\)"):
        run(HPARAMS, QUIET, recipe_overrides(tone_corpus, tmp_path, number_of_epochs=1))
    assert (tmp_path / "model" / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "save").exists()  # refused before training


# ---- a run resumes on the audio it started with -------------------------------------------------------------------


@pytest.mark.e2e
def test_resuming_on_a_regenerated_timit_corpus_is_refused(tmp_path):
    corpus = make_tone_corpus(tmp_path / "TIMIT")
    overrides = recipe_overrides(corpus, tmp_path / "out", number_of_epochs=1)
    run(HPARAMS, QUIET, overrides)
    before = _snapshot(tmp_path / "out")
    shutil.rmtree(corpus)
    make_tone_corpus(corpus, seed=1)  # the same layout and names, other audio
    with pytest.raises(
        RunSettingsError,
        match=r"trained on other audio: the corpus changed since \(\d+ modified "
        r"\(TEST/DR1/FAKS0/SX10\..*pass --restart=True",
    ):
        run(HPARAMS, QUIET, {**overrides, "number_of_epochs": 2})
    after = _snapshot(tmp_path / "out")
    assert [name for name in before.keys() | after.keys() if before.get(name) != after.get(name)] in ([], ["run.lock"])
    run(HPARAMS, QUIET, {**overrides, "number_of_epochs": 2, "restart": True})
    assert _epochs_logged(tmp_path / "out") == ["1", "2"]


def _csv_corpus(root: Path, seed: int) -> dict:
    """Annotations of noise files: 4 training rows, 2 dev, 2 test, the wavs beside the CSVs."""
    root.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    files = {}
    for split, count in (("train", 4), ("dev", 2), ("test", 2)):
        rows = ["ID,duration,wav,phn"]
        for i in range(count):
            sf.write(root / f"{split}{i}.wav", 0.1 * rng.standard_normal(8000), 16000)
            rows.append(f"{split}{i},0.5,{split}{i}.wav,a b a")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
        files[split] = str(root / f"{split}.csv")
    return {"train_annotation": files["train"], "valid_annotation": files["dev"], "test_annotation": files["test"]}


def test_resuming_on_replaced_annotation_audio_is_refused(tone_corpus, tmp_path):
    overrides = recipe_overrides(tone_corpus, tmp_path / "out", **_csv_corpus(tmp_path / "csv", seed=0))
    plan = plan_run(HPARAMS, overrides, QUIET)
    record_settings(plan)
    (plan.save_folder / "CKPT+1").mkdir()  # as if the run had checkpointed
    check_resumable(plan_run(HPARAMS, overrides, QUIET), HPARAMS, overrides, QUIET)  # unchanged: resumes
    _csv_corpus(tmp_path / "csv", seed=1)  # every wav replaced, the CSVs as they were
    with pytest.raises(
        RunSettingsError,
        match=r"trained on other audio: the corpus changed since \(8 modified "
        r"\(.*dev0\.wav.*pass --restart=True",
    ):
        check_resumable(plan_run(HPARAMS, overrides, QUIET), HPARAMS, overrides, QUIET)


@pytest.mark.parametrize(
    "recorded_path",
    ["fvae_asr.speech.models.export.TrainableWeights", "fvae_asr.speech.export.TrainableWeights"],
    ids=["0.2", "0.1"],
)
def test_a_run_recorded_before_trainable_weights_moved_resumes(tone_corpus, tmp_path, recorded_path):
    """train.yaml builds TrainableWeights from fvae_asr.speech.training.resume; a run recorded when it lived in
    models.export (0.2) or in speech.export (0.1) names the old path in its record and still resumes."""
    overrides = recipe_overrides(tone_corpus, tmp_path / "out")
    plan = plan_run(HPARAMS, overrides, QUIET)
    record_settings(plan)
    (plan.save_folder / "CKPT+1").mkdir()  # as if the run had checkpointed
    record = plan.save_folder / "run_config.json"
    current = "!new:fvae_asr.speech.training.resume.TrainableWeights"
    assert current in record.read_text()
    record.write_text(record.read_text().replace(current, f"!new:{recorded_path}"))
    check_resumable(plan_run(HPARAMS, overrides, QUIET), HPARAMS, overrides, QUIET)
    record.write_text(record.read_text().replace(recorded_path, "fvae_asr.speech.models.export.Elsewhere"))
    with pytest.raises(RunSettingsError, match="trainable_weights"):  # any other class is still a changed setting
        check_resumable(plan_run(HPARAMS, overrides, QUIET), HPARAMS, overrides, QUIET)
