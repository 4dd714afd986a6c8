"""FVAETrainer: the FVAE auxiliary loss, logged parts, padding masks, adapter-only checkpoints, resuming, DDP."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

pytest.importorskip("accelerate")

import torch
from safetensors.torch import load_file
from transformers import TrainerCallback, Wav2Vec2Config, Wav2Vec2ForSequenceClassification

from fvae_asr import (
    FVAELoRAConfig,
    FVAELoRALinear,
    adapter_layers,
    adapter_state_dict,
    aux_loss,
    frame_mask,
    inject,
    loss_terms,
)
from fvae_asr.adapters.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from fvae_asr.integrations.frame_masks import audio_frame_mask, token_frame_mask
from fvae_asr.integrations.transformers import FVAETrainer

from conftest import torchrun_on_two_cpu_processes
from tiny_models import TINY_WAV2VEC2
from trainer_task import (
    ParityTask,
    dropout_free_bert_classifier,
    explicit_arguments_classifier,
    pad_collate,
    tiny_bert_base,
    tiny_bert_classifier,
    training_args,
)


def _trainer(tmp_path, model=None, **args) -> FVAETrainer:
    return FVAETrainer(
        model=model or tiny_bert_classifier(),
        args=training_args(tmp_path, **args),
        train_dataset=ParityTask(),
        data_collator=pad_collate,
    )


@pytest.mark.e2e
def test_training_logs_fvae_parts(tmp_path):
    trainer = _trainer(tmp_path)
    trainer.train()
    train_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(train_logs) == 3
    for entry in train_logs:
        assert {"fvae_reconstruction", "fvae_kl_z1", "fvae_gamma", "fvae_total"} <= set(entry)


def _batch(size: int = 4) -> dict:
    task = ParityTask(size=size, seed=3)
    return pad_collate([task[i] for i in range(size)])


def test_training_loss_is_task_loss_plus_weighted_aux_and_evaluation_adds_nothing(tmp_path):
    model = tiny_bert_classifier()
    trainer, batch = _trainer(tmp_path, model), _batch()
    assert batch["attention_mask"].min() == 0  # the batch has padding
    model.train()
    torch.manual_seed(7)
    with frame_mask(model, batch["attention_mask"].bool()):
        task = model(**batch).loss
    expected = task + 0.5 * aux_loss(model)
    torch.manual_seed(7)
    got = trainer.compute_loss(model, batch)
    assert aux_loss(model) > 0
    torch.testing.assert_close(got, expected, rtol=0, atol=0)

    trainer.loss_is_scaled_for_ga, trainer.current_gradient_accumulation_steps = True, 2
    torch.manual_seed(7)
    torch.testing.assert_close(trainer.compute_loss(model, batch), task + 0.25 * aux_loss(model), rtol=0, atol=0)

    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(trainer.compute_loss(model, batch), model(**batch).loss, rtol=0, atol=0)


@pytest.mark.e2e
def test_lora_model_trains_with_the_task_loss_only(tmp_path):
    from fvae_asr import LoRAConfig

    model = tiny_bert_classifier(
        adapter=LoRAConfig(rank=4, target_modules=["query", "key"], trainable_modules=["classifier"])
    )
    trainer, batch = _trainer(tmp_path, model), _batch()
    model.train()
    torch.manual_seed(7)
    expected = model(**batch).loss
    torch.manual_seed(7)
    torch.testing.assert_close(trainer.compute_loss(model, batch), expected, rtol=0, atol=0)
    trainer.train()
    assert not any(key.startswith("fvae_") for entry in trainer.state.log_history for key in entry)


class _RecordingTrainer(FVAETrainer):
    """Keeps the Gamma part of every training micro-batch, to check what the logs average."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if model.training:
            self.gammas.append(loss_terms(model)["gamma"].item())
        return result


