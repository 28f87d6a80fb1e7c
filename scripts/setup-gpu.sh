#!/usr/bin/env bash
# The GPU install path (docs/gpu.md), separate from the CPU path's pinned torch:
# a venv that reuses the machine's CUDA build of torch, qwend with the `gpu`
# extra, then `qwend doctor --build` (builds exllamav2's CUDA extension in the
# foreground, with progress) and the GPU tests.
#
#   ./scripts/setup-gpu.sh            set up, build, report
#   ./scripts/setup-gpu.sh --test     ... and run the GPU tests (pytest -m gpu)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import torch, sys; sys.exit(0 if torch.version.cuda else 1)' 2>/dev/null; then
  echo "setup-gpu: the system python has no CUDA build of torch." >&2
  echo "  install one first (https://pytorch.org), e.g. pip install torch --index-url" \
       "https://download.pytorch.org/whl/cu130" >&2
  exit 1
fi

# --system-site-packages: keep the machine's CUDA torch rather than download one.
python3 -m venv --system-site-packages .venv-gpu
. .venv-gpu/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e '.[gpu,test]'

export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
qwend doctor --build --model "${QWEND_MODEL:-qwen2.5-7b-instruct}" || true

if [ "${1:-}" = "--test" ]; then
  qwend pull smollm2-135m-hf   # the GPU tests compare against the transformers reference
  python -m pytest tests/gpu -m gpu -rs -v
fi
