"""Editor: the executeCommand commands: explain, refactor, docstring, tests, fix, commit, ask.

Each command reports ``$/progress`` (when the client supports it) and can be
cancelled two ways: the progress notification's cancel button
(``window/workDoneProgress/cancel``) and ``$/cancelRequest`` on the
executeCommand request. pygls does not cancel command tasks itself, so both
are bridged to the task here; the daemon request is then closed and the
daemon drops the job. A cancelled command answers ``{"cancelled": true}``.

Results:

- code (refactor, docstring, tests, fix): a ``workspace/applyEdit`` the editor
  applies (see actions.py and edits.py for where each edit goes); the result
  is ``{"applied": bool, "text": answer, "uri": changed file, "check":
  "passed" | "skipped: why"}``. Tests land in a new file, opened for the
  user with ``window/showDocument``.
- checked first (syntax/checks.py): a cut-off answer (finish reason
  ``length``, or an unclosed fence) and an edit after which a document that
  parsed would no longer parse are refused: nothing is written, the result
  is ``{"applied": false, "refused": message, "text": answer, "line"?}``,
  and (unless ``proseMessages`` is off) the message is shown as a Warning
  and the answer opened for reading (answers.py).
- prose (explain, commitMessage, ask): the text is the command's result
  ``{"text": ...}`` and is also shown with ``window/showMessage`` (Info),
  unless the ``proseMessages`` option is off.
  Editors without a good message area can read the result instead.

Arguments: code commands take one object ``{"uri", "range", "instruction"?}``
(what the code actions send); ``qwend.ask`` takes a question string, or an
object ``{"question", "uri"?, "range"?}`` to ask about a selection;
``qwend.commitMessage`` takes nothing (or ``{"root"}``) and reads
``git diff --cached`` in the workspace root.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Final

from lsprotocol import types as t
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.progress import Progress
from pygls.uris import from_fs_path
from pygls.workspace import TextDocument

from qwend.protocol import MAX_LANGUAGE_CHARS
from qwend_lsp import actions, answers, commit_message, edits
from qwend_lsp.daemon_link import DaemonDown, DaemonRequestError
from qwend_lsp.syntax import checks, languages, testfiles

REQUEST_FAILED: Final = int(t.LSPErrorCodes.RequestFailed)
MAX_DIFF_CHARS: Final = 200_000
TITLES: Final = {
    "explain": "qwend: explaining",
    "refactor": "qwend: refactoring",
    "docstring": "qwend: writing a docstring",
    "tests": "qwend: writing tests",
    "fix": "qwend: fixing",
    "commit_message": "qwend: drafting a commit message",
    "chat": "qwend: answering",
}


@dataclass(frozen=True)
class Host:
    """What a command needs from the language server, and nothing more.

    server.py builds one per command, inside the handler (``request`` is the
    future of the executeCommand request being handled).
    """

    ask: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]  # one daemon task
    document: Callable[[str], TextDocument]
    label: Callable[[str], str]  # a uri as the prompts name it
    apply_edit: Callable[[t.ApplyWorkspaceEditParams], Awaitable[t.ApplyWorkspaceEditResult]]
    show_message: Callable[[t.ShowMessageParams], None]
    progress: Progress | None  # None: the client shows no $/progress
    request: Future[Any] | None  # cancelled by $/cancelRequest
    root: str | None  # the workspace root
    task_max_tokens: int | None
    task_temperature: float | None
    prose_messages: bool
    # None: the client cannot open documents (window/showDocument).
    show_document: Callable[[t.ShowDocumentParams], Awaitable[t.ShowDocumentResult]] | None
    can_create_files: bool  # WorkspaceEdit CreateFile (resource operations)
    noted: set[str]  # languages already told that their edits go unchecked


def request_failed(exc: Exception) -> JsonRpcException:
    """The JSON-RPC error a daemon failure becomes (RequestFailed, -32803)."""
    return JsonRpcException(message=str(exc), code=REQUEST_FAILED)


@contextlib.asynccontextmanager
async def progress(host: Host, title: str) -> AsyncIterator[Callable[[str], None]]:
    """Report $/progress around a block; cancelling the progress cancels the block's task."""
    me = asyncio.current_task()
    loop = asyncio.get_running_loop()

    def cancel_me(future: Any) -> None:
        if future.cancelled() and me is not None:
            loop.call_soon_threadsafe(me.cancel)

    # $/cancelRequest on the executeCommand request (pygls would only answer -32800).
    if host.request is not None:
        host.request.add_done_callback(cancel_me)
    reporter = host.progress
    if reporter is None:
        yield lambda message: None
        return
    token = str(uuid.uuid4())
    await reporter.create_async(token)
    reporter.begin(
        token,
        t.WorkDoneProgressBegin(title=title, cancellable=True, message="waiting for the model"),
    )
    reporter.tokens[token].add_done_callback(cancel_me)

    def report(message: str) -> None:
        reporter.report(token, t.WorkDoneProgressReport(message=message))

    outcome = "cancelled"
    try:
        yield report
        outcome = "done"
    except (DaemonDown, DaemonRequestError) as exc:
        outcome = f"failed: {exc}"
        raise
    finally:
        reporter.end(token, t.WorkDoneProgressEnd(message=outcome))


