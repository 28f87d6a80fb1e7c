/**
 * End-to-end in a real VS Code: code-server (on node 24) with the packaged
 * .vsix installed, driven through headless Chromium by playwright-core,
 * against the real daemon and the SmolLM2 model. Run by scripts/e2e-vscode.sh,
 * which installs the tools and passes their paths:
 *
 *   QWEND_E2E_NODE24        node 24 binary (code-server needs it)
 *   QWEND_E2E_CODE_SERVER   code-server's out/node/entry.js
 *   QWEND_E2E_VSIX          the .vsix to install
 *   QWEND_E2E_ARTIFACTS     where screenshots and logs go (optional)
 *   CHROMIUM                the browser (default /usr/bin/chromium)
 *
 * Steps (the "done when"): the status item reads ready with the
 * model; typing in a Python file shows ghost text that the daemon produced;
 * Tab accepts it into the file; "qwend: Add Docstring" from the palette edits
 * the file; after `qwend stop` the item reads offline.
 */

import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as path from 'node:path';
import { after, before, test } from 'node:test';

import { chromium, type Browser, type Page } from 'playwright-core';

import { Daemon, sleep } from '../support/daemon';

const NODE24 = required('QWEND_E2E_NODE24');
const CODE_SERVER = required('QWEND_E2E_CODE_SERVER');
const VSIX = required('QWEND_E2E_VSIX');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const VSIX_ROOT = path.resolve(__dirname, '..', '..', '..'); // vscode-extension/
const STEP_TIMEOUT_MS = 120_000;

const SQUARES = 'numbers = [1, 2, 3]\nsquares = [n * n for n\n';
const ADD = 'def add(a, b):\n    return a + b\n\n\nprint(add(1, 2))\n';

