#!/usr/bin/env bash
# usage: scripts/train_distributed.sh NPROC DATA_BIN SAVE_DIR --arch ARCH [fairseq-train flags]
#
# Data-parallel training with NPROC processes on this machine. On CPU it uses
# torch.distributed with the gloo backend, one process per rank:
#   --distributed-world-size N --distributed-rank R --distributed-no-spawn
#   --distributed-backend gloo --distributed-init-method tcp://127.0.0.1:PORT
#   --ddp-backend legacy_ddp
# (plain --distributed-world-size N --cpu does not work in fairseq). Each rank
# takes every N-th batch, so N ranks with --max-tokens M match one process
# with --max-tokens M --update-freq N. Set OMP_NUM_THREADS per rank.
#
# With CUDA GPUs use fairseq's own launcher instead (NCCL, one process per GPU):
#   scripts/train.sh DATA_BIN SAVE_DIR --arch ARCH --distributed-world-size N
# or torchrun --nproc_per_node N $(which fairseq-train) ... --distributed-backend nccl.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
[ $# -ge 3 ] || die "usage: scripts/train_distributed.sh NPROC DATA_BIN SAVE_DIR --arch ARCH [fairseq-train flags]"
NPROC="$1"; shift
[[ "$NPROC" =~ ^[1-9][0-9]*$ ]] || die "NPROC '$NPROC' is not a positive integer"
PORT="${MASTER_PORT:-$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
pids=()
for ((rank = 0; rank < NPROC; rank++)); do
    bash "$REPO_ROOT/scripts/train.sh" "$@" \
        --distributed-world-size "$NPROC" --distributed-rank "$rank" --distributed-no-spawn \
        --distributed-backend gloo --distributed-init-method "tcp://127.0.0.1:$PORT" \
        --ddp-backend legacy_ddp &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
[ "$status" -eq 0 ] || die "a rank failed (exit $status); see its log above"
