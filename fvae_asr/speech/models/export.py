"""Saving and loading trained models: small, pickle-free safetensors files plus a JSON description.

Two tasks share the format (``task`` in the description): a CTC phone recogniser (``CTCRecognizer``, labels = its
token inventory with a blank) and an utterance classifier (``PooledClassifier``, labels = its class names).
An export directory holds ``model.json`` (task, backbone, training method, labels, encoder options), the backbone
(a Hugging Face directory ``backbone/``, unless it came from the hub: then its hub id) and either an adapter
checkpoint (``adapter_config.json`` + ``adapter_model.safetensors``, adapters + head) or, for ``full``/``frozen``,
``trainable_model.safetensors`` with the weights that were trained. Nothing in it refers to a path outside it, so
the folder can be moved or shared. Loading checks every field and weight and names the file at fault. A CTC
recogniser's export also loads through SpeechBrain's ``EncoderASR.from_hparams`` (``hyperparams.yaml`` and
``encoder.ckpt``; see ``fvae_asr.speech.inference.speechbrain_inference``); our own loader never reads them.

An export is written into a staging folder beside its directory and renamed into place: a crash or a full disk
leaves the previous export whole, never its description beside new weights.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import AutoModelForCTC, Wav2Vec2CTCTokenizer

from fvae_asr.adapters import adapter_layers, base_state_dict, load_adapter, save_adapter
from fvae_asr.adapters.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from fvae_asr.adapters.layers import upgrade_legacy_tensors
from fvae_asr.adapters.peft_format import PEFT_PREFIX
from fvae_asr.audio import SAMPLE_RATE
from fvae_asr.files import is_disk_full, read_json, respect_umask, write_json
from fvae_asr.speech.models.classifier import PooledClassifier
from fvae_asr.speech.models.encoder import SSLEncoder, is_hub_id, quiet_hf_loading
from fvae_asr.speech.models.recognizer import HEAD_NAME, CTCRecognizer
from fvae_asr.speech.models.training_methods import ADAPTER_METHODS, TRAINING_METHODS, configure_training
from fvae_asr.tensor_files import check_finite, load_tensors, save_tensors

DESCRIPTION_NAME = "model.json"
# Exports written before 0.3 describe themselves in recognizer.json, with the training method under "adapter":
# both still load.
LEGACY_DESCRIPTION_NAME = "recognizer.json"
LEGACY_METHOD_FIELD = "adapter"
TRAINABLE_NAME = "trainable_model.safetensors"
BACKBONE_DIR = "backbone"
# task -> the model class; exports written before classifiers could be exported have no "task": they are CTC
MODEL_CLASSES: dict[str, type[nn.Module]] = {"ctc": CTCRecognizer, "classification": PooledClassifier}
DEFAULT_TASK = "ctc"
ExportedModel = CTCRecognizer | PooledClassifier
# SpeechBrain's inference interface (fvae_asr.speech.inference.speechbrain_inference): EncoderASR reads the yaml, and
# its Pretrainer fetches the pointer for the module named "encoder", which loads the folder the pointer lies in.
SPEECHBRAIN_HPARAMS_NAME = "hyperparams.yaml"
SPEECHBRAIN_POINTER_NAME = "encoder.ckpt"
SPEECHBRAIN_POINTER = {"format": "fvae-asr export", "description": DESCRIPTION_NAME}
SPEECHBRAIN_POINTERS = (SPEECHBRAIN_POINTER, {**SPEECHBRAIN_POINTER, "description": LEGACY_DESCRIPTION_NAME})
_SPEECHBRAIN_HPARAMS = """\
# SpeechBrain's inference interface to this export (a CTC phone recogniser), written by fvae-asr:
#   from speechbrain.inference.ASR import EncoderASR
#   asr = EncoderASR.from_hparams(source="path/to/this/folder", savedir="a/folder/for/its/links")
#   asr.transcribe_file("speech.wav")  # space-separated phones, as fvae-asr transcribe gives them
# The encoder loads this folder (found through encoder.ckpt) with fvae-asr's own checked loader.

sample_rate: {sample_rate}

