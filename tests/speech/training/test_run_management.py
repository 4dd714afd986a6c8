"""Run management of the TIMIT recipe: extending, resuming, refusing changed settings, locking, crash-safe
checkpoints, usage errors, and the learning rates written to the training log."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file
from speechbrain.utils.checkpoints import Checkpointer

from fvae_asr.recipes.timit.train import main, run
from fvae_asr.speech.models import export
from fvae_asr.speech.training import resume

from conftest import HPARAMS, REPO, recipe_overrides
from tiny_models import TINY_ENCODERS

QUIET = {"noprogressbar": True}
STEPS_PER_EPOCH = 3  # 12 training utterances, batch 4


def _record_rates(monkeypatch) -> list[float]:
    """The learning rate of every optimiser step taken from now on."""
    used: list[float] = []
    original_step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        used.append(self.param_groups[0]["lr"])
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    return used


def _reference_rates(total: int, warmup: int, lr: float = 0.005) -> list[float]:
    from transformers import get_linear_schedule_with_warmup

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    schedule = get_linear_schedule_with_warmup(opt, num_warmup_steps=warmup, num_training_steps=total)
    rates = []
    for _ in range(total):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    return rates


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _checkpoint_folders(output: Path) -> list[Path]:
    return sorted((output / "save").glob("CKPT+*"))


@pytest.mark.e2e
def test_extending_a_finished_run_trains_on_a_rebuilt_schedule(tone_corpus, tmp_path, monkeypatch):
    overrides = recipe_overrides(tone_corpus, tmp_path, number_of_epochs=1)
    first = run(HPARAMS, QUIET, overrides)
    exported = load_file(str(Path(first["export"]) / "adapter_model.safetensors"))

    used = _record_rates(monkeypatch)
    run(HPARAMS, QUIET, {**overrides, "number_of_epochs": 2})

    # the rates of a fresh 2-epoch schedule (6 steps, round(0.1 * 6) = 1 warm-up), from step 3 on
    assert used == pytest.approx(_reference_rates(2 * STEPS_PER_EPOCH, 1)[STEPS_PER_EPOCH:])
    assert all(rate > 0 for rate in used)
    log = (tmp_path / "train_log.txt").read_text()
    assert "schedule rebuilt for number_of_epochs: 2" in log
    assert re.findall(r"^epoch: (\d+)", log, re.M) == ["1", "2"]
    extended = load_file(str(tmp_path / "model" / "adapter_model.safetensors"))
    assert any(not torch.equal(exported[k], extended[k]) for k in exported)


@pytest.mark.e2e
def test_fewer_epochs_than_trained_is_refused(tone_corpus, tmp_path):
    overrides = recipe_overrides(tone_corpus, tmp_path, number_of_epochs=2)
    run(HPARAMS, QUIET, overrides)
    with pytest.raises(ValueError, match="trained 2 epochs, more than number_of_epochs=1"):
        run(HPARAMS, QUIET, {**overrides, "number_of_epochs": 1})


@pytest.mark.e2e
def test_resuming_with_changed_settings_is_refused_before_anything_is_written(tone_corpus, tmp_path):
    overrides = recipe_overrides(tone_corpus, tmp_path, number_of_epochs=1)
    run(HPARAMS, QUIET, overrides)
    before = _snapshot(tmp_path)
    changes = {
        "lr": ({"lr": 0.01}, ["lr", "opt_class.lr", "lr_scheduler.initial_value"]),
        "aux_weight": ({"aux_weight": 0.01}, ["aux_weight", "adapter_configs.fvae_lora.aux_weight"]),
        "method": ({"method": "lora"}, ["method"]),
        "targets": ({"target_modules": ["q_proj", "v_proj"]}, ["target_modules"]),
        "prior": (
            {"adapter_configs": {"fvae_lora": {"prior_mean_z2": 0.0}}},
            ["adapter_configs.fvae_lora.prior_mean_z2"],
        ),
    }
    for changed, named in changes.values():
        with pytest.raises(ValueError, match="holds a run with other settings") as refused:
            run(HPARAMS, QUIET, {**overrides, **changed})
        for key in named:
            assert f"{key}: " in str(refused.value)
    with pytest.raises(ValueError, match=r"precision: 'fp32' -> 'bf16'"):  # a run option counts too
        run(HPARAMS, {**QUIET, "precision": "bf16"}, overrides)
    after = _snapshot(tmp_path)
    assert after.keys() == before.keys()
    assert [name for name in before if before[name] != after[name]] in ([], ["run.lock"])


@pytest.mark.e2e
def test_restart_starts_afresh_with_the_new_settings(tone_corpus, tmp_path, monkeypatch):
    overrides = recipe_overrides(tone_corpus, tmp_path, number_of_epochs=1)
    run(HPARAMS, QUIET, overrides)
    used = _record_rates(monkeypatch)
    run(HPARAMS, QUIET, {**overrides, "lr": 0.01, "restart": True})
    assert used == pytest.approx(_reference_rates(STEPS_PER_EPOCH, 0, lr=0.01))  # round(0.3) = 0 warm-up steps
    assert re.findall(r"^epoch: (\d+)", (tmp_path / "train_log.txt").read_text(), re.M) == ["1"]
    assert re.findall(r"^lr: (.*)$", (tmp_path / "hyperparams.yaml").read_text(), re.M) == ["0.01"]
    run(HPARAMS, QUIET, {**overrides, "lr": 0.01})  # the new settings are now the run's own


def test_a_second_run_in_a_busy_output_folder_is_refused(tone_corpus, tmp_path):
    from fvae_asr.speech.training.run_folder import RunFolderInUse, run_folder_lock

    with run_folder_lock(tmp_path), pytest.raises(RunFolderInUse, match=re.escape(str(tmp_path))):
        run(HPARAMS, QUIET, recipe_overrides(tone_corpus, tmp_path, number_of_epochs=1))
    assert not (tmp_path / "save").exists()


LOCK_HOLDER = """
import multiprocessing, os, sys, time
from pathlib import Path
from fvae_asr.speech.training.run_folder import run_folder_lock
with run_folder_lock(Path(sys.argv[1])):
    worker = multiprocessing.get_context("fork").Process(target=time.sleep, args=(60,))  # as a DataLoader's
    worker.start()
    print(worker.pid, flush=True)
    time.sleep(60)