@pytest.mark.e2e
def test_logged_parts_average_the_micro_batches_since_the_last_log(tmp_path):
    trainer = _RecordingTrainer(
        model=tiny_bert_classifier(),
        train_dataset=ParityTask(),
        data_collator=pad_collate,
        args=training_args(tmp_path, gradient_accumulation_steps=2, logging_steps=2, per_device_train_batch_size=2),
    )
    trainer.gammas = []
    trainer.train()
    logged = [entry["fvae_gamma"] for entry in trainer.state.log_history if "loss" in entry]
    per_log = 2 * 2  # micro-batches per optimizer step x steps per log
    assert len(trainer.gammas) == 6 * 2 and len(logged) == 3
    expected = [sum(trainer.gammas[i : i + per_log]) / per_log for i in range(0, len(trainer.gammas), per_log)]
    assert logged == pytest.approx(expected, rel=1e-6)


def test_padding_mask_reaches_the_fvae_layers_for_token_inputs(tmp_path):
    model = tiny_bert_classifier()
    trainer, batch = _trainer(tmp_path, model), _batch()
    seen = []
    layers = [layer for layer in adapter_layers(model) if isinstance(layer, FVAELoRALinear)]
    for layer in layers:
        layer.register_forward_pre_hook(lambda module, args: seen.append(module.frame_mask))
    model.train()
    trainer.compute_loss(model, batch)
    assert len(seen) == len(layers) == 4
    for mask in seen:
        assert torch.equal(mask, batch["attention_mask"].bool())
    assert all(layer.frame_mask is None for layer in layers)  # cleared after the forward


def test_token_mask_only_for_token_inputs():
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(token_frame_mask({"input_ids": torch.ones(1, 3), "attention_mask": mask}), mask.bool())
    assert token_frame_mask({"input_ids": torch.ones(1, 3)}) is None
    # wav2vec2's mask is over samples, not the frames the adapted layers see; ViT has none.
    assert token_frame_mask({"input_values": torch.ones(1, 3), "attention_mask": mask}) is None
    assert token_frame_mask({"pixel_values": torch.ones(1, 3, 4, 4)}) is None


def test_audio_mask_is_mapped_to_encoder_frames(tmp_path):
    torch.manual_seed(0)
    model = Wav2Vec2ForSequenceClassification(Wav2Vec2Config(**TINY_WAV2VEC2, num_labels=2))
    inject(model, FVAELoRAConfig(rank=4, target_modules=["q_proj", "k_proj"], trainable_modules=["classifier"]))
    values, mask = torch.randn(2, 1600), torch.ones(2, 1600, dtype=torch.long)
    mask[1, 800:] = 0
    batch = {"input_values": values, "attention_mask": mask, "labels": torch.tensor([0, 1])}
    seen = []
    for layer in adapter_layers(model):
        layer.register_forward_pre_hook(lambda module, args: seen.append((module.frame_mask, args[0].shape[:-1])))
    model.train()
    _trainer(tmp_path, model).compute_loss(model, batch)
    assert len(seen) == 4
    for frames, shape in seen:
        assert frames.shape == shape  # (batch, encoder frames), not samples
        assert frames[0].all() and frames[1].sum() == model._get_feat_extract_output_lengths(800)
    assert audio_frame_mask(model, {"input_values": values}) is None


