/**
 * Protocol test: the real `qwend lsp` and the real daemon (SmolLM2 on the
 * CPU), driven from node through vscode-languageserver-protocol, the wire
 * stack vscode-languageclient uses, with what the extension sends: its
 * initializationOptions, its command arguments, VS Code's capabilities for
 * inline completion and progress. Each step reads the answers with the
 * extension's own helpers (status view, result interpretation, trimming).
 */

import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import {
  ApplyWorkspaceEditRequest,
  type ApplyWorkspaceEditParams,
  createProtocolConnection,
  DidOpenTextDocumentNotification,
  ExecuteCommandRequest,
  InitializeRequest,
  InitializedNotification,
  InlineCompletionRequest,
  InlineCompletionTriggerKind,
  type InlineCompletionList,
  type ProtocolConnection,
  ShowMessageNotification,
  type ShowMessageParams,
  StreamMessageReader,
  StreamMessageWriter,
  type TextEdit,
  WorkDoneProgress,
  WorkDoneProgressCancelNotification,
  WorkDoneProgressCreateRequest,
  type WorkDoneProgressBegin,
  type WorkDoneProgressEnd,
  type WorkDoneProgressReport,
  ShutdownRequest,
  ExitNotification,
} from 'vscode-languageserver-protocol/node';

import { interpretResult, SERVER_COMMANDS, selectionArgs } from '../../src/commands';
import { lspArgs } from '../../src/qwend';
import { DEFAULTS, initializationOptions, serverEnv, trimToLines } from '../../src/settings';
import { type LinkStatus, parseLinkStatus, statusView } from '../../src/status';
import { Daemon, waitUntil } from '../support/daemon';

const WORKSPACE = '/tmp/qwend-ws';
const FUNCTION_SOURCE = 'def add(a, b):\n    return a + b\n\n\nprint(add(1, 2))\n';

/** Apply LSP TextEdits to a text (ASCII sources: a character is a code unit). */
function applyEdits(text: string, edits: TextEdit[]): string {
  const lines = text.split(/(?<=\n)/);
  const offset = (p: { line: number; character: number }): number =>
    lines.slice(0, p.line).reduce((n, l) => n + l.length, 0) + p.character;
  const sorted = [...edits].sort((a, b) => offset(b.range.start) - offset(a.range.start));
  for (const e of sorted) {
    text = text.slice(0, offset(e.range.start)) + e.newText + text.slice(offset(e.range.end));
  }
  return text;
}

