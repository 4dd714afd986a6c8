"""What the adapter latents of an exported recogniser or utterance classifier carry, measured on a manifest.

Recogniser: every real frame of every utterance gets labels: its phone (the ``phn_segments`` segment covering the
frame's centre sample), its speaker (``spk_id``) and its domain (``domain``, where the manifest has one). Linear
probes then read each label off z1 and z2 (FVAE-LoRA) or ``A x`` (LoRA) of every adapted layer, on held-out
speakers (phone, domain) or held-out utterances of every speaker (speaker). Ablations: the PER with z1 at its prior
mean in all layers and in each layer alone, and each layer's reconstruction error with z2 (or z1) at its prior mean.

Classifier: every real frame carries its utterance's class (``label``) and spurious attribute (``nuisance``);
probes read them off the frames and off each utterance's mean latent (``label_pooled``, ``nuisance_pooled``), on
held-out utterances. Ablations: the classifier's average and worst-group accuracy (groups: label x nuisance) with
z1 at its prior mean, as for the PER.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from speechbrain.utils.data_utils import batch_pad_right
from torch import Tensor
from tqdm import tqdm

from fvae_asr.adapters import latent_ablation
from fvae_asr.analysis.probes import UNLABELED, ProbeSettings, ProbeTask, held_out_groups
from fvae_asr.analysis.recorder import LatentRecorder, LayerRecord, record_latents
from fvae_asr.audio import load_audio
from fvae_asr.speech.data.annotations import SCORING_FIELDS, read_annotation
from fvae_asr.speech.inference.chunking import FrameGeometry
from fvae_asr.speech.inference.evaluation import evaluate_manifest
from fvae_asr.speech.inference.transcriber import Transcriber
from fvae_asr.speech.models.classifier import PooledClassifier
from fvae_asr.speech.models.recognizer import CTCRecognizer

# probe -> (manifest field, what is held out). Speakers are held out where the label is not the speaker; the
# speaker probe must hear every voice in training, so it holds out utterances of each speaker instead.
PROBES = {
    "phone": ("phn_segments", "speakers"),
    "speaker": ("spk_id", "utterances of each speaker"),
    "domain": ("domain", "speakers"),
}
SPEAKER_FIELD = "spk_id"
# A classifier's probes: the manifest field of each utterance-level label, read per frame and off the utterance's
# mean latent (POOLED suffix); utterances are held out, balanced over the label combinations.
CLASSIFIER_PROBES = ("label", "nuisance")
POOLED = "_pooled"
CLASS_FIELD = "label"  # the class the ablations score the classifier's predictions against


def frame_centers(n_frames: int, geometry: FrameGeometry) -> Tensor:
    """The centre sample of each frame (the later of the two middle samples when the field is even)."""
    return torch.arange(n_frames) * geometry.hop + geometry.receptive_field // 2


def frame_phones(segments: Sequence[Sequence], centers: Tensor) -> list[str | None]:
    """The label of the ``[start, end, label]`` segment holding each centre sample (start <= c < end), or None."""
    ordered = sorted(segments, key=lambda segment: segment[0])
    starts = torch.tensor([int(segment[0]) for segment in ordered], dtype=torch.long)
    labels: list[str | None] = []
    for center in centers.tolist():
        index = int(torch.searchsorted(starts, center, right=True)) - 1
        inside = index >= 0 and int(ordered[index][0]) <= center < int(ordered[index][1])
        labels.append(ordered[index][2] if inside else None)
    return labels


def check_manifest(manifest: dict[str, dict], path: Path, probes: Sequence[str]) -> None:
    """Every entry must have what the probes need (a speaker always: probes hold out by speaker)."""
    for probe in probes:
        if probe not in PROBES:
            raise ValueError(f"unknown probe {probe!r}; the probes are: {', '.join(PROBES)}")
    fields = {SPEAKER_FIELD, *(PROBES[probe][0] for probe in probes)}
    for utt_id, entry in manifest.items():
        for field in sorted(fields):
            if field not in entry:
                raise ValueError(f"manifest {path}: entry {utt_id!r} has no '{field}'{_MISSING_HINT.get(field, '')}")
        if "phone" in probes:
            _check_segments(entry, f"manifest {path}: entry {utt_id!r}")
        for field in fields - {"phn_segments"}:
            if not isinstance(entry[field], str) or not entry[field]:
                raise ValueError(f"manifest {path}: entry {utt_id!r}: '{field}' must be a non-empty string")


_MISSING_HINT = {
    "phn_segments": " (phone boundaries), which the phone probe needs: prepare the manifest again with this version "
    "of fvae_asr.speech.data.timit.prepare_timit (manifests prepared before it kept phone segments lack them), or "
    "leave phone out of --probes",
    "domain": ": leave domain out of --probes for a manifest without domains",
}


def _check_segments(entry: dict, where: str) -> None:
    """``phn_segments``: a list of [start, end, label] with 0 <= start <= end, labels spelling out ``phn``."""
    segments = entry["phn_segments"]
    if not isinstance(segments, list) or not all(
        isinstance(s, list)
        and len(s) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) for v in s[:2])
        and isinstance(s[2], str)
        and 0 <= s[0] <= s[1]
        for s in segments
    ):
        raise ValueError(f"{where}: 'phn_segments' must be a list of [start, end, label] with 0 <= start <= end")
    if [s[2] for s in segments] != entry["phn"].split():
        raise ValueError(f"{where}: the labels of 'phn_segments' are not the phones of 'phn'")


def progress_bar(iterable: Iterable | None = None, show: bool = True, **kwargs: Any) -> tqdm:
    """A progress bar on stderr, also when stderr is no terminal (a log file, a job's output: a long analysis must
    not run silently there), unless ``show`` is False."""
    return tqdm(iterable, disable=not show, file=sys.stderr, **kwargs)


def _batches(
    manifest: dict[str, dict], ids: list[str], batch_size: int, sample_rate: int, progress: bool = True
) -> Iterator[list[Tensor]]:
    """The utterances' waveforms, ``batch_size`` at a time, in the order of ``ids``, with a progress bar."""
    with progress_bar(total=len(ids), show=progress, desc="utterances", unit="utt") as bar:
        for start in range(0, len(ids), batch_size):
            group = ids[start : start + batch_size]
            yield [load_audio(manifest[utt_id]["wav"], sample_rate) for utt_id in group]
            bar.update(len(group))


