#!/usr/bin/env bash
# German-English parallel text from Debian packages, offline-friendly:
#   libreoffice-help-en-us + libreoffice-help-de  (help paragraphs paired by id, MPL-2.0)
#   trans-de-en                                    (Ding dictionary example sentences, GPL-2+)
# Split by help file / German headword, Moses tokenisation, joint BPE, fairseq-preprocess.
#
# usage: prepare-debian-de-en.sh [--out DIR] [--debs DIR] [--spm] [--bpe-size N] [--doc-max-tokens N]
#   --out DIR             work folder (default data/debian-de-en); data-bin lands in DIR/data-bin
#   --debs DIR            folder that already holds the three .deb files (default: download them with apt-get)
#   --spm                 SentencePiece on raw text instead of Moses + subword-nmt
#   --bpe-size N          BPE merges / SentencePiece vocabulary (default 8000)
#   --doc-max-tokens N    also build the document corpus (e.g. 256, 1024, 4096): consecutive
#                         help paragraphs of one page joined by " ¶ " into segments of at most N
#                         BPE tokens, same BPE codes, page split and vocabulary (¶ in place of
#                         a padding entry) as the sentence corpus, so its models can continue there;
#                         data-bin in DIR/docs-N/data-bin, segment lengths in DIR/docs-N/segments/*.stats.json
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

OUT="data/debian-de-en"
DEBS=""
DOC_MAX_TOKENS=""
KIND=bpe
SIZE=8000
PACKAGES=(libreoffice-help-en-us libreoffice-help-de trans-de-en)
parse_recipe_options --debs DEBS --doc-max-tokens DOC_MAX_TOKENS -- "$@"
if [ -n "$DOC_MAX_TOKENS" ]; then
    [[ "$DOC_MAX_TOKENS" =~ ^[1-9][0-9]*$ ]] || die "--doc-max-tokens '$DOC_MAX_TOKENS' is not a positive integer"
    [ "$KIND" = bpe ] || die "--doc-max-tokens works with the Moses + BPE pipeline only: drop --spm"
fi

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
[ -n "$DOC_MAX_TOKENS" ] || exit 0

# The document corpus: paragraphs in page order, tokenised and BPE'd with the
# sentence corpus's codes, then joined into segments of at most N tokens.
DOC_SPLITS=(train valid test-libreoffice)
raw_paragraphs() {  # $1 = out
    data_cli debian-docs --root "$OUT/extracted" --out "$1"
}

join_segments() {  # $1 = out: BPE segments, raw segments (references) under raw/
    local split
    mkdir -p "$1/raw"
    for split in "${DOC_SPLITS[@]}"; do
        data_cli join-docs --langs de en --max-tokens "$DOC_MAX_TOKENS" --measure "$OUT/docs/bpe/$split" \
            --pages "$OUT/docs/raw/$split.page" --stats "$1/$split.stats.json" \
            "$OUT/docs/bpe/$split" "$1/$split" "$OUT/docs/raw/$split" "$1/raw/$split"
    done
}

doc_dictionary() {  # $1 = out: the sentence corpus's dictionary, its first padding entry replaced by ¶
    awk '!done && /^madeupword[0-9]+ / { print "¶ 0"; done = 1; next } { print } END { if (!done) print "¶ 0" }' \
        "$OUT/data-bin/dict.de.txt" > "$1/dict.txt"
}

step "$OUT/docs/raw" raw_paragraphs
step "$OUT/docs/tok" tokenize_splits "$OUT/docs/raw" de en 0 "${DOC_SPLITS[@]}"
step "$OUT/docs/bpe" apply_bpe "$OUT/bpe/bpecodes" "$OUT/docs/tok" de en "${DOC_SPLITS[@]}"
DOCS="$OUT/docs-$DOC_MAX_TOKENS"
step "$DOCS/segments" join_segments
step "$OUT/docs/dict" doc_dictionary
PREPROCESSING_EXTRA='"paragraph_separator": "¶", "max_tokens": '"$DOC_MAX_TOKENS" PREPROCESS_DICT="$OUT/docs/dict/dict.txt" \
    step "$DOCS/data-bin" binarize "$DOCS/segments" "$DOCS/segments/raw" de en moses subword_nmt 0 test-libreoffice
echo "document data: $DOCS/data-bin"
