"""Engine: prompt formats per model family (chat markup and fill-in-the-middle).

A family fixes how a conversation or a cursor position becomes one prompt
string, and which end-of-turn markers stop generation. Both families here use
ChatML; Qwen2.5 also has fill-in-the-middle tokens, SmolLM2 has none, so its
completions see the prefix only and the suffix is used to stop early.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

MIN_SUFFIX_STOP_CHARS: Final = 3  # shorter lines ("}", ")") end real code too often


@dataclass(frozen=True)
class FimTokens:
    prefix: str
    suffix: str
    middle: str


@dataclass(frozen=True)
class Family:
    name: str
    default_system: str
    stop_strings: tuple[str, ...]
    fim: FimTokens | None


@dataclass(frozen=True)
class ChatTurn:
    role: str
    content: str


FAMILIES: Final = {
    "qwen2.5": Family(
        name="qwen2.5",
        # What Qwen2.5's own chat template inserts when no system turn is given.
        default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
        stop_strings=("<|im_end|>", "<|endoftext|>"),
        fim=FimTokens("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    ),
    "smollm2": Family(
        name="smollm2",
        # What SmolLM2-Instruct's own chat template inserts.
        default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        stop_strings=("<|im_end|>", "<|endoftext|>"),
        fim=None,
    ),
}


def render_chat(family: Family, turns: Sequence[ChatTurn]) -> str:
    """ChatML for ``turns``, ending with an open assistant turn."""
    if not turns or turns[0].role != "system":
        turns = [ChatTurn("system", family.default_system), *turns]
    body = "".join(f"<|im_start|>{t.role}\n{t.content}<|im_end|>\n" for t in turns)
    return body + "<|im_start|>assistant\n"


def render_completion(family: Family, prompt: str, suffix: str | None) -> tuple[str, list[str]]:
    """The prompt for a completion at a cursor, plus stops derived from the suffix.

    With FIM tokens the suffix goes into the prompt. Without them the model
    sees the prefix only, and the first non-blank line of the suffix becomes a
    stop string so the completion does not run on into text already there.
    """
    if not suffix:
        return prompt, []
    extra_stops = []
    first_line = next((line.strip() for line in suffix.splitlines() if line.strip()), "")
    if len(first_line) >= MIN_SUFFIX_STOP_CHARS:
        extra_stops.append(first_line)
    if family.fim is None:
        return prompt, extra_stops
    fim = family.fim
    return f"{fim.prefix}{prompt}{fim.suffix}{suffix}{fim.middle}", extra_stops
