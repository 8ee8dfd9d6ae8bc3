"""Command line for the corpus steps used by ``examples/translation/*.sh``.

    python -m adamra_fairseq.data debian --root EXTRACTED --out RAW_DIR
    python -m adamra_fairseq.data debian-docs --root EXTRACTED --out RAW_DIR
    python -m adamra_fairseq.data join-docs --langs de en --max-tokens N --measure BPE_PREFIX \
        --pages PAGES [--stats JSON] IN_PREFIX OUT_PREFIX [IN_PREFIX OUT_PREFIX ...]
    python -m adamra_fairseq.data iwslt --orig EXTRACTED_DE_EN --out RAW_DIR
    python -m adamra_fairseq.data tokenize --lang de [--lowercase] IN OUT [IN OUT ...]
    python -m adamra_fairseq.data clean --langs de en IN_PREFIX OUT_PREFIX
    python -m adamra_fairseq.data check-parallel --langs de en PREFIX [PREFIX ...]
    python -m adamra_fairseq.data spm-train --vocab-size 8000 --model-prefix P FILE...
    python -m adamra_fairseq.data spm-encode --model M IN OUT [IN OUT ...]

Every problem is reported as one ``error:`` line with exit status 2.
"""

import argparse
import os
import sys

from .corpus import CorpusError, check_parallel, count_lines, split_pairs, write_parallel
from . import ding, documents, iwslt, libreoffice, text

DING_FILE = "usr/share/trans/de-en"


def _pairs_in_order(files):
    """``(in, out)`` tuples from a flat ``IN OUT IN OUT`` list."""
    if len(files) % 2:
        raise CorpusError("expected pairs of input and output files (IN OUT [IN OUT ...])")
    return list(zip(files[0::2], files[1::2]))


def _libreoffice_roots(root: str):
    """The English and German help folders under an extraction root; a clear error if missing."""
    en_root = os.path.join(root, libreoffice.HELP_ROOT_EN)
    de_root = os.path.join(root, libreoffice.HELP_ROOT_DE)
    for required in (en_root, de_root):
        if not os.path.isdir(required):
            raise CorpusError(f"missing directory: {required} (extract libreoffice-help-en-us and libreoffice-help-de there)")
    return en_root, de_root


def build_debian(root: str, out: str, valid_percent: float, test_percent: float) -> None:
    """Writes train/valid/test-libreoffice/test-ding ``.de``/``.en`` files under ``out``."""
    en_root, de_root = _libreoffice_roots(root)
    ding_path = os.path.join(root, DING_FILE)
    count_lines(ding_path)
    office = split_pairs(
        libreoffice.aligned_pairs(en_root, de_root), valid_percent, test_percent
    )
    with open(ding_path, encoding="utf-8") as handle:
        dictionary = split_pairs(ding.example_pairs(handle), valid_percent, test_percent)
    os.makedirs(out, exist_ok=True)
    outputs = {
        "train": office["train"] + dictionary["train"],
        "valid": office["valid"] + dictionary["valid"],
        "test-libreoffice": office["test"],
        "test-ding": dictionary["test"],
    }
    for name, pairs in outputs.items():
        write_parallel(pairs, os.path.join(out, name), "de", "en")
    print(
        "sentence pairs: "
        + ", ".join(f"{name} {len(pairs)}" for name, pairs in outputs.items())
        + f" (LibreOffice train {len(office['train'])}, Ding train {len(dictionary['train'])})"
    )


def build_debian_documents(root: str, out: str, valid_percent: float, test_percent: float) -> None:
    """Writes the help paragraphs in page order: ``SPLIT.de``, ``SPLIT.en``, ``SPLIT.page`` under ``out``."""
    en_root, de_root = _libreoffice_roots(root)
    splits = documents.split_pages(libreoffice.aligned_pairs(en_root, de_root), valid_percent, test_percent)
    os.makedirs(out, exist_ok=True)
    for name, paragraphs in splits.items():
        documents.write_paragraphs(paragraphs, os.path.join(out, name), "de", "en")
    print("paragraphs: " + ", ".join(
        f"{name} {len(paragraphs)} ({len({page for page, _, _ in paragraphs})} pages)"
        for name, paragraphs in splits.items()))


