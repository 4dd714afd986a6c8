"""End-to-end TIMIT recipe on a tiny tone corpus with a tiny random wav2vec2: every adapter kind, resume,
mixed precision, DDP with gloo, export."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from fvae_asr.recipes.timit.train import run
from fvae_asr.speech.models.export import load_recognizer
from fvae_asr.speech.training.hparams import load_hparams

from conftest import HPARAMS, REPO, recipe_overrides, torchrun_on_two_cpu_processes
from tiny_models import TINY_ENCODERS
from warm_python import run_python

QUIET = {"noprogressbar": True}


def _epochs_logged(output: Path) -> list[int]:
    return [int(m) for m in re.findall(r"^epoch: (\d+)", (output / "train_log.txt").read_text(), re.M)]


def _checkpoint_tensors(output: Path) -> dict:
    (ckpt,) = sorted((output / "save").glob("CKPT+*"))
    return load_file(str(ckpt / "model.ckpt"))


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["fvae_lora", "lora", "full", "frozen"])
def test_each_kind_trains_tests_and_exports(tone_corpus, tmp_path, kind):
    result = run(HPARAMS, QUIET, recipe_overrides(tone_corpus, tmp_path, method=kind, number_of_epochs=1))

    report = json.loads((tmp_path / "test_results.json").read_text())
    assert report["utterances"] == 4 and report["reference_phones"] > 0
    assert report["per"] == pytest.approx(
        100 * (report["insertions"] + report["deletions"] + report["substitutions"]) / report["reference_phones"]
    )
    assert "REF" in (tmp_path / "test_alignments.txt").read_text()
    log = (tmp_path / "train_log.txt").read_text()
    assert "valid PER" in log and "test PER" in log
    assert ("train aux" in log and "train gamma" in log) == (kind == "fvae_lora")

    tensors = _checkpoint_tensors(tmp_path)
    assert "head.weight" in tensors
    trained_backbone = [k for k in tensors if k.startswith("encoder.")]
    if kind == "frozen":
        assert not trained_backbone
    elif kind == "full":
        assert any(".attention.q_proj.weight" in k for k in trained_backbone)
        assert not any("feature_extractor" in k for k in trained_backbone)
    else:  # adapter-only: no base weights in the checkpoint
        assert trained_backbone and not any(".base." in k for k in trained_backbone)
        assert result["trainable_parameters"] < result["total_parameters"]

    outputs = []
    for seed in (0, 1):  # the random-init backbone is saved with the export, so reloading is deterministic
        torch.manual_seed(seed)
        model, description = load_recognizer(result["export"])
        with torch.no_grad():
            outputs.append(model(torch.sin(torch.arange(8000.0)).unsqueeze(0), torch.ones(1))[0])
    assert torch.equal(outputs[0], outputs[1])
    assert description["method"] == kind and description["labels"][0] == "<blank>"
    assert len(description["labels"]) == 40


@pytest.mark.e2e
def test_interrupted_run_resumes_where_it_stopped(tone_corpus, tmp_path):
    overrides = recipe_overrides(tone_corpus, tmp_path)
    run(HPARAMS, QUIET, {**overrides, "number_of_epochs": 1})  # "interrupted" after epoch 1 of 3
    assert _epochs_logged(tmp_path) == [1]
    run(HPARAMS, QUIET, {**overrides, "number_of_epochs": 3})
    assert _epochs_logged(tmp_path) == [1, 2, 3]  # epoch 1 was not trained again
    again = run(HPARAMS, QUIET, {**overrides, "number_of_epochs": 3})
    assert _epochs_logged(tmp_path) == [1, 2, 3] and again["test"]["per"] >= 0


def _cli(corpus: Path, output: Path, *extra: str) -> list[str]:
    config = json.dumps(TINY_ENCODERS["wav2vec2"]).replace('"', "")  # a YAML flow mapping
    return [
        str(HPARAMS),
        f"--data_folder={corpus}",
        f"--output_folder={output}",
        f"--encoder_config={config}",
        "--rank=4",
        "--batch_size=2",
        "--mask_time_prob=0.0",
        "--noprogressbar",
        *extra,
    ]


# Runs the recipe's command line and kills the process (SIGKILL) at the N-th checkpoint: "after" it was saved,
# or "during" the save (while the weights are written).
KILL_AT_CHECKPOINT = """
import os, signal, sys
from speechbrain.utils.checkpoints import Checkpointer
from fvae_asr.speech.training import resume
from fvae_asr.recipes.timit import train as recipe
mode, when = sys.argv[1], int(sys.argv[2])
calls = []
def killing(original):
    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == when and mode == "during":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if len(calls) == when and mode == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return wrapper
