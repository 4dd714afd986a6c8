"""Transcribe audio files to phones: ``python -m fvae_asr.transcribe --checkpoint DIR a.wav b.flac ...``.

Prints ``<path>\\t<phones>`` per file on stdout and ``<path>: error: <message>`` on stderr for files that
cannot be read; exits 1 if any file failed (after all the others are done) or the checkpoint is unusable, 2 on
usage errors (including a ``--device`` torch cannot use).
"""

from __future__ import annotations

import argparse
import sys

from fvae_asr.cli.args import positive_int, torch_device
from fvae_asr.speech.transcriber import Transcriber


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fvae_asr.transcribe", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="directory written by export_recognizer")
    parser.add_argument("files", nargs="+", help="audio files (any format soundfile reads, any rate)")
    parser.add_argument("--device", type=torch_device, default="cpu", help="torch device, e.g. cpu or cuda:0")
    parser.add_argument("--batch-size", type=positive_int, default=8, help="files per forward pass")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    args = parse_args(argv)
    try:
        transcriber = Transcriber(args.checkpoint, args.device, args.batch_size)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    failed = False
    for result in transcriber.transcribe_files(args.files):
        if result.error is None:
            print(f"{result.path}\t{' '.join(result.phones)}")
        else:
            print(f"{result.path}: error: {result.error}", file=sys.stderr)
            failed = True
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
