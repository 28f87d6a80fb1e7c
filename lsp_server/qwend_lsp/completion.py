"""Editor: inline completion logic: cursor context, single/multi-line, trimming, cache.

Pure functions and small classes, no pygls and no I/O, so they are easy to test.

Single or multi-line (``wants_multiline``):

- the cursor is at the end of a line that opens a block (``:``, ``{``,
  ``=>``, ``->``, `` do``, `` then``): multi-line;
- the cursor is on a blank or indentation-only line and the previous
  non-blank line opens a block: multi-line;
- anything else (mid-statement, text after the cursor, blank line with no
  opener above): single line, cut at the first newline.

A multi-line completion also stops at the first line indented less than the
block it completes, and drops trailing lines that repeat the lines after the
cursor. Both forms lose any tail that repeats the start of the text after the
cursor (``shape_completion``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from qwend.protocol import MAX_LANGUAGE_CHARS, MAX_PATH_CHARS, MAX_SNIPPETS

BLOCK_OPENERS: Final = (":", "{", "=>", "->", " do", " then")
CLOSERS: Final = frozenset(")]}>\"'`;,")
MAX_LINES: Final = 16
CACHE_PREFIX_CHARS: Final = 256
CACHE_SUFFIX_CHARS: Final = 128


@dataclass(frozen=True)
class CursorContext:
    prefix: str
    suffix: str
    line_before: str  # the cursor line, before the cursor
    line_after: str  # the cursor line, after the cursor
    multiline: bool


def cursor_context(text: str, offset: int) -> CursorContext:
    """Split ``text`` at ``offset`` and decide single- or multi-line."""
    prefix, suffix = text[:offset], text[offset:]
    line_before = prefix.rsplit("\n", 1)[-1]
    line_after = suffix.split("\n", 1)[0]
    previous = _previous_nonblank_line(prefix)
    return CursorContext(
        prefix, suffix, line_before, line_after, wants_multiline(line_before, line_after, previous)
    )


def complete_body(
    ctx: CursorContext,
    *,
    language: str,
    path: str,
    snippets: list[dict[str, Any]],
    max_tokens: int | None = None,
    temperature: float | None = None,
) -> dict[str, Any]:
    """The ``complete`` task's request for this cursor (``qwend eval`` sends the same)."""
    body: dict[str, Any] = {
        "prefix": ctx.prefix,
        "suffix": ctx.suffix,
        "language": language[:MAX_LANGUAGE_CHARS],
        "path": path[:MAX_PATH_CHARS],
        "snippets": snippets,
    }
    if not ctx.multiline:
        body["stop"] = ["\n"]
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if temperature is not None:
        body["temperature"] = temperature
    return body


def _previous_nonblank_line(prefix: str) -> str:
    lines = prefix.split("\n")[:-1]
    for line in reversed(lines):
        if line.strip():
            return line
    return ""


def _opens_block(line: str) -> bool:
    return line.rstrip().endswith(BLOCK_OPENERS)


def wants_multiline(line_before: str, line_after: str, previous_line: str) -> bool:
    """The rules in the module docstring."""
    if line_after.strip() and not set(line_after.strip()) <= CLOSERS:
        return False  # text after the cursor: complete this line only
    if line_before.strip():
        return _opens_block(line_before)
    return _opens_block(previous_line)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def shape_completion(raw: str, ctx: CursorContext) -> str:
    """Cut the model's text to the wanted form; never repeat the text after the cursor."""
    text = raw.replace("\r\n", "\n")
    if not ctx.multiline:
        text = text.split("\n", 1)[0].rstrip()
        return _trim_overlap(text, ctx.line_after)
    text = _cut_block(text, ctx)
    text = _drop_repeated_lines(text, ctx.suffix)
    if "\n" not in text:
        text = _trim_overlap(text, ctx.line_after)
    return text


def _cut_block(text: str, ctx: CursorContext) -> str:
    """Keep the lines that belong to the block at the cursor (at most MAX_LINES)."""
    # After an opener the body is indented deeper; on a blank line, at least as deep.
    opener = bool(ctx.line_before.strip())
    floor = _indent(ctx.line_before) + 1 if opener else len(ctx.line_before)
    lines = text.split("\n")
    kept = [lines[0]]
    for line in lines[1 : MAX_LINES + 1]:
        if line.strip() and _indent(line) < floor:
            break
        kept.append(line)
    return "\n".join(kept).rstrip()


def _drop_repeated_lines(text: str, suffix: str) -> str:
    """Drop trailing lines of ``text`` that repeat the first lines after the cursor."""
    ahead = [line.strip() for line in suffix.split("\n")[1:] if line.strip()][:MAX_LINES]
    if not ahead:
        return text
    lines = text.split("\n")
    for start in range(1, len(lines)):
        tail = [line.strip() for line in lines[start:] if line.strip()]
        if tail and tail == ahead[: len(tail)]:
            return "\n".join(lines[:start]).rstrip()
    return text


