"""One training run per output folder: its settings are checked before anything is written, recorded beside its
checkpoints with what identifies its audio, compared when it resumes, and locks keep a second process out of its
output and save folders while it runs; a save folder that holds another run's checkpoints is refused.

A resumed run must compute what the original run would have computed, so every setting that changes the result
must match the recorded one; ``RESUMABLE_KEYS`` and ``RESUMABLE_PATHS`` may change (see ``hparams/train.yaml``).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ruamel.yaml
import torch
from hyperpyyaml import resolve_references
from speechbrain.utils.distributed import infer_device
from speechbrain.utils.run_opts import RunOptions

from fvae_asr.adapters.optimizer import OPTIMIZER_RULE
from fvae_asr.files import describe_changes, read_json, write_atomically, write_json
from fvae_asr.speech.data.annotations import ANNOTATION_KEYS, TIMIT_INVENTORIES, Corpus, audio_files
from fvae_asr.speech.data.corpora import CORPORA, corpus_for
from fvae_asr.speech.data.labels import SORTINGS
from fvae_asr.speech.models.encoder import check_family
from fvae_asr.speech.models.export import check_replaceable, remove_export
from fvae_asr.speech.models.training_methods import TRAINING_METHODS
from fvae_asr.speech.training.hparams import ALIASES, as_mapping
from fvae_asr.speech.training.resume import STAGING_PREFIX
from fvae_asr.speech.training.train_logger import LOGGERS, TENSORBOARD_MISSING, tensorboard_missing

logger = logging.getLogger(__name__)

RUN_RECORD_NAME = "run_config.json"  # in save_folder, beside the checkpoints it describes
AUDIO_RECORD_NAME = "corpus_files.json"  # in save_folder: size and mtime of the audio the checkpoints trained on
LOCK_NAME = "run.lock"  # in output_folder and in save_folder
OWNER_KEY = "output_folder<absolute>"  # in the settings record: the run folder that owns the save folder
LABEL_ENCODER_NAME = "label_encoder.txt"  # in save_folder, the labels its checkpoints' heads are trained on
CHECKPOINT_PREFIX = "CKPT+"  # SpeechBrain's checkpoint folders
TENSORBOARD_EVENTS = "events.out.tfevents.*"  # what TensorBoard's SummaryWriter writes into tensorboard_folder
PRECISIONS = ("fp32", "bf16", "fp16")

# Settings that may change when a run resumes: where things are written, how often checkpoints are taken, how
# many epochs (more epochs rebuild the learning-rate schedule) and the restart switch itself.
RESUMABLE_KEYS = (
    "output_folder",
    "save_folder",
    "export_folder",
    "train_log",
    "test_results_file",
    "test_alignments_file",
    "logger",
    "tensorboard_folder",
    "train_logger",
    "number_of_epochs",
    "ckpt_interval_minutes",
    "ckpt_interval_steps",
    "restart",
)
RESUMABLE_PATHS = ("train_dataloader_opts.num_workers", "valid_dataloader_opts.num_workers")
# Run options (command-line flags, not yaml overrides) whose effective value joins the settings: those that
# change the result, and the checkpoint intervals; the others (device, noprogressbar, ...) may change freely.
SETTING_RUN_OPTS = (
    "precision",
    "eval_precision",
    "grad_accumulation_factor",
    "max_grad_norm",
    "skip_nonfinite_grads",
    "remove_vector_weight_decay",
    "optimizer_step_limit",
    "ckpt_interval_minutes",
    "ckpt_interval_steps",
)


class RunSettingsError(ValueError):
    """A usage error: a setting is invalid, or differs from the run already in the output folder."""


class RunFolderError(RuntimeError):
    """The run's folders cannot be used: another run holds them, or they cannot be written."""


class RunFolderInUse(RunFolderError):
    """Another process is running in this output or save folder."""


@dataclass
class RunPlan:
    """The resolved settings of one run: ``flat`` maps dotted keys to plain values (yaml tags included);
    ``corpus`` is what it trains on (its phone inventory, and its annotations unless it is TIMIT)."""

    flat: dict[str, Any]
    corpus: Corpus
    audio: dict[str, str]  # audio_files of the corpus
    output_folder: Path
    save_folder: Path
    train_log: Path
    export_folder: Path
    result_files: tuple[Path, ...]  # the test results and alignments
    restart: bool


