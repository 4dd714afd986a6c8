"""Speech side: TIMIT preparation, the CTC recogniser and its SpeechBrain Brain, PER, transcription."""

from fvae_asr.speech.metrics import error_report, phoneme_error_rate
from fvae_asr.speech.timit import prepare_timit

__all__ = ["error_report", "phoneme_error_rate", "prepare_timit"]
