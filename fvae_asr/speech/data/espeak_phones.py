"""eSpeak NG English phoneme mnemonics -> TIMIT 61-phone labels, and .PHN segments from phoneme events.

TIMIT writes a stop as its closure followed by its release (``p`` -> ``pcl p``), marks the silence at both
edges of an utterance with ``h#`` and pauses inside it with ``pau``. eSpeak r-coloured vowels and
triphthongs are single phonemes; they become the TIMIT phone sequence (``A@`` -> ``aa r``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

EDGE_SILENCE = "h#"
PAUSE = "pau"
_CLOSURES = frozenset({"bcl", "dcl", "gcl", "kcl", "pcl", "tcl"})
_STRESS_MARKS = "',%="

# Every mnemonic the English voices (en, en-us, en-gb-*, en-029, ...) use, from eSpeak's phoneme tables.
# An empty tuple marks a phoneme without a TIMIT counterpart (a linking glide, a lengthening mark):
# its time goes to the phone before it.
ESPEAK_TO_TIMIT: dict[str, tuple[str, ...]] = {
    # stops and affricates: closure + release
    "p": ("pcl", "p"),
    "b": ("bcl", "b"),
    "t": ("tcl", "t"),
    "d": ("dcl", "d"),
    "k": ("kcl", "k"),
    "g": ("gcl", "g"),
    "t2": ("tcl", "t"),
    "t[": ("tcl", "t"),
    "d#": ("dcl", "d"),
    "d[": ("dcl", "d"),
    "c": ("kcl", "k"),
    "J": ("gcl", "g"),
    "tS": ("tcl", "ch"),
    "dZ": ("dcl", "jh"),
    "tS;": ("tcl", "ch"),
    "dZ;": ("dcl", "jh"),
    "t#": ("dx",),
    "*": ("dx",),
    "?": ("q",),
    # fricatives
    "f": ("f",),
    "v": ("v",),
    "v#": ("v",),
    "T": ("th",),
    "D": ("dh",),
    "s": ("s",),
    "z": ("z",),
    "z#": ("z",),
    "z/2": ("z",),
    "S": ("sh",),
    "Z": ("zh",),
    "S;": ("sh",),
    "Z;": ("zh",),
    "s;": ("s",),
    "z;": ("z",),
    "h": ("hh",),
    "x": ("k",),
    "X": ("hh",),
    "C": ("hh",),
    "w#": ("w",),
    "B": ("v",),
    "Q": ("g",),
    "l#": ("l",),
    # nasals, liquids, glides (syllabic ones have their own TIMIT labels)
    "m": ("m",),
    "n": ("n",),
    "N": ("ng",),
    "n^": ("n",),
    "m-": ("em",),
    "n-": ("en",),
    "N-": ("eng",),
    "l": ("l",),
    "l/": ("l",),
    "l/2": ("l",),
    "l/3": ("l",),
    "L": ("l",),
    "L/": ("l",),
    "l^": ("l",),
    "l-": ("el",),
    "@L": ("el",),
    "r": ("r",),
    "r-": ("r",),
    "r/": ("r",),
    "R": ("r",),
    "R2": ("r",),
    "R3": ("r",),
    "j": ("y",),
    "w": ("w",),
    ";": (),
    # monophthongs
    "@": ("ax",),
    "@-": ("ax",),
    "@2": ("ax",),
    "@5": ("ax",),
    "@#": ("ax",),
    "a#": ("ax",),
    "a#2": ("ax",),
    "3": ("axr",),
    "3:": ("er",),
    "a": ("ae",),
    "aa": ("ae",),
    "a2": ("ae",),
    "a/": ("ae",),
    "A#": ("ae",),
    "A:": ("aa",),
    "A~": ("aa",),
    "0": ("aa",),
    "0#": ("aa",),
    "02": ("aa",),
    "E": ("eh",),
    "E#": ("eh",),
    "E2": ("eh",),
    "e": ("eh",),
    "e#": ("eh",),
    "e:": ("ey",),
    "I": ("ih",),
    "I#": ("ix",),
    "I2": ("ix",),
    "I2#": ("ix",),
    "i": ("iy",),
    "i:": ("iy",),
    "O": ("ao",),
    "O:": ("ao",),
    "O2": ("ao",),
    "O~": ("ao",),
    "o": ("ow",),
    "o:": ("ow",),
    "V": ("ah",),
    "U": ("uh",),
    "u": ("uw",),
    "u:": ("uw",),
    # diphthongs
    "aI": ("ay",),
    "aI2": ("ay",),
    "aU": ("aw",),
    "eI": ("ey",),
    "oU": ("ow",),
    "oU#": ("ow",),
    "OI": ("oy",),
    # r-coloured vowels and triphthongs
    "A@": ("aa", "r"),
    "e@": ("eh", "r"),
    "i@": ("iy", "r"),
    "i@3": ("iy", "ax"),
    "IR": ("ih", "r"),
    "VR": ("ah", "r"),
    "O@": ("ao", "r"),
    "o@": ("ao", "r"),
    "U@": ("uh", "r"),
    "aI@": ("ay", "er"),
    "aI3": ("ay", "er"),
    "aU@": ("aw", "er"),
    # pauses and marks
    "_": (PAUSE,),
    "_:": (PAUSE,),
    "_::": (PAUSE,),
    "_!": (PAUSE,),
    "_|": (PAUSE,),
    "||": (PAUSE,),
    "_;_": (PAUSE,),
    "_^_": (PAUSE,),
    ":": (),
    "-": (),
}


def strip_stress(mnemonic: str) -> str:
    """Drop eSpeak's leading stress marks (``'A@`` -> ``A@``, ``,i:`` -> ``i:``)."""
    return mnemonic.lstrip(_STRESS_MARKS)


def is_known(mnemonic: str) -> bool:
    """True when the mnemonic (stress marks allowed) has an entry in :data:`ESPEAK_TO_TIMIT`."""
    return strip_stress(mnemonic) in ESPEAK_TO_TIMIT


def to_timit(mnemonic: str) -> tuple[str, ...]:
    """TIMIT phones for one eSpeak mnemonic. An unknown one falls back, with a warning, to the entry of
    its longest known prefix (``aI3#`` -> ``aI3``), else to a pause if it starts with ``_``, else ``ax``."""
    name = strip_stress(mnemonic)
    if name in ESPEAK_TO_TIMIT:
        return ESPEAK_TO_TIMIT[name]
    prefix = next((name[:n] for n in range(len(name) - 1, 0, -1) if name[:n] in ESPEAK_TO_TIMIT), None)
    fallback = ESPEAK_TO_TIMIT[prefix] if prefix else (PAUSE,) if name.startswith("_") else ("ax",)
    warnings.warn(f"eSpeak phoneme {mnemonic!r} is not in the TIMIT table; using {fallback}", stacklevel=2)
    return fallback


def _split(start: int, end: int, labels: tuple[str, ...]) -> list[tuple[int, int, str]]:
    """Share ``[start, end)`` among ``labels``: closures get twice a release's share; empty parts are dropped."""
    weights = [2 if label in _CLOSURES else 1 for label in labels]
    total, acc, bounds = sum(weights), 0, [start]
    for weight in weights:
        acc += weight
        bounds.append(start + (end - start) * acc // total)
    return [(a, b, label) for a, b, label in zip(bounds, bounds[1:], labels) if b > a]


def phone_segments(events: Sequence[tuple[int, str]], n_samples: int) -> list[tuple[int, int, str]]:
    """TIMIT ``(start, end, phone)`` segments covering ``[0, n_samples)`` exactly.

    ``events`` are ``(start_sample, mnemonic)`` phoneme starts in time order; each phoneme lasts until the
    next one starts (the last until ``n_samples``). Silence before the first and after the last phone
    becomes ``h#`` (present even when empty), pauses between phones ``pau``; repeated pauses merge.
    """
    segments: list[tuple[int, int, str]] = []
    starts = [min(max(start, 0), n_samples) for start, _ in events]
    for i, (start, (_, mnemonic)) in enumerate(zip(starts, events)):
        end = starts[i + 1] if i + 1 < len(starts) else n_samples
        labels = to_timit(mnemonic)
        if not labels:  # no phone of its own: extend the previous one
            if segments:
                segments[-1] = (segments[-1][0], end, segments[-1][2])
            continue
        for segment in _split(start, end, labels):
            if segments and segment[2] == PAUSE and segments[-1][2] == PAUSE:
                segments[-1] = (segments[-1][0], segment[1], PAUSE)
            else:
                segments.append(segment)
    while segments and segments[0][2] == PAUSE:
        segments.pop(0)
    while segments and segments[-1][2] == PAUSE:
        segments.pop()
    if not segments:
        raise ValueError("no phones among the eSpeak events")
    first, last = segments[0][0], segments[-1][1]
    return [(0, first, EDGE_SILENCE), *segments, (last, n_samples, EDGE_SILENCE)]