def plan_run(hparams_file: str | Path, overrides: str | Mapping, run_opts: Mapping | RunOptions) -> RunPlan:
    """Resolve the yaml with its overrides (no object is built, nothing is written), check the settings that
    have a fixed set of values (``RunSettingsError`` naming the field and what it allows), read the corpus's
    annotations (``AnnotationError`` naming the file and row) and stat its audio files."""
    flat, corpus = _resolve(hparams_file, overrides, run_opts)
    restart = flat.get("restart", False)
    flat[OWNER_KEY] = str(Path(flat["output_folder"]).resolve())
    return RunPlan(
        flat=flat,
        corpus=corpus,
        audio=audio_files(flat, corpus),
        output_folder=Path(flat["output_folder"]),
        save_folder=Path(flat["save_folder"]),
        train_log=Path(flat["train_log"]),
        export_folder=Path(flat["export_folder"]),
        result_files=(Path(flat["test_results_file"]), Path(flat["test_alignments_file"])),
        restart=restart is not False,  # a bare --restart arrives as None
    )


def resolved_settings(hparams_file: str | Path, overrides: str | Mapping, run_opts: Mapping | RunOptions) -> dict:
    """Flat settings of the yaml after overrides, with the effective values of ``SETTING_RUN_OPTS``, the number
    of processes and the corpus's (``Corpus.settings``: the label count, the checksums of its annotations)."""
    return _resolve(hparams_file, overrides, run_opts)[0]


def _resolve(hparams_file: str | Path, overrides: str | Mapping, run_opts: Mapping | RunOptions) -> tuple[dict, Corpus]:
    with open(hparams_file, encoding="utf-8") as fin:
        try:
            resolved = resolve_references(fin, as_mapping(overrides))
        except ValueError as err:  # e.g. "'data_folder' is a !PLACEHOLDER and must be replaced."
            placeholder = re.match(r"'([\w.]+)' is a !PLACEHOLDER", str(err))
            if placeholder:
                raise RunSettingsError(_not_set(placeholder.group(1))) from None
            raise RunSettingsError(f"{hparams_file}: {err}") from None
    tree = ruamel.yaml.YAML().load(resolved)
    flat: dict[str, Any] = {}
    _flatten(tree, "", flat)
    given = _given_run_opts(run_opts)
    defaults = RunOptions()
    for name in SETTING_RUN_OPTS:
        flat[name] = given[name] if name in given else flat.get(name, getattr(defaults, name))
    flat["world_size"] = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    flat["optimizer_rule"] = OPTIMIZER_RULE  # runs of an older rule (0.2) do not resume under this one
    flat = json.loads(json.dumps(flat))  # plain JSON values, as they come back from the record
    # a yaml that still names a setting by its old name (ALIASES) records it under the new
    flat = {ALIASES.get(key, key): value for key, value in flat.items()}
    _validate(flat)
    _check_device(given.get("device") or flat.get("device") or infer_device(), flat)
    corpus = corpus_for(flat)
    return {**flat, **corpus.settings}, corpus


def _given_run_opts(run_opts: Mapping | RunOptions) -> dict:
    if isinstance(run_opts, RunOptions):
        return {name: run_opts[name] for name in run_opts.overridden_args}
    return dict(run_opts)


def _flatten(node: Any, prefix: str, out: dict[str, Any]) -> None:
    tag = getattr(getattr(node, "tag", None), "value", None)
    if tag:
        out[f"{prefix}<tag>"] = tag
    if isinstance(node, Mapping):
        for key, value in node.items():
            _flatten(value, f"{prefix}{key}.", out)
        if not node:
            out[prefix.rstrip(".")] = {}
    elif isinstance(node, list) and any(isinstance(item, (Mapping, list)) for item in node):
        for index, value in enumerate(node):
            _flatten(value, f"{prefix}{index}.", out)
    elif isinstance(node, list):
        out[prefix.rstrip(".")] = [_plain(item) for item in node]
    else:
        out[prefix.rstrip(".")] = _plain(node)


