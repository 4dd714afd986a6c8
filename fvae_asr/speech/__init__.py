"""Speech side: corpora (data), the recogniser and its export (models), training runs (training), transcription and
scoring (inference), and PER (metrics)."""

from fvae_asr.library_logs import quiet_library_logs

quiet_library_logs()  # before SpeechBrain is imported: one of its messages comes at import

from fvae_asr.speech.data.timit import prepare_timit  # noqa: E402
from fvae_asr.speech.metrics import error_report, phoneme_error_rate  # noqa: E402

__all__ = ["error_report", "phoneme_error_rate", "prepare_timit"]