function required(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run scripts/e2e-vscode.sh`);
  }
  return value;
}

let daemon: Daemon;
let codeServer: ChildProcess | undefined;
let browser: Browser | undefined;
let page: Page;
let workspace: string;
let artifacts: string;
let step = 0;

async function shot(name: string): Promise<void> {
  await page.screenshot({ path: path.join(artifacts, `${String(++step).padStart(2, '0')}-${name}.png`) }).catch(() => {});
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

function httpOk(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    http
      .get(url, (res) => {
        res.resume();
        resolve((res.statusCode ?? 500) < 500);
      })
      .on('error', () => resolve(false));
  });
}

/** How many /v1/tasks/{task} requests the daemon has served (its /metrics). */
function taskRequests(): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get({ socketPath: daemon.socket, path: '/metrics' }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () =>
          resolve(
            body
              .split('\n')
              .filter((l) => l.startsWith('qwend_requests_total{endpoint="/v1/tasks/{task}"'))
              .reduce((n, l) => n + Number(l.split(' ').pop()), 0),
          ),
        );
      })
      .on('error', reject);
  });
}

/** The qwend status bar item's text (codicons are not text). */
async function statusText(): Promise<string> {
  const item = page.locator('.statusbar-item', { hasText: 'qwend:' }).first();
  return ((await item.textContent({ timeout: 1000 }).catch(() => '')) ?? '').trim();
}

async function waitForStatus(pattern: RegExp): Promise<string> {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  let text = '';
  while (Date.now() < deadline) {
    text = await statusText();
    if (pattern.test(text)) {
      return text;
    }
    if (/qwend: (not found|error)/.test(text)) {
      break; // no point waiting
    }
    await sleep(250);
  }
  await shot('status-timeout');
  throw new Error(`the status item never matched ${pattern}; last: "${text}"`);
}

async function openFile(name: string): Promise<void> {
  const row = page.locator('.explorer-folders-view .monaco-list-row', { hasText: name }).first();
  await row.waitFor({ timeout: STEP_TIMEOUT_MS });
  await row.dblclick();
  await page.locator('.tab.active', { hasText: name }).waitFor({ timeout: STEP_TIMEOUT_MS });
  await page.locator('.monaco-editor.focused').first().waitFor({ timeout: STEP_TIMEOUT_MS });
}

async function goToLineEnd(line: number): Promise<void> {
  await page.keyboard.press('Control+G');
  await page.keyboard.type(String(line));
  await page.keyboard.press('Enter');
  await page.keyboard.press('End');
}

/** Save the active editor and wait until the file on disk satisfies `check`. */
async function saveAndRead(file: string, check: (text: string) => boolean): Promise<string> {
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  let text = '';
  while (Date.now() < deadline) {
    await page.keyboard.press('Control+S');
    await sleep(500);
    text = fs.readFileSync(file, 'utf8');
    if (check(text)) {
      return text;
    }
  }
  return text;
}

before(async () => {
  daemon = new Daemon().start();
  artifacts = process.env.QWEND_E2E_ARTIFACTS || path.join(daemon.root, 'artifacts');
  fs.mkdirSync(artifacts, { recursive: true });
  const userData = path.join(daemon.root, 'ud');
  const extensions = path.join(daemon.root, 'ext');
  workspace = path.join(daemon.root, 'ws');
  fs.mkdirSync(path.join(userData, 'User'), { recursive: true });
  fs.mkdirSync(workspace, { recursive: true });
  fs.writeFileSync(path.join(workspace, 'squares.py'), SQUARES);
  fs.writeFileSync(path.join(workspace, 'add.py'), ADD);
  // The extension finds `qwend` in the workspace's .venv: VS Code gives the
  // extension host the login shell's PATH, which lacks the test's venv.
  fs.mkdirSync(path.join(workspace, '.venv', 'bin'), { recursive: true });
  fs.symlinkSync(daemon.qwend, path.join(workspace, '.venv', 'bin', 'qwend'));

  const install = spawnSync(
    NODE24,
    [CODE_SERVER, '--install-extension', VSIX, '--extensions-dir', extensions, '--user-data-dir', userData],
    { encoding: 'utf8', env: daemon.env, timeout: STEP_TIMEOUT_MS },
  );
  assert.equal(install.status, 0, `install failed:\n${install.stdout}\n${install.stderr}`);
  assert.match(install.stdout, /successfully installed/, install.stdout);
  const manifest = JSON.parse(fs.readFileSync(path.join(VSIX_ROOT, 'package.json'), 'utf8')) as { version: string };
  assert.ok(fs.existsSync(path.join(extensions, `qwend.qwend-${manifest.version}`)), fs.readdirSync(extensions).join());

  // code-server is a remote window: machine-scoped settings (qwend.path,
  // qwend.extraArgs) come from the remote settings (Machine/), the rest from User/.
  fs.mkdirSync(path.join(userData, 'Machine'), { recursive: true });
  fs.writeFileSync(path.join(userData, 'Machine', 'settings.json'), JSON.stringify({ 'qwend.extraArgs': daemon.args }));
  fs.writeFileSync(
    path.join(userData, 'User', 'settings.json'),
    JSON.stringify(
      {
        // `qwend` itself is found in the workspace's .venv.
        'qwend.daemon.autoStart': false,
        'qwend.server.logLevel': 'info',
        'editor.inlineSuggest.enabled': true,
        'security.workspace.trust.enabled': false,
        'workbench.startupEditor': 'none',
        'workbench.tips.enabled': false,
        'extensions.autoCheckUpdates': false,
        'extensions.autoUpdate': false,
        'telemetry.telemetryLevel': 'off',
        'editor.autoClosingBrackets': 'never',
        'editor.acceptSuggestionOnEnter': 'off',
        'editor.quickSuggestions': { other: false, comments: false, strings: false },
        'files.autoSave': 'off',
      },
      null,
      2,
    ),
  );
  await daemon.waitFor(['ready']);

  const port = await freePort();
  const csConfig = path.join(daemon.root, 'code-server.yaml');
  fs.writeFileSync(csConfig, `bind-addr: 127.0.0.1:${port}\nauth: none\ncert: false\n`);
  const log = fs.openSync(path.join(artifacts, 'code-server.log'), 'w');
  codeServer = spawn(
    NODE24,
    [
      CODE_SERVER,
      '--config', csConfig,
      '--user-data-dir', userData,
      '--extensions-dir', extensions,
      '--disable-telemetry',
      '--disable-update-check',
      '--disable-workspace-trust',
      '--disable-getting-started-override',
      workspace,
    ],
    { env: daemon.env, stdio: ['ignore', log, log], detached: true },
  ); // prettier-ignore
  fs.closeSync(log);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + STEP_TIMEOUT_MS;
  while (!(await httpOk(`${url}/healthz`))) {
    assert.ok(Date.now() < deadline, 'code-server did not come up');
    assert.equal(codeServer.exitCode, null, 'code-server exited');
    await sleep(250);
  }
  browser = await chromium.launch({ executablePath: CHROMIUM });
  page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(`${url}/?folder=${encodeURIComponent(workspace)}`);
  await page.locator('.monaco-workbench').waitFor({ timeout: STEP_TIMEOUT_MS });
});

after(async () => {
  await browser?.close().catch(() => {});
  if (codeServer?.pid && codeServer.exitCode === null) {
    try {
      process.kill(-codeServer.pid, 'SIGTERM'); // its process group: the extension host and qwend lsp too
    } catch {
      // already gone
    }
  }
  if (daemon) {
    const logs = path.join(daemon.root, 'ud', 'logs');
    if (fs.existsSync(logs)) {
      fs.cpSync(logs, path.join(artifacts, 'vscode-logs'), { recursive: true });
    }
    if (artifacts.startsWith(daemon.root)) {
      console.log(`artifacts (removed with the sandbox): set QWEND_E2E_ARTIFACTS to keep them`);
    }
    const refused = daemon.netguard();
    await daemon.stop();
    assert.equal(refused, '', 'the daemon tried to reach the network');
  }
});

test('the status item reads ready with the model name', async () => {
  const text = await waitForStatus(/qwend: ready \(smollm2-135m\)/);
  await shot('ready');
  assert.match(text, /^qwend: ready \(smollm2-135m\)$/);
});

test('typing shows ghost text from the daemon; Tab accepts it', async () => {
  await openFile('squares.py');
  await goToLineEnd(2);
  const served = await taskRequests();
  await page.keyboard.type(' in ', { delay: 60 });
  const ghost = page.locator('.monaco-editor .ghost-text-decoration, .monaco-editor .ghost-text').first();
  await ghost.waitFor({ timeout: STEP_TIMEOUT_MS });
  await sleep(300); // let the decoration settle
  const shown = ((await ghost.textContent()) ?? '').replace(/\u00a0/g, ' ');
  await shot('ghost-text');
  assert.ok(shown.trim(), 'the ghost text is empty');
  assert.ok((await taskRequests()) > served, 'the daemon served no completion');
  await page.keyboard.press('Tab');
  const file = path.join(workspace, 'squares.py');
  const text = await saveAndRead(file, (t) => t !== SQUARES && t.split('\n')[1] !== 'squares = [n * n for n in ');
  await shot('accepted');
  const line = text.split('\n')[1];
  assert.ok(line.startsWith('squares = [n * n for n in '), line);
  assert.ok(line.length > 'squares = [n * n for n in '.length, `nothing accepted: "${line}"`);
  assert.ok(line.includes(shown.trim().split('\n')[0]), `accepted "${line}" but showed "${shown}"`);
});

test('"qwend: Add Docstring" from the palette edits the file', async () => {
  await openFile('add.py');
  await goToLineEnd(1);
  await page.keyboard.press('F1');
  await page.locator('.quick-input-widget input').waitFor({ timeout: STEP_TIMEOUT_MS });
  await page.keyboard.type('qwend: Add Docstring');
  await page.locator('.quick-input-list .monaco-list-row', { hasText: 'Add Docstring' }).first().waitFor();
  await shot('palette');
  await page.keyboard.press('Enter');
  const file = path.join(workspace, 'add.py');
  const text = await saveAndRead(file, (t) => t.includes('"""'));
  await shot('docstring');
  const lines = text.split('\n');
  assert.equal(lines[0], 'def add(a, b):', text);
  assert.match(lines[1], /^ {4}"""/, text);
  assert.ok(text.endsWith('    return a + b\n\n\nprint(add(1, 2))\n'), text);
});

test('after `qwend stop` the status item reads offline', async () => {
  const stop = daemon.cli('stop');
  assert.equal(stop.status, 0, stop.stderr);
  const text = await waitForStatus(/qwend: offline/);
  await shot('offline');
  assert.equal(text, 'qwend: offline');
});