def _plain(value: Any) -> Any:
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return None if value is None else str(value)


CHOICES = {
    "corpus": CORPORA,
    "method": TRAINING_METHODS,
    "precision": PRECISIONS,
    "eval_precision": PRECISIONS,
    "train_sorting": SORTINGS,
    "phn_set": tuple(TIMIT_INVENTORIES),
    "logger": LOGGERS,
}
# Settings that have a new name: given under the old one (an override, or an older copy of a yaml) they are an
# error naming the new one, not a KeyError from the yaml loader after the run folder was set up.
RENAMED_KEYS = {"wav2vec2_source": "encoder_source", "wav2vec2_config": "encoder_config"}
# Recorded values with a new name (classes the yaml builds): with RENAMED_KEYS, a run recorded before the
# renames resumes (it computes the same).
RENAMED_VALUES = {"!new:fvae_asr.speech.encoder.Wav2Vec2Encoder": "!new:fvae_asr.speech.models.encoder.SSLEncoder"}
# Modules of classes the yaml builds, moved in 0.2.0 (old -> new), so that class paths recorded by 0.1 resume.
RENAMED_MODULES = {
    "fvae_asr.speech.encoder": "fvae_asr.speech.models.encoder",
    "fvae_asr.speech.recognizer": "fvae_asr.speech.models.recognizer",
    "fvae_asr.speech.export": "fvae_asr.speech.models.export",
    "fvae_asr.speech.checkpointing": "fvae_asr.speech.training.resume",
    "fvae_asr.speech.train_logger": "fvae_asr.speech.training.train_logger",
}
# Classes the yaml builds that moved to another module after 0.2.0 (old -> new, at the modules' current paths).
MOVED_CLASSES = {
    "fvae_asr.speech.models.export.TrainableWeights": "fvae_asr.speech.training.resume.TrainableWeights",
}
_CLASS_TAG = re.compile(r"^(![a-z]+:)([\w.]+)\.(\w+)$")  # !new:package.module.Class


def _validate(flat: dict[str, Any]) -> None:
    for old, new in RENAMED_KEYS.items():
        if any(key == old or key.startswith(f"{old}.") for key in flat):
            raise RunSettingsError(f"{old} is now called {new}: set {new} instead (on the command line or in the yaml)")
    if any(key.startswith("encoder_config.") for key in flat):  # a randomly initialised encoder names its family
        try:
            check_family(flat.get("encoder_config.model_type"), "encoder_config")
        except ValueError as err:
            raise RunSettingsError(str(err)) from None
    for key, allowed in CHOICES.items():
        if key in flat and flat[key] not in allowed:
            raise RunSettingsError(f"{key} must be one of {', '.join(map(str, allowed))}; got {flat[key]!r}")
    if flat.get("logger") == "tensorboard" and tensorboard_missing():
        raise RunSettingsError(TENSORBOARD_MISSING)
    if flat.get("logger") == "tensorboard" and flat.get("tensorboard_folder"):
        folder = Path(flat["tensorboard_folder"])
        blocking = next((path for path in (folder, *folder.parents) if path.exists() and not path.is_dir()), None)
        if blocking is not None:
            raise RunSettingsError(
                f"tensorboard_folder {folder}: {blocking} is a file, not a folder; choose another tensorboard_folder"
            )
    if flat.get("restart") not in (None, True, False):
        raise RunSettingsError(f"restart must be True or False; got {flat['restart']!r}")
    clip = flat.get("max_grad_norm")
    if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not 0 < clip < float("inf"):
        raise RunSettingsError(f"max_grad_norm must be a number > 0 (Adam's eps follows it); got {clip!r}")
    if flat.get("remove_vector_weight_decay"):
        raise RunSettingsError(
            "remove_vector_weight_decay: the recipe already keeps biases and normalisation weights out of weight "
            "decay (the authors' rule, fvae_asr.adapters.optimizer); leave it off"
        )
    intervals = {key: flat[key] for key in ("ckpt_interval_minutes", "ckpt_interval_steps")}
    if all(value and value > 0 for value in intervals.values()):
        raise RunSettingsError(f"set only one of ckpt_interval_minutes and ckpt_interval_steps (got {intervals})")
    annotations = {key: flat.get(key) for key in ANNOTATION_KEYS.values()}
    if any(annotations.values()) and not all(annotations.values()):
        unset = [key for key, value in annotations.items() if not value]
        raise RunSettingsError(
            f"{', '.join(unset)} not set: a corpus given by annotations needs all of {', '.join(annotations)}"
        )
    if not any(annotations.values()) and not flat.get("data_folder"):
        raise RunSettingsError(_not_set("data_folder"))


