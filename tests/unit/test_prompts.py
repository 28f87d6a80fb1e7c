"""Prompt rendering: ChatML per family and fill-in-the-middle completions."""

from __future__ import annotations

import pytest

from qwend.engine.prompts import (
    FAMILIES,
    MIN_SUFFIX_STOP_CHARS,
    ChatTurn,
    Family,
    render_chat,
    render_completion,
)

QWEN = FAMILIES["qwen2.5"]
SMOL = FAMILIES["smollm2"]

QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def test_families_known() -> None:
    assert set(FAMILIES) == {"qwen2.5", "smollm2"}
    assert QWEN.default_system == QWEN_SYSTEM
    assert SMOL.default_system == SMOL_SYSTEM
    for family in FAMILIES.values():
        assert family.stop_strings == ("<|im_end|>", "<|endoftext|>")
    assert SMOL.fim is None
    assert QWEN.fim is not None


def test_chat_golden_smollm2() -> None:
    prompt = render_chat(SMOL, [ChatTurn("user", "Write hello world in C.")])
    assert prompt == (
        "<|im_start|>system\n"
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\n"
        "Write hello world in C.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chat_golden_qwen() -> None:
    prompt = render_chat(QWEN, [ChatTurn("user", "Hi")])
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
    prompt = render_chat(family, turns)
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
    prompt = render_chat(SMOL, [ChatTurn("user", "u"), ChatTurn("system", "s")])
    assert prompt.startswith(f"<|im_start|>system\n{SMOL_SYSTEM}<|im_end|>\n<|im_start|>user\n")
    assert prompt.count("<|im_start|>system\n") == 2


def test_chat_empty_turns_gets_default_system_and_open_assistant() -> None:
    assert render_chat(QWEN, []) == (
        f"<|im_start|>system\n{QWEN_SYSTEM}<|im_end|>\n<|im_start|>assistant\n"
    )


def test_chat_does_not_mutate_the_turn_list() -> None:
    turns = [ChatTurn("user", "x")]
    render_chat(QWEN, turns)
    assert turns == [ChatTurn("user", "x")]


def test_completion_qwen_builds_fim_prompt() -> None:
    prompt, stops = render_completion(QWEN, "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n")
    assert prompt == (
        "<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n\nprint(add(1, 2))\n<|fim_middle|>"
    )
    assert stops == ["print(add(1, 2))"]


def test_completion_smollm2_has_no_fim_and_returns_prompt_only() -> None:
    prompt, stops = render_completion(SMOL, "def add(a, b):\n    ", "\n   \n  return x  \nmore\n")
    assert prompt == "def add(a, b):\n    "
    assert "<|fim" not in prompt
    assert stops == ["return x"]  # first non-blank line, stripped


@pytest.mark.parametrize("family", [QWEN, SMOL], ids=lambda f: f.name)
@pytest.mark.parametrize("suffix", [None, ""])
def test_completion_without_suffix_is_plain_prompt_without_stops(
    family: Family, suffix: str | None
) -> None:
    assert render_completion(family, "x = ", suffix) == ("x = ", [])


@pytest.mark.parametrize("line", ["}", ")", "];", "  }  "])
def test_completion_short_suffix_line_is_not_a_stop(line: str) -> None:
    assert len(line.strip()) < MIN_SUFFIX_STOP_CHARS
    prompt, stops = render_completion(SMOL, "p", f"\n{line}\nlonger line\n")
    assert prompt == "p"
    assert stops == []


def test_completion_suffix_line_of_exactly_min_chars_is_a_stop() -> None:
    _, stops = render_completion(SMOL, "p", "end\n")
    assert MIN_SUFFIX_STOP_CHARS == 3
    assert stops == ["end"]


def test_completion_blank_suffix_gives_no_stop_but_qwen_still_uses_fim() -> None:
    prompt, stops = render_completion(QWEN, "a", " \n\t\n")
    assert stops == []
    assert prompt == "<|fim_prefix|>a<|fim_suffix|> \n\t\n<|fim_middle|>"
    assert render_completion(SMOL, "a", " \n\t\n") == ("a", [])