def recognizer_run(model: CTCRecognizer, device: torch.device) -> Callable[[list[Tensor]], Tensor]:
    """``run`` for ``record_latents``: a padded forward pass of the recogniser, returning the real-frame mask."""

    def run(wavs: list[Tensor]) -> Tensor:
        padded, lengths = batch_pad_right([wav.to(torch.float32) for wav in wavs])
        log_probs, frame_counts = model(padded.to(device), lengths.to(device))
        return torch.arange(log_probs.shape[1], device=frame_counts.device)[None, :] < frame_counts[:, None]

    return run


def _probe_task(
    probe: str, per_frame: list[list[str | None]], speakers: list[str], ids: list[str], settings: ProbeSettings
) -> ProbeTask:
    """A probe's frame labels (one list per utterance) as class indices, and its held-out frames."""
    classes = sorted({label for labels in per_frame for label in labels if label is not None})
    index = {label: i for i, label in enumerate(classes)}
    if probe == "speaker":
        held = held_out_groups(ids, settings.held_out_fraction, settings.seed, strata=speakers)
        held_items = [utt_id in held for utt_id in ids]
    else:
        held = held_out_groups(speakers, settings.held_out_fraction, settings.seed)
        held_items = [speaker in held for speaker in speakers]
    labels = torch.tensor([UNLABELED if label is None else index[label] for labels in per_frame for label in labels])
    held_out = torch.tensor([held for held, labels in zip(held_items, per_frame) for _ in labels], dtype=torch.bool)
    return ProbeTask(probe, classes, labels, held_out, PROBES[probe][1])


