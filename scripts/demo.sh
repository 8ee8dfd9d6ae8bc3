#!/usr/bin/env bash
# make demo: the Debian German-English corpus, a tiny vanilla transformer and
# a tiny AdaMRA transformer of the same size trained for the same number of
# updates on the CPU, then beam-5 translation of both test sets and sacreBLEU.
#
# Env: DEMO_UPDATES (default 600), DEMO_DIR (default checkpoints/demo),
#      DATA_DIR (default data/debian-de-en). Re-running reuses the data and
#      finished checkpoints.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REPO_ROOT"
UPDATES="${DEMO_UPDATES:-600}"
DEMO_DIR="${DEMO_DIR:-checkpoints/demo}"
DATA_DIR="${DATA_DIR:-data/debian-de-en}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

bash examples/translation/prepare-debian-de-en.sh --out "$DATA_DIR"
for arch in transformer_adamra_tiny_baseline adamra_transformer_tiny; do
    echo "== training $arch for $UPDATES updates ($OMP_NUM_THREADS threads)"
    scripts/train.sh "$DATA_DIR/data-bin" "$DEMO_DIR/$arch" --arch "$arch" \
        --max-update "$UPDATES" --lr 1e-3 --warmup-updates 200 --dropout 0.1 \
        --max-tokens 4096 --no-epoch-checkpoints --validate-interval-updates 200 \
        --log-interval 100 2>&1 | grep --line-buffered -E "train_inner|valid on|done training|Stopping|error" || true
    [ -f "$DEMO_DIR/$arch/checkpoint_last.pt" ] || die "training $arch failed (see the log above)"
    for subset in test test1; do
        echo "== translating $subset with $arch"
        scripts/generate.sh "$DATA_DIR/data-bin" "$DEMO_DIR/$arch/checkpoint_last.pt" "$subset" \
            2>/dev/null | grep -v "^Generate"
    done
done
python scripts/report.py "$DEMO_DIR"/*/
