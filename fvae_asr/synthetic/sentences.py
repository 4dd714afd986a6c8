"""A small deterministic English sentence generator: a fixed vocabulary poured into a few templates.

The vocabulary uses plain, common words that eSpeak pronounces from its dictionary; the templates mix
statements, questions and clauses with a comma (which eSpeak speaks as a pause), giving well over a
million distinct sentences.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection

# Our own two calibration sentences, read by every speaker as SA1 and SA2 (preparation excludes them).
CALIBRATION_SENTENCES = (
    "The quiet farmer carried seven heavy baskets across the old bridge.",
    "Would you please bring my yellow jacket before the rain starts?",
)

_VOCABULARY: dict[str, tuple[str, ...]] = {
    "noun": tuple(
        [
            "dog",
            "cat",
            "horse",
            "teacher",
            "doctor",
            "sailor",
            "farmer",
            "baker",
            "child",
            "girl",
            "boy",
            "neighbour",
            "pilot",
            "driver",
            "singer",
            "painter",
            "student",
            "captain",
            "soldier",
            "lawyer",
            "rabbit",
            "monkey",
            "tiger",
            "goose",
            "spider",
        ]
    ),
    "thing": tuple(
        [
            "book",
            "letter",
            "basket",
            "kettle",
            "candle",
            "ladder",
            "blanket",
            "wagon",
            "bottle",
            "mirror",
            "pencil",
            "ribbon",
            "bucket",
            "hammer",
            "jacket",
            "window",
            "garden",
            "carpet",
            "orange",
            "apple",
            "biscuit",
            "engine",
            "whistle",
            "feather",
            "pillow",
        ]
    ),
    "adjective": tuple(
        [
            "small",
            "heavy",
            "bright",
            "quiet",
            "yellow",
            "purple",
            "gentle",
            "clever",
            "broken",
            "shiny",
            "dusty",
            "golden",
            "wooden",
            "silver",
            "tiny",
            "lovely",
            "muddy",
            "friendly",
            "nervous",
            "careful",
            "sleepy",
            "hungry",
            "simple",
            "modern",
        ]
    ),
    "verb": tuple(
        [
            "found",
            "carried",
            "painted",
            "dropped",
            "cleaned",
            "borrowed",
            "opened",
            "watched",
            "fixed",
            "pushed",
            "pulled",
            "bought",
            "washed",
            "hid",
            "kept",
            "sold",
            "moved",
            "lifted",
            "chose",
            "needed",
        ]
    ),
    "base_verb": tuple(
        [
            "find",
            "carry",
            "paint",
            "drop",
            "clean",
            "borrow",
            "open",
            "watch",
            "fix",
            "push",
            "pull",
            "buy",
            "wash",
            "hide",
            "sell",
            "move",
        ]
    ),
    "name": tuple(
        [
            "Mary",
            "Peter",
            "Susan",
            "David",
            "Laura",
            "Thomas",
            "Emma",
            "Robert",
            "Alice",
            "George",
            "Helen",
            "Daniel",
            "Rachel",
            "Simon",
        ]
    ),
    "place": tuple(
        [
            "kitchen",
            "station",
            "market",
            "village",
            "harbour",
            "library",
            "garage",
            "meadow",
            "office",
            "museum",
            "bakery",
            "island",
            "valley",
            "castle",
            "cellar",
            "forest",
        ]
    ),
    "preposition": tuple(["near", "behind", "inside", "beside", "under", "above", "outside", "beyond"]),
    "time": (
        "this morning",
        "last night",
        "on Monday",
        "after lunch",
        "before dinner",
        "every evening",
        "in winter",
        "at noon",
        "on Sunday",
        "yesterday",
        "at dawn",
        "last summer",
    ),
    "adverb": tuple(["quickly", "slowly", "carefully", "quietly", "happily", "suddenly", "gladly", "easily"]),
}

_TEMPLATES = (
    "The {adjective} {noun} {verb} the {thing} {preposition} the {place}.",
    "{name} {verb} a {adjective} {thing} {time}.",
    "Did the {noun} {base_verb} the {adjective} {thing} {preposition} the {place}?",
    "A {adjective} {noun} {verb} my {thing} {adverb}.",
    "{name} and the {noun} {verb} the {thing} {time}, then walked to the {place}.",
    "{time_cap}, the {noun} {adverb} {verb} a {adjective} {thing}.",
    "Why did {name} {base_verb} the {thing} {preposition} the {adjective} {place}?",
    "The {noun} said that the {thing} was {adjective}.",
)


def make_sentence(rng: random.Random) -> str:
    """One sentence: a random template with random words, all drawn from ``rng``."""
    template = rng.choice(_TEMPLATES)
    words = {slot: rng.choice(options) for slot, options in _VOCABULARY.items()}
    return template.format(time_cap=words["time"][0].upper() + words["time"][1:], **words)


def make_sentences(count: int, seed: int | str, exclude: Collection[str] = ()) -> list[str]:
    """``count`` distinct sentences (none in ``exclude``), the same list for the same arguments."""
    rng = random.Random(seed)
    seen = set(exclude)
    sentences: list[str] = []
    for _ in range(100 * count + 1000):  # far more draws than needed: collisions are rare
        if len(sentences) == count:
            break
        sentence = make_sentence(rng)
        if sentence not in seen:
            seen.add(sentence)
            sentences.append(sentence)
    else:
        raise ValueError(f"could not draw {count} distinct sentences")
    return sentences


def all_words() -> list[str]:
    """Every word the generator can write (vocabulary, template words, calibration sentences), sorted."""
    texts = [*_TEMPLATES, *CALIBRATION_SENTENCES, *(" ".join(options) for options in _VOCABULARY.values())]
    return sorted({word.lower() for text in texts for word in re.findall(r"[A-Za-z]+", re.sub(r"\{\w+\}", " ", text))})
