"""FVAETrainer: the FVAE auxiliary loss, logged parts, padding masks, adapter-only checkpoints, resuming, DDP."""

from __future__ import annotations

import pytest

pytest.importorskip("accelerate")

from fvae_asr.integrations.transformers import FVAETrainer  # noqa: E402
from trainer_task import ParityTask, pad_collate, tiny_bert_classifier, training_args  # noqa: E402


def _trainer(tmp_path, model=None, **args) -> FVAETrainer:
    return FVAETrainer(model=model or tiny_bert_classifier(), args=training_args(tmp_path, **args),
                       train_dataset=ParityTask(), data_collator=pad_collate)


def test_training_logs_fvae_parts(tmp_path):
    trainer = _trainer(tmp_path)
    trainer.train()
    train_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(train_logs) == 3
    for entry in train_logs:
        assert {"fvae_reconstruction", "fvae_kl_z1", "fvae_gamma", "fvae_total"} <= set(entry)
