"""Prompt rendering: ChatML per family and fill-in-the-middle completions."""

from __future__ import annotations

import pytest

from qwend.backends.base import Prompt
from qwend.engine.decoding import trim_repeated_suffix
from qwend.tasks.prompts import (
    FAMILIES,
    MIN_SUFFIX_STOP_CHARS,
    ChatTurn,
    Family,
    Snippet,
    completion_stops,
    line_comment,
    nonempty,
    render_chat,
    render_code_task,
    render_commit_message,
    render_completion,
    render_fim,
    render_prefix_only,
    suffix_stops,
)

FIM_MARKERS = [
    "<|fim_prefix|>",
    "<|fim_suffix|>",
    "<|fim_middle|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<|fim_pad|>",
]
FAMILY_STOPS = ["<|im_end|>", "<|endoftext|>"]

QWEN = FAMILIES["qwen2.5"]
SMOL = FAMILIES["smollm2"]

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def completion(family: Family, prompt: str, suffix: str | None) -> tuple[str, list[str]]:
    """render_completion with the prompt's text (markers are checked in test_tokenizers)."""
    rendered, stops = render_completion(family, prompt, suffix)
    return rendered.text, stops


def test_families_known() -> None:
    assert set(FAMILIES) == {"qwen2.5", "smollm2"}
    assert QWEN.default_system == QWEN_SYSTEM
    assert SMOL.default_system == SMOL_SYSTEM
    for family in FAMILIES.values():
        assert family.stop_strings == ("<|im_end|>", "<|endoftext|>")
    assert SMOL.fim is None
    assert QWEN.fim is not None


