"""Editor: the language server's settings, read from the client's initializationOptions.

Every key is optional and camelCase, as editors write them. They may sit at
the top level of ``initializationOptions`` or under a ``"qwend"`` key. A key
with a wrong type or an unknown key is reported (the server shows one
message) and that key keeps its default; nothing else is affected.

| key | type | default | meaning |
|---|---|---|---|
| autoStart | bool | true | start ``qwend serve --detach`` when no daemon answers |
| debounceMs | int | 150 | wait this long before asking the daemon on automatic triggers |
| maxTokens | int or null | null | inline completion length (null: the daemon's default) |
| temperature | number or null | null | inline completion temperature (null: the daemon's) |
| taskMaxTokens | int or null | null | answer length of the commands (explain, refactor...) |
| taskTemperature | number or null | null | temperature of the commands (null: each task's own) |
| completionFallback | bool or null | null | answer ``textDocument/completion`` too (null: |
|   |   |   | only when the client lacks the inlineCompletion capability) |
| cacheSize | int | 128 | completions kept for the typed-ahead cache |
| maxSnippets | int | 4 | other open documents sent as context |
| snippetChars | int | 2000 | characters taken from each of them |
| completionMultiline | bool or null | null | may ``textDocument/completion`` items span |
|   |   |   | lines (null: not for Vim-family clients, see server.py) |
| warmUp | bool | true | send one tiny request when the daemon becomes ready |
| proseMessages | bool | true | also show prose answers (explain, ask, commit message) with |
|   |   |   | ``window/showMessage``; clients that display the result themselves |
|   |   |   | (the VS Code extension) turn it off |
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

_KEYS = {
    "autoStart": "auto_start",
    "debounceMs": "debounce_ms",
    "maxTokens": "max_tokens",
    "temperature": "temperature",
    "taskMaxTokens": "task_max_tokens",
    "taskTemperature": "task_temperature",
    "completionFallback": "completion_fallback",
    "cacheSize": "cache_size",
    "maxSnippets": "max_snippets",
    "snippetChars": "snippet_chars",
    "proseMessages": "prose_messages",
    "completionMultiline": "completion_multiline",
    "warmUp": "warm_up",
}


@dataclass(frozen=True)
class Options:
    auto_start: bool = True
    debounce_ms: int = 150
    max_tokens: int | None = None
    temperature: float | None = None
    task_max_tokens: int | None = None
    task_temperature: float | None = None
    completion_fallback: bool | None = None
    cache_size: int = 128
    max_snippets: int = 4
    snippet_chars: int = 2000
    prose_messages: bool = True
    completion_multiline: bool | None = None
    warm_up: bool = True


def _valid(name: str, value: Any) -> bool:
    """Is ``value`` acceptable for the field ``name``?"""
    if name in ("auto_start", "prose_messages", "warm_up"):
        return isinstance(value, bool)
    if name in ("completion_fallback", "completion_multiline"):
        return value is None or isinstance(value, bool)
    if name in ("max_tokens", "task_max_tokens"):
        return value is None or (_is_int(value) and value >= 1)
    if name in ("temperature", "task_temperature"):
        return value is None or (_is_number(value) and 0 <= value <= 2)
    if name in ("debounce_ms", "max_snippets", "snippet_chars"):
        return _is_int(value) and value >= 0
    if name == "cache_size":
        return _is_int(value) and value >= 1
    return False


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_options(raw: Any) -> tuple[Options, list[str]]:
    """Options from ``initializationOptions``, plus one problem string per bad key."""
    if raw is None:
        return Options(), []
    if not isinstance(raw, dict):
        return Options(), ["initializationOptions must be an object; using the defaults"]
    if isinstance(raw.get("qwend"), dict):
        raw = raw["qwend"]
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in raw.items():
        name = _KEYS.get(key)
        if name is None:
            problems.append(f"unknown option {key!r}")
        elif not _valid(name, value):
            default = getattr(Options(), name)
            problems.append(f"option {key!r}: invalid value {value!r}; using {default!r}")
        else:
            is_float = name in ("temperature", "task_temperature") and value is not None
            values[name] = float(value) if is_float else value
    return dataclasses.replace(Options(), **values), problems
