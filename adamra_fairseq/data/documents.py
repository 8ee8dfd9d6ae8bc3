"""Document-level segments: consecutive paragraphs of one help page, joined.

The sentence corpus pairs LibreOffice help paragraphs one by one. The
document corpus keeps every aligned paragraph of a page in page order (no
de-duplication, which would cut holes in a document) and joins consecutive
paragraphs of one page into segments of at most ``max_tokens`` subword
tokens on either side, with a separator token between paragraphs, so that a
translated segment can be split back into paragraphs for scoring. Pages go
to train/valid/test by the same hash of the page's path as in the sentence
corpus, so no page is on both sides of the split.
"""

import json
import os
from typing import Dict, Iterable, List, Sequence, Tuple

from .corpus import CorpusError, check_parallel, count_lines, split_of

SEPARATOR = "¶"  # the pilcrow: absent from the help pages, one token through Moses and BPE
SPLIT_FILES = {"train": "train", "valid": "valid", "test": "test-libreoffice"}


def split_pages(
    page_paragraphs: Iterable[Tuple[str, str, str]], valid_percent: float, test_percent: float
) -> Dict[str, List[Tuple[str, str, str]]]:
    """Sorts ``(page, source, target)`` paragraphs into the output splits, page order kept.

    The split of a page is :func:`corpus.split_of` of its path, the rule of
    the sentence corpus. A separator character inside a paragraph becomes a
    space, so the separator only ever marks a paragraph boundary.
    """
    splits: Dict[str, List[Tuple[str, str, str]]] = {name: [] for name in SPLIT_FILES.values()}
    for page, source, target in page_paragraphs:
        name = SPLIT_FILES[split_of(page, valid_percent, test_percent)]
        splits[name].append((page, source.replace(SEPARATOR, " "), target.replace(SEPARATOR, " ")))
    return splits


def write_paragraphs(paragraphs: List[Tuple[str, str, str]], prefix: str, source_lang: str, target_lang: str) -> None:
    """Writes ``prefix.SRC``, ``prefix.TGT`` and ``prefix.page`` (one paragraph per line)."""
    if not paragraphs:
        raise CorpusError(f"no paragraphs for {prefix}: check the input files and the split percentages")
    for column, suffix in ((0, "page"), (1, source_lang), (2, target_lang)):
        path = f"{prefix}.{suffix}"
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            for paragraph in paragraphs:
                handle.write(paragraph[column] + "\n")
        os.replace(path + ".tmp", path)


def group_paragraphs(pages: Sequence[str], lengths: Sequence[int], max_tokens: int) -> Tuple[List[List[int]], int]:
    """Greedy segments of consecutive paragraphs of one page.

    ``lengths[i]`` is paragraph i's length in tokens (the longer side); a
    segment of k paragraphs costs their lengths plus k - 1 separators and at
    most ``max_tokens``. Returns (segments as lists of paragraph indices,
    number of paragraphs dropped because they alone are longer than
    ``max_tokens``). A dropped paragraph ends the segment before it, so a
    segment never skips over a paragraph of its page.
    """
    if max_tokens < 1:
        raise CorpusError(f"max tokens per segment must be positive, got {max_tokens}")
    segments: List[List[int]] = []
    current: List[int] = []
    used = 0
    dropped = 0
    for index, (page, length) in enumerate(zip(pages, lengths)):
        same_page = current and pages[current[-1]] == page
        if current and (not same_page or used + 1 + length > max_tokens):
            segments.append(current)
            current, used = [], 0
        if length > max_tokens:
            dropped += 1
            continue
        used = used + 1 + length if current else length
        current.append(index)
    if current:
        segments.append(current)
    return segments, dropped


def _read_lines(path: str) -> List[str]:
    count_lines(path)
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]


