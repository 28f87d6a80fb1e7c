"""Protocol: the catalogue of routed tasks, the one list every layer reads.

The config validator (which tables, templates and budget parts are allowed),
the socket (which body each /v1/tasks/{name} takes), ``prepare`` (how a task's
prompt is built) and the language server (titles) all read ``TASKS``, so a new
task is one entry here plus its table in config/qwend.toml.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from qwend.protocol import ChatInput, CodeInput, CommitMessageInput, CompleteInput, TaskBody

# How a task's prompt is built (prepare.py has one builder per kind).
PromptKind = Literal["complete", "code", "commit", "chat"]
Lane = Literal["completion", "interactive", "background"]  # engine/lanes.py: highest first
CHAT_TEMPLATES: Final = frozenset({"chat"})


@dataclass(frozen=True)
class TaskSpec:
    name: str
    input: type[TaskBody]  # the validated request body
    kind: PromptKind
    flexible_parts: frozenset[str]  # the input parts a config may give budget shares to
    templates: frozenset[str]  # the prompt forms a config may choose
    lane: Lane  # where it queues when the config's table does not say
    title: str  # what an editor calls it


def _code_task(name: str, title: str, lane: Lane) -> TaskSpec:
    return TaskSpec(name, CodeInput, "code", frozenset({"context"}), CHAT_TEMPLATES, lane, title)


TASKS: Final[dict[str, TaskSpec]] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            "complete",
            CompleteInput,
            "complete",
            frozenset({"prefix", "suffix", "snippets"}),
            frozenset({"fim", "prefix"}),
            "completion",
            "Complete code",
        ),
        _code_task("explain", "Explain this code", "interactive"),
        _code_task("refactor", "Refactor this code", "background"),
        _code_task("docstring", "Add a docstring", "interactive"),
        _code_task("tests", "Generate tests", "background"),
        _code_task("fix", "Fix this code", "interactive"),
        TaskSpec(
            "commit_message",
            CommitMessageInput,
            "commit",
            frozenset({"diff"}),
            CHAT_TEMPLATES,
            "interactive",
            "Write a commit message",
        ),
        TaskSpec(
            "chat", ChatInput, "chat", frozenset({"history"}), CHAT_TEMPLATES, "interactive", "Ask"
        ),
        TaskSpec(
            "reasoning",
            ChatInput,
            "chat",
            frozenset({"history"}),
            CHAT_TEMPLATES,
            "background",
            "Reason step by step",
        ),
    )
}
TASK_NAMES: Final = tuple(TASKS)
TASK_INPUTS: Final[dict[str, type[TaskBody]]] = {name: spec.input for name, spec in TASKS.items()}
