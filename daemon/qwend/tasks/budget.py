"""Engine: fit a task's inputs into the context window, by exact token counts.

A prompt is made of parts. Required parts (system prompt, instruction, the
selected code, the newest chat message) must fit whole, or the request fails
with the numbers. Flexible parts share what is left, by the task's budget
shares; a share one part does not need flows to the others. A part that is
too long is cut at line boundaries on the side away from the cursor (the
prefix keeps its last lines, the suffix its first), and ranked parts (extra
snippets, older chat turns) are taken best first until their share runs out.

The rendered prompt is then counted as a whole; token merges across part
boundaries can make it differ from the sum, so the cut continues line by
line until the real count fits. The report says what went in and what was
cut, and its numbers add up: parts plus template equals the prompt.

Parts are request text, counted as plain text (``count``); the rendered prompt
is counted as the backend encodes it, markers included (``count_prompt``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from qwend.backends.base import Prompt
from qwend.errors import ContextLengthExceeded

Counter = Callable[[str], int]
PromptCounter = Callable[[Prompt], int]
LineCounter = Callable[[list[str]], list[int]]
Renderer = Callable[[dict[str, str]], Prompt]


@dataclass(frozen=True)
class Part:
    """One piece of a prompt. ``group`` names the budget share of a flexible part."""

    name: str
    text: str
    group: str = ""  # "" means required
    keep: Literal["start", "end"] = "start"  # the side that survives a cut
    atomic: bool = False  # kept whole or dropped (chat turns), never cut mid-way

    @property
    def required(self) -> bool:
        return not self.group


@dataclass
class _Kept:
    part: Part
    lines: list[str]
    kept: int  # how many lines survive, counted from ``part.keep``'s side

    def text(self) -> str:
        if self.part.keep == "end":
            return "".join(self.lines[len(self.lines) - self.kept :])
        return "".join(self.lines[: self.kept])


@dataclass(frozen=True)
class PartReport:
    name: str
    tokens: int
    original_tokens: int
    kept_lines: int
    total_lines: int
    dropped: Literal["none", "start", "end", "all"]


@dataclass(frozen=True)
class BudgetReport:
    context_length: int
    max_tokens: int
    input_budget: int
    prompt_tokens: int
    template_tokens: int
    counting: Literal["exact", "estimate"]
    parts: tuple[PartReport, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "context_length": self.context_length,
            "max_tokens": self.max_tokens,
            "input_budget": self.input_budget,
            "prompt_tokens": self.prompt_tokens,
            "template_tokens": self.template_tokens,
            "counting": self.counting,
            "parts": [vars(p) for p in self.parts],
        }


@dataclass(frozen=True)
class Fitted:
    prompt: Prompt
    texts: dict[str, str]
    report: BudgetReport


@dataclass(frozen=True)
class Limits:
    context_length: int
    max_tokens: int
    max_input_tokens: int = 0  # 0: no cap beyond the context window
    counting: Literal["exact", "estimate"] = "exact"

    @property
    def input_budget(self) -> int:
        room = self.context_length - self.max_tokens
        return min(room, self.max_input_tokens) if self.max_input_tokens else room


def fit(
    parts: Sequence[Part],
    shares: dict[str, float],
    limits: Limits,
    *,
    count: Counter,
    count_lines: LineCounter,
    count_prompt: PromptCounter,
    render: Renderer,
) -> Fitted:
    """Choose what of each part goes into the prompt. Raises ContextLengthExceeded."""
    budget = limits.input_budget
    whole = render({p.name: p.text for p in parts})
    whole_tokens = count_prompt(whole)
    if budget > 0 and whole_tokens <= budget:  # everything fits: nothing is cut
        kept = {p.name: _Kept(p, _lines(p.text), len(_lines(p.text))) for p in parts}
        return _fitted(parts, kept, whole, whole_tokens, limits, count)
    overhead = count_prompt(render({p.name: "" for p in parts}))
    required = {p.name: count(p.text) for p in parts if p.required}
    if budget <= 0 or overhead + sum(required.values()) > budget:
        raise _too_large(limits, overhead, required)

    line_tokens = {p.name: count_lines(_lines(p.text)) for p in parts if not p.required}
    _charge_wrappers(parts, line_tokens, overhead, count, count_prompt, render)
    kept = {p.name: _Kept(p, _lines(p.text), len(_lines(p.text))) for p in parts}
    available = budget - overhead - sum(required.values())
    allowance = _allocate(parts, shares, line_tokens, available)
    for group, parts_in_group in _groups(parts).items():
        _fill(parts_in_group, kept, line_tokens, allowance.get(group, 0))

    prompt = render({name: k.text() for name, k in kept.items()})
    total = count_prompt(prompt)
    while total > budget:
        if not _shrink(parts, kept, line_tokens, total - budget):
            raise _too_large(limits, total - sum(required.values()), required)
        prompt = render({name: k.text() for name, k in kept.items()})
        total = count_prompt(prompt)
    return _fitted(parts, kept, prompt, total, limits, count)


def _fitted(
    parts: Sequence[Part],
    kept: dict[str, _Kept],
    prompt: Prompt,
    total: int,
    limits: Limits,
    count: Counter,
) -> Fitted:
    texts = {name: k.text() for name, k in kept.items()}
    reports = tuple(_report(p, kept[p.name], count, texts[p.name]) for p in parts)
    return Fitted(
        prompt,
        texts,
        BudgetReport(
            context_length=limits.context_length,
            max_tokens=limits.max_tokens,
            input_budget=limits.input_budget,
            prompt_tokens=total,
            template_tokens=total - sum(r.tokens for r in reports),
            counting=limits.counting,
            parts=reports,
        ),
    )


def _lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


def _groups(parts: Sequence[Part]) -> dict[str, list[Part]]:
    groups: dict[str, list[Part]] = {}
    for part in parts:
        if part.group:
            groups.setdefault(part.group, []).append(part)
    return groups


def _allocate(
    parts: Sequence[Part],
    shares: dict[str, float],
    line_tokens: dict[str, list[int]],
    available: int,
) -> dict[str, int]:
    """Tokens per group: its share, plus what groups that need less hand back."""
    demand = {g: sum(sum(line_tokens[p.name]) for p in ps) for g, ps in _groups(parts).items()}
    allowance = {g: 0 for g in demand}
    remaining = available
    hungry = {g for g in demand if demand[g] > 0 and shares.get(g, 0) > 0}
    while remaining > 0 and hungry:
        weight = sum(shares[g] for g in hungry)
        handed = 0
        for group in sorted(hungry):
            grant = min(int(remaining * shares[group] / weight), demand[group] - allowance[group])
            allowance[group] += grant
            handed += grant
        hungry = {g for g in hungry if allowance[g] < demand[g]}
        if handed == 0:
            break
        remaining -= handed
    return allowance


def _fill(
    group: list[Part], kept: dict[str, _Kept], line_tokens: dict[str, list[int]], tokens: int
) -> None:
    """Keep parts in rank order; the first that does not fit is cut, the rest dropped."""
    for part in group:
        counts = line_tokens[part.name] if part.keep == "start" else line_tokens[part.name][::-1]
        need = sum(counts)
        if need <= tokens:
            tokens -= need
            continue
        if part.atomic:
            lines = 0
        else:
            lines, used = 0, 0
            while lines < len(counts) and used + counts[lines] <= tokens:
                used += counts[lines]
                lines += 1
        kept[part.name].kept = lines
        tokens = 0


def _shrink(
    parts: Sequence[Part],
    kept: dict[str, _Kept],
    line_tokens: dict[str, list[int]],
    overshoot: int,
) -> bool:
    """Cut about ``overshoot`` tokens from the group holding the most, taking
    from its lowest-ranked kept part first (oldest turn, weakest snippet)."""

    def held(part: Part) -> int:
        counts = line_tokens[part.name]
        k = kept[part.name].kept
        return sum(counts[len(counts) - k :]) if part.keep == "end" else sum(counts[:k])

    groups = {
        group: [p for p in members if kept[p.name].kept > 0]
        for group, members in _groups(parts).items()
    }
    groups = {group: members for group, members in groups.items() if members}
    if not groups:
        return False
    fullest = max(groups.values(), key=lambda members: sum(held(p) for p in members))
    victim = fullest[-1]
    state = kept[victim.name]
    if victim.atomic:
        state.kept = 0
        return True
    counts = line_tokens[victim.name]
    removed = 0
    while state.kept > 0 and (removed == 0 or removed < overshoot):
        # The line farthest from the cursor goes: a prefix's first, others' last.
        index = len(counts) - state.kept if victim.keep == "end" else state.kept - 1
        removed += counts[index]
        state.kept -= 1
    return True


def _charge_wrappers(
    parts: Sequence[Part],
    line_tokens: dict[str, list[int]],
    overhead: int,
    count: Counter,
    count_prompt: PromptCounter,
    render: Renderer,
) -> None:
    """Add the markup a flexible part brings (a snippet's header, a chat turn's
    tags) to the first line it would keep, so it is paid only if kept and
    never squeezes a better-ranked part afterwards."""
    sample = "x"  # one-token stand-in text: the render's growth beyond it is the wrapper
    unit = count(sample)
    empty = {p.name: "" for p in parts}
    for part in parts:
        counts = line_tokens.get(part.name)
        if not counts:
            continue
        wrapper = count_prompt(render({**empty, part.name: sample})) - overhead - unit
        counts[-1 if part.keep == "end" else 0] += max(0, wrapper)


def _report(part: Part, kept: _Kept, count: Counter, text: str) -> PartReport:
    total = len(kept.lines)
    if kept.kept == total:
        dropped: Literal["none", "start", "end", "all"] = "none"
    elif kept.kept == 0:
        dropped = "all"
    else:
        dropped = "start" if part.keep == "end" else "end"
    tokens = count(text) if text else 0
    original = tokens if dropped == "none" else count(part.text)
    return PartReport(part.name, tokens, original, kept.kept, total, dropped)


def _too_large(limits: Limits, overhead: int, required: dict[str, int]) -> ContextLengthExceeded:
    needed = overhead + sum(required.values())
    listing = ", ".join(f"{name} {tokens}" for name, tokens in required.items())
    return ContextLengthExceeded(
        f"the required parts need {needed} tokens ({listing}, template {overhead}) but the "
        f"input budget is {limits.input_budget} (context {limits.context_length} - "
        f"max_tokens {limits.max_tokens}"
        + (f", capped at {limits.max_input_tokens}" if limits.max_input_tokens else "")
        + ")",
        hint="select less code, or lower max_tokens",
        required_tokens=needed,
        input_budget=limits.input_budget,
        context_length=limits.context_length,
    )
