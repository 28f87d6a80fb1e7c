"""Editor: the qwend language server (pygls): LSP features wired to the domain helpers.

Features: textDocument/inlineCompletion (LSP 3.18), a textDocument/completion
fallback, code actions with executeCommand commands, the custom
``qwend/status`` request and notification, and the daemon's loading
progress. The handlers stay short; inline.py, commands.py, actions.py,
edits.py, syntax/ and daemon_link.py do the work. Completion items never
hold a newline for Vim-family clients (``SINGLE_LINE_CLIENTS``), inline
completions follow ``selectedCompletionInfo``, and the model is warmed up
each time the daemon becomes ready. The server exits on stdin EOF (pygls) and when the
editor process named in ``initialize``'s ``processId`` dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlparse

import pygls.protocol
from cattrs import Converter
from lsprotocol import types as t
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer

from qwend import __version__
from qwend.states import TRANSIENT_STATES
from qwend_lsp import commands, pygls_compat
from qwend_lsp.actions import CODE_ACTION_KINDS, CODE_ACTIONS, code_actions
from qwend_lsp.completion import RecentDocuments, snippets, with_selected
from qwend_lsp.daemon_link import DaemonDown, DaemonLink, DaemonRequestError, LinkStatus
from qwend_lsp.framing import serve_stdio
from qwend_lsp.inline import InlineCompleter, InlineRequest
from qwend_lsp.options import Options, parse_options

log = logging.getLogger(__name__)

STATUS_METHOD: Final = "qwend/status"
PARENT_POLL_S: Final = 3.0
LOADING_STATES: Final = TRANSIENT_STATES | {"starting"}  # starting: the link's own state
_WORD_BEFORE = re.compile(r"[\w$]*$")
# Clients whose completion popup is Vim's complete(), which inserts a newline as a
# NUL byte: Neovim, Vim, vim-lsp, coc.nvim, vim-lsc (by initialize's clientInfo.name).
SINGLE_LINE_CLIENTS: Final = re.compile(r"vim", re.IGNORECASE)
WARM_UP: Final = {"prefix": "def ", "max_tokens": 1, "temperature": 0}  # one token: cheap


def converter_factory() -> Converter:
    """pygls' converter, lenient with VS Code's raw inline triggerKind 0 (= Invoked)."""
    conv: Converter = pygls.protocol.default_converter()  # type: ignore[no-untyped-call]
    conv.register_structure_hook(
        t.InlineCompletionTriggerKind,
        lambda v, _: (
            t.InlineCompletionTriggerKind.Invoked if v == 0 else t.InlineCompletionTriggerKind(v)
        ),
    )
    return conv


class QwendProtocol(pygls.protocol.LanguageServerProtocol):
    """pygls' protocol, also for requests that leave out ``params``.

    JSON-RPC 2.0 makes ``params`` optional, and ``{"method": "qwend/status"}``
    is a natural way to ask. pygls 2 cannot parse such a message, so it never
    learns the id and the client would wait forever; here it gets params null.
    """

    def structure_message(self, data: dict[str, Any]) -> Any:
        if "method" in data and "params" not in data:
            data = {**data, "params": None}
        return super().structure_message(data)


class QwendServer(LanguageServer):
    """The server's state: options, the daemon link, the completer, recent documents."""

    def __init__(self, socket_path: Path, config_path: str | None) -> None:
        super().__init__(
            "qwend-lsp",
            __version__,
            protocol_cls=QwendProtocol,
            converter_factory=converter_factory,
        )
        self.options = Options()
        self.link = DaemonLink(socket_path, config_path, on_change=self.status_changed)
        self.completer = InlineCompleter(self.link, self.options)
        self.recent = RecentDocuments()
        self.fallback_completion = False
        self.multiline_items = True
        self._last_state = ""
        self.noted_languages: set[str] = set()
        self._loading_updates: asyncio.Queue[LinkStatus] | None = None

    # -- set-up -------------------------------------------------------------------

    def configure(self, params: t.InitializeParams) -> None:
        self.options, problems = parse_options(params.initialization_options)
        self.completer.configure(self.options)
        fallback = self.options.completion_fallback
        if fallback is None:
            text_document = params.capabilities.text_document
            fallback = text_document is None or text_document.inline_completion is None
        self.fallback_completion = fallback
        multiline = self.options.completion_multiline
        if multiline is None:
            name = params.client_info.name if params.client_info else ""
            multiline = not SINGLE_LINE_CLIENTS.search(name)
        self.multiline_items = multiline
        if problems:
            self.window_show_message(
                t.ShowMessageParams(
                    type=t.MessageType.Warning,
                    message="qwend: initializationOptions: " + "; ".join(problems),
                )
            )
        if params.process_id:
            asyncio.get_running_loop().create_task(watch_parent(params.process_id))

    def supports_progress(self) -> bool:
        window = self.client_capabilities.window
        return bool(window and window.work_done_progress)

    def label(self, uri: str) -> str:
        """A path for prompts: relative to the workspace root when inside it."""
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            return uri
        path = unquote(parsed.path)
        root = self.workspace.root_path
        if root and path.startswith(root.rstrip("/") + "/"):
            return os.path.relpath(path, root)
        return path

    # -- daemon state -------------------------------------------------------------

    def status_changed(self, status: LinkStatus) -> None:
        self.protocol.notify(STATUS_METHOD, status.as_dict())
        if self._loading_updates is not None:
            self._loading_updates.put_nowait(status)
        became_ready = status.state == "ready" and self._last_state != "ready"
        self._last_state = status.state
        if became_ready and self.options.warm_up:
            asyncio.get_running_loop().create_task(self.warm_up())

    async def warm_up(self) -> None:
        """One tiny completion as soon as the daemon is ready, so that the first
        keystroke does not pay for the model's first run (14 s on a CPU, then 0.5 s)."""
        with contextlib.suppress(DaemonDown, DaemonRequestError):
            await self.link.task("complete", dict(WARM_UP))
            log.info("warmed the model up")

    async def report_loading(self) -> None:
        """One $/progress while the daemon starts or loads its model."""
        queue: asyncio.Queue[LinkStatus] = asyncio.Queue()
        self._loading_updates = queue
        token: str | None = None
        while True:
            status = await queue.get()
            if status.state in LOADING_STATES:
                text = f"{status.state}: {status.detail}"
                if token is None:
                    token = f"qwend-daemon-{id(status)}"
                    await self.work_done_progress.create_async(token)
                    begin = t.WorkDoneProgressBegin(title="qwend daemon", message=text)
                    self.work_done_progress.begin(token, begin)
                else:
                    self.work_done_progress.report(token, t.WorkDoneProgressReport(message=text))
            elif token is not None:
                self.work_done_progress.end(token, t.WorkDoneProgressEnd(message=status.state))
                token = None

    # -- inline completion ---------------------------------------------------------

    async def inline_text(
        self,
        uri: str,
        position: t.Position,
        automatic: bool,
        selected: t.SelectedCompletionInfo | None = None,
        single_line: bool = False,
    ) -> str | None:
        """The completion at ``position``; after ``selected``'s text when the editor's
        suggestion list has an item selected (the answer then starts with that text)."""
        doc = self.workspace.get_text_document(uri)
        text, offset = doc.source, doc.offset_at_position(position)
        if selected is not None:
            start = doc.offset_at_position(selected.range.start)
            end = doc.offset_at_position(selected.range.end)
            text, offset = with_selected(text, start, end, selected.text)
        request = InlineRequest(
            uri=uri,
            text=text,
            offset=offset,
            language=doc.language_id or "",
            path=self.label(uri),
            snippets=self.snippets(uri),
            single_line=single_line,
        )
        try:
            answer = await self.completer.complete(request, automatic)
        except (DaemonDown, DaemonRequestError) as exc:
            raise commands.request_failed(exc) from None
        if answer and selected is not None:
            return selected.text + answer
        return answer

    def snippets(self, uri: str) -> list[dict[str, Any]]:
        """Other open documents, most recently edited first (higher score)."""
        return snippets(
            self.recent.newest_first(exclude=uri),
            self._source,
            self.label,
            self.options.max_snippets,
            self.options.snippet_chars,
        )

    def _source(self, uri: str) -> str | None:
        doc = self.workspace.text_documents.get(uri)
        return None if doc is None else doc.source

    # -- commands -------------------------------------------------------------------

    def host(self) -> commands.Host:
        """What the command now being handled may use (call it inside the handler)."""
        return commands.Host(
            ask=self.link.task,
            document=self.workspace.get_text_document,
            label=self.label,
            apply_edit=self.workspace_apply_edit_async,
            show_message=self.window_show_message,
            progress=self.work_done_progress if self.supports_progress() else None,
            request=pygls_compat.request_future(self.protocol),
            root=self.workspace.root_path,
            task_max_tokens=self.options.task_max_tokens,
            task_temperature=self.options.task_temperature,
            prose_messages=self.options.prose_messages,
            show_document=self.window_show_document_async if self.can_show_documents() else None,
            can_create_files=self.can_create_files(),
            noted=self.noted_languages,
        )

    def can_show_documents(self) -> bool:
        window = self.client_capabilities.window
        return bool(window and window.show_document and window.show_document.support)

    def can_create_files(self) -> bool:
        workspace = self.client_capabilities.workspace
        edit = workspace.workspace_edit if workspace else None
        return bool(
            edit
            and edit.document_changes
            and t.ResourceOperationKind.Create in (edit.resource_operations or [])
        )

    def shutdown(self) -> None:
        """Stop without joining the stdin reader thread, which may block forever on read."""
        pygls_compat.stop_without_join(self)

    def report_server_error(self, error: Exception, source: Any) -> None:
        """Request errors go back in the response; log the rest instead of a popup storm."""
        if isinstance(error, JsonRpcException) and error.code == commands.REQUEST_FAILED:
            return
        log.error("server error (%s): %s", getattr(source, "__name__", source), error)


