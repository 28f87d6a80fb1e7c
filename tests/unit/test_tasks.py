"""Routed tasks (engine/tasks.py): the exact prompt, lane, limits and stops of
every task, per model family, with the shipped config's task tables and the
family's real tokenizer doing the counting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qwend.backends.base import Prompt
from qwend.config import Settings, TaskSettings, load_config
from qwend.errors import BadRequest, ContextLengthExceeded
from qwend.protocol import (
    ChatInput,
    ChatMessage,
    CodeInput,
    CommitMessageInput,
    CompleteInput,
    Snippet,
    TaskInput,
)
from qwend.tasks.prepare import PreparedTask, TokenCounting, prepare
from qwend.tasks.prompts import FAMILIES
from qwend.tasks.registry import TASK_INPUTS

CONTEXT = {"qwen2.5": 32768, "smollm2": 8192}  # the shipped profiles' windows
FAMILY_STOPS = ("<|im_end|>", "<|endoftext|>")
FIM_MARKERS = (
    "<|fim_prefix|>",
    "<|fim_suffix|>",
    "<|fim_middle|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<|fim_pad|>",
)
ENGINEER = "You are an expert software engineer. Answer precisely and concisely."


@pytest.fixture
def settings(xdg: Path) -> Settings:
    """The shipped config alone: XDG_CONFIG_HOME is an empty temp dir."""
    config = load_config()
    assert len(config.files) == 1
    return config.settings


@pytest.fixture
def run(settings: Settings, countings: dict[str, TokenCounting]) -> Any:
    def run(name: str, body: TaskInput, family: str, **overrides: Any) -> PreparedTask:
        task = settings.tasks[name]  # type: ignore[index]
        if overrides:
            task = task.model_copy(update=overrides)
        counting = countings[family]
        prepared = prepare(
            name,
            body,
            task,
            FAMILIES[family],
            context_length=CONTEXT[family],
            max_tokens_limit=settings.generation.max_tokens_limit,
            counting=counting,
        )
        report = prepared.budget
        assert report.counting == "exact"
        assert report.prompt_tokens == counting.count_prompt(prepared.request.prompt)
        assert report.prompt_tokens <= report.input_budget
        assert sum(p.tokens for p in report.parts) + report.template_tokens == report.prompt_tokens
        return prepared

    return run


def assert_untouched(prepared: PreparedTask) -> None:
    """Small inputs: nothing was cut."""
    assert all(p.dropped == "none" for p in prepared.budget.parts), prepared.budget.parts


# -- complete ------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["qwen2.5", "smollm2"])
def test_complete_in_an_empty_file_has_a_prompt(run: Any, family: str) -> None:
    """A new empty file: FIM keeps its markers; prefix-only starts a document."""
    prepared = run("complete", CompleteInput(prefix="", suffix=""), family)
    assert prepared.request.prompt.runs()
    if family == "smollm2":
        assert prepared.request.prompt == Prompt.marker("<|endoftext|>")
        assert prepared.budget.prompt_tokens == 1


def test_complete_fim_qwen(run: Any) -> None:
    body = CompleteInput(prefix="def add(a, b):\n    ", suffix="\n\nprint(add(1, 2))\n")
    prepared = run("complete", body, "qwen2.5")
    assert prepared.request.prompt.text == (
        "<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n\nprint(add(1, 2))\n<|fim_middle|>"
    )
    assert (prepared.name, prepared.lane, prepared.template) == ("complete", "completion", "fim")
    assert prepared.request.max_tokens == 64
    assert prepared.request.sampling.temperature == 0.1
    assert prepared.request.sampling.top_p == 0.95
    assert prepared.request.sampling.seed is None
    stops = prepared.request.stops
    assert stops[0] == "print(add(1, 2))"  # the suffix's first line
    assert set(stops) == {"print(add(1, 2))", *FIM_MARKERS, *FAMILY_STOPS}
    assert prepared.suffix == "\n\nprint(add(1, 2))\n"
    assert prepared.request.trim_suffix == ""  # the service sets it from .suffix
    report = prepared.budget
    assert (report.context_length, report.max_tokens) == (32768, 64)
    assert report.input_budget == 4096  # complete's max_input_tokens
    assert [p.name for p in report.parts] == ["prefix", "suffix"]
    assert_untouched(prepared)


def test_complete_fim_repo_level_with_snippets(run: Any) -> None:
    body = CompleteInput(
        prefix="import os\n\ndef f():\n    return ",
        suffix="\n",
        path="pkg/a.py",
        repo="demo",
        snippets=[
            Snippet(path="pkg/b.py", text="X = 1\n", score=0.2),
            Snippet(path="pkg/c.py", text="def g():\n    pass\n", score=0.9),
        ],
    )
    prepared = run("complete", body, "qwen2.5")
    # Other files first (best score first), the cursor window last.
    assert prepared.request.prompt.text == (
        "<|repo_name|>demo\n"
        "<|file_sep|>pkg/c.py\ndef g():\n    pass\n\n"
        "<|file_sep|>pkg/b.py\nX = 1\n\n"
        "<|file_sep|>pkg/a.py\n"
        "<|fim_prefix|>import os\n\ndef f():\n    return <|fim_suffix|>\n<|fim_middle|>"
    )
    assert [p.name for p in prepared.budget.parts] == [
        "prefix",
        "suffix",
        "snippet:1:pkg/c.py",
        "snippet:0:pkg/b.py",
    ]
    assert set(prepared.request.stops) == {*FIM_MARKERS, *FAMILY_STOPS}  # "\n": no line stop
    assert_untouched(prepared)


def test_complete_fim_repo_name_alone_takes_the_repo_form(run: Any) -> None:
    body = CompleteInput(prefix="a", suffix="b", repo="r")
    assert run("complete", body, "qwen2.5").request.prompt.text == (
        "<|repo_name|>r\n<|file_sep|>untitled\n<|fim_prefix|>a<|fim_suffix|>b<|fim_middle|>"
    )


def test_complete_prefix_only_smollm2(run: Any) -> None:
    body = CompleteInput(
        prefix="import os\n\ndef f():\n    return ",
        suffix="\n    x = 1\n",
        path="pkg/a.py",
        language="python",
        snippets=[Snippet(path="pkg/b.py", text="X = 1\n")],
    )
    prepared = run("complete", body, "smollm2")
    assert prepared.request.prompt.text == (
        "# pkg/b.py\nX = 1\n\n\n# pkg/a.py\nimport os\n\ndef f():\n    return "
    )
    assert prepared.template == "prefix"  # the family has no FIM tokens
    assert prepared.lane == "completion"
    assert prepared.request.stops == ("x = 1", *FAMILY_STOPS)
    assert prepared.suffix == "\n    x = 1\n"  # still trims the answer
    # The model never sees the suffix, so it is not a budgeted part.
    assert [p.name for p in prepared.budget.parts] == ["prefix", "snippet:0:pkg/b.py"]
    assert "x = 1\n" not in prepared.request.prompt.text
    assert prepared.budget.template_tokens >= 0
    assert_untouched(prepared)


def test_complete_prefix_only_comment_style_follows_the_language(run: Any) -> None:
    body = CompleteInput(
        prefix="let x = ",
        path="src/a.ts",
        language="typescript",
        snippets=[Snippet(path="src/b.ts", text="export const y = 1;")],
    )
    prepared = run("complete", body, "smollm2")
    assert prepared.request.prompt.text == (
        "// src/b.ts\nexport const y = 1;\n\n// src/a.ts\nlet x = "
    )
    plain = run("complete", CompleteInput(prefix="x = ", suffix="\n"), "smollm2")
    assert plain.request.prompt.text == "x = "
    assert plain.request.stops == FAMILY_STOPS


def test_complete_prefix_template_on_qwen(run: Any) -> None:
    body = CompleteInput(prefix="x = ", suffix="\nprint(x)\n")
    prepared = run("complete", body, "qwen2.5", template="prefix")
    assert prepared.template == "prefix"
    assert prepared.request.prompt.text == "x = "
    assert prepared.request.stops == ("print(x)", *FAMILY_STOPS)  # no FIM markers


def test_prefix_only_gives_the_suffix_no_budget(run: Any) -> None:
    # A suffix far larger than the window: without FIM it must not cost the prefix.
    prefix = "".join(f"value_{i:04d} = {i}\n" for i in range(2000))
    suffix = "".join(f"after_{i:04d} = {i}\n" for i in range(2000))
    prepared = run("complete", CompleteInput(prefix=prefix, suffix=suffix), "smollm2")
    (part,) = prepared.budget.parts
    assert part.name == "prefix"
    assert part.dropped == "start"
    # The prefix had the whole budget (its share plus the unused ones): nearly full.
    assert prepared.budget.prompt_tokens > prepared.budget.input_budget - 20
    assert prepared.request.prompt.text.endswith("value_1999 = 1999\n")


# -- code tasks ----------------------------------------------------------------------

CODE = "x = [i * i for i in range(3)]"

CODE_INSTRUCTIONS = {
    "explain": "Explain what the following code does, step by step, and point out anything "
    "surprising.",
    "refactor": "Refactor the following code to be clearer and simpler without changing its "
    "behaviour. Reply with only the refactored code in one fenced code block.",
    "docstring": "Write a docstring for the following code, in the usual style for its "
    "language. Reply with only the docstring.",
    "tests": "Write unit tests for the following code with the usual test framework for its "
    "language. Reply with only the test code in one fenced code block.",
    "fix": "Fix the bugs in the following code. Reply with the corrected code in one fenced "
    "code block, then one sentence on what was wrong.",
}
CODE_TASKS = {  # lane, max_tokens, temperature
    "explain": ("interactive", 512, 0.2),
    "refactor": ("background", 1024, 0.2),
    "docstring": ("interactive", 256, 0.1),
    "tests": ("background", 1024, 0.2),
    "fix": ("interactive", 1024, 0.1),
}


def test_explain_golden(run: Any) -> None:
    body = CodeInput(code=CODE, language="python", path="sq.py", context="import math\n")
    prepared = run("explain", body, "qwen2.5")
    assert prepared.request.prompt.text == (
        "<|im_start|>system\n"
        "You are an expert software engineer. Answer precisely and concisely.<|im_end|>\n"
        "<|im_start|>user\n"
        "Explain what the following code does, step by step, and point out anything "
        "surprising.\n"
        "\n"
        "File: sq.py\n"
        "\n"
        "Surrounding code:\n"
        "```python\n"
        "import math\n"
        "\n"
        "```\n"
        "\n"
        "Code:\n"
        "```python\n"
        "x = [i * i for i in range(3)]\n"
        "```<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert [p.name for p in prepared.budget.parts] == ["system", "instruction", "code", "context"]
    assert_untouched(prepared)


@pytest.mark.parametrize("family", ["qwen2.5", "smollm2"])
@pytest.mark.parametrize("name", list(CODE_TASKS))
def test_code_task_golden(run: Any, name: str, family: str) -> None:
    prepared = run(name, CodeInput(code=CODE), family)
    # Both families speak ChatML, and the task's system prompt replaces the default.
    assert prepared.request.prompt.text == (
        f"<|im_start|>system\n{ENGINEER}<|im_end|>\n"
        f"<|im_start|>user\n{CODE_INSTRUCTIONS[name]}\n\nCode:\n```\n{CODE}\n```<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    lane, max_tokens, temperature = CODE_TASKS[name]
    assert (prepared.lane, prepared.template) == (lane, "chat")
    assert prepared.request.max_tokens == max_tokens
    assert prepared.request.sampling.temperature == temperature
    assert prepared.request.stops == FAMILY_STOPS
    assert prepared.suffix == ""
    assert_untouched(prepared)


def test_fix_with_an_instruction_and_a_language_without_a_fence_name(run: Any) -> None:
    body = CodeInput(
        code="int main() { retrun 0; }",
        language="C++",  # not an identifier: the fence stays bare
        instruction="error: 'retrun' was not declared",
        stop=["```\n\n"],
        max_tokens=100,
        temperature=0.0,
        seed=7,
    )
    prepared = run("fix", body, "smollm2")
    assert prepared.request.prompt.text == (
        f"<|im_start|>system\n{ENGINEER}<|im_end|>\n"
        "<|im_start|>user\n"
        f"{CODE_INSTRUCTIONS['fix']}\n\nerror: 'retrun' was not declared\n\n"
        "Code:\n```\nint main() { retrun 0; }\n```<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert prepared.request.max_tokens == 100
    assert prepared.request.sampling.temperature == 0.0  # 0 is a value, not "unset"
    assert prepared.request.sampling.seed == 7
    assert prepared.request.stops == ("```\n\n", *FAMILY_STOPS)  # the request's come first


# -- commit_message ------------------------------------------------------------------

DIFF = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n"


def test_commit_message_golden(run: Any) -> None:
    prepared = run("commit_message", CommitMessageInput(diff=DIFF), "qwen2.5")
    assert prepared.request.prompt.text == (
        "<|im_start|>system\n"
        "You are an expert software engineer who writes clear git history.<|im_end|>\n"
        "<|im_start|>user\n"
        "Write a git commit message for the following staged diff: a summary line under 72 "
        "characters, a blank line, then a short body saying what changed and why. Reply with "
        "only the message.\n"
        "\n"
        "```diff\n"
        "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n"
        "\n"
        "```<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert (prepared.lane, prepared.template) == ("interactive", "chat")
    assert prepared.request.max_tokens == 128
    assert prepared.request.stops == FAMILY_STOPS
    assert [p.name for p in prepared.budget.parts] == ["system", "instruction", "diff"]
    assert_untouched(prepared)


def test_commit_message_long_diff_keeps_its_start(run: Any) -> None:
    diff = "".join(f"+line {i}\n" for i in range(5000))
    body = CommitMessageInput(diff=diff, instruction="Use Conventional Commits.")
    prepared = run("commit_message", body, "smollm2")
    diff_report = prepared.budget.parts[-1]
    assert (diff_report.name, diff_report.dropped) == ("diff", "end")
    assert "+line 0\n+line 1\n" in prepared.request.prompt.text
    assert "+line 4999" not in prepared.request.prompt.text
    assert (
        "only the message.\n\nUse Conventional Commits.\n\n```diff\n"
        in prepared.request.prompt.text
    )


# -- chat and reasoning --------------------------------------------------------------


def test_chat_golden(run: Any) -> None:
    body = ChatInput(
        messages=[
            ChatMessage(role="user", content="Hi"),
            ChatMessage(role="assistant", content="Hello!"),
            ChatMessage(role="user", content="What is 2+2?"),
        ]
    )
    prepared = run("chat", body, "smollm2")
    assert prepared.request.prompt.text == (
        "<|im_start|>system\nYou are a helpful coding assistant.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert (prepared.lane, prepared.template) == ("interactive", "chat")
    assert prepared.request.max_tokens == 1024
    assert prepared.request.sampling.temperature == 0.3
    assert prepared.request.stops == FAMILY_STOPS
    # The latest message is required; older turns are ranked newest first.
    assert [p.name for p in prepared.budget.parts] == [
        "system",
        "message:2:user",
        "message:1:assistant",
        "message:0:user",
    ]
    assert_untouched(prepared)


def test_chat_leading_system_message_replaces_the_task_system(run: Any) -> None:
    body = ChatInput(
        messages=[
            ChatMessage(role="system", content="Answer in French."),
            ChatMessage(role="user", content="Hi"),
        ]
    )
    prepared = run("chat", body, "qwen2.5")
    assert prepared.request.prompt.text == (
        "<|im_start|>system\nAnswer in French.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    empty = ChatInput(
        messages=[ChatMessage(role="system", content=""), ChatMessage(role="user", content="Hi")]
    )
    # An empty system message means no system turn at all (not the family default).
    assert run("chat", empty, "qwen2.5").request.prompt.text == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_chat_with_only_a_system_message_is_a_bad_request(run: Any) -> None:
    body = ChatInput(messages=[ChatMessage(role="system", content="x")])
    with pytest.raises(BadRequest, match="field 'messages'"):
        run("chat", body, "qwen2.5")


@pytest.mark.parametrize("family", ["qwen2.5", "smollm2"])
def test_reasoning_golden(run: Any, family: str) -> None:
    body = ChatInput(messages=[ChatMessage(role="user", content="Why is the sky blue?")])
    prepared = run("reasoning", body, family)
    assert prepared.request.prompt.text == (
        "<|im_start|>system\nYou are a careful coding assistant. Think step by step, then give "
        "your final answer.<|im_end|>\n"
        "<|im_start|>user\nWhy is the sky blue?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert (prepared.lane, prepared.template) == ("background", "chat")
    assert prepared.request.max_tokens == 8000
    assert prepared.request.sampling.temperature == 0.6
    assert prepared.request.stops == FAMILY_STOPS
    assert prepared.budget.input_budget == CONTEXT[family] - 8000  # 192 for SmolLM2
    assert_untouched(prepared)


# -- limits --------------------------------------------------------------------------


def test_every_task_has_a_table_and_an_input(settings: Settings) -> None:
    assert set(settings.tasks) == set(TASK_INPUTS)
    lanes = {name: task.lane for name, task in settings.tasks.items()}
    assert lanes == {
        "complete": "completion",
        "explain": "interactive",
        "refactor": "background",
        "docstring": "interactive",
        "tests": "background",
        "fix": "interactive",
        "commit_message": "interactive",
        "chat": "interactive",
        "reasoning": "background",
    }
    for task in settings.tasks.values():
        assert isinstance(task, TaskSettings)
        assert task.max_tokens <= settings.generation.max_tokens_limit


def test_max_tokens_above_the_limit_is_a_bad_request(run: Any, settings: Settings) -> None:
    limit = settings.generation.max_tokens_limit
    with pytest.raises(BadRequest) as info:
        run("explain", CodeInput(code="x", max_tokens=limit + 1), "qwen2.5")
    assert info.value.details == {"field": "max_tokens"}
    assert str(limit) in info.value.message
    assert run("explain", CodeInput(code="x", max_tokens=limit), "qwen2.5").request.max_tokens == (
        limit
    )


def test_code_too_large_for_the_window(run: Any) -> None:
    code = "".join(f"value_{i} = compute({i})\n" for i in range(1500))
    with pytest.raises(ContextLengthExceeded) as info:
        run("reasoning", ChatInput(messages=[ChatMessage(role="user", content=code)]), "smollm2")
    err = info.value
    assert err.details["input_budget"] == 192
    assert err.details["context_length"] == 8192
    assert err.details["required_tokens"] > 192
    assert "max_tokens 8000" in err.message
    with pytest.raises(ContextLengthExceeded, match="input budget is 4096"):
        run("explain", CodeInput(code=code * 3), "qwen2.5", max_input_tokens=4096)


def test_task_stop_strings_come_between_request_and_family(run: Any) -> None:
    body = ChatInput(messages=[ChatMessage(role="user", content="Hi")], stop=["END"])
    prepared = run("chat", body, "qwen2.5", stop=["\n\nUser:"])
    assert prepared.request.stops == ("END", "\n\nUser:", *FAMILY_STOPS)


def test_snippet_markup_does_not_eat_the_prefix_share(run: Any) -> None:
    prefix = "".join(f"value_{i:04d} = {i}\n" for i in range(1000))
    snippets = [
        Snippet(
            path=f"src/components/forms/validation/module_{i:02d}/index.test.tsx",
            text=f"export const v{i} = {i};\nexport const w{i} = v{i} * 2;\nexport default w{i};\n",
        )
        for i in range(16)
    ]
    body = CompleteInput(prefix=prefix, suffix="\n", snippets=snippets)
    prepared = run("complete", body, "qwen2.5", max_input_tokens=1024)
    prefix_report = prepared.budget.parts[0]
    assert prefix_report.dropped == "start"
    # Prefix 0.6, snippets 0.25 (both want more), suffix 0.15 (needs 1 token): the
    # prefix's share of the room is at least 0.6 of it.
    assert prefix_report.tokens >= 0.6 * prepared.budget.input_budget


def test_chat_task_keeps_the_newest_turns(run: Any) -> None:
    turn = "Here is a function:\n\ndef f(x):\n    return x * 2\n"
    messages = [
        ChatMessage(role="user" if i % 2 == 0 else "assistant", content=f"({i}) {turn}")
        for i in range(10)
    ]
    body = ChatInput(messages=[*messages, ChatMessage(role="user", content="and now?")])
    prepared = run("chat", body, "qwen2.5", system="S", max_input_tokens=120)
    kept = [int(p.name.split(":")[1]) for p in prepared.budget.parts[2:] if p.dropped == "none"]
    assert kept  # some history fits
    assert sorted(kept) == list(range(10 - len(kept), 10))  # today: 5-8 kept, 9 dropped