"""


@pytest.mark.e2e
def test_the_lock_of_a_killed_process_does_not_outlive_it_in_the_processes_it_forked(tmp_path):
    """kill -9 of a run whose DataLoader workers (forked while it held the lock) outlive it by seconds: the next
    run takes the folder at once."""
    from fvae_asr.speech.training.run_folder import run_folder_lock

    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    worker = int(holder.stdout.readline())
    try:
        holder.kill()
        holder.wait()
        os.kill(worker, 0)  # the forked worker is still running
        with run_folder_lock(tmp_path):
            pass
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)


@pytest.mark.parametrize(
    ("flag", "field", "allowed"),
    [
        ("--method=foo", "method", "fvae_lora"),
        ("--train_sorting=shuffled", "train_sorting", "random"),
        ("--ckpt_interval_steps=5", "ckpt_interval_steps", "only one"),
        ("--restart=no", "restart", "True or False"),
    ],
)
def test_invalid_settings_are_one_line_usage_errors_before_anything_is_written(
    tone_corpus, tmp_path, capsys, flag, field, allowed
):
    output = tmp_path / "out"
    config = json.dumps(TINY_ENCODERS["wav2vec2"]).replace('"', "")
    with pytest.raises(SystemExit) as stopped:
        main(
            [
                str(HPARAMS),
                f"--data_folder={tone_corpus}",
                f"--output_folder={output}",
                f"--encoder_config={config}",
                "--noprogressbar",
                flag,
            ]
        )
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0] and allowed in err[0]
    assert not output.exists()


def test_an_invalid_precision_is_refused_before_anything_is_written(tone_corpus, tmp_path):
    """(On the command line, SpeechBrain's own argument parser refuses --precision=fp8 with exit 2.)"""
    overrides = recipe_overrides(tone_corpus, tmp_path / "out")
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16; got 'fp8'"):
        run(HPARAMS, {**QUIET, "precision": "fp8"}, overrides)
    with_eval_precision = tmp_path / "hparams.yaml"  # a run option may also be a key of the yaml
    with_eval_precision.write_text(HPARAMS.read_text() + "eval_precision: fp64\n")
    with pytest.raises(ValueError, match="eval_precision must be one of fp32, bf16, fp16; got 'fp64'"):
        run(with_eval_precision, QUIET, overrides)
    with pytest.raises(ValueError, match="train.yaml has no eval_precison"):  # a typo in an override
        run(HPARAMS, QUIET, {**overrides, "eval_precison": "fp16"})
    assert not (tmp_path / "out").exists()


@pytest.mark.e2e
def test_logged_learning_rates_are_those_the_epoch_trained_with(tone_corpus, tmp_path, monkeypatch):
    used = _record_rates(monkeypatch)
    run(HPARAMS, QUIET, recipe_overrides(tone_corpus, tmp_path, number_of_epochs=2, warmup_ratio=0.5))
    lines = re.findall(r"^epoch: \d+.*$", (tmp_path / "train_log.txt").read_text(), re.M)
    for epoch, line in enumerate(lines):
        first, last = used[epoch * STEPS_PER_EPOCH], used[(epoch + 1) * STEPS_PER_EPOCH - 1]
        assert f"lr first step: {first:.2e}, lr last step: {last:.2e}" in line


class Crash(Exception):
    """Stands for a process dying at a chosen point."""


def _crash_on_call(monkeypatch, owner, name: str, call: int, after: bool = False) -> None:
    """Make ``owner.name`` raise ``Crash`` on its ``call``-th call (before it runs, or after it returned)."""
    original = getattr(owner, name)
    calls = []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) == call and not after:
            raise Crash
        result = original(*args, **kwargs)
        if len(calls) == call and after:
            raise Crash
        return result

    monkeypatch.setattr(owner, name, crashing)


