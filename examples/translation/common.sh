# Shared steps of the translation recipes: tokenise, clean, BPE, binarise.
# Sourced by prepare-iwslt14.sh and prepare-debian-de-en.sh; needs bash.
#
# Every step writes into DIR.partial and renames it to DIR when it finished,
# so a directory without the .partial suffix is always complete; a re-run
# reuses complete directories and replaces only leftover .partial ones.

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [ -x "$REPO_ROOT/.venv/bin/python" ] && [ -z "${VIRTUAL_ENV:-}" ]; then
    export PATH="$REPO_ROOT/.venv/bin:$PATH"
fi
PY="python"
export TQDM_DISABLE=1  # subword-nmt progress bars

die() { echo "error: $*" >&2; exit 2; }

need_tool() {
    command -v "$1" >/dev/null 2>&1 \
        || die "missing tool '$1': run 'make venv' in $REPO_ROOT (or activate the environment that has it)"
}

# parse_recipe_options [FLAG VAR ...] -- "$@": the options every recipe takes
#   (--out DIR, --spm, --bpe-size N, --help) plus recipe-specific flags with a
#   value, each stored in the variable named after it. Sets OUT, KIND and SIZE
#   (defaults from the caller).
parse_recipe_options() {
    local -A extra=()
    while [ "$1" != -- ]; do extra["$1"]="$2"; shift 2; done
    shift
    while [ $# -gt 0 ]; do
        case "$1" in
            --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
            --spm) KIND=spm; shift ;;
            --bpe-size) SIZE="${2:?--bpe-size needs a number}"; shift 2 ;;
            -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
            *)
                [ -n "${extra[$1]+set}" ] || die "unknown option '$1' (see --help)"
                printf -v "${extra[$1]}" '%s' "${2:?$1 needs a value}"; shift 2 ;;
        esac
    done
    [[ "$SIZE" =~ ^[1-9][0-9]*$ ]] || die "--bpe-size '$SIZE' is not a positive integer"
    if [ "$KIND" = spm ]; then OUT="$OUT-spm"; fi
}

# data_cli ARGS...: the corpus tools of the plugin (python -m adamra_fairseq.data).
data_cli() { PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m adamra_fairseq.data "$@"; }

# step DIR FUNCTION ARGS...: runs FUNCTION PARTIAL_DIR ARGS... unless DIR exists.
step() {
    local dir="$1"; shift
    if [ -d "$dir" ]; then
        echo "reusing $dir"
        return 0
    fi
    rm -rf "$dir.partial"
    mkdir -p "$dir.partial"  # and its parents
    echo "building $dir"
    "$@" "$dir.partial"
    mv "$dir.partial" "$dir"
}

# tokenize_splits IN_DIR SRC TGT LOWERCASE(0|1) SPLITS... OUT_DIR
tokenize_splits() {
    local in_dir="$1" src="$2" tgt="$3" lower="$4"; shift 4
    local out_dir="${*: -1}" splits=("${@:1:$#-1}") lang files flag=()
    [ "$lower" = 1 ] && flag=(--lowercase)
    for lang in "$src" "$tgt"; do
        files=()
        for split in "${splits[@]}"; do files+=("$in_dir/$split.$lang" "$out_dir/$split.$lang"); done
        data_cli tokenize --lang "$lang" "${flag[@]}" "${files[@]}"
    done
}

# clean_train IN_DIR SRC TGT SPLITS... OUT_DIR: length/ratio filter on train, copy the rest.
clean_train() {
    local in_dir="$1" src="$2" tgt="$3"; shift 3
    local out_dir="${*: -1}" splits=("${@:1:$#-1}")
    data_cli clean --langs "$src" "$tgt" --ratio 1.5 --max-len 175 "$in_dir/train" "$out_dir/train"
    for split in "${splits[@]}"; do
        [ "$split" = train ] && continue
        data_cli check-parallel --langs "$src" "$tgt" "$in_dir/$split"
        cp "$in_dir/$split.$src" "$in_dir/$split.$tgt" "$out_dir/"
    done
}

# learn_apply_bpe IN_DIR SRC TGT NUM_OPS SPLITS... OUT_DIR: joint subword-nmt BPE (codes in OUT_DIR/bpecodes).
learn_apply_bpe() {
    local in_dir="$1" src="$2" tgt="$3" ops="$4"; shift 4
    local out_dir="${*: -1}"
    need_tool subword-nmt
    cat "$in_dir/train.$src" "$in_dir/train.$tgt" | subword-nmt learn-bpe -s "$ops" > "$out_dir/bpecodes"
    apply_bpe "$out_dir/bpecodes" "$in_dir" "$src" "$tgt" "$@"
}

# apply_bpe CODES IN_DIR SRC TGT SPLITS... OUT_DIR: applies existing subword-nmt codes.
apply_bpe() {
    local codes="$1" in_dir="$2" src="$3" tgt="$4"; shift 4
    local out_dir="${*: -1}" splits=("${@:1:$#-1}") lang split
    need_tool subword-nmt
    for split in "${splits[@]}"; do
        for lang in "$src" "$tgt"; do
            subword-nmt apply-bpe -c "$codes" < "$in_dir/$split.$lang" > "$out_dir/$split.$lang"
        done
    done
}

