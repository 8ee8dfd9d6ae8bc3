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
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
        --archive) ARCHIVE="${2:?--archive needs a file}"; shift 2 ;;
        --spm) KIND=spm; shift ;;
        --bpe-size) SIZE="${2:?--bpe-size needs a number}"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
[[ "$SIZE" =~ ^[1-9][0-9]*$ ]] || die "--bpe-size '$SIZE' is not a positive integer"
[ -z "$ARCHIVE" ] || [ -s "$ARCHIVE" ] || die "missing or empty archive: $ARCHIVE"
[ "$KIND" = spm ] && OUT="$OUT-spm"
mkdir -p "$OUT"

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