encoder: !new:fvae_asr.speech.inference.speechbrain_inference.ExportedRecognizer

modules:
    encoder: !ref <encoder>

tokenizer: !new:fvae_asr.speech.inference.speechbrain_inference.ExportTokenizer
    encoder: !ref <encoder>

decoding_function: !name:fvae_asr.speech.inference.speechbrain_inference.greedy_ctc
    encoder: !ref <encoder>

audio_normalizer: !new:speechbrain.dataio.preprocess.AudioNormalizer
    sample_rate: !ref <sample_rate>

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        encoder: !ref <encoder>
"""
EXPORT_NAMES = frozenset(
    {
        DESCRIPTION_NAME,
        LEGACY_DESCRIPTION_NAME,
        TRAINABLE_NAME,
        BACKBONE_DIR,
        CONFIG_NAME,
        WEIGHTS_NAME,
        SPEECHBRAIN_HPARAMS_NAME,
        SPEECHBRAIN_POINTER_NAME,
    }
)
_STAGING, _REPLACED = "staging", "replaced"  # .<name>.staging-<pid>: being written; .<name>.replaced-<pid>: the old


class ExportError(OSError):
    """An export could not be written (the previous one, if any, is intact)."""


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train (adapters, head, or all of a fully fine-tuned model), detached on CPU."""
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def save_trainable(model: nn.Module, path: Path) -> None:
    save_tensors(trainable_state(model), path)


def load_trainable(model: nn.Module, path: Path) -> None:
    """Load ``save_trainable`` output strictly: a missing, extra, misshapen or non-finite tensor is an error
    naming it."""
    tensors = upgrade_legacy_tensors(load_tensors(path, "trainable weights"))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    for name in sorted(set(params) | set(tensors)):
        if name not in tensors or name not in params or tensors[name].shape != params[name].shape:
            raise ValueError(f"{path}: tensor '{name}' does not match the model (missing, unexpected or misshapen)")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(tensors[name])


def export_model(model: ExportedModel, method: str, labels: list[str], directory: str | Path) -> Path:
    """Write a self-contained directory of a recogniser (for transcription and evaluation) or of a classifier
    (``labels``: its class names, in the order of the head's outputs).

    A backbone loaded from a local folder (or randomly initialised) is saved into the export; one from the
    Hugging Face hub is recorded by its hub id. The export is written into a staging folder and renamed into
    place, replacing an earlier export there (a folder holding anything else is refused); a failure to write it
    (a full disk) raises ``ExportError`` and leaves the earlier export as it was.

    Args:
        model: a ``CTCRecognizer`` or an utterance classifier, adapted or not.
        method: how it trained: ``fvae_lora``, ``lora``, ``full`` or ``frozen`` (what the export saves: the
            adapters and the head, or every trainable weight).
        labels: the head's outputs in order: the phones with the CTC blank, or the class names.
        directory: the export's folder.

    Returns:
        The export's folder.
    """
    directory = Path(directory)
    task = next((name for name, cls in MODEL_CLASSES.items() if isinstance(model, cls)), None)
    if task is None:
        exportable = ", ".join(cls.__name__ for cls in MODEL_CLASSES.values())
        raise TypeError(f"cannot export a {type(model).__name__}: the exportable models are {exportable}")
    check_replaceable(directory)
    remove_unfinished_exports(directory)
    staging = _beside(directory, _STAGING)
    try:
        staging.mkdir(parents=True)
        _write_export(model, task, method, labels, staging)
        _replace(directory, staging)
    except (OSError, SafetensorError) as err:
        disk_full = is_disk_full(err, directory.parent)  # before the partial export frees its space
        shutil.rmtree(staging, ignore_errors=True)
        reason = "no space left on the device (free some space and run again)" if disk_full else str(err)
        raise ExportError(f"cannot write the export {directory}: {reason}; an earlier export there is intact") from err
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def _write_export(model: ExportedModel, task: str, method: str, labels: list[str], directory: Path) -> None:
    """Every file of an export, into ``directory`` (the staging folder); ``model.json`` last."""
    encoder = model.encoder
    description = {
        "task": task,
        "backbone": encoder.source
        if is_hub_id(encoder.source) and not encoder.random_init_config
        else _save_backbone(encoder, directory),
        "method": method,
        "labels": labels,
        **({"blank_index": 0} if task == "ctc" else {}),
        "sample_rate": SAMPLE_RATE,
        "normalize_wav": encoder.normalize_wav,
        "freeze_feature_encoder": encoder.freeze_feature_encoder,
    }
    if method in ADAPTER_METHODS:
        save_adapter(model, directory)
    else:
        save_trainable(model, directory / TRAINABLE_NAME)
    if task == "ctc":
        write_json(directory / SPEECHBRAIN_POINTER_NAME, SPEECHBRAIN_POINTER)
        (directory / SPEECHBRAIN_HPARAMS_NAME).write_text(
            _SPEECHBRAIN_HPARAMS.format(sample_rate=description["sample_rate"])
        )
    write_json(directory / DESCRIPTION_NAME, description)


