"""Command line: ``fvae-asr synthetic --out DIR --domain target --train-speakers 24``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence

from fvae_asr.speech.data.espeak import EspeakError
from fvae_asr.synthetic.corpus import OutputFolderTaken, generate_corpus
from fvae_asr.synthetic.domains import DOMAINS, get_domain


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fvae-asr synthetic",
        description="Generate an offline synthetic speech corpus in the TIMIT layout (eSpeak NG voices).",
    )
    parser.add_argument("--out", required=True, help="output folder (receives TRAIN/ and TEST/)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--domain", choices=sorted(DOMAINS), default="source", help="acoustic domain (default: %(default)s)"
    )
    parser.add_argument("--train-speakers", type=int, default=24, help="speakers in TRAIN (default: %(default)s)")
    parser.add_argument(
        "--test-speakers",
        type=int,
        default=8,
        help="speakers in TEST, half core-test and half dev ids (default: %(default)s)",
    )
    parser.add_argument(
        "--sentences", type=int, default=8, help="SI+SX sentences per speaker, besides SA1/SA2 (default: %(default)s)"
    )
    parser.add_argument("--snr-db", type=float, help="override the domain's noise SNR in dB")
    parser.add_argument("--rt60", type=float, help="override the domain's reverberation time in seconds")
    parser.add_argument("--speed", type=float, help="override the domain's speed factor")
    parser.add_argument("--lowercase", action="store_true", help="write the lower-case layout (train/dr1/...)")
    parser.add_argument("--overwrite", action="store_true", help="replace a different corpus already in --out")
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, generate the corpus, print where it went; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    given = {"snr_db": args.snr_db, "rt60_s": args.rt60, "speed": args.speed}
    overrides = {field: value for field, value in given.items() if value is not None}
    try:
        domain = dataclasses.replace(get_domain(args.domain), **overrides)
        out = generate_corpus(
            args.out,
            seed=args.seed,
            n_train_speakers=args.train_speakers,
            n_test_speakers=args.test_speakers,
            sentences_per_speaker=args.sentences,
            domain=domain,
            uppercase=not args.lowercase,
            overwrite=args.overwrite,
        )
    except OutputFolderTaken as err:
        parser.error(err.message("--overwrite"))
    except (NotADirectoryError, ValueError) as err:  # arguments the generator rejects
        parser.error(str(err))
    except (EspeakError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
