"""Steps of the recipe's flow that are not its method: the corpus's splits (TIMIT prepared once, or the given
annotations), the checks that no training utterance is too short, the schedule sized to the data, and a CTC head
started from a checkpoint's."""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
from speechbrain.utils.distributed import run_on_main

from fvae_asr.audio import SAMPLE_RATE
from fvae_asr.speech.data.annotations import (
    Annotation,
    AnnotationError,
    Corpus,
    check_ctc_lengths,
    check_finite_samples,
    check_phones,
    read_annotation,
)
from fvae_asr.speech.data.timit import SPLITS, manifest_paths, prepare_timit
from fvae_asr.speech.data.word_corpus import WordCorpus, write_manifests
from fvae_asr.speech.inference.chunking import FrameGeometry
from fvae_asr.speech.models.encoder import SSLEncoder
from fvae_asr.speech.models.recognizer import CTCRecognizer, init_head_from_checkpoint

logger = logging.getLogger(__name__)


def corpus_splits(hparams: dict[str, Any], corpus: Corpus) -> dict[str, Annotation]:
    """The train/dev/test annotations: the corpus's own, those pronounced from word transcripts (their manifests
    written once by the main process), or TIMIT's manifests, written once by the main process (the others wait),
    read back and checked against the phone inventory."""
    if isinstance(corpus, WordCorpus):
        run_on_main(write_manifests, args=[corpus, hparams["save_folder"]])
    if corpus.splits is not None:
        return corpus.splits
    prep = {"data_folder": hparams["data_folder"], "save_folder": hparams["save_folder"], "phn_set": hparams["phn_set"]}
    run_on_main(prepare_timit, kwargs=prep)
    splits = {split: read_annotation(path) for split, path in zip(SPLITS, manifest_paths(hparams["save_folder"]))}
    check_phones(splits, corpus.phones, hparams.get("phone_inventory") or f"TIMIT's {hparams['phn_set']} phones")
    return splits


def check_durations(splits: dict[str, Annotation], encoder: SSLEncoder) -> None:
    """Refuse, naming the row, an utterance too short to train on: every utterance must give the encoder a frame
    (a training one the frames of a SpecAugment mask when masking is on), and a training one as many frames as
    CTC needs for its phones (a shorter one would train with a loss of zero, silently); and no file may hold a
    non-finite sample (it would stop the run at its batch)."""
    geometry = FrameGeometry.from_frame_lengths(encoder.frame_lengths)
    config = encoder.model.config
    masked = getattr(config, "mask_time_prob", 0) > 0
    for split, annotation in splits.items():
        frames = max(1, config.mask_time_length) if split == "train" and masked else 1
        samples = geometry.receptive_field + (frames - 1) * geometry.hop
        for utt_id, entry in annotation.entries.items():
            if geometry.frames(round(entry["duration"] * SAMPLE_RATE)) < frames:
                why = f"{frames} frames for SpecAugment's masks (mask_time_length)" if frames > 1 else "one frame"
                raise AnnotationError(
                    f"{annotation.where(utt_id)}: {entry['duration']:.4g} s is too short: the "
                    f"encoder needs at least {samples / SAMPLE_RATE:.4g} s ({samples} samples) "
                    f"for {why}"
                )
    check_ctc_lengths(splits["train"], encoder.frame_lengths)
    for annotation in splits.values():
        check_finite_samples(annotation)


def size_schedule(hparams: dict[str, Any], n_train: int) -> None:
    """Size the warm-up + linear-decay schedule (``lr_scheduler``) once the training set size is known."""
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    per_epoch = math.ceil(n_train / (hparams["batch_size"] * world) / hparams.get("grad_accumulation_factor", 1))
    scheduler = hparams["lr_scheduler"]
    scheduler.num_training_steps = max(1, per_epoch * hparams["number_of_epochs"])
    scheduler.num_warmup_steps = round(hparams["warmup_ratio"] * scheduler.num_training_steps)


def init_head(model: CTCRecognizer, hparams: dict[str, Any], labels: list[str], blank_index: int) -> None:
    """``init_head_from_checkpoint``: the head starts from ``encoder_source``'s own CTC head (a resumed run then
    loads its checkpointed head over it)."""
    if hparams["encoder_config"]:
        raise ValueError("init_head_from_checkpoint needs a pretrained encoder_source; encoder_config is set")
    try:
        shared = init_head_from_checkpoint(model, hparams["encoder_source"], labels, blank_index)
    except ValueError as err:
        raise ValueError(f"init_head_from_checkpoint: {err} (set it to False for a fresh head)") from err
    logger.info("CTC head started from %s for %d of %d labels", hparams["encoder_source"], len(shared), len(labels))
