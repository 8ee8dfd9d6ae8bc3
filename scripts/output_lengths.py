"""Output lengths of fairseq-generate runs against their references: too long, too short, or about right.

usage: python scripts/output_lengths.py GENERATE_OUTPUT.txt [...]

Reads the ``T-`` (reference) and ``H-`` (hypothesis) lines of
each file that ``fairseq-generate`` (or scripts/compare.py, which keeps them
as ``generate-<subset>.txt``) wrote, and prints per file: the total
hypothesis words over the total reference words, and how many segments are
over 1.15x or under 0.7x their reference's length. BLEU's precision
punishes long outputs and chrF's recall short ones, so this tells which of
the two a model's score is paying for.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from adamra_fairseq.evaluation import EvaluationError, read_generate_lines  # noqa: E402


def read_pairs(path):
    """``{id: (reference, hypothesis)}`` of one generate output; fails with one line if it has none."""
    references, hypotheses = read_generate_lines(path, "T"), read_generate_lines(path, "H")
    if not references:
        sys.exit(f"error: {path} has no T- lines: give a fairseq-generate output (generate-test.txt)")
    return {key: (reference, hypotheses.get(key, "")) for key, reference in references.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("outputs", nargs="+", metavar="GENERATE_OUTPUT.txt")
    args = parser.parse_args()
    print("| output | segments | hypothesis / reference words | segments > 1.15x | segments < 0.7x |")
    print("|---|---:|---:|---:|---:|")
    for path in args.outputs:
        try:
            pairs = read_pairs(path)
        except OSError as error:
            sys.exit(f"error: cannot read {path}: {error.strerror}")
        except EvaluationError as error:
            sys.exit(f"error: {error}")
        lengths = [(len(reference.split()), len(hypothesis.split())) for reference, hypothesis in pairs.values()]
        ratio = sum(hyp for _, hyp in lengths) / max(1, sum(ref for ref, _ in lengths))
        longer = sum(1 for ref, hyp in lengths if hyp > 1.15 * ref)
        shorter = sum(1 for ref, hyp in lengths if hyp < 0.7 * ref)
        print(f"| {path} | {len(lengths)} | {ratio:.3f} | {longer} | {shorter} |")


if __name__ == "__main__":
    main()