@pytest.mark.e2e
def test_a_crash_while_saving_leaves_the_previous_checkpoint_usable(tone_corpus, tmp_path, monkeypatch):
    overrides = recipe_overrides(tone_corpus, tmp_path, number_of_epochs=2)
    _crash_on_call(monkeypatch, resume, "save_trainable", call=2)  # writing the end-of-epoch-2 checkpoint
    with pytest.raises(Crash):
        run(HPARAMS, QUIET, overrides)
    monkeypatch.undo()
    for folder in _checkpoint_folders(tmp_path):
        assert (folder / "model.ckpt").is_file(), f"{folder.name} looks like a checkpoint but has no weights"
    run(HPARAMS, QUIET, overrides)
    assert re.findall(r"^epoch: (\d+)", (tmp_path / "train_log.txt").read_text(), re.M) == ["1", "2", "2"]


@pytest.mark.e2e
@pytest.mark.parametrize("failure", ["ENOSPC", "torch.save"])
def test_a_full_disk_is_named_and_leaves_no_partial_checkpoint(tone_corpus, tmp_path, monkeypatch, failure):
    """The system error, or torch.save's RuntimeError (which drops it) when the disk has no space left."""
    overrides = recipe_overrides(tone_corpus, tmp_path, number_of_epochs=2)

    def disk_full(model, path):
        if failure == "ENOSPC":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        monkeypatch.setattr(resume.shutil, "disk_usage", lambda _: SimpleNamespace(free=0))
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file")

    run(HPARAMS, QUIET, {**overrides, "number_of_epochs": 1})
    saved = _checkpoint_folders(tmp_path)
    monkeypatch.setattr(resume, "save_trainable", disk_full)
    with pytest.raises(OSError, match="no space left on the device while saving a checkpoint") as failed:
        run(HPARAMS, QUIET, overrides)
    assert failed.value.errno == errno.ENOSPC
    assert _checkpoint_folders(tmp_path) == saved
    assert not list((tmp_path / "save").glob(".*CKPT*"))


