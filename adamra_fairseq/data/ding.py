"""Example sentences from the Ding German-English dictionary (``trans-de-en``).

Each dictionary line reads ``de1 | de2 | ... :: en1 | en2 | ...``: the n-th
``|`` part of the German side translates the n-th part of the English side.
The first part is the headword; later parts are inflections, phrases and
example sentences. We keep the pairs where both sides read as sentences.
"""

import re
from typing import Iterator, Tuple

_ANNOTATION = re.compile(r"\{[^}]*\}|\[[^\]]*\]")
_SPACES = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"[.!?]$")
MIN_WORDS = 3


def _clean(part: str) -> str:
    """First ``;`` alternative of a part, without ``{gender}``/``[domain]`` notes."""
    first = part.split("; ")[0]
    return _SPACES.sub(" ", _ANNOTATION.sub("", first)).strip()


def _is_sentence(text: str) -> bool:
    return bool(_SENTENCE_END.search(text)) and len(text.split()) >= MIN_WORDS


def example_pairs(lines) -> Iterator[Tuple[str, str, str]]:
    """Yields ``(german_headword, german, english)`` from dictionary lines.

    Comment lines (``#``), lines without `` :: `` and lines whose two sides
    have different numbers of ``|`` parts are skipped.
    """
    for line in lines:
        line = line.rstrip("\n")
        if line.startswith("#") or " :: " not in line:
            continue
        german_side, english_side = line.split(" :: ", 1)
        german_parts = german_side.split(" | ")
        english_parts = english_side.split(" | ")
        if len(german_parts) != len(english_parts):
            continue
        headword = _clean(german_parts[0])
        for de_part, en_part in zip(german_parts[1:], english_parts[1:]):
            german, english = _clean(de_part), _clean(en_part)
            if _is_sentence(german) and _is_sentence(english):
                yield headword, german, english
