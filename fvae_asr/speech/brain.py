"""The SpeechBrain ``Brain``: CTC on the (adapted) wav2vec2 plus the FVAE auxiliary loss; PER on dev and test."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import speechbrain as sb
import torch
import torch.nn.functional as F
from speechbrain.utils.distributed import if_main_process

from fvae_asr.adapters import aux_loss, loss_terms
from fvae_asr.speech.metrics import alignments, error_report
from fvae_asr.speech.model import greedy_decode


class PhoneCTCBrain(sb.Brain):
    """Expects hparams ``model`` (the unwrapped CTCRecognizer), ``label_encoder``, ``lr_scheduler``,
    ``epoch_counter``, ``train_logger``, ``test_results_file`` and ``test_alignments_file``.
    """

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        wavs, wav_lens = batch.sig
        return self.modules.model(wavs, wav_lens)  # the root module: starts a fresh record of FVAE terms

    def compute_objectives(self, predictions, batch, stage):
        log_probs, frame_lens = predictions  # (B, T, V) float32, (B,)
        targets, target_rel_lens = batch.phn_encoded
        target_lens = torch.round(target_rel_lens * targets.shape[1]).long()
        ctc = F.ctc_loss(
            log_probs.transpose(0, 1), targets, frame_lens, target_lens, blank=self.blank_index, zero_infinity=True
        )
        if stage == sb.Stage.TRAIN:
            aux = aux_loss(self.hparams.model)
            parts = loss_terms(self.hparams.model)  # empty without FVAE layers
            if parts:
                parts["aux"] = parts.pop("total")
            self._log_parts(ctc=ctc, **parts)
            return ctc + self.aux_weight * aux
        hypotheses = greedy_decode(log_probs, frame_lens, self.blank_index)
        self.ids.extend(batch.id)
        self.references.extend(batch.phn_list)
        self.hypotheses.extend(self.hparams.label_encoder.decode_ndim(hypotheses))
        return ctc

    @property
    def blank_index(self) -> int:
        return self.hparams.label_encoder.get_blank_index()

    @property
    def aux_weight(self) -> float:
        """lambda of the adapter config (zero without FVAE adapters)."""
        state = getattr(self.hparams.model, "adapter_state", None)
        return getattr(state.config, "aux_weight", 0.0) if state is not None else 0.0

    def _log_parts(self, **parts: torch.Tensor) -> None:
        for name, value in parts.items():
            self.loss_parts[name] += value.detach().item()
        self.loss_parts["batches"] += 1

    def on_fit_start(self):
        """Optimiser and (resumed) scheduler are ready: set the rate of the next step from the schedule, so the
        first step trains at the warm-up's first value, not at the optimiser's initial full rate."""
        super().on_fit_start()
        scheduler = self.hparams.lr_scheduler
        for group in self.optimizer.param_groups:
            group["lr"] = scheduler.calculate_lr(scheduler.current_step)

    def on_fit_batch_end(self, batch, outputs, loss, should_step):
        if should_step:  # the rate of the next step
            self.hparams.lr_scheduler(self.optimizer)

    def on_stage_start(self, stage, epoch=None):
        self.loss_parts: dict[str, float] = defaultdict(float)
        self.ids: list[str] = []
        self.references: list[list[str]] = []
        self.hypotheses: list[list[str]] = []

    def on_stage_end(self, stage, stage_loss, epoch=None):
        if stage == sb.Stage.TRAIN:
            batches = max(self.loss_parts.pop("batches", 1), 1)
            self.train_stats = {"loss": stage_loss, **{k: v / batches for k, v in self.loss_parts.items()}}
            return
        report = error_report(self.ids, self.references, self.hypotheses)
        if stage == sb.Stage.VALID:
            lr = self.optimizer.param_groups[0]["lr"]
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": lr},
                train_stats=self.train_stats,
                valid_stats={"loss": stage_loss, "PER": report["per"]},
            )
            self.checkpointer.save_and_keep_only(meta={"PER": report["per"]}, min_keys=["PER"])
            return
        self.test_report = {**report, "loss": stage_loss}
        self.hparams.train_logger.log_stats(
            stats_meta={"epoch loaded": self.hparams.epoch_counter.current},
            test_stats={"loss": stage_loss, "PER": report["per"]},
        )
        if if_main_process():
            Path(self.hparams.test_results_file).write_text(json.dumps(self.test_report, indent=2) + "\n")
            Path(self.hparams.test_alignments_file).write_text(
                alignments(self.ids, self.references, self.hypotheses)
            )