def _not_set(key: str) -> str:
    """The error for a setting the yaml leaves to the command line (``!PLACEHOLDER``)."""
    if key == "data_folder":
        return (
            "data_folder not set: give the TIMIT root (--data_folder=...), or, for another corpus, the folder that "
            f"$data_root stands for in its {', '.join(ANNOTATION_KEYS.values())}"
        )
    return f"{key} not set: give --{key}=..."


def _check_device(device: str, flat: dict[str, Any]) -> None:
    """The device must exist here, and fp16 needs CUDA (SpeechBrain refuses it on a CPU, after preparation)."""
    kind, _, index = str(device).partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (int(index) if index.isdigit() else 0) >= count:
            has = f"only {count} CUDA device{'s' if count > 1 else ''}" if count else "no CUDA device"
            raise RunSettingsError(f"--device={device}: this machine has {has}; use --device=cpu or a device it has")
    if kind == "cpu":
        fp16 = [key for key in ("precision", "eval_precision") if flat.get(key) == "fp16"]
        if fp16:
            raise RunSettingsError(
                f"{' and '.join(fp16)} fp16 needs a CUDA device, and this run is on the cpu: use "
                "bf16 (or fp32) on a CPU"
            )


_HELD_LOCKS: set[int] = set()  # the descriptors of the folder locks this process holds


def _drop_inherited_locks() -> None:
    """In a process forked from a run (a DataLoader worker): let go of the run's folder locks, which the fork
    shares with it, so that they end with the run itself, not seconds later with its last worker. The descriptor
    is pointed at /dev/null, not closed: code the fork runs may still release the lock through it, harmlessly."""
    if not _HELD_LOCKS:
        return
    null = os.open(os.devnull, os.O_RDONLY)
    for descriptor in _HELD_LOCKS:
        os.dup2(null, descriptor)
    os.close(null)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


