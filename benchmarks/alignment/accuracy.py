"""Forced-alignment accuracy against reference phone boundaries: for every utterance of a manifest with ``phn_segments``
(TIMIT preparation writes them, e.g. for the synthetic corpus), align its reference phones with an exported recogniser
(``fvae_asr.speech.inference.forced_alignment``) and compare each boundary between two phones (the start of every phone
but the first) with the reference's. Prints and writes (``--json``) the share of boundaries within ``--tolerance``
seconds and the median and mean absolute errors.

    python -m benchmarks.alignment --checkpoint demo_out/fvae_lora/model \\
        --manifest demo_out/fvae_lora/save/test.json --json docs/bench/alignment_accuracy_demo.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from fvae_asr.audio import SAMPLE_RATE
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
    args = parser.parse_args(argv)
    manifest = read_annotation(args.manifest, required=SCORING_FIELDS).entries
    if not all("phn_segments" in entry for entry in manifest.values()):
        parser.error(f"{args.manifest}: every entry needs phn_segments (TIMIT preparation writes them)")
    errors, failed = boundary_errors(Transcriber(args.checkpoint), manifest)
    if not errors:
        parser.error(f"no utterance could be aligned: {'; '.join(failed[:3])}")
    figures = {
        **summary(errors, args.tolerance),
        "utterances": len(manifest) - len(failed),
        "failed": failed,
        "command": " ".join(["python -m benchmarks.alignment", *(argv or sys.argv[1:])]),
    }
    print(
        f"{figures['boundaries']} boundaries in {figures['utterances']} utterances: "
        f"{100 * figures['within_tolerance']:.1f}% within {1000 * args.tolerance:.0f} ms, median error "
        f"{1000 * figures['median_error_s']:.1f} ms, mean {1000 * figures['mean_error_s']:.1f} ms"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return figures