def check_replaceable(directory: Path) -> None:
    """``directory`` must be missing, empty or an export (only its files): an export replaces it whole."""
    if directory.exists() and not directory.is_dir():
        raise ExportError(f"cannot export to {directory}: it is a file, not a folder")
    others = sorted(p.name for p in directory.iterdir() if p.name not in EXPORT_NAMES) if directory.is_dir() else []
    if others:
        raise ExportError(
            f"cannot export to {directory}: it holds files that are no part of an export "
            f"({', '.join(others[:5])}); choose a new or empty folder"
        )


def remove_export(directory: Path) -> bool:
    """Delete an export (refused, see ``check_replaceable``, if the folder holds anything else) and what an
    interrupted export left beside it; whether there was one."""
    check_replaceable(directory)
    remove_unfinished_exports(directory)
    if not directory.is_dir():
        return False
    shutil.rmtree(directory)
    return True


def remove_unfinished_exports(directory: Path) -> None:
    """Delete the staging folders and replaced exports that a killed export left beside ``directory``."""
    if directory.parent.is_dir():
        for kind in (_STAGING, _REPLACED):
            for path in directory.parent.glob(f".{directory.name}.{kind}-*"):
                shutil.rmtree(path)


def _beside(directory: Path, kind: str) -> Path:
    return directory.with_name(f".{directory.name}.{kind}-{os.getpid()}")


def _replace(directory: Path, staging: Path) -> None:
    """Rename ``staging`` to ``directory``; an earlier export there is first renamed aside, then deleted."""
    if directory.is_dir():
        replaced = _beside(directory, _REPLACED)
        directory.rename(replaced)
        staging.rename(directory)
        shutil.rmtree(replaced)
    else:
        staging.rename(directory)


def _save_backbone(encoder: SSLEncoder, directory: Path) -> str:
    """Save the backbone's base weights (adapters left out) and config beside the adapters, as a Hugging Face
    directory, so that the export does not depend on where the backbone came from; returns its path relative
    to ``directory``."""
    target = directory / BACKBONE_DIR
    encoder.model.config.save_pretrained(str(target))
    save_tensors(
        {k: v.detach().contiguous().cpu() for k, v in base_state_dict(encoder.model).items()},
        target / "model.safetensors",
    )
    return BACKBONE_DIR


