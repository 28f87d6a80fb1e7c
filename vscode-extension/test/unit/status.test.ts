import assert from 'node:assert/strict';
import { test } from 'node:test';

import { type LinkStatus, parseLinkStatus, statusReport, statusView } from '../../src/status';

const running = { kind: 'running' } as const;
const link = (state: string, model: string | null = null, detail = ''): LinkStatus => ({
  state,
  model,
  socket: '/run/qwend.sock',
  detail,
});

test('parseLinkStatus accepts the server payload and rejects junk', () => {
  assert.deepEqual(parseLinkStatus({ state: 'ready', model: 'm', socket: '/s', detail: 'ready' }), {
    state: 'ready',
    model: 'm',
    socket: '/s',
    detail: 'ready',
  });
  assert.deepEqual(parseLinkStatus({ state: 'unreachable', model: null }), {
    state: 'unreachable',
    model: null,
    socket: '',
    detail: '',
  });
  assert.equal(parseLinkStatus(null), null);
  assert.equal(parseLinkStatus({ model: 'm' }), null);
  assert.equal(parseLinkStatus('ready'), null);
});

test('ready shows the model name', () => {
  const view = statusView(running, link('ready', 'smollm2-135m', 'ready'));
  assert.equal(view.label, 'ready');
  assert.equal(view.text, '$(check) qwend: ready (smollm2-135m)');
  assert.equal(view.error, false);
  assert.match(view.tooltip, /smollm2-135m/);
});

test('ready without a model in this update uses the last one seen', () => {
  assert.equal(statusView(running, link('ready', null, 'answering'), 'qwen').text, '$(check) qwend: ready (qwen)');
  assert.equal(statusView(running, link('ready')).text, '$(check) qwend: ready');
});

test('loading shows its progress detail', () => {
  const view = statusView(running, link('starting', null, 'starting the daemon'));
  assert.equal(view.label, 'loading');
  assert.equal(view.text, '$(loading~spin) qwend: loading (starting the daemon)');
  assert.equal(statusView(running, link('loading', 'm', 'loading')).text, '$(loading~spin) qwend: loading');
});

test('unreachable reads offline, with how to start it', () => {
  const view = statusView(running, link('unreachable', null, 'no socket at /run/qwend.sock'));
  assert.equal(view.label, 'offline');
  assert.equal(view.text, '$(debug-disconnect) qwend: offline');
  assert.match(view.tooltip, /no socket at/);
  assert.match(view.tooltip, /Start Daemon/);
  assert.equal(view.error, false);
});

test('a failed model is an error', () => {
  const view = statusView(running, link('failed', null, 'model file missing'));
  assert.equal(view.label, 'error');
  assert.equal(view.error, true);
  assert.match(view.tooltip, /model file missing/);
});

test('the client state wins while there is no server', () => {
  assert.equal(statusView({ kind: 'starting' }, null).label, 'starting');
  assert.equal(statusView(running, null).label, 'starting');
  const missing = statusView({ kind: 'notFound', message: 'qwend was not found' }, link('ready', 'm'));
  assert.deepEqual([missing.label, missing.text, missing.error], ['error', '$(error) qwend: not found', true]);
  const stopped = statusView({ kind: 'stopped', reason: 'crashed' }, link('ready', 'm'));
  assert.equal(stopped.label, 'error');
  assert.match(stopped.tooltip, /crashed/);
});

test('the details page holds qwend status output and the server view', () => {
  const page = statusReport({
    qwend: '/bin/qwend',
    args: ['status'],
    stdout: 'qwend: ready\n  model smollm2-135m\n',
    stderr: '',
    exitMeaning: 'ready',
    link: link('ready', 'smollm2-135m', 'ready'),
    client: running,
  });
  assert.match(page, /^# qwend status\n/);
  assert.match(page, /`\/bin\/qwend status` — ready/);
  assert.match(page, /```text\nqwend: ready\n {2}model smollm2-135m\n```/);
  assert.match(page, /- model: smollm2-135m/);
  const offline = statusReport({
    qwend: 'qwend',
    args: ['status'],
    stdout: '',
    stderr: '',
    exitMeaning: 'not run',
    link: null,
    client: { kind: 'notFound', message: 'nope' },
  });
  assert.match(offline, /\(no output\)/);
  assert.match(offline, /Not started: nope/);
});
