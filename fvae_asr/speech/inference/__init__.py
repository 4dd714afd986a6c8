"""Transcription, CTC phone timings, forced alignment, transcript formats and scoring."""
