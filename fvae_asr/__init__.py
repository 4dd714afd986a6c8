"""fvae-asr: FVAE-LoRA adapters for speech recognition (and any transformer)."""

from fvae_asr.adapters import *  # noqa: F403  (the public adapter API)
from fvae_asr.adapters import __all__ as _adapter_api

__all__ = [*_adapter_api, "phoneme_error_rate", "Transcriber"]  # noqa: F405 (the last two: __getattr__)


def __getattr__(name: str):
    # Speech helpers are imported on first use so that the adapter core stays light to import.
    if name == "phoneme_error_rate":
        from fvae_asr.speech.metrics import phoneme_error_rate

        return phoneme_error_rate
    if name == "Transcriber":
        from fvae_asr.speech.inference.transcriber import Transcriber

        return Transcriber
    raise AttributeError(f"module 'fvae_asr' has no attribute {name!r}")
