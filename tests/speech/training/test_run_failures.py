"""How the recipe fails: a full disk, a read-only folder, a device or precision the machine lacks, audio too short
for the encoder, a diverging run; each a one-line error through the command line (exit 2 for usage, 1 for the
rest), with nothing half-written and the last checkpoint and export intact."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import SafetensorError

from fvae_asr.recipes.timit.train import main, run
from fvae_asr.speech.models import export
from fvae_asr.speech.training import resume
from fvae_asr.speech.training.run_folder import (
    AUDIO_RECORD_NAME,
    RUN_RECORD_NAME,
    clear_previous_run,
    plan_run,
    record_settings,
)

from conftest import HPARAMS, recipe_overrides

QUIET = {"noprogressbar": True}
DISK_FULL_SAFETENSORS = (
    'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left '
    'on device" })'
)  # safetensors' own words


@pytest.fixture(autouse=True)
def _no_stale_console_log():
    """SpeechBrain's console log handler keeps the stream it found (a test's captured stderr, closed after it)."""
    yield
    root = logging.getLogger()
    for handler in root.handlers[:]:
        if type(handler) is not logging.FileHandler and isinstance(handler, logging.StreamHandler):
            root.removeHandler(handler)


def _flag(value) -> str:
    return json.dumps(value).replace('"', "") if isinstance(value, (dict, list)) else str(value)


def _argv(corpus: Path, output: Path, *flags: str, **settings) -> list[str]:
    """The command line of ``recipe_overrides``: every override a flag."""
    overrides = recipe_overrides(corpus, output, **settings)
    return [str(HPARAMS), "--noprogressbar", *(f"--{key}={_flag(value)}" for key, value in overrides.items()), *flags]


def _fails(argv: list[str], capsys) -> tuple[int, str]:
    """Run the command line; it must stop with one line on stderr: returns the exit code and the line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return stopped.value.code, err[0]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _checkpoints(output: Path) -> list[Path]:
    return sorted((output / "save").glob("CKPT+*"))


@pytest.mark.e2e
def test_a_full_disk_while_saving_a_checkpoint_is_one_line_and_keeps_the_last_checkpoint(
    tone_corpus, tmp_path, monkeypatch, capsys
):
    """torch.save reports a full disk as ``RuntimeError: basic_ios::clear``; the disk is full while the staging
    folder holds the partial checkpoint, and has room again once it is removed."""
    run(HPARAMS, QUIET, recipe_overrides(tone_corpus, tmp_path, number_of_epochs=1))
    saved = {path: _snapshot(path) for path in _checkpoints(tmp_path)}

    def disk_full(model, path):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("basic_ios::clear: iostream error")

    def usage(folder):
        staged = any((tmp_path / "save").glob(resume.STAGING_PREFIX + "*"))
        return SimpleNamespace(total=10**12, used=10**12 if staged else 0, free=0 if staged else 10**12)

    monkeypatch.setattr(resume, "save_trainable", disk_full)
    monkeypatch.setattr(resume.shutil, "disk_usage", usage)
    code, line = _fails(_argv(tone_corpus, tmp_path, number_of_epochs=2), capsys)
    assert code == 1 and "no space left on the device while saving a checkpoint" in line
    assert {path: _snapshot(path) for path in _checkpoints(tmp_path)} == saved
    assert not list((tmp_path / "save").glob(".*"))