async def ask_daemon(host: Host, task: str, body: dict[str, Any]) -> dict[str, Any]:
    """Run one task with progress; DaemonDown and daemon errors become RequestFailed."""
    if host.task_max_tokens is not None:
        body.setdefault("max_tokens", host.task_max_tokens)
    if host.task_temperature is not None:
        body.setdefault("temperature", host.task_temperature)
    try:
        async with progress(host, TITLES.get(task, f"qwend: {task}")):
            return await host.ask(task, body)
    except (DaemonDown, DaemonRequestError) as exc:
        raise request_failed(exc) from None


async def run_code_task(host: Host, task: str, args: tuple[Any, ...]) -> dict[str, Any]:
    """explain / refactor / docstring / tests / fix on a selection (or the unit at the cursor)."""
    if len(args) != 1 or not isinstance(args[0], dict) or "uri" not in args[0]:
        raise JsonRpcInvalidParams(f"qwend.{task} takes one object {{uri, range}}")
    uri = str(args[0]["uri"])
    doc = host.document(uri)
    lines = list(doc.lines)
    language = languages.language_name(doc.language_id or "", edits.file_path(uri) or "")
    parsed = languages.parse(language, doc.source)
    try:
        selection = actions.target_range(lines, actions.parse_range(args[0].get("range")), parsed)
    except ValueError as exc:
        raise JsonRpcInvalidParams(str(exc)) from None
    start, end = doc.offset_at_position(selection.start), doc.offset_at_position(selection.end)
    code = doc.source[start:end]
    if not code.strip():
        raise JsonRpcInvalidParams("the selection is empty")
    body: dict[str, Any] = {
        "code": code,
        "language": (doc.language_id or "")[:MAX_LANGUAGE_CHARS],
        "path": host.label(uri),
        "context": actions.surrounding(lines, selection),
    }
    if args[0].get("instruction"):
        body["instruction"] = str(args[0]["instruction"])
    try:
        answer = await ask_daemon(host, task, body)
    except asyncio.CancelledError:
        return {"cancelled": True}
    text = str(answer.get("text", ""))
    if task in actions.PROSE_TASKS:
        return show_prose(host, f"qwend: {task}", text)
    result = await edit_from_answer(host, task, doc, language, selection, answer, parsed)
    return {**result, "finish_reason": answer.get("finish_reason")}


async def edit_from_answer(
    host: Host,
    task: str,
    doc: TextDocument,
    language: str,
    selection: t.Range,
    answer: dict[str, Any],
    parsed: languages.Parsed | None,
) -> dict[str, Any]:
    """Check the answer, plan its edit, check the edit, then apply it (or refuse)."""
    uri, text = doc.uri, str(answer.get("text", ""))
    reason = checks.cut_off(answer.get("finish_reason"), text)
    if reason is not None:
        limit = answer.get("sampling", {}).get("max_tokens")
        hint = checks.raise_limit_hint(task, limit)
        return await refuse(host, task, uri, f"{reason}; the file was not changed. {hint}", text)
    try:
        plan = await plan_edit(host, task, doc, language, selection, text, parsed)
    except actions.EmptyAnswer as exc:  # nothing to write: the answer is still shown
        return await refuse(host, task, uri, f"{exc}; the file was not changed", text)
    except edits.NoPlace as exc:
        return await refuse(host, task, uri, f"{exc}; nothing was written", text)
    verdict = checks.parse_after(language, plan.before, plan.after)
    if not verdict.ok:
        message = f"{verdict.note}, so it was not changed; the answer is shown instead"
        return await refuse(host, task, uri, message, text, line=verdict.error_line)
    if not verdict.checked:
        note_unchecked(host, language, verdict.note)
    applied = await apply_plan(host, task, plan)
    return {"applied": applied, "text": text, "uri": plan.target_uri, "check": verdict.as_result()}


async def plan_edit(
    host: Host,
    task: str,
    doc: TextDocument,
    language: str,
    selection: t.Range,
    text: str,
    parsed: languages.Parsed | None,
) -> edits.Plan:
    if task != "tests":
        return edits.code_edit(task, doc, language, selection, text, parsed)
    existing = None
    source_path = edits.file_path(doc.uri)
    if source_path is not None:
        target = testfiles.file_for_tests(PurePosixPath(source_path), language)
        if target is not None and Path(str(target)).exists():
            existing = host.document(from_fs_path(str(target)) or f"file://{target}")
    return edits.tests_edit(doc.uri, language, text, existing, host.can_create_files)


