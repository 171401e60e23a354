"""Text keys for comparing choices: "The Speaker", "speaker" and "speakers" are one choice.

A choice's key is its words lower-cased, with punctuation dropped, articles (a/an/the) removed and simple
plurals made singular. Keys are only compared with each other, never shown, so a rough singular
("glasses" -> "glass", "bus" stays "bus") is enough as long as both sides go through the same rule.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

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
    """The key two choices share when they mean the same thing: 'The Speakers ' -> 'speaker'."""
    return " ".join(words(text))


def contains(outer: str | tuple[str, ...], inner: str | tuple[str, ...]) -> bool:
    """Whether `inner`'s words appear as a contiguous run of whole words in `outer` ('small box' holds 'box',
    'boxing' does not)."""
    o = outer if isinstance(outer, tuple) else words(outer)
    i = inner if isinstance(inner, tuple) else words(inner)
    if not i:
        return False
    return f" {' '.join(i)} " in f" {' '.join(o)} "


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
