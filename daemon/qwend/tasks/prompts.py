"""Engine: prompt formats per model family (chat markup and fill-in-the-middle).

A family fixes how a conversation or a cursor position becomes one prompt,
and which end-of-turn markers stop generation. Both families here use
ChatML; Qwen2.5 also has fill-in-the-middle tokens, SmolLM2 has none, so its
completions see the prefix only and the suffix is used to stop early.

Every renderer returns a ``Prompt`` (backends/base.py): the family's markers
(``<|im_start|>``, ``<|fim_prefix|>``, ...) are marker pieces, everything
else (the request's text and the template's plain words) is plain text, so
markup typed by a user is tokenized as text, never as a control token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from qwend.backends.base import Prompt

M = Prompt.marker  # a template marker; plain ``str`` operands of ``+`` stay plain text
MIN_SUFFIX_STOP_CHARS: Final = 3  # shorter lines ("}", ")") end real code too often


@dataclass(frozen=True)
class FimTokens:
    prefix: str
    suffix: str
    middle: str
    repo_name: str
    file_sep: str
    pad: str

    def markers(self) -> tuple[str, ...]:
        return (self.prefix, self.suffix, self.middle, self.repo_name, self.file_sep, self.pad)


@dataclass(frozen=True)
class Family:
    name: str
    default_system: str
    stop_strings: tuple[str, ...]
    fim: FimTokens | None
    document_start: str = "<|endoftext|>"  # the pretraining separator: what starts a document


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
        fim=FimTokens(
            "<|fim_prefix|>",
            "<|fim_suffix|>",
            "<|fim_middle|>",
            "<|repo_name|>",
            "<|file_sep|>",
            "<|fim_pad|>",
        ),
    ),
    "smollm2": Family(
        name="smollm2",
        # What SmolLM2-Instruct's own chat template inserts.
        default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face",
        stop_strings=("<|im_end|>", "<|endoftext|>"),
        fim=None,
    ),
}


IM_START: Final = "<|im_start|>"  # ChatML, both families
IM_END: Final = "<|im_end|>"


def render_chat(family: Family, turns: Sequence[ChatTurn]) -> Prompt:
    """ChatML for ``turns``, ending with an open assistant turn."""
    if not turns or turns[0].role != "system":
        turns = [ChatTurn("system", family.default_system), *turns]
    body = Prompt.join(
        M(IM_START) + f"{t.role}\n{t.content}" + M(IM_END) + "\n"
        for t in turns
        if t.content or t.role != "system"
    )
    return body + M(IM_START) + "assistant\n"


@dataclass(frozen=True)
class Snippet:
    path: str
    text: str


def suffix_stops(suffix: str) -> list[str]:
    """The suffix's first non-blank line, as a stop: a completion that reaches
    text already after the cursor has said all it should."""
    first_line = next((line.strip() for line in suffix.splitlines() if line.strip()), "")
    return [first_line] if len(first_line) >= MIN_SUFFIX_STOP_CHARS else []


def completion_stops(family: Family, suffix: str) -> list[str]:
    markers = list(family.fim.markers()) if family.fim else []
    return [*suffix_stops(suffix), *markers, *family.stop_strings]


def render_fim(
    fim: FimTokens, prefix: str, suffix: str, *, snippets: Sequence[Snippet], path: str, repo: str
) -> Prompt:
    """Qwen2.5-Coder fill-in-the-middle; the repo-level form when other files come.

    Other files go first and the cursor window last, so consecutive requests
    in one file share a long, stable prompt prefix (KV cache reuse).
    """
    window = M(fim.prefix) + prefix + M(fim.suffix) + suffix + M(fim.middle)
    if not snippets and not repo:
        return window
    files = Prompt.join(M(fim.file_sep) + f"{s.path}\n{s.text}\n" for s in snippets if s.text)
    return (
        M(fim.repo_name)
        + f"{repo or 'workspace'}\n"
        + files
        + M(fim.file_sep)
        + f"{path or 'untitled'}\n"
        + window
    )


def render_prefix_only(
    prefix: str, *, snippets: Sequence[Snippet], path: str, language: str
) -> Prompt:
    """For models without FIM tokens: other files as commented headers, then the prefix."""
    mark = line_comment(language)
    files = "".join(f"{mark} {s.path}\n{s.text}\n\n" for s in snippets if s.text)
    header = f"{mark} {path}\n" if path and files else ""
    return Prompt.plain(f"{files}{header}{prefix}")


def render_completion(family: Family, prompt: str, suffix: str | None) -> tuple[Prompt, list[str]]:
    """The prompt for a plain completion at a cursor, plus its stops."""
    suffix = suffix or ""
    if family.fim is not None and suffix:
        rendered = render_fim(family.fim, prompt, suffix, snippets=(), path="", repo="")
        return rendered, completion_stops(family, suffix)
    return nonempty(family, Prompt.plain(prompt)), suffix_stops(suffix)


def nonempty(family: Family, prompt: Prompt) -> Prompt:
    """``prompt``, or the family's document start when it is empty.

    A model needs at least one token to predict from. After the end-of-text
    separator it begins a new document, as it learned in pretraining, so an
    empty prompt or a new empty file gets a completion (OpenAI's completions
    treat an empty prompt the same way).
    """
    return prompt if prompt.text else Prompt.marker(family.document_start)


def render_code_task(
    family: Family,
    *,
    system: str,
    instruction: str,
    code: str,
    context: str,
    path: str,
    language: str,
) -> Prompt:
    """A chat turn asking ``instruction`` about ``code`` (and its surroundings)."""
    fence = language.lower() if language.isidentifier() else ""
    where = f"File: {path}\n\n" if path else ""
    around = f"Surrounding code:\n```{fence}\n{context}\n```\n\n" if context else ""
    user = f"{instruction}\n\n{where}{around}Code:\n```{fence}\n{code}\n```"
    return render_chat(family, [ChatTurn("system", system), ChatTurn("user", user)])


def render_commit_message(family: Family, *, system: str, instruction: str, diff: str) -> Prompt:
    user = f"{instruction}\n\n```diff\n{diff}\n```"
    return render_chat(family, [ChatTurn("system", system), ChatTurn("user", user)])


_HASH_COMMENT_LANGUAGES = frozenset(
    {"python", "ruby", "shellscript", "bash", "sh", "perl", "r", "yaml", "toml", "makefile",
     "dockerfile", "elixir", "julia", "nim", "powershell", "cmake"}
)  # fmt: skip


def line_comment(language: str) -> str:
    lang = language.lower()
    if lang in _HASH_COMMENT_LANGUAGES:
        return "#"
    if lang in ("sql", "lua", "haskell"):
        return "--"
    return "//" if lang else "#"