async def apply_plan(host: Host, task: str, plan: edits.Plan) -> bool:
    """Send the edit (or write the new file) and open the target when the plan says so."""
    if plan.edit is not None:
        result = await host.apply_edit(
            t.ApplyWorkspaceEditParams(edit=plan.edit, label=f"qwend: {task}")
        )
        applied = result.applied
    else:
        assert plan.write_to is not None
        try:
            plan.write_to.parent.mkdir(parents=True, exist_ok=True)
            with plan.write_to.open("x", encoding="utf-8") as out:  # never over a file
                out.write(plan.after)
        except OSError as exc:
            raise JsonRpcException(
                message=f"qwend {task}: cannot write {plan.write_to}: {exc}", code=REQUEST_FAILED
            ) from None
        applied = True
    if applied and plan.opens:
        if host.show_document is not None:
            await host.show_document(t.ShowDocumentParams(uri=plan.target_uri, take_focus=True))
        else:  # the client cannot open it for the user (Neovim 0.7): say where it is
            where = edits.file_path(plan.target_uri) or plan.target_uri
            host.show_message(
                t.ShowMessageParams(type=t.MessageType.Info, message=f"qwend {task}: {where}")
            )
    return applied


async def refuse(
    host: Host, task: str, uri: str, reason: str, text: str, line: int | None = None
) -> dict[str, Any]:
    """Nothing is written: say why, and offer the answer for reading."""
    message = f"qwend {task}: {reason}"
    result: dict[str, Any] = {"applied": False, "refused": message, "text": text}
    if line is not None:
        result["line"] = line
    if host.prose_messages:
        host.show_message(t.ShowMessageParams(type=t.MessageType.Warning, message=message))
        if host.show_document is not None and text.strip():
            path = answers.write_answer(task, host.label(uri), message, text)
            result["answer_uri"] = path.as_uri()
            await host.show_document(t.ShowDocumentParams(uri=path.as_uri(), take_focus=False))
    return result


def note_unchecked(host: Host, language: str, note: str) -> None:
    """Say once per language that its edits go unchecked (no grammar)."""
    if language in host.noted or not note.startswith("skipped: no grammar"):
        return
    host.noted.add(language)
    host.show_message(
        t.ShowMessageParams(
            type=t.MessageType.Info,
            message=f"qwend: {note}: edits in this language are not syntax-checked",
        )
    )


def show_prose(host: Host, title: str, text: str) -> dict[str, Any]:
    """The prose result; also a showMessage unless the client shows results itself."""
    if host.prose_messages:
        host.show_message(
            t.ShowMessageParams(type=t.MessageType.Info, message=f"{title}\n\n{text}")
        )
    return {"text": text}


async def run_ask(host: Host, args: tuple[Any, ...]) -> dict[str, Any]:
    """qwend.ask: a question, optionally about a selection."""
    arg = args[0] if len(args) == 1 else None
    question = (
        arg if isinstance(arg, str) else arg.get("question") if isinstance(arg, dict) else None
    )
    if not isinstance(question, str) or not question.strip():
        raise JsonRpcInvalidParams('qwend.ask takes a question string or {"question": ...}')
    content = question
    if isinstance(arg, dict) and arg.get("uri") and arg.get("range"):
        doc = host.document(str(arg["uri"]))
        try:
            selection = actions.parse_range(arg["range"])
        except ValueError as exc:
            raise JsonRpcInvalidParams(str(exc)) from None
        start, end = doc.offset_at_position(selection.start), doc.offset_at_position(selection.end)
        content = f"{question}\n\n```{doc.language_id or ''}\n{doc.source[start:end]}\n```"
    try:
        answer = await ask_daemon(
            host, "chat", {"messages": [{"role": "user", "content": content}]}
        )
    except asyncio.CancelledError:
        return {"cancelled": True}
    return show_prose(host, "qwend", str(answer.get("text", "")))


async def staged_diff(root: Path) -> str:
    """``git diff --cached`` in ``root``; RequestFailed when git fails or nothing is staged."""
    try:
        process = await asyncio.create_subprocess_exec(
            "git", "diff", "--cached", "--no-color", "--no-ext-diff",
            cwd=root,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await process.communicate()
    except OSError as exc:
        raise JsonRpcException(message=f"cannot run git: {exc}", code=REQUEST_FAILED) from None
    if process.returncode != 0:
        reason = err.decode(errors="replace").strip() or f"exit code {process.returncode}"
        raise JsonRpcException(message=f"git diff --cached failed: {reason}", code=REQUEST_FAILED)
    diff = out.decode(errors="replace")
    if not diff.strip():
        raise JsonRpcException(message="nothing is staged: git add first", code=REQUEST_FAILED)
    return diff[:MAX_DIFF_CHARS]


async def run_commit_message(host: Host, args: tuple[Any, ...]) -> dict[str, Any]:
    arg = args[0] if args else None
    root = arg.get("root") if isinstance(arg, dict) else None
    root = root or host.root
    if not root:
        raise JsonRpcException(message="no workspace root to run git in", code=REQUEST_FAILED)
    diff = await staged_diff(Path(root))
    try:
        answer = await ask_daemon(host, "commit_message", {"diff": diff})
    except asyncio.CancelledError:
        return {"cancelled": True}
    message = commit_message.clean(str(answer.get("text", "")), diff)
    return show_prose(host, "qwend: commit message", message)