async def watch_parent(pid: int) -> None:
    """Exit when the editor process that started us is gone."""
    while True:
        await asyncio.sleep(PARENT_POLL_S)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            log.info("the editor (pid %d) is gone; exiting", pid)
            os._exit(0)
        except PermissionError:
            pass  # exists, owned by someone else


def build(socket_path: Path, config_path: str | None) -> QwendServer:
    """A server with every feature registered."""
    server = QwendServer(socket_path, config_path)
    register_lifecycle(server)
    register_documents(server)
    register_completions(server)
    register_code_actions(server)
    register_commands(server)
    server.feature(STATUS_METHOD)(status)
    return server


# -- features: one function each, registered by build() ---------------------------------


def register_lifecycle(server: QwendServer) -> None:
    server.feature(t.INITIALIZE)(initialize)
    server.feature(t.INITIALIZED)(initialized)
    server.feature(t.EXIT)(exit_)


def initialize(ls: QwendServer, params: t.InitializeParams) -> None:
    ls.configure(params)


def initialized(ls: QwendServer, params: t.InitializedParams) -> None:
    if ls.supports_progress():
        asyncio.get_running_loop().create_task(ls.report_loading())
    ls.link.start(auto_start=ls.options.auto_start)


async def exit_(ls: QwendServer, params: Any) -> None:
    await ls.link.close()  # after shutdown, which cancelled the pending requests