@pytest.mark.e2e
def test_checkpoints_are_adapter_only(tmp_path):
    trainer = _trainer(tmp_path, max_steps=4, save_strategy="steps", save_steps=2)
    trainer.train()
    for step in (2, 4):
        folder = tmp_path / f"checkpoint-{step}"
        assert (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file()
        assert not (folder / "model.safetensors").exists() and not (folder / "pytorch_model.bin").exists()
        keys = set(load_file(folder / WEIGHTS_NAME))
        assert keys == set(adapter_state_dict(trainer.model))
        assert not any(".base." in key or "embeddings" in key for key in keys)
        assert (folder / "optimizer.pt").is_file() and (folder / "trainer_state.json").is_file()


@pytest.mark.e2e
def test_model_without_adapters_trains_and_saves_as_with_the_trainer(tmp_path):
    trainer = _trainer(tmp_path, model=tiny_bert_base(), max_steps=2, save_strategy="steps", save_steps=2)
    trainer.train()
    assert (tmp_path / "checkpoint-2" / "model.safetensors").is_file()
    assert not (tmp_path / "checkpoint-2" / CONFIG_NAME).exists()
    assert not any(key.startswith("fvae_") for entry in trainer.state.log_history for key in entry)


@pytest.mark.e2e
def test_resuming_from_a_checkpoint_ends_bit_exact(tmp_path):
    full = _trainer(tmp_path / "full", max_steps=6, save_strategy="steps", save_steps=3)
    full.train()
    model = tiny_bert_classifier()  # the same frozen base: checkpoints hold only the adapters
    with torch.no_grad():
        for tensor in adapter_state_dict(model).values():
            tensor.add_(1.0)  # so that only loading the checkpoint's adapters can give the expected end
    resumed = _trainer(tmp_path / "resumed", model=model, max_steps=6, save_strategy="steps", save_steps=3)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-3"))
    expected, got = adapter_state_dict(full.model), adapter_state_dict(resumed.model)
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path):
    run = torchrun_on_two_cpu_processes(Path(__file__).with_name("ddp_trainer_run.py"), str(tmp_path), timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "DDP_DONE" in run.stdout
    for step in (2, 4):
        assert sorted(p.name for p in (tmp_path / f"checkpoint-{step}").glob("adapter_*")) == [
            CONFIG_NAME,
            WEIGHTS_NAME,
        ]


@pytest.mark.e2e
def test_evaluation_and_best_model_reload_use_the_adapter_checkpoints(tmp_path):
    trainer = FVAETrainer(
        model=tiny_bert_classifier(),
        data_collator=pad_collate,
        train_dataset=ParityTask(),
        eval_dataset=ParityTask(size=8, seed=5),
        args=training_args(
            tmp_path,
            max_steps=4,
            eval_strategy="steps",
            eval_steps=2,
            save_strategy="steps",
            save_steps=2,
            load_best_model_at_end=True,
            metric_for_best_model="loss",
            greater_is_better=True,
        ),
    )
    trainer.train()
    best = Path(trainer.state.best_model_checkpoint)  # "best" is the higher loss: not the last step's weights
    assert best == tmp_path / "checkpoint-2" and (best / WEIGHTS_NAME).is_file()
    saved = load_file(best / WEIGHTS_NAME)
    for key, value in adapter_state_dict(trainer.model).items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0, msg=key)
    eval_logs = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    assert len(eval_logs) == 2 and not any(key.startswith("fvae_") for entry in eval_logs for key in entry)


class _FirstStepGradients(TrainerCallback):
    """Keeps the gradients of the first optimizer step (before the step), by parameter name."""

    def __init__(self) -> None:
        self.grads: dict[str, torch.Tensor] | None = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.grads is None:
            self.grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _first_step_gradients(folder, model, **args) -> dict[str, torch.Tensor]:
    """One optimizer step on all 4 items of a task without padding (every sequence 3 tokens), unclipped."""
    recorder = _FirstStepGradients()
    trainer = FVAETrainer(
        model=model,
        train_dataset=ParityTask(size=4, max_len=3),
        data_collator=pad_collate,
        callbacks=[recorder],
        args=training_args(folder, max_steps=1, max_grad_norm=0, **args),
    )
    trainer.train()
    return recorder.grads


def _assert_same_gradients(got: dict, expected: dict) -> None:
    """The same parameters got the same gradients; the aux term's (decoder) and the task's (head) are among them."""
    assert got.keys() == expected.keys()
    for only_from in (".decoder.", "classifier."):  # the decoder gets only lambda * aux, the head only the task
        assert any(only_from in key and expected[key].abs().sum() > 0 for key in expected), only_from
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-6, msg=key)


@pytest.mark.e2e
@pytest.mark.parametrize(
    "build",
    [dropout_free_bert_classifier, explicit_arguments_classifier],
    ids=["forward-with-kwargs", "forward-without-kwargs"],
)
def test_accumulating_two_batches_of_two_gives_the_gradients_of_one_batch_of_four(tmp_path, monkeypatch, build):
    monkeypatch.setattr(torch, "randn_like", torch.zeros_like)  # z = mu: both runs see the same latents
    whole = _first_step_gradients(tmp_path / "whole", build(), per_device_train_batch_size=4)
    accumulated = _first_step_gradients(
        tmp_path / "accumulated", build(), per_device_train_batch_size=2, gradient_accumulation_steps=2
    )
    _assert_same_gradients(accumulated, whole)


