"""Output lengths of fairseq-generate runs against their references: too long, too short, and where words go missing.

usage: python scripts/output_lengths.py [--buckets 10,20,40] GENERATE_OUTPUT.txt [...]

Reads the ``S-`` (source), ``T-`` (reference) and ``H-`` (hypothesis) lines
of each file that ``fairseq-generate`` (or adamra-compare, which keeps them
as ``generate-<subset>.txt``) wrote, and prints per file: the total
hypothesis words over the total reference words, and how many segments are
over 1.15x or under 0.7x their reference's length. BLEU's precision
punishes long outputs and chrF's recall short ones, so this tells which of
the two a model's score is paying for.

A second table splits each file by source length (words; ``--buckets`` gives
the upper bounds) and gives, per bucket, the length ratio, how often the
hypothesis stops early (under 0.8x its reference's words), and where the
missing words of those short hypotheses are: the reference words left
unmatched by a word alignment (difflib's matching blocks, case-insensitive)
either run to the reference's end (the hypothesis stopped before the end) or
lie inside it (words left out in the middle).
"""

import argparse
import difflib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from adamra_fairseq.evaluation import EvaluationError, read_generate_lines  # noqa: E402

EARLY = 0.8  # a hypothesis under this share of its reference's words stopped early


def read_pairs(path):
    """``{id: (reference, hypothesis)}`` of one generate output; fails with one line if it has none."""
    references, hypotheses = read_generate_lines(path, "T"), read_generate_lines(path, "H")
    if not references:
        sys.exit(f"error: {path} has no T- lines: give a fairseq-generate output (generate-test.txt)")
    return {key: (reference, hypotheses.get(key, "")) for key, reference in references.items()}


def read_sources(path):
    """``{id: source}`` from the ``S-id<TAB>text`` lines."""
    sources = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("S-"):
                key, _, text = line.rstrip("\n").partition("\t")
                sources[int(key[2:])] = text
    return sources


def missing_at_end(hypothesis, reference):
    """Whether the reference words a hypothesis misses run to the reference's end (it stopped early) rather than
    lying inside it; None when it misses none. A final punctuation mark the hypothesis also ends with counts as
    matched."""
    ref, hyp = [word.lower() for word in reference.split()], [word.lower() for word in hypothesis.split()]
    if ref and hyp and ref[-1] == hyp[-1] and not ref[-1].isalnum():
        ref, hyp = ref[:-1], hyp[:-1]
    matched = set()
    for block in difflib.SequenceMatcher(None, ref, hyp, autojunk=False).get_matching_blocks():
        matched.update(range(block.a, block.a + block.size))
    missing = [index for index in range(len(ref)) if index not in matched]
    if not missing:
        return None
    # the tail of the reference after its last matched word, against the words missing before it
    last_matched = max(matched, default=-1)
    tail = len(ref) - 1 - last_matched
    return tail >= len(missing) - tail


def bucket_rows(path, bounds):
    """Per source-length bucket: segments, hypothesis/reference words, early stops, and how many of them miss
    their reference's end rather than words inside it."""
    pairs, sources = read_pairs(path), read_sources(path)
    rows = []
    for low, high in zip((0, *bounds), (*bounds, None)):
        keys = [key for key in pairs if len(sources.get(key, "").split()) > low
                and (high is None or len(sources.get(key, "").split()) <= high)]
        if not keys:
            continue
        lengths = [(len(pairs[key][0].split()), len(pairs[key][1].split())) for key in keys]
        early = [key for key, (ref, hyp) in zip(keys, lengths) if hyp < EARLY * ref]
        at_end = sum(bool(missing_at_end(pairs[key][1], pairs[key][0])) for key in early)
        rows.append({"bucket": f"{low + 1}-{high}" if high else f"{low + 1}+", "segments": len(keys),
                     "ratio": sum(hyp for _, hyp in lengths) / max(1, sum(ref for ref, _ in lengths)),
                     "early": len(early), "early_at_end": at_end})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("outputs", nargs="+", metavar="GENERATE_OUTPUT.txt")
    parser.add_argument("--buckets", default="10,20,40",
                        help="upper bounds of the source-length buckets in words (default 10,20,40)")
    args = parser.parse_args()
    try:
        bounds = sorted({int(bound) for bound in args.buckets.split(",")})
    except ValueError:
        sys.exit(f"error: --buckets {args.buckets!r} is not a comma list of word counts, e.g. --buckets 10,20,40")
    if not bounds or bounds[0] < 1:
        sys.exit(f"error: --buckets {args.buckets!r} needs positive word counts, e.g. --buckets 10,20,40")
    print("| output | segments | hypothesis / reference words | segments > 1.15x | segments < 0.7x |")
    print("|---|---:|---:|---:|---:|")
    tables = []
    for path in args.outputs:
        try:
            pairs = read_pairs(path)
            tables.append((path, bucket_rows(path, bounds)))
        except OSError as error:
            sys.exit(f"error: cannot read {path}: {error.strerror}")
        except EvaluationError as error:
            sys.exit(f"error: {error}")
        lengths = [(len(reference.split()), len(hypothesis.split())) for reference, hypothesis in pairs.values()]
        ratio = sum(hyp for _, hyp in lengths) / max(1, sum(ref for ref, _ in lengths))
        longer = sum(1 for ref, hyp in lengths if hyp > 1.15 * ref)
        shorter = sum(1 for ref, hyp in lengths if hyp < 0.7 * ref)
        print(f"| {path} | {len(lengths)} | {ratio:.3f} | {longer} | {shorter} |")
    print(f"\n| output | source words | segments | hypothesis / reference words | stopped early (< {EARLY}x) "
          "| of which missing the end | missing words inside |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for path, rows in tables:
        for row in rows:
            share = f"{100 * row['early'] / row['segments']:.1f}%"
            print(f"| {path} | {row['bucket']} | {row['segments']} | {row['ratio']:.3f} | {row['early']} ({share}) "
                  f"| {row['early_at_end']} | {row['early'] - row['early_at_end']} |")


if __name__ == "__main__":
    main()
