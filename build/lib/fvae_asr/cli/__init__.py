"""Command-line entry points, one module each; ``args`` holds the argument types they share.

Each runs as ``python -m fvae_asr.<name>`` and as the console script ``fvae-asr-<name>`` (``pyproject.toml``):
``transcribe`` (phones, with times, from audio files), ``evaluate`` (PER on a manifest), ``latents`` (what the
adapter latents carry). The demo and the synthetic corpus generator are packages with their own ``__main__``.
"""
