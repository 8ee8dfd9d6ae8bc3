"""Scoring ``fairseq-generate`` output with sacreBLEU against the raw references.

    adamra-score --data-bin DIR --subset test GENERATE_OUTPUT [--json OUT]   (or python -m adamra_fairseq.evaluation)

Reads the hypotheses (``H-<id>`` lines, BPE already removed by
``--remove-bpe``), checks that every sentence of the subset got exactly one,
detokenises them the way the data was tokenised (``preprocessing.json``
written by the recipes) and prints BLEU and chrF with their signatures, and
sacreBLEU's length ratio (hypothesis over reference length), so that no
score hides how long the translations are.

On a document corpus (``paragraph_separator`` in ``preprocessing.json``) it
also scores the paragraphs split back out of each segment and, where the
data-bin has ``SUBSET.tokens``, each segment-length bucket. A hypothesis
with fewer paragraphs than its reference is padded with empty paragraphs,
one with more has its surplus joined to its last paragraph, and the number
of such segments is reported.
"""

import argparse
import json
import os
import sys
from typing import Dict, List

from sacrebleu.metrics import BLEU, CHRF

from .data.documents import length_buckets, split_paragraphs


class EvaluationError(Exception):
    pass


# fairseq-generate's line kinds read here: where the text is, and what the line holds
GENERATE_LINES = {"H": (2, "hypothesis"), "T": (1, "reference")}


def read_generate_lines(generate_output: str, kind: str = "H") -> Dict[int, str]:
    """``{sentence id: text}`` from fairseq-generate's ``H-id<TAB>score<TAB>text`` (``kind`` H, the
    hypotheses) or ``T-id<TAB>text`` lines (``kind`` T, the references as the data-bin holds them)."""
    text_field, what = GENERATE_LINES[kind]
    texts: Dict[int, str] = {}
    with open(generate_output, encoding="utf-8") as handle:
        for line in handle:
            if not line.startswith(kind + "-"):
                continue
            fields = line.rstrip("\n").split("\t")
            sentence_id = int(fields[0][2:])
            if sentence_id in texts:
                raise EvaluationError(
                    f"{generate_output}: sentence {sentence_id} has more than one {what} (use --nbest 1)"
                )
            texts[sentence_id] = fields[text_field] if len(fields) > text_field else ""
    return texts


def read_hypotheses(generate_output: str) -> Dict[int, str]:
    """``{sentence id: hypothesis}`` of one fairseq-generate output."""
    return read_generate_lines(generate_output, "H")


def ordered_hypotheses(hypotheses: Dict[int, str], expected: int, source: str) -> List[str]:
    """Hypotheses in sentence order; raises unless ids are exactly ``0 .. expected-1``."""
    missing = sorted(set(range(expected)) - set(hypotheses))
    if missing or len(hypotheses) != expected:
        raise EvaluationError(
            f"{source}: {len(hypotheses)} hypotheses for {expected} test sentences "
            f"(missing ids {missing[:5]}...): generate with --required-batch-size-multiple 1 "
            "and without --skip-invalid-size-inputs-valid-test"
        )
    return [hypotheses[index] for index in range(expected)]


def detokenize(lines: List[str], tokenizer: str, lang: str) -> List[str]:
    if tokenizer == "moses":
        from sacremoses import MosesDetokenizer

        detokenizer = MosesDetokenizer(lang=lang)
        return [detokenizer.detokenize(line.split()) for line in lines]
    return lines


def _scores(hypotheses: List[str], references: List[str], lowercase: bool) -> dict:
    """BLEU and chrF with signatures, and sacreBLEU's length ratio: hypothesis over reference length in BLEU's
    tokens (below 1: the translations are shorter than the references, which costs chrF and BLEU's brevity
    penalty)."""
    bleu, chrf = BLEU(lowercase=lowercase), CHRF(lowercase=lowercase)
    bleu_score = bleu.corpus_score(hypotheses, [references])
    return {
        "bleu": round(bleu_score.score, 2),
        "chrf": round(chrf.corpus_score(hypotheses, [references]).score, 2),
        "length_ratio": round(bleu_score.sys_len / bleu_score.ref_len, 3) if bleu_score.ref_len else 0.0,
        "hyp_len": bleu_score.sys_len,
        "ref_len": bleu_score.ref_len,
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }


def paired_paragraphs(hypothesis: str, reference: str, separator: str) -> List[tuple]:
    """``(hypothesis paragraph, reference paragraph)`` pairs of one segment.

    Missing hypothesis paragraphs are empty; surplus ones are joined to the
    last paragraph, so every reference paragraph is scored exactly once.
    """
    wanted = split_paragraphs(reference, separator)
    got = split_paragraphs(hypothesis, separator)
    if len(got) > len(wanted):
        got = got[: len(wanted) - 1] + [" ".join(got[len(wanted) - 1:])]
    got += [""] * (len(wanted) - len(got))
    return list(zip(got, wanted))


