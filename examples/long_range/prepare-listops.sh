#!/usr/bin/env bash
# ListOps (the Long Range Arena's definition), generated offline and binarised for fairseq's
# sentence_prediction task: nested [MAX / [MIN / [MED / [SM expressions over 0-9, the label is the value.
#
# usage: prepare-listops.sh [--out DIR] [any flag of python -m adamra_fairseq.data.listops]
#   --out DIR          work folder (default data/listops); data-bin lands in DIR/data-bin
#   the default is scaled down for 2 CPU cores: 10000/500/500 examples of 100-300 tokens (at
#   500-1000 tokens tiny models learn nothing in 8 minutes); the Long Range Arena's sizes:
#   --train 96000 --valid 2000 --test 2000 --min-length 500 --max-length 2000
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

OUT="data/listops"
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
build_classification_task "$OUT" listops "${ARGS[@]}"