# learn_apply_spm IN_DIR SRC TGT VOCAB SPLITS... OUT_DIR: joint SentencePiece (model in OUT_DIR/spm.model).
learn_apply_spm() {
    local in_dir="$1" src="$2" tgt="$3" vocab="$4"; shift 4
    local out_dir="${*: -1}" splits=("${@:1:$#-1}") lang split files=()
    data_cli spm-train --vocab-size "$vocab" --model-prefix "$out_dir/spm" "$in_dir/train.$src" "$in_dir/train.$tgt"
    for split in "${splits[@]}"; do
        for lang in "$src" "$tgt"; do files+=("$in_dir/$split.$lang" "$out_dir/$split.$lang"); done
    done
    data_cli spm-encode --model "$out_dir/spm.model" "${files[@]}"
}

# binarize SEG_DIR RAW_DIR SRC TGT TOKENIZER BPE LOWERCASE TESTSETS OUT_DIR
#   TESTSETS: comma list of test split names; fairseq calls them test, test1, ...
#   Writes the fairseq data-bin plus what evaluation needs: the BPE model,
#   raw references (SUBSET.ref.TGT) and preprocessing.json; SEG_DIR/NAME.tokens
#   (segment lengths of a document corpus) are copied as SUBSET.tokens, and
#   $PREPROCESSING_EXTRA (JSON members) is added to preprocessing.json;
#   $PREPROCESS_DICT, if set, is the joined dictionary to use instead of a new one.
binarize() {
    local seg_dir="$1" raw_dir="$2" src="$3" tgt="$4" tokenizer="$5" bpe="$6" lower="$7" tests="$8" out_dir="$9"
    local testpref="" name subset index=0 names=()
    need_tool fairseq-preprocess
    IFS=, read -r -a names <<< "$tests"
    for name in "${names[@]}"; do testpref+="${testpref:+,}$seg_dir/$name"; done
    fairseq-preprocess --source-lang "$src" --target-lang "$tgt" \
        --trainpref "$seg_dir/train" --validpref "$seg_dir/valid" --testpref "$testpref" \
        --destdir "$out_dir" --joined-dictionary ${PREPROCESS_DICT:+--srcdict "$PREPROCESS_DICT"} --workers 2
    [ -f "$seg_dir/bpecodes" ] && cp "$seg_dir/bpecodes" "$out_dir/bpecodes"
    [ -f "$seg_dir/spm.model" ] && cp "$seg_dir/spm.model" "$out_dir/spm.model"
    local test_json=""
    for name in "${names[@]}"; do
        subset="test"; [ "$index" -gt 0 ] && subset="test$index"
        cp "$raw_dir/$name.$tgt" "$out_dir/$subset.ref.$tgt"
        cp "$raw_dir/$name.$src" "$out_dir/$subset.raw.$src"
        [ -f "$seg_dir/$name.tokens" ] && cp "$seg_dir/$name.tokens" "$out_dir/$subset.tokens"
        test_json+="${test_json:+, }\"$subset\": \"$name\""
        index=$((index + 1))
    done
    cat > "$out_dir/preprocessing.json" <<JSON
{"source_lang": "$src", "target_lang": "$tgt", "tokenizer": "$tokenizer", "bpe": "$bpe",
 "lowercase": $([ "$lower" = 1 ] && echo true || echo false), "test_sets": {$test_json}${PREPROCESSING_EXTRA:+, $PREPROCESSING_EXTRA}}
JSON
}

# segment_and_binarize RAW_DIR WORK_DIR SRC TGT LOWERCASE BPE(bpe|spm) SIZE TESTSETS
#   The common tail of every recipe: tokenise (not with spm), clean train,
#   BPE/SentencePiece, fairseq-preprocess into WORK_DIR/data-bin.
segment_and_binarize() {
    local raw="$1" work="$2" src="$3" tgt="$4" lower="$5" kind="$6" size="$7" tests="$8"
    local splits=(train valid) name
    IFS=, read -r -a names <<< "$tests"
    splits+=("${names[@]}")
    if [ "$kind" = spm ]; then
        step "$work/clean" clean_train "$raw" "$src" "$tgt" "${splits[@]}"
        step "$work/spm" learn_apply_spm "$work/clean" "$src" "$tgt" "$size" "${splits[@]}"
        step "$work/data-bin" binarize "$work/spm" "$raw" "$src" "$tgt" none sentencepiece "$lower" "$tests"
    else
        step "$work/tok" tokenize_splits "$raw" "$src" "$tgt" "$lower" "${splits[@]}"
        step "$work/clean" clean_train "$work/tok" "$src" "$tgt" "${splits[@]}"
        step "$work/bpe" learn_apply_bpe "$work/clean" "$src" "$tgt" "$size" "${splits[@]}"
        step "$work/data-bin" binarize "$work/bpe" "$raw" "$src" "$tgt" moses subword_nmt "$lower" "$tests"
    fi
    echo "binarised data: $work/data-bin"
}
