"""Corpora: TIMIT preparation, annotation files (CSV/JSON) and the CTC labels of a phone inventory."""