def document_scores(hypotheses: List[str], references: List[str], separator: str,
                    lengths: List[int], lowercase: bool) -> dict:
    """Paragraph-level scores and per-length-bucket segment scores of a document test set."""
    pairs = [pair for hypothesis, reference in zip(hypotheses, references)
             for pair in paired_paragraphs(hypothesis, reference, separator)]
    mismatched = sum(hypothesis.count(separator) != reference.count(separator)
                     for hypothesis, reference in zip(hypotheses, references))
    result = {"paragraphs": {"count": len(pairs), "segments_with_other_paragraph_count": mismatched,
                             **_scores([h for h, _ in pairs], [r for _, r in pairs], lowercase)}}
    if lengths:
        buckets = {}
        for bucket, chosen in length_buckets(lengths, (128, 256, 512, 1024, 2048, 4096, 8192)).items():
            if chosen:
                scores = _scores([hypotheses[i] for i in chosen], [references[i] for i in chosen], lowercase)
                buckets[bucket] = {"segments": len(chosen), "bleu": scores["bleu"], "chrf": scores["chrf"],
                                   "length_ratio": scores["length_ratio"]}
        result["length_buckets"] = buckets
    return result


def _read_lines(path: str) -> List[str]:
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle]


def evaluate(data_bin: str, subset: str, generate_output: str) -> dict:
    """BLEU/chrF of one subset, with signatures and the test-set name."""
    config_path = os.path.join(data_bin, "preprocessing.json")
    if not os.path.isfile(config_path):
        raise EvaluationError(f"missing {config_path}: binarise the data with examples/translation/prepare-*.sh")
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    reference_path = os.path.join(data_bin, f"{subset}.ref.{config['target_lang']}")
    if not os.path.isfile(reference_path):
        raise EvaluationError(f"missing reference {reference_path}: is '{subset}' a test subset of {data_bin}?")
    references = _read_lines(reference_path)
    hypotheses = ordered_hypotheses(read_hypotheses(generate_output), len(references), generate_output)
    hypotheses = detokenize(hypotheses, config["tokenizer"], config["target_lang"])
    lowercase = bool(config.get("lowercase"))
    result = {
        "subset": subset,
        "test_set": config.get("test_sets", {}).get(subset, subset),
        "sentences": len(references),
        **_scores(hypotheses, references, lowercase),
    }
    separator = config.get("paragraph_separator")
    if separator:
        lengths_path = os.path.join(data_bin, f"{subset}.tokens")
        lengths = [int(line) for line in _read_lines(lengths_path)] if os.path.isfile(lengths_path) else []
        if lengths and len(lengths) != len(references):
            raise EvaluationError(f"{lengths_path} has {len(lengths)} lines for {len(references)} segments")
        result.update(document_scores(hypotheses, references, separator, lengths, lowercase))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="adamra-score", description=__doc__.split("\n")[0])
    parser.add_argument("--data-bin", required=True)
    parser.add_argument("--subset", default="test")
    parser.add_argument("--json", help="also write the scores to this JSON file")
    parser.add_argument("generate_output")
    args = parser.parse_args(argv)
    try:
        if not os.path.isfile(args.generate_output):
            raise EvaluationError(f"missing file: {args.generate_output}")
        result = evaluate(args.data_bin, args.subset, args.generate_output)
    except (EvaluationError, OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{result['test_set']} ({result['sentences']} sentences): "
          f"BLEU {result['bleu']:.2f}  chrF {result['chrf']:.2f}  length ratio {result['length_ratio']:.3f} "
          f"({result['hyp_len']} / {result['ref_len']})")
    if "paragraphs" in result:
        paragraphs = result["paragraphs"]
        print(f"  paragraphs split back out ({paragraphs['count']}; "
              f"{paragraphs['segments_with_other_paragraph_count']} segments with another paragraph count): "
              f"BLEU {paragraphs['bleu']:.2f}  chrF {paragraphs['chrf']:.2f}")
        for bucket, scores in result.get("length_buckets", {}).items():
            print(f"  segments of {bucket} tokens ({scores['segments']}): BLEU {scores['bleu']:.2f}  "
                  f"chrF {scores['chrf']:.2f}  length ratio {scores['length_ratio']:.3f}")
    print(f"  BLEU signature: {result['bleu_signature']}")
    print(f"  chrF signature: {result['chrf_signature']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