def export_hf_ctc(model: CTCRecognizer, labels: list[str], directory: str | Path, blank_index: int = 0) -> Path:
    """Save a recogniser without adapters as a Hugging Face CTC directory of its family (``Wav2Vec2ForCTC``,
    ``HubertForCTC``, ...: config, weights, CTC tokenizer vocabulary with the blank as pad token), loadable by
    transformers and by the recipe's ``init_head_from_checkpoint``.

    Args:
        model: a recogniser without adapters.
        labels: the head's outputs in order, the blank included.
        directory: the folder to write.
        blank_index: the blank's position in ``labels``.

    Returns:
        The folder written.
    """
    if adapter_layers(model):
        raise ValueError("export_hf_ctc saves a plain encoder + head; use export_model for adapted models")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.encoder.model.config.to_dict()
    config.update(vocab_size=len(labels), pad_token_id=blank_index, bos_token_id=None, eos_token_id=None)
    ctc = AutoModelForCTC.from_config(type(model.encoder.model.config).from_dict(config))
    ctc.base_model.load_state_dict(model.encoder.model.state_dict())
    ctc.lm_head.load_state_dict(model.head.state_dict())
    with quiet_hf_loading():
        ctc.save_pretrained(str(directory))
    respect_umask(directory / "model.safetensors")  # transformers writes it 0o600, the JSON beside it 0o644
    vocab_file = directory / "vocab.json"
    vocab_file.write_text(json.dumps({label: i for i, label in enumerate(labels)}, indent=2) + "\n")
    tokenizer = Wav2Vec2CTCTokenizer(
        str(vocab_file),
        pad_token=labels[blank_index],
        unk_token=None,
        bos_token=None,
        eos_token=None,
        word_delimiter_token=None,
    )
    tokenizer.save_pretrained(str(directory))
    return directory


def description_path(directory: str | Path) -> Path:
    """The description of an export: ``model.json``, or the ``recognizer.json`` of one written before 0.3."""
    legacy = Path(directory) / LEGACY_DESCRIPTION_NAME
    path = Path(directory) / DESCRIPTION_NAME
    return legacy if legacy.is_file() and not path.exists() else path


def read_description(directory: str | Path) -> dict[str, Any]:
    """The ``model.json`` of an exported model, checked field by field (ValueError naming the field). One written
    before 0.3 (``recognizer.json``, the method under ``adapter``) reads the same; one without ``task`` (written
    before classifiers could be exported) gets ``task`` "ctc"."""
    path = description_path(directory)
    description = read_json(path, "model description (written by export_model)")
    if isinstance(description, dict) and LEGACY_METHOD_FIELD in description and "method" not in description:
        description["method"] = description.pop(LEGACY_METHOD_FIELD)
    description = {"task": DEFAULT_TASK, **description}
    if not isinstance(description["task"], str) or description["task"] not in MODEL_CLASSES:
        raise ValueError(f"{path}: field 'task' must be one of {', '.join(MODEL_CLASSES)}, got {description['task']!r}")
    for field, (valid, expected) in _DESCRIPTION_FIELDS.items():
        if field == "blank_index" and description["task"] != "ctc":
            continue
        if field not in description:
            raise ValueError(f"{path}: missing field '{field}' ({expected})")
        if not valid(description[field]):
            raise ValueError(f"{path}: field '{field}' must be {expected}, got {description[field]!r}")
    labels = description["labels"]
    if len(set(labels)) != len(labels):
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        raise ValueError(f"{path}: field 'labels' repeats a label: {repeated}")
    blank = description.get("blank_index", 0)
    if description["task"] == "ctc" and not 0 <= blank < len(labels):
        raise ValueError(f"{path}: field 'blank_index' is {blank}, outside the {len(labels)} labels")
    return description


def _is_int(value: object) -> bool:
    """An integer, but not a bool (JSON ``true`` is no index)."""
    return isinstance(value, int) and not isinstance(value, bool)


_DESCRIPTION_FIELDS = {
    "backbone": (lambda v: isinstance(v, str) and v != "", "a backbone folder in the export or a hub id"),
    "method": (lambda v: v in TRAINING_METHODS, f"one of {', '.join(TRAINING_METHODS)}"),
    "labels": (
        lambda v: isinstance(v, list) and len(v) > 1 and all(isinstance(x, str) and x.split() == [x] for x in v),
        "a list of at least two labels (a CTC model's blank included), each a string without spaces",
    ),
    "blank_index": (_is_int, "an integer"),
    "sample_rate": (lambda v: _is_int(v) and v > 0, "a positive integer"),
    "normalize_wav": (lambda v: isinstance(v, bool), "true or false"),
    "freeze_feature_encoder": (lambda v: isinstance(v, bool), "true or false"),
}


