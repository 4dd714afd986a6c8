"""What the adapter latents of an exported recogniser carry, measured on a manifest.

Every real frame of every utterance gets labels: its phone (the ``phn_segments`` segment covering the frame's
centre sample), its speaker (``spk_id``) and its domain (``domain``, where the manifest has one). Linear probes
then read each label off z1 and z2 (FVAE-LoRA) or ``A x`` (LoRA) of every adapted layer, on held-out speakers (phone,
domain) or held-out utterances of every speaker (speaker). Ablations: the PER with z1 at its prior mean in all
layers and in each layer alone, and each layer's reconstruction error with z2 (or z1) at its prior mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from speechbrain.utils.data_utils import batch_pad_right
from torch import Tensor
from tqdm import tqdm

from fvae_asr.adapters import latent_ablation
from fvae_asr.analysis.probes import UNLABELLED, ProbeSettings, ProbeTask, held_out_groups
from fvae_asr.analysis.recorder import LatentRecorder, LayerRecord, record_latents
from fvae_asr.audio import load_audio
from fvae_asr.speech.chunking import FrameGeometry
from fvae_asr.speech.evaluation import evaluate_manifest, read_manifest
from fvae_asr.speech.recognizer import CTCRecognizer
from fvae_asr.speech.transcriber import Transcriber

# probe -> (manifest field, what is held out). Speakers are held out where the label is not the speaker; the
# speaker probe must hear every voice in training, so it holds out utterances of each speaker instead.
PROBES = {"phone": ("phn_segments", "speakers"), "speaker": ("spk_id", "utterances of each speaker"),
          "domain": ("domain", "speakers")}  # fmt: skip
SPEAKER_FIELD = "spk_id"


def frame_centres(n_frames: int, geometry: FrameGeometry) -> Tensor:
    """The centre sample of each frame (the later of the two middle samples when the field is even)."""
    return torch.arange(n_frames) * geometry.hop + geometry.receptive_field // 2


def frame_phones(segments: Sequence[Sequence], centres: Tensor) -> list[str | None]:
    """The label of the ``[start, end, label]`` segment holding each centre sample (start <= c < end), or None."""
    ordered = sorted(segments, key=lambda segment: segment[0])
    starts = torch.tensor([int(segment[0]) for segment in ordered], dtype=torch.long)
    labels: list[str | None] = []
    for centre in centres.tolist():
        index = int(torch.searchsorted(starts, centre, right=True)) - 1
        inside = index >= 0 and int(ordered[index][0]) <= centre < int(ordered[index][1])
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
    "of fvae_asr.speech.timit.prepare_timit (manifests prepared before it kept phone segments lack them), or leave "
    "phone out of --probes",
    "domain": ": leave domain out of --probes for a manifest without domains",
}


def _check_segments(entry: dict, where: str) -> None:
    """``phn_segments``: a list of [start, end, label] with 0 <= start <= end, labels spelling out ``phn``."""
    segments = entry["phn_segments"]
    if not isinstance(segments, list) or not all(
        isinstance(s, list) and len(s) == 3 and all(isinstance(v, int) and not isinstance(v, bool) for v in s[:2])
        and isinstance(s[2], str) and 0 <= s[0] <= s[1] for s in segments
    ):  # fmt: skip
        raise ValueError(f"{where}: 'phn_segments' must be a list of [start, end, label] with 0 <= start <= end")
    if [s[2] for s in segments] != entry["phn"].split():
        raise ValueError(f"{where}: the labels of 'phn_segments' are not the phones of 'phn'")


def _batches(manifest: dict[str, dict], ids: list[str], batch_size: int, sample_rate: int) -> Iterator[list[Tensor]]:
    """The utterances' waveforms, ``batch_size`` at a time, in the order of ``ids``, with a progress bar."""
    with tqdm(total=len(ids), desc="utterances", unit="utt", disable=None) as progress:
        for start in range(0, len(ids), batch_size):
            group = ids[start : start + batch_size]
            yield [load_audio(manifest[utt_id]["wav"], sample_rate) for utt_id in group]
            progress.update(len(group))


def recognizer_run(model: CTCRecognizer, device: torch.device) -> Callable[[list[Tensor]], Tensor]:
    """``run`` for ``record_latents``: a padded forward pass of the recogniser, returning the real-frame mask."""

    def run(wavs: list[Tensor]) -> Tensor:
        padded, lengths = batch_pad_right([wav.to(torch.float32) for wav in wavs])
        log_probs, frame_counts = model(padded.to(device), lengths.to(device))
        return torch.arange(log_probs.shape[1], device=frame_counts.device)[None, :] < frame_counts[:, None]

    return run


def _probe_task(probe: str, per_frame: list[list[str | None]], speakers: list[str], ids: list[str],
                settings: ProbeSettings) -> ProbeTask:  # fmt: skip
    """A probe's frame labels (one list per utterance) as class indices, and its held-out frames."""
    classes = sorted({label for labels in per_frame for label in labels if label is not None})
    index = {label: i for i, label in enumerate(classes)}
    if probe == "speaker":
        held = held_out_groups(ids, settings.held_out_fraction, settings.seed, strata=speakers)
        held_items = [utt_id in held for utt_id in ids]
    else:
        held = held_out_groups(speakers, settings.held_out_fraction, settings.seed)
        held_items = [speaker in held for speaker in speakers]
    labels = torch.tensor([UNLABELLED if label is None else index[label] for labels in per_frame for label in labels])
    held_out = torch.tensor([held for held, labels in zip(held_items, per_frame) for _ in labels], dtype=torch.bool)
    return ProbeTask(probe, classes, labels, held_out, PROBES[probe][1])


