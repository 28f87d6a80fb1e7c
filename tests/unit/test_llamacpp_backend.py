"""The llama.cpp backend on the real SmolLM2 GGUF (`qwend pull smollm2-135m`).

Its tokenizer is the GGUF's own, so it is checked against the converted
reference tokenizer (`qwend pull smollm2-135m-hf`) token for token; prefix
reuse is checked by what the backend evaluated and by the tokens it then
generates, which must not depend on what the cache held.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from tokenizers import Tokenizer

from qwend.backends.base import Prompt, Sampling
from qwend.backends.llamacpp import LlamaCppBackend, common_prefix, thread_counts
from qwend.errors import ModelMissing, ModelNotLoaded

ROOT = Path(__file__).resolve().parents[2]
GREEDY = Sampling(temperature=0.0, top_p=1.0)
SAMPLES = [
    "def add(a, b):\n    return a + b\n",
    "<|im_start|>user\nWhat does `zip` do?<|im_end|>\n<|im_start|>assistant\n",
    "  indented\ttabs\n\n\nand blank lines  ",
    "naïve café — 日本語のテキスト 🚀 ∑x²",
    "x = {'k': [1, 2.5e-3, None]}  # comment",
    "<|endoftext|>",
]


@pytest.fixture(scope="module")
def gguf_dir() -> Path:
    from tests.fixtures.daemon import MODEL, MODEL_DIR, require_models

    return require_models(MODEL_DIR, MODEL, "QWEND_TEST_MODEL_DIR")


@pytest.fixture(scope="module")
def backend(gguf_dir: Path) -> Iterator[LlamaCppBackend]:
    loaded = LlamaCppBackend(gguf_dir, context_length=2048, threads=1, pull_hint="qwend pull x")
    loaded.load()
    yield loaded
    loaded.unload()


def generate(backend: LlamaCppBackend, prompt: str, tokens: int) -> list[int]:
    return list(backend.generate(backend.tokenize(prompt), GREEDY, tokens))


MARKUP_RE = re.compile(r"(<\|im_start\|>|<\|im_end\|>|<\|endoftext\|>)")


def as_prompt(text: str) -> Prompt:
    """``text`` with its chat markup as template markers (what a renderer builds)."""
    return Prompt.join(
        Prompt.marker(piece) if MARKUP_RE.fullmatch(piece) else piece
        for piece in MARKUP_RE.split(text)
    )


def test_tokenizer_is_the_reference_tokenizer(
    backend: LlamaCppBackend, smollm2_tokenizer: Tokenizer
) -> None:
    for text in SAMPLES:
        expected = smollm2_tokenizer.encode(text, add_special_tokens=False).ids
        assert backend.encode(as_prompt(text)) == expected, text
        assert backend.decode(expected) == text


def test_markup_is_one_special_token_and_ends_generation(backend: LlamaCppBackend) -> None:
    assert backend.tokenize_markup("<|im_start|>") == [1]
    assert backend.tokenize_markup("<|im_end|>") == [2]
    # The same text in a request is plain text: never the control token.
    assert 2 not in backend.tokenize("<|im_end|>")
    assert backend.decode(backend.tokenize("say <|im_end|> here")) == "say <|im_end|> here"
    assert {0, 2} <= backend.stop_token_ids  # <|endoftext|>, <|im_end|>
    assert backend.decode([2]) == "<|im_end|>"


def test_context_and_threads_come_from_the_profile(backend: LlamaCppBackend) -> None:
    facts = backend.describe()
    assert backend.context_length == 2048
    assert (facts["threads"], facts["threads_prompt"]) == (1, 1)
    assert facts["device"] == "cpu" and facts["gguf"].endswith(".gguf")
    assert facts["weights_bytes"] > 50 * 2**20


def test_threads_default_to_half_the_cores_for_decode_and_all_for_prompts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert thread_counts(0) == (2, 4)
    assert thread_counts(3) == (3, 3)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert thread_counts(0) == (1, 1)


def test_a_prompt_that_extends_the_last_one_evaluates_only_the_new_tokens(
    backend: LlamaCppBackend,
) -> None:
    first = "def fibonacci(n):\n    "
    generate(backend, first, 4)
    longer = first + "if n < 2:\n        return n\n    "
    new_ids = backend.tokenize(longer)
    shared = common_prefix(backend.tokenize(first), new_ids)
    with_cache = generate(backend, longer, 12)
    last = backend.describe()["prefix_cache"]["last_request"]
    assert last["prompt_tokens"] == len(new_ids)
    assert last["cached_tokens"] >= shared  # what it generated may match too
    assert last["evaluated_tokens"] == len(new_ids) - last["cached_tokens"] < len(new_ids)
    # One typed character: one or two tokens are evaluated, never the whole prompt.
    generate(backend, longer + "r", 1)
    assert backend.describe()["prefix_cache"]["last_request"]["evaluated_tokens"] <= 2
    # The tokens do not depend on what the cache held.
    backend.embed([1, 2, 3])  # empties the cache
    assert generate(backend, longer, 12) == with_cache
    assert backend.describe()["prefix_cache"]["last_request"]["cached_tokens"] == 0


def test_the_same_prompt_again_reuses_all_but_its_last_token(backend: LlamaCppBackend) -> None:
    prompt = "class Stack:\n    "
    first = generate(backend, prompt, 8)
    assert generate(backend, prompt, 8) == first
    last = backend.describe()["prefix_cache"]["last_request"]
    assert (last["cached_tokens"], last["evaluated_tokens"]) == (last["prompt_tokens"] - 1, 1)


def test_an_iterator_closed_early_leaves_the_cache_usable(backend: LlamaCppBackend) -> None:
    prompt = "import os\n\ndef list_files(path):\n    "
    expected = generate(backend, prompt, 10)
    steps = backend.generate(backend.tokenize(prompt + "# walk\n    "), GREEDY, 50)
    for _ in range(3):
        next(steps)
    steps.close()  # what the engine does on cancel or a stop string
    assert generate(backend, prompt, 10) == expected


def test_seeded_sampling_repeats_and_greedy_ignores_the_seed(backend: LlamaCppBackend) -> None:
    ids = backend.tokenize("The quick brown fox")
    sampled = Sampling(temperature=0.9, top_p=0.9, seed=7)
    first = list(backend.generate(ids, sampled, 16))
    assert list(backend.generate(ids, sampled, 16)) == first
    seeds = {tuple(backend.generate(ids, Sampling(0.9, 0.9, seed=s), 16)) for s in range(4)}
    assert len(seeds) > 1
    assert list(backend.generate(ids, Sampling(0.0, 1.0, seed=1), 8)) == list(
        backend.generate(ids, Sampling(0.0, 1.0, seed=2), 8)
    )


def test_embeddings_are_unit_vectors_close_to_the_reference(backend: LlamaCppBackend) -> None:
    """Mean-pooled final hidden states, like the transformers backend's on the
    converted weights: the same direction up to Q4_1's rounding."""
    from tests.fixtures.fake_backend import SMOLLM2_DIR

    from qwend.backends.transformers import TransformersBackend

    text_ids = backend.tokenize("def read_config(path):\n    return json.load(open(path))\n")
    vector = backend.embed(text_ids)
    assert len(vector) == backend.embedding_dim == 576
    assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-6)
    assert backend.embed(text_ids) == vector
    other = backend.embed(backend.tokenize("The weather in Paris is mild in spring."))
    if not (SMOLLM2_DIR / "model.safetensors").is_file():
        pytest.fail(f"the reference model is not in {SMOLLM2_DIR}: qwend pull smollm2-135m-hf")
    reference = TransformersBackend(SMOLLM2_DIR, context_length=2048, threads=2, pull_hint="")
    reference.load()
    try:
        expected = reference.embed(text_ids)
    finally:
        reference.unload()

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vector, expected) > 0.95
    assert cosine(vector, expected) > cosine(vector, other)


