"""Text normalisation steps of the translation recipes (Moses tokenisation, cleaning, SentencePiece)."""

import os
from typing import List, Sequence

from .corpus import CorpusError, check_parallel, count_lines


def tokenize_file(in_path: str, out_path: str, lang: str, lowercase: bool) -> int:
    """Moses-tokenises ``in_path`` line by line into ``out_path``; returns the line count."""
    from sacremoses import MosesPunctNormalizer, MosesTokenizer

    normalizer = MosesPunctNormalizer(lang=lang)
    tokenizer = MosesTokenizer(lang=lang)
    count = 0
    with open(in_path, encoding="utf-8") as source, open(
        out_path + ".tmp", "w", encoding="utf-8"
    ) as sink:
        for line in source:
            text = normalizer.normalize(line.strip())
            text = tokenizer.tokenize(text, escape=False, return_str=True)
            sink.write((text.lower() if lowercase else text) + "\n")
            count += 1
    os.replace(out_path + ".tmp", out_path)
    return count


def clean_parallel(
    in_prefix: str,
    out_prefix: str,
    langs: Sequence[str],
    min_len: int = 1,
    max_len: int = 175,
    ratio: float = 1.5,
) -> int:
    """Keeps pairs with ``min_len <= tokens <= max_len`` on both sides and a length ratio ``<= ratio``.

    The same rule as Moses' ``clean-corpus-n.perl``. Returns the kept count.
    """
    check_parallel(f"{in_prefix}.{langs[0]}", f"{in_prefix}.{langs[1]}")
    handles = [open(f"{in_prefix}.{lang}", encoding="utf-8") for lang in langs]
    outputs = [open(f"{out_prefix}.{lang}.tmp", "w", encoding="utf-8") for lang in langs]
    kept = 0
    try:
        for lines in zip(*handles):
            lengths = [len(line.split()) for line in lines]
            if min(lengths) < min_len or max(lengths) > max_len:
                continue
            if max(lengths) > ratio * min(lengths):
                continue
            for output, line in zip(outputs, lines):
                output.write(line.strip() + "\n")
            kept += 1
    finally:
        for handle in handles + outputs:
            handle.close()
    if kept == 0:
        raise CorpusError(f"cleaning {in_prefix} kept no sentence pair (length limits {min_len}-{max_len}, ratio {ratio})")
    for lang in langs:
        os.replace(f"{out_prefix}.{lang}.tmp", f"{out_prefix}.{lang}")
    return kept


def train_sentencepiece(inputs: List[str], model_prefix: str, vocab_size: int) -> None:
    """Trains a joint unigram SentencePiece model on ``inputs`` (``model_prefix.model``)."""
    import sentencepiece

    for path in inputs:
        count_lines(path)
    sentencepiece.SentencePieceTrainer.train(
        input=",".join(inputs),
        model_prefix=model_prefix,
        vocab_size=vocab_size,
        character_coverage=1.0,
        model_type="unigram",
        input_sentence_size=2000000,
        shuffle_input_sentence=True,
        minloglevel=2,
        hard_vocab_limit=False,  # small corpora: a smaller vocabulary instead of an error
    )


def encode_sentencepiece(model_path: str, in_path: str, out_path: str) -> None:
    """Splits each line of ``in_path`` into SentencePiece pieces, space separated."""
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=model_path)
    with open(in_path, encoding="utf-8") as source, open(
        out_path + ".tmp", "w", encoding="utf-8"
    ) as sink:
        for line in source:
            sink.write(" ".join(processor.encode(line.strip(), out_type=str)) + "\n")
    os.replace(out_path + ".tmp", out_path)