def probe_tasks(
    manifest: dict[str, dict],
    ids: list[str],
    frames_per_item: list[int],
    probes: Sequence[str],
    geometry: FrameGeometry,
    settings: ProbeSettings,
) -> list[ProbeTask]:
    """The probe tasks over the recorded frames (``frames_per_item`` real frames of each utterance of ``ids``)."""
    speakers = [manifest[utt_id][SPEAKER_FIELD] for utt_id in ids]
    tasks = []
    for probe in probes:
        if probe == "phone":
            per_frame = [
                frame_phones(manifest[utt_id]["phn_segments"], frame_centers(n, geometry))
                for utt_id, n in zip(ids, frames_per_item)
            ]
        else:
            per_frame = [[manifest[utt_id][PROBES[probe][0]]] * n for utt_id, n in zip(ids, frames_per_item)]
        tasks.append(_probe_task(probe, per_frame, speakers, ids, settings))
    return tasks


def z1_ablations(
    model: torch.nn.Module, layers: list[str], measure: Callable[[], dict[str, float]], progress: bool = True
) -> dict:
    """``measure()`` (metric -> value) as trained, with z1 at its prior mean (0) in every FVAE layer, and in each
    layer alone: metric -> {"trained", "z1_prior_all_layers", "z1_prior_per_layer": {layer: value}}."""
    runs = {"trained": [], "z1_prior_all_layers": layers, **{name: [name] for name in layers}}  # -> ablated layers
    values = {}
    for name, ablated in progress_bar(runs.items(), progress, desc="z1 ablations", unit="run"):
        with latent_ablation(model, z1=True, layers=ablated):
            values[name] = measure()
    return {
        metric: {
            "trained": values["trained"][metric],
            "z1_prior_all_layers": values["z1_prior_all_layers"][metric],
            "z1_prior_per_layer": {name: values[name][metric] for name in layers},
        }
        for metric in values["trained"]
    }


def _features(record: LayerRecord, latent: str, task: ProbeTask) -> Tensor:
    """What a probe reads: every real frame, or each item's mean over its frames for a pooled task."""
    return record.pooled(latent) if task.name.endswith(POOLED) else record.stacked(latent)


def _layer_entry(
    name: str, record: LayerRecord, tasks: list[ProbeTask], summaries: dict[str, dict], settings: ProbeSettings
) -> dict:
    """One layer's part of the report: probe accuracies beside chance, active units, reconstruction errors."""
    probes = {}
    for task in tasks:
        probes[task.name] = {
            latent: task.accuracy(_features(record, latent, task), settings) for latent in record.features
        }
        probes[task.name]["chance"] = summaries[task.name]["chance"]
    entry = {
        "layer": name,
        "probe": probes,
        "active_units": {latent: record.active_units(latent) for latent in record.features},
    }
    if record.squared_error:
        entry["reconstruction"] = record.reconstruction()
    return entry


@dataclass
class LatentAnalysis:
    """The report (``latents.json``) and what the plots need."""

    report: dict
    recorder: LatentRecorder
    tasks: list[ProbeTask]

    def projected_features(self, task: ProbeTask, layers: Sequence[str]) -> dict[str, dict[str, Tensor]]:
        """layer -> latent -> the features ``task``'s probe reads, for the projection plots."""
        records = self.recorder.records
        return {
            name: {latent: _features(records[name], latent, task) for latent in self.report["latents"]}
            for name in layers
        }


def _analysis(
    manifest_path: Path,
    ids: list[str],
    recorder: LatentRecorder,
    tasks: list[ProbeTask],
    settings: ProbeSettings,
    ablations: dict | None,
    progress: bool = True,
    **facts: object,
) -> LatentAnalysis:
    """Probe every recorded layer and put the report together (``facts``: task-specific report fields)."""
    summaries = {task.name: task.summary() for task in tasks}
    layers = [
        _layer_entry(name, record, tasks, summaries, settings)
        for name, record in progress_bar(recorder.records.items(), progress, desc="probes", unit="layer")
    ]
    report = {
        "manifest": str(manifest_path),
        "adapter": recorder.kind,
        "latents": list(next(iter(recorder.records.values())).features),
        "utterances": len(ids),
        "frames": sum(recorder.frames_per_item),
        **facts,
        "probe_settings": {
            "model": "multinomial logistic regression, full-batch LBFGS, standardised features",
            "l2": settings.l2,
            "max_iter": settings.max_iter,
            "held_out_fraction": settings.held_out_fraction,
            "seed": settings.seed,
        },
        "probes": summaries,
        "layers": layers,
    }
    if ablations:
        report["ablations"] = {
            metric: {k: values[k] for k in ("trained", "z1_prior_all_layers")} for metric, values in ablations.items()
        }
        for entry in layers:
            for metric, values in ablations.items():
                entry[f"{metric}_z1_prior"] = values["z1_prior_per_layer"][entry["layer"]]
    return LatentAnalysis(report, recorder, tasks)


