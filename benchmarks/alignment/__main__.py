"""``python -m benchmarks.alignment``: the command line of ``benchmarks.alignment.accuracy``."""

from benchmarks.alignment.accuracy import main

if __name__ == "__main__":
    main()