def load_recognizer(directory: str | Path, device: str | torch.device = "cpu") -> tuple[CTCRecognizer, dict]:
    """Rebuild an exported recogniser (in eval mode) and return it with its description; an exported classifier
    is an error naming the file."""
    model, description = load_exported(directory, device)
    if description["task"] != "ctc":
        raise ValueError(
            f"{description_path(directory)}: this export is a '{description['task']}' model "
            "(an utterance classifier), not a CTC recogniser"
        )
    return model, description


def load_exported(directory: str | Path, device: str | torch.device = "cpu") -> tuple[ExportedModel, dict]:
    """Rebuild an exported recogniser or classifier (its description's ``task``), in eval mode, with its
    description.

    Every problem (a bad field, a missing backbone, labels that do not fit the head, non-finite weights) is an
    error naming the file and the field or tensor.

    Args:
        directory: a folder written by ``export_model``.
        device: where to put the model.

    Returns:
        The model and its description (``model.json``: labels, blank index, sample rate, how it trained).
    """
    directory = Path(directory)
    description = read_description(directory)
    method = description["method"]
    weights = directory / (WEIGHTS_NAME if method in ADAPTER_METHODS else TRAINABLE_NAME)
    _check_head_fits(len(description["labels"]), weights, description_path(directory))
    source = _backbone_source(directory, description["backbone"])
    try:
        encoder = SSLEncoder(
            source,
            freeze_feature_encoder=description["freeze_feature_encoder"],
            normalize_wav=description["normalize_wav"],
        )
    except OSError as err:
        raise ValueError(f"{description_path(directory)}: cannot load backbone '{source}': {err}") from err
    check_finite(encoder.model.state_dict(), f"backbone {source}")
    model = MODEL_CLASSES[description["task"]](encoder, len(description["labels"]))
    if method in ADAPTER_METHODS:
        load_adapter(model, directory)
    else:
        configure_training(model, method)
        load_trainable(model, weights)
    return model.to(device).eval(), description


def _backbone_source(directory: Path, backbone: str) -> str:
    """The backbone folder inside the export, or a hub id. An export is self-contained: a local path that
    leads outside it (absolute, ``..``, or a link out) is refused, as it would load whatever lies there. A
    backbone folder that is gone is an error here, not a confusing hub lookup (exports written before backbones
    were copied name an absolute folder)."""
    described = description_path(directory)
    folder = directory / backbone
    path_like = Path(backbone).is_absolute() or ".." in Path(backbone).parts
    if not path_like and not folder.exists() and is_hub_id(backbone) and backbone != BACKBONE_DIR:
        return backbone
    if path_like or (folder.exists() and not folder.resolve().is_relative_to(directory.resolve())):
        raise ValueError(
            f"{described}: field 'backbone' is {backbone!r}, a folder outside the export; an export is "
            f"self-contained, so only a folder inside it (such as '{BACKBONE_DIR}') or a Hugging Face hub id is loaded"
        )
    if folder.is_dir():
        return str(folder)
    raise FileNotFoundError(
        f"{described}: backbone folder {folder} does not exist (copy the whole export folder; "
        "exports written before backbones were copied into them refer to the folder the backbone came from)"
    )


def _check_head_fits(n_labels: int, weights: Path, description_path: Path) -> None:
    """The saved head must have one output per label of ``model.json``."""
    if not weights.is_file():
        raise FileNotFoundError(f"no weights at {weights}")
    try:
        with safe_open(str(weights), "pt") as saved:
            # LoRA exports carry PEFT's tensor names (see fvae_asr.adapters.peft_format)
            names = saved.keys()  # safe_open is no mapping: `in saved` fails
            head = next(
                (name for name in (f"{HEAD_NAME}.weight", f"{PEFT_PREFIX}{HEAD_NAME}.weight") if name in names), None
            )
            rows = saved.get_slice(head).get_shape()[0] if head is not None else None
    except (SafetensorError, OSError) as err:
        raise ValueError(f"cannot read weights {weights}: {err}") from err
    if rows is not None and rows != n_labels:
        raise ValueError(
            f"{description_path}: field 'labels' has {n_labels} labels but tensor '{head}' of {weights} has {rows} rows"
        )
