"""Score an exported recogniser on a manifest: ``fvae-asr evaluate --checkpoint DIR --manifest test.json
[--alignments out.txt] [--json out.json] [--sclite DIR] [--skip-invalid]`` (or ``--manifest test.csv
[--data-folder DIR]``).

Prints the PER with its substitution, deletion and insertion counts, then writes the requested files; exits 1
on a bad checkpoint, manifest (an empty reference or a phone the model cannot output included, unless
``--skip-invalid``), audio file or output file (with a message naming it), 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from fvae_asr.argument_types import output_file, positive_int, torch_device
from fvae_asr.files import write_atomically
from fvae_asr.speech.inference.evaluation import evaluate_manifest, read_manifest, report_alignments
from fvae_asr.speech.inference.transcriber import Transcriber
from fvae_asr.speech.inference.transcript_formats import sclite_ctm, sclite_file_ids, sclite_stm, sclite_trn


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fvae-asr evaluate", description="Phone error rate on a manifest.")
    parser.add_argument("--checkpoint", required=True, help="directory written by export_recognizer")
    parser.add_argument(
        "--manifest",
        required=True,
        type=Path,
        help="JSON manifest (wav and phn per utterance) or annotation CSV (ID, duration, wav, phn)",
    )
    parser.add_argument("--data-folder", help="what $data_root (CSV) or {data_root} (JSON) stands for in wav paths")
    parser.add_argument("--alignments", type=output_file, help="write per-utterance REF/HYP alignments here")
    parser.add_argument("--json", type=output_file, help="write the full report (PER, counts, transcripts) here")
    parser.add_argument(
        "--sclite",
        type=Path,
        metavar="DIR",
        help="write the references and hypotheses here for NIST sclite: ref.trn and hyp.trn (one line "
        "per utterance; 'sclite -r DIR/ref.trn trn -h DIR/hyp.trn trn -i wsj'), and ref.stm and hyp.ctm "
        "(a segment per file, the phones with their times, files named as by transcribe --format ctm; "
        "'sclite -r DIR/ref.stm stm -h DIR/hyp.ctm ctm'); see docs/transcription-formats.md",
    )
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="leave out utterances with an empty reference or phones the model cannot output "
        "(counted in the summary, listed in the JSON report) instead of failing",
    )
    parser.add_argument("--device", type=torch_device, default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="utterances per forward pass")
    return parser.parse_args(argv)


def summary(report: dict) -> str:
    """One line: PER and its edit counts (and the utterances skipped as invalid, if any)."""
    skipped = f"; {len(report['skipped'])} utterances skipped (invalid references)" if report["skipped"] else ""
    return (
        f"PER {report['per']:.2f}% on {report['utterances']} utterances ({report['reference_phones']} phones): "
        f"{report['substitutions']} substitutions, {report['deletions']} deletions, {report['insertions']} insertions"
        f"{skipped}"
    )


def write_outputs(report: dict, outputs: list[tuple[Path | None, Callable[[dict], str]]]) -> str | None:
    """Write each requested file (atomically: a failure keeps the old one); returns the first failure, if any."""
    for path, render in outputs:
        if path is None:
            continue
        try:
            text = render(report)
            write_atomically(path, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
        except OSError as err:
            return f"cannot write {path}: {err.strerror or err}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    args = parse_args(argv)
    try:
        names = {}  # each utterance's file ID for sclite, checked before the long part so that a bad one fails at once
        if args.sclite is not None:
            names = sclite_file_ids(read_manifest(args.manifest, args.data_folder), args.manifest)
        transcriber = Transcriber(args.checkpoint, args.device, args.batch_size)
        report = evaluate_manifest(
            transcriber, args.manifest, args.skip_invalid, args.data_folder, timestamps=args.sclite is not None
        )
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(summary(report), flush=True)  # first: a file that cannot be written does not lose the result
    outputs = [(args.alignments, report_alignments), (args.json, lambda r: json.dumps(r, indent=2) + "\n")]
    if args.sclite is not None:
        try:
            args.sclite.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            print(f"error: cannot create {args.sclite}: {err.strerror or err}", file=sys.stderr)
            return 1
        outputs += [(args.sclite / f"{side}.trn", lambda r, side=side: sclite_trn(r, side)) for side in ("ref", "hyp")]
        outputs += [
            (args.sclite / "ref.stm", lambda r: sclite_stm(r, names)),
            (args.sclite / "hyp.ctm", lambda r: sclite_ctm(r, names)),
        ]
    failure = write_outputs(report, outputs)
    if failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
