"""Transcribe audio files to phones: ``fvae-asr transcribe --checkpoint DIR a.wav b.flac ...``.

Prints ``<path>\\t<phones>`` per file on stdout (``--format json|ctm|textgrid`` and ``--timestamps`` for other forms and
phone times) or, with ``--out-dir``, writes one file per input named after its ID (``a.TextGrid``...); a TextGrid is one
file per input, so several inputs need ``--out-dir``. A file's ID (see ``file_ids``) is its name without extension or,
when inputs share a name, its path relative to the inputs' common folder with ``_`` for ``/``; CTM on stdout is sorted
by ID and start time, as sclite needs. Files longer than ``--chunk-seconds`` are
read and transcribed chunk by chunk. Files that cannot be read get ``<path>: error: <message>`` on stderr; exits 1
if any file failed (after all the others are done) or the checkpoint is unusable, 2 on usage errors (including a
``--device`` torch cannot use).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from tqdm import tqdm

from fvae_asr.argument_types import (
    non_negative_float,
    output_dir,
    outputs_among_inputs,
    positive_float,
    positive_int,
    torch_device,
)
from fvae_asr.files import write_atomically
from fvae_asr.speech.inference.transcriber import (
    DEFAULT_CHUNK_SECONDS,
    DEFAULT_CONTEXT_SECONDS,
    FileTranscription,
    Transcriber,
)
from fvae_asr.speech.inference.transcript_formats import FORMATS, TIMED_FORMATS, file_ids


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fvae-asr transcribe", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="directory written by export_model")
    parser.add_argument("files", nargs="+", help="audio files (any format soundfile reads, any rate)")
    parser.add_argument("--device", type=torch_device, default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="short files per forward pass")
    parser.add_argument(
        "--format",
        choices=list(FORMATS),
        default="text",
        help="text: '<path> TAB <phones>' lines; json: one JSON object per line; ctm: "
        "'<file> 1 <start> <duration> <phone>' lines; textgrid: a Praat TextGrid per file",
    )
    parser.add_argument(
        "--timestamps",
        action="store_true",
        help="each phone's start and end in seconds (text, json; ctm and textgrid always have them)",
    )
    parser.add_argument(
        "--out-dir",
        type=output_dir,
        help="write one file per input here, named after it (a.wav -> a.TextGrid), instead of stdout",
    )
    parser.add_argument(
        "--chunk-seconds",
        type=positive_float,
        default=DEFAULT_CHUNK_SECONDS,
        help="longer files are transcribed in chunks of this length (default %(default)s)",
    )
    parser.add_argument(
        "--context-seconds",
        type=non_negative_float,
        default=DEFAULT_CONTEXT_SECONDS,
        help="audio either side of each chunk that the model hears but whose frames are dropped (default %(default)s)",
    )
    args = parser.parse_args(argv)
    _check_outputs(parser, args)
    return args


def _check_outputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Outputs that cannot be told apart are usage errors, found before anything runs."""
    if args.format == "textgrid" and args.out_dir is None and len(args.files) > 1:
        parser.error(f"--format textgrid writes one file per input: give --out-dir for {len(args.files)} files")
    names = file_ids(args.files)
    problem = output_names_problem(dict(zip(args.files, names)), args.format, args.out_dir) or outputs_among_inputs(
        output_paths(args.out_dir, names, args.format), args.files
    )
    if problem:
        parser.error(problem)


def output_names_problem(names: Mapping[str, str], format_name: str, out_dir: Path | None) -> str | None:
    """Why these output names cannot be used, or None: the one rule of ``transcribe`` and ``align``. Names must
    differ (in a CTM, or as files in ``out_dir``), a CTM's have no white space, and a file's name stays in its
    folder (no ``/``, not ``.`` or ``..``).

    Args:
        names: each input (a path, an utterance ID) -> the name of its output.
        format_name: the output format (one of ``FORMATS``).
        out_dir: the folder of one file per input, or None for stdout.
    """
    if out_dir is not None or format_name == "ctm":
        clashes = sorted(name for name, count in Counter(names.values()).items() if count > 1)
        if clashes:
            return f"several inputs share the name {', '.join(clashes)}: their outputs could not be told apart"
    if format_name == "ctm":
        spaced = [source for source, name in names.items() if len(name.split()) != 1]
        if spaced:
            return f"a CTM file name cannot contain white space or be empty: {', '.join(map(repr, spaced))}"
    if out_dir is not None:
        unsafe = [name for name in names.values() if not name or name in (".", "..") or set(name) & {"/", "\\", "\0"}]
        if unsafe:
            return (
                f"cannot name a file in {out_dir} after {', '.join(map(repr, unsafe[:5]))}: a name must not be empty, "
                "'.' or '..', nor contain '/', '\\' or NUL"
            )
    return None


def output_paths(out_dir: Path | None, names: Iterable[str], format_name: str) -> list[Path]:
    """The files ``write_into`` writes for these names (none without ``out_dir``)."""
    return [] if out_dir is None else [out_dir / f"{name}{FORMATS[format_name][1]}" for name in names]


def write_into(folder: Path, result: FileTranscription, name: str, format_name: str) -> str | None:
    """Write one file's transcription into ``folder`` as ``name`` (atomically); returns what went wrong, if any."""
    [target] = output_paths(folder, [name], format_name)
    text = FORMATS[format_name][0](result, name)
    try:
        write_atomically(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except OSError as err:
        return f"cannot write {target}: {err.strerror or err}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    args = parse_args(argv)
    try:
        transcriber = Transcriber(
            args.checkpoint, args.device, args.batch_size, args.chunk_seconds, args.context_seconds
        )
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.out_dir is not None:
        try:
            args.out_dir.mkdir(exist_ok=True)
        except OSError as err:
            print(f"error: cannot create {args.out_dir}: {err.strerror or err}", file=sys.stderr)
            return 1
    render = FORMATS[args.format][0]
    names = file_ids(args.files)
    # stdout keeps input order (a file is printed once all before it are), CTM the order of IDs as sclite needs
    order = sorted(range(len(args.files)), key=names.__getitem__) if args.format == "ctm" else range(len(args.files))
    timestamps = args.timestamps or args.format in TIMED_FORMATS
    done: dict[int, FileTranscription] = {}
    printed = 0
    failed = False
    with tqdm(total=len(args.files), unit="file", disable=None, file=sys.stderr) as progress:
        for index, result in transcriber.transcribe_each(args.files, timestamps):
            progress.update()
            if result.error is not None:
                progress.write(f"{result.path}: error: {result.error}", file=sys.stderr)
                failed = True
            elif args.out_dir is not None:
                problem = write_into(args.out_dir, result, names[index], args.format)
                if problem:
                    progress.write(f"{result.path}: error: {problem}", file=sys.stderr)
                    failed = True
            done[index] = result
            while printed < len(order) and order[printed] in done:
                result = done.pop(order[printed])
                if args.out_dir is None and result.error is None:
                    sys.stdout.write(render(result, names[order[printed]]))
                printed += 1
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
