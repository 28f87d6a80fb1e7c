#!/usr/bin/env bash
# README command 2 (and CI): install everything, lint, type-check, fetch the
# small real model the integration tests use, and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e '.[cpu,test,dev]'

ruff check .
ruff format --check .
mypy

qwend pull smollm2-135m
# The remote backend's test engine serves the SmolLM2 GGUF: fetched now, while
# the network is allowed, so the tests themselves never need it.
python -m tests.fixtures.llama_server
python -m pytest "$@"

# The VS Code extension: npm ci, lint, build, unit and protocol tests, .vsix.
./scripts/test-extension.sh
