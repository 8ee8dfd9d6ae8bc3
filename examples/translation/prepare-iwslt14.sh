#!/usr/bin/env bash
# IWSLT'14 German-English (TED), the standard fairseq recipe with pip tools only:
# download de-en.tgz, drop metadata, Moses tokenisation + lowercasing
# (sacremoses), length/ratio cleaning of train, joint BPE with 10k merges
# (subword-nmt), every 23rd train pair as valid, dev2010+tst2010-12+dev2012
# as test, fairseq-preprocess. Needs the web (or --archive).
#
# usage: prepare-iwslt14.sh [--out DIR] [--archive de-en.tgz] [--spm] [--bpe-size N]
#   --out DIR        work folder (default data/iwslt14-de-en); data-bin in DIR/data-bin
#   --archive FILE   use an already downloaded de-en.tgz instead of downloading it
#   --spm            SentencePiece on raw text instead of Moses + subword-nmt
#   --bpe-size N     BPE merges / SentencePiece vocabulary (default 10000)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

URL="http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz"
OUT="data/iwslt14-de-en"
ARCHIVE=""
KIND=bpe
SIZE=10000
parse_recipe_options --archive ARCHIVE -- "$@"
[ -z "$ARCHIVE" ] || [ -s "$ARCHIVE" ] || die "missing or empty archive: $ARCHIVE"

download() {  # $1 = out
    if [ -n "$ARCHIVE" ]; then
        cp "$ARCHIVE" "$1/de-en.tgz"
    elif command -v curl >/dev/null 2>&1; then
        curl -fL --retry 3 -o "$1/de-en.tgz" "$URL" || die "download of $URL failed (or pass --archive FILE)"
    else
        need_tool wget
        wget -O "$1/de-en.tgz" "$URL" || die "download of $URL failed (or pass --archive FILE)"
    fi
    tar -xzf "$1/de-en.tgz" -C "$1" || die "$1/de-en.tgz is not a valid .tgz archive"
    [ -d "$1/de-en" ] || die "$1/de-en.tgz has no de-en folder"
}

raw_corpus() {  # $1 = out
    data_cli iwslt --orig "$OUT/orig/de-en" --out "$1"
}

step "$OUT/orig" download
step "$OUT/raw" raw_corpus
segment_and_binarize "$OUT/raw" "$OUT" de en 1 "$KIND" "$SIZE" test
