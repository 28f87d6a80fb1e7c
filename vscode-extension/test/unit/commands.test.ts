import assert from 'node:assert/strict';
import { test } from 'node:test';

import { askArgs, errorText, interpretResult, proseMarkdown, selectionArgs } from '../../src/commands';

const sel = { start: { line: 1, character: 2 }, end: { line: 3, character: 0 } };

test('selectionArgs is the {uri, range} the server code actions send, as plain JSON', () => {
  const vscodeLike = { start: { line: 1, character: 2, extra: 1 }, end: { line: 3, character: 0, extra: 2 } };
  assert.deepEqual(selectionArgs('file:///a.py', vscodeLike), { uri: 'file:///a.py', range: sel });
});

test('askArgs: the question alone without a selection, else with it', () => {
  assert.equal(askArgs('why?'), 'why?');
  const empty = { start: { line: 2, character: 1 }, end: { line: 2, character: 1 } };
  assert.equal(askArgs('why?', 'file:///a.py', empty), 'why?');
  assert.deepEqual(askArgs('why?', 'file:///a.py', sel), { question: 'why?', uri: 'file:///a.py', range: sel });
});

test('interpretResult follows the server result shapes', () => {
  assert.deepEqual(interpretResult('qwend.explain', { text: 'It adds.' }), {
    kind: 'prose',
    title: 'Explanation',
    text: 'It adds.',
  });
  assert.deepEqual(interpretResult('qwend.commitMessage', { text: 'Fix x' }), {
    kind: 'prose',
    title: 'Commit message',
    text: 'Fix x',
  });
  assert.deepEqual(interpretResult('qwend.docstring', { applied: true, text: '"""x"""' }), { kind: 'edited' });
  assert.equal(interpretResult('qwend.refactor', { applied: false, text: 'x' }).kind, 'notEdited');
  assert.deepEqual(interpretResult('qwend.tests', { cancelled: true }), { kind: 'cancelled' });
  assert.deepEqual(interpretResult('qwend.explain', { cancelled: true }), { kind: 'cancelled' });
  assert.deepEqual(interpretResult('qwend.refactor', null), { kind: 'unknown' });
  assert.deepEqual(interpretResult('qwend.refactor', { text: 'code' }), { kind: 'unknown' });
  assert.deepEqual(interpretResult('qwend.fix', { applied: false, refused: 'qwend fix: cut off', text: '```py' }), {
    kind: 'refused',
    message: 'qwend fix: cut off',
    text: '```py',
  });
});

test('proseMarkdown: a title, what it is about, the answer', () => {
  assert.equal(proseMarkdown('Explanation', '  It adds.\n\n'), '# Explanation\n\nIt adds.\n');
  assert.equal(proseMarkdown('Answer', 'Yes.', 'add.py:1-2'), '# Answer\n\n_add.py:1-2_\n\nYes.\n');
});

test('errorText reads JSON-RPC errors and anything else', () => {
  assert.equal(errorText({ code: -32803, message: 'qwend daemon is not running' }), 'qwend daemon is not running');
  assert.equal(errorText(new Error('boom')), 'boom');
  assert.equal(errorText('plain'), 'plain');
  assert.equal(errorText({ message: '' }), 'unknown error');
});
