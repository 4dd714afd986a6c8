"""Corpora: TIMIT preparation, annotation files (CSV/JSON) and the SpeechBrain datasets."""