@contextmanager
def run_folder_lock(folder: Path, key: str = "output_folder") -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (created if missing; ``key`` names its setting in messages) for the
    block; the system drops it when the process dies, and the processes it forks do not keep it
    (``_drop_inherited_locks``), so a killed run never blocks the next one. Raises ``RunFolderInUse`` if another
    holds it, and ``RunFolderError`` if the folder cannot be written (a read-only file system, permissions)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / LOCK_NAME, "a+", encoding="utf-8")  # noqa: SIM115 - closed by the with below
    except OSError as err:
        raise RunFolderError(
            f"{folder}: cannot write there ({err.strerror or err}); choose a folder this run can write ({key})"
        ) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP):
                logger.warning("%s: this file system cannot lock files; make sure no other run uses it", folder)
                yield
                return
            if err.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunFolderInUse(
                f"{folder}: another run is using this {key} ({holder}); wait for it to end or choose another {key}"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        _HELD_LOCKS.add(handle.fileno())
        try:
            yield
        finally:
            _HELD_LOCKS.discard(handle.fileno())
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def run_folders_lock(plan: RunPlan) -> Iterator[None]:
    """Lock the run's output folder and, when it is elsewhere, its save folder: two runs that share a save folder
    would otherwise test, export and delete each other's checkpoints."""
    with run_folder_lock(plan.output_folder):
        if plan.save_folder.resolve() == plan.output_folder.resolve():
            yield
            return
        with run_folder_lock(plan.save_folder, "save_folder"):
            yield


def check_save_folder_owner(plan: RunPlan) -> None:
    """Refuse (``RunSettingsError``) a save folder whose settings record names another run folder that still
    exists: its checkpoints are that run's. (A run folder moved as a whole takes its save folder along.)"""
    record_file = plan.save_folder / RUN_RECORD_NAME
    if not record_file.is_file():
        return
    try:
        recorded = _read_record(record_file, "run settings (written by the recipe)")
    except RunFolderError:
        if plan.restart:  # a damaged record names no owner, and restart deletes it
            return
        raise
    owner = recorded.get(OWNER_KEY) or recorded.get("output_folder")
    if not isinstance(owner, str) or not owner:
        return
    owner_folder = Path(owner).resolve()
    if owner_folder == plan.output_folder.resolve() or not (owner_folder / LOCK_NAME).is_file():
        return
    raise RunSettingsError(
        f"{plan.save_folder} holds the checkpoints of the run in {owner_folder}: give this run its own save_folder "
        f"(or resume that run with --output_folder={owner_folder})"
    )


def has_checkpoints(save_folder: Path) -> bool:
    """Whether ``save_folder`` holds a checkpoint, i.e. a run that the next start would resume."""
    return save_folder.is_dir() and any(p.name.startswith(CHECKPOINT_PREFIX) for p in save_folder.iterdir())


def check_resumable(plan: RunPlan, hparams_file: str | Path, overrides: str | Mapping, run_opts) -> None:
    """Refuse (``RunSettingsError``, naming the keys) to resume a run whose result-changing settings differ.

    The new settings are resolved again with the recorded values of the resumable keys, so that values derived
    from them (the epoch counter's limit from ``number_of_epochs``, paths under ``output_folder``) compare equal.
    """
    record_file = plan.save_folder / RUN_RECORD_NAME
    if not has_checkpoints(plan.save_folder):
        return
    if not record_file.is_file():
        logger.warning(
            "%s: checkpoints without %s (an older run): its settings cannot be checked",
            plan.save_folder,
            RUN_RECORD_NAME,
        )
        return
    recorded = _current_names(_read_record(record_file, "run settings (written by the recipe)"))
    pinned = {key: recorded[key] for key in RESUMABLE_KEYS if key in recorded}
    current = resolved_settings(hparams_file, {**as_mapping(overrides), **pinned}, run_opts)
    # A setting added since the run started, at a null default, is no change (missing and null compare equal).
    changed = [
        key
        for key in sorted(set(recorded) | set(current), key=lambda k: (k.count("."), k))  # top level first
        if not _resumable(key) and recorded.get(key) != current.get(key)
    ]
    if changed:
        details = "; ".join(
            f"{key}: {recorded.get(key, '<unset>')!r} -> {current.get(key, '<unset>')!r}" for key in changed[:8]
        )
        more = f" (and {len(changed) - 8} more)" if len(changed) > 8 else ""
        raise RunSettingsError(
            f"{plan.output_folder} holds a run with other settings ({details}{more}): resume it with its own "
            "settings, or pass --restart=True to delete its checkpoints and start afresh"
        )
    _check_same_audio(plan)


def _check_same_audio(plan: RunPlan) -> None:
    """Refuse to resume on a corpus whose audio changed since the run recorded it (regenerated, replaced)."""
    record_file = plan.save_folder / AUDIO_RECORD_NAME
    if not record_file.is_file():
        logger.warning(
            "%s: checkpoints without %s (an older run): its audio cannot be checked",
            plan.save_folder,
            AUDIO_RECORD_NAME,
        )
        return
    recorded = _read_record(record_file, "audio files of the run (written by the recipe)")
    if recorded != plan.audio:
        raise RunSettingsError(
            f"{plan.output_folder} holds a run trained on other audio: the corpus changed since ("
            f"{describe_changes(recorded, plan.audio)}); resume it on its own corpus, or pass --restart=True to "
            "delete its checkpoints and start afresh"
        )


def _read_record(path: Path, what: str) -> dict:
    """A record of the save folder; a damaged one (not JSON, cut short) is a ``RunFolderError`` naming it."""
    try:
        return read_json(path, what)
    except ValueError as err:
        raise RunFolderError(
            f"{err} (the {what}, damaged): the run cannot be checked or resumed; pass --restart=True to delete its "
            "checkpoints and start afresh"
        ) from None


def _current_names(recorded: dict[str, Any]) -> dict[str, Any]:
    """Settings with the keys and values renamed since (``RENAMED_KEYS``, ``ALIASES``, ``RENAMED_VALUES``)."""
    renamed = {}
    for key, value in recorded.items():
        head, dot, rest = key.partition(".")
        if isinstance(value, str):
            value = RENAMED_VALUES.get(value) or _moved_class(value)
        renamed[RENAMED_KEYS.get(head, ALIASES.get(head, head)) + dot + rest] = value
    return renamed


def _moved_class(value: str) -> str:
    """A recorded class tag with its class's current path (``RENAMED_MODULES``, then ``MOVED_CLASSES``); any
    other value as it is."""
    tag = _CLASS_TAG.match(value)
    if tag is None:
        return value
    path = f"{RENAMED_MODULES.get(tag.group(2), tag.group(2))}.{tag.group(3)}"
    return f"{tag.group(1)}{MOVED_CLASSES.get(path, path)}"


def _resumable(key: str) -> bool:
    return key.split(".")[0].split("<")[0] in RESUMABLE_KEYS or any(
        key == p or key.startswith(f"{p}.") for p in RESUMABLE_PATHS
    )


def remove_unfinished_checkpoints(plan: RunPlan) -> None:
    """Delete the staging folders of checkpoint saves that a killed process left (never loaded anyway), and a
    label encoder that no checkpoint uses (a start that ended before its first checkpoint, perhaps on another
    corpus): it is rebuilt from this run's phone inventory."""
    for path in plan.save_folder.glob(STAGING_PREFIX + "*") if plan.save_folder.is_dir() else []:
        shutil.rmtree(path)
        logger.info("Removed %s, a checkpoint whose save was interrupted", path)
    label_encoder = plan.save_folder / LABEL_ENCODER_NAME
    if label_encoder.is_file() and not has_checkpoints(plan.save_folder):
        label_encoder.unlink()
        logger.info("Removed %s, which no checkpoint uses", label_encoder)


def clear_previous_run(plan: RunPlan) -> None:
    """``restart``: delete the previous run's checkpoints, settings records, label encoder, training log,
    TensorBoard event files and results (test results and alignments, export), so that a restart that fails leaves
    none of them behind (and TensorBoard shows the new run alone)."""
    removed = []
    check_replaceable(plan.export_folder)  # before anything is deleted
    if plan.save_folder.is_dir():
        for path in plan.save_folder.iterdir():
            if path.is_dir() and path.name.startswith((CHECKPOINT_PREFIX, STAGING_PREFIX)):
                shutil.rmtree(path)
                removed.append(path.name)
        for name in (RUN_RECORD_NAME, AUDIO_RECORD_NAME, LABEL_ENCODER_NAME):
            if (plan.save_folder / name).is_file():
                (plan.save_folder / name).unlink()
                removed.append(name)
    for path in (plan.train_log, *plan.result_files, *_event_files(plan)):
        if path.is_file():
            path.unlink()
            removed.append(path.name)
    if remove_export(plan.export_folder):
        removed.append(plan.export_folder.name)
    logger.info("restart: removed %s from %s", ", ".join(removed) or "nothing", plan.output_folder)


def _event_files(plan: RunPlan) -> list[Path]:
    """The TensorBoard event files of the run's ``tensorboard_folder`` (written there by ``logger: tensorboard``)."""
    folder = plan.flat.get("tensorboard_folder")
    return sorted(Path(folder).glob(TENSORBOARD_EVENTS)) if folder and Path(folder).is_dir() else []


def record_settings(plan: RunPlan) -> None:
    """Write the settings and the audio files' stamps beside the checkpoints (through temporary files: a crash
    leaves the old records)."""
    plan.save_folder.mkdir(parents=True, exist_ok=True)
    write_json(plan.save_folder / AUDIO_RECORD_NAME, plan.audio)
    text = json.dumps(plan.flat, indent=1, sort_keys=True) + "\n"
    write_atomically(plan.save_folder / RUN_RECORD_NAME, lambda tmp: tmp.write_text(text, encoding="utf-8"))
