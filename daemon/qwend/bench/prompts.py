"""Editor: benchmark prompts of an exact token count, and their one-line-changed twins.

Time to first token is reported per prompt size, so a "2,048-token prompt"
must be exactly 2,048 tokens of the resident model's tokenizer. The text is
synthetic Python (it should tokenize like the code users send); its first
line carries a per-run tag, so two cold prompts share no prefix beyond it.

``fit_prompt`` takes whole lines of that code while they fit, then closes
with a comment line of single-token words (`` x`` is one token in the
byte-level BPE tokenizers qwend serves), one word per missing token, and
checks the count. ``prefix_twin`` changes only that last line: the prompt a
user sends after editing one line at the end of a file, which a prefix cache
can serve from everything before it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import count
from typing import Final

PAD_LINE: Final = "\n#"
PAD_WORD: Final = " x"  # one token each in Qwen2.5's and SmolLM2's tokenizers
TWIN_WORD: Final = " y"  # a different token of the same length, for the changed line
FIT_ATTEMPTS: Final = 8  # lines dropped before giving up: a tokenizer that merges " x x"
_WORDS: Final = (
    "parse", "render", "merge", "split", "index", "score", "token", "cache", "queue",
    "buffer", "window", "layer", "route", "batch", "frame", "chunk", "shard", "trace",
)  # fmt: skip


class PromptError(Exception):
    """No prompt of exactly the asked token count could be built."""


LINES_PER_FUNCTION: Final = 9  # each function code_lines yields, its blank line included


def code_lines(tag: str) -> Iterator[str]:
    """An endless, deterministic Python module whose first line is ``# {tag} ...``."""
    yield f"# {tag} qwend bench: synthetic code, only its token count matters"
    for i in count():
        verb, noun = _WORDS[i % len(_WORDS)], _WORDS[(i * 7 + 3) % len(_WORDS)]
        name = f"{verb}_{noun}_{i}"
        yield f"def {name}(items, limit={i % 17}):"
        yield f'    """{verb.capitalize()} the {noun} of the first items, up to limit."""'
        yield "    total = 0"
        yield "    for index, item in enumerate(items):"
        yield "        if index > limit:"
        yield "            break"
        yield f"        total += item * {i % 13 + 1}"
        yield "    return total"
        yield ""


def fit_prompt(tokens: Callable[[str], int], size: int, tag: str) -> str:
    """A prompt of exactly ``size`` tokens as counted by ``tokens``.

    Raises PromptError when no line/padding split hits the count (a
    tokenizer that does not count ``PAD_WORD`` as one token).
    """
    if size < 8:
        raise PromptError(f"{size} tokens is too short for a benchmark prompt")
    source = code_lines(tag)
    lines: list[str] = []
    while not lines or tokens("\n".join(lines)) < size:
        lines += [next(source) for _ in range(max(len(lines), 32))]
    low, high = 1, len(lines)  # the most whole lines whose text fits in size - 1 tokens
    while low < high:
        middle = (low + high + 1) // 2
        if tokens("\n".join(lines[:middle])) < size:
            low = middle
        else:
            high = middle - 1
    for keep in range(low, max(low - FIT_ATTEMPTS, 0), -1):
        base = "\n".join(lines[:keep]) + PAD_LINE
        missing = size - tokens(base)
        if missing < 1:  # at least one word, so prefix_twin has something to change
            continue
        text = base + PAD_WORD * missing
        if tokens(text) == size:
            return text
    raise PromptError(f"could not build a prompt of exactly {size} tokens")


def prefix_twin(prompt: str) -> str:
    """``prompt`` with its last line changed (same length in words), the rest untouched."""
    head, _, last = prompt.rpartition("\n")
    return head + "\n" + last.replace(PAD_WORD, TWIN_WORD)