def _by_duration(manifest: dict[str, dict]) -> list[str]:
    """Utterance ids, shortest first (less padding per batch)."""
    return sorted(manifest, key=lambda utt_id: (manifest[utt_id].get("duration", math.inf), utt_id))


def analyze_latents(
    transcriber: Transcriber,
    manifest_path: Path,
    probes: Sequence[str],
    settings: ProbeSettings,
    ablations: bool = True,
    progress: bool = True,
) -> LatentAnalysis:
    """Record the latents of the transcriber's recogniser on the manifest, probe them, and run the ablations
    (``progress``: bars on stderr)."""
    manifest = read_annotation(manifest_path, required=SCORING_FIELDS).entries
    check_manifest(manifest, manifest_path, probes)
    model = transcriber.model
    ids = _by_duration(manifest)
    batches = _batches(manifest, ids, transcriber.batch_size, transcriber.sample_rate, progress)
    recorder = record_latents(model, batches, recognizer_run(model, transcriber.device))
    geometry = FrameGeometry.from_frame_lengths(model.encoder.frame_lengths)
    tasks = probe_tasks(manifest, ids, recorder.frames_per_item, probes, geometry, settings)
    per = None
    if ablations and recorder.kind == "fvae_lora":
        per = z1_ablations(
            model,
            list(recorder.records),
            lambda: {"per": evaluate_manifest(transcriber, manifest_path)["per"]},
            progress,
        )
    geometry_facts = {"stride": geometry.hop, "receptive_field": geometry.receptive_field}
    return _analysis(manifest_path, ids, recorder, tasks, settings, per, progress, frame_geometry=geometry_facts)


# ---- classifiers --------------------------------------------------------------------------------------------


def check_classifier_manifest(
    manifest: dict[str, dict], path: Path, probes: Sequence[str], classes: Sequence[str], ablations: bool
) -> None:
    """Every entry must have each probed label (and, for the ablations, a ``label`` among the classifier's
    classes) as a non-empty string; an unknown probe is an error listing the classifier's probes."""
    unknown = [probe for probe in probes if probe not in CLASSIFIER_PROBES]
    if unknown:
        raise ValueError(
            f"probe(s) {', '.join(unknown)} are for recognisers; a classifier's probes are: "
            f"{', '.join(CLASSIFIER_PROBES)}"
        )
    fields = sorted({*probes, *([CLASS_FIELD] if ablations else [])})
    for utt_id, entry in manifest.items():
        for field in fields:
            if not isinstance(entry.get(field), str) or not entry[field]:
                raise ValueError(
                    f"manifest {path}: entry {utt_id!r} has no '{field}' string (the utterance's "
                    f"{'class' if field == CLASS_FIELD else 'spurious attribute'}); a classifier's "
                    "manifest needs it for the probes or the accuracy ablations"
                )
        if ablations and entry[CLASS_FIELD] not in classes:
            raise ValueError(
                f"manifest {path}: entry {utt_id!r}: label {entry[CLASS_FIELD]!r} is not one of the "
                f"classifier's classes: {', '.join(classes)}"
            )


def classifier_run(model: PooledClassifier, device: torch.device) -> Callable[[list[Tensor]], Tensor]:
    """``run`` for ``record_latents``: the classifier's encoder (where its adapters are) on a padded batch,
    returning its real-frame mask (the frames the classifier pools)."""

    def run(wavs: list[Tensor]) -> Tensor:
        padded, lengths = batch_pad_right([wav.to(torch.float32) for wav in wavs])
        return model.encoder(padded.to(device), lengths.to(device))[1]

    return run


