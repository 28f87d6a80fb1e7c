/**
 * VS Code wiring: starts `qwend lsp` with vscode-languageclient, registers the
 * commands, the status item, the output channel and the result pages. The
 * decisions live in the pure modules (settings, qwend, status, commands).
 */

import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as vscode from 'vscode';
import {
  ExecuteCommandRequest,
  LanguageClient,
  type LanguageClientOptions,
  type ServerOptions,
  State,
} from 'vscode-languageclient/node';

import {
  OTHER_COMMANDS,
  SELECTION_COMMANDS,
  type Outcome,
  askArgs,
  errorText,
  interpretResult,
  proseMarkdown,
  selectionArgs,
} from './commands';
import { INSTALL_COMMAND, daemonArgs, describeExit, findQwend, lspArgs, settingsCommand } from './qwend';
import {
  type Settings,
  initializationOptions,
  inlineEnabledFor,
  needsRestart,
  readSettings,
  serverEnv,
  trimToLines,
} from './settings';
import { type ClientState, type LinkStatus, parseLinkStatus, statusReport, statusView } from './status';

const STATUS_METHOD = 'qwend/status';
const RESULT_SCHEME = 'qwend';
const CLI_TIMEOUT_MS = 15_000;
const SERVE_TIMEOUT_MS = 660_000; // `qwend serve --detach` waits up to 600 s for the model

let controller: Controller | undefined;

/** The Python extension's selected environment per workspace folder (none without it). */
async function pythonEnvironments(): Promise<string[]> {
  const python = vscode.extensions.getExtension('ms-python.python');
  if (!python) {
    return [];
  }
  try {
    const api = (python.isActive ? python.exports : await python.activate()) as PythonApi | undefined;
    const environments = api?.environments;
    if (!environments?.getActiveEnvironmentPath) {
      return [];
    }
    const folders = vscode.workspace.workspaceFolders ?? [];
    const resources = folders.length ? folders.map((f) => f.uri) : [undefined];
    return resources
      .map((resource) => environments.getActiveEnvironmentPath(resource)?.path)
      .filter((p): p is string => typeof p === 'string' && p.length > 0);
  } catch {
    return []; // the Python extension failed to start: search without it
  }
}

/** The part of ms-python's API used here (its `environments` API, 2023.x and later). */
interface PythonApi {
  environments?: {
    getActiveEnvironmentPath(resource?: vscode.Uri): { path: string } | undefined;
  };
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const output = vscode.window.createOutputChannel('qwend', { log: true });
  const item = vscode.window.createStatusBarItem('qwend.status', vscode.StatusBarAlignment.Right, 100);
  item.name = 'qwend';
  item.command = OTHER_COMMANDS.showStatus;
  const pages = new ResultPages();
  controller = new Controller(output, item, pages);
  context.subscriptions.push(
    output,
    item,
    vscode.workspace.registerTextDocumentContentProvider(RESULT_SCHEME, pages),
    ...registerCommands(controller),
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (e.affectsConfiguration('qwend')) {
        void controller?.settingsChanged();
      }
    }),
  );
  item.show();
  await controller.start();
}

export async function deactivate(): Promise<void> {
  await controller?.stop();
}

function registerCommands(c: Controller): vscode.Disposable[] {
  const reg = vscode.commands.registerCommand;
  return [
    ...SELECTION_COMMANDS.map((cmd) => reg(cmd.id, () => c.runOnSelection(cmd.server))),
    reg(OTHER_COMMANDS.ask, () => c.ask()),
    reg(OTHER_COMMANDS.commitMessage, (scm?: { rootUri?: vscode.Uri }) => c.commitMessage(scm?.rootUri)),
    reg(OTHER_COMMANDS.showStatus, () => c.showStatus()),
    reg(OTHER_COMMANDS.showLog, () => c.output.show()),
    reg(OTHER_COMMANDS.restartServer, () => c.restart()),
    reg(OTHER_COMMANDS.startDaemon, () => c.startDaemon()),
    reg(OTHER_COMMANDS.stopDaemon, () => c.stopDaemon()),
  ];
}

