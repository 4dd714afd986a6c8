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
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from fvae_asr.cli.args import output_file, outputs_among_inputs, positive_int, torch_device
from fvae_asr.cli.transcribe import file_ids
from fvae_asr.files import write_atomically
from fvae_asr.speech.data.annotations import SCORING_FIELDS, read_annotation
from fvae_asr.speech.inference.evaluation import evaluate_manifest, report_alignments
from fvae_asr.speech.inference.transcriber import FileTranscription, Transcriber
from fvae_asr.speech.inference.transcript_formats import ctm_lines

SCLITE_FILES = ("ref.trn", "hyp.trn", "ref.stm", "hyp.ctm")  # what --sclite writes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fvae-asr evaluate", description="Phone error rate on a manifest.")
    parser.add_argument("--checkpoint", required=True, help="directory written by export_recognizer")
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


def sclite_trn(report: dict, side: str) -> str:
    """One side (``ref`` or ``hyp``) of the transcripts in sclite's trn form: ``<phones> (<utterance id>)``.

    Args:
        report: what ``evaluate_manifest`` returns.
        side: ``ref`` or ``hyp``.
    """
    return "".join(f"{t[side]} ({utt_id})\n" for utt_id, t in report["transcripts"].items())


def sclite_file_ids(manifest: dict[str, dict], manifest_path: Path) -> dict[str, str]:
    """Each utterance's file ID in ref.stm and hyp.ctm: ``transcribe``'s rule (``file_ids``) over the manifest's
    audio files, so that hyp.ctm is what ``transcribe --format ctm`` writes for them.

    Args:
        manifest: a manifest's entries (``read_annotation``).
        manifest_path: its file, named in errors.

    Raises ValueError naming the utterances whose files get one ID (STM and CTM tell utterances apart by file
    only) or the IDs with white space (sclite splits its lines on it).
    """
    names = dict(zip(manifest, file_ids([entry["wav"] for entry in manifest.values()])))
    utterances_of = defaultdict(list)
    for utt_id, name in names.items():
        utterances_of[name].append(utt_id)
    for name, utt_ids in utterances_of.items():
        if len(utt_ids) > 1:
            files = ", ".join(dict.fromkeys(manifest[utt_id]["wav"] for utt_id in utt_ids))
            raise ValueError(
                f"manifest {manifest_path}: utterances {', '.join(utt_ids)} get one file ID, {name} "
                f"({files}), but sclite's STM and CTM (--sclite) tell utterances apart by file only"
            )
    spaced = [repr(text) for utt_id, name in names.items() for text in (utt_id, name) if len(text.split()) != 1]
    if spaced:
        raise ValueError(
            f"manifest {manifest_path}: IDs for sclite (--sclite) cannot contain white space: {', '.join(spaced[:5])}"
        )
    bracketed = [repr(utt_id) for utt_id in names if set(utt_id) & set("()")]
    if bracketed:
        raise ValueError(
            f"manifest {manifest_path}: utterance IDs for sclite (--sclite) cannot contain parentheses, which "
            f"end a .trn line's '(<utterance id>)': {', '.join(bracketed[:5])}"
        )
    return names


def sclite_stm(report: dict, names: dict[str, str]) -> str:
    """The references as NIST STM, one segment per utterance spanning its whole file, sorted by file ID as sclite
    requires: ``<file ID> 1 <utterance id> 0 <duration> <phones>`` (channel 1, as in the CTM).

    Args:
        report: what ``evaluate_manifest`` returns.
        names: each utterance's file ID (``sclite_file_ids``).
    """
    lines = [";; fvae-asr evaluate: <file ID> <channel> <utterance id> <start> <end> <reference phones>\n"]
    for utt_id in sorted(report["transcripts"], key=names.__getitem__):
        transcript = report["transcripts"][utt_id]
        phones = " ".join(transcript["ref"].split())
        lines.append(f"{names[utt_id]} 1 {utt_id} 0 {transcript['duration']:.3f} {phones}\n")
    return "".join(lines)


def sclite_ctm(report: dict, names: dict[str, str]) -> str:
    """The hypotheses as NIST CTM, sorted by file ID and start time, each file's lines as ``transcribe --format ctm``
    writes them; a file with an empty hypothesis has none (sclite warns, then counts its reference phones deleted).

    Args:
        report: what ``evaluate_manifest`` returns, with ``timestamps``.
        names: each utterance's file ID (``sclite_file_ids``).
    """
    transcripts = report["transcripts"]
    return "".join(
        ctm_lines(
            FileTranscription(t["wav"], t["hyp"].split(), duration=t["duration"], segments=t["segments"]), names[utt_id]
        )
        for utt_id, t in sorted(transcripts.items(), key=lambda item: names[item[0]])
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