@pytest.mark.e2e
def test_a_damaged_latest_checkpoint_is_skipped_for_the_previous_one(tone_corpus, tmp_path):
    overrides = recipe_overrides(tone_corpus, tmp_path, number_of_epochs=1)
    run(HPARAMS, QUIET, overrides)
    (good,) = _checkpoint_folders(tmp_path)
    damaged = good.with_name(good.name + "-later")
    shutil.copytree(good, damaged)
    meta = yaml.safe_load((damaged / "CKPT.yaml").read_text())
    meta["unixtime"] += 1000
    (damaged / "CKPT.yaml").write_text(yaml.dump(meta))
    (damaged / "model.ckpt").write_bytes(b"\0" * 100)  # e.g. a disk error
    run(HPARAMS, QUIET, {**overrides, "number_of_epochs": 2})
    assert f"Skipping the damaged checkpoint {damaged}" in (tmp_path / "log.txt").read_text()
    assert re.findall(r"^epoch: (\d+)", (tmp_path / "train_log.txt").read_text(), re.M) == ["1", "2"]


def _results(output: Path) -> tuple[list[str], dict, dict]:
    """The epochs' log lines, the test report and the weights of the latest checkpoint (the last epoch's)."""
    latest = max(_checkpoint_folders(output), key=lambda c: yaml.safe_load((c / "CKPT.yaml").read_text())["unixtime"])
    return (
        re.findall(r"^epoch: .*$", (output / "train_log.txt").read_text(), re.M),
        json.loads((output / "test_results.json").read_text()),
        load_file(str(latest / "model.ckpt")),
    )


@pytest.mark.slow
@pytest.mark.parametrize("sorting", ["ascending", "random"])
def test_a_run_resumed_mid_epoch_ends_as_the_uninterrupted_run(tone_corpus, tmp_path, monkeypatch, sorting):
    """Dropout (head and adapters) and the FVAE noise draw from the generators; the data order is shuffled
    with ``random``; the crash comes right after an intra-epoch checkpoint in epoch 2."""
    common = {
        "number_of_epochs": 3,
        "ckpt_interval_steps": 2,
        "ckpt_interval_minutes": 0,
        "train_sorting": sorting,
        "train_dataloader_opts": {"batch_size": 4, "num_workers": 0, "shuffle": sorting == "random"},
    }
    run(HPARAMS, QUIET, recipe_overrides(tone_corpus, tmp_path / "whole", **common))
    interrupted = recipe_overrides(tone_corpus, tmp_path / "resumed", **common)
    _crash_on_call(monkeypatch, Checkpointer, "save_and_keep_only", call=3, after=True)  # step 2 of epoch 2
    with pytest.raises(Crash):
        run(HPARAMS, QUIET, interrupted)
    monkeypatch.undo()
    run(HPARAMS, QUIET, interrupted)
    (whole_log, whole_report, whole_weights), (log, report, weights) = (
        _results(tmp_path / name) for name in ("whole", "resumed")
    )
    assert log == whole_log and len(log) == 3
    assert report == whole_report
    assert weights.keys() == whole_weights.keys() and all(torch.equal(whole_weights[k], weights[k]) for k in weights)


@pytest.mark.e2e
def test_warmup_schedule_matches_transformers_linear_schedule(tone_corpus, tmp_path, monkeypatch):
    """Step k (from 0) trains at lr * lambda(k) of transformers' get_linear_schedule_with_warmup: the first
    step is not taken at the full learning rate, and the last one is not skipped."""
    used = _record_rates(monkeypatch)
    run(HPARAMS, QUIET, recipe_overrides(tone_corpus, tmp_path, number_of_epochs=2, warmup_ratio=0.5))
    assert used == pytest.approx(_reference_rates(total=2 * STEPS_PER_EPOCH, warmup=STEPS_PER_EPOCH))


