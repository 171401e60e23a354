"""Text keys for comparing choices: "The Speaker", "speaker" and "speakers" are one choice, and so are
"hair clip", "hair-clip" and "hairclip" (crowd-typed labels write compounds all three ways).

A choice's key is its words lower-cased, with punctuation dropped, articles (a/an/the) removed, simple
plurals made singular, and the words then joined without spaces. Keys are only compared with each other,
never shown, so a rough singular ("glasses" -> "glass", "bus" stays "bus") is enough as long as both sides
go through the same rule.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from itertools import accumulate

BLANK = "_____"
ARTICLES = frozenset({"a", "an", "the"})
# Crowd-typed labels hold Cyrillic look-alikes ("а deodorant"); map them so the article is seen.
_CONFUSABLES = str.maketrans({"а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "х": "x", "у": "y", "і": "i"})
_NON_WORD = re.compile(r"[^a-z0-9]+")
_SPACES = re.compile(r"\s+")
_EDGE_PUNCT = " \t\n\r\"'`.,;:!?()[]{}<>*#"


def _singular(word: str) -> str:
    if len(word) <= 3 or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("es") and word[:-2].endswith(("s", "x", "z", "ch", "sh")):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word


@lru_cache(maxsize=1 << 16)
def words(text: str) -> tuple[str, ...]:
    """The comparison words of a text: lower case, ASCII look-alikes, no punctuation, no articles, singular."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_CONFUSABLES)
    return tuple(_singular(w) for w in _NON_WORD.split(text) if w and w not in ARTICLES)


def normalize(text: str) -> str:
    """The key two choices share when they mean the same thing: 'The Speakers ' -> 'speaker',
    'Nail-polish' -> 'nailpolish'."""
    return "".join(words(text))


def contains(outer: str | tuple[str, ...], inner: str | tuple[str, ...]) -> bool:
    """Whether `inner` appears in `outer` as a run of whole words, spaces aside: 'small box' holds 'box',
    'pink hairclip' holds 'hair clip', 'boxing' does not hold 'box'."""
    o = outer if isinstance(outer, tuple) else words(outer)
    i = inner if isinstance(inner, tuple) else words(inner)
    if not i:
        return False
    target, joined = "".join(i), "".join(o)
    bounds = set(accumulate((len(w) for w in o), initial=0))
    pos = joined.find(target)
    while pos != -1:  # a match must start and end where words of `outer` do
        if pos in bounds and pos + len(target) in bounds:
            return True
        pos = joined.find(target, pos + 1)
    return False


def overlaps(a: str | tuple[str, ...], b: str | tuple[str, ...]) -> bool:
    """Same key, or one inside the other: 'cup' and 'coffee cup' could both be right, so never both choices."""
    return contains(a, b) or contains(b, a)


def in_question(question: str, phrase: str | tuple[str, ...]) -> bool:
    """Whether the phrase is written in the question (each side of the blank checked on its own, so the
    words around the blank never join into a false match)."""
    return any(contains(part, phrase) for part in question.split(BLANK))


def clean_placeholder(text: str) -> str:
    """A crowd-typed object name as it is shown: one line, single spaces, lower case, no edge punctuation."""
    text = unicodedata.normalize("NFKC", str(text))
    return _SPACES.sub(" ", text).strip(_EDGE_PUNCT).strip().lower()


def noise_reason(text: str, max_chars: int) -> str | None:
    """Why a placeholder is unusable as an object name, or None: 'empty', 'too_long', 'no_letters'
    (punctuation or symbols only) or 'numbers_only'."""
    cleaned = clean_placeholder(text)
    if not cleaned:
        return "empty"
    if len(cleaned) > max_chars:
        return "too_long"
    if not any(ch.isalpha() for ch in cleaned):
        return "numbers_only" if any(ch.isdigit() for ch in cleaned) else "no_letters"
    if not words(cleaned):  # only articles, e.g. "the"
        return "empty"
    return None
