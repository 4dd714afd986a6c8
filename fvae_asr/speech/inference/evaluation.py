"""Evaluate an exported recogniser on a manifest (``prepare_timit`` output, or an annotation CSV with ``ID, duration,
wav, phn``): PER and its edit counts.

References must use the model's phone inventory: a label it cannot output (61-phone TIMIT labels for a 39-phone
model, a typo) or an empty reference would inflate or skew the PER, so they are errors unless explicitly skipped.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from fvae_asr.speech.data.annotations import SCORING_FIELDS, read_annotation
from fvae_asr.speech.inference.transcriber import Transcriber
from fvae_asr.speech.metrics import alignments, error_report


def invalid_references(manifest: dict[str, dict], phones: Collection[str]) -> dict[str, str]:
    """Why each utterance whose reference cannot be scored with this phone inventory is unusable, by id."""
    problems = {}
    for utt_id, entry in manifest.items():
        reference = entry["phn"].split()
        unknown = sorted(set(reference) - set(phones))
        if not reference:
            problems[utt_id] = "empty reference"
        elif unknown:
            problems[utt_id] = f"phones outside the model's inventory: {' '.join(unknown)}"
    return problems


def evaluate_manifest(
    transcriber: Transcriber,
    manifest_path: str | Path,
    skip_invalid: bool = False,
    data_root: str | None = None,
    timestamps: bool = False,
) -> dict:
    """Transcribe every utterance of a manifest and score it against its ``phn`` reference.

    Returns ``error_report``'s fields (``per``, ``substitutions``, ``deletions``, ``insertions``,
    ``reference_phones``, ``utterances``) plus ``manifest``, ``skipped`` (id -> reason) and ``transcripts``
    (id -> wav, ref, hyp, duration of the file in seconds and, with ``timestamps``, ``segments``: the hypothesis'
    ``PhoneSegment``s, ``[phone, start, end]`` in JSON). A reference that is empty or has phones the model cannot
    output is an error naming the utterance, unless ``skip_invalid`` leaves such utterances out (listed in
    ``skipped``). A file that cannot be transcribed is an error naming the manifest and the file.
    """
    manifest = read_annotation(manifest_path, data_root, SCORING_FIELDS).entries
    skipped = invalid_references(manifest, transcriber.phones)
    if skipped and not skip_invalid:
        listed = "; ".join(f"{utt_id}: {reason}" for utt_id, reason in list(skipped.items())[:5])
        raise ValueError(
            f"manifest {manifest_path}: {len(skipped)} utterance(s) cannot be scored ({listed}"
            f"{'; ...' if len(skipped) > 5 else ''}); the model's phones are {' '.join(sorted(transcriber.phones))}"
            " (skip_invalid / --skip-invalid leaves such utterances out)"
        )
    ids = [utt_id for utt_id in manifest if utt_id not in skipped]
    if not ids:
        raise ValueError(f"manifest {manifest_path}: no utterance left to score ({len(skipped)} skipped as invalid)")
    results = transcriber.transcribe_files((manifest[utt_id]["wav"] for utt_id in ids), timestamps)
    failures = [f"{result.path}: {result.error}" for result in results if result.error is not None]
    if failures:
        raise ValueError(f"manifest {manifest_path}: {len(failures)} file(s) not transcribed: " + "; ".join(failures))
    transcripts = {
        utt_id: {
            "wav": result.path,
            "ref": manifest[utt_id]["phn"],
            "hyp": " ".join(result.phones),
            "duration": result.duration,
            **({"segments": result.segments} if timestamps else {}),
        }
        for utt_id, result in zip(ids, results)
    }
    try:
        report = error_report(ids, *_references_and_hypotheses(transcripts))
    except ValueError as err:
        raise ValueError(f"manifest {manifest_path}: {err}") from err
    return {"manifest": str(manifest_path), **report, "skipped": skipped, "transcripts": transcripts}


def report_alignments(report: dict) -> str:
    """Per-utterance REF/HYP alignments of an ``evaluate_manifest`` report, for a human to read."""
    return alignments(list(report["transcripts"]), *_references_and_hypotheses(report["transcripts"]))


def _references_and_hypotheses(transcripts: dict[str, dict]) -> tuple[list[str], list[str]]:
    """Reference and hypothesis phone strings, in utterance order."""
    return [t["ref"] for t in transcripts.values()], [t["hyp"] for t in transcripts.values()]