def classifier_probe_tasks(
    manifest: dict[str, dict],
    ids: list[str],
    frames_per_item: list[int],
    probes: Sequence[str],
    settings: ProbeSettings,
) -> list[ProbeTask]:
    """Per probe, a frame task (the utterance's label on each of its real frames) and a pooled task (one label per
    utterance), both holding out the same utterances, chosen within each combination of the probed labels (so the
    held-out set is as balanced as the manifest), or among all utterances where a combination has only one."""
    combination = ["/".join(manifest[utt_id][probe] for probe in probes) for utt_id in ids]
    strata = combination if min(Counter(combination).values()) > 1 else None
    held = held_out_groups(ids, settings.held_out_fraction, settings.seed, strata=strata)
    held_items = torch.tensor([utt_id in held for utt_id in ids], dtype=torch.bool)
    frames = torch.tensor(frames_per_item)
    tasks = []
    for probe in probes:
        classes = sorted({manifest[utt_id][probe] for utt_id in ids})
        per_item = torch.tensor([classes.index(manifest[utt_id][probe]) for utt_id in ids])
        tasks.append(
            ProbeTask(
                probe, classes, per_item.repeat_interleave(frames), held_items.repeat_interleave(frames), "utterances"
            )
        )
        tasks.append(ProbeTask(probe + POOLED, classes, per_item, held_items, "utterances (one mean per utterance)"))
    return tasks


@torch.no_grad()
def classifier_accuracy(
    model: PooledClassifier,
    manifest: dict[str, dict],
    ids: list[str],
    classes: Sequence[str],
    batches: Callable[[], Iterator[list[Tensor]]],
    device: torch.device,
) -> dict[str, float]:
    """Accuracy (%) on the manifest: the mean of the accuracies of its groups (label x nuisance, or label alone
    without nuisances) and the worst group's."""
    predictions = []
    for wavs in batches():
        padded, lengths = batch_pad_right([wav.to(torch.float32) for wav in wavs])
        predictions += model(padded.to(device), lengths.to(device)).argmax(-1).tolist()
    by_group: dict[str, list[bool]] = {}
    for utt_id, predicted in zip(ids, predictions):
        entry = manifest[utt_id]
        group = "/".join(entry[field] for field in (CLASS_FIELD, "nuisance") if field in entry)
        by_group.setdefault(group, []).append(classes[predicted] == entry[CLASS_FIELD])
    accuracies = [100.0 * sum(hits) / len(hits) for hits in by_group.values()]
    return {"accuracy": sum(accuracies) / len(accuracies), "worst_group_accuracy": min(accuracies)}


def analyze_classifier_latents(
    model: PooledClassifier,
    description: dict,
    manifest_path: Path,
    probes: Sequence[str],
    settings: ProbeSettings,
    batch_size: int = 8,
    device: torch.device | str = "cpu",
    ablations: bool = True,
    progress: bool = True,
) -> LatentAnalysis:
    """Record the latents of an exported classifier (``load_exported``'s model and description) on the manifest,
    probe them per frame and per utterance, and score the classifier with z1 ablated."""
    classes = description["labels"]
    manifest = read_annotation(manifest_path, required=("wav",)).entries
    check_classifier_manifest(manifest, manifest_path, probes, classes, ablations)
    device = torch.device(device)
    ids = _by_duration(manifest)

    def batches() -> Iterator[list[Tensor]]:
        return _batches(manifest, ids, batch_size, description["sample_rate"], progress)

    recorder = record_latents(model, batches(), classifier_run(model, device))
    tasks = classifier_probe_tasks(manifest, ids, recorder.frames_per_item, probes, settings)
    accuracy = None
    if ablations and recorder.kind == "fvae_lora":
        accuracy = z1_ablations(
            model,
            list(recorder.records),
            lambda: classifier_accuracy(model, manifest, ids, classes, batches, device),
            progress,
        )
    return _analysis(manifest_path, ids, recorder, tasks, settings, accuracy, progress, classes=list(classes))
