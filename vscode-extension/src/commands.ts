/**
 * The commands: which palette command runs which language-server command,
 * the arguments built from a selection, and what a result means for the
 * user (an edit was made, prose to show, cancelled). Pure; extension.ts
 * registers the table and package.json declares it (a unit test keeps the
 * three in step).
 */

/** A palette command that sends the selection to a server command. */
export interface SelectionCommand {
  /** The VS Code command id (package.json). */
  id: string;
  /** The `workspace/executeCommand` name in `qwend lsp`. */
  server: string;
  title: string;
}

export const SELECTION_COMMANDS: readonly SelectionCommand[] = [
  { id: 'qwend.explainSelection', server: 'qwend.explain', title: 'Explain' },
  { id: 'qwend.refactorSelection', server: 'qwend.refactor', title: 'Refactor' },
  { id: 'qwend.addDocstring', server: 'qwend.docstring', title: 'Add Docstring' },
  { id: 'qwend.generateTests', server: 'qwend.tests', title: 'Generate Tests' },
  { id: 'qwend.fixSelection', server: 'qwend.fix', title: 'Fix' },
];

/** The other palette commands (their work is in extension.ts). */
export const OTHER_COMMANDS = {
  ask: 'qwend.askQuestion',
  commitMessage: 'qwend.generateCommitMessage',
  showStatus: 'qwend.showStatus',
  showLog: 'qwend.showLog',
  restartServer: 'qwend.restartServer',
  startDaemon: 'qwend.startDaemon',
  stopDaemon: 'qwend.stopDaemon',
} as const;

/** Server commands whose answer is prose, shown in a side panel. */
export const PROSE_SERVER_COMMANDS: ReadonlySet<string> = new Set(['qwend.explain', 'qwend.ask', 'qwend.commitMessage']);

/** Every server command the extension sends: `qwend lsp` must advertise them all. */
export const SERVER_COMMANDS: readonly string[] = [
  ...SELECTION_COMMANDS.map((c) => c.server),
  'qwend.ask',
  'qwend.commitMessage',
];

export interface Pos {
  line: number;
  character: number;
}

export interface Range {
  start: Pos;
  end: Pos;
}

/** The `{uri, range}` argument of the selection commands (what the server's code actions send). */
export function selectionArgs(uri: string, selection: Range): { uri: string; range: Range } {
  const pos = (p: Pos): Pos => ({ line: p.line, character: p.character });
  return { uri, range: { start: pos(selection.start), end: pos(selection.end) } };
}

/** The argument of `qwend.ask`: the question alone, or with the selection it is about. */
export function askArgs(question: string, uri?: string, selection?: Range): unknown {
  const empty =
    !selection ||
    (selection.start.line === selection.end.line && selection.start.character === selection.end.character);
  if (!uri || empty) {
    return question;
  }
  return { question, ...selectionArgs(uri, selection) };
}

/** What a command's result means for the user. */
export type Outcome =
  | { kind: 'prose'; title: string; text: string }
  | { kind: 'edited' }
  | { kind: 'notEdited'; message: string }
  /** The server refused to write the answer (cut off, or it would break the file). */
  | { kind: 'refused'; message: string; text: string }
  | { kind: 'cancelled' }
  | { kind: 'unknown' };

const PROSE_TITLES: Record<string, string> = {
  'qwend.explain': 'Explanation',
  'qwend.ask': 'Answer',
  'qwend.commitMessage': 'Commit message',
};

/** Read a `workspace/executeCommand` result of `qwend lsp` (docs/editors.md "How commands deliver results"). */
export function interpretResult(serverCommand: string, result: unknown): Outcome {
  if (typeof result !== 'object' || result === null) {
    return { kind: 'unknown' };
  }
  const r = result as Record<string, unknown>;
  if (r.cancelled === true) {
    return { kind: 'cancelled' };
  }
  if (PROSE_SERVER_COMMANDS.has(serverCommand) && typeof r.text === 'string') {
    return { kind: 'prose', title: PROSE_TITLES[serverCommand] ?? serverCommand, text: r.text };
  }
  if (r.applied === true) {
    return { kind: 'edited' };
  }
  if (r.applied === false && typeof r.refused === 'string') {
    return { kind: 'refused', message: r.refused, text: typeof r.text === 'string' ? r.text : '' };
  }
  if (r.applied === false) {
    return { kind: 'notEdited', message: 'VS Code did not apply the edit (the file changed meanwhile?)' };
  }
  return { kind: 'unknown' };
}

/** The markdown page a prose answer opens in. */
export function proseMarkdown(title: string, text: string, about?: string): string {
  const header = about ? `# ${title}\n\n_${about}_\n\n` : `# ${title}\n\n`;
  return header + text.trim() + '\n';
}

/** A one-line message for a failed request (JSON-RPC error or anything thrown). */
export function errorText(error: unknown): string {
  if (typeof error === 'object' && error !== null && 'message' in error) {
    const message = String(error.message);
    return message || 'unknown error';
  }
  return String(error);
}