@pytest.mark.e2e
def test_a_diverging_run_stops_at_its_first_non_finite_loss_and_saves_nothing(tone_corpus, tmp_path, capsys):
    """``--method=frozen --lr=1e4`` diverges: one line, exit 1, and no non-finite checkpoint (a NaN one would make
    every later run call it damaged); the checkpoints saved before it diverged are finite."""
    from fvae_asr.recipes.timit.train import main

    from conftest import HPARAMS

    overrides = recipe_overrides(tone_corpus, tmp_path, method="frozen", lr=1e4, number_of_epochs=3)
    args = [str(HPARAMS), "--noprogressbar"] + [
        f"--{key}={json.dumps(value) if isinstance(value, (dict, list)) else value}" for key, value in overrides.items()
    ]
    with pytest.raises(SystemExit) as stopped:
        main(args)
    err = capsys.readouterr().err
    assert stopped.value.code == 1 and "the run diverged" in err and "Lower the learning rate" in err
    assert len(err.strip().splitlines()) == 1 and "the training loss is nan" in err
    from safetensors.torch import load_file

    for checkpoint in (tmp_path / "save").glob("CKPT+*"):
        assert all(torch.isfinite(t).all() for t in load_file(str(checkpoint / "model.ckpt")).values()), checkpoint


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    from fvae_asr.speech.training.resume import NonFiniteTrainingError, TrainableWeights

    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight[0, 1] = float("nan")
    with pytest.raises(NonFiniteTrainingError, match="tensor 'weight' has non-finite .*no checkpoint was saved"):
        TrainableWeights(model).save(tmp_path / "model.ckpt")
    assert not (tmp_path / "model.ckpt").exists()


@pytest.mark.e2e
def test_a_restart_that_crashes_leaves_none_of_the_old_results(tone_corpus, tmp_path, monkeypatch):
    overrides = recipe_overrides(tone_corpus, tmp_path, number_of_epochs=1)
    run(HPARAMS, QUIET, overrides)
    assert (tmp_path / "model" / "model.json").is_file() and (tmp_path / "test_results.json").is_file()

    def crash(*args, **kwargs):
        raise RuntimeError("killed while training")

    monkeypatch.setattr("fvae_asr.recipes.timit.train.train_test_export", crash)
    with pytest.raises(RuntimeError, match="killed"):
        run(HPARAMS, QUIET, {**overrides, "lr": 0.01, "restart": True})
    assert not (tmp_path / "model").exists() and not (tmp_path / "test_results.json").exists()
    assert not (tmp_path / "test_alignments.txt").exists()


def test_an_export_that_crashes_keeps_the_previous_export_whole(tmp_path, monkeypatch):
    from fvae_asr.speech.models.encoder import SSLEncoder
    from fvae_asr.speech.models.recognizer import CTCRecognizer
    from fvae_asr.speech.models.training_methods import configure_training

    from tiny_models import tiny_wav2vec2

    tiny_wav2vec2().save_pretrained(tmp_path / "backbone")

    def recognizer(n_labels: int) -> CTCRecognizer:
        model = CTCRecognizer(SSLEncoder(tmp_path / "backbone"), n_tokens=n_labels)
        configure_training(model, "frozen")
        return model

    old_labels = ["<blank>", "a", "b"]
    export.export_model(recognizer(3), "frozen", old_labels, tmp_path / "model")
    write_json = export.write_json

    def dies_before_the_description(path, content):
        raise OSError("killed before model.json")

    monkeypatch.setattr(export, "write_json", dies_before_the_description)
    with pytest.raises(OSError, match="killed"):
        export.export_model(recognizer(5), "frozen", [*old_labels, "c", "d"], tmp_path / "model")
    monkeypatch.setattr(export, "write_json", write_json)
    model, description = export.load_recognizer(tmp_path / "model")  # the old export, whole: labels fit weights
    assert description["labels"] == old_labels and model.head.out_features == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backbone", "model"]  # no staging folder left behind


def test_a_run_sharing_a_busy_save_folder_is_refused(tone_corpus, tmp_path):
    """Two runs with their own output folders but one save folder would mix their checkpoints: the second waits
    for nothing and is refused before it writes anything."""
    from fvae_asr.speech.training.run_folder import RunFolderInUse, run_folder_lock

    shared = tmp_path / "shared_save"
    first = recipe_overrides(tone_corpus, tmp_path / "a", number_of_epochs=1, save_folder=str(shared))
    second = {**first, "output_folder": str(tmp_path / "b")}
    with run_folder_lock(shared, "save_folder"):  # run A, still training
        with pytest.raises(RunFolderInUse, match=re.escape(f"{shared}: another run is using this save_folder")):
            run(HPARAMS, QUIET, second)
    assert not list(shared.glob("CKPT+*")) and not (tmp_path / "b" / "train_log.txt").exists()
