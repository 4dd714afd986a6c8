"""Speech side: TIMIT preparation, the CTC recogniser and its SpeechBrain Brain, PER, transcription."""

from fvae_asr.library_logs import quiet_library_logs

quiet_library_logs()  # before SpeechBrain is imported: one of its messages comes at import

from fvae_asr.speech.data.timit import prepare_timit  # noqa: E402
from fvae_asr.speech.metrics import error_report, phoneme_error_rate  # noqa: E402

__all__ = ["error_report", "phoneme_error_rate", "prepare_timit"]
