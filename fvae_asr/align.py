"""``python -m fvae_asr.align``: runs ``fvae_asr.cli.align`` (also ``fvae-asr align``)."""

import sys

from fvae_asr.cli.align import main

if __name__ == "__main__":
    sys.exit(main())
