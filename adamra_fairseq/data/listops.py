"""ListOps (Nangia & Bowman 2018, in the Long Range Arena's form), generated offline.

An example is a nested prefix expression over the digits 0-9, e.g.
``[MAX 2 9 [MIN 4 7 ] 0 ]`` (value 9), written one token per space. The
operators are ``[MAX``, ``[MIN``, ``[MED`` (median, rounded down) and
``[SM`` (sum modulo 10), each closed by ``]``, with 2 to ``max_args``
arguments. A node is an operator with probability ``operator_probability``
(else a digit), and always a digit at ``max_depth``. Trees are drawn until
their token count lies in [min_length, max_length]; the label is the value.

    python -m adamra_fairseq.data.listops --out DIR [--train 10000 --valid 500 --test 500]
        [--min-length 100 --max-length 300] [--seed 1]

writes ``{train,valid,test}.input0`` (tokens) and ``.label`` (the value) under
DIR; ``examples/long_range/prepare-listops.sh`` then binarises them for
fairseq's ``sentence_prediction`` task. The defaults are what tiny models on
two CPU cores learn from in minutes (at 500-1000 tokens they learn nothing
in 8); the Long Range Arena's sizes are ``--train 96000 --valid 2000 --test
2000 --min-length 500 --max-length 2000``.
"""

import argparse
import os
import random
import statistics
import sys
from typing import Callable, Dict, List, Sequence, Tuple

from .corpus import write_parallel

CLOSE = "]"
OPERATORS: Dict[str, Callable[[Sequence[int]], int]] = {
    "[MAX": max,
    "[MIN": min,
    "[MED": lambda values: int(statistics.median(values)),  # the mean of the middle two rounds down
    "[SM": lambda values: sum(values) % 10,
}
DIGITS = tuple(str(digit) for digit in range(10))


class ListOpsError(ValueError):
    """A malformed expression or a bad generator setting; the message says which."""


class _TooLong(Exception):
    """Raised while drawing a tree that already exceeds the length limit (it would be rejected anyway)."""


def evaluate(tokens: Sequence[str]) -> int:
    """The value of a ListOps expression given as tokens; ListOpsError if it is malformed."""
    stack: List[Tuple[str, List[int]]] = []
    result = None
    for position, token in enumerate(tokens):
        if result is not None:
            raise ListOpsError(f"token {position} ({token!r}) follows a complete expression")
        if token in OPERATORS:
            stack.append((token, []))
        elif token == CLOSE:
            if not stack:
                raise ListOpsError(f"token {position}: ']' closes nothing")
            operator, arguments = stack.pop()
            if not arguments:
                raise ListOpsError(f"token {position}: {operator} has no arguments")
            value = OPERATORS[operator](arguments)
            if stack:
                stack[-1][1].append(value)
            else:
                result = value
        elif token in DIGITS:
            if stack:
                stack[-1][1].append(int(token))
            else:
                result = int(token)
        else:
            raise ListOpsError(f"token {position}: unknown token {token!r}")
    if stack or result is None:
        raise ListOpsError("the expression is not closed")
    return result


def draw_tree(rng: random.Random, max_depth: int = 10, max_args: int = 10, operator_probability: float = 0.25,
              max_length: int = 2000) -> List[str]:
    """One random expression as tokens; raises _TooLong as soon as it passes ``max_length`` tokens."""
    tokens: List[str] = []

    def grow(depth: int) -> None:
        if len(tokens) >= max_length:
            raise _TooLong
        if depth < max_depth and rng.random() < operator_probability:
            tokens.append(rng.choice(tuple(OPERATORS)))
            for _ in range(rng.randint(2, max_args)):
                grow(depth + 1)
            tokens.append(CLOSE)
        else:
            tokens.append(rng.choice(DIGITS))

    grow(1)
    if len(tokens) > max_length:
        raise _TooLong
    return tokens