def build_iwslt(orig: str, out: str) -> None:
    """Writes train/valid/test ``.de``/``.en`` files of IWSLT'14 under ``out``."""
    os.makedirs(out, exist_ok=True)
    sides = iwslt.build_iwslt(orig)
    for name, by_lang in sides.items():
        write_parallel(list(zip(by_lang["de"], by_lang["en"])), os.path.join(out, name), "de", "en")
    print("sentence pairs: " + ", ".join(f"{name} {len(by_lang['de'])}" for name, by_lang in sides.items()))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adamra_fairseq.data", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    debian = commands.add_parser("debian", help="German-English pairs from extracted Debian packages")
    debian.add_argument("--root", required=True, help="folder the .deb files were extracted into (dpkg-deb -x)")
    debian.add_argument("--out", required=True, help="output folder for the raw split files")
    debian.add_argument("--valid-percent", type=float, default=3.0)
    debian.add_argument("--test-percent", type=float, default=5.0)

    debian_docs = commands.add_parser("debian-docs", help="LibreOffice help paragraphs in page order, split by page")
    debian_docs.add_argument("--root", required=True, help="folder the .deb files were extracted into (dpkg-deb -x)")
    debian_docs.add_argument("--out", required=True, help="output folder for the raw paragraph files")
    debian_docs.add_argument("--valid-percent", type=float, default=3.0)
    debian_docs.add_argument("--test-percent", type=float, default=5.0)

    join_docs = commands.add_parser("join-docs", help="join consecutive paragraphs of a page into segments")
    join_docs.add_argument("--langs", nargs=2, required=True, metavar=("SRC", "TGT"))
    join_docs.add_argument("--max-tokens", type=int, required=True, help="tokens per segment at most (longer side)")
    join_docs.add_argument("--measure", required=True, metavar="PREFIX",
                           help="subword-segmented paragraphs whose token counts fix the segments")
    join_docs.add_argument("--pages", required=True, help="one page name per paragraph line")
    join_docs.add_argument("--stats", help="write the segment statistics (lengths) to this JSON file")
    join_docs.add_argument("files", nargs="+", metavar="IN OUT")

    iwslt_parser = commands.add_parser("iwslt", help="IWSLT'14 de-en raw splits from the extracted archive")
    iwslt_parser.add_argument("--orig", required=True, help="the extracted de-en folder of de-en.tgz")
    iwslt_parser.add_argument("--out", required=True)

    tokenize = commands.add_parser("tokenize", help="Moses tokenisation (sacremoses)")
    tokenize.add_argument("--lang", required=True)
    tokenize.add_argument("--lowercase", action="store_true")
    tokenize.add_argument("files", nargs="+", metavar="IN OUT")

    clean = commands.add_parser("clean", help="drop empty, long and badly length-matched pairs")
    clean.add_argument("--langs", nargs=2, required=True, metavar=("SRC", "TGT"))
    clean.add_argument("--min-len", type=int, default=1)
    clean.add_argument("--max-len", type=int, default=175)
    clean.add_argument("--ratio", type=float, default=1.5)
    clean.add_argument("in_prefix")
    clean.add_argument("out_prefix")

    check = commands.add_parser("check-parallel", help="fail unless PREFIX.SRC and PREFIX.TGT are non-empty and aligned")
    check.add_argument("--langs", nargs=2, required=True, metavar=("SRC", "TGT"))
    check.add_argument("prefixes", nargs="+")

    spm_train = commands.add_parser("spm-train", help="train a joint SentencePiece model")
    spm_train.add_argument("--vocab-size", type=int, required=True)
    spm_train.add_argument("--model-prefix", required=True)
    spm_train.add_argument("files", nargs="+")

    spm_encode = commands.add_parser("spm-encode", help="apply a SentencePiece model")
    spm_encode.add_argument("--model", required=True)
    spm_encode.add_argument("files", nargs="+", metavar="IN OUT")

    args = parser.parse_args(argv)
    try:
        if args.command == "debian":
            build_debian(args.root, args.out, args.valid_percent, args.test_percent)
        elif args.command == "debian-docs":
            build_debian_documents(args.root, args.out, args.valid_percent, args.test_percent)
        elif args.command == "join-docs":
            stats = documents.join_documents(args.measure, args.pages, args.langs, args.max_tokens,
                                             _pairs_in_order(args.files))
            print(f"{args.measure}: {stats['paragraphs']} paragraphs of {stats['pages']} pages -> "
                  f"{stats['segments']} segments of at most {args.max_tokens} tokens "
                  f"(mean {stats['mean_tokens']}, {stats['dropped_paragraphs']} longer paragraphs dropped)")
            if args.stats:
                documents.write_stats(stats, args.stats)
        elif args.command == "iwslt":
            build_iwslt(args.orig, args.out)
        elif args.command == "tokenize":
            for in_path, out_path in _pairs_in_order(args.files):
                count_lines(in_path)
                text.tokenize_file(in_path, out_path, args.lang, args.lowercase)
        elif args.command == "clean":
            kept = text.clean_parallel(
                args.in_prefix, args.out_prefix, args.langs, args.min_len, args.max_len, args.ratio
            )
            print(f"{args.out_prefix}: kept {kept} pairs")
        elif args.command == "check-parallel":
            for prefix in args.prefixes:
                lines = check_parallel(f"{prefix}.{args.langs[0]}", f"{prefix}.{args.langs[1]}")
                print(f"{prefix}: {lines} pairs")
        elif args.command == "spm-train":
            text.train_sentencepiece(args.files, args.model_prefix, args.vocab_size)
        elif args.command == "spm-encode":
            count_lines(args.model)
            for in_path, out_path in _pairs_in_order(args.files):
                count_lines(in_path)
                text.encode_sentencepiece(args.model, in_path, out_path)
    except (CorpusError, OSError, UnicodeDecodeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
