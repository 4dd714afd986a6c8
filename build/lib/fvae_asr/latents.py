"""``python -m fvae_asr.latents``: runs ``fvae_asr.cli.latents`` (also installed as ``fvae-asr-latents``)."""

import sys

from fvae_asr.cli.latents import main

if __name__ == "__main__":
    sys.exit(main())
