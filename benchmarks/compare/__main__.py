"""``python -m benchmarks.compare``: the study's command line."""

from benchmarks.compare.cli import main

if __name__ == "__main__":
    main()
