"""Raw files of a classification task in the layout fairseq's ``sentence_prediction`` recipes binarise."""

import os
from typing import Sequence, Tuple


def write_split(out: str, split: str, examples: Sequence[Tuple[str, str]]) -> None:
    """Writes ``out/SPLIT.input0`` (one example's tokens per line) and ``out/SPLIT.label`` (its label), each
    through a temporary file, so that a finished file is always complete."""
    os.makedirs(out, exist_ok=True)
    for suffix, lines in (("input0", [tokens for tokens, _ in examples]), ("label", [str(label) for _, label in examples])):
        path = os.path.join(out, f"{split}.{suffix}")
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        os.replace(path + ".tmp", path)
