/**
 * The status item: the language server's `qwend/status` ({state, model,
 * socket, detail}) and the client's own state, turned into what the status
 * bar shows. Pure: extension.ts copies a StatusView onto the item.
 */

/** The `qwend/status` payload (lsp_server/qwend_lsp/daemon_link.py LinkStatus). */
export interface LinkStatus {
  state: string;
  model: string | null;
  socket: string;
  detail: string;
}

/** The language client's side: is the server process there at all? */
export type ClientState =
  | { kind: 'starting' }
  | { kind: 'running' }
  | { kind: 'stopped'; reason: string }
  | { kind: 'notFound'; message: string };

/** The four words the item can say, plus `starting` before the first status arrives. */
export type Label = 'starting' | 'loading' | 'ready' | 'offline' | 'error';

export interface StatusView {
  label: Label;
  /** Status bar text, with a codicon. */
  text: string;
  tooltip: string;
  /** Show the item with the error background. */
  error: boolean;
}

const LOADING_STATES: ReadonlySet<string> = new Set(['starting', 'loading', 'swapping']);

/** A LinkStatus from an untrusted notification payload, or null when it is not one. */
export function parseLinkStatus(raw: unknown): LinkStatus | null {
  if (typeof raw !== 'object' || raw === null) {
    return null;
  }
  const r = raw as Record<string, unknown>;
  if (typeof r.state !== 'string') {
    return null;
  }
  return {
    state: r.state,
    model: typeof r.model === 'string' && r.model ? r.model : null,
    socket: typeof r.socket === 'string' ? r.socket : '',
    detail: typeof r.detail === 'string' ? r.detail : '',
  };
}

/**
 * What the item shows. The client state wins while there is no server;
 * after that the daemon's state: ready (with the model), loading (with the
 * progress detail), offline (no daemon answers), error (the model failed).
 * `lastModel` is the model seen last, for a ready status that omits it.
 */
export function statusView(client: ClientState, link: LinkStatus | null, lastModel?: string | null): StatusView {
  if (client.kind === 'notFound') {
    return view('error', 'not found', client.message, true);
  }
  if (client.kind === 'stopped') {
    return view('error', 'error', `The qwend language server stopped: ${client.reason}`, true);
  }
  if (client.kind === 'starting' || link === null) {
    return view('starting', 'starting', 'Starting the qwend language server…', false);
  }
  const model = link.model ?? lastModel ?? null;
  if (link.state === 'ready' || link.state === 'swapping') {
    const text = model ? `ready (${model})` : 'ready';
    const more = link.state === 'swapping' ? ' Swapping to a new model; the old one still answers.' : '';
    return view('ready', text, `The qwend daemon is ready${model ? ` with ${model}` : ''}.${more}\nSocket: ${link.socket}`, false);
  }
  if (LOADING_STATES.has(link.state)) {
    const progress = link.detail && link.detail !== link.state ? `: ${link.detail}` : '';
    return view('loading', `loading${progress ? ` (${link.detail})` : ''}`, `The qwend daemon is ${link.state}${progress}.\nSocket: ${link.socket}`, false);
  }
  if (link.state === 'unreachable') {
    return view(
      'offline',
      'offline',
      `No qwend daemon answers: ${link.detail}.\nRun “qwend: Start Daemon”, or \`qwend serve\` in a terminal.`,
      false,
    );
  }
  if (link.state === 'unloaded') {
    return view('offline', 'offline (no model loaded)', `The daemon runs without a resident model.\nSocket: ${link.socket}`, false);
  }
  return view('error', 'error', `The qwend daemon reports ${link.state}: ${link.detail}.\nSee “qwend: Show Status”.`, true);
}

function view(label: Label, words: string, tooltip: string, error: boolean): StatusView {
  const icon = {
    starting: '$(sync~spin)',
    loading: '$(loading~spin)',
    ready: '$(check)',
    offline: '$(debug-disconnect)',
    error: '$(error)',
  }[label];
  return { label, text: `${icon} qwend: ${words}`, tooltip: `${tooltip}\nClick for details.`, error };
}

/**
 * The details page the item opens: `qwend status`'s own table, its exit code
 * explained, and what the language server sees.
 */
export function statusReport(input: {
  qwend: string;
  args: string[];
  stdout: string;
  stderr: string;
  exitMeaning: string;
  link: LinkStatus | null;
  client: ClientState;
}): string {
  const lines = [
    '# qwend status',
    '',
    `\`${[input.qwend, ...input.args].join(' ')}\` — ${input.exitMeaning}`,
    '',
    '```text',
    (input.stdout + (input.stderr ? `\n${input.stderr}` : '')).trimEnd() || '(no output)',
    '```',
    '',
    '## Language server',
    '',
  ];
  if (input.client.kind === 'notFound') {
    lines.push(`Not started: ${input.client.message}`);
  } else if (input.client.kind === 'stopped') {
    lines.push(`Stopped: ${input.client.reason}`);
  } else if (input.link === null) {
    lines.push('Starting; no status yet.');
  } else {
    lines.push(
      `- state: ${input.link.state}`,
      `- model: ${input.link.model ?? '—'}`,
      `- socket: ${input.link.socket}`,
      `- detail: ${input.link.detail}`,
    );
  }
  return lines.join('\n') + '\n';
}
