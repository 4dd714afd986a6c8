#!/usr/bin/env python3
"""Recipe for phone recognition on TIMIT (or any phone-labelled corpus) with a wav2vec2-family encoder and a CTC
head, adapted with FVAE-LoRA, LoRA, full fine-tuning or a frozen backbone (``method`` in the yaml).

The training loss is CTC plus, for FVAE-LoRA, ``aux_weight`` times the mean of the adapted layers' FVAE objective
(reconstruction, KL of z1 to its prior, the repulsive term on z2). Phones are decoded greedily; the checkpoint with
the best dev PER is tested and exported as a self-contained recogniser for ``fvae-asr transcribe``.

To run (no arguments, or ``--help``, lists the yaml's settings with their meanings and defaults):
    python recipes/timit/train.py recipes/timit/hparams/train.yaml --data_folder=/path/to/TIMIT
    python recipes/timit/train.py recipes/timit/hparams/train.yaml --data_folder=/path/to/TIMIT --method=lora
    torchrun --nproc_per_node=2 recipes/timit/train.py recipes/timit/hparams/train.yaml --data_folder=...

What surrounds this flow comes from the package: the run folder (settings and corpus checked, folders locked,
exact resume: ``fvae_asr.speech.training.runner``) and the Brain's resume bookkeeping (random states, epoch sums,
the schedule: ``fvae_asr.speech.training.resumable_brain``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import speechbrain as sb
import torch
import torch.nn.functional as F
from hyperpyyaml import load_hyperpyyaml
from speechbrain.dataio.dataset import DynamicItemDataset
from speechbrain.dataio.encoder import CTCTextEncoder
from speechbrain.utils.distributed import if_main_process

from fvae_asr.adapters import aux_loss, aux_weight, loss_terms
from fvae_asr.audio import load_audio
from fvae_asr.speech.data.annotations import Corpus
from fvae_asr.speech.data.labels import SORTINGS, labels_of, phone_encoder
from fvae_asr.speech.metrics import alignments, error_report
from fvae_asr.speech.models.export import export_model
from fvae_asr.speech.models.recognizer import greedy_decode
from fvae_asr.speech.models.training_methods import configure_training, count_parameters
from fvae_asr.speech.training.hparams import aliased, as_mapping
from fvae_asr.speech.training.recipe_steps import check_durations, corpus_splits, init_head, size_schedule
from fvae_asr.speech.training.resumable_brain import ResumableBrain
from fvae_asr.speech.training.run_folder import LABEL_ENCODER_NAME
from fvae_asr.speech.training.runner import guarded_run, run_command
from fvae_asr.speech.training.train_logger import train_stats_before_training, train_stats_by_epoch


class PhoneCTCBrain(ResumableBrain):
    """CTC on the (adapted) encoder plus the FVAE auxiliary loss; PER on dev (checkpoint selection) and test.

    Expects hparams ``model`` (the unwrapped CTCRecognizer), ``label_encoder``, ``test_results_file`` and
    ``test_alignments_file``, besides what ``ResumableBrain`` expects.
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
            aux = aux_loss(self.hparams.model)  # 0 without FVAE layers
            parts = loss_terms(self.hparams.model)  # the FVAE terms, for the log
            if parts:
                parts["aux"] = parts.pop("total")
            self.log_loss_parts(ctc=ctc, **parts)
            return ctc + aux_weight(self.hparams.model) * aux
        hypotheses = greedy_decode(log_probs, frame_lens, self.blank_index)
        self.ids.extend(batch.id)
        self.references.extend(batch.phn_list)
        self.hypotheses.extend(self.hparams.label_encoder.decode_ndim(hypotheses))
        return ctc

    @property
    def blank_index(self) -> int:
        return self.hparams.label_encoder.get_blank_index()

    def on_stage_start(self, stage, epoch=None):
        super().on_stage_start(stage, epoch)
        self.ids: list[str] = []
        self.references: list[list[str]] = []
        self.hypotheses: list[list[str]] = []

    def on_stage_end(self, stage, stage_loss, epoch=None):
        super().on_stage_end(stage, stage_loss, epoch)  # train_stats
        if stage == sb.Stage.TRAIN:
            return
        report = error_report(self.ids, self.references, self.hypotheses)
        if stage == sb.Stage.VALID:
            rates = dict(zip(("lr first step", "lr last step"), self.epoch_rates))
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, **rates},
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
            Path(self.hparams.test_alignments_file).write_text(alignments(self.ids, self.references, self.hypotheses))