/** Read-only markdown pages (prose answers, status details) under the `qwend:` scheme. */
class ResultPages implements vscode.TextDocumentContentProvider {
  private readonly pages = new Map<string, string>();
  private readonly changed = new vscode.EventEmitter<vscode.Uri>();
  readonly onDidChange = this.changed.event;
  private count = 0;

  provideTextDocumentContent(uri: vscode.Uri): string {
    return this.pages.get(uri.toString()) ?? '';
  }

  /** Show `markdown` beside the editor; `name` fixed (status) reuses one page. */
  async show(name: string | undefined, title: string, markdown: string): Promise<void> {
    const base = name ?? `${title} ${++this.count}`;
    const uri = vscode.Uri.from({ scheme: RESULT_SCHEME, path: `/${base}.md` });
    this.pages.set(uri.toString(), markdown);
    this.changed.fire(uri);
    const doc = await vscode.workspace.openTextDocument(uri);
    await vscode.window.showTextDocument(doc, {
      viewColumn: vscode.ViewColumn.Beside,
      preserveFocus: true,
      preview: true,
    });
  }
}

class Controller {
  private client: LanguageClient | undefined;
  private settings: Settings;
  private clientState: ClientState = { kind: 'starting' };
  private link: LinkStatus | null = null;
  private lastModel: string | null = null;
  private qwendPath: string | undefined;
  private daemonStoppedByUser = false;
  private stopping = false;

  constructor(
    readonly output: vscode.LogOutputChannel,
    private readonly item: vscode.StatusBarItem,
    private readonly pages: ResultPages,
  ) {
    this.settings = this.readSettings();
    this.render();
  }

  /** The settings (for `scope`'s language when given); problems are logged unless scoped. */
  private readSettings(scope?: vscode.TextDocument): Settings {
    const config = vscode.workspace.getConfiguration('qwend', scope);
    const { settings, problems } = readSettings((key) => config.get(key));
    if (!scope) {
      problems.forEach((p) => this.output.warn(p));
    }
    return settings;
  }

  // -- the language client ------------------------------------------------------

