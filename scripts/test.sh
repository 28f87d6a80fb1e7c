#!/usr/bin/env bash
# README command 2 (and CI): install everything, lint, type-check, fetch the
# small real model the integration tests use, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# llama-cpp-python has no binary wheel on PyPI: pip builds llama.cpp from the sdist
# once (about 6 minutes on 2 cores) and keeps the wheel in its cache (~/.cache/pip),
# which every later install reuses. So never pass --no-cache-dir here.
if ! python -m pip cache list 'llama_cpp_python*' 2>/dev/null | grep -q llama_cpp_python; then
  echo "building llama.cpp for llama-cpp-python (once per machine; about 6 minutes on 2 cores)"
fi
python -m pip install --quiet -e '.[cpu,test,dev]'

ruff check .
ruff format --check .
mypy

qwend pull smollm2-135m      # the GGUF, served by llama.cpp (the integration tests)
qwend pull smollm2-135m-hf   # the same weights as safetensors: the transformers reference
# The remote backend's test engine serves the SmolLM2 GGUF: fetched now, while
# the network is allowed, so the tests themselves never need it.
python -m tests.fixtures.llama_server
python -m pytest "$@"

# The VS Code extension: npm ci, lint, build, unit and protocol tests, .vsix.
./scripts/test-extension.sh