@pytest.mark.e2e
def test_activation_checkpointing_gives_the_gradients_of_a_run_without_it(tmp_path):
    plain = _first_step_gradients(tmp_path / "plain", tiny_bert_classifier())
    checkpointed = _first_step_gradients(
        tmp_path / "checkpointed", tiny_bert_classifier(), activation_checkpointing=True
    )
    _assert_same_gradients(checkpointed, plain)


@pytest.mark.e2e
def test_reentrant_activation_checkpointing_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match="use_reentrant"):
        _trainer(tmp_path, activation_checkpointing=True, activation_checkpointing_kwargs={"use_reentrant": True})
    model = tiny_bert_classifier()  # turned on on the model itself: refused at the first forward, before any step
    model.activation_checkpointing_enable({"use_reentrant": True})
    before = {key: value.clone() for key, value in adapter_state_dict(model).items()}
    with pytest.raises(RuntimeError, match="use_reentrant"):
        _trainer(tmp_path, model).train()
    for key, value in adapter_state_dict(model).items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)


@pytest.mark.e2e
@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_resuming_skips_an_incomplete_last_checkpoint(tmp_path, caplog, damage):
    full = _trainer(tmp_path, max_steps=4, save_strategy="steps", save_steps=2)
    full.train()
    expected = {key: value.clone() for key, value in adapter_state_dict(full.model).items()}
    state = tmp_path / "checkpoint-4" / "trainer_state.json"
    if damage == "missing":  # killed before the Trainer wrote its state, the checkpoint's last file
        state.unlink()
    else:  # killed while writing it
        state.write_text(state.read_text()[:40])
    model = tiny_bert_classifier()
    with torch.no_grad():
        for tensor in adapter_state_dict(model).values():
            tensor.add_(1.0)  # so that only loading checkpoint-2's adapters can give the expected end
    resumed = _trainer(tmp_path, model=model, max_steps=4, save_strategy="steps", save_steps=2)
    with caplog.at_level(logging.WARNING, logger="fvae_asr.integrations.transformers"):
        resumed.train(resume_from_checkpoint=True)
    assert f"{tmp_path / 'checkpoint-4'} is incomplete" in caplog.text
    assert f"resuming from {tmp_path / 'checkpoint-2'}" in caplog.text
    for key, value in adapter_state_dict(resumed.model).items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)


@pytest.mark.e2e
def test_resuming_from_a_named_incomplete_checkpoint_is_refused(tmp_path):
    _trainer(tmp_path, max_steps=2, save_strategy="steps", save_steps=2).train()
    (tmp_path / "checkpoint-2" / "trainer_state.json").unlink()
    with pytest.raises(ValueError, match="checkpoint-2 is incomplete"):
        _trainer(tmp_path, max_steps=4).train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    (tmp_path / "checkpoint-2").rename(tmp_path / "checkpoint-x")
    with pytest.raises(ValueError, match="no complete checkpoint"):
        _trainer(tmp_path, max_steps=4).train(resume_from_checkpoint=True)


def test_the_optimizer_follows_the_authors_rule_as_the_recipe_s_does(tmp_path):
    from fvae_asr.adapters.optimizer import adam_eps, weight_decay_groups

    model = tiny_bert_classifier()
    optimizer = _trainer(tmp_path, model, max_grad_norm=1e-3, weight_decay=0.01).create_optimizer()
    assert [group["eps"] for group in optimizer.param_groups] == [adam_eps(1e-3)] * 2
    expected = weight_decay_groups(model, 0.01)
    assert [[id(p) for p in group["params"]] for group in optimizer.param_groups] == [
        [id(p) for p in group["params"]] for group in expected
    ]
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.01, 0.0]


def test_an_adam_epsilon_the_user_set_is_kept(tmp_path):
    trainer = _trainer(tmp_path, max_grad_norm=1e-3, adam_epsilon=1e-6)
    assert [group["eps"] for group in trainer.create_optimizer().param_groups] == [1e-6, 1e-6]
