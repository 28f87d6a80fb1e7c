"""Engine: route an editor's task to its template, settings and token budget.

Each task (complete, explain, ..., reasoning) has a config table: its lane,
sampling, stops, system prompt, instruction and budget shares. ``prepare``
turns a validated task input into parts (budget.Part), fits them into the
context window, renders the prompt for the model's family, and returns the
generation request with the budget report. No I/O and no model calls beyond
the token counters it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from qwend.backends.base import Prompt, Sampling
from qwend.config import TaskSettings
from qwend.engine.jobs import GenerationRequest
from qwend.errors import BadRequest
from qwend.protocol import CompleteInput, TaskInput
from qwend.tasks.budget import BudgetReport, Limits, Part, Renderer, fit
from qwend.tasks.prompts import (
    ChatTurn,
    Family,
    Snippet,
    completion_stops,
    nonempty,
    render_chat,
    render_code_task,
    render_commit_message,
    render_fim,
    render_prefix_only,
    suffix_stops,
)
from qwend.tasks.registry import TASKS


class TokenCounting(Protocol):
    @property
    def mode(self) -> str: ...  # "exact" or "estimate"

    def count(self, text: str) -> int: ...  # request text: plain

    def count_prompt(self, prompt: Prompt) -> int: ...  # a rendered prompt, markers included

    def count_lines(self, lines: list[str]) -> list[int]: ...


@dataclass(frozen=True)
class PreparedTask:
    name: str
    lane: str
    request: GenerationRequest
    budget: BudgetReport
    suffix: str  # text after the cursor (complete only): never repeated in the answer
    template: str  # the prompt form actually used ("fim", "prefix", "chat")


def prepare(
    name: str,
    body: TaskInput,
    task: TaskSettings,
    family: Family,
    *,
    context_length: int,
    max_tokens_limit: int,
    counting: TokenCounting,
) -> PreparedTask:
    """Fit ``body`` into the window and render it. Raises ContextLengthExceeded."""
    max_tokens = body.max_tokens or task.max_tokens
    if max_tokens > max_tokens_limit:
        raise BadRequest(
            f"field 'max_tokens': {max_tokens} is above this daemon's limit of {max_tokens_limit}",
            field="max_tokens",
        )
    limits = Limits(
        context_length=context_length,
        max_tokens=max_tokens,
        max_input_tokens=task.max_input_tokens,
        counting="exact" if counting.mode == "exact" else "estimate",
    )
    spec = TASKS[name]
    suffix = ""
    template = task.template
    format_stops: list[str] = []
    if isinstance(body, CompleteInput):
        if template == "fim" and family.fim is None:
            template = "prefix"  # the prompt form, not the model, changes: reported below
        parts, render = _complete(body, family, template)
        suffix = body.suffix
        format_stops = (
            completion_stops(family, suffix) if template == "fim" else suffix_stops(suffix)
        )
    else:
        parts, render = _BUILDERS[spec.kind](body, task, family)
    fitted = fit(
        parts,
        task.budget,
        limits,
        count=counting.count,
        count_lines=counting.count_lines,
        count_prompt=counting.count_prompt,
        render=render,
    )
    sampling = Sampling(
        temperature=task.temperature if body.temperature is None else body.temperature,
        top_p=task.top_p if body.top_p is None else body.top_p,
        seed=body.seed,
    )
    stops = (*body.stop, *task.stop, *format_stops, *family.stop_strings)
    request = GenerationRequest(fitted.prompt, max_tokens, sampling, stops)
    lane = task.lane or spec.lane
    return PreparedTask(name, lane, request, fitted.report, suffix, template)


def _complete(body: CompleteInput, family: Family, template: str) -> tuple[list[Part], Renderer]:
    ranked = sorted(enumerate(body.snippets), key=lambda item: (-item[1].score, item[0]))
    snippet_parts = [
        Part(f"snippet:{index}:{snippet.path}", snippet.text, group="snippets")
        for index, snippet in ranked
    ]
    # Prefix-only prompts cannot show the suffix: it gets no budget and is
    # used only to stop and trim the answer.
    cursor_window = [Part("prefix", body.prefix, group="prefix", keep="end")]
    if template == "fim":
        cursor_window.append(Part("suffix", body.suffix, group="suffix", keep="start"))
    parts = [*cursor_window, *snippet_parts]
    names = [p.name for p in snippet_parts]

    def render(texts: dict[str, str]) -> Prompt:
        snippets = [Snippet(name.split(":", 2)[2], texts[name]) for name in names]
        if template == "fim" and family.fim is not None:
            return render_fim(
                family.fim,
                texts["prefix"],
                texts.get("suffix", ""),
                snippets=snippets,
                path=body.path,
                repo=body.repo,
            )
        return nonempty(
            family,
            render_prefix_only(
                texts["prefix"], snippets=snippets, path=body.path, language=body.language
            ),
        )

    return parts, render


def _joined(configured: str, requested: str) -> str:
    """The task's configured instruction, then the request's own, a blank line apart."""
    return "\n\n".join(text for text in (configured, requested) if text)


def _code(body: Any, task: TaskSettings, family: Family) -> tuple[list[Part], Renderer]:
    instruction = _joined(task.instruction, body.instruction)
    parts = [
        Part("system", task.system),
        Part("instruction", instruction),
        Part("code", body.code),
        Part("context", body.context, group="context"),
    ]

    def render(texts: dict[str, str]) -> Prompt:
        return render_code_task(
            family,
            system=texts["system"],
            instruction=texts["instruction"],
            code=texts["code"],
            context=texts["context"],
            path=body.path,
            language=body.language,
        )

    return parts, render


def _commit(body: Any, task: TaskSettings, family: Family) -> tuple[list[Part], Renderer]:
    instruction = _joined(task.instruction, body.instruction)
    parts = [
        Part("system", task.system),
        Part("instruction", instruction),
        Part("diff", body.diff, group="diff"),
    ]

    def render(texts: dict[str, str]) -> Prompt:
        return render_commit_message(
            family, system=texts["system"], instruction=texts["instruction"], diff=texts["diff"]
        )

    return parts, render


def _chat(body: Any, task: TaskSettings, family: Family) -> tuple[list[Part], Renderer]:
    messages = list(body.messages)
    system = task.system
    if messages[0].role == "system":
        system = messages.pop(0).content
    if not messages:
        raise BadRequest(
            "field 'messages': needs at least one non-system message", field="messages"
        )
    names = [f"message:{i}:{m.role}" for i, m in enumerate(messages)]
    latest = Part(names[-1], messages[-1].content)
    # Older turns are ranked newest first and dropped whole, oldest first.
    history = [
        Part(name, message.content, group="history", atomic=True)
        for name, message in reversed(list(zip(names[:-1], messages[:-1], strict=True)))
    ]
    parts = [Part("system", system), latest, *history]

    def render(texts: dict[str, str]) -> Prompt:
        turns = [ChatTurn("system", texts["system"])]
        for name in names:
            if texts[name] or name == names[-1]:
                turns.append(ChatTurn(name.split(":")[2], texts[name]))
        return render_chat(family, turns)

    return parts, render


# Prompt builders by the registry's kind ("complete" is built above: it also
# chooses the template and the stops). Each takes the body validated as the
# registry's input for that kind.
_BUILDERS: dict[str, Callable[[Any, TaskSettings, Family], tuple[list[Part], Renderer]]] = {
    "code": _code,
    "commit": _commit,
    "chat": _chat,
}
