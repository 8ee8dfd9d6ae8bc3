#!/usr/bin/env bash
# German-English parallel text from Debian packages, offline-friendly:
#   libreoffice-help-en-us + libreoffice-help-de  (help paragraphs paired by id, MPL-2.0)
#   trans-de-en                                    (Ding dictionary example sentences, GPL-2+)
# Split by help file / German headword, Moses tokenisation, joint BPE, fairseq-preprocess.
#
# usage: prepare-debian-de-en.sh [--out DIR] [--debs DIR] [--spm] [--bpe-size N]
#   --out DIR     work folder (default data/debian-de-en); data-bin lands in DIR/data-bin
#   --debs DIR    folder that already holds the three .deb files (default: download them with apt-get)
#   --spm         SentencePiece on raw text instead of Moses + subword-nmt
#   --bpe-size N  BPE merges / SentencePiece vocabulary (default 8000)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

OUT="data/debian-de-en"
DEBS=""
KIND=bpe
SIZE=8000
PACKAGES=(libreoffice-help-en-us libreoffice-help-de trans-de-en)
parse_recipe_options --debs DEBS "$@"

fetch_debs() {  # into $1
    if [ -n "$DEBS" ]; then
        for package in "${PACKAGES[@]}"; do
            compgen -G "$DEBS/${package}_*.deb" >/dev/null || die "no ${package}_*.deb in $DEBS"
            cp "$DEBS/${package}"_*.deb "$1/"
        done
        return
    fi
    need_tool apt-get
    (cd "$1" && apt-get download -o APT::Sandbox::User=root "${PACKAGES[@]}") \
        || die "apt-get download failed: run 'apt-get update' first, or pass --debs DIR with the .deb files of ${PACKAGES[*]}"
}

extract_debs() {  # $1 = out
    need_tool dpkg-deb
    for deb in "$OUT/debs"/*.deb; do dpkg-deb -x "$deb" "$1"; done
}

raw_corpus() {  # $1 = out
    data_cli debian --root "$OUT/extracted" --out "$1"
}

step "$OUT/debs" fetch_debs
step "$OUT/extracted" extract_debs
step "$OUT/raw" raw_corpus
for name in train valid test-libreoffice test-ding; do
    data_cli check-parallel --langs de en "$OUT/raw/$name"
done
segment_and_binarize "$OUT/raw" "$OUT" de en 0 "$KIND" "$SIZE" test-libreoffice,test-ding
