"""Forced-alignment accuracy against reference phone boundaries: for every utterance of a manifest with ``phn_segments``
(TIMIT preparation writes them, e.g. for the synthetic corpus), align its reference phones with an exported recogniser
(``fvae_asr.speech.inference.forced_alignment``) and compare each boundary between two phones (the start of every phone
but the first) with the reference's. Prints and writes (``--json``) the share of boundaries within ``--tolerance``
seconds and the median and mean absolute errors. ``--long-seconds`` also aligns the utterances joined into one long
file, which is aligned window by window (bounded memory), to show what windowing costs.

    python -m benchmarks.alignment --checkpoint demo_out/fvae_lora/model \\
        --manifest demo_out/fvae_lora/save/test.json --json docs/bench/alignment_accuracy_demo.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import soundfile as sf
import torch

from fvae_asr.audio import SAMPLE_RATE, load_audio
from fvae_asr.speech.data.annotations import SCORING_FIELDS, read_annotation
from fvae_asr.speech.inference.forced_alignment import align_file
from fvae_asr.speech.inference.transcriber import Transcriber


def boundary_errors(transcriber: Transcriber, manifest: dict[str, dict]) -> tuple[list[float], list[str]]:
    """Absolute errors (s) of every aligned boundary, and the utterances that could not be aligned."""
    errors, failed = [], []
    for utt_id, entry in manifest.items():
        reference = entry["phn_segments"]
        result = align_file(transcriber, entry["wav"], [label for _, _, label in reference])
        if result.error is not None:
            failed.append(f"{utt_id}: {result.error}")
            continue
        errors += [
            abs(ours.start - start / SAMPLE_RATE)
            for ours, (start, _, _) in zip(result.segments[1:], reference[1:], strict=True)
        ]
    return errors, failed


def long_manifest(manifest: dict[str, dict], seconds: float, folder: Path) -> dict[str, dict]:
    """One long file of at least ``seconds``: the manifest's utterances one after another (again from the first
    when they run out), with their reference boundaries moved to where each utterance starts; written to
    ``folder`` (32-bit float WAV at the model rate)."""
    pieces, segments, offset, order = [], [], 0, itertools.cycle(manifest.values())
    while offset < seconds * SAMPLE_RATE:
        entry = next(order)
        audio = load_audio(entry["wav"])
        pieces.append(audio)
        segments += [[offset + start, offset + end, label] for start, end, label in entry["phn_segments"]]
        offset += len(audio)
    path = folder / f"long_{round(seconds)}s.wav"
    sf.write(path, torch.cat(pieces).numpy(), SAMPLE_RATE, subtype="FLOAT")
    return {path.stem: {"wav": str(path), "phn_segments": segments}}


def summary(errors: Sequence[float], tolerance: float) -> dict:
    """Share within ``tolerance`` and the median and mean absolute boundary errors, in seconds."""
    return {
        "boundaries": len(errors),
        "tolerance_s": tolerance,
        "within_tolerance": sum(e <= tolerance for e in errors) / len(errors),
        "median_error_s": statistics.median(errors),
        "mean_error_s": statistics.fmean(errors),
    }


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.alignment", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="an exported recogniser")
    parser.add_argument("--manifest", type=Path, required=True, help="a manifest with phn_segments (TIMIT preparation)")
    parser.add_argument("--tolerance", type=float, default=0.02, help="seconds (default %(default)s)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--long-seconds",
        type=float,
        help="also align a long file of at least this many seconds made of the manifest's utterances one after "
        "another (aligned window by window, as long files are), and report its figures under 'long'",
    )
    args = parser.parse_args(argv)
    manifest = read_annotation(args.manifest, required=SCORING_FIELDS).entries
    if not all("phn_segments" in entry for entry in manifest.values()):
        parser.error(f"{args.manifest}: every entry needs phn_segments (TIMIT preparation writes them)")
    transcriber = Transcriber(args.checkpoint)
    errors, failed = boundary_errors(transcriber, manifest)
    if not errors:
        parser.error(f"no utterance could be aligned: {'; '.join(failed[:3])}")
    figures = {
        **summary(errors, args.tolerance),
        "utterances": len(manifest) - len(failed),
        "failed": failed,
        "command": " ".join(["python -m benchmarks.alignment", *(argv or sys.argv[1:])]),
    }
    if args.long_seconds:
        with tempfile.TemporaryDirectory() as folder:
            long = long_manifest(manifest, args.long_seconds, Path(folder))
            long_errors, long_failed = boundary_errors(transcriber, long)
        figures["long"] = {
            **(summary(long_errors, args.tolerance) if long_errors else {}),
            "seconds": args.long_seconds,
            "failed": long_failed,
        }
    print(
        f"{figures['boundaries']} boundaries in {figures['utterances']} utterances: "
        f"{100 * figures['within_tolerance']:.1f}% within {1000 * args.tolerance:.0f} ms, median error "
        f"{1000 * figures['median_error_s']:.1f} ms, mean {1000 * figures['mean_error_s']:.1f} ms"
    )
    if "long" in figures and not figures["long"]["failed"]:
        long = figures["long"]
        print(
            f"long file ({args.long_seconds:.0f} s, {long['boundaries']} boundaries): "
            f"{100 * long['within_tolerance']:.1f}% within {1000 * args.tolerance:.0f} ms, median error "
            f"{1000 * long['median_error_s']:.1f} ms, mean {1000 * long['mean_error_s']:.1f} ms"
        )
    elif "long" in figures:
        print(f"long file ({args.long_seconds:.0f} s): not aligned: {figures['long']['failed'][0]}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return figures
