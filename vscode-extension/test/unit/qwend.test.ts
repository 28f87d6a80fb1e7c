import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  INSTALL_COMMAND,
  daemonArgs,
  describeExit,
  environmentBin,
  expandPath,
  findQwend,
  lspArgs,
  settingsCommand,
  type SearchContext,
} from '../../src/qwend';

function ctx(executables: string[], over: Partial<SearchContext> = {}): SearchContext {
  const files = new Set(executables);
  return {
    configured: '',
    envPath: '/usr/local/bin:/usr/bin',
    home: '/home/u',
    workspaceFolders: ['/home/u/proj'],
    isExecutable: (file) => files.has(file),
    ...over,
  };
}

test('PATH comes first, in its order', () => {
  const found = findQwend(ctx(['/usr/bin/qwend', '/usr/local/bin/qwend', '/home/u/proj/.venv/bin/qwend']));
  assert.deepEqual(found, { ok: true, path: '/usr/local/bin/qwend', source: 'PATH' });
});

test('then the workspace venv, then ~/.local/bin', () => {
  assert.deepEqual(findQwend(ctx(['/home/u/proj/.venv/bin/qwend', '/home/u/.local/bin/qwend'])), {
    ok: true,
    path: '/home/u/proj/.venv/bin/qwend',
    source: "the workspace's .venv",
  });
  assert.deepEqual(findQwend(ctx(['/home/u/proj/venv/bin/qwend'])).ok, true);
  assert.deepEqual(findQwend(ctx(['/home/u/.local/bin/qwend'])), {
    ok: true,
    path: '/home/u/.local/bin/qwend',
    source: '~/.local/bin',
  });
});

test('relative PATH entries are ignored', () => {
  assert.equal(findQwend(ctx(['bin/qwend'], { envPath: 'bin:/usr/bin' })).ok, false);
});

test('nothing found: an error that lists where it looked', () => {
  const found = findQwend(ctx([]));
  assert.equal(found.ok, false);
  assert.ok(!found.ok && found.message.includes('qwend.path'));
  assert.ok(!found.ok && found.searched.includes('/usr/bin/qwend'));
  assert.ok(!found.ok && found.searched.includes('/home/u/.local/bin/qwend'));
});

test('the setting wins, with ~ and ${workspaceFolder} expanded', () => {
  const all = ['/usr/bin/qwend', '/home/u/tools/qwend', '/home/u/proj/env/bin/qwend'];
  assert.equal((findQwend(ctx(all, { configured: '~/tools/qwend' })) as { path: string }).path, '/home/u/tools/qwend');
  assert.equal(
    (findQwend(ctx(all, { configured: '${workspaceFolder}/env/bin/qwend' })) as { path: string }).path,
    '/home/u/proj/env/bin/qwend',
  );
  assert.equal((findQwend(ctx(all, { configured: 'env/bin/qwend' })) as { path: string }).path, '/home/u/proj/env/bin/qwend');
});

test('a wrong setting is an error, never replaced by what PATH has', () => {
  const found = findQwend(ctx(['/usr/bin/qwend'], { configured: '/opt/missing/qwend' }));
  assert.deepEqual(found, {
    ok: false,
    message: 'qwend.path is "/opt/missing/qwend", but there is no executable at /opt/missing/qwend',
    searched: ['/opt/missing/qwend'],
  });
});

test('a bare name in the setting is looked up on PATH', () => {
  assert.deepEqual(findQwend(ctx(['/usr/bin/qwend-dev'], { configured: 'qwend-dev' })), {
    ok: true,
    path: '/usr/bin/qwend-dev',
    source: 'the qwend.path setting, on PATH',
  });
});

test('expandPath', () => {
  assert.equal(expandPath('~', '/h', []), '/h');
  assert.equal(expandPath('${userHome}/x', '/h', []), '/h/x');
  assert.equal(expandPath('a/b', '/h', []), 'a/b'); // no folder to anchor it
});

test('command lines: extra args after the verb', () => {
  assert.deepEqual(lspArgs([]), ['lsp']);
  assert.deepEqual(lspArgs(['--socket', '/s']), ['lsp', '--socket', '/s']);
  assert.deepEqual(daemonArgs('serve', ['--config', '/c']), ['serve', '--detach', '--config', '/c']);
  assert.deepEqual(daemonArgs('stop', []), ['stop']);
  assert.deepEqual(daemonArgs('status', ['--socket', '/s']), ['status', '--socket', '/s']);
});

test('exit codes as the CLI defines them', () => {
  assert.equal(describeExit('status', 0), 'ready');
  assert.equal(describeExit('status', 2), 'unreachable (no daemon)');
  assert.equal(describeExit('status', 3), 'loading');
  assert.equal(describeExit('stop', 2), 'no daemon was running');
  assert.equal(describeExit('serve', 3), 'still loading');
  assert.equal(describeExit('serve', 1), 'failed (exit code 1)');
  assert.equal(describeExit('serve', null), 'was killed');
});

test("the Python extension's selected environment comes first", () => {
  const all = ['/usr/bin/qwend', '/home/u/proj/.venv/bin/qwend', '/home/u/envs/q/bin/qwend'];
  assert.deepEqual(findQwend(ctx(all, { pythonEnvironments: ['/home/u/envs/q/bin/python3.11'] })), {
    ok: true,
    path: '/home/u/envs/q/bin/qwend',
    source: "the Python extension's selected environment",
  });
  // An environment folder works as well as an interpreter path.
  assert.equal(
    (findQwend(ctx(all, { pythonEnvironments: ['/home/u/envs/q'] })) as { path: string }).path,
    '/home/u/envs/q/bin/qwend',
  );
  // An environment without qwend: the search goes on (PATH next).
  assert.equal(
    (findQwend(ctx(all, { pythonEnvironments: ['/opt/conda/bin/python'] })) as { path: string }).path,
    '/usr/bin/qwend',
  );
});

test('environmentBin reads interpreter paths and environment folders', () => {
  assert.equal(environmentBin('/p/.venv/bin/python'), '/p/.venv/bin');
  assert.equal(environmentBin('/p/.venv/bin/python3.11'), '/p/.venv/bin');
  assert.equal(environmentBin('/p/.venv'), '/p/.venv/bin');
  assert.equal(environmentBin('/p/.venv/bin'), '/p/.venv/bin');
});

test('not found: the hint is the real install command, never pip install qwend', () => {
  const found = findQwend(ctx([], { pythonEnvironments: ['/home/u/envs/q/bin/python'] }));
  assert.ok(!found.ok);
  assert.ok(!found.ok && found.message.includes("pip install -e '.[cpu]'"));
  assert.ok(!found.ok && !found.message.includes('pip install qwend'));
  assert.ok(!found.ok && found.searched[0] === '/home/u/envs/q/bin/qwend');
  assert.ok(INSTALL_COMMAND.includes('python3 -m venv .venv'));
});

test('the settings button opens the scope where qwend.path applies', () => {
  assert.deepEqual(settingsCommand(undefined), { command: 'workbench.action.openSettings', query: '@id:qwend.path' });
  assert.equal(settingsCommand('ssh-remote').command, 'workbench.action.openRemoteSettings');
});
