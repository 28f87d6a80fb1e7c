"""The token budget allocator (engine/budget.py) with both real tokenizers.

Property tests draw random code-like documents, cursor positions, snippet
sets, chat histories, context lengths, max_tokens, input caps and shares, and
check what `fit` promises: the exact count of the prompt never exceeds the
input budget, the report adds up and tells the truth, cuts fall on line
boundaries on the side away from the cursor, ranked parts go best first, and
nothing is cut when everything fits. Deterministic tests pin the rest.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qwend.backends.base import Prompt
from qwend.errors import ContextLengthExceeded
from qwend.tasks.budget import Fitted, Limits, Part, fit
from qwend.tasks.prepare import TokenCounting as TokenizerCounting
from qwend.tasks.prompts import (
    FAMILIES,
    ChatTurn,
    Family,
    Snippet,
    render_chat,
    render_code_task,
    render_fim,
    render_prefix_only,
)

QWEN = FAMILIES["qwen2.5"]
SMOL = FAMILIES["smollm2"]
assert QWEN.fim is not None
FIM = QWEN.fim

# QWEND_HYPOTHESIS_EXAMPLES=2000 for a deeper search than the suite's quick one.
PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("QWEND_HYPOTHESIS_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FAMILY_NAMES = ["qwen2.5", "smollm2"]

Render = Callable[[dict[str, str]], Prompt]


def lines_of(text: str) -> list[str]:
    return text.splitlines(keepends=True)


# -- strategies ----------------------------------------------------------------------

WORDS = [
    "def", "return", "self", "x", "y", "foo_bar", "BazQux", "(", ")", "):", ":", "=", "==",
    "+", "-", "*", "0", "1", "42", "3.14", '"text"', "'s'", "#", "//", "if", "else", "for",
    "in", "import", "from", "None", "{", "}", "[", "]", ",", ";", "->", "=>", "<", ">",
    "é", "über", "中文", "λ", "\t", "  ",
]  # fmt: skip


@st.composite
def code_line(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 6)) == 0:
        return ""  # blank lines merge into one token with some tokenizers
    indent = "    " * draw(st.integers(0, 3))
    words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=8))
    return indent + " ".join(words)


@st.composite
def document(draw: st.DrawFn, max_lines: int = 30) -> str:
    lines = draw(st.lists(code_line(), min_size=0, max_size=max_lines))
    text = "\n".join(lines)
    return text + "\n" if lines and draw(st.booleans()) else text


@st.composite
def cursor_split(draw: st.DrawFn) -> tuple[str, str]:
    """A document split at a random character: the cursor may sit mid-line."""
    doc = draw(document(max_lines=40))
    at = draw(st.integers(0, len(doc)))
    return doc[:at], doc[at:]


snippet_strategy = st.tuples(
    st.sampled_from(["a.py", "pkg/util.py", "src/lib/mod.rs", "b.ts"]),
    document(max_lines=8),
    st.floats(-5, 5, allow_nan=False),
)


@st.composite
def limits_strategy(draw: st.DrawFn) -> Limits:
    context = draw(st.integers(1, 700))
    max_tokens = draw(st.integers(1, 300))
    cap = draw(st.one_of(st.just(0), st.integers(1, 600)))
    return Limits(context_length=context, max_tokens=max_tokens, max_input_tokens=cap)


@st.composite
def shares_strategy(draw: st.DrawFn, groups: Sequence[str]) -> dict[str, float]:
    raw = {g: draw(st.floats(0.05, 1.0)) for g in groups}
    total = sum(raw.values())
    return {g: v / total for g, v in raw.items()} if total > 1 else raw


# -- shared checks -------------------------------------------------------------------


def check_fitted(
    fitted: Fitted,
    parts: Sequence[Part],
    limits: Limits,
    counting: TokenizerCounting,
    render: Render,
) -> None:
    """Every invariant of a successful fit."""
    report = fitted.report
    exact = counting.count_prompt(fitted.prompt)
    assert exact <= limits.input_budget
    assert report.prompt_tokens == exact
    assert report.input_budget == limits.input_budget
    assert (report.context_length, report.max_tokens) == (limits.context_length, limits.max_tokens)
    assert report.counting == "exact"
    assert fitted.prompt == render(fitted.texts)
    assert sum(p.tokens for p in report.parts) + report.template_tokens == report.prompt_tokens
    assert [p.name for p in report.parts] == [p.name for p in parts]
    for part, rep in zip(parts, report.parts, strict=True):
        kept = fitted.texts[part.name]
        lines = lines_of(part.text)
        assert rep.tokens == counting.count(kept)
        assert rep.original_tokens == counting.count(part.text)
        assert rep.total_lines == len(lines)
        assert 0 <= rep.kept_lines <= rep.total_lines
        # Cuts fall on line boundaries, on the side away from ``keep``.
        if part.keep == "end":
            assert kept == "".join(lines[len(lines) - rep.kept_lines :])
            assert part.text.endswith(kept)
        else:
            assert kept == "".join(lines[: rep.kept_lines])
            assert part.text.startswith(kept)
        if part.required:
            assert kept == part.text
        if part.atomic:
            assert kept in ("", part.text)
        expected_drop = (
            "none"
            if rep.kept_lines == rep.total_lines
            else "all"
            if rep.kept_lines == 0
            else ("start" if part.keep == "end" else "end")
        )
        assert rep.dropped == expected_drop


def fits_by_line_counts(
    parts: Sequence[Part], limits: Limits, counting: TokenizerCounting, render: Render
) -> bool:
    """Everything fits both as the allocator counts (template + whole required
    parts + flexible parts line by line) and as the real prompt counts."""
    overhead = counting.count_prompt(render({p.name: "" for p in parts}))
    need = overhead + sum(
        counting.count(p.text) if p.required else sum(counting.count_lines(lines_of(p.text)))
        for p in parts
    )
    full = counting.count_prompt(render({p.name: p.text for p in parts}))
    return need <= limits.input_budget and full <= limits.input_budget


def assert_ranked(fitted: Fitted, ranked: Sequence[Part]) -> None:
    """Ranked parts are kept best first: after the first part not kept whole,
    every lower-ranked part is dropped entirely."""
    by_name = {r.name: r for r in fitted.report.parts}
    states = [by_name[p.name].dropped for p in ranked if p.text]
    first_cut = next((i for i, s in enumerate(states) if s != "none"), len(states))
    assert all(s == "all" for s in states[first_cut + 1 :]), states


# -- completion: prefix, suffix, snippets --------------------------------------------


def completion_parts(
    prefix: str, suffix: str, snippets: Sequence[tuple[str, str, float]], with_suffix: bool
) -> tuple[list[Part], list[Part]]:
    ranked = sorted(enumerate(snippets), key=lambda item: (-item[1][2], item[0]))
    snippet_parts = [
        Part(f"snippet:{i}:{path}", text, group="snippets") for i, (path, text, _) in ranked
    ]
    window = [Part("prefix", prefix, group="prefix", keep="end")]
    if with_suffix:
        window.append(Part("suffix", suffix, group="suffix", keep="start"))
    return [*window, *snippet_parts], snippet_parts


def completion_render(family_name: str, snippet_parts: Sequence[Part]) -> Render:
    names = [p.name for p in snippet_parts]

    def render(texts: dict[str, str]) -> Prompt:
        snippets = [Snippet(n.split(":", 2)[2], texts[n]) for n in names]
        if family_name == "qwen2.5":
            return render_fim(
                FIM, texts["prefix"], texts["suffix"], snippets=snippets, path="x.py", repo=""
            )
        return render_prefix_only(texts["prefix"], snippets=snippets, path="x.py", language="py")

    return render


@pytest.mark.parametrize("family_name", FAMILY_NAMES)
@PROPERTY_SETTINGS
@given(
    window=cursor_split(),
    snippets=st.lists(snippet_strategy, max_size=5),
    limits=limits_strategy(),
    shares=shares_strategy(["prefix", "suffix", "snippets"]),
)
def test_completion_fit_properties(
    countings: dict[str, TokenizerCounting],
    family_name: str,
    window: tuple[str, str],
    snippets: list[tuple[str, str, float]],
    limits: Limits,
    shares: dict[str, float],
) -> None:
    counting = countings[family_name]
    prefix, suffix = window
    parts, snippet_parts = completion_parts(
        prefix, suffix, snippets, with_suffix=family_name == "qwen2.5"
    )
    render = completion_render(family_name, snippet_parts)
    overhead = counting.count_prompt(render({p.name: "" for p in parts}))
    if limits.input_budget <= 0 or overhead > limits.input_budget:
        # No required parts here: only the template itself can be too large.
        with pytest.raises(ContextLengthExceeded) as info:
            fit_with(parts, shares, limits, counting, render)
        assert f"input budget is {limits.input_budget}" in info.value.message
        assert info.value.details["required_tokens"] == overhead
        assert info.value.details["input_budget"] == limits.input_budget
        return
    fitted = fit_with(parts, shares, limits, counting, render)
    check_fitted(fitted, parts, limits, counting, render)
    # The prefix keeps the lines nearest the cursor, the suffix those right after it.
    assert prefix.endswith(fitted.texts["prefix"])
    if "suffix" in fitted.texts:
        assert suffix.startswith(fitted.texts["suffix"])
    if fits_by_line_counts(parts, limits, counting, render):
        assert all(r.dropped == "none" for r in fitted.report.parts)
        assert fitted.prompt == render({p.name: p.text for p in parts})


def fit_with(
    parts: Sequence[Part],
    shares: dict[str, float],
    limits: Limits,
    counting: TokenizerCounting,
    render: Render,
) -> Fitted:
    return fit(
        parts,
        shares,
        limits,
        count=counting.count,
        count_lines=counting.count_lines,
        count_prompt=counting.count_prompt,
        render=render,
    )


# -- code task: required system, instruction, code; flexible context ------------------


@pytest.mark.parametrize("family_name", FAMILY_NAMES)
@PROPERTY_SETTINGS
@given(
    code=document(max_lines=10).filter(bool),
    context=document(max_lines=40),
    instruction=st.sampled_from(["Explain this.", "Fix the bug.\n\nTypeError: x", ""]),
    limits=limits_strategy(),
)
def test_code_task_fit_properties(
    countings: dict[str, TokenizerCounting],
    family_name: str,
    code: str,
    context: str,
    instruction: str,
    limits: Limits,
) -> None:
    counting = countings[family_name]
    family = FAMILIES[family_name]
    parts = [
        Part("system", "You are terse."),
        Part("instruction", instruction),
        Part("code", code),
        Part("context", context, group="context"),
    ]

    def render(texts: dict[str, str]) -> Prompt:
        return render_code_task(
            family,
            system=texts["system"],
            instruction=texts["instruction"],
            code=texts["code"],
            context=texts["context"],
            path="m.py",
            language="python",
        )

    overhead = counting.count_prompt(render({p.name: "" for p in parts}))
    required = sum(counting.count(p.text) for p in parts if p.required)
    bare = counting.count_prompt(render({p.name: "" if p.group else p.text for p in parts}))
    try:
        fitted = fit_with(parts, {"context": 1.0}, limits, counting, render)
    except ContextLengthExceeded as exc:
        # Refused only when the required parts (with the template) cannot fit.
        assert limits.input_budget <= 0 or max(overhead + required, bare) > limits.input_budget
        assert f"input budget is {limits.input_budget}" in exc.message
        assert exc.details["input_budget"] == limits.input_budget
        return
    assert overhead + required <= limits.input_budget
    check_fitted(fitted, parts, limits, counting, render)
    assert context.startswith(fitted.texts["context"])
    if fits_by_line_counts(parts, limits, counting, render):
        assert fitted.report.parts[-1].dropped == "none"


# -- chat: required system and latest message, atomic history --------------------------

message = document(max_lines=6)


@pytest.mark.parametrize("family_name", FAMILY_NAMES)
@PROPERTY_SETTINGS
@given(
    history=st.lists(message, min_size=0, max_size=8),
    latest=message.filter(bool),
    limits=limits_strategy(),
)
def test_chat_fit_properties(
    countings: dict[str, TokenizerCounting],
    family_name: str,
    history: list[str],
    latest: str,
    limits: Limits,
) -> None:
    counting = countings[family_name]
    parts, _, names = chat_parts(history, latest)
    render = chat_render(names, FAMILIES[family_name])
    bare = counting.count_prompt(render({p.name: "" if p.group else p.text for p in parts}))
    try:
        fitted = fit_with(parts, {"history": 1.0}, limits, counting, render)
    except ContextLengthExceeded as exc:
        assert limits.input_budget <= 0 or bare > limits.input_budget
        required = exc.details["required_tokens"]
        assert str(required) in exc.message
        assert required > limits.input_budget or limits.input_budget <= 0
        return
    check_fitted(fitted, parts, limits, counting, render)
    assert fitted.texts[names[-1]] == latest  # the latest message is always whole
    # (Newest-first order is checked by the deterministic tests below: the final
    # shrink loop can break it, see test_shrinking_keeps_the_newest_turns.)
    if fits_by_line_counts(parts, limits, counting, render):
        assert all(r.dropped == "none" for r in fitted.report.parts)


# -- deterministic cases -------------------------------------------------------------


def qwen_fim_render(texts: dict[str, str]) -> Prompt:
    return render_fim(FIM, texts["prefix"], texts["suffix"], snippets=[], path="", repo="")


def test_required_parts_too_large_gives_every_number(qwen_counting: TokenizerCounting) -> None:
    code = "".join(f"value_{i} = compute({i})\n" for i in range(40))
    parts = [Part("system", "Be brief."), Part("code", code), Part("context", "x\n", group="c")]

    def render(texts: dict[str, str]) -> Prompt:
        # Markup that does not depend on which parts are empty, so the template's
        # count is exact (render_chat leaves out an empty system turn).
        start, end = Prompt.marker("<|im_start|>"), Prompt.marker("<|im_end|>")
        return (
            start
            + f"system\n{texts['system']}"
            + end
            + "\n"
            + start
            + f"user\n{texts['code']}{texts['context']}"
            + end
            + "\n"
        )

    overhead = qwen_counting.count_prompt(render({"system": "", "code": "", "context": ""}))
    system = qwen_counting.count("Be brief.")
    code_tokens = qwen_counting.count(code)
    needed = overhead + system + code_tokens
    limits = Limits(context_length=needed + 9, max_tokens=10, max_input_tokens=0)
    assert limits.input_budget == needed - 1
    with pytest.raises(ContextLengthExceeded) as info:
        fit_with(parts, {"c": 1.0}, limits, qwen_counting, render)
    err = info.value
    assert err.code == "context_length_exceeded"
    assert err.http_status == 400
    assert err.details == {
        "required_tokens": needed,
        "input_budget": needed - 1,
        "context_length": needed + 9,
    }
    assert f"need {needed} tokens" in err.message
    assert f"system {system}, code {code_tokens}, template {overhead}" in err.message
    assert f"input budget is {needed - 1} (context {needed + 9} - max_tokens 10)" in err.message
    assert err.hint
    # One token more and it fits, with the flexible part dropped.
    fitted = fit_with(parts, {"c": 1.0}, Limits(needed + 10, 10), qwen_counting, render)
    assert fitted.report.prompt_tokens <= needed + 1
    assert fitted.texts["code"] == code


def test_input_cap_is_in_the_message(qwen_counting: TokenizerCounting) -> None:
    parts = [Part("instruction", "word " * 50)]
    limits = Limits(context_length=1000, max_tokens=10, max_input_tokens=20)
    with pytest.raises(ContextLengthExceeded) as info:
        fit_with(parts, {}, limits, qwen_counting, lambda t: Prompt.plain(t["instruction"]))
    assert "input budget is 20 (context 1000 - max_tokens 10, capped at 20)" in info.value.message


@pytest.mark.parametrize("max_tokens", [100, 101, 5000])
def test_no_room_at_all_is_refused(qwen_counting: TokenizerCounting, max_tokens: int) -> None:
    parts = [Part("prefix", "x = 1\n", group="prefix", keep="end")]
    limits = Limits(context_length=100, max_tokens=max_tokens)
    assert limits.input_budget <= 0
    with pytest.raises(ContextLengthExceeded, match=f"input budget is {100 - max_tokens}"):
        fit_with(parts, {"prefix": 1.0}, limits, qwen_counting, lambda t: Prompt.plain(t["prefix"]))


def test_prefix_keeps_lines_nearest_the_cursor(qwen_counting: TokenizerCounting) -> None:
    prefix = "".join(f"line_{i:03d} = {i}\n" for i in range(200)) + "result = "
    suffix = "".join(f"after_{i:03d} = {i}\n" for i in range(200))
    parts = [
        Part("prefix", prefix, group="prefix", keep="end"),
        Part("suffix", suffix, group="suffix", keep="start"),
    ]
    limits = Limits(context_length=400, max_tokens=100)
    fitted = fit_with(parts, {"prefix": 0.8, "suffix": 0.2}, limits, qwen_counting, qwen_fim_render)
    check_fitted(fitted, parts, limits, qwen_counting, qwen_fim_render)
    kept_prefix, kept_suffix = fitted.texts["prefix"], fitted.texts["suffix"]
    assert kept_prefix.endswith("line_199 = 199\nresult = ")
    assert kept_suffix.startswith("after_000 = 0\n")
    prefix_report, suffix_report = fitted.report.parts
    assert (prefix_report.dropped, suffix_report.dropped) == ("start", "end")
    assert prefix_report.total_lines == 201
    assert 0 < prefix_report.kept_lines < 201
    # The shares hold roughly: the prefix gets about four times the suffix.
    assert 3 * suffix_report.tokens <= prefix_report.tokens <= 5 * suffix_report.tokens
    # And the budget is used, not wasted: less than one line of each is left over.
    assert fitted.report.prompt_tokens > limits.input_budget - 2 * 8


def test_unneeded_share_flows_to_the_others(qwen_counting: TokenizerCounting) -> None:
    prefix = "".join(f"line_{i:03d} = {i}\n" for i in range(300))
    parts = [
        Part("prefix", prefix, group="prefix", keep="end"),
        Part("suffix", "\n", group="suffix", keep="start"),
        Part("snippet:0:a.py", "", group="snippets"),
    ]
    limits = Limits(context_length=600, max_tokens=100)
    shares = {"prefix": 0.6, "suffix": 0.15, "snippets": 0.25}

    def render(texts: dict[str, str]) -> Prompt:
        snippets = [Snippet("a.py", texts["snippet:0:a.py"])]
        return render_fim(
            FIM, texts["prefix"], texts["suffix"], snippets=snippets, path="", repo=""
        )

    fitted = fit_with(parts, shares, limits, qwen_counting, render)
    check_fitted(fitted, parts, limits, qwen_counting, render)
    # Far more than 60 % of the budget: the suffix and snippet shares were not needed.
    assert fitted.report.parts[0].tokens > 0.9 * (limits.input_budget - 20)
    assert fitted.report.parts[1].dropped == "none"


def test_everything_fits_nothing_is_dropped(countings: dict[str, TokenizerCounting]) -> None:
    for counting in countings.values():
        prefix, suffix = "def f(x):\n    return x\n", "print(f(1))\n"
        parts = [
            Part("prefix", prefix, group="prefix", keep="end"),
            Part("suffix", suffix, group="suffix", keep="start"),
        ]
        full = qwen_fim_render({"prefix": prefix, "suffix": suffix})
        exact = counting.count_prompt(full)
        line_sum = counting.count_prompt(qwen_fim_render({"prefix": "", "suffix": ""})) + sum(
            counting.count_lines(lines_of(prefix + suffix))
        )
        limits = Limits(context_length=max(exact, line_sum) + 5, max_tokens=5)
        fitted = fit_with(parts, {"prefix": 0.5, "suffix": 0.5}, limits, counting, qwen_fim_render)
        assert fitted.prompt == full
        assert fitted.report.prompt_tokens == exact
        assert [r.dropped for r in fitted.report.parts] == ["none", "none"]


@pytest.mark.parametrize(
    ("family_name", "prefix"),
    [
        # Qwen2.5 writes a run of newlines as one token; line by line it is one per line.
        ("qwen2.5", "a = 1\n\n\n\n\n\n\n\nb = 2\n" * 5),
        # SmolLM2 merges a newline with the next line's indentation.
        ("smollm2", "def f():\n    a = 1\n    b = 2\n    c = 3\n    return a\n" * 6),
    ],
    ids=["qwen2.5-blank-lines", "smollm2-indentation"],
)
def test_a_prompt_that_fits_by_exact_count_is_not_cut(
    countings: dict[str, TokenizerCounting], family_name: str, prefix: str
) -> None:
    counting = countings[family_name]
    parts = [
        Part("prefix", prefix, group="prefix", keep="end"),
        Part("suffix", "", group="suffix", keep="start"),
    ]
    full = qwen_fim_render({"prefix": prefix, "suffix": ""})
    exact = counting.count_prompt(full)
    line_sum = counting.count_prompt(qwen_fim_render({"prefix": "", "suffix": ""})) + sum(
        counting.count_lines(lines_of(prefix))
    )
    assert line_sum > exact  # the overcount this test is about
    limits = Limits(context_length=exact + 10, max_tokens=10)  # exactly room for the whole
    fitted = fit_with(parts, {"prefix": 0.8, "suffix": 0.2}, limits, counting, qwen_fim_render)
    assert fitted.report.parts[0].dropped == "none"
    assert fitted.prompt == full


def test_merges_over_the_sum_are_cut_until_the_real_count_fits() -> None:
    """A counter whose whole-prompt count exceeds the sum of the pieces (a wrapper
    the allocator never saw) makes `fit` drop more lines until the real count fits."""

    def count(text: str) -> int:
        return len(text) + 10 * text.count("[")  # each "[" costs ten extra

    def count_lines(lines: list[str]) -> list[int]:
        return [count(line) for line in lines]

    def count_prompt(prompt: Prompt) -> int:
        return count(prompt.text)

    def render(texts: dict[str, str]) -> Prompt:
        return Prompt.plain(f"<{texts['body']}>" + ("[" if texts["body"] else ""))

    body = "".join(f"{i:02d}\n" for i in range(20))  # 20 lines of 3 characters
    parts = [Part("body", body, group="body", keep="end")]
    limits = Limits(context_length=40, max_tokens=10)  # budget 30
    fitted = fit(
        parts,
        {"body": 1.0},
        limits,
        count=count,
        count_lines=count_lines,
        count_prompt=count_prompt,
        render=render,
    )
    assert count_prompt(fitted.prompt) <= 30
    assert fitted.report.prompt_tokens == count_prompt(fitted.prompt)
    # The allocator sees 2 template + 9 lines of 3 = 29; the real count of that is
    # 40, so lines go (oldest first, keep="end") until 2 + 1 + 10 + 3 * 5 = 28 fits.
    assert fitted.texts["body"] == "".join(f"{i:02d}\n" for i in range(15, 20))
    assert fitted.report.parts[0].kept_lines == 5
    assert fitted.report.parts[0].dropped == "start"
    assert fitted.report.prompt_tokens == 28
    assert fitted.report.template_tokens == 28 - 15


# -- ranking -------------------------------------------------------------------------


SNIPPET_TEXT = "".join(f"def helper_{i}():\n    return {i}\n" for i in range(6))
SCORES = [0.1, 0.9, -1.0, 0.5, 0.9]
BY_SCORE = [f"snippet:{i}:f{i}.py" for i in (1, 4, 3, 0, 2)]


def test_snippets_are_ranked_by_score_then_request_order() -> None:
    snippets = [(f"f{i}.py", SNIPPET_TEXT, score) for i, score in enumerate(SCORES)]
    _, ranked = completion_parts("x = ", "", snippets, with_suffix=True)
    assert [p.name for p in ranked] == BY_SCORE


def test_higher_scores_are_kept_first(qwen_counting: TokenizerCounting) -> None:
    snippets = [(f"f{i}.py", SNIPPET_TEXT, score) for i, score in enumerate(SCORES)]
    prefix = "".join(f"value_{i:03d} = {i}\n" for i in range(400))
    parts, ranked = completion_parts(prefix, "\n    return y\n", snippets, with_suffix=True)
    render = completion_render("qwen2.5", ranked)
    limits = Limits(context_length=1000, max_tokens=100)
    shares = {"prefix": 0.6, "suffix": 0.15, "snippets": 0.25}  # the shipped shares
    one = qwen_counting.count(SNIPPET_TEXT)
    assert 3 * one < 0.25 * limits.input_budget < 4 * one  # room for three to four of five
    fitted = fit_with(parts, shares, limits, qwen_counting, render)
    check_fitted(fitted, parts, limits, qwen_counting, render)
    assert_ranked(fitted, ranked)
    states = [r.dropped for r in fitted.report.parts[2:]]
    assert states[:2] == ["none", "none"]  # the two 0.9s
    assert states[-1] in ("end", "all")  # the -1.0 is the first to go
    assert "end" in states or "all" in states
    # What a snippet keeps of itself is its first lines.
    for part in ranked:
        assert SNIPPET_TEXT.startswith(fitted.texts[part.name])
    # The suffix needed a fraction of its share, which went to the others.
    assert fitted.report.parts[1].dropped == "none"


def test_snippet_markup_never_outranks_the_score(qwen_counting: TokenizerCounting) -> None:
    snippets = [(f"f{i}.py", SNIPPET_TEXT, score) for i, score in enumerate(SCORES)]
    parts, ranked = completion_parts("x = ", "", snippets, with_suffix=True)
    render = completion_render("qwen2.5", ranked)
    one = qwen_counting.count(SNIPPET_TEXT)
    limits = Limits(context_length=40 + int(2.5 * one) + 40, max_tokens=40)
    fitted = fit_with(parts, {"prefix": 0.1, "snippets": 0.9}, limits, qwen_counting, render)
    check_fitted(fitted, parts, limits, qwen_counting, render)
    assert_ranked(fitted, ranked)


def chat_parts(
    history: Sequence[str], latest: str, system: str = "Be brief."
) -> tuple[list[Part], list[Part], list[str]]:
    # Alternating roles, ending with the user's latest message.
    roles = [
        "user" if (len(history) - i) % 2 == 0 else "assistant" for i in range(len(history) + 1)
    ]
    names = [f"message:{i}:{role}" for i, role in enumerate(roles)]
    ranked = [
        Part(n, t, group="history", atomic=True)
        for n, t in reversed(list(zip(names[:-1], history, strict=True)))
    ]
    return [Part("system", system), Part(names[-1], latest), *ranked], ranked, names


def chat_render(names: Sequence[str], family: Family = QWEN) -> Render:
    """As tasks._chat renders: older turns left out when dropped."""

    def render(texts: dict[str, str]) -> Prompt:
        chat = [ChatTurn("system", texts["system"])]
        chat += [ChatTurn(n.split(":")[2], texts[n]) for n in names if texts[n] or n == names[-1]]
        return render_chat(family, chat)

    return render


def test_chat_drops_the_oldest_turns_first(qwen_counting: TokenizerCounting) -> None:
    # Older turns are longer here, so any final trim also lands on the oldest.
    history = [f"turn {i}: " + "lorem ipsum dolor sit amet " * (8 - i) for i in range(6)]
    latest = "and now? " * 30
    parts, _, names = chat_parts(history, latest)
    render = chat_render(names)
    bare = qwen_counting.count_prompt(render({p.name: "" if p.group else p.text for p in parts}))
    newest_two = sum(qwen_counting.count(t) + 5 for t in history[-2:])  # text + ChatML markup
    limits = Limits(context_length=bare + newest_two + 30 + 50, max_tokens=50)
    fitted = fit_with(parts, {"history": 1.0}, limits, qwen_counting, render)
    check_fitted(fitted, parts, limits, qwen_counting, render)
    assert fitted.texts[names[-1]] == latest
    kept = [i for i, n in enumerate(names[:-1]) if fitted.texts[n]]
    assert kept == [4, 5]  # the two newest whole turns; older ones dropped whole
    assert "turn 3" not in fitted.prompt.text
    assert (
        fitted.prompt.text.index("turn 4")
        < fitted.prompt.text.index("turn 5")
        < fitted.prompt.text.index("and now?")
    )


def test_shrinking_keeps_the_newest_turns(qwen_counting: TokenizerCounting) -> None:
    history = [f"({i}) Here is a function:\n\ndef f(x):\n    return x * 2\n" for i in range(10)]
    parts, _, names = chat_parts(history, "and now?", system="S")
    render = chat_render(names)
    fitted = fit_with(parts, {"history": 1.0}, Limits(220, 100), qwen_counting, render)
    check_fitted(fitted, parts, Limits(220, 100), qwen_counting, render)
    kept = [i for i, n in enumerate(names[:-1]) if fitted.texts[n]]
    assert kept  # some history fits
    assert kept == list(range(10 - len(kept), 10)), kept  # today: [5, 6, 7, 8], 9 dropped


def test_chat_history_has_no_gaps(qwen_counting: TokenizerCounting) -> None:
    """A long turn that does not fit ends the history: a shorter, older one that
    would fit is dropped too, so the model never sees a conversation with a hole."""
    history = ["old and short", "middle " * 200, "newer and short"]
    names = ["message:0:user", "message:1:assistant", "message:2:user", "message:3:assistant"]
    ranked = [
        Part(n, t, group="history", atomic=True)
        for n, t in reversed(list(zip(names[:-1], history, strict=True)))
    ]
    parts = [Part("system", ""), Part(names[-1], "latest"), *ranked]

    def render(texts: dict[str, str]) -> Prompt:
        chat = [ChatTurn("system", texts["system"])]
        chat += [ChatTurn(n.split(":")[2], texts[n]) for n in names if texts[n] or n == names[-1]]
        return render_chat(SMOL, chat)

    limits = Limits(context_length=150, max_tokens=50)
    fitted = fit_with(parts, {"history": 1.0}, limits, qwen_counting, render)
    assert [fitted.texts[n] for n in names] == ["", "", "newer and short", "latest"]
    assert [r.dropped for r in fitted.report.parts[2:]] == ["none", "all", "all"]


def test_budget_report_to_dict(qwen_counting: TokenizerCounting) -> None:
    parts = [
        Part("prefix", "a\nb\n", group="prefix", keep="end"),
        Part("suffix", "", group="suffix"),
    ]
    fitted = fit_with(parts, {"prefix": 1.0}, Limits(100, 10), qwen_counting, qwen_fim_render)
    data: dict[str, Any] = fitted.report.to_dict()
    assert data == {
        "context_length": 100,
        "max_tokens": 10,
        "input_budget": 90,
        "prompt_tokens": fitted.report.prompt_tokens,
        "template_tokens": 3,
        "counting": "exact",
        "parts": [
            {
                "name": "prefix",
                "tokens": qwen_counting.count("a\nb\n"),
                "original_tokens": qwen_counting.count("a\nb\n"),
                "kept_lines": 2,
                "total_lines": 2,
                "dropped": "none",
            },
            {
                "name": "suffix",
                "tokens": 0,
                "original_tokens": 0,
                "kept_lines": 0,
                "total_lines": 0,
                "dropped": "none",
            },
        ],
    }
