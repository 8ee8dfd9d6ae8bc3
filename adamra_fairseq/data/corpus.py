"""Deterministic train/valid/test splits of grouped sentence pairs.

Pairs are grouped (by help file, by dictionary headword) and a whole group
goes to one split, chosen by a hash of its key, so near-duplicates that share
a group never straddle train and test. The split does not depend on the
order of the input or on Python's hash seed.
"""

import hashlib
import os
from collections import OrderedDict
from typing import Dict, Iterable, List, Tuple

SPLITS = ("train", "valid", "test")
MIN_TEST_WORDS = 3  # test/valid sentences shorter than this are UI labels


class CorpusError(Exception):
    """A problem with input or output files, stated in one line."""


def split_of(group_key: str, valid_percent: float, test_percent: float) -> str:
    """Split name for a group, from a stable hash of its key."""
    digest = hashlib.sha1(group_key.encode("utf-8")).hexdigest()
    bucket = int(digest[:8], 16) % 10000 / 100.0  # in [0, 100)
    if bucket < test_percent:
        return "test"
    if bucket < test_percent + valid_percent:
        return "valid"
    return "train"


def split_pairs(
    grouped_pairs: Iterable[Tuple[str, str, str]],
    valid_percent: float,
    test_percent: float,
) -> Dict[str, List[Tuple[str, str]]]:
    """Splits ``(group_key, source, target)`` triples into train/valid/test.

    Exact duplicate pairs are kept once (first occurrence). Valid and test
    drop pairs whose source also occurs in train and pairs with fewer than
    ``MIN_TEST_WORDS`` words on either side.
    """
    splits: Dict[str, "OrderedDict[Tuple[str, str], None]"] = {
        name: OrderedDict() for name in SPLITS
    }
    for group_key, source, target in grouped_pairs:
        name = split_of(group_key, valid_percent, test_percent)
        splits[name].setdefault((source, target), None)
    train_sources = {source for source, _ in splits["train"]}
    result = {"train": list(splits["train"])}
    for name in ("valid", "test"):
        result[name] = [
            (source, target)
            for source, target in splits[name]
            if source not in train_sources
            and len(source.split()) >= MIN_TEST_WORDS
            and len(target.split()) >= MIN_TEST_WORDS
        ]
    return result


def write_parallel(
    pairs: List[Tuple[str, str]], prefix: str, source_lang: str, target_lang: str
) -> None:
    """Writes ``prefix.SRC`` and ``prefix.TGT`` atomically (temp file, then rename)."""
    if not pairs:
        raise CorpusError(
            f"no sentence pairs for {prefix}.{source_lang}-{target_lang}: "
            "check the input files and the split percentages"
        )
    for side, lang in ((0, source_lang), (1, target_lang)):
        path = f"{prefix}.{lang}"
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            for pair in pairs:
                handle.write(pair[side].replace("\n", " ") + "\n")
        os.replace(path + ".tmp", path)


def count_lines(path: str) -> int:
    """Number of lines in a text file; a clear error if it is missing or empty."""
    if not os.path.isfile(path):
        raise CorpusError(f"missing file: {path}")
    with open(path, "rb") as handle:
        count = sum(1 for _ in handle)
    if count == 0:
        raise CorpusError(f"empty file: {path}")
    return count


def check_parallel(source_path: str, target_path: str) -> int:
    """Line count shared by two parallel files; raises if they differ or are empty."""
    source_lines = count_lines(source_path)
    target_lines = count_lines(target_path)
    if source_lines != target_lines:
        raise CorpusError(
            f"{source_path} has {source_lines} lines but {target_path} has "
            f"{target_lines}: parallel files must have one sentence per line, aligned"
        )
    return source_lines
