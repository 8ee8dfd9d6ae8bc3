#!/usr/bin/env bash
# usage: scripts/generate.sh DATA_BIN CHECKPOINT [SUBSET] [more fairseq-generate flags]
#
# Beam-5 fairseq-generate of SUBSET (default test) with BPE removed, then
# sacreBLEU BLEU and chrF with signatures against the raw reference
# (python -m adamra_fairseq.evaluation). Writes CHECKPOINT_DIR/generate-SUBSET.txt
# and generate-SUBSET.json.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[ $# -ge 2 ] || die "usage: scripts/generate.sh DATA_BIN CHECKPOINT [SUBSET] [fairseq-generate flags]"
DATA_BIN="$1" CHECKPOINT="$2"; shift 2
SUBSET=test
if [ $# -gt 0 ] && [[ "$1" != -* ]]; then SUBSET="$1"; shift; fi
[ -f "$CHECKPOINT" ] || die "missing checkpoint $CHECKPOINT"
[ -f "$DATA_BIN/preprocessing.json" ] || die "missing $DATA_BIN/preprocessing.json: binarise with examples/translation/prepare-*.sh"
BPE=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["bpe"])' "$DATA_BIN/preprocessing.json")
REMOVE_BPE=subword_nmt; [ "$BPE" = sentencepiece ] && REMOVE_BPE=sentencepiece
OUT_PREFIX="$(dirname "$CHECKPOINT")/generate-$SUBSET"
fairseq-generate "$DATA_BIN" --user-dir "$USER_DIR" --path "$CHECKPOINT" "${DEVICE_FLAGS[@]}" \
    --gen-subset "$SUBSET" --beam 5 --max-tokens 4096 --required-batch-size-multiple 1 \
    --remove-bpe "$REMOVE_BPE" --scoring sacrebleu "$@" > "$OUT_PREFIX.txt.tmp"
mv "$OUT_PREFIX.txt.tmp" "$OUT_PREFIX.txt"
tail -n 1 "$OUT_PREFIX.txt"
python -m adamra_fairseq.evaluation --data-bin "$DATA_BIN" --subset "$SUBSET" --json "$OUT_PREFIX.json" "$OUT_PREFIX.txt"
