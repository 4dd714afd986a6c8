"""``python -m fvae_asr <command> ...``: the same as the ``fvae-asr`` command line."""

import sys

from fvae_asr.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
