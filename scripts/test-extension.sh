#!/usr/bin/env bash
# The VS Code extension's part of the test suite (scripts/test.sh runs it after
# the Python tests): install (npm ci, offline-safe), type-check and lint, build,
# unit tests, the protocol test against the real `qwend lsp` and daemon, and
# the .vsix. Needs node 20 and npm, and `qwend` on PATH (the venv) with the
# SmolLM2 model pulled. The end-to-end test in a real VS Code is separate:
# scripts/e2e-vscode.sh.
set -euo pipefail
cd "$(dirname "$0")/../vscode-extension"

command -v node >/dev/null || { echo "test-extension: node 20 is needed (apt-get install nodejs npm)" >&2; exit 1; }
command -v qwend >/dev/null || { echo "test-extension: qwend is not on PATH (activate the venv)" >&2; exit 1; }
echo "test-extension: node $(node --version), npm $(npm --version 2>/dev/null)"

# --ignore-scripts: no install script is needed (esbuild's binary comes as the
# @esbuild/linux-x64 package; keytar, which vsce only uses to publish, would try
# to download a prebuilt binary and then compile).
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
npm run -s lint
npm run -s build
npm run -s test:unit
npm run -s test:protocol
npm run -s package
ls -l dist/qwend.vsix
