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
import os
import sys
from collections.abc import Callable
from pathlib import Path

from fvae_asr.argument_types import output_file, outputs_among_inputs, positive_int, torch_device
from fvae_asr.files import write_atomically
from fvae_asr.speech.data.annotations import SCORING_FIELDS, read_annotation
from fvae_asr.speech.inference.evaluation import evaluate_manifest, report_alignments
from fvae_asr.speech.inference.transcriber import Transcriber
from fvae_asr.speech.inference.transcript_formats import sclite_ctm, sclite_file_ids, sclite_stm, sclite_trn

SCLITE_FILES = ("ref.trn", "hyp.trn", "ref.stm", "hyp.ctm")  # what --sclite writes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fvae-asr evaluate", description="Phone error rate on a manifest.")
    parser.add_argument("--checkpoint", required=True, help="directory written by export_model")
    parser.add_argument(
        "--manifest",
        required=True,
        type=Path,
        help="JSON manifest (wav and phn per utterance) or annotation CSV (ID, duration, wav, phn)",
    )
    parser.add_argument(
        "--data-folder",
        "--data_folder",  # the recipe's spelling, accepted
        help="what $data_root (CSV) or {data_root} (JSON) stands for in wav paths",
    )
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
    args = parser.parse_args(argv)
    if args.sclite is not None:
        problem = _sclite_folder_problem(args.sclite)
        if problem:
            parser.error(f"argument --sclite: {problem}")
    return args


def _sclite_folder_problem(folder: Path) -> str | None:
    """Why the sclite files cannot be written into ``folder`` (created if missing), found before any work."""
    if folder.exists() and not folder.is_dir():
        return f"{folder} exists and is not a directory"
    existing = next(parent for parent in (folder, *folder.parents) if parent.exists())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder (for {folder})"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing}: cannot write there"
    folders = [folder / name for name in SCLITE_FILES if (folder / name).is_dir()]
    return f"{folders[0]} is a directory, not a file" if folders else None


def output_files(args: argparse.Namespace) -> list[Path]:
    """Every file the command will write."""
    sclite = [args.sclite / name for name in SCLITE_FILES] if args.sclite is not None else []
    return [path for path in (args.alignments, args.json, *sclite) if path is not None]


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
        manifest = read_annotation(args.manifest, args.data_folder, SCORING_FIELDS).entries
        # each utterance's file ID for sclite, checked before the long part so that a bad one fails at once
        names = sclite_file_ids(manifest, args.manifest) if args.sclite is not None else {}
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    problem = outputs_among_inputs(output_files(args), [args.manifest, *(entry["wav"] for entry in manifest.values())])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
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
        renderers = [lambda r: sclite_trn(r, "ref"), lambda r: sclite_trn(r, "hyp")]
        renderers += [lambda r: sclite_stm(r, names), lambda r: sclite_ctm(r, names)]
        outputs += [(args.sclite / name, render) for name, render in zip(SCLITE_FILES, renderers, strict=True)]
    failure = write_outputs(report, outputs)
    if failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