def register_documents(server: QwendServer) -> None:
    server.feature(t.TEXT_DOCUMENT_DID_OPEN)(did_open)
    server.feature(t.TEXT_DOCUMENT_DID_CHANGE)(did_change)
    server.feature(t.TEXT_DOCUMENT_DID_CLOSE)(did_close)


def did_open(ls: QwendServer, params: t.DidOpenTextDocumentParams) -> None:
    ls.recent.touch(params.text_document.uri)


def did_change(ls: QwendServer, params: t.DidChangeTextDocumentParams) -> None:
    ls.recent.touch(params.text_document.uri)


def did_close(ls: QwendServer, params: t.DidCloseTextDocumentParams) -> None:
    ls.recent.forget(params.text_document.uri)


def register_completions(server: QwendServer) -> None:
    server.feature(t.TEXT_DOCUMENT_INLINE_COMPLETION, t.InlineCompletionOptions())(
        inline_completion
    )
    server.feature(t.TEXT_DOCUMENT_COMPLETION, t.CompletionOptions())(completion)


async def inline_completion(
    ls: QwendServer, params: t.InlineCompletionParams
) -> t.InlineCompletionList:
    automatic = params.context.trigger_kind == t.InlineCompletionTriggerKind.Automatic
    selected = params.context.selected_completion_info
    text = await ls.inline_text(params.text_document.uri, params.position, automatic, selected)
    if not text:
        return t.InlineCompletionList(items=[])
    at = selected.range if selected else t.Range(start=params.position, end=params.position)
    return t.InlineCompletionList(items=[t.InlineCompletionItem(insert_text=text, range=at)])


