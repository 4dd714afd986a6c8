"""``python -m fvae_asr.evaluate``: runs ``fvae_asr.cli.evaluate`` (also installed as ``fvae-asr-evaluate``)."""

import sys

from fvae_asr.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