def probe_tasks(manifest: dict[str, dict], ids: list[str], frames_per_item: list[int], probes: Sequence[str],
                geometry: FrameGeometry, settings: ProbeSettings) -> list[ProbeTask]:  # fmt: skip
    """The probe tasks over the recorded frames (``frames_per_item`` real frames of each utterance of ``ids``)."""
    speakers = [manifest[utt_id][SPEAKER_FIELD] for utt_id in ids]
    tasks = []
    for probe in probes:
        if probe == "phone":
            per_frame = [frame_phones(manifest[utt_id]["phn_segments"], frame_centres(n, geometry))
                         for utt_id, n in zip(ids, frames_per_item)]  # fmt: skip
        else:
            per_frame = [[manifest[utt_id][PROBES[probe][0]]] * n for utt_id, n in zip(ids, frames_per_item)]
        tasks.append(_probe_task(probe, per_frame, speakers, ids, settings))
    return tasks


def per_ablations(transcriber: Transcriber, manifest_path: Path, layers: list[str]) -> dict:
    """PER as trained, with z1 at its prior mean (0) in every FVAE layer, and in each layer alone."""
    runs = {"trained": [], "z1_prior_all_layers": layers, **{name: [name] for name in layers}}  # -> ablated layers
    per = {}
    for name, ablated in tqdm(runs.items(), desc="PER ablations", unit="run", disable=None):
        with latent_ablation(transcriber.model, z1=True, layers=ablated):
            per[name] = evaluate_manifest(transcriber, manifest_path)["per"]
    return {"trained": per["trained"], "z1_prior_all_layers": per["z1_prior_all_layers"],
            "z1_prior_per_layer": {name: per[name] for name in layers}}  # fmt: skip


def _layer_entry(name: str, record: LayerRecord, tasks: list[ProbeTask], summaries: dict[str, dict],
                 settings: ProbeSettings) -> dict:  # fmt: skip
    """One layer's part of the report: probe accuracies beside chance, active units, reconstruction errors."""
    probes = {}
    for task in tasks:
        probes[task.name] = {latent: task.accuracy(record.stacked(latent), settings) for latent in record.features}
        probes[task.name]["chance"] = summaries[task.name]["chance"]
    entry = {"layer": name, "probe": probes,
             "active_units": {latent: record.active_units(latent) for latent in record.features}}  # fmt: skip
    if record.squared_error:
        entry["reconstruction"] = record.reconstruction()
    return entry


@dataclass
class LatentAnalysis:
    """The report (``latents.json``) and what the plots need."""

    report: dict
    recorder: LatentRecorder
    tasks: list[ProbeTask]


def analyse_latents(transcriber: Transcriber, manifest_path: Path, probes: Sequence[str], settings: ProbeSettings,
                    ablations: bool = True) -> LatentAnalysis:  # fmt: skip
    """Record the latents of the transcriber's recogniser on the manifest, probe them, and run the ablations."""
    manifest = read_manifest(manifest_path)
    check_manifest(manifest, manifest_path, probes)
    model = transcriber.model
    ids = sorted(manifest, key=lambda utt_id: (manifest[utt_id].get("duration", math.inf), utt_id))
    batches = _batches(manifest, ids, transcriber.batch_size, transcriber.sample_rate)
    recorder = record_latents(model, batches, recognizer_run(model, transcriber.device))
    geometry = FrameGeometry.from_frame_lengths(model.encoder.frame_lengths)
    tasks = probe_tasks(manifest, ids, recorder.frames_per_item, probes, geometry, settings)
    summaries = {task.name: task.summary() for task in tasks}
    layers = [_layer_entry(name, record, tasks, summaries, settings)
              for name, record in tqdm(recorder.records.items(), desc="probes", unit="layer", disable=None)]
    report = {
        "manifest": str(manifest_path), "adapter": recorder.kind,
        "latents": list(next(iter(recorder.records.values())).features), "utterances": len(ids),
        "frames": sum(recorder.frames_per_item),
        "frame_geometry": {"stride": geometry.hop, "receptive_field": geometry.receptive_field},
        "probe_settings": {"model": "multinomial logistic regression, full-batch LBFGS, standardised features",
                           "l2": settings.l2, "max_iter": settings.max_iter,
                           "held_out_fraction": settings.held_out_fraction, "seed": settings.seed},
        "probes": summaries,
        "layers": layers,
    }  # fmt: skip
    if ablations and recorder.kind == "fvae_lora":
        per = per_ablations(transcriber, manifest_path, list(recorder.records))
        report["ablations"] = {"per": {k: per[k] for k in ("trained", "z1_prior_all_layers")}}
        for entry in layers:
            entry["per_z1_prior"] = per["z1_prior_per_layer"][entry["layer"]]
    return LatentAnalysis(report, recorder, tasks)
