# Shared step of the long-input classification recipes: binarise SPLIT.input0 / SPLIT.label for
# fairseq's sentence_prediction task. Sourced by prepare-listops.sh and prepare-help-modules.sh.
source "$(dirname "${BASH_SOURCE[0]}")/../translation/common.sh"

# binarise_classification RAW_DIR OUT_DIR: OUT_DIR/input0 and OUT_DIR/label (fairseq-preprocess
# --only-source, dictionaries from train) and OUT_DIR/task.json (classes, longest example + 2 for
# the end-of-sentence marker fairseq-preprocess appends and the <s> that --init-token 0 prepends:
# what --num-classes and --max-positions need).
binarise_classification() {
    local raw="$1" out="$2" part
    need_tool fairseq-preprocess
    for part in input0 label; do
        # labels: no padding of the dictionary to a multiple of 8 (each entry is a class)
        fairseq-preprocess --only-source $([ "$part" = label ] && echo --padding-factor 1) --trainpref "$raw/train.$part" --validpref "$raw/valid.$part" \
            --testpref "$raw/test.$part" --destdir "$out/$part" --workers 1 > "$out/preprocess-$part.log" 2>&1 \
            || die "fairseq-preprocess failed on $raw/*.$part; see $out/preprocess-$part.log"
    done
    local classes longest
    classes=$(wc -l < "$out/label/dict.txt")
    longest=$(awk '{ if (NF > n) n = NF } END { print n }' "$raw"/*.input0)
    printf '{"num_classes": %d, "max_positions": %d}\n' "$classes" "$((longest + 2))" > "$out/task.json"
}

# build_classification_task OUT MODULE ARGS...: python -m adamra_fairseq.data.MODULE --out OUT/raw ARGS...
# (generated again each time, so that the binarised folder matches the flags), then OUT/data-bin;
# an existing OUT/data-bin is never overwritten.
build_classification_task() {
    local out="$1"
    RAW_MODULE="$2"; shift 2; RAW_ARGS=("$@")
    [ -e "$out/data-bin" ] && die "$out/data-bin exists: pass another --out, or delete it to rebuild"
    rm -rf "$out/raw"
    step "$out/raw" make_raw_task
    step "$out/data-bin" binarise_classification "$out/raw"
    echo "done: $out/data-bin ($(cat "$out/data-bin/task.json"))"
}
make_raw_task() {  # DIR: the raw split files of the task named by RAW_MODULE / RAW_ARGS
    PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m "adamra_fairseq.data.$RAW_MODULE" --out "$1" "${RAW_ARGS[@]}"
}
