#!/usr/bin/env bash
# make demo: the short version of adamra-compare. Builds the Debian
# German-English corpus, trains a tiny vanilla transformer and a tiny AdaMRA
# transformer of the same size for the same number of updates on the CPU,
# translates both test sets (beam 5) and prints sacreBLEU BLEU/chrF with
# signatures, speed and memory side by side.
#
# Env: DEMO_UPDATES (default 400), DEMO_DIR (default results/demo),
#      DATA_DIR (default data/debian-de-en). Re-running reuses the data and
#      finished checkpoints.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REPO_ROOT"
UPDATES="${DEMO_UPDATES:-400}"
DATA_DIR="${DATA_DIR:-data/debian-de-en}"
DEMO_DIR="${DEMO_DIR:-results/demo}"

bash examples/translation/prepare-debian-de-en.sh --out "$DATA_DIR"
python scripts/compare.py --data-bin "$DATA_DIR/data-bin" --seeds 1 --max-update "$UPDATES" \
    --size tiny --threads "${OMP_NUM_THREADS:-2}" --out "$DEMO_DIR"
