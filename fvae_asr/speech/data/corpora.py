"""The corpus a recipe run names with ``corpus`` in its yaml: TIMIT (prepared by ``timit.prepare_timit``), three
phone-labelled annotations, or a corpus with word transcripts (``word_corpus``); null picks the annotations when
they are given, else TIMIT, as before the key existed."""

from __future__ import annotations

from collections.abc import Mapping

from fvae_asr.speech.data.annotations import ANNOTATION_KEYS, AnnotationError, Corpus, corpus_of
from fvae_asr.speech.data.word_corpus import SPLIT_KEYS, WORD_ANNOTATIONS, WORD_LAYOUTS, word_corpus_of
from fvae_asr.speech.data.word_layouts import LAYOUTS

TIMIT, ANNOTATIONS = "timit", "annotations"
CORPORA = (None, TIMIT, ANNOTATIONS, *WORD_LAYOUTS)


def corpus_for(settings: Mapping) -> Corpus:
    """The run's corpus, read and checked (nothing is written); ``AnnotationError`` naming the file and line of
    the first problem, or the setting that contradicts ``corpus``."""
    layout = settings.get("corpus")
    given = [key for key in ANNOTATION_KEYS.values() if settings.get(key)]
    if layout in (TIMIT, *LAYOUTS) and given:
        raise AnnotationError(f"corpus is {layout}: {', '.join(given)} must not be set (they describe another corpus)")
    if layout in (ANNOTATIONS, WORD_ANNOTATIONS) and len(given) < len(ANNOTATION_KEYS):
        raise AnnotationError(f"corpus {layout} needs all of {', '.join(ANNOTATION_KEYS.values())}")
    splits = sorted(key for key in settings if key.startswith("corpus_splits.") and settings[key] is not None)
    if splits and layout not in LAYOUTS:
        raise AnnotationError(f"corpus_splits is for corpus {', '.join(LAYOUTS)}; corpus is {layout}")
    unknown = [key for key in splits if key not in SPLIT_KEYS.values()]
    if unknown:
        raise AnnotationError(f"corpus_splits names {', '.join(unknown)}; it names only train, dev and test")
    if layout in WORD_LAYOUTS:
        return word_corpus_of(settings)
    return corpus_of(settings)
