"""LSP: headless Neovim (0.7+) asks `qwend lsp` for an inline completion and code actions.

Skipped when ``nvim`` is missing (Debian: ``apt-get install -y neovim``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import Daemon

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("nvim") is None, reason="nvim is not installed (apt-get install -y neovim)"
    ),
]

SCRIPT = r"""
local out = {}
local caps = vim.lsp.protocol.make_client_capabilities()
local id = vim.lsp.start_client({
  name = 'qwend', cmd = CMD, root_dir = ROOT, capabilities = caps,
  init_options = { autoStart = false, debounceMs = 0, maxTokens = 8, temperature = 0 },
})
vim.cmd('edit ' .. ROOT .. '/example.py')
vim.lsp.buf_attach_client(0, id)
vim.wait(20000, function()
  local c = vim.lsp.get_client_by_id(id); return c ~= nil and c.initialized
end)
local c = vim.lsp.get_client_by_id(id)
local uri = vim.uri_from_bufnr(0)
local r = c.request_sync('textDocument/inlineCompletion', {
  textDocument = { uri = uri }, position = { line = 1, character = 26 },
  context = { triggerKind = 1 } }, 60000, 0)
out.inline = r and r.result
local a = c.request_sync('textDocument/codeAction', {
  textDocument = { uri = uri },
  range = { start = { line = 0, character = 0 }, ['end'] = { line = 1, character = 0 } },
  context = { diagnostics = {} } }, 10000, 0)
out.actions = a and a.result
io.stdout:write(vim.fn.json_encode(out) .. '\n')
c.stop()
vim.wait(2000, function() return c.is_stopped() end)
vim.cmd('qall!')
"""


def test_neovim_gets_an_inline_completion(daemon: Daemon, tmp_path: Path) -> None:
    (tmp_path / "example.py").write_text("numbers = [1, 2, 3]\nsquares = [n * n for n in \n")
    command = [sys.executable, "-m", "qwend", "lsp", "--socket", str(daemon.socket)]
    lua = f"CMD = vim.fn.json_decode({json.dumps(json.dumps(command))})\n"
    lua += f"ROOT = {json.dumps(str(tmp_path))}\n" + SCRIPT
    script = tmp_path / "e2e.lua"
    script.write_text(lua)
    done = subprocess.run(
        ["nvim", "--headless", "-u", "NONE", "-i", "NONE", "-c", f"luafile {script}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no output from nvim: {done.stdout!r} {done.stderr!r}"
    out = json.loads(lines[-1])
    [item] = out["inline"]["items"]
    assert item["insertText"].strip()
    commands = {action["command"]["command"] for action in out["actions"]}
    assert "qwend.explain" in commands and "qwend.refactor" in commands
