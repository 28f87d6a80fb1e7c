/** package.json against the code: commands, menus, settings and versions stay in step. */
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';

import { OTHER_COMMANDS, SELECTION_COMMANDS } from '../../src/commands';
import { DEFAULTS, KEYS } from '../../src/settings';

interface Manifest {
  engines: { vscode: string };
  main: string;
  devDependencies: Record<string, string>;
  dependencies: Record<string, string>;
  contributes: {
    commands: Array<{ command: string; title: string; category: string }>;
    menus: Record<string, Array<{ command?: string; submenu?: string }>>;
    submenus: Array<{ id: string }>;
    configuration: { properties: Record<string, { default: unknown }> };
  };
}

const ROOT = path.resolve(__dirname, '..', '..', '..');
const manifest = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as Manifest;
const codeCommands = [...SELECTION_COMMANDS.map((c) => c.id), ...Object.values(OTHER_COMMANDS)];

test('every command the code registers is declared, and nothing else', () => {
  const declared = manifest.contributes.commands.map((c) => c.command);
  assert.deepEqual([...declared].sort(), [...codeCommands].sort());
  for (const c of manifest.contributes.commands) {
    assert.equal(c.category, 'qwend');
  }
});

test('the issue asks for these commands in the palette', () => {
  const titles = manifest.contributes.commands.map((c) => c.title);
  for (const title of [
    'Explain',
    'Refactor',
    'Add Docstring',
    'Generate Tests',
    'Fix',
    'Ask…',
    'Commit Message',
    'Show Status',
    'Restart Language Server',
    'Start Daemon',
    'Stop Daemon',
  ]) {
    assert.ok(titles.includes(title), title);
  }
});

test('menus name declared commands; the editor menu and Source Control have them', () => {
  const submenus = new Set(manifest.contributes.submenus.map((s) => s.id));
  for (const entries of Object.values(manifest.contributes.menus)) {
    for (const entry of entries) {
      assert.ok(
        (entry.command && codeCommands.includes(entry.command)) || (entry.submenu && submenus.has(entry.submenu)),
        JSON.stringify(entry),
      );
    }
  }
  const context = manifest.contributes.menus['qwend.editorContext'].map((e) => e.command);
  for (const c of SELECTION_COMMANDS) {
    assert.ok(context.includes(c.id), c.id);
  }
  assert.ok(manifest.contributes.menus['editor/context'].some((e) => e.submenu === 'qwend.editorContext'));
  assert.ok(manifest.contributes.menus['scm/title'].some((e) => e.command === OTHER_COMMANDS.commitMessage));
});

test('each setting the code reads is declared with the same default', () => {
  const props = manifest.contributes.configuration.properties;
  for (const [field, key] of Object.entries(KEYS)) {
    const declared = props[`qwend.${key}`];
    assert.ok(declared, `qwend.${key} is not in package.json`);
    assert.deepEqual(declared.default, DEFAULTS[field as keyof typeof DEFAULTS], key);
  }
  const read = new Set(Object.values(KEYS).map((k) => `qwend.${k}`));
  // qwend.trace.server is read by vscode-languageclient itself.
  assert.deepEqual(Object.keys(props).filter((k) => !read.has(k)), ['qwend.trace.server']);
});

test('versions: languageclient 10+, @types/vscode pinned to engines.vscode', () => {
  assert.equal(manifest.engines.vscode, '^1.91.0');
  assert.equal(manifest.devDependencies['@types/vscode'], '1.91.0');
  const major = Number(manifest.dependencies['vscode-languageclient'].split('.')[0]);
  assert.ok(major >= 10, 'vscode-languageclient 9 sends a triggerKind lsprotocol rejects');
  assert.equal(manifest.main, './dist/extension.js');
});