def join_documents(
    measure_prefix: str,
    pages_path: str,
    langs: Sequence[str],
    max_tokens: int,
    files: Sequence[Tuple[str, str]],
) -> dict:
    """Joins paragraphs into segments; returns the segment statistics.

    ``measure_prefix.{SRC,TGT}`` (subword-segmented paragraphs, one per line)
    fix the segments; each ``(in_prefix, out_prefix)`` pair in ``files`` gets
    the same segments (e.g. the subword text for training and the raw text as
    references), paragraphs separated by `` ¶ ``. Also writes
    ``out_prefix.tokens`` for the first pair: the segment lengths in tokens
    (the longer side, separators included).
    """
    pages = _read_lines(pages_path)
    sides = [_read_lines(f"{measure_prefix}.{lang}") for lang in langs]
    for lang, lines in zip(langs, sides):
        if len(lines) != len(pages):
            raise CorpusError(
                f"{measure_prefix}.{lang} has {len(lines)} lines but {pages_path} has {len(pages)}: "
                "the page list must have one line per paragraph"
            )
    lengths = [max(len(source.split()), len(target.split())) for source, target in zip(*sides)]
    segments, dropped = group_paragraphs(pages, lengths, max_tokens)
    if not segments:
        raise CorpusError(f"{measure_prefix}: every paragraph is longer than {max_tokens} tokens")
    segment_lengths = [sum(lengths[i] for i in segment) + len(segment) - 1 for segment in segments]
    for number, (in_prefix, out_prefix) in enumerate(files):
        for lang in langs:
            lines = _read_lines(f"{in_prefix}.{lang}")
            if len(lines) != len(pages):
                raise CorpusError(f"{in_prefix}.{lang} has {len(lines)} lines, expected {len(pages)} (one per paragraph)")
            path = f"{out_prefix}.{lang}"
            with open(path + ".tmp", "w", encoding="utf-8") as handle:
                for segment in segments:
                    handle.write(f" {SEPARATOR} ".join(lines[i] for i in segment) + "\n")
            os.replace(path + ".tmp", path)
        check_parallel(f"{out_prefix}.{langs[0]}", f"{out_prefix}.{langs[1]}")
        if number == 0:
            with open(f"{out_prefix}.tokens", "w", encoding="utf-8") as handle:
                handle.writelines(f"{length}\n" for length in segment_lengths)
    return {
        "paragraphs": len(pages),
        "pages": len(set(pages)),
        "segments": len(segments),
        "dropped_paragraphs": dropped,
        "max_tokens": max_tokens,
        "length_histogram": length_histogram(segment_lengths, max_tokens),
        "mean_tokens": round(sum(segment_lengths) / len(segment_lengths), 1),
        "max_tokens_seen": max(segment_lengths),
    }


def length_buckets(lengths: Sequence[int], edges: Sequence[int]) -> Dict[str, List[int]]:
    """Indices of ``lengths`` per bucket ``"1-E1"``, ``"E1+1-E2"``, ... (ascending upper edges; longer ones left out)."""
    buckets: Dict[str, List[int]] = {}
    low = 1
    for edge in edges:
        buckets[f"{low}-{edge}"] = [i for i, length in enumerate(lengths) if low <= length <= edge]
        low = edge + 1
    return buckets


def length_histogram(lengths: Sequence[int], max_tokens: int) -> Dict[str, int]:
    """Counts per power-of-two bucket ``"1-64"``, ``"65-128"``, ... up to ``max_tokens``."""
    edges = [64]
    while edges[-1] < max_tokens:
        edges.append(edges[-1] * 2)
    return {bucket: len(members) for bucket, members in length_buckets(lengths, edges).items()}


def split_paragraphs(segment: str, separator: str = SEPARATOR) -> List[str]:
    """The paragraphs of a (detokenised) segment, separators and their spaces removed."""
    return [paragraph.strip() for paragraph in segment.split(separator)]


def write_stats(stats: Dict[str, dict], path: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(stats, handle, indent=1)
