/**
 * The `qwend` executable: where it is, and the command lines the extension
 * runs with it. Pure: file checks come in as a function, so the unit tests
 * need no real files.
 */

import * as path from 'node:path';

/** What the search may look at. */
export interface SearchContext {
  /** The `qwend.path` setting (may be empty). */
  configured: string;
  /** The extension host's PATH. */
  envPath: string;
  home: string;
  /** Local paths of the open workspace folders. */
  workspaceFolders: string[];
  /**
   * The Python extension's selected environments (ms-python's
   * `environments.getActiveEnvironmentPath`): interpreter paths or environment
   * folders, in workspace-folder order. Empty without that extension.
   */
  pythonEnvironments?: string[];
  /** Is there an executable file at this absolute path? */
  isExecutable: (file: string) => boolean;
}

export type Found =
  | { ok: true; path: string; source: string }
  | { ok: false; message: string; searched: string[] };

/** Virtual environments inside a workspace folder that may hold `qwend`. */
const WORKSPACE_VENVS: readonly string[] = ['.venv', 'venv'];

/**
 * How qwend is installed (README "Two commands"): from a clone, into a venv.
 * It is not on PyPI as `qwend`, so `pip install qwend` would be wrong.
 */
export const INSTALL_COMMAND =
  "git clone <qwend repository> qwend && cd qwend && python3 -m venv .venv && .venv/bin/pip install -e '.[cpu]'";

/** The `bin` folder of a Python environment, from an interpreter path or the environment folder. */
export function environmentBin(environment: string): string {
  const base = path.basename(environment);
  if (/^python(\d+(\.\d+)*)?$/.test(base)) {
    return path.dirname(environment);
  }
  return base === 'bin' ? environment : path.join(environment, 'bin');
}

/** `~`, `${userHome}` and `${workspaceFolder}` expanded; relative paths taken from the first folder. */
export function expandPath(raw: string, home: string, workspaceFolders: string[]): string {
  const folder = workspaceFolders[0] ?? '';
  let value = raw.trim();
  value = value.replace(/\$\{userHome\}/g, home).replace(/\$\{workspaceFolder\}/g, folder);
  if (value === '~' || value.startsWith('~/')) {
    value = home + value.slice(1);
  }
  if (!path.isAbsolute(value) && folder && value.includes('/')) {
    value = path.join(folder, value);
  }
  return value;
}

/**
 * Find `qwend`: the `qwend.path` setting when set (and then only it: a wrong
 * setting is an error, never silently replaced), else the Python extension's
 * selected environment (what the user chose for this workspace), then PATH,
 * then the workspace's `.venv`/`venv`, then `~/.local/bin`.
 */
export function findQwend(ctx: SearchContext): Found {
  if (ctx.configured.trim()) {
    const file = expandPath(ctx.configured, ctx.home, ctx.workspaceFolders);
    if (path.isAbsolute(file) && ctx.isExecutable(file)) {
      return { ok: true, path: file, source: 'the qwend.path setting' };
    }
    if (!path.isAbsolute(file)) {
      // A bare name such as "qwend-dev": look it up on PATH.
      for (const dir of splitPath(ctx.envPath)) {
        const candidate = path.join(dir, file);
        if (ctx.isExecutable(candidate)) {
          return { ok: true, path: candidate, source: 'the qwend.path setting, on PATH' };
        }
      }
    }
    return {
      ok: false,
      message: `qwend.path is "${ctx.configured}", but there is no executable at ${file}`,
      searched: [file],
    };
  }
  const candidates: Array<[string, string]> = [
    ...(ctx.pythonEnvironments ?? [])
      .filter((env) => path.isAbsolute(env))
      .map((env): [string, string] => [
        path.join(environmentBin(env), 'qwend'),
        "the Python extension's selected environment",
      ]),
    ...splitPath(ctx.envPath).map((dir): [string, string] => [path.join(dir, 'qwend'), 'PATH']),
    ...ctx.workspaceFolders.flatMap((folder) =>
      WORKSPACE_VENVS.map((venv): [string, string] => [
        path.join(folder, venv, 'bin', 'qwend'),
        `the workspace's ${venv}`,
      ]),
    ),
  ];
  if (ctx.home) {
    candidates.push([path.join(ctx.home, '.local', 'bin', 'qwend'), '~/.local/bin']);
  }
  for (const [file, source] of candidates) {
    if (ctx.isExecutable(file)) {
      return { ok: true, path: file, source };
    }
  }
  return {
    ok: false,
    message:
      "qwend was not found in the Python extension's environment, on PATH, in the workspace's " +
      '.venv or venv, or in ~/.local/bin. Install it from a clone of qwend (' +
      INSTALL_COMMAND.replace('git clone <qwend repository> qwend && cd qwend && ', '') +
      ', or ./scripts/demo-cpu.sh), then choose the executable or set qwend.path.',
    searched: [...new Set(candidates.map(([file]) => file))],
  };
}

/**
 * The command that opens the Settings editor on `qwend.path` in the scope
 * where it applies. The setting is machine-overridable: in a remote window
 * (SSH, WSL, containers, code-server's remote host) it belongs to the
 * Remote tab, and the User tab shows "No Settings Found" for it there.
 */
export function settingsCommand(remoteName: string | undefined): { command: string; query: string } {
  const command = remoteName ? 'workbench.action.openRemoteSettings' : 'workbench.action.openSettings';
  return { command, query: '@id:qwend.path' };
}

function splitPath(envPath: string): string[] {
  return envPath.split(path.delimiter).filter((dir) => dir && path.isAbsolute(dir));
}

/** Arguments after the executable for `qwend lsp`. */
export function lspArgs(extraArgs: string[]): string[] {
  return ['lsp', ...extraArgs];
}

/** Arguments for the daemon commands run from the palette and the status item. */
export function daemonArgs(verb: 'serve' | 'stop' | 'status', extraArgs: string[]): string[] {
  if (verb === 'serve') {
    return ['serve', '--detach', ...extraArgs];
  }
  return [verb, ...extraArgs];
}

/** What an exit code of `qwend serve --detach` / `stop` / `status` means (the CLI's contract). */
export function describeExit(verb: 'serve' | 'stop' | 'status', code: number | null): string {
  if (code === null) {
    return 'was killed';
  }
  if (verb === 'status') {
    return (
      { 0: 'ready', 1: 'failed', 2: 'unreachable (no daemon)', 3: 'loading' }[code] ??
      `exit code ${code}`
    );
  }
  if (verb === 'stop') {
    return { 0: 'stopped', 1: 'still draining', 2: 'no daemon was running' }[code] ?? `exit code ${code}`;
  }
  return { 0: 'ready', 3: 'still loading' }[code] ?? `failed (exit code ${code})`;
}
