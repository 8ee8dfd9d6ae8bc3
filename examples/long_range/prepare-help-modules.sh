#!/usr/bin/env bash
# Which LibreOffice help module a 1-4K-byte passage comes from (Basic, Calc, Impress, Writer), byte-level,
# English and German, binarised for fairseq's sentence_prediction task. Pages are split by a hash of their
# path, so no page (or its translation) straddles train and test.
#
# usage: prepare-help-modules.sh [--out DIR] [--root EXTRACTED] [any flag of python -m adamra_fairseq.data.help_modules]
#   --out DIR          work folder (default data/help-modules); data-bin lands in DIR/data-bin
#   --root EXTRACTED   where the Debian help packages were extracted (default data/debian-de-en/extracted,
#                      which examples/translation/prepare-debian-de-en.sh makes)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

OUT="data/help-modules"
ROOT="data/debian-de-en/extracted"
ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="${2:?--out needs a folder}"; shift 2 ;;
        --root) ROOT="${2:?--root needs a folder}"; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) ARGS+=("$1"); shift ;;
    esac
done
[ -d "$ROOT" ] || die "no $ROOT: run examples/translation/prepare-debian-de-en.sh first, or pass --root"
build_classification_task "$OUT" help_modules --root "$ROOT" "${ARGS[@]}"
