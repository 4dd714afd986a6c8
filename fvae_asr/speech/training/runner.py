"""What surrounds a recipe's training flow: the run folder claimed before anything is written (settings, corpus and
folders checked, the folders locked, a restart cleared or a resume checked), and the command line's exit codes.

A recipe (``recipes/timit/train.py``) hands its flow, ``train(hparams_file, run_opts, overrides, corpus) -> report``,
to ``guarded_run`` or ``run_command``; the demo, the studies and ``fvae-asr train`` run that same recipe.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import speechbrain as sb
from speechbrain.utils.distributed import ddp_barrier, if_main_process

from fvae_asr.speech.data.annotations import AnnotationError, Corpus, check_audio
from fvae_asr.speech.models.export import ExportError, check_replaceable
from fvae_asr.speech.training.hparams import hparams_source
from fvae_asr.speech.training.recipe_help import answer_help
from fvae_asr.speech.training.resume import CheckpointRecoveryError, CheckpointSaveError, NonFiniteTrainingError
from fvae_asr.speech.training.run_folder import (
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

TrainFlow = Callable[[Path, dict[str, Any], "str | dict", Corpus], dict]
RUNTIME_ERRORS = (
    AnnotationError,
    RunFolderError,
    CheckpointSaveError,
    CheckpointRecoveryError,
    ExportError,
    NonFiniteTrainingError,
)


def guarded_run(
    hparams_file: str | Path, run_opts: dict[str, Any] | None, overrides: str | dict, train: TrainFlow
) -> dict:
    """Claim the run folder, then run ``train``; returns its report (on the main process).

    Args:
        hparams_file: the recipe's yaml; it may extend another (see ``fvae_asr.speech.training.hparams``).
        run_opts: SpeechBrain's run options (``--device``, ``--precision``, ...).
        overrides: the yaml overrides (a yaml string or a mapping).
        train: the recipe's flow, called with the yaml to load, the run options, the overrides and the corpus.

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
        return train(hparams_file, run_opts, overrides, plan.corpus)
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
        return train(hparams_file, run_opts, overrides, plan.corpus)


def run_command(argv: Sequence[str] | None, train: TrainFlow, default_hparams: Path) -> dict:
    """``train.py hparams/train.yaml [--overrides ...]`` as in every SpeechBrain recipe: ``guarded_run`` with one-line
    errors, exit 2 for a usage error (settings) and 1 for a runtime one. No arguments, or ``--help``, lists the
    yaml's settings (``default_hparams`` when none is given; see ``recipe_help``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    code = answer_help(argv, default_hparams, f"{sys.argv[0]} HPARAMS.yaml [--key=value ...] [run options]")
    if code is not None:
        sys.exit(code)
    hparams_file, run_opts, overrides = sb.parse_arguments(argv)
    sb.utils.distributed.ddp_init_group(run_opts)
    try:
        return guarded_run(hparams_file, run_opts, overrides, train)
    except RunSettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except RUNTIME_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
