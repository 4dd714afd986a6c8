"""Score an exported recogniser on a manifest: ``fvae-asr evaluate --checkpoint DIR --manifest test.json
[--alignments out.txt] [--json out.json] [--skip-invalid]`` (or ``--manifest test.csv [--data-folder DIR]``).

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

from fvae_asr.files import write_atomically
from fvae_asr.cli.args import output_file, positive_int, torch_device
from fvae_asr.speech.inference.evaluation import evaluate_manifest, report_alignments
from fvae_asr.speech.inference.transcriber import Transcriber


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fvae-asr evaluate", description="Phone error rate on a manifest.")
    parser.add_argument("--checkpoint", required=True, help="directory written by export_recognizer")
    parser.add_argument("--manifest", required=True, type=Path,
                        help="JSON manifest (wav and phn per utterance) or annotation CSV (ID, duration, wav, phn)")
    parser.add_argument("--data-folder", help="what $data_root (CSV) or {data_root} (JSON) stands for in wav paths")
    parser.add_argument("--alignments", type=output_file, help="write per-utterance REF/HYP alignments here")
    parser.add_argument("--json", type=output_file, help="write the full report (PER, counts, transcripts) here")
    parser.add_argument("--sclite", type=Path, metavar="DIR",
                        help="write ref.trn and hyp.trn here (sclite's trn form, one line per utterance) to score with "
                        "'sclite -r DIR/ref.trn trn -h DIR/hyp.trn trn -i wsj'")  # fmt: skip
    parser.add_argument("--skip-invalid", action="store_true",
                        help="leave out utterances with an empty reference or phones the model cannot output "
                        "(counted in the summary, listed in the JSON report) instead of failing")  # fmt: skip
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


def sclite_trn(report: dict, side: str) -> str:
    """One side (``ref`` or ``hyp``) of the transcripts in sclite's trn form: ``<phones> (<utterance id>)``.

    Args:
        report: what ``evaluate_manifest`` returns.
        side: ``ref`` or ``hyp``.
    """
    return "".join(f"{t[side]} ({utt_id})\n" for utt_id, t in report["transcripts"].items())


def write_outputs(report: dict, outputs: list[tuple[Path | None, Callable[[dict], str]]]) -> str | None:
    """Write each requested file (atomically: a failure keeps the old one); returns the first failure, if any."""
    for path, render in outputs:
        if path is None:
            continue
        try:
            write_atomically(path, lambda tmp: tmp.write_text(render(report), encoding="utf-8"))
        except OSError as err:
            return f"cannot write {path}: {err.strerror or err}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    args = parse_args(argv)
    try:
        transcriber = Transcriber(args.checkpoint, args.device, args.batch_size)
        report = evaluate_manifest(transcriber, args.manifest, args.skip_invalid, args.data_folder)
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
    failure = write_outputs(report, outputs)
    if failure:
        print(f"error: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
