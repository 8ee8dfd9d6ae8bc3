#!/usr/bin/env bash
# usage: scripts/benchmarks/quality_screen.sh [VARIANT ...]
#
# The screening stage of docs/results.md ("Closing the gap"): AdaMRA variants
# against the same vanilla transformer at a cheap size and budget (tiny
# sizes with the small model's head layout, 4 heads of 32; 1000 updates;
# seed $SEEDS, default 1), one training at a time. Each variant is one
# scripts/compare.py folder under $SCREEN_DIR (default results/screen) that
# reuses the transformer of the "default" folder; finished runs are reused,
# so the script can be stopped and re-run. Every variant starts from
# --adamra-preset original (the first definition, "default" below) and adds
# its flags, so a variant keeps its meaning whatever the current default
# preset is. "transformer" trains only the transformer (into the "default"
# folder), e.g. for a second seed of a few variants:
#   SEEDS=2 SCREEN_DIR=results/screen-seed2 scripts/benchmarks/quality_screen.sh transformer hh-cross1
# Without arguments it runs every variant in the order below; then it prints
# the table of all finished variants.
source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"
cd "$REPO_ROOT"
SCREEN_DIR="${SCREEN_DIR:-results/screen}"
DATA_BIN="${DATA_BIN:-data/debian-de-en/data-bin}"
THREADS="${THREADS:-2}"  # 1 when two screens share the 2 cores (their speeds are then not comparable)
SEEDS="${SEEDS:-1}"
COMMON=(--data-bin "$DATA_BIN" --seeds "$SEEDS" --max-update 1000 --heads 4 --size tiny --threads "$THREADS")

HH="--adamra-feature-map hedgehog --adamra-cross-rates 1"
TT="$HH --adamra-decay learned --adamra-cross-feature-map taylor2 --adamra-cross-qk-norm scale"  # the tuned-taylor preset
declare -A VARIANTS=(
    # each option alone
    [default]=""  # the original preset
    [hedgehog]="--adamra-feature-map hedgehog"
    [l2]="--adamra-qk-norm l2"
    [norm]="--adamra-normaliser norm"
    [cross-rate1]="--adamra-cross-rates 1"
    [decay]="--adamra-decay learned"
    [scale]="--adamra-qk-norm scale"
    [t2r]="--adamra-feature-map t2r"
    [taylor2]="--adamra-feature-map taylor2"
    # combinations around the best single option
    [hh-cross1]="$HH"
    [hh-cross1-decay]="$HH --adamra-decay learned"
    [hh-cross1-decay-l2]="$HH --adamra-decay learned --adamra-qk-norm l2"
    [hh-cross1-decay-wide]="$HH --adamra-decay learned --adamra-cross-feature-dim 64"
    [hh-cross1-xtaylor2]="$HH --adamra-cross-feature-map taylor2"
    [hh-cross1-decay-xscale]="$HH --adamra-decay learned --adamra-cross-qk-norm scale"
    [hh-cross1-decay-both]="$HH --adamra-decay learned --adamra-normaliser both"
    [hh-cross1-decay-xtaylor2-xscale]="$HH --adamra-decay learned --adamra-cross-feature-map taylor2 --adamra-cross-qk-norm scale"
    # around tuned-taylor
    [tt-rates1]="$TT --adamra-rates 1"
    [tt-wide]="$TT --adamra-feature-dim 64"
    [tt-xsoftmax]="$TT --adamra-attention encoder,decoder"
    [tt-both]="$TT --adamra-normaliser both"
    [tt-xdim16]="$TT --adamra-cross-feature-dim 16"
    [tt-xmem32]="$TT --adamra-cross-memory 32"
    [tt-xmem64]="$TT --adamra-cross-memory 64"
    [tt-xblocks64]="$TT --adamra-cross-blocks 64"
    [taylor2-scale-cross1-decay]="--adamra-feature-map taylor2 --adamra-qk-norm scale --adamra-cross-rates 1 --adamra-decay learned"
)
ORDER=(default hedgehog l2 norm cross-rate1 hh-cross1 hh-cross1-decay hh-cross1-decay-l2 hh-cross1-decay-wide hh-cross1-xtaylor2
       hh-cross1-decay-xscale hh-cross1-decay-both hh-cross1-decay-xtaylor2-xscale tt-rates1 tt-wide tt-xsoftmax tt-both tt-xdim16 tt-xmem32 tt-xmem64 tt-xblocks64 taylor2-scale-cross1-decay decay scale t2r taylor2)

run_variant() {  # $1 = name
    local name="$1" flags
    if [ "$name" = transformer ]; then
        python scripts/compare.py "${COMMON[@]}" --models transformer --out "$SCREEN_DIR/default"
        return
    fi
    [ -n "${VARIANTS[$name]+set}" ] || die "unknown variant $name: choose from transformer ${ORDER[*]}"
    read -r -a flags <<< "--adamra-preset original ${VARIANTS[$name]}"
    if [ "$name" = default ]; then
        python scripts/compare.py "${COMMON[@]}" "${flags[@]}" --out "$SCREEN_DIR/default"
    else
        python scripts/compare.py "${COMMON[@]}" "${flags[@]}" --transformer-from "$SCREEN_DIR/default" \
            --out "$SCREEN_DIR/$name"
    fi
}

for name in "${@:-${ORDER[@]}}"; do run_variant "$name"; done
labels=()
for name in "${ORDER[@]}"; do [ -d "$SCREEN_DIR/$name" ] && labels+=("$name=$SCREEN_DIR/$name"); done
python scripts/ablation_table.py "${labels[@]}" --at 600 --json "$SCREEN_DIR/screen.json" --plot "$SCREEN_DIR/screen.png"