@pytest.mark.e2e
def test_a_full_disk_while_exporting_is_one_line_and_keeps_the_previous_export(
    tone_corpus, tmp_path, monkeypatch, capsys
):
    run(HPARAMS, QUIET, recipe_overrides(tone_corpus, tmp_path, number_of_epochs=1))
    before = _snapshot(tmp_path / "model")

    def disk_full(model, directory):
        (Path(directory) / "adapter_model.safetensors").write_bytes(b"partial")
        raise SafetensorError(DISK_FULL_SAFETENSORS)

    monkeypatch.setattr(export, "save_adapter", disk_full)
    code, line = _fails(_argv(tone_corpus, tmp_path, number_of_epochs=2), capsys)
    assert code == 1 and "no space left on the device" in line and str(tmp_path / "model") in line
    assert _snapshot(tmp_path / "model") == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_read_only_output_folder_is_one_line_before_anything_is_written(tone_corpus, tmp_path, monkeypatch, capsys):
    """(Tests run as root, whom permissions do not stop: the file system's refusal is simulated.)"""
    import builtins

    output = tmp_path / "out"
    output.mkdir()
    real_open = builtins.open

    def read_only_open(file, mode="r", *args, **kwargs):
        if str(file).startswith(str(output)) and any(flag in mode for flag in "wax+"):
            raise OSError(errno.EROFS, "Read-only file system", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", read_only_open)
    code, line = _fails(_argv(tone_corpus, output), capsys)
    assert code == 1 and str(output) in line and "Read-only file system" in line
    assert list(output.iterdir()) == []


def test_fp16_on_a_cpu_is_a_usage_error_before_anything_is_written(tone_corpus, tmp_path, capsys):
    code, line = _fails(_argv(tone_corpus, tmp_path / "out", "--device=cpu", "--precision=fp16"), capsys)
    assert code == 2 and "fp16" in line and "bf16" in line
    assert not (tmp_path / "out").exists()


def test_a_cuda_device_on_a_machine_without_one_is_a_usage_error_before_anything_is_written(
    tone_corpus, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    code, line = _fails(_argv(tone_corpus, tmp_path / "out", "--device=cuda:0"), capsys)
    assert code == 2 and "cuda:0" in line and "--device=cpu" in line
    assert not (tmp_path / "out").exists()


def _short_corpus(root: Path, train_samples: list[int]) -> dict:
    """CSV annotations of noise: training files of the given lengths, dev and test files of 0.5 s."""
    rng = np.random.default_rng(0)
    files = {}
    for split, lengths in (("train", train_samples), ("dev", [8000] * 2), ("test", [8000] * 2)):
        rows = ["ID,duration,wav,phn"]
        for i, n in enumerate(lengths):
            sf.write(root / f"{split}{i}.wav", 0.1 * rng.standard_normal(n), 16000)
            rows.append(f"{split}{i},{n / 16000},{split}{i}.wav,a b a")
        (root / f"{split}.csv").write_text("\n".join(rows) + "\n")
        files[split] = root / f"{split}.csv"
    return {"train_annotation": files["train"], "valid_annotation": files["dev"], "test_annotation": files["test"]}


def test_training_audio_too_short_for_the_encoder_is_refused_naming_the_row(tone_corpus, tmp_path, capsys):
    """The tiny encoder's first frame needs 105 samples (kernels 10, 8 and 4, strides 5, 4 and 4: 10 + 7 x 5 + 3 x
    20), each further frame 80; SpecAugment's masks (10 frames) need 10 frames, 105 + 9 x 80 = 825 samples. Sorted
    by ascending duration, the shortest files share the first batch, which failed inside the encoder."""
    annotations = _short_corpus(tmp_path, [20, 25, 8000, 8000, 8000, 8000])
    argv = _argv(
        tone_corpus,
        tmp_path / "out",
        data_folder=tmp_path,
        mask_time_prob=0.05,
        batch_size=2,
        train_dataloader_opts={"batch_size": 2, "num_workers": 0},
        **annotations,
    )
    code, line = _fails(argv, capsys)
    assert code == 1 and f"{annotations['train_annotation']}, line 2 (ID 'train0')" in line
    assert "0.05156 s (825 samples)" in line  # at 16 kHz
    assert not list((tmp_path / "out").glob("save/CKPT*"))


@pytest.mark.e2e
def test_a_recipe_run_never_checkpoints_non_finite_weights(tone_corpus, tmp_path, monkeypatch, capsys):
    """Weights gone NaN after the epoch's last step (the next loss would have said so) stop the save."""
    from fvae_asr.recipes.timit.train import PhoneCTCBrain

    on_fit_batch_end = PhoneCTCBrain.on_fit_batch_end

    def poisoning(self, batch, outputs, loss, should_step):
        on_fit_batch_end(self, batch, outputs, loss, should_step)
        if self.hparams.epoch_counter.current == 2 and self.step == 3:
            with torch.no_grad():
                self.modules.model.head.weight[0, 0] = float("nan")

    monkeypatch.setattr(PhoneCTCBrain, "on_fit_batch_end", poisoning)
    code, line = _fails(_argv(tone_corpus, tmp_path, method="frozen", number_of_epochs=2), capsys)
    assert code == 1 and "non-finite" in line and "head.weight" in line and "no checkpoint was saved" in line
    assert len(_checkpoints(tmp_path)) == 1
    assert not list((tmp_path / "save").glob(".*"))


@pytest.mark.parametrize("record", [RUN_RECORD_NAME, AUDIO_RECORD_NAME])
def test_a_damaged_run_record_on_resume_is_one_line_naming_it(tone_corpus, tmp_path, capsys, record):
    output = tmp_path / "out"
    record_settings(plan_run(HPARAMS, recipe_overrides(tone_corpus, output), {}))
    (output / "save" / "CKPT+2026-01-01+00-00-00+00").mkdir()
    (output / "save" / record).write_text('{"cut sh')
    code, line = _fails(_argv(tone_corpus, output), capsys)
    assert code == 1 and f"{record}: invalid JSON" in line and "--restart=True" in line


def test_a_tensorboard_folder_that_is_a_file_is_refused_before_the_run_folder_is_claimed(tone_corpus, tmp_path, capsys):
    (tmp_path / "events").write_text("not a folder")
    for folder in (tmp_path / "events", tmp_path / "events" / "below"):
        argv = _argv(tone_corpus, tmp_path / "out", "--logger=tensorboard", f"--tensorboard_folder={folder}")
        code, line = _fails(argv, capsys)
        assert code == 2 and f"{tmp_path / 'events'} is a file, not a folder" in line
    assert not (tmp_path / "out").exists()


def test_restart_removes_the_earlier_runs_tensorboard_event_files(tone_corpus, tmp_path):
    overrides = recipe_overrides(tone_corpus, tmp_path, logger="tensorboard", restart=True)
    events = tmp_path / "tensorboard" / "events.out.tfevents.1700000000.host.1.0"
    events.parent.mkdir()
    events.write_bytes(b"an earlier run's scalars")
    (tmp_path / "tensorboard" / "notes.txt").write_text("the user's, not the run's")
    clear_previous_run(plan_run(HPARAMS, overrides, {}))
    assert not events.exists() and (tmp_path / "tensorboard" / "notes.txt").exists()


def test_a_training_file_with_a_nan_sample_is_refused_before_training_naming_the_row(tone_corpus, tmp_path, capsys):
    annotations = _short_corpus(tmp_path, [8000] * 4)
    samples = 0.1 * np.random.default_rng(1).standard_normal(8000)
    samples[4000] = np.nan
    sf.write(tmp_path / "train2.wav", samples, 16000, subtype="FLOAT")
    code, line = _fails(_argv(tone_corpus, tmp_path / "out", data_folder=tmp_path, **annotations), capsys)
    assert code == 1 and f"{annotations['train_annotation']}, line 4 (ID 'train2')" in line
    assert "non-finite (NaN or infinite) samples" in line
    assert not list((tmp_path / "out").glob("save/CKPT*"))
