"""A byte-level long-input classification task from the LibreOffice help: which module a passage is from.

Debian's ``libreoffice-help-en-us`` and ``libreoffice-help-de`` hold one
help tree per module (``text/sbasic`` Basic, ``text/scalc`` Calc,
``text/simpress`` Impress, ``text/swriter`` Writer, ...). An example is a
passage of ``min_bytes`` to ``max_bytes`` UTF-8 bytes (drawn per example)
cut from consecutive pages of one module in one language, written as one
two-digit hex token per byte; its label is the module.

Pages are split into train/valid/test by a hash of their path, so a page and
its translation are always in the same split: no passage of a test page or
of its translation is seen in training.

    python -m adamra_fairseq.data.help_modules --root EXTRACTED --out DIR
        [--modules sbasic,scalc,simpress,swriter] [--min-bytes 1000 --max-bytes 4000]
        [--valid-percent 10 --test-percent 10] [--seed 1]

writes ``{train,valid,test}.input0`` / ``.label`` under DIR (binarised by
``examples/long_range/prepare-help-modules.sh``).
"""

import argparse
import os
import random
import sys
import zlib
from collections import Counter
from typing import Dict, Iterable, Iterator, List, Sequence, Tuple

from .corpus import write_parallel
from .libreoffice import HELP_ROOT_DE, HELP_ROOT_EN, html_files, paragraphs_of

HELP_ROOTS = {"en": HELP_ROOT_EN, "de": HELP_ROOT_DE}
DEFAULT_MODULES = ("sbasic", "scalc", "simpress", "swriter")
SPLITS = ("train", "valid", "test")


class HelpTaskError(ValueError):
    """Missing help files or bad settings; the message says which and how to fix it."""


def split_of(page: str, valid_percent: float, test_percent: float) -> str:
    """The split of a page path (``text/scalc/01/04060101.html``): the same in every language and every run."""
    bucket = zlib.crc32(page.encode("utf-8")) % 10000 / 100  # in [0, 100)
    if bucket < test_percent:
        return "test"
    if bucket < test_percent + valid_percent:
        return "valid"
    return "train"


def module_pages(help_root: str, module: str) -> List[Tuple[str, List[str]]]:
    """``(page path, paragraphs)`` of every page of ``module`` below one language's help folder, sorted."""
    pages = []
    for relative in html_files(os.path.join(help_root, "text", module)):
        paragraphs = list(paragraphs_of(os.path.join(help_root, "text", module, relative)).values())
        if paragraphs:
            pages.append((f"text/{module}/{relative}", paragraphs))
    return pages


def passages(paragraphs: Iterable[str], lengths: Iterator[int]) -> Iterator[bytes]:
    """Cuts consecutive paragraphs (joined by newlines) into passages of the next length from ``lengths``
    (in bytes); a passage ends with the paragraph that reaches its length, cut there. A remainder shorter
    than its length is dropped."""
    target, buffer = next(lengths), b""
    for paragraph in paragraphs:
        buffer += (paragraph + "\n").encode("utf-8")
        if len(buffer) >= target:
            yield buffer[:target]
            target, buffer = next(lengths), b""


def byte_tokens(passage: bytes) -> str:
    """``b"Ab"`` -> ``"41 62"``: one hex token per byte (a fixed vocabulary of at most 256 symbols)."""
    return " ".join(f"{byte:02x}" for byte in passage)


def build(root: str, modules: Sequence[str], min_bytes: int, max_bytes: int, valid_percent: float,
          test_percent: float, seed: int) -> Dict[str, List[Tuple[str, str]]]:
    """``{split: [(hex tokens, module), ...]}`` over both languages; lengths drawn with ``seed``."""
    if not 1 <= min_bytes <= max_bytes:
        raise HelpTaskError(f"--min-bytes {min_bytes} and --max-bytes {max_bytes}: need 1 <= min <= max")
    if valid_percent < 0 or test_percent < 0 or valid_percent + test_percent >= 100:
        raise HelpTaskError(f"--valid-percent {valid_percent} and --test-percent {test_percent} must be >= 0 "
                            "and leave some pages for training")
    rng = random.Random(seed)
    lengths = iter(lambda: rng.randint(min_bytes, max_bytes), None)
    examples: Dict[str, List[Tuple[str, str]]] = {split: [] for split in SPLITS}
    for language, relative_root in sorted(HELP_ROOTS.items()):
        help_root = os.path.join(root, relative_root)
        for module in modules:
            if not os.path.isdir(os.path.join(help_root, "text", module)):
                raise HelpTaskError(f"missing {help_root}/text/{module}: extract libreoffice-help-en-us and "
                                    "libreoffice-help-de under --root (examples/translation/prepare-debian-de-en.sh "
                                    "does), and name modules that exist")
            by_split: Dict[str, List[str]] = {split: [] for split in SPLITS}
            for page, paragraphs in module_pages(help_root, module):
                by_split[split_of(page, valid_percent, test_percent)].extend(paragraphs)
            for split, paragraphs in by_split.items():
                examples[split] += [(byte_tokens(passage), module) for passage in passages(paragraphs, lengths)]
    for split, found in examples.items():
        if not found:
            raise HelpTaskError(f"no {split} passages: lower --min-bytes or raise --{split}-percent")
    for split in SPLITS:  # modules and languages interleaved (fairseq shuffles training anyway)
        random.Random(seed + SPLITS.index(split)).shuffle(examples[split])
    return examples


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adamra_fairseq.data.help_modules",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="folder the Debian help packages were extracted into")
    parser.add_argument("--out", required=True, help="folder for SPLIT.input0 / SPLIT.label")
    parser.add_argument("--modules", default=",".join(DEFAULT_MODULES),
                        help="comma list of help modules, the classes (default %(default)s)")
    parser.add_argument("--min-bytes", type=int, default=1000)
    parser.add_argument("--max-bytes", type=int, default=4000)
    parser.add_argument("--valid-percent", type=float, default=10.0)
    parser.add_argument("--test-percent", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    modules = [module for module in args.modules.split(",") if module]
    try:
        if len(modules) < 2 or len(set(modules)) != len(modules):
            raise HelpTaskError(f"--modules {args.modules!r}: name at least two different modules")
        examples = build(args.root, modules, args.min_bytes, args.max_bytes, args.valid_percent,
                         args.test_percent, args.seed)
    except HelpTaskError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    for split, found in examples.items():
        write_parallel(found, os.path.join(args.out, split), "input0", "label")
        counts = Counter(label for _, label in found)
        print(f"{split}: {len(found)} passages; " + ", ".join(f"{module} {counts[module]}" for module in modules))
    return 0


if __name__ == "__main__":
    sys.exit(main())
