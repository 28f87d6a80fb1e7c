import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  DEFAULTS,
  initializationOptions,
  inlineEnabledFor,
  needsRestart,
  readSettings,
  serverEnv,
  trimToLines,
} from '../../src/settings';

const from = (values: Record<string, unknown>) => readSettings((key) => values[key]);

test('no settings: the defaults, no problems', () => {
  assert.deepEqual(from({}), { settings: { ...DEFAULTS }, problems: [] });
});

test('valid settings are read from their keys', () => {
  const { settings, problems } = from({
    path: ' ~/bin/qwend ',
    extraArgs: ['--socket', '/tmp/q.sock'],
    'daemon.autoStart': false,
    'inlineCompletions.enabled': false,
    'inlineCompletions.languages': { markdown: false },
    'inlineCompletions.debounceMs': 0,
    'inlineCompletions.maxLines': 3,
    'inlineCompletions.maxTokens': 32,
    'commands.maxTokens': 200,
    'server.logLevel': 'debug',
  });
  assert.deepEqual(problems, []);
  assert.deepEqual(settings, {
    path: '~/bin/qwend',
    extraArgs: ['--socket', '/tmp/q.sock'],
    autoStartDaemon: false,
    inlineEnabled: false,
    inlineLanguages: { markdown: false },
    debounceMs: 0,
    maxLines: 3,
    maxTokens: 32,
    commandMaxTokens: 200,
    logLevel: 'debug',
  });
});

test('each invalid value falls back to its default and is reported', () => {
  const { settings, problems } = from({
    extraArgs: ['--socket', 3],
    'inlineCompletions.debounceMs': -1,
    'inlineCompletions.maxLines': 1.5,
    'inlineCompletions.languages': { python: 'yes' },
    'inlineCompletions.maxTokens': 0,
    'server.logLevel': 'loud',
    'daemon.autoStart': 'true',
  });
  assert.deepEqual(settings, { ...DEFAULTS });
  assert.equal(problems.length, 7);
  assert.ok(problems.some((p) => p.includes('qwend.inlineCompletions.debounceMs') && p.includes('-1')));
});

test('initializationOptions: the server keys, prose shown by the extension', () => {
  assert.deepEqual(initializationOptions({ ...DEFAULTS }), {
    autoStart: true,
    debounceMs: 150,
    proseMessages: false,
  });
  assert.deepEqual(
    initializationOptions({ ...DEFAULTS, debounceMs: 40, maxTokens: 20, commandMaxTokens: 300 }),
    { autoStart: true, debounceMs: 40, proseMessages: false, maxTokens: 20, taskMaxTokens: 300 },
  );
});

test('auto-start stays off after the user stopped the daemon', () => {
  assert.equal(initializationOptions({ ...DEFAULTS }, { daemonStoppedByUser: true }).autoStart, false);
  assert.equal(initializationOptions({ ...DEFAULTS, autoStartDaemon: false }).autoStart, false);
});

test('serverEnv sets the server log level and keeps the rest', () => {
  const env = serverEnv({ ...DEFAULTS, logLevel: 'debug' }, { PATH: '/bin', QWEND_LSP_LOG: 'warning' });
  assert.deepEqual(env, { PATH: '/bin', QWEND_LSP_LOG: 'debug' });
});

test('only settings the server reads need a restart', () => {
  const base = { ...DEFAULTS };
  assert.equal(needsRestart(base, { ...base, inlineEnabled: false }), false);
  assert.equal(needsRestart(base, { ...base, maxLines: 2 }), false);
  assert.equal(needsRestart(base, { ...base, inlineLanguages: { go: false } }), false);
  assert.equal(needsRestart(base, { ...base, debounceMs: 10 }), true);
  assert.equal(needsRestart(base, { ...base, extraArgs: ['--socket', '/s'] }), true);
  assert.equal(needsRestart(base, { ...base, path: '/opt/qwend' }), true);
  assert.equal(needsRestart(base, { ...base, autoStartDaemon: false }), true);
});

test('per-language enablement: master switch, then the language, then "*"', () => {
  assert.equal(inlineEnabledFor(true, {}, 'python'), true);
  assert.equal(inlineEnabledFor(false, { python: true }, 'python'), false);
  assert.equal(inlineEnabledFor(true, { markdown: false }, 'markdown'), false);
  assert.equal(inlineEnabledFor(true, { markdown: false }, 'python'), true);
  assert.equal(inlineEnabledFor(true, { '*': false, python: true }, 'python'), true);
  assert.equal(inlineEnabledFor(true, { '*': false, python: true }, 'go'), false);
  assert.equal(inlineEnabledFor(true, { toString: false }, 'constructor'), true); // own keys only
});

test('trimToLines keeps short text and cuts long text to its first lines', () => {
  assert.equal(trimToLines('a\nb', 2), 'a\nb');
  assert.equal(trimToLines('one line', 1), 'one line');
  assert.equal(trimToLines('a\nb\nc\nd', 2), 'a\nb');
  assert.equal(trimToLines('    x = 1\n    \n    y = 2', 2), '    x = 1');
});
