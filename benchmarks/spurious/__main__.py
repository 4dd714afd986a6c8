"""``python -m benchmarks.spurious``: the study's command line."""

from benchmarks.spurious.cli import main

if __name__ == "__main__":
    main()