if mode == "during":
    resume.save_trainable = killing(resume.save_trainable)
else:
    Checkpointer.save_and_keep_only = killing(Checkpointer.save_and_keep_only)
recipe.main(sys.argv[3:])
"""


@pytest.mark.slow
def test_killed_process_resumes_to_the_result_of_an_uninterrupted_run(tone_corpus, tmp_path):
    """kill -9 in the middle of epoch 2 (6 steps per epoch, a checkpoint every 2 steps), after a checkpoint or
    while one is written; the restarted run logs the same epochs (losses, dev PER, rates) and ends with the
    weights and test result of the uninterrupted run."""

    def cli(output: Path) -> list[str]:
        intervals = ("--ckpt_interval_minutes=0", "--ckpt_interval_steps=2")
        return _cli(tone_corpus, output, "--number_of_epochs=3", *intervals)

    def finished(output: Path) -> tuple[list[str], dict, dict]:
        latest = max(
            (output / "save").glob("CKPT+*"), key=lambda c: yaml.safe_load((c / "CKPT.yaml").read_text())["unixtime"]
        )
        epochs = re.findall(r"^epoch: .*$", (output / "train_log.txt").read_text(), re.M)
        return epochs, json.loads((output / "test_results.json").read_text()), load_file(str(latest / "model.ckpt"))

    train = [str(REPO / "recipes/timit/train.py")]
    uninterrupted = run_python([*train, *cli(tmp_path / "whole")], timeout=300)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]
    whole = finished(tmp_path / "whole")
    for mode in ("after", "during"):
        output = tmp_path / mode
        killed = run_python(["-c", KILL_AT_CHECKPOINT, mode, "6", *cli(output)], timeout=300)
        assert killed.returncode == -9, killed.stderr[-3000:]
        assert _epochs_logged(output) == [1]
        resumed = run_python([*train, *cli(output)], timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "Loading a checkpoint" in resumed.stdout + resumed.stderr
        assert not list((output / "save").glob(".staging-*"))  # the interrupted save was removed
        assert _epochs_logged(output) == [1, 2, 3]
        epochs, report, weights = finished(output)
        assert epochs == whole[0] and report == whole[1]
        assert weights.keys() == whole[2].keys() and all(torch.equal(weights[k], whole[2][k]) for k in weights)


@pytest.mark.e2e
def test_bf16_precision_runs(tone_corpus, tmp_path):
    result = run(HPARAMS, {**QUIET, "precision": "bf16"}, recipe_overrides(tone_corpus, tmp_path, number_of_epochs=1))
    assert result["test"]["per"] >= 0


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(tone_corpus, tmp_path):
    proc = torchrun_on_two_cpu_processes(
        REPO / "recipes/timit/train.py",
        *_cli(tone_corpus, tmp_path, "--number_of_epochs=2", "--distributed_backend=gloo"),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert _epochs_logged(tmp_path) == [1, 2]
    assert json.loads((tmp_path / "test_results.json").read_text())["utterances"] == 4
    assert (tmp_path / "model" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("hparams_file", [HPARAMS, HPARAMS.with_name("demo.yaml")], ids=["timit", "demo"])
@pytest.mark.parametrize("rank", [4, 16])
def test_shipped_recipes_default_to_the_authors_weighting(hparams_file, rank, tmp_path):
    overrides = {
        "data_folder": str(tmp_path),
        "output_folder": str(tmp_path),
        "rank": rank,
        "encoder_config": TINY_ENCODERS["wav2vec2"],
        "init_head_from_checkpoint": False,
    }
    config = load_hparams(hparams_file, overrides)["adapter_configs"]["fvae_lora"]
    assert (config.rank, config.z2_dim, config.encoder_hidden, config.delta, config.beta) == (
        rank,
        rank,
        rank,
        2 / rank,
        1.0,
    )


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["fvae_lora", "lora"])
def test_the_recipe_clips_the_gradient_of_its_training_loss_at_1e_3(tone_corpus, tmp_path, monkeypatch, kind):
    """Every method's step gets the gradient of ``ctc + aux_weight * aux`` clipped to norm 1e-3 (the authors'
    norm 1 on ``1000 * task + aux``): measured on the gradients the optimiser receives."""
    import speechbrain as sb

    from fvae_asr.recipes.timit.train import PhoneCTCBrain

    loss_gradients, clips = [], []
    compute_objectives, clip_grad_norm = PhoneCTCBrain.compute_objectives, torch.nn.utils.clip_grad_norm_

    def objectives(self, predictions, batch, stage):
        loss = compute_objectives(self, predictions, batch, stage)
        if stage == sb.Stage.TRAIN and not loss_gradients:  # the gradient of the loss the recipe says it trains
            params = [p for p in self.modules.parameters() if p.requires_grad]
            loss_gradients.append(dict(zip(params, torch.autograd.grad(loss, params, retain_graph=True))))
        return loss

    def clip(parameters, max_norm, *args, **kwargs):
        parameters = [p for p in parameters if p.grad is not None]
        before = [p.grad.clone() for p in parameters]
        norm = clip_grad_norm(parameters, max_norm, *args, **kwargs)
        clips.append((max_norm, norm.item(), parameters, before, [p.grad.clone() for p in parameters]))
        return norm

    monkeypatch.setattr(PhoneCTCBrain, "compute_objectives", objectives)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    run(HPARAMS, QUIET, recipe_overrides(tone_corpus, tmp_path, method=kind, number_of_epochs=1))

    assert clips and all(max_norm == 1e-3 for max_norm, *_ in clips)
    assert all(norm > 1e-3 for _, norm, *_ in clips)  # it fires on every step: each step's gradient is normalised
    _, norm, parameters, before, after = clips[0]
    expected = loss_gradients[0]
    assert set(parameters) == set(expected)  # every trainable weight is clipped together
    for p, raw, clipped in zip(parameters, before, after):
        torch.testing.assert_close(raw, expected[p], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(clipped, raw * (1e-3 / (norm + 1e-6)))
    clipped_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in after]))
    assert clipped_norm.item() == pytest.approx(1e-3, rel=1e-3)


@pytest.mark.e2e
def test_tensorboard_logger_writes_the_train_valid_and_test_stats_beside_the_train_log(tone_corpus, tmp_path):
    """Switched on when a run resumes (the logger is no setting of the result): epoch 2 goes to TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(HPARAMS, QUIET, recipe_overrides(tone_corpus, tmp_path, number_of_epochs=1))
    assert not (tmp_path / "tensorboard").exists()
    run(HPARAMS, QUIET, recipe_overrides(tone_corpus, tmp_path, number_of_epochs=2, logger="tensorboard"))
    assert _epochs_logged(tmp_path) == [1, 2]  # the file log is still written
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    scalars = {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert {"loss/train", "ctc/train", "aux/train", "loss/valid", "PER/valid", "PER/test", "epoch"} <= set(scalars)
    assert scalars["epoch"] == [2] and all(len(scalars[tag]) == 1 for tag in ("loss/train", "PER/valid"))
    report = json.loads((tmp_path / "test_results.json").read_text())
    assert scalars["PER/test"] == [pytest.approx(report["per"])]
    logged_valid = re.findall(r"valid PER: ([\d.e+-]+)", (tmp_path / "train_log.txt").read_text())[-1]
    per = scalars["PER/valid"][0]  # the file log rounds it as SpeechBrain's FileTrainLogger does
    assert logged_valid == (f"{per:.2f}" if 1.0 < per < 100.0 else f"{per:.2e}")


def test_tensorboard_logger_without_the_package_is_a_one_line_error_before_anything_is_written(
    tone_corpus, tmp_path, monkeypatch
):
    from fvae_asr.speech.training.run_folder import RunSettingsError

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard raises ImportError
    with pytest.raises(
        RunSettingsError, match=r"logger: tensorboard needs the tensorboard package: pip install"
    ) as err:
        run(HPARAMS, QUIET, recipe_overrides(tone_corpus, tmp_path / "out", logger="tensorboard"))
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()
    with pytest.raises(RunSettingsError, match=r"logger must be one of file, tensorboard; got 'wandb'"):
        run(HPARAMS, QUIET, recipe_overrides(tone_corpus, tmp_path / "out", logger="wandb"))