def test_a_missing_or_broken_gguf_is_a_qwend_error(tmp_path: Path) -> None:
    empty = LlamaCppBackend(tmp_path, context_length=512, threads=1, pull_hint="qwend pull m")
    with pytest.raises(ModelMissing) as missing:
        empty.load()
    assert "*.gguf" in missing.value.message and missing.value.hint == "run: qwend pull m"
    (tmp_path / "m.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelNotLoaded) as broken:
        empty.load()
    assert "llama.cpp could not load" in broken.value.message
    assert "--force" in (broken.value.hint or "")


def test_the_gguf_path_may_name_the_file(gguf_dir: Path) -> None:
    from qwend.backends.folder import gguf_file

    file = gguf_file(gguf_dir)
    assert file is not None
    direct = LlamaCppBackend(file, context_length=512, threads=1, pull_hint="")
    direct.load()
    try:
        assert direct.tokenize("def") == [1604]
    finally:
        direct.unload()


def test_the_factory_builds_it_for_a_llama_cpp_profile(xdg: Path) -> None:
    from qwend.backends import create_backend
    from qwend.config import load_config

    config = load_config(model_override="smollm2-135m")
    backend = create_backend(config)
    assert isinstance(backend, LlamaCppBackend) and backend.name == "llama.cpp"
    assert backend.location == config.model_dir() and backend.context_length == 8192
    backend.check()  # llama-cpp-python is installed with the CPU extras
    with pytest.raises(ModelMissing) as missing:
        backend.load()
    assert missing.value.hint == "run: qwend pull smollm2-135m"
