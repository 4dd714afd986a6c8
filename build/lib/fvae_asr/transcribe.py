"""``python -m fvae_asr.transcribe``: runs ``fvae_asr.cli.transcribe`` (also installed as ``fvae-asr-transcribe``)."""

import sys

from fvae_asr.cli.transcribe import main

if __name__ == "__main__":
    sys.exit(main())
