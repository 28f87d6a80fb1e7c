/**
 * Settings: the `qwend.*` configuration, validated, and what it becomes:
 * the language server's initializationOptions, its environment, and whether
 * inline completions are on for a language. Pure: no `vscode` import, so the
 * unit tests load it directly. package.json declares the same keys and
 * defaults (a unit test keeps the two in step).
 */

/** The language server's log level (QWEND_LSP_LOG), shown in the output channel. */
export type LogLevel = 'warning' | 'info' | 'debug';

export interface Settings {
  /** Path to the `qwend` executable; empty: search for it. */
  path: string;
  /** Extra arguments for every `qwend` command the extension runs (lsp, serve, stop, status). */
  extraArgs: string[];
  /** Let the language server start `qwend serve --detach` when no daemon answers. */
  autoStartDaemon: boolean;
  /** Master switch for ghost text. */
  inlineEnabled: boolean;
  /** Per-language switches, e.g. {"markdown": false}; "*" is the fallback. */
  inlineLanguages: Record<string, boolean>;
  /** Wait before asking the daemon on automatic triggers (server-side debounce). */
  debounceMs: number;
  /** Ghost text longer than this is cut to its first lines. */
  maxLines: number;
  /** Completion length in tokens; null: the daemon's default. */
  maxTokens: number | null;
  /** Answer length of the commands in tokens; null: each task's default. */
  commandMaxTokens: number | null;
  logLevel: LogLevel;
}

/** The defaults; package.json's `contributes.configuration` repeats them. */
export const DEFAULTS: Readonly<Settings> = Object.freeze({
  path: '',
  extraArgs: [],
  autoStartDaemon: true,
  inlineEnabled: true,
  inlineLanguages: {},
  debounceMs: 150,
  maxLines: 16,
  maxTokens: null,
  commandMaxTokens: null,
  logLevel: 'warning',
});

/** Setting key (below `qwend.`) for each field. */
export const KEYS: Readonly<Record<keyof Settings, string>> = Object.freeze({
  path: 'path',
  extraArgs: 'extraArgs',
  autoStartDaemon: 'daemon.autoStart',
  inlineEnabled: 'inlineCompletions.enabled',
  inlineLanguages: 'inlineCompletions.languages',
  debounceMs: 'inlineCompletions.debounceMs',
  maxLines: 'inlineCompletions.maxLines',
  maxTokens: 'inlineCompletions.maxTokens',
  commandMaxTokens: 'commands.maxTokens',
  logLevel: 'server.logLevel',
});

/** Fields the language server reads at start: changing one restarts it. */
const SERVER_FIELDS: ReadonlyArray<keyof Settings> = [
  'path',
  'extraArgs',
  'autoStartDaemon',
  'debounceMs',
  'maxTokens',
  'commandMaxTokens',
  'logLevel',
];

const LOG_LEVELS: ReadonlySet<string> = new Set(['warning', 'info', 'debug']);

/** Reads one setting (below `qwend.`); `workspace.getConfiguration('qwend').get` fits. */
export type Getter = (key: string) => unknown;

/**
 * The settings from a getter, each invalid value replaced by its default.
 * Returns the problems too, one line each, for the output channel.
 */
export function readSettings(get: Getter): { settings: Settings; problems: string[] } {
  const problems: string[] = [];
  const pick = <K extends keyof Settings>(field: K, valid: (v: unknown) => boolean): Settings[K] => {
    const value = get(KEYS[field]);
    if (value === undefined) {
      return DEFAULTS[field];
    }
    if (!valid(value)) {
      problems.push(`qwend.${KEYS[field]}: invalid value ${JSON.stringify(value)}; using the default`);
      return DEFAULTS[field];
    }
    return value as Settings[K];
  };
  const settings: Settings = {
    path: pick('path', isString).trim(),
    extraArgs: pick('extraArgs', (v) => Array.isArray(v) && v.every(isString)),
    autoStartDaemon: pick('autoStartDaemon', isBoolean),
    inlineEnabled: pick('inlineEnabled', isBoolean),
    inlineLanguages: pick('inlineLanguages', isBooleanMap),
    debounceMs: pick('debounceMs', (v) => isInteger(v) && v >= 0 && v <= 10_000),
    maxLines: pick('maxLines', (v) => isInteger(v) && v >= 1),
    maxTokens: pick('maxTokens', (v) => v === null || (isInteger(v) && v >= 1)),
    commandMaxTokens: pick('commandMaxTokens', (v) => v === null || (isInteger(v) && v >= 1)),
    logLevel: pick('logLevel', (v) => isString(v) && LOG_LEVELS.has(v)),
  };
  return { settings, problems };
}

/**
 * initializationOptions for `qwend lsp` (see docs/editors.md). Prose answers
 * come back as command results, which the extension shows itself, so the
 * server's showMessage copy is turned off. After the user stops the daemon
 * from VS Code, auto-start stays off until they start it again: otherwise the
 * server would bring it straight back.
 */
export function initializationOptions(
  settings: Settings,
  state: { daemonStoppedByUser: boolean } = { daemonStoppedByUser: false },
): Record<string, unknown> {
  const options: Record<string, unknown> = {
    autoStart: settings.autoStartDaemon && !state.daemonStoppedByUser,
    debounceMs: settings.debounceMs,
    proseMessages: false,
  };
  if (settings.maxTokens !== null) {
    options.maxTokens = settings.maxTokens;
  }
  if (settings.commandMaxTokens !== null) {
    options.taskMaxTokens = settings.commandMaxTokens;
  }
  return options;
}

/** Environment for the language server: its log goes to stderr, hence to the output channel. */
export function serverEnv(settings: Settings, base: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...base, QWEND_LSP_LOG: settings.logLevel };
}

/** Whether going from `before` to `after` needs a language server restart. */
export function needsRestart(before: Settings, after: Settings): boolean {
  return SERVER_FIELDS.some((field) => JSON.stringify(before[field]) !== JSON.stringify(after[field]));
}

/**
 * Are inline completions on for `languageId`? `enabled` is the master switch
 * (read for the document, so a `"[lang]"` override of
 * `qwend.inlineCompletions.enabled` applies); then the language's entry in
 * `languages`, then its "*" entry; on when neither says.
 */
export function inlineEnabledFor(
  enabled: boolean,
  languages: Record<string, boolean>,
  languageId: string,
): boolean {
  if (!enabled) {
    return false;
  }
  if (Object.prototype.hasOwnProperty.call(languages, languageId)) {
    return languages[languageId];
  }
  if (Object.prototype.hasOwnProperty.call(languages, '*')) {
    return languages['*'];
  }
  return true;
}

/** `text` cut to its first `maxLines` lines (then without trailing whitespace). */
export function trimToLines(text: string, maxLines: number): string {
  const lines = text.split('\n');
  if (lines.length <= maxLines) {
    return text;
  }
  return lines.slice(0, maxLines).join('\n').replace(/\s+$/, '');
}

function isString(v: unknown): v is string {
  return typeof v === 'string';
}

function isBoolean(v: unknown): v is boolean {
  return typeof v === 'boolean';
}

function isInteger(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v);
}

function isBooleanMap(v: unknown): boolean {
  return (
    typeof v === 'object' &&
    v !== null &&
    !Array.isArray(v) &&
    Object.values(v as Record<string, unknown>).every(isBoolean)
  );
}
