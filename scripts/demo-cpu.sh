#!/usr/bin/env bash
# README command 1: install qwend's CPU path, fetch the small real model, start
# the daemon in the background and show it answering. The CPU model is chosen
# here, visibly (--model smollm2-135m: SmolLM2's GGUF through llama.cpp); the
# daemon itself never falls back.
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
python -m pip install --quiet -e '.[cpu]'

qwend pull smollm2-135m
qwend serve --model smollm2-135m --detach
qwend status

socket=$(python -c 'from qwend import paths; print(paths.configured_socket_path(None))')
echo
echo "\$ curl --unix-socket $socket http://qwend/v1/completions -d '{\"prompt\":\"def add(a, b):\",\"max_tokens\":16}'"
curl -sS --unix-socket "$socket" http://qwend/v1/completions \
  -H 'content-type: application/json' \
  -d '{"prompt":"def add(a, b):","max_tokens":16,"temperature":0}'
echo
echo
echo '$ qwend ask "Write a haiku about Python."'
qwend ask "Write a haiku about Python." --max-tokens 48
echo
echo "The daemon keeps running: '. .venv/bin/activate' then 'qwend status', 'qwend ask ...', 'qwend stop'."
