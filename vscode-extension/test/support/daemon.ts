/**
 * The real qwend daemon for the node tests, sandboxed the way the Python
 * suites do it (tests/integration/conftest.py): a short private directory
 * under /tmp with its own socket, config file and XDG directories, the
 * network guard from tests/integration/netguard on PYTHONPATH, and the
 * SmolLM2 model from `qwend pull smollm2-135m`, its GGUF served by llama.cpp (or
 * QWEND_TEST_MODEL_DIR).
 */

import { type ChildProcess, spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';

import { findQwend } from '../../src/qwend';

/** tests/integration/netguard, beside this package in the repository. */
const REPO = path.resolve(__dirname, '..', '..', '..', '..');
const NETGUARD_DIR = path.join(REPO, 'tests', 'integration', 'netguard');
const START_TIMEOUT_MS = 180_000; // torch import plus model load on a slow 2-core machine

/** The SmolLM2 weights, as tests/integration/conftest.py finds them. */
export function modelDir(): string {
  if (process.env.QWEND_TEST_MODEL_DIR) {
    return process.env.QWEND_TEST_MODEL_DIR;
  }
  const cache = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(cache, 'qwend', 'models', 'smollm2-135m');
}

/** The `qwend` the tests run: $QWEND_BIN, else found the way the extension finds it. */
export function qwendExecutable(): string {
  if (process.env.QWEND_BIN) {
    return process.env.QWEND_BIN;
  }
  const found = findQwend({
    configured: '',
    envPath: process.env.PATH ?? '',
    home: os.homedir(),
    workspaceFolders: [path.join(REPO)],
    isExecutable: (file) => {
      try {
        fs.accessSync(file, fs.constants.X_OK);
        return fs.statSync(file).isFile();
      } catch {
        return false;
      }
    },
  });
  if (!found.ok) {
    throw new Error(`${found.message} (activate the venv: scripts/test.sh does)`);
  }
  return found.path;
}

/** Greedy decoding for the tasks the tests use, so a run is reproducible. */
const GREEDY_TASKS = ['complete', 'docstring', 'explain', 'tests', 'chat'];

function configToml(model: string): string {
  const lines = [
    '[daemon]',
    'model = "smollm2-135m"',
    'preload = true',
    '[server]',
    'shutdown_timeout_s = 20.0',
    '[models."smollm2-135m"]',
    `path = ${JSON.stringify(model)}`,
    // One llama.cpp thread: its spinning threads stall each other on busy cores.
    'threads = 1',
  ];
  for (const task of GREEDY_TASKS) {
    lines.push(`[tasks.${task}]`, 'temperature = 0.0');
  }
  return lines.join('\n') + '\n';
}

export class Daemon {
  readonly root: string;
  readonly socket: string;
  readonly config: string;
  readonly logPath: string;
  readonly netguardLog: string;
  readonly env: NodeJS.ProcessEnv;
  readonly qwend: string;
  private process: ChildProcess | undefined;

  constructor() {
    const model = modelDir();
    const hasGguf =
      fs.existsSync(model) && fs.readdirSync(model).some((name) => name.endsWith('.gguf'));
    if (!hasGguf) {
      throw new Error(
        `the SmolLM2 test model is not in ${model}: run \`qwend pull smollm2-135m\` ` +
          '(scripts/test.sh does) or set QWEND_TEST_MODEL_DIR',
      );
    }
    this.qwend = qwendExecutable();
    this.root = fs.mkdtempSync('/tmp/qwn-'); // short: a socket path must stay under 108 bytes
    this.socket = path.join(this.root, 'run', 'qwend.sock');
    this.config = path.join(this.root, 'config.toml');
    this.logPath = path.join(this.root, 'daemon.log');
    this.netguardLog = path.join(this.root, 'netguard.log');
    fs.writeFileSync(this.config, configToml(model));
    this.env = {
      ...process.env,
      XDG_CONFIG_HOME: path.join(this.root, 'xdg-config'),
      XDG_CACHE_HOME: path.join(this.root, 'xdg-cache'),
      XDG_STATE_HOME: path.join(this.root, 'xdg-state'),
      XDG_RUNTIME_DIR: path.join(this.root, 'xdg-run'),
      PYTHONPATH: [NETGUARD_DIR, process.env.PYTHONPATH ?? ''].filter(Boolean).join(path.delimiter),
      QWEND_NETGUARD_LOG: this.netguardLog,
      PYTHONUNBUFFERED: '1',
    };
  }

  /** `--config C --socket S`: what every qwend command needs to reach this daemon. */
  get args(): string[] {
    return ['--config', this.config, '--socket', this.socket];
  }

  start(): this {
    const log = fs.openSync(this.logPath, 'a');
    this.process = spawn(this.qwend, ['serve', ...this.args], {
      env: this.env,
      stdio: ['ignore', log, log],
    });
    fs.closeSync(log);
    return this;
  }

  /** Run `qwend ARGS --config C --socket S` in the sandbox. */
  cli(...args: string[]): SpawnSyncReturns<string> {
    return spawnSync(this.qwend, [...args, ...this.args], { env: this.env, encoding: 'utf8', timeout: 120_000 });
  }

  /** GET /health over the Unix socket: the state, or "unreachable". */
  health(): Promise<string> {
    return new Promise((resolve) => {
      const req = http.get({ socketPath: this.socket, path: '/health', timeout: 2000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => {
          try {
            resolve(String((JSON.parse(body) as { status?: unknown }).status));
          } catch {
            resolve('unreachable');
          }
        });
      });
      req.on('error', () => resolve('unreachable'));
      req.on('timeout', () => req.destroy());
    });
  }

  async waitFor(states: string[], timeoutMs = START_TIMEOUT_MS): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const state = await this.health();
      if (states.includes(state)) {
        return state;
      }
      if (this.process && this.process.exitCode !== null) {
        throw new Error(`the daemon exited early:\n${this.log()}`);
      }
      await sleep(100);
    }
    throw new Error(`the daemon never reached ${states.join('/')}:\n${this.log()}`);
  }

  log(): string {
    return fs.existsSync(this.logPath) ? fs.readFileSync(this.logPath, 'utf8') : '';
  }

  /** What the network guard refused (must stay empty: serving never reaches out). */
  netguard(): string {
    return fs.existsSync(this.netguardLog) ? fs.readFileSync(this.netguardLog, 'utf8') : '';
  }

  /** SIGTERM (the daemon drains), then SIGKILL after 30 s; removes the sandbox. */
  async stop(): Promise<void> {
    const child = this.process;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(killer);
    }
    fs.rmSync(this.root, { recursive: true, force: true });
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Poll `check` until it holds or `timeoutMs` passes; returns its last value. */
export async function waitUntil(check: () => boolean, timeoutMs = 30_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (check()) {
      return true;
    }
    await sleep(100);
  }
  return check();
}
