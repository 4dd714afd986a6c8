"""``python -m benchmarks.compare``: the command line of ``benchmarks.compare.study``."""

from benchmarks.compare.study import main

if __name__ == "__main__":
    main()
