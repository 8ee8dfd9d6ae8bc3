#!/usr/bin/env bash
# usage: scripts/train.sh DATA_BIN SAVE_DIR --arch ARCH [more fairseq-train flags]
#
# fairseq-train with the usual translation recipe: label-smoothed cross-entropy
# (0.1), Adam (0.9, 0.98), inverse-sqrt schedule, dropout 0.3, shared
# embeddings. Flags given after SAVE_DIR override these defaults. Training
# resumes from SAVE_DIR/checkpoint_last.pt if it exists (fairseq's behaviour).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[ $# -ge 2 ] || die "usage: scripts/train.sh DATA_BIN SAVE_DIR --arch ARCH [fairseq-train flags]"
DATA_BIN="$1" SAVE_DIR="$2"; shift 2
compgen -G "$DATA_BIN/dict.*.txt" >/dev/null \
    || die "$DATA_BIN is not a fairseq data-bin (no dict.*.txt): run examples/translation/prepare-*.sh first"
[[ " $* " == *" --arch "* || " $* " == *" -a "* ]] || die "pass --arch (e.g. --arch transformer_iwslt_de_en or adamra_transformer_iwslt_de_en)"
exec fairseq-train "$DATA_BIN" --user-dir "$USER_DIR" --save-dir "$SAVE_DIR" "${DEVICE_FLAGS[@]}" \
    --share-all-embeddings \
    --optimizer adam --adam-betas '(0.9, 0.98)' --clip-norm 0.0 \
    --lr 5e-4 --lr-scheduler inverse_sqrt --warmup-updates 4000 \
    --dropout 0.3 --weight-decay 0.0001 \
    --criterion label_smoothed_cross_entropy --label-smoothing 0.1 \
    --max-tokens 4096 --seed 1 --log-format simple --log-interval 50 \
    "$@"