def generate(count: int, min_length: int, max_length: int, seed: int, max_depth: int = 10, max_args: int = 10,
             operator_probability: float = 0.25, exclude: frozenset = frozenset()) -> List[Tuple[List[str], int]]:
    """``count`` distinct (tokens, value) examples with min_length <= len(tokens) <= max_length, deterministic
    for a seed; expressions in ``exclude`` (joined by spaces) are skipped, so that splits do not overlap."""
    check_settings(min_length, max_length, max_depth, max_args, operator_probability)
    rng = random.Random(seed)
    examples, seen = [], set(exclude)
    while len(examples) < count:
        try:
            tokens = draw_tree(rng, max_depth, max_args, operator_probability, max_length)
        except _TooLong:
            continue
        text = " ".join(tokens)
        if len(tokens) >= min_length and text not in seen:
            seen.add(text)
            examples.append((tokens, evaluate(tokens)))
    return examples


def check_settings(min_length: int, max_length: int, max_depth: int, max_args: int,
                   operator_probability: float) -> None:
    """ListOpsError for settings that cannot produce examples (or would draw forever)."""
    if not 1 <= min_length <= max_length:
        raise ListOpsError(f"--min-length {min_length} and --max-length {max_length}: need 1 <= min <= max")
    if max_depth < 1 or max_args < 2:
        raise ListOpsError(f"--max-depth {max_depth} must be >= 1 and --max-args {max_args} >= 2")
    if not 0 < operator_probability < 1:
        raise ListOpsError(f"--operator-probability {operator_probability} must lie strictly between 0 and 1")
    # the longest tree the depth and argument limits allow: a full max_args-ary tree of operators
    longest = 1
    for _ in range(max_depth - 1):
        longest = 2 + max_args * longest
    if longest < min_length:
        raise ListOpsError(f"--max-depth {max_depth} and --max-args {max_args} allow at most {longest} tokens, "
                           f"fewer than --min-length {min_length}")


def write_splits(out: str, counts: Dict[str, int], min_length: int, max_length: int, seed: int,
                 **settings) -> Dict[str, List[int]]:
    """Writes ``SPLIT.input0`` / ``SPLIT.label`` for each split (no expression in two splits); returns the
    labels per split."""
    os.makedirs(out, exist_ok=True)
    labels, used = {}, set()
    for offset, (split, count) in enumerate(counts.items()):
        examples = generate(count, min_length, max_length, seed * 1000 + offset, exclude=frozenset(used), **settings)
        used.update(" ".join(tokens) for tokens, _ in examples)
        write_parallel([(" ".join(tokens), str(value)) for tokens, value in examples], os.path.join(out, split),
                       "input0", "label")
        labels[split] = [value for _, value in examples]
    return labels


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adamra_fairseq.data.listops", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="folder for SPLIT.input0 / SPLIT.label")
    for split, count in (("train", 10000), ("valid", 500), ("test", 500)):
        parser.add_argument(f"--{split}", type=int, default=count, help=f"{split} examples (default {count})")
    parser.add_argument("--min-length", type=int, default=100,
                        help="fewest tokens of an example (default 100; the Long Range Arena: 500)")
    parser.add_argument("--max-length", type=int, default=300,
                        help="most tokens of an example (default 300; the Long Range Arena: 2000)")
    parser.add_argument("--max-depth", type=int, default=10)
    parser.add_argument("--max-args", type=int, default=10)
    parser.add_argument("--operator-probability", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    counts = {"train": args.train, "valid": args.valid, "test": args.test}
    try:
        for split, count in counts.items():
            if count < 1:
                raise ListOpsError(f"--{split} {count} must be >= 1")
        labels = write_splits(args.out, counts, args.min_length, args.max_length, args.seed,
                              max_depth=args.max_depth, max_args=args.max_args,
                              operator_probability=args.operator_probability)
    except ListOpsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for split, values in labels.items():
        common = max(set(values), key=values.count)
        print(f"{split}: {len(values)} examples, most common value {common} "
              f"({100 * values.count(common) / len(values):.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
