# Sourced by the scripts: the repo's .venv on PATH, the plugin dir, CPU/GPU choice.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -x "$REPO_ROOT/.venv/bin/python" ] && [ -z "${VIRTUAL_ENV:-}" ]; then
    export PATH="$REPO_ROOT/.venv/bin:$PATH"
fi
USER_DIR="$REPO_ROOT/adamra_fairseq"
die() { echo "error: $*" >&2; exit 2; }
command -v fairseq-train >/dev/null 2>&1 || die "fairseq-train not found: run 'make venv' in $REPO_ROOT first"
# --cpu unless a CUDA device is visible.
DEVICE_FLAGS=()
if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    DEVICE_FLAGS=(--cpu)
fi
