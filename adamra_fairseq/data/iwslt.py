"""IWSLT'14 German-English (TED talks): raw text from the release archive ``de-en.tgz``.

The same selection as fairseq's ``examples/translation/prepare-iwslt14.sh``:
training text from ``train.tags.de-en.{de,en}`` without its metadata lines,
every 23rd training pair held out as validation, and the test set made of
the dev2010, tst2010-2012 (TED) and dev2012 (TEDx) segments.
"""

import os
import re
from typing import Dict, List

from .corpus import CorpusError

TEST_FILES = (
    "IWSLT14.TED.dev2010",
    "IWSLT14.TEDX.dev2012",
    "IWSLT14.TED.tst2010",
    "IWSLT14.TED.tst2011",
    "IWSLT14.TED.tst2012",
)
VALID_EVERY = 23
_METADATA = ("<url", "<talkid", "<keywords", "<speaker", "<reviewer", "<translator", "<doc", "</doc")
_STRIPPED_TAGS = re.compile(r"</?(title|description)>")
_SEGMENT = re.compile(r'<seg id="?\d+"?>\s*(.*?)\s*</seg>')


def training_lines(lines) -> List[str]:
    """Text lines of a ``train.tags`` file: metadata lines dropped, title/description tags removed."""
    kept = []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith(_METADATA):
            continue
        kept.append(_STRIPPED_TAGS.sub("", stripped).strip())
    return kept


def xml_segments(text: str) -> List[str]:
    """The ``<seg id=N>`` texts of an IWSLT dev/test XML file, in order."""
    return [segment.replace("\u2019", "'") for segment in _SEGMENT.findall(text)]


def build_iwslt(orig: str, src: str = "de", tgt: str = "en") -> Dict[str, Dict[str, List[str]]]:
    """``{split: {lang: lines}}`` for train/valid/test from the extracted archive folder."""
    sides: Dict[str, Dict[str, List[str]]] = {"train": {}, "valid": {}, "test": {}}
    for lang in (src, tgt):
        path = os.path.join(orig, f"train.tags.{src}-{tgt}.{lang}")
        if not os.path.isfile(path):
            raise CorpusError(f"missing file: {path} (extract the IWSLT'14 {src}-{tgt}.tgz there)")
        with open(path, encoding="utf-8") as handle:
            lines = training_lines(handle)
        sides["valid"][lang] = [line for index, line in enumerate(lines, 1) if index % VALID_EVERY == 0]
        sides["train"][lang] = [line for index, line in enumerate(lines, 1) if index % VALID_EVERY != 0]
        test = []
        for name in TEST_FILES:
            path = os.path.join(orig, f"{name}.{src}-{tgt}.{lang}.xml")
            if not os.path.isfile(path):
                raise CorpusError(f"missing file: {path}")
            with open(path, encoding="utf-8") as handle:
                test += xml_segments(handle.read())
        sides["test"][lang] = test
    for split, by_lang in sides.items():
        if len(by_lang[src]) != len(by_lang[tgt]):
            raise CorpusError(
                f"IWSLT {split}: {len(by_lang[src])} {src} lines but {len(by_lang[tgt])} {tgt} lines"
            )
    return sides