  async start(): Promise<void> {
    this.settings = this.readSettings();
    const folders = (vscode.workspace.workspaceFolders ?? [])
      .filter((f) => f.uri.scheme === 'file')
      .map((f) => f.uri.fsPath);
    const found = findQwend({
      configured: this.settings.path,
      envPath: process.env.PATH ?? '',
      home: os.homedir(),
      workspaceFolders: folders,
      pythonEnvironments: await pythonEnvironments(),
      isExecutable,
    });
    if (!found.ok) {
      this.qwendPath = undefined;
      this.setClientState({ kind: 'notFound', message: found.message });
      this.output.error(`${found.message}\nSearched: ${found.searched.join(', ')}`);
      void this.offerToFindQwend(found.message);
      return;
    }
    this.qwendPath = found.path;
    this.output.info(`using ${found.path} (found via ${found.source})`);
    const serverOptions: ServerOptions = {
      command: found.path,
      args: lspArgs(this.settings.extraArgs), // stdio; no `transport`, which would add --stdio
      options: { env: serverEnv(this.settings, process.env), cwd: folders[0] },
    };
    const clientOptions: LanguageClientOptions = {
      documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
      outputChannel: this.output,
      initializationOptions: initializationOptions(this.settings, {
        daemonStoppedByUser: this.daemonStoppedByUser,
      }),
      middleware: {
        provideInlineCompletionItems: async (document, position, context, token, next) => {
          const settings = this.readSettings(document);
          if (!inlineEnabledFor(settings.inlineEnabled, settings.inlineLanguages, document.languageId)) {
            return null;
          }
          const result = await next(document, position, context, token);
          return result ? trimItems(result, settings.maxLines) : result;
        },
        // Code actions from the light bulb land here too: one path for every result.
        executeCommand: (command, args) => this.runServerCommand(command, args),
      },
    };
    const client = new LanguageClient('qwend', 'qwend', serverOptions, clientOptions);
    client.onNotification(STATUS_METHOD, (params: unknown) => this.setLink(parseLinkStatus(params)));
    client.onDidChangeState((e) => {
      if (e.newState === State.Running) {
        this.setClientState({ kind: 'running' });
      } else if (e.newState === State.Starting) {
        this.setClientState({ kind: 'starting' });
      } else if (!this.stopping) {
        this.setClientState({ kind: 'stopped', reason: 'see the qwend output channel' });
      }
    });
    this.client = client;
    this.link = null;
    this.setClientState({ kind: 'starting' });
    try {
      await client.start();
    } catch (error) {
      this.setClientState({ kind: 'stopped', reason: errorText(error) });
      this.output.error(`qwend lsp did not start: ${errorText(error)}`);
      return;
    }
    await this.refreshStatus();
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client === undefined) {
      return;
    }
    this.stopping = true;
    try {
      if (client.isRunning()) {
        await client.stop();
      }
    } catch (error) {
      this.output.warn(`stopping qwend lsp: ${errorText(error)}`);
    } finally {
      this.stopping = false;
    }
  }

  async restart(): Promise<void> {
    this.output.info('restarting the language server');
    await this.stop();
    await this.start();
  }

  async settingsChanged(): Promise<void> {
    const before = this.settings;
    const after = this.readSettings();
    this.settings = after;
    if (needsRestart(before, after)) {
      await this.restart();
    }
  }

  // -- status -------------------------------------------------------------------

  private setClientState(state: ClientState): void {
    this.clientState = state;
    this.render();
  }

  private setLink(link: LinkStatus | null): void {
    if (link === null) {
      return;
    }
    this.link = link;
    if (link.model) {
      this.lastModel = link.model;
    }
    this.render();
  }

  private render(): void {
    const view = statusView(this.clientState, this.link, this.lastModel);
    this.item.text = view.text;
    this.item.tooltip = view.tooltip;
    this.item.backgroundColor = view.error ? new vscode.ThemeColor('statusBarItem.errorBackground') : undefined;
    this.item.accessibilityInformation = { label: view.text.replace(/\$\([^)]*\)\s*/g, '') };
  }

  /** Ask the server for a fresh status (it checks /health now). */
  private async refreshStatus(): Promise<void> {
    if (!this.client?.isRunning()) {
      return;
    }
    try {
      this.setLink(parseLinkStatus(await this.client.sendRequest(STATUS_METHOD, {})));
    } catch (error) {
      this.output.warn(`qwend/status: ${errorText(error)}`);
    }
  }

  async showStatus(): Promise<void> {
    await this.refreshStatus();
    let stdout = '';
    let stderr = '';
    let meaning = 'not run: qwend was not found';
    const args = daemonArgs('status', this.settings.extraArgs);
    if (this.qwendPath) {
      const run = await runCli(this.qwendPath, args, CLI_TIMEOUT_MS);
      ({ stdout, stderr } = run);
      meaning = describeExit('status', run.code);
    }
    const markdown = statusReport({
      qwend: this.qwendPath ?? 'qwend',
      args,
      stdout,
      stderr,
      exitMeaning: meaning,
      link: this.link,
      client: this.clientState,
    });
    await this.pages.show('qwend status', 'qwend status', markdown);
  }

  /** Not found: choose the executable, open the setting where it applies, or copy the install. */
  private async offerToFindQwend(message: string): Promise<void> {
    const choose = 'Choose qwend…';
    const settings = 'Open Settings';
    const copy = 'Copy Install Command';
    const choice = await vscode.window.showErrorMessage(`qwend: ${message}`, choose, settings, copy);
    if (choice === choose) {
      const picked = await vscode.window.showOpenDialog({
        canSelectFiles: true,
        canSelectFolders: false,
        canSelectMany: false,
        openLabel: 'Use this qwend',
        title: 'The qwend executable (for example .venv/bin/qwend in your qwend clone)',
      });
      if (picked?.[0]) {
        // Global: a machine-overridable setting then lands in the Remote settings of a remote
        // window, where it applies. The configuration listener restarts the server.
        await vscode.workspace
          .getConfiguration('qwend')
          .update('path', picked[0].fsPath, vscode.ConfigurationTarget.Global);
      }
    } else if (choice === settings) {
      const target = settingsCommand(vscode.env.remoteName);
      await vscode.commands.executeCommand(target.command, target.query);
    } else if (choice === copy) {
      await vscode.env.clipboard.writeText(INSTALL_COMMAND);
      vscode.window.setStatusBarMessage('qwend: install command copied', 5000);
    }
  }

  // -- commands -----------------------------------------------------------------

  /**
   * Send one `workspace/executeCommand` and show its outcome: prose in a side
   * page, a warning when an edit was refused, an error message on failure.
   */
  async runServerCommand(
    command: string,
    args: unknown[],
    options: { about?: string; showProse?: boolean } = {},
  ): Promise<Outcome | undefined> {
    const client = this.client;
    if (!client?.isRunning()) {
      void vscode.window.showErrorMessage('qwend: the language server is not running (see “qwend: Show Status”).');
      return undefined;
    }
    let result: unknown;
    try {
      result = await client.sendRequest(ExecuteCommandRequest.type, { command, arguments: args });
    } catch (error) {
      this.output.error(`${command}: ${errorText(error)}`);
      void vscode.window.showErrorMessage(`qwend: ${errorText(error)}`);
      return undefined;
    }
    const outcome = interpretResult(command, result);
    if (outcome.kind === 'prose' && options.showProse !== false) {
      await this.pages.show(undefined, outcome.title, proseMarkdown(outcome.title, outcome.text, options.about));
    } else if (outcome.kind === 'notEdited') {
      void vscode.window.showWarningMessage(`qwend: ${outcome.message}`);
    } else if (outcome.kind === 'refused') {
      // Nothing was written: the answer opens beside the editor for reading instead.
      void vscode.window.showWarningMessage(outcome.message);
      if (outcome.text.trim()) {
        await this.pages.show(undefined, 'Answer (not applied)', proseMarkdown('Answer (not applied)', outcome.text, outcome.message));
      }
    } else if (outcome.kind === 'cancelled') {
      vscode.window.setStatusBarMessage('qwend: cancelled', 3000);
    }
    return outcome;
  }

  async runOnSelection(serverCommand: string): Promise<void> {
    const editor = vscode.window.activeTextEditor;
    if (!editor) {
      void vscode.window.showErrorMessage('qwend: open a file and select some code first.');
      return;
    }
    const args = selectionArgs(editor.document.uri.toString(), editor.selection);
    await this.runServerCommand(serverCommand, [args], { about: describeSelection(editor) });
  }

  async ask(): Promise<void> {
    const question = await vscode.window.showInputBox({
      title: 'Ask qwend',
      prompt: 'A question for the local model (about the selection, if there is one)',
      ignoreFocusOut: true,
    });
    if (!question?.trim()) {
      return;
    }
    const editor = vscode.window.activeTextEditor;
    const arg = editor ? askArgs(question, editor.document.uri.toString(), editor.selection) : question;
    await this.runServerCommand('qwend.ask', [arg], { about: question });
  }

  async commitMessage(root?: vscode.Uri): Promise<void> {
    const args = root ? [{ root: root.fsPath }] : [];
    const outcome = await this.runServerCommand('qwend.commitMessage', args, { showProse: false });
    if (outcome?.kind !== 'prose') {
      return;
    }
    const repo = gitRepository(root);
    if (repo) {
      repo.inputBox.value = outcome.text;
      await vscode.commands.executeCommand('workbench.view.scm');
    } else {
      await this.pages.show(undefined, outcome.title, proseMarkdown(outcome.title, outcome.text));
    }
  }

  // -- the daemon ---------------------------------------------------------------

  async startDaemon(): Promise<void> {
    if (!this.qwendPath) {
      void vscode.window.showErrorMessage('qwend: qwend was not found; set qwend.path.');
      return;
    }
    const qwend = this.qwendPath;
    const args = daemonArgs('serve', this.settings.extraArgs);
    const run = await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title: 'qwend: starting the daemon and loading the model' },
      () => runCli(qwend, args, SERVE_TIMEOUT_MS, (line) => this.output.info(line)),
    );
    const meaning = describeExit('serve', run.code);
    if (run.code === 0 || run.code === 3) {
      void vscode.window.showInformationMessage(`qwend: daemon ${meaning}`);
    } else {
      const last = run.stderr.trim().split('\n').pop() ?? '';
      void vscode.window.showErrorMessage(`qwend: the daemon did not start: ${meaning}. ${last}`);
    }
    if (this.daemonStoppedByUser) {
      this.daemonStoppedByUser = false; // auto-start may bring it back again from now on
      if (this.settings.autoStartDaemon) {
        await this.restart();
      }
    }
    await this.refreshStatus();
  }

  async stopDaemon(): Promise<void> {
    if (!this.qwendPath) {
      void vscode.window.showErrorMessage('qwend: qwend was not found; set qwend.path.');
      return;
    }
    if (!this.daemonStoppedByUser) {
      this.daemonStoppedByUser = true;
      if (this.settings.autoStartDaemon) {
        await this.restart(); // without auto-start, or the server would start it again at once
      }
    }
    const run = await runCli(this.qwendPath, daemonArgs('stop', this.settings.extraArgs), SERVE_TIMEOUT_MS, (line) =>
      this.output.info(line),
    );
    const meaning = describeExit('stop', run.code);
    if (run.code === 0 || run.code === 2) {
      void vscode.window.showInformationMessage(`qwend: ${meaning}`);
    } else {
      void vscode.window.showErrorMessage(`qwend stop: ${meaning}. ${run.stderr.trim()}`);
    }
    await this.refreshStatus();
  }
}

