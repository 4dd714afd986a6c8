"""``python -m benchmarks.faithfulness``: the command line of ``benchmarks.faithfulness.check``."""

import sys

from benchmarks.faithfulness.check import main

if __name__ == "__main__":
    sys.exit(main())
