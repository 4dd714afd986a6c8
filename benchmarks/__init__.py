"""The speed benchmarks and the studies, run from the repository root as ``python -m benchmarks.<name>``."""
