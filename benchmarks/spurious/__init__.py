"""The spurious-correlation study (an audio Waterbirds): ``python -m benchmarks.spurious``; cli.py says what it does."""