def test_chat_golden_smollm2() -> None:
    prompt = render_chat(SMOL, [ChatTurn("user", "Write hello world in C.")]).text
    assert prompt == (
        "<|im_start|>system\n"
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\n"
        "Write hello world in C.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chat_golden_qwen() -> None:
    prompt = render_chat(QWEN, [ChatTurn("user", "Hi")]).text
    assert prompt == (
        "<|im_start|>system\n"
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n"
        "Hi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


@pytest.mark.parametrize("family", [QWEN, SMOL], ids=lambda f: f.name)
def test_chat_with_own_system_turn_has_no_default(family: Family) -> None:
    turns = [
        ChatTurn("system", "Be terse."),
        ChatTurn("user", "2+2?"),
        ChatTurn("assistant", "4"),
        ChatTurn("user", "and 3+3?"),
    ]
    prompt = render_chat(family, turns).text
    assert prompt == (
        "<|im_start|>system\nBe terse.<|im_end|>\n"
        "<|im_start|>user\n2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4<|im_end|>\n"
        "<|im_start|>user\nand 3+3?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert QWEN_SYSTEM not in prompt
    assert SMOL_SYSTEM not in prompt


def test_chat_system_turn_later_still_gets_default_first() -> None:
    prompt = render_chat(SMOL, [ChatTurn("user", "u"), ChatTurn("system", "s")]).text
    assert prompt.startswith(f"<|im_start|>system\n{SMOL_SYSTEM}<|im_end|>\n<|im_start|>user\n")
    assert prompt.count("<|im_start|>system\n") == 2


def test_chat_empty_turns_gets_default_system_and_open_assistant() -> None:
    assert render_chat(QWEN, []).text == (
        f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n<|im_start|>assistant\n"
    )


def test_chat_does_not_mutate_the_turn_list() -> None:
    turns = [ChatTurn("user", "x")]
    render_chat(QWEN, turns)
    assert turns == [ChatTurn("user", "x")]


def test_completion_qwen_builds_fim_prompt() -> None:
    prompt, stops = completion(QWEN, "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n")
    assert prompt == (
        "<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n\nprint(add(1, 2))\n<|fim_middle|>"
    )
    # The suffix's first line, then every FIM marker, then the family's end markers.
    assert stops == ["print(add(1, 2))", *FIM_MARKERS, *FAMILY_STOPS]


def test_completion_smollm2_has_no_fim_and_returns_prompt_only() -> None:
    prompt, stops = completion(SMOL, "def add(a, b):\n    ", "\n   \n  return x  \nmore\n")
    assert prompt == "def add(a, b):\n    "
    assert "<|fim" not in prompt
    assert stops == ["return x"]  # first non-blank line, stripped


@pytest.mark.parametrize("family", [QWEN, SMOL], ids=lambda f: f.name)
@pytest.mark.parametrize("suffix", [None, ""])
def test_completion_without_suffix_is_plain_prompt_without_stops(
    family: Family, suffix: str | None
) -> None:
    assert completion(family, "x = ", suffix) == ("x = ", [])


@pytest.mark.parametrize("line", ["}", ")", "];", "  }  "])
def test_completion_short_suffix_line_is_not_a_stop(line: str) -> None:
    assert len(line.strip()) < MIN_SUFFIX_STOP_CHARS
    prompt, stops = completion(SMOL, "p", f"\n{line}\nlonger line\n")
    assert prompt == "p"
    assert stops == []


def test_completion_suffix_line_of_exactly_min_chars_is_a_stop() -> None:
    _, stops = completion(SMOL, "p", "end\n")
    assert MIN_SUFFIX_STOP_CHARS == 3
    assert stops == ["end"]


def test_completion_blank_suffix_gives_no_stop_but_qwen_still_uses_fim() -> None:
    prompt, stops = completion(QWEN, "a", " \n\t\n")
    assert stops == [*FIM_MARKERS, *FAMILY_STOPS]  # no suffix line, the markers still stop
    assert prompt == "<|fim_prefix|>a<|fim_suffix|> \n\t\n<|fim_middle|>"
    assert completion(SMOL, "a", " \n\t\n") == ("a", [])


# -- completion stops ------------------------------------------------------------------


def test_completion_stops_per_family() -> None:
    assert completion_stops(QWEN, "\n  next_line()\n") == [
        "next_line()",
        *FIM_MARKERS,
        *FAMILY_STOPS,
    ]
    assert completion_stops(SMOL, "\n  next_line()\n") == ["next_line()", *FAMILY_STOPS]
    assert suffix_stops("") == []
    assert suffix_stops("\n\n  \n") == []
    assert suffix_stops("ab\nlonger\n") == []  # only the first non-blank line counts


# -- trimming a completion that repeats the suffix -------------------------------------


@pytest.mark.parametrize(
    ("text", "suffix", "expected"),
    [
        # The answer ran on into the text after the cursor: that tail goes.
        ("a + b)\n    return x", ")\n    return x\n", "a + b"),
        ("total = 0\nfor x in xs:", "for x in xs:\n    total += x\n", "total = 0\n"),
        # The longest repeat is cut, not just its last character.
        ("f(a))", "))", "f(a"),
        # Nothing repeated: unchanged.
        ("a + b", ")\n", "a + b"),
        ("a + b", "", "a + b"),
        ("", ")", ""),
        # A repeat made only of whitespace is not a repeat.
        ("x = 1\n", "\n\nprint(x)", "x = 1\n"),
        ("x = 1 ", " \n", "x = 1 "),
        # The whole answer repeats the suffix: nothing is left.
        ("return x", "return x\n", ""),
        # Only the start of the suffix counts, not text found later in it.
        ("print(x)", "\nfoo()\nprint(x)\n", "print(x)"),
    ],
)
def test_trim_repeated_suffix(text: str, suffix: str, expected: str) -> None:
    assert trim_repeated_suffix(text, suffix) == expected


# -- fill-in-the-middle and prefix-only forms ------------------------------------------


def test_render_fim_plain_window() -> None:
    assert QWEN.fim is not None
    prompt = render_fim(QWEN.fim, "p", "s", snippets=[], path="a.py", repo="").text
    # A path alone does not take the repo-level form.
    assert prompt == "<|fim_prefix|>p<|fim_suffix|>s<|fim_middle|>"


def test_render_fim_repo_level_defaults_and_empty_snippets() -> None:
    assert QWEN.fim is not None
    prompt = render_fim(
        QWEN.fim, "p", "s", snippets=[Snippet("x.py", ""), Snippet("y.py", "Y\n")], path="", repo=""
    ).text
    assert prompt == (
        "<|repo_name|>workspace\n<|file_sep|>y.py\nY\n\n<|file_sep|>untitled\n"
        "<|fim_prefix|>p<|fim_suffix|>s<|fim_middle|>"
    )


def test_render_prefix_only() -> None:
    snippets = [Snippet("lib/u.py", "def u(): ...\n"), Snippet("lib/empty.py", "")]
    assert render_prefix_only(
        "x = ", snippets=snippets, path="main.py", language="python"
    ).text == ("# lib/u.py\ndef u(): ...\n\n\n# main.py\nx = ")
    # No other files: the prefix alone, with no header for this file either.
    assert render_prefix_only("x = ", snippets=[], path="main.py", language="python").text == "x = "
    assert render_prefix_only("x", snippets=snippets[:1], path="", language="").text == (
        "# lib/u.py\ndef u(): ...\n\n\nx"
    )


@pytest.mark.parametrize(
    ("language", "mark"),
    [
        ("python", "#"),
        ("Python", "#"),
        ("shellscript", "#"),
        ("toml", "#"),
        ("sql", "--"),
        ("lua", "--"),
        ("haskell", "--"),
        ("typescript", "//"),
        ("rust", "//"),
        ("c", "//"),
        ("", "#"),
    ],
)
def test_line_comment(language: str, mark: str) -> None:
    assert line_comment(language) == mark


# -- code tasks and commit messages ----------------------------------------------------


def test_render_code_task_minimal_and_full() -> None:
    minimal = render_code_task(
        SMOL, system="S", instruction="Explain.", code="x", context="", path="", language=""
    ).text
    assert minimal == (
        "<|im_start|>system\nS<|im_end|>\n"
        "<|im_start|>user\nExplain.\n\nCode:\n```\nx\n```<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    full = render_code_task(
        QWEN, system="", instruction="Fix.", code="y", context="z", path="a.rs", language="Rust"
    ).text
    # An empty system prompt leaves the system turn out (no family default either).
    assert full == (
        "<|im_start|>user\nFix.\n\nFile: a.rs\n\n"
        "Surrounding code:\n```rust\nz\n```\n\nCode:\n```rust\ny\n```<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_render_commit_message() -> None:
    rendered = render_commit_message(QWEN, system="S", instruction="Write it.", diff="+a")
    assert rendered.text == (
        "<|im_start|>system\nS<|im_end|>\n"
        "<|im_start|>user\nWrite it.\n\n```diff\n+a\n```<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


@pytest.mark.parametrize("family", [QWEN, SMOL], ids=lambda f: f.name)
def test_an_empty_completion_prompt_starts_a_document(family: Family) -> None:
    rendered, stops = render_completion(family, "", None)
    assert rendered.runs() == [("<|endoftext|>", True)]
    assert stops == []
    assert nonempty(family, Prompt.plain("x")) == Prompt.plain("x")