/** The ghost text cut to `maxLines`; items left empty are dropped. */
function trimItems(
  result: vscode.InlineCompletionItem[] | vscode.InlineCompletionList,
  maxLines: number,
): vscode.InlineCompletionItem[] | vscode.InlineCompletionList {
  const trim = (items: vscode.InlineCompletionItem[]): vscode.InlineCompletionItem[] =>
    items.filter((it) => {
      if (typeof it.insertText === 'string') {
        it.insertText = trimToLines(it.insertText, maxLines);
        return it.insertText.length > 0;
      }
      return true;
    });
  if (Array.isArray(result)) {
    return trim(result);
  }
  result.items = trim(result.items);
  return result;
}

function describeSelection(editor: vscode.TextEditor): string {
  const name = vscode.workspace.asRelativePath(editor.document.uri);
  const { start, end } = editor.selection;
  return start.line === end.line ? `${name}:${start.line + 1}` : `${name}:${start.line + 1}-${end.line + 1}`;
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run `qwend ARGS`; never rejects. Lines go to `log` as they come. */
function runCli(qwend: string, args: string[], timeout: number, log?: (line: string) => void): Promise<CliRun> {
  return new Promise((resolve) => {
    log?.(`$ ${qwend} ${args.join(' ')}`);
    const child = execFile(qwend, args, { timeout, env: process.env }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : null) : 0;
      if (log) {
        `${stdout}${stderr}`.split('\n').filter(Boolean).forEach(log);
      }
      resolve({ code: child.exitCode ?? code, stdout, stderr });
    });
  });
}

interface GitRepository {
  rootUri: vscode.Uri;
  inputBox: { value: string };
}

/** The built-in git extension's repository for `root` (or the only one), if any. */
function gitRepository(root?: vscode.Uri): GitRepository | undefined {
  const git = vscode.extensions.getExtension<{ getAPI(v: 1): { repositories: GitRepository[] } }>('vscode.git');
  if (!git?.isActive) {
    return undefined;
  }
  const repos = git.exports.getAPI(1).repositories;
  if (root) {
    return repos.find((r) => r.rootUri.fsPath === root.fsPath);
  }
  return repos.length === 1 ? repos[0] : undefined;
}