def dataio_prepare(
    splits: Mapping[str, Mapping[str, dict]], label_encoder: CTCTextEncoder, train_sorting: str = "ascending"
) -> dict[str, DynamicItemDataset]:
    """Datasets with ``sig``, ``phn_list``, ``phn_encoded`` from each split's entries (id -> ``wav``,
    ``duration``, ``phn``, as ``read_annotation`` gives them); dev and test sorted by duration (less padding).
    Audio of any sample rate and channel count is downmixed and resampled to the models' 16 kHz.

    ``train_sorting`` is ``ascending``/``descending`` by duration, or ``random`` (then shuffle in the loader).
    """
    if train_sorting not in SORTINGS:
        raise ValueError(f"train_sorting must be one of {SORTINGS}, got {train_sorting!r}")
    datasets = {split: DynamicItemDataset(dict(entries)) for split, entries in splits.items()}
    for split, dataset in datasets.items():
        if split != "train" or train_sorting != "random":
            reverse = split == "train" and train_sorting == "descending"
            datasets[split] = dataset.filtered_sorted(sort_key="duration", reverse=reverse)

    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav: str) -> torch.Tensor:
        return load_audio(wav)

    @sb.utils.data_pipeline.takes("phn")
    @sb.utils.data_pipeline.provides("phn_list", "phn_encoded")
    def label_pipeline(phn: str):
        phones = phn.split()
        yield phones
        yield torch.LongTensor(label_encoder.encode_sequence(phones))

    sb.dataio.dataset.add_dynamic_item(list(datasets.values()), audio_pipeline)
    sb.dataio.dataset.add_dynamic_item(list(datasets.values()), label_pipeline)
    sb.dataio.dataset.set_output_keys(list(datasets.values()), ["id", "sig", "phn_list", "phn_encoded"])
    return datasets


def train_test_export(hparams_file: Path, run_opts: dict[str, Any], overrides: str | dict, corpus: Corpus) -> dict:
    """Prepare, train (best checkpoint by dev PER), test, export; returns the test report, the export path, the
    parameter counts and the logged training terms. Runs inside the claimed run folder (``guarded_run``)."""
    with open(hparams_file, encoding="utf-8") as fin:  # the head sized for the corpus's phones and the blank
        hparams = load_hyperpyyaml(fin, {**as_mapping(overrides), "n_tokens": len(corpus.phones) + 1})
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"], hyperparams_to_save=str(hparams_file), overrides=overrides
    )
    splits = corpus_splits(hparams, corpus)  # TIMIT is prepared here, once
    label_encoder = phone_encoder(Path(hparams["save_folder"]) / LABEL_ENCODER_NAME, corpus.phones)
    hparams["label_encoder"] = label_encoder
    datasets = dataio_prepare(
        {split: annotation.entries for split, annotation in splits.items()}, label_encoder, hparams["train_sorting"]
    )

    model = hparams["model"]
    check_durations(splits, model.encoder)  # before training: a too-short utterance would train silently
    if hparams["init_head_from_checkpoint"]:
        init_head(model, hparams, labels_of(label_encoder), label_encoder.get_blank_index())
    method = aliased(hparams, "method")
    configure_training(model, method, hparams["adapter_configs"].get(method))
    trainable, total = count_parameters(model)
    size_schedule(hparams, len(datasets["train"]))

    brain = PhoneCTCBrain(
        modules={"model": model},
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    start = time.perf_counter()
    brain.fit(
        brain.hparams.epoch_counter,
        datasets["train"],
        datasets["dev"],
        train_loader_kwargs=hparams["train_dataloader_opts"],
        valid_loader_kwargs=hparams["valid_dataloader_opts"],
    )
    train_seconds = time.perf_counter() - start
    brain.evaluate(datasets["test"], min_key="PER", test_loader_kwargs=hparams["valid_dataloader_opts"])
    export_dir = Path(hparams["export_folder"])
    if if_main_process():
        export_model(model, method, labels_of(label_encoder), export_dir)
    adapter_config = hparams["adapter_configs"].get(method)
    return {
        "method": method,
        "lr": hparams["lr"],
        "target_modules": adapter_config.target_modules if adapter_config is not None else None,
        "test": brain.test_report,
        "export": str(export_dir),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "train_seconds": train_seconds,
        # The mean loss terms of each epoch (CTC and, for FVAE-LoRA, reconstruction NLL, KL, Gamma, aux) and those of
        # the first batch before any update, from the run's log: what shows that the VAE trains.
        "train_stats": {
            "before_training": train_stats_before_training(hparams["train_log"]),
            "by_epoch": train_stats_by_epoch(hparams["train_log"]),
        },
        "manifests": {split: str(annotation.path) for split, annotation in splits.items()},
    }


def run(hparams_file: str | Path, run_opts: dict[str, Any] | None = None, overrides: str | dict = "") -> dict:
    """The whole recipe from Python (the demo and the studies call this): ``train_test_export`` in a claimed run
    folder; see ``guarded_run`` for what is checked before anything is written."""
    return guarded_run(hparams_file, run_opts, overrides, train_test_export)


def main(argv: list[str] | None = None) -> dict:
    """``train.py hparams/train.yaml [--key=value ...]``; one-line errors, exit 2 (settings) or 1."""
    return run_command(argv, train_test_export, Path(__file__).resolve().parent / "hparams" / "train.yaml")


if __name__ == "__main__":
    main(sys.argv[1:])