describe('qwend lsp, driven the way the extension drives it', () => {
  let daemon: Daemon;
  let server: ChildProcess;
  let connection: ProtocolConnection;
  let capabilities: Record<string, unknown>;
  const statuses: LinkStatus[] = [];
  const messages: ShowMessageParams[] = [];
  const edits: ApplyWorkspaceEditParams[] = [];
  const progress = new Map<string, Array<WorkDoneProgressBegin | WorkDoneProgressReport | WorkDoneProgressEnd>>();
  let stderr = '';

  before(async () => {
    daemon = new Daemon().start();
    await daemon.waitFor(['ready']);
    // The extension's own command line and environment for the server.
    server = spawn(daemon.qwend, lspArgs(daemon.args), {
      env: serverEnv({ ...DEFAULTS, logLevel: 'info' }, daemon.env),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    server.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    connection = createProtocolConnection(
      new StreamMessageReader(server.stdout!),
      new StreamMessageWriter(server.stdin!),
    );
    connection.onNotification('qwend/status', (params: unknown) => {
      const status = parseLinkStatus(params);
      if (status) {
        statuses.push(status);
      }
    });
    connection.onNotification(ShowMessageNotification.type, (params) => void messages.push(params));
    connection.onRequest(WorkDoneProgressCreateRequest.type, (params) => {
      const token = String(params.token);
      progress.set(token, []);
      connection.onProgress(WorkDoneProgress.type, params.token, (value) => {
        progress.get(token)!.push(value);
      });
    });
    connection.onRequest(ApplyWorkspaceEditRequest.type, (params) => {
      edits.push(params);
      return { applied: true };
    });
    connection.listen();
    const result = await connection.sendRequest(InitializeRequest.type, {
      processId: process.pid,
      rootUri: `file://${WORKSPACE}`,
      workspaceFolders: [{ uri: `file://${WORKSPACE}`, name: 'ws' }],
      capabilities: {
        window: { workDoneProgress: true, showMessage: {} },
        workspace: { applyEdit: true, workspaceEdit: { documentChanges: true } },
        textDocument: { inlineCompletion: { dynamicRegistration: true }, synchronization: {} },
      },
      // What the extension sends with its default settings.
      initializationOptions: initializationOptions({ ...DEFAULTS, autoStartDaemon: false, commandMaxTokens: 48 }),
    });
    capabilities = result.capabilities as Record<string, unknown>;
    await connection.sendNotification(InitializedNotification.type, {});
  });

  after(async () => {
    try {
      await connection.sendRequest(ShutdownRequest.type);
      await connection.sendNotification(ExitNotification.type);
    } catch {
      // the server may already be gone when a test failed
    }
    connection?.dispose();
    server?.kill();
    const refused = daemon?.netguard();
    await daemon?.stop();
    assert.equal(refused ?? '', '', 'the daemon tried to reach the network');
  });

  test('advertises inline completion and every command the extension sends', () => {
    assert.ok(capabilities.inlineCompletionProvider, 'no inlineCompletionProvider');
    const provider = capabilities.executeCommandProvider as { commands: string[] };
    for (const command of SERVER_COMMANDS) {
      assert.ok(provider.commands.includes(command), `qwend lsp lacks ${command}`);
    }
  });

  test('qwend/status says ready with the model, and the item reads so', async () => {
    const status = parseLinkStatus(await connection.sendRequest('qwend/status', {}));
    assert.ok(status);
    assert.equal(status.state, 'ready');
    assert.equal(status.model, 'smollm2-135m');
    const view = statusView({ kind: 'running' }, status);
    assert.equal(view.label, 'ready');
    assert.match(view.text, /qwend: ready \(smollm2-135m\)$/);
    // The server also pushed it as a notification once its monitor saw the daemon.
    assert.ok(await waitUntil(() => statuses.some((s) => s.state === 'ready')), JSON.stringify(statuses));
  });

  test('inline completion: VS Code trigger kinds get model text at the cursor', async () => {
    const uri = `file://${WORKSPACE}/squares.py`;
    const text = 'numbers = [1, 2, 3]\nsquares = [n * n for n in \n';
    await connection.sendNotification(DidOpenTextDocumentNotification.type, {
      textDocument: { uri, languageId: 'python', version: 1, text },
    });
    const position = { line: 1, character: 26 };
    for (const triggerKind of [InlineCompletionTriggerKind.Invoked, InlineCompletionTriggerKind.Automatic]) {
      const answer = (await connection.sendRequest(InlineCompletionRequest.type, {
        textDocument: { uri },
        position,
        context: { triggerKind },
      })) as InlineCompletionList;
      assert.equal(answer.items.length, 1, `trigger ${triggerKind}: ${JSON.stringify(answer)}`);
      const [item] = answer.items;
      assert.equal(typeof item.insertText, 'string');
      const insert = item.insertText as string;
      assert.ok(insert.trim(), 'empty suggestion');
      assert.deepEqual(item.range, { start: position, end: position });
      assert.equal(trimToLines(insert, DEFAULTS.maxLines), insert); // mid-statement: one line, kept
    }
  });

  test('Add Docstring with the extension arguments inserts a docstring under the def', async () => {
    const uri = `file://${WORKSPACE}/add.py`;
    await connection.sendNotification(DidOpenTextDocumentNotification.type, {
      textDocument: { uri, languageId: 'python', version: 1, text: FUNCTION_SOURCE },
    });
    const cursorOnDef = { start: { line: 0, character: 4 }, end: { line: 0, character: 4 } };
    const before = edits.length;
    const result: unknown = await connection.sendRequest(ExecuteCommandRequest.type, {
      command: 'qwend.docstring',
      arguments: [selectionArgs(uri, cursorOnDef)],
    });
    assert.deepEqual(interpretResult('qwend.docstring', result), { kind: 'edited' });
    assert.equal(edits.length, before + 1);
    const changes = edits[before].edit.changes?.[uri];
    assert.ok(changes, JSON.stringify(edits[before]));
    const updated = applyEdits(FUNCTION_SOURCE, changes);
    const lines = updated.split('\n');
    assert.equal(lines[0], 'def add(a, b):');
    assert.match(lines[1], /^ {4}"""/, updated);
    assert.ok(updated.endsWith('    return a + b\n\n\nprint(add(1, 2))\n'), updated);
  });

  test('Explain returns prose for the side panel and sends no toast', async () => {
    const uri = `file://${WORKSPACE}/add.py`;
    const whole = { start: { line: 0, character: 0 }, end: { line: 2, character: 0 } };
    const before = edits.length;
    const result: unknown = await connection.sendRequest(ExecuteCommandRequest.type, {
      command: 'qwend.explain',
      arguments: [selectionArgs(uri, whole)],
    });
    const outcome = interpretResult('qwend.explain', result);
    assert.equal(outcome.kind, 'prose');
    assert.ok(outcome.kind === 'prose' && outcome.text.trim());
    assert.equal(edits.length, before, 'explain must not edit');
    assert.deepEqual(
      messages.filter((m) => outcome.kind === 'prose' && m.message.includes(outcome.text)),
      [],
      'proseMessages=false: no showMessage copy',
    );
  });

  test('the progress cancel button stops a command: the result reads cancelled', async () => {
    const uri = `file://${WORKSPACE}/add.py`;
    const whole = { start: { line: 0, character: 0 }, end: { line: 2, character: 0 } };
    const known = new Set(progress.keys());
    const running: Promise<unknown> = connection.sendRequest(ExecuteCommandRequest.type, {
      command: 'qwend.tests',
      arguments: [selectionArgs(uri, whole)],
    });
    assert.ok(await waitUntil(() => [...progress.keys()].some((t) => !known.has(t))), 'no progress begun');
    const token = [...progress.keys()].find((t) => !known.has(t))!;
    assert.equal(progress.get(token)![0].kind, 'begin');
    await connection.sendNotification(WorkDoneProgressCancelNotification.type, { token });
    assert.deepEqual(interpretResult('qwend.tests', await running), { kind: 'cancelled' });
  });

  test('after `qwend stop` the status turns offline and completions fail cleanly', async () => {
    const stop = daemon.cli('stop');
    assert.equal(stop.status, 0, stop.stderr);
    // The server's monitor polls /health every few seconds while the daemon is ready.
    assert.ok(
      await waitUntil(() => statuses.at(-1)?.state === 'unreachable', 30_000),
      JSON.stringify(statuses.slice(-3)),
    );
    const view = statusView({ kind: 'running' }, statuses.at(-1)!);
    assert.equal(view.label, 'offline');
    assert.match(view.text, /qwend: offline$/);
    const uri = `file://${WORKSPACE}/after_stop.py`; // new text: the typed-ahead cache cannot answer
    await connection.sendNotification(DidOpenTextDocumentNotification.type, {
      textDocument: { uri, languageId: 'python', version: 1, text: 'total = sum(\n' },
    });
    await assert.rejects(
      connection.sendRequest(InlineCompletionRequest.type, {
        textDocument: { uri },
        position: { line: 0, character: 12 },
        context: { triggerKind: InlineCompletionTriggerKind.Invoked },
      }),
      (error: { code?: number; message?: string }) => error.code === -32803 && /not running/.test(error.message ?? ''),
    );
    assert.match(stderr, /qwend-lsp/); // QWEND_LSP_LOG=info reached the server: its log is there
  });
});
