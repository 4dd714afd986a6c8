"""Phone boundaries for audio whose phones are known: ``fvae-asr align --checkpoint DIR ...``.

The phones come from a manifest (``--manifest``: a JSON manifest or an annotation CSV with ``wav`` and ``phn``, as
``evaluate`` reads them) or, for audio files given on the command line, from TIMIT label files beside them (``X.WAV`` ->
``X.PHN``; TIMIT's 61 phones are folded to 39 when the model has the 39-phone set). Each file is forced-aligned
(``fvae_asr.speech.inference.forced_alignment``) and written as a TextGrid (default), CTM or JSON lines, into
``--out-dir`` (one file per input, named by its ID as ``transcribe`` names them) or to stdout (CTM, JSON). IDs
follow ``transcribe``'s rules: IDs that clash, that a CTM cannot hold or that would name a file outside
``--out-dir`` (or an input) are refused before anything runs (exit 2). A file that cannot be aligned (unknown
phones, more phones than frames, unreadable audio) gets ``<path>: error: ...`` on stderr while the others still
align; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from fvae_asr.argument_types import output_dir, outputs_among_inputs, torch_device
from fvae_asr.cli.transcribe import output_names_problem, output_paths, write_into
from fvae_asr.speech.data.annotations import SCORING_FIELDS, read_annotation
from fvae_asr.speech.data.timit import PHONES_39, fold_to_39, parse_label_line
from fvae_asr.speech.inference.forced_alignment import align_file
from fvae_asr.speech.inference.transcriber import Transcriber
from fvae_asr.speech.inference.transcript_formats import FORMATS, file_ids

ALIGN_FORMATS = ("textgrid", "ctm", "json")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fvae-asr align", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="directory written by export_model")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", type=Path, help="JSON manifest or annotation CSV with wav and phn per utterance")
    source.add_argument("files", nargs="*", default=[], help="audio files, each with a TIMIT .PHN file beside it")
    parser.add_argument(
        "--data-folder",
        "--data_folder",  # the recipe's spelling, accepted
        help="what $data_root / {data_root} stands for in the manifest's wav paths",
    )
    parser.add_argument("--format", choices=ALIGN_FORMATS, default="textgrid", help="output format (default textgrid)")
    parser.add_argument("--out-dir", type=output_dir, help="one file per input here (needed for textgrid)")
    parser.add_argument("--device", type=torch_device, default="cpu", help="torch device, e.g. cpu or cuda:0")
    args = parser.parse_args(argv)
    if args.format == "textgrid" and args.out_dir is None:
        parser.error("--format textgrid writes one file per input: give --out-dir")
    if args.files:
        names = file_ids(args.files)
        problem = output_names_problem(dict(zip(args.files, names)), args.format, args.out_dir)
        if problem or (problem := outputs_among_inputs(output_paths(args.out_dir, names, args.format), args.files)):
            parser.error(problem)
    return args


def timit_phones(wav: Path, fold: bool) -> list[str]:
    """The phones of the TIMIT label file beside ``wav`` (same name, ``.PHN`` or ``.phn``), folded to 39 if asked."""
    candidates = [wav.with_suffix(suffix) for suffix in (".PHN", ".phn")]
    label_file = next((path for path in candidates if path.is_file()), None)
    if label_file is None:
        raise FileNotFoundError(f"{wav}: no TIMIT label file beside it ({candidates[0].name})")
    lines = label_file.read_text(encoding="utf-8").splitlines()
    phones = [parse_label_line(line, label_file, number)[2] for number, line in enumerate(lines, 1) if line.strip()]
    return fold_to_39(phones) if fold else phones


Job = tuple[str, str, "list[str] | str"]  # (output name, audio path, its phones or why they could not be read)


def manifest_jobs(args: argparse.Namespace) -> list[Job]:
    """A manifest's utterances, named by their IDs."""
    entries = read_annotation(args.manifest, args.data_folder, SCORING_FIELDS).entries
    return [(utt_id, entry["wav"], entry["phn"].split()) for utt_id, entry in entries.items()]


def manifest_jobs_problem(args: argparse.Namespace, jobs: list[Job]) -> str | None:
    """Why a manifest's IDs cannot name the outputs (``transcribe``'s rules), or why they would replace an input."""
    names = [name for name, _, _ in jobs]
    return output_names_problem(dict(zip(names, names)), args.format, args.out_dir) or outputs_among_inputs(
        output_paths(args.out_dir, names, args.format), [args.manifest, *(path for _, path, _ in jobs)]
    )


def file_jobs(args: argparse.Namespace, labels: list[str]) -> list[Job]:
    """Audio files with the TIMIT label files beside them, named as ``transcribe`` names them."""
    fold = set(PHONES_39) <= set(labels) and "h#" not in labels
    found = []
    for name, path in zip(file_ids(args.files), args.files):
        try:
            found.append((name, path, timit_phones(Path(path), fold)))
        except (OSError, ValueError) as err:
            found.append((name, path, str(err)))
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        jobs = manifest_jobs(args) if args.manifest is not None else None
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    problem = manifest_jobs_problem(args, jobs) if jobs is not None else None
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        transcriber = Transcriber(args.checkpoint, device=args.device)
        jobs = jobs if jobs is not None else file_jobs(args, transcriber.labels)
        if args.out_dir is not None:
            args.out_dir.mkdir(exist_ok=True)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    failed, printed = False, []
    for name, path, phones in tqdm(jobs, desc="aligning", unit="file", disable=None):
        result = align_file(transcriber, path, phones) if isinstance(phones, list) else None
        problem = phones if result is None else result.error
        if problem is None and args.out_dir is not None:
            problem = write_into(args.out_dir, result, name, args.format)
        if problem is not None:
            print(f"{path}: error: {problem}", file=sys.stderr)
            failed = True
        elif args.out_dir is None:
            printed.append((name, FORMATS[args.format][0](result, name)))
    sys.stdout.write("".join(text for _, text in sorted(printed)))  # sorted by file ID, as sclite needs a CTM
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
