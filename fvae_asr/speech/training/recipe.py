"""The TIMIT recipe's flow (``recipes/timit/train.py`` calls ``main``): prepare, train, test, export; on TIMIT, or
on any phone-labelled corpus given by annotation files (``fvae_asr.speech.data.annotations``).

It lives in the package so that the offline demo and the comparison study run exactly the recipe users run.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import ddp_barrier, if_main_process, run_on_main

from fvae_asr.speech.data.annotations import (
    Annotation,
    AnnotationError,
    Corpus,
    check_audio,
    check_ctc_lengths,
    check_phones,
    read_annotation,
)
from fvae_asr.audio import SAMPLE_RATE
from fvae_asr.speech.training.brain import PhoneCTCBrain
from fvae_asr.speech.training.resume import CheckpointRecoveryError, CheckpointSaveError, NonFiniteTrainingError
from fvae_asr.speech.inference.chunking import FrameGeometry
from fvae_asr.speech.data.dataio import dataio_prepare, labels_of, phone_encoder
from fvae_asr.speech.models.encoder import SSLEncoder
from fvae_asr.speech.models.export import ExportError, check_replaceable, export_recognizer
from fvae_asr.speech.training.hparams import as_mapping, hparams_source
from fvae_asr.speech.models.recognizer import init_head_from_checkpoint
from fvae_asr.speech.models.training_kinds import configure_training, count_parameters
from fvae_asr.speech.training.run_folder import (
    LABEL_ENCODER_NAME,
    RENAMED_KEYS,
    RunFolderError,
    RunSettingsError,
    check_resumable,
    check_save_folder_owner,
    clear_previous_run,
    plan_run,
    record_settings,
    remove_unfinished_checkpoints,
    run_folders_lock,
)
from fvae_asr.speech.data.timit import SPLITS, prepare_timit

logger = logging.getLogger(__name__)


def _schedule_steps(hparams: dict[str, Any], n_train: int) -> None:
    """Size the warm-up + linear-decay schedule once the training set size is known."""
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    per_epoch = math.ceil(n_train / (hparams["batch_size"] * world) / hparams.get("grad_accumulation_factor", 1))
    scheduler = hparams["lr_scheduler"]
    scheduler.num_training_steps = max(1, per_epoch * hparams["number_of_epochs"])
    scheduler.num_warmup_steps = round(hparams["warmup_ratio"] * scheduler.num_training_steps)


def _init_head(model: torch.nn.Module, hparams: dict[str, Any], labels: list[str], blank_index: int) -> None:
    """``init_head_from_checkpoint``: the head starts from ``encoder_source``'s own CTC head (a resumed run then
    loads its checkpointed head over it)."""
    if hparams["encoder_config"]:
        raise ValueError("init_head_from_checkpoint needs a pretrained encoder_source; encoder_config is set")
    try:
        shared = init_head_from_checkpoint(model, hparams["encoder_source"], labels, blank_index)
    except ValueError as err:
        raise ValueError(f"init_head_from_checkpoint: {err} (set it to False for a fresh head)") from err
    logger.info("CTC head started from %s for %d of %d labels", hparams["encoder_source"], len(shared), len(labels))


def run(hparams_file: str | Path, run_opts: dict[str, Any] | None = None, overrides: str | dict = "") -> dict:
    """Run the whole recipe; returns the test report, the export path and counts (main process).

    ``hparams_file`` may extend another (see ``fvae_asr.speech.training.hparams``).

    Before anything is written: invalid settings raise ``RunSettingsError`` (a ``ValueError``), and a corpus
    given by annotations whose files, rows, phones or audio cannot be used raises ``AnnotationError`` (also a
    ``ValueError``); then the main process locks the output and save folders (``RunFolderInUse`` if another run
    holds one), refuses a save folder that holds another run's checkpoints, and refuses to resume a run whose
    settings or audio changed, unless ``restart`` clears it (and the earlier results) first.
    """
    run_opts = run_opts or {}
    try:
        hparams_file, overrides = hparams_source(hparams_file, overrides, RENAMED_KEYS)  # an extending file: its base
    except ValueError as err:
        raise RunSettingsError(str(err)) from None
    plan = plan_run(hparams_file, overrides, run_opts)
    if not if_main_process():
        ddp_barrier()  # the main process has checked the audio and claimed the folder
        return _train_test_export(hparams_file, run_opts, overrides, plan.corpus)
    if plan.corpus.splits is not None:
        check_audio(plan.corpus.splits)
    check_replaceable(plan.export_folder)
    with run_folders_lock(plan):
        check_save_folder_owner(plan)
        if plan.restart:
            clear_previous_run(plan)
        else:
            check_resumable(plan, hparams_file, overrides, run_opts)
            remove_unfinished_checkpoints(plan)
        record_settings(plan)
        ddp_barrier()
        return _train_test_export(hparams_file, run_opts, overrides, plan.corpus)


def _prepared_timit(hparams: dict[str, Any], phones: list[str]) -> dict[str, Annotation]:
    """TIMIT's manifests, written once (other processes wait), read back and checked against the inventory."""
    prep = {"data_folder": hparams["data_folder"], "save_folder": hparams["save_folder"], "phn_set": hparams["phn_set"]}
    run_on_main(prepare_timit, kwargs=prep)
    splits = {split: read_annotation(path) for split, path in zip(SPLITS, prepare_timit(**prep, skip_prep=True))}
    check_phones(splits, phones, hparams.get("phone_inventory") or f"TIMIT's {hparams['phn_set']} phones")
    return splits


