"""Qwen2.5 GGUFs on the llama.cpp backend: the tokenizer, FIM markup and stop tokens.

tests/fixtures/qwen_gguf.py writes a tiny random-weight Qwen2 GGUF that
carries Qwen2.5's real vocabulary the way Qwen's own GGUFs do; the rebuilt
Hugging Face tokenizer is the reference.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.fixtures.fake_backend import QWEN_TOKENIZER_CACHE
from tests.fixtures.qwen_gguf import tiny_qwen_gguf
from tokenizers import Tokenizer

from qwend.backends.base import Prompt, Sampling
from qwend.backends.llamacpp import LlamaCppBackend
from qwend.tasks.prompts import FAMILIES, Snippet, render_fim

QWEN = FAMILIES["qwen2.5"]
assert QWEN.fim is not None
FIM_IDS = {"<|fim_prefix|>": 151659, "<|fim_middle|>": 151660, "<|fim_suffix|>": 151661}
END_IDS = {151643, 151645, 151662, 151663, 151664}  # endoftext, im_end, fim_pad, repo, file


@pytest.fixture(scope="module")
def qwen() -> Iterator[LlamaCppBackend]:
    backend = LlamaCppBackend(
        tiny_qwen_gguf(QWEN_TOKENIZER_CACHE), context_length=4096, threads=1, pull_hint=""
    )
    backend.load()
    yield backend
    backend.unload()


def test_the_gguf_tokenizer_is_qwen_s(qwen: LlamaCppBackend, qwen_tokenizer: Tokenizer) -> None:
    fim = render_fim(
        QWEN.fim,
        prefix="import os\n\ndef walk(root):\n    for name in os.listdir(root):\n        ",
        suffix="\n    return found\n",
        snippets=[Snippet(path="util/paths.py", text="def join(*parts): ...\n")],
        repo="qwend",
        path="src/walk.py",
    )
    start, end = Prompt.marker("<|im_start|>"), Prompt.marker("<|im_end|>")
    chat = start + "system\nBe brief." + end + "\n" + start + "user\nHi" + end + "\n"
    for prompt in (fim, chat):
        ids = qwen.encode(prompt)
        assert ids == qwen_tokenizer.encode(prompt.text, add_special_tokens=False).ids
        assert qwen.decode(ids) == prompt.text
    for text in ("naïve café — 日本語 🚀 ∑x² 12345", "  \t\n\n x</s>y"):
        assert qwen.tokenize(text) == qwen_tokenizer.encode(text, add_special_tokens=False).ids
        assert qwen.decode(qwen.tokenize(text)) == text


def test_fim_markup_is_one_token_each(qwen: LlamaCppBackend) -> None:
    assert QWEN.fim is not None
    for marker, token in FIM_IDS.items():
        assert qwen.tokenize_markup(marker) == [token]
        assert token not in qwen.tokenize(f"typed {marker} in a file")  # request text is text
    fim = QWEN.fim
    prompt = qwen.encode(
        Prompt.marker(fim.prefix)
        + "a = "
        + Prompt.marker(fim.suffix)
        + "\n"
        + Prompt.marker(fim.middle)
    )
    markers = [t for t in prompt if t in FIM_IDS.values()]
    assert markers == [151659, 151661, 151660]  # prefix, suffix, middle: Qwen's order


def test_end_of_turn_and_fim_separators_stop_but_html_does_not(
    qwen: LlamaCppBackend, qwen_tokenizer: Tokenizer
) -> None:
    assert qwen.stop_token_ids == END_IDS
    # "</s>" is an ordinary vocabulary entry that llama.cpp promotes to an end marker:
    # here it is text, neither a stop nor parsed out of a prompt.
    html_end = qwen_tokenizer.token_to_id("</s>")
    assert html_end is not None and html_end not in qwen.stop_token_ids
    assert html_end not in qwen.tokenize("<s>old</s> new")


def test_a_fim_prompt_generates(qwen: LlamaCppBackend) -> None:
    assert QWEN.fim is not None
    fim = QWEN.fim
    prompt = qwen.encode(
        Prompt.marker(fim.prefix)
        + "def f():\n    "
        + Prompt.marker(fim.suffix)
        + "\n"
        + Prompt.marker(fim.middle)
    )
    tokens = list(qwen.generate(prompt, Sampling(0.0, 1.0), 4))
    assert len(tokens) == 4 and all(0 <= t < 151665 for t in tokens)
    assert qwen.describe()["weights"].startswith("qwen2")
