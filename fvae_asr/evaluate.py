"""Score an exported recogniser on a prepared manifest: ``python -m fvae_asr.evaluate --checkpoint DIR
--manifest test.json [--alignments out.txt] [--json out.json]``.

Prints the PER with its substitution, deletion and insertion counts; exits 1 on a bad checkpoint, manifest
or audio file (with a message naming it), 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fvae_asr.speech.evaluation import evaluate_manifest, report_alignments
from fvae_asr.speech.transcriber import Transcriber
from fvae_asr.transcribe import positive_int, quiet_model_loading


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fvae_asr.evaluate", description="Phone error rate on a manifest.")
    parser.add_argument("--checkpoint", required=True, help="directory written by export_recognizer")
    parser.add_argument("--manifest", required=True, type=Path, help="JSON manifest (wav and phn per utterance)")
    parser.add_argument("--alignments", type=Path, help="write per-utterance REF/HYP alignments here")
    parser.add_argument("--json", type=Path, help="write the full report (PER, counts, transcripts) here")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="utterances per forward pass")
    return parser.parse_args(argv)


def summary(report: dict) -> str:
    """One line: PER and its edit counts."""
    return (
        f"PER {report['per']:.2f}% on {report['utterances']} utterances ({report['reference_phones']} phones): "
        f"{report['substitutions']} substitutions, {report['deletions']} deletions, {report['insertions']} insertions"
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    args = parse_args(argv)
    quiet_model_loading()
    try:
        report = evaluate_manifest(Transcriber(args.checkpoint, args.device, args.batch_size), args.manifest)
        if args.alignments:
            args.alignments.write_text(report_alignments(report), encoding="utf-8")
        if args.json:
            args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