def _trim_overlap(text: str, after: str) -> str:
    """Remove the longest tail of ``text`` that is also the start of ``after``."""
    after = after.rstrip()
    for size in range(min(len(text), len(after)), 0, -1):
        if text.endswith(after[:size]):
            return text[: len(text) - size].rstrip() if size < len(text) else ""
    return text


def with_selected(text: str, start: int, end: int, selected: str) -> tuple[str, int]:
    """The document as if the suggestion selected in the editor's list replaced
    ``text[start:end]``, and the cursor after it (LSP 3.18 ``selectedCompletionInfo``)."""
    return text[:start] + selected + text[end:], start + len(selected)


# -- the typed-ahead cache ---------------------------------------------------------


@dataclass(frozen=True)
class _Key:
    uri: str
    prefix_tail: str
    suffix_head: str


class CompletionCache:
    """LRU of recent completions keyed by (uri, prefix tail, suffix head).

    ``lookup`` also serves typed-ahead text: when the new prefix is an old
    prefix plus the first characters of its suggestion, the rest of that
    suggestion comes back with no daemon call.
    """

    def __init__(self, size: int = 128) -> None:
        self.size = size
        self._items: OrderedDict[_Key, str] = OrderedDict()

    @staticmethod
    def _key(uri: str, prefix: str, suffix: str) -> _Key:
        return _Key(uri, prefix[-CACHE_PREFIX_CHARS:], suffix[:CACHE_SUFFIX_CHARS])

    def store(self, uri: str, prefix: str, suffix: str, text: str) -> None:
        if not text:
            return
        key = self._key(uri, prefix, suffix)
        self._items[key] = text
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def lookup(self, uri: str, prefix: str, suffix: str) -> str | None:
        """The remaining suggestion for this cursor, or None."""
        want = self._key(uri, prefix, suffix)
        exact = self._items.get(want)
        if exact is not None:
            self._items.move_to_end(want)
            return exact
        for key in reversed(self._items):
            if key.uri != uri or key.suffix_head != want.suffix_head:
                continue
            text = self._items[key]
            typed = _typed_ahead(prefix, key.prefix_tail, text)
            if typed is not None:
                self._items.move_to_end(key)
                return text[typed:]
        return None

    def clear(self) -> None:
        self._items.clear()


def _typed_ahead(prefix: str, old_tail: str, text: str) -> int | None:
    """How many characters of ``text`` were typed after ``old_tail`` to give ``prefix``."""
    for typed in range(1, len(text)):
        if typed > len(prefix) or not prefix.endswith(text[:typed]):
            continue
        before = prefix[: len(prefix) - typed]
        if before[-CACHE_PREFIX_CHARS:] == old_tail:
            return typed
    return None


# -- context from the other open documents -------------------------------------------


class RecentDocuments:
    """Open documents in the order they were last edited (newest first)."""

    def __init__(self) -> None:
        self._order: OrderedDict[str, None] = OrderedDict()

    def touch(self, uri: str) -> None:
        self._order[uri] = None
        self._order.move_to_end(uri, last=False)

    def forget(self, uri: str) -> None:
        self._order.pop(uri, None)

    def newest_first(self, exclude: str) -> list[str]:
        return [uri for uri in self._order if uri != exclude]


def snippet_text(text: str, limit: int) -> str:
    """The start of a document, cut at a line boundary to at most ``limit`` characters."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    return cut[: cut.rfind("\n") + 1] if "\n" in cut else cut


def snippet_score(rank: int) -> float:
    """Most recently edited first: rank 0 scores 1.0, then 0.5, 0.33..."""
    return round(1.0 / (rank + 1), 4)


def snippets(
    uris: list[str],
    read: Callable[[str], str | None],
    label: Callable[[str], str],
    max_snippets: int,
    snippet_chars: int,
) -> list[dict[str, Any]]:
    """The ``snippets`` of a complete request: the start of each document in ``uris``
    (most recently edited first, so the highest score first), skipping blank and
    unknown ones; ``read`` gives a document's text or None."""
    found: list[dict[str, Any]] = []
    limit = min(max_snippets, MAX_SNIPPETS)
    for rank, uri in enumerate(uris):
        if len(found) >= limit:
            break
        text = read(uri)
        if text is None or not text.strip():
            continue
        found.append(
            {
                "path": label(uri)[:MAX_PATH_CHARS],
                "text": snippet_text(text, snippet_chars),
                "score": snippet_score(rank),
            }
        )
    return found