async def completion(ls: QwendServer, params: t.CompletionParams) -> t.CompletionList | None:
    if not ls.fallback_completion:
        return None
    single = not ls.multiline_items
    text = await ls.inline_text(
        params.text_document.uri, params.position, automatic=False, single_line=single
    )
    if text and single:
        text = text.split("\n", 1)[0]  # never a newline: Vim's complete() writes it as NUL
    if not text or not text.strip():
        return t.CompletionList(is_incomplete=True, items=[])
    return fallback_list(ls, params, text)


def register_code_actions(server: QwendServer) -> None:
    server.feature(
        t.TEXT_DOCUMENT_CODE_ACTION, t.CodeActionOptions(code_action_kinds=CODE_ACTION_KINDS)
    )(code_action)


def code_action(ls: QwendServer, params: t.CodeActionParams) -> list[t.CodeAction]:
    return code_actions(params.text_document.uri, params.range, list(params.context.diagnostics))


def register_commands(server: QwendServer) -> None:
    for spec in CODE_ACTIONS:
        server.command(spec.command)(task_command(spec.task))
    server.command("qwend.commitMessage")(commit_message)
    server.command("qwend.ask")(ask)


def task_command(task: str) -> Callable[..., Awaitable[dict[str, Any]]]:
    """The executeCommand handler of one code task (explain, refactor...)."""

    async def run(ls: QwendServer, *args: Any) -> dict[str, Any]:
        return await commands.run_code_task(ls.host(), task, args)

    return run


async def commit_message(ls: QwendServer, *args: Any) -> dict[str, Any]:
    return await commands.run_commit_message(ls.host(), args)


async def ask(ls: QwendServer, *args: Any) -> dict[str, Any]:
    return await commands.run_ask(ls.host(), args)


async def status(ls: QwendServer, params: Any) -> dict[str, Any]:
    return (await ls.link.check()).as_dict()


def fallback_list(ls: QwendServer, params: t.CompletionParams, text: str) -> t.CompletionList:
    """One completion item that inserts the suggestion; filtered on the word before the cursor."""
    doc = ls.workspace.get_text_document(params.text_document.uri)
    line = doc.lines[params.position.line] if params.position.line < len(doc.lines) else ""
    word = _WORD_BEFORE.search(line[: params.position.character])
    typed = word.group(0) if word else ""
    start = t.Position(line=params.position.line, character=params.position.character - len(typed))
    first = text.split("\n", 1)[0].strip() or text.strip().split("\n", 1)[0]
    item = t.CompletionItem(
        label=(typed + first)[:80] or "qwend",
        kind=t.CompletionItemKind.Text,
        detail="qwend",
        filter_text=typed + text,
        sort_text="0",
        text_edit=t.TextEdit(
            range=t.Range(start=start, end=params.position), new_text=typed + text
        ),
    )
    return t.CompletionList(is_incomplete=True, items=[item])


def main(socket_path: Path, config_path: str | None) -> int:
    """Run the server on stdio until the editor closes it."""
    logging.basicConfig(
        level=os.environ.get("QWEND_LSP_LOG", "WARNING").upper(),
        stream=sys.stderr,
        format="qwend-lsp %(levelname)s %(name)s: %(message)s",
    )
    server = build(socket_path, config_path)
    serve_stdio(server)  # server.start_io(), with framing that survives stdin garbage
    # Exit now: the interpreter would otherwise join pygls' stdin reader thread, which
    # stays blocked on read while the editor keeps our stdin open after `exit`.
    code = 0 if pygls_compat.shut_down_cleanly(server.protocol) else 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(ValueError, OSError):  # the writer may have closed stdout
            stream.flush()
    os._exit(code)