def check_durations(splits: dict[str, Annotation], encoder: SSLEncoder) -> None:
    """Every utterance must give the encoder a frame, and a training one the frames of a SpecAugment mask when
    masking is on; sorted by duration, the shortest share a batch, which the encoder cannot take."""
    geometry = FrameGeometry.from_frame_lengths(encoder.frame_lengths)
    config = encoder.model.config
    masked = getattr(config, "mask_time_prob", 0) > 0
    for split, annotation in splits.items():
        frames = max(1, config.mask_time_length) if split == "train" and masked else 1
        samples = geometry.receptive_field + (frames - 1) * geometry.hop
        for utt_id, entry in annotation.entries.items():
            if geometry.frames(round(entry["duration"] * SAMPLE_RATE)) < frames:
                why = f"{frames} frames for SpecAugment's masks (mask_time_length)" if frames > 1 else "one frame"
                raise AnnotationError(f"{annotation.where(utt_id)}: {entry['duration']:.4g} s is too short: the "
                                      f"encoder needs at least {samples / SAMPLE_RATE:.4g} s ({samples} samples) "
                                      f"for {why}")  # fmt: skip


def _train_test_export(
    hparams_file: str | Path, run_opts: dict[str, Any], overrides: str | dict, corpus: Corpus
) -> dict:
    with open(hparams_file, encoding="utf-8") as fin:  # the head sized for the corpus's phones and the blank
        hparams = load_hyperpyyaml(fin, {**as_mapping(overrides), "n_tokens": len(corpus.phones) + 1})
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"], hyperparams_to_save=str(hparams_file), overrides=overrides
    )
    splits = corpus.splits if corpus.splits is not None else _prepared_timit(hparams, corpus.phones)
    label_encoder = phone_encoder(Path(hparams["save_folder"]) / LABEL_ENCODER_NAME, corpus.phones)
    hparams["label_encoder"] = label_encoder
    entries = {split: annotation.entries for split, annotation in splits.items()}
    datasets = dataio_prepare(entries, label_encoder, hparams["train_sorting"])

    model = hparams["model"]
    check_durations(splits, model.encoder)
    check_ctc_lengths(splits["train"], model.encoder.frame_lengths)  # before training: none would train silently
    if hparams["init_head_from_checkpoint"]:
        _init_head(model, hparams, labels_of(label_encoder), label_encoder.get_blank_index())
    kind = hparams["adapter"]
    configure_training(model, kind, hparams["adapter_configs"].get(kind))
    trainable, total = count_parameters(model)
    _schedule_steps(hparams, len(datasets["train"]))

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
        export_recognizer(model, kind, labels_of(label_encoder), export_dir)
    adapter_config = hparams["adapter_configs"].get(kind)
    return {
        "adapter": kind,
        "lr": hparams["lr"],
        "target_modules": adapter_config.target_modules if adapter_config is not None else None,
        "test": brain.test_report,
        "export": str(export_dir),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "train_seconds": train_seconds,
        "manifests": {split: str(annotation.path) for split, annotation in splits.items()},
    }


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry: ``train.py hparams.yaml [--overrides ...]`` as in every SpeechBrain recipe."""
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:] if argv is None else argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    try:
        return run(hparams_file, run_opts, overrides)
    except RunSettingsError as err:  # a usage error
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except (AnnotationError, RunFolderError, CheckpointSaveError, CheckpointRecoveryError, ExportError,
            NonFiniteTrainingError) as err:  # fmt: skip
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
